"""The data contract: one failing example per rule, the message it gets, and quarantine reconciliation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carequal.errors import ParameterError, SchemaError
from carequal.schema import (
    CONTRACT,
    RULES,
    TABLES,
    contract_markdown,
    diagnoses_long,
    normalise_code,
    overlapping_stays,
    validate_tables,
)
from conftest import valid_raw_tables


def set_cell(table, key_col, key, col, value):
    def mutate(t):
        frame = t[table]
        frame.loc[frame[key_col] == key, col] = value
    return mutate


def drop_row(table, key_col, key):
    def mutate(t):
        t[table] = t[table][t[table][key_col] != key].reset_index(drop=True)
    return mutate


def append_row(table, **values):
    def mutate(t):
        t[table] = pd.concat([t[table], pd.DataFrame([values])], ignore_index=True).fillna("")
    return mutate


def repeat_row(table, key_col, key, **changes):
    """Append a copy of the first row with this key, with ``changes`` to some cells (none: an exact copy)."""
    def mutate(t):
        copy = t[table][t[table][key_col] == key].iloc[:1].assign(**changes)
        t[table] = pd.concat([t[table], copy], ignore_index=True)
    return mutate


# (id, mutation, table, column, rule, example key shown in the message)
CASES = [
    ("bad date", set_cell("stays", "stay_id", "A3", "admit_date", "2024-02-31"),
     "stays", "admit_date", "type", "A3"),
    ("bad bool", set_cell("facilities", "facility_id", "H2", "is_partner", "maybe"),
     "facilities", "is_partner", "type", "H2"),
    ("bad number", set_cell("facilities", "facility_id", "S1", "beds", "ninety"),
     "facilities", "beds", "type", "S1"),
    ("fractional int", set_cell("facilities", "facility_id", "S1", "beds", "90.5"),
     "facilities", "beds", "type", "S1"),
    ("empty required", set_cell("stays", "stay_id", "A6", "principal_dx", ""),
     "stays", "principal_dx", "not_nullable", "A6"),
    ("duplicate key", set_cell("stays", "stay_id", "A3", "stay_id", "A2"),
     "stays", "stay_id", "unique", "A2"),
    ("exact duplicate row", repeat_row("stays", "stay_id", "A3"),
     "stays", "stay_id", "exact_duplicate", "A3"),
    ("unknown setting", set_cell("facilities", "facility_id", "S2", "setting", "hospice"),
     "facilities", "setting", "allowed_values", "S2"),
    ("unknown discharge status", set_cell("stays", "stay_id", "A1", "discharge_status", "99"),
     "stays", "discharge_status", "allowed_values", "A1"),
    ("unknown sex", set_cell("patients", "patient_id", "P3", "sex", "X"),
     "patients", "sex", "allowed_values", "P3"),
    ("icd-9 code as principal", set_cell("stays", "stay_id", "A4", "principal_dx", "428.0"),
     "stays", "principal_dx", "code_format", "A4"),
    ("bad secondary list", set_cell("stays", "stay_id", "A1", "secondary_dx", "E11.9;12345"),
     "stays", "secondary_dx", "code_format", "A1"),
    ("bad PCS code", set_cell("stays", "stay_id", "A4", "procedures", "02703D"),
     "stays", "procedures", "code_format", "A4"),
    ("bad POA flag", set_cell("stays", "stay_id", "A1", "principal_dx_poa", "Q"),
     "stays", "principal_dx_poa", "code_format", "A1"),
    ("negative payment", set_cell("stays", "stay_id", "A2", "payment", "-5"),
     "stays", "payment", "range", "A2"),
    ("staffing over 24h", append_row("facilities", facility_id="S3", name="X", setting="snf", market="North",
                                     is_partner="false", partner_since="", beds="10", nurse_hours_ppd="30"),
     "facilities", "nurse_hours_ppd", "range", "S3"),
    ("born before 1900", set_cell("patients", "patient_id", "P3", "birth_date", "1890-01-01"),
     "patients", "birth_date", "date_implausible", "P3"),
    ("discharge in 9999", set_cell("stays", "stay_id", "A4", "discharge_date", "9999-12-31"),
     "stays", "discharge_date", "date_implausible", "A4"),
    ("ED visit two years ahead", set_cell("ed_visits", "visit_id", "E1", "visit_date",
                                          (pd.Timestamp.today() + pd.DateOffset(years=2)).strftime("%Y-%m-%d")),
     "ed_visits", "visit_date", "date_implausible", "P1/"),
    ("beds beyond 2^53", set_cell("facilities", "facility_id", "H2", "beds", "99999999999999999999"),
     "facilities", "beds", "out_of_range", "H2"),
    ("infinite payment", set_cell("stays", "stay_id", "A5", "payment", "1e400"),
     "stays", "payment", "out_of_range", "A5"),
    ("discharge before admit", set_cell("stays", "stay_id", "A6", "discharge_date", "2024-03-30"),
     "stays", "discharge_date", "discharge_before_admit", "A6"),
    ("enrollment end before start", set_cell("enrollment", "patient_id", "P3", "end_date", "2012-01-01"),
     "enrollment", "end_date", "end_before_start", "P3/2013-01-01"),
    ("death before birth", set_cell("patients", "patient_id", "P2", "death_date", "1950-01-01"),
     "patients", "death_date", "death_before_birth", "P2"),
    ("birth in the future", set_cell("patients", "patient_id", "P3", "birth_date", "2999-01-01"),
     "patients", "birth_date", "birth_in_future", "P3"),
    ("partner_since on a non-partner", set_cell("facilities", "facility_id", "H2", "partner_since", "2023-01-01"),
     "facilities", "partner_since", "partner_since_without_partner", "H2"),
    # another facility with is_partner empty (and a partner_since) fails not_nullable; that row must not stop the
    # rule from being checked on H2 (pandera once lost the whole rule to the empty row's undecided result)
    ("partner_since on a non-partner, beside an empty is_partner",
     lambda t: (set_cell("facilities", "facility_id", "H2", "partner_since", "2023-01-01")(t),
                set_cell("facilities", "facility_id", "S1", "is_partner", None)(t),
                set_cell("facilities", "facility_id", "S1", "partner_since", "2023-01-01")(t)),
     "facilities", "partner_since", "partner_since_without_partner", "H2"),
    ("poa count mismatch", set_cell("stays", "stay_id", "A1", "secondary_poa", "Y"),
     "stays", "secondary_poa", "poa_count_mismatch", "A1"),
    ("unknown patient", set_cell("stays", "stay_id", "A6", "patient_id", "P404"),
     "stays", "patient_id", "unknown_patient", "A6"),
    ("unknown facility", set_cell("stays", "stay_id", "A3", "facility_id", "H404"),
     "stays", "facility_id", "unknown_facility", "A3"),
    ("ED visit at unknown facility", set_cell("ed_visits", "visit_id", "E2", "facility_id", "H404"),
     "ed_visits", "facility_id", "unknown_facility", "P3/2024-04-10"),
    ("enrollment of unknown patient", set_cell("enrollment", "patient_id", "P3", "patient_id", "P404"),
     "enrollment", "patient_id", "unknown_patient", "P404/2013-01-01"),
    ("parent quarantined", set_cell("patients", "patient_id", "P3", "sex", "X"),
     "stays", "patient_id", "parent_quarantined", "A6"),
    # P1's stays: A1 01-02..01-06, A2 (SNF) 01-06..01-30, A3 02-20..02-24; the patient row carries the failure
    ("stay after death", set_cell("patients", "patient_id", "P1", "death_date", "2024-02-01"),
     "patients", "death_date", "admit_after_death", "P1"),
    ("discharge after death", set_cell("patients", "patient_id", "P1", "death_date", "2024-01-20"),
     "patients", "death_date", "discharge_after_death", "P1"),
    ("stay before birth", set_cell("patients", "patient_id", "P3", "birth_date", "2024-05-01"),
     "stays", "admit_date", "admit_before_birth", "A6"),
    ("overlapping stays", set_cell("stays", "stay_id", "A3", "admit_date", "2024-01-04"),
     "stays", "admit_date", "overlapping_stay", "A3"),
    # P3 is covered 2013-01-01..2024-12-31 by Northvale Health; a period from 2020 naming Riverton Health is the
    # later of the conflicting pair
    ("two sponsors on one day", lambda t: (set_cell("enrollment", "patient_id", "P3", "sponsor", "Northvale Health")(t),
                                           append_row("enrollment", patient_id="P3", start_date="2020-01-01",
                                                      end_date="2024-12-31", coverage="commercial",
                                                      sponsor="Riverton Health")(t)),
     "enrollment", "sponsor", "sponsor_overlap", "P3/2020-01-01"),
]


@pytest.mark.parametrize(("mutate", "table", "column", "rule", "example"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_strict_message(mutate, table, column, rule, example):
    tables = valid_raw_tables()
    mutate(tables)
    with pytest.raises(SchemaError) as info:
        validate_tables(tables, mode="strict")
    message = str(info.value)
    # table, column, rule, count and example key, all in one line of the message
    pattern = rf"{table}\.{column}: \d+ rows? fail rule {rule} \(.+\); examples .*{re.escape(example)}"
    assert re.search(pattern, message), message
    assert "mode='quarantine'" in message
    failures = info.value.failures
    assert ((failures["table"] == table) & (failures["rule"] == rule)).any()


@pytest.mark.parametrize(("mutate", "table", "column", "rule", "example"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_quarantine_reconciles(mutate, table, column, rule, example):
    tables = valid_raw_tables()
    mutate(tables)
    out = validate_tables(tables, mode="quarantine")
    counts = out.counts.set_index("table")
    assert (counts["loaded"] == counts["accepted"] + counts["quarantined"]).all()
    for t in out.tables:
        assert counts.loc[t, "loaded"] == len(tables[t])
    q = out.quarantine[table]
    assert q["reason"].str.contains(f"{column}: {rule}", regex=False).any(), q
    key = example.split("/")[0]
    key_col = {"stays": "stay_id", "facilities": "facility_id", "patients": "patient_id",
               "enrollment": "patient_id", "ed_visits": "patient_id"}[table]
    assert key in set(q[key_col].astype(str))
    if rule == "exact_duplicate":  # one copy is kept
        assert (out.tables[table][key_col].astype(str) == key).sum() == 1
    else:
        assert key not in set(out.tables[table][key_col].astype(str)) or table in ("enrollment", "ed_visits")


FILE_RULES = {"empty_file", "not_utf8", "delimiter", "duplicate_column", "csv_format", "parquet_format"}
"""Rules of a file as a whole, refused by the loaders (tested in test_loaders.py and test_input_faults.py)."""


def test_every_rule_has_a_failing_example():
    covered = {c[4] for c in CASES} | {"missing_column", "table_empty"} | FILE_RULES
    assert covered == set(RULES)


def test_missing_column_names_table_and_column(raw_tables):
    raw_tables["stays"] = raw_tables["stays"].drop(columns=["discharge_date"])
    with pytest.raises(SchemaError, match=r"stays: required column\(s\) missing: discharge_date"):
        validate_tables(raw_tables, mode="quarantine")


def test_missing_table(raw_tables):
    del raw_tables["enrollment"]
    with pytest.raises(SchemaError, match="required table.*enrollment"):
        validate_tables(raw_tables)


def test_optional_table_and_columns_may_be_absent(raw_tables):
    del raw_tables["ed_visits"]
    raw_tables["stays"] = raw_tables["stays"].drop(columns=["procedures", "payment", "secondary_poa"])
    out = validate_tables(raw_tables)
    assert set(out.tables) == set(TABLES) - {"ed_visits"}
    assert len(out.tables["stays"]) == 6


def test_bad_mode_and_unknown_table(raw_tables):
    with pytest.raises(ParameterError, match="mode must be"):
        validate_tables(raw_tables, mode="lenient")
    raw_tables["claims"] = pd.DataFrame()
    with pytest.raises(ParameterError, match="unknown table"):
        validate_tables(raw_tables)


def test_valid_tables_pass_and_are_typed(raw_tables):
    before = {k: v.copy() for k, v in raw_tables.items()}
    out = validate_tables(raw_tables, mode="strict")
    for k, v in raw_tables.items():  # inputs untouched
        pd.testing.assert_frame_equal(v, before[k])
    stays = out.tables["stays"].set_index("stay_id")
    assert stays.loc["A3", "discharge_status"] == "01"  # "1" padded to the two-digit code
    assert stays.loc["A3", "principal_dx"] == "J189"
    assert stays.loc["A5", "secondary_dx"] == "E785;I10"  # '|' separator normalised
    assert stays.loc["A6", "principal_dx_poa"] == "Y"
    assert pd.isna(stays.loc["A2", "admission_type"])
    assert stays["admit_date"].dtype.kind == "M"
    pats = out.tables["patients"].set_index("patient_id")
    assert pats["dual_eligible"].tolist() == [False, True, False]
    assert pats.loc["P2", "sex"] == "M"
    assert out.tables["enrollment"]["coverage"].tolist() == ["ffs", "ffs", "ma"]
    assert out.failures.empty


def test_several_failures_in_one_error(raw_tables):
    set_cell("stays", "stay_id", "A1", "discharge_status", "99")(raw_tables)
    set_cell("stays", "stay_id", "A2", "discharge_status", "98")(raw_tables)
    set_cell("facilities", "facility_id", "S2", "setting", "hospice")(raw_tables)
    with pytest.raises(SchemaError) as info:
        validate_tables(raw_tables)
    msg = str(info.value)
    assert "stays.discharge_status: 2 rows fail rule allowed_values" in msg
    assert "examples stay_id = A1, A2" in msg
    assert "facilities.setting: 1 row fail rule allowed_values" in msg


def test_examples_capped_at_five():
    tables = valid_raw_tables()
    extra = pd.DataFrame({
        "stay_id": [f"X{i}" for i in range(8)], "patient_id": "P3", "facility_id": "H404",
        "admit_date": [f"2023-0{1 + i % 8}-01" for i in range(8)],
        "discharge_date": [f"2023-0{1 + i % 8}-02" for i in range(8)], "discharge_status": "01",
        "admission_type": "1", "principal_dx": "I10", "principal_dx_poa": "Y", "secondary_dx": "",
        "secondary_poa": "", "procedures": "", "payment": "",
    })
    tables["stays"] = pd.concat([tables["stays"], extra], ignore_index=True)
    with pytest.raises(SchemaError) as info:
        validate_tables(tables)
    line = next(x for x in str(info.value).splitlines() if "unknown_facility" in x)
    assert "8 rows" in line
    assert line.split("examples stay_id = ")[1] == "X0, X1, X2, X3, X4"


def test_quarantine_keeps_the_row_as_given(raw_tables):
    set_cell("stays", "stay_id", "A4", "principal_dx", "428.0")(raw_tables)
    set_cell("stays", "stay_id", "A4", "discharge_status", "99")(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    q = out.quarantine["stays"]
    assert q["stay_id"].tolist() == ["A4"]
    assert q["row_number"].tolist() == [4]
    assert q["principal_dx"].tolist() == ["428.0"]  # as given, not normalised
    assert q["reason"].iloc[0] == "discharge_status: allowed_values; principal_dx: code_format"


def test_sponsor_is_optional_trimmed_and_may_overlap_a_period_without_one(raw_tables):
    out = validate_tables(raw_tables)  # the fixture's enrollment has no sponsor column
    assert "sponsor" not in out.tables["enrollment"].columns
    raw_tables["enrollment"]["sponsor"] = ["  Northvale Health ", "", "Riverton Health"]
    # P1 also has Medicare (no sponsor) from 2015; the employer period beside it is not a conflict, and a second
    # period of the same sponsor that overlaps is not one either
    extra = pd.DataFrame({"patient_id": ["P1", "P3"], "start_date": ["2024-01-01", "2020-01-01"],
                          "end_date": ["2024-06-30", "2020-12-31"], "coverage": ["ffs", "commercial"],
                          "sponsor": ["", "Riverton Health"]})
    raw_tables["enrollment"] = pd.concat([raw_tables["enrollment"], extra], ignore_index=True)
    enr = validate_tables(raw_tables, mode="strict").tables["enrollment"]
    got = enr.assign(start=enr["start_date"].dt.strftime("%Y-%m-%d")).set_index(["patient_id", "start"])["sponsor"]
    assert got.fillna("(none)").to_dict() == {
        ("P1", "2015-01-01"): "Northvale Health", ("P1", "2024-01-01"): "(none)", ("P2", "2017-12-01"): "(none)",
        ("P3", "2013-01-01"): "Riverton Health", ("P3", "2020-01-01"): "Riverton Health"}


def test_overlapping_sponsors_compares_with_the_period_reaching_furthest():
    # p: A covers all of 2024; B (Feb) conflicts with A; C (Mar, sponsor A) does not; D (from July, sponsor B)
    # conflicts with A, which still reaches furthest. q: E then F, one ending the day before the other starts.
    enr = pd.DataFrame({"patient_id": ["p", "p", "p", "p", "q", "q"],
                        "sponsor": ["A", "B", "A", "B", "E", "F"],
                        "start_date": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-07-01",
                                                      "2024-01-01", "2024-07-01"]),
                        "end_date": pd.to_datetime(["2024-12-31", "2024-02-28", "2024-03-31", "2025-03-31",
                                                    "2024-06-30", "2024-12-31"])})
    from carequal.schema import overlapping_sponsors

    assert overlapping_sponsors(enr).tolist() == [1, 3]
    assert overlapping_sponsors(enr.iloc[::-1].reset_index(drop=True)).tolist() == [2, 4]


def test_same_day_transfer_is_not_an_overlap():
    fac = pd.DataFrame({"facility_id": ["A", "B", "S"], "setting": ["acute", "acute", "snf"]})
    stays = pd.DataFrame({
        "stay_id": ["1", "2", "3", "4"], "patient_id": ["p", "p", "p", "q"],
        "facility_id": ["A", "B", "S", "A"],
        "admit_date": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-02", "2024-01-03"]),
        "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-09", "2024-01-20", "2024-01-04"]),
    })
    # stay 2 starts the day stay 1 ends (same-day transfer); stay 3 is a different setting; q is another person
    assert overlapping_stays(stays, fac).tolist() == []
    stays.loc[1, "admit_date"] = pd.Timestamp("2024-01-04")
    assert overlapping_stays(stays, fac).tolist() == [1]


def test_overlap_against_a_long_earlier_stay():
    # stay 3 starts after stay 2 ended but inside stay 1, which is still open: the running maximum catches it
    fac = pd.DataFrame({"facility_id": ["A"], "setting": ["acute"]})
    stays = pd.DataFrame({
        "stay_id": ["1", "2", "3"], "patient_id": "p", "facility_id": "A",
        "admit_date": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-10"]),
        "discharge_date": pd.to_datetime(["2024-01-30", "2024-01-03", "2024-01-12"]),
    })
    assert overlapping_stays(stays, fac).tolist() == [1, 2]


def test_normalise_code_variants():
    got = normalise_code(pd.Series(["i50.9", "I509", " i5 0.9", "I50.9 ", None, ""]))
    assert got.iloc[:4].tolist() == ["I509"] * 4
    assert got.iloc[4:].isna().all()


def test_diagnoses_long_counts(raw_tables):
    stays = validate_tables(raw_tables).tables["stays"]
    long = diagnoses_long(stays)
    n_secondary = stays["secondary_dx"].str.count(";").add(1).fillna(0).sum()
    assert len(long) == len(stays) + n_secondary
    assert (long.groupby("stay_id")["position"].min() == 0).all()


def test_contract_documented_in_data_readme():
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    assert contract_markdown() in readme, "data/README.md is out of date: paste contract_markdown()"
    for table, specs in CONTRACT.items():
        for spec in specs:
            assert f"`{spec.name}`" in readme, (table, spec.name)


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(6))), st.sets(st.integers(0, 5), max_size=3))
def test_quarantine_reconciles_whatever_breaks(order, broken):
    """Property: any set of broken stays, in any row order, is accounted for, row by row."""
    tables = valid_raw_tables()
    stays = tables["stays"].iloc[list(order)].reset_index(drop=True)
    for i in broken:
        stays.loc[i, "discharge_status"] = "99"
    tables["stays"] = stays
    out = validate_tables(tables, mode="quarantine")
    assert len(out.tables["stays"]) + len(out.quarantine["stays"]) == 6
    assert set(out.quarantine["stays"]["row_number"] - 1) == broken
    assert set(out.tables["stays"]["stay_id"]) | set(out.quarantine["stays"]["stay_id"]) == set(stays["stay_id"])
    assert np.array_equal(np.sort(out.quarantine["stays"]["row_number"]), out.quarantine["stays"]["row_number"])


@pytest.mark.parametrize("quarantined", [(), ("bad_birth",), ("bad_birth", "changed_copy", "exact_copy")])
def test_patient_rows_are_each_accepted_rows_patient_among_the_accepted_patients(quarantined):
    """``patient_rows`` (kept from validation's foreign-key look-up) is the look-up made again on the accepted
    tables, whatever patient rows were quarantined before or beside the accepted ones."""
    from carequal.schema import key_positions

    tables = valid_raw_tables()
    tables["patients"] = tables["patients"].iloc[[2, 0, 1]].reset_index(drop=True)  # not in the children's order
    if "bad_birth" in quarantined:  # P1 quarantined: its stays, enrollment and ED visit too
        set_cell("patients", "patient_id", "P1", "birth_date", "1940-13-01")(tables)
    if "changed_copy" in quarantined:  # two differing P2 rows: both quarantined, P2's children too
        repeat_row("patients", "patient_id", "P2", sex="F")(tables)
    if "exact_copy" in quarantined:  # an exact copy of P3 after it: the copy quarantined, P3 accepted
        repeat_row("patients", "patient_id", "P3")(tables)
    out = validate_tables(tables, mode="quarantine")
    assert set(out.patient_rows) == {"stays", "enrollment", "ed_visits"}
    for table, rows in out.patient_rows.items():
        expected = key_positions(out.tables[table]["patient_id"], out.tables["patients"]["patient_id"])
        assert (expected >= 0).all()
        assert rows.tolist() == expected.tolist(), table
    assert sorted(out.quarantine["patients"]["patient_id"]) == sorted(
        {(): [], ("bad_birth",): ["P1"]}.get(quarantined, ["P1", "P2", "P2", "P3"]))
    assert "P3" in set(out.tables["patients"]["patient_id"])


# ----------------------------------------------------------------------- input faults: rules added for them


@pytest.mark.parametrize("mode", ["strict", "quarantine"])
@pytest.mark.parametrize("table", ["facilities", "patients", "stays"])
def test_a_required_table_without_rows_is_refused_in_both_modes(table, mode):
    tables = valid_raw_tables()
    tables[table] = tables[table].iloc[:0]
    with pytest.raises(SchemaError, match=rf"^{table}: the table has no rows.*\(rule table_empty\)"):
        validate_tables(tables, mode=mode)


def test_enrollment_and_ed_visits_may_have_no_rows(raw_tables):
    raw_tables["ed_visits"] = raw_tables["ed_visits"].iloc[:0]
    raw_tables["enrollment"] = raw_tables["enrollment"].iloc[:0]
    out = validate_tables(raw_tables)
    assert len(out.tables["ed_visits"]) == 0 and len(out.tables["stays"]) == 6


def test_a_non_iso_date_is_one_type_failure_naming_the_expected_format(raw_tables):
    # 2024-01-02 and 01/06/2024 in one column: only the second fails, once (not also as an empty cell)
    set_cell("stays", "stay_id", "A2", "admit_date", "01/06/2024")(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    q = out.quarantine["stays"]
    assert q["stay_id"].tolist() == ["A2"]
    assert q["reason"].tolist() == ["admit_date: type (expected a date in the form YYYY-MM-DD)"]
    assert out.failures[["column", "rule", "n_rows"]].values.tolist() == [["admit_date", "type", 1]]
    with pytest.raises(SchemaError, match=r"stays\.admit_date: 1 row fail rule type \(value cannot be read as the "
                                          r"column's type; expected a date in the form YYYY-MM-DD\); examples "
                                          r"stay_id = A2\n"):
        validate_tables(raw_tables)


# (column type, table, key column, key, column, bad value, reason in the quarantine table)
WRONG_TYPES = [
    ("int", "facilities", "facility_id", "H1", "beds", "three hundred", "beds: type (expected a whole number)"),
    ("float", "stays", "stay_id", "A1", "payment", "$12,000", "payment: type (expected a number)"),
    ("date", "patients", "patient_id", "P1", "death_date", "March 2024", "death_date: type (expected a date in the "
                                                                         "form YYYY-MM-DD)"),
    ("bool", "patients", "patient_id", "P3", "dual_eligible", "maybe", "dual_eligible: type (expected true/false "
                                                                       "(or 1/0, yes/no, t/f, y/n))"),
    ("category", "facilities", "facility_id", "S2", "setting", "hospice", "setting: allowed_values (allowed: acute, "
                                                                          "snf, irf, ltch, hha)"),
    ("huge int", "facilities", "facility_id", "H2", "beds", "9007199254740992", "beds: out_of_range"),
]


@pytest.mark.parametrize(("kind", "table", "key_col", "key", "column", "value", "reason"), WRONG_TYPES,
                         ids=[w[0] for w in WRONG_TYPES])
def test_a_wrong_value_in_every_column_type_is_quarantined_with_its_reason(kind, table, key_col, key, column, value,
                                                                           reason):
    tables = valid_raw_tables()
    set_cell(table, key_col, key, column, value)(tables)
    out = validate_tables(tables, mode="quarantine")
    q = out.quarantine[table]
    assert q.loc[q[key_col] == key, "reason"].tolist() == [reason]
    assert len(out.tables[table]) == len(tables[table]) - 1


def test_largest_exact_whole_number_is_kept(raw_tables):
    raw_tables["facilities"].loc[0, "beds"] = "9007199254740991"  # 2^53 - 1: held exactly
    out = validate_tables(raw_tables)
    assert out.tables["facilities"]["beds"].iloc[0] == 2**53 - 1


def test_typed_numbers_are_bounded_too(raw_tables):
    # as read from Parquet: numbers already typed
    raw_tables["facilities"]["beds"] = np.array([300, 2**60, 90, 10], dtype=np.int64)
    raw_tables["stays"]["payment"] = [12000.0, np.inf, np.nan, 1.0, 2.0, 3.0]
    out = validate_tables(raw_tables, mode="quarantine")
    assert out.failures[["table", "column", "rule", "examples"]].values.tolist()[:2] == [
        ["facilities", "beds", "out_of_range", "facility_id = H2"],
        ["stays", "payment", "out_of_range", "stay_id = A2"]]


def test_date_window_edges():
    from carequal.schema import date_window

    lo, hi = date_window(pd.Timestamp("2024-02-29 15:00"))
    assert (lo, hi) == (pd.Timestamp("1900-01-01"), pd.Timestamp("2025-02-28"))  # no 29 February in 2025
    tables = valid_raw_tables()
    today = pd.Timestamp.today().normalize()
    last_ok = (today + pd.DateOffset(years=1)).strftime("%Y-%m-%d")
    first_bad = (today + pd.DateOffset(years=1) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    set_cell("ed_visits", "visit_id", "E1", "visit_date", last_ok)(tables)
    set_cell("ed_visits", "visit_id", "E2", "visit_date", first_bad)(tables)
    set_cell("patients", "patient_id", "P1", "birth_date", "1900-01-01")(tables)
    set_cell("patients", "patient_id", "P2", "birth_date", "1899-12-31")(tables)
    out = validate_tables(tables, mode="quarantine")
    assert out.quarantine["ed_visits"]["visit_id"].tolist() == ["E2"]
    assert out.quarantine["ed_visits"]["reason"].iloc[0] == (
        f"visit_date: date_implausible (plausible: 1900-01-01 to {last_ok})")
    assert out.quarantine["patients"]["patient_id"].tolist() == ["P2"]


def test_an_open_enrollment_end_is_plausible(raw_tables):
    set_cell("enrollment", "patient_id", "P1", "end_date", "9999-12-31")(raw_tables)
    set_cell("enrollment", "patient_id", "P3", "start_date", "1899-12-31")(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    assert out.tables["enrollment"]["end_date"].max() == pd.Timestamp("9999-12-31")
    end = (pd.Timestamp.today().normalize() + pd.DateOffset(years=1)).strftime("%Y-%m-%d")
    assert out.quarantine["enrollment"]["reason"].tolist() == [
        f"start_date: date_implausible (plausible: 1900-01-01 to {end})"]


# ------------------------------------------------------------------------------------------------ duplicates


def test_exact_duplicates_keep_one_copy_conflicting_duplicates_keep_none(raw_tables):
    # stays as loaded: rows 1-6 are A1..A6; appended: 7 = A3 exactly, 8 = A6 with "j44.1" for "J44.1" (the
    # same code once normalised, but not the same row as given), 9 and 10 = A1 exactly.
    for mutate in (repeat_row("stays", "stay_id", "A3"), repeat_row("stays", "stay_id", "A6", principal_dx="j44.1"),
                   repeat_row("stays", "stay_id", "A1"), repeat_row("stays", "stay_id", "A1")):
        mutate(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    # A1 and A3 keep their first copy (rows 1 and 3); A6's two versions conflict: both rows 6 and 8 go.
    # A3's kept copy is not an overlap of its quarantined copy (that row is set aside before the overlap rule).
    assert out.tables["stays"]["stay_id"].tolist() == ["A1", "A2", "A3", "A4", "A5"]
    q = out.quarantine["stays"]
    assert q[["row_number", "stay_id", "reason"]].values.tolist() == [
        [6, "A6", "stay_id: unique"], [7, "A3", "stay_id: exact_duplicate"], [8, "A6", "stay_id: unique"],
        [9, "A1", "stay_id: exact_duplicate"], [10, "A1", "stay_id: exact_duplicate"]]
    assert out.counts.set_index("table").loc["stays"].tolist() == [10, 5, 5]
    messages = out.failures.set_index("rule")["message"]
    assert messages["exact_duplicate"].startswith("stays.stay_id: 3 rows fail rule exact_duplicate (")
    assert messages["exact_duplicate"].endswith("examples stay_id = A3, A1")  # each key once
    assert messages["unique"].startswith("stays.stay_id: 2 rows fail rule unique (")


def test_exact_duplicates_are_errors_in_strict_mode(raw_tables):
    # strict refuses anything not clean: the repeat is reported even though quarantine mode would keep a copy
    repeat_row("stays", "stay_id", "A3")(raw_tables)
    with pytest.raises(SchemaError, match=r"stays\.stay_id: 1 row fail rule exact_duplicate \(.*first copy.*\); "
                                          r"examples stay_id = A3"):
        validate_tables(raw_tables, mode="strict")


def test_duplicated_patient_children_follow_the_kept_copy(raw_tables):
    # P1 repeated exactly: one P1 is kept, so its stays, enrollment and ED visit are accepted (the quarantined
    # extra copy does not make them orphans). P3 repeated with another sex: both copies go, and so do P3's
    # stay A6, enrollment row and ED visit E2 (parent_quarantined).
    repeat_row("patients", "patient_id", "P1")(raw_tables)
    repeat_row("patients", "patient_id", "P3", sex="M")(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    assert out.tables["patients"]["patient_id"].tolist() == ["P1", "P2"]
    q = out.quarantine["patients"]
    assert q[["row_number", "patient_id", "reason"]].values.tolist() == [
        [3, "P3", "patient_id: unique"], [4, "P1", "patient_id: exact_duplicate"], [5, "P3", "patient_id: unique"]]
    assert out.tables["stays"]["stay_id"].tolist() == ["A1", "A2", "A3", "A4", "A5"]
    assert out.quarantine["stays"][["stay_id", "reason"]].values.tolist() == [["A6", "patient_id: parent_quarantined"]]
    assert out.tables["enrollment"]["patient_id"].tolist() == ["P1", "P2"]
    assert out.quarantine["ed_visits"]["visit_id"].tolist() == ["E2"]
    counts = out.counts.set_index("table")
    assert counts.loc["patients"].tolist() == [5, 2, 3]
    assert (counts["loaded"] == counts["accepted"] + counts["quarantined"]).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=6), st.randoms(use_true_random=False))
def test_duplicates_are_accounted_for_row_by_row(copies, rnd):
    """Property: after appending copies of stays (exact, or with another payment) in any order, a stay with only
    exact copies is accepted once and its later copies are quarantined as exact_duplicate; a stay with a
    differing copy has every copy quarantined as unique; every row is kept or quarantined."""
    tables = valid_raw_tables()
    base = tables["stays"]
    extra = []
    for i, altered in copies:
        row = base.iloc[[i]].copy()
        if altered:
            row["payment"] = "1"
        extra.append(row)
    stays = pd.concat([base, *extra], ignore_index=True)
    order = list(range(len(stays)))
    rnd.shuffle(order)
    stays = stays.iloc[order].reset_index(drop=True)
    tables["stays"] = stays
    out = validate_tables(tables, mode="quarantine")
    conflicting = {base["stay_id"].iloc[i] for i, altered in copies if altered and base["payment"].iloc[i] != "1"}
    assert set(out.tables["stays"]["stay_id"]) == set(base["stay_id"]) - conflicting
    assert out.tables["stays"]["stay_id"].is_unique
    q = out.quarantine["stays"]
    assert len(out.tables["stays"]) + len(q) == len(stays)
    for stay_id, rows in q.groupby("stay_id"):
        positions = np.flatnonzero(stays["stay_id"] == stay_id) + 1
        if stay_id in conflicting:
            assert set(rows["reason"]) == {"stay_id: unique"} and rows["row_number"].tolist() == positions.tolist()
        else:  # the first copy in input order is the one kept
            assert set(rows["reason"]) == {"stay_id: exact_duplicate"}
            assert rows["row_number"].tolist() == positions[1:].tolist()


# --------------------------------------------------------------------------------------- death before a stay


def test_death_before_a_stay_quarantines_the_patient_and_everything_that_refers_to_it(raw_tables):
    # P1 "died" 2024-02-01, but stay A3 admits P1 on 2024-02-20. P1's other stays (A1 ends 01-06, A2 01-30)
    # agree with the date. The patient row carries the failure; A1, A2, A3, P1's enrollment row and ED visit E1
    # follow as parent_quarantined. P2 (death 2024-03-09, discharged dead that day from A5) is consistent.
    set_cell("patients", "patient_id", "P1", "death_date", "2024-02-01")(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    assert out.quarantine["patients"][["patient_id", "reason"]].values.tolist() == [
        ["P1", "death_date: admit_after_death (stays admitted after it: stay_id = A3)"]]
    assert out.tables["patients"]["patient_id"].tolist() == ["P2", "P3"]
    assert out.quarantine["stays"][["stay_id", "reason"]].values.tolist() == [
        ["A1", "patient_id: parent_quarantined"], ["A2", "patient_id: parent_quarantined"],
        ["A3", "patient_id: parent_quarantined"]]
    assert out.tables["stays"]["stay_id"].tolist() == ["A4", "A5", "A6"]
    assert out.quarantine["enrollment"]["patient_id"].tolist() == ["P1"]
    assert out.quarantine["ed_visits"]["visit_id"].tolist() == ["E1"]
    assert out.counts.set_index("table")["quarantined"].to_dict() == {
        "facilities": 0, "patients": 1, "stays": 3, "enrollment": 1, "ed_visits": 1}
    message = out.failures.set_index("rule").loc["admit_after_death", "message"]
    assert message.startswith("patients.death_date: 1 row fail rule admit_after_death (death_date is before the "
                              "admission of one of the patient's stays (the patient row carries it;")
    assert message.endswith("examples patient_id = P1; stays admitted after it: stay_id = A3")


def test_discharge_after_death_by_one_day(raw_tables):
    # A5 (admitted 03-05) ends 03-09 with status 20: a death date of 03-09 agrees, 03-08 does not
    assert validate_tables(raw_tables, mode="strict").tables["patients"]["patient_id"].tolist() == ["P1", "P2", "P3"]
    set_cell("patients", "patient_id", "P2", "death_date", "2024-03-08")(raw_tables)
    with pytest.raises(SchemaError) as info:
        validate_tables(raw_tables, mode="strict")
    lines = [x for x in str(info.value).splitlines() if "after_death" in x]
    assert len(lines) == 1  # A4 (03-01..03-05) is before the date: only the discharge rule fails
    assert re.search(r"patients\.death_date: 1 row fail rule discharge_after_death \(.+\); examples patient_id = P2; "
                     r"stays discharged after it: stay_id = A5$", lines[0]), lines[0]
    out = validate_tables(raw_tables, mode="quarantine")
    assert out.quarantine["patients"]["reason"].tolist() == [
        "death_date: discharge_after_death (stays discharged after it: stay_id = A5)"]
    assert set(out.quarantine["stays"]["stay_id"]) == {"A4", "A5"}


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("discharge_status", "99", "discharge_status: allowed_values"),
    ("facility_id", "H404", "facility_id: unknown_facility"),
])
def test_a_quarantined_stay_is_no_evidence_against_a_death_date(raw_tables, column, value, reason):
    # A3 is P1's only stay after the death date 2024-02-01; when A3 fails a rule of its own it is set aside
    # alone and P1, with A1 and A2, is kept
    set_cell("patients", "patient_id", "P1", "death_date", "2024-02-01")(raw_tables)
    set_cell("stays", "stay_id", "A3", column, value)(raw_tables)
    out = validate_tables(raw_tables, mode="quarantine")
    assert out.quarantine["patients"].empty
    assert out.quarantine["stays"][["stay_id", "reason"]].values.tolist() == [["A3", reason]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e", None]), max_size=8), st.booleans())
def test_duplicated_keys_is_pandas_duplicated_keep_false(keys, sort):
    """Every copy of a repeated key (missing values never), sorted keys (the no-hash fast path) or not."""
    from carequal.schema import duplicated_keys

    if sort:
        keys = sorted(k for k in keys if k is not None)
    values = pd.Series(keys, dtype="str")
    expected = np.flatnonzero(values.duplicated(keep=False).to_numpy() & values.notna().to_numpy())
    assert duplicated_keys(values).tolist() == expected.tolist()
    assert duplicated_keys(pd.Series(["a", "b", "b"])).tolist() == [1, 2]  # sorted, not strictly: hashed
