"""Measures: hand-worked readmission and planned-readmission cases, and properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from test_cohorts import FAC, PATS, histories, patients, stays

from carequal.cohorts import IndexRules, index_stays
from carequal.errors import ParameterError
from carequal.measures import (
    ccs_diagnosis,
    ccs_procedure,
    planned_readmission_valuesets,
    planned_stays,
    readmissions,
)

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


def test_index_must_be_acute_stays():
    st_ = stays(("s", "p", "S1", "2024-01-01", "2024-01-05", "01", "Z471"))
    with pytest.raises(ParameterError, match="not among the acute stays"):
        readmissions(st_, st_, FAC)


@settings(max_examples=50, deadline=None)
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
