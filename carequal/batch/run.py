"""A run of the batch: lock, prepare, plan, execute, and commit the folder's state after every report.

:func:`run_batch` (and ``carequal report``) does, in order:

1. **check** every argument (:func:`carequal.batch.parameters.configure`) — paths, period, measures, disclosure
   floor — before anything is computed;
2. **lock** the output and work folders for the whole run (:func:`carequal.batch.state.hold`);
3. **prepare** the inputs every unit shares (:func:`carequal.inputs.prepare`): the validated, market-partitioned
   dataset and the national reference, in keyed folders of the work folder; print one line per table with
   quarantined rows (with ``strict``, refuse instead); check the notebook's parameters and the markets;
4. **plan** against the folder's manifest: a folder holding another report set (period, measures, conditions,
   threshold, kind, agreement) is refused unless ``force``, which replaces the set; reports recorded as ready
   with the same key (input, parameters, notebook, carequal version) are reused; every other unit's old report
   is removed at once and the unit marked pending, so no stale number stays published;
5. **execute** the units in worker processes (:mod:`carequal.batch.jobs`), each report written to the staging
   folder, then moved into place and **committed** (manifest, then index) as soon as it finishes, so a run
   killed at any point leaves a consistent folder and its rerun redoes only what was not finished.

Exit statuses of ``carequal report``: 0 every report ready; 1 some reports failed (the others are published);
2 refused before anything was published (bad argument, bad input, strict quarantine, a full disk, no national
measure whose model can be fitted); 3 another run holds the folder.

A model that cannot be fitted (:class:`carequal.errors.ModelError`: overflow, separation, no events…) fails no
report: a national measure without a model is left out of the reference and every market report shows it as
not available, with the reason (manifest ``not_available``); an agreed metric whose model cannot be fitted is
"not computed" in every packet it concerns, with the reason (manifest ``not_computed``), and the other metrics
are evaluated as usual. The operator gets one line per failure on stderr (:attr:`BatchResult.notes`), naming
the measure, the facility set, the cause and up to 5 example keys; the shared outputs never quote the keys.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from carequal import __version__
from carequal.agreement import NOT_COMPUTED, load_agreement
from carequal.batch.index import render_index
from carequal.batch.jobs import MarketJob, check_parameters, execute_jobs, safe_name, start_workers, warm_kernels
from carequal.batch.parameters import RunConfig, available_markets, configure, select_markets
from carequal.batch.state import (
    MANIFEST_FORMAT,
    STATE_DIR,
    commit,
    file_sha256,
    hold,
    load_manifest,
    remove_unit_files,
    set_key,
    staging_dir,
    units_of,
)
from carequal.disclosure import suppression_statement
from carequal.errors import ModelWarning, ParameterError
from carequal.inputs import prepare
from carequal.loaders import read_dataset_tables
from carequal.national import MEASURES, read_cohort
from carequal.packet import packet_inputs, readmitted_patients, write_packet_inputs
from carequal.report import parse_choices

__all__ = ["BatchResult", "run_batch"]


@dataclass
class BatchResult:
    """Outcome of :func:`run_batch`."""

    out: Path
    work: Path
    markets: dict[str, dict]
    manifest: dict = field(default_factory=dict)
    quarantine: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Models that could not be fitted (a national measure not available, an agreed metric not computed), one
    line each, for the operator: the reports and packets say it too, without the example keys."""

    @property
    def failed(self) -> list[str]:
        return [m for m, r in self.markets.items() if r.get("status") == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


def _package_versions() -> dict:
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
              measures: str = "all", conditions: str = "all", min_cell: int = 11, allow_small_cells: bool = False,
              work: str | Path | None = None, force: bool = False, strict: bool = False, wait: float = 0.0,
              notebook: str | Path | None = None, progress: bool = True, scheduler: str | None = None,
              by: str = "market", agreement: str | Path | None = None, patient_lists: str | Path | None = None,
              fresh_kernels: bool = False, pdf: bool = False, programme: str | None = None,
              pool: ProcessPoolExecutor | None = None) -> BatchResult:
    """Run the report notebook for each market (or the packet for each partner): see the module docstring.

    Parameters
    ----------
    data : path or TableSource
        Contract tables (CSV/Parquet), a market-partitioned dataset (``carequal ingest``), or a database
        (:class:`carequal.warehouse.Source`, ``--source``).
    out : path
        Folder for the shareable outputs (reports, ``index.html``, ``manifest.json``): one report set.
    markets : "all", comma-separated str or list
    workers : int
        Worker processes, one kernel each (size by memory too: a report kernel holds about 250 MB).
    period : str, optional
        :func:`carequal.batch.parse_period` text; default the calendar year of the last accepted discharge.
    measures, conditions : str
        Passed to the notebook ("all" or comma-separated keys).
    min_cell : int
        Smallest count shown (11: counts 1–10 are suppressed). Below 11 only with ``allow_small_cells``; every
        report then states the threshold on its first screen.
    work : path, optional
        Work folder for patient-level files (default ``<out>.work`` beside ``out``).
    force : bool
        Redo every unit (and the shared inputs); replaces a folder holding another report set.
    strict : bool
        Refuse to run when validation quarantines any row.
    wait : float
        Seconds to wait for another run that holds the folder (default: fail at once).
    notebook : path, optional
        The report notebook (default: the shipped ``carequal/notebooks/market_report.ipynb``; with
        ``by="partner"`` ``carequal/notebooks/partner_packet.ipynb``).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``) to run the markets on.
    by : {"market", "partner", "sponsor"}
        One report per market, one packet per partner of the agreement (with an aggregate extract), or one
        employee health report for the alliance and one per sponsor of ``enrollment.sponsor``.
    agreement : path, optional
        The partnership agreement for ``by="partner"`` (default: ``agreement.toml`` / ``.yaml`` beside the data).
    patient_lists : path, optional
        With ``by="partner"``: also write each partner's own readmitted patients to this folder (outside ``out``).
    fresh_kernels : bool
        A new kernel for every report instead of one reused kernel per worker.
    pdf : bool
        Also print each report to a PDF beside it (:mod:`carequal.batch.pdf`: headless Chromium, refused before
        any work when none is installed), staged and moved into place with its report and recorded in the
        manifest with its SHA-256.
    programme : str, optional
        With ``by="sponsor"``: ``"SPONSOR:YYYY-MM-DD"``, a care-management programme run by that sponsor from that
        day; its reports (the alliance's and the sponsor's) estimate the programme's effect on avoidable admissions
        and ED visits. Without it no programme is shown. The sponsor must be named in ``enrollment.sponsor``.
    pool : ProcessPoolExecutor, optional
        ``workers`` worker processes already started by :func:`carequal.batch.jobs.start_workers`: the command
        line starts them before it loads the batch, so that they load papermill and the report template on the
        core its own imports leave idle. Used when the run executes on local workers; shut down when the run
        ends, whatever happened (also when it is refused).

    Returns
    -------
    BatchResult
    """
    try:
        config = configure(data, out, work=work, notebook=notebook, by=by, markets=markets, period=period,
                           measures=measures, conditions=conditions, min_cell=min_cell,
                           allow_small_cells=allow_small_cells, workers=workers, force=force, strict=strict, wait=wait,
                           scheduler=scheduler, agreement=agreement, patient_lists=patient_lists,
                           fresh_kernels=fresh_kernels, progress=progress, pdf=pdf, programme=programme)
        select_markets(config.markets, available_markets(config.data))  # cheap, before any lock or validation
        with hold(config.out, wait=config.wait, what="output"), hold(config.work, wait=config.wait, what="work"):
            client = None
            if config.scheduler:
                from distributed import Client  # only with --scheduler (heavy, optional)

                try:
                    client = Client(config.scheduler, timeout=30)
                except (OSError, TimeoutError) as exc:
                    raise ParameterError(f"--scheduler {config.scheduler}: cannot connect to a Dask scheduler there "
                                         f"({exc})") from None
            try:
                return _run(config, client, pool)
            finally:
                if client is not None:
                    client.close()
    finally:
        if pool is not None:  # refused before it ran, or run on a Dask cluster: the started workers stop
            pool.shutdown(cancel_futures=True)


