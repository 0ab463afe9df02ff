"""Risk adjustment: comorbidity indices from ICD-10-CM diagnoses.

Charlson (Quan 2005 ICD-10 algorithm; Charlson 1987 or Quan 2011 weights) and Elixhauser (Quan 2005 ICD-10;
van Walraven 2009 weights), with their hierarchies, built from the published definitions shipped in
``carequal/data/comorbidity/`` (see its README for the sources).

Why hand-written: the maps are data, and matching is a prefix look-up; ``pycomorb`` (MIT) computes the same
scores on polars frames, patient by patient, but not per stay with present-on-admission filtering and a
look-back over prior stays, which risk models for readmission need. It is used in the tests as an
independent check.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from carequal.errors import ParameterError
from carequal.schema import diagnoses_long

SCHEMES: dict[str, str] = {"charlson": "charlson_quan2005_icd10.csv", "elixhauser": "elixhauser_quan2005_icd10.csv"}
WEIGHTS: dict[str, dict[str, str]] = {
    "charlson": {"quan2011": "weight_quan2011", "charlson1987": "weight_charlson1987"},
    "elixhauser": {"van_walraven": "weight_van_walraven"},
}
HIERARCHIES: dict[str, tuple[tuple[str, str], ...]] = {
    "charlson": (("msld", "mld"), ("diabwc", "diab"), ("metacanc", "canc")),
    "elixhauser": (("hypc", "hypunc"), ("diabc", "diabunc"), ("metacanc", "solidtum")),
}
"""(severe, mild) pairs: when the severe form is present the mild one is set to 0."""

PRESENT_ON_ADMISSION = ("Y", "W", "1")
"""POA flags that count as present on admission: Y yes, W clinically undetermined, 1 exempt from reporting."""


@cache
def comorbidity_map(scheme: str) -> pd.DataFrame:
    """The category table of a scheme: ``key``, ``category``, ``prefixes`` (``|``-separated), weights.

    Examples
    --------
    >>> len(comorbidity_map("charlson")), len(comorbidity_map("elixhauser"))
    (17, 31)
    """
    if scheme not in SCHEMES:
        raise ParameterError(f"unknown comorbidity scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    path = resources.files("carequal") / "data" / "comorbidity" / SCHEMES[scheme]
    with path.open(encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype={"key": str, "category": str, "prefixes": str})


def code_flags(codes: pd.Series, *, scheme: str = "charlson") -> pd.DataFrame:
    """Which categories each ICD-10 code falls in (no hierarchy): one boolean column per category.

    Codes may have dots and any case. A code falls in a category when it starts with one of its prefixes.

    Examples
    --------
    >>> code_flags(pd.Series(["I50.9", "k70.0", "E11.9"]), scheme="elixhauser")[["chf", "ld", "alcohol", "diabunc"]]
         chf     ld  alcohol  diabunc
    0   True  False    False    False
    1  False   True     True    False
    2  False  False    False     True
    """
    table = comorbidity_map(scheme)
    clean = codes.astype("string").str.upper().str.replace(r"[.\s]", "", regex=True).fillna("")
    uniques = pd.Series(clean.unique())
    out = {}
    for row in table.itertuples(index=False):
        prefixes = row.prefixes.split("|")
        hit = np.zeros(len(uniques), dtype=bool)
        for length in sorted({len(p) for p in prefixes}):
            wanted = {p for p in prefixes if len(p) == length}
            hit |= uniques.str.slice(0, length).isin(wanted).to_numpy(dtype=bool)
        out[row.key] = hit
    by_code = pd.DataFrame(out, index=uniques.to_numpy())
    return by_code.reindex(clean.to_numpy()).reset_index(drop=True).set_axis(codes.index)


def apply_hierarchy(flags: pd.DataFrame, *, scheme: str) -> pd.DataFrame:
    """Set the milder form to False where the severe form is present (a new frame).

    Examples
    --------
    >>> f = pd.DataFrame({"msld": [True, False], "mld": [True, True], "diabwc": [False, False],
    ...                   "diab": [True, False], "metacanc": [False, False], "canc": [False, True]})
    >>> apply_hierarchy(f, scheme="charlson")["mld"].tolist()
    [False, True]
    """
    out = flags.copy()
    for severe, mild in HIERARCHIES[scheme]:
        out[mild] = out[mild] & ~out[severe]
    return out


def comorbidities(stays: pd.DataFrame, *, scheme: str = "charlson", weights: str | None = None,
                  include_principal: bool = False, poa_only: bool = False, index: pd.DataFrame | None = None,
                  lookback_days: int | None = None) -> pd.DataFrame:
    """Comorbidity flags and weighted score per stay.

    Parameters
    ----------
    stays : DataFrame
        Contract stays (``stay_id``, ``principal_dx``, ``secondary_dx``, optional ``secondary_poa``,
        ``patient_id``, ``admit_date``, ``discharge_date``).
    scheme : {"charlson", "elixhauser"}
    weights : str, optional
        Charlson: ``"quan2011"`` (default) or ``"charlson1987"``; Elixhauser: ``"van_walraven"`` (default).
    include_principal : bool
        Count the principal diagnosis of the stay itself (default False: the principal diagnosis is the
        reason for admission, not a comorbidity; it is risk-adjusted through the condition).
    poa_only : bool
        Count only the stay's secondary diagnoses flagged present on admission (Y, W or 1); diagnoses with no
        flag count (the data cannot tell), diagnoses flagged N or U do not — complications arising in
        hospital are not risk-adjusted (CMS).
    index : DataFrame, optional
        The stays to score (by ``stay_id``); default every stay in ``stays``.
    lookback_days : int, optional
        Also count every diagnosis (any position, any POA flag) of the patient's other stays in any setting
        discharged in the ``lookback_days`` days before the scored stay's admission (CMS uses 12 months of
        history).

    Returns
    -------
    DataFrame
        ``stay_id``, one boolean column per category (after the hierarchy), ``score``.

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["a"], "principal_dx": ["I50.9"], "secondary_dx": ["E11.22;N18.4;K70.30"],
    ...                    "secondary_poa": ["Y;Y;N"]})
    >>> c = comorbidities(st)  # diabetes with complications 1, renal 1, mild liver 2 (Quan 2011)
    >>> c[["diabwc", "rend", "mld", "chf", "score"]]
       diabwc  rend   mld    chf  score
    0    True  True  True  False      4
    >>> int(comorbidities(st, poa_only=True)["score"].iloc[0])  # K70.30 not present on admission
    2
    """
    table = comorbidity_map(scheme)
    weight_col = _weight_column(scheme, weights)
    targets = stays if index is None else stays[stays["stay_id"].isin(index["stay_id"])]
    dx = diagnoses_long(targets)
    if not include_principal:
        dx = dx[dx["position"] > 0]
    if poa_only:
        poa = dx["poa"]
        dx = dx[poa.isna() | poa.isin(PRESENT_ON_ADMISSION) | (dx["position"] == 0)]
    pairs = dx[["stay_id", "code"]]
    if lookback_days is not None:
        pairs = pd.concat([pairs, _history(stays, targets, lookback_days)], ignore_index=True)
    flags = code_flags(pairs["code"], scheme=scheme)
    per_stay = flags.groupby(pairs["stay_id"].to_numpy()).any()
    per_stay = per_stay.reindex(targets["stay_id"].to_numpy(), fill_value=False)
    per_stay = apply_hierarchy(per_stay, scheme=scheme)
    score = per_stay[table["key"].tolist()].to_numpy(dtype=int) @ table[weight_col].to_numpy(dtype=int)
    out = per_stay.reset_index(drop=True)
    out.insert(0, "stay_id", targets["stay_id"].to_numpy())
    out["score"] = score
    return out


def _weight_column(scheme: str, weights: str | None) -> str:
    options = WEIGHTS.get(scheme)
    if options is None:
        raise ParameterError(f"unknown comorbidity scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    name = weights or next(iter(options))
    if name not in options:
        raise ParameterError(f"unknown weights {name!r} for {scheme}; choose from {', '.join(options)}")
    return options[name]


def _history(stays: pd.DataFrame, targets: pd.DataFrame, lookback_days: int) -> pd.DataFrame:
    """(stay_id of the scored stay, code) for every diagnosis of the patient's earlier stays in the window."""
    prior = diagnoses_long(stays)[["stay_id", "code"]].rename(columns={"stay_id": "prior_id"})
    meta = stays[["stay_id", "patient_id", "discharge_date"]].rename(
        columns={"stay_id": "prior_id", "discharge_date": "prior_discharge"})
    prior = prior.merge(meta, on="prior_id")
    scored = targets[["stay_id", "patient_id", "admit_date"]]
    pairs = scored.merge(prior, on="patient_id")
    gap = (pairs["admit_date"] - pairs["prior_discharge"]).dt.days
    keep = (pairs["prior_id"] != pairs["stay_id"]) & (gap >= 0) & (gap <= lookback_days)
    return pairs.loc[keep, ["stay_id", "code"]]
