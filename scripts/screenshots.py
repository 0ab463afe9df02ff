"""Take headless-Chromium screenshots of rendered HTML reports.

Lets a reviewer see what an executive sees when opening a report, without
opening a browser. Uses only the standard library plus a Chromium binary.

Usage
-----
::

    python scripts/screenshots.py REPORT_DIR [--out DIR] [--width 1400] [--height 0]

Every ``*.html`` file directly inside ``REPORT_DIR`` (not recursive; ``index.html``
first, then the rest in name order) is rendered to ``<out>/<stem>.png``. The
default output directory is ``REPORT_DIR/screenshots``.

Page height
-----------
Chromium's ``--screenshot`` captures the viewport only, so the window must be tall
enough to hold the whole page. With ``--height 0`` (the default) the height is
*estimated from the HTML source* rather than measured::

    height = 2000 + 600 * (number of <img> tags) + 30 * (number of <tr> tags)

capped at 16000 px. The estimate is deliberately generous, so a screenshot usually
has blank space below the end of the report; pages dominated by other content
(long prose, inline SVG, JavaScript charts) may be cut off. Pass an explicit
``--height`` in that case. Each page gets ``--virtual-time-budget=5000`` so
scripts and data-URI images have finished before the capture.

Notes
-----
* Install Chromium on Debian with ``apt-get install chromium``. The binary is
  looked up as ``chromium``, ``chromium-browser`` or ``google-chrome`` on ``PATH``.
* Each page uses a fresh, temporary ``--user-data-dir`` and a 120 s timeout.
* Chromium's stderr is very noisy in containers (D-Bus connection errors and so on)
  and is only printed when a page fails.
* A failed page is reported and skipped; the exit status is 1 if any page failed,
  2 on a usage error (missing directory, no HTML files, no Chromium).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 120
MAX_HEIGHT = 16000
BASE_HEIGHT = 2000
PX_PER_IMG = 600
PX_PER_ROW = 30
VIRTUAL_TIME_BUDGET_MS = 5000

_IMG_RE = re.compile(r"<img\b", re.IGNORECASE)
_TR_RE = re.compile(r"<tr\b", re.IGNORECASE)


def find_chromium() -> str | None:
    """Return the path of the first Chromium-like browser on ``PATH``, or ``None``."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def find_pages(report_dir: Path) -> list[Path]:
    """List the ``*.html`` files directly in ``report_dir``, ``index.html`` first."""
    pages = sorted(p for p in report_dir.glob("*.html") if p.is_file())
    return sorted(pages, key=lambda p: p.name != "index.html")


def estimate_height(html: str) -> int:
    """Estimate a page height in pixels from its HTML source (see module docstring)."""
    n_img = len(_IMG_RE.findall(html))
    n_tr = len(_TR_RE.findall(html))
    return min(BASE_HEIGHT + PX_PER_IMG * n_img + PX_PER_ROW * n_tr, MAX_HEIGHT)


def chromium_command(chromium: str, page: Path, png: Path, width: int, height: int, user_data_dir: str) -> list[str]:
    """Build the Chromium command line that screenshots ``page`` into ``png``."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        f"--user-data-dir={user_data_dir}",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]


def screenshot(chromium: str, page: Path, png: Path, width: int, height: int) -> str | None:
    """Screenshot one page.

    Returns
    -------
    str or None
        ``None`` on success, otherwise a human-readable error message.
    """
    png.unlink(missing_ok=True)  # so a stale PNG is never mistaken for success
    with tempfile.TemporaryDirectory(prefix="carequal-chromium-") as profile:
        cmd = chromium_command(chromium, page, png, width, height, profile)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"timed out after {TIMEOUT_S} s"
        except OSError as exc:
            return f"could not run {chromium}: {exc}"
    if proc.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        return f"chromium exited with status {proc.returncode} and wrote no PNG\n{tail}".rstrip()
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description="Screenshot every *.html report page in a directory.")
    parser.add_argument("report_dir", type=Path, help="directory holding index.html and other *.html pages")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: REPORT_DIR/screenshots)")
    parser.add_argument("--width", type=int, default=1400, help="window width in px (default: 1400)")
    parser.add_argument(
        "--height", type=int, default=0, help="window height in px; 0 estimates it from the HTML (default: 0)"
    )
    args = parser.parse_args(argv)
    if args.width <= 0:
        parser.error("--width must be positive")
    if args.height < 0:
        parser.error("--height must be 0 (estimate) or positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command-line interface; return the process exit status."""
    args = parse_args(argv)
    report_dir: Path = args.report_dir
    if not report_dir.is_dir():
        print(f"error: {report_dir} is not a directory", file=sys.stderr)
        return 2
    pages = find_pages(report_dir)
    if not pages:
        print(f"error: no *.html files in {report_dir}", file=sys.stderr)
        return 2
    if not (report_dir / "index.html").is_file():
        print(f"warning: no index.html in {report_dir}", file=sys.stderr)
    chromium = find_chromium()
    if chromium is None:
        print(
            f"error: no Chromium found on PATH (looked for {', '.join(CHROMIUM_NAMES)}); "
            "install it with `apt-get install chromium`",
            file=sys.stderr,
        )
        return 2

    out_dir: Path = args.out if args.out is not None else report_dir / "screenshots"
    out_dir.mkdir(parents=True, exist_ok=True)

    failures: list[str] = []
    for page in pages:
        if args.height:
            height = args.height
        else:
            height = estimate_height(page.read_text(encoding="utf-8", errors="replace"))
        png = out_dir / f"{page.stem}.png"
        error = screenshot(chromium, page, png, args.width, height)
        if error is None:
            print(f"ok      {page.name} -> {png} ({args.width}x{height})")
        else:
            print(f"FAILED  {page.name}: {error}", file=sys.stderr)
            failures.append(page.name)

    if failures:
        print(f"{len(failures)} of {len(pages)} page(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
