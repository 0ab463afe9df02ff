"""All-markets population view (carequal.population): hand-worked rates, O/E and suppression, and the sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from carequal.cohorts import person_time, standard_population
from carequal.disclosure import check_suppressed
from carequal.errors import ParameterError
from carequal.intervals import wilson
from carequal.population import (
    UTILISATION_MEASURES,
    market_comparison,
    outcome_by_market,
    outcome_trends,
    utilisation_by_market,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
ACUTE, PAC, ED = UTILISATION_MEASURES
W = standard_population().set_index("age_band")["population"]


# ------------------------------------------------------------------------------------------------ builders


def make_tables(people: list[dict]) -> dict[str, pd.DataFrame]:
    """Contract-like tables from a list of people: id, market, sex, birth, enrolled (start, end) and lists of
    acute / post-acute admission dates and ED visit dates."""
    patients = pd.DataFrame({
        "patient_id": [p["id"] for p in people], "market": [p["market"] for p in people],
        "sex": [p.get("sex", "F") for p in people], "birth_date": pd.to_datetime([p["birth"] for p in people]),
        "death_date": pd.to_datetime([p.get("death") for p in people])})
    enrollment = pd.DataFrame({
        "patient_id": [p["id"] for p in people],
        "start_date": pd.to_datetime([p.get("enrolled", ("2024-01-01", "2024-12-31"))[0] for p in people]),
        "end_date": pd.to_datetime([p.get("enrolled", ("2024-01-01", "2024-12-31"))[1] for p in people])})
    stays, visits = [], []
    for p in people:
        stays += [(p["id"], "H1", d) for d in p.get("acute", [])]
        stays += [(p["id"], "S1", d) for d in p.get("pac", [])]
        visits += [(p["id"], d) for d in p.get("ed", [])]
    stays = pd.DataFrame(stays, columns=["patient_id", "facility_id", "admit_date"])
    stays["admit_date"] = pd.to_datetime(stays["admit_date"])
    visits = pd.DataFrame(visits, columns=["patient_id", "visit_date"])
    visits["visit_date"] = pd.to_datetime(visits["visit_date"])
    facilities = pd.DataFrame({"facility_id": ["H1", "S1"], "setting": ["acute", "snf"]})
    return {"patients": patients, "enrollment": enrollment, "stays": stays, "ed_visits": visits,
            "facilities": facilities}


def cohort(market: str, k: int, *, acute: int = 0, birth: str = "1950-01-01") -> list[dict]:
    """k women of one market enrolled through 2024; the first has ``acute`` admissions on 1 June."""
    return [{"id": f"{market}{i}", "market": market, "birth": birth,
             "acute": ["2024-06-01"] * (acute if i == 0 else 0)} for i in range(k)]


def row(table: pd.DataFrame, **keys) -> pd.Series:
    mask = np.ones(len(table), dtype=bool)
    for col, value in keys.items():
        mask &= (table[col] == value).to_numpy()
    assert mask.sum() == 1, keys
    return table[mask].iloc[0]


# --------------------------------------------------------------------------------------------- utilisation


def test_standardised_rate_worked_by_hand():
    # North: two women enrolled all of 2024 (366 days = 366/365.25 person-years each), aged 74 and 79 all
    # year, with 20 and 40 acute admissions. Stratum rates per 1,000 PY: 20/py and 40/py; the 2000 U.S.
    # standard weights of 65-74 and 75-84, renormalised over the two bands present.
    people = [{"id": "a", "market": "North", "birth": "1950-01-01", "acute": ["2024-03-01"] * 20,
               "ed": ["2024-04-01"] * 12},
              {"id": "b", "market": "North", "birth": "1945-01-01", "acute": ["2024-03-01"] * 40,
               "pac": ["2024-05-01"] * 15}]
    out = utilisation_by_market(make_tables(people), min_cell=2, total=None)
    py = 366 / 365.25
    w1, w2 = W["65-74"], W["75-84"]
    acute = row(out, market="North", measure=ACUTE)
    assert acute["events"] == 60
    assert acute["person_years"] == pytest.approx(2 * py)
    assert acute["crude_rate"] == pytest.approx(1000 * 60 / (2 * py))
    assert acute["rate"] == pytest.approx(1000 * (w1 * 20 / py + w2 * 40 / py) / (w1 + w2))
    # post-acute: only the 79-year-old (15 events, weight w2); ED: only the 74-year-old (12 events, weight w1)
    assert row(out, measure=PAC)["rate"] == pytest.approx(1000 * (w2 * 15 / py) / (w1 + w2))
    assert row(out, measure=ED)["rate"] == pytest.approx(1000 * (w1 * 12 / py) / (w1 + w2))
    assert list(out["measure"]) == [ACUTE, PAC, ED]
    assert out["year"].tolist() == [2024] * 3


def test_event_falls_in_the_age_band_of_its_day():
    # Born 1 July 1959: 64 until 30 June 2024 (182 days in 55-64), 65 from 1 July (184 days in 65-74).
    # 2 admissions on 30 June count at 55-64, 3 on 1 July at 65-74.
    people = [{"id": "c", "market": "South", "birth": "1959-07-01",
               "acute": ["2024-06-30", "2024-06-30", "2024-07-01", "2024-07-01", "2024-07-01"]}]
    out = utilisation_by_market(make_tables(people), min_cell=2, total=None, min_age=None)
    py1, py2 = 182 / 365.25, 184 / 365.25
    w1, w2 = W["55-64"], W["65-74"]
    acute = row(out, measure=ACUTE)
    assert acute["person_years"] == pytest.approx(py1 + py2)
    assert acute["rate"] == pytest.approx(1000 * (w1 * 2 / py1 + w2 * 3 / py2) / (w1 + w2))
    # the Medicare default (65 and over): only the 184 days from the birthday and the 3 admissions on it
    medicare = row(utilisation_by_market(make_tables(people), min_cell=2, total=None), measure=ACUTE)
    assert medicare["events"] == 3 and medicare["person_years"] == pytest.approx(py2)
    assert medicare["rate"] == pytest.approx(1000 * 3 / py2)


def test_small_counts_hidden_with_a_complement_and_the_total_row():
    # Acute admissions 50, 5 and 30 in three markets of 12 people (12 person-years) each: 5 is hidden, and
    # since the all-markets row shows 85, the smallest other market (30) is hidden too; rates with them.
    tables = make_tables(cohort("A", 12, acute=50) + cohort("B", 12, acute=5) + cohort("C", 12, acute=30))
    out = utilisation_by_market(tables)
    acute = out[out["measure"] == ACUTE].set_index("market")
    assert acute.loc["A", "events"] == 50 and acute.loc["All markets", "events"] == 85
    assert pd.isna(acute.loc["B", "events"]) and pd.isna(acute.loc["C", "events"])
    assert acute.loc["B", "suppression_reason"] == "primary"
    assert acute.loc["C", "suppression_reason"] == "complementary"
    assert acute.loc[["B", "C"], ["rate", "lower", "upper", "crude_rate"]].isna().all().all()
    assert acute.loc[["A", "All markets"], "rate"].notna().all()
    # person-years (12 each) stay, and post-acute admissions (0 everywhere) are shown as 0 with a 0 rate
    assert acute["person_years"].notna().all()
    pac = out[out["measure"] == PAC]
    assert pac["events"].tolist() == [0, 0, 0, 0] and (pac["rate"] == 0).all() and not pac["suppressed"].any()
    check_suppressed(out[out["measure"] == ACUTE], count_cols="events", denominator=None,
                     group_cols=["year", "measure"], total_rows=(out.loc[out["measure"] == ACUTE, "market"]
                                                                 == "All markets"))


def test_tiny_population_hides_person_years_and_rates():
    # Market D has 3 people (about 3 person-years, which tells how many live there): hidden with its rate.
    tables = make_tables(cohort("A", 20, acute=40) + cohort("C", 20, acute=30) + cohort("D", 3, acute=0))
    out = utilisation_by_market(tables)
    d = row(out, market="D", measure=ACUTE)
    assert pd.isna(d["person_years"]) and pd.isna(d["rate"]) and d["suppression_reason"] == "primary"
    # with the all-markets total shown, another market's person-years are hidden as its complement
    assert out.loc[out["measure"] == ACUTE, "person_years"].isna().sum() == 2


def test_years_events_without_person_time_and_no_mutation():
    # Enrolled in 2024 only, admitted once in 2023 and 12 times in 2024: 2023 has no person-time anywhere,
    # so it has no rows and its admission is counted in attrs["left_out"].
    people = [{"id": "e", "market": "East", "birth": "1950-01-01",
               "acute": ["2023-05-01"] + ["2024-05-01"] * 12}]
    tables = make_tables(people)
    before = {k: v.copy() for k, v in tables.items()}
    out = utilisation_by_market(tables, min_cell=2, years=[2023, 2024])
    assert sorted(out["year"].unique().tolist()) == [2024]
    assert out.attrs["left_out"] == 1
    assert row(out, market="East", measure=ACUTE)["events"] == 12
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(frame, before[name])
    with pytest.raises(ParameterError, match="calendar years"):
        utilisation_by_market(tables, years=[2024.5])
    with pytest.raises(ParameterError, match="enrollment"):
        utilisation_by_market({k: v for k, v in tables.items() if k != "enrollment"})


def test_no_ed_table_means_no_ed_rows():
    tables = make_tables(cohort("A", 12, acute=20))
    del tables["ed_visits"]
    out = utilisation_by_market(tables)
    assert ED not in set(out["measure"])


def test_market_comparison_layout():
    tables = make_tables(cohort("A", 12, acute=50) + cohort("B", 12, acute=5) + cohort("C", 12, acute=30))
    util = utilisation_by_market(tables)
    wide = market_comparison(util, 2024)
    assert wide["Market"].tolist() == ["A", "B", "C", "All markets"]
    assert list(wide.columns) == ["Market", "Person-years", ACUTE, f"{ACUTE}: 95% CI", PAC, f"{PAC}: 95% CI",
                                  ED, f"{ED}: 95% CI"]
    assert wide.loc[1, ACUTE] == "suppressed" and wide.loc[1, f"{ACUTE}: 95% CI"] == "suppressed"
    a = row(util, market="A", measure=ACUTE)
    assert wide.loc[0, ACUTE] == f"{a['rate']:,.1f}"
    assert wide.loc[0, f"{ACUTE}: 95% CI"] == f"{a['lower']:.1f}–{a['upper']:.1f}"
    # no events: a rate of 0.0 and no upper limit, which is not a suppression
    assert wide.loc[0, PAC] == "0.0" and wide.loc[0, f"{PAC}: 95% CI"] == "–"
    assert wide.loc[0, "Person-years"] == "12"
    with pytest.raises(ParameterError, match="2023"):
        market_comparison(util, 2023)


# ------------------------------------------------------------------------------------------------ outcomes


def stays(market: str, date: str, n: int, events: int, expected: float | list[float],
          measure: str = "readmission") -> pd.DataFrame:
    return pd.DataFrame({"measure": measure, "unit_market": market, "discharge_date": pd.Timestamp(date),
                         "observed": [1.0] * events + [0.0] * (n - events), "expected": expected})


def test_outcome_trends_worked_by_hand():
    rows = pd.concat([
        # South Q1: 200 stays, 40 events; half expected at 0.1 and half at 0.3 -> E = 40, O/E = 1, E rate 0.2
        stays("South", "2024-02-10", 200, 40, [0.1, 0.3] * 100),
        # South Q2: 20 stays, 15 events: the 5 non-events give the events away, so events are hidden
        stays("South", "2024-05-10", 20, 15, 0.5),
        # South Q3: 100 stays, 25 events: the smallest other events count, hidden as Q2's complement
        stays("South", "2024-08-10", 100, 25, 0.25),
        # North Q1: 100 stays, 30 events; Q3: 50 stays, 4 events (hidden, and Q1's events as its complement)
        stays("North", "2024-03-01", 100, 30, 0.25),
        stays("North", "2024-08-01", 50, 4, 0.1),
    ], ignore_index=True)
    out = outcome_trends(rows, min_cell=11)
    # every market has every quarter from the first to the last (North Q2 empty: n = 0, shown)
    assert out.groupby("unit_market").size().to_dict() == {"North": 3, "South": 3}
    assert row(out, unit_market="North", period=pd.Timestamp("2024-04-01"))["n"] == 0

    s1 = row(out, unit_market="South", period=pd.Timestamp("2024-01-01"))
    assert (s1["n"], s1["events"], s1["suppressed"]) == (200, 40, False)
    assert s1["rate"] == pytest.approx(0.2)
    assert s1["expected"] == pytest.approx(40.0) and s1["expected_rate"] == pytest.approx(0.2)
    assert s1["ratio"] == pytest.approx(1.0)
    lo, hi = wilson(np.array([40]), np.array([200]))
    assert (s1["lower"], s1["upper"]) == (pytest.approx(lo[0]), pytest.approx(hi[0]))
    # Byar's limits for O = 40, E = 40 (Breslow & Day 1987), written out independently
    z, o = stats.norm.ppf(0.975), 40
    assert s1["ratio_lower"] == pytest.approx(o * (1 - 1 / (9 * o) - z / (3 * np.sqrt(o))) ** 3 / 40)
    assert s1["ratio_upper"] == pytest.approx((o + 1) * (1 - 1 / (9 * (o + 1)) + z / (3 * np.sqrt(o + 1))) ** 3 / 40)
    assert s1["ratio_method"] == "Byar"

    s2 = row(out, unit_market="South", period=pd.Timestamp("2024-04-01"))
    assert s2["n"] == 20 and pd.isna(s2["events"]) and s2["suppression_reason"] == "derived"
    assert s2[["rate", "lower", "upper", "expected", "expected_rate", "ratio", "ratio_lower"]].isna().all()
    s3 = row(out, unit_market="South", period=pd.Timestamp("2024-07-01"))
    assert s3["n"] == 100 and pd.isna(s3["events"]) and s3["suppression_reason"] == "complementary"

    n1 = row(out, unit_market="North", period=pd.Timestamp("2024-01-01"))
    n3 = row(out, unit_market="North", period=pd.Timestamp("2024-07-01"))
    assert n3["n"] == 50 and pd.isna(n3["events"]) and n3["suppression_reason"] == "primary"
    assert n1["n"] == 100 and pd.isna(n1["events"]) and n1["suppression_reason"] == "complementary"
    assert pd.isna(n1["ratio"]) and pd.isna(n3["rate"])
    check_suppressed(out, count_cols=["n", "events"])


def test_outcome_trends_shows_large_cells_and_filters():
    rows = pd.concat([stays("North", "2024-02-01", 100, 30, 0.25), stays("North", "2024-05-01", 100, 20, 0.25),
                      stays("North", "2024-05-01", 100, 20, 0.25, measure="mortality"),
                      stays("North", "2025-02-01", 100, 20, 0.25)], ignore_index=True)
    out = outcome_trends(rows, measures=["readmission"], end="2024-12-31")
    assert set(out["measure"]) == {"readmission"} and out["period"].max() == pd.Timestamp("2024-04-01")
    q1 = row(out, period=pd.Timestamp("2024-01-01"))
    assert (q1["events"], q1["ratio"], q1["label"]) == (30, pytest.approx(1.2), "30-day unplanned readmission")
    monthly = outcome_trends(rows, freq="month", measures="readmission", end="2024-12-31")
    assert len(monthly) == 4 and monthly["n"].tolist() == [100, 0, 0, 100]
    with pytest.raises(ParameterError, match="unknown measure"):
        outcome_trends(rows, measures=["falls"])
    with pytest.raises(ParameterError, match="freq"):
        outcome_trends(rows, freq="year")


def test_outcome_by_market_total_and_period():
    rows = pd.concat([stays("North", "2024-02-01", 200, 50, 0.2), stays("South", "2024-03-01", 300, 45, 0.2),
                      stays("South", "2023-06-01", 100, 90, 0.2),  # before the period: left out
                      stays("North", "2024-02-01", 200, 12, 0.05, measure="mortality"),
                      stays("South", "2024-02-01", 300, 15, 0.05, measure="mortality")], ignore_index=True)
    out = outcome_by_market(rows, period_start="2024-01-01", period_end="2024-12-31")
    assert out["unit_market"].tolist() == ["North", "South", "All markets"] * 2
    assert out["measure"].tolist() == ["readmission"] * 3 + ["mortality"] * 3
    total = row(out, unit_market="All markets", measure="readmission")
    # O = 95, E = 0.2 × 500 = 100
    assert (total["n"], total["events"]) == (500, 95)
    assert total["ratio"] == pytest.approx(0.95) and total["expected_rate"] == pytest.approx(0.2)
    south = row(out, unit_market="South", measure="mortality")
    assert south["ratio"] == pytest.approx(15 / 15) and south["rate"] == pytest.approx(0.05)
    assert not out["suppressed"].any()
    check_suppressed(out, count_cols=["n", "events"], group_cols="measure",
                     total_rows=out["unit_market"] == "All markets")


# ------------------------------------------------------------------------------------------ bundled sample


@pytest.fixture(scope="module")
def sample_tables() -> dict[str, pd.DataFrame]:
    from carequal.loaders import load_tables

    return load_tables(SAMPLE, mode="quarantine").tables


def test_sample_crude_counts_match_a_direct_count(sample_tables):
    t = sample_tables
    out = utilisation_by_market(t, years=[2024], min_age=None)  # all ages: every admission counts
    market = t["patients"].set_index("patient_id")["market"]
    setting = t["stays"]["facility_id"].map(t["facilities"].set_index("facility_id")["setting"])
    in_2024 = t["stays"]["admit_date"].dt.year == 2024
    acute = t["stays"][in_2024 & (setting == "acute")]
    expected = acute["patient_id"].map(market).value_counts()
    ed = t["ed_visits"][t["ed_visits"]["visit_date"].dt.year == 2024]
    expected_ed = ed["patient_id"].map(market).value_counts()
    assert out.attrs["left_out"] == 0
    for name in sorted(t["patients"]["market"].unique()):
        assert row(out, market=name, measure=ACUTE)["events"] == expected[name]
        assert row(out, market=name, measure=ED)["events"] == expected_ed[name]
    assert row(out, market="All markets", measure=ACUTE)["events"] == len(acute)
    pt = person_time(t["enrollment"], t["patients"], start="2024-01-01", end="2024-12-31", by=("market",))
    got = out[(out["measure"] == ACUTE) & (out["market"] != "All markets")].set_index("market")["person_years"]
    pd.testing.assert_series_equal(got.astype(float), pt.set_index("market")["person_years"], check_names=False)
    assert not out["suppressed"].any()
    for measure in UTILISATION_MEASURES:
        part = out[out["measure"] == measure]
        check_suppressed(part, count_cols=["events"], denominator=None, total_rows=part["market"] == "All markets")
    wide = market_comparison(out, 2024)
    assert wide["Market"].tolist() == ["Lakeshore", "Northvale", "Riverton", "All markets"]


def test_sample_outcome_tables_count_every_reference_row(sample_tables):
    from carequal.national import build_reference

    ref = build_reference(sample_tables, period_start="2024-01-01", period_end="2024-12-31",
                          measures=("readmission", "mortality"))
    rows = ref.rows
    trends = outcome_trends(rows)
    counted = trends.groupby(["unit_market", "measure"])["n"].sum()
    direct = rows.groupby(["unit_market", "measure"]).size()
    pd.testing.assert_series_equal(counted.astype("int64"), direct.astype("int64"), check_names=False)
    check_suppressed(trends, count_cols=["n", "events"])
    by_market = outcome_by_market(rows, period_start="2024-01-01", period_end="2024-12-31")
    in_period = rows[rows["in_period"]]
    for (name, measure), n in in_period.groupby(["unit_market", "measure"]).size().items():
        assert row(by_market, unit_market=name, measure=measure)["n"] == n
    # the models are fitted on the period: all markets' expected events add up to the observed ones
    mortality = row(by_market, unit_market="All markets", measure="mortality")
    assert mortality["ratio"] == pytest.approx(1.0, abs=0.05)
