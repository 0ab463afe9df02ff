"""Tests of the DE-SynPUF adapter (carequal.adapters.desynpuf).

Two parts:

1. Hand-built claims (no files needed): four claims of three beneficiaries in the DE-SynPUF layout, with the
   contract rows each should give worked out in the comments.
2. The CMS reference sample (an extract of DE-SynPUF sample 1, copied into ``tests/data/cms/desynpuf``; see the
   README there): tests named ``test_reference_*`` load it end to end, in every clone.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from carequal import DataQualityWarning, ParameterError, SchemaError
from carequal.adapters import DesynpufTables, from_desynpuf, read_desynpuf
from carequal.adapters import desynpuf as ds
from carequal.schema import TABLES, validate_tables

REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "cms" / "desynpuf"

DX = [f"ICD9_DGNS_CD_{i}" for i in range(1, 11)]
PX = [f"ICD9_PRCDR_CD_{i}" for i in range(1, 7)]


def claim(bene, clm, prvdr, admit, disch, dx, *, segment="1", from_dt=None, thru_dt=None, pmt="5000.00",
          px=()):
    """One inpatient claim row as text, as read from the CMS CSV with dtype=str."""
    row = {"DESYNPUF_ID": bene, "CLM_ID": clm, "SEGMENT": segment, "PRVDR_NUM": prvdr,
           "CLM_FROM_DT": admit if from_dt is None else from_dt,
           "CLM_THRU_DT": disch if thru_dt is None else thru_dt,
           "CLM_PMT_AMT": pmt, "CLM_ADMSN_DT": admit, "NCH_BENE_DSCHRG_DT": disch, "CLM_DRG_CD": "000"}
    row.update({c: (dx[i] if i < len(dx) else "") for i, c in enumerate(DX)})
    row.update({c: (px[i] if i < len(px) else "") for i, c in enumerate(PX)})
    return row


def bene(bid, year, birth, sex, state, county, a, b, hmo, death=""):
    return {"DESYNPUF_ID": bid, "BENE_BIRTH_DT": birth, "BENE_DEATH_DT": death, "BENE_SEX_IDENT_CD": sex,
            "SP_STATE_CODE": state, "BENE_COUNTY_CD": county, "BENE_HI_CVRAGE_TOT_MONS": a,
            "BENE_SMI_CVRAGE_TOT_MONS": b, "BENE_HMO_CVRAGE_TOT_MONS": hmo, "year": year}


@pytest.fixture
def tiny():
    """Three beneficiaries, four claims (C3 has two segments), in the DE-SynPUF layout."""
    inpatient = pd.DataFrame([
        # B1 at H1, 5-10 Mar 2008: CHF 428.0 (GEM → I50.9), diabetes 250.00 (→ E11.9), a code the GEM does not
        # know (9999X: dropped, counted) and 401.9 (→ I10); one ICD-9 procedure (not carried over, counted).
        claim("B1", "C1", "H1", "20080305", "20080310", ["4280", "25000", "9999X", "4019"], pmt="7000.00",
              px=["3722"]),
        # B1 at another provider H2 the day after C1's discharge: C1 becomes a transfer ("02").
        # Pneumonia 486 → J18.9; a negative payment (an adjustment) is blanked.
        claim("B1", "C2", "H2", "20080311", "20080315", ["486"], pmt="-100.00"),
        # B2 at H1, discharged on 1 Jun 2009, the death date: died ("20"). 276.6 was split into 276.61/276.69
        # after 2008, so the GEM lacks it; its children map to E87.70/E87.71/E87.79, shared category E87.7.
        claim("B2", "C3", "H1", "20090525", "20090601", ["2766", "4280"], pmt="5000.00"),
        # ... and a second segment of C3 (another provider, an earlier admission date, no claim dates, no
        # diagnoses, as in the CMS file): merged into C3, payment added (5000 + 1000), H1 kept.
        claim("B2", "C3", "H3", "20090420", "20090601", [], segment="2", from_dt="", thru_dt="",
              pmt="1000.00"),
        # B3 at H2: no CLM_ADMSN_DT, so CLM_FROM_DT is the admit date; principal E932.0 has no ICD-10-CM
        # equivalent in the GEM (NoDx): principal_dx empty, so validation quarantines the stay.
        claim("B3", "C4", "H2", "", "20080603", ["E9320", "4019"], from_dt="20080601"),
    ])
    beneficiaries = [
        pd.DataFrame([
            bene("B1", 2008, "19400301", "2", "39", "230", "12", "12", "0"),
            bene("B2", 2008, "19300715", "1", "05", "200", "12", "12", "0"),
            bene("B3", 2008, "19251111", "2", "39", "010", "12", "12", "12"),
        ]),
        pd.DataFrame([
            bene("B1", 2009, "19400301", "2", "39", "230", "12", "12", "0"),
            bene("B2", 2009, "19300715", "1", "05", "200", "12", "6", "0", death="20090601"),
            bene("B3", 2009, "19251111", "2", "39", "010", "12", "12", "0"),
        ]),
    ]
    return inpatient, beneficiaries


def adapt(inpatient, beneficiaries, **kwargs) -> DesynpufTables:
    with pytest.warns(DataQualityWarning, match="dropped or blanked"):
        return from_desynpuf(inpatient, beneficiaries, **kwargs)


def note(out: DesynpufTables, rule: str) -> int:
    return int(out.notes.set_index("rule").loc[rule, "n"])


# ------------------------------------------------------------------------------------------ hand-built


def test_stays_worked_by_hand(tiny):
    out = adapt(*tiny)
    st = out["stays"].set_index("stay_id")
    assert list(st.index) == ["C1", "C2", "C3", "C4"]  # one stay per CLM_ID, segments merged
    assert st.loc["C1", "principal_dx"] == "I509"
    assert st.loc["C1", "secondary_dx"] == "E119;I10"  # 9999X dropped
    assert st.loc["C2", "principal_dx"] == "J189" and pd.isna(st.loc["C2", "secondary_dx"])
    assert st.loc["C3", "principal_dx"] == "E877" and st.loc["C3", "secondary_dx"] == "I509"
    assert pd.isna(st.loc["C4", "principal_dx"]) and st.loc["C4", "secondary_dx"] == "I10"
    assert st.loc["C3", "facility_id"] == "H1" and st.loc["C3", "payment"] == 6000.0
    assert st.loc["C3", "admit_date"] == pd.Timestamp("2009-05-25")  # first segment's date
    assert st.loc["C4", "admit_date"] == pd.Timestamp("2008-06-01")  # CLM_FROM_DT fallback
    assert st.loc["C1", "discharge_date"] == pd.Timestamp("2008-03-10")
    assert pd.isna(st.loc["C2", "payment"]) and st.loc["C1", "payment"] == 7000.0
    assert st[["admission_type", "principal_dx_poa", "secondary_poa", "procedures"]].isna().all().all()


def test_discharge_status_is_inferred_only_from_death_and_next_stay(tiny):
    out = adapt(*tiny)
    status = out["stays"].set_index("stay_id")["discharge_status"]
    assert status.loc["C1"] == "02"  # next admission (C2) on the next day at another provider
    assert status.loc["C3"] == "20"  # discharge date == death date
    assert status.loc[["C2", "C4"]].isna().all()  # nothing known: empty, not "home"
    assert (note(out, "discharge_status_transfer"), note(out, "discharge_status_died"),
            note(out, "discharge_status_unknown")) == (1, 1, 2)


def test_transfer_needs_another_provider_and_at_most_one_day():
    st = pd.DataFrame({
        "stay_id": ["a", "b", "c", "d", "e"], "patient_id": ["p", "p", "q", "q", "r"],
        "facility_id": ["H1", "H1", "H1", "H2", "H1"],
        "admit_date": pd.to_datetime(["2009-01-01", "2009-01-05", "2009-01-01", "2009-01-07", "2009-01-01"]),
        "discharge_date": pd.to_datetime(["2009-01-05", "2009-01-09", "2009-01-05", "2009-01-09",
                                          "2009-01-02"]),
    })
    # a -> b same day but the same provider (not a transfer); c -> d two days later (not a transfer).
    status = ds.infer_discharge_status(st, pd.Series(dtype="datetime64[ns]"))
    assert status.isna().all()


def test_patients_facilities_and_markets(tiny):
    out = adapt(*tiny)
    pat = out["patients"].set_index("patient_id")
    assert pat["sex"].to_dict() == {"B1": "F", "B2": "M", "B3": "F"}
    assert pat.loc["B1", "birth_date"] == pd.Timestamp("1940-03-01")
    assert pat.loc["B2", "death_date"] == pd.Timestamp("2009-06-01") and pat["death_date"].isna().sum() == 2
    assert pat["market"].to_dict() == {"B1": "state_39", "B2": "state_05", "B3": "state_39"}
    assert not pat["dual_eligible"].any() and (pat["population_group"] == "medicare").all()
    assert note(out, "dual_eligible_not_in_source") == 3
    fac = out["facilities"].set_index("facility_id")
    # H3 only appears on C3's second segment, whose provider is not kept: no facility for it.
    assert list(fac.index) == ["H1", "H2"]
    # H1: one stay of a state_39 patient, one of a state_05 patient -> tie, smallest code.
    assert fac["market"].to_dict() == {"H1": "state_05", "H2": "state_39"}
    assert (fac["setting"] == "acute").all() and not fac["is_partner"].any()
    assert fac["partner_since"].isna().all() and fac.loc["H1", "name"] == "Provider H1"


def test_enrollment_from_month_counts(tiny):
    out = adapt(*tiny)
    enr = out["enrollment"].astype({"start_date": str, "end_date": str})
    assert enr.values.tolist() == [
        # B1: 12/12 months both years, no HMO -> one ffs period, 2008 and 2009 merged.
        ["B1", "2008-01-01", "2009-12-31", "ffs"],
        # B2: 2009 has min(A=12, B=6) = 6 months ending at death (June) -> Jan-1 Jun, touching 2008: merged.
        ["B2", "2008-01-01", "2009-06-01", "ffs"],
        # B3: HMO all of 2008 ("ma"), none in 2009 ("ffs"): two periods.
        ["B3", "2008-01-01", "2008-12-31", "ma"],
        ["B3", "2009-01-01", "2009-12-31", "ffs"],
    ]
    assert note(out, "part_a_b_months_differ") == 1 and note(out, "periods_merged") == 2


def test_enrollment_partial_year_ends_at_year_end():
    by = pd.DataFrame([bene("p", 2010, "19400101", "1", "01", "001", "12", "4", "2")])
    got = ds.enrollment_periods(by).astype({"start_date": str, "end_date": str}).values.tolist()
    assert got == [["p", "2010-09-01", "2010-12-31", "ma"]]  # 4 months ending 31 Dec, some HMO -> "ma"
    none = pd.DataFrame([bene("q", 2010, "19400101", "1", "01", "001", "12", "0", "0")])
    assert ds.enrollment_periods(none).empty  # Part A only: no period


def test_notes_count_everything_dropped_or_inferred(tiny):
    out = adapt(*tiny)
    expected = {"secondary_dx_unmappable": 1, "principal_dx_unmappable": 1, "principal_dx_missing": 0,
                "dx_mapped_via_children": 1, "segments_merged": 1, "segment_providers_differ": 1,
                "negative_payment_blanked": 1, "procedures_not_mapped": 1, "admit_date_from_claim_from": 1,
                "discharge_date_from_claim_thru": 0}
    assert {k: note(out, k) for k in expected} == expected
    assert list(out.notes.columns) == list(ds.NOTE_COLUMNS)


def test_retired_codes_can_be_dropped(tiny):
    out = adapt(*tiny, retired_codes="drop")
    assert pd.isna(out["stays"].set_index("stay_id").loc["C3", "principal_dx"])
    assert note(out, "dx_mapped_via_children") == 0 and note(out, "principal_dx_unmappable") == 2


def test_validates_with_one_stay_quarantined(tiny):
    out = adapt(*tiny)
    res = validate_tables(out, mode="quarantine")
    counts = res.counts.set_index("table")
    assert (counts["loaded"] == counts["accepted"] + counts["quarantined"]).all()
    assert counts.loc["stays"].tolist() == [4, 3, 1]
    quarantined = res.quarantine["stays"][["stay_id", "reason"]].values.tolist()
    assert quarantined == [["C4", "principal_dx: not_nullable"]]
    assert counts.loc[["patients", "facilities", "enrollment"], "quarantined"].eq(0).all()
    with pytest.raises(SchemaError, match="principal_dx"):
        validate_tables(out, mode="strict")


def test_county_markets(tiny):
    out = adapt(*tiny, market_from="county")
    assert out["patients"].set_index("patient_id").loc["B1", "market"] == "county_39230"
    with pytest.raises(ParameterError, match="market_from"):
        from_desynpuf(*tiny, market_from="zip")


def test_inputs_are_not_mutated(tiny):
    inpatient, beneficiaries = tiny
    before = inpatient.copy(), [b.copy() for b in beneficiaries]
    adapt(inpatient, beneficiaries)
    assert inpatient.equals(before[0])
    assert all(b.equals(a) for a, b in zip(before[1], beneficiaries, strict=True))


def test_year_is_required(tiny):
    inpatient, beneficiaries = tiny
    with pytest.raises(SchemaError, match="year"):
        from_desynpuf(inpatient, [b.drop(columns="year") for b in beneficiaries])
    # A mapping {year: frame} supplies it.
    out = adapt(inpatient, {int(b["year"].iloc[0]): b.drop(columns="year") for b in beneficiaries})
    assert len(out["enrollment"]) == 4


def test_gem_mapping_sees_each_code_once(monkeypatch):
    seen = []

    class CountingMapper:
        def map(self, codes, source, target):
            seen.append(list(codes))
            return ["I509" if c == "4280" else None for c in codes]

    monkeypatch.setattr(ds, "_gem_mapper", lambda: CountingMapper())
    codes = pd.Series(["4280", "428.0", "99999"] * 10_000)
    got = ds.icd9_to_icd10cm(codes, retired_codes="drop")
    assert len(seen) == 1 and sorted(seen[0]) == ["4280", "99999"]
    assert got["code"].value_counts().to_dict() == {"I509": 20_000}


def test_read_desynpuf_finds_files_by_pattern(tiny, tmp_path):
    inpatient, beneficiaries = tiny
    inpatient.to_csv(tmp_path / "DE1_0_2008_to_2010_Inpatient_Claims_Sample_1.csv", index=False)
    for b in beneficiaries:
        year = int(b["year"].iloc[0])
        name = f"DE1_0_{year}_Beneficiary_Summary_File_Sample_1.csv"
        b.drop(columns="year").to_csv(tmp_path / name, index=False)
    with pytest.warns(DataQualityWarning):
        got = read_desynpuf(tmp_path)
    want = adapt(inpatient, beneficiaries)
    for table in want:
        pd.testing.assert_frame_equal(got[table], want[table], check_dtype=False)
    with pytest.raises(ParameterError, match="Inpatient_Claims"):
        read_desynpuf(tmp_path / "nowhere")


# ---------------------------------------------- CMS DE-SynPUF sample 1 (reference data in tests/data/cms)


@pytest.fixture(scope="module")
def reference():
    with pytest.warns(DataQualityWarning):
        out = read_desynpuf(REFERENCE_DIR)
    return out, validate_tables(out, mode="quarantine")


def test_reference_sizes(reference):
    out, _ = reference
    claims = pd.read_csv(next(REFERENCE_DIR.glob(ds.INPATIENT_PATTERN)), dtype=str, usecols=["CLM_ID"])
    assert len(claims) == 5775 and claims["CLM_ID"].nunique() == 5768
    assert len(out["stays"]) == 5768 == out["stays"]["stay_id"].nunique()
    assert len(out["patients"]) == 10_000 and len(out["facilities"]) == 1477
    assert note(out, "segments_merged") == 7
    assert set(out) == set(TABLES) - {"ed_visits"}


def test_reference_loads_and_counts_reconcile(reference):
    out, res = reference
    counts = res.counts.set_index("table")
    assert (counts["loaded"] == counts["accepted"] + counts["quarantined"]).all()
    assert counts.loc[["facilities", "patients", "enrollment"], "quarantined"].eq(0).all()
    stays = counts.loc["stays"]
    assert stays["accepted"] / stays["loaded"] >= 0.95  # 5599 of 5768 (97.1%) at the time of writing
    reasons = res.quarantine["stays"]["reason"].str.split("; ").explode().value_counts()
    # Only two reasons: a principal diagnosis missing or without GEM target, and synthetic claims that overlap
    # an earlier claim of the same beneficiary (DE-SynPUF perturbs dates).
    assert set(reasons.index) == {"principal_dx: not_nullable", "admit_date: overlapping_stay"}
    assert reasons["principal_dx: not_nullable"] == (note(out, "principal_dx_missing")
                                                     + note(out, "principal_dx_unmappable"))
    assert 100 <= reasons["admit_date: overlapping_stay"] <= 200


def test_reference_strict_mode_raises(reference):
    out, _ = reference
    with pytest.raises(SchemaError, match="overlapping_stay") as err:
        validate_tables(out, mode="strict")
    assert set(err.value.failures["rule"]) == {"not_nullable", "overlapping_stay"}


def test_reference_codes_and_inference(reference):
    out, res = reference
    stays = res.tables["stays"]
    assert stays["principal_dx"].str.fullmatch(r"[A-Z][0-9][0-9A-Z]{1,5}").all()
    unmapped = note(out, "secondary_dx_unmappable")
    all_secondary = stays["secondary_dx"].dropna().str.count(";").sum() + stays["secondary_dx"].notna().sum()
    assert unmapped < 0.02 * all_secondary  # about 1% of secondary codes have no target
    status = out["stays"]["discharge_status"].value_counts(dropna=False)
    assert status.get("02", 0) == note(out, "discharge_status_transfer") > 0


def test_reference_crude_readmission_rate_is_about_ten_percent(reference):
    """Independent check in SQL: any admission 0-30 days after an accepted discharge, alive, no transfer."""
    _, res = reference
    stays, patients = res.tables["stays"], res.tables["patients"]  # noqa: F841 (used by DuckDB by name)
    n, events = duckdb.sql("""
        SELECT count(*), count(*) FILTER (WHERE readmitted) FROM (
            SELECT s.stay_id, bool_or(r.stay_id IS NOT NULL) AS readmitted
            FROM stays s JOIN patients p USING (patient_id)
            LEFT JOIN stays r ON r.patient_id = s.patient_id AND r.stay_id <> s.stay_id
                 AND date_diff('day', s.discharge_date, r.admit_date) BETWEEN 0 AND 30
            WHERE coalesce(s.discharge_status, '') NOT IN ('20', '02')
              AND (p.death_date IS NULL OR p.death_date > s.discharge_date)
            GROUP BY s.stay_id)
    """).fetchall()[0]
    assert n > 5000 and 0.07 <= events / n <= 0.13  # README of the sample: about 10%
    assert np.isclose(events / n, 0.094, atol=0.005)


def test_reference_carequal_crude_readmission_rate(reference):
    """carequal's cohort and flags on DE-SynPUF: crude rate (no age or enrollment rule) about 10%, as the
    sample's README says; with the CMS enrollment rule far fewer stays qualify (DE-SynPUF coverage is given
    only as month counts per year, so December discharges lack 30 days of follow-up coverage)."""
    from carequal.cohorts import IndexRules, index_stays
    from carequal.measures import readmissions

    _, res = reference
    t = res.tables
    crude = index_stays(t["stays"], t["facilities"], t["patients"], t["enrollment"],
                        rules=IndexRules(min_age=None, require_enrollment=False))
    flags = readmissions(crude.index, t["stays"], t["facilities"])
    rate = flags["readmitted_30d"].mean()
    assert len(crude.index) > 5000 and 0.08 <= rate <= 0.12  # 9.4% of 5,540 at the time of writing
    cms = index_stays(t["stays"], t["facilities"], t["patients"], t["enrollment"])
    assert 0 < len(cms.index) < len(crude.index)
    assert cms.attrition.set_index("step").loc["not_enrolled", "excluded"] > 0
