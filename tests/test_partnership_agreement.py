"""Partnership agreement files: validation messages, statuses by hand, risk adjustment, and the generator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.agreement import (
    agreement_cases,
    check_agreement,
    evaluate_agreement,
    judge,
    load_agreement,
    read_agreement,
    review_periods,
)
from carequal.cohorts import IndexRules
from carequal.errors import AgreementError, ParameterError
from carequal.loaders import load_tables
from test_cohorts import FAC, patients, stays

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"

GOOD = """
name = "Test network"
review_period = "quarter"
[[partners]]
facility_id = "S001003"
[[partners]]
facility_id = "H001001"
[[metrics]]
id = "readmit"
measure = "readmission"
target = { kind = "absolute", value = 0.18 }
"""


@pytest.fixture(scope="module")
def sample(sample_work):
    # the sample's tables, validated from the dataset the session prepared once (the same rows as the CSV files:
    # the sample has no rejected row), rather than parsed and validated from the CSV files again
    return load_tables(sample_work.dataset).tables


def _bad(text: str) -> str:
    with pytest.raises(AgreementError) as err:
        read_agreement(text=text)
    return str(err.value)


# ------------------------------------------------------------------------------------------ the file format


def test_sample_agreement_validates(sample):
    ag = load_agreement(SAMPLE / "agreement.toml", sample["facilities"])
    assert ag.name and len(ag.partners) == 7
    assert {m.measure for m in ag.metrics} == {"readmission", "discharge_to_community", "mortality",
                                               "length_of_stay", "episode_spending", "volume"}
    spending = ag.metric("episode_spending_30d")
    assert spending.risk_adjusted and spending.target.kind == "market" and spending.window == 30


def test_yaml_and_toml_give_the_same_agreement(tmp_path):
    import yaml

    toml_path = tmp_path / "a.toml"
    toml_path.write_text(GOOD)
    yaml_path = tmp_path / "a.yaml"
    yaml_path.write_text(yaml.safe_dump(read_agreement(toml_path).model_dump(mode="json")))
    assert read_agreement(yaml_path) == read_agreement(toml_path)


def test_unknown_measure_names_key_and_choices():
    msg = _bad(GOOD.replace('measure = "readmission"', 'measure = "readmissions"'))
    assert "metrics[0] (readmit).measure" in msg
    assert ("'readmission', 'mortality', 'discharge_to_community', 'length_of_stay', 'episode_spending' or "
            "'volume'") in msg
    assert "given 'readmissions'" in msg


def test_unknown_key_is_an_error_not_ignored():
    msg = _bad(GOOD.replace('review_period = "quarter"', 'review_periode = "quarter"'))
    assert "review_periode: Extra inputs are not permitted" in msg


def test_wrong_review_period_lists_choices():
    msg = _bad(GOOD.replace('review_period = "quarter"', 'review_period = "year"'))
    assert "review_period: Input should be 'month' or 'quarter' (given 'year')" in msg


def test_percentage_written_for_a_rate_target():
    msg = _bad(GOOD.replace("value = 0.18", "value = 18"))
    assert "metrics[0] (readmit)" in msg and "not a proportion between 0 and 1 (write 0.18 for 18%)" in msg


def test_unknown_target_kind_lists_kinds():
    msg = _bad(GOOD.replace('kind = "absolute"', 'kind = "benchmark"'))
    assert "metrics[0] (readmit).target" in msg and "'absolute', 'market', 'national'" in msg


def test_volume_target_must_be_an_absolute_whole_number():
    vol = GOOD.replace('measure = "readmission"', 'measure = "volume"')
    assert "a volume target is a whole number of cases, not 12.5" in _bad(vol.replace("0.18", "12.5"))
    assert "a volume target must be kind = \"absolute\"" in _bad(
        vol.replace('{ kind = "absolute", value = 0.18 }', '{ kind = "market" }'))


def test_spending_targets_are_dollars_not_proportions():
    spend = GOOD.replace('measure = "readmission"', 'measure = "episode_spending"\nrisk_adjusted = true')
    # the proportion rule does not apply: 24,000 dollars per episode is a valid absolute or national target
    ag = read_agreement(text=spend.replace("value = 0.18", "value = 24000"))
    assert ag.metrics[0].target.value == 24000 and ag.metrics[0].better == "lower"
    assert ag.metrics[0].title == "30-day episode spending (risk-adjusted)"
    national = read_agreement(text=spend.replace('{ kind = "absolute", value = 0.18 }',
                                                  '{ kind = "national", value = 21500, source = "CMS" }'))
    assert national.metrics[0].target.value == 21500
    assert read_agreement(text=spend.replace('{ kind = "absolute", value = 0.18 }',
                                             '{ kind = "market", relative_change = -0.05 }')).metrics[0]
    assert read_agreement(text=spend.replace("value = 0.18", "value = 24000").replace(
        'risk_adjusted = true', 'risk_adjusted = true\nwindow_days = 90')).metrics[0].window == 90
    # a rate-style value (0.18 of what?), a ratio or a percentage for dollars is refused, with the way out
    for bad in ("0.18", "0.95", "100"):
        msg = _bad(spend.replace("value = 0.18", f"value = {bad}"))
        assert f"target value {float(bad):g} for episode_spending is in dollars per episode" in msg
        assert "relative_change" in msg and "not a proportion between 0 and 1" not in msg


def test_spending_without_payments_is_a_clear_error(sample):
    ag = read_agreement(text=GOOD.replace('measure = "readmission"', 'measure = "episode_spending"')
                        .replace("value = 0.18", "value = 24000"))
    tables = {**sample, "stays": sample["stays"].drop(columns="payment")}
    with pytest.raises(AgreementError, match=r"metrics\[0\] \(readmit\).measure: episode_spending needs the "
                                             r"payment of every stay, and the stays table has no payment column"):
        agreement_cases(tables, ag)


def test_risk_adjustment_only_where_available():
    msg = _bad(GOOD.replace('measure = "readmission"', 'measure = "length_of_stay"\nrisk_adjusted = true'))
    assert "risk_adjusted = true is not available for length_of_stay" in msg
    assert "readmission, mortality, discharge_to_community" in msg


def test_national_target_needs_its_value_and_missing_target_is_named():
    msg = _bad(GOOD.replace('{ kind = "absolute", value = 0.18 }', '{ kind = "national" }'))
    assert "metrics[0] (readmit).target.value: Field required" in msg
    msg = _bad(GOOD.replace('target = { kind = "absolute", value = 0.18 }', ""))
    assert "metrics[0] (readmit).target: Field required" in msg


def test_duplicates_and_every_problem_listed_at_once():
    text = GOOD + GOOD[GOOD.index("[[metrics]]"):] + '[[partners]]\nfacility_id = "S001003"\n'
    msg = _bad(text.replace('review_period = "quarter"', 'review_period = "week"'))
    assert "(3 problems)" in msg
    assert "metric id used twice: readmit" in msg and "facility_id listed twice: S001003" in msg


def test_syntax_error_names_the_file_and_format():
    assert _bad('name = "x\n').startswith("agreement.toml: not valid TOML")


def test_facility_not_in_data_names_key_and_suggests(sample):
    ag = read_agreement(text=GOOD.replace("S001003", "S00103"))
    with pytest.raises(AgreementError) as err:
        check_agreement(ag, sample["facilities"])
    msg = str(err.value)
    assert "partners[0] (S00103).facility_id: facility 'S00103' is not in the facilities table" in msg
    assert "S001001" in msg  # similar ids offered


def test_metric_that_fits_no_partner_setting(sample):
    ag = read_agreement(text=GOOD.replace('facility_id = "S001003"\n', 'facility_id = "H001004"\n')
                        .replace('measure = "readmission"', 'measure = "discharge_to_community"'))
    with pytest.raises(AgreementError, match=r"metrics\[0\] \(readmit\).measure: discharge_to_community applies to "
                                             r"snf, irf, ltch, hha facilities; the partners are acute"):
        check_agreement(ag, sample["facilities"])


def test_unknown_condition_and_missing_start(sample):
    ag = read_agreement(text=GOOD.replace('measure = "readmission"', 'measure = "readmission"\ncondition = "hip"')
                        .replace('"S001003"', '"S001001"'))  # S001001 is not a partner in the facilities table
    with pytest.raises(AgreementError) as err:
        check_agreement(ag, sample["facilities"])
    msg = str(err.value)
    assert "metrics[0] (readmit).condition: unknown condition 'hip'; choose from all, heart_failure" in msg
    assert "partners[0] (S001001).start: no start date" in msg


# ----------------------------------------------------------------------------------------------- statuses


def test_judge_by_hand():
    # lower is better, target 0.16: interval wholly below → met; wholly above → not met; across → not judgeable
    status, reason = judge([0.10, 0.25, 0.16, 0.10, 0.10], [0.05, 0.20, 0.10, 0.05, 0.05],
                           [0.15, 0.30, 0.22, 0.15, 0.15], [0.16, 0.16, 0.16, 0.16, np.nan], better="lower",
                           n=[100, 100, 100, 24, 100], min_cases=25)
    assert status.tolist() == ["met", "not met", "not yet judgeable", "not yet judgeable", "not yet judgeable"]
    assert reason[3] == "too few cases (24, fewer than 25)" and reason[4] == "no target (no benchmark cases)"
    # higher is better flips met and not met
    status, _ = judge([0.10, 0.25], [0.05, 0.20], [0.15, 0.30], [0.16, 0.16], better="higher", n=[100, 100],
                      min_cases=25)
    assert status.tolist() == ["not met", "met"]
    # a volume: no interval; exactly on target meets it, one short does not
    status, _ = judge([60, 59], [60, 59], [60, 59], [60, 60], better="higher", n=[60, 59], min_cases=0)
    assert status.tolist() == ["met", "not met"]


def test_review_periods_month():
    got = review_periods(pd.Series(pd.to_datetime(["2024-01-31", "2024-02-01"])), "month")
    assert got.dt.strftime("%Y-%m-%d").tolist() == ["2024-01-01", "2024-02-01"]


def _tiny_cases(metric: str = "m") -> pd.DataFrame:
    """Hand-made cases: partner P (2 periods) and two non-partner peers Q, R of the same market and setting."""
    from carequal.risk import RISK_COVARIATES

    rows = []
    # Q1 2024: P has 4 cases (1 event); peers Q 3 cases (2 events) and R 1 case (1 event)
    # Q2 2024: P has 2 cases (0 events); peers: none
    for unit, day, value in [("P", "2024-01-10", 1), ("P", "2024-02-10", 0), ("P", "2024-03-10", 0),
                             ("P", "2024-03-20", 0), ("Q", "2024-01-05", 1), ("Q", "2024-02-05", 1),
                             ("Q", "2024-03-05", 0), ("R", "2024-01-07", 1), ("P", "2024-04-02", 0),
                             ("P", "2024-05-02", 0)]:
        rows.append({"metric": metric, "role": "post_acute", "unit_id": unit, "stay_id": f"{unit}{day}",
                     "patient_id": f"p{unit}{day}", "discharge_date": pd.Timestamp(day), "condition": "other",
                     "value": float(value), **{c: 0.0 for c in RISK_COVARIATES}})
    return pd.DataFrame(rows)


def _tiny_tables() -> dict:
    fac = pd.DataFrame({"facility_id": ["P", "Q", "R", "H"], "name": ["Partner SNF", "Q SNF", "R SNF", "Hosp"],
                        "setting": ["snf", "snf", "snf", "acute"], "market": "M",
                        "is_partner": [True, False, False, False],
                        "partner_since": pd.to_datetime(["2024-02-15", None, None, None])})
    return {"facilities": fac}


def test_evaluate_by_hand_crude_rate_market_target_and_change():
    ag = read_agreement(text="""
