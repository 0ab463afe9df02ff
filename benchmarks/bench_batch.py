"""Batch benchmark: ``carequal report`` (one notebook per market) against the same calls made in-process.

Run from the repository root (on a quiet machine: nothing else running)::

    python benchmarks/bench_batch.py [--patients-per-market 2000] [--markets 3 20] [--workers 1 2]
                                     [--kernels reuse fresh] [--workdir /tmp/carequal-bench-batch] [--keep]
    python benchmarks/bench_batch.py --quick     # smoke test: 600 patients per market, report in --workdir only

To measure a clean commit while others edit the work tree, snapshot the package (``carequal report`` runs the
notebook shipped in the carequal it imports, ``carequal/notebooks/market_report.ipynb``)::

    mkdir /tmp/snap && git archive HEAD carequal | tar -x -C /tmp/snap \\
        && git rev-parse --short HEAD > /tmp/snap/SNAPSHOT && PYTHONPATH=/tmp/snap python benchmarks/bench_batch.py

One run measures, prints and writes ``benchmarks/results/batch.md`` (with the machine it ran on; ``--quick``
writes ``<workdir>/batch-quick.md`` instead and never touches ``benchmarks/results/``):

1. **Data.** ``carequal synth --format csv`` writes one dataset per ``--markets`` count (default 3 and 20),
   all with the same ``--patients-per-market`` and seed, in a temporary folder under ``--workdir``.
2. **Batch.** For each dataset, each ``--workers`` count (default 1 and 2) and each ``--kernels`` mode
   (default both: ``reuse``, one kernel per worker for up to 25 markets, carequal's default; ``fresh``, a new
   kernel per market with ``--fresh-kernels``), ``carequal report --force
   --quiet --period 2024`` runs as a child process of this interpreter's environment, each run into fresh
   ``out`` and ``--work`` folders, so every run pays the *prepare* step (ingest + national reference) as a
   first monthly run does. The run's ``manifest.json`` gives ``seconds.prepare.total``, ``seconds.markets``
   (the markets phase: all notebooks executed and rendered), ``seconds.total`` and, per market,
   ``kernel_start`` (papermill start to the first cell: reading the notebook, injecting parameters, starting
   the kernel), ``compute`` (sum of the cells' durations, as papermill records them), ``execute`` (the whole
   ``papermill.execute_notebook`` call), ``render`` (nbconvert to HTML) and ``total``.
3. **Per-market overhead.** Medians over the markets of each run: kernel start, compute, other papermill
   overhead (execute - compute - kernel start: messaging between cells, saving outputs, kernel shutdown),
   render, total, and overhead = total - compute (all of a market's time outside its cells), also as a
   ratio overhead / compute.
4. **Batch wall time.** Prepare, markets phase and total per dataset and workers, wall time per market
   (markets phase / markets) and the speed-up against 1 worker, beside the ideal (markets / ceil(markets /
   workers): a worker runs whole markets).
5. **Peer: the same computations in-process.** ``python -c`` (same interpreter) imports carequal and, for
   each market of the dataset in the batch's order, makes the library calls the notebook makes
   (``carequal/notebooks/market_report.py``): ``prepare`` (reused, as in the notebook), ``load_market_report``, the
   data calls (``headline_kpis``, ``facility_scorecard``, ``funnel_for``, ``trend_chart``,
   ``destination_table``, ``flow_table``, ``population_table``, ``chronic_table``, ``impact_summary``,
   ``validation_table``, ``attrition_table``, ``model_table``, the findings sentences, ``write_kpis``), the
   HTML tables (``presentable`` + ``table_html``) and the same charts drawn with matplotlib's Agg backend and
   saved as PNG (as the notebook's inline backend does). No kernel, no papermill, no nbconvert. It runs on
   the work folder of the dataset's last batch run (inputs already prepared). Its first market is reported
   apart (*cold*: lazy imports and per-process caches are filled then, as in every kernel) from the median
   of the others (*warm*). Ratios compare the batch's 1-worker run with it: per market against the warm
   median and against a cold process (imports + first market), and for all markets (markets phase / the
   peer's whole process, imports included).

How it measures: every measurement is a child process; its wall time is ``time.perf_counter`` around it,
the times inside come from the manifest (or, for the peer, ``time.perf_counter`` around each call group).
Before, during (every 5 s) and after each child the 1-minute load average is read, and the machine's busy
CPU time (``/proc/stat``) less the child's own (``os.wait4`` rusage: the child and every descendant it
waited for: workers, kernels) gives the cores kept busy by *other* processes. A measurement that ran beside
more than 0.25 of a busy core, or whose load average rose more than one above what it runs itself, is
flagged in the report: its times may be inflated. Before the first measurement the machine's busy CPU is
read over 5 s with nothing of this benchmark running (others' cores at the start), and the script imports
the batch's libraries once in a throwaway child (bytecode and file caches warm, not timed).

Nothing here asserts a time: it is a script, not a test. Defaults take about 10 minutes on the reference
machine (2 cores, 24 GB); ``--quick`` about 6.

OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) may be set on this machine; they only matter to BLAS-backed numpy
linear algebra. The reference fit in the prepare step uses some, the market reports (pandas, plotting,
nbconvert) hardly any, so they are left as they are; the machine table records them and the BLAS kernel and
thread count that threadpoolctl reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import report
from report import (  # benchmarks/report.py: shared report helpers and the measured-child runner
    LOAD_MARGIN,
    OTHER_CORES_LIMIT,
    ChildFailed,
    idle_check,
    markdown_table,
    measure,
    measurements_table,
)

RESULTS = Path(__file__).resolve().parent / "results" / "batch.md"
REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
PERIOD = "2024"
PERIOD_DATES = ("2024-01-01", "2024-12-31")
PACKAGES = ("papermill", "nbconvert", "nbclient", "ipykernel", "jupyter_client", "matplotlib", "pandas", "numpy")


# ----------------------------------------------------------------------------------------- the peer (child)


def _peer_market(market: str, spec: dict) -> dict:
    """One market's report computations as plain library calls, timed by group (runs in the peer child)."""
    import io

    import matplotlib.pyplot as plt

    from carequal import plots
    from carequal import presentation as pres
    from carequal import report as rpt
    from carequal.inputs import prepare
    from carequal.national import MEASURES

    t: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        t[name] = now - t0
        t0 = now

    def png(fig) -> None:  # what the inline backend does on plt.show(): the figure as PNG, then closed
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
        plt.close(fig)

    start, end = spec["period"]
    inputs = prepare(spec["data"], spec["work"], period_start=start, period_end=end)
    lap("prepare_reused")
    mr = rpt.load_market_report(inputs.dataset, inputs.reference, market, period_start=start, period_end=end,
                                measures="all", conditions="all", min_cell=spec["min_cell"])
    lap("load")

    # the data: every carequal.report computation of the notebook, in its order
    kpis = rpt.headline_kpis(mr.rows, period=mr.period, previous=mr.previous, measures=mr.measures,
                             min_cell=mr.min_cell)
    card = rpt.facility_scorecard(mr.rows, mr.facilities[mr.facilities["market"] == market], period=mr.period,
                                  measures=mr.measures, min_cell=mr.min_cell)
    rpt.write_kpis(rpt.kpi_record(kpis, card), str(Path(spec["kpi_dir"]) / f"{market}.json"))
    rpt.report_title(mr)
    rpt.headline_findings(kpis, market=market, period=mr.period, previous=mr.previous)
    rpt.partner_findings(card)
    shown_card = rpt.scorecard_display(card)
    funnels = {}
    for name in mr.measures:
        funnel, _left_off, _notes = rpt.funnel_for(mr.rows, card, name, period=mr.period)
        if funnel is not None:
            funnels[name] = (funnel, rpt.shown_for_chart(card, name)[0])
    trends = {}
    for name in mr.measures:
        chart = rpt.trend_chart(mr.rows, name, min_cell=mr.min_cell, end=mr.period[1])
        rpt.trend_findings(chart, MEASURES[name].label, since=mr.period[0])
        if len(chart) >= 3:
            trends[name] = (chart, rpt.trend_chart(mr.rows, name, freq="quarter", by_partner=True,
                                                   min_cell=mr.min_cell, end=mr.period[1]))
    dest = rpt.destination_table(mr.rows, period=mr.period, min_cell=mr.min_cell)
    rpt.destination_findings(dest)
    flows = rpt.flow_table(mr.tables, mr.rows, market=market, period=mr.period, min_cell=mr.min_cell)
    chart_flows, _ = rpt.flow_for_chart(flows)
    pop = rpt.population_table(mr.tables, market=market, period=mr.period, min_cell=mr.min_cell)
    chronic = rpt.chronic_table(mr.tables, market=market, period=mr.period, min_cell=mr.min_cell)
    rpt.impact_finding(rpt.impact_summary(mr.tables, market=market), min_cell=mr.min_cell)
    validation = rpt.validation_table(mr.validation, min_cell=mr.min_cell)
    attrition = rpt.attrition_table(mr.tables, min_cell=mr.min_cell)
    models = rpt.model_table(mr.reference.models)
    rpt.report_notes(card, mr)
    lap("data")

    # the HTML tables, formatted as the notebook formats them
    html = [pres.REPORT_CSS, pres.table_html(pres.presentable(
        kpis, columns={"label": "Measure", "n": None, "events": None, "rate": "Rate", "expected_rate": "Expected rate",
                       "ratio": "O/E", "prev_rate": "Last period", "change": "Change"},
        counts=("n", "events"), percent=("rate", "expected_rate", "prev_rate"), points=("change",), ratio=("ratio",)))]
    for name in mr.measures:
        part = shown_card[shown_card["measure"] == name]
        html.append(pres.table_html(pres.presentable(
            part, columns={"name": "Facility", "setting": "Setting", "partner": "Partner", "n": None,
                           "observed": None, "rate": "Rate", "ratio": "O/E", "interval": "95% CI",
                           "judgement": "Judgement"},
            counts=("n", "observed"), percent=("rate",), ratio=("ratio",))))
    html.append(pres.table_html(pres.presentable(
        dest, columns={"destination": "Next setting", "discharges": None, "share": "Share"},
        counts=("discharges",), percent=("share",))))
    html.append(pres.table_html(pres.presentable(pres.with_interval_text(pop), columns={
        "measure": "Measure", "events": None, "person_years": None, "rate": "Standardised rate per 1,000",
        "interval": "95% CI"}, counts=("events", "person_years"), number=("rate",))))
    html.append(pres.table_html(pres.presentable(
        chronic, columns={"condition": "Condition", "patients": None, "per_1000": "Per 1,000"},
        counts=("patients",), number=("per_1000",))))
    if len(validation):
        html.append(pres.table_html(pres.presentable(
            validation, columns={"table": "Table", "loaded": None, "accepted": None, "quarantined": None},
            counts=("loaded", "accepted", "quarantined"))))
    html.append(pres.table_html(pres.presentable(
        attrition, columns={"description": "Step", "removed": None, "remaining": "Stays remaining"},
        counts=("removed",))))
    html.append(pres.table_html(models))
    lap("html")

    # the charts, drawn as the notebook draws them and saved as PNG
    for name, (funnel, shown) in funnels.items():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5))
        plots.funnel_plot(funnel, label_col="name", partner="is_partner", ax=ax1,
                          title=f"{MEASURES[name].label}: funnel")
        plots.caterpillar_plot(shown, label="name", partner="is_partner", ax=ax2,
                               title=f"{MEASURES[name].label}: O/E with 95% intervals", xlabel="Observed / expected")
        fig.tight_layout()
        png(fig)
    for name, (chart, by_partner) in trends.items():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 4.8))
        plots.spc_plot(chart, ax=ax1, title=f"{MEASURES[name].label}: {chart.attrs['freq']}ly control chart")
        plots.trend_plot(by_partner, hue="partner", ax=ax2,
                         title=f"{MEASURES[name].label}: partners and others, by quarter")
        fig.tight_layout()
        png(fig)
    if len(chart_flows):
        ax = plots.flow_heatmap(chart_flows, source="hospital", target="pac_facility", partner="pac_is_partner",
                                title="Discharges from each hospital to each post-acute provider")
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
        png(ax.figure)
    fig, axes = plt.subplots(1, len(mr.measures), figsize=(5.5 * len(mr.measures), 4.8), squeeze=False)
    for ax, name in zip(axes[0], mr.measures, strict=True):
        calib = mr.reference.calibration[mr.reference.calibration["measure"] == name]
        plots.calibration_plot(calib, ax=ax, title=f"{MEASURES[name].label}: calibration")
    fig.tight_layout()
    png(fig)
    lap("charts")
    t["total"] = sum(t.values())
    t["reused"] = float(inputs.reused)
    return t


