"""Candidate partner screening: hand-worked criteria, the ranking rule, small-cell suppression, the sample,
the report section and the chart."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from carequal import plots  # noqa: E402
from carequal import report as rpt  # noqa: E402
from carequal import screening as sc  # noqa: E402
from carequal.disclosure import check_suppressed  # noqa: E402
from carequal.errors import ParameterError  # noqa: E402
from carequal.intervals import poisson_exact, wilson  # noqa: E402
from carequal.periods import previous_period  # noqa: E402
from carequal.presentation import COUNT_LABELS  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PERIOD = ("2024-01-01", "2024-12-31")

# market M: two hospitals, four SNFs (S2 a partner since 2023, S3 signed to start after the period, S4 a
# partner of unknown start), one IRF and one HHA; HX is a hospital of another market
FACILITIES = pd.DataFrame({
    "facility_id": ["H1", "H2", "HX", "S1", "S2", "S3", "S4", "R1", "A1"],
    "name": ["North General", "North Memorial", "Far General", "Oak SNF", "Elm SNF", "Ash SNF", "Fir SNF",
             "Bay Rehab", "Home Care"],
    "setting": ["acute", "acute", "acute", "snf", "snf", "snf", "snf", "irf", "hha"],
    "market": ["M", "M", "X", "M", "M", "M", "M", "M", "M"],
    "is_partner": [False, False, False, False, True, True, True, False, False],
    "partner_since": pd.to_datetime([None, None, None, None, "2023-01-01", "2025-03-01", None, None, None]),
    "nurse_hours_ppd": [10.0, 10.0, 10.0, 4.5, 3.0, 3.5, 5.0, 6.0, None],
})


def _world(referrals: dict | None = None, pac: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Reference rows and contract tables built from a few lines.

    ``referrals``: provider → list of (hospital, discharge date, readmitted, expected probability): one index
    stay each (its hospital stay in ``stays``, its ``pac_readmission`` row in ``rows``).
    ``pac``: provider → list of (discharge status, age, sex, dual, length of stay): one post-acute stay each,
    each of its own patient, admitted in 2024 and followed by nothing (so "01" is a discharge to community and
    "03" is not).
    """
    rows, stays, pats = [], [], []
    for prov, items in (referrals or {}).items():
        for i, (hosp, date, readmitted, expected) in enumerate(items):
            sid, pid, when = f"h-{prov}-{i}", f"hp-{prov}-{i}", pd.Timestamp(date)
            stays.append({"stay_id": sid, "patient_id": pid, "facility_id": hosp, "admit_date": when - pd.Timedelta(
                days=3), "discharge_date": when, "discharge_status": "03", "principal_dx": "I509", "procedures": None})
            pats.append({"patient_id": pid, "birth_date": pd.Timestamp("1940-01-01"), "sex": "F",
                         "dual_eligible": False})
            rows.append({"measure": "pac_readmission", "stay_id": sid, "unit_id": prov, "unit_market": "M",
                         "discharge_date": when, "observed": float(readmitted), "expected": expected,
                         "predicted": expected})
    for prov, items in (pac or {}).items():
        for i, (status, age, sex, dual, los) in enumerate(items):
            sid, pid = f"p-{prov}-{i}", f"pp-{prov}-{i}"
            admit = pd.Timestamp("2024-03-01") + pd.Timedelta(days=i % 200)
            stays.append({"stay_id": sid, "patient_id": pid, "facility_id": prov, "admit_date": admit,
                          "discharge_date": admit + pd.Timedelta(days=los), "discharge_status": status,
                          "principal_dx": "Z471", "procedures": None})
            pats.append({"patient_id": pid, "birth_date": admit - pd.DateOffset(years=age, days=10), "sex": sex,
                         "dual_eligible": dual})
    row_cols = ["measure", "stay_id", "unit_id", "unit_market", "discharge_date", "observed", "expected", "predicted"]
    stay_cols = ["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date", "discharge_status",
                 "principal_dx", "procedures"]
    patients = pd.DataFrame(pats, columns=["patient_id", "birth_date", "sex", "dual_eligible"]).assign(
        death_date=pd.NaT)
    return (pd.DataFrame(rows, columns=row_cols),
            {"facilities": FACILITIES.copy(), "stays": pd.DataFrame(stays, columns=stay_cols), "patients": patients})


