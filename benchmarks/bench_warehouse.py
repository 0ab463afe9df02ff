"""Warehouse benchmark: reading the contract tables from PostgreSQL (``--source``) beside what a user could do
instead.

Run from the repository root (the warehouse extra installed, PostgreSQL server binaries on the machine)::

    python benchmarks/bench_warehouse.py [--sizes 1000000 5000000] [--repeat 3] [--workdir /tmp/carequal-whbench]

For each size, ``carequal synth`` writes the tables as CSV, a throw-away server (``tests/pg_server.py``) is
loaded with them (typed columns: dates as ``date``, flags as ``boolean``, numbers as numbers; ``\\copy``), and
every method reads stays, patients, enrollment and facilities, in a fresh child process each, ``--repeat``
times (min and median reported):

1. **carequal** ``Source.read_tables()`` through ADBC: the text contract tables ``read_tables`` gives for CSV,
   rows in key order (the default), and with ``order_by = []`` (the database's order);
2. **peer: COPY + pyarrow**, PostgreSQL's own ``COPY (SELECT <the same columns> FROM t) TO STDOUT (FORMAT csv)``
   into a file (psycopg), then ``pyarrow.csv.read_csv`` of that file with every column as text: the fastest
   way out of PostgreSQL into Arrow a user could script; the target is carequal within 1.5× of it;
3. **baseline: pandas read_sql** through SQLAlchemy (psycopg), what a user would otherwise write, and carequal's
   own SQLAlchemy path (``reader = "sqlalchemy"``, for databases other than PostgreSQL);
4. **validated**: ``Source.read_tables`` + ``validate_tables`` beside the CSV path (``load_tables`` on the CSV
   files), for peak memory: the target is the database path below the CSV path.

Times are measured inside the child (imports excluded); peak memory is the child's peak resident set
(``ru_maxrss``). The server's own CPU time is subtracted from "other processes" when judging contention: it is
part of the measurement. Results go to ``benchmarks/results/warehouse.md``; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import report
from report import markdown_table

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "warehouse.md"
TABLES = ("facilities", "patients", "stays", "enrollment")
TARGET_RATIO = 1.5

sys.path.insert(0, str(REPO / "tests"))


# ------------------------------------------------------------------------------------------ child tasks


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mapping(spec: dict, *, reader: str = "adbc", ordered: bool = True) -> Path:
    path = Path(spec["workdir"]) / f"source-{reader}-{'key' if ordered else 'db'}.toml"
    lines = ["[connection]", f'url = "postgresql://carequal@127.0.0.1:{spec["port"]}/hospital"',
             'password_env = "CAREQUAL_DB_PASSWORD"', f'reader = "{reader}"']
    for table in TABLES:
        lines += [f"[tables.{table}]", f'table = "{table}"'] + ([] if ordered else ["order_by = []"])
    path.write_text("\n".join(lines) + "\n")
    return path


def task_source(spec: dict) -> dict:
    from carequal.warehouse import open_source

    source = open_source(_mapping(spec, reader=spec.get("reader", "adbc"), ordered=spec.get("ordered", True)),
                         progress=False)
    t0 = time.perf_counter()
    tables = source.read_tables()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": {t: len(f) for t, f in tables.items()}}


def task_source_validated(spec: dict) -> dict:
    from carequal.loaders import load_tables
    from carequal.warehouse import open_source

    source = open_source(_mapping(spec), progress=False)
    t0 = time.perf_counter()
    validated = load_tables(source, mode="quarantine")
    return {"seconds": time.perf_counter() - t0, "accepted": {t: len(f) for t, f in validated.tables.items()}}


def task_csv_validated(spec: dict) -> dict:
    from carequal.loaders import load_tables

    t0 = time.perf_counter()
    validated = load_tables(spec["csv_dir"], mode="quarantine")
    return {"seconds": time.perf_counter() - t0, "accepted": {t: len(f) for t, f in validated.tables.items()}}


def task_csv_read(spec: dict) -> dict:
    from carequal.loaders import read_tables

    t0 = time.perf_counter()
    tables = read_tables(spec["csv_dir"])
    return {"seconds": time.perf_counter() - t0, "rows": {t: len(f) for t, f in tables.items() if t in TABLES}}


def _columns(spec: dict, table: str) -> list[str]:
    return json.loads(spec["columns"])[table]


def task_copy_peer(spec: dict) -> dict:
    """COPY (SELECT cols FROM t) TO STDOUT (FORMAT csv) into a file, then pyarrow reads it, every column text."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pcsv

    out = Path(spec["workdir"]) / "copy"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with psycopg.connect(f"postgresql://carequal:{os.environ['CAREQUAL_DB_PASSWORD']}@127.0.0.1:{spec['port']}"
                         "/hospital") as conn, conn.cursor() as cur:
        for table in TABLES:
            cols = ", ".join(f'"{c}"' for c in _columns(spec, table))
            with open(out / f"{table}.csv", "wb") as fh, \
                    cur.copy(f"COPY (SELECT {cols} FROM {table}) TO STDOUT (FORMAT csv, HEADER)") as copy:
                for block in copy:
                    fh.write(block)
    copy_s = time.perf_counter() - t0
    rows = {}
    for table in TABLES:
        names = _columns(spec, table)
        data = pcsv.read_csv(out / f"{table}.csv", convert_options=pcsv.ConvertOptions(
            column_types={c: pa.large_string() for c in names}, strings_can_be_null=True))
        rows[table] = data.num_rows
        if spec.get("pandas"):
            data = data.to_pandas()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "copy_seconds": copy_s, "read_seconds": seconds - copy_s, "rows": rows}