def peer_main(spec_json: str) -> None:
    """The peer child: imports (timed), then every market in turn; writes the timings as JSON."""
    started = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carequal import plots
    from carequal import report as rpt  # noqa: F401 - imported here so the import time is counted apart
    from carequal.inputs import prepare  # noqa: F401

    plots.set_theme()
    plt.rcParams["figure.dpi"] = 96
    spec = json.loads(spec_json)
    imports = time.perf_counter() - started
    markets = {}
    for market in spec["markets"]:
        t0 = time.perf_counter()
        try:
            markets[market] = _peer_market(market, spec)
        except Exception as exc:  # noqa: BLE001 - as in the batch, one failing market does not stop the others
            first = (str(exc).strip().splitlines() or [""])[0]
            markets[market] = {"error": f"{type(exc).__name__}: {first}"[:300], "total": time.perf_counter() - t0}
    result = {"imports": imports, "markets": markets, "seconds": time.perf_counter() - started}
    Path(spec["result"]).write_text(json.dumps(result))


PEER_CODE = ("import sys; sys.path.insert(0, {bench!r}); import bench_batch; bench_batch.peer_main(sys.argv[1])")
"""What the peer child runs (``python -c``), with this folder on the path; its only argument is the spec."""


# --------------------------------------------------------------------------------------------- parent side