name = "t"
[[partners]]
facility_id = "P"
[[metrics]]
id = "m"
measure = "readmission"
min_cases = 3
target = { kind = "market" }
""")
    res = evaluate_agreement(ag, _tiny_tables(), cases=_tiny_cases())
    assert res["period"].dt.strftime("%Y-%m").tolist() == ["2024-01", "2024-04"]
    q1, q2 = res.iloc[0], res.iloc[1]
    assert (q1["n"], q1["events"], q1["value"]) == (4, 1.0, 0.25)
    assert (q1["benchmark_n"], q1["benchmark"], q1["target"]) == (4, 0.75, 0.75)  # Q and R pooled: 3/4
    # Wilson 95% for 1/4: 0.0456 to 0.6994, wholly below 0.75 → met (lower is better)
    assert q1["upper"] == pytest.approx(0.6994, abs=1e-4) and q1["status"] == "met"
    assert q1["phase"] == "starting"  # the partnership began on 2024-02-15, inside Q1
    # Q2: 2 cases (< min_cases 3) and no peers
    assert q2["n"] == 2 and q2["status"] == "not yet judgeable" and q2["phase"] == "after"
    assert q2["previous_value"] == 0.25 and q2["change"] == pytest.approx(-0.25)
    assert q2["benchmark_n"] == 0 and np.isnan(q2["target"])


def test_a_readmission_metric_reads_the_flags_of_its_own_window():
    # a: readmitted on day 5 (b), c: on day 10 (d); b and d, index stays too, are not readmitted. A 7-day
    # metric counts a only, a 30-day one a and c
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "I509", "E119"),
                ("b", "p", "H2", "2024-01-10", "2024-01-12", "01", "J189", "E119"),
                ("c", "q", "H1", "2024-01-01", "2024-01-05", "01", "I509", "E119"),
                ("d", "q", "H1", "2024-01-15", "2024-01-16", "01", "J189", "E119"))
    tables = {"stays": st_, "facilities": FAC.assign(name=FAC["facility_id"]),
              "patients": patients(("p", "1940-01-01", None), ("q", "1940-01-01", None))}
    metrics = "".join(f'[[metrics]]\nid = "{metric}"\nmeasure = "readmission"\n{window}'
                      'target = { kind = "absolute", value = 0.2 }\n'
                      for metric, window in (("week", "window_days = 7\n"),
                                             ("week_all", 'window_days = 7\nplanned = "include"\n'), ("month", "")))
    ag = read_agreement(text='name = "t"\n[[partners]]\nfacility_id = "H1"\n' + metrics)
    cases = agreement_cases(tables, ag, rules=IndexRules(runout_days=None))
    hospital = cases[cases["role"] == "hospital"].set_index(["metric", "stay_id"])["value"]
    assert hospital.loc["week"].to_dict() == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert hospital.loc["week_all"].to_dict() == {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    assert hospital.loc["month"].to_dict() == {"a": 1.0, "b": 0.0, "c": 1.0, "d": 0.0}


def test_evaluate_by_hand_risk_adjusted_and_relative_target():
    ag = read_agreement(text="""
