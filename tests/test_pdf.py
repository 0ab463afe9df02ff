"""The board-ready PDF (``carequal report --pdf``) of the sample's Riverton report, read back with pypdf: its
pages, the footer on every page (reporting period, suppression statement, page N of M), no table split across a
page break, and a clear stop when there is no Chromium to print with."""

from __future__ import annotations

import re
from pathlib import Path

from pypdf import PdfReader

from carequal.batch.pdf import render_pdf
from carequal.cli import main as cli_main
from carequal.disclosure import suppression_statement
from safe_to_share import HtmlTables

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def _pages(pdf: Path) -> list[str]:
    return [" ".join((page.extract_text() or "").split()) for page in PdfReader(str(pdf)).pages]


def test_a_pdf_per_report_with_the_footer_on_every_page(rendered_sample):
    import json

    manifest = json.loads((rendered_sample / "manifest.json").read_text())
    record = manifest["markets"]["Riverton"]
    assert record["pdf"] == "Riverton.pdf" and len(record["pdf_sha256"]) == 64
    pages = _pages(rendered_sample / "Riverton.pdf")
    assert 4 <= len(pages) <= 30, len(pages)  # a report of several sections on A4, not one endless page
    statement = " ".join(suppression_statement(11).split())
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text, (number, text[-300:])
        assert "Reporting period 2024-01-01 to 2024-12-31" in text, number
        assert statement in text, number
    assert "At a glance" in pages[0] and "Riverton: partnership quality report" in pages[0]


def test_no_table_is_split_across_a_page_break(rendered_sample, tmp_path):
    """Each table of the report gets an invisible marker in its first and last row (1 px white text, which
    changes no layout) and the marked page is printed as the report is: both markers must land on one page."""
    page = rendered_sample / "Riverton.html"
    html = page.read_text()
    parser = HtmlTables()
    parser.feed(html)
    n_tables = len(parser.tables)
    assert n_tables >= 8

    count = iter(range(10_000))
    skipped = set()

    def mark(table: re.Match) -> str:
        k = next(count)
        rows = re.findall(r"<tr>.*?</tr>", table[0], flags=re.DOTALL)
        body = [r for r in rows if "<td" in r]
        if not body:
            skipped.add(k)
            return table[0]
        out = table[0]
        tag = '<span style="font-size:1px;color:#fff">{}</span>'
        first, last = body[0], body[-1]
        # START in the first cell of the first row, END in the last cell of the last row: a table clipped at the
        # page's right edge loses its END
        end = tag.format(f"QQEND{k}QQ") + "</td>"
        marked_last = end.join(last.rsplit("</td>", 1))
        if last is first:
            marked_last = marked_last.replace("</td>", tag.format(f"QQSTART{k}QQ") + "</td>", 1)
            return out.replace(last, marked_last, 1)
        out = out.replace(first, first.replace("</td>", tag.format(f"QQSTART{k}QQ") + "</td>", 1), 1)
        return out.replace(last, marked_last, 1)

    marked = re.sub(r"<table class=\"carequal-table\">.*?</table>", mark, html, flags=re.DOTALL)
    copy = rendered_sample / ".marked-Riverton.html"
    copy.write_text(marked)
    try:
        render_pdf(copy, tmp_path / "marked.pdf")
    finally:
        copy.unlink()
    pages = [text.replace(" ", "") for text in _pages(tmp_path / "marked.pdf")]
    where = {}
    for number, text in enumerate(pages):
        for kind, k in re.findall(r"QQ(START|END)(\d+)QQ", text):
            where.setdefault(int(k), {})[kind] = number
    assert set(where) == set(range(next(count))) - skipped, "a table's marker is missing (clipped?)"
    assert all(len(v) == 2 for v in where.values()), f"a table is clipped at the page edge: {where}"
    split = {k: v for k, v in where.items() if v.get("START") != v.get("END")}
    assert not split, f"tables split across pages (table: pages): {split}"


def test_pdf_without_chromium_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAREQUAL_CHROMIUM", str(tmp_path / "no-such-browser"))
    code = cli_main(["report", "--data", str(SAMPLE), "--out", str(tmp_path / "out"), "--pdf", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert "CAREQUAL_CHROMIUM" in err and "apt-get install chromium" in err
    assert not (tmp_path / "out" / "index.html").exists()  # stopped before any work
