"""The ``carequal`` command line.

Subcommands
-----------
check     validate a data directory (or a database, --source) against the contract and print a summary of it
sample    write the sample partnership data (the checkout's ``data/sample``) with its agreement to a folder
synth     generate synthetic partnership data (the sample's tables are ``carequal synth --out data/sample``)
ingest    validate input tables and write a market-partitioned Parquet dataset
desynpuf  convert CMS DE-SynPUF inpatient claims and beneficiary files into contract tables
report    the main job: the market report for every market, rendered to HTML, with an index and a manifest;
          with --by partner, one packet and aggregate extract per partner of the partnership agreement; with
          --by sponsor, one employee health report for the alliance and one per employer (enrollment.sponsor)

Errors in the data or the arguments print one clear message and exit with status 2 (no traceback); see
:func:`main` for every exit status.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from pathlib import Path

from carequal.errors import CarequalError, DataQualityWarning

# Each subcommand imports what it needs (pandas, the loaders, the generator, the batch) inside its function: the
# worker processes a report run spawns import this module again (as ``__mp_main__``), and must not pay for them.

__all__ = ["build_parser", "main"]


def _print_validation(validated, out=None) -> None:
    import pandas as pd

    from carequal.loaders import summarise

    print("Rows per table (loaded = accepted + quarantined):", file=out)
    print(validated.counts.to_string(index=False), file=out)
    if len(validated.failures):
        print("\nQuarantined by rule:", file=out)
        print(validated.failures[["table", "column", "rule", "n_rows", "examples"]].to_string(index=False),
              file=out)
    print("\nBy market (facilities and stays by facility market, patients by residence):", file=out)
    summary = summarise(validated)
    for col in ("first_admit", "last_discharge"):
        summary[col] = pd.to_datetime(summary[col]).dt.strftime("%Y-%m-%d")
    print(summary.to_string(index=False), file=out)


def _input(args: argparse.Namespace):
    """The input of a command: the ``--data`` path, or the database a ``--source`` mapping file describes."""
    if getattr(args, "source", None) is None:
        return args.data
    from carequal.warehouse import open_source

    return open_source(args.source, progress=not args.quiet)


def _cmd_check(args: argparse.Namespace) -> int:
    from carequal.loaders import load_tables

    started = time.perf_counter()
    data = _input(args)
    validated = load_tables(data, mode=args.mode)
    n_quarantined = int(validated.counts["quarantined"].sum())
    verdict = ("is valid under the data contract" if n_quarantined == 0
               else f"loaded with {n_quarantined:,d} row(s) quarantined")
    print(f"carequal check: {data} {verdict} (mode={args.mode}, {time.perf_counter() - started:.1f} s)\n")
    _print_validation(validated)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from carequal.sample import write_sample

    started = time.perf_counter()
    counts = write_sample(args.out, force=args.force)
    print(f"carequal sample: wrote the sample partnership data to {args.out} in "
          f"{time.perf_counter() - started:.1f} s (synthetic: no real patient is in it)")
    for table, n in counts.items():
        print(f"  {table:<24} {n:>12,d} rows")
    print(f"  {'agreement.toml':<24} the partnership agreement (carequal report --by partner)")
    print(f"next: carequal report --data {args.out} --out reports")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from carequal.synth import SynthConfig, config_for_stays, write_synthetic

    if args.stays:
        config = config_for_stays(args.stays, seed=args.seed)
    else:
        sizes = {k: v for k, v in (("n_markets", args.markets), ("patients_per_market", args.patients_per_market))
                 if v}
        config = SynthConfig(seed=args.seed, **sizes)
    started = time.perf_counter()
    counts = write_synthetic(args.out, config, fmt=args.format)
    print(f"carequal synth: wrote {args.out} in {time.perf_counter() - started:.1f} s")
    for table, n in counts.items():
        print(f"  {table:<24} {n:>12,d} rows")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from carequal.loaders import load_tables, write_market_dataset

    data = _input(args)
    fingerprint = data.fingerprint() if args.source is not None else None  # a snapshot signature reads once
    validated = load_tables(data, mode=args.mode)
    written = write_market_dataset(validated, args.out)
    if fingerprint is not None:  # where the snapshot came from (no credentials) and its identity
        (Path(args.out) / "source.json").write_text(json.dumps({"source": str(data), "fingerprint": fingerprint,
                                                                "rows": data.counts}, indent=2))
    print(f"carequal ingest: wrote a market-partitioned dataset to {args.out}")
    for table, n in written.items():
        print(f"  {table:<12} {n:>12,d} rows")
    for table, q in validated.quarantine.items():
        if len(q):
            path = Path(args.out) / f"quarantine_{table}.csv"
            q.to_csv(path, index=False)
            print(f"  {len(q):,d} {table} rows quarantined → {path}")
    return 0


def _cmd_desynpuf(args: argparse.Namespace) -> int:
    import pandas as pd

    from carequal.adapters.desynpuf import read_desynpuf

    with warnings.catch_warnings(record=True) as caught:  # the notes below say it all, without source lines
        warnings.simplefilter("always")
        tables = read_desynpuf(args.claims)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"carequal desynpuf: wrote contract tables to {out}")
    for table, frame in tables.items():
        if isinstance(frame, pd.DataFrame):
            frame.to_csv(out / f"{table}.csv", index=False, date_format="%Y-%m-%d")
            print(f"  {table:<12} {len(frame):>10,d} rows → {out / (table + '.csv')}")
    notes = tables.notes[tables.notes["n"] > 0]
    if len(notes):
        print("Adapter notes (values inferred, assumed, blanked or dropped on the way to the contract):")
        for note in notes.itertuples(index=False):
            print(f"  {note.table}.{note.rule}: {note.action}, {int(note.n):,d} {note.unit} ({note.detail})")
    seen = set()
    for warning in caught:  # a DataQualityWarning repeats the notes; anything else in one line, once
        text = f"{warning.category.__name__}: {warning.message}"
        if not issubclass(warning.category, DataQualityWarning) and text not in seen:
            seen.add(text)
            print(f"carequal desynpuf: warning: {text}", file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    pool = None
    if args.workers > 1 and args.scheduler is None:
        # the worker processes start first, so that they load papermill and the report template on the core this
        # process leaves idle while it loads the batch (~2 s); run_batch uses them and shuts them down
        from carequal.batch.jobs import start_workers

        pool = start_workers(args.workers)
    try:
        # the batch loads the whole report stack (statistics, notebooks: seconds): only this subcommand needs it
        from carequal.batch import run_batch

        target = None
        if args.to_db is not None:  # checked (and connected to) before the run, not after it
            from carequal.warehouse.writeback import open_target

            target = open_target(args.to_db)
        result = run_batch(_input(args), args.out, markets=args.markets, workers=args.workers, period=args.period,
                           measures=args.measures, conditions=args.conditions, min_cell=args.min_cell,
                           allow_small_cells=args.allow_small_cells, work=args.work, force=args.force,
                           strict=args.strict, wait=args.wait, progress=not args.quiet, scheduler=args.scheduler,
                           by=args.by, agreement=args.agreement, patient_lists=args.patient_lists,
                           fresh_kernels=args.fresh_kernels, pdf=args.pdf, programme=args.programme,
                           pool=pool, **({"notebook": args.notebook} if args.notebook else {}))
    finally:
        if pool is not None:  # refused before run_batch took them (a bad --to-db): they stop here
            pool.shutdown(cancel_futures=True)
    for line in result.quarantine:
        print(f"carequal report: quarantined {line}", file=sys.stderr)
    for line in result.notes:
        print(f"carequal report: {line}", file=sys.stderr)
    reused = sum(1 for r in result.markets.values() if r.get("reused"))
    what = {"partner": "partner packets", "sponsor": "employee health reports"}.get(args.by, "market reports")
    params = result.manifest["parameters"]
    print(f"carequal report: {len(result.markets) - len(result.failed)} of {len(result.markets)} {what} "
          f"for {params['period_start']} to {params['period_end']} ready in {result.out} ({reused} unchanged since "
          f"the last run), {time.perf_counter() - started:.1f} s; open {result.out / 'index.html'}")
    for market in result.failed:
        record = result.markets[market]
        print(f"  FAILED {market}: {record.get('error_kind')} (executed notebook: {record.get('notebook')}; "
              f"details: {record.get('error_file')})", file=sys.stderr)
    if target is not None:
        from carequal.warehouse.writeback import write_back

        written = write_back(result, target)
        print(f"carequal report: wrote {', '.join(f'{t} ({n:,d} rows)' for t, n in written.items())} to "
              f"{target}")
    return 1 if result.failed else 0


def _input_arguments(p: argparse.ArgumentParser, data_help: str) -> None:
    """``--data DIR`` or ``--source FILE`` (a database), one of them."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--data", help=data_help)
    group.add_argument("--source", metavar="FILE",
                       help="source mapping file (TOML/YAML): read the contract tables from a database instead "
                            "(see README, 'Reading from a warehouse')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carequal", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate a data directory and print a summary")
    _input_arguments(p, "directory with facilities, patients, stays, enrollment files")
    p.add_argument("--mode", choices=["strict", "quarantine"], default="strict")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("sample", help="write the sample partnership data and its agreement to a folder",
                       description="Write the sample partnership data (3 synthetic markets; the checkout's "
                                   "data/sample) and its partnership agreement, agreement.toml, to --out.")
    p.add_argument("--out", required=True, help="folder to write (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a folder that already holds files")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("synth", help="generate synthetic partnership data")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--stays", type=int, default=0, help="approximate number of stays (default: the sample size)")
    p.add_argument("--markets", type=int, default=0, help="number of markets (with --patients-per-market)")
    p.add_argument("--patients-per-market", type=int, default=0)
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("ingest", help="validate and write a market-partitioned Parquet dataset")
    _input_arguments(p, "directory of contract tables (CSV/Parquet)")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=["strict", "quarantine"], default="quarantine")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("desynpuf", help="convert CMS DE-SynPUF claims into contract tables")
    p.add_argument("--claims", required=True, help="folder with the DE-SynPUF inpatient and beneficiary CSVs")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_desynpuf)

    p = sub.add_parser("report", help="run the market report for every market (the main job)",
                       description="Execute the market report notebook once per market, render each to HTML "
                                   "without code, and write index.html and manifest.json to --out.")
    _input_arguments(p, "contract tables (CSV/Parquet) or an ingested market dataset")
    p.add_argument("--out", required=True, help="folder for the shareable reports (e.g. reports/)")
    p.add_argument("--markets", default="all",
                   help="'all' (default) or a comma-separated list (not with --by sponsor: its reports cover every "
                        "sponsor's members wherever they live)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes, one kernel each")
    p.add_argument("--period", default=None,
                   help="YYYY, YYYY-Qn, YYYY-MM or START:END (default: the calendar year of the last discharge)")
    p.add_argument("--measures", default="all", help="'all' or a comma-separated list of measures")
    p.add_argument("--conditions", default="all", help="'all' or a comma-separated list of condition cohorts")
    p.add_argument("--min-cell", type=int, default=11, help="smallest count shown (11: 1-10 are suppressed); "
                   "below 11 only with --allow-small-cells")
    p.add_argument("--allow-small-cells", action="store_true",
                   help="allow --min-cell below 11 (every report then states the threshold on its first screen)")
    p.add_argument("--strict", action="store_true",
                   help="refuse to run when validation quarantines any input row (default: report on the accepted "
                        "rows and print a summary of the quarantined ones)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another run that holds --out (default: fail at once, exit 3)")
    p.add_argument("--work", default=None, help="work folder for patient-level data (default: <out>.work)")
    p.add_argument("--force", action="store_true", help="redo every market even if its report is current")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786) to run on")
    p.add_argument("--by", choices=("market", "partner", "sponsor"), default="market",
                   help="one report per market (default), one packet and extract per partner of the agreement, or "
                        "one employee health report for the alliance and one per sponsor (enrollment.sponsor)")
    p.add_argument("--agreement", default=None,
                   help="partnership agreement for --by partner (default: agreement.toml/.yaml in the data folder)")
    p.add_argument("--patient-lists", default=None, metavar="DIR",
                   help="--by partner only: also write each partner's own readmitted patients (patient-level "
                        "CSV, for care coordination) to DIR, which must be outside --out")
    p.add_argument("--programme", default=None, metavar="SPONSOR:YYYY-MM-DD",
                   help="--by sponsor only: a care-management programme run by SPONSOR (as named in "
                        "enrollment.sponsor) from that day; the alliance's and the sponsor's reports estimate its "
                        "effect on avoidable admissions and ED visits (default: no programme)")
    p.add_argument("--fresh-kernels", action="store_true",
                   help="a new kernel for every report (default: each worker reuses one kernel for up to 25)")
    p.add_argument("--pdf", action="store_true",
                   help="also print each report to a board-ready PDF beside it (needs a Chromium browser: "
                        "`apt-get install chromium` on Debian/Ubuntu, or CAREQUAL_CHROMIUM=/path/to/chrome)")
    p.add_argument("--notebook", default=None, help=argparse.SUPPRESS)
    p.add_argument("--to-db", default=None, metavar="URL[/SCHEMA]",
                   help="also write the aggregate, suppressed tables of the run (partner extracts, market KPIs) to "
                        "this database, e.g. 'postgresql://bi@host/dw/carequal' (schema carequal); a password as "
                        "${VARIABLE} or from PGPASSWORD / ~/.pgpass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``carequal`` console script.

    Exit statuses: 0 done; 1 done, but some reports failed (``report``); 2 refused or stopped with a message (bad
    arguments or input, a full disk, no permission); 3 another run holds the output folder; 130 interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CarequalError as exc:
        print(f"carequal {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except OSError as exc:  # the machine's faults, not carequal's: one line, no traceback
        from carequal.batch.state import describe_os_error  # the batch is loaded only by `report` (see above)

        print(f"carequal {args.command}: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"carequal {args.command}: interrupted; a report run can be resumed by running it again",
              file=sys.stderr)
        return 130


def run() -> None:
    """The ``carequal`` command (the console script, and ``python -m carequal.cli``): :func:`main`, then exit with
    its status.

    Before the interpreter shuts down, its objects are frozen out of the garbage collector (``gc.freeze``): a
    process that has loaded pandas, pyarrow and statsmodels otherwise spends about 0.4 s at exit collecting them,
    after its work is done and its output written. Files, atexit handlers and child processes are closed as
    usual. While it runs, the collector uses the batch's thresholds
    (:data:`carequal.batch.kernels.COLLECTOR_THRESHOLDS`: less time collecting pandas' short-lived objects).
    :func:`main` itself (called by tests and other programs) leaves the collector alone.
    """
    from carequal.batch.kernels import tune_collector  # a light module: no Jupyter stack at import

    tune_collector()
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