name = "t"
review_period = "quarter"
[[partners]]
facility_id = "P"
[[metrics]]
id = "m"
measure = "readmission"
risk_adjusted = true
min_cases = 1
target = { kind = "market", relative_change = -0.10 }
""")
    cases = _tiny_cases()
    # with constant covariates the model is intercept-only: a random-intercept logistic model on the facilities
    # (as the national models), so every case's expected is the average facility's probability expit(β0) — not
    # the crude rate of all 10 cases (4 / 10), which is the national rate; O/E × national rate = O / (n p) × 0.4
    from carequal.risk import HierarchicalLogit

    model = HierarchicalLogit([]).fit(cases.assign(outcome=cases["value"]), outcome="outcome", group="unit_id")
    p = float(1 / (1 + np.exp(-model.linear_predictor(cases.iloc[:1])[0])))
    assert abs(p - 0.4) > 0.005  # the hierarchical model's intercept is not the crude rate
    res = evaluate_agreement(ag, _tiny_tables(), cases=cases)
    q1 = res.iloc[0]
    assert q1["expected"] == pytest.approx(4 * p) and q1["ratio"] == pytest.approx(1 / (4 * p))
    assert q1["value"] == pytest.approx(0.4 / (4 * p)) and q1["national_rate"] == pytest.approx(0.4)
    # peers 3 events in 4 cases: O/E × national rate, then 10% below
    assert q1["target"] == pytest.approx(3 / (4 * p) * 0.4 * 0.9)
    # interval: exact Poisson for 1 event (0.0253, 5.5716) / E × rate
    assert q1["lower"] == pytest.approx(0.025318 / (4 * p) * 0.4, rel=1e-4)
    assert 5.571643 / (4 * p) * 0.4 > 1 and q1["upper"] == 1.0  # no rate: capped at 1
    assert q1["status"] == "not yet judgeable"  # the exact interval is wide enough to include the target
    assert res.iloc[1]["events"] == 0 and res.iloc[1]["lower"] == 0


def _spending_tables() -> dict:
    """Hand-made contract tables for episode spending: one market, hospitals H1 (partner) and H2, SNFs S1
    (partner) and S2; every patient aged 84 with heart failure and one secondary diagnosis, so that the risk
    covariates are constant."""
    from carequal.schema import validate_tables

    # (stay, patient, facility, admit, discharge, discharge status, payment)
    rows = [
        ("h1", "p1", "H1", "2024-03-01", "2024-03-05", "03", "10000"),  # SNF S1 from day 0, 10 days: 16,000
        ("s1", "p1", "S1", "2024-03-05", "2024-03-15", "01", "6000"),
        ("h2", "p2", "H1", "2024-03-10", "2024-03-12", "01", "8000"),   # readmitted to H2 on day 8: 17,000
        ("r2", "p2", "H2", "2024-03-20", "2024-03-25", "01", "9000"),   # itself an index stay of H2: 9,000
        ("h3", "p3", "H2", "2024-04-01", "2024-04-04", "03", "12000"),  # S1 for 40 days, 31 in the window:
        ("s3", "p3", "S1", "2024-04-04", "2024-05-14", "01", "20000"),  # 12,000 + 20,000 × 31/40 = 27,500
        ("h4", "p4", "H2", "2024-04-10", "2024-04-13", "03", "11000"),  # S2 from day 1: 16,000
        ("s4", "p4", "S2", "2024-04-14", "2024-04-24", "01", "5000"),
        ("h5", "p5", "H1", "2024-05-01", "2024-05-03", "03", "9000"),   # S2: 16,000
        ("s5", "p5", "S2", "2024-05-03", "2024-05-13", "01", "7000"),
        ("h6", "p6", "H1", "2024-09-10", "2024-09-15", "01", "9500"),   # window ends 15 Oct: past 2 Oct
        ("h7", "p7", "H2", "2024-11-28", "2024-12-01", "01", "5000"),   # the data's last day; not an index
        ("h8", "p8", "H1", "2024-06-01", "2024-06-03", "01", ""),       # no payment
    ]
    stays = pd.DataFrame(rows, columns=["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date",
                                        "discharge_status", "payment"]).assign(
        admission_type="1", principal_dx="I50.9", secondary_dx="I10")
    patients = pd.DataFrame({"patient_id": [f"p{i}" for i in range(1, 9)], "birth_date": "1940-01-01",
                             "sex": "F", "dual_eligible": "false", "death_date": "", "market": "M"})
    enrollment = pd.DataFrame({"patient_id": patients["patient_id"], "start_date": "2010-01-01",
                               "end_date": "2025-12-31", "coverage": "ffs"})
    facilities = pd.DataFrame({"facility_id": ["H1", "H2", "S1", "S2"], "name": ["H one", "H two", "S one", "S two"],
                               "setting": ["acute", "acute", "snf", "snf"], "market": "M",
                               "is_partner": ["true", "false", "true", "false"],
                               "partner_since": ["2023-01-01", "", "2023-01-01", ""]})
    return validate_tables({"facilities": facilities, "patients": patients, "stays": stays,
                            "enrollment": enrollment}).tables


SPENDING = """
name = "t"
[[partners]]
facility_id = "H1"
[[partners]]
facility_id = "S1"
[[metrics]]
id = "spend"
measure = "episode_spending"
min_cases = 1
target = { kind = "market" }
"""


def test_spending_by_hand_mean_market_benchmark_and_excluded_episodes():
    from carequal.errors import DataQualityWarning

    tables = _spending_tables()
    ag = read_agreement(text=SPENDING)
    with pytest.warns(DataQualityWarning, match="1 episode"):  # h8's missing payment is reported
        cases = agreement_cases(tables, ag)
    by_stay = cases[cases["role"] == "hospital"].set_index("stay_id")
    # the data end on 1 December; with 60 days of room an episode's 30-day window must end by 2 October
    assert by_stay.loc["h6", "excluded"] == "incomplete_followup" and by_stay.loc["h8", "excluded"] == "missing_payment"
    assert by_stay.loc[["h6", "h8"], "value"].isna().all() and "h7" not in by_stay.index  # h7: cohort runout
    assert by_stay.loc[["h1", "h2", "r2", "h3", "h4", "h5"], "value"].tolist() == [16000, 17000, 9000, 27500, 16000,
                                                                                   16000]
    pac = cases[cases["role"] == "post_acute"].set_index("stay_id")
    assert pac["unit_id"].to_dict() == {"h1": "S1", "h3": "S1", "h4": "S2", "h5": "S2"}

    res = evaluate_agreement(ag, tables, cases=cases, periods=[("2024-01-01", "2024-12-31")]).set_index("facility_id")
    h1, s1 = res.loc["H1"], res.loc["S1"]
    # H1 discharged h1, h2, h5 (16,000, 17,000, 16,000) and h6, h8, which are counted as left out
    assert (h1["n"], h1["excluded"]) == (3, 2) and h1["value"] == pytest.approx(49000 / 3)
    # t interval: sd 577.35, se 333.33, t(2) 4.3027
    assert h1["upper"] - h1["value"] == pytest.approx(4.302653 * 1000 / 3, rel=1e-6)
    # benchmark: H2's episodes r2, h3, h4 (9,000 + 27,500 + 16,000) / 3; the market target is that value
    assert (h1["benchmark_n"], h1["benchmark"], h1["target"]) == (3, 17500, 17500)
    assert h1["status"] == "not yet judgeable" and h1["method"] == "mean, t interval"
    # S1 answers for the episodes whose first post-acute stay it gave: h1 and h3; S2 for h4 and h5
    assert (s1["n"], s1["excluded"], s1["value"]) == (2, 0, 21750)
    assert (s1["benchmark_n"], s1["benchmark"]) == (2, 16000)


def test_spending_by_hand_risk_adjusted():
    import warnings

    from carequal.cost import spending_ratio

    tables = _spending_tables()
    ag = read_agreement(text=SPENDING.replace('measure = "episode_spending"',
                                              'measure = "episode_spending"\nrisk_adjusted = true'))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = agreement_cases(tables, ag)
    res = evaluate_agreement(ag, tables, cases=cases, periods=[("2024-01-01", "2024-12-31")]).set_index("facility_id")
    h1 = res.loc["H1"]
    # constant covariates: every episode's expected spending is the mean of the six hospital episodes
    # (101,500 / 6), the national mean; O/E × national mean is then H1's own mean
    national = 101500 / 6
    assert h1["national_rate"] == pytest.approx(national) and h1["expected"] == pytest.approx(3 * national)
    assert h1["ratio"] == pytest.approx(49000 / (3 * national)) and h1["value"] == pytest.approx(49000 / 3)
    # the interval is spending_ratio's, times the national mean: residuals y − R μ are −333.33, 666.67, −333.33,
    # V = 3/2 × 666,666.67 = 10⁶, se(log R) = 1,000 / 49,000
    assert h1["lower"] == pytest.approx(49000 / 3 * np.exp(-1.959964 / 49), rel=1e-6)
    mine = cases[(cases["unit_id"] == "H1") & cases["excluded"].isna()].assign(mu=national)
    direct = spending_ratio(mine, by=[], observed="value", expected="mu").iloc[0]
    assert h1["upper"] == pytest.approx(direct["upper"] * national)
    assert h1["method"].startswith("O/E × national mean (log-scale delta method")
    # the benchmark: H2's O/E × national mean is H2's mean, 17,500
    assert h1["benchmark"] == pytest.approx(17500) and h1["target"] == pytest.approx(17500)


def test_views_are_the_evaluations_of_their_own_and_fit_once(monkeypatch):
    # a packet's three views in one evaluation: each view's rows are those of a call with its own periods, and
    # the (risk-adjusted) metric's model is fitted once for all of them
    import carequal.agreement as agreement_module

    ag = read_agreement(text='name = "t"\n[[partners]]\nfacility_id = "P"\n' + """
