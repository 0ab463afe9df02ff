"""Everyday input faults, driven through the command line as a user meets them.

Each test builds one bad input — from the tiny valid tables of ``conftest.valid_raw_tables`` written as CSV, or
from a copy of the bundled sample (``data/sample``) — runs ``carequal check`` (and, for faults that must stop a
run before any report is written, ``carequal report``) and asserts what the user sees: exit status 2, one line on
stderr that starts ``carequal <command>:`` and names the file or table, the column and the rule, no traceback,
and no ``index.html`` or ``manifest.json`` in ``--out`` that could pass for a finished report set.
"""

from __future__ import annotations

import builtins
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from carequal.cli import main
from conftest import valid_raw_tables

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
DESYNPUF = ROOT / "tests" / "data" / "cms" / "desynpuf"


def write_tables(folder: Path, tables: dict[str, pd.DataFrame] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (tables or valid_raw_tables()).items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.fixture
def tiny(tmp_path) -> Path:
    """The tiny valid tables as CSV files."""
    return write_tables(tmp_path / "data")


@pytest.fixture
def sample(tmp_path) -> Path:
    """A copy of the bundled sample (contract tables only) to spoil."""
    data = tmp_path / "sample"
    data.mkdir()
    for name in ("facilities", "patients", "stays", "enrollment", "ed_visits"):
        shutil.copy(SAMPLE / f"{name}.csv", data / f"{name}.csv")
    return data


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(code: int, out: str, err: str, command: str, *named: str) -> str:
    """Assert the one-line refusal and return that line."""
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"carequal {command}: "), line
    for text in named:
        assert text in line, (text, line)
    return line


def report(capsys, data: Path, out: Path) -> tuple[int, str, str]:
    return run(capsys, "report", "--data", str(data), "--out", str(out), "--period", "2024", "--quiet")


def nothing_published(out: Path) -> None:
    """No index, manifest or report in ``--out`` (its ``.carequal/`` lock and staging folder may remain)."""
    assert not (out / "index.html").exists()
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("*.html"))