def _screen(referrals=None, pac=None, **kwargs) -> pd.DataFrame:
    rows, tables = _world(referrals, pac)
    return sc.candidate_partners(rows, tables, market="M", period=PERIOD, **kwargs).set_index("facility_id")


# ------------------------------------------------------------------------------------------------ criteria


def test_volume_counts_the_hospitals_discharges_in_the_period():
    referrals = {"S1": [("H1", "2024-02-01", 0, 0.1)] * 3 + [("H2", "2024-05-01", 0, 0.1)]
                 + [("H1", "2023-12-31", 0, 0.1)]  # before the period: not counted anywhere
                 + [("HX", "2024-06-01", 1, 0.1)] * 2}  # another market's hospital: a referral, not our volume
    market = _screen(referrals)
    # H1 3 + H2 1 in the period; the readmission measure counts every referral in the period: 3 + 1 + 2
    assert market.loc["S1", "discharges"] == 4
    assert market.loc["S1", "readmit_n"] == 6 and market.loc["S1", "readmit_events"] == 2
    assert market.loc["R1", "discharges"] == 0 and market.loc["R1", "readmit_n"] == 0  # a row with 0, not missing
    one = _screen(referrals, hospital="H1")
    assert one.loc["S1", "discharges"] == 3
    assert one.loc["S1", "readmit_n"] == 6  # the provider's quality does not depend on who asks


def test_partners_are_left_out_by_their_start_date():
    screen = _screen()
    # S2 partner since 2023 and S4 partner of unknown start are partners; S3 starts after the period
    assert set(screen.index) == {"S1", "S3", "R1", "A1"}
    assert screen.loc["S3", "is_partner"] and screen.loc["S3", "partner_since"] == pd.Timestamp("2025-03-01")
    status = sc.partner_status(FACILITIES, period_end="2025-12-31")
    assert status.tolist() == [False, False, False, False, True, True, True, False, False]
    on_the_day = sc.partner_status(FACILITIES, period_end="2025-03-01")  # a start on the last day counts
    assert on_the_day.tolist() == status.tolist()
    day_before = sc.partner_status(FACILITIES, period_end="2025-02-28")
    assert not day_before[FACILITIES["facility_id"] == "S3"].iloc[0]
    text = sc.candidate_findings(sc.candidate_shortlist(screen.reset_index()), market="M")
    assert any("Ash SNF is to become a partner on 2025-03-01" in s for s in text)


def test_staffing_against_the_setting_median():
    staff = sc.staffing_benchmark(FACILITIES, market="M").set_index("facility_id")
    # SNFs 4.5, 3.0, 3.5, 5.0: median 4.0, "no different" within 3.6–4.4
    assert staff.loc["S1", "staffing_benchmark"] == pytest.approx(4.0)
    assert staff.loc[["S1", "S2", "S3", "S4"], "staffing_label"].tolist() == [
        "better than benchmark", "worse than benchmark", "worse than benchmark", "better than benchmark"]
    assert staff.loc["R1", "staffing_label"] == "no benchmark"  # the market's only IRF
    assert staff.loc["A1", "staffing_label"] == "not reported"  # home health has no staffing figure
    assert "H1" not in staff.index  # hospitals are not benchmarked
    wide = sc.staffing_benchmark(FACILITIES, market="M", margin=0.2).set_index("facility_id")
    assert wide.loc["S1", "staffing_label"] == "no different"  # 4.5 is within 3.2–4.8
    no_column = sc.staffing_benchmark(FACILITIES.drop(columns="nurse_hours_ppd"), market="M")
    assert set(no_column["staffing_label"]) == {"not reported"}