def carequal_command() -> list[str]:
    """The ``carequal`` console script of this interpreter's environment (``-m carequal.cli`` without one)."""
    script = Path(sys.executable).parent / "carequal"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "carequal.cli"]


def synth(n_markets: int, args: argparse.Namespace, folder: Path, logs: Path) -> dict:
    data = folder / f"data-{n_markets}m"
    res = measure(f"synth-{n_markets}m", [*carequal_command(), "synth", "--out", str(data), "--markets",
                                          str(n_markets), "--patients-per-market", str(args.patients_per_market),
                                          "--seed", str(args.seed), "--format", "csv"],
                  logs, timeout=args.timeout, own_load=1.0)
    rows = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\s+(\w+)\s+([\d,]+) rows$", res["output"],
                                                                  flags=re.MULTILINE)}
    return {**_strip(res), "dir": str(data), "rows": rows}


def run_report(n_markets: int, workers: int, data: Path, folder: Path, args: argparse.Namespace,
               logs: Path, kernels: str = "reuse") -> dict:
    run = folder / f"run-{n_markets}m-w{workers}-{kernels}"
    out, work = run / "out", run / "work"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [*carequal_command(), "report", "--data", str(data), "--out", str(out), "--work", str(work),
           "--workers", str(workers), "--force", "--quiet", "--period", PERIOD,
           *(["--fresh-kernels"] if kernels == "fresh" else [])]
    # exit 1: some market failed (its row says so); the run is still measured and the failure reported
    res = measure(f"report-{n_markets}m-w{workers}-{kernels}", cmd, logs, timeout=args.timeout,
                  own_load=float(workers), ok_codes=(0, 1))
    manifest = json.loads((out / "manifest.json").read_text())
    markets = {m: {"status": r.get("status"), "error": r.get("error"), "seconds": r.get("seconds", {})}
               for m, r in manifest["markets"].items()}
    return {**_strip(res), "n_markets": n_markets, "workers": workers, "kernels": kernels, "work": str(work),
            "order": manifest["parameters"]["markets"], "seconds": manifest["seconds"], "markets": markets}


