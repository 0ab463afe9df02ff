"""Loaders: CSV and Parquet, market-partitioned datasets, and the command line on good and bad data."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from carequal.cli import main
from carequal.errors import ParameterError, SchemaError
from carequal.loaders import (
    load_tables,
    markets_in_dataset,
    read_market,
    read_tables,
    summarise,
    write_market_dataset,
)
from carequal.schema import validate_tables
from conftest import valid_raw_tables


def write_csvs(tables, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_csv_and_parquet_give_the_same_tables(tmp_path):
    raw = valid_raw_tables()
    from_csv = load_tables(write_csvs(raw, tmp_path / "csv"))
    pq = tmp_path / "pq"
    pq.mkdir()
    for name, frame in from_csv.tables.items():
        frame.to_parquet(pq / f"{name}.parquet", index=False)
    from_pq = load_tables(pq)
    for name in from_csv.tables:
        pd.testing.assert_frame_equal(from_csv.tables[name], from_pq.tables[name], check_dtype=False)


def test_csv_text_na_is_a_value_not_missing(tmp_path):
    raw = valid_raw_tables()
    raw["facilities"]["market"] = ["NA", "South", "NA", "South"]
    raw["patients"]["market"] = ["NA", "South", "NA"]
    out = load_tables(write_csvs(raw, tmp_path))
    assert (out.tables["facilities"]["market"] == "NA").sum() == 2


def test_missing_file_is_named(tmp_path):
    raw = valid_raw_tables()
    del raw["enrollment"]
    with pytest.raises(SchemaError, match="no file for required table.*enrollment"):
        read_tables(write_csvs(raw, tmp_path))


def test_market_dataset_reads_one_market_only(tmp_path):
    validated = validate_tables(valid_raw_tables())
    dataset = tmp_path / "dataset"
    written = write_market_dataset(validated, dataset)
    assert written["stays"] == 6
    assert markets_in_dataset(dataset) == ["North", "South"]
    # corrupt the South partitions of the patient-level tables: reading North must not open them
    # (facilities, a small table, are read whole so out-of-market stays keep their setting)
    for table in ("patients", "stays", "enrollment", "ed_visits"):
        for part in dataset.glob(f"{table}/market=South/*.parquet"):
            part.write_bytes(b"not parquet")
    north = read_market(dataset, "North")
    # North residents are P1 and P3; all their stays come along, including any at out-of-market facilities
    assert sorted(north.tables["patients"]["patient_id"]) == ["P1", "P3"]
    assert sorted(north.tables["stays"]["stay_id"]) == ["A1", "A2", "A3", "A6"]
    assert set(north.tables["facilities"]["facility_id"]) == {"H1", "H2", "S1", "S2"}
    assert (north.tables["patients"]["market"] == "North").all()
    with pytest.raises(Exception):  # noqa: B017 - the corrupt partition really is unreadable
        read_market(dataset, "South")


def test_unknown_market_lists_the_choices(tmp_path):
    dataset = tmp_path / "d"
    write_market_dataset(validate_tables(valid_raw_tables()), dataset)
    with pytest.raises(ParameterError, match="market 'West' is not in .*markets: North, South"):
        read_market(dataset, "West")


def test_summarise_counts(raw_tables):
    summary = summarise(validate_tables(raw_tables)).set_index("market")
    assert summary.loc["total", "stays"] == 6
    assert summary.loc["North", "facilities"] == 2
    assert summary.loc["total", "acute_stays"] == 5
    assert summary.loc["South", "patients"] == 1


def test_cli_check_ok(tmp_path, capsys):
    folder = write_csvs(valid_raw_tables(), tmp_path)
    assert main(["check", "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "valid under the data contract" in out
    assert "stays" in out and "North" in out


def test_cli_bad_data_exits_2_with_one_clear_message(tmp_path):
    raw = valid_raw_tables()
    raw["stays"].loc[0, "discharge_date"] = "2023-12-01"
    folder = write_csvs(raw, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "carequal.cli", "check", "--data", str(folder)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "stays.discharge_date: 1 row fail rule discharge_before_admit" in proc.stderr
    assert "examples stay_id = A1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_quarantine_mode_reports_reasons(tmp_path, capsys):
    raw = valid_raw_tables()
    raw["stays"].loc[0, "discharge_date"] = "2023-12-01"
    folder = write_csvs(raw, tmp_path)
    assert main(["check", "--data", str(folder), "--mode", "quarantine"]) == 0
    out = capsys.readouterr().out
    assert "discharge_before_admit" in out


def test_cli_ingest_writes_partitions(tmp_path):
    folder = write_csvs(valid_raw_tables(), tmp_path / "in")
    assert main(["ingest", "--data", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert markets_in_dataset(tmp_path / "out") == ["North", "South"]


def test_market_names_with_spaces_and_slashes_round_trip(tmp_path):
    raw = valid_raw_tables()
    for table in ("facilities", "patients"):
        raw[table]["market"] = raw[table]["market"].replace({"North": "Cedar Falls / East"})
    dataset = tmp_path / "d"
    write_market_dataset(validate_tables(raw), dataset)
    assert markets_in_dataset(dataset) == ["Cedar Falls / East", "South"]
    cedar = read_market(dataset, "Cedar Falls / East")
    assert sorted(cedar.tables["patients"]["patient_id"]) == ["P1", "P3"]
    assert (cedar.tables["patients"]["market"] == "Cedar Falls / East").all()


# ------------------------------------------------------------------------- faults of a file, found on reading


def test_read_table_names_missing_columns_asked_for(tmp_path):
    from carequal.loaders import read_table

    raw = valid_raw_tables()["patients"].drop(columns=["market"])
    raw.to_csv(tmp_path / "patients.csv", index=False)
    with pytest.raises(SchemaError) as info:
        read_table(tmp_path / "patients.csv", columns=["market"])
    assert str(info.value) == (
        f"{tmp_path / 'patients.csv'}: required column(s) missing: market (table patients, rule missing_column); "
        "the file has patient_id, birth_date, sex, dual_eligible, death_date, population_group. See "
        "data/README.md for the contract")
    raw.to_parquet(tmp_path / "patients.parquet", index=False)
    with pytest.raises(SchemaError, match=r"patients\.parquet: required column\(s\) missing: market \(table "
                                          r"patients, rule missing_column\)"):
        read_table(tmp_path / "patients.parquet", columns=["market"])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path, suffix):
    import gzip

    from carequal.loaders import read_table

    text = b"\xef\xbb\xbffacility_id,name\nH1,North\n"
    path = tmp_path / f"facilities{suffix}"
    path.write_bytes(gzip.compress(text) if suffix == ".csv.gz" else text)
    assert list(read_table(path).columns) == ["facility_id", "name"]
    assert read_table(path, columns=["facility_id"])["facility_id"].tolist() == ["H1"]


def test_not_utf8_in_a_gzip_file_is_located_in_the_decompressed_text(tmp_path):
    import gzip

    from carequal.loaders import read_table

    # "a,b\n" is 4 bytes, "1,2\n" 4 more; line 3 is "3,\xe9\n": the bad byte is byte 3 of line 3, offset 10
    path = tmp_path / "stays.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n3,\xe9\n"))
    with pytest.raises(SchemaError, match=r"byte 0xE9 on line 3 \(byte 3 of the line, offset 10 in the file\) is "
                                          r"not UTF-8 \(table stays, rule not_utf8\)"):
        read_table(path)


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_another_separator_is_named(tmp_path, sep, name):
    from carequal.loaders import read_table

    valid_raw_tables()["stays"].to_csv(tmp_path / "stays.csv", index=False, sep=sep)
    with pytest.raises(SchemaError, match=rf"looks {name}-separated \(table stays, rule delimiter\)"):
        read_table(tmp_path / "stays.csv")


def test_blank_lines_only_is_an_empty_file(tmp_path):
    from carequal.loaders import read_table

    (tmp_path / "stays.csv").write_text("\n  \n\n")
    with pytest.raises(SchemaError, match=r"^stays\.csv is empty \(no header row\): .* \(table stays, rule "
                                          r"empty_file\)"):
        read_table(tmp_path / "stays.csv")


def test_a_repeated_name_is_refused_not_renamed(tmp_path):
    from carequal.loaders import read_table

    (tmp_path / "stays.csv").write_text("stay_id,payment,payment\nA1,1,2\n")
    with pytest.raises(SchemaError, match=r"repeated in the header: payment \(table stays, rule duplicate_column\)"):
        read_table(tmp_path / "stays.csv")


def test_read_csv_text_can_keep_empty_cells_as_text(tmp_path):
    from carequal.loaders import read_csv_text

    (tmp_path / "claims.csv").write_text("a,b\n1,\nNA,2\n")
    kept = read_csv_text(tmp_path / "claims.csv", empty_as_missing=False)
    assert kept.values.tolist() == [["1", ""], ["NA", "2"]]
    assert read_csv_text(tmp_path / "claims.csv")["b"].isna().tolist() == [True, False]
    (tmp_path / "claims.csv").write_bytes(b"")
    with pytest.raises(SchemaError, match=r"claims\.csv is empty \(no header row\): .* \(rule empty_file\)"):
        read_csv_text(tmp_path / "claims.csv")  # not a contract table: no table named


def test_an_unreadable_input_says_read_not_write(tmp_path, monkeypatch):
    import builtins

    from carequal.inputs import data_fingerprint

    write_csvs(valid_raw_tables(), tmp_path)
    target = tmp_path / "stays.csv"
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if str(file) == str(target):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    expected = f"{target}: cannot read the file (permission denied); give the user running carequal read access to it"
    with pytest.raises(ParameterError) as info:
        data_fingerprint(tmp_path)
    assert str(info.value) == expected
    with pytest.raises(ParameterError) as info:
        read_tables(tmp_path)
    assert str(info.value) == expected
