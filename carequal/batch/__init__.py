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

from carequal.errors import FolderBusyError
from carequal.lazy import lazy_attributes

_NAMES: dict[str, tuple[str, ...]] = {
    "carequal.batch.jobs": ("EXECUTION_TIMEOUT", "MarketJob", "check_parameters", "render_html", "run_market",
                            "safe_name"),
    "carequal.batch.kernels": ("KernelSession", "close_sessions", "ipc_kernel_manager"),
    "carequal.batch.parameters": ("DEFAULT_NOTEBOOK", "PACKET_NOTEBOOK", "RunConfig", "available_markets",
                                  "configure", "find_agreement", "parse_programme"),
    "carequal.batch.run": ("BatchResult", "run_batch"),
    "carequal.batch.state": ("verify_folder", "write_atomic"),
    "carequal.periods": ("parse_period",),
}
_HOMES: dict[str, str] = {name: module for module, names in _NAMES.items() for name in names}
"""The package's names → their modules, loaded on first use (:mod:`carequal.lazy`): a worker process
unpickling :func:`run_market` imports :mod:`carequal.batch.jobs` and its kernels, not the run's report stack."""

__all__ = ["FolderBusyError", *_HOMES]

__getattr__, __dir__ = lazy_attributes(globals(), _HOMES)
del lazy_attributes  # a tool of this file, not a name of the package