def run_peer(n_markets: int, report_run: dict, data: Path, folder: Path, args: argparse.Namespace,
             logs: Path) -> dict:
    result_path = folder / f"peer-{n_markets}m.json"
    kpi_dir = folder / f"peer-{n_markets}m-kpis"
    kpi_dir.mkdir(parents=True, exist_ok=True)
    spec = {"data": str(data), "work": report_run["work"], "period": list(PERIOD_DATES), "min_cell": 11,
            "markets": report_run["order"], "kpi_dir": str(kpi_dir), "result": str(result_path)}
    cmd = [sys.executable, "-c", PEER_CODE.format(bench=str(BENCH_DIR)), json.dumps(spec)]
    res = measure(f"peer-{n_markets}m", cmd, logs, timeout=args.timeout, own_load=1.0)
    return {**_strip(res), **json.loads(result_path.read_text())}


def warm_up(args: argparse.Namespace, logs: Path) -> None:
    """Import what the batch and the peer import, once, untimed: bytecode compiled, files in the page cache."""
    code = ("import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot, papermill, nbconvert, nbformat, "
            "ipykernel, jupyter_client, carequal.batch, carequal.report, carequal.plots, carequal.national")
    measure("warm-up", [sys.executable, "-c", code], logs, timeout=args.timeout, own_load=1.0)


def _strip(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "output"}


def source_digest() -> dict[str, str]:
    """A digest of each module of the carequal measured (the work tree's or a snapshot on PYTHONPATH) and of
    its report notebook, to tell whether they changed during the run."""
    import carequal

    root = Path(carequal.__file__).resolve().parent
    files = [*sorted(root.glob("*.py")), root / "notebooks" / "market_report.ipynb"]
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest()[:12] for p in files if p.is_file()}


