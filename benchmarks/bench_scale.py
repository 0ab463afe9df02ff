"""Scale benchmark: the single-machine pipeline end to end, each stage against its peer, and the measures on one
process against Dask.

Run from the repository root (on a quiet machine: nothing else running)::

    python benchmarks/bench_scale.py [--stays 5000000] [--workdir /tmp/carequal-bench-scale] [--keep]
    python benchmarks/bench_scale.py --pipeline-only   # data, pipeline and stage peers only (no Dask measures)
    python benchmarks/bench_scale.py --quick     # smoke test: 200,000 stays, report in --workdir only

To measure a clean commit while others edit the work tree, import a snapshot of the package::

    mkdir /tmp/snap && git archive HEAD carequal | tar -x -C /tmp/snap && git rev-parse --short HEAD \\
        > /tmp/snap/SNAPSHOT && PYTHONPATH=/tmp/snap python benchmarks/bench_scale.py

One run measures, prints and writes ``benchmarks/results/scale.md`` (with the machine it ran on). A
``--pipeline-only`` run skips the measures (section 4 below and its check) and writes
``benchmarks/results/scale_pipeline.md`` instead, so that the measures of the last full run stay in ``scale.md``.
A smaller run (``--quick``, or ``--stays`` below 5,000,000) writes ``<workdir>/scale-<stays>.md`` (with
``--pipeline-only``: ``<workdir>/scale_pipeline-<stays>.md``) instead and never touches ``benchmarks/results/``:

1. **Data.** ``carequal synth --stays N --format parquet --seed S --out <workdir>/data-<N>-seed<S>``, reused when
   that folder already holds a dataset made with the same size and seed (a marker file beside it, written after
   generation, says so). Not part of any time below. The reporting period is the last calendar year of the
   data (the year of the last discharge: 2024 for the generator's default 2022-2024).
2. **The single-machine pipeline, end to end before the notebooks**, in one fresh child process:
   ``carequal.inputs.prepare(data, work, period_start, period_end)`` from the generated Parquet folder into a
   fresh work folder — fingerprint the input, read + validate (``load_tables``, quarantine mode), write the
   market-partitioned dataset, then the national reference (index cohort, every measure, one hierarchical
   model per measure, every index stay scored, the reference written) — then the comparison tables:
   ``read_reference`` and ``carequal.compare.scorecard`` for every facility x measure over the reference rows
   of the period. Each stage's seconds (``prepare`` reports its own), the total, the child's wall time
   (interpreter start and imports included) and its peak resident memory (``VmHWM`` from
   ``/proc/self/status`` at the end; ``ru_maxrss`` from ``os.wait4`` agrees). Targets (issue 18): at most
   100 s (checked on the child's wall time, the stricter reading) and a peak of at most 5 GiB (5 x 2^30 bytes).
3. **Each stage against its peer**, each peer in its own fresh child on the same data, after the pipeline:

   * validate (read + validate) against the *read floor*: pyarrow reading each input Parquet table of the data
     folder with the calls ``carequal.loaders._read_parquet`` makes (``ds.dataset(path, format="parquet",
     partitioning="hive").to_table().to_pandas(date_as_object=False)``), the five tables timed in total. The
     rules themselves are compared with DuckDB in ``benchmarks/results/foundation.md``.
   * ingest against the *write floor*: each table of the dataset the pipeline wrote, read back (not timed) with
     the market column as plain string, then written by pyarrow with the options
     ``carequal.loaders.write_market_dataset`` uses (``ds.write_dataset(table, <dir>/<table>, format="parquet",
     partitioning=["market"], partitioning_flavor="hive", existing_data_behavior="delete_matching",
     basename_template="part-{i}.parquet", preserve_order=True)``; facilities by their own market), timed in
     total. pyarrow writing the same rows is the floor of any ingest.
   * reference: no peer (carequal's own index cohort, measures and models).

4. **Measures: one process against a Dask LocalCluster**, each in its own fresh child, on the dataset the
   pipeline wrote:

   a. ``measured_index_stays_partitioned(dataset)``: one process, partition (residence market) by partition;
   b. the same with a ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` client:
      cluster start-up (cluster + client, both workers up), worker warm-up and the computation timed apart;
   c. ``measured_index_stays(load_tables(dataset).tables)``: the whole tables in one process (the path
      ``prepare`` takes), loading timed apart.

   Before timing, each process imports carequal and reads the code tables carequal caches per process (CCS,
   value sets, condition and comorbidity codes); on the cluster the workers do the same through
   ``client.run`` (timed: "worker warm-up"). Peak memory: the child's ``VmHWM``; for the cluster the workers'
   ``VmHWM`` (``client.run``) added up, plus the client process (which also runs the scheduler and, inside
   ``measured_index_stays_partitioned``, the first partition once to learn the result's columns), with the
   nanny processes listed apart. Ratios LocalCluster / one process, on the same data in the same run. (b) is
   then compared with (a) row for row (same stay_ids in the same order, same values: the count of differing
   cells must be 0), and (c) with (a) likewise.

How it measures: every measurement is a fresh child process (this script with ``--child``); times are
``time.perf_counter`` around the calls. Inside a child a thread samples the resident memory every 0.2 s, to
tell which stage reached the peak (approximate; the peak itself is the kernel's ``VmHWM``). Before the first
measurement the machine's busy CPU is read over 5 s with nothing of this benchmark running, and for each child
the busy CPU of the whole machine (``/proc/stat``) less the child's own and its waited-for descendants'
(``os.wait4`` rusage: cluster nannies and workers included) gives the cores kept busy by *other* processes,
with the 1-minute load average before, highest (every 5 s) and after: a measurement beside more than 0.25 of
a busy core, or whose load rose more than one above what it runs itself, is flagged. A throwaway child
imports everything first and reads the bytes of the input data files (bytecode compiled, code and data in the
page cache, so that the pipeline and the read floor both read cached files; not timed). Nothing here asserts a
time: it is a script, not a test. Defaults take about 11 minutes on the reference machine (2 cores, 24 GB),
one more when the data have to be generated; ``--pipeline-only`` about 4; ``--quick`` about 2.

OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) may be set on this machine; they only matter to BLAS-backed numpy
linear algebra, which only the three model fits in the reference stage use (the rest is pandas, sorting and
Parquet), so they are left as they are, as in the other benchmarks; the machine table records them and the
BLAS kernel and thread count that threadpoolctl reports in the pipeline child.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import report
from report import (  # benchmarks/report.py: shared report helpers
    OTHER_CORES_LIMIT,
    ChildFailed,
    gib,
    idle_check,
    markdown_table,
    measure,
    measurements_table,
)

FULL_STAYS = 5_000_000
"""The issue's size; smaller runs never write ``benchmarks/results/scale.md``."""
QUICK_STAYS = 200_000
TIME_TARGET_S = 100.0
"""Target (issue 18): the single-machine pipeline before the notebooks in at most 100 s (child wall time)."""
MEMORY_TARGET_BYTES = 5 * 2**30
"""Target (issue 18): its peak resident memory at most 5 GiB."""
RESULTS = Path(__file__).resolve().parent / "results" / "scale.md"
RESULTS_PIPELINE = RESULTS.with_name("scale_pipeline.md")
"""What a full-size ``--pipeline-only`` run writes (``scale.md`` keeps the measures of the last full run)."""
REPO = Path(__file__).resolve().parent.parent
SAMPLE_EVERY_S = 0.2
PACKAGES = ("pandas", "numpy", "pyarrow", "scipy", "dask", "distributed")
CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True}