[[metrics]]
id = "m"
measure = "readmission"
min_cases = 1
risk_adjusted = true
target = { kind = "market", relative_change = -0.10 }
[[metrics]]
id = "v"
measure = "volume"
target = { kind = "absolute", value = 2 }
""")
    cases = pd.concat([_tiny_cases("m"), _tiny_cases("v")], ignore_index=True)
    periods = [(pd.Timestamp("2023-07-01"), pd.Timestamp("2023-12-31")),
               (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-06-30"))]
    fits = []
    real = agreement_module._risk_fit
    monkeypatch.setattr(agreement_module, "_risk_fit", lambda *a, **k: fits.append(a[0].id) or real(*a, **k))
    both = evaluate_agreement(ag, _tiny_tables(), cases=cases, views={
        "review": {}, "year": {"review_period": "year"}, "reporting": {"periods": periods}})
    assert fits == ["m"] and both["view"].unique().tolist() == ["review", "year", "reporting"]
    alone = {"review": evaluate_agreement(ag, _tiny_tables(), cases=cases),
             "year": evaluate_agreement(ag, _tiny_tables(), cases=cases, review_period="year"),
             "reporting": evaluate_agreement(ag, _tiny_tables(), cases=cases, periods=periods)}
    def ns(frame):  # concatenated views share one datetime resolution, as the packet's results always did
        return frame.astype({c: "datetime64[ns]" for c in frame.columns if str(frame[c].dtype).startswith("datetime")})

    for name, expected in alone.items():
        got = both[both["view"] == name].drop(columns="view").reset_index(drop=True)
        pd.testing.assert_frame_equal(ns(got), ns(expected))
    with pytest.raises(ParameterError, match="not both"):
        evaluate_agreement(ag, _tiny_tables(), cases=cases, views={"a": {}}, review_period="year")
    with pytest.raises(ParameterError, match="review_period or periods"):
        evaluate_agreement(ag, _tiny_tables(), cases=cases, views={"a": {"freq": "year"}})


def test_risk_adjusted_expected_is_the_national_models(sample, sample_work):
    # one model per measure judges a partner everywhere: with the measured cohort prepare built, a risk-adjusted
    # 30-day readmission metric's expected values are the national reference's (the HierarchicalLogit fits the
    # market reports use), summed over the partner's stays, and its national rate is that model's crude rate
    from carequal.national import read_cohort, read_reference

    ag = read_agreement(text=GOOD.replace('measure = "readmission"', 'measure = "readmission"\nrisk_adjusted = true'))
    cases = agreement_cases(sample, ag, cohort=read_cohort(sample_work.cohort).rows)
    res = evaluate_agreement(ag, sample, cases=cases, end="2024-12-31")
    ref = read_reference(sample_work.reference)
    for unit, measure in [("H001001", "readmission"), ("S001003", "pac_readmission")]:
        rows = ref.rows[(ref.rows["measure"] == measure) & (ref.rows["discharge_date"] <= "2024-12-31")]
        rate = float(ref.models.set_index("measure").loc[measure, "rate"])
        mine = rows[rows["unit_id"] == unit].assign(
            q=pd.to_datetime(rows["discharge_date"]).dt.to_period("Q").dt.start_time)
        mine = mine.groupby("q").agg(o=("observed", "sum"), e=("expected", "sum"))
        got = res[res["facility_id"] == unit].set_index("period")
        np.testing.assert_array_equal(got.loc[mine.index, "events"], mine["o"])
        np.testing.assert_allclose(got.loc[mine.index, "expected"], mine["e"], rtol=1e-9)
        np.testing.assert_allclose(got["national_rate"], rate, rtol=1e-12)
        np.testing.assert_allclose(got.loc[mine.index, "value"], mine["o"] / mine["e"] * rate, rtol=1e-9)


def test_every_case_belongs_to_its_role(sample):
    ag = load_agreement(SAMPLE / "agreement.toml", sample["facilities"])
    cases = agreement_cases(sample, ag)
    setting = sample["facilities"].set_index("facility_id")["setting"]
    units = cases["unit_id"].map(setting)
    assert (units[cases["role"] == "hospital"] == "acute").all()
    assert units[cases["role"] == "post_acute"].isin(["snf", "irf", "ltch", "hha"]).all()
    # volume counts every index stay once for its hospital
    vol = cases[(cases["metric"] == "patients") & (cases["role"] == "hospital")]
    assert vol["stay_id"].is_unique
    assert set(cases.loc[cases["metric"] == "discharge_to_community", "role"]) == {"post_acute"}


# ------------------------------------------------------------------------------------ the generator's truth


def test_status_agrees_with_the_generators_truth(sample):
    """Targets at 10%, 16% and 25% for crude 30-day unplanned readmission of every partner of the sample.

    The truth of a partner × quarter is the mean of the generator's readmission probability over its cases
    (``truth_stays.p_readmit``, the probability the outcome was drawn from). Where that truth is more than
    four standard errors from the target, a partner with enough cases must get the truth's status; no judged
    row may contradict the truth beyond the 2.5% a 95% interval allows; too few cases is never judged.
    """
    fac = sample["facilities"]
    partners = fac[fac["is_partner"]]["facility_id"].tolist()
    text = 'name = "all partners"\nreview_period = "quarter"\n' + "".join(
        f'[[partners]]\nfacility_id = "{f}"\n' for f in partners)
    for t in (0.10, 0.16, 0.25):
        text += (f'[[metrics]]\nid = "r{int(100 * t)}"\nmeasure = "readmission"\nmin_cases = 40\n'
                 f'target = {{ kind = "absolute", value = {t} }}\n')
    ag = read_agreement(text=text)
    # every coverage type counts: the generator draws the outcomes of Medicare Advantage and FFS patients
    # alike, and the power asked for below (more than 20 clear partner-quarters) needs the cases of both
    cases = agreement_cases(sample, ag, rules=IndexRules(coverage=None))
    res = evaluate_agreement(ag, sample, cases=cases)

    truth = pd.read_csv(SAMPLE / "truth_stays.csv", usecols=["stay_id", "p_readmit"])
    cases = cases.merge(truth, on="stay_id", how="left")
    # a few index stays (e.g. the first stay of a transfer chain) carry no drawn probability of their own
    assert cases["p_readmit"].notna().mean() > 0.9
    cases = cases[cases["p_readmit"].notna()]
    cases["period"] = review_periods(cases["discharge_date"], "quarter")
    true_rate = cases.groupby(["metric", "unit_id", "period"])["p_readmit"].mean().rename("truth")
    res = res.join(true_rate, on=["metric", "facility_id", "period"])
    true_status = np.where(res["truth"] < res["target"], "met", "not met")

    few = res["n"] < 40
    assert few.any() and (res.loc[few, "status"] == "not yet judgeable").all()
    judged = res["status"] != "not yet judgeable"
    wrong = judged & (res["status"] != true_status)
    assert judged.sum() > 30
    assert wrong.sum() <= 0.05 * judged.sum()
    se = np.sqrt(res["truth"] * (1 - res["truth"]) / res["n"].clip(lower=1))
    clear = ~few & ((res["truth"] - res["target"]).abs() > 4 * se)
    assert clear.sum() > 20
    assert (res.loc[clear, "status"] == true_status[clear.to_numpy()]).all()


# ----------------------------------------------------------------------------- spending: the generator's truth


def _spending_agreement(partners) -> object:
    """Every given partner, one risk-adjusted 30-day spending metric against the market."""
    return read_agreement(text='name = "all partners"\n' + "".join(f'[[partners]]\nfacility_id = "{f}"\n'
                                                                    for f in partners)
                          + '[[metrics]]\nid = "spend"\nmeasure = "episode_spending"\nrisk_adjusted = true\n'
                            'min_cases = 1\ntarget = { kind = "market" }\n')


def _pooled(res: pd.DataFrame) -> float:
    """Pooled O/E of evaluated rows: Σ O / Σ E, with O = ratio × E."""
    return float((res["ratio"] * res["expected"]).sum() / res["expected"].sum())


@pytest.fixture(scope="module")
def spending_2024(sample):
    """The sample's post-acute partners (all started in 2023), evaluated over 2024 as one period."""
    fac = sample["facilities"]
    partners = fac.loc[fac["is_partner"] & (fac["setting"] != "acute"), "facility_id"].tolist()
    assert (fac.loc[fac["is_partner"], "partner_since"] < "2024-01-01").all()
    ag = _spending_agreement(partners)
    cases = agreement_cases(sample, ag)
    res = evaluate_agreement(ag, sample, cases=cases, periods=[("2024-01-01", "2024-12-31")])
    return cases, res


