"""The monthly batch: the market report notebook run once per market, rendered for leaders, indexed.

``run_batch`` (and ``carequal report``) does, in order:

1. **check** every parameter against the notebook's declared, typed parameters
   (``papermill.inspect_notebook``: papermill itself only warns about an unknown name and runs on with the
   default) and against the data: the markets present, the period's dates, the measures and conditions —
   before anything is computed or any kernel starts;
2. **prepare** the inputs every market shares (:func:`carequal.inputs.prepare`): the market-partitioned
   dataset and the national reference, in the work folder, reused while the input is unchanged;
3. **run** each market that is not already current — ``papermill`` executes ``market_report.ipynb`` with the
   market's parameters in a worker process with its own kernel (a start that collides on a ZMQ port is
   retried), then ``nbconvert`` renders the executed notebook to one self-contained HTML file with all code
   hidden (``exclude_input``; papermill's ``--report-mode`` alone does not hide it in HTML);
4. **index**: ``index.html`` (one row per market: headline KPIs, status, link) and ``manifest.json``
   (parameters, input fingerprint, package versions, per-market timings and outcome).

Folders: ``out/`` holds only what may be shared — the reports, the index and the manifest. The work folder
(``<out>.work/`` by default) holds patient-level data (ingested dataset, quarantined rows, national
reference rows) and, per market, the executed notebook, the KPI record and, after a failure, the error.

Guarantees: a failed market does not stop the others; it keeps its executed notebook (up to the failing
cell) and error in the work folder, its row in the index says failed, and the run's exit status is non-zero.
Every file is written under a temporary name and moved into place, so no half-written report or index is
ever visible. A re-run redoes only markets that failed or whose inputs changed (input fingerprint,
parameters, notebook, carequal version) unless ``force``.

Why hand-written: papermill and nbconvert execute and render one notebook; running many in parallel with
retry, resume and an index is the part no maintained tool covers (papermill's own docs leave it to the
caller), and it is small.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import pandas as pd

from carequal.errors import ParameterError

__all__ = ["BatchResult", "DEFAULT_NOTEBOOK", "KernelSession", "MarketJob", "PACKET_NOTEBOOK", "check_parameters",
           "close_sessions", "default_period", "find_agreement",
           "ipc_kernel_manager", "parse_period", "render_html", "run_batch", "run_market",
           "write_index", "write_partner_index"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NOTEBOOK = ROOT / "notebooks" / "market_report.ipynb"
"""The report notebook of a source checkout (``notebooks/market_report.ipynb``)."""

PACKET_NOTEBOOK = ROOT / "notebooks" / "partner_packet.ipynb"
"""The partner packet notebook (``carequal report --by partner``)."""

AGREEMENT_NAMES = ("agreement.toml", "agreement.yaml", "agreement.yml")
"""Agreement files looked for in the data folder when ``--agreement`` is not given."""

EXECUTION_TIMEOUT = 3600
"""Seconds one notebook cell may run before the market is failed (a hung kernel must not hang the batch)."""

_PYTYPES = {"str": str, "int": int, "float": (int, float), "bool": bool}


# ------------------------------------------------------------------------------------------------ parameters


def parse_period(text: str) -> tuple[str, str]:
    """A reporting period from the command line: ``2024`` (a calendar year), ``2024-Q3`` (a quarter),
    ``2024-07`` (a month) or ``START:END`` (ISO dates, inclusive).

    Examples
    --------
    >>> parse_period("2024"), parse_period("2024-Q3"), parse_period("2024-02")
    (('2024-01-01', '2024-12-31'), ('2024-07-01', '2024-09-30'), ('2024-02-01', '2024-02-29'))
    >>> parse_period("2024-01-01:2024-06-30")
    ('2024-01-01', '2024-06-30')
    >>> parse_period("last year")
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: --period 'last year': use YYYY, YYYY-Qn, YYYY-MM or START:END (YYYY-MM-DD)
    """
    import re

    from carequal.national import reporting_period

    text = text.strip()
    bad = ParameterError(f"--period {text!r}: use YYYY, YYYY-Qn, YYYY-MM or START:END (YYYY-MM-DD)")
    if re.fullmatch(r"\d{4}", text):
        start, end = pd.Timestamp(f"{text}-01-01"), pd.Timestamp(f"{text}-12-31")
    elif m := re.fullmatch(r"(\d{4})-?Q([1-4])", text, flags=re.IGNORECASE):
        start = pd.Timestamp(f"{m[1]}-{3 * int(m[2]) - 2:02d}-01")
        end = start + pd.offsets.QuarterEnd(0)
    elif re.fullmatch(r"\d{4}-\d{2}", text):
        try:
            start = pd.Timestamp(f"{text}-01")
        except ValueError:
            raise bad from None
        end = start + pd.offsets.MonthEnd(0)
    elif ":" in text:
        lo, hi = text.split(":", 1)
        if not (re.fullmatch(r"\d{4}-\d{2}-\d{2}", lo.strip()) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", hi.strip())):
            raise bad
        start, end = reporting_period(lo.strip(), hi.strip())
    else:
        raise bad
    return start.date().isoformat(), end.date().isoformat()


def default_period(data: str | Path) -> tuple[str, str]:
    """The calendar year of the data's last discharge (the default reporting period)."""
    from carequal.loaders import read_table, table_path

    path = table_path(data, "stays")
    if path is None:
        raise ParameterError(f"{data}: no stays table; cannot choose a default period (give --period)")
    dates = pd.to_datetime(read_table(path, columns=["discharge_date"])["discharge_date"], errors="coerce")
    if dates.notna().sum() == 0:
        raise ParameterError(f"{data}: stays have no valid discharge_date; give --period")
    year = int(dates.max().year)
    return f"{year}-01-01", f"{year}-12-31"


