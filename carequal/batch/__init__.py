"""The monthly batch: the report notebook run once per market (or per partner), rendered for leaders, indexed.

The package reads top-down:

* :mod:`~carequal.batch.parameters` — what a run is asked to do, checked before anything runs;
* :mod:`~carequal.batch.state` — one run per output folder, the manifest committed after every report, recovery;
* :mod:`~carequal.batch.kernels` — IPC kernels, reused across reports;
* :mod:`~carequal.batch.jobs` — one report: execute, render without code, never raise;
* :mod:`~carequal.batch.index` — the index pages, rendered from the manifest;
* :mod:`~carequal.batch.run` — :func:`run_batch`: lock, prepare, plan, execute, commit.

Folders: ``out/`` holds only what may be shared — the reports, the index and the manifest (and ``.carequal/``,
the lock and the staging area). The work folder (``<out>.work/`` by default) holds patient-level data (the
ingested dataset, quarantined rows, the national reference rows) and, per report, the executed notebook, its
KPI record and, after a failure, the error with its traceback.

Why hand-written: papermill and nbconvert execute and render one notebook; running many in parallel with retry,
resume, a lock, crash-consistent state and an index is the part no maintained tool covers (papermill's own docs
leave it to the caller), and it is small.
"""

from carequal.batch.jobs import EXECUTION_TIMEOUT, MarketJob, render_html, run_market, safe_name
from carequal.batch.kernels import KernelSession, close_sessions, ipc_kernel_manager
from carequal.batch.parameters import (
    DEFAULT_NOTEBOOK,
    PACKET_NOTEBOOK,
    RunConfig,
    available_markets,
    check_parameters,
    configure,
    find_agreement,
)
from carequal.batch.run import BatchResult, run_batch
from carequal.batch.state import verify_folder, write_atomic
from carequal.errors import FolderBusyError
from carequal.periods import parse_period

__all__ = ["BatchResult", "DEFAULT_NOTEBOOK", "EXECUTION_TIMEOUT", "FolderBusyError", "KernelSession", "MarketJob",
           "PACKET_NOTEBOOK", "RunConfig", "available_markets", "check_parameters", "close_sessions", "configure",
           "find_agreement", "ipc_kernel_manager", "parse_period", "render_html", "run_batch", "run_market",
           "safe_name", "verify_folder", "write_atomic"]