def test_readmission_ratio_hand_worked():
    # 30 referrals, 3 readmitted, each expected 0.2: E = 6, O/E = 0.5, exact Poisson limits (O < 10)
    referrals = {"S1": [("H1", "2024-03-01", i < 3, 0.2) for i in range(30)]}
    s = _screen(referrals, national_rate=0.15).loc["S1"]
    lo, hi = poisson_exact([3])
    assert s["readmit_expected"] == pytest.approx(6.0)
    assert s["readmit_ratio"] == pytest.approx(0.5)
    assert (s["readmit_lower"], s["readmit_upper"]) == pytest.approx((lo[0] / 6, hi[0] / 6))
    assert s["readmit_rate"] == pytest.approx(0.1) and s["readmit_expected_rate"] == pytest.approx(0.2)
    assert s["readmit_rs_rate"] == pytest.approx(0.5 * 0.15)  # risk-standardised: O/E × national rate
    assert s["readmit_rs_upper"] == pytest.approx(hi[0] / 6 * 0.15)
    assert s["readmit_method"] == "exact Poisson"
    assert s["readmit_label"] == "no different"  # upper limit 1.29 > 1
    # without a national rate, the rate of the rows given: 3 / 30
    assert _screen(referrals).loc["S1", "readmit_rs_rate"] == pytest.approx(0.5 * 0.1)


def test_too_few_cases_are_not_judged_whatever_the_interval():
    worse = [("H1", "2024-03-01", 1, 0.1)]  # every patient readmitted against 10% expected
    assert _screen({"S1": worse * 24}).loc["S1", "readmit_label"] == "too few cases to judge"
    assert _screen({"S1": worse * 25}).loc["S1", "readmit_label"] == "worse than benchmark"
    assert _screen({"S1": worse * 24}, min_cases=20).loc["S1", "readmit_label"] == "worse than benchmark"


def test_discharge_to_community_standardised_by_age_sex_and_dual_status():
    a, b = (70, "F", False), (90, "M", True)
    pac = {
        # stratum a: S1 8 of 10 home, S2 2 of 10; stratum b: S1 10 of 20, S2 10 of 10
        "S1": [("01", *a, 20)] * 8 + [("03", *a, 20)] * 2 + [("01", *b, 20)] * 10 + [("03", *b, 20)] * 10,
        "S2": [("01", *a, 20)] * 2 + [("03", *a, 20)] * 8 + [("01", *b, 20)] * 10,
        "S3": [("50", *a, 20)] * 5,  # discharged to hospice: out of the DTC-PAC denominator
    }
    s = _screen(pac=pac).loc["S1"]
    # stratum rates (all SNF stays): a 10/20 = 0.5, b 20/30 = 2/3; S1 expects 10 × 0.5 + 20 × 2/3 = 18.33
    assert (s["dtc_n"], s["dtc_events"]) == (30, 18)
    assert s["dtc_expected"] == pytest.approx(10 * 0.5 + 20 * 2 / 3)
    assert s["dtc_ratio"] == pytest.approx(18 / (10 * 0.5 + 20 * 2 / 3))
    lo, hi = wilson([18], [30])
    assert (s["dtc_rate"], s["dtc_lower"], s["dtc_upper"]) == pytest.approx((0.6, lo[0], hi[0]))
    # adjusted rate: O/E × the setting's rate (30 of 50 SNF stays went home)
    assert s["dtc_rs_rate"] == pytest.approx(s["dtc_ratio"] * 0.6)
    assert s["dtc_label"] == "no different"
    assert _screen(pac=pac).loc["S3", "dtc_n"] == 0


def test_length_of_stay_sign_test_against_the_setting_median():
    home = ("01", 80, "F", False)
    pac = {"S1": [(*home, 25)] * 30, "S2": [(*home, 15)] * 30, "S3": [(*home, 20)] * 10}
    screen = _screen(pac=pac)
    # the 70 SNF stays: 30 of 15 days, 10 of 20, 30 of 25: median 20; all 30 of S1's stays are longer
    assert screen.loc["S1", "los_benchmark"] == 20 and screen.loc["S1", "los_median"] == 25
    assert screen.loc["S1", "los_label"] == "longer than benchmark"
    assert screen.loc["S3", "los_label"] == "too few cases to judge"
    assert "los_label" not in sc.SCORED  # described, never scored


# ------------------------------------------------------------------------------------------------- ranking