# ---------------------------------------------------------------------------------------------- preparation


def _model_notes(fn, *args, **kwargs):
    """``(fn(...), notes)``: the messages of the :class:`ModelWarning` s it raised, once each (for the operator's
    summary rather than as warnings); other warnings pass on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModelWarning)
        result = fn(*args, **kwargs)
    notes = []
    for w in caught:
        if issubclass(w.category, ModelWarning):
            if str(w.message) not in notes:
                notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, notes


def _prepare(config: RunConfig, client):
    period = config.period or (None, None)
    prepared, notes = _model_notes(prepare, config.data, config.work, period_start=period[0],
                                   period_end=period[1], measures=tuple(MEASURES), force=config.force, client=client,
                                   refuse_quarantine=config.strict)
    summary = prepared.quarantine_summary()
    unavailable = json.loads((prepared.reference / "reference.json").read_text()).get("unavailable", {})
    if unavailable and not notes:  # a reference built by an earlier run: its reasons, as recorded
        notes = [f"{info['reason']}; the measure is shown as not available" for info in unavailable.values()]
    return prepared, summary, notes, {name: info["reason"] for name, info in unavailable.items()}


def _units(config: RunConfig, prepared, chosen: list[str], staging: Path, pool=None) -> tuple[list, dict, dict]:
    """``(units, report_set, extra)``: each unit as (name, notebook parameters, title, record fields)."""
    start, end = prepared.period
    if config.by == "sponsor":
        return _sponsor_units(config, prepared)
    if config.by == "market":
        base = {"period_start": start, "period_end": end, "measures": config.measures,
                "conditions": config.conditions, "min_cell": config.min_cell}
        check_parameters(config.notebook, {**base, "market": chosen[0], "data": "", "work": "", "reference": "",
                                           "kpi_path": ""})
        units = []
        for market in chosen:
            name = safe_name(market)
            units.append((market, {**base, "market": market, "data": str(prepared.dataset),
                                   "work": str(config.work), "reference": str(prepared.reference),
                                   "kpi_path": str(config.work / "kpis" / f"{name}.json")},
                          f"{market}: partnership quality report", {}))
        report_set = {"by": "market", **base}
        return units, report_set, {}
    return _partner_units(config, prepared, chosen, staging, pool)


def _sponsor_units(config: RunConfig, prepared) -> tuple[list, dict, dict]:
    """One employee health report for the alliance (every sponsor) and one per sponsor of ``enrollment``."""
    from carequal.employers import ALL_SPONSORS, sponsors

    start, end = prepared.period
    base = {"period_start": start, "period_end": end, "min_cell": config.min_cell}
    programme_sponsor, programme_start = config.programme or ("", "")
    # the notebook's own defaults are the sample's programme: a run names its programme, or none
    programme = {"programme_sponsor": programme_sponsor, "programme_start": programme_start}
    check_parameters(config.notebook, {**base, **programme, "sponsor": "", "data": "", "kpi_path": ""})
    names = sponsors(read_dataset_tables(prepared.dataset)["enrollment"])
    if not names:
        raise ParameterError("--by sponsor: the enrollment table names no sponsor (the optional column "
                             "enrollment.sponsor: the employer or plan sponsor of each period; see data/README.md)")
    if programme_sponsor and programme_sponsor not in names:
        raise ParameterError(f"--programme: sponsor {programme_sponsor!r} is not in enrollment.sponsor; the sponsors "
                             f"are {', '.join(names)}")
    if programme_start and programme_start > end:
        raise ParameterError(f"--programme: the start {programme_start} is after the reporting period "
                             f"({start} to {end})")
    units = []
    for unit, sponsor in [(ALL_SPONSORS, ""), *((n, n) for n in names)]:
        units.append((unit, {**base, **programme, "sponsor": sponsor, "data": str(prepared.dataset),
                             "kpi_path": str(config.work / "kpis" / f"{safe_name(unit)}.json")},
                      f"{sponsor or 'The alliance'}: employee health", {"name": sponsor or "The alliance"}))
    return units, {"by": "sponsor", **base}, {}


def _partner_units(config: RunConfig, prepared, chosen: list[str], staging: Path, pool=None
                   ) -> tuple[list, dict, dict]:
    start, end = prepared.period
    parameters = {"partner": "x", "period_start": start, "period_end": end, "inputs": "", "min_cell": config.min_cell,
                  "extract_dir": "", "record_path": ""}
    # the check needs papermill (~0.5 s to import): a started worker, which loads it anyway, checks while this
    # process computes the packet inputs; a mismatch is refused before any packet runs, as without workers
    checked = None
    if pool is not None:
        checked = pool.submit(check_parameters, str(config.notebook), parameters)
    else:
        check_parameters(config.notebook, parameters)
    tables = read_dataset_tables(prepared.dataset)
    agreement = load_agreement(config.agreement, tables["facilities"])
    ag_hash = file_sha256(config.agreement)
    cohort = read_cohort(prepared.cohort).rows  # built once by prepare: no index stays are recomputed here
    inputs, notes = _model_notes(packet_inputs, tables, agreement, period_start=start, period_end=end, cohort=cohort)
    folder = write_packet_inputs(inputs, config.work / "agreement" / f"{ag_hash[:12]}-{start}-{end}", agreement,
                                 tables["facilities"])
    if checked is not None:
        checked.result()  # raises the worker's ParameterError here
    partners = inputs["partners"][inputs["partners"]["market"].isin(chosen)]
    if partners.empty:
        raise ParameterError(f"no partner of {agreement.name!r} is in market(s) {', '.join(chosen)}; its partners "
                             f"are in {', '.join(sorted(inputs['partners']['market'].unique()))}")
    lists = {}
    if config.patient_lists is not None:
        readmission = [m.id for m in agreement.metrics if m.measure == "readmission"]
        if not readmission:
            raise ParameterError("--patient-lists: the agreement has no readmission metric to list patients for")
        config.patient_lists.mkdir(parents=True, exist_ok=True)
        for fid in partners["facility_id"]:
            frame = readmitted_patients(inputs["cases"], tables, partner=fid, metric=readmission[0],
                                        period=(start, end))
            path = config.patient_lists / f"{safe_name(fid)}_readmitted.csv"
            frame.to_csv(path, index=False, date_format="%Y-%m-%d")
            lists[fid] = {"path": str(path), "patients": int(len(frame))}
    units = []
    for p in partners.itertuples(index=False):
        name = safe_name(p.facility_id)
        units.append((p.facility_id, {"partner": p.facility_id, "period_start": start, "period_end": end,
                                      "inputs": str(folder), "min_cell": config.min_cell,
                                      "extract_dir": str(staging / f"{name}_extract"),
                                      "record_path": str(config.work / "records" / f"{name}.json")},
                      f"{p.name}: partner packet",
                      {"name": p.name, "setting": p.setting, "market": p.market}))
    report_set = {"by": "partner", "period_start": start, "period_end": end, "min_cell": config.min_cell,
                  "agreement_sha256": ag_hash}

    results = inputs["results"]
    failed = results[results["status"] == NOT_COMPUTED].drop_duplicates(["metric", "status_reason"])
    not_computed = {metric: list(group["status_reason"]) for metric, group in failed.groupby("metric", sort=False)}
    extra = {"agreement": {"path": str(config.agreement), "name": agreement.name, "sha256": ag_hash},
             "patient_lists": {"folder": str(config.patient_lists), "files": lists}
             if config.patient_lists is not None else None,
             "not_computed": not_computed, "_notes": notes}
    return units, report_set, extra


# ------------------------------------------------------------------------------------------------ the folder


def _unit_key(fingerprint: str, params: dict, notebook_hash: str, report_set: dict, pdf: bool = False) -> str:
    # staging paths change from run to run; they are not part of what a report says. A report printed to PDF
    # is another output than one without (a run without --pdf keeps the keys of earlier runs)
    stable = {k: v for k, v in params.items() if k != "extract_dir"}
    if pdf:
        stable["_pdf"] = True
    return set_key({"fingerprint": fingerprint, "parameters": stable, "notebook": notebook_hash,
                    "carequal": __version__, "set": report_set})


def _open_folder(config: RunConfig, report_set: dict) -> dict:
    """The previous manifest of the same report set (after recovery), or an empty one; refuses another set."""
    out = config.out
    previous = load_manifest(out)
    if previous is None:
        foreign = sorted(p.name for p in out.iterdir() if p.name != STATE_DIR) if out.is_dir() else []
        if foreign:
            raise ParameterError(f"--out {out} holds files carequal did not write ({', '.join(foreign[:3])}"
                                 f"{', …' if len(foreign) > 3 else ''}); choose an empty or new folder")
        return {}
    same = previous.get("format") == MANIFEST_FORMAT and previous.get("set_key") == set_key(report_set)
    if not same:
        was = previous.get("set") or previous.get("parameters") or {}
        if not config.force:
            described = ", ".join(f"{k} {was.get(k)}" for k in ("by", "period_start", "period_end", "measures",
                                                                 "conditions", "min_cell") if k in was)
            asked = ", ".join(f"{k} {v}" for k, v in report_set.items() if was.get(k) != v)
            raise ParameterError(f"--out {out} holds another report set ({described or 'an older format'}); this "
                                 f"run differs in {asked or 'format'}. Use another --out, or --force to replace "
                                 "that set")
        for record in (units_of(previous) or {}).values():
            remove_unit_files(out, record)
        return {}
    # recovery: a report recorded as ready must be the recorded one; a report not recorded is not published
    records = units_of(previous) or {}
    for record in records.values():
        if record.get("status") == "ok":
            path = out / str(record.get("html"))
            pdf = out / str(record.get("pdf")) if record.get("pdf") else None
            if not path.is_file() or file_sha256(path) != record.get("html_sha256") or (
                    pdf is not None and (not pdf.is_file() or file_sha256(pdf) != record.get("pdf_sha256"))):
                remove_unit_files(out, record)
                record.update(status="pending", html=None, pdf=None, reused=False)
    recorded = {r.get(k) for r in records.values() if r.get("status") == "ok" for k in ("html", "pdf")}
    for page in [*out.glob("*.html"), *out.glob("*.pdf")]:
        if page.name != "index.html" and page.name not in recorded:
            page.unlink()
    for folder in out.glob("*_extract"):
        if not any(r.get("extract_dir") == folder.name for r in records.values() if r.get("status") == "ok"):
            shutil.rmtree(folder, ignore_errors=True)
    return previous


def _finish_unit(config: RunConfig, record: dict, result: dict, job: MarketJob, staging: Path) -> dict:
    """Move a finished unit's files from staging into place; its record as it will be committed."""
    out = config.out
    name = safe_name(result["market"])
    # a packet's record keeps its partner's market (the worker's result names the unit under "market")
    skip = {"error", "market"} if config.by == "partner" else {"error"}
    record = {**record, **{k: v for k, v in result.items() if k not in skip}, "reused": False,
              "notebook": job.executed, "html": None}
    record.pop("error", None)
    if result["status"] == "ok":
        html = out / f"{name}.html"
        Path(job.html).replace(html)
        record["html"] = html.name
        record["html_sha256"] = file_sha256(html)
        record.pop("pdf", None)
        record.pop("pdf_sha256", None)
        if job.pdf:  # printed beside its report, recorded with it
            pdf = out / f"{name}.pdf"
            Path(job.pdf).replace(pdf)
            record["pdf"] = pdf.name
            record["pdf_sha256"] = file_sha256(pdf)
        if config.by == "partner":
            extract = out / f"{name}_extract"
            shutil.rmtree(extract, ignore_errors=True)
            Path(job.parameters["extract_dir"]).replace(extract)
            record["extract_dir"] = extract.name
            record["extract"] = f"{extract.name}/extract.xlsx"
        kpis = Path(job.kpis)
        if kpis.is_file():
            record["kpis"] = json.loads(kpis.read_text())
    else:
        # the error text stays in the work folder (it may quote keys); the shared manifest names its kind
        record["error_kind"] = result.get("error", "error").split(":", 1)[0]
        record["error_file"] = job.error
    return record