def replace_bytes(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def drop_column(path: Path, column: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.drop(columns=[column]).to_csv(path, index=False)


# ----------------------------------------------------------------------------------------- 1. missing column


def test_report_patients_without_market_column(sample, tmp_path, capsys):
    # the batch reads patients.market alone to list the markets before anything else
    drop_column(sample / "patients.csv", "market")
    out = tmp_path / "reports"
    line = refused(*report(capsys, sample, out), "report", "patients.csv", "required column(s) missing: market",
                   "rule missing_column", "the file has patient_id, birth_date, sex")
    assert "Usecols" not in line
    nothing_published(out)
    assert not out.exists()  # refused before the run took its lock


def test_check_stays_without_discharge_date(tiny, capsys):
    drop_column(tiny / "stays.csv", "discharge_date")
    refused(*run(capsys, "check", "--data", str(tiny)), "check", "stays.csv: required column(s) missing: "
            "discharge_date (table stays, rule missing_column); the file has stay_id, patient_id, facility_id, "
            "admit_date, discharge_status")


# ------------------------------------------------------------------------------------------- 2. empty file


def test_check_empty_stays_file(tiny, capsys):
    (tiny / "stays.csv").write_bytes(b"")
    refused(*run(capsys, "check", "--data", str(tiny)), "check", "stays.csv is empty (no header row)",
            "table stays", "rule empty_file")


def test_report_empty_stays_file(sample, tmp_path, capsys):
    (sample / "stays.csv").write_bytes(b"")
    out = tmp_path / "reports"
    refused(*report(capsys, sample, out), "report", "stays.csv is empty (no header row)", "rule empty_file")
    nothing_published(out)


# ------------------------------------------------------------------------------------ 3. table with no rows


@pytest.mark.parametrize("table", ["facilities", "patients", "stays"])
@pytest.mark.parametrize("mode", ["strict", "quarantine"])
def test_check_required_table_with_header_only(tiny, capsys, table, mode):
    frame = valid_raw_tables()[table]
    frame.iloc[:0].to_csv(tiny / f"{table}.csv", index=False)
    refused(*run(capsys, "check", "--data", str(tiny), "--mode", mode), "check",
            f"{table}: the table has no rows", "rule table_empty")


def test_report_stays_with_header_only(sample, tmp_path, capsys):
    header = (sample / "stays.csv").read_text().splitlines()[0]
    (sample / "stays.csv").write_text(header + "\n")
    out = tmp_path / "reports"
    refused(*report(capsys, sample, out), "report", "stays: the table has no rows", "rule table_empty")
    nothing_published(out)


def test_report_patients_with_header_only(sample, tmp_path, capsys):
    header = (sample / "patients.csv").read_text().splitlines()[0]
    (sample / "patients.csv").write_text(header + "\n")
    out = tmp_path / "reports"
    refused(*report(capsys, sample, out), "report", "patients.csv", "no rows", "rule table_empty")
    nothing_published(out)


# -------------------------------------------------------------------------------------------- 4. not UTF-8


def test_check_latin1_byte_is_located(tiny, capsys):
    # header "facility_id,name,setting,market,is_partner,partner_since,beds\n" is 62 bytes; line 2 starts
    # "H1,North G" (10 bytes), so the first é (0xE9) is byte 11 of line 2, offset 62 + 10 = 72
    replace_bytes(tiny / "facilities.csv", b"North General", "North Général".encode("latin-1"))
    line = refused(*run(capsys, "check", "--data", str(tiny)), "check", "facilities.csv", "not UTF-8",
                   "byte 0xE9 on line 2 (byte 11 of the line, offset 72 in the file)", "table facilities",
                   "rule not_utf8", "Save it as UTF-8")
    assert "Général".encode("latin-1").decode("latin-1") not in line  # no value is quoted


def test_report_latin1_facilities_end_to_end(sample, tmp_path):
    replace_bytes(sample / "facilities.csv", b"Northvale General", "Northvale Général".encode("latin-1"))
    out = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "carequal.cli", "report", "--data", str(sample), "--out", str(out),
                           "--period", "2024", "--quiet"], capture_output=True, text=True, timeout=600)
    refused(proc.returncode, proc.stdout, proc.stderr, "report", "facilities.csv", "line 2", "rule not_utf8")
    nothing_published(out)


# ------------------------------------------------------------------------------------ 5. number too large


def test_check_beds_beyond_exact_integers(tiny, capsys):
    tables = valid_raw_tables()
    tables["facilities"].loc[3, "beds"] = "99999999999999999999"  # S2 (no stays refer to it)
    write_tables(tiny, tables)
    code, out, err = run(capsys, "check", "--data", str(tiny))
    assert code == 2 and "Traceback" not in out + err
    assert err.startswith("carequal check: SchemaError: the data break 1 contract rule(s)")
    assert "facilities.beds: 1 row fail rule out_of_range" in err and "examples facility_id = S2" in err
    code, out, err = run(capsys, "check", "--data", str(tiny), "--mode", "quarantine")
    assert code == 0 and err == ""
    assert "loaded with 1 row(s) quarantined" in out
    assert "facilities   beds out_of_range       1 facility_id = S2" in out  # the "Quarantined by rule" table


def test_check_infinite_payment(tiny, capsys):
    tables = valid_raw_tables()
    tables["stays"].loc[2, "payment"] = "1e400"  # A3; float64 reads it as infinity
    write_tables(tiny, tables)
    code, out, err = run(capsys, "check", "--data", str(tiny))
    assert code == 2 and "Traceback" not in out + err
    assert "stays.payment: 1 row fail rule out_of_range" in err and "examples stay_id = A3" in err


# ---------------------------------------------------------------------------------------- 6. the relatives


