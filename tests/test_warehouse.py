"""Reading the contract tables from a database (``--source``) and writing the shared tables back (``--to-db``).

Without a server: the mapping file's validation (every problem named by key), credentials kept out of every
message, text conversion of typed columns, and the SQLAlchemy path on SQLite. With a throw-away PostgreSQL
server (:mod:`pg_server`; skipped only when none can be started here, and never in CI, which sets
``CAREQUAL_REQUIRE_PG``): the sample loaded under other names (and a view joining two tables) gives the CSV
path's results with check, ingest and report; faults of the source are one message naming the mapping key, exit
status 2; the fingerprint follows the content signature; the write-back holds no patient-level column and passes
the cell-size check; and the password is in no output.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pytest

from carequal.cli import main as cli_main
from carequal.errors import SourceError
from carequal.loaders import load_tables, read_dataset_tables, read_tables
from carequal.schema import KEYS, TABLES
from carequal.warehouse import Source, open_source, read_mapping
from carequal.warehouse.mapping import resolve_credentials
from carequal.warehouse.source import _as_text, type_problem
from conftest import agreement_with

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
MAPPING = SAMPLE / "warehouse.toml"


def _sorted(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    keys = [k for k in KEYS[table] if k in frame.columns]
    return frame.sort_values(keys, kind="stable", ignore_index=True)


def _assert_same_tables(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for table in a:
        pd.testing.assert_frame_equal(_sorted(a[table], table), _sorted(b[table], table), check_like=False)


# ------------------------------------------------------------------------------------- the mapping file


def test_the_sample_mapping_validates_and_maps_every_contract_table():
    mapping = read_mapping(MAPPING)
    assert set(mapping.tables) == set(TABLES)
    assert mapping.connection.password_env == "CAREQUAL_DB_PASSWORD"
    assert urlsplit(mapping.connection.url).password is None


def test_the_readme_shows_the_sample_mapping():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Reading from a warehouse", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```toml\n(.*?)```", section, flags=re.S).group(1)
    assert read_mapping(text=snippet) == read_mapping(MAPPING)


def test_every_mapping_problem_is_named_by_key_with_the_choices():
    text = """
