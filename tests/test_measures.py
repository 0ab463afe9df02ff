"""Measures: hand-worked readmission and planned-readmission cases, and properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from carequal.cohorts import IndexRules, index_stays, person_time, post_acute_episodes
from carequal.errors import ParameterError
from carequal.measures import (
    ccs_diagnosis,
    ccs_procedure,
    count_rate_table,
    days_at_home,
    discharge_to_community,
    ed_visits_after,
    length_of_stay,
    los_summary,
    mortality,
    pac_readmissions,
    planned_readmission_valuesets,
    planned_stays,
    post_acute_use,
    rate_table,
    readmissions,
    standardised_rates,
)
from test_cohorts import FAC, PATS, histories, patients, stays

NO_RUNOUT = IndexRules(runout_days=None)


def flags(st_, pats=None, **kw):
    pats = pats if pats is not None else patients(("p", "1940-01-01", None), ("q", "1940-01-01", None))
    cohort = index_stays(st_, FAC, pats, rules=NO_RUNOUT, **kw)
    return readmissions(cohort.index, st_, FAC).set_index("stay_id")


def test_day_0_and_day_30_count_day_31_does_not():
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "I509"),
                ("b", "p", "H2", "2024-02-04", "2024-02-06", "01", "J189"),   # 30 days after a's discharge
                ("c", "p", "H1", "2024-03-08", "2024-03-10", "01", "I509"),   # 31 days after b's discharge
                ("d", "q", "H1", "2024-01-01", "2024-01-03", "01", "I509"),
                ("e", "q", "H1", "2024-01-03", "2024-01-04", "01", "J189"))   # same day, other condition: day 0
    f = flags(st_)
    assert f.loc["a", "readmitted_30d"] and f.loc["a", "days_to_readmit"] == 30
    assert not f.loc["b", "readmitted_30d"] and f.loc["b", "days_to_readmit"] == 31
    assert not f.loc["c", "readmitted_30d"] and np.isnan(f.loc["c", "days_to_readmit"])
    assert f.loc["d", "readmitted_30d"] and f.loc["d", "days_to_readmit"] == 0
    assert f.loc["d", "same_hospital"] and not f.loc["a", "same_hospital"]


def test_the_flags_are_named_for_their_window():
    # a is readmitted on day 5 (b), c on day 10 (d): within 7 days only a; the 30-day names are not emitted
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "I509"),
                ("b", "p", "H2", "2024-01-10", "2024-01-12", "01", "J189"),
                ("c", "q", "H1", "2024-01-01", "2024-01-05", "01", "I509"),
                ("d", "q", "H1", "2024-01-15", "2024-01-16", "01", "J189"))
    cohort = index_stays(st_, FAC, patients(("p", "1940-01-01", None), ("q", "1940-01-01", None)), rules=NO_RUNOUT)
    week = readmissions(cohort.index, st_, FAC, window_days=7).set_index("stay_id")
    assert {"readmitted_7d", "unplanned_readmit_7d"} <= set(week.columns)
    assert not {"readmitted_30d", "unplanned_readmit_30d"} & set(week.columns)
    assert week.loc["a", "readmitted_7d"] and not week.loc["c", "readmitted_7d"]
    assert week.loc["a", "unplanned_readmit_7d"]


def test_post_acute_stays_are_not_readmissions():
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "03", "I509"),
                ("s", "p", "S1", "2024-01-05", "2024-01-25", "01", "Z471"),
                ("b", "p", "H2", "2024-02-10", "2024-02-12", "01", "I509"))
    f = flags(st_)
    assert f.loc["a", "readmit_stay_id"] == "b" and not f.loc["a", "readmitted_30d"]  # 36 days


def test_first_readmission_planned_blocks_later_unplanned():
    # a's first readmission b is planned (maintenance chemotherapy), c (unplanned) comes later in the window
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "C3490"),
                ("b", "p", "H1", "2024-01-10", "2024-01-11", "01", "Z5111"),
                ("c", "p", "H1", "2024-01-20", "2024-01-25", "01", "J189"))
    f = flags(st_)
    assert f.loc["a", "readmitted_30d"] and f.loc["a", "readmit_planned"]
    assert not f.loc["a", "unplanned_readmit_30d"]
    # b's own next admission c is unplanned and within 30 days
    assert f.loc["b", "unplanned_readmit_30d"]


def test_transfer_chain_readmission_counts_from_final_discharge():
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "02", "I214"),
                ("b", "p", "H2", "2024-01-03", "2024-01-08", "01", "I214"),
                ("c", "p", "H1", "2024-02-05", "2024-02-07", "01", "I214"))
    f = flags(st_)
    assert "a" not in f.index
    assert f.loc["b", "days_to_readmit"] == 28 and f.loc["b", "unplanned_readmit_30d"]


def test_planned_algorithm_rules():
    vs = planned_readmission_valuesets()
    assert vs["always_planned_procedure_ccs"] == {64, 105, 176}
    assert vs["always_planned_diagnosis_ccs"] == {45, 254}
    assert len(vs["potentially_planned_procedure_ccs"]) == 65
    assert len(vs["acute_diagnosis_ccs"]) == 80
    st_ = pd.DataFrame({
        "stay_id": ["bmt", "rehab", "pci_stable", "pci_ami", "pcs_only", "hf", "chemo_no_proc"],
        "principal_dx": ["C9100", "Z44001", "I2510", "I214", "I2510", "I509", "Z5112"],
        # 30243G0 marrow transplant (CCS 64); 0270346 PCI (CCS 45, potentially planned)
        "procedures": ["30243G0", np.nan, "0270346", "0270346", "0270046", np.nan, np.nan],
    })
    got = planned_stays(st_).set_index("stay_id")
    assert ccs_procedure(pd.Series(["30243G0"])).iloc[0] == 64
    assert ccs_diagnosis(pd.Series(["Z44001"])).iloc[0] == 254  # fitting of an artificial arm
    assert got.loc["bmt", "planned_rule"] == "PR1"
    assert got.loc["rehab", "planned_rule"] == "PR2"
    assert got.loc["chemo_no_proc", "planned_rule"] == "PR2"  # Z51.12 immunotherapy → CCS 45
    assert got.loc["pci_stable", "planned_rule"] == "PR3"
    assert not got.loc["pci_ami", "planned"]  # acute principal diagnosis (AMI) makes it unplanned
    assert got.loc["pcs_only", "planned"]  # 0270046 is on the potentially planned ICD-10-PCS list
    assert not got.loc["hf", "planned"]


def test_flags_do_not_depend_on_patient_order_or_repeated_index_stays():
    # stays sorted by patient are numbered where the id changes, others factorised; an index stay given twice
    # is looked up the other way round: every path gives the same flags (a→b day 30, d→e day 0)
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "I509"),
                ("b", "p", "H2", "2024-02-04", "2024-02-06", "01", "J189"),
                ("c", "p", "H1", "2024-03-08", "2024-03-10", "01", "I509"),
                ("d", "q", "H1", "2024-01-01", "2024-01-03", "01", "I509"),
                ("e", "q", "H1", "2024-01-03", "2024-01-04", "01", "J189"))
    index = index_stays(st_, FAC, patients(("p", "1940-01-01", None), ("q", "1940-01-01", None)),
                        rules=NO_RUNOUT).index
    by_patient = readmissions(index, st_, FAC)
    got = by_patient.set_index("stay_id")["readmit_stay_id"].fillna("-").to_dict()
    assert got == {"a": "b", "b": "c", "c": "-", "d": "e", "e": "-"}
    mixed = readmissions(index, st_.iloc[[3, 0, 4, 2, 1]], FAC)
    pd.testing.assert_frame_equal(mixed, by_patient)
    twice = readmissions(pd.concat([index, index.iloc[[3]]], ignore_index=True), st_.iloc[[3, 0, 4, 2, 1]], FAC)
    pd.testing.assert_frame_equal(twice.iloc[:5], by_patient)
    pd.testing.assert_frame_equal(twice.iloc[[5]].reset_index(drop=True), by_patient.iloc[[3]].reset_index(drop=True))


def test_index_must_be_acute_stays():
    st_ = stays(("s", "p", "S1", "2024-01-01", "2024-01-05", "01", "Z471"))
    with pytest.raises(ParameterError, match="not among the acute stays"):
        readmissions(st_, st_, FAC)


@settings(max_examples=25, deadline=None)
@given(histories())
def test_properties_readmissions(rows):
    st_ = stays(*rows)
    cohort = index_stays(st_, FAC, PATS, rules=NO_RUNOUT)
    f = readmissions(cohort.index, st_, FAC)
    assert len(f) == len(cohort.index)
    assert (f["unplanned_readmit_30d"] <= f["readmitted_30d"]).all()
    assert f["readmitted_30d"].sum() <= len(f)
    days = f["days_to_readmit"].dropna()
    assert (days >= 0).all()
    # reversed input order gives the same flags
    f2 = readmissions(cohort.index, st_.iloc[::-1], FAC)
    pd.testing.assert_frame_equal(f.reset_index(drop=True), f2.reset_index(drop=True))


# ------------------------------------------------------------------ mortality, LOS, home days, ED, PAC


def test_mortality_anchor_and_window():
    # transfer chain a→b: from admission counts from the chain's first admission (2024-01-01)
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "02", "I214"),
                ("b", "p", "H2", "2024-01-03", "2024-01-10", "01", "I214"))
    pats = patients(("p", "1940-01-01", "2024-01-31"))  # day 30 after admission, day 21 after discharge
    cohort = index_stays(st_, FAC, pats, rules=NO_RUNOUT)
    m = mortality(cohort.index, pats)
    assert m["days_to_death"].tolist() == [30] and m["died_30d"].tolist() == [True]
    pats2 = patients(("p", "1940-01-01", "2024-02-01"))  # day 31: not within 30 days of admission
    assert not mortality(cohort.index, pats2)["died_30d"].iloc[0]
    assert mortality(cohort.index, pats2, anchor="discharge")["died_30d"].iloc[0]  # day 22 after discharge
    with pytest.raises(ParameterError, match="anchor"):
        mortality(cohort.index, pats2, anchor="death")


def test_length_of_stay_medicare_counting():
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-01", "01", "I509"),
                ("b", "p", "H1", "2024-01-10", "2024-01-11", "01", "I509"),
                ("c", "p", "H1", "2024-02-01", "2024-02-09", "01", "I509"))
    assert length_of_stay(st_).tolist() == [1, 1, 8]
    s = los_summary(st_)
    assert s["mean_los"].iloc[0] == pytest.approx(10 / 3)
    assert s["median_los"].iloc[0] == 1
    assert s["geometric_mean_los"].iloc[0] == pytest.approx(8 ** (1 / 3))


def test_days_at_home_counts_institutional_days_and_death():
    # index a discharged 2024-01-10; window days 11 Jan .. 9 Feb (30 days)
    # readmission b 15–20 Jan: 15,16,17,18,19 (5 days; discharge day not counted)
    # SNF s 20 Jan – 25 Jan: 20..24 (5 days); home health h 25 Jan – 5 Mar: at home
    st_ = stays(("a", "p", "H1", "2024-01-01", "2024-01-10", "01", "I509"),
                ("b", "p", "H1", "2024-01-15", "2024-01-20", "03", "I509"),
                ("s", "p", "S1", "2024-01-20", "2024-01-25", "06", "Z471"),
                ("h", "p", "HH", "2024-01-25", "2024-03-05", "01", "Z471"))
    alive = patients(("p", "1940-01-01", None))
    got = days_at_home(st_.iloc[[0]], st_, FAC, alive, windows=(30, 90))
    assert got["days_at_home_30"].iloc[0] == 20 and got["days_at_home_90"].iloc[0] == 80
    # died 2024-01-18 (during the readmission): dead from 18 Jan → window 30: 18 Jan..9 Feb = 23 dead days,
    # institutional days before death 15, 16, 17 = 3: at home 30 − 23 − 3 = 4 (11–14 Jan)
    dead = patients(("p", "1940-01-01", "2024-01-18"))
    got = days_at_home(st_.iloc[[0]], st_, FAC, dead, windows=(30,))
    assert got["days_at_home_30"].iloc[0] == 4


def test_ed_visits_window_inclusive():
    idx = pd.DataFrame({"stay_id": ["a", "b"], "patient_id": ["p", "q"],
                        "discharge_date": pd.to_datetime(["2024-01-10", "2024-01-10"])})
    ed = pd.DataFrame({"patient_id": ["p", "p", "p", "p"],
                       "visit_date": pd.to_datetime(["2024-01-09", "2024-01-10", "2024-02-09", "2024-02-10"])})
    got = ed_visits_after(idx, ed)
    assert got["ed_visits_30d"].tolist() == [2, 0]  # day 0 and day 30 count; day −1 and 31 do not
    assert got["any_ed_visit_30d"].tolist() == [True, False]


def test_pac_readmission_attributed_to_pac_from_hospital_discharge():
    st_ = stays(("h", "p", "H1", "2024-01-01", "2024-01-05", "03", "I509"),
                ("s", "p", "S2", "2024-01-06", "2024-01-20", "01", "Z471"),
                ("r", "p", "H2", "2024-02-03", "2024-02-06", "01", "J189"),   # 29 days after hospital discharge
                ("h2", "q", "H1", "2024-01-01", "2024-01-05", "62", "I639"),
                ("i", "q", "R1", "2024-01-05", "2024-01-20", "01", "I639"),
                ("r2", "q", "H1", "2024-01-12", "2024-01-13", "01", "I639"))  # during the IRF stay
    ep = post_acute_episodes(st_, FAC)
    got = pac_readmissions(ep, st_, FAC).set_index("stay_id")
    assert got.loc["h", "pac_facility_id"] == "S2" and got.loc["h", "unplanned_readmit_30d"]
    assert not got.loc["h", "readmit_during_pac"]
    assert got.loc["h2", "readmit_during_pac"] and got.loc["h2", "days_to_readmit"] == 7


def test_discharge_to_community_rules():
    st_ = stays(("s1", "p", "S1", "2024-01-01", "2024-01-20", "01", "Z471"),   # home, nothing after: success
                ("s2", "q", "S1", "2024-01-01", "2024-01-20", "06", "Z471"),   # readmitted day 31: failure
                ("hq", "q", "H1", "2024-02-20", "2024-02-22", "01", "J189"),
                ("s3", "r", "S1", "2024-01-01", "2024-01-20", "03", "Z471"),   # to another SNF: not community
                ("s4", "t", "S1", "2024-01-01", "2024-01-20", "01", "Z471"),   # dies day 31: failure
                ("s5", "u", "S1", "2024-01-01", "2024-01-20", "50", "Z471"),   # hospice: excluded
                ("s6", "v", "S1", "2024-01-01", "2024-01-20", "01", "Z471"),   # planned readmission: success
                ("hv", "v", "H1", "2024-01-25", "2024-01-26", "01", "Z5111"))
    pats = patients(("p", "1940-01-01", None), ("q", "1940-01-01", None), ("r", "1940-01-01", None),
                    ("t", "1940-01-01", "2024-02-20"), ("u", "1940-01-01", None), ("v", "1940-01-01", None))
    got = discharge_to_community(st_, FAC, pats).set_index("stay_id")
    assert got["dtc"].to_dict() == {"s1": True, "s2": False, "s3": False, "s4": False, "s5": False, "s6": True}
    assert got.loc["s5", "dtc_excluded"] == "hospice" and pd.isna(got.loc["s1", "dtc_excluded"])
    assert got.loc["s2", "readmitted_in_window"] and got.loc["s4", "died_in_window"]


def test_post_acute_use_and_rate_table_with_empty_groups():
    st_ = stays(("h1", "p", "H1", "2024-01-01", "2024-01-05", "03", "I509"),
                ("s1", "p", "S1", "2024-04-06", "2024-04-26", "01", "Z471"),
                ("h2", "p", "H1", "2024-04-01", "2024-04-05", "03", "I509"))
    ep = post_acute_episodes(st_, FAC)
    use = post_acute_use(ep).merge(ep[["stay_id", "hospital_id"]])
    assert use.set_index("stay_id").loc["h2", "to_partner_pac"]  # S1 partner since 2024-03-01
    assert not use.set_index("stay_id").loc["h1", "to_any_pac"]
    all_hospitals = pd.DataFrame({"hospital_id": ["H1", "H2"]})
    rt = rate_table(use, by=["hospital_id"], events="to_snf", include_empty=all_hospitals).set_index("hospital_id")
    assert rt.loc["H1", "n"] == 2 and rt.loc["H1", "events"] == 1 and rt.loc["H1", "rate"] == 0.5
    assert rt.loc["H2", "n"] == 0 and np.isnan(rt.loc["H2", "rate"])  # kept, not dropped
    assert (rt["events"] <= rt["n"]).all()


def test_count_rates_and_standardisation_hand_worked():
    pats = patients(("p", "1955-01-01", None), ("q", "1935-06-01", None))
    pats["sex"] = ["F", "M"]
    enr = pd.DataFrame({"patient_id": ["p", "q"], "start_date": pd.to_datetime(["2020-01-01", "2020-01-01"]),
                        "end_date": pd.to_datetime(["2030-12-31", "2030-12-31"])})
    pt = person_time(enr, pats, start="2024-01-01", end="2024-12-31", by=("market", "age_band", "sex"))
    # p is 69 all of 2024 (65-74, F), q turns 89 (85+, M): 366 days each
    assert pt["person_days"].tolist() == [366, 366]
    ev = pd.DataFrame({"market": "M", "age_band": ["65-74", "85+"], "sex": ["F", "M"], "events": [1, 3]})
    out = standardised_rates(ev, pt, by=["market"])
    py = 366 / 365.25
    w1, w2 = 18135514, 4259173
    expected = (w1 * 1 / py + w2 * 3 / py) / (w1 + w2) * 1000
    assert out["rate"].iloc[0] == pytest.approx(expected)
    assert out["crude_rate"].iloc[0] == pytest.approx(4 / (2 * py) * 1000)
    cr = count_rate_table(pt.merge(ev), by=["market"], events="events", person_time="person_years")
    assert cr["rate"].iloc[0] == pytest.approx(4 / (2 * py) * 1000) and cr["method"].iloc[0] == "exact Poisson"


@settings(max_examples=20, deadline=None)
@given(hst.lists(hst.tuples(hst.sampled_from(["A", "B", "C", None]), hst.booleans()), min_size=0, max_size=40))
def test_rate_table_numerators_never_exceed_denominators(rows):
    frame = pd.DataFrame(rows, columns=["facility_id", "readmitted_30d"])
    frame["readmitted_30d"] = frame["readmitted_30d"].astype(bool)
    every = pd.DataFrame({"facility_id": ["A", "B", "C", "D"]})
    rt = rate_table(frame, by=["facility_id"], events="readmitted_30d", include_empty=every)
    assert (rt["events"] <= rt["n"]).all()
    assert rt["n"].sum() == len(frame)  # nothing dropped, missing keys included
    assert set(every["facility_id"]) <= set(rt["facility_id"].dropna())
    ok = rt["n"] > 0
    assert ((rt.loc[ok, "lower"] <= rt.loc[ok, "rate"]) & (rt.loc[ok, "rate"] <= rt.loc[ok, "upper"])).all()


@settings(max_examples=30, deadline=None)
@given(histories())
def test_index_measures_unaffected_by_an_unrelated_patient(rows):
    from carequal.measures import index_measures

    st_ = stays(*rows)
    tables = {"stays": st_, "facilities": FAC, "patients": PATS}
    cohort = index_stays(st_, FAC, PATS, rules=NO_RUNOUT)
    base = index_measures(cohort.index, tables).set_index("stay_id")
    extra = stays(("zz1", "zz", "H1", "2023-03-01", "2023-03-05", "03", "I509"),
                  ("zz2", "zz", "S1", "2023-03-05", "2023-03-20", "01", "Z471"),
                  ("zz3", "zz", "H2", "2023-03-25", "2023-03-27", "01", "I509"))
    more = pd.concat([st_, extra], ignore_index=True)
    cohort2 = index_stays(more, FAC, PATS, rules=NO_RUNOUT)
    with_extra = index_measures(cohort2.index, {**tables, "stays": more}).set_index("stay_id")
    pd.testing.assert_frame_equal(with_extra.drop(index=["zz1", "zz3"], errors="ignore").loc[base.index], base,
                                  check_dtype=False, check_index_type=False)


def test_trend_table_keeps_empty_months_per_group():
    from carequal.measures import trend_table

    df = pd.DataFrame({"market": ["N", "S", "S"],
                       "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-20", "2024-04-02"]),
                       "readmitted_30d": [True, False, True]})
    tt = trend_table(df, events="readmitted_30d", by=["market"], freq="quarter")
    assert len(tt) == 4  # 2 markets × 2 quarters (Q1, Q2)
    n = tt.set_index(["market", "period"])["n"]
    assert n[("N", pd.Timestamp("2024-04-01"))] == 0 and n[("S", pd.Timestamp("2024-04-01"))] == 1
    with pytest.raises(ParameterError, match="freq"):
        trend_table(df, events="readmitted_30d", freq="week")


def test_rate_table_refuses_a_non_boolean_events_column_without_dumping_it():
    # a stay id column given as the events column: pandas would concatenate the ids and quote the whole string
    ids = [f"S{i:013d}" for i in range(40)]  # 14 characters, cut to 11 and an ellipsis
    frame = pd.DataFrame({"facility_id": ["H1"] * 20 + ["H2"] * 20, "stay_id": ids})
    with pytest.raises(ParameterError) as info:
        rate_table(frame, by=["facility_id"], events="stay_id")
    assert str(info.value) == ("rate_table: column stay_id breaks rule boolean (true/false or 0/1) in 40 of 40 rows; "
                               "examples: 'S0000000000…' (facility_id H1), 'S0000000000…' (facility_id H1), "
                               "'S0000000000…' (facility_id H1)")
    frame["flag"] = [True, False] * 19 + [2, 0]  # a count where a flag belongs
    with pytest.raises(ParameterError, match=r"in 1 of 40 rows; examples: '2' \(facility_id H2\)$"):
        rate_table(frame, by=["facility_id"], events="flag")


def test_count_rate_table_refuses_text_and_negative_person_time():
    frame = pd.DataFrame({"market": ["N", "N", "S"], "events": [1, 2, 3], "person_years": ["10", "-1", "abc"]})
    with pytest.raises(ParameterError) as info:
        count_rate_table(frame, by=["market"], events="events", person_time="person_years")
    assert str(info.value) == ("count_rate_table: column person_years breaks rule count (finite numbers ≥ 0) in 2 of 3 "
                               "rows; examples: '-1' (market N), 'abc' (market S)")
