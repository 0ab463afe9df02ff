"""Board-ready PDFs of the rendered reports (``carequal report --pdf``), printed by a headless Chromium.

The report's own print style (``carequal/templates/carequal_report``) does the layout: A4 pages, no table, chart
or caption split across a page break (``break-inside: avoid``), headings kept with what follows, and a footer
on every page with the reporting period, the suppression statement and "page N of M" (CSS page-margin boxes,
which Chromium prints since version 131). Chromium is the one renderer: it is what the reports are tested in
(``tests/test_browser.py``), and it needs no Python package.

The browser is found as ``$CAREQUAL_CHROMIUM`` or ``chromium``, ``chromium-browser``, ``google-chrome`` on the
``PATH``; a run with ``--pdf`` and no browser stops before any work (exit status 2) saying what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from carequal.errors import ParameterError

__all__ = ["CHROMIUM_NAMES", "chromium_flags", "find_chromium", "render_pdf", "require_chromium"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT = 180
"""Seconds one PDF may take before the report is failed."""


def find_chromium() -> str | None:
    """The Chromium to print with: ``$CAREQUAL_CHROMIUM`` when set, else the first of :data:`CHROMIUM_NAMES`
    on the ``PATH``; None when there is none."""
    chosen = os.environ.get("CAREQUAL_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() or shutil.which(chosen) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """:func:`find_chromium`, or a :class:`ParameterError` that says what to install."""
    found = find_chromium()
    if found is None:
        where = os.environ.get("CAREQUAL_CHROMIUM")
        raise ParameterError(
            ("--pdf: CAREQUAL_CHROMIUM=" + where + " is not a program" if where else
             f"--pdf needs a Chromium browser to print the reports, and none was found (looked for "
             f"{', '.join(CHROMIUM_NAMES)} on the PATH)")
            + ". Install one — Debian/Ubuntu: `apt-get install chromium`; Fedora: `dnf install chromium`; macOS: "
            "`brew install --cask chromium` — or point CAREQUAL_CHROMIUM at a Chromium or Chrome binary; or run "
            "without --pdf")
    return found


def chromium_flags(profile: str) -> list[str]:
    """Flags for a quiet headless Chromium on a machine without network: no first-run, sync, component or
    background traffic, a throw-away profile."""
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}"]


def render_pdf(html: str | Path, pdf: str | Path, *, chromium: str | None = None) -> float:
    """Print ``html`` to ``pdf`` with headless Chromium (its print style and footer, no browser header or
    footer); written to a temporary name, then moved into place. Returns the seconds taken.

    Raises
    ------
    RuntimeError
        Chromium failed or wrote no PDF (with the end of its error output).
    """
    started = time.perf_counter()
    chromium = chromium or require_chromium()
    pdf = Path(pdf)
    tmp = pdf.with_name(f".{pdf.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="carequal-chromium-") as profile:
        command = [chromium, *chromium_flags(profile), "--no-pdf-header-footer", "--virtual-time-budget=10000",
                   "--run-all-compositor-stages-before-draw", f"--print-to-pdf={tmp}", Path(html).resolve().as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"Chromium did not print {Path(html).name} within {TIMEOUT} s") from None
    if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        tail = " | ".join((done.stderr or "").strip().splitlines()[-5:])
        raise RuntimeError(f"Chromium (exit status {done.returncode}) wrote no PDF of {Path(html).name}: {tail}")
    os.replace(tmp, pdf)
    return time.perf_counter() - started
