"""``carequal report`` killed (SIGKILL to its process group) at five points of a run and resumed, and a report
moved into place but never recorded: the next run redoes exactly what was not finished, and at every moment the
reports, the manifest and the index agree. The runs and the stand-in notebook are in operator_runs.py."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

import operator_runs as run
from carequal.batch import verify_folder

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGKILL are POSIX")


KILL_POINTS = {
    # killed while validating and fitting the national models (a cold work folder)
    "preparing": lambda out, work, t0: (work / "prepared").is_dir(),
    # the first commit (every market pending) is written; the first market is executing
    "executing": lambda out, work, t0: run.revision_of(out) >= 1,
    # the first market's notebook has run: it is being rendered, staged, moved into place or committed
    "rendering": lambda out, work, t0: run.executed_since(work, t0),
    # the first market is committed; the second is executing
    "first committed": lambda out, work, t0: run.revision_of(out) >= 2,
    # two markets are committed; the third is executing
    "second committed": lambda out, work, t0: run.revision_of(out) >= 3,
}
FINISHED_AT_KILL = {"preparing": {0}, "executing": {0}, "rendering": {0, 1}, "first committed": {1},
                    "second committed": {2}}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_then_resume_redoes_only_unfinished_markets(point, stand_in, work, tmp_path):
    out = tmp_path / "reports"
    run_work = tmp_path / "cold_work" if point == "preparing" else work
    t0 = time.time()
    proc = run.start_run(stand_in, out, run_work, delay=1.5)
    run.wait_for(lambda: KILL_POINTS[point](out, run_work, t0), proc)
    if point == "preparing":
        time.sleep(0.3)
    sockets = list(Path(tempfile.gettempdir()).glob(f"carequal-kernel-{proc.pid}-*"))  # its kernel's, named after it
    run.kill(proc)
    # no kernel while preparing; once a market's notebook has run, the run's kernel (kept for the next market) has
    # its socket folder (at "executing" it may not have started yet)
    if point == "preparing":
        assert not sockets
    elif point != "executing":
        assert sockets
    run.assert_consistent(out, interrupted=True)
    before = run.manifest_of(out) or {"markets": {}}
    done = {m: r["started"] for m, r in before["markets"].items() if r.get("status") == "ok"}
    assert len(done) in FINISHED_AT_KILL[point], before["markets"]

    code, stdout, stderr = run.finish(run.start_run(stand_in, out, run_work))
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr
    run.assert_consistent(out)
    after = run.manifest_of(out)
    assert [m for m, r in after["markets"].items() if r["status"] == "ok"] == run.MARKETS
    for market, record in after["markets"].items():
        if market in done:  # finished before the run.kill: kept, not redone
            assert record["reused"] is True and record["started"] == done[market]
        else:
            assert record["reused"] is False and record["started"] > before.get("started", "")
    assert f"({len(done)} unchanged since the last run)" in stdout
    assert not list((out / ".carequal" / "staging").glob("*/*"))  # the killed run's staging is not published
    # nor are its kernel's socket folders left behind: the next run removed them (their process is gone)
    assert not [p for p in sockets if p.exists()]


def test_an_unrecorded_report_is_not_published(stand_in, work, tmp_path):
    """A run.kill between moving a report into place and committing it leaves a report the manifest does not record:
    the next run removes it and redoes that market (and the index never linked it)."""
    out = tmp_path / "reports"
    assert run.finish(run.start_run(stand_in, out, work))[0] == 0
    manifest = run.manifest_of(out)
    record = manifest["markets"]["Northvale"]
    record.update(status="pending", html=None)  # the state just before Northvale's commit
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert "Northvale.html is not recorded in the manifest" in " ".join(verify_folder(out))
    code, stdout, stderr = run.finish(run.start_run(stand_in, out, work))
    assert code == 0, stderr
    run.assert_consistent(out)
    reused = {m: r["reused"] for m, r in run.manifest_of(out)["markets"].items()}
    assert reused == {"Lakeshore": True, "Northvale": False, "Riverton": True}