def available_markets(data: str | Path) -> list[str]:
    """Markets in the input: partition names of an ingested dataset, or the distinct ``patients.market``."""
    from carequal.inputs import is_market_dataset
    from carequal.loaders import markets_in_dataset, read_table, table_path

    if is_market_dataset(data):
        return markets_in_dataset(data)
    path = table_path(data, "patients")
    if path is None:
        raise ParameterError(f"{data}: no patients table (patients.csv or patients.parquet); see data/README.md")
    markets = read_table(path, columns=["market"])["market"].dropna().astype("str").str.strip()
    return sorted(m for m in markets.unique() if m)


def check_parameters(notebook: str | Path, parameters: dict) -> None:
    """Check parameter names and types against the notebook's typed ``parameters`` cell.

    Raises
    ------
    ParameterError
        Naming every unknown parameter (with the declared ones) and every value of the wrong type.
    """
    import papermill

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


def _select_markets(requested, available: list[str]) -> list[str]:
    if requested in (None, "", "all") or requested == ["all"]:
        if not available:
            raise ParameterError("the data has no markets (patients.market is empty)")
        return list(available)
    items = [m.strip() for m in requested.split(",")] if isinstance(requested, str) else list(requested)
    unknown = [m for m in items if m not in available]
    if unknown:
        raise ParameterError(f"unknown market(s) {', '.join(map(repr, unknown))}; the data has "
                             f"{', '.join(available)} (or use 'all')")
    return list(dict.fromkeys(items))


# -------------------------------------------------------------------------------------------------- one market


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


def _safe_name(market: str) -> str:
    """A file name for a market: letters, digits, ``-`` and ``_`` kept, anything else ``_``.

    Examples
    --------
    >>> _safe_name("St. Louis / East")
    'St__Louis___East'
    """
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in market)


