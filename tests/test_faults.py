"""Faults as an operator meets them: ``carequal report`` killed at several points and resumed, two runs at once,
a full disk, a read-only folder, a folder holding another report set, the disclosure floor, quarantined rows.

The batch machinery is under test here, not the report's content: the runs use a small stand-in notebook with the
report notebook's parameters (it sleeps ``CAREQUAL_TEST_DELAY`` seconds, writes a KPI record and shows its market
and period), so a kill can land inside a market, and a whole batch takes seconds. Each run is a separate
``python -m carequal.cli`` process in its own process group, killed with SIGKILL like an operator's ``kill -9``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from carequal.batch import verify_folder

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
MARKETS = ["Lakeshore", "Northvale", "Riverton"]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGKILL are POSIX")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """A notebook with the report notebook's parameters that takes CAREQUAL_TEST_DELAY seconds, and then waits
    while the file named by CAREQUAL_TEST_HOLD exists (a run held open for as long as a test needs, whatever the
    machine's load)."""
    folder = tmp_path_factory.mktemp("notebook")
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


@pytest.fixture(scope="module")
def work(tmp_path_factory, stand_in) -> Path:
    """A work folder whose prepared inputs (2024) are built once for the module."""
    folder = tmp_path_factory.mktemp("faults") / "work"
    out = folder.parent / "warm"
    proc = _start(stand_in, out, folder)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return folder


def _start(notebook: Path, out: Path, work: Path, *extra: str, delay: float = 0.0, data: Path = SAMPLE,
           period: str = "2024", hold: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "CAREQUAL_TEST_DELAY": str(delay), "PYTHONPATH": str(ROOT),
           "CAREQUAL_TEST_HOLD": str(hold or "")}
    cmd = [sys.executable, "-m", "carequal.cli", "report", "--data", str(data), "--out", str(out), "--work",
           str(work), "--period", period, "--workers", "1", "--notebook", str(notebook), "--quiet", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before the kill point: "
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            _kill(proc)
            raise AssertionError("kill point not reached")
        time.sleep(0.02)


def _manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _revision(out: Path) -> int:
    return (_manifest(out) or {}).get("revision", 0)


def _assert_consistent(out: Path, *, interrupted: bool = False) -> None:
    """Index, manifest and reports agree: every ready report is there with its hash, none is unrecorded, the
    index was rendered from this manifest, and every report is of the manifest's period (``interrupted``: as
    :func:`carequal.batch.verify_folder` allows for a stop between two renames)."""
    manifest = _manifest(out)
    pages = sorted(p.name for p in out.glob("*.html")) if out.is_dir() else []
    if manifest is None:  # killed before the first commit: nothing published
        assert pages == [], pages
        return
    assert verify_folder(out, interrupted=interrupted) == []
    period = f"{manifest['set']['period_start']} to {manifest['set']['period_end']}"
    assert period in (out / "index.html").read_text().replace("Reporting period ", "")
    for unit, record in manifest["markets"].items():
        if record["status"] == "ok":
            assert f"{unit}: report for {period}" in (out / record["html"]).read_text()


def _executed_since(work: Path, t0: float) -> bool:
    return any(p.stat().st_mtime > t0 for p in (work / "notebooks").glob("*.ipynb"))


KILL_POINTS = {
    # killed while validating and fitting the national models (a cold work folder)
    "preparing": lambda out, work, t0: (work / "prepared").is_dir(),
    # the first commit (every market pending) is written; the first market is executing
    "executing": lambda out, work, t0: _revision(out) >= 1,
    # the first market's notebook has run: it is being rendered, staged, moved into place or committed
    "rendering": lambda out, work, t0: _executed_since(work, t0),
    # the first market is committed; the second is executing
    "first committed": lambda out, work, t0: _revision(out) >= 2,
    # two markets are committed; the third is executing
    "second committed": lambda out, work, t0: _revision(out) >= 3,
}
FINISHED_AT_KILL = {"preparing": {0}, "executing": {0}, "rendering": {0, 1}, "first committed": {1},
                    "second committed": {2}}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_then_resume_redoes_only_unfinished_markets(point, stand_in, work, tmp_path):
    out = tmp_path / "reports"
    run_work = tmp_path / "cold_work" if point == "preparing" else work
    t0 = time.time()
    proc = _start(stand_in, out, run_work, delay=1.5)
    _wait_for(lambda: KILL_POINTS[point](out, run_work, t0), proc)
    if point == "preparing":
        time.sleep(0.3)
    _kill(proc)
    _assert_consistent(out, interrupted=True)
    before = _manifest(out) or {"markets": {}}
    done = {m: r["started"] for m, r in before["markets"].items() if r.get("status") == "ok"}
    assert len(done) in FINISHED_AT_KILL[point], before["markets"]

    code, stdout, stderr = _finish(_start(stand_in, out, run_work))
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr
    _assert_consistent(out)
    after = _manifest(out)
    assert [m for m, r in after["markets"].items() if r["status"] == "ok"] == MARKETS
    for market, record in after["markets"].items():
        if market in done:  # finished before the kill: kept, not redone
            assert record["reused"] is True and record["started"] == done[market]
        else:
            assert record["reused"] is False and record["started"] > before.get("started", "")
    assert f"({len(done)} unchanged since the last run)" in stdout
    assert not list((out / ".carequal" / "staging").glob("*/*"))  # the killed run's staging is not published


def test_an_unrecorded_report_is_not_published(stand_in, work, tmp_path):
    """A kill between moving a report into place and committing it leaves a report the manifest does not record:
    the next run removes it and redoes that market (and the index never linked it)."""
    out = tmp_path / "reports"
    assert _finish(_start(stand_in, out, work))[0] == 0
    manifest = _manifest(out)
    record = manifest["markets"]["Northvale"]
    record.update(status="pending", html=None)  # the state just before Northvale's commit
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "Northvale.html is not recorded in the manifest" in " ".join(verify_folder(out))
    code, stdout, stderr = _finish(_start(stand_in, out, work))
    assert code == 0, stderr
    _assert_consistent(out)
    reused = {m: r["reused"] for m, r in _manifest(out)["markets"].items()}
    assert reused == {"Lakeshore": True, "Northvale": False, "Riverton": True}


def test_two_runs_at_once_never_write_together(stand_in, work, tmp_path):
    out, hold = tmp_path / "reports", tmp_path / "hold"
    hold.touch()  # the first run's markets wait while this file exists: it holds the folders until released
    first = _start(stand_in, out, work, hold=hold)
    _wait_for(lambda: (out / ".carequal" / "holder.json").is_file() and _revision(out) >= 1, first)
    # same folder, another period: refused at once, naming the holder
    t0 = time.monotonic()
    code, _, stderr = _finish(_start(stand_in, out, work, period="2023"), timeout=120)
    assert code == 3 and time.monotonic() - t0 < 60
    assert f"in use by carequal run pid {first.pid}" in stderr and "started 20" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    # another output folder but the same work folder: refused too (the work folder is locked as well)
    code, _, stderr = _finish(_start(stand_in, tmp_path / "other", work), timeout=120)
    assert code == 3 and "work folder" in stderr
    # a run that waits: starts when the first has finished, and finds everything current
    waiting = _start(stand_in, out, work, "--wait", "300")
    time.sleep(1.0)  # the waiting run is started (and waits) before the first is released
    hold.unlink()
    assert _finish(first)[0] == 0
    code, stdout, stderr = _finish(waiting)
    assert code == 0, stderr
    assert "(3 unchanged since the last run)" in stdout
    _assert_consistent(out)


def test_another_report_set_is_refused_or_replaced_whole(stand_in, work, tmp_path):
    out = tmp_path / "reports"
    assert _finish(_start(stand_in, out, work))[0] == 0
    code, _, stderr = _finish(_start(stand_in, out, work, period="2023"))
    assert code == 2 and "holds another report set" in stderr and "--force" in stderr
    _assert_consistent(out)  # untouched: still the 2024 set
    assert _manifest(out)["set"]["period_start"] == "2024-01-01"
    # --force replaces the set; killed half-way, the folder shows part of the 2023 set and nothing of 2024
    proc = _start(stand_in, out, work, "--force", delay=1.5, period="2023")
    def one_of_2023_ready() -> bool:
        manifest = _manifest(out) or {}
        return manifest.get("set", {}).get("period_start") == "2023-01-01" and \
            sum(r.get("status") == "ok" for r in manifest["markets"].values()) >= 1

    _wait_for(one_of_2023_ready, proc)
    _kill(proc)
    _assert_consistent(out, interrupted=True)
    index = (out / "index.html").read_text()
    assert "2023-01-01 to 2023-12-31" in index and "2024-01-01" not in index
    assert not [p for p in out.glob("*.html") if "2024-01-01" in p.read_text()]
    code, stdout, stderr = _finish(_start(stand_in, out, work, period="2023"))
    assert code == 0, stderr
    _assert_consistent(out)


def test_a_full_disk_fails_in_one_line_and_resumes(stand_in, work, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the unit test of write_atomic covers ENOSPC")
    try:
        out = disk / "reports"
        code, stdout, stderr = _finish(_start(stand_in, out, work))
        assert code in (1, 2), stdout + stderr
        assert "Traceback" not in stdout + stderr
        assert "no space left on the device" in stderr or "FAILED" in stderr
        assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # no temporary file left behind
        _assert_consistent(out, interrupted=True)  # stopped by the fault
        assert subprocess.run(["mount", "-o", "remount,size=20m", str(disk)]).returncode == 0
        code, stdout, stderr = _finish(_start(stand_in, out, work))
        assert code == 0, stderr
        _assert_consistent(out)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_an_unwritable_or_misplaced_out_is_refused_in_one_line(stand_in, work, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cases = [(tmp_path / "a_file", "is a file"), (SAMPLE / "reports", "inside the data folder")]
    (tmp_path / "a_file").write_text("not a folder")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode == 0
    if mounted:
        cases.append((ro / "reports", "not allowed to write"))
    try:
        for out, message in cases:
            code, stdout, stderr = _finish(_start(stand_in, out, work))
            assert code == 2 and message in stderr, (out, stderr)
            assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stdout + stderr
        assert not (SAMPLE / "reports").exists()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)])


def test_quarantined_rows_are_summarised_and_strict_refuses(stand_in, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth*", "agreement*"))
    stays = data / "stays.csv"
    lines = stays.read_text().splitlines()
    header = lines[0].split(",")
    bad = lines[1].split(",")
    bad[header.index("stay_id")] = "S_BAD"
    bad[header.index("discharge_date")] = "2024-02-30"  # not a date
    stays.write_text("\n".join([*lines, ",".join(bad)]) + "\n")
    out, work = tmp_path / "reports", tmp_path / "work"
    code, stdout, stderr = _finish(_start(stand_in, out, work, "--strict", data=data))
    assert code == 2 and "--strict" in stderr and "stays: 1 of" in stderr, stderr
    assert not (out / "manifest.json").exists() and not (out / "index.html").exists()
    code, stdout, stderr = _finish(_start(stand_in, out, work, data=data))
    assert code == 0, stderr
    assert re.search(r"quarantined stays: 1 of [\d,]+ rows quarantined", stderr)
    assert _manifest(out)["validation"]["stays"]["quarantined"] == 1


def test_small_cells_need_an_explicit_flag(stand_in, work, tmp_path):
    out = tmp_path / "reports"
    code, _, stderr = _finish(_start(stand_in, out, work, "--min-cell", "1"))
    assert code == 2 and "below the disclosure floor of 11" in stderr and "--allow-small-cells" in stderr
    assert not (out / "index.html").exists()
    code, _, stderr = _finish(_start(stand_in, out, work, "--min-cell", "5", "--allow-small-cells"))
    assert code == 0, stderr
    index = (out / "index.html").read_text()
    assert "Counts from 1 to 4 are suppressed" in index and "below the standard threshold" in index
