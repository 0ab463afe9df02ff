"""Cohorts: CMS-style index stays with an auditable exclusion pipeline, condition cohorts, post-acute episodes.

Every acute stay leaves :func:`index_stays` either as an index stay or with exactly one
``exclusion_reason`` (the first rule, in pipeline order, that it fails), and the cohort carries an attrition
table (step, excluded, remaining). The rules follow the CMS condition-specific and hospital-wide readmission
measures (methodology digest §1.2); each is switchable through :class:`IndexRules`. The defaults are CMS's
for Medicare fee-for-service (:data:`MEDICARE_FFS_RULES`: age 65+, continuous FFS coverage, so Medicare Advantage
months break it); :data:`ALL_PAYER_RULES` serves populations outside Medicare FFS, such as an employer's employees.

Day arithmetic is on calendar days (``date - date``); stays of one patient in one setting never overlap
(the data contract guarantees it), which the vectorised steps rely on.

Why hand-written: the CMS rules are sequential per patient (transfer chains, the 30-day washout after an
index stay of the same condition); no library implements them, and a per-patient Python loop is far too
slow at national scale, so they are written as sorted-array operations (numpy) with a few vectorised
"rounds" where the rule is inherently sequential.

Sorting: :func:`time_order` packs its integer keys into one int64 and sorts once (``_key_order``) where
``np.lexsort`` would sort once per key and gain nothing from input already in order (seconds at millions of
stays); keys too wide to pack still go to ``np.lexsort``.

Size: about 900 lines, one module because the index-stay pipeline and the cohorts built on it (conditions,
post-acute episodes, person-time, chronic conditions) share the sorted-array helpers (:func:`day_numbers`,
:func:`time_order`) and the exclusion steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from carequal.errors import ParameterError
from carequal.schema import CODE_SEPARATOR, POST_ACUTE_SETTINGS, arrow_text, key_positions, take, take_text

__all__ = ["ALL_PAYER_RULES", "AMA_STATUS", "COMMUNITY_STATUSES", "CONDITIONS", "CONDITION_CODES_VERSION", "Cohort",
           "DIED_STATUSES", "EXCLUSION_STEPS", "IndexRules", "MEDICARE_FFS_RULES", "TRANSFER_STATUSES", "acute_stays",
           "age_band", "age_in_years", "assign_conditions", "attrition_by", "attrition_of",
           "chronic_condition_codes", "chronic_conditions",
           "condition_codes", "day_numbers", "filter_cohort", "index_stays", "link_transfers", "person_time",
           "post_acute_episodes", "recorded_reasons", "restrict_cohort", "rules_table", "standard_population",
           "time_order"]

CONDITION_CODES_VERSION = "2026.1"
CONDITIONS: tuple[str, ...] = ("heart_failure", "ami", "pneumonia", "copd", "sepsis", "stroke",
                               "hip_knee_replacement")
"""Condition cohorts, in the priority used when one stay matches several (first wins for ``condition``)."""

DIED_STATUSES = frozenset({"20", "40", "41", "42"})
AMA_STATUS = "07"
TRANSFER_STATUSES = frozenset({"02", "82"})
COMMUNITY_STATUSES = frozenset({"01", "06", "81", "86"})
"""Discharge to community for DTC-PAC: home or home health, with or without a planned readmission."""


def day_numbers(values: pd.Series | np.ndarray) -> np.ndarray:
    """Dates as integer days since 1970-01-01 (NaT becomes the int64 minimum): the key the cohort and measure
    code compares and sorts on, without pandas' date arithmetic.

    Examples
    --------
    >>> day_numbers(pd.to_datetime(["1970-01-02", "2024-01-01"])).tolist()
    [1, 19723]
    """
    arr = np.asarray(values, dtype="datetime64[D]")
    return arr.astype(np.int64)


_NAT_DAYS = np.iinfo(np.int64).min


# --------------------------------------------------------------------------------------- condition cohorts


@cache
def condition_codes() -> pd.DataFrame:
    """The shipped condition code sets (see ``carequal/data/conditions/README.md`` for sources).

    Examples
    --------
    >>> codes = condition_codes()
    >>> sorted(codes["condition"].unique()) == sorted(CONDITIONS)
    True
    """
    path = resources.files("carequal") / "data" / "conditions" / "condition_codes.csv"
    with path.open(encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


def _code_text(codes: pd.Series) -> pd.Series:
    """Codes or code lists as Arrow text, missing as empty (converted once per column, not once per code)."""
    return codes.astype("string[pyarrow]").fillna("")


def _list_has_prefix(lists: pd.Series, prefixes: list[str]) -> np.ndarray:
    pattern = rf"(?:^|{CODE_SEPARATOR})(?:{'|'.join(prefixes)})"
    text = _code_text(lists)
    return text.str.contains(pattern, regex=True).to_numpy(dtype=bool, na_value=False)


def _narrowed(match: np.ndarray, test: Callable[[np.ndarray | None], np.ndarray]) -> np.ndarray:
    """``match & test(rows)``, the test run only on the rows still matching (``test(None)``: on every row): a
    code list's regular expression costs far more than a principal diagnosis' prefix, which few stays pass."""
    if match.all():
        return test(None)
    rows = np.flatnonzero(match)
    out = np.zeros(len(match), dtype=bool)
    out[rows] = test(rows)
    return out


def assign_conditions(stays: pd.DataFrame, *, conditions: tuple[str, ...] = CONDITIONS) -> pd.DataFrame:
    """Flag each stay's condition cohorts from its principal diagnosis, secondary diagnoses and procedures.

    Parameters
    ----------
    stays : DataFrame
        Contract stays (``stay_id``, ``principal_dx``, ``secondary_dx``, optional ``procedures``).
    conditions : tuple of str
        Conditions to flag, in priority order.

    Returns
    -------
    DataFrame
        ``stay_id``, one boolean column per condition, and ``condition``: the first matching condition in
        priority order, or ``"other"``.

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["a", "b", "c", "d"],
    ...     "principal_dx": ["I509", "J9601", "A419", "M1611"],
    ...     "secondary_dx": ["E119", "J441", "J189", np.nan], "procedures": [np.nan, np.nan, np.nan, "0SR9019"]})
    >>> assign_conditions(st)[["stay_id", "condition", "pneumonia", "sepsis"]]
      stay_id             condition  pneumonia  sepsis
    0       a         heart_failure      False   False
    1       b                  copd      False   False
    2       c             pneumonia       True    True
    3       d  hip_knee_replacement      False   False
    """
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ParameterError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITIONS)}")
    codes = condition_codes()
    out = pd.DataFrame({"stay_id": stays["stay_id"].to_numpy()})
    procedures = stays["procedures"] if "procedures" in stays.columns else pd.Series(np.nan, index=stays.index)
    principal = _code_text(stays["principal_dx"]).reset_index(drop=True)
    secondary = _code_text(stays["secondary_dx"]).reset_index(drop=True)
    procedures = _code_text(procedures).reset_index(drop=True)

    def has_prefix(lists: pd.Series, prefixes: list[str]) -> Callable[[np.ndarray | None], np.ndarray]:
        return lambda rows: _list_has_prefix(lists if rows is None else lists.take(rows), prefixes)

    # each prefix tested on the distinct principal diagnoses (thousands), not on every stay (millions)
    encoded = pc.dictionary_encode(arrow_text(principal))
    principal_codes = encoded.indices.to_numpy(zero_copy_only=False)

    def principal_starts(prefix: str) -> np.ndarray:
        return pc.starts_with(encoded.dictionary, prefix).to_numpy(zero_copy_only=False)[principal_codes]

    # the first matching condition's number (len(conditions): none), named once at the end: comparing an array
    # of Python strings per condition costs more than the conditions' own tests at millions of stays
    first = np.full(len(stays), len(conditions), dtype=np.int8 if len(conditions) < 127 else np.int64)
    for number, condition in enumerate(conditions):
        include = np.zeros(len(stays), dtype=bool)
        exclude = np.zeros(len(stays), dtype=bool)
        for row in codes[codes["condition"] == condition].itertuples(index=False):
            match = principal_starts(row.principal_dx) if row.principal_dx else np.ones(len(stays), dtype=bool)
            if row.secondary_dx:
                match = _narrowed(match, has_prefix(secondary, row.secondary_dx.split("|")))
            if row.procedure:
                match = _narrowed(match, has_prefix(procedures, [row.procedure]))
            if row.action == "include":
                include |= match
            else:
                exclude |= match
        flag = include & ~exclude
        out[condition] = flag
        first[(first == len(conditions)) & flag] = number
    out["condition"] = np.array([*conditions, "other"], dtype=object)[first]
    return out


# ------------------------------------------------------------------------------------------- index stays


@dataclass(frozen=True)
class IndexRules:
    """The switchable rules of :func:`index_stays`.

    The defaults follow the CMS readmission measures for Medicare fee-for-service beneficiaries
    (:data:`MEDICARE_FFS_RULES`); :data:`ALL_PAYER_RULES` keeps the other rules for populations outside
    Medicare FFS (an employer's employees on commercial plans, Medicaid, all-payer EHR data).

    Attributes
    ----------
    min_age : int or None
        Minimum age in whole years at the episode's admission (CMS: 65). None switches the rule off.
    require_enrollment : bool
        When enrollment is given: continuous coverage from ``enrollment_lookback_days`` before admission to
        ``followup_days`` after discharge (or to death, if earlier). Periods that overlap or touch (one
        ends the day before the next starts) are merged; a single uncovered day breaks continuity.
    coverage : tuple of str or None
        Coverage types whose periods count towards the look-back and the follow-up. Default ``("ffs",)``:
        Medicare fee-for-service Parts A and B, as CMS requires (methodology digest §1.2, rules 3 and 4), so a
        window covered in part by Medicare Advantage (``ma``) or any other type is not continuous and the stay
        is excluded as ``coverage_not_counted``. None counts every type (and periods with an empty
        ``coverage``). An enrollment table without a ``coverage`` column is taken as all of the counted type.
    exclude_died : bool
        Exclude stays that end in death (status 20/40/41/42, or a death date on or before discharge).
    exclude_ama : bool
        Exclude discharges against medical advice (status 07).
    chain_transfers : bool
        Link acute-to-acute transfers (an admission to a *different* acute hospital on the day of discharge
        or within ``transfer_gap_days``) into one episode; only its final stay can be the index. A stay with
        transfer status (02/82) and no linked receiving stay is excluded (the receiving stay is not in the
        data).
    merge_same_day : bool
        A same-day readmission to the same hospital for the same condition (same principal diagnosis, or the
        same cohort condition) is merged: the first stay is not an index, the second can be.
    runout_days : int or None
        Exclude discharges within this many days of the data's end (``data_end``, default the last discharge
        in the data), since their follow-up is incomplete.
    washout_days : int
        Condition cohorts only: an admission within this many days of a prior index stay's discharge is an
        outcome of that stay, not a new index.
    """

    min_age: int | None = 65
    require_enrollment: bool = True
    enrollment_lookback_days: int = 365
    followup_days: int = 30
    coverage: tuple[str, ...] | None = ("ffs",)
    exclude_died: bool = True
    exclude_ama: bool = True
    chain_transfers: bool = True
    transfer_gap_days: int = 1
    merge_same_day: bool = True
    runout_days: int | None = 30
    data_end: pd.Timestamp | None = None
    washout_days: int = 30


MEDICARE_FFS_RULES = IndexRules()
"""The CMS Medicare fee-for-service rules, the defaults of :class:`IndexRules`: age 65 or over at admission,
and continuous FFS (Parts A and B) coverage from 12 months before the admission to 30 days after discharge."""

ALL_PAYER_RULES = IndexRules(min_age=None, coverage=None)
"""The rules for populations outside Medicare FFS (employees on an employer's commercial plan, Medicaid,
all-payer data): every age, and every coverage type counts towards continuous enrollment (a patient moving
from a commercial plan to Medicare on the 65th birthday stays covered); the other rules as CMS's."""

