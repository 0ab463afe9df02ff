"""Partnership impact: exposure coding by hand, DiD recovering the generator's partnership effect, ITS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.errors import ParameterError
from carequal.impact import (
    RISK_COVARIATES,
    difference_in_differences,
    event_study,
    interrupted_time_series,
    pac_attributed_stays,
    partnership_exposure,
)
from carequal.loaders import load_tables

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_exposure_by_hand():
    fac = pd.DataFrame({"facility_id": ["A", "B", "C"], "is_partner": [True, False, True],
                        "partner_since": pd.to_datetime(["2023-07-01", None, None])})
    rows = pd.DataFrame({"f": ["A", "A", "B", "C"],
                         "d": pd.to_datetime(["2023-06-30", "2023-07-01", "2024-01-01", "2024-01-01"])})
    out = partnership_exposure(rows, fac, facility="f", date="d")
    assert out["exposed"].tolist()[:3] == [False, True, False]  # start day counts as after
    assert pd.isna(out["exposed"].iloc[3])  # a partner with no known start cannot be placed
    assert out["period"].tolist() == ["2023Q2", "2023Q3", "2024Q1", "2024Q1"]


def test_did_recovers_the_generator_partnership_effect(sample_work):
    # the sample's tables, validated from the dataset the session prepared once (the same rows as the CSV files:
    # the sample has no rejected row), rather than parsed and validated from the CSV files again
    tables = load_tables(sample_work.dataset).tables
    truth = json.loads((SAMPLE / "truth.json").read_text())["readmission"]["partnership_effect"]
    data = pac_attributed_stays(tables)
    est = difference_in_differences(data, outcome="unplanned_readmit_30d", facility="pac_facility_id",
                                    covariates=list(RISK_COVARIATES))
    assert est["effect_lower"] <= truth <= est["effect_upper"], est
    assert est["odds_ratio_lower"] < est["odds_ratio"] < est["odds_ratio_upper"]
    assert est["n_exposed"] > 500 and est["n_facilities"] > 20
    linear = difference_in_differences(data, outcome="unplanned_readmit_30d", facility="pac_facility_id",
                                       covariates=list(RISK_COVARIATES), link="linear")
    assert np.sign(linear["effect"]) == np.sign(est["effect"])
    es = event_study(data, tables["facilities"], outcome="unplanned_readmit_30d", facility="pac_facility_id",
                     date="pac_admit_date")
    assert set(es["relative_quarter"]) <= set(range(-4, 5)) and len(es) > 4


def test_did_on_simulated_panel_with_known_effect():
    rng = np.random.default_rng(4)
    n_fac, n = 60, 60_000
    fac = pd.DataFrame({"facility_id": [f"F{i}" for i in range(n_fac)], "is_partner": np.arange(n_fac) < 25,
                        "partner_since": pd.to_datetime(np.where(np.arange(n_fac) < 25, "2023-01-01", None))})
    f = rng.integers(0, n_fac, n)
    date = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 730, n), "D")
    x = rng.normal(size=n)
    u = rng.normal(0, 0.3, n_fac)
    exposed = (f < 25) & (date >= pd.Timestamp("2023-01-01"))
    trend = 0.1 * (date >= pd.Timestamp("2023-01-01"))
    y = rng.random(n) < 1 / (1 + np.exp(-(-1.7 + 0.4 * x + u[f] + trend - 0.35 * exposed)))
    rows = pd.DataFrame({"facility_id": fac["facility_id"].to_numpy()[f], "date": date, "x": x, "y": y})
    data = partnership_exposure(rows, fac, facility="facility_id", date="date")
    est = difference_in_differences(data, outcome="y", facility="facility_id", covariates=["x"])
    assert est["effect_lower"] <= -0.35 <= est["effect_upper"] and est["effect_upper"] < 0


def test_its_recovers_level_change():
    months = pd.date_range("2022-01-01", periods=36, freq="MS")
    t = np.arange(36)
    rate = 0.18 + 0.0005 * t - 0.03 * (months >= "2023-07-01") + np.random.default_rng(1).normal(0, 0.003, 36)
    res = interrupted_time_series(pd.DataFrame({"period": months, "rate": rate, "n": 400}), start="2023-07-01")
    assert res["level_change"] == pytest.approx(-0.03, abs=0.006)
    with pytest.raises(ParameterError, match="inside the series"):
        interrupted_time_series(pd.DataFrame({"period": months, "rate": rate, "n": 400}), start="2030-01-01")


def test_no_exposed_rows_is_an_error():
    data = pd.DataFrame({"y": [True, False], "f": ["A", "B"], "period": "2023Q1", "exposed": [False, False]})
    with pytest.raises(ParameterError, match="no exposed rows"):
        difference_in_differences(data, outcome="y", facility="f")


def test_poisson_did_recovers_a_rate_ratio_and_needs_person_time():
    # 4 units x 8 periods of Poisson counts (thousands each) with rates unit x period x 0.7 for unit 0 from period
    # 4: the estimate is within a few per cent of 0.7 and its interval holds it
    from carequal.impact import difference_in_differences

    rng = np.random.default_rng(5)
    rows = []
    for u in range(4):
        for t in range(8):
            py = 1e5 * (1 + u)
            rate = 0.05 * (1 + 0.2 * u) * (1 + 0.05 * t) * (0.7 if (u == 0 and t >= 4) else 1.0)
            rows.append({"unit": u, "period": t, "events": rng.poisson(rate * py), "py": py,
                         "exposed": u == 0 and t >= 4})
    frame = pd.DataFrame(rows)
    out = difference_in_differences(frame, outcome="events", facility="unit", exposed="exposed", link="poisson",
                                    exposure="py", cluster=False)
    assert out["rate_ratio"] == pytest.approx(0.7, rel=0.05)
    assert out["rate_ratio_lower"] < 0.7 < out["rate_ratio_upper"]
    assert "Poisson" in out["method"] and "model-based" in out["method"]
    with pytest.raises(ParameterError, match="exposure"):
        difference_in_differences(frame, outcome="events", facility="unit", link="poisson")