def test_risk_adjusted_spending_equals_a_direct_gamma_fit(sample, spending_2024):
    import statsmodels.api as sm

    from carequal.risk import RISK_COVARIATES

    cases, res = spending_2024
    setting = sample["facilities"].set_index("facility_id")["setting"]
    snf = cases[(cases["role"] == "post_acute") & cases["excluded"].isna()
                & (cases["unit_id"].map(setting) == "snf")].reset_index(drop=True)
    usable = [c for c in RISK_COVARIATES if snf[c].nunique() > 1]
    X = sm.add_constant(snf[usable])
    fit = sm.GLM(snf["value"], X, family=sm.families.Gamma(sm.families.links.Log())).fit()
    snf["mu"] = fit.predict(X)
    mine = snf[pd.to_datetime(snf["discharge_date"]).dt.year == 2024].groupby("unit_id")["mu"].sum()
    got = res[res["setting"] == "snf"].set_index("facility_id")
    np.testing.assert_allclose(got["expected"], mine.reindex(got.index), rtol=1e-6)
    np.testing.assert_allclose(got["national_rate"], snf["value"].mean(), rtol=1e-9)


def test_partner_post_acute_spending_is_below_expected_as_the_generator_says(sample, spending_2024):
    """The sample's generator multiplies every post-acute payment at a partner after its start by exp(−0.15)
    (truth.json, "payment"), and lowers its patients' readmission risk: the episodes of the partner post-acute
    providers in 2024 must cost less than expected for their patients. The effect on the whole 30-day episode
    is smaller than −0.15 (the hospital stay is not affected) and the model, fitted on every episode
    including the partners', absorbs part of it."""
    import json

    from carequal.cost import spending_ratio

    truth = json.loads((SAMPLE / "truth.json").read_text())["payment"]
    assert truth["partnership_effect"] == pytest.approx(-0.15)
    cases, res = spending_2024
    pooled = _pooled(res)
    assert np.exp(-0.15) < pooled < 0.98
    # the pooled interval needs each episode's expected spending: refit each setting's model as the
    # agreement does (checked against the partners' rows), then cost.spending_ratio over the pooled episodes
    from carequal.cost import expected_spending
    from carequal.risk import RISK_COVARIATES

    setting = sample["facilities"].set_index("facility_id")["setting"]
    kept = cases[(cases["role"] == "post_acute") & cases["excluded"].isna()]
    parts = []
    for _, group in kept.groupby(kept["unit_id"].map(setting)):
        usable = [c for c in RISK_COVARIATES if group[c].nunique() > 1]
        model = expected_spending(group, outcome="value", covariates=usable)
        parts.append(group.assign(mu=model.expected))
    episodes = pd.concat(parts)
    episodes = episodes[episodes["unit_id"].isin(res["facility_id"])
                        & (pd.to_datetime(episodes["discharge_date"]).dt.year == 2024)]
    by_partner = episodes.groupby("unit_id")["mu"].sum()
    np.testing.assert_allclose(by_partner.reindex(res["facility_id"]), res["expected"], rtol=1e-9)
    ratio = spending_ratio(episodes, by=[], observed="value", expected="mu").iloc[0]
    assert ratio["ratio"] == pytest.approx(pooled)
    assert ratio["upper"] < 1, ratio
    # against the market target: most partners spend less than their market's non-partners of the same setting
    # (12 of the 15 with a benchmark; home health, whose payments are a small part of an episode, least often).
    # Without an effect, 11 or more of 15 would happen with probability 0.06.
    judged = res[res["benchmark"].notna()]
    assert len(judged) == 15 and (judged["value"] < judged["target"]).sum() >= 11