def _run(config: RunConfig, client, started_pool: ProcessPoolExecutor | None = None) -> BatchResult:
    t_run = time.perf_counter()
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    cwd = config.work / "notebooks"  # the kernels' working folder: the executed notebooks'
    pool = None
    if client is None and config.workers > 1:
        # the worker processes start (unless the command line started them) and load papermill and the report
        # template while the batch prepares (on a core the preparing process leaves idle); their kernels start
        # once the data have been accepted
        pool = started_pool if started_pool is not None else start_workers(config.workers)
    try:
        t0 = time.perf_counter()
        prepared, quarantine, notes, unavailable = _prepare(config, client)
        prepare_seconds = {**prepared.seconds, "total": time.perf_counter() - t0, "reused": prepared.reused}
        chosen = select_markets(config.markets, prepared.markets)
        staging = staging_dir(config.out, run_id)
        if pool is not None and config.by == "partner" and config.reuse_kernels:
            # the kernels start and load the notebook's imports while the packet inputs are computed
            cwd.mkdir(parents=True, exist_ok=True)
            warm_kernels(pool, config.workers, notebook=str(config.notebook), cwd=str(cwd))
        units, report_set, extra = _units(config, prepared, chosen, staging, pool)
        notes = (notes if config.by == "market" else []) + extra.pop("_notes", [])
        previous = _open_folder(config, report_set)
        kind = {"partner": "partners", "sponsor": "sponsors"}.get(config.by, "markets")
        records = dict(previous.get(kind, {}))
        notebook_hash = file_sha256(config.notebook)
        footer = (f"Reporting period {prepared.period[0]} to {prepared.period[1]}. "
                  f"{suppression_statement(config.min_cell)}")
        jobs = []
        for unit, params, title, fields in units:
            key = _unit_key(prepared.fingerprint, params, notebook_hash, report_set, pdf=config.pdf)
            before = records.get(unit, {})
            if not config.force and before.get("status") == "ok" and before.get("key") == key:
                records[unit] = {**before, **fields, "reused": True}
                continue
            remove_unit_files(config.out, before)  # a stale report must not pass for the current one
            records[unit] = {"status": "pending", "key": key, **fields}
            name = safe_name(unit)
            record_key = "record_path" if config.by == "partner" else "kpi_path"
            Path(params[record_key]).parent.mkdir(parents=True, exist_ok=True)
            Path(params[record_key]).unlink(missing_ok=True)
            jobs.append((MarketJob(market=unit, notebook=str(config.notebook), parameters=params,
                                   html=str(staging / f"{name}.html"),
                                   executed=str(config.work / "notebooks" / f"{name}.ipynb"), kpis=params[record_key],
                                   error=str(config.work / "notebooks" / f"{name}.error.txt"), title=title,
                                   reuse_kernel=config.reuse_kernels, footer=footer,
                                   pdf=str(staging / f"{name}.pdf") if config.pdf else ""), key))
        # units of this set from earlier runs that this run does not cover stay listed, in the set's order
        order = [u for u, *_ in units] + [u for u in records if u not in {x for x, *_ in units}]
        manifest = {
            "format": MANIFEST_FORMAT, "by": config.by, "set": report_set, "set_key": set_key(report_set),
            "revision": previous.get("revision", 0), "state": "running", "carequal_version": __version__,
            "run_id": run_id, "started": started.isoformat(), "finished": None,
            "parameters": {**report_set, "markets": chosen, "workers": config.workers, "force": config.force,
                           "strict": config.strict, "notebook": str(config.notebook), "scheduler": config.scheduler,
                           "reuse_kernel": config.reuse_kernels, "pdf": config.pdf},
            "data": {"path": str(config.data), "fingerprint": prepared.fingerprint, "markets": prepared.markets},
            "validation": _validation_record(prepared),
            "work": str(config.work), "packages": _package_versions(), "host": platform.node(),
            "seconds": {"prepare": prepare_seconds},
            kind: {u: records[u] for u in order},
            **extra,
        }
        if config.by == "sponsor":
            manifest["parameters"]["programme"] = ":".join(config.programme) if config.programme else None
        if config.by == "market":
            manifest["measures"] = list(parse_choices(config.measures, tuple(MEASURES), "measure(s)"))
            # measures whose national model could not be fitted: each report says so (reasons name no patient)
            manifest["not_available"] = {m: r for m, r in unavailable.items() if m in manifest["measures"]}
        commit(config.out, manifest, render_index)

        if pool is not None and config.by != "partner" and jobs and config.reuse_kernels:
            # market and sponsor batches warm their kernels too (the notebook's imports loaded, then frozen for the
            # garbage collector: each later report's namespace reset takes ~0.02 s instead of ~0.3 s)
            cwd.mkdir(parents=True, exist_ok=True)
            warm_kernels(pool, min(config.workers, len(jobs)), notebook=str(config.notebook), cwd=str(cwd))
        t0 = time.perf_counter()
        by_unit = {job.market: job for job, _ in jobs}
        for result, key in execute_jobs(jobs, workers=config.workers, progress=config.progress, client=client,
                                        pool=pool):
            unit = result["market"]
            manifest[kind][unit] = _finish_unit(config, {**manifest[kind][unit], "key": key}, result, by_unit[unit],
                                                staging)
            commit(config.out, manifest, render_index)
        manifest["seconds"].update({kind: time.perf_counter() - t0, "total": time.perf_counter() - t_run})
        manifest.update(state="finished", finished=datetime.now(UTC).isoformat())
        commit(config.out, manifest, render_index)
        shutil.rmtree(staging, ignore_errors=True)
        return BatchResult(out=config.out, work=config.work, markets=manifest[kind], manifest=manifest,
                           quarantine=quarantine, notes=notes)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _validation_record(prepared) -> dict:
    """Rows loaded, accepted and quarantined per table, and rows per broken rule (no example keys)."""
    out = {}
    if prepared.counts is not None and len(prepared.counts):
        for row in prepared.counts.itertuples(index=False):
            rules = prepared.failures[prepared.failures["table"] == row.table] \
                if prepared.failures is not None and len(prepared.failures) else []
            out[row.table] = {"loaded": int(row.loaded), "accepted": int(row.accepted),
                              "quarantined": int(row.quarantined),
                              "rules": {f"{r.column}: {r.rule}": int(r.n_rows) for r in
                                        (rules.itertuples(index=False) if len(rules) else [])}}
    return out