def task_read_sql(spec: dict) -> dict:
    """The baseline: pandas.read_sql through SQLAlchemy + psycopg, one table at a time."""
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(f"postgresql+psycopg://carequal:{os.environ['CAREQUAL_DB_PASSWORD']}@127.0.0.1:"
                              f"{spec['port']}/hospital")
    t0 = time.perf_counter()
    frames = {}
    with engine.connect() as conn:
        for table in TABLES:
            cols = ", ".join(f'"{c}"' for c in _columns(spec, table))
            frames[table] = pd.read_sql_query(sa.text(f"SELECT {cols} FROM {table}"), conn)
    return {"seconds": time.perf_counter() - t0, "rows": {t: len(f) for t, f in frames.items()}}


TASKS = {"source": task_source, "source_validated": task_source_validated, "csv_validated": task_csv_validated,
         "csv_read": task_csv_read, "copy_peer": task_copy_peer, "read_sql": task_read_sql}


def child_main(task: str, spec_json: str, result_path: str) -> None:
    result = TASKS[task](json.loads(spec_json))
    Path(result_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------- parent side


def _server_cpu(server) -> float:
    """CPU seconds of the server so far: the postmaster and the backends it has reaped (``cutime``/``cstime``)
    plus those still running."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
    total = 0.0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += (utime + stime + (cutime + cstime if p == pid else 0)) / tick
    return total


def measure(label: str, task: str, spec: dict, workdir: Path, server, own_load: float, timeout: float) -> dict:
    logs = workdir / "logs"
    result_path = logs / f"{label}.json"
    logs.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, "--spec", json.dumps(spec),
           "--result", str(result_path)]
    cpu0 = _server_cpu(server)
    run = report.measure(label, cmd, logs, timeout=timeout, own_load=own_load)
    server_cpu = _server_cpu(server) - cpu0
    run["server_cpu_seconds"] = server_cpu
    run["other_cores"] = max(0.0, run["other_cores"] - server_cpu / run["wall_seconds"])
    run["contended"] = run["other_cores"] > report.OTHER_CORES_LIMIT
    run.pop("output", None)
    run.update(json.loads(result_path.read_text()))
    return run


def _generate(n: int, workdir: Path) -> Path:
    out = workdir / f"csv-{n}"
    if (out / "stays.csv").is_file() and (out / ".complete").is_file():
        return out
    subprocess.run([sys.executable, "-m", "carequal.cli", "synth", "--out", str(out), "--stays", str(n)],
                   check=True, cwd=REPO)
    (out / ".complete").write_text("")
    return out


def _load(server, csv_dir: Path) -> dict[str, list[str]]:
    """Typed tables named for the contract (columns from each CSV header, SQL types from the contract)."""
    from carequal.schema import CONTRACT

    sql_type = {"date": "date", "bool": "boolean", "int": "integer", "float": "double precision"}
    columns = {}
    script = []
    for table in TABLES:
        names = (csv_dir / f"{table}.csv").open().readline().strip().split(",")
        kinds = {s.name: s.kind for s in CONTRACT[table]}
        names = [n for n in names if n in kinds]
        columns[table] = names
        script.append(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ("
                      + ", ".join(f"{n} {sql_type.get(kinds[n], 'text')}" for n in names) + ");")
        script.append(f"\\copy {table} ({', '.join(names)}) FROM '{csv_dir / (table + '.csv')}' WITH (FORMAT csv, "
                      "HEADER true)")
    script.append("ALTER TABLE facilities ADD PRIMARY KEY (facility_id); ALTER TABLE patients ADD PRIMARY KEY "
                  "(patient_id); ALTER TABLE stays ADD PRIMARY KEY (stay_id); VACUUM ANALYZE;")
    server.psql("\n".join(script))
    return columns


def _stats(runs: list[dict]) -> dict:
    times = [r["seconds"] for r in runs]
    return {"min": min(times), "median": statistics.median(times), "peak": max(r["maxrss_mib"] for r in runs),
            "contended": sum(r["contended"] for r in runs), "n": len(runs),
            "server_cpu": statistics.median(r["server_cpu_seconds"] for r in runs)}


METHODS = [
    ("carequal (ADBC, key order)", "source", {}),
    ("carequal (ADBC, order_by = [])", "source", {"ordered": False}),
    ("peer: COPY csv to file + pyarrow", "copy_peer", {}),
    ("peer: COPY csv to file + pyarrow + to_pandas", "copy_peer", {"pandas": True}),
    ("carequal (SQLAlchemy path)", "source", {"reader": "sqlalchemy"}),
    ("baseline: pandas read_sql (SQLAlchemy + psycopg)", "read_sql", {}),
    ("CSV path: read_tables of the CSV files", "csv_read", {}),
]
VALIDATED = [("database: Source.read_tables + validate", "source_validated", {}),
             ("CSV path: load_tables (read + validate)", "csv_validated", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-whbench"))
    parser.add_argument("--slow-repeat", type=int, default=None,
                        help="repeats of the slow methods (read_sql, the SQLAlchemy path, read + validate) at the "
                             "largest size (default: --repeat)")
    parser.add_argument("--child")
    parser.add_argument("--spec")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.spec, args.result)
        return
    from pg_server import start_server

    args.workdir.mkdir(parents=True, exist_ok=True)
    own_load, others = report.idle_check()
    results = {}
    for n in args.sizes:
        csv_dir = _generate(n, args.workdir)
        server = start_server(settings={"shared_buffers": "'1GB'", "work_mem": "'256MB'",
                                        "maintenance_work_mem": "'512MB'"})
        os.environ["CAREQUAL_DB_PASSWORD"] = server.password
        try:
            t0 = time.perf_counter()
            columns = _load(server, csv_dir)
            load_s = time.perf_counter() - t0
            print(f"loaded {n:,d} stays into PostgreSQL in {load_s:.0f} s", file=sys.stderr)
            spec = {"workdir": str(args.workdir), "port": server.port, "csv_dir": str(csv_dir),
                    "columns": json.dumps(columns)}
            size = {"load_seconds": load_s, "methods": {}}
            for label, task, extra in METHODS + VALIDATED:
                slow = task in ("read_sql", "source_validated", "csv_validated") or extra.get("reader") == "sqlalchemy"
                repeat = args.slow_repeat if slow and args.slow_repeat and n == max(args.sizes) else args.repeat
                runs = [measure(f"{n}-{task}-{'-'.join(map(str, extra.values()))}-{i}", task, {**spec, **extra},
                                args.workdir, server, own_load, timeout=3600) for i in range(repeat)]
                size["methods"][label] = {"stats": _stats(runs), "rows": runs[0].get("rows") or runs[0].get("accepted")}
            results[n] = size
            (args.workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
        finally:
            server.stop()
    write_report(results, args, own_load, others)


def write_report(results: dict, args, own_load: float, others: float) -> None:
    info = report.machine_info(("pandas", "pyarrow", "adbc-driver-postgresql", "sqlalchemy", "psycopg"))
    lines = ["# Warehouse benchmark: reading the contract tables from PostgreSQL", "",
             f"Command: `python benchmarks/bench_warehouse.py --sizes {' '.join(map(str, args.sizes))} --repeat "
             f"{args.repeat}" + (f" --slow-repeat {args.slow_repeat}" if args.slow_repeat else "")
             + "`. Produced by the script; do not edit by hand.", "", "## Machine", ""]
    lines += markdown_table(["item", "value"], [[k, v] for k, v in info.items()])
    lines += [f"Before the first measurement: load average {own_load:.2f}, other processes {others:.2f} cores. "
              "PostgreSQL 15 runs on the same machine (a throw-away cluster, fsync off); its CPU time is part of "
              "each measurement, not counted as contention.", ""]
    for n, size in results.items():
        methods = size["methods"]
        peer = methods["peer: COPY csv to file + pyarrow"]["stats"]
        rows = methods["carequal (ADBC, key order)"]["rows"]
        lines += [f"## {int(n):,d} stays", "",
                  "Rows read: " + ", ".join(f"{t} {r:,d}" for t, r in rows.items())
                  + f". Loading them into PostgreSQL (\\copy, primary keys, VACUUM ANALYZE) took "
                  f"{size['load_seconds']:.0f} s.", ""]
        table = []
        for label, entry in methods.items():
            s = entry["stats"]
            ratio = s["min"] / peer["min"] if label not in [v[0] for v in VALIDATED] else None
            table.append([label, f"{s['min']:.1f}", f"{s['median']:.1f}", f"{s['peak'] / 1024:.2f}",
                          f"{s['server_cpu']:.1f}", f"{ratio:.2f}×" if ratio is not None else "",
                          f"{s['n']}" + (f" ({s['contended']} contended)" if s["contended"] else "")])
        lines += markdown_table(["method", "min s", "median s", "peak GiB", "server CPU s", "min / peer min",
                                 "runs"], table)
        ours = methods["carequal (ADBC, key order)"]["stats"]
        unordered = methods["carequal (ADBC, order_by = [])"]["stats"]
        db_val = methods["database: Source.read_tables + validate"]["stats"]
        csv_val = methods["CSV path: load_tables (read + validate)"]["stats"]
        csv_read = methods["CSV path: read_tables of the CSV files"]["stats"]
        lines += [f"- Target 1: carequal within {TARGET_RATIO}× the COPY + pyarrow peer: "
                  f"{ours['min'] / peer['min']:.2f}× in key order, {unordered['min'] / peer['min']:.2f}× in the "
                  f"database's order: {'PASS' if ours['min'] / peer['min'] <= TARGET_RATIO else 'FAIL'} "
                  f"(default) / {'PASS' if unordered['min'] / peer['min'] <= TARGET_RATIO else 'FAIL'} "
                  "(order_by = []).",
                  f"- Target 2: peak memory below the CSV path's: reading {ours['peak'] / 1024:.2f} GiB vs "
                  f"{csv_read['peak'] / 1024:.2f} GiB; read + validate {db_val['peak'] / 1024:.2f} GiB vs "
                  f"{csv_val['peak'] / 1024:.2f} GiB: "
                  f"{'PASS' if db_val['peak'] < csv_val['peak'] and ours['peak'] < csv_read['peak'] else 'FAIL'}.",
                  ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