def test_ranking_rule():
    t = pd.DataFrame({
        "name": ["Oak", "Elm", "Ash", "Fir", "Yew", "Bay"],
        "discharges": pd.array([40, 90, 15, 200, 90, None], dtype="Int64"),
        "readmit_label": ["better than benchmark", "no different", "no different", "too few cases to judge",
                          "worse than benchmark", "no different"],
        "dtc_label": ["no different", "better than benchmark", "no different", "too few cases to judge",
                      "better than benchmark", "no different"],
        "staffing_label": ["no different", "no different", "not reported", "better than benchmark",
                           "no different", "no different"]})
    before = t.copy()
    ranked = sc.rank_candidates(t)
    # judged first; then score (Oak +1, Elm +1, Yew −1 + 1 = 0, Ash 0, Bay 0); then discharges; then name
    assert ranked["name"].tolist() == ["Elm", "Oak", "Yew", "Ash", "Bay", "Fir"]
    assert ranked["score"].tolist() == [1, 1, 0, 0, 0, 1]
    assert ranked["judged"].tolist() == [True] * 5 + [False]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert t.equals(before)
    with pytest.raises(ParameterError, match="unknown verdict"):
        sc.rank_candidates(t.assign(dtc_label="good"))


def test_candidate_partners_ranks_its_rows():
    referrals = {"S1": [("H1", "2024-03-01", 0, 0.2)] * 30, "S3": [("H2", "2024-03-01", 0, 0.05)] * 12}
    screen = _screen(referrals).reset_index()
    # S1: readmission better (0 of 30 against 6 expected) and staffing better: +2, judged
    assert screen["facility_id"].tolist()[0] == "S1" and screen["score"].iloc[0] == 2
    assert screen["rank"].tolist() == list(range(1, len(screen) + 1))
    assert not screen.set_index("facility_id").loc["S3", "judged"]


# ------------------------------------------------------------------------------------------------ sharing


def _shortlist_input(**columns) -> pd.DataFrame:
    """A screen of three SNF candidates, every count large, changed by ``columns``."""
    base = {"rank": [1, 2, 3], "facility_id": ["S1", "S2", "S3"], "name": ["Oak", "Elm", "Ash"], "setting": "snf",
            "is_partner": False, "partner_since": pd.NaT, "discharges": [60, 45, 30], "readmit_n": [80, 60, 50],
            "readmit_events": [20, 15, 12], "readmit_expected": [20.0, 15.0, 12.0], "readmit_rate": [0.25, 0.25, 0.24],
            "readmit_ratio": [1.0, 1.0, 1.0], "readmit_lower": [0.6, 0.6, 0.5], "readmit_upper": [1.5, 1.6, 1.7],
            "readmit_rs_rate": 0.15, "readmit_rs_lower": 0.1, "readmit_rs_upper": 0.2,
            "readmit_label": "no different", "dtc_n": [70, 50, 40], "dtc_events": [40, 25, 20], "dtc_rate": 0.5,
            "dtc_lower": 0.4, "dtc_upper": 0.6, "dtc_ratio": 1.0, "dtc_ratio_lower": 0.7, "dtc_ratio_upper": 1.4,
            "dtc_rs_rate": 0.5, "dtc_label": "no different", "los_median": 20.0, "los_mean": 22.0,
            "los_benchmark": 20.0, "los_label": "no different", "nurse_hours_ppd": 4.0, "staffing_benchmark": 4.0,
            "staffing_label": "no different", "score": 0, "judged": True}
    base.update(columns)
    return pd.DataFrame(base)


