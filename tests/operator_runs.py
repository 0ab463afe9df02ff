"""Operator runs for the fault tests (test_faults.py, test_faults_kill.py): a stand-in notebook, ``carequal
report`` started as a process of its own (in its own process group, killed with SIGKILL like an operator's
``kill -9``), and the check that reports, manifest and index agree.

The batch machinery is under test, not the report's content: the runs use a small stand-in notebook with the
report notebook's parameters (it sleeps ``CAREQUAL_TEST_DELAY`` seconds, waits while the file named by
``CAREQUAL_TEST_HOLD`` exists, writes a KPI record and shows its market and period), so a kill can land inside a
market and a whole batch takes seconds. The fixtures ``stand_in`` and ``work`` (conftest.py) are module-scoped: each
module has its own warm work folder (a copy of the session's prepared sample), so the two modules can run in
separate workers.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from carequal.batch import verify_folder

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
MARKETS = ["Lakeshore", "Northvale", "Riverton"]


def write_stand_in(folder: Path) -> Path:
    """A notebook with the report notebook's parameters that takes CAREQUAL_TEST_DELAY seconds, and then waits
    while the file named by CAREQUAL_TEST_HOLD exists (a run held open for as long as a test needs, whatever the
    machine's load)."""
    params = ("market: str = 'M'\nperiod_start: str = ''\nperiod_end: str = ''\nconditions: str = 'all'\n"
              "measures: str = 'all'\ndata: str = ''\nwork: str = ''\nreference: str = ''\nmin_cell: int = 11\n"
              "kpi_path: str = ''")
    body = ("import json, os, time\n"
            "time.sleep(float(os.environ.get('CAREQUAL_TEST_DELAY', '0')))\n"
            "hold, t0 = os.environ.get('CAREQUAL_TEST_HOLD', ''), time.monotonic()\n"
            "while hold and os.path.exists(hold) and time.monotonic() - t0 < 300:\n"
            "    time.sleep(0.05)\n"
            "if kpi_path:\n"
            "    with open(kpi_path, 'w') as f:\n"
            "        json.dump({'readmission': {'rate': 0.1, 'ratio': 1.0}}, f)\n"
            "from IPython.display import Markdown, display\n"
            "display(Markdown(f'# {market}: report for {period_start} to {period_end}'))")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    path = folder / "stand_in.ipynb"
    nbformat.write(nb, str(path))
    return path


def start_run(notebook: Path, out: Path, work: Path, *extra: str, delay: float = 0.0, data: Path = SAMPLE,
              period: str = "2024", hold: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "CAREQUAL_TEST_DELAY": str(delay), "PYTHONPATH": str(ROOT),
           "CAREQUAL_TEST_HOLD": str(hold or "")}
    cmd = [sys.executable, "-m", "carequal.cli", "report", "--data", str(data), "--out", str(out), "--work",
           str(work), "--period", period, "--workers", "1", "--notebook", str(notebook), "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before the kill point: "
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            kill(proc)
            raise AssertionError("kill point not reached")
        time.sleep(0.02)


def manifest_of(out: Path) -> dict | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def revision_of(out: Path) -> int:
    return (manifest_of(out) or {}).get("revision", 0)


def assert_consistent(out: Path, *, interrupted: bool = False) -> None:
    """Index, manifest and reports agree: every ready report is there with its hash, none is unrecorded, the
    index was rendered from this manifest, and every report is of the manifest's period (``interrupted``: as
    :func:`carequal.batch.verify_folder` allows for a stop between two renames)."""
    manifest = manifest_of(out)
    pages = sorted(p.name for p in out.glob("*.html")) if out.is_dir() else []
    if manifest is None:  # killed before the first commit: nothing published
        assert pages == [], pages
        return
    assert verify_folder(out, interrupted=interrupted) == []
    period = f"{manifest['set']['period_start']} to {manifest['set']['period_end']}"
    start, end = (datetime.date.fromisoformat(manifest["set"][k]) for k in ("period_start", "period_end"))
    assert f"Reporting period {start.day} {start:%B %Y} to {end.day} {end:%B %Y}" in (out / "index.html").read_text()
    for unit, record in manifest["markets"].items():
        if record["status"] == "ok":
            assert f"{unit}: report for {period}" in (out / record["html"]).read_text()


def executed_since(work: Path, t0: float) -> bool:
    return any(p.stat().st_mtime > t0 for p in (work / "notebooks").glob("*.ipynb"))