# ----------------------------------------------------------------------------------------- child helpers


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB. Run on Dask workers and nannies by ``client.run``."""
    return _status_mib("VmHWM")


class Phases:
    """Wall time of named phases, the process's peak so far (VmHWM) at the end of each, and the largest resident
    memory a background thread saw during each (sampled every ``SAMPLE_EVERY_S`` seconds)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.spans: dict[str, tuple[float, float, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), _status_mib("VmRSS")))
            if self._done.wait(SAMPLE_EVERY_S):
                return

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        yield
        self.add(name, t0, time.perf_counter())

    def add(self, name: str, t0: float, t1: float, *, live: bool = True) -> None:
        """Record a phase; ``live``: it ends now (else its VmHWM at the end is unknown)."""
        self.spans[name] = (t0, t1, _vm_hwm_mib() if live else float("nan"))

    def seconds(self, name: str) -> float:
        t0, t1, _ = self.spans[name]
        return t1 - t0

    def result(self) -> dict:
        self._done.set()
        self._thread.join()
        out = {}
        for name, (t0, t1, hwm) in self.spans.items():
            seen = [rss for t, rss in self.samples if t0 <= t <= t1]
            out[name] = {"seconds": t1 - t0, "rss_max_mib": max(seen) if seen else float("nan"), "hwm_mib": hwm}
        return out


def _warm() -> None:
    """Import carequal and fill the code tables it caches per process (read on first use), untimed."""
    import pandas as pd

    import carequal.compare  # noqa: F401
    import carequal.loaders  # noqa: F401
    import carequal.national  # noqa: F401
    import carequal.scale  # noqa: F401
    from carequal import cohorts, measures, risk

    measures.planned_readmission_valuesets()
    measures.ccs_diagnosis(pd.Series(["I509"]))
    measures.ccs_procedure(pd.Series(["0TY00Z0"]))
    cohorts.condition_codes()
    for scheme in risk.SCHEMES:
        risk.comorbidity_map(scheme)