def test_check_unreadable_file(tiny, capsys, monkeypatch):
    # tests run as root, for whom chmod 000 does not block reading: the operating system's refusal is simulated
    target = tiny / "stays.csv"
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if Path(str(file)) == target:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    line = refused(*run(capsys, "check", "--data", str(tiny)), "check", str(target), "cannot read the file",
                   "permission denied")
    assert "write" not in line


def test_check_semicolon_separated(tiny, capsys):
    frame = valid_raw_tables()["stays"]
    frame.to_csv(tiny / "stays.csv", index=False, sep=";")
    refused(*run(capsys, "check", "--data", str(tiny)), "check", "stays.csv",
            "looks semicolon-separated", "carequal reads comma-separated CSV", "rule delimiter")


def test_report_semicolon_separated_stays(sample, tmp_path, capsys):
    frame = pd.read_csv(sample / "stays.csv", dtype=str, keep_default_na=False)
    frame.to_csv(sample / "stays.csv", index=False, sep=";")
    out = tmp_path / "reports"
    refused(*report(capsys, sample, out), "report", "stays.csv", "looks semicolon-separated", "rule delimiter")
    nothing_published(out)


def test_check_byte_order_mark_validates_like_without(tmp_path, capsys):
    plain = write_tables(tmp_path / "plain")
    bom = write_tables(tmp_path / "bom")
    for name in ("facilities", "stays"):
        path = bom / f"{name}.csv"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    gz = bom / "patients.csv"
    with gzip.open(bom / "patients.csv.gz", "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + gz.read_bytes())
    gz.unlink()

    def checked(folder):
        code, out, err = run(capsys, "check", "--data", str(folder))
        assert code == 0 and err == ""
        return out.split("\n", 1)[1]  # the summary, without the first line (folder name and seconds)

    assert checked(bom) == checked(plain)
    from carequal.loaders import load_tables

    a, b = load_tables(plain), load_tables(bom)
    for table in a.tables:
        pd.testing.assert_frame_equal(a.tables[table], b.tables[table])
    assert list(b.tables["facilities"].columns)[0] == "facility_id"


def test_check_duplicate_header_name(tiny, capsys):
    path = tiny / "facilities.csv"
    lines = path.read_text().splitlines()
    lines[0] = lines[0] + ",beds"
    lines[1:] = [line + ",1" for line in lines[1:]]
    path.write_text("\n".join(lines) + "\n")
    refused(*run(capsys, "check", "--data", str(tiny)), "check", "facilities.csv",
            "column name(s) repeated in the header: beds", "rule duplicate_column")


def test_check_row_with_an_extra_field(tiny, capsys):
    path = tiny / "enrollment.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2] + ",surplus"  # the second data row, line 3 of the file
    path.write_text("\n".join(lines) + "\n")
    refused(*run(capsys, "check", "--data", str(tiny)), "check", "enrollment.csv", "Expected 4 fields in line 3, "
            "saw 5", "table enrollment", "rule csv_format")


def test_check_corrupt_parquet(tiny, capsys):
    (tiny / "stays.csv").unlink()
    (tiny / "stays.parquet").write_bytes(b"not parquet")
    refused(*run(capsys, "check", "--data", str(tiny)), "check", "stays.parquet", "cannot be read as Parquet",
            "rule parquet_format")


def test_mixed_date_formats_quarantine_the_non_iso_dates(tiny, tmp_path, capsys):
    # 2024-01-06 and 01/06/2024 in one column: the second is quarantined, once, with the format it needs
    tables = valid_raw_tables()
    tables["stays"].loc[1, "admit_date"] = "01/06/2024"  # A2
    write_tables(tiny, tables)
    code, out, err = run(capsys, "check", "--data", str(tiny))
    assert code == 2 and "Traceback" not in out + err
    assert err.startswith("carequal check: SchemaError: the data break 1 contract rule(s)")
    assert ("stays.admit_date: 1 row fail rule type (value cannot be read as the column's type; expected a date "
            "in the form YYYY-MM-DD); examples stay_id = A2") in err
    assert "not_nullable" not in err
    assert run(capsys, "ingest", "--data", str(tiny), "--out", str(tmp_path / "ds"))[0] == 0
    q = pd.read_csv(tmp_path / "ds" / "quarantine_stays.csv", dtype=str)
    assert q[["stay_id", "reason"]].values.tolist() == [
        ["A2", "admit_date: type (expected a date in the form YYYY-MM-DD)"]]


def test_wrong_values_of_every_column_type_are_quarantined_with_a_reason_each(tiny, tmp_path, capsys):
    tables = valid_raw_tables()
    tables["facilities"].loc[3, "beds"] = "three hundred"  # S2: int
    tables["stays"].loc[0, "admission_type"] = "7"  # A1: category
    tables["patients"].loc[2, "dual_eligible"] = "maybe"  # P3: bool
    tables["stays"].loc[3, "payment"] = "$15,000"  # A4: float (money)
    tables["stays"].loc[4, "discharge_date"] = "9 March 2024"  # A5: date
    write_tables(tiny, tables)
    assert run(capsys, "ingest", "--data", str(tiny), "--out", str(tmp_path / "ds"))[0] == 0
    reasons = {}
    for table, key in (("facilities", "facility_id"), ("patients", "patient_id"), ("stays", "stay_id")):
        q = pd.read_csv(tmp_path / "ds" / f"quarantine_{table}.csv", dtype=str)
        reasons.update(dict(zip(q[key], q["reason"], strict=True)))
    assert reasons["S2"] == "beds: type (expected a whole number)"
    assert reasons["A1"] == "admission_type: allowed_values (allowed: 1, 2, 3, 4, 5, 9)"
    assert reasons["P3"] == "dual_eligible: type (expected true/false (or 1/0, yes/no, t/f, y/n))"
    assert reasons["A4"] == "payment: type (expected a number)"
    assert reasons["A5"] == "discharge_date: type (expected a date in the form YYYY-MM-DD)"


# ------------------------------------------------------------------------------------- 7. implausible dates


def test_check_discharge_in_9999(tiny, capsys):
    tables = valid_raw_tables()
    tables["stays"].loc[5, "discharge_date"] = "9999-12-31"  # A6 of P3, who is alive: no other rule catches it
    write_tables(tiny, tables)
    code, out, err = run(capsys, "check", "--data", str(tiny))
    assert code == 2 and "Traceback" not in out + err
    assert "stays.discharge_date: 1 row fail rule date_implausible" in err
    assert "examples stay_id = A6" in err and "plausible: 1900-01-01 to " in err


# ------------------------------------------------------------------------------------------ 8. desynpuf notes


def test_desynpuf_prints_notes_not_python_warnings(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "carequal.cli", "desynpuf", "--claims", str(DESYNPUF), "--out",
                           str(tmp_path / "tables")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no "desynpuf.py:685: DataQualityWarning" and its source line
    lines = proc.stdout.splitlines()
    assert "  stays.principal_dx_unmappable: dropped, 13 stays (ICD9_DGNS_CD_1 has no ICD-10-CM GEM target: " \
           "principal_dx left empty (the contract quarantines the stay))" in lines
    assert "  stays.secondary_dx_unmappable: dropped, 491 codes (secondary ICD-9 codes without an ICD-10-CM GEM " \
           "target, left out of secondary_dx)" in lines


def test_desynpuf_empty_claims_file(tmp_path, capsys):
    claims = tmp_path / "claims"
    claims.mkdir()
    for path in DESYNPUF.glob("*Beneficiary*.csv"):
        shutil.copy(path, claims / path.name)
    (claims / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv").write_bytes(b"")
    refused(*run(capsys, "desynpuf", "--claims", str(claims), "--out", str(tmp_path / "out")), "desynpuf",
            "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv is empty (no header row)", "rule empty_file")
