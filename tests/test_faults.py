"""Faults as an operator meets them: two runs at once, a folder holding another report set, a full disk, a
read-only or misplaced folder, quarantined rows and --strict, the disclosure floor (kills and resumes are in
test_faults_kill.py; the runs and the stand-in notebook in operator_runs.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

import operator_runs as run

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGKILL are POSIX")


def test_two_runs_at_once_never_write_together(stand_in, work, tmp_path):
    out, hold = tmp_path / "reports", tmp_path / "hold"
    hold.touch()  # the first run's markets wait while this file exists: it holds the folders until released
    first = run.start_run(stand_in, out, work, hold=hold)
    run.wait_for(lambda: (out / ".carequal" / "holder.json").is_file() and run.revision_of(out) >= 1, first)
    # same folder, another period: refused at once, naming the holder
    t0 = time.monotonic()
    code, _, stderr = run.finish(run.start_run(stand_in, out, work, period="2023"), timeout=120)
    assert code == 3 and time.monotonic() - t0 < 60
    assert f"in use by carequal run pid {first.pid}" in stderr and "started 20" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    # another output folder but the same work folder: refused too (the work folder is locked as well)
    code, _, stderr = run.finish(run.start_run(stand_in, tmp_path / "other", work), timeout=120)
    assert code == 3 and "work folder" in stderr
    # a run that waits: starts when the first has finished, and finds everything current
    waiting = run.start_run(stand_in, out, work, "--wait", "300")
    time.sleep(1.0)  # the waiting run is started (and waits) before the first is released
    hold.unlink()
    assert run.finish(first)[0] == 0
    code, stdout, stderr = run.finish(waiting)
    assert code == 0, stderr
    assert "(3 unchanged since the last run)" in stdout
    run.assert_consistent(out)


def test_another_report_set_is_refused_or_replaced_whole(stand_in, work, tmp_path):
    out = tmp_path / "reports"
    assert run.finish(run.start_run(stand_in, out, work))[0] == 0
    code, _, stderr = run.finish(run.start_run(stand_in, out, work, period="2023"))
    assert code == 2 and "holds another report set" in stderr and "--force" in stderr
    run.assert_consistent(out)  # untouched: still the 2024 set
    assert run.manifest_of(out)["set"]["period_start"] == "2024-01-01"
    # --force replaces the set; killed half-way, the folder shows part of the 2023 set and nothing of 2024
    proc = run.start_run(stand_in, out, work, "--force", delay=1.5, period="2023")
    def one_of_2023_ready() -> bool:
        manifest = run.manifest_of(out) or {}
        return manifest.get("set", {}).get("period_start") == "2023-01-01" and \
            sum(r.get("status") == "ok" for r in manifest["markets"].values()) >= 1

    run.wait_for(one_of_2023_ready, proc)
    run.kill(proc)
    run.assert_consistent(out, interrupted=True)
    index = (out / "index.html").read_text()
    assert "1 January 2023 to 31 December 2023" in index and "January 2024" not in index
    assert not [p for p in out.glob("*.html") if "2024-01-01" in p.read_text()]
    code, stdout, stderr = run.finish(run.start_run(stand_in, out, work, period="2023"))
    assert code == 0, stderr
    run.assert_consistent(out)


def test_a_full_disk_fails_in_one_line_and_resumes(stand_in, work, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the unit test of write_atomic covers ENOSPC")
    try:
        out = disk / "reports"
        code, stdout, stderr = run.finish(run.start_run(stand_in, out, work))
        assert code in (1, 2), stdout + stderr
        assert "Traceback" not in stdout + stderr
        assert "no space left on the device" in stderr or "FAILED" in stderr
        assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # no temporary file left behind
        run.assert_consistent(out, interrupted=True)  # stopped by the fault
        assert subprocess.run(["mount", "-o", "remount,size=20m", str(disk)]).returncode == 0
        code, stdout, stderr = run.finish(run.start_run(stand_in, out, work))
        assert code == 0, stderr
        run.assert_consistent(out)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_an_unwritable_or_misplaced_out_is_refused_in_one_line(stand_in, work, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cases = [(tmp_path / "a_file", "is a file"), (run.SAMPLE / "reports", "inside the data folder")]
    (tmp_path / "a_file").write_text("not a folder")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode == 0
    if mounted:
        cases.append((ro / "reports", "not allowed to write"))
    try:
        for out, message in cases:
            code, stdout, stderr = run.finish(run.start_run(stand_in, out, work))
            assert code == 2 and message in stderr, (out, stderr)
            assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stdout + stderr
        assert not (run.SAMPLE / "reports").exists()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)])


def test_quarantined_rows_are_summarised_and_strict_refuses(stand_in, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(run.SAMPLE, data, ignore=shutil.ignore_patterns("truth*", "agreement*"))
    stays = data / "stays.csv"
    lines = stays.read_text().splitlines()
    header = lines[0].split(",")
    bad = lines[1].split(",")
    bad[header.index("stay_id")] = "S_BAD"
    bad[header.index("discharge_date")] = "2024-02-30"  # not a date
    stays.write_text("\n".join([*lines, ",".join(bad)]) + "\n")
    out, work = tmp_path / "reports", tmp_path / "work"
    code, stdout, stderr = run.finish(run.start_run(stand_in, out, work, "--strict", data=data))
    assert code == 2 and "--strict" in stderr and "stays: 1 of" in stderr, stderr
    assert not (out / "manifest.json").exists() and not (out / "index.html").exists()
    code, stdout, stderr = run.finish(run.start_run(stand_in, out, work, data=data))
    assert code == 0, stderr
    assert re.search(r"quarantined stays: 1 of [\d,]+ rows quarantined", stderr)
    assert run.manifest_of(out)["validation"]["stays"]["quarantined"] == 1


def test_small_cells_need_an_explicit_flag(stand_in, work, tmp_path):
    out = tmp_path / "reports"
    code, _, stderr = run.finish(run.start_run(stand_in, out, work, "--min-cell", "1"))
    assert code == 2 and "below the disclosure floor of 11" in stderr and "--allow-small-cells" in stderr
    assert not (out / "index.html").exists()
    code, _, stderr = run.finish(run.start_run(stand_in, out, work, "--min-cell", "5", "--allow-small-cells"))
    assert code == 0, stderr
    index = (out / "index.html").read_text()
    assert "Counts from 1 to 4 are suppressed" in index and "below the standard threshold" in index
