"""Index stays, condition cohorts and post-acute episodes: hand-worked cases and properties."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carequal.cohorts import (
    ALL_PAYER_RULES,
    CONDITIONS,
    EXCLUSION_STEPS,
    MEDICARE_FFS_RULES,
    IndexRules,
    assign_conditions,
    attrition_by,
    attrition_of,
    condition_codes,
    index_stays,
    post_acute_episodes,
    rules_table,
)
from carequal.errors import ParameterError

NO_RUNOUT = IndexRules(runout_days=None)

FAC = pd.DataFrame({
    "facility_id": ["H1", "H2", "S1", "S2", "R1", "HH"],
    "setting": ["acute", "acute", "snf", "snf", "irf", "hha"],
    "market": "M", "is_partner": [True, False, True, False, False, True],
    "partner_since": pd.to_datetime(["2023-01-01", None, "2024-03-01", None, None, None]),
})


def patients(*rows):
    """rows: (patient_id, birth_date, death_date or None)."""
    return pd.DataFrame({
        "patient_id": [r[0] for r in rows], "birth_date": pd.to_datetime([r[1] for r in rows]),
        "sex": "F", "dual_eligible": False, "death_date": pd.to_datetime([r[2] for r in rows]), "market": "M",
    })


def stays(*rows):
    """rows: (stay_id, patient_id, facility_id, admit, discharge, status, principal_dx[, secondary_dx])."""
    return pd.DataFrame({
        "stay_id": [r[0] for r in rows], "patient_id": [r[1] for r in rows], "facility_id": [r[2] for r in rows],
        "admit_date": pd.to_datetime([r[3] for r in rows]), "discharge_date": pd.to_datetime([r[4] for r in rows]),
        "discharge_status": [r[5] for r in rows], "admission_type": "1",
        "principal_dx": [r[6] for r in rows], "secondary_dx": [r[7] if len(r) > 7 else np.nan for r in rows],
        "procedures": np.nan,
    })


def reasons(cohort):
    return dict(zip(cohort.stays["stay_id"], cohort.stays["exclusion_reason"].fillna("INDEX"), strict=True))


OLD = ("p", "1940-06-15", None)


def test_age_rule_uses_age_at_episode_admission():
    # q turns 65 on 2024-03-10: the stay admitted 2024-03-09 is under 65, the one on 2024-03-10 is not
    pat = patients(("q", "1959-03-10", None))
    st = stays(("a", "q", "H1", "2024-03-09", "2024-03-10", "01", "I509"),
               ("b", "q", "H1", "2024-03-10", "2024-03-12", "01", "I509"))
    # b starts the day a ended at the same hospital with the same diagnosis: switch merging off here
    got = reasons(index_stays(st, FAC, pat, rules=IndexRules(runout_days=None, merge_same_day=False)))
    assert got == {"a": "under_min_age", "b": "INDEX"}
    got = reasons(index_stays(st, FAC, pat, rules=IndexRules(runout_days=None, merge_same_day=False,
                                                             min_age=None)))
    assert got == {"a": "INDEX", "b": "INDEX"}


def test_died_and_ama_excluded():
    pat = patients(OLD, ("d", "1940-01-01", "2024-02-05"))
    st = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "20", "I509"),
               ("b", "p", "H1", "2024-02-01", "2024-02-03", "07", "I509"),
               ("c", "d", "H1", "2024-02-01", "2024-02-05", "01", "I509"),  # death date on discharge day
               ("e", "p", "H1", "2024-03-01", "2024-03-02", "01", "I509"))
    got = reasons(index_stays(st, FAC, pat, rules=NO_RUNOUT))
    assert got == {"a": "died_in_hospital", "b": "against_medical_advice", "c": "died_in_hospital", "e": "INDEX"}
    got = reasons(index_stays(st, FAC, pat, rules=IndexRules(runout_days=None, exclude_died=False,
                                                             exclude_ama=False)))
    assert set(got.values()) == {"INDEX"}


def test_transfer_chain_final_stay_is_index():
    pat = patients(OLD)
    # a (H1) → b (H2) next day → c (H1) same day: one episode a-b-c; c discharges home and is the index.
    # d at H2 two days after c is not a transfer (gap 2 days): its own episode.
    st = stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "02", "I214"),
               ("b", "p", "H2", "2024-01-04", "2024-01-06", "02", "I214"),
               ("c", "p", "H1", "2024-01-06", "2024-01-09", "01", "I214"),
               ("d", "p", "H2", "2024-01-11", "2024-01-12", "01", "J189"))
    cohort = index_stays(st, FAC, pat, rules=NO_RUNOUT)
    assert reasons(cohort) == {"a": "transfer_to_acute", "b": "transfer_to_acute", "c": "INDEX", "d": "INDEX"}
    c = cohort.index.set_index("stay_id").loc["c"]
    assert c["first_facility_id"] == "H1" and c["transfers_in_episode"] == 2
    assert c["episode_admit_date"] == pd.Timestamp("2024-01-01")
    # the AMI cohort takes the episode because its first stay is AMI; d (pneumonia) is not in it
    ami = index_stays(st, FAC, pat, condition="ami", rules=NO_RUNOUT)
    assert reasons(ami)["c"] == "INDEX" and reasons(ami)["d"] == "not_in_condition"


def test_transfer_status_without_receiving_stay_is_excluded():
    pat = patients(OLD)
    st = stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "02", "I214"))
    assert reasons(index_stays(st, FAC, pat, rules=NO_RUNOUT)) == {"a": "transfer_out_unlinked"}
    unchained = IndexRules(runout_days=None, chain_transfers=False)
    assert reasons(index_stays(st, FAC, pat, rules=unchained)) == {"a": "INDEX"}


def test_same_day_same_hospital_same_condition_merged():
    pat = patients(OLD)
    st = stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "01", "I509"),
               ("b", "p", "H1", "2024-01-03", "2024-01-06", "01", "I5023"),  # same cohort (HF): merged
               ("c", "p", "H1", "2024-02-01", "2024-02-03", "01", "I509"),
               ("d", "p", "H1", "2024-02-03", "2024-02-04", "01", "S7200"))  # other condition: not merged
    got = reasons(index_stays(st, FAC, pat, rules=NO_RUNOUT))
    assert got == {"a": "merged_same_day", "b": "INDEX", "c": "INDEX", "d": "INDEX"}


def test_enrollment_window():
    pat = patients(OLD, ("q", "1940-01-01", "2024-03-10"), ("r", "1940-01-01", None))
    enr = pd.DataFrame({
        "patient_id": ["p", "p", "q", "r"],
        # p: two touching periods (2023-12-31, then 2024-01-01), merged: covered 2022-12-01 .. 2024-12-31
        "start_date": pd.to_datetime(["2022-12-01", "2024-01-01", "2023-01-01", "2023-06-01"]),
        "end_date": pd.to_datetime(["2023-12-31", "2024-12-31", "2024-03-10", "2024-12-31"]),
    })
    st = stays(("a", "p", "H1", "2023-12-15", "2023-12-20", "01", "I509"),  # lookback from 2022-12-15: ok
               ("b", "p", "H1", "2024-12-05", "2024-12-08", "01", "I509"),  # follow-up to 2025-01-07: no
               ("c", "q", "H1", "2024-03-01", "2024-03-05", "01", "I509"),  # dies 03-10, enrolled to death: ok
               ("d", "r", "H1", "2024-03-01", "2024-03-05", "01", "I509"))  # lookback from 2023-03-01: no
    got = reasons(index_stays(st, FAC, pat, enr, rules=NO_RUNOUT))
    assert got == {"a": "INDEX", "b": "not_enrolled", "c": "INDEX", "d": "not_enrolled"}
    assert set(reasons(index_stays(st, FAC, pat, None, rules=NO_RUNOUT)).values()) == {"INDEX"}


def test_one_uncovered_day_breaks_coverage():
    # 2023-07-02 is not covered: the window 2023-03-01 .. 2024-04-04 is not continuous
    pat = patients(OLD)
    enr = pd.DataFrame({"patient_id": ["p", "p"], "start_date": pd.to_datetime(["2022-01-01", "2023-07-03"]),
                        "end_date": pd.to_datetime(["2023-07-01", "2024-12-31"])})
    st = stays(("a", "p", "H1", "2024-03-01", "2024-03-05", "01", "I509"))
    assert reasons(index_stays(st, FAC, pat, enr, rules=NO_RUNOUT)) == {"a": "not_enrolled"}


def test_coverage_type_filter():
    pat = patients(OLD)
    enr = pd.DataFrame({"patient_id": ["p"], "start_date": pd.to_datetime(["2020-01-01"]),
                        "end_date": pd.to_datetime(["2024-12-31"]), "coverage": ["ma"]})
    st = stays(("a", "p", "H1", "2024-03-01", "2024-03-05", "01", "I509"))
    assert reasons(index_stays(st, FAC, pat, enr, rules=NO_RUNOUT)) == {"a": "coverage_not_counted"}
    any_type = IndexRules(runout_days=None, coverage=None)
    assert reasons(index_stays(st, FAC, pat, enr, rules=any_type)) == {"a": "INDEX"}
    ma_counts = IndexRules(runout_days=None, coverage=("ffs", "ma"))
    assert reasons(index_stays(st, FAC, pat, enr, rules=ma_counts)) == {"a": "INDEX"}


def test_medicare_rules_count_only_ffs_coverage():
    """Hand-worked: which coverage makes the look-back (episode admission − 365 days) and the follow-up
    (discharge + 30 days) continuous, under the Medicare FFS defaults and under the all-payer preset."""
    pat = patients(("f", "1940-01-01", None), ("m", "1940-01-01", None), ("l", "1940-01-01", None),
                   ("u", "1940-01-01", None), ("g", "1940-01-01", None), ("n", "1940-01-01", None),
                   ("e", "1970-01-01", None), ("o", "1955-01-01", None))

    def period(patient, start, end, coverage):
        return {"patient_id": patient, "start_date": pd.Timestamp(start), "end_date": pd.Timestamp(end),
                "coverage": coverage}

    enr = pd.DataFrame([
        period("f", "2020-01-01", "2025-12-31", "ffs"),        # FFS throughout
        period("m", "2020-01-01", "2025-12-31", "ma"),         # Medicare Advantage throughout
        period("l", "2020-01-01", "2023-12-31", "ma"),         # MA, then FFS from 1 January 2024
        period("l", "2024-01-01", "2025-12-31", "ffs"),
        period("u", "2020-01-01", "2024-12-31", "ffs"),        # FFS, then MA from 1 January 2025
        period("u", "2025-01-01", "2025-12-31", "ma"),
        period("g", "2020-01-01", "2023-12-31", "ffs"),        # FFS with January 2024 uncovered
        period("g", "2024-02-01", "2025-12-31", "ffs"),
        period("n", "2020-01-01", "2025-12-31", np.nan),       # coverage type unknown
        period("e", "2010-01-01", "2025-12-31", "commercial"),  # employee, 54 in 2024
        period("o", "2010-01-01", "2025-12-31", "commercial"),  # employee, 69 in 2024
    ])
    st = stays(("f1", "f", "H1", "2024-03-01", "2024-03-05", "01", "I509"),
               ("m1", "m", "H1", "2024-03-01", "2024-03-05", "01", "I509"),
               # look-back from 2023-06-02 (2024-06-01 − 365 days) includes seven MA months
               ("l1", "l", "H1", "2024-06-01", "2024-06-05", "01", "I509"),
               # follow-up to 2024-12-05: FFS only; to 2025-01-11: eleven MA days
               ("u0", "u", "H1", "2024-11-01", "2024-11-05", "01", "I509"),
               ("u1", "u", "H1", "2024-12-10", "2024-12-12", "01", "I509"),
               ("g1", "g", "H1", "2024-06-01", "2024-06-05", "01", "I509"),
               ("n1", "n", "H1", "2024-03-01", "2024-03-05", "01", "I509"),
               ("e1", "e", "H1", "2024-03-01", "2024-03-05", "01", "I509"),
               ("o1", "o", "H1", "2024-03-01", "2024-03-05", "01", "I509"))
    medicare = index_stays(st, FAC, pat, enr, rules=IndexRules(runout_days=None))
    # e1 is under 65 before any coverage rule; g1's gap is a gap whatever the type (not_enrolled, which comes
    # first); m1, l1, u1 (MA), o1 (commercial) and n1 (unknown) are covered throughout, but not by FFS
    assert reasons(medicare) == {"f1": "INDEX", "m1": "coverage_not_counted", "l1": "coverage_not_counted",
                                 "u0": "INDEX", "u1": "coverage_not_counted", "g1": "not_enrolled",
                                 "n1": "coverage_not_counted", "e1": "under_min_age", "o1": "coverage_not_counted"}
    att = medicare.attrition.set_index("step")
    assert att.loc["acute_stays", "remaining"] == 9
    assert att["excluded"].to_dict() == {**{s: 0 for s in att.index}, "under_min_age": 1, "not_enrolled": 1,
                                         "coverage_not_counted": 5}
    assert att.loc["coverage_not_counted", "remaining"] == 2 == len(medicare.index)
    assert "Medicare Advantage" in att.loc["coverage_not_counted", "description"]
    # every age and every coverage type: only g1's gap remains
    all_payer = index_stays(st, FAC, pat, enr, rules=replace(ALL_PAYER_RULES, runout_days=None))
    assert {k for k, v in reasons(all_payer).items() if v != "INDEX"} == {"g1"}
    assert all_payer.attrition.set_index("step").loc["coverage_not_counted", "excluded"] == 0
    # without a coverage column every period counts (an FFS-only extract): only age and the gap exclude
    no_type = index_stays(st, FAC, pat, enr.drop(columns="coverage"), rules=IndexRules(runout_days=None))
    assert {k for k, v in reasons(no_type).items() if v != "INDEX"} == {"e1", "g1"}


def test_rule_presets():
    assert MEDICARE_FFS_RULES == IndexRules()
    assert MEDICARE_FFS_RULES.coverage == ("ffs",) and MEDICARE_FFS_RULES.min_age == 65
    assert ALL_PAYER_RULES.coverage is None and ALL_PAYER_RULES.min_age is None
    # apart from age and coverage the presets are the same rules
    assert replace(ALL_PAYER_RULES, min_age=65, coverage=("ffs",)) == MEDICARE_FFS_RULES
    table = rules_table(MEDICARE_FFS_RULES).set_index("rule")["value"]
    assert table["coverage"] == ("ffs",) and table["min_age"] == 65


def test_data_runout():
    pat = patients(OLD)
    # data end = last discharge 2024-12-31; discharges after 2024-12-01 (end − 30) are run-out
    st = stays(("a", "p", "H1", "2024-11-28", "2024-12-01", "01", "I509"),
               ("b", "p", "H1", "2024-12-20", "2024-12-31", "01", "I509"))
    assert reasons(index_stays(st, FAC, pat)) == {"a": "INDEX", "b": "data_runout"}
    explicit = IndexRules(data_end=pd.Timestamp("2025-06-30"))
    assert reasons(index_stays(st, FAC, pat, rules=explicit)) == {"a": "INDEX", "b": "INDEX"}


def test_condition_washout_sequence():
    pat = patients(OLD)
    # HF stays: a (index), b 20 days after a's discharge (outcome), c 25 days after b but 45 after a → index
    # (the washout runs from the last *index*, not from b), d 10 days after c (outcome)
    st = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "I509"),
               ("b", "p", "H1", "2024-01-25", "2024-01-30", "01", "I509"),
               ("c", "p", "H1", "2024-02-19", "2024-02-22", "01", "I509"),
               ("d", "p", "H2", "2024-03-03", "2024-03-04", "01", "I509"))
    got = reasons(index_stays(st, FAC, pat, condition="heart_failure", rules=NO_RUNOUT))
    assert got == {"a": "INDEX", "b": "within_washout_of_index", "c": "INDEX", "d": "within_washout_of_index"}
    # day 30 after discharge is inside the washout, day 31 outside
    st2 = stays(("a", "p", "H1", "2024-01-01", "2024-01-05", "01", "I509"),
                ("b", "p", "H1", "2024-02-04", "2024-02-06", "01", "I509"),
                ("c", "p", "H1", "2024-03-08", "2024-03-09", "01", "I509"))
    got = reasons(index_stays(st2, FAC, pat, condition="heart_failure", rules=NO_RUNOUT))
    assert got == {"a": "INDEX", "b": "within_washout_of_index", "c": "INDEX"}
    # all-condition cohorts have no washout: every eligible stay is an index
    assert set(reasons(index_stays(st, FAC, pat, rules=NO_RUNOUT)).values()) == {"INDEX"}


def test_attrition_accounts_for_every_acute_stay():
    pat = patients(OLD)
    st = stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "02", "I214"),
               ("b", "p", "H2", "2024-01-03", "2024-01-06", "07", "I214"),
               ("s", "p", "S1", "2024-01-06", "2024-01-20", "01", "Z471"),
               ("c", "p", "H1", "2024-03-01", "2024-03-03", "01", "I214"))
    cohort = index_stays(st, FAC, pat, rules=NO_RUNOUT)
    att = cohort.attrition
    assert att["step"].tolist() == ["acute_stays"] + [s for s, _ in EXCLUSION_STEPS]
    assert att.loc[0, "remaining"] == 3  # the SNF stay is not a candidate
    assert att["excluded"].iloc[1:].sum() + att["remaining"].iloc[-1] == 3
    assert att["remaining"].iloc[-1] == len(cohort.index) == 1
    assert (np.diff(att["remaining"]) == -att["excluded"].iloc[1:].to_numpy()).all()


def test_attrition_by_group_is_attrition_of_each_group():
    """Hand-worked: north has 3 stays (one under age, one past the data's end, one index), south 2 (one died,
    one index); the stay with no market is in no group. Then random reasons and groups against attrition_of."""
    reasons = pd.Series(["under_min_age", "data_runout", None, "died_in_hospital", None, "not_enrolled"])
    groups = pd.Series(["north", "north", "north", "south", "south", None])
    table = attrition_by(reasons, groups).set_index(["group", "step"])
    assert table.loc[("north", "acute_stays"), "remaining"] == 3
    assert table.loc[("north", "under_min_age"), ["excluded", "remaining"]].tolist() == [1, 2]
    assert table.loc[("north", "data_runout"), ["excluded", "remaining"]].tolist() == [1, 1]
    assert table.loc[("north", "within_washout_of_index"), "remaining"] == 1
    assert table.loc[("south", "died_in_hospital"), ["excluded", "remaining"]].tolist() == [1, 1]
    assert table.loc[("south", "not_enrolled"), "excluded"] == 0  # the no-market stay counts nowhere
    assert sorted(table.index.get_level_values("group").unique()) == ["north", "south"]

    rng = np.random.default_rng(7)
    steps = np.array([None, *(s for s, _ in EXCLUSION_STEPS)], dtype=object)
    reasons = steps[rng.integers(0, len(steps), 5_000)]
    groups = np.array(["m3", "m1", "m2", None], dtype=object)[rng.integers(0, 4, 5_000)]
    got = attrition_by(reasons, groups)
    want = pd.concat([attrition_of(reasons[groups == g]).assign(group=g) for g in ["m1", "m2", "m3"]],
                     ignore_index=True)[list(got.columns)]
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(ParameterError, match="unknown exclusion reason"):
        attrition_by(pd.Series(["gone_fishing"]), pd.Series(["m1"]))


def test_unknown_condition():
    with pytest.raises(ParameterError, match="unknown condition 'gout'"):
        index_stays(stays(("a", "p", "H1", "2024-01-01", "2024-01-03", "01", "I214")), FAC, patients(OLD),
                    condition="gout")


# ------------------------------------------------------------------------------------ condition code sets


def test_every_condition_row_flags_a_one_code_stay():
    """Map-driven: for every include row, a stay with exactly that code flags its condition."""
    # one stay per include row, all in one call (each stay is flagged from its own codes alone; one call per row
    # took 2 s for the same checks)
    codes = condition_codes()
    rows = list(codes[codes["action"] == "include"].itertuples(index=False))
    principal = [(r.principal_dx + "0" if r.principal_dx else "Z000")[:7] for r in rows]
    secondary = [r.secondary_dx.split("|")[0] + "0" if r.secondary_dx else np.nan for r in rows]
    procedure = [(r.procedure + "0ZZ")[:7] if r.procedure else np.nan for r in rows]
    stays = pd.DataFrame({"stay_id": [f"x{i}" for i in range(len(rows))], "principal_dx": principal,
                          "secondary_dx": secondary, "procedures": procedure})
    flags = assign_conditions(stays)
    # the same principal without the required secondary does not qualify
    without = assign_conditions(stays.assign(secondary_dx=np.nan))
    assert len(rows) > 20 and flags["stay_id"].tolist() == stays["stay_id"].tolist()
    for i, row in enumerate(rows):
        assert flags.loc[i, row.condition], row
        if row.secondary_dx:
            assert not without.loc[i, row.condition], row


def test_conditions_agree_with_the_code_rows_applied_stay_by_stay(sample_work):
    """Independent check of :func:`assign_conditions` (prefixes tested on the distinct principal diagnoses, the
    first condition named by number): every code row applied to each stay in plain Python, on the sample's stays
    and on stays made to hit each row and its near misses (missing codes included)."""
    from carequal.loaders import read_table

    codes = condition_codes()
    sample = read_table(sample_work.dataset / "stays", columns=["stay_id", "principal_dx", "secondary_dx",
                                                                 "procedures"])
    made = []
    for i, r in enumerate(codes.itertuples(index=False)):
        for j, principal in enumerate([r.principal_dx + "1", r.principal_dx[:-1] or None, ""]):
            made.append({"stay_id": f"m{i}_{j}", "principal_dx": principal or None,
                         "secondary_dx": f"E119;{r.secondary_dx.split('|')[-1]}9" if r.secondary_dx and j != 2
                         else None, "procedures": f"{r.procedure}0Z" if r.procedure and j != 1 else None})
    stays = pd.concat([sample.astype(object), pd.DataFrame(made)], ignore_index=True)

    def listed(text) -> list[str]:
        return text.split(";") if isinstance(text, str) and text else []

    def matches(r, stay) -> bool:
        principal = stay.principal_dx if isinstance(stay.principal_dx, str) else ""
        return ((not r.principal_dx or principal.startswith(r.principal_dx))
                and (not r.secondary_dx or any(c.startswith(p) for c in listed(stay.secondary_dx)
                                               for p in r.secondary_dx.split("|")))
                and (not r.procedure or any(c.startswith(r.procedure) for c in listed(stay.procedures))))

    got = assign_conditions(stays)
    # the code rows of each condition, split once into inclusions and exclusions (the reference is then a plain
    # loop over each stay's own rows); a stay's flags depend on its three code fields only, so stays with the same
    # fields are checked against one computed answer
    rows = {c: ([r for r in codes.itertuples(index=False) if r.condition == c and r.action == "include"],
                [r for r in codes.itertuples(index=False) if r.condition == c and r.action != "include"])
            for c in CONDITIONS}
    expected: dict[tuple, list[bool]] = {}
    flags_got = got[list(CONDITIONS)].to_numpy(dtype=bool).tolist()
    labels_got = got["condition"].tolist()
    for k, stay in enumerate(stays.itertuples(index=False)):
        key = (stay.principal_dx, stay.secondary_dx, stay.procedures)
        if key not in expected:
            expected[key] = [any(matches(r, stay) for r in include) and not any(matches(r, stay) for r in exclude)
                             for include, exclude in (rows[c] for c in CONDITIONS)]
        flags = expected[key]
        assert flags_got[k] == flags, stay
        assert labels_got[k] == next((c for c, f in zip(CONDITIONS, flags, strict=True) if f), "other"), stay
    assert got["condition"].nunique() == len(CONDITIONS) + 1  # every label, "other" too, is met


def test_exclusions_win_over_inclusions():
    stay = pd.DataFrame({"stay_id": ["fx", "oa"], "principal_dx": ["S72001A", "M1611"],
                         "secondary_dx": np.nan, "procedures": ["0SR9019", "0SR9019"]})
    flags = assign_conditions(stay)
    assert flags["hip_knee_replacement"].tolist() == [False, True]


def test_copd_respiratory_failure_needs_exacerbation():
    stay = pd.DataFrame({"stay_id": ["rf_copd", "rf_only", "copd"], "principal_dx": ["J9601", "J9601", "J441"],
                         "secondary_dx": ["I10;J441", "I10", np.nan]})
    assert assign_conditions(stay)["copd"].tolist() == [True, False, True]
    assert set(CONDITIONS) == set(condition_codes()["condition"])


# ----------------------------------------------------------------------------------------- post-acute


def test_post_acute_links_first_pac_within_one_day():
    st = stays(("h1", "p", "H1", "2024-01-01", "2024-01-05", "03", "I509"),
               ("s1", "p", "S1", "2024-01-06", "2024-01-26", "01", "Z471"),   # next day: linked, partner? no
               ("h2", "p", "H1", "2024-04-01", "2024-04-04", "62", "I639"),
               ("r1", "p", "R1", "2024-04-06", "2024-04-18", "06", "I639"),   # 2 days later: not linked
               ("h3", "p", "H2", "2024-05-01", "2024-05-03", "03", "J189"),
               ("s2", "p", "S1", "2024-05-03", "2024-05-20", "01", "J189"))   # same day, partner since 03-01
    ep = post_acute_episodes(st, FAC).set_index("stay_id")
    assert ep.loc["h1", "pac_stay_id"] == "s1" and ep.loc["h1", "pac_setting"] == "snf"
    assert not ep.loc["h1", "pac_is_partner"]  # S1 became a partner on 2024-03-01, after this admission
    assert ep.loc["h1", "pac_los_days"] == 20 and ep.loc["h1", "episode_days"] == 25
    assert ep.loc["h2", "pac_setting"] == "none" and ep.loc["h2", "episode_days"] == 3
    assert ep.loc["h3", "pac_is_partner"] and ep.loc["h3", "final_discharge_status"] == "01"
    wider = post_acute_episodes(st, FAC, max_gap_days=2).set_index("stay_id")
    assert wider.loc["h2", "pac_stay_id"] == "r1"


# ------------------------------------------------------------------------------------------ properties


@st.composite
def histories(draw):
    n_pat = draw(st.integers(1, 4))
    rows = []
    k = 0
    for p in range(n_pat):
        day = pd.Timestamp("2023-01-01") + pd.Timedelta(days=draw(st.integers(0, 30)))
        for _ in range(draw(st.integers(1, 5))):
            los = draw(st.integers(0, 6))
            fac = draw(st.sampled_from(["H1", "H2"]))
            status = draw(st.sampled_from(["01", "02", "03", "07", "20", "06"]))
            dx = draw(st.sampled_from(["I509", "I214", "J189", "J441"]))
            end = day + pd.Timedelta(days=los)
            rows.append((f"s{k}", f"p{p}", fac, day.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d"), status, dx))
            k += 1
            day = end + pd.Timedelta(days=draw(st.integers(0, 40)))
    return rows


PATS = patients(("p0", "1940-01-01", None), ("p1", "1950-01-01", None), ("p2", "1960-06-01", None),
                ("p3", "1935-01-01", None), ("zz", "1940-01-01", None))


@settings(max_examples=30, deadline=None)
@given(histories(), st.randoms(use_true_random=False), st.sampled_from([None, "heart_failure", "ami"]))
def test_properties_shuffle_and_accounting(rows, rnd, condition):
    st_ = stays(*rows)
    cohort = index_stays(st_, FAC, PATS, condition=condition, rules=NO_RUNOUT)
    # every acute stay is accounted for exactly once
    assert len(cohort.stays) == len(st_)
    assert cohort.stays["is_index"].sum() + cohort.stays["exclusion_reason"].notna().sum() == len(st_)
    assert cohort.attrition["remaining"].iloc[-1] == len(cohort.index)
    # shuffling the input rows changes nothing
    order = list(range(len(st_)))
    rnd.shuffle(order)
    shuffled = index_stays(st_.iloc[order], FAC, PATS, condition=condition, rules=NO_RUNOUT)
    assert reasons(shuffled) == reasons(cohort)
    # adding an unrelated patient changes no one else's result
    extra = stays(("zz1", "zz", "H1", "2023-03-01", "2023-03-05", "01", "I509"))
    more = index_stays(pd.concat([st_, extra], ignore_index=True), FAC, PATS, condition=condition, rules=NO_RUNOUT)
    got = reasons(more)
    got.pop("zz1")
    assert got == reasons(cohort)


# ---------------------------------------------------------------------------------- population cohorts


def test_person_time_merges_overlaps_and_stops_at_death():
    from carequal.cohorts import person_time

    pats = patients(("p", "1950-03-01", "2024-03-10"), ("q", "1980-01-01", None))
    pats["population_group"] = ["medicare", "employees"]
    enr = pd.DataFrame({"patient_id": ["p", "p", "q"],
                        "start_date": pd.to_datetime(["2023-01-01", "2023-06-01", "2024-02-01"]),
                        "end_date": pd.to_datetime(["2024-12-31", "2025-12-31", "2024-02-29"])})
    pt = person_time(enr, pats, start="2024-01-01", end="2024-12-31",
                     by=("population_group", "age_band")).set_index("population_group")
    # p: overlapping periods count once; 1 Jan – 10 Mar 2024 (death) = 31 + 29 + 10 = 70 days, aged 73-74
    assert pt.loc["medicare", "person_days"] == 70 and pt.loc["medicare", "age_band"] == "65-74"
    # q: February 2024 = 29 days, aged 44
    assert pt.loc["employees", "person_days"] == 29 and pt.loc["employees", "age_band"] == "35-44"
    assert pt.loc["employees", "person_years"] == pytest.approx(29 / 365.25)


def test_chronic_conditions_window_and_counts():
    from carequal.cohorts import chronic_conditions

    st_ = stays(("a", "p", "H1", "2023-01-01", "2023-01-03", "01", "I509", "E119;F0390"),
                ("b", "p", "H1", "2024-05-01", "2024-05-03", "01", "J441", "N184"),
                ("c", "q", "H1", "2024-05-01", "2024-05-03", "01", "S72001A"))
    cc = chronic_conditions(st_, start="2024-01-01", end="2024-12-31").set_index("patient_id")
    assert cc.loc["p", "copd"] and cc.loc["p", "ckd"] and not cc.loc["p", "heart_failure"]  # 2023 stay out
    assert cc.loc["p", "n_conditions"] == 2 and cc.loc["q", "n_conditions"] == 0
    allyears = chronic_conditions(st_).set_index("patient_id")
    assert allyears.loc["p", "dementia"] and allyears.loc["p", "diabetes"]


def test_recorded_reasons_hand_worked():
    """The recorded rules' reason: the broad reason, unless a recorded check comes first in pipeline order
    (under_min_age after the transfer and merge steps, coverage_not_counted right after not_enrolled)."""
    from carequal.cohorts import recorded_reasons

    stays = pd.DataFrame({
        "exclusion_reason": pd.array([None, "transfer_to_acute", "died_in_hospital", "not_enrolled", "data_runout",
                                      None, "not_in_condition", None], dtype="str"),
        "record_under_min_age": [True, True, True, False, False, False, True, False],
        "record_coverage_not_counted": [False, False, False, True, True, False, True, True]})
    got = recorded_reasons(stays)
    assert [None if pd.isna(r) else r for r in got] == [
        "under_min_age", "transfer_to_acute", "under_min_age", "not_enrolled", "coverage_not_counted", None,
        "under_min_age", "coverage_not_counted"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-5, 5), st.sampled_from([0, 1, 2, -2**62, 2**62])),
                max_size=30))
def test_key_order_is_lexsort(rows):
    """``_key_order`` (one packed sort where the keys fit, np.lexsort where not) is ``np.lexsort`` of the reversed
    keys, ties in input order: what post_acute_episodes and the merged coverage periods now sort with."""
    from carequal.cohorts import _key_order

    keys = [np.array([r[k] for r in rows], dtype=np.int64) for k in range(3)]
    assert _key_order(*keys).tolist() == np.lexsort(keys[::-1]).tolist()
    assert _key_order(*keys[:2]).tolist() == np.lexsort(keys[:2][::-1]).tolist()
