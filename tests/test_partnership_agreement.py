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
from carequal.errors import AgreementError
from carequal.loaders import load_tables

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
def sample():
    return load_tables(SAMPLE).tables


def _bad(text: str) -> str:
    with pytest.raises(AgreementError) as err:
        read_agreement(text=text)
    return str(err.value)


# ------------------------------------------------------------------------------------------ the file format


def test_sample_agreement_validates(sample):
    ag = load_agreement(SAMPLE / "agreement.toml", sample["facilities"])
    assert ag.name and len(ag.partners) == 7
    assert {m.measure for m in ag.metrics} == {"readmission", "discharge_to_community", "mortality",
                                               "length_of_stay", "volume"}


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
    assert "'readmission', 'mortality', 'discharge_to_community', 'length_of_stay' or 'volume'" in msg
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
    # with constant covariates the model is intercept-only: every case's expected = the crude rate of all 10
    # cases (4 events / 10 = 0.4), so O/E × national rate = O / n
    res = evaluate_agreement(ag, _tiny_tables(), cases=cases)
    q1 = res.iloc[0]
    assert q1["expected"] == pytest.approx(4 * 0.4) and q1["ratio"] == pytest.approx(1 / 1.6)
    assert q1["value"] == pytest.approx(0.25) and q1["national_rate"] == pytest.approx(0.4)
    assert q1["target"] == pytest.approx(0.75 * 0.9)  # peers 3/4, then 10% below
    # interval: exact Poisson for 1 event (0.0253, 5.5716) / E × rate
    assert q1["lower"] == pytest.approx(0.025318 / 1.6 * 0.4, rel=1e-4)
    assert 5.571643 / 1.6 * 0.4 > 1 and q1["upper"] == 1.0  # 1.39 is no rate: capped at 1
    assert q1["status"] == "not yet judgeable"  # the exact interval is wide enough to include 0.675
    assert res.iloc[1]["events"] == 0 and res.iloc[1]["lower"] == 0


def test_risk_adjusted_expected_equals_a_direct_statsmodels_fit(sample):
    import statsmodels.api as sm

    from carequal.risk import RISK_COVARIATES

    ag = read_agreement(text=GOOD.replace('measure = "readmission"', 'measure = "readmission"\nrisk_adjusted = true'))
    cases = agreement_cases(sample, ag)
    res = evaluate_agreement(ag, sample, cases=cases)
    hosp = cases[cases["role"] == "hospital"]
    usable = [c for c in RISK_COVARIATES if hosp[c].nunique() > 1]
    fit = sm.GLM(hosp["value"], sm.add_constant(hosp[usable]), family=sm.families.Binomial()).fit()
    hosp = hosp.assign(p=fit.predict(sm.add_constant(hosp[usable])),
                       q=pd.to_datetime(hosp["discharge_date"]).dt.to_period("Q").dt.start_time)
    mine = hosp[hosp["unit_id"] == "H001001"].groupby("q").agg(o=("value", "sum"), e=("p", "sum"))
    got = res[res["facility_id"] == "H001001"].set_index("period")
    np.testing.assert_allclose(got.loc[mine.index, "expected"], mine["e"], rtol=1e-6)
    np.testing.assert_allclose(got.loc[mine.index, "value"], mine["o"] / mine["e"] * hosp["value"].mean(), rtol=1e-6)


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
    cases = agreement_cases(sample, ag)
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
