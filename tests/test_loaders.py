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