EXCLUSION_STEPS: tuple[tuple[str, str], ...] = (
    ("transfer_to_acute", "transferred to another acute hospital (the episode's final stay is evaluated)"),
    ("transfer_out_unlinked", "transfer status with no receiving acute stay in the data"),
    ("merged_same_day", "same-day readmission to the same hospital for the same condition (merged)"),
    ("under_min_age", "younger than the minimum age at admission"),
    ("died_in_hospital", "died during the stay"),
    ("against_medical_advice", "left against medical advice"),
    ("not_enrolled", "not continuously enrolled before admission and after discharge"),
    ("coverage_not_counted", "enrolled, but part of the window under coverage not counted (e.g. Medicare Advantage)"),
    ("data_runout", "discharged too close to the end of the data for complete follow-up"),
    ("not_in_condition", "not in the condition cohort"),
    ("within_washout_of_index", "admitted within the washout after a prior index stay (an outcome, not an index)"),
)
"""Pipeline order of the exclusion reasons, with their meaning."""


@dataclass
class Cohort:
    """An index-stay cohort.

    Attributes
    ----------
    stays : DataFrame
        One row per acute stay given: ``stay_id``, ``episode_id``, ``exclusion_reason`` (missing for index
        stays), ``is_index``.
    index : DataFrame
        One row per index stay with episode and patient attributes (see :func:`index_stays`).
    attrition : DataFrame
        ``step``, ``description``, ``excluded``, ``remaining``; the first row is the number of acute stays.
    rules : IndexRules
    condition : str or None
    patient_rows : ndarray or None
        Each acute stay's (``stays``') patient as its row in the patients table given (−1 if absent), as
        :func:`index_stays` looked it up: callers joining the stays or the index stays (``patient_rows[is_index]``)
        to the patients reuse it instead of hashing millions of ids again.
    stay_rows : ndarray or None
        Each acute stay's row in the stays table given (``stay_rows[is_index]``: the index stays' rows), so that
        callers need not look the index stays up among the stays by id.
    """

    stays: pd.DataFrame
    index: pd.DataFrame
    attrition: pd.DataFrame
    rules: IndexRules = field(default_factory=IndexRules)
    condition: str | None = None
    patient_rows: np.ndarray | None = field(default=None, repr=False, compare=False)
    stay_rows: np.ndarray | None = field(default=None, repr=False, compare=False)


def acute_stays(stays: pd.DataFrame, facilities: pd.DataFrame) -> pd.DataFrame:
    """Stays at acute hospitals, sorted by patient, admission, discharge and stay_id, with the facility's
    ``setting``, ``market`` and ``is_partner``.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H", "S"], "setting": ["acute", "snf"], "market": "M",
    ...                     "is_partner": False})
    >>> st = pd.DataFrame({"stay_id": ["2", "1", "3"], "patient_id": "p", "facility_id": ["H", "H", "S"],
    ...     "admit_date": pd.to_datetime(["2024-02-01", "2024-01-01", "2024-01-05"]),
    ...     "discharge_date": pd.to_datetime(["2024-02-03", "2024-01-05", "2024-01-20"])})
    >>> acute_stays(st, fac)["stay_id"].tolist()
    ['1', '2']
    """
    return _acute_stays(stays, facilities)[0]


