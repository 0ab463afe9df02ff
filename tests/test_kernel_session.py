"""One kernel for several reports (batch.KernelSession): nothing of one notebook reaches the next, failures and
the run limit replace the kernel. (A market's report from a reused kernel is compared with one from a kernel of
its own in test_batch.)"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from carequal import batch
from conftest import copy_prepared

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def _nb(*sources: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources],
                                    metadata={"kernelspec": {"name": "python3", "language": "python",
                                                             "display_name": "Python 3"}})


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture
def session(tmp_path):
    s = batch.KernelSession(str(tmp_path), max_runs=3)
    yield s
    s.close()


def test_namespace_and_figures_do_not_leak_between_notebooks(session):
    first = _nb("import os\nsecret = 42\nimport matplotlib.pyplot as plt\nplt.figure()\nprint(os.getpid())")
    session.execute(first, timeout=60)
    pid = _text(first).strip()
    second = _nb("import os, sys, matplotlib.pyplot as plt\n"
                 "print(os.getpid(), 'secret' in globals(), 'plt' in dir(), len(plt.get_fignums()),\n"
                 "      'matplotlib.pyplot' in sys.modules)")
    session.execute(second, timeout=60)
    # same kernel process, no variable or figure of the first notebook, modules still imported
    assert _text(second).split() == [pid, "False", "True", "0", "True"]


def test_clearing_a_kernel_that_drew_nothing_loads_no_plotting(session):
    """Between notebooks that never import pyplot, the reset closes no figures and imports nothing (about 0.5 s
    of a kernel's CPU per notebook, e.g. a notebook of tables only)."""
    first = _nb("import os\nprint(os.getpid())")
    session.execute(first, timeout=60)
    second = _nb("import os, sys\nprint(os.getpid(), 'matplotlib.pyplot' in sys.modules, 'matplotlib' in sys.modules)")
    session.execute(second, timeout=60)
    assert _text(second).split() == [_text(first).strip(), "False", "False"]


def test_a_failure_replaces_the_kernel(session):
    """The session itself replaces its kernel after a failed notebook (nothing the caller does)."""
    first = _nb("import os\nprint(os.getpid())")
    session.execute(first, timeout=60)
    with pytest.raises(CellExecutionError):
        session.execute(_nb("leftover = 'from the failed notebook'", "raise ValueError('boom')"), timeout=60)
    assert session.km is None  # the failed kernel is gone at once, not at the next start
    again = _nb("import os\nprint(os.getpid(), 'leftover' in globals())")
    session.execute(again, timeout=60)
    pid, leaked = _text(again).split()
    assert pid != _text(first).strip() and leaked == "False"


def test_a_failed_reset_replaces_the_kernel(session):
    """A kernel whose namespace cannot be cleared (here: closing its figures fails) is not reused: the next
    notebook runs, on a new kernel."""
    first = _nb("import os, sys\nsys.modules['matplotlib.pyplot'] = None\nleftover = 1\nprint(os.getpid())")
    session.execute(first, timeout=60)
    again = _nb("import os\nprint(os.getpid(), 'leftover' in globals())")
    session.execute(again, timeout=60)
    pid, leaked = _text(again).split()
    assert pid != _text(first).strip() and leaked == "False"


def test_the_kernel_is_replaced_after_max_runs(session):
    pids = []
    for _ in range(4):
        nb = _nb("import os\nprint(os.getpid())")
        session.execute(nb, timeout=60)
        pids.append(_text(nb).strip())
    assert pids[0] == pids[1] == pids[2] != pids[3]  # max_runs = 3


def test_fresh_kernels_give_each_market_a_kernel_of_its_own(tmp_path, sample_work):
    """``fresh_kernels`` (``--fresh-kernels``): every market on a new kernel, none reused."""
    from operator_runs import write_stand_in

    notebook = write_stand_in(tmp_path)  # the report's parameters; a cell printing the kernel's process added
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import os\nprint(os.getpid())"))
    nbformat.write(nb, str(notebook))
    result = batch.run_batch(SAMPLE, tmp_path / "reports", markets="Northvale,Riverton", workers=1, period="2024",
                             progress=False, fresh_kernels=True, notebook=notebook,
                             work=copy_prepared(sample_work, tmp_path / "work"))
    assert result.ok and result.manifest["parameters"]["reuse_kernel"] is False
    pids = {m: _text(nbformat.read(str(result.work / "notebooks" / f"{m}.ipynb"), as_version=4)).split()[-1]
            for m in ("Northvale", "Riverton")}
    assert pids["Northvale"] != pids["Riverton"]


def test_socket_folders_of_killed_processes_are_removed(tmp_path, monkeypatch):
    """A kernel's socket folder is named after the process that made it; a folder whose process is gone (killed
    with ``kill -9``, so it never removed it) is removed when the next one is made; a live process's is kept."""
    import subprocess
    import sys
    import tempfile

    from carequal.batch.kernels import FOLDER_PREFIX, kernel_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dead, alive = tmp_path / f"{FOLDER_PREFIX}{gone}-x1", tmp_path / f"{FOLDER_PREFIX}{os.getppid()}-x2"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "kernel-1").write_text("")
    other = tmp_path / "carequal-kernel-notapid"  # not one of ours: left alone
    other.mkdir()
    with kernel_folder() as made:
        assert Path(made).name.startswith(f"{FOLDER_PREFIX}{os.getpid()}-")
        assert not dead.exists() and alive.is_dir() and other.is_dir()
    assert not Path(made).exists()


