"""The national reference: models recover the generator's truth, rows partition by market, inputs are reused
only while the data are unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.cohorts import index_stays
from carequal.errors import ParameterError
from carequal.inputs import data_fingerprint, prepare
from carequal.loaders import load_tables
from carequal.national import (
    MEASURES,
    build_reference,
    read_reference,
    write_reference,
)
from carequal.periods import reporting_period

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PERIOD = ("2024-01-01", "2024-12-31")


@pytest.fixture(scope="module")
def sample_tables(sample_work):
    # the sample's tables, validated from the dataset the session prepared once (the same rows as the CSV files:
    # the sample has no rejected row), rather than parsed and validated from the CSV files again
    return load_tables(sample_work.dataset, mode="quarantine").tables


@pytest.fixture(scope="module")
def reference(sample_tables):
    return build_reference(sample_tables, period_start=PERIOD[0], period_end=PERIOD[1])


def test_rows_cover_every_index_stay_once_per_measure(sample_tables, reference):
    cohort = index_stays(sample_tables["stays"], sample_tables["facilities"], sample_tables["patients"],
                         sample_tables["enrollment"])
    rows = reference.rows
    for name in ("readmission", "mortality"):
        part = rows[rows["measure"] == name]
        assert sorted(part["stay_id"]) == sorted(cohort.index["stay_id"])
        assert (part["unit_id"].to_numpy() == part["stay_id"].map(
            cohort.index.set_index("stay_id")["facility_id"]).to_numpy()).all()
    pac = rows[rows["measure"] == "pac_readmission"]
    assert set(pac["stay_id"]) < set(cohort.index["stay_id"])
    assert set(pac["unit_setting"]) <= {"snf", "irf", "ltch", "hha"}
    fac = sample_tables["facilities"].set_index("facility_id")
    assert (pac["unit_market"].to_numpy() == pac["unit_id"].map(fac["market"]).to_numpy()).all()
    assert rows["in_period"].sum() == (
        (rows["discharge_date"] >= PERIOD[0]) & (rows["discharge_date"] <= PERIOD[1])).sum()


def test_models_recover_the_generator_truth(reference):
    truth = json.loads((SAMPLE / "truth.json").read_text())
    coef = reference.coefficients.set_index(["measure", "term"])
    checks = [("readmission", "dual", truth["readmission"]["coefficients"]["dual_eligible"]),
              ("readmission", "c_heart_failure", truth["readmission"]["coefficients"]["condition_hf"]),
              ("readmission", "c_hip_knee_replacement", truth["readmission"]["coefficients"]["condition_hip_knee"]),
              ("mortality", "age10", truth["post_discharge_death"]["coefficients"]["age10"])]
    for measure, term, true in checks:
        est, se = coef.loc[(measure, term), ["estimate", "se"]]
        assert abs(est - true) < 3 * se, (measure, term, est, se, true)


def test_expected_events_match_observed_in_the_fitting_period(reference):
    fit = reference.rows[reference.rows["in_period"]]
    for name, part in fit.groupby("measure"):
        # with each facility's own intercept the model reproduces the events it was fitted on (score equations);
        # at the average facility (u = 0) it expects a little fewer: E[expit(x'b + u)] > expit(x'b) (Jensen),
        # the CMS convention for "expected"
        assert part["predicted"].sum() == pytest.approx(part["observed"].sum(), rel=0.02), name
        assert 0.85 * part["observed"].sum() < part["expected"].sum() <= 1.01 * part["observed"].sum(), name
    models = reference.models.set_index("measure")
    assert set(models.index) == set(MEASURES)
    assert (models["c"] > 0.55).all() and models["converged"].all()
    assert (models["n"] == fit.groupby("measure").size().reindex(models.index)).all()


def test_read_reference_opens_only_the_market_partition(tmp_path, reference):
    write_reference(reference, tmp_path / "ref")
    whole = read_reference(tmp_path / "ref")
    assert len(whole.rows) == len(reference.rows)
    for market in ("Lakeshore", "Riverton"):  # corrupt the other markets' files
        for part in (tmp_path / "ref" / "rows" / f"unit_market={market}").glob("*.parquet"):
            part.write_bytes(b"not parquet")
    north = read_reference(tmp_path / "ref", market="Northvale")
    expected = reference.rows[reference.rows["unit_market"] == "Northvale"]
    assert len(north.rows) == len(expected) and (north.rows["unit_market"] == "Northvale").all()
    assert sorted(north.rows["stay_id"]) == sorted(expected["stay_id"])
    assert read_reference(tmp_path / "ref", market="Nowhere").rows.empty
    with pytest.raises(ParameterError, match="no national reference"):
        read_reference(tmp_path)


def test_reporting_period_and_unknown_measures(sample_tables):
    with pytest.raises(ParameterError, match="not dates"):
        reporting_period("2024-13-01", "2024-12-31")
    with pytest.raises(ParameterError, match="unknown measure"):
        build_reference(sample_tables, period_start="2024-01-01", period_end="2024-12-31", measures=["los"])
    with pytest.raises(ParameterError, match="needs both outcomes"):
        build_reference(sample_tables, period_start="2030-01-01", period_end="2030-12-31")


def test_prepare_reuses_inputs_only_while_data_and_period_are_unchanged(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    first = prepare(data, tmp_path / "work", period_start=PERIOD[0], period_end=PERIOD[1])
    assert not first.reused and first.markets == ["Lakeshore", "Northvale", "Riverton"]
    assert (first.dataset / "validation_counts.csv").is_file() and first.period == PERIOD
    assert not list((tmp_path / "work").rglob("*.tmp"))  # built aside, moved into place
    again = prepare(data, tmp_path / "work", period_start=PERIOD[0], period_end=PERIOD[1])
    assert again.reused and again.fingerprint == first.fingerprint
    other_period = prepare(data, tmp_path / "work", period_start="2023-01-01", period_end="2023-12-31")
    assert not other_period.reused and other_period.dataset == first.dataset  # same data: one dataset
    assert other_period.reference != first.reference  # another period: its own reference, never shared
    back = prepare(data, tmp_path / "work", period_start=PERIOD[0], period_end=PERIOD[1])
    assert back.reused and back.reference == first.reference  # switching back rebuilds nothing
    # one changed byte of input: new fingerprint, inputs rebuilt
    stays = data / "stays.csv"
    stays.write_text(stays.read_text().replace("2024-12-31", "2024-12-30", 1))
    assert data_fingerprint(data) != first.fingerprint
    changed = prepare(data, tmp_path / "work", period_start="2023-01-01", period_end="2023-12-31")
    assert not changed.reused and changed.fingerprint != first.fingerprint


def test_prepare_default_period_is_the_last_accepted_discharge_year(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    stays = data / "stays.csv"
    lines = stays.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("stay_id")] = "S_FAR_FUTURE"
    row[header.index("discharge_date")] = "9999-12-31"
    stays.write_text("\n".join([*lines, ",".join(row)]) + "\n")
    prepared = prepare(data, tmp_path / "work")
    assert prepared.period == PERIOD  # 9999-12-31 is quarantined (implausible), so it cannot move the period
    assert any("stays" in line for line in prepared.quarantine_summary())


@pytest.fixture(scope="module")
def from_a_dataset(tmp_path_factory, sample_work):
    """``prepare`` given an ingested dataset (a copy of the session's, its stays files cut to the columns the
    reference needs): the input of the two tests below, built once (one reference fit, not two)."""
    import pyarrow.parquet as pq

    from carequal.national import INPUT_COLUMNS

    base = tmp_path_factory.mktemp("from_a_dataset")
    dataset = base / "dataset"
    shutil.copytree(sample_work.dataset, dataset)
    # drop every stays column the reference does not need from the files: prepare must not miss them
    for part in (dataset / "stays").rglob("*.parquet"):
        table = pq.read_table(part)
        keep = [c for c in table.column_names if c in INPUT_COLUMNS["stays"] or c == "market"]
        pq.write_table(table.select(keep), part)
    assert "payment" not in pq.read_table(next((dataset / "stays").rglob("*.parquet"))).column_names
    prepared = prepare(dataset, base / "work", period_start=PERIOD[0], period_end=PERIOD[1])
    return dataset, base / "work", prepared


def test_prepare_accepts_an_ingested_dataset(from_a_dataset, sample_work):
    first = sample_work  # prepare(SAMPLE, <work>, period 2024), done once for the session
    dataset, work, second = from_a_dataset  # prepare(<a copy of first's dataset>, <work>, period 2024)
    assert second.dataset == dataset  # read in place
    assert not [p for p in work.rglob("dataset-*") if p.is_dir()]  # the dataset is not copied
    a = read_reference(first.reference).rows.sort_values(["measure", "stay_id"], ignore_index=True)
    b = read_reference(second.reference).rows.sort_values(["measure", "stay_id"], ignore_index=True)
    np.testing.assert_allclose(a["expected"], b["expected"], rtol=1e-6)
    pd.testing.assert_series_equal(a["stay_id"], b["stay_id"])


def test_prepare_on_a_dataset_reads_only_the_columns_it_needs(from_a_dataset, sample_work):
    _, _, prepared = from_a_dataset  # its stays files hold only the columns the reference needs
    a = read_reference(prepared.reference).rows.sort_values(["measure", "stay_id"], ignore_index=True)
    b = read_reference(sample_work.reference).rows.sort_values(["measure", "stay_id"], ignore_index=True)
    np.testing.assert_allclose(a["expected"], b["expected"], rtol=1e-9)
    assert "read" in prepared.seconds and "validate" not in prepared.seconds  # no second validation


@pytest.mark.parametrize("window", [30, 7])
def test_first_readmit_planned_from_the_windowed_readmissions_is_the_second_pass(sample_tables, window):
    """``first_readmit_planned`` from one window's readmissions (the planned algorithm run again only on the first
    readmissions after the window) is what a second pass with an unbounded window gives, stay for stay."""
    from carequal.measured import first_readmit_planned
    from carequal.measures import readmissions

    t = sample_tables
    index = index_stays(t["stays"], t["facilities"], t["patients"], t["enrollment"]).index
    windowed = readmissions(index, t["stays"], t["facilities"], window_days=window)
    unbounded = readmissions(index, t["stays"], t["facilities"], window_days=100_000)
    got = first_readmit_planned(windowed, window, t["stays"])
    assert got.tolist() == unbounded["readmit_planned"].tolist()
    beyond = windowed["days_to_readmit"].to_numpy() > window
    assert got[beyond].any() and not got[beyond].all()  # the path after the window is taken, both ways


def test_index_stays_rows_among_the_stays_give_what_the_id_look_ups_give(sample_tables):
    """``Cohort.stay_rows`` (each acute stay's row in the stays given) is where each stay's id is; every measure
    given the index stays' rows instead of looking their ids up returns the same frame."""
    from carequal.cohorts import post_acute_episodes
    from carequal.measures import days_at_home, readmissions
    from carequal.risk import risk_covariates

    t = sample_tables
    stays = t["stays"].iloc[::-1].reset_index(drop=True)  # rows not in the stays' time order
    cohort = index_stays(stays, t["facilities"], t["patients"], t["enrollment"])
    assert stays["stay_id"].to_numpy()[cohort.stay_rows].tolist() == cohort.stays["stay_id"].tolist()
    index, rows = cohort.index, cohort.stay_rows[cohort.stays["is_index"].to_numpy(dtype=bool)]
    pd.testing.assert_frame_equal(readmissions(index, stays, t["facilities"], index_rows=rows),
                                  readmissions(index, stays, t["facilities"]))
    pd.testing.assert_frame_equal(days_at_home(index, stays, t["facilities"], t["patients"], index_rows=rows),
                                  days_at_home(index, stays, t["facilities"], t["patients"]))
    pd.testing.assert_frame_equal(
        post_acute_episodes(stays, t["facilities"], hospital_stays=index, hospital_rows=rows),
        post_acute_episodes(stays, t["facilities"], hospital_stays=index))
    pd.testing.assert_frame_equal(risk_covariates(index, stays, stay_rows=rows), risk_covariates(index, stays))


def test_the_measured_cohort_from_validations_patient_look_ups_is_the_cohort_from_its_own():
    """``measure_cohort(known_patients=ValidatedTables.patient_rows)`` (index_stays' and DTC's patients from
    validation's foreign-key look-ups) builds the same cohort, row for row, as looking each patient up again."""
    from carequal.measured import measure_cohort

    validated = load_tables(SAMPLE, mode="quarantine")
    reused = measure_cohort(dict(validated.tables), known_patients=validated.patient_rows)
    own = measure_cohort(dict(validated.tables))
    pd.testing.assert_frame_equal(reused.rows, own.rows)
    pd.testing.assert_frame_equal(reused.attrition, own.attrition)
    # the look-ups given are the ones used: every row pointed at the first patient makes another cohort
    wrong = measure_cohort(dict(validated.tables),
                           known_patients={t: np.zeros_like(r) for t, r in validated.patient_rows.items()})
    assert not wrong.rows["age"].equals(own.rows["age"]) or len(wrong.rows) != len(own.rows)