def test_shortlist_hides_small_counts_with_what_they_determine():
    screen = _shortlist_input(readmit_events=[20, 15, 6], readmit_label=["no different", "no different",
                                                                          "better than benchmark"],
                              discharges=[60, 45, 8])
    before = screen.copy()
    short = sc.candidate_shortlist(screen).set_index("facility_id")
    assert screen.equals(before)
    # Ash's 6 readmissions are hidden with its ratio, interval and verdict, and Elm's 15 (the smallest other)
    # so that a total does not give 6 away; Ash's "better" no longer counts in its score
    assert short["readmit_events"].isna().tolist() == [False, True, True]
    assert short.loc[["S2", "S3"], ["readmit_ratio", "readmit_lower", "readmit_rs_rate"]].isna().all().all()
    assert short.loc["S3", "readmit_label"] == "not shown (small numbers)"
    assert short.loc["S3", "score"] == 0 and short.loc["S1", "readmit_ratio"] == 1.0
    # 8 discharges hidden, and 45 (the smallest other of the setting) so that the setting's total does not
    # give 8 away
    assert short["discharges"].isna().tolist() == [False, True, True]
    assert short.loc["S3", "suppression_reason"] == "primary" and short.loc["S2", "suppression_reason"] == \
        "complementary"
    shown = short.reset_index()
    check_suppressed(shown, count_cols=["discharges"], denominator=None)
    check_suppressed(shown, count_cols=["readmit_n", "readmit_events"], denominator="readmit_n")
    check_suppressed(shown, count_cols=["dtc_n", "dtc_events"], denominator="dtc_n")


def test_shortlist_hides_a_small_number_of_stays_with_the_length_of_stay():
    short = sc.candidate_shortlist(_shortlist_input(dtc_n=[70, 50, 9], dtc_events=[40, 25, 5])).set_index(
        "facility_id")
    assert pd.isna(short.loc["S3", "dtc_n"]) and pd.isna(short.loc["S3", "los_median"])
    assert pd.isna(short.loc["S3", "dtc_rate"]) and pd.isna(short.loc["S3", "dtc_ratio_upper"])
    # the non-events of S1 (30) and S2 (25) stay; S2's events hidden as the complement of S3's
    assert short.loc["S1", "los_median"] == 20.0


def test_shortlist_hides_what_another_table_hides_and_min_cell_one_shows_all():
    screen = _shortlist_input()
    short = sc.candidate_shortlist(screen, hide={"discharges": ["S1"], "readmission": ["S2"]}).set_index(
        "facility_id")
    assert pd.isna(short.loc["S1", "discharges"]) and short.loc["S1", "suppression_reason"] == "complementary"
    assert pd.isna(short.loc["S2", "readmit_ratio"]) and short.loc["S2", "readmit_label"] == "not shown (small numbers)"
    everything = sc.candidate_shortlist(_shortlist_input(discharges=[60, 45, 3]), min_cell=1)
    assert not everything["suppressed"].any() and everything["discharges"].tolist() == [60, 45, 3]
    with pytest.raises(ParameterError, match="hide: unknown key"):
        sc.candidate_shortlist(screen, hide={"volume": ["S1"]})
    with pytest.raises(ParameterError, match="min_cell"):
        sc.candidate_shortlist(screen, min_cell=0)


def test_findings_quote_only_shown_values():
    short = sc.candidate_shortlist(_shortlist_input(discharges=[60, 45, 8], staffing_label=[
        "better than benchmark", "no different", "worse than benchmark"]))
    text = " ".join(sc.candidate_findings(short, market="M"))
    assert "Strongest candidate: Oak (SNF, score +1)" in text
    assert "Worse than benchmark on a criterion: Ash (nurse staffing)" in text
    assert " 8 " not in text and "45" not in text  # hidden volumes are never quoted
    assert sc.candidate_findings(short.iloc[0:0], market="M")[0].startswith("Every post-acute provider in M")


def test_bad_input_is_a_parameter_error():
    rows, tables = _world({"S1": [("H1", "2024-03-01", 0, 0.1)] * 2})
    with pytest.raises(ParameterError, match="market 'Q' has no facilities; markets are M, X"):
        sc.candidate_partners(rows, tables, market="Q", period=PERIOD)
    with pytest.raises(ParameterError, match="hospital 'S1' is not an acute hospital of M; its hospitals are H1, H2"):
        sc.candidate_partners(rows, tables, market="M", period=PERIOD, hospital="S1")
    with pytest.raises(ParameterError, match="rows: column.s. expected missing"):
        sc.candidate_partners(rows.drop(columns="expected"), tables, market="M", period=PERIOD)
    with pytest.raises(ParameterError, match="2 rows repeat a stay_id .* examples stay_id = h-S1-0"):
        sc.candidate_partners(pd.concat([rows, rows.iloc[:1]]), tables, market="M", period=PERIOD)
    with pytest.raises(ParameterError, match="min_cases must be a whole number"):
        sc.candidate_partners(rows, tables, market="M", period=PERIOD, min_cases=2.5)
    with pytest.raises(ParameterError, match="period"):
        sc.candidate_partners(rows, tables, market="M", period=("2024-12-31", "2024-01-01"))
    with pytest.raises(ParameterError, match="tables: patients missing"):
        sc.candidate_partners(rows, {k: v for k, v in tables.items() if k != "patients"}, market="M", period=PERIOD)