def test_a_warm_kernel_loads_the_notebooks_imports_only():
    from carequal.batch.kernels import setup_imports
    from carequal.packaged import notebook

    code = setup_imports(notebook("partner_packet"))
    assert code.splitlines()[0] == "%matplotlib inline" and "from carequal import packet as pk" in code
    assert all(line.startswith(("%", "import ", "from ")) for line in code.splitlines())  # no parameter is read


def _clocked_reads(replies):
    """A fake shell-socket read and clock: each read waits the seconds it is given (on the fake clock) and
    returns the next of ``replies``, or raises ``queue.Empty`` for a ``None``."""
    from queue import Empty

    now, waits, left = [0.0], [], list(replies)

    async def read(seconds):
        waits.append(seconds)
        now[0] += seconds
        reply = left.pop(0) if left else None
        if reply is None:
            raise Empty
        return reply

    return read, (lambda: now[0]), waits


def test_a_reply_is_awaited_in_slices_until_the_timeout():
    import asyncio
    from queue import Empty

    from carequal.batch.kernels import wait_in_slices

    # a reply that a first read missed is read by the next slice, not when the timeout ends
    read, clock, waits = _clocked_reads([None, "reply"])
    assert asyncio.run(wait_in_slices(read, 3600, clock=clock)) == "reply" and waits == [1.0, 1.0]
    # no reply: Empty once the timeout is used up, the last slice only what was left of it
    read, clock, waits = _clocked_reads([])
    with pytest.raises(Empty):
        asyncio.run(wait_in_slices(read, 2.5, clock=clock))
    assert waits == [1.0, 1.0, 0.5]
    # no timeout: the slices go on until a reply comes
    read, clock, waits = _clocked_reads([None] * 5 + ["late"])
    assert asyncio.run(wait_in_slices(read, None, clock=clock)) == "late" and waits == [1.0] * 6


def test_the_batch_kernels_wait_for_replies_in_slices(session, monkeypatch):
    """A session's notebook client (nbclient) reads its shell replies through wait_in_slices, with the cell's
    timeout: the report kernels of the batch do not wait out a reply missed by the event loop."""
    from carequal.batch import kernels

    timeouts = []
    sliced = kernels.wait_in_slices

    async def spy(read, timeout, **kwargs):
        timeouts.append(timeout)
        return await sliced(read, timeout, **kwargs)

    monkeypatch.setattr(kernels, "wait_in_slices", spy)
    nb = _nb("print(6 * 7)")
    session.execute(nb, timeout=45)
    assert _text(nb).strip() == "42" and 45 in timeouts


def test_workers_and_warmed_kernels_collect_with_the_batch_thresholds(session, tmp_path):
    """The batch's worker processes (their initializer) and its warmed report kernels use the batch's collector
    thresholds; a notebook run on a kernel that was not warmed keeps Python's."""
    import subprocess
    import sys

    from carequal.batch.kernels import COLLECTOR_THRESHOLDS

    worker = subprocess.run([sys.executable, "-c", "import gc\nfrom carequal.batch.jobs import _import_worker\n"
                             "_import_worker()\nprint(gc.get_threshold())"], capture_output=True, text=True)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.split("\n")[-2] == str(COLLECTOR_THRESHOLDS)
    probe = "import gc\nprint(gc.get_threshold())"
    python = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    cold = _nb(probe)
    session.execute(cold, timeout=60)
    assert _text(cold).strip() == python != str(COLLECTOR_THRESHOLDS)  # Python's defaults
    warmed = batch.KernelSession(str(tmp_path), max_runs=3)
    try:
        assert warmed.warm("import os")
        nb = _nb(probe)
        warmed.execute(nb, timeout=60)
        assert _text(nb).strip() == str(COLLECTOR_THRESHOLDS)
    finally:
        warmed.close()