schema = "warehouse"
[connection]
url = "postgresql://carequal@localhost/hospital"
readr = "adbc"
[tables.facilities]
table = "providers"
query = "SELECT 1"
values.setting = { HOSP = "hospital" }
[tables.stays]
table = "stays_v"
columns = { admit_dt = "ADM_DT" }
order_by = ["stay"]
[tables.enrolment]
table = "eligibility"
"""
    with pytest.raises(SourceError) as err:
        read_mapping(text=text)
    message = str(err.value)
    assert "connection.readr: Extra inputs are not permitted" in message
    with pytest.raises(SourceError) as err:
        read_mapping(text=text.replace('readr = "adbc"\n', ""))
    message = str(err.value)
    assert "(6 problems)" in message
    assert "tables.enrolment: not a contract table; the tables are facilities, patients, stays, enrollment" in message
    assert "tables: no mapping for required table(s) patients, enrollment" in message
    assert "tables.facilities: give either table (a table or view) or query (a SQL query), not both" in message
    assert "tables.facilities.values.setting.HOSP: 'hospital' is not an allowed setting; choose from acute, snf, " \
           "irf, ltch, hha" in message
    assert "tables.stays.columns.admit_dt: not a column of the contract's stays table (given 'ADM_DT'); its " \
           "columns are stay_id, patient_id, facility_id, admit_date" in message
    assert "tables.stays.order_by: 'stay' is not a column" in message


def test_a_password_in_the_file_is_refused_without_repeating_it():
    secret = "Sup3r-s3cret-pw"
    mapping = read_mapping(text=f'[connection]\nurl = "postgresql://ana:{secret}@db/dw"\n'
                                + "".join(f'[tables.{t}]\ntable = "{t}"\n' for t in TABLES))
    with pytest.raises(SourceError) as err:
        resolve_credentials(mapping.connection)
    assert "holds a password written out" in str(err.value) and secret not in str(err.value)
    assert secret not in str(Source(mapping))


def test_credentials_come_from_the_environment_and_are_redacted():
    mapping = read_mapping(text='[connection]\nurl = "postgresql://ana:${DW_PW}@${DW_HOST:-db}:5432/dw"\n'
                                + "".join(f'[tables.{t}]\ntable = "{t}"\n' for t in TABLES))
    with pytest.raises(SourceError, match="connection.url: environment variable DW_PW is not set"):
        resolve_credentials(mapping.connection, environ={})
    secret = "p@ss/w:rd"
    creds = resolve_credentials(mapping.connection, environ={"DW_PW": secret})
    assert creds.display == "postgresql://ana@db:5432/dw" and creds.reader == "adbc"
    assert creds.url == "postgresql://ana:p%40ss%2Fw%3Ard@db:5432/dw"
    for text in (f"failed for {secret}", f"url {creds.url}", "postgresql://x:other@h/d"):
        assert "***" in creds.redact(text) and secret not in creds.redact(text) and "other" not in creds.redact(text)
    assert secret not in repr(creds)
    env = read_mapping(text='[connection]\nurl = "postgresql://ana@db/dw"\npassword_env = "DW_PASSWORD"\n'
                            + "".join(f'[tables.{t}]\ntable = "{t}"\n' for t in TABLES))
    with pytest.raises(SourceError, match="connection.password_env: environment variable DW_PASSWORD is not set"):
        resolve_credentials(env.connection, environ={})
    assert resolve_credentials(env.connection, environ={"DW_PASSWORD": secret}).secrets == [secret]


def test_a_keyring_entry_gives_the_password(monkeypatch):
    import sys
    import types

    fake = types.SimpleNamespace(get_password=lambda service, user: "kr-secret" if (service, user) == ("dw", "ana")
                                 else None)
    monkeypatch.setitem(sys.modules, "keyring", fake)
    text = '[connection]\nurl = "postgresql://ana@db/dw"\nkeyring = {{ service = "{}", username = "ana" }}\n' \
        + "".join(f'[tables.{t}]\ntable = "{t}"\n' for t in TABLES)
    creds = resolve_credentials(read_mapping(text=text.format("dw")).connection, environ={})
    assert creds.url == "postgresql://ana:kr-secret@db/dw" and creds.display == "postgresql://ana@db/dw"
    with pytest.raises(SourceError, match="connection.keyring: no password in the keyring for service 'other'"):
        resolve_credentials(read_mapping(text=text.format("other")).connection, environ={})


def test_the_write_back_target_and_its_checks(tmp_path):
    from types import SimpleNamespace

    from carequal.errors import DisclosureError
    from carequal.warehouse.writeback import open_target, shared_tables

    target = open_target("postgresql://bi:${BI_PW}@dw-host:5432/dw/carequal", environ={"BI_PW": "b1-secret"},
                         check=False)
    assert (target.schema, str(target)) == ("carequal", "postgresql://bi@dw-host:5432/dw (schema carequal)")
    assert target.credentials.url == "postgresql://bi:b1-secret@dw-host:5432/dw"
    assert "b1-secret" not in target.credentials.redact("FATAL: password b1-secret for postgresql://bi:b1-secret@h")
    with pytest.raises(SourceError, match="--to-db: environment variable BI_PW is not set"):
        open_target("postgresql://bi:${BI_PW}@dw-host/dw", environ={}, check=False)
    assert open_target("sqlite:////tmp/bi.db", check=False).schema is None
    # an extract table that holds a patient-level column is never written
    extract = tmp_path / "H1_extract"
    extract.mkdir()
    pd.DataFrame({"metric": ["readmit"], "n": [40], "events": [12]}).to_csv(extract / "metrics.csv", index=False)
    run_set = {"min_cell": 11, "period_start": "2024-01-01", "period_end": "2024-12-31"}
    result = SimpleNamespace(out=tmp_path, manifest={"by": "partner", "run_id": "r1", "set": run_set},
                             markets={"H1": {"status": "ok", "extract_dir": "H1_extract", "name": "North General"}})
    table = shared_tables(result)["carequal_packet_metrics"]
    assert table.columns[:2].tolist() == ["partner_id", "partner_name"] and table["run_id"].tolist() == ["r1"]
    pd.DataFrame({"metric": ["readmit"], "n": [40], "events": [3]}).to_csv(extract / "metrics.csv", index=False)
    with pytest.raises(DisclosureError, match="events: 1 displayed cell"):  # 3 events shown
        shared_tables(result)
    pd.DataFrame({"patient_id": ["P1"], "n": [40]}).to_csv(extract / "metrics.csv", index=False)
    with pytest.raises(DisclosureError, match="carequal_packet_metrics has patient-level column"):
        shared_tables(result)


def test_typed_columns_become_the_contracts_text():
    assert _as_text(pa.array([dt.date(2024, 3, 1), None])).to_pylist() == ["2024-03-01", None]
    stamps = pa.array([dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 1, 13, 5)])
    assert _as_text(stamps).to_pylist() == ["2024-03-01", "2024-03-01 13:05:00"]
    assert _as_text(pa.array([True, False])).to_pylist() == ["true", "false"]
    assert _as_text(pa.array([383, None], pa.int32())).to_pylist() == ["383", None]
    assert _as_text(pa.array([9.63, 15900.0])).to_pylist() == ["9.63", "15900"]
    assert _as_text(pa.array(["", "x"])).to_pylist() == [None, "x"]  # empty text is missing, as in a CSV
    assert type_problem("date", pa.int64()) is not None and type_problem("int", pa.date32()) is not None
    assert type_problem("bool", pa.int16()) is None and type_problem("date", pa.string()) is None


# ------------------------------------------------------------------------------ SQLAlchemy, on SQLite


def _sqlite_sample(path: Path) -> None:
    """The sample in SQLite under other names (typed columns, coded settings, a view over two tables)."""
    raw = read_tables(SAMPLE)
    with sqlite3.connect(path) as db:
        fac = raw["facilities"].rename(columns=str.upper)
        fac["SETTING"] = fac["SETTING"].map({"acute": "H", "snf": "N", "irf": "R", "ltch": "L", "hha": "A"})
        fac["BEDS"] = pd.to_numeric(fac["BEDS"]).astype("Int64")
        fac.to_sql("fac", db, index=False)
        raw["patients"].to_sql("pat", db, index=False)
        stays = raw["stays"]
        stays.drop(columns=["principal_dx", "secondary_dx"]).to_sql("stay_core", db, index=False)
        stays[["stay_id", "principal_dx", "secondary_dx"]].to_sql("stay_dx", db, index=False)
        db.execute("CREATE VIEW stays_view AS SELECT c.*, d.principal_dx, d.secondary_dx FROM stay_core c "
                   "JOIN stay_dx d ON d.stay_id = c.stay_id")
        raw["enrollment"].to_sql("enr", db, index=False)


def _sqlite_mapping(path: Path, db: Path, extra: str = "") -> Path:
    path.write_text(f'[connection]\nurl = "sqlite:///{db}"\nbatch_rows = 5000\n'
                    '[tables.facilities]\ntable = "fac"\n'
                    'columns = { facility_id = "FACILITY_ID", name = "NAME", setting = "SETTING", market = "MARKET", '
                    'is_partner = "IS_PARTNER", partner_since = "PARTNER_SINCE", beds = "BEDS", '
                    'nurse_hours_ppd = "NURSE_HOURS_PPD" }\n'
                    'values.setting = { H = "acute", N = "snf", R = "irf", L = "ltch", A = "hha" }\n'
                    '[tables.patients]\ntable = "pat"\n[tables.stays]\ntable = "stays_view"\n'
                    f'[tables.enrollment]\nquery = "SELECT * FROM enr"\n{extra}')
    return path


def test_sqlalchemy_reads_sqlite_as_the_csv_reader_does(tmp_path):
    db = tmp_path / "dw.sqlite"
    _sqlite_sample(db)
    source = open_source(_sqlite_mapping(tmp_path / "dw.toml", db), progress=False)
    raw = source.read_tables()
    csv = read_tables(SAMPLE)
    del csv["ed_visits"]
    _assert_same_tables(raw, csv)
    assert source.markets() == ["Lakeshore", "Northvale", "Riverton"]
    first = source.fingerprint()
    assert source.counts["stays"] == len(csv["stays"])
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM enr WHERE rowid = (SELECT max(rowid) FROM enr)")
    assert open_source(tmp_path / "dw.toml", progress=False).fingerprint() != first


def test_sqlite_faults_name_the_mapping_key(tmp_path):
    db = tmp_path / "dw.sqlite"
    _sqlite_sample(db)
    with sqlite3.connect(db) as con:  # admission dates as yyyymmdd numbers
        con.execute("CREATE TABLE stay_int AS SELECT *, CAST(replace(admit_date, '-', '') AS INTEGER) AS adm "
                    "FROM stays_view")
    path = _sqlite_mapping(tmp_path / "dw.toml", db)
    path.write_text(path.read_text().replace('table = "stays_view"', 'table = "stay_int"\n'
                                             'columns = { admit_date = "adm" }'))
    with pytest.raises(SourceError) as err:
        open_source(path, progress=False).read_tables()
    assert str(err.value).startswith("tables.stays.columns.admit_date: column adm of main.stay_int holds int64 "
                                     "values; a date column needs a SQL date, timestamp or text")
    path.write_text(path.read_text().replace('table = "pat"', 'table = "patients_tbl"')
                    .replace("SELECT * FROM enr", "SELECT * FROM enrolment"))
    with pytest.raises(SourceError) as err:
        open_source(path, progress=False).plan()
    message = str(err.value)
    assert "tables.patients.table: no table or view patients_tbl in the database; it has main.enr, main.fac, " \
           "main.pat, main.stay_core" in message
    assert "tables.enrollment.query: the query cannot be read: " in message and "enrolment" in message


# ------------------------------------------------------------------------------ PostgreSQL, a real server


@pytest.fixture(scope="module")
def pg():
    """A throw-away server with the sample in the layout of data/sample/warehouse.toml."""
    from pg_server import ServerUnavailable, load_sample, start_server

    try:
        server = start_server()
    except ServerUnavailable as exc:
        if os.environ.get("CAREQUAL_REQUIRE_PG"):
            pytest.fail(f"CAREQUAL_REQUIRE_PG is set but no PostgreSQL server can be started: {exc}")
        pytest.skip(f"no PostgreSQL server can be started here: {exc}")
    try:
        load_sample(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(pg, monkeypatch):
    for name, value in pg.environment().items():
        monkeypatch.setenv(name, value)
    return pg


def _no_password(pg, *texts: str, folders: tuple[Path, ...] = ()) -> None:
    """The password is in no text and no file under the folders (binary files included)."""
    needle = pg.password.encode()
    for text in texts:
        assert pg.password not in text
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), f"the password is in {path}"


def test_check_gives_the_csv_paths_tables(env, capsys):
    source = open_source(MAPPING, progress=False)
    _assert_same_tables(load_tables(source, mode="strict").tables, load_tables(SAMPLE, mode="strict").tables)
    assert cli_main(["check", "--source", str(MAPPING), "--quiet"]) == 0
    from_db = capsys.readouterr()
    assert cli_main(["check", "--data", str(SAMPLE)]) == 0
    from_csv = capsys.readouterr()
    assert "is valid under the data contract" in from_db.out
    # the summaries agree line for line below the first (which names the input and the time)
    assert from_db.out.splitlines()[1:] == from_csv.out.splitlines()[1:]
    _no_password(env, from_db.out, from_db.err)


def test_the_sqlalchemy_path_reads_what_adbc_reads(env, tmp_path):
    path = tmp_path / "sa.toml"
    path.write_text(MAPPING.read_text().replace('password_env = "CAREQUAL_DB_PASSWORD"',
                                                'password_env = "CAREQUAL_DB_PASSWORD"\nreader = "sqlalchemy"'))
    by_sqlalchemy = open_source(path, progress=False).read_tables()
    _assert_same_tables(by_sqlalchemy, open_source(MAPPING, progress=False).read_tables())


def test_ingest_writes_the_csv_paths_dataset(env, tmp_path, capsys):
    assert cli_main(["ingest", "--source", str(MAPPING), "--out", str(tmp_path / "db"), "--quiet"]) == 0
    assert cli_main(["ingest", "--data", str(SAMPLE), "--out", str(tmp_path / "csv")]) == 0
    out = capsys.readouterr()
    _assert_same_tables(read_dataset_tables(tmp_path / "db"), read_dataset_tables(tmp_path / "csv"))
    about = json.loads((tmp_path / "db" / "source.json").read_text())
    assert about["rows"]["stays"] == 29632 and len(about["fingerprint"]) == 64
    _no_password(env, out.out, out.err, folders=(tmp_path,))


def test_the_fingerprint_follows_the_content_signature(env, tmp_path):
    from carequal.inputs import data_fingerprint

    first = data_fingerprint(open_source(MAPPING, progress=False))
    assert data_fingerprint(open_source(MAPPING, progress=False)) == first
    # a code corrected in place: count and max(updated_at) unchanged, so the signature cannot see it (--force)
    env.psql("UPDATE warehouse.claims SET adm_type = '2' WHERE claim_id = 'S00000000001'")
    assert data_fingerprint(open_source(MAPPING, progress=False)) == first
    snapshot = tmp_path / "snapshot.toml"
    snapshot.write_text(MAPPING.read_text().replace('signature = "max(updated_at)"', 'signature = "snapshot"'))
    before = open_source(snapshot, progress=False)
    signed = before.fingerprint()
    env.psql("UPDATE warehouse.claims SET adm_type = NULL, updated_at = now() WHERE claim_id = 'S00000000001'")
    try:
        assert data_fingerprint(open_source(MAPPING, progress=False)) != first  # updated_at moved
        assert open_source(snapshot, progress=False).fingerprint() != signed   # the rows changed
        assert before.read_tables()["stays"].loc[1, "admission_type"] == "2"    # the snapshot as signed
    finally:
        env.psql("UPDATE warehouse.claims SET adm_type = NULL, updated_at = timestamp '2025-01-31 12:00:00' "
                 "WHERE claim_id = 'S00000000001'")
    assert data_fingerprint(open_source(MAPPING, progress=False)) == first


def _bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["password", "host", "table", "column", "type", "query"])
def test_source_faults_are_one_message_naming_the_key(env, tmp_path, capsys, monkeypatch, case):
    text = MAPPING.read_text()
    expected = {
        "password": "connection.url: cannot connect to postgresql://carequal@127.0.0.1:",
        "host": "connection.url: cannot connect to postgresql://carequal@127.0.0.1:1/hospital",
        "table": "tables.facilities.table: no table or view providerz in schema warehouse; it has claim_dx, claims, "
                 "eligibility, er_visits, members, providers, stays_v",
        "column": "tables.stays.columns.admit_date: column ADM_DAT not found in warehouse.stays_v; it has claim_id, "
                  "mbr_id, prvdr_num, adm_dt, dis_dt",
        "type": "tables.stays.columns.discharge_date: column dis_dt of the query holds int32 values; a date column "
                "needs a SQL date, timestamp or text (YYYY-MM-DD) column",
        "query": "tables.enrollment.query: the query cannot be read: ",
    }[case]
    if case == "password":
        monkeypatch.setenv("CAREQUAL_DB_PASSWORD", "not-the-" + env.password)
    elif case == "host":
        monkeypatch.setenv("CAREQUAL_DB_PORT", "1")
    elif case == "table":
        text = text.replace('table = "providers"', 'table = "providerz"')
    elif case == "column":
        text = text.replace('admit_date = "adm_dt"', 'admit_date = "ADM_DAT"')
    elif case == "type":  # discharge dates as yyyymmdd numbers
        query = ("SELECT claim_id, mbr_id, prvdr_num, adm_dt, to_char(dis_dt, 'YYYYMMDD')::int AS dis_dt, "
                 "dschrg_stus, adm_type, prin_dx, prin_poa, sec_dx, sec_poa, prcdr, pmt_amt, updated_at "
                 "FROM warehouse.stays_v")
        text = re.sub(r'table = "stays_v".*', f'query = "{query}"', text)
    elif case == "query":
        text = text.replace("FROM warehouse.eligibility", "FROM warehouse.eligibilty")
    path = _bad(tmp_path, text)
    for command in (["check", "--source", str(path), "--quiet"],
                    ["ingest", "--source", str(path), "--out", str(tmp_path / "ds"), "--quiet"]):
        assert cli_main(command) == 2
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.startswith(f"carequal {command[0]}: SourceError: ")
        assert expected in out.err, out.err
        assert "Traceback" not in out.err
        _no_password(env, out.out, out.err, folders=(tmp_path,))
    if case == "password":
        assert "password authentication failed" in out.err
    if case == "query":
        assert 'relation "warehouse.eligibilty" does not exist' in out.err


@pytest.fixture(scope="module")
def reports(pg, tmp_path_factory):
    """One market's report (one measure) from the database (with --to-db, twice), and partner packets from the
    database (with --to-db): two of the agreement's partners, a hospital and a home health agency (test_packet
    renders all seven from the CSV files)."""
    folder = tmp_path_factory.mktemp("warehouse-reports")
    agreement = agreement_with(["H001001", "A001001"], folder)
    mp = pytest.MonkeyPatch()
    for name, value in pg.environment().items():
        mp.setenv(name, value)
    target = f"{pg.url(password='${CAREQUAL_DB_PASSWORD}')}/bi"
    # one work folder: the packets' run reuses the inputs the market run prepared from the database
    common = ["--period", "2024", "--quiet", "--work", str(folder / "work")]
    runs = {}
    import contextlib
    import io

    try:
        # the market report of one measure: its inputs are prepared for every measure, as from the CSV files
        for name, args in (("db", ["--source", str(MAPPING), "--markets", "Riverton", "--measures", "readmission",
                                   "--to-db", target]),
                           ("partner", ["--source", str(MAPPING), "--markets", "Northvale", "--by", "partner",
                                        "--agreement", str(agreement), "--to-db", target])):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(["report", *args, "--out", str(folder / name), *common])
                if name == "db":  # again: the fingerprint is stable, so everything prepared is reused
                    again = io.StringIO()
                    with contextlib.redirect_stdout(again):
                        runs["again"] = cli_main(["report", *args, "--out", str(folder / name), *common]), \
                            again.getvalue()
            manifest = folder / name / "manifest.json"
            runs[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "out": folder / name,
                          "manifest": json.loads(manifest.read_text()) if manifest.is_file() else {}}
    finally:
        mp.undo()
    return {"folder": folder, "runs": runs, "target": target}


def _tables_of(html: str) -> list[str]:
    return re.findall(r"<table.*?</table>", html, flags=re.S)


def test_report_from_the_database_is_the_csv_report(reports, sample_work):
    """A market report is a function of its prepared inputs (the ingested dataset and the national reference) and
    its parameters: the database's inputs are the CSV files' (table for table, model for model, as the batch
    prepares them from data/sample: the session's ``sample_work``), so its reports are the CSV files' reports."""
    db = reports["runs"]["db"]
    assert db["code"] == 0, db["stderr"]
    manifest = db["manifest"]
    assert manifest["markets"]["Riverton"]["status"] == "ok"
    assert manifest["data"]["path"].startswith(str(MAPPING)) and manifest["data"]["fingerprint"] != \
        sample_work.fingerprint
    prepared = reports["folder"] / "work" / "prepared"
    [dataset] = [p for p in prepared.glob("dataset-*") if p.is_dir()]
    [reference] = [p for p in prepared.glob("reference-*") if p.is_dir()]
    _assert_same_tables(read_dataset_tables(dataset), read_dataset_tables(sample_work.dataset))
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(sample_work.reference) for p in sample_work.reference.rglob("*")
                           if p.is_file())
    for name in files:
        a, b = reference / name, sample_work.reference / name
        if a.suffix == ".parquet":  # the same rows, in whatever order the measures were written
            ra, rb = pd.read_parquet(a), pd.read_parquet(b)
            pd.testing.assert_frame_equal(ra.sort_values(list(ra.columns), ignore_index=True),
                                          rb.sort_values(list(rb.columns), ignore_index=True))
        else:
            assert a.read_bytes() == b.read_bytes(), name
    html = (db["out"] / "Riverton.html").read_text()
    assert len(_tables_of(html)) > 5
    code, printed = reports["runs"]["again"]
    assert code == 0 and "(1 unchanged since the last run)" in printed


def _written(pg, name: str) -> pd.DataFrame:
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(pg.url()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM bi.{name}")
        return cur.fetch_arrow_table().to_pandas()


def test_the_write_back_holds_the_suppressed_aggregates_only(pg, reports):
    from carequal.disclosure import check_suppressed
    from carequal.warehouse.writeback import IDENTIFIER_COLUMNS

    db, partner = reports["runs"]["db"], reports["runs"]["partner"]
    assert partner["code"] == 0, partner["stderr"]
    assert "carequal_market_kpis" in db["stdout"] and "carequal_packet_metrics" in partner["stdout"]
    kpis = _written(pg, "carequal_market_kpis")
    recorded = db["manifest"]["markets"]["Riverton"]["kpis"]
    assert set(kpis["measure"]) == {m for m in recorded if m != "flagged"} == {"readmission"}
    identifiers = set(IDENTIFIER_COLUMNS) | {"patient_id", "stay_id", "visit_id"}
    partners = partner["manifest"]["partners"]
    assert {p: r["status"] for p, r in partners.items()} == {"H001001": "ok", "A001001": "ok"}
    for name in ("carequal_market_kpis", "carequal_market_flags", "carequal_packet_metrics",
                 "carequal_packet_about"):
        table = _written(pg, name)
        assert not identifiers & set(table.columns), name
        counts = [c for c in ("n", "events", "cases") if c in table.columns]
        if counts:
            check_suppressed(table.assign(**{c: table[c].astype("Float64") for c in counts}), count_cols=counts,
                             denominator="n" if "events" in counts else None)
    metrics = _written(pg, "carequal_packet_metrics")
    assert set(metrics["partner_id"]) == {p for p, r in partners.items() if r["status"] == "ok"}
    extract = pd.read_csv(partner["out"] / partners[metrics["partner_id"].iloc[0]]["extract_dir"] / "metrics.csv")
    mine = metrics[metrics["partner_id"] == metrics["partner_id"].iloc[0]]
    assert len(mine) == len(extract) and mine["n"].isna().sum() == extract["n"].isna().sum()


def test_no_output_holds_the_password(pg, reports):
    for name, run in reports["runs"].items():
        if name != "again":
            _no_password(pg, run["stdout"], run["stderr"])
    _no_password(pg, reports["runs"]["again"][1])
    work = [p for p in reports["folder"].iterdir() if p.is_dir()]
    _no_password(pg, folders=tuple(work))
