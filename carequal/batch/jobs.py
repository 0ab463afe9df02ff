"""One report: execute its notebook with papermill's parameters, render it without code, never raise.

:func:`run_market` runs in a worker process (or on a Dask worker): it executes the notebook on a reused kernel
(:class:`carequal.batch.kernels.KernelSession`) or on a fresh one per report (papermill's way), retries a kernel
start that collides, renders the executed notebook to one self-contained HTML file with all code hidden
(``exclude_input``; papermill's ``--report-mode`` alone does not hide it) and returns the outcome with its
timings. The HTML goes to the run's staging folder; the batch moves it into place and records it.

The kernel's working folder is the folder of the executed notebook (``<work>/notebooks``), not the notebook's
own: the shipped notebooks live inside the installed package (read-only, perhaps zipped), and whatever a kernel
writes to a relative path must land in the work folder. The report template (``carequal/templates``) is found
through :mod:`importlib.resources` (:func:`carequal.packaged.template_dir`).

:func:`check_parameters` (a run's parameters against the notebook's ``parameters`` cell) lives here, beside the
execution it guards, rather than with the run's other checks in :mod:`carequal.batch.parameters`: the partner
batch runs it in a started worker while it computes the packet inputs, and a worker unpickling it from here loads
only this module (papermill, which it needs anyway), not the run's data stack.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import os
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from carequal.batch.kernels import (
    KERNEL,
    close_sessions,
    execute_in_session,
    ipc_kernel_manager,
    kernel_environment,
    kernel_folder,
    tune_collector,
    warm_session,
)
from carequal.batch.state import write_atomic
from carequal.errors import ParameterError

__all__ = ["EXECUTION_TIMEOUT", "MarketJob", "check_parameters", "execute_jobs", "render_html", "run_market",
           "safe_name", "start_workers", "warm_kernels"]

EXECUTION_TIMEOUT = 3600
"""Seconds one notebook cell may run before the market is failed (a hung kernel must not hang the batch)."""


@dataclass
class MarketJob:
    """Everything a worker needs to run one market (picklable, paths absolute)."""

    market: str
    notebook: str
    parameters: dict
    html: str
    executed: str
    kpis: str
    error: str
    retries: int = 3
    title: str = ""
    reuse_kernel: bool = True
    markets_per_kernel: int = 25
    pdf: str = ""
    """Where to print the report's PDF (``--pdf``; empty: no PDF)."""
    footer: str = ""
    """The printed pages' footer: the reporting period and the suppression statement."""


def safe_name(market: str) -> str:
    """A file name for a market: letters, digits, ``-`` and ``_`` kept, anything else ``_``.

    Examples
    --------
    >>> safe_name("St. Louis / East")
    'St__Louis___East'
    """
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in market)


_PYTYPES = {"str": str, "int": int, "float": (int, float), "bool": bool}
"""Python types of the type names papermill infers from a notebook's ``parameters`` cell."""


def check_parameters(notebook: str | Path, parameters: dict) -> None:
    """Check parameter names and types against the notebook's typed ``parameters`` cell.

    Raises
    ------
    ParameterError
        Naming every unknown parameter (with the declared ones) and every value of the wrong type.
    """
    import papermill  # ~0.5 s with its Jupyter stack, for this one check: loaded when it runs

    declared = papermill.inspect_notebook(str(notebook))
    problems = []
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        problems.append(f"unknown parameter(s) {', '.join(unknown)}; {Path(notebook).name} declares "
                        f"{', '.join(declared)}")
    for name, value in parameters.items():
        spec = declared.get(name)
        if spec is None:
            continue
        typename = spec.get("inferred_type_name")
        if typename in (None, "None"):
            problems.append(f"parameter {name} has no type annotation in {Path(notebook).name}; annotate it "
                            "(e.g. `min_cell: int = 11`) so values can be checked")
            continue
        want = _PYTYPES.get(typename)
        if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            problems.append(f"parameter {name} must be {typename}, not {type(value).__name__} ({value!r})")
    if problems:
        raise ParameterError("report parameters: " + "; ".join(problems))