def test_spending_metric_follows_the_generators_payment_effect_in_twin_data():
    """Two datasets from one seed, with the payment effect of partner post-acute care at −0.15 and at 0: the
    generator draws nothing for it, so the datasets differ only in those payments, and the spending the
    partners' episodes would have had without the effect is known exactly. The truth T = Σ spending with the
    effect / Σ spending without it, over the partners' 2024 episodes. The metric's pooled O/E must move by a
    factor between T and 1: towards 1 because the model is fitted on every episode, the partners' too
    (about 1 − s on the log scale, s the affected share of the fitted episodes)."""
    from carequal.synth import SynthConfig, generate

    runs = {}
    for effect in (-0.15, 0.0):
        tab = generate(SynthConfig(n_markets=2, patients_per_market=4000, payment_partnership_effect=effect,
                                   seed=3, truth_stays=False))
        fac = tab["facilities"]
        partners = fac.loc[fac["is_partner"] & (fac["setting"] != "acute"), "facility_id"].tolist()
        assert (fac.loc[fac["is_partner"], "partner_since"] < "2024-01-01").all()
        ag = _spending_agreement(partners)
        cases = agreement_cases(tab, ag)
        res = evaluate_agreement(ag, tab, cases=cases, periods=[("2024-01-01", "2024-12-31")])
        runs[effect] = (tab, cases, res)
    (tab1, c1, r1), (tab0, c0, r0) = runs[-0.15], runs[0.0]
    assert tab1["stays"].drop(columns="payment").equals(tab0["stays"].drop(columns="payment"))
    assert c1.drop(columns="value").equals(c0.drop(columns="value"))
    mine = (c1["role"] == "post_acute") & c1["excluded"].isna() & c1["unit_id"].isin(r1["facility_id"]) \
        & (pd.to_datetime(c1["discharge_date"]).dt.year == 2024)
    truth = c1.loc[mine, "value"].sum() / c0.loc[mine, "value"].sum()
    assert np.exp(-0.15) < truth < 0.97  # the hospital stay and readmissions are not affected
    with_effect, without = _pooled(r1), _pooled(r0)
    assert with_effect < 1 and truth < with_effect / without < 1
    fitted = (c1["role"] == "post_acute") & c1["excluded"].isna()
    since = tab1["facilities"].set_index("facility_id")["partner_since"]
    affected = (c1.loc[fitted, "unit_id"].isin(r1["facility_id"])
                & (c1.loc[fitted, "discharge_date"] >= c1.loc[fitted, "unit_id"].map(since))).mean()
    attenuation = np.log(with_effect / without) / np.log(truth)
    assert abs(attenuation - (1 - affected)) < 0.15, (attenuation, affected)


def test_a_volume_target_is_per_review_period():
    """60 cases a quarter: a year needs 240 and a month 20 (the packet's headline is the whole year)."""
    ag = read_agreement(text="""
name = "t"
review_period = "quarter"
[[partners]]
facility_id = "P"
[[metrics]]
id = "v"
measure = "volume"
target = { kind = "absolute", value = 60 }
""")
    cases = _tiny_cases("v").assign(value=1.0)
    by_year = evaluate_agreement(ag, _tiny_tables(), cases=cases, review_period="year")
    assert by_year["target"].tolist() == [240.0]
    assert by_year["n"].tolist() == [6] and by_year["status"].tolist() == ["not met"]
    assert "60 per quarter × the period's length" in by_year["target_basis"].iloc[0]
    by_quarter = evaluate_agreement(ag, _tiny_tables(), cases=cases)
    assert by_quarter["target"].tolist() == [60.0, 60.0] and by_quarter["target_basis"].iloc[0] == "agreed value"
    spans = evaluate_agreement(ag, _tiny_tables(), cases=cases, periods=[("2024-01-01", "2024-01-31")])
    assert spans["target"].tolist() == [20.0]