def test_inputs_are_not_modified():
    rows, tables = _world({"S1": [("H1", "2024-03-01", 0, 0.1)] * 2}, {"S1": [("01", 80, "F", False, 10)] * 3})
    copies = (rows.copy(), {k: v.copy() for k, v in tables.items()})
    sc.candidate_partners(rows, tables, market="M", period=PERIOD)
    assert rows.equals(copies[0]) and all(tables[k].equals(copies[1][k]) for k in tables)


# ------------------------------------------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def sample():
    from carequal.loaders import load_tables
    from carequal.national import build_reference

    tables = load_tables(SAMPLE, mode="quarantine").tables
    return tables, build_reference(tables, period_start=PERIOD[0], period_end=PERIOD[1])


@pytest.mark.parametrize("market", ["Northvale", "Riverton", "Lakeshore"])
def test_sample_shortlist_has_no_partners_and_no_small_counts(sample, market):
    tables, ref = sample
    fac = tables["facilities"]
    screen = sc.candidate_partners(ref.rows, tables, market=market, period=PERIOD)
    pac = fac[(fac["market"] == market) & fac["setting"].isin(sc.CANDIDATE_SETTINGS)]
    expected = set(pac.loc[~sc.partner_status(pac, period_end=PERIOD[1]), "facility_id"])
    assert set(screen["facility_id"]) == expected and len(screen) == len(expected)

    # volume, counted independently: in-period pac_readmission rows whose hospital stay is at a market hospital
    pac_rows = ref.rows[(ref.rows["measure"] == "pac_readmission") & ref.rows["in_period"]]
    hosp = pac_rows.merge(tables["stays"][["stay_id", "facility_id"]], on="stay_id")
    hosp = hosp[hosp["facility_id"].isin(fac.loc[(fac["market"] == market) & (fac["setting"] == "acute"),
                                                 "facility_id"])]
    counted = hosp["unit_id"].value_counts()
    assert screen.set_index("facility_id")["discharges"].to_dict() == {
        f: int(counted.get(f, 0)) for f in screen["facility_id"]}

    short = sc.candidate_shortlist(screen)
    assert not short["facility_id"].isin(fac.loc[fac["is_partner"].astype(bool), "facility_id"]
                                         [pd.to_datetime(fac["partner_since"]) <= PERIOD[1]]).any()
    check_suppressed(short, count_cols=["discharges"], denominator=None)
    check_suppressed(short, count_cols=["readmit_n", "readmit_events"], denominator="readmit_n")
    check_suppressed(short, count_cols=["dtc_n", "dtc_events"], denominator="dtc_n")
    hidden = short[["readmit_n", "readmit_events"]].isna().any(axis=1)
    assert short.loc[hidden, ["readmit_ratio", "readmit_lower", "readmit_upper"]].isna().all().all()
    assert (short.loc[hidden, "readmit_label"].isin(["too few cases to judge", "not shown (small numbers)"])).all()
    assert short["rank"].tolist() == list(range(1, len(short) + 1))