def _acute_stays(stays: pd.DataFrame, facilities: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`acute_stays`, and each acute stay's row in ``stays``."""
    fpos = key_positions(stays["facility_id"], facilities["facility_id"])
    rows = np.flatnonzero(take(facilities["setting"], fpos, None) == "acute")
    # ordered on the sort keys alone, then every column gathered once (not filtered, then reordered: two copies)
    rows = rows[time_order(stays[["stay_id", "patient_id", "admit_date", "discharge_date"]].iloc[rows])]
    out = stays.iloc[rows].reset_index(drop=True)
    fpos = fpos[rows]
    return out.assign(setting="acute", facility_market=take(facilities["market"], fpos, None),
                      facility_is_partner=take(facilities["is_partner"], fpos, False)), rows


def time_order(stays: pd.DataFrame, *, patient: np.ndarray | None = None, admit: np.ndarray | None = None,
               discharge: np.ndarray | None = None,
               stay_ids: Callable[[np.ndarray], pd.Series] | None = None) -> np.ndarray:
    """Row order by patient, admission, discharge and stay_id, computed on integer keys.

    Patients are ordered by their sorted id unless integer ``patient`` codes are given (then only the
    grouping matters); ties of (patient, admission, discharge) (same-day stays) are broken by ``stay_id``,
    ranked only among the tied rows, so the order within a patient never depends on the input order.
    ``admit`` and ``discharge`` may be given as :func:`day_numbers` already computed. With all three keys given,
    ``stay_ids(rows)`` may give the ids of those rows (positions in the keys) in place of ``stays["stay_id"]``:
    it is asked for the tied rows only, so a caller ordering a subset of a large table need not gather a whole
    id column.

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["b", "a", "c"], "patient_id": ["p", "p", "q"],
    ...                    "admit_date": pd.to_datetime(["2024-01-05", "2024-01-05", "2024-01-01"]),
    ...                    "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-05", "2024-01-02"])})
    >>> time_order(st).tolist()  # same-day stays of p by stay_id: a (row 1) before b (row 0)
    [1, 0, 2]
    """
    if patient is None:
        patient = pd.factorize(stays["patient_id"], sort=True)[0]
    admit = day_numbers(stays["admit_date"]) if admit is None else admit
    discharge = day_numbers(stays["discharge_date"]) if discharge is None else discharge
    if stay_ids is None:
        def stay_ids(rows: np.ndarray) -> pd.Series:
            return stays["stay_id"].iloc[rows]
    return _time_order(patient, admit, discharge, stay_ids)


def _time_order(patient: np.ndarray, admit: np.ndarray, discharge: np.ndarray,
                stay_ids: Callable[[np.ndarray], pd.Series]) -> np.ndarray:
    """:func:`time_order` on its integer keys; ``stay_ids(rows)`` gives the ids of those rows, asked for the
    tied rows only (so a caller need not gather a whole id column to order stays that have no ties)."""
    packed = _pack(patient, admit, discharge)
    if packed is None:
        order = np.lexsort((discharge, admit, patient))
        p, a, d = patient[order], admit[order], discharge[order]
        same = (p[1:] == p[:-1]) & (a[1:] == a[:-1]) & (d[1:] == d[:-1])
    else:
        order = _packed_order(packed)
        in_order = packed[order]
        same = in_order[1:] == in_order[:-1]
    if not same.any():
        return order
    tie = np.zeros(len(order), dtype=bool)
    tie[1:] |= same
    tie[:-1] |= same
    tie_break = np.zeros(len(order), dtype=np.int64)
    tied_rows = order[tie]
    ids = stay_ids(tied_rows).to_numpy().astype(str)
    tie_break[tied_rows] = np.argsort(np.argsort(ids, kind="stable"), kind="stable")
    return _key_order(patient, admit, discharge, tie_break)


def _pack(*keys: np.ndarray) -> np.ndarray | None:
    """Integer keys (most significant first) packed into one int64 that sorts as they do together, or None
    when the product of their spans (max - min + 1) does not fit in 62 bits (a NaT day number is the int64
    minimum)."""
    n = len(keys[0])
    packed = np.zeros(n, dtype=np.int64)
    if n == 0:
        return packed
    scale = 1
    part = np.empty(n, dtype=np.int64)
    for key in reversed(keys):
        low, high = int(key.min()), int(key.max())
        span = high - low + 1
        if scale * span >= 2**62:
            return None
        part[:] = key
        part -= low
        if scale != 1:
            part *= scale
        packed += part
        scale *= span
    return packed


def _packed_order(packed: np.ndarray) -> np.ndarray:
    """Stable order of packed keys: none needed when already in order, else an unstable argsort, kept when
    no two keys are equal (then every order is the stable one), or a stable one when some are."""
    n = len(packed)
    if n < 2 or bool(np.all(packed[1:] >= packed[:-1])):
        return np.arange(n)
    order = np.argsort(packed)
    in_order = packed[order]
    if (in_order[1:] == in_order[:-1]).any():
        order = np.argsort(packed, kind="stable")
    return order


def _key_order(*keys: np.ndarray) -> np.ndarray:
    """Stable row order by integer keys, most significant first: ``np.lexsort(keys[::-1])``, computed faster.

    When the keys pack into one int64 (:func:`_pack`), as patient codes and day numbers do, they are sorted
    once (:func:`_packed_order`); input already in key order (as extracts sorted by patient often are) is
    recognised in one pass. ``np.lexsort`` sorts once per key and gains nothing from sorted input: at 3.4
    million rows and three keys it took 2.3 s on sorted and 3.6 s on shuffled rows where this takes 4 ms and
    0.7 s. Keys that do not pack go to ``np.lexsort``.

    Examples
    --------
    >>> _key_order(np.array([1, 0, 1, 0]), np.array([5, 7, 5, 2])).tolist()  # ties keep input order
    [3, 1, 0, 2]
    >>> _key_order(np.array([0, 0, 1]), np.array([4, 4, 2])).tolist()  # already in order
    [0, 1, 2]
    >>> _key_order(np.array([0, 0]), np.array([5, np.iinfo(np.int64).min])).tolist()  # NaT: np.lexsort
    [1, 0]
    """
    packed = _pack(*keys)
    return np.lexsort(keys[::-1]) if packed is None else _packed_order(packed)


def link_transfers(acute: pd.DataFrame, *, gap_days: int = 1) -> pd.DataFrame:
    """Link acute-to-acute transfers into episodes.

    A stay is linked to the patient's next acute stay when that stay is at a different hospital and starts
    on the discharge day or within ``gap_days`` after it. ``acute`` must be sorted as :func:`acute_stays`
    returns it.

    Returns
    -------
    DataFrame
        ``acute`` with ``episode_id`` (the stay_id of the episode's first stay), ``episode_admit_date``,
        ``first_facility_id``, ``transfers_in_episode`` (number of transfers), ``is_final`` (the stay that
        ends the episode) and ``transferred_out`` (linked to a next stay).

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["a", "b", "c"], "patient_id": "p", "facility_id": ["H1", "H2", "H2"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-04", "2024-02-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-03", "2024-01-08", "2024-02-02"])})
    >>> link_transfers(st)[["stay_id", "episode_id", "is_final", "transfers_in_episode"]]
      stay_id episode_id  is_final  transfers_in_episode
    0       a          a     False                     1
    1       b          a      True                     1
    2       c          c      True                     0
    """
    n = len(acute)
    patient = acute["patient_id"].to_numpy()
    admit = day_numbers(acute["admit_date"])
    discharge = day_numbers(acute["discharge_date"])
    facility = acute["facility_id"].to_numpy()
    linked = np.zeros(n, dtype=bool)
    if n > 1:
        gap = admit[1:] - discharge[:-1]
        linked[:-1] = (patient[1:] == patient[:-1]) & (facility[1:] != facility[:-1]) & (gap >= 0) & (
            gap <= gap_days)
    starts = np.ones(n, dtype=bool)
    starts[1:] = ~linked[:-1]
    episode_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    out = acute.copy(deep=False)  # copy-on-write: only the added columns are new
    out["episode_id"] = take_text(acute["stay_id"], episode_pos)
    out["episode_admit_date"] = acute["admit_date"].to_numpy()[episode_pos]
    out["first_facility_id"] = facility[episode_pos]
    sizes = np.bincount(episode_pos, minlength=n)
    out["transfers_in_episode"] = sizes[episode_pos] - 1
    out["is_final"] = ~linked
    out["transferred_out"] = linked
    return out


def age_in_years(birth: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Whole years of age on a date (birthdays counted on the day; 29 February on 1 March in other years).

    Examples
    --------
    >>> age_in_years(np.array(["1950-07-01", "1952-02-29"], dtype="datetime64[D]"),
    ...              np.array(["2024-06-30", "2024-02-28"], dtype="datetime64[D]")).tolist()
    [73, 71]
    """
    b = pd.DatetimeIndex(birth)
    d = pd.DatetimeIndex(on)
    years = d.year - b.year
    before_birthday = (d.month < b.month) | ((d.month == b.month) & (d.day < b.day))
    return np.asarray(years - before_birthday.astype(int))


def _merged_coverage(enrollment: pd.DataFrame, coverage: tuple[str, ...] | None,
                     patient: np.ndarray) -> pd.DataFrame:
    """Union of each patient's coverage periods (overlapping or touching periods are merged).

    ``patient`` is the position of each enrollment row's patient among the patient ids
    (``key_positions(enrollment["patient_id"], patients["patient_id"])``, looked up once by the caller for
    every coverage type asked for); the result's ``patient`` is that position (integer keys: sorting and
    searching millions of periods by text ids is slow).
    """
    enr = enrollment
    if coverage is not None and "coverage" in enr.columns:
        counted = enr["coverage"].isin(coverage).to_numpy(dtype=bool)
        enr, patient = enr[counted], patient[counted]
    start = day_numbers(enr["start_date"])
    end = day_numbers(enr["end_date"])
    order = _key_order(patient, start, end)  # np.lexsort((end, start, patient)), faster
    patient, start, end = patient[order], start[order], end[order]
    n = len(enr)
    if n == 0:
        return pd.DataFrame({"patient": np.array([], dtype=np.int64), "start": np.array([], dtype=np.int64),
                             "end": np.array([], dtype=np.int64)})
    new_patient = np.ones(n, dtype=bool)
    new_patient[1:] = patient[1:] != patient[:-1]
    # running max of end within patient: reset at each new patient by offsetting with a large group constant
    group = np.cumsum(new_patient)
    offset = group.astype(np.int64) * (1 << 32)
    run_end = np.maximum.accumulate(end + offset) - offset
    new_block = new_patient.copy()
    new_block[1:] |= start[1:] > run_end[:-1] + 1
    return pd.DataFrame({"patient": patient[new_block], "start": start[new_block],
                         "end": np.maximum.reduceat(end, np.flatnonzero(new_block))})


def _enrolled(patient: np.ndarray, window_start: np.ndarray, window_end: np.ndarray,
              merged: pd.DataFrame) -> np.ndarray:
    """Whether [window_start, window_end] lies inside one merged coverage period of the patient
    (``patient`` as positions among the same ids as ``merged["patient"]``)."""
    if len(merged) == 0:
        return np.zeros(len(patient), dtype=bool)
    shift = np.int64(1 << 32)
    base = 1 << 31
    m_code = merged["patient"].to_numpy().astype(np.int64)
    m_key = m_code * shift + (merged["start"].to_numpy().astype(np.int64) + base)
    order = np.argsort(m_key, kind="stable")
    m_key, m_code = m_key[order], m_code[order]
    m_end = merged["end"].to_numpy().astype(np.int64)[order]
    s_code = patient.astype(np.int64)
    s_key = s_code * shift + (window_start.astype(np.int64) + base)
    pos = np.searchsorted(m_key, s_key, side="right") - 1
    ok = pos >= 0
    pos_c = np.clip(pos, 0, None)
    ok &= m_code[pos_c] == s_code
    ok &= m_end[pos_c] >= window_end
    return ok


def _washout(patient: np.ndarray, admit: np.ndarray, discharge: np.ndarray, eligible: np.ndarray,
             days: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequential washout in vectorised rounds: returns (is_index, washed_out) over the eligible stays.

    Stays are sorted by patient and admission. Each round makes every patient's first undecided stay an
    index stay and marks the patient's undecided stays admitted within ``days`` of its discharge as washed
    out; rounds repeat until no stay is undecided (as many rounds as the most index stays of one patient).
    """
    n = len(patient)
    is_index = np.zeros(n, dtype=bool)
    washed = np.zeros(n, dtype=bool)
    undecided = eligible.copy()
    codes = pd.factorize(patient)[0] if patient.dtype.kind not in "iu" else patient
    while undecided.any():
        pos = np.flatnonzero(undecided)
        first_of_patient = np.ones(len(pos), dtype=bool)
        first_of_patient[1:] = codes[pos[1:]] != codes[pos[:-1]]
        firsts = pos[first_of_patient]
        is_index[firsts] = True
        undecided[firsts] = False
        last_discharge = np.full(codes.max() + 1, _NAT_DAYS, dtype=np.int64)
        last_discharge[codes[firsts]] = discharge[firsts]
        rest = np.flatnonzero(undecided)
        ref = last_discharge[codes[rest]]
        hit = (ref != _NAT_DAYS) & (admit[rest] - ref <= days)
        washed[rest[hit]] = True
        undecided[rest[hit]] = False
    return is_index, washed


def index_stays(stays: pd.DataFrame, facilities: pd.DataFrame, patients: pd.DataFrame,
                enrollment: pd.DataFrame | None = None, *, condition: str | None = None,
                rules: IndexRules | None = None, record: IndexRules | None = None,
                known_patients: dict[str, np.ndarray] | None = None) -> Cohort:
    """Build an index-stay cohort from acute stays with the CMS exclusion pipeline.

    Parameters
    ----------
    stays, facilities, patients : DataFrame
        Validated contract tables (all settings; only acute stays are candidates).
    enrollment : DataFrame, optional
        Coverage periods; when given and ``rules.require_enrollment``, the enrollment rule applies.
    condition : str, optional
        A condition cohort (one of :data:`CONDITIONS`); None for all conditions (hospital-wide).
        An episode is in the condition cohort if its first stay or its final (discharging) stay is.
    rules : IndexRules, optional
    record : IndexRules, optional
        Narrower rules whose cohort is to be derived from this one without a second run
        (:func:`restrict_cohort`): they may differ from ``rules`` only in ``min_age`` and ``coverage``, and must
        be narrower (a minimum age where ``rules`` has a lower one or none; counted coverage types within those
        of ``rules``). Their two checks are recorded for every acute stay in ``stays`` (``record_under_min_age``,
        ``record_coverage_not_counted``), and ``index`` gets ``in_record`` (the index stay is one under
        ``record`` too). Hospital-wide cohorts only (``condition`` None: the washout of a condition cohort
        depends on which stays are index stays, so it cannot be derived by filtering).
    known_patients : dict of ndarray, optional
        Each row's patient as a row of ``patients``, for ``stays`` and ``enrollment`` (validated tables:
        :attr:`carequal.schema.ValidatedTables.patient_rows`, every patient known); looked up by ``patient_id``
        otherwise.

    Returns
    -------
    Cohort
        ``index`` has one row per index stay: ``stay_id``, ``patient_id``, ``facility_id`` (discharging
        hospital), ``first_facility_id``, ``episode_id``, ``episode_admit_date``, ``admit_date``,
        ``discharge_date``, ``discharge_status``, ``admission_type``, ``principal_dx``, ``condition``,
        ``transfers_in_episode``, ``age``, ``sex``, ``dual_eligible``, ``patient_market``, ``market``
        (the hospital's), ``is_partner`` (the hospital's).

    Notes
    -----
    Rules apply in the order of :data:`EXCLUSION_STEPS`; a stay gets the first reason it meets. The
    attrition table counts them in that order, so ``remaining`` after the last step is the number of index
    stays and every acute stay is accounted for.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1", "H2"], "setting": "acute", "market": "M",
    ...                     "is_partner": [True, False]})
    >>> pat = pd.DataFrame({"patient_id": ["p"], "birth_date": pd.to_datetime(["1940-01-01"]), "sex": "F",
    ...                     "dual_eligible": False, "death_date": pd.NaT, "market": "M"})
    >>> st = pd.DataFrame({"stay_id": ["a", "b", "c"], "patient_id": "p", "facility_id": ["H1", "H2", "H1"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-04", "2024-06-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-03", "2024-01-08", "2024-06-02"]),
    ...     "discharge_status": ["02", "01", "07"], "principal_dx": ["I509", "I509", "J189"],
    ...     "secondary_dx": np.nan, "admission_type": "1"})
    >>> cohort = index_stays(st, fac, pat, rules=IndexRules(runout_days=None))
    >>> cohort.stays[["stay_id", "exclusion_reason"]]
      stay_id        exclusion_reason
    0       a       transfer_to_acute
    1       b                     NaN
    2       c  against_medical_advice
    >>> cohort.index[["stay_id", "first_facility_id", "facility_id", "age"]]
      stay_id first_facility_id facility_id  age
    0       b                H1          H2   84
    """
    rules = rules or IndexRules()
    if condition is not None and condition not in CONDITIONS:
        raise ParameterError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    if record is not None:
        _check_record(rules, record, condition)
    acute, stay_rows = _acute_stays(stays, facilities)
    acute = link_transfers(acute, gap_days=rules.transfer_gap_days) if rules.chain_transfers else _unlinked(acute)
    n = len(acute)
    known_patients = known_patients or {}
    ppos = known_patients["stays"][stay_rows].astype(np.int64) if "stays" in known_patients else \
        key_positions(acute["patient_id"], patients["patient_id"])
    birth = take(patients["birth_date"], ppos, np.datetime64("NaT"))
    death = take(patients["death_date"], ppos, np.datetime64("NaT"))
    # the discharge statuses kept in Arrow (missing as empty): tested by Arrow's kernels, no Python string per stay
    status = pc.fill_null(arrow_text(acute["discharge_status"]), "") if "discharge_status" in acute.columns \
        else pa.array(np.full(n, "", dtype=object), pa.string())

    def status_in(values) -> np.ndarray:
        return pc.is_in(status, value_set=pa.array(sorted(values), pa.string())).to_numpy(zero_copy_only=False)

    conds = assign_conditions(acute)
    # the code lists are read by the conditions only: not held through the rest (the bulk of a stay's text)
    acute = acute.drop(columns=[c for c in ("secondary_dx", "procedures") if c in acute.columns])
    admit = day_numbers(acute["admit_date"])
    discharge = day_numbers(acute["discharge_date"])
    episode_admit = acute["episode_admit_date"].to_numpy()
    patient = ppos

    masks: dict[str, np.ndarray] = {}
    masks["transfer_to_acute"] = ~acute["is_final"].to_numpy()
    masks["transfer_out_unlinked"] = status_in(TRANSFER_STATUSES) & acute["is_final"].to_numpy() \
        if rules.chain_transfers else np.zeros(n, dtype=bool)
    # same-day readmission to the same hospital for the same condition: the first stay is merged away
    merged = np.zeros(n, dtype=bool)
    if rules.merge_same_day and n > 1:
        same_key = conds["condition"].to_numpy()
        same_cond = (same_key[1:] == same_key[:-1]) & (same_key[1:] != "other")
        pdx = acute["principal_dx"].to_numpy()
        same_cond |= pdx[1:] == pdx[:-1]
        fac = acute["facility_id"].to_numpy()
        merged[:-1] = (patient[1:] == patient[:-1]) & (fac[1:] == fac[:-1]) & (admit[1:] == discharge[:-1]) \
            & same_cond
    masks["merged_same_day"] = merged
    age = age_in_years(birth, episode_admit)
    masks["under_min_age"] = (age < rules.min_age) if rules.min_age is not None else np.zeros(n, dtype=bool)
    death_days = day_numbers(death)
    died_by_discharge = (death_days != _NAT_DAYS) & (death_days <= discharge)
    masks["died_in_hospital"] = (status_in(DIED_STATUSES) | died_by_discharge) \
        if rules.exclude_died else np.zeros(n, dtype=bool)
    masks["against_medical_advice"] = status_in({AMA_STATUS}) if rules.exclude_ama else np.zeros(n, dtype=bool)
    if enrollment is not None and rules.require_enrollment:
        window_start = day_numbers(episode_admit) - rules.enrollment_lookback_days
        window_end = discharge + rules.followup_days
        window_end = np.where(death_days != _NAT_DAYS, np.minimum(window_end, death_days), window_end)
        # two steps, so the attrition separates gaps in coverage from coverage of a type that does not count
        # each enrollment row's patient, looked up once for every coverage type asked for
        enrolled_patient = known_patients["enrollment"].astype(np.int64) if "enrollment" in known_patients else \
            key_positions(enrollment["patient_id"], patients["patient_id"])
        masks["not_enrolled"] = ~_enrolled(patient, window_start, window_end,
                                           _merged_coverage(enrollment, None, enrolled_patient))
        if rules.coverage is not None and "coverage" in enrollment.columns:
            counted = _merged_coverage(enrollment, rules.coverage, enrolled_patient)
            masks["coverage_not_counted"] = ~_enrolled(patient, window_start, window_end, counted)
        else:
            masks["coverage_not_counted"] = np.zeros(n, dtype=bool)
    else:
        masks["not_enrolled"] = np.zeros(n, dtype=bool)
        masks["coverage_not_counted"] = np.zeros(n, dtype=bool)
    if rules.runout_days is not None:
        end = rules.data_end if rules.data_end is not None else stays["discharge_date"].max()
        masks["data_runout"] = discharge > day_numbers(np.array([end]))[0] - rules.runout_days
    else:
        masks["data_runout"] = np.zeros(n, dtype=bool)
    if condition is not None:
        in_cond = conds[condition].to_numpy()
        starts = np.r_[True, ~acute["transferred_out"].to_numpy()[:-1]]
        first_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        masks["not_in_condition"] = ~(in_cond | in_cond[first_pos])
    else:
        masks["not_in_condition"] = np.zeros(n, dtype=bool)

    if record is not None:
        record_age = (age < record.min_age) if record.min_age is not None else np.zeros(n, dtype=bool)
        if enrollment is not None and record.require_enrollment and record.coverage is not None \
                and "coverage" in enrollment.columns:
            counted = _merged_coverage(enrollment, record.coverage, enrolled_patient)
            record_coverage = ~_enrolled(patient, window_start, window_end, counted)
        else:
            record_coverage = np.zeros(n, dtype=bool)

    reason = np.full(n, None, dtype=object)
    remaining = np.ones(n, dtype=bool)
    steps = [("acute_stays", "acute stays given", 0, n)]
    for step, description in EXCLUSION_STEPS:
        if step == "within_washout_of_index":
            if condition is not None and rules.washout_days is not None:
                _, washed = _washout(patient, admit, discharge, remaining, rules.washout_days)
                mask = washed
            else:
                mask = np.zeros(n, dtype=bool)
        else:
            mask = masks[step]
        hit = remaining & mask
        reason[hit] = step
        remaining &= ~hit
        steps.append((step, description, int(hit.sum()), int(remaining.sum())))
    attrition = pd.DataFrame(steps, columns=["step", "description", "excluded", "remaining"])

    stay_table = pd.DataFrame({
        "stay_id": acute["stay_id"].array, "patient_id": acute["patient_id"].array,
        "episode_id": acute["episode_id"].array,
        "exclusion_reason": pd.array(reason, dtype="str"), "is_index": remaining,
    })
    if record is not None:
        stay_table["record_under_min_age"] = record_age
        stay_table["record_coverage_not_counted"] = record_coverage
    needed = ["stay_id", "patient_id", "facility_id", "first_facility_id", "episode_id", "episode_admit_date",
              "admit_date", "discharge_date", "principal_dx", "transfers_in_episode", "facility_market",
              "facility_is_partner"] + (["admission_type"] if "admission_type" in acute.columns else [])
    keep = acute[needed].loc[remaining].reset_index(drop=True)
    condition_label = conds["condition"].to_numpy()[remaining]
    del acute, conds  # free the acute-stay copy before building the index table (peak memory)
    index = keep[["stay_id", "patient_id", "facility_id", "first_facility_id", "episode_id", "episode_admit_date",
                  "admit_date", "discharge_date"]].copy()
    index["discharge_status"] = pd.array(status.filter(pa.array(remaining)), dtype="str")
    index["admission_type"] = keep["admission_type"].array if "admission_type" in keep else np.nan
    index["principal_dx"] = keep["principal_dx"].array
    index["condition"] = (condition_label if condition is None
                          else np.full(int(remaining.sum()), condition, dtype=object))
    index["transfers_in_episode"] = keep["transfers_in_episode"].to_numpy()
    index["age"] = age[remaining]
    index["sex"] = _patient_column(patients["sex"], ppos[remaining])
    index["dual_eligible"] = take(patients["dual_eligible"], ppos[remaining], None)
    index["patient_market"] = _patient_column(patients["market"], ppos[remaining])
    index["market"] = keep["facility_market"].to_numpy()
    index["is_partner"] = keep["facility_is_partner"].to_numpy()
    if "population_group" in patients.columns:
        index["population_group"] = _patient_column(patients["population_group"], ppos[remaining])
    if record is not None:
        index["in_record"] = ~(record_age | record_coverage)[remaining]
    return Cohort(stays=stay_table, index=index, attrition=attrition, rules=rules, condition=condition,
                  patient_rows=ppos, stay_rows=stay_rows)


def _patient_column(values: pd.Series, rows: np.ndarray):
    """:func:`carequal.schema.take` (missing where −1) of a patients' column; Arrow text stays in Arrow
    (:func:`carequal.schema.take_text`): millions of Python strings of every patient would be made otherwise."""
    return take_text(values, rows) if isinstance(values.dtype, pd.StringDtype) else take(values, rows, None)


def _check_record(rules: IndexRules, record: IndexRules, condition: str | None) -> None:
    """Refuse recorded rules whose cohort cannot be derived from ``rules``' by filtering."""
    if condition is not None:
        raise ParameterError("record= applies to hospital-wide cohorts only (a condition cohort's washout depends on "
                             "which stays are index stays)")
    other = [f.name for f in fields(IndexRules) if f.name not in ("min_age", "coverage")
             and getattr(rules, f.name) != getattr(record, f.name)]
    if other:
        raise ParameterError(f"record= may differ from rules only in min_age and coverage, not in {', '.join(other)}")
    if record.min_age is None and rules.min_age is not None or (
            record.min_age is not None and rules.min_age is not None and record.min_age < rules.min_age):
        raise ParameterError("record= must be narrower than rules: its min_age cannot be lower")
    if record.coverage is None and rules.coverage is not None or (
            record.coverage is not None and rules.coverage is not None
            and not set(record.coverage) <= set(rules.coverage)):
        raise ParameterError("record= must be narrower than rules: its coverage types must be among rules'")


def attrition_of(reasons: pd.Series | np.ndarray) -> pd.DataFrame:
    """The attrition table (``step``, ``description``, ``excluded``, ``remaining``) of acute stays' exclusion
    reasons (missing for an index stay), in :data:`EXCLUSION_STEPS` order, as :func:`index_stays` makes it.

    Examples
    --------
    >>> attrition_of(pd.Series(["under_min_age", None, "data_runout", None])).iloc[[0, 4, 9]][
    ...     ["step", "excluded", "remaining"]]
                step  excluded  remaining
    0    acute_stays         0          4
    4  under_min_age         1          3
    9    data_runout         1          2
    """
    reasons = pd.Series(np.asarray(reasons, dtype=object))
    counts = reasons.value_counts()
    unknown = sorted(set(counts.index) - {s for s, _ in EXCLUSION_STEPS})
    if unknown:
        raise ParameterError(f"unknown exclusion reason(s) {', '.join(map(str, unknown))}")
    remaining = len(reasons)
    steps = [("acute_stays", "acute stays given", 0, remaining)]
    for step, description in EXCLUSION_STEPS:
        k = int(counts.get(step, 0))
        remaining -= k
        steps.append((step, description, k, remaining))
    return pd.DataFrame(steps, columns=["step", "description", "excluded", "remaining"])


def attrition_by(reasons: pd.Series | np.ndarray, groups: pd.Series | np.ndarray) -> pd.DataFrame:
    """The attrition table of :func:`attrition_of` for every group at once: ``group`` (in sorted order; stays
    whose group is missing are in no group), then ``step``, ``description``, ``excluded``, ``remaining``. The same
    rows as calling :func:`attrition_of` on each group's reasons, in one pass over the stays (one count per group
    and step) instead of one pass per group.

    Examples
    --------
    >>> table = attrition_by(pd.Series(["under_min_age", None, "data_runout", None]),
    ...                      pd.Series(["north", "south", "north", None]))
    >>> table.iloc[[0, 4, 9, 12, 16]][["group", "step", "excluded", "remaining"]]
        group           step  excluded  remaining
    0   north    acute_stays         0          2
    4   north  under_min_age         1          1
    9   north    data_runout         1          0
    12  south    acute_stays         0          1
    16  south  under_min_age         0          1
    """
    reasons = np.asarray(reasons, dtype=object)
    # a Series is factorised as it is (Arrow text by Arrow's kernels): Python strings are slow at millions of stays
    groups = groups if isinstance(groups, pd.Series) else pd.Series(np.asarray(groups, dtype=object))
    if len(reasons) != len(groups):
        raise ParameterError(f"attrition_by: {len(reasons)} reasons but {len(groups)} groups")
    steps = [s for s, _ in EXCLUSION_STEPS]
    present = pd.notna(reasons)
    step_code = pd.Index(steps, dtype=object).get_indexer(reasons).astype(np.int64)
    unknown = present & (step_code < 0)
    if unknown.any():
        raise ParameterError(f"unknown exclusion reason(s) {', '.join(map(str, sorted(set(reasons[unknown]))))}")
    group_code, names = pd.factorize(groups, sort=True)
    keep = group_code >= 0
    width = len(steps) + 1  # column 0: index stays (no reason)
    counts = np.bincount(group_code[keep].astype(np.int64) * width + step_code[keep] + 1,
                         minlength=len(names) * width).reshape(len(names), width)
    given = counts.sum(axis=1)
    excluded = np.concatenate([np.zeros((len(names), 1), np.int64), counts[:, 1:]], axis=1)
    remaining = given[:, None] - np.cumsum(excluded, axis=1)
    descriptions = ["acute stays given", *(d for _, d in EXCLUSION_STEPS)]
    return pd.DataFrame({
        "group": np.repeat(np.asarray(names, dtype=object), width),
        "step": np.tile(np.asarray(["acute_stays", *steps], dtype=object), len(names)),
        "description": np.tile(np.asarray(descriptions, dtype=object), len(names)),
        "excluded": excluded.ravel(), "remaining": remaining.ravel()})


def recorded_reasons(stays: pd.DataFrame) -> np.ndarray:
    """Each acute stay's exclusion reason under the rules recorded by ``index_stays(..., record=...)``: the broad
    cohort's reason, or the first recorded check it fails in pipeline order (``under_min_age`` comes after the
    transfer and merge steps, ``coverage_not_counted`` after ``not_enrolled``)."""
    if "record_under_min_age" not in stays.columns:
        raise ParameterError("the cohort has no recorded rules: build it with index_stays(..., record=rules)")
    reason = stays["exclusion_reason"].to_numpy(dtype=object).copy()
    order = {step: i for i, (step, _) in enumerate(EXCLUSION_STEPS)}
    # each reason's place in pipeline order (after every step: none, or a reason of no step), by one Arrow hash
    # look-up: a Python loop over millions of acute stays cost seconds
    rank = key_positions(stays["exclusion_reason"], pd.Series(list(order), dtype="str"))
    rank[rank < 0] = len(order)
    for step, column in (("under_min_age", "record_under_min_age"),
                         ("coverage_not_counted", "record_coverage_not_counted")):
        hit = stays[column].to_numpy(dtype=bool) & (rank > order[step])
        reason[hit] = step
        rank[hit] = order[step]
    return reason


def restrict_cohort(cohort: Cohort) -> Cohort:
    """The cohort under the rules recorded by ``index_stays(..., record=...)``, by filtering: the same index rows,
    stays table (with their reasons under those rules) and attrition as ``index_stays`` with those rules gives.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1"], "setting": "acute", "market": "M", "is_partner": False})
    >>> pat = pd.DataFrame({"patient_id": ["p", "q"], "birth_date": pd.to_datetime(["1940-01-01", "1980-01-01"]),
    ...     "sex": "F", "dual_eligible": False, "death_date": pd.NaT, "market": "M"})
    >>> st = pd.DataFrame({"stay_id": ["a", "b"], "patient_id": ["p", "q"], "facility_id": "H1",
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-02-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-03", "2024-02-03"]), "discharge_status": "01",
    ...     "principal_dx": "J189", "secondary_dx": np.nan, "admission_type": "1"})
    >>> from dataclasses import replace
    >>> broad = index_stays(st, fac, pat, rules=replace(ALL_PAYER_RULES, runout_days=None),
    ...                     record=replace(MEDICARE_FFS_RULES, runout_days=None))
    >>> broad.index["stay_id"].tolist(), restrict_cohort(broad).index["stay_id"].tolist()
    (['a', 'b'], ['a'])
    """
    reason = recorded_reasons(cohort.stays)
    stays = cohort.stays.drop(columns=["record_under_min_age", "record_coverage_not_counted"])
    stays["exclusion_reason"] = pd.array(reason, dtype="str")
    stays["is_index"] = pd.isna(reason)
    index = cohort.index[cohort.index["in_record"].to_numpy(dtype=bool)].drop(columns="in_record")
    return Cohort(stays=stays, index=index.reset_index(drop=True), attrition=attrition_of(reason),
                  rules=cohort.rules, condition=cohort.condition, patient_rows=cohort.patient_rows,
                  stay_rows=cohort.stay_rows)


def _unlinked(acute: pd.DataFrame) -> pd.DataFrame:
    out = acute.copy()
    out["episode_id"] = acute["stay_id"].to_numpy()
    out["episode_admit_date"] = acute["admit_date"].to_numpy()
    out["first_facility_id"] = acute["facility_id"].to_numpy()
    out["transfers_in_episode"] = 0
    out["is_final"] = True
    out["transferred_out"] = False
    return out


def rules_table(rules: IndexRules) -> pd.DataFrame:
    """The rules of a cohort as a two-column table (``rule``, ``value``), for methods appendices."""
    return pd.DataFrame([(f.name, getattr(rules, f.name)) for f in fields(rules)], columns=["rule", "value"])


# ------------------------------------------------------------------------------------- post-acute episodes


def post_acute_episodes(stays: pd.DataFrame, facilities: pd.DataFrame, *, max_gap_days: int = 1,
                        hospital_stays: pd.DataFrame | None = None,
                        hospital_rows: np.ndarray | None = None) -> pd.DataFrame:
    """Link each acute discharge to the first post-acute stay (SNF, IRF, LTCH, HHA) that starts within
    ``max_gap_days`` of it.

    Parameters
    ----------
    stays, facilities : DataFrame
        Contract tables (all settings).
    max_gap_days : int
        The PAC stay must start on the discharge day or up to this many days after (CMS SNFRM: 1).
    hospital_stays : DataFrame, optional
        Restrict the hospital side to these stays (e.g. a cohort's index stays, by ``stay_id``).
    hospital_rows : ndarray, optional
        With ``hospital_stays``: their rows in ``stays`` (``Cohort.stay_rows`` of the index stays), which saves
        looking their ids up (stay ids are the contract's unique key).

    Returns
    -------
    DataFrame
        One row per acute stay considered: ``stay_id`` (hospital), ``patient_id``, ``hospital_id``,
        ``hospital_discharge_date``, ``pac_stay_id``, ``pac_setting`` (``"none"`` when no PAC stay follows),
        ``pac_facility_id``, ``pac_is_partner`` (partner on the PAC admission date: partner and
        ``partner_since`` missing or on/before admission), ``pac_admit_date``, ``pac_discharge_date``,
        ``pac_los_days``, ``pac_discharge_status``, ``episode_days`` (hospital admission to PAC discharge,
        or to hospital discharge), ``final_discharge_status``.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H", "S"], "setting": ["acute", "snf"], "market": "M",
    ...     "is_partner": [False, True], "partner_since": pd.to_datetime([None, "2023-01-01"])})
    >>> st = pd.DataFrame({"stay_id": ["h1", "s1", "h2"], "patient_id": "p", "facility_id": ["H", "S", "H"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-06", "2024-03-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-26", "2024-03-04"]),
    ...     "discharge_status": ["03", "01", "01"]})
    >>> post_acute_episodes(st, fac)[["stay_id", "pac_setting", "pac_los_days", "episode_days", "pac_is_partner"]]
      stay_id pac_setting  pac_los_days  episode_days  pac_is_partner
    0      h1         snf          20.0            25            True
    1      h2        none           NaN             3           False
    """
    fpos_all = key_positions(stays["facility_id"], facilities["facility_id"])
    setting = take(facilities["setting"], fpos_all, None)
    is_hosp = setting == "acute"
    if hospital_stays is not None and hospital_rows is not None:
        chosen = np.zeros(len(stays), dtype=bool)
        chosen[hospital_rows] = True
        is_hosp &= chosen
    elif hospital_stays is not None:
        is_hosp &= key_positions(stays["stay_id"], hospital_stays["stay_id"]) >= 0
    is_pac = np.isin(setting, POST_ACUTE_SETTINGS)
    columns = [c for c in ("stay_id", "patient_id", "facility_id", "admit_date", "discharge_date", "discharge_status")
               if c in stays.columns]
    hosp, pac = stays[columns][is_hosp], stays[columns][is_pac]  # only the columns used: no copy of the rest
    pac_fpos = fpos_all[is_pac]
    # integer patient codes shared by both sides; sort each side by (patient, date)
    codes = pd.factorize(pd.concat([hosp["patient_id"], pac["patient_id"]], ignore_index=True))[0]
    h_code, p_code = codes[: len(hosp)].astype(np.int64), codes[len(hosp):].astype(np.int64)
    base, shift = np.int64(1 << 31), np.int64(1 << 32)
    h_order = _key_order(h_code, day_numbers(hosp["discharge_date"]))  # np.lexsort of the reversed keys, faster
    p_days = day_numbers(pac["admit_date"])
    p_order = _key_order(p_code, p_days)
    hosp, h_code = hosp.iloc[h_order], h_code[h_order]
    pac, p_code, pac_fpos, p_days = pac.iloc[p_order], p_code[p_order], pac_fpos[p_order], p_days[p_order]
    p_key = p_code * shift + p_days + base
    h_key = h_code * shift + day_numbers(hosp["discharge_date"]) + base
    pos = np.searchsorted(p_key, h_key, side="left")
    pos_c = np.clip(pos, 0, max(len(pac) - 1, 0))
    found = (pos < len(pac)) & (len(pac) > 0)
    if len(pac):
        found &= (p_code[pos_c] == h_code) & (p_key[pos_c] - h_key <= max_gap_days)
    n = len(hosp)
    link = np.where(found, pos_c, -1)

    def pac_column(column: str, fill) -> np.ndarray:
        return take(pac[column], link, fill) if column in pac.columns else np.full(n, fill, dtype=object)

    fpos = np.where(found, take(pd.Series(pac_fpos), link, -1).astype(np.int64), -1) if len(pac) else \
        np.full(n, -1)
    pac_setting = np.where(found, take(facilities["setting"], fpos, "none"), "none")
    pac_admit = pd.Series(pac_column("admit_date", np.datetime64("NaT"))).astype("datetime64[s]")
    pac_discharge = pd.Series(pac_column("discharge_date", np.datetime64("NaT"))).astype("datetime64[s]")
    partner = take(facilities["is_partner"], fpos, False).astype(bool)
    if "partner_since" in facilities.columns:
        since = pd.Series(take(facilities["partner_since"], fpos, np.datetime64("NaT"))).astype("datetime64[s]")
        partner_then = partner & (since.isna() | (since <= pac_admit)).to_numpy()
    else:
        partner_then = partner
    if "discharge_status" in stays.columns:  # kept in Arrow: no Python strings
        pac_status = pd.Series(take_text(pac["discharge_status"], link))
        final_status = pac_status.where(found, pd.Series(take_text(hosp["discharge_status"], np.arange(n))))
    else:
        pac_status = final_status = pd.Series(pd.array(np.full(n, np.nan, dtype=object), dtype="str"))
    end = np.where(found, pac_discharge.to_numpy(), hosp["discharge_date"].to_numpy())
    out = pd.DataFrame({
        "stay_id": hosp["stay_id"].array, "patient_id": hosp["patient_id"].array,
        "hospital_id": hosp["facility_id"].array, "hospital_discharge_date": hosp["discharge_date"].to_numpy(),
        "pac_stay_id": take_text(pac["stay_id"], link), "pac_setting": pac_setting,
        "pac_facility_id": take_text(pac["facility_id"], link),
        "pac_is_partner": partner_then, "pac_admit_date": pac_admit.to_numpy(),
        "pac_discharge_date": pac_discharge.to_numpy(),
        "pac_los_days": (pac_discharge - pac_admit).dt.days.to_numpy(dtype=float),
        "pac_discharge_status": pac_status.array,
        "episode_days": (pd.to_datetime(end) - hosp["admit_date"].to_numpy()).days.to_numpy(),
        "final_discharge_status": final_status.array,
    })
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------ population cohorts


@cache
def standard_population(*, min_age: int | None = None) -> pd.DataFrame:
    """The 2000 U.S. standard population in 11 age bands (NCHS; ``age_band``, ``age_lo``, ``age_hi``,
    ``population``). Its bands are carequal's default age bands.

    ``min_age`` keeps the bands from that age on (it must start a band): ``min_age=65`` is the standard for a
    Medicare population, so that rates of markets with some younger residents (disability, employees) are
    not weighted towards the under-65 bands, which hold 89% of the all-ages standard.

    Examples
    --------
    >>> int(standard_population()["population"].sum())
    274633642
    >>> standard_population(min_age=65)["age_band"].tolist()
    ['65-74', '75-84', '85+']
    """
    path = resources.files("carequal") / "data" / "standard_population_us2000.csv"
    with path.open(encoding="utf-8") as fh:
        bands = pd.read_csv(fh, dtype={"age_band": str})
    if min_age is None:
        return bands
    if min_age not in set(bands["age_lo"]):
        raise ParameterError(f"min_age {min_age} does not start an age band; choose one of "
                             f"{', '.join(map(str, bands['age_lo']))}")
    return bands[bands["age_lo"] >= min_age].reset_index(drop=True)


def person_time(enrollment: pd.DataFrame, patients: pd.DataFrame, *, start: str | pd.Timestamp,
                end: str | pd.Timestamp, by: tuple[str, ...] = ("market", "age_band", "sex", "dual_eligible"),
                bands: pd.DataFrame | None = None) -> pd.DataFrame:
    """Person-years of enrollment in ``[start, end]`` by market, age band, sex, dual status (and any other
    patient column), splitting each period exactly at the birthdays that move a person into a new age band
    and stopping at death.

    Parameters
    ----------
    enrollment, patients : DataFrame
        Contract tables. Overlapping periods of one patient are merged first (no double counting).
    start, end : date
        Inclusive bounds of the period.
    by : tuple of str
        Grouping columns: ``age_band`` plus any columns of ``patients``.
    bands : DataFrame, optional
        ``age_band``, ``age_lo``, ``age_hi`` (inclusive whole years); default :func:`standard_population`.

    Returns
    -------
    DataFrame
        The ``by`` columns, ``person_days`` and ``person_years`` (days / 365.25).

    Examples
    --------
    >>> pat = pd.DataFrame({"patient_id": ["p"], "birth_date": pd.to_datetime(["1950-07-01"]), "sex": "F",
    ...     "dual_eligible": False, "death_date": pd.NaT, "market": "N"})
    >>> enr = pd.DataFrame({"patient_id": ["p"], "start_date": pd.to_datetime(["2010-01-01"]),
    ...     "end_date": pd.to_datetime(["2030-12-31"])})
    >>> person_time(enr, pat, start="2024-01-01", end="2024-12-31")[["age_band", "person_days"]]
      age_band  person_days
    0    65-74          366
    >>> person_time(enr, pat, start="2015-01-01", end="2015-12-31")[["age_band", "person_days"]]
      age_band  person_days
    0    55-64          181
    1    65-74          184
    """
    bands = bands if bands is not None else standard_population()
    lo_day = day_numbers(np.array([pd.Timestamp(start)]))[0]
    hi_day = day_numbers(np.array([pd.Timestamp(end)]))[0]
    merged = _merged_coverage(enrollment, None, key_positions(enrollment["patient_id"], patients["patient_id"]))
    merged = merged[merged["patient"] >= 0]
    birth = pd.Series(take(patients["birth_date"], merged["patient"].to_numpy(), np.datetime64("NaT")))
    death = day_numbers(take(patients["death_date"], merged["patient"].to_numpy(), np.datetime64("NaT")))
    s = np.maximum(merged["start"].to_numpy(), lo_day)
    e = np.minimum(merged["end"].to_numpy(), hi_day)
    e = np.where(death != _NAT_DAYS, np.minimum(e, death), e)
    keep = e >= s
    merged, birth, s, e = merged[keep], birth[keep], s[keep], e[keep]
    pieces = []
    birth_ts = pd.DatetimeIndex(birth)
    for band in bands.itertuples(index=False):
        band_start = day_numbers((birth_ts + pd.DateOffset(years=int(band.age_lo))).to_numpy())
        band_end = day_numbers((birth_ts + pd.DateOffset(years=int(band.age_hi) + 1)).to_numpy()) - 1
        bs, be = np.maximum(s, band_start), np.minimum(e, band_end)
        days = be - bs + 1
        has = days > 0
        if has.any():
            pieces.append(pd.DataFrame({"patient": merged["patient"].to_numpy()[has],
                                        "age_band": band.age_band, "person_days": days[has]}))
    columns = list(by) + ["person_days", "person_years"]
    if not pieces:
        return pd.DataFrame(columns=columns)
    pt = pd.concat(pieces, ignore_index=True)
    for col in by:
        if col != "age_band":
            pt[col] = take(patients[col], pt["patient"].to_numpy(), None)
    out = pt.groupby(list(by), dropna=False, observed=True, sort=True)["person_days"].sum().reset_index()
    out["person_years"] = out["person_days"] / 365.25
    return out


@cache
def chronic_condition_codes() -> pd.DataFrame:
    """Chronic-condition ICD-10-CM prefix sets: ``condition`` (the key, a column of :func:`chronic_conditions`),
    ``label`` (the name reports show), ``prefixes``, ``note``.

    Examples
    --------
    >>> codes = chronic_condition_codes().set_index("condition")
    >>> codes.loc["heart_failure", "label"], codes.loc["copd", "prefixes"]
    ('Heart failure', 'J41|J42|J43|J44')
    """
    path = resources.files("carequal") / "data" / "chronic_conditions.csv"
    with path.open(encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str)


def chronic_conditions(stays: pd.DataFrame, *, start: str | pd.Timestamp | None = None,
                       end: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """Per patient, whether any diagnosis (principal or secondary) on a stay discharged in ``[start, end]``
    falls in each chronic condition; patients without stays in the period are absent.

    Examples
    --------
    >>> st = pd.DataFrame({"patient_id": ["p", "p", "q"], "principal_dx": ["I509", "J189", "S72001A"],
    ...     "secondary_dx": ["E119;N183", np.nan, np.nan],
    ...     "discharge_date": pd.to_datetime(["2024-01-05", "2024-02-01", "2024-03-01"])})
    >>> cc = chronic_conditions(st)
    >>> cc.loc[cc.patient_id == "p", ["heart_failure", "diabetes", "ckd", "copd"]].iloc[0].tolist()
    [True, True, True, False]
    >>> int(cc.loc[cc.patient_id == "q", "n_conditions"].iloc[0])
    0
    """
    frame = stays
    if start is not None:
        frame = frame[frame["discharge_date"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["discharge_date"] <= pd.Timestamp(end)]
    codes = frame["principal_dx"].astype("str").str.cat(frame["secondary_dx"].astype("str").fillna(""),
                                                        sep=CODE_SEPARATOR)
    out = pd.DataFrame({"patient_id": frame["patient_id"].to_numpy()})
    names = []
    for row in chronic_condition_codes().itertuples(index=False):
        out[row.condition] = _list_has_prefix(codes, row.prefixes.split("|"))
        names.append(row.condition)
    out = out.groupby("patient_id", sort=True)[names].any().reset_index()
    out["n_conditions"] = out[names].sum(axis=1)
    return out


def filter_cohort(index: pd.DataFrame, *, market: str | list[str] | None = None,
                  start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None,
                  condition: str | list[str] | None = None, partner: bool | None = None,
                  age_band: str | None = None) -> pd.DataFrame:
    """Filter index stays (or any table with the same columns) by market, discharge period, condition,
    partner status of the hospital and age band (``"65-74"``, ``"85+"``); None leaves a dimension open.

    Examples
    --------
    >>> idx = pd.DataFrame({"market": ["N", "S"], "discharge_date": pd.to_datetime(["2024-01-05", "2024-06-01"]),
    ...     "condition": ["ami", "copd"], "is_partner": [True, False], "age": [70, 88]})
    >>> len(filter_cohort(idx, market="N")), len(filter_cohort(idx, start="2024-03-01", age_band="85+"))
    (1, 1)
    """
    mask = pd.Series(True, index=index.index)
    if market is not None:
        mask &= index["market"].isin([market] if isinstance(market, str) else market)
    if start is not None:
        mask &= index["discharge_date"] >= pd.Timestamp(start)
    if end is not None:
        mask &= index["discharge_date"] <= pd.Timestamp(end)
    if condition is not None:
        mask &= index["condition"].isin([condition] if isinstance(condition, str) else condition)
    if partner is not None:
        mask &= index["is_partner"].fillna(False).astype(bool) == partner
    if age_band is not None:
        lo, _, hi = age_band.replace("+", "-200").partition("-")
        mask &= index["age"].between(int(lo), int(hi))
    return index[mask.to_numpy()]


def age_band(age: pd.Series, *, bands: pd.DataFrame | None = None) -> pd.Series:
    """Age band label for whole-year ages (default bands: the 2000 U.S. standard population's).

    Examples
    --------
    >>> age_band(pd.Series([64, 65, 84, 85, 101])).tolist()
    ['55-64', '65-74', '75-84', '85+', '85+']
    """
    bands = bands if bands is not None else standard_population()
    edges = bands["age_lo"].to_numpy()
    pos = np.searchsorted(edges, age.to_numpy(), side="right") - 1
    labels = bands["age_band"].to_numpy()[np.clip(pos, 0, None)]
    return pd.Series(np.where(pos >= 0, labels, None), index=age.index, name="age_band")