def blas_info() -> str:
    try:
        import numpy  # noqa: F401 - threadpoolctl only lists libraries already loaded
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    found = [f"{i.get('internal_api')} {i.get('architecture') or ''} ({i.get('num_threads')} threads)"
             for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(found) or "none loaded"


def machine_info() -> dict[str, str]:
    info = report.machine_info(PACKAGES)
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE", "not set")
    info["BLAS (numpy, threadpoolctl)"] = blas_info()
    return info


# ------------------------------------------------------------------------------------------------- analysis


def _median(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def overhead_rows(run: dict) -> dict[str, float]:
    """Medians over a run's markets (successful ones) of each part of a market's time."""
    parts: dict[str, list[float]] = {k: [] for k in ("kernel_start", "compute", "other", "render", "total",
                                                     "overhead", "ratio")}
    for record in run["markets"].values():
        s = record["seconds"]
        if record["status"] != "ok" or "compute" not in s:
            continue
        other = s["execute"] - s["compute"] - s["kernel_start"]
        overhead = s["total"] - s["compute"]
        for key, value in (("kernel_start", s["kernel_start"]), ("compute", s["compute"]), ("other", other),
                           ("render", s["render"]), ("total", s["total"]), ("overhead", overhead),
                           ("ratio", overhead / s["compute"] if s["compute"] else float("nan"))):
            parts[key].append(value)
    return {k: _median(v) for k, v in parts.items()}


PEER_KEYS = ("prepare_reused", "load", "data", "html", "charts", "total")


def peer_medians(peer: dict) -> dict[str, float]:
    """Medians over the markets the peer completed after its first (warm: the first fills per-process caches);
    over all of them when there is only one."""
    done = [m for m in peer["markets"].values() if "error" not in m]
    warm = done[1:] if len(peer["markets"]) > 1 and "error" not in next(iter(peer["markets"].values())) else done
    return {k: _median([m[k] for m in warm or done]) for k in PEER_KEYS}


def peer_first(peer: dict) -> dict[str, float]:
    """The peer's first market (cold), or NaN everywhere when it failed."""
    first = next(iter(peer["markets"].values()), {"error": "none"})
    return {k: (float("nan") if "error" in first else first[k]) for k in PEER_KEYS}


def failures(r: dict) -> list[list[str]]:
    """Markets that failed in a batch run or in the peer: (where, market, error)."""
    rows = [[f"report {run['n_markets']} markets, {run['workers']} worker(s)", m, rec.get("error") or "failed"]
            for run in r["runs"] for m, rec in run["markets"].items() if rec["status"] != "ok"]
    rows += [[f"peer {n} markets", m, rec["error"]] for n, peer in r["peers"].items()
             for m, rec in peer["markets"].items() if "error" in rec]
    return rows


def f1(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def f2(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not (math.isnan(a) or math.isnan(b)) else "n/a"


MEASUREMENTS_ABOUT = (
    "Each a child process, in this order. Other cores: CPU time the rest of the machine used while the child ran,"
    " in cores. Load: 1-minute load average before / highest (every 5 s) / after; the 'before' reading still "
    "carries the tail of the previous measurement. Own: the load the measurement makes by itself (its worker "
    "processes).")
"""How the measurements table is read (its paragraph)."""


def render(info: dict, args: argparse.Namespace, r: dict) -> str:
    command = ("python benchmarks/bench_batch.py" + (" --quick" if args.quick else "")
               + f" --patients-per-market {args.patients_per_market} --markets {' '.join(map(str, args.markets))}"
               f" --workers {' '.join(map(str, args.workers))} --kernels {' '.join(args.kernels)}")
    lines = ["# Batch benchmark: one notebook per market against the same calls in-process", "",
             f"Command: `{command}` (seed {args.seed}, period {PERIOD}). Produced by the script; do not edit by "
             "hand." + (" **Quick smoke run: small data, not the reference numbers.**" if args.quick else ""), "",
             "## Machine", ""]
    lines += markdown_table(["what", "value"], [[k, v] for k, v in info.items()])
    measurements = r["measurements"]
    flagged = [m for m in measurements if m["contended"]]
    busy_start = r["initial_other_cores"] > OTHER_CORES_LIMIT
    lines += [f"Before the first measurement, with nothing of this benchmark running, other processes kept "
              f"{r['initial_other_cores']:.2f} cores busy over 5 s (1-minute load average {r['initial_load']:.2f}, "
              "which may still carry earlier work). Per measurement (table at the end): the cores other processes "
              "kept busy (machine CPU time from /proc/stat less the child's own and its descendants'), and the "
              "load average before, highest (every 5 s) and after.", ""]
    if flagged or busy_start:
        lines += ["**Warning: the machine was not quiet; times may be inflated and ratios skewed.** "
                  + (f"{r['initial_other_cores']:.2f} cores busy with other work before the first measurement. "
                     if busy_start else "")
                  + (f"Contended measurements (> {OTHER_CORES_LIMIT} core used by others, or load more than "
                     f"{LOAD_MARGIN:.0f} above the measurement's own): "
                     + ", ".join(f"{m['label']} ({m['other_cores']:.2f} cores, load max {m['load_max']:.2f})"
                                 for m in flagged) + "." if flagged else ""), ""]
    else:
        lines += ["The machine was otherwise idle throughout (no measurement flagged).", ""]
    if r.get("changed_sources"):
        lines += [f"**Warning: {', '.join(r['changed_sources'])} changed while this ran; measurements may mix two "
                  "versions of the code. Run again.**", ""]
    failed = failures(r)
    if failed:
        lines += ["**Warning: some markets failed.** They are left out of every median below (the batch's and "
                  "the peer's); the markets-phase and process times still include the work they did before "
                  "failing.", ""]
        lines += markdown_table(["where", "market", "error"], [[a, b, c.replace("|", "\\|")] for a, b, c in failed])

    lines += ["## Data", "",
              f"`carequal synth --format csv --patients-per-market {args.patients_per_market} --seed {args.seed}`; "
              "the report runs use `--period 2024` (all measures and conditions, min cell 11).", ""]
    tables = sorted({t for d in r["data"].values() for t in d["rows"]})
    lines += markdown_table(["markets", "synth s", *tables],
                            [[n, f1(d["wall_seconds"]), *[f"{d['rows'].get(t, 0):,}" for t in tables]]
                             for n, d in r["data"].items()])

    runs = r["runs"]
    lines += ["## 1. Per-market time: overhead against compute", "",
              "Medians over the markets of each run, seconds, from the run's manifest. *Kernel start*: papermill "
              "start to the first cell (read notebook, inject parameters, start the kernel). *Compute*: the cells' "
              "durations added up; it includes the setup cell's imports and the notebook's `prepare` call (inputs "
              "reused), which every kernel repeats. *Other papermill*: execute - compute - kernel start. *Render*: "
              "nbconvert to HTML. *Overhead*: total - compute. The ratio is the median of each market's overhead / "
              "compute.", ""]
    rows = []
    for run in runs:
        o = overhead_rows(run)
        failed = sum(1 for m in run["markets"].values() if m["status"] != "ok")
        rows.append([run["n_markets"], run["workers"], run.get("kernels", "fresh"), f2(o["kernel_start"]),
                     f2(o["compute"]), f2(o["other"]), f2(o["render"]), f2(o["total"]), f2(o["overhead"]),
                     f2(o["ratio"]), f"{failed} failed" if failed else "all ok"])
    lines += markdown_table(["markets", "workers", "kernels", "kernel start", "compute", "other papermill",
                             "render", "market total", "overhead", "overhead / compute", "markets"], rows)
    lines += ["With reused kernels, *kernel start* is the namespace reset before each market (and, for a "
              "worker's first market, the kernel's start), and *other papermill* is the same glue done by "
              "nbclient.", ""]

    lines += ["## 2. Batch wall time", "",
              "Seconds from each run's manifest: *prepare* (`seconds.prepare.total`: ingest + national reference, "
              "paid by every run here because each has a fresh work folder), *markets phase* (`seconds.markets`), "
              "*total* (`seconds.total`); *command* is the child's wall time (interpreter start and imports "
              "included). Per market = markets phase / markets. Speed-up against the 1-worker run of the same "
              "data; ideal = markets / ceil(markets / workers).", ""]
    rows = []
    for run in runs:
        s = run["seconds"]
        base = next((x for x in runs if x["n_markets"] == run["n_markets"] and x["workers"] == min(args.workers)
                     and x.get("kernels") == run.get("kernels")), run)
        ideal = run["n_markets"] / math.ceil(run["n_markets"] / run["workers"])
        rows.append([run["n_markets"], run["workers"], run.get("kernels", "fresh"), f1(s["prepare"]["total"]),
                     f1(s["markets"]), f1(s["total"]),
                     f1(run["wall_seconds"]), f2(s["markets"] / run["n_markets"]),
                     ratio(base["seconds"]["markets"], s["markets"]), ratio(base["seconds"]["total"], s["total"]),
                     f"{ideal:.2f}x"])
    lines += markdown_table(["markets", "workers", "kernels", "prepare s", "markets phase s", "total s",
                             "command s", "per market s",
                             f"speed-up markets phase ({min(args.workers)} / n workers)", "speed-up total",
                             "ideal"], rows)
    pairs = []
    for run in runs:
        if run.get("kernels") != "reuse":
            continue
        fresh = next((x for x in runs if x["n_markets"] == run["n_markets"] and x["workers"] == run["workers"]
                      and x.get("kernels") == "fresh"), None)
        if fresh is not None:
            pairs.append([run["n_markets"], run["workers"], f1(fresh["seconds"]["markets"]),
                          f1(run["seconds"]["markets"]), ratio(fresh["seconds"]["markets"], run["seconds"]["markets"]),
                          f2(overhead_rows(fresh)["total"]), f2(overhead_rows(run)["total"])])
    if pairs:
        lines += ["Kernel reuse, same data and workers in the same run: markets phase with a fresh kernel per market "
                  "(`--fresh-kernels`, papermill) against one kernel per worker reused for up to 25 markets (the "
                  "default).", ""]
        lines += markdown_table(["markets", "workers", "fresh kernels s", "reused kernels s",
                                 "fresh / reused", "median market s (fresh)", "median market s (reused)"], pairs)
    prep = [[run["n_markets"], run["workers"], run.get("kernels", "fresh"),
             ", ".join(f"{k} {v:.1f}" for k, v in run["seconds"]["prepare"].items() if isinstance(v, float)
                       and k != "total")] for run in runs]
    lines += ["Prepare step by part (s):", ""]
    lines += markdown_table(["markets", "workers", "kernels", "parts"], prep)

    lines += ["## 3. Peer: the same computations in-process, no notebook", "",
              "One `python -c` child per dataset imports carequal and matplotlib (Agg) once, then for each market "
              "makes the library calls the notebook makes: `prepare` (reused, as in the notebook), "
              "`load_market_report`, the data calls (`headline_kpis`, `facility_scorecard`, `funnel_for`, "
              "`trend_chart`, `destination_table`, `flow_table`, `population_table`, `chronic_table`, "
              "`impact_summary`, `validation_table`, `attrition_table`, `model_table`, findings, `write_kpis`), "
              "the HTML tables (`presentable` + `table_html`) and the same charts saved as PNG. Seconds. *Cold*: "
              "the process's first market (lazy imports and per-process caches filled, as in every kernel); "
              "*warm*: median of the other markets, by part; *process*: the child's whole wall time (interpreter "
              "start, imports, all markets).", ""]
    peers = r["peers"]
    rows = []
    for n, peer in peers.items():
        p, c = peer_medians(peer), peer_first(peer)
        rows.append([n, f2(peer["imports"]), f2(c["total"]), f2(p["prepare_reused"]), f2(p["load"]), f2(p["data"]),
                     f2(p["html"]), f2(p["charts"]), f2(p["total"]), f1(peer["wall_seconds"])])
    lines += markdown_table(["markets", "imports (once)", "cold market", "warm: prepare (reused)", "load",
                             "data calls", "HTML tables", "charts", "warm market total", "process s"], rows)
    lines += [f"Ratios, batch / peer, on the same data in the same run (the batch's 1-worker run with "
              f"{args.kernels[0]} kernels, medians over its markets; above 1 means the notebook path is slower):", ""]
    rows = []
    for n, peer in peers.items():
        run = next((x for x in runs if x["n_markets"] == n and x["workers"] == 1
                    and x.get("kernels", "reuse") == args.kernels[0]), None)
        if run is None:
            continue
        o, p, c = overhead_rows(run), peer_medians(peer), peer_first(peer)
        cold = peer["imports"] + c["total"]
        rows += [
            [n, "market total (kernel + cells + render) / peer warm market", f2(o["total"]), f2(p["total"]),
             ratio(o["total"], p["total"])],
            [n, "market total / peer cold process (imports + first market)", f2(o["total"]), f2(cold),
             ratio(o["total"], cold)],
            [n, "cells only (compute) / peer warm market", f2(o["compute"]), f2(p["total"]),
             ratio(o["compute"], p["total"])],
            [n, "cells only (compute) / peer cold process (imports + first market)", f2(o["compute"]), f2(cold),
             ratio(o["compute"], cold)],
            [n, "markets phase / peer process (all markets, imports included)", f1(run["seconds"]["markets"]),
             f1(peer["wall_seconds"]), ratio(run["seconds"]["markets"], peer["wall_seconds"])],
        ]
    lines += markdown_table(["markets", "ratio", "batch s", "peer s", "batch / peer"], rows)
    lines += ["Reading the ratios: every kernel is a cold process (its setup cell imports carequal, pandas and "
              "matplotlib; its first calls fill the caches), so *compute / cold process* near 1 means the cells cost "
              "what a fresh Python process doing the same market costs, and *compute / warm market* is the price "
              "of a fresh process per market. *Market total / compute* adds the kernel start, papermill and "
              "nbconvert. The *markets phase / process* ratio is the whole difference between the batch (1 worker) "
              "and one plain script doing every market in turn.", ""]

    lines += measurements_table(measurements, MEASUREMENTS_ABOUT)
    lines += [f"Total benchmark wall time: {r['total_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--patients-per-market", type=int, default=None,
                   help="patients per market in every dataset (default 2000; 600 with --quick)")
    p.add_argument("--markets", type=int, nargs="+", default=[3, 20], help="market counts, one dataset each")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, one run each")
    p.add_argument("--kernels", nargs="+", choices=("reuse", "fresh"), default=["reuse", "fresh"],
                   help="kernel modes, one run each: one kernel per worker for many markets (the default of "
                        "carequal report) and/or a fresh kernel per market (--fresh-kernels)")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 600 patients per market; the report goes to <workdir>/batch-quick.md only")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-bench-batch"), help="scratch folder")
    p.add_argument("--results", type=Path, default=None,
                   help=f"markdown file to write (default {RESULTS.relative_to(REPO)}; with --quick "
                        "<workdir>/batch-quick.md)")
    p.add_argument("--keep", action="store_true", help="keep the generated data and report folders in --workdir")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed to each child process")
    args = p.parse_args(argv)
    if args.patients_per_market is None:
        args.patients_per_market = 600 if args.quick else 2000
    if args.results is None:
        args.results = args.workdir / "batch-quick.md" if args.quick else RESULTS
    if args.quick and args.results.resolve() == RESULTS.resolve():
        p.error(f"--quick never writes {RESULTS.relative_to(REPO)}: its numbers are a smoke test")
    if 1 not in args.workers:
        p.error("--workers must include 1 (the speed-ups and the peer ratios are against it)")
    args.markets, args.workers = sorted(set(args.markets)), sorted(set(args.workers))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    logs = args.workdir / "logs"
    start = time.perf_counter()
    initial_load, initial_others = idle_check()
    info = machine_info()
    digest = source_digest()
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    print(f"carequal batch benchmark{' (quick)' if args.quick else ''}; scratch {folder}", file=sys.stderr)
    measurements: list[dict] = []
    results: dict = {"initial_load": initial_load, "initial_other_cores": initial_others, "data": {}, "runs": [],
                     "peers": {}}
    try:
        warm_up(args, logs)
        for n in args.markets:
            data = synth(n, args, folder, logs)
            measurements.append(data)
            results["data"][n] = data
            last = None
            for w in args.workers:
                for mode in args.kernels:
                    last = run_report(n, w, Path(data["dir"]), folder, args, logs, kernels=mode)
                    measurements.append(last)
                    results["runs"].append(last)
            peer = run_peer(n, last, Path(data["dir"]), folder, args, logs)
            measurements.append(peer)
            results["peers"][n] = peer
    except ChildFailed as exc:
        print(f"\ncarequal batch benchmark stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    results["measurements"] = [{k: m[k] for k in ("label", "wall_seconds", "child_cpu_seconds", "other_cores",
                                                  "load_before", "load_max", "load_after", "own_load", "contended")}
                               for m in measurements]
    results["total_seconds"] = time.perf_counter() - start
    results["changed_sources"] = sorted(k for k, v in source_digest().items() if digest.get(k) != v)

    text = render(info, args, results)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    raw = args.workdir / ("results-quick.json" if args.quick else "results.json")
    raw.write_text(json.dumps({"machine": info, **results}, indent=1, default=str))
    print(f"wrote {args.results} and {raw}", file=sys.stderr)
    if failures(results):
        print(f"warning: {len(failures(results))} market run(s) failed (listed in the report)", file=sys.stderr)
    if any(m["contended"] for m in results["measurements"]) or initial_others > OTHER_CORES_LIMIT:
        print("warning: some measurements ran beside other work (see the Measurements table); run again on a "
              "quiet machine", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