def test_report_section_on_the_sample_reveals_nothing_the_report_hides(sample):
    tables, ref = sample
    market = "Lakeshore"
    period = tuple(pd.Timestamp(d) for d in PERIOD)
    rows = ref.rows[ref.rows["unit_market"] == market].reset_index(drop=True)
    mr = rpt.MarketReport(market=market, tables=tables, rows=rows, reference=ref, facilities=tables["facilities"],
                          period=period, previous=previous_period(*period), measures=tuple(ref.meta["measures"]),
                          conditions=(), min_cell=11, validation=(pd.DataFrame(), pd.DataFrame()))
    fac = tables["facilities"]
    card = rpt.facility_scorecard(rows, fac[fac["market"] == market], period=period, measures=mr.measures)
    flows = rpt.flow_table(tables, rows, market=market, period=period)
    short = sc.candidate_table(mr, card, flows)
    # a volume is shown only where every hospital's flow to the provider is, and then equals their sum
    for row in short.itertuples(index=False):
        mine = flows[flows["pac_facility_id"] == row.facility_id]
        if not pd.isna(row.discharges):
            assert mine["n"].notna().all() and int(mine["n"].sum()) == row.discharges
    # a readmission result is shown only where the scorecard shows the provider
    pac_card = card[card["measure"] == "pac_readmission"].set_index("facility_id")
    for row in short[short["readmit_ratio"].notna()].itertuples(index=False):
        assert not pac_card.loc[row.facility_id, "suppressed"]
        assert pac_card.loc[row.facility_id, "ratio"] == pytest.approx(row.readmit_ratio)
    shown = sc.candidate_display(short)
    for col in (COUNT_LABELS["discharges"], COUNT_LABELS["dtc_n"]):
        for cell in shown[col]:
            assert cell == "suppressed" or not 1 <= int(cell.replace(",", "")) <= 10
    text = " ".join(shown.astype(str).to_numpy().ravel()) + " ".join(sc.market_candidate_findings(short, mr))
    ids = set(tables["stays"]["stay_id"]) | set(tables["patients"]["patient_id"])
    assert not {t for t in text.split() if t in ids}


# --------------------------------------------------------------------------------------------------- chart


def test_candidate_plot_structure():
    short = sc.candidate_shortlist(_shortlist_input(
        discharges=[60, 45, 8], readmit_label=["better than benchmark", "worse than benchmark", "no different"],
        dtc_label=["no different", "no different", "too few cases to judge"], judged=True))
    before = short.copy()
    ax = plots.candidate_plot(short)
    assert short.equals(before)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{r}. {n} (SNF)" for r, n in
                                                            zip(short["rank"], short["name"], strict=True)]
    assert [t.get_text() for t in ax.get_xticklabels()][-2:] == ["Discharges", "Score"]
    by_label = {c.get_label(): c for c in ax.collections}
    assert sum(len(c.get_offsets()) for c in ax.collections) == 4 * len(short)  # one dot per criterion
    assert to_hex(by_label["better"].get_facecolor()[0]) == plots.PALETTE["improvement"].lower()
    assert to_hex(by_label["too few cases"].get_facecolor()[0]) == "#ffffff"  # hollow: not judged
    texts = [t.get_text() for t in ax.texts]
    assert "60" in texts and "–" in texts  # a hidden volume is a dash, never a number
    assert ax.get_title() and ax.get_xlabel()
    plt.close("all")


def test_candidate_plot_separates_judged_from_not_judged_and_knows_every_verdict():
    short = sc.candidate_shortlist(_shortlist_input(judged=[True, True, False], readmit_label=[
        "no different", "no different", "too few cases to judge"], dtc_label=[
        "no different", "no different", "too few cases to judge"]))
    ax = plots.candidate_plot(short)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(-1.5)  # between rows 2 and 3
    assert set(sc.VERDICTS) <= set(plots._VERDICT_STYLE)
    with pytest.raises(ParameterError, match="unknown verdict"):
        plots.candidate_plot(short.assign(dtc_label="good"))
    with pytest.raises(ParameterError, match="missing column"):
        plots.candidate_plot(short.drop(columns="score"))
    plt.close("all")


def test_sample_chart_draws_every_candidate(sample):
    tables, ref = sample
    short = sc.candidate_shortlist(sc.candidate_partners(ref.rows, tables, market="Northvale", period=PERIOD))
    ax = plots.candidate_plot(short)
    assert len(ax.get_yticklabels()) == len(short)
    assert np.isfinite([len(c.get_offsets()) for c in ax.collections]).all()
    plt.close("all")
