"""Cohort explorer: hand-worked Table 1 and rates, small-count masking, filters, and the bundled sample."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from statsmodels.stats.proportion import proportion_confint

from carequal.cohorts import CONDITIONS, index_stays
from carequal.errors import ParameterError
from carequal.explore import (
    FRAME_COLUMNS,
    attrition_for_chart,
    explorer_choices,
    explorer_frame,
    explorer_rates,
    filter_explorer,
    table_one,
)
from carequal.measures import index_measures, rate_table


def rows(n: int, **values) -> pd.DataFrame:
    """``n`` explorer rows with the given column values (scalars or lists of length ``n``)."""
    base = {"partner": "partner", "sex": "F", "dual_eligible": False, "condition": "heart_failure",
            "age_band": "75-84", "pac_setting": "none", "age": 80, "los_days": 4,
            "unplanned_readmit_30d": False, "died_30d": False, "to_partner_pac": False}
    return pd.DataFrame({**base, **values}, index=range(n))


def hand_frame() -> pd.DataFrame:
    """30 stays at partner hospitals, 20 at others (the counts of every Table 1 cell are worked out below)."""
    partner = rows(30, partner="partner", sex=["F"] * 18 + ["M"] * 12, dual_eligible=[True] * 12 + [False] * 18,
                   age=[70] * 15 + [90] * 15, age_band=["65-74"] * 15 + ["85+"] * 15,
                   pac_setting=["none"] * 19 + ["snf"] * 11)
    other = rows(20, partner="other", sex=["F"] * 14 + ["M"] * 6, age=85, age_band="85+")
    return pd.concat([partner, other], ignore_index=True)


# ------------------------------------------------------------------------------------------------ Table 1


def test_table_one_hand_worked():
    t = table_one(hand_frame())
    assert [c[-1] for c in t.columns] == ["Overall", "partner", "other"]
    cells = {(r[0], r[1]): list(v) for r, v in zip(t.index, t.to_numpy(), strict=True)}
    assert cells[("n", "")] == ["50", "30", "20"]
    # partner ages 15 x 70 and 15 x 90: mean 80, SD sqrt(30 * 10^2 / 29) = 10.17; others all 85;
    # overall mean 4100 / 50 = 82, SD sqrt((15 * 144 + 15 * 64 + 20 * 9) / 49) = sqrt(3300 / 49) = 8.21
    assert cells[("Age (years), mean (SD)", "")] == ["82.0 (8.2)", "80.0 (10.2)", "85.0 (0.0)"]
    assert cells[("Length of stay (days), mean (SD)", "")] == ["4.0 (0.0)"] * 3
    # 6 men at other hospitals: hidden; then F at others (the column's n would give the 6 back), and both
    # partner cells (Overall minus partner would give the others' cells back). Overall stays shown.
    assert cells[("Sex, n (%)", "F")] == ["32 (64.0)", "suppressed", "suppressed"]
    assert cells[("Sex, n (%)", "M")] == ["18 (36.0)", "suppressed", "<11"]
    # nothing small elsewhere: counts and percentages of the column's n, zeros shown
    assert cells[("Dual eligible, n (%)", "no")] == ["38 (76.0)", "18 (60.0)", "20 (100.0)"]
    assert cells[("Dual eligible, n (%)", "yes")] == ["12 (24.0)", "12 (40.0)", "0 (0.0)"]
    assert cells[("Condition, n (%)", "heart_failure")] == ["50 (100.0)", "30 (100.0)", "20 (100.0)"]
    assert cells[("Age band, n (%)", "65-74")] == ["15 (30.0)", "15 (50.0)", "0 (0.0)"]
    assert cells[("Age band, n (%)", "85+")] == ["35 (70.0)", "15 (50.0)", "20 (100.0)"]
    assert cells[("Post-acute setting, n (%)", "none")] == ["39 (78.0)", "19 (63.3)", "20 (100.0)"]
    assert cells[("Post-acute setting, n (%)", "snf")] == ["11 (22.0)", "11 (36.7)", "0 (0.0)"]
    assert len(cells) == 12  # no n_secondary column in the frame: no row for it


def test_table_one_small_group_hides_both_groups():
    # 5 stays at other hospitals: their n and every cell are hidden; partner's n 30 would give the 5 back from
    # Overall's 35, so the partner column goes too. Overall is all that is shown.
    frame = pd.concat([rows(30), rows(5, partner="other")], ignore_index=True)
    t = table_one(frame)
    assert t[t.columns[0]].tolist() == ["35", "80.0 (0.0)", "4.0 (0.0)"] + ["35 (100.0)"] * 5
    assert t[t.columns[2]].iloc[0] == "<11" and set(t[t.columns[2]]) == {"<11", "suppressed"}
    assert set(t[t.columns[1]]) == {"suppressed"}


def test_table_one_without_groups_and_missing_level():
    # one column: 5 men hidden, and the 40 women with them (45 - 40 = 5); 2 missing dual statuses are a level
    frame = rows(45, sex=["F"] * 40 + ["M"] * 5, dual_eligible=[None, None] + [True] * 43)
    t = table_one(frame, groupby=None)
    assert list(t.columns) == ["Overall"]
    assert t.loc[("Sex, n (%)", "F"), "Overall"] == "suppressed"
    assert t.loc[("Sex, n (%)", "M"), "Overall"] == "<11"
    assert t.loc[("Dual eligible, n (%)", "(missing)"), "Overall"] == "<11"
    assert t.loc[("Dual eligible, n (%)", "yes"), "Overall"] == "suppressed"
    assert t.loc[("n", ""), "Overall"] == "45"


def test_table_one_other_grouping_and_threshold():
    frame = hand_frame()
    t = table_one(frame, groupby="sex", min_cell=5)
    assert [c[-1] for c in t.columns] == ["Overall", "F", "M"]
    assert "Sex, n (%)" not in t.index.get_level_values(0)
    assert t.loc[("n", ""), t.columns[2]] == "18"  # min_cell=5: 18 men shown
    assert table_one(frame.iloc[:0]).to_dict() == {"Overall": {("n", ""): "0"}}
    with pytest.raises(ParameterError, match="unknown groupby 'hospital'; choose from partner, sex"):
        table_one(frame, groupby="hospital")
    with pytest.raises(ParameterError, match="min_cell"):
        table_one(frame, min_cell=0)
    with pytest.raises(ParameterError, match="no column"):
        table_one(frame.drop(columns="sex"))


def _count(cell: str) -> float | None:
    """The count a reader sees in a cell, or None when it is hidden."""
    if cell in ("<11", "suppressed"):
        return None
    return float(re.match(r"\d+", cell).group())


@settings(max_examples=30, deadline=None)
@given(seed=hst.integers(0, 2**32 - 1))
def test_table_one_shows_no_small_count_a_reader_can_find(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    frame = rows(n, partner=rng.choice(["partner", "other"], n, p=[0.8, 0.2]),
                 sex=rng.choice(["F", "M"], n, p=[0.85, 0.15]),
                 condition=rng.choice(["ami", "copd", "other"], n, p=[0.1, 0.2, 0.7]),
                 pac_setting=rng.choice(["none", "snf", "hha", "irf"], n, p=[0.6, 0.2, 0.15, 0.05]),
                 age=rng.integers(65, 100, n))
    t = table_one(frame)
    cols = [c[-1] for c in t.columns]
    shown = {(r, c): _count(t.iat[i, j]) for i, r in enumerate(t.index) for j, c in enumerate(cols)
             if r[0] == "n" or r[0].endswith(", n (%)")}
    # every shown count is the true count, and none is 1..10
    for (r, c), value in shown.items():
        if value is None:
            continue
        part = frame if c == "Overall" else frame[frame["partner"] == c]
        column = {"Sex, n (%)": "sex", "Condition, n (%)": "condition",
                  "Post-acute setting, n (%)": "pac_setting", "Age band, n (%)": "age_band",
                  "Dual eligible, n (%)": "dual_eligible"}.get(r[0])
        truth = len(part) if r[0] == "n" else int((part[column].astype(str).replace(
            {"False": "no", "True": "yes"}) == r[1]).sum())
        assert value == truth
        assert not 1 <= value <= 10
    # a column whose n is hidden is hidden entirely, but for its zeros
    for j, c in enumerate(cols):
        if shown[(("n", ""), c)] is None:
            assert set(t.iloc[:, j]) <= {"<11", "suppressed", "0 (0.0)"}
    # no additive relation (levels -> column n; groups -> Overall) gives back a small count
    relations = []
    for var in {r[0] for r in t.index if r[0].endswith(", n (%)")}:
        levels = [r for r in t.index if r[0] == var]
        relations += [(shown[(("n", ""), c)], [shown[(r, c)] for r in levels]) for c in cols]
    groups = [c for c in cols if c != "Overall"]
    relations += [(shown[(r, "Overall")], [shown[(r, c)] for c in groups]) for r in {k[0] for k in shown}]
    for total, cells in relations:
        hidden = [v for v in cells if v is None]
        if total is None or not hidden:
            continue
        recovered = total - sum(v for v in cells if v is not None)
        assert not 1 <= recovered <= 10
        assert len(hidden) > 1 or recovered == 0


# -------------------------------------------------------------------------------------------------- rates


def test_rates_hand_worked():
    frame = pd.concat([rows(4, unplanned_readmit_30d=[True, False, False, False],
                            to_partner_pac=[True] * 2 + [False] * 2),
                       rows(2, partner="other", unplanned_readmit_30d=True, died_30d=[True, False])],
                      ignore_index=True)
    r = explorer_rates(frame, min_cell=None).set_index(["measure", "partner"])
    assert list(r.index.get_level_values("measure").unique()) == ["readmission", "mortality", "to_partner_pac"]
    # readmission: partner 1 of 4, other 2 of 2, all 3 of 6; mortality 0/4, 1/2, 1/6; to partner PAC 2/4, 0/2, 2/6
    expected = {("readmission", "partner"): (4, 1), ("readmission", "other"): (2, 2), ("readmission", "all"): (6, 3),
                ("mortality", "partner"): (4, 0), ("mortality", "other"): (2, 1), ("mortality", "all"): (6, 1),
                ("to_partner_pac", "partner"): (4, 2), ("to_partner_pac", "other"): (2, 0),
                ("to_partner_pac", "all"): (6, 2)}
    for key, (n, events) in expected.items():
        row = r.loc[key]
        assert (row["n"], row["events"]) == (n, events)
        assert row["rate"] == pytest.approx(events / n)
        lo, hi = proportion_confint(events, n, alpha=0.05, method="wilson")  # independent Wilson interval
        assert (row["lower"], row["upper"]) == (pytest.approx(lo), pytest.approx(hi))
    assert r.loc[("readmission", "all"), "label"] == "30-day unplanned readmission"


def test_rates_suppressed():
    # readmissions: 5 of 40 at partners (hidden), so 12 of 30 at others goes too (17 - 12 = 5); 0 deaths shown
    frame = pd.concat([rows(40, unplanned_readmit_30d=[True] * 5 + [False] * 35,
                            to_partner_pac=[True] * 20 + [False] * 20),
                       rows(30, partner="other", unplanned_readmit_30d=[True] * 12 + [False] * 18,
                            to_partner_pac=[True] * 15 + [False] * 15)], ignore_index=True)
    r = explorer_rates(frame).set_index(["measure", "partner"])
    assert pd.isna(r.loc[("readmission", "partner"), "events"]) and pd.isna(r.loc[("readmission", "partner"), "rate"])
    assert r.loc[("readmission", "partner"), "suppression_reason"] == "primary"
    assert pd.isna(r.loc[("readmission", "other"), "events"])
    assert r.loc[("readmission", "other"), "suppression_reason"] == "complementary"
    assert r.loc[("readmission", "all"), "events"] == 17 and r.loc[("readmission", "partner"), "n"] == 40
    assert r.loc[("mortality", "partner"), "events"] == 0 and not r.loc[("mortality", "partner"), "suppressed"]
    assert not r.xs("to_partner_pac")["suppressed"].any()


def test_rates_other_grouping_and_errors():
    frame = hand_frame()
    r = explorer_rates(frame, by="age_band", min_cell=None)
    assert r.loc[r["measure"] == "readmission", "age_band"].tolist() == ["65-74", "85+", "all"]
    assert r.loc[r["measure"] == "readmission", "n"].tolist() == [15, 35, 50]
    with pytest.raises(ParameterError, match="unknown by 'market'"):
        explorer_rates(frame, by="market")


# ---------------------------------------------------------------------------------------------- filters


def test_filters():
    frame = hand_frame().assign(period=pd.to_datetime(["2024-01-01"] * 25 + ["2024-03-01"] * 25),
                                condition=["ami"] * 10 + ["copd"] * 40)
    before = frame.copy()
    assert len(filter_explorer(frame)) == 50
    assert len(filter_explorer(frame, condition="ami")) == 10
    assert len(filter_explorer(frame, partner="other")) == 20
    assert len(filter_explorer(frame, age_bands=["65-74"])) == 15
    assert len(filter_explorer(frame, age_bands="85+")) == 35
    assert len(filter_explorer(frame, age_bands=())) == 50  # nothing chosen in a SelectMultiple: no restriction
    # whole months: a date in March keeps all of March
    assert len(filter_explorer(frame, start="2024-03-20")) == 25
    assert len(filter_explorer(frame, end=pd.Timestamp("2024-02-10"))) == 25
    assert len(filter_explorer(frame, start="2024-02-01", end="2024-02-29")) == 0
    sub = filter_explorer(frame, condition="copd", partner="partner", age_bands=["65-74", "85+"], start="2024-01-01",
                          end="2024-12-31")
    assert len(sub) == 20 and list(sub.index) == list(range(20))
    pd.testing.assert_frame_equal(frame, before)


def test_filter_errors_list_the_choices():
    frame = hand_frame().assign(period=pd.Timestamp("2024-01-01"))
    with pytest.raises(ParameterError, match=f"unknown condition 'hf'; choose from all, {', '.join(CONDITIONS)}, "
                                             "other"):
        filter_explorer(frame, condition="hf")
    with pytest.raises(ParameterError, match="unknown partner value 'yes'; choose from all, partner, other"):
        filter_explorer(frame, partner="yes")
    with pytest.raises(ParameterError, match=r"unknown age band\(s\) '65-69'; choose from .*65-74, 75-84, 85\+"):
        filter_explorer(frame, age_bands=["65-74", "65-69"])
    with pytest.raises(ParameterError, match="start 'soon' is not a date"):
        filter_explorer(frame, start="soon")
    with pytest.raises(ParameterError, match="start 2024-05-01 is after end 2024-02-01"):
        filter_explorer(frame, start="2024-05-01", end="2024-02-01")


def test_choices():
    c = explorer_choices(hand_frame())
    assert c == {"condition": ["all", "heart_failure"], "partner": ["all", "partner", "other"],
                 "age_bands": ["65-74", "85+"]}


# ---------------------------------------------------------------------------------------------- attrition


def test_attrition_for_chart():
    a = pd.DataFrame({"step": list("sabcdef"), "description": list("SABCDEF"),
                      "excluded": [0, 3, 0, 20, 4, 5, 1], "remaining": [100, 97, 97, 77, 73, 68, 67]})
    out = attrition_for_chart(a)
    # a (3) joins c (20); d, e, f (4 + 5 + 1 = 10 < 11) are left at the end and join the step before
    assert out["step"].tolist() == ["s", "a+c+d+e+f"]
    assert out["excluded"].tolist() == [0, 33] and out["remaining"].tolist() == [100, 67]
    assert out["description"].iloc[1] == "A; C; D; E; F"
    out = attrition_for_chart(a, min_cell=4)  # 3 is small, 4 and 5 are not; the last 1 joins the 5
    assert out["step"].tolist() == ["s", "a+c", "d", "e+f"]
    assert out["remaining"].tolist() == [100, 77, 73, 67]
    few = a.assign(excluded=[0, 3, 0, 0, 4, 0, 1], remaining=[100, 97, 97, 97, 93, 93, 92])
    out = attrition_for_chart(few)  # all exclusions together are 8: only the final count
    assert out["remaining"].tolist() == [92] and out["excluded"].isna().all()
    pd.testing.assert_frame_equal(a, a.copy())


# ------------------------------------------------------------------------------------------ the bundled sample


@pytest.fixture(scope="module")
def northvale(sample_work):
    from carequal.loaders import read_market

    # the market's residents with all their stays, and every facility: read from the sample prepared once for the
    # session, as the notebook reads a market (rather than validating the whole sample again here)
    return read_market(sample_work.dataset, "Northvale").tables


@pytest.fixture(scope="module")
def northvale_frame(northvale):
    """explorer_frame(northvale), computed once for the two tests that use it."""
    return explorer_frame(northvale)


def test_sample_frame_and_rates(northvale, northvale_frame):
    cohort = index_stays(northvale["stays"], northvale["facilities"], northvale["patients"],
                         northvale["enrollment"])
    frame = northvale_frame
    assert len(frame) == len(cohort.index) > 1000  # one row per index stay
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame["age"].tolist() == cohort.index["age"].tolist()
    assert frame["condition"].tolist() == cohort.index["condition"].tolist()
    assert set(frame["partner"]) == {"partner", "other"}
    assert not {"stay_id", "patient_id", "facility_id", "discharge_date"} & set(frame.columns)
    pd.testing.assert_frame_equal(explorer_frame(northvale, cohort=cohort), frame)

    measured = index_measures(cohort.index, northvale)
    measured["partner"] = np.where(measured["is_partner"], "partner", "other")
    rates = explorer_rates(frame, min_cell=None)
    safe = explorer_rates(frame)
    for name, outcome in [("readmission", "unplanned_readmit_30d"), ("mortality", "died_30d"),
                          ("to_partner_pac", "to_partner_pac")]:
        direct = rate_table(measured, by=["partner"], events=outcome)
        ours = rates[(rates["measure"] == name) & (rates["partner"] != "all")]
        ours = ours.sort_values("partner", ignore_index=True)  # rate_table sorts its groups; ours lead with partner
        assert rates.loc[rates["measure"] == name, "partner"].tolist() == ["partner", "other", "all"]
        for col in ("partner", "n", "events", "rate", "lower", "upper"):
            np.testing.assert_array_equal(ours[col].to_numpy(), direct[col].to_numpy())
        total = rates[(rates["measure"] == name) & (rates["partner"] == "all")]
        assert total["n"].item() == len(measured) and total["events"].item() == measured[outcome].sum()
    assert not safe["suppressed"].any()  # thousands of stays: nothing to hide

    t = table_one(frame)
    assert t.loc[("n", ""), t.columns[0]] == str(len(frame))
    female = int((frame["sex"] == "F").sum())
    assert t.loc[("Sex, n (%)", "F"), t.columns[0]] == f"{female} ({100 * female / len(frame):.1f})"
    partner_ami = int(((frame["partner"] == "partner") & (frame["condition"] == "ami")).sum())
    assert t.loc[("Condition, n (%)", "ami"), t.columns[1]].startswith(f"{partner_ami} (")
    assert "Secondary diagnoses, mean (SD)" in t.index.get_level_values(0)


def test_cohort_explorer_shows_a_market_from_the_cohort_read_once(sample_work, monkeypatch):
    # the notebook's state and callbacks: each market's view computed once, the tables for the widgets' choices,
    # the attrition chart drawn by the plot function the notebook passes
    import matplotlib

    matplotlib.use("Agg")
    from carequal import explore
    from carequal.explore import CohortExplorer, market_view
    from carequal.national import read_cohort

    stored = read_cohort(sample_work.cohort, cms=True)
    views = []
    monkeypatch.setattr(explore, "market_view", lambda c, m: views.append(m) or market_view(c, m))
    drawn = []
    explorer = CohortExplorer(stored, attrition_plot=lambda table, title: drawn.append((table, title)))
    heading, one, rates = explorer.tables("Northvale", condition="all", partner="all")
    attrition, frame = explorer.view("Northvale")
    assert heading.startswith("### Northvale") and views == ["Northvale"]  # computed once
    pd.testing.assert_frame_equal(one, table_one(frame, groupby="partner"))
    assert rates.startswith('<table class="carequal-table">') and "Measure" in rates and "95% CI" in rates
    explorer.show_attrition("Northvale")
    pd.testing.assert_frame_equal(drawn[0][0], attrition_for_chart(attrition))
    assert drawn[0][1] == "Northvale: acute stays to index stays" and views == ["Northvale"]
    with pytest.raises(ParameterError, match="attrition_plot"):
        CohortExplorer(stored).show_attrition("Northvale")


def test_populations_medicare_as_before_and_the_employees_by_employer(northvale, northvale_frame):
    from carequal.cohorts import ALL_PAYER_RULES
    from carequal.explore import POPULATIONS, population_cohort

    assert set(POPULATIONS) == {"medicare", "employees"}
    cohort, frame = population_cohort(northvale, "medicare")
    pd.testing.assert_frame_equal(frame, northvale_frame)  # the default population is unchanged
    cohort, frame = population_cohort(northvale, "employees")
    employees = northvale["patients"].loc[northvale["patients"]["population_group"] == "employees", "patient_id"]
    # every index stay is an employee's (all-payer rules: under 65, commercial coverage), one per row
    assert len(frame) == len(cohort.index) > 100 and cohort.index["patient_id"].isin(employees).all()
    assert frame["age"].max() < 65 and cohort.rules == ALL_PAYER_RULES
    # the employer is the sponsor covering the discharge date
    enr = northvale["enrollment"].dropna(subset=["sponsor"])
    first = cohort.index.iloc[0]
    covering = enr[(enr["patient_id"] == first["patient_id"]) & (enr["start_date"] <= first["discharge_date"])
                   & (enr["end_date"] >= first["discharge_date"])]
    assert frame["sponsor"].iloc[0] == covering["sponsor"].item()
    assert frame["sponsor"].notna().all()
    rates = explorer_rates(frame, by="sponsor")
    assert set(rates["sponsor"]) >= set(frame["sponsor"]) | {"all"}
    by_employer = table_one(frame, groupby="sponsor")  # what the explorer shows for the employees
    assert by_employer.loc[("n", ""), by_employer.columns[0]] == f"{len(frame):,d}".replace(",", "")
    with pytest.raises(ParameterError, match="population"):
        population_cohort(northvale, "retirees")
