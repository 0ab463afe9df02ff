"""Compare two folders of rendered reports (market reports or partner packets with their extracts), table by
table and value by value, and list every difference.

    python benchmarks/compare_outputs.py OLD_FOLDER NEW_FOLDER [--out FILE.md]

What is compared, per file present in either folder:

* every HTML file (reports, packets, ``index.html``): each ``<table>`` as its cells' text, row by row, and the
  text of the findings (``<li>`` items) and paragraphs, in order; images (charts) are left out, since the same
  numbers are in the tables;
* every extract CSV: its cells; every ``extract.xlsx``: each sheet's cells (read with pandas).

Numbers are compared as the text a reader sees. A file or table present on one side only is listed as such.
Nothing is judged: the list says what differs, the author of a change says why.
"""

from __future__ import annotations

import argparse
import csv
import sys
from html.parser import HTMLParser
from pathlib import Path


class _Text(HTMLParser):
    """The tables (rows of cell texts) and the text blocks (``li``, ``p``, headings) of an HTML page."""

    BLOCKS = ("li", "p", "h1", "h2", "h3", "h4")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.blocks: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._block: list[str] | None = None
        self._depth = 0  # inside <style>/<script>

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self._depth += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in self.BLOCKS and self._cell is None:
            self._block = []

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._depth -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None
        elif tag in self.BLOCKS and self._block is not None:
            text = " ".join("".join(self._block).split())
            if text:
                self.blocks.append(text)
            self._block = None

    def handle_data(self, data):
        if self._depth:
            return
        if self._cell is not None:
            self._cell.append(data)
        elif self._block is not None:
            self._block.append(data)


def html_content(path: Path) -> tuple[list[list[list[str]]], list[str]]:
    parser = _Text()
    parser.feed(path.read_text(errors="replace"))
    return parser.tables, parser.blocks


def grid_differences(old: list[list[str]], new: list[list[str]], where: str, limit: int = 12) -> list[str]:
    """The cells that differ between two grids of text (rows of cells), at most ``limit`` listed."""
    out = []
    if len(old) != len(new) or any(len(a) != len(b) for a, b in zip(old, new, strict=False)):
        out.append(f"{where}: shape {len(old)} rows → {len(new)} rows")
    header = new[0] if new else []
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        for j, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                column = header[j] if j < len(header) else str(j)
                label = b[0] if b else ""
                out.append(f"{where}: row {i} ({label}), column {column!r}: {x!r} → {y!r}")
    if len(out) > limit:
        out = out[:limit] + [f"{where}: … {len(out) - limit} more differing cells"]
    return out


def compare_html(old: Path, new: Path, name: str) -> list[str]:
    (t_old, b_old), (t_new, b_new) = html_content(old), html_content(new)
    out = []
    if len(t_old) != len(t_new):
        out.append(f"{name}: {len(t_old)} tables → {len(t_new)} tables")
    for k, (a, b) in enumerate(zip(t_old, t_new, strict=False)):
        out += grid_differences(a, b, f"{name} table {k + 1}")
    gone, added = [x for x in b_old if x not in b_new], [x for x in b_new if x not in b_old]
    out += [f"{name} text only in old: {x[:300]}" for x in gone]
    out += [f"{name} text only in new: {x[:300]}" for x in added]
    return out


def read_grid(path: Path) -> dict[str, list[list[str]]]:
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return {"": list(csv.reader(f))}
    import pandas as pd

    sheets = pd.read_excel(path, sheet_name=None, dtype=str, keep_default_na=False)
    return {name: [list(map(str, df.columns))] + df.astype(str).values.tolist() for name, df in sheets.items()}


def compare_folders(old_dir: Path, new_dir: Path) -> list[str]:
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                and p.suffix in (".html", ".csv", ".xlsx") and ".carequal" not in p.parts}

    old_files, new_files = files(old_dir), files(new_dir)
    out = [f"{f}: only in old" for f in sorted(old_files - new_files)]
    out += [f"{f}: only in new" for f in sorted(new_files - old_files)]
    for name in sorted(old_files & new_files):
        a, b = old_dir / name, new_dir / name
        if a.read_bytes() == b.read_bytes():
            continue
        if a.suffix == ".html":
            out += compare_html(a, b, name)
        else:
            ga, gb = read_grid(a), read_grid(b)
            for sheet in sorted(set(ga) | set(gb)):
                where = f"{name}" + (f" sheet {sheet}" if sheet else "")
                if sheet not in ga or sheet not in gb:
                    out.append(f"{where}: only in {'new' if sheet not in ga else 'old'}")
                    continue
                out += grid_differences(ga[sheet], gb[sheet], where)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--out", type=Path, help="also write the list here (Markdown)")
    args = parser.parse_args(argv)
    lines = compare_folders(args.old, args.new)
    text = "\n".join(f"- {line}" for line in lines) if lines else "- no difference in any table, text or extract"
    print(text)
    if args.out:
        args.out.write_text(f"Differences {args.old} → {args.new}:\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
