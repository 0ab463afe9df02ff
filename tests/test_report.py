"""Market report content: hand-worked numbers, wording and small-cell suppression of every section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carequal import report as rpt
from carequal.errors import ModelError, ParameterError
from carequal.intervals import change_interval
from carequal.presentation import COUNT_LABELS, presentable
from carequal.risk import RISK_COVARIATES

PERIOD = (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31"))
PREVIOUS = (pd.Timestamp("2023-01-01"), pd.Timestamp("2023-12-31"))


def _rows(measure: str, unit: str, n: int, events: int, expected: float, date: str, *, partner: bool = False,
          setting: str = "acute") -> pd.DataFrame:
    """``n`` reference rows of one facility: ``events`` of them with the outcome, each with ``expected``."""
    return pd.DataFrame({
        "measure": measure, "stay_id": [f"{unit}-{date}-{i}" for i in range(n)], "unit_id": unit,
        "unit_market": "M", "unit_setting": setting, "unit_is_partner": partner,
        "discharge_date": pd.Timestamp(date), "condition": "heart_failure", "in_period": True,
        "observed": [1.0] * events + [0.0] * (n - events), "expected": expected, "predicted": expected,
    })


FACILITIES = pd.DataFrame({"facility_id": ["A", "B", "C", "D"], "name": ["Alpha", "Beta", "Gamma", "Delta"],
                           "setting": ["acute", "acute", "acute", "snf"], "market": "M",
                           "is_partner": [True, False, False, True]})


# ------------------------------------------------------------------------------------------------ headline


def test_headline_kpis_hand_worked():
    rows = pd.concat([_rows("readmission", "A", 200, 40, 0.15, "2024-03-01"),
                      _rows("readmission", "B", 100, 20, 0.10, "2024-06-01"),
                      _rows("readmission", "A", 250, 25, 0.15, "2023-05-01")], ignore_index=True)
    k = rpt.headline_kpis(rows, period=PERIOD, previous=PREVIOUS, measures=("readmission",)).iloc[0]
    assert (k["n"], k["events"]) == (300, 60)
    assert k["rate"] == pytest.approx(0.2)
    # expected events 200 × 0.15 + 100 × 0.10 = 40 → expected rate 40/300, O/E 60/40
    assert k["expected_rate"] == pytest.approx(40 / 300)
    assert k["ratio"] == pytest.approx(1.5)
    assert k["ratio_lower"] > 1  # 60 observed vs 40 expected: Byar interval above 1
    assert (k["prev_n"], k["prev_events"]) == (250, 25)
    assert k["prev_rate"] == pytest.approx(0.1)
    assert k["change"] == pytest.approx(0.1)
    assert k["change_lower"] > 0
    assert not k["suppressed"]
    text = rpt.headline_findings(rpt.headline_kpis(rows, period=PERIOD, previous=PREVIOUS,
                                                   measures=("readmission",)),
                                 market="M", period=PERIOD, previous=PREVIOUS)[0]
    assert "20.0% (95% CI" in text and "higher than expected" in text and "for the worse" in text
    assert "O/E 1.50" in text


def test_headline_kpis_suppresses_a_small_count_and_what_it_determines():
    rows = pd.concat([_rows("mortality", "A", 300, 7, 0.02, "2024-03-01"),
                      _rows("mortality", "A", 300, 30, 0.05, "2023-03-01")], ignore_index=True)
    k = rpt.headline_kpis(rows, period=PERIOD, previous=PREVIOUS, measures=("mortality",)).iloc[0]
    assert pd.isna(k["events"]) and k["n"] == 300
    for col in ("rate", "lower", "upper", "expected_rate", "ratio", "ratio_lower", "ratio_upper", "change",
                "change_lower", "change_upper"):
        assert pd.isna(k[col]), col
    assert k["prev_events"] == 30 and k["prev_rate"] == pytest.approx(0.1)
    assert k["suppressed"] and k["suppression_reason"] == "primary"
    sentence = rpt.headline_findings(pd.DataFrame([k]), market="M", period=PERIOD, previous=PREVIOUS)[0]
    assert "too few cases" in sentence and "7" not in sentence


def test_headline_findings_wording_of_changes():
    base = {"measure": "readmission", "label": "30-day unplanned readmission", "n": 500, "events": 60,
            "rate": 0.12, "lower": 0.09, "upper": 0.15, "expected_rate": 0.15, "ratio": 0.8, "ratio_lower": 0.62,
            "ratio_upper": 0.98, "prev_rate": 0.18, "change": -0.06, "change_lower": -0.1, "change_upper": -0.02}
    text = rpt.headline_findings(pd.DataFrame([base]), market="M", period=PERIOD, previous=PREVIOUS)[0]
    assert "lower than expected" in text and "a real change for the better" in text
    base.update(prev_rate=None)
    text = rpt.headline_findings(pd.DataFrame([base]), market="M", period=PERIOD, previous=PREVIOUS)[0]
    assert "too few cases to compare" in text


def test_change_interval_matches_newcombe_example_b():
    # Newcombe (1998) Table II (b): 9/10 − 3/10 = 0.6, hybrid score interval 0.1705 to 0.8090
    lo, hi = change_interval(np.array([9]), np.array([10]), np.array([3]), np.array([10]))
    assert (round(float(lo[0]), 4), round(float(hi[0]), 4)) == (0.1705, 0.8090)


# ------------------------------------------------------------------------------------------------ scorecard


def test_facility_scorecard_labels_and_suppression():
    rows = pd.concat([
        _rows("readmission", "A", 200, 60, 0.15, "2024-02-01", partner=True),  # O 60, E 30: higher
        _rows("readmission", "B", 200, 28, 0.15, "2024-02-01"),               # O 28, E 30: as expected
        _rows("readmission", "D", 300, 44, 0.15, "2024-02-01", partner=True),  # O 44, E 45: as expected
        _rows("readmission", "C", 60, 4, 0.15, "2024-02-01"),                 # O 4: suppressed
        _rows("readmission", "B", 20, 20, 0.15, "2023-02-01"),                # last period: not counted
    ], ignore_index=True)
    card = rpt.facility_scorecard(rows, FACILITIES, period=PERIOD, measures=("readmission",))
    by = card.set_index("facility_id")
    assert list(card["facility_id"]) == ["A", "D", "B", "C"]  # partners first, then by name
    assert by.loc["A", "judgement"] == "higher than expected" and by.loc["A", "ratio"] == pytest.approx(2.0)
    assert by.loc["A", "n"] == 200 and by.loc["A", "observed"] == 60 and by.loc["A", "name"] == "Alpha"
    assert by.loc["D", "judgement"] == "as expected" and by.loc["D", "observed"] == 44
    assert by.loc["C", "judgement"] == "not shown (small numbers)"
    # the market's total events are published in the headline, so one more facility is hidden with C: the
    # smallest other count (B, 28), otherwise total − shown would give C's 4 away
    assert by.loc["B", "judgement"] == "not shown (small numbers)" and by.loc["B", "n"] == 200
    for unit in ("B", "C"):
        for col in ("observed", "rate", "ratio", "lower", "upper", "expected", "pe_ratio"):
            assert pd.isna(by.loc[unit, col]), (unit, col)
    assert by.loc["C", "suppression_reason"] == "primary" and by.loc["B", "suppression_reason"] == "complementary"
    sentences = rpt.partner_findings(card)
    assert sentences[0].startswith("30-day unplanned readmission — higher than expected: Alpha (partner; O/E 2.00")
    assert "1 facility as expected" in sentences[1] and "2 facilities not shown (small numbers)" in sentences[1]
    shown, left_off = rpt.shown_for_chart(card, "readmission")
    assert list(shown["facility_id"]) == ["A", "D"] and left_off == 2


def test_facility_scorecard_too_few_cases_is_not_judged():
    rows = pd.concat([_rows("readmission", "A", 20, 12, 0.1, "2024-02-01"),
                      _rows("readmission", "B", 300, 40, 0.13, "2024-02-01")], ignore_index=True)
    card = rpt.facility_scorecard(rows, FACILITIES, period=PERIOD, measures=("readmission",)).set_index(
        "facility_id")
    assert card.loc["A", "judgement"] == "too few cases to judge"  # 12 of 20 is high, but n < 25


def test_funnel_for_shows_only_chartable_facilities():
    rows = pd.concat([_rows("readmission", u, n, e, 0.15, "2024-02-01") for u, n, e in
                      [("A", 200, 60), ("B", 200, 28), ("D", 300, 44), ("C", 60, 4)]], ignore_index=True)
    card = rpt.facility_scorecard(rows, FACILITIES, period=PERIOD, measures=("readmission",))
    funnel, left_off, _ = rpt.funnel_for(rows, card, "readmission", period=PERIOD)
    assert sorted(funnel.units["unit_id"]) == ["A", "D"] and left_off == 2  # C hidden, B its complement
    assert set(funnel.units["name"]) == {"Alpha", "Delta"}
    assert np.isfinite(funnel.phi)  # limits use every facility with expected events, shown or not


# --------------------------------------------------------------------------------------------------- trends


def test_trend_chart_hides_small_months_and_keeps_them_out_of_the_limits():
    months = pd.date_range("2024-01-01", periods=12, freq="MS")
    parts = [_rows("readmission", "A", 100, 5 if i == 4 else 20, 0.2, str(m.date())) for i, m in enumerate(months)]
    chart = rpt.trend_chart(pd.concat(parts, ignore_index=True), "readmission", freq="month")
    # May (5 events) is hidden, and one more month with it (the complement: the months add up to the total)
    assert len(chart) == 10 and pd.Timestamp("2024-05-01") not in set(chart["period"])
    assert chart["centre"].iloc[0] == pytest.approx(0.2)  # 200/1000: hidden months are not in the centre line
    assert chart.attrs["freq"] == "month"
    assert "no special-cause signal" in rpt.trend_findings(chart, "Readmission")[0]


def test_trend_chart_auto_switches_to_quarters_for_rare_events():
    months = pd.date_range("2024-01-01", periods=12, freq="MS")
    parts = [_rows("mortality", "A", 100, 5, 0.05, str(m.date())) for m in months]  # 5 a month, 15 a quarter
    chart = rpt.trend_chart(pd.concat(parts, ignore_index=True), "mortality")
    assert chart.attrs["freq"] == "quarter" and list(chart["events"]) == [15, 15, 15, 15]


def test_trend_findings_name_the_signal():
    chart = pd.DataFrame({"period": pd.to_datetime(["2024-01-01", "2024-02-01"]),
                          "signal": ["improvement", "common cause"], "beyond_3sigma": ["improvement", ""],
                          "shift": "", "trend": "", "two_of_three": ""})
    text = rpt.trend_findings(chart, "Readmission")
    assert text == ["Readmission: a special-cause signal of improvement in January 2024 (a point outside the "
                    "control limits)."]


# ------------------------------------------------------------------------------------------------ post-acute


def _flow_inputs():
    fac = pd.DataFrame({"facility_id": ["H1", "H2", "S1", "S2", "S3"], "name": ["H one", "H two", "S one", "S two",
                                                                                 "S three"],
                        "setting": ["acute", "acute", "snf", "snf", "hha"], "market": "M",
                        "is_partner": [False, False, True, False, False]})
    # H1 sends 30 to S1, 5 to S2, 20 to S3; H2 sends 25 to S1
    pairs = [("H1", "S1", 30), ("H1", "S2", 5), ("H1", "S3", 20), ("H2", "S1", 25)]
    stays, rows = [], []
    for h, s, k in pairs:
        for i in range(k):
            sid = f"{h}{s}{i}"
            stays.append({"stay_id": sid, "facility_id": h})
            rows.append({"measure": "pac_readmission", "stay_id": sid, "unit_id": s, "unit_market": "M",
                         "unit_setting": fac.set_index("facility_id").loc[s, "setting"],
                         "unit_is_partner": s == "S1", "discharge_date": pd.Timestamp("2024-04-01"),
                         "observed": 0.0, "expected": 0.1})
    return {"facilities": fac, "stays": pd.DataFrame(stays)}, pd.DataFrame(rows)


def test_flow_table_suppresses_within_each_hospital():
    tables, rows = _flow_inputs()
    flows = rpt.flow_table(tables, rows, market="M", period=PERIOD).set_index(["hospital_id", "pac_facility_id"])
    assert pd.isna(flows.loc[("H1", "S2"), "n"])  # 5: primary
    assert pd.isna(flows.loc[("H1", "S3"), "n"])  # 20: the complement (smallest other count at H1)
    assert flows.loc[("H1", "S1"), "n"] == 30 and flows.loc[("H2", "S1"), "n"] == 25
    chart, left_off = rpt.flow_for_chart(flows.reset_index())
    assert set(chart["pac_facility_id"]) == {"S1"} and left_off == 2


def test_destination_table_adds_up():
    _, pac = _flow_inputs()
    index_rows = pd.concat([pac.assign(measure="readmission"),
                            pd.DataFrame({"measure": "readmission", "stay_id": [f"home{i}" for i in range(45)],
                                          "discharge_date": pd.Timestamp("2024-04-01")})], ignore_index=True)
    dest = rpt.destination_table(pd.concat([index_rows, pac], ignore_index=True), period=PERIOD).set_index(
        "destination")
    assert dest.loc["All discharges", "discharges"] == 125
    assert dest.loc["No post-acute care", "discharges"] == 45
    assert dest.loc["SNF (partner)", "discharges"] == 55 and dest.loc["SNF (partner)", "share"] == 55 / 125
    assert pd.isna(dest.loc["SNF (other)", "discharges"])  # 5
    assert pd.isna(dest.loc["HHA (other)", "discharges"])  # complement: 20 would give away the 5
    sentence = rpt.destination_findings(dest.reset_index())[0]
    assert sentence == ("Of 125 discharges, 64.0% went on to post-acute care; partners received 100.0% of those "
                        "whose destination can be shown.")


# ------------------------------------------------------------------------------------------------ appendix


def test_attrition_table_hides_small_steps_with_a_complement(raw_tables):
    from carequal.schema import validate_tables

    tables = validate_tables(raw_tables).tables
    table = rpt.attrition_table(tables)
    middle = table.iloc[1:-1]
    assert middle["removed"].isna().any()  # the fixture's steps remove 1–10 stays
    shown = middle["removed"].dropna()
    assert not ((shown >= 1) & (shown <= 10)).any()
    # the tiny fixture has 1–10 acute stays, so the start and end counts are hidden too
    assert pd.isna(table["remaining"].iloc[0]) and table["suppressed"].iloc[0]


def test_presentable_distinguishes_suppressed_from_blank():
    t = pd.DataFrame({"name": ["A", "B", "C"], "n": pd.array([120, pd.NA, pd.NA], dtype="Int64"),
                      "rate": [0.1, None, None], "suppressed": [False, True, False]})
    out = presentable(t, columns={"name": "Facility", "n": None, "rate": "Rate"}, counts=("n",),
                          percent=("rate",))
    assert out.columns.tolist() == ["Facility", COUNT_LABELS["n"], "Rate"]
    assert out.iloc[1].tolist() == ["B", "suppressed", ""]  # the hidden count said once; its rate left blank
    assert out.iloc[2].tolist() == ["C", "", ""]


def test_impact_finding_wording():
    base = {"effect": 0.3, "effect_lower": 0.1, "effect_upper": 0.5, "odds_ratio": float(np.exp(0.3)),
            "odds_ratio_lower": float(np.exp(0.1)), "odds_ratio_upper": float(np.exp(0.5)), "n": 500,
            "n_facilities": 6, "n_exposed": 200}
    assert "rose by 35%" in rpt.impact_finding(base)
    assert "did not change clearly" in rpt.impact_finding({**base, "effect_lower": -0.1,
                                                                   "odds_ratio_lower": float(np.exp(-0.1))})
    assert "Too few referrals" in rpt.impact_finding({**base, "n_exposed": 7})
    assert "could not be estimated" in rpt.impact_finding({"error": "no exposed rows"})


def _referrals(exposed) -> pd.DataFrame:
    """Post-acute referrals as :func:`carequal.impact.pac_attributed_stays` gives them, all in market M."""
    k = len(exposed)
    frame = pd.DataFrame({"pac_facility_id": ["S1", "S2"] * (k // 2), "unplanned_readmit_30d": [True, False] * (k // 2),
                          "exposed": exposed, "period": "2024Q1"})
    for c in RISK_COVARIATES:
        frame[c] = 0.0
    return frame


def test_impact_summary_reports_only_the_conditions_it_names(monkeypatch):
    tables = {"facilities": pd.DataFrame({"facility_id": ["S1", "S2"], "market": "M"})}
    monkeypatch.setattr(rpt, "pac_attributed_stays", lambda t: _referrals([np.nan, False, False, np.nan]))
    assert rpt.impact_summary(tables, market="M")["error"].startswith("no exposed rows")

    def singular(*args, **kwargs):
        raise ModelError(measure="unplanned_readmit_30d", facilities="2 facilities", cause="non-convergence",
                         detail="the fit's iterations met a singular matrix and could not go on",
                         model="difference-in-differences model", specifics="stay S1")

    monkeypatch.setattr(rpt, "pac_attributed_stays", lambda t: _referrals([True, False, False, True]))
    monkeypatch.setattr(rpt, "difference_in_differences", singular)
    error = rpt.impact_summary(tables, market="M")["error"]
    assert error.startswith("the difference-in-differences model could not be fitted at 2 post-acute providers (M)")
    assert "S1" not in error  # the reason, without the keys of the message


def test_impact_summary_lets_a_bug_fail_the_market(monkeypatch):
    tables = {"facilities": pd.DataFrame({"facility_id": ["S1", "S2"], "market": "M"})}

    def missing_column(t):
        raise KeyError("partner_since")

    monkeypatch.setattr(rpt, "pac_attributed_stays", missing_column)
    with pytest.raises(KeyError):
        rpt.impact_summary(tables, market="M")

    def bug(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(rpt, "pac_attributed_stays", lambda t: _referrals([True, False, False, True]))
    monkeypatch.setattr(rpt, "difference_in_differences", bug)
    with pytest.raises(ValueError, match="broadcast"):
        rpt.impact_summary(tables, market="M")


def test_kpi_record_carries_only_shown_values():
    kpis = pd.DataFrame({"measure": ["readmission", "mortality"], "label": ["R", "M"],
                         "n": pd.array([300, 300], dtype="Int64"), "rate": [0.2, np.nan], "ratio": [1.5, np.nan],
                         "ratio_lower": [1.2, np.nan], "ratio_upper": [1.8, np.nan], "prev_rate": [0.25, np.nan],
                         "change": [-0.05, np.nan], "change_lower": [-0.09, np.nan], "change_upper": [-0.01, np.nan]})
    card = pd.DataFrame({"judgement": ["higher than expected", "as expected", "lower than expected"]})
    record = rpt.kpi_record(kpis, card)
    assert record["readmission"] == {
        "label": "R", "rate": 0.2, "ratio": 1.5, "ratio_lower": 1.2, "ratio_upper": 1.8, "verdict": "higher",
        "improvement": "down", "prev_rate": 0.25, "change": -0.05, "change_lower": -0.09, "change_upper": -0.01,
        "change_verdict": "better", "cases": 300, "recent": []}
    hidden = record["mortality"]
    assert all(hidden[k] is None for k in ("rate", "ratio", "ratio_lower", "ratio_upper", "verdict", "prev_rate",
                                           "change", "change_verdict"))
    assert record["flagged"] == {"higher": 1, "lower": 1}


def test_min_cell_must_be_a_positive_whole_number():
    with pytest.raises(ParameterError, match="min_cell"):
        rpt.headline_kpis(_rows("readmission", "A", 50, 20, 0.1, "2024-01-01"), period=PERIOD, previous=PREVIOUS,
                          measures=("readmission",), min_cell=0)


def test_trend_chart_of_a_measure_without_stays_is_empty_not_an_error():
    rows = _rows("readmission", "A", 100, 20, 0.2, "2024-03-01")
    chart = rpt.trend_chart(rows, "mortality")
    assert chart.empty and "signal" in chart
    assert rpt.trend_findings(chart, "Mortality") == ["Mortality: too few periods with enough cases to chart."]
    assert rpt.trend_chart(rows, "mortality", by_partner=True).empty