def _is_port_collision(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return "Address already in use" in text or "Kernel died before replying" in text or "ZMQError" in text


_EXPORTERS = threading.local()


def _exporter(templates: str):
    """This thread's HTML exporter for carequal's report template in ``templates``, built once: an exporter
    compiles its Jinja templates on first use (about a quarter of a second), and its options are the same for
    every report. A report's own title and footer reach the template through the notebook's metadata, never
    through the exporter, so one exporter renders every report of a process (one per thread: a Dask worker may
    render in several threads)."""
    from nbconvert import HTMLExporter  # Jupyter stack: see render_html

    cache = getattr(_EXPORTERS, "by_dir", None)
    if cache is None:
        cache = _EXPORTERS.by_dir = {}
    if templates not in cache:
        # carequal's template: the lab page without CDN scripts (reports are read offline and hold no LaTeX)
        cache[templates] = HTMLExporter(extra_template_basedirs=[templates], template_name="carequal_report",
                                        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    return cache[templates]


def render_html(executed: str | Path, html: str | Path, *, title: str, footer: str = "") -> float:
    """Render an executed notebook to one self-contained HTML file with code, prompts and stderr hidden;
    returns the seconds taken. Written to a temporary name first, then moved into place. ``footer`` is printed
    at the foot of every page when the report is printed (with the page number)."""
    # the Jupyter stack is loaded only where a notebook runs (worker processes), never by the planning parent
    import nbformat

    from carequal.packaged import template_dir

    started = time.perf_counter()
    nb = nbformat.read(str(executed), as_version=4)
    for cell in nb.cells:  # stderr streams (warnings, progress bars) are not for leaders
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    nb.metadata["title"] = title
    # for the print style's page footer (a CSS string: quotes and backslashes escaped)
    nb.metadata["carequal_footer"] = footer.replace("\\", "\\\\").replace('"', '\\"')
    body, _ = _exporter(str(template_dir())).from_notebook_node(nb)
    write_atomic(Path(html), body)
    return time.perf_counter() - started


def _utc(text: str) -> datetime:
    """A timestamp from a notebook's metadata; naive ones (older papermill versions write them) are UTC."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _cell_times(executed: Path) -> tuple[datetime | None, float]:
    import nbformat  # Jupyter stack: see render_html

    nb = nbformat.read(str(executed), as_version=4)
    starts, total = [], 0.0
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("papermill", {})
        timing = cell.get("metadata", {}).get("execution", {})  # nbclient's record_timing
        if meta.get("start_time"):
            starts.append(_utc(meta["start_time"]))
            total += float(meta.get("duration") or 0.0)
        elif timing.get("iopub.execute_input") and timing.get("shell.execute_reply"):
            began = _utc(timing["iopub.execute_input"])
            ended = _utc(timing["shell.execute_reply"])
            starts.append(began)
            total += (ended - began).total_seconds()
    return (min(starts) if starts else None), total


def run_market(job: MarketJob) -> dict:
    """Execute and render one market's report (runs in a worker process). Never raises: the outcome, the
    timings and, on failure, the error are returned (and the error is written beside the executed notebook).
    """
    kernel_environment()
    if job.reuse_kernel:
        return _run_market(job, None)
    with kernel_folder() as folder:
        return _run_market(job, ipc_kernel_manager(folder))


def _run_market(job: MarketJob, kernel_manager) -> dict:
    import papermill  # Jupyter stack: see render_html

    started = time.perf_counter()
    began = datetime.now(UTC)
    executed, html, error_path = Path(job.executed), Path(job.html), Path(job.error)
    executed.parent.mkdir(parents=True, exist_ok=True)
    error_path.unlink(missing_ok=True)
    tmp_nb = executed.with_name(f".tmp-{os.getpid()}-{executed.name}")
    result = {"market": job.market, "status": "failed", "attempts": 0, "started": began.isoformat()}

    def failed(exc: BaseException, what: str) -> dict:
        result["error"] = _error_summary(exc)
        try:
            error_path.write_text(f"market {job.market}: {what} failed\n\n{result['error']}\n\n"
                                  + "".join(traceback.format_exception(exc)))
        except OSError:  # a full disk must not hide the market's own error
            pass
        html.unlink(missing_ok=True)  # an older report of this market must not pass for the current one
        result["seconds"] = {"total": time.perf_counter() - started}
        return result

    for attempt in range(1, job.retries + 1):
        result["attempts"] = attempt
        began = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            if kernel_manager is None:
                execute_in_session(job.notebook, job.parameters, tmp_nb, timeout=EXECUTION_TIMEOUT,
                                   markets_per_kernel=job.markets_per_kernel)
            else:
                papermill.execute_notebook(job.notebook, str(tmp_nb), parameters=job.parameters,
                                           cwd=str(executed.parent), progress_bar=False,
                                           log_output=False, report_mode=True, kernel_manager_class=kernel_manager,
                                           kernel_name=KERNEL, execution_timeout=EXECUTION_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure of one market is recorded, not raised
            if _is_port_collision(exc) and attempt < job.retries:
                time.sleep(0.5 * attempt)
                continue
            if tmp_nb.exists():
                tmp_nb.replace(executed)
            return failed(exc, "report")
        execute_seconds = time.perf_counter() - t0
        try:
            tmp_nb.replace(executed)
            first_cell, compute = _cell_times(executed)
            kernel = (first_cell - began).total_seconds() if first_cell is not None else float("nan")
            render = render_html(executed, html, title=job.title or f"{job.market}: partnership quality report",
                                 footer=job.footer)
        except Exception as exc:  # noqa: BLE001 - rendering (or a full disk) fails this market only
            return failed(exc, "rendering the report")
        seconds = {"kernel_start": max(kernel, 0.0), "compute": compute, "execute": execute_seconds,
                   "render": render}
        if job.pdf:
            from carequal.batch.pdf import render_pdf  # a browser, only with --pdf

            try:
                seconds["pdf"] = render_pdf(html, job.pdf)
            except Exception as exc:  # noqa: BLE001 - a failed print fails this market only
                Path(job.pdf).unlink(missing_ok=True)
                return failed(exc, "printing the report to PDF")
        result.update(status="ok", seconds={**seconds, "total": time.perf_counter() - started})
        return result
    return result


def _error_summary(exc: BaseException) -> str:
    name = getattr(exc, "ename", None) or type(exc).__name__
    value = getattr(exc, "evalue", None) or str(exc)
    first = str(value).strip().splitlines()[0] if str(value).strip() else ""
    return f"{name}: {first}"[:500]


_WARM_NOTEBOOK = {
    "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# warm"},
              {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "",
               "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"},
                           {"output_type": "display_data", "metadata": {},
                            "data": {"text/html": "<p>x</p>", "text/plain": "x"}},
                           {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                            "data": {"text/plain": "x"}}]}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
"""A notebook with the kinds of cells and outputs a report has, rendered once by a worker before its first
report so that its exporter has compiled the templates those need (:func:`_import_worker`)."""


def _import_worker() -> None:
    """A worker's start: what its first report needs besides a kernel (papermill's parameters, the exporter's
    compiled templates), loaded while the batch prepares. At the worker's exit, once its kernel session is
    closed, its objects are frozen out of the garbage collector (as :func:`carequal.cli.run` does), so that the
    batch does not wait ~0.2 s for it to collect them."""
    atexit.register(gc.freeze)  # registered first, so it runs after the session's close (atexit is LIFO)
    tune_collector()
    kernel_environment()
    try:
        import nbformat
        import papermill  # noqa: F401

        from carequal.packaged import template_dir

        _exporter(str(template_dir())).from_notebook_node(nbformat.from_dict(_WARM_NOTEBOOK))
    except Exception:  # noqa: BLE001 - the report that needs them fails with the error recorded there
        pass


def start_workers(workers: int) -> ProcessPoolExecutor:
    """The worker processes of :func:`execute_jobs` (``pool=``), started now: each loads what its reports need
    besides a kernel (papermill, the HTML exporter with the report template compiled: :data:`_WARM_NOTEBOOK`)
    while the batch is still preparing, so the first reports do not wait for it. Their report kernels start
    later, once the data are accepted (:func:`warm_kernels`): a run that is refused starts no kernel, and its
    refusal never waits for one. The caller shuts the pool down."""
    context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or kernels
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_import_worker)
    for _ in range(workers):  # a spawning pool starts a process per task submitted while none is idle
        pool.submit(int)
    return pool


def warm_kernels(pool: ProcessPoolExecutor, workers: int, *, notebook: str, cwd: str,
                 markets_per_kernel: int = 25) -> None:
    """Start the report kernel of each of ``workers`` idle workers of ``pool`` (:func:`start_workers`) and load
    ``notebook``'s imports on it, without waiting. One task per worker: idle workers each take one; should one
    worker take two, the second finds its kernel warm, and the other worker's first report starts its own."""
    for _ in range(workers):
        pool.submit(warm_session, notebook, cwd, markets_per_kernel)


def execute_jobs(jobs: list, *, workers: int, progress: bool, client=None, pool: ProcessPoolExecutor | None = None):
    """Yield ``(result, key)`` as markets finish: local worker processes (``pool``: already started by
    :func:`start_workers`, and left running), or a Dask cluster's workers."""
    if not jobs:
        return
    kind = "partner" if jobs[0][0].parameters.get("partner") else "market"
    bar = tqdm(total=len(jobs), desc=f"{kind}s", unit=kind, disable=not progress)
    try:
        if client is not None:
            from distributed import as_completed as finished  # only with a Dask cluster (heavy, optional)

            futures = {client.submit(run_market, job, pure=False, key=f"carequal-report-{safe_name(job.market)}-"
                                                                      f"{key[:8]}"): key for job, key in jobs}
            for future in finished(futures):
                bar.update()
                yield future.result(), futures[future]
            return
        if workers == 1:
            try:
                for job, key in jobs:
                    result = run_market(job)
                    bar.update()
                    yield result, key
            finally:
                close_sessions()
            return

        context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or kernels
        with nullcontext(pool) if pool is not None else ProcessPoolExecutor(
                max_workers=min(workers, len(jobs)), mp_context=context) as running:
            futures = {running.submit(run_market, job): key for job, key in jobs}
            for future in as_completed(futures):
                bar.update()
                yield future.result(), futures[future]
    finally:
        bar.close()