def _blas_info() -> str:
    try:
        import numpy  # noqa: F401 - threadpoolctl only lists libraries already loaded
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    found = [f"{i.get('internal_api')} {i.get('version') or ''} {i.get('architecture') or ''} "
             f"({i.get('num_threads')} threads, {Path(i.get('filepath') or '?').parent.name})"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(found) or "none loaded"


# ----------------------------------------------------------------------------------------- child tasks


def task_pipeline(spec: dict) -> dict:
    """prepare (fingerprint, validate, ingest, reference) + read_reference + scorecard, in one process."""
    import warnings

    import pyarrow.dataset as ds

    from carequal.compare import scorecard
    from carequal.inputs import prepare
    from carequal.national import read_reference

    ph = Phases()
    start, end = spec["period"]
    t0 = time.perf_counter()
    prepared = prepare(spec["data"], spec["work"], period_start=start, period_end=end)
    t1 = time.perf_counter()
    if prepared.reused:
        raise RuntimeError(f"prepare reused {spec['work']}: the work folder was not fresh")
    # prepare's own stage times, laid end to end from its start (for the memory samples of each stage)
    at = t0
    for name in ("fingerprint", "validate", "ingest", "reference"):
        if name in prepared.seconds:
            ph.add(name, at, at + prepared.seconds[name], live=False)
            at += prepared.seconds[name]
    ph.add("prepare", t0, t1)
    with ph.phase("read_reference"):
        ref = read_reference(prepared.reference)
    with ph.phase("scorecard"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            current = ref.rows[ref.rows["in_period"]]
            card = scorecard(current, facility="unit_id", measure="measure")
    t_end = time.perf_counter()
    ph.add("total", t0, t_end)
    peak = _vm_hwm_mib()
    stages = ph.result()

    facilities = ds.dataset(Path(prepared.dataset) / "facilities", format="parquet", partitioning="hive")
    by_measure = ref.rows.groupby("measure", observed=True)
    return {
        "stages": stages, "prepare_seconds": prepared.seconds, "total_seconds": t_end - t0, "peak_mib": peak,
        "blas": _blas_info(),
        "markets": len(prepared.markets), "facilities": facilities.count_rows(),
        "index_stays": int(ref.meta.get("index_stays", 0)), "reference_rows": len(ref.rows),
        "in_period_rows": int(ref.rows["in_period"].sum()),
        "measures": {str(m): {"rows": len(g), "in_period": int(g["in_period"].sum()),
                              "facilities": int(g.loc[g["in_period"], "unit_id"].nunique())} for m, g in by_measure},
        "models": ref.models[["measure", "n", "events", "facilities", "converged"]].to_dict("records"),
        "scorecard_rows": len(card), "scorecard_warnings": len(caught), "dataset": str(prepared.dataset),
    }


def task_single(spec: dict) -> dict:
    """(a) measured_index_stays_partitioned in this process, partition by partition."""
    from carequal.scale import measured_index_stays_partitioned

    ph = Phases()
    with ph.phase("warm-up"):
        _warm()
    with ph.phase("compute"):
        measured = measured_index_stays_partitioned(spec["dataset"])
    peak = _vm_hwm_mib()
    stages = ph.result()
    measured.to_pickle(spec["out"])
    return {"stages": stages, "peak_mib": peak, "rows": len(measured)}


def task_cluster(spec: dict) -> dict:
    """(b) the same on a LocalCluster: start-up, worker warm-up and computation timed apart."""
    import logging

    from distributed import Client, LocalCluster

    from carequal.scale import measured_index_stays_partitioned

    _warm()  # the client imports and code tables, as (a) has them before its timing (its warm-up is timed apart)
    ph = Phases()
    with ph.phase("start-up"):
        cluster = LocalCluster(**CLUSTER, dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        client.wait_for_workers(CLUSTER["n_workers"])
    with ph.phase("worker warm-up"):
        client.run(_warm)
    with ph.phase("compute"):
        measured = measured_index_stays_partitioned(spec["dataset"], client=client)
    workers = client.run(_vm_hwm_mib)
    nannies = client.run(_vm_hwm_mib, nanny=True)
    n_workers = len(client.scheduler_info()["workers"])
    client_peak = _vm_hwm_mib()
    with ph.phase("shutdown"):
        client.close()
        cluster.close()
    stages = ph.result()
    measured.to_pickle(spec["out"])
    return {"stages": stages, "peak_mib": client_peak, "rows": len(measured), "n_workers": n_workers,
            "workers_mib": sorted(workers.values()), "nannies_mib": sorted(nannies.values())}


def task_whole(spec: dict) -> dict:
    """(c) measured_index_stays on the whole tables (load_tables of the dataset), in one process."""
    from carequal.loaders import load_tables
    from carequal.national import measured_index_stays

    ph = Phases()
    with ph.phase("warm-up"):
        _warm()
    with ph.phase("load"):
        tables = load_tables(spec["dataset"]).tables
    with ph.phase("compute"):
        measured = measured_index_stays(tables)
    peak = _vm_hwm_mib()
    stages = ph.result()
    measured.to_pickle(spec["out"])
    return {"stages": stages, "peak_mib": peak, "rows": len(measured)}


def differing_cells(a, b) -> dict:
    """Row-for-row comparison of two measured-index-stay frames: stays present in one only, whether the stays
    come in the same order, and the cells that differ (stays aligned by stay_id; floats equal or both missing,
    anything else compared as text)."""
    import numpy as np
    import pandas as pd

    same_order = len(a) == len(b) and bool((a["stay_id"].to_numpy() == b["stay_id"].to_numpy()).all())
    x, y = a.set_index("stay_id"), b.set_index("stay_id")
    only = int(len(x.index.symmetric_difference(y.index)))
    common = x.index.intersection(y.index)
    x, y = x.loc[common], y.loc[common]
    columns = sorted(set(x.columns) | set(y.columns))
    per_column, dtypes = {}, {}
    for col in columns:
        if col not in x.columns or col not in y.columns:
            per_column[col] = len(common)
            continue
        u, v = x[col], y[col]
        if str(u.dtype) != str(v.dtype):
            dtypes[col] = f"{u.dtype} / {v.dtype}"
        if pd.api.types.is_float_dtype(u) or pd.api.types.is_float_dtype(v):
            p, q = u.to_numpy(dtype=float, na_value=np.nan), v.to_numpy(dtype=float, na_value=np.nan)
            bad = ~((p == q) | (np.isnan(p) & np.isnan(q)))
        else:
            bad = u.astype("str").fillna("<NA>").to_numpy() != v.astype("str").fillna("<NA>").to_numpy()
        per_column[col] = int(np.asarray(bad).sum())
    return {"rows": [len(a), len(b)], "stays_in_one_only": only, "same_order": same_order,
            "differing_cells": sum(per_column.values()), "by_column": {k: v for k, v in per_column.items() if v},
            "dtype_differences": dtypes, "duplicated_stay_ids": [int(a["stay_id"].duplicated().sum()),
                                                                 int(b["stay_id"].duplicated().sum())]}


def task_check(spec: dict) -> dict:
    """(b) against (a), and (c) against (a), after the timed children (not timed)."""
    import pandas as pd

    single = pd.read_pickle(spec["single"])
    out = {"cluster_vs_single": differing_cells(single, pd.read_pickle(spec["cluster"]))}
    whole = pd.read_pickle(spec["whole"]).sort_values("stay_id", kind="stable", ignore_index=True)
    out["whole_vs_single"] = differing_cells(single, whole)
    return out


def task_read_floor(spec: dict) -> dict:
    """The read floor of the validate stage: pyarrow reading each input Parquet table of the data folder into
    pandas with the calls ``carequal.loaders._read_parquet`` makes (``read_table(path)``: every column)."""
    import pyarrow.dataset as ds

    from carequal.loaders import table_path
    from carequal.schema import TABLES

    paths = {t: table_path(spec["data"], t) for t in TABLES}
    paths = {t: path for t, path in paths.items() if path is not None}
    tables, total = {}, 0.0
    for table, path in paths.items():
        t = time.perf_counter()
        frame = ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas(date_as_object=False)
        seconds = time.perf_counter() - t
        total += seconds
        tables[table] = {"seconds": seconds, "rows": len(frame)}
        del frame
    peak = _vm_hwm_mib()
    return {"read_seconds": total, "tables": tables, "peak_mib": peak}


def task_write_floor(spec: dict) -> dict:
    """The write floor of the ingest stage: each table of the dataset the pipeline wrote, read back (not timed,
    market as plain string), written by pyarrow with the options of ``carequal.loaders.write_market_dataset``."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    out = Path(spec["out"])
    shutil.rmtree(out, ignore_errors=True)
    market = ds.partitioning(pa.schema([("market", pa.string())]), flavor="hive")
    tables, total = {}, 0.0
    try:
        for sub in sorted(Path(spec["dataset"]).iterdir()):
            if not sub.is_dir() or not any(sub.glob("market=*")):
                continue
            table = ds.dataset(sub, format="parquet", partitioning=market).to_table()
            t = time.perf_counter()
            ds.write_dataset(
                table, out / sub.name, format="parquet", partitioning=["market"], partitioning_flavor="hive",
                existing_data_behavior="delete_matching", basename_template="part-{i}.parquet", preserve_order=True)
            seconds = time.perf_counter() - t
            total += seconds
            tables[sub.name] = {"seconds": seconds, "rows": table.num_rows,
                                "files": sum(1 for _ in (out / sub.name).rglob("*.parquet")),
                                "pipeline_files": sum(1 for _ in sub.rglob("*.parquet"))}
            del table
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak = _vm_hwm_mib()
    return {"write_seconds": total, "tables": tables, "peak_mib": peak}


def task_warm(spec: dict) -> dict:
    """Import everything once (bytecode compiled, files in the page cache) and read the bytes of the input data
    files (in the page cache for the pipeline and the read floor alike); not measured."""
    import dask.dataframe  # noqa: F401
    import distributed  # noqa: F401

    _warm()
    read = 0
    for path in sorted(Path(spec["data"]).rglob("*")) if spec.get("data") else []:
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 24):
                    read += len(chunk)
    return {"data_bytes_read": read}


TASKS = {"pipeline": task_pipeline, "single": task_single, "cluster": task_cluster, "whole": task_whole,
         "check": task_check, "warm-up": task_warm, "read-floor": task_read_floor, "write-floor": task_write_floor}


def child_main(task: str, spec_json: str, result_path: str) -> None:
    spec = json.loads(spec_json)
    result = TASKS[task](spec)
    Path(result_path).write_text(json.dumps(result, default=str))


# --------------------------------------------------------------------------------------------- parent side


def run_child(task: str, spec: dict, args: argparse.Namespace, *, own_load: float) -> dict:
    """This script with ``--child task`` in a fresh interpreter; its result merged with the measurement."""
    logs = args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result_path = logs / f"{task}.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--spec", json.dumps(spec),
           "--result", str(result_path)]
    res = measure(task, cmd, logs, timeout=args.timeout, own_load=own_load)
    if not result_path.exists():
        raise ChildFailed(f"{task}: no result file {result_path}; log {logs / (task + '.log')}")
    return {**_strip(res), **json.loads(result_path.read_text())}


def _strip(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "output"}


def carequal_command() -> list[str]:
    """The ``carequal`` console script of this interpreter's environment (``-m carequal.cli`` without one)."""
    script = Path(sys.executable).parent / "carequal"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "carequal.cli"]


def last_year(data: Path) -> int:
    """The calendar year of the last discharge in the generated stays."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    path = data / "stays.parquet"
    stays = ds.dataset(path if path.exists() else data / "stays", format="parquet")
    return int(pc.max(stays.to_table(columns=["discharge_date"])["discharge_date"]).as_py().year)


def dataset(args: argparse.Namespace) -> dict:
    """The generated Parquet folder: reused when its marker records the same size and seed, else generated."""
    out = args.workdir / f"data-{args.stays}-seed{args.seed}"
    marker = args.workdir / f"data-{args.stays}-seed{args.seed}.json"
    if marker.exists() and out.is_dir():
        made = json.loads(marker.read_text())
        if made.get("n_stays") == args.stays and made.get("seed") == args.seed:
            print(f"  reusing {out}", file=sys.stderr)
            return {**made, "dir": str(out), "reused": True}
    marker.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*carequal_command(), "synth", "--stays", str(args.stays), "--format", "parquet", "--seed",
           str(args.seed), "--out", str(out)]
    res = measure("generate", cmd, args.workdir / "logs", timeout=args.timeout, own_load=1.0)
    rows = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\s+(\w+)\s+([\d,]+) rows$", res["output"],
                                                                  flags=re.MULTILINE)}
    made = {"n_stays": args.stays, "seed": args.seed, "rows": rows, "year": last_year(out),
            "command": " ".join(["carequal", *cmd[len(carequal_command()):]]), "generation": _strip(res)}
    marker.write_text(json.dumps(made, indent=1))
    return {**made, "dir": str(out), "reused": False}


def source_digest() -> dict[str, str]:
    """A digest of each module of the carequal measured, to tell whether it changed during the run."""
    import carequal

    root = Path(carequal.__file__).resolve().parent
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest()[:12] for p in sorted(root.glob("*.py"))}


def machine_info() -> dict[str, str]:
    info = report.machine_info(PACKAGES)
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE", "not set")
    return info


# ------------------------------------------------------------------------------------------------- analysis


def gib_na(mib: float) -> str:
    return "–" if math.isnan(mib) else gib(mib)


def f1(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _pass(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def cluster_memory(c: dict) -> dict[str, float]:
    workers, nannies = sum(c["workers_mib"]), sum(c["nannies_mib"])
    return {"workers": workers, "nannies": nannies, "client": c["peak_mib"], "workers_client": workers + c["peak_mib"],
            "all": workers + nannies + c["peak_mib"]}


def verdicts(r: dict) -> dict[str, tuple[bool, str]]:
    p = r["pipeline"]
    peak_bytes = p["peak_mib"] * 2**20
    out = {
        f"pipeline ≤ {TIME_TARGET_S:.0f} s (child wall time, imports included)": (
            p["wall_seconds"] <= TIME_TARGET_S,
            f"{p['wall_seconds']:.1f} s (stages {p['total_seconds']:.1f} s)"),
        f"pipeline peak ≤ {MEMORY_TARGET_BYTES / 2**30:.0f} GiB ({MEMORY_TARGET_BYTES:,} bytes)": (
            peak_bytes <= MEMORY_TARGET_BYTES, f"{gib(p['peak_mib'])} GiB = {peak_bytes:,.0f} bytes"),
    }
    if "check" in r:  # not in a --pipeline-only run
        check = r["check"]["cluster_vs_single"]
        out["LocalCluster equals one process, row for row"] = (
            check["differing_cells"] == 0 and check["stays_in_one_only"] == 0 and check["same_order"],
            f"{check['differing_cells']} differing cells, {check['stays_in_one_only']} stays in one only, "
            f"same order: {'yes' if check['same_order'] else 'no'}")
    return out


MEASUREMENTS_ABOUT = (
    "Each a child process, in this order. Other cores: CPU time the rest of the machine used while the child ran,"
    " in cores (machine CPU from /proc/stat less the child's own and its waited-for descendants'). Load: 1-minute"
    " load average before / highest (every 5 s) / after; own: the load the measurement makes by itself.")
"""How the measurements table is read (its paragraph)."""


def render(info: dict, args: argparse.Namespace, r: dict) -> str:
    data, p = r["data"], r["pipeline"]
    measures = "check" in r  # absent from a --pipeline-only run
    command = ("python benchmarks/bench_scale.py" + (" --quick" if args.quick else f" --stays {args.stays}")
               + (" --pipeline-only" if args.pipeline_only else ""))
    title = ("# Scale benchmark: the single-machine pipeline, each stage against its peer, and the measures on one "
             "process against Dask" if measures else
             "# Scale benchmark: the single-machine pipeline, and each stage against its peer")
    lines = [title, "",
             f"Command: `{command}` (seed {args.seed}). Produced by the script; do not edit by hand."
             + (" **Small smoke run: not the reference numbers.**" if args.small else ""), ""]
    if not measures:
        lines += ["A `--pipeline-only` run: the measures on one process against Dask are not measured here (see "
                  f"`{RESULTS.relative_to(REPO)}` for the last full run).", ""]
    lines += ["## Machine", ""]
    lines += markdown_table(["what", "value"], [[k, v] for k, v in info.items()]
                            + [["BLAS (pipeline child, threadpoolctl)", p["blas"]]])
    flagged = [m for m in r["measurements"] if m["contended"]]
    busy_start = r["initial_other_cores"] > OTHER_CORES_LIMIT
    lines += [f"Before the first measurement other processes kept {r['initial_other_cores']:.2f} cores busy over "
              f"5 s (1-minute load average {r['initial_load']:.2f}). Per measurement see the table at the end.", ""]
    if flagged or busy_start:
        lines += ["**Warning: the machine was not quiet; times may be inflated and ratios skewed.** "
                  + (f"{r['initial_other_cores']:.2f} cores busy with other work before the first measurement. "
                     if busy_start else "")
                  + ("Contended: " + ", ".join(f"{m['label']} ({m['other_cores']:.2f} cores, load max "
                                               f"{m['load_max']:.2f})" for m in flagged) + "." if flagged else ""),
                  ""]
    else:
        lines += ["The machine was otherwise idle throughout (no measurement flagged).", ""]
    if r.get("changed_sources"):
        lines += [f"**Warning: {', '.join(r['changed_sources'])} changed while this ran; measurements may mix two "
                  "versions of the code. Run again.**", ""]

    gen = data["generation"]
    how = (f"reused from `{data['dir']}` (generated earlier in {gen['wall_seconds']:.1f} s)" if data["reused"]
           else f"generated into `{data['dir']}` in {gen['wall_seconds']:.1f} s")
    lines += ["## Data", "", f"`{data['command']}`, {how}; not part of any time below. Reporting period: "
              f"{r['period'][0]} to {r['period'][1]} (the last calendar year of the data).", ""]
    lines += markdown_table(["size", "value"], [
        ["stays", f"{data['rows'].get('stays', 0):,}"], ["patients", f"{data['rows'].get('patients', 0):,}"],
        ["index stays (all conditions, all years)", f"{p['index_stays']:,}"],
        ["facilities", f"{p['facilities']:,}"], ["markets", f"{p['markets']:,}"],
        ["reference rows (measure x index stay)", f"{p['reference_rows']:,}"],
        ["reference rows in the period", f"{p['in_period_rows']:,}"],
        ["scorecard rows (facility x measure)", f"{p['scorecard_rows']:,}"]])
    lines += markdown_table(["measure", "reference rows", "in period (model fit)", "facilities judged"],
                            [[m, f"{v['rows']:,}", f"{v['in_period']:,}", f"{v['facilities']:,}"]
                             for m, v in p["measures"].items()])

    st = p["stages"]
    lines += ["## 1. The single-machine pipeline, end to end before the notebooks", "",
              "One fresh child: `prepare(data, work, period_start, period_end)` from the generated Parquet folder "
              "into a fresh work folder, then `read_reference` and `compare.scorecard` for every facility x measure "
              "over the reference rows of the period. Seconds per stage (the first four as `prepare` reports "
              "them); *RSS max* is the largest resident memory sampled during the stage (every "
              f"{SAMPLE_EVERY_S} s, approximate; – for a stage too short to be sampled); *peak so far* is the "
              "process's VmHWM at the stage's end (– inside `prepare`, which is one call).", ""]
    what = {"fingerprint": "SHA-256 of every input file (the reuse check)",
            "validate": "read the Parquet tables + validate (`load_tables`, quarantine mode)",
            "ingest": "write the market-partitioned dataset (+ quarantined rows)",
            "reference": "index cohort + every measure + one hierarchical model per measure + score + write",
            "read_reference": "read the reference rows back (`read_reference`)",
            "scorecard": f"`scorecard` over {p['in_period_rows']:,} rows in the period "
                         f"({p['scorecard_warnings']} warnings)",
            "total": "prepare + comparison tables"}
    lines += markdown_table(["stage", "s", "RSS max GiB", "peak so far GiB", "what"],
                            [[f"**{k}**" if k == "total" else k, f1(st[k]["seconds"]), gib_na(st[k]["rss_max_mib"]),
                              gib_na(st[k]["hwm_mib"]), w] for k, w in what.items() if k in st])
    lines += [f"Child wall time {p['wall_seconds']:.1f} s (interpreter start and imports included, "
              f"{p['wall_seconds'] - p['total_seconds']:.1f} s outside the stages); peak resident memory (VmHWM) "
              f"{gib(p['peak_mib'])} GiB ({p['peak_mib'] * 2**20 / 1e9:.2f} GB; `ru_maxrss` {gib(p['maxrss_mib'])} "
              "GiB).", ""]
    lines += markdown_table(["model", "stays fitted", "events", "facilities", "converged"],
                            [[m["measure"], f"{m['n']:,}", f"{m['events']:,}", f"{m['facilities']:,}",
                              str(m["converged"])] for m in p["models"]])

    lines += render_peers(r)
    if measures:
        lines += render_measures(r)

    lines += ["## Targets", ""]
    lines += markdown_table(["target", "value", "verdict"], [[k, v, _pass(ok)] for k, (ok, v) in verdicts(r).items()])

    lines += measurements_table(r["measurements"], MEASUREMENTS_ABOUT)
    lines += [f"Total benchmark wall time: {r['total_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def render_peers(r: dict) -> list[str]:
    """Section 2: each stage of ``prepare`` against its peer (the read and write floors), same data, same run."""
    ps, rf, wf = r["pipeline"]["prepare_seconds"], r["read_floor"], r["write_floor"]

    def ratio(ours: float | None, peer: float | None) -> str:
        return f"{ours / peer:.2f}" if ours is not None and peer else "–"

    def f2(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    rows = [["validate (read + validate)", f2(ps.get("validate")),
             "read floor: pyarrow reads the input Parquet tables into pandas", f2(rf["read_seconds"]),
             ratio(ps.get("validate"), rf["read_seconds"])],
            ["ingest (write the market dataset)", f2(ps.get("ingest")),
             "write floor: pyarrow writes the same rows, partitioned by market", f2(wf["write_seconds"]),
             ratio(ps.get("ingest"), wf["write_seconds"])],
            ["reference", f2(ps.get("reference")), "none (carequal's own cohort, measures and models)", "–", "–"]]
    lines = ["## 2. Each stage against its peer", "",
             "Each peer in its own fresh child after the pipeline, on the same data; seconds of the calls only "
             "(imports and untimed reads outside). *Read floor*: each input Parquet table of the data folder read "
             "into pandas with the calls `carequal.loaders._read_parquet` makes (`ds.dataset(path, "
             'format="parquet", partitioning="hive").to_table().to_pandas(date_as_object=False)`), the tables '
             "timed in total: what validate costs before its first rule. The rules themselves are compared with "
             "DuckDB in `benchmarks/results/foundation.md`. *Write floor*: each table of the dataset the pipeline "
             "wrote, read back (not timed, market as plain string), then written by `ds.write_dataset` with the "
             "options of `carequal.loaders.write_market_dataset` (hive partitions by market, `preserve_order=True`; "
             "facilities by their own market): pyarrow writing the same rows is the floor of any ingest, which "
             "also converts from pandas, looks up each row's market and writes the quarantined rows and the "
             "validation summary. The reference stage has no peer: the index cohort, the measures and the "
             "hierarchical models are carequal's own.", ""]
    lines += markdown_table(["stage", "carequal s", "peer", "peer s", "ratio carequal / peer"], rows)
    names = list(dict.fromkeys([*rf["tables"], *wf["tables"]]))
    rows = []
    for t in names:
        read, wrote = rf["tables"].get(t), wf["tables"].get(t)
        rows.append([t, f"{read['rows']:,}" if read else "–", f2(read["seconds"]) if read else "–",
                     f"{wrote['rows']:,}" if wrote else "–",
                     f"{wrote['files']:,} ({wrote['pipeline_files']:,})" if wrote else "–",
                     f2(wrote["seconds"]) if wrote else "–"])
    lines += markdown_table(["table", "rows read", "read floor s", "rows written", "files written (pipeline's)",
                             "write floor s"], rows)
    lines += ["Rows read: the input tables as given (before validation); rows written: the rows the pipeline "
              "accepted. Peak resident memory (VmHWM), each floor holding one table at a time: read floor "
              f"{gib(rf['peak_mib'])} GiB, write floor {gib(wf['peak_mib'])} GiB.", ""]
    return lines


def render_measures(r: dict) -> list[str]:
    """Section 3: the measures on one process against a Dask LocalCluster, and their agreement."""
    a, b, c = r["single"], r["cluster"], r["whole"]
    sa, sb, sc = a["stages"], b["stages"], c["stages"]
    mem = cluster_memory(b)
    lines = ["## 3. Measures: one process against a Dask LocalCluster", "",
              "`measured_index_stays` of every index stay, on the dataset the pipeline wrote; each approach in "
              "its own fresh child. Warm-up: imports and carequal's per-process code tables (on the cluster: in "
              "each worker, through `client.run`). LocalCluster: "
              f"`LocalCluster(n_workers={CLUSTER['n_workers']}, threads_per_worker={CLUSTER['threads_per_worker']}, "
              f"processes={CLUSTER['processes']})`. Peak memory: the child's VmHWM; for the cluster, the workers' "
              "VmHWM added up plus the client process (scheduler included).", ""]
    lines += markdown_table(["approach", "start-up s", "warm-up s", "load s", "compute s", "total s", "peak GiB",
                             "rows"], [
        ["(a) `measured_index_stays_partitioned(dataset)`, one process", "", f1(sa["warm-up"]["seconds"]), "",
         f1(sa["compute"]["seconds"]), f1(sa["warm-up"]["seconds"] + sa["compute"]["seconds"]),
         gib(a["peak_mib"]), f"{a['rows']:,}"],
        ["(b) the same with a LocalCluster client", f1(sb["start-up"]["seconds"]),
         f1(sb["worker warm-up"]["seconds"]), "", f1(sb["compute"]["seconds"]),
         f1(sb["start-up"]["seconds"] + sb["worker warm-up"]["seconds"] + sb["compute"]["seconds"]),
         f"{gib(mem['workers_client'])} (workers {' + '.join(gib(x) for x in b['workers_mib'])}, client "
         f"{gib(b['peak_mib'])})", f"{b['rows']:,}"],
        ["(c) `measured_index_stays(load_tables(dataset).tables)`, one process", "", f1(sc["warm-up"]["seconds"]),
         f1(sc["load"]["seconds"]), f1(sc["compute"]["seconds"]),
         f1(sc["warm-up"]["seconds"] + sc["load"]["seconds"] + sc["compute"]["seconds"]), gib(c["peak_mib"]),
         f"{c['rows']:,}"],
    ])
    lines += [f"The cluster's nanny processes peaked at {' + '.join(gib(x) for x in b['nannies_mib'])} GiB "
              f"(with them the cluster's total is {gib(mem['all'])} GiB); shutting it down took "
              f"{sb['shutdown']['seconds']:.1f} s (not counted). The client computes the first partition once "
              "more, inside `measured_index_stays_partitioned`, to learn the result's columns (counted in its "
              "compute time).", ""]
    ra = sa["compute"]["seconds"]
    all_a = sa["warm-up"]["seconds"] + ra
    all_b = sb["start-up"]["seconds"] + sb["worker warm-up"]["seconds"] + sb["compute"]["seconds"]
    lines += ["Ratios (same data, same run):", ""]
    lines += markdown_table(["ratio", "value"], [
        ["LocalCluster / one process, computation", f"{sb['compute']['seconds'] / ra:.2f}"],
        ["LocalCluster / one process, start-up + warm-up + computation", f"{all_b / all_a:.2f}"],
        ["LocalCluster / one process, peak memory (workers + client)", f"{mem['workers_client'] / a['peak_mib']:.2f}"],
        ["whole tables (c) / partitioned (a), computation", f"{sc['compute']['seconds'] / ra:.2f}"],
        ["whole tables (c) / partitioned (a), load + computation",
         f"{(sc['load']['seconds'] + sc['compute']['seconds']) / ra:.2f}"],
        ["whole tables (c) / partitioned (a), peak memory", f"{c['peak_mib'] / a['peak_mib']:.2f}"],
    ])
    lines += ["Agreement with (a), stays aligned by `stay_id` (floats equal or both missing; other values as "
              "text):", ""]
    rows = []
    for name, key in (("(b) LocalCluster", "cluster_vs_single"), ("(c) whole tables, sorted by stay_id",
                                                                   "whole_vs_single")):
        d = r["check"][key]
        cols = ", ".join(f"{k} {v}" for k, v in d["by_column"].items()) or "none"
        types = ", ".join(f"{k} {v}" for k, v in d["dtype_differences"].items()) or "none"
        rows.append([name, f"{d['rows'][1]:,}", str(d["stays_in_one_only"]), "yes" if d["same_order"] else "no",
                     f"**{d['differing_cells']}**", cols, types])
    lines += markdown_table(["against (a)", "rows", "stays in one only", "same order", "differing cells",
                             "by column", "dtype differences"], rows)
    return lines


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--stays", type=int, default=None,
                   help=f"stays to generate, about (default {FULL_STAYS:,}; {QUICK_STAYS:,} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_STAYS:,} stays; the report goes to --workdir only")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-bench-scale"), help="scratch folder")
    p.add_argument("--seed", type=int, default=20240601, help="generator seed")
    p.add_argument("--pipeline-only", action="store_true",
                   help="only the pipeline and its stage peers (no measures on one process against Dask); the "
                        f"report goes to {RESULTS_PIPELINE.relative_to(REPO)} (small runs: "
                        "<workdir>/scale_pipeline-<stays>.md)")
    p.add_argument("--results", type=Path, default=None,
                   help=f"markdown file to write (default {RESULTS.relative_to(REPO)} for a full-size run, "
                        f"{RESULTS_PIPELINE.relative_to(REPO)} with --pipeline-only; for a smaller run "
                        "<workdir>/scale-<stays>.md or <workdir>/scale_pipeline-<stays>.md)")
    p.add_argument("--keep", action="store_true", help="keep the work folder and the measured frames in --workdir")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each child process")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    if args.quick and args.stays not in (None, QUICK_STAYS):
        p.error(f"--quick means --stays {QUICK_STAYS}")
    if args.stays is None:
        args.stays = QUICK_STAYS if args.quick else FULL_STAYS
    args.small = args.quick or args.stays < FULL_STAYS
    stem = "scale_pipeline" if args.pipeline_only else "scale"
    if args.results is None:
        args.results = (args.workdir / f"{stem}-{args.stays}.md" if args.small
                        else RESULTS_PIPELINE if args.pipeline_only else RESULTS)
    for reference in (RESULTS, RESULTS_PIPELINE):
        if args.small and args.results.resolve() == reference.resolve():
            p.error(f"a run below {FULL_STAYS:,} stays never writes {reference.relative_to(REPO)}")
    if args.pipeline_only and args.results.resolve() == RESULTS.resolve():
        p.error(f"a --pipeline-only run never writes {RESULTS.relative_to(REPO)} (it would lose the measures)")
    args.workdir = args.workdir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.spec, args.result)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    initial_load, initial_others = idle_check()
    info = machine_info()
    digest = source_digest()
    print(f"carequal scale benchmark, {args.stays:,} stays; scratch {args.workdir}", file=sys.stderr)
    work = args.workdir / f"work-{args.stays}"
    floor_dir = args.workdir / f"write-floor-{args.stays}"
    frames = {k: args.workdir / f"measured-{k}.pkl" for k in ("single", "cluster", "whole")}
    r: dict = {"initial_load": initial_load, "initial_other_cores": initial_others}
    try:
        r["data"] = data = dataset(args)
        year = data["year"]
        r["period"] = [f"{year}-01-01", f"{year}-12-31"]
        r["warm"] = run_child("warm-up", {"data": data["dir"]}, args, own_load=1.0)
        shutil.rmtree(work, ignore_errors=True)  # a fresh work folder: prepare builds everything
        r["pipeline"] = run_child("pipeline", {"data": data["dir"], "work": str(work), "period": r["period"]},
                                  args, own_load=1.0)
        ds_dir = r["pipeline"]["dataset"]
        r["read_floor"] = run_child("read-floor", {"data": data["dir"]}, args, own_load=1.0)
        r["write_floor"] = run_child("write-floor", {"dataset": ds_dir, "out": str(floor_dir)}, args, own_load=1.0)
        if not args.pipeline_only:
            r["single"] = run_child("single", {"dataset": ds_dir, "out": str(frames["single"])}, args,
                                    own_load=1.0)
            r["cluster"] = run_child("cluster", {"dataset": ds_dir, "out": str(frames["cluster"])}, args,
                                     own_load=float(CLUSTER["n_workers"]))
            r["whole"] = run_child("whole", {"dataset": ds_dir, "out": str(frames["whole"])}, args, own_load=1.0)
            r["check"] = run_child("check", {k: str(v) for k, v in frames.items()}, args, own_load=1.0)
    except ChildFailed as exc:
        print(f"\ncarequal scale benchmark stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(floor_dir, ignore_errors=True)  # the write floor's copy (the child removes it too)
        if not args.keep:
            for path in frames.values():
                path.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
    timed = [r[k] for k in ("warm", "pipeline", "read_floor", "write_floor", "single", "cluster", "whole", "check")
             if k in r]
    if not r["data"]["reused"]:
        timed.insert(0, r["data"]["generation"])
    r["measurements"] = [{k: m[k] for k in ("label", "wall_seconds", "child_cpu_seconds", "other_cores",
                                            "load_before", "load_max", "load_after", "own_load", "contended")}
                         for m in timed]
    r["total_seconds"] = time.perf_counter() - start
    r["changed_sources"] = sorted(k for k, v in source_digest().items() if digest.get(k) != v)

    text = render(info, args, r)
    print(text)
    for name, (ok, value) in verdicts(r).items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value}", file=sys.stderr)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    raw = args.workdir / (f"results_pipeline-{args.stays}.json" if args.pipeline_only else f"results-{args.stays}.json")
    raw.write_text(json.dumps({"machine": info, **r}, indent=1, default=str))
    print(f"wrote {args.results} and {raw}", file=sys.stderr)
    if any(m["contended"] for m in r["measurements"]) or initial_others > OTHER_CORES_LIMIT:
        print("warning: some measurements ran beside other work (see the Measurements table); run again on a "
              "quiet machine", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