def _is_port_collision(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return "Address already in use" in text or "Kernel died before replying" in text or "ZMQError" in text


def render_html(executed: str | Path, html: str | Path, *, title: str) -> float:
    """Render an executed notebook to one self-contained HTML file with code, prompts and stderr hidden;
    returns the seconds taken. Written to a temporary name first, then moved into place."""
    import nbformat
    from nbconvert import HTMLExporter

    started = time.perf_counter()
    nb = nbformat.read(str(executed), as_version=4)
    for cell in nb.cells:  # stderr streams (warnings, progress bars) are not for leaders
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    nb.metadata["title"] = title
    # carequal's template: the lab page without CDN scripts (reports are read offline and hold no LaTeX)
    exporter = HTMLExporter(extra_template_basedirs=[str(Path(__file__).parent / "templates")],
                            template_name="carequal_report", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    _write_atomic(Path(html), body)
    return time.perf_counter() - started


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _cell_times(executed: Path) -> tuple[datetime | None, float]:
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    starts, total = [], 0.0
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("papermill", {})
        timing = cell.get("metadata", {}).get("execution", {})  # nbclient's record_timing
        if meta.get("start_time"):
            starts.append(datetime.fromisoformat(meta["start_time"].replace("Z", "+00:00")))
            total += float(meta.get("duration") or 0.0)
        elif timing.get("iopub.execute_input") and timing.get("shell.execute_reply"):
            began = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            ended = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            starts.append(began)
            total += (ended - began).total_seconds()
    return (min(starts) if starts else None), total


def ipc_kernel_manager(folder: str):
    """A kernel manager class whose kernels talk over IPC sockets in ``folder``: no TCP ports, so parallel
    kernels cannot collide on a port, and nothing listens on the network (ipykernel warns about
    unencrypted TCP otherwise)."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(Path(folder) / "kernel")

    return IPCKernelManager


class KernelSession:
    """One kernel that executes several report notebooks in turn (``MarketJob.reuse_kernel``).

    A market report's imports and first-call caches cost more than its computation for a small market, and a
    fresh kernel pays them every time. A session keeps the kernel: between notebooks it clears the user
    namespace (``%reset -f``) and closes every figure, so no variable, figure or data frame of one market
    reaches the next; imported modules and their caches (code lists, value sets) stay, which is the point.
    After ``max_runs`` notebooks, after any failure, or if the kernel died, the kernel is replaced.

    Why hand-written: papermill starts a kernel per notebook; nbclient can run a notebook on a kernel that is
    already running, and this class is the few lines of glue around it (parameters are injected with
    papermill's own ``parameterize_notebook``, so the notebook sees exactly what papermill would give it).
    """

    def __init__(self, cwd: str, *, max_runs: int = 25):
        self.cwd, self.max_runs = cwd, max_runs
        self.km = self.kc = self._folder = None
        self.runs = 0

    def _alive(self) -> bool:
        from nbclient.util import run_sync

        return bool(run_sync(self.km.is_alive)())

    def _reset(self) -> None:
        import nbformat
        from nbclient import NotebookClient

        code = "%reset -f\nimport matplotlib.pyplot\nmatplotlib.pyplot.close('all')\ndel matplotlib"
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        client = NotebookClient(nb, km=self.km, timeout=120, kernel_name="python3")
        client.kc = self.kc
        client.execute()

    def execute(self, nb, *, timeout: int) -> None:
        """Execute ``nb`` (parameters already injected) in place; raises what nbclient raises."""
        import tempfile

        from nbclient import NotebookClient

        if self.km is not None and (self.runs >= self.max_runs or not self._alive()):
            self.close()
        if self.km is None:
            self._folder = tempfile.TemporaryDirectory(prefix="carequal-kernel-")
            self.km = ipc_kernel_manager(self._folder.name)(kernel_name="python3")
        else:
            self._reset()
        client = NotebookClient(nb, km=self.km, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": self.cwd}})
        client.kc = self.kc
        try:
            client.execute()
        finally:
            self.kc = client.kc
            self.runs += 1

    def close(self) -> None:
        """Stop the kernel (if any) and remove its socket folder."""
        from nbclient.util import run_sync

        try:
            if self.kc is not None:
                self.kc.stop_channels()
            if self.km is not None and self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - a kernel that is already gone is closed
            pass
        finally:
            if self._folder is not None:
                self._folder.cleanup()
            self.km = self.kc = self._folder = None
            self.runs = 0


_SESSIONS: dict[tuple[int, str], KernelSession] = {}


def _session(cwd: str, max_runs: int) -> KernelSession:
    """This thread's kernel session (a Dask worker may run tasks in several threads, one kernel each)."""
    import threading

    key = (threading.get_ident(), cwd)
    if key not in _SESSIONS:
        if not _SESSIONS:
            import atexit

            atexit.register(close_sessions)
        _SESSIONS[key] = KernelSession(cwd, max_runs=max_runs)
    return _SESSIONS[key]


def close_sessions() -> None:
    """Stop every kernel session of this process."""
    while _SESSIONS:
        _, session = _SESSIONS.popitem()
        session.close()


def run_market(job: MarketJob) -> dict:
    """Execute and render one market's report (runs in a worker process). Never raises: the outcome, the
    timings and, on failure, the error are returned (and the error is written beside the executed notebook).
    """
    import tempfile

    if job.reuse_kernel:
        return _run_market(job, None)
    with tempfile.TemporaryDirectory(prefix="carequal-kernel-") as folder:
        return _run_market(job, ipc_kernel_manager(folder))


def _execute_in_session(job: MarketJob, output: Path) -> None:
    import nbformat
    from papermill.execute import prepare_notebook_metadata
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    # as papermill.execute_notebook prepares a notebook, up to the point where it would start a kernel
    nb = load_notebook_node(job.notebook)
    nb = parameterize_notebook(nb, job.parameters, report_mode=True, kernel_name="python3", language="python")
    nb = prepare_notebook_metadata(nb, job.notebook, str(output), report_mode=True)
    session = _session(str(Path(job.notebook).parent), job.markets_per_kernel)
    try:
        session.execute(nb, timeout=EXECUTION_TIMEOUT)
    except BaseException:
        session.close()  # whatever state the failure left must not reach the next market
        raise
    finally:
        nbformat.write(nb, str(output))


def _run_market(job: MarketJob, kernel_manager) -> dict:
    import papermill

    started = time.perf_counter()
    began = datetime.now(UTC)
    executed, html, error_path = Path(job.executed), Path(job.html), Path(job.error)
    executed.parent.mkdir(parents=True, exist_ok=True)
    error_path.unlink(missing_ok=True)
    tmp_nb = executed.with_name(f".tmp-{os.getpid()}-{executed.name}")
    result = {"market": job.market, "status": "failed", "attempts": 0, "started": began.isoformat()}
    for attempt in range(1, job.retries + 1):
        result["attempts"] = attempt
        began = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            if kernel_manager is None:
                _execute_in_session(job, tmp_nb)
            else:
                papermill.execute_notebook(job.notebook, str(tmp_nb), parameters=job.parameters,
                                           cwd=str(Path(job.notebook).parent), progress_bar=False,
                                           log_output=False, report_mode=True, kernel_manager_class=kernel_manager,
                                           execution_timeout=EXECUTION_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure of one market is recorded, not raised
            if _is_port_collision(exc) and attempt < job.retries:
                time.sleep(0.5 * attempt)
                continue
            if tmp_nb.exists():
                tmp_nb.replace(executed)
            result["error"] = _error_summary(exc)
            error_path.write_text(f"market {job.market}: report failed\n\n{result['error']}\n\n"
                                  + "".join(traceback.format_exception(exc)))
            html.unlink(missing_ok=True)  # an older report of this market must not pass for the current one
            result["seconds"] = {"total": time.perf_counter() - started}
            return result
        execute_seconds = time.perf_counter() - t0
        tmp_nb.replace(executed)
        first_cell, compute = _cell_times(executed)
        kernel = (first_cell - began).total_seconds() if first_cell is not None else float("nan")
        render = render_html(executed, html, title=job.title or f"{job.market}: partnership quality report")
        result.update(status="ok", seconds={"kernel_start": max(kernel, 0.0), "compute": compute,
                                            "execute": execute_seconds, "render": render,
                                            "total": time.perf_counter() - started})
        return result
    return result


def _error_summary(exc: BaseException) -> str:
    name = getattr(exc, "ename", None) or type(exc).__name__
    value = getattr(exc, "evalue", None) or str(exc)
    first = str(value).strip().splitlines()[0] if str(value).strip() else ""
    return f"{name}: {first}"[:500]


# ------------------------------------------------------------------------------------------------ the batch


@dataclass
class BatchResult:
    """Outcome of :func:`run_batch`."""

    out: Path
    work: Path
    markets: dict[str, dict]
    manifest: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [m for m, r in self.markets.items() if r.get("status") == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package_versions() -> dict:
    from importlib import metadata

    names = ["carequal", "numpy", "pandas", "scipy", "statsmodels", "pyarrow", "pandera", "matplotlib", "seaborn",
             "papermill", "nbconvert", "nbclient", "ipykernel", "jupyter_client"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_batch(data: str | Path, out: str | Path, *, markets="all", workers: int = 1, period: str | None = None,
              measures: str = "all", conditions: str = "all", min_cell: int = 11, work: str | Path | None = None,
              force: bool = False, notebook: str | Path | None = None, progress: bool = True,
              scheduler: str | None = None, by: str = "market", agreement: str | Path | None = None,
              patient_lists: str | Path | None = None, fresh_kernels: bool = False) -> BatchResult:
    """Run the market report for each market (see the module docstring).

    Parameters
    ----------
    data : path
        Contract tables (CSV/Parquet) or a market-partitioned dataset (``carequal ingest``).
    out : path
        Folder for the shareable outputs (reports, ``index.html``, ``manifest.json``).
    markets : "all", comma-separated str or list
    workers : int
        Worker processes, one kernel each (size by memory too: a report kernel holds about 250 MB).
    period : str, optional
        :func:`parse_period` text; default :func:`default_period`.
    measures, conditions : str
        Passed to the notebook ("all" or comma-separated keys).
    min_cell : int
        Smallest count shown (11: counts 1–10 are suppressed).
    work : path, optional
        Work folder (default ``<out>.work`` beside ``out``).
    force : bool
        Redo every market (and the shared inputs) even if current.
    notebook : path, optional
        The report notebook (default ``notebooks/market_report.ipynb``; with ``by="partner"``
        ``notebooks/partner_packet.ipynb``).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``) to run the markets on its workers
        instead of local processes; the data, work and output paths must be visible to every worker.
    by : {"market", "partner"}
        One report per market, or one packet per partner of the agreement (with an aggregate extract, CSV and
        Excel, in ``<out>/<partner>_extract/``); ``markets`` then selects the partners' markets.
    agreement : path, optional
        The partnership agreement (:mod:`carequal.agreement`) for ``by="partner"``; default: the
        ``agreement.toml`` / ``.yaml`` in the data folder.
    fresh_kernels : bool
        Start a new kernel for every report (papermill's way). By default each worker keeps one kernel for
        up to 25 reports, clearing its namespace between them (:class:`KernelSession`): the same reports,
        without paying the imports and caches again for every market.
    patient_lists : path, optional
        With ``by="partner"`` only: also write each partner's own readmitted patients (care coordination,
        :func:`carequal.packet.readmitted_patients`) as ``<patient_lists>/<partner>_readmitted.csv``. These are
        patient-level files: the folder must be outside ``out``; they are never part of a packet.

    Returns
    -------
    BatchResult
    """
    from carequal.national import MEASURES

    t_run = time.perf_counter()
    started = datetime.now(UTC)
    if by not in ("market", "partner"):
        raise ParameterError(f"--by must be 'market' or 'partner', not {by!r}")
    data, out = Path(data).resolve(), Path(out).resolve()
    work = Path(work).resolve() if work is not None else out.with_name(out.name + ".work")
    if notebook is None:
        notebook = PACKET_NOTEBOOK if by == "partner" else DEFAULT_NOTEBOOK
    notebook = Path(notebook).resolve()
    if not data.exists():
        raise ParameterError(f"data {data} does not exist")
    if not notebook.is_file():
        raise ParameterError(f"report notebook {notebook} does not exist")
    if int(workers) != workers or workers < 1:
        raise ParameterError(f"--workers must be a whole number ≥ 1, not {workers!r}")
    if out == work or work.is_relative_to(out):
        raise ParameterError(f"the work folder {work} must not be inside the shared output folder {out}: it "
                             "holds patient-level data")
    if patient_lists is not None and by != "partner":
        raise ParameterError("--patient-lists goes with --by partner only")
    start, end = parse_period(period) if period else default_period(data)
    available = available_markets(data)
    chosen = _select_markets(markets, available)
    if by == "partner":
        return _run_partners(data, out, work, notebook, chosen, start, end, min_cell, workers, force, progress,
                             agreement, patient_lists, started, t_run, not fresh_kernels)
    base = {"period_start": start, "period_end": end, "measures": measures, "conditions": conditions,
            "min_cell": int(min_cell) if isinstance(min_cell, int | float) and int(min_cell) == min_cell
            else min_cell}
    check_parameters(notebook, {**base, "market": chosen[0], "data": str(data), "work": str(work), "reference": "",
                                "kpi_path": ""})
    # values the notebook would only reject after its kernel started: checked here, with the valid choices
    from carequal.cohorts import CONDITIONS
    from carequal.report import cell_threshold, parse_choices

    measure_list = parse_choices(measures, tuple(MEASURES), "measure(s)")
    parse_choices(conditions, (*CONDITIONS, "other"), "condition(s)")
    cell_threshold(base["min_cell"])

    client = None
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise ParameterError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({exc})") from None
    try:
        return _run(data, out, work, notebook, chosen, base, measure_list, workers, force, progress, scheduler,
                    client, started, t_run, not fresh_kernels)
    finally:
        if client is not None:
            client.close()


def _run(data: Path, out: Path, work: Path, notebook: Path, chosen: list[str], base: dict, measure_list,
         workers: int, force: bool, progress: bool, scheduler: str | None, client, started, t_run,
         reuse_kernel: bool = True) -> BatchResult:
    from carequal import __version__
    from carequal.inputs import prepare
    from carequal.national import MEASURES

    t0 = time.perf_counter()
    prepared = prepare(data, work, period_start=base["period_start"], period_end=base["period_end"],
                       measures=tuple(MEASURES), force=force, client=client)
    prepare_seconds = {**prepared.seconds, "total": time.perf_counter() - t0, "reused": prepared.reused}
    missing = [m for m in chosen if m not in prepared.markets]
    if missing:
        raise ParameterError(f"market(s) {', '.join(missing)} have no accepted patients after validation; "
                             f"markets with data: {', '.join(prepared.markets)}")

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    units = []
    for market in chosen:
        # the kernel reads the prepared dataset and reference directly: only its market's partitions
        units.append((market, {**base, "market": market, "data": str(prepared.dataset), "work": str(work),
                               "reference": str(prepared.reference),
                               "kpi_path": str(work / "kpis" / f"{_safe_name(market)}.json")},
                      f"{market}: partnership quality report"))
    jobs, results = _plan(units, out=out, work=work, notebook=notebook, previous=previous.get("markets", {}),
                          force=force, fingerprint=prepared.fingerprint, record_key="kpi_path",
                          reuse_kernel=reuse_kernel)
    t0 = time.perf_counter()
    results.update(_collect(jobs, workers=workers, progress=progress, client=client, work=work))
    markets_seconds = time.perf_counter() - t0

    ordered = {m: results[m] for m in chosen}
    # markets of earlier runs not in this one stay listed (their reports are still in out/)
    for market, record in previous.get("markets", {}).items():
        if market not in ordered and record.get("html") and (out / record["html"]).is_file():
            ordered[market] = {**record, "reused": True}
    manifest = {
        "carequal_version": __version__, "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "parameters": {**base, "markets": chosen, "workers": workers, "force": force,
                       "notebook": str(notebook), "scheduler": scheduler, "reuse_kernel": reuse_kernel},
        "data": {"path": str(data), "fingerprint": prepared.fingerprint, "markets": prepared.markets},
        "work": str(work), "packages": _package_versions(), "host": platform.node(),
        "seconds": {"prepare": prepare_seconds, "markets": markets_seconds,
                    "total": time.perf_counter() - t_run},
        "markets": ordered,
        "measures": list(measure_list),
    }
    write_index(out, manifest)
    _write_atomic(manifest_path, json.dumps(manifest, indent=2, default=str))
    return BatchResult(out=out, work=work, markets=ordered, manifest=manifest)


def _plan(units: list[tuple[str, dict, str]], *, out: Path, work: Path, notebook: Path, previous: dict,
          force: bool, fingerprint: str, record_key: str, reuse_kernel: bool = True) -> tuple[list, dict]:
    """Jobs for the units (market or partner, parameters, title) not already current; current ones reused.

    A unit is current when its last run succeeded with the same key (input fingerprint, parameters, notebook,
    carequal version) and its HTML is still there."""
    from carequal import __version__

    nb_hash = _file_hash(notebook)
    jobs, results = [], {}
    for unit, params, title in units:
        name = _safe_name(unit)
        key = hashlib.sha256(json.dumps({"fingerprint": fingerprint, "parameters": params,
                                         "notebook": nb_hash, "carequal": __version__}, sort_keys=True)
                             .encode()).hexdigest()
        html = out / f"{name}.html"
        before = previous.get(unit, {})
        if not force and before.get("status") == "ok" and before.get("key") == key and html.is_file():
            results[unit] = {**before, "status": "ok", "reused": True}
            continue
        Path(params[record_key]).parent.mkdir(parents=True, exist_ok=True)
        job = MarketJob(market=unit, notebook=str(notebook), parameters=params, html=str(html),
                        executed=str(work / "notebooks" / f"{name}.ipynb"), kpis=params[record_key],
                        error=str(work / "notebooks" / f"{name}.error.txt"), title=title,
                        reuse_kernel=reuse_kernel)
        jobs.append((job, key))
    return jobs, results


def _collect(jobs: list, *, workers: int, progress: bool, client, work: Path) -> dict:
    """Run the jobs; one manifest record per unit (with its KPI record when it succeeded)."""
    kpi_files = {job.market: Path(job.kpis) for job, _ in jobs}
    results = {}
    for job_result, key in _execute(jobs, workers=workers, progress=progress, client=client):
        unit = job_result["market"]
        name = _safe_name(unit)
        record = {**job_result, "key": key, "reused": False, "html": f"{name}.html" if job_result["status"] == "ok"
                  else None, "notebook": str(work / "notebooks" / f"{name}.ipynb")}
        if job_result["status"] == "ok" and kpi_files[unit].is_file():
            record["kpis"] = json.loads(kpi_files[unit].read_text())
        if job_result["status"] != "ok":
            record["error_file"] = str(work / "notebooks" / f"{name}.error.txt")
        results[unit] = record
    return results


def find_agreement(data: Path, agreement: str | Path | None) -> Path:
    """The agreement file: the one given, else ``agreement.toml`` / ``.yaml`` / ``.yml`` in the data folder."""
    if agreement is not None:
        path = Path(agreement).resolve()
        if not path.is_file():
            raise ParameterError(f"--agreement {path} does not exist")
        return path
    folder = data if data.is_dir() else data.parent
    for name in AGREEMENT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise ParameterError(f"--by partner needs a partnership agreement: give --agreement FILE or put one of "
                         f"{', '.join(AGREEMENT_NAMES)} in {folder} (example: data/sample/agreement.toml)")


def _run_partners(data: Path, out: Path, work: Path, notebook: Path, chosen: list[str], start: str, end: str,
                  min_cell, workers: int, force: bool, progress: bool, agreement_path, patient_lists,
                  started, t_run, reuse_kernel: bool = True) -> BatchResult:
    """``by="partner"``: one packet (and extract) per partner of the agreement in the chosen markets."""
    import shutil

    from carequal import __version__
    from carequal.agreement import load_agreement
    from carequal.inputs import prepare
    from carequal.loaders import read_dataset_tables
    from carequal.packet import packet_inputs, readmitted_patients, write_packet_inputs
    from carequal.report import cell_threshold

    agreement_path = find_agreement(data, agreement_path)
    cell_threshold(min_cell)
    if patient_lists is not None:
        patient_lists = Path(patient_lists).resolve()
        if patient_lists == out or patient_lists.is_relative_to(out):
            raise ParameterError(f"--patient-lists {patient_lists} must not be inside the shared output folder "
                                 f"{out}: the lists are patient-level")
    check_parameters(notebook, {"partner": "x", "period_start": start, "period_end": end, "inputs": "",
                                "min_cell": int(min_cell), "extract_dir": "", "record_path": ""})
    t0 = time.perf_counter()
    prepared = prepare(data, work, period_start=start, period_end=end, force=force)
    tables = read_dataset_tables(prepared.dataset)
    agreement = load_agreement(agreement_path, tables["facilities"])
    inputs = packet_inputs(tables, agreement, period_start=start, period_end=end)
    folder = write_packet_inputs(inputs, work / "agreement", agreement, tables["facilities"])
    partners = inputs["partners"][inputs["partners"]["market"].isin(chosen)]
    if partners.empty:
        raise ParameterError(f"no partner of {agreement.name!r} is in market(s) {', '.join(chosen)}; its partners "
                             f"are in {', '.join(sorted(inputs['partners']['market'].unique()))}")
    lists = {}
    if patient_lists is not None:
        readmission = [m.id for m in agreement.metrics if m.measure == "readmission"]
        if not readmission:
            raise ParameterError("--patient-lists: the agreement has no readmission metric to list patients for")
        patient_lists.mkdir(parents=True, exist_ok=True)
        for fid in partners["facility_id"]:
            frame = readmitted_patients(inputs["cases"], tables, partner=fid, metric=readmission[0],
                                        period=(start, end))
            path = patient_lists / f"{_safe_name(fid)}_readmitted.csv"
            frame.to_csv(path, index=False, date_format="%Y-%m-%d")
            lists[fid] = {"path": str(path), "patients": int(len(frame))}
    prepare_seconds = {**prepared.seconds, "total": time.perf_counter() - t0, "reused": prepared.reused}
    del tables, inputs

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    ag_hash = _file_hash(agreement_path)
    units = []
    for p in partners.itertuples(index=False):
        name = _safe_name(p.facility_id)
        units.append((p.facility_id, {"partner": p.facility_id, "period_start": start, "period_end": end,
                                      "inputs": str(folder), "min_cell": int(min_cell),
                                      "extract_dir": str(out / f"{name}_extract"),
                                      "record_path": str(work / "records" / f"{name}.json"),
                                      "agreement_sha256": ag_hash},
                      f"{p.name}: partner packet"))
    # the agreement's hash is part of the key, not a notebook parameter
    jobs, results = _plan(units, out=out, work=work, notebook=notebook, previous=previous.get("partners", {}),
                          force=force, fingerprint=prepared.fingerprint, record_key="record_path",
                          reuse_kernel=reuse_kernel)
    for job, _ in jobs:
        job.parameters = {k: v for k, v in job.parameters.items() if k != "agreement_sha256"}
    t0 = time.perf_counter()
    results.update(_collect(jobs, workers=workers, progress=progress, client=None, work=work))
    for unit, record in results.items():
        if record.get("status") != "ok":  # an older extract must not pass for the current one
            shutil.rmtree(out / f"{_safe_name(unit)}_extract", ignore_errors=True)
        else:
            record["extract"] = f"{_safe_name(unit)}_extract/extract.xlsx"
    names = partners.set_index("facility_id")
    ordered = {}
    for fid in partners["facility_id"]:
        ordered[fid] = {**results[fid], "name": names.at[fid, "name"], "setting": names.at[fid, "setting"],
                        "market": names.at[fid, "market"]}
    manifest = {
        "carequal_version": __version__, "by": "partner", "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "parameters": {"period_start": start, "period_end": end, "min_cell": min_cell, "markets": chosen,
                       "workers": workers, "force": force, "notebook": str(notebook)},
        "agreement": {"path": str(agreement_path), "name": agreement.name, "sha256": ag_hash},
        "data": {"path": str(data), "fingerprint": prepared.fingerprint, "markets": prepared.markets},
        "work": str(work), "packages": _package_versions(), "host": platform.node(),
        "seconds": {"prepare": prepare_seconds, "packets": time.perf_counter() - t0,
                    "total": time.perf_counter() - t_run},
        "partners": ordered,
        "patient_lists": {"folder": str(patient_lists), "files": lists} if patient_lists is not None else None,
    }
    write_partner_index(out, manifest)
    _write_atomic(manifest_path, json.dumps(manifest, indent=2, default=str))
    return BatchResult(out=out, work=work, markets=ordered, manifest=manifest)


def _execute(jobs: list, *, workers: int, progress: bool, client=None):
    """Yield ``(result, key)`` as markets finish: local worker processes, or a Dask cluster's workers."""
    if not jobs:
        return
    from tqdm.auto import tqdm

    kind = "partner" if jobs[0][0].parameters.get("partner") else "market"
    bar = tqdm(total=len(jobs), desc=f"{kind}s", unit=kind, disable=not progress)
    try:
        if client is not None:
            from distributed import as_completed

            futures = {client.submit(run_market, job, pure=False, key=f"carequal-report-{_safe_name(job.market)}-"
                                                                      f"{key[:8]}"): key for job, key in jobs}
            for future in as_completed(futures):
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
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # no forked copies of a parent's threads or kernels
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(run_market, job): key for job, key in jobs}
            for future in as_completed(futures):
                bar.update()
                yield future.result(), futures[future]
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------- the index


_INDEX_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 2.5em;
       color: #222; max-width: 1200px; }
h1 { font-weight: 600; margin-bottom: 0.2em; } p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin-top: 1.5em; width: 100%; font-size: 0.95em; }
th { text-align: right; border-bottom: 2px solid #444; padding: 6px 10px; vertical-align: bottom; }
td { text-align: right; padding: 6px 10px; border-bottom: 1px solid #ddd; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child, td.status, th.status { text-align: left; }
td.failed { color: #b00020; font-weight: 600; } td.ok { color: #1b7f3b; }
td.note { text-align: left; color: #555; font-size: 0.9em; white-space: nowrap; }
a { color: #0b5cad; } p.foot { color: #666; font-size: 0.85em; margin-top: 2em; }
"""


def _fmt_rate(kpis: dict, measure: str) -> str:
    value = (kpis or {}).get(measure, {}).get("rate")
    return "–" if value is None else f"{100 * value:.1f}%"


def _fmt_ratio(kpis: dict, measure: str) -> str:
    value = (kpis or {}).get(measure, {}).get("ratio")
    return "–" if value is None else f"{value:.2f}"


def write_index(out: Path, manifest: dict) -> Path:
    """Write ``index.html``: one row per market with its headline KPIs, status and link (atomically)."""
    from carequal.national import MEASURES

    measures = manifest.get("measures", list(MEASURES))
    params = manifest["parameters"]
    head = ["Market", "Status"]
    for m in measures:
        head += [f"{MEASURES[m].label}", "O/E"]
    head += ["Facilities flagged (higher / lower than expected)", "Report"]
    rows = []
    for market, record in manifest["markets"].items():
        ok = record.get("status") == "ok"
        kpis = record.get("kpis", {})
        cells = [f"<td>{escape(market)}</td>",
                 f'<td class="status {"ok" if ok else "failed"}">{"ready" if ok else "failed"}</td>']
        for m in measures:
            cells += [f"<td>{_fmt_rate(kpis, m)}</td>", f"<td>{_fmt_ratio(kpis, m)}</td>"]
        flagged = kpis.get("flagged") if ok else None
        cells.append(f"<td>{flagged['higher']} / {flagged['lower']}</td>" if flagged else "<td>–</td>")
        if ok and record.get("html"):
            cells.append(f'<td class="note"><a href="{escape(record["html"])}">open report</a></td>')
        else:
            cells.append(f'<td class="note">report not produced: {escape(record.get("error", "unknown error"))}'
                         "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    n_failed = sum(1 for r in manifest["markets"].values() if r.get("status") != "ok")
    status = (f"{len(manifest['markets']) - n_failed} of {len(manifest['markets'])} market reports ready"
              + (f"; <b>{n_failed} failed</b> (details for the analytics team in the run manifest)" if n_failed
                 else ""))
    finished = manifest["finished"][:16].replace("T", " ")
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Partnership quality reports</title>
<style>{_INDEX_CSS}</style></head>
<body>
<h1>Partnership quality reports</h1>
<p class="sub">Reporting period {escape(params['period_start'])} to {escape(params['period_end'])} · {status}</p>
<p>Each market's rates are for index hospital stays at its facilities. O/E compares them with the national
average for the same patients: above 1 means more events than expected. Facilities are flagged only when the
95% interval of their O/E lies wholly above or below 1. Small numbers are suppressed to protect privacy.</p>
<table><thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<p class="foot">Produced {escape(finished)} UTC by carequal {escape(manifest['carequal_version'])}
from input {escape(manifest['data']['fingerprint'][:12])}.</p>
</body></html>
"""
    path = Path(out) / "index.html"
    _write_atomic(path, html)
    return path


def write_partner_index(out: Path, manifest: dict) -> Path:
    """Write ``index.html`` of a partner run: one row per partner with the latest period's statuses and links
    to its packet and extract (atomically)."""
    params = manifest["parameters"]
    rows = []
    for fid, record in manifest["partners"].items():
        ok = record.get("status") == "ok"
        k = record.get("kpis", {}) if ok else {}
        cells = [f"<td>{escape(str(record.get('name', fid)))}</td>",
                 f"<td>{escape(str(record.get('setting', '')).upper().replace('ACUTE', 'Hospital'))}</td>",
                 f"<td>{escape(str(record.get('market', '')))}</td>",
                 f'<td class="status {"ok" if ok else "failed"}">{"ready" if ok else "failed"}</td>']
        cells += [f"<td>{k.get(c, '–')}</td>" for c in ("met", "not_met", "not_judgeable")]
        if ok:
            cells.append(f'<td class="note"><a href="{escape(record["html"])}">packet</a> · '
                         f'<a href="{escape(record["extract"])}">extract (Excel)</a></td>')
        else:
            cells.append(f'<td class="note">packet not produced: {escape(record.get("error", "unknown error"))}'
                         "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ["Partner", "Setting", "Market", "Status", "Targets met", "Not met", "Not yet judgeable", "Packet"]
    n_failed = sum(1 for r in manifest["partners"].values() if r.get("status") != "ok")
    status = (f"{len(manifest['partners']) - n_failed} of {len(manifest['partners'])} partner packets ready"
              + (f"; <b>{n_failed} failed</b> (details in the run manifest)" if n_failed else ""))
    finished = manifest["finished"][:16].replace("T", " ")
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(manifest['agreement']['name'])}: partner packets</title>
<style>{_INDEX_CSS}</style></head>
<body>
<h1>{escape(manifest['agreement']['name'])}: partner packets</h1>
<p class="sub">Reporting period {escape(params['period_start'])} to {escape(params['period_end'])} · {status}</p>
<p>Each packet shows one partner its agreed metrics against their targets in the latest review period, with
trends and where its patients came from and went next. The counts here are of agreed targets. Small numbers
are suppressed in every packet and extract.</p>
<table><thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<p class="foot">Produced {escape(finished)} UTC by carequal {escape(manifest['carequal_version'])}
from input {escape(manifest['data']['fingerprint'][:12])} and agreement
{escape(manifest['agreement']['sha256'][:12])}.</p>
</body></html>
"""
    path = Path(out) / "index.html"
    _write_atomic(path, html)
    return path
