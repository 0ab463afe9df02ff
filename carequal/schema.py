"""The data contract: the tables a user brings, their rules, and validation with strict or quarantine mode.

Five tables, each documented column by column in ``CONTRACT`` (and in ``data/README.md``):
``facilities``, ``patients``, ``stays``, ``enrollment`` and the optional ``ed_visits``.

Validation runs in three layers, every one of which reports table, column, rule, number of failing rows and
up to five example keys:

1. *Parsing* (our code): text is turned into dates, booleans and numbers; a value that cannot be parsed is a
   failure of the rule ``type`` (its reason names what the column expects, e.g. a date in the form YYYY-MM-DD),
   an infinite number, or a whole number of 2^53 or more in magnitude (:data:`EXACT_INTEGER_LIMIT`), fails
   ``out_of_range``, and a date outside the plausibility window of :func:`date_window` (1900-01-01 to one year
   after the run date; no upper limit for ``enrollment.end_date``, whose open end may be 9999-12-31) fails
   ``date_implausible``. Diagnosis and procedure codes are normalised (dots and spaces removed, upper case) and
   code lists are split on ``;`` (``|`` and ``,`` are accepted too). A table without a required column
   (``missing_column``), and a ``facilities``, ``patients`` or ``stays`` table without rows (``table_empty``), is
   refused whole in both modes. (Faults of the file itself — empty, not UTF-8, not comma-separated, a repeated
   header name — are refused by :func:`carequal.loaders.read_table` before any of this.)
2. *Per-table rules* (pandera, but unique keys: Arrow): required values, unique keys, allowed values, code
   patterns, ranges and the row-level rules between columns of one table (``discharge_date >= admit_date``...).
   pandera is imported where a table is checked, not with this module: the ``carequal`` command, and a run that
   reuses its prepared inputs, do not load it (about 0.35 s of each command).
3. *Cross-table rules* (our code; pandera validates one frame at a time): foreign keys from stays,
   enrollment and ED visits to patients and facilities, a patient's death date before one of their stays,
   stays that start before the patient was born, overlapping stays of one patient in one care setting, and
   enrollment periods of one patient naming different sponsors on the same day.

``mode="strict"`` raises one :class:`~carequal.errors.SchemaError` listing every failure. ``mode="quarantine"``
moves failing rows to a quarantine table (the row as given, its ``row_number`` in the input and a ``reason``
naming every rule it failed) and keeps the rest; ``loaded == accepted + quarantined`` for every table, and a
row whose parent was quarantined is quarantined in turn (``reason`` says so), so nothing is dropped silently.

Duplicated keys: when every copy of a key is the same row *as given* (same text in every column, e.g. a file
appended twice), quarantine mode keeps the first copy and quarantines the others (rule ``exact_duplicate``);
when the copies differ in any column (``unique``), nothing says which is right and every copy is quarantined.
Strict mode reports both as errors: strict means the data are refused unless they are clean, and a repeated
row is a defect of the extract to fix at its source.

A death date before a stay (rules ``admit_after_death`` and ``discharge_after_death``) is a failure of the
**patient** row, on ``death_date``. The data cannot say whether the death date or the stay is wrong, but the
contradiction is the patient's: while the patient row is accepted its death date ends follow-up, counts as a
30-day death and marks in-hospital death for every one of the patient's stays, not only the contradicting
one. So the patient row is quarantined and, by the contract's rule that a row follows its quarantined parent,
its stays, enrollment and ED visits go with it (``parent_quarantined``): nothing of that patient reaches a
measure. CMS mortality cohorts likewise leave out patients with inconsistent vital status (methodology digest
§1.7). Only stays that pass the stays table's own rules and name a known facility count as evidence; a
discharge on the day of death agrees with the death date.

Why some of this is hand-written: pandera has no cross-table checks, and its ``coerce`` turns an unparseable
date into an exception about the whole column, without row keys; parsing first keeps every failure
row-addressable.

Where the rules run (issue 18, speed): parsing, code normalisation and the cross-table rules are Arrow compute
(``pyarrow.compute``) and numpy; the five tables are parsed in two threads, since Arrow kernels release the
GIL, and gathered in table order so that failures and messages never depend on scheduling. Pandera keeps the
per-table rules it states well: required values (``not_nullable``), allowed values, code formats, ranges and
the row rules between columns of one table. Unique keys (rule ``unique``, which :func:`_exact_duplicates` then
splits off ``exact_duplicate`` from) are Arrow: :func:`duplicated_keys` finds the rows pandera's
``unique=True`` reported (every copy of a repeated key, missing keys left out) in one hash pass, and the
failure takes pandera's place in the list (after the column's ``not_nullable``); pandera's check was a pandas
hash pass plus failure-case bookkeeping for every copy. The code formats stay in pandera: pandas already runs
them as Arrow regular expressions. The cross-table rules share one look-up of every child row's patient among
the patients (:func:`_key_positions_many`), used by the death and birth checks, the foreign keys and the
patient groups of overlapping stays. Where the time goes, and DuckDB counting exactly these rules for
comparison: ``benchmarks/bench_foundation.py`` and ``benchmarks/results/foundation.md``.

Size: about 1,300 lines, one module because the contract is one document: each table's columns and rules and the
cross-table checks, rendered whole for ``data/README.md`` by :func:`contract_markdown`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandera.pandas as pa

from carequal.errors import ParameterError, SchemaError

__all__ = ["ADMISSION_TYPES", "CODE_SEPARATOR", "CONTRACT", "COVERAGE_TYPES", "ColumnSpec", "discharge_codes",
           "DATE_DTYPE", "DATE_FLOOR", "EXACT_INTEGER_LIMIT", "Failure", "ICD10CM_PATTERN", "ICD10PCS_PATTERN",
           "KEYS", "NONEMPTY_TABLES", "OPEN_ENDED_DATES", "OPTIONAL_TABLES", "POA_FLAGS", "POST_ACUTE_SETTINGS",
           "RULES", "SETTINGS", "SEXES", "TABLES", "UNIQUE_COLUMNS", "ValidatedTables", "arrow_text", "column_list",
           "contract_markdown", "date_window", "diagnoses_long", "duplicated_keys", "few_key_positions",
           "key_positions", "normalise_code", "normalise_code_list", "overlapping_sponsors", "overlapping_stays",
           "parse_table", "table_schema", "take", "take_text", "validate_tables"]

TABLES: tuple[str, ...] = ("facilities", "patients", "stays", "enrollment", "ed_visits")
"""Contract tables in dependency order (parents before children)."""

OPTIONAL_TABLES: frozenset[str] = frozenset({"ed_visits"})

NONEMPTY_TABLES: frozenset[str] = frozenset({"facilities", "patients", "stays"})
"""Tables that must have at least one row (rule ``table_empty``): without them there is nothing to report on."""

SETTINGS: tuple[str, ...] = ("acute", "snf", "irf", "ltch", "hha")
"""Care settings: short-term acute hospital, skilled nursing, inpatient rehab, long-term care hospital, home health."""

POST_ACUTE_SETTINGS: tuple[str, ...] = ("snf", "irf", "ltch", "hha")

SEXES: tuple[str, ...] = ("F", "M", "U")

ADMISSION_TYPES: tuple[str, ...] = ("1", "2", "3", "4", "5", "9")
"""UB-04 priority (type) of admission: 1 emergency, 2 urgent, 3 elective, 4 newborn, 5 trauma, 9 unknown."""

POA_FLAGS: tuple[str, ...] = ("Y", "N", "U", "W", "1")
"""Present-on-admission indicators: Y yes, N no, U documentation insufficient, W clinically undetermined,
1 exempt from POA reporting."""

COVERAGE_TYPES: tuple[str, ...] = ("ffs", "ma", "medicaid", "commercial", "other")
"""Enrollment coverage: Medicare fee-for-service (Parts A and B), Medicare Advantage, Medicaid, commercial
(e.g. an employer's plan), other."""

CODE_SEPARATOR = ";"

DATE_DTYPE = "datetime64[s]"
"""Dates are held at second resolution, so open-ended sentinels such as 9999-12-31 stay representable."""

ICD10CM_PATTERN = r"[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}"
"""ICD-10-CM after normalisation: letter, digit, alphanumeric, then up to four more (3–7 characters)."""

ICD10PCS_PATTERN = r"[0-9A-HJ-NP-Z]{7}"
"""ICD-10-PCS: seven characters from digits and letters other than I and O."""


def _list_pattern(code: str) -> str:
    return rf"^(?:{code}(?:{CODE_SEPARATOR}{code})*)$"


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the contract.

    ``kind`` is one of ``id``, ``text``, ``date``, ``bool``, ``int``, ``float``, ``category``, ``icd10cm``,
    ``icd10cm_list``, ``poa``, ``poa_list``, ``icd10pcs_list``. ``required`` columns must be present in the
    file; ``nullable`` says whether a present column may have empty cells.
    """

    name: str
    kind: str
    description: str
    required: bool = True
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


@functools.cache
def discharge_codes() -> tuple[str, ...]:
    """The discharge status codes the contract accepts (CMS patient discharge status), as text (the packaged
    value set, read once: every table schema asks for it)."""
    path = resources.files("carequal") / "data" / "valuesets" / "discharge_disposition_code.csv"
    with path.open(encoding="utf-8-sig") as fh:
        codes = pd.read_csv(fh, dtype=str)["discharge_disposition_code"]
    return tuple(codes.str.strip().tolist())


CONTRACT: dict[str, tuple[ColumnSpec, ...]] = {
    "facilities": (
        ColumnSpec("facility_id", "id", "Unique facility key (e.g. CMS Certification Number)."),
        ColumnSpec("name", "text", "Facility name as shown in reports."),
        ColumnSpec("setting", "category", "Care setting.", allowed=SETTINGS),
        ColumnSpec("market", "id", "Local market the facility serves (the unit of one report)."),
        ColumnSpec("is_partner", "bool", "Whether the facility is in the partnership."),
        ColumnSpec("partner_since", "date", "Partnership start date; empty if not a partner or unknown.",
                   nullable=True),
        ColumnSpec("beds", "int", "Licensed beds (not applicable to home health).", required=False,
                   nullable=True, minimum=0),
        ColumnSpec("nurse_hours_ppd", "float", "Total nurse staffing hours per patient day.", required=False,
                   nullable=True, minimum=0, maximum=24),
    ),
    "patients": (
        ColumnSpec("patient_id", "id", "Unique patient key."),
        ColumnSpec("birth_date", "date", "Date of birth."),
        ColumnSpec("sex", "category", "F, M or U (unknown).", allowed=SEXES),
        ColumnSpec("dual_eligible", "bool", "Full-benefit Medicare–Medicaid dual eligibility."),
        ColumnSpec("death_date", "date", "Date of death; empty if alive at the end of the data.", nullable=True),
        ColumnSpec("market", "id", "Market of residence."),
        ColumnSpec("population_group", "text", "Optional population, e.g. 'medicare' or an employer's "
                   "'employees'.", required=False, nullable=True),
    ),
    "stays": (
        ColumnSpec("stay_id", "id", "Unique stay key."),
        ColumnSpec("patient_id", "id", "Patient (→ patients.patient_id)."),
        ColumnSpec("facility_id", "id", "Facility (→ facilities.facility_id); its setting is the stay's."),
        ColumnSpec("admit_date", "date", "Admission (start of care) date."),
        ColumnSpec("discharge_date", "date", "Discharge (end of care) date; same day as admission is allowed."),
        ColumnSpec("discharge_status", "category", "UB-04 patient discharge status code (two digits, e.g. 01 "
                   "home, 02 acute transfer, 03 SNF, 06 home health, 07 AMA, 20 died); empty means unknown.",
                   nullable=True),
        ColumnSpec("admission_type", "category", "UB-04 type of admission: 1 emergency, 2 urgent, 3 elective, "
                   "4 newborn, 5 trauma, 9 unknown.", nullable=True, allowed=ADMISSION_TYPES),
        ColumnSpec("principal_dx", "icd10cm", "Principal diagnosis, ICD-10-CM (dots and case are normalised)."),
        ColumnSpec("principal_dx_poa", "poa", "Present-on-admission flag of the principal diagnosis.",
                   required=False, nullable=True),
        ColumnSpec("secondary_dx", "icd10cm_list", "Secondary diagnoses, ICD-10-CM, separated by ';'.",
                   nullable=True),
        ColumnSpec("secondary_poa", "poa_list", "POA flags of the secondary diagnoses, one per code, "
                   "separated by ';'.", required=False, nullable=True),
        ColumnSpec("procedures", "icd10pcs_list", "ICD-10-PCS procedure codes separated by ';'.",
                   required=False, nullable=True),
        ColumnSpec("payment", "float", "Payment for the stay (currency of the data).", required=False,
                   nullable=True, minimum=0),
    ),
    "enrollment": (
        ColumnSpec("patient_id", "id", "Patient (→ patients.patient_id)."),
        ColumnSpec("start_date", "date", "First day of coverage."),
        ColumnSpec("end_date", "date", "Last day of coverage (inclusive)."),
        ColumnSpec("coverage", "category", "Coverage type: ffs (Medicare Parts A and B), ma, medicaid, "
                   "commercial, other; empty means unknown. The CMS-style index-stay rules count only ffs periods "
                   "towards the 12-month look-back and 30-day follow-up (IndexRules.coverage; ALL_PAYER_RULES "
                   "counts every type).", required=False, nullable=True, allowed=COVERAGE_TYPES),
        ColumnSpec("sponsor", "text", "Employer or plan sponsor of the period, e.g. the alliance member whose "
                   "employees these are ('Northvale Health'); empty where there is none (Medicare, Medicaid, an "
                   "individual plan) or it is not known. A period without a sponsor is left out of views by "
                   "sponsor. A change of sponsor starts a new period; a period may overlap one without a sponsor "
                   "(e.g. Medicare beside an employer plan), but not one naming another sponsor (rule "
                   "sponsor_overlap: views by sponsor need one sponsor a day).", required=False, nullable=True),
    ),
    "ed_visits": (
        ColumnSpec("visit_id", "id", "Unique visit key (optional).", required=False, nullable=True),
        ColumnSpec("patient_id", "id", "Patient (→ patients.patient_id)."),
        ColumnSpec("visit_date", "date", "Date of the emergency department visit."),
        ColumnSpec("facility_id", "id", "Facility of the visit (→ facilities.facility_id)."),
    ),
}

KEYS: dict[str, tuple[str, ...]] = {
    "facilities": ("facility_id",),
    "patients": ("patient_id",),
    "stays": ("stay_id",),
    "enrollment": ("patient_id", "start_date"),
    "ed_visits": ("patient_id", "visit_date"),
}
"""Columns that name a row in error messages and quarantine tables."""

UNIQUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "facilities": ("facility_id",), "patients": ("patient_id",), "stays": ("stay_id",), "enrollment": (),
    "ed_visits": ("visit_id",),
}
"""Columns whose values must be unique (rule ``unique``): the one-column keys, and ``ed_visits.visit_id``."""

RULES: dict[str, str] = {
    "missing_column": "a required column is missing",
    "empty_file": "the file is empty (no header row)",
    "not_utf8": "the file is not UTF-8 text (the message names the line and byte offset of the first bad byte)",
    "delimiter": "the file is not comma-separated (e.g. semicolons or tabs)",
    "duplicate_column": "a column name appears twice in the header",
    "csv_format": "the file cannot be read as CSV (e.g. a row with more fields than the header)",
    "parquet_format": "the file cannot be read as Parquet",
    "table_empty": "facilities, patients or stays has no rows: there is nothing to report on",
    "out_of_range": "number is infinite, or a whole number of 2^53 or more in magnitude (not held exactly)",
    "date_implausible": "date is before 1900-01-01 or more than a year after the run date",
    "type": "value cannot be read as the column's type",
    "not_nullable": "value is required but empty",
    "unique": "key is duplicated and its copies differ (every copy is quarantined)",
    "exact_duplicate": "row repeats an earlier row with the same key in every column, as given (the first copy "
                       "is kept in quarantine mode)",
    "allowed_values": "value is not one of the allowed codes",
    "code_format": "code does not match its coding system's format",
    "range": "value is outside its allowed range",
    "discharge_before_admit": "discharge_date is before admit_date",
    "end_before_start": "end_date is before start_date",
    "death_before_birth": "death_date is before birth_date",
    "birth_in_future": "birth_date is after today",
    "partner_since_without_partner": "partner_since is given but is_partner is false",
    "poa_count_mismatch": "secondary_poa does not give one flag per secondary_dx code",
    "unknown_patient": "patient_id is not in patients",
    "unknown_facility": "facility_id is not in facilities",
    "parent_quarantined": "the referenced patient or facility was quarantined",
    "admit_after_death": "death_date is before the admission of one of the patient's stays (the patient row "
                         "carries it; its stays, enrollment and ED visits follow as parent_quarantined)",
    "discharge_after_death": "death_date is before the discharge of one of the patient's stays (the patient row "
                             "carries it; its stays, enrollment and ED visits follow as parent_quarantined)",
    "admit_before_birth": "the stay starts before the patient's birth_date",
    "overlapping_stay": "the stay starts before the patient's previous stay in the same setting ended",
    "sponsor_overlap": "the enrollment period names a sponsor and overlaps an earlier period of the same patient "
                       "that names another sponsor (one sponsor a day)",
}
"""Every rule of the contract, by name, with the sentence used in error messages."""


@dataclass
class Failure:
    """One broken rule: which rows (positions in the table as given) failed it."""

    table: str
    column: str
    rule: str
    rows: np.ndarray
    detail: str = ""


@dataclass
class ValidatedTables:
    """Result of validating the contract tables.

    Attributes
    ----------
    tables : dict of DataFrame
        Accepted rows of each table, typed and normalised, in input order.
    quarantine : dict of DataFrame
        Rejected rows of each table: the row as given (text), ``row_number`` (1-based position in the input)
        and ``reason`` (every rule it failed, ``; ``-separated).
    failures : DataFrame
        One row per (table, column, rule): ``n_rows`` and up to five ``examples`` keys.
    counts : DataFrame
        Per table: ``loaded``, ``accepted``, ``quarantined`` (loaded == accepted + quarantined).
    patient_rows : dict of ndarray
        Per table with ``patient_id`` (``stays``, ``enrollment``, ``ed_visits``): each accepted row's patient as a
        row of ``tables["patients"]`` — the foreign-key look-up validation made anyway, kept so that a caller
        (:func:`carequal.loaders.write_market_dataset`) need not hash millions of ids again. Empty when not
        known (a ``ValidatedTables`` made by hand).
    """

    tables: dict[str, pd.DataFrame]
    quarantine: dict[str, pd.DataFrame]
    failures: pd.DataFrame
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    patient_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]


# --------------------------------------------------------------------------------------------------- parsing

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def arrow_text(values: pd.Series) -> pa_arrow.Array:
    """The values as an Arrow string array; pyarrow kernels parse and normalise text at tens of millions of
    values per second, where pandas' regex replacement and object conversions fall back to Python.

    Examples
    --------
    >>> arrow_text(pd.Series(["a", None, "c"])).to_pylist()
    ['a', None, 'c']
    >>> arrow_text(pd.Series([20, 30])).type
    DataType(string)
    """
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        arr = pa_arrow.array(values.array)
    elif values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        arr = pa_arrow.array(values.astype("string[pyarrow]").array)
    else:  # numbers or booleans given where text is expected (e.g. a status code read as an integer)
        arr = pa_arrow.array(values.astype("string[pyarrow]").array)
    if isinstance(arr, pa_arrow.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa_arrow.string()) if arr.type != pa_arrow.string() else arr


def key_positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """Position of each value among ``keys`` (−1 where absent), by an Arrow hash look-up.

    The fast way to join on text keys (ids): a pandas ``map`` or ``merge`` on Arrow-backed strings is an
    order of magnitude slower at millions of rows.

    Examples
    --------
    >>> key_positions(pd.Series(["b", "z", "a"]), pd.Series(["a", "b"])).tolist()
    [1, -1, 0]
    """
    found = pc.index_in(arrow_text(values), value_set=arrow_text(keys))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def few_key_positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """:func:`key_positions` for fewer values than keys (an index stay's row among all stays): the same result,
    the first row of ``keys`` holding each value (−1 where absent).

    Arrow's hash look-up costs most in building the table of the value set, so the table is built on the
    values (fewer than the keys) and the keys are looked up in it; the first key row per value is kept. Values
    this does not place (a repeated value, which the hash table holds once, or a value absent from the keys)
    are looked up the other way round.

    Examples
    --------
    >>> few_key_positions(pd.Series(["b", "z", "b"]), pd.Series(["a", "b", "b"])).tolist()
    [1, -1, 1]
    """
    found = key_positions(keys, values)
    key_rows = np.flatnonzero(found >= 0)
    rows = np.full(len(values), len(keys), dtype=np.int64)
    np.minimum.at(rows, found[key_rows], key_rows)
    rest = np.flatnonzero(rows == len(keys))
    rows[rest] = key_positions(values.iloc[rest], keys) if len(rest) else -1
    return rows


def take(values: pd.Series, positions: np.ndarray, fill=np.nan) -> np.ndarray:
    """``values`` gathered at ``positions`` (from :func:`key_positions`), ``fill`` where the position is −1."""
    arr = values.to_numpy()
    if len(arr) == 0:
        return np.full(len(positions), fill, dtype=object)
    out = arr[np.clip(positions, 0, None)]
    missing = positions < 0
    if missing.any():
        out = out.astype(object) if out.dtype.kind in "biu" or out.dtype == bool else out.copy()
        out[missing] = fill
    return out


def take_text(values: pd.Series, positions: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Text ``values`` gathered at ``positions`` (missing where −1), staying in Arrow (no Python objects).

    Examples
    --------
    >>> list(take_text(pd.Series(["a", "b"]), np.array([1, -1, 0])))
    ['b', nan, 'a']
    """
    indices = pa_arrow.array(np.clip(positions, 0, None), mask=positions < 0) if len(values) else \
        pa_arrow.nulls(len(positions), pa_arrow.int64())
    arr = arrow_text(values) if len(values) else pa_arrow.array([], pa_arrow.string())
    return pd.array(pc.take(arr, indices), dtype="str")


def _clean_text(arr: pa_arrow.Array) -> pa_arrow.Array:
    """Trim blanks; empty text becomes null."""
    return _empty_to_null(pc.utf8_trim_whitespace(arr))


def _empty_to_null(arr: pa_arrow.Array) -> pa_arrow.Array:
    empty = pc.equal(arr, "")
    if not pc.any(empty).as_py():  # the usual case: no copy (``if_else`` costs several times the test)
        return arr
    return pc.if_else(empty, pa_arrow.scalar(None, pa_arrow.string()), arr)


def _text_series(arr, index: pd.Index) -> pd.Series:
    """An Arrow string array as a pandas ``str`` Series (empty text becomes missing)."""
    return pd.Series(pd.array(_empty_to_null(arr), dtype="str"), index=index)


def _strip_code(arr: pa_arrow.Array) -> pa_arrow.Array:
    """Upper case, no dots, no blanks (literal replacements: several times faster than one regex)."""
    arr = pc.utf8_upper(arr)
    for character in (".", " ", "\t"):
        if pc.any(pc.match_substring(arr, character)).as_py():  # testing is cheaper than replacing nothing
            arr = pc.replace_substring(arr, character, "")
    return arr


def normalise_code(codes: pd.Series) -> pd.Series:
    """Normalise ICD codes: remove dots and blanks, upper case; empty text becomes missing.

    Examples
    --------
    >>> normalise_code(pd.Series(["i50.9", " E11.9 ", "", None])).tolist()
    ['I509', 'E119', nan, nan]
    """
    return _text_series(_strip_code(arrow_text(codes)), codes.index)


def normalise_code_list(codes: pd.Series) -> pd.Series:
    """Normalise ``;``-separated code lists (``|`` and ``,`` also split); empty lists become missing.

    Examples
    --------
    >>> normalise_code_list(pd.Series(["e11.9; i10", "N18.3|Z79.4", ";;", ""])).tolist()
    ['E119;I10', 'N183;Z794', nan, nan]
    """
    return _text_series(_code_list(arrow_text(codes)), codes.index)


def _code_list(arr: pa_arrow.Array) -> pa_arrow.Array:
    """:func:`normalise_code_list` on an Arrow array (empty text left for :func:`_text_series` to make missing)."""
    arr = _strip_code(arr)
    for separator in ("|", ","):
        if pc.any(pc.match_substring(arr, separator)).as_py():
            arr = pc.replace_substring(arr, separator, CODE_SEPARATOR)
    if pc.any(pc.match_substring(arr, CODE_SEPARATOR * 2)).as_py():
        arr = pc.replace_substring_regex(arr, ";{2,}", CODE_SEPARATOR)
    return pc.utf8_trim(arr, CODE_SEPARATOR)


def _holds_dates(values: pd.Series) -> bool:
    first = values.dropna()
    return len(first) > 0 and not isinstance(first.iloc[0], str)


EXACT_INTEGER_LIMIT = 2**53
"""Whole numbers must be smaller than this in magnitude (numbers are parsed through float64, which holds every
whole number below 2^53 exactly); from it on the rule ``out_of_range`` quarantines the row rather than storing
another number than the one given."""

DATE_FLOOR = pd.Timestamp("1900-01-01")
"""Earliest plausible date of any date column (rule ``date_implausible``)."""

OPEN_ENDED_DATES: frozenset[tuple[str, str]] = frozenset({("enrollment", "end_date")})
"""Date columns with no upper plausibility limit: an open end (``9999-12-31``) means coverage continues."""

_EXPECTED = {"date": "a date in the form YYYY-MM-DD", "bool": "true/false (or 1/0, yes/no, t/f, y/n)",
             "int": "a whole number", "float": "a number"}
"""What a cell of each parsed kind must hold; named in the reason of a ``type`` failure."""


def date_window(today: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The plausible dates: from 1900-01-01 to one year after ``today`` (default: the run date), inclusive.

    Examples
    --------
    >>> [d.date().isoformat() for d in date_window(pd.Timestamp("2025-02-28"))]
    ['1900-01-01', '2026-02-28']
    """
    today = pd.Timestamp.today().normalize() if today is None else pd.Timestamp(today).normalize()
    return DATE_FLOOR, today + pd.DateOffset(years=1)


def _implausible_dates(table: str, column: str, parsed: pd.Series, window) -> np.ndarray:
    """Positions of dates outside the plausibility ``window`` (no upper limit for :data:`OPEN_ENDED_DATES`)."""
    lo, hi = window
    outside = parsed < lo
    if (table, column) not in OPEN_ENDED_DATES:
        outside |= parsed > hi
    return np.flatnonzero(outside.fillna(False).to_numpy())


def _numbers(parsed: pd.Series, kind: str, present: np.ndarray) -> tuple[pd.Series, dict[str, np.ndarray]]:
    """Float values to the column's kind: ``out_of_range`` where infinite (or a whole number of
    :data:`EXACT_INTEGER_LIMIT` or more in magnitude), ``type`` where given but not a number (or, for ``int``,
    not whole)."""
    values = parsed.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        huge = np.isinf(values) | ((np.abs(values) >= EXACT_INTEGER_LIMIT) if kind == "int" else False)
        values = np.where(huge, np.nan, values)
        bad = present & np.isnan(values) & ~huge
        if kind == "int":
            bad |= ~np.isnan(values) & (np.nan_to_num(values) % 1 != 0)
    out = {"type": np.flatnonzero(bad), "out_of_range": np.flatnonzero(huge)}
    series = pd.Series(np.where(bad, np.nan, values), index=parsed.index)
    return (series.astype("Int64") if kind == "int" else series), out


def _parse_column(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, dict[str, np.ndarray]]:
    """Parse one column to its kind; return the parsed values and, by rule (``type``, ``out_of_range``), the
    positions of the cells that could not be parsed (they are missing in the parsed values)."""
    kind = spec.kind
    index = values.index
    if kind == "date" and pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.dt.tz_localize(None) if getattr(values.dt, "tz", None) else values
        return parsed.astype(DATE_DTYPE).dt.normalize(), {}
    if kind == "bool" and pd.api.types.is_bool_dtype(values):
        return values.astype("boolean"), {}
    if kind in ("int", "float") and pd.api.types.is_numeric_dtype(values):
        return _numbers(values.astype("float64"), kind, np.zeros(len(values), dtype=bool))
    if kind == "date" and values.dtype == object and _holds_dates(values):
        parsed = pd.to_datetime(values, errors="coerce")  # python date objects (e.g. from some Parquet writers)
        bad = values.notna().to_numpy() & parsed.isna().to_numpy()
        return parsed.astype(DATE_DTYPE).dt.normalize(), {"type": np.flatnonzero(bad)}
    arr = _clean_text(arrow_text(values))
    present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    if kind == "date":
        # ISO 8601 dates only (2024-03-01): unambiguous, parsed by Arrow in C++; invalid dates become null
        stamps = pc.strptime(arr, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls impossible days over (2024-02-31 → 2 March): a round trip rejects them
        same = pc.equal(pc.strftime(stamps, format="%Y-%m-%d"), arr)
        stamps = pc.if_else(pc.fill_null(same, False), stamps, pa_arrow.scalar(None, stamps.type))
        parsed = pd.Series(stamps.to_numpy(zero_copy_only=False), index=index).astype(DATE_DTYPE)
        return parsed, {"type": np.flatnonzero(present & parsed.isna().to_numpy())}
    if kind == "bool":
        lower = pc.utf8_lower(arr)
        true = pc.is_in(lower, value_set=pa_arrow.array(sorted(_TRUE))).to_numpy(zero_copy_only=False)
        false = pc.is_in(lower, value_set=pa_arrow.array(sorted(_FALSE))).to_numpy(zero_copy_only=False)
        parsed = pd.Series(pd.array(np.where(true, True, np.where(false, False, None)), dtype="boolean"),
                           index=index)
        return parsed, {"type": np.flatnonzero(present & ~true & ~false)}
    if kind in ("int", "float"):
        parsed = pd.to_numeric(pd.Series(pd.array(arr, dtype="str"), index=index), errors="coerce")
        return _numbers(parsed, kind, present)
    # codes stay in Arrow from here on (normalise_code and normalise_code_list without the pandas round trip)
    if kind == "icd10cm":
        return _text_series(_strip_code(arr), index), {}
    if kind in ("icd10cm_list", "icd10pcs_list", "poa_list"):
        return _text_series(_code_list(arr), index), {}
    if kind in ("poa", "category"):
        if spec.name in ("discharge_status", "admission_type"):
            # "1" and "01" are the same discharge status; Parquet or spreadsheets drop the leading zero. Each
            # step runs only where it can change something (most files: nowhere), as testing is cheaper
            width = 2 if spec.name == "discharge_status" else 1
            if pc.any(pc.ends_with(arr, ".0")).as_py():
                arr = pc.replace_substring_regex(arr, r"\.0$", "")
            if pc.any(pc.less(pc.utf8_length(arr), width)).as_py():  # padding changes only shorter text
                digits = pc.match_substring_regex(arr, r"^\d+$")
                arr = pc.if_else(digits, pc.utf8_lpad(arr, width, "0"), arr)
        elif spec.name in ("sex", "principal_dx_poa"):
            arr = pc.utf8_upper(arr)
        elif spec.name in ("setting", "coverage"):
            arr = pc.utf8_lower(arr)
        return _text_series(arr, index), {}
    return pd.Series(pd.array(arr, dtype="str"), index=index), {}


# ------------------------------------------------------------------------------------------ pandera schemas


def _column_checks(spec: ColumnSpec, discharge_codes: tuple[str, ...]) -> list[pa.Check]:
    import pandera.pandas as pa  # the rules' library: loaded when a table is validated

    checks: list[pa.Check] = []
    allowed = discharge_codes if spec.name == "discharge_status" else spec.allowed
    if allowed is not None:
        checks.append(pa.Check.isin(list(allowed), name="allowed_values"))
    patterns = {
        "icd10cm": f"^{ICD10CM_PATTERN}$",
        "icd10cm_list": _list_pattern(ICD10CM_PATTERN),
        "icd10pcs_list": _list_pattern(ICD10PCS_PATTERN),
        "poa": "^[YNUW1]$",
        "poa_list": _list_pattern("[YNUW1]"),
    }
    if spec.kind in patterns:
        checks.append(pa.Check.str_matches(patterns[spec.kind], name="code_format"))
    if spec.kind in ("int", "float") and (spec.minimum is not None or spec.maximum is not None):
        lo = -np.inf if spec.minimum is None else spec.minimum
        hi = np.inf if spec.maximum is None else spec.maximum
        checks.append(pa.Check.in_range(lo, hi, name="range"))
    return checks


def _row_rule(name: str, fn) -> pa.Check:
    import pandera.pandas as pa  # the rules' library: loaded when a table is validated

    return pa.Check(fn, name=name, error=RULES[name])


def _table_checks(table: str) -> list[pa.Check]:
    if table == "facilities":
        return [_row_rule("partner_since_without_partner",
                          # an empty is_partner fails not_nullable; here it neither passes nor fails the row
                          lambda df: ~(df["partner_since"].notna() & (df["is_partner"] == False))  # noqa: E712
                          .fillna(False))]
    if table == "patients":
        today = pd.Timestamp.today().normalize()
        return [
            _row_rule("death_before_birth", lambda df: ~(df["death_date"] < df["birth_date"])),
            _row_rule("birth_in_future", lambda df: ~(df["birth_date"] > today)),
        ]
    if table == "stays":
        checks = [_row_rule("discharge_before_admit", lambda df: ~(df["discharge_date"] < df["admit_date"]))]
        checks.append(_row_rule("poa_count_mismatch", _poa_counts_match))
        return checks
    if table == "enrollment":
        return [_row_rule("end_before_start", lambda df: ~(df["end_date"] < df["start_date"]))]
    return []


def _poa_counts_match(df: pd.DataFrame) -> pd.Series:
    if "secondary_poa" not in df.columns:
        return pd.Series(True, index=df.index)
    poa = arrow_text(df["secondary_poa"])
    dx = arrow_text(df["secondary_dx"])
    same = pc.equal(pc.count_substring(poa, CODE_SEPARATOR), pc.count_substring(dx, CODE_SEPARATOR))
    ok = pc.or_(pc.is_null(poa), pc.fill_null(same, False))
    return pd.Series(ok.to_numpy(zero_copy_only=False).astype(bool), index=df.index)


def table_schema(table: str, columns: list[str] | None = None, *, unique_keys: bool = True) -> pa.DataFrameSchema:
    """The pandera schema of one contract table (value rules after parsing; types are parsed beforehand).

    Parameters
    ----------
    table : str
        One of :data:`TABLES`.
    columns : list of str, optional
        Columns present in the data; optional contract columns that are absent are left out of the schema.
    unique_keys : bool
        Whether the schema checks that keys are unique (:func:`validate_tables` checks them itself, with Arrow:
        :func:`duplicated_keys`).

    Examples
    --------
    >>> sorted(table_schema("enrollment").columns)
    ['coverage', 'end_date', 'patient_id', 'sponsor', 'start_date']
    """
    import pandera.pandas as pa  # the rules' library: loaded when a table is validated

    if table not in CONTRACT:
        raise ParameterError(f"unknown table {table!r}; the contract tables are {', '.join(TABLES)}")
    codes = discharge_codes()
    cols = {}
    for spec in CONTRACT[table]:
        if columns is not None and spec.name not in columns:
            continue
        cols[spec.name] = pa.Column(
            None, checks=_column_checks(spec, codes), nullable=spec.nullable,
            unique=unique_keys and spec.name in UNIQUE_COLUMNS[table],
            required=spec.required, description=spec.description,
        )
    checks = _table_checks(table)
    if columns is not None and table == "facilities" and "partner_since" not in columns:
        checks = []
    return pa.DataFrameSchema(cols, checks=checks, name=table, strict=False, coerce=False)


def duplicated_keys(values: pd.Series) -> np.ndarray:
    """Positions of the values that occur more than once, every copy, in row order; missing values are not
    duplicates. The rows pandera's ``unique=True`` reports (``Series.duplicated(keep=False)``, missing values
    left out), from one Arrow hash pass instead of pandas' ``is_unique`` and ``duplicated``.

    Examples
    --------
    >>> duplicated_keys(pd.Series(["a", None, "b", None, "a"])).tolist()
    [0, 4]
    """
    arr = arrow_text(values)
    # keys in strictly increasing order (an extract sorted by its key) repeat none: two vectorised comparisons,
    # a short prefix first so that unsorted keys fail fast, instead of hashing millions of keys
    if arr.null_count == 0 and all(pc.all(pc.less(part[:-1], part[1:])).as_py() is not False
                                   for part in (arr[:4097], arr)):
        return np.zeros(0, dtype=np.int64)
    distinct = len(pc.unique(arr)) - (arr.null_count > 0)  # (count_distinct is twice as slow as unique)
    if distinct == len(arr) - arr.null_count:  # the usual case: no key repeats
        return np.zeros(0, dtype=np.int64)
    codes = pc.fill_null(pc.dictionary_encode(arr).indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    present = codes >= 0
    counts = np.bincount(codes[present])
    return np.flatnonzero(present & (counts[np.where(present, codes, 0)] > 1))


def _pandera_failures(table: str, df: pd.DataFrame, unparsed: list[Failure] = ()) -> list[Failure]:
    """Failures of the pandera schema, with ``unique`` checked by :func:`duplicated_keys` and placed where pandera
    reports it (after the column's ``not_nullable``); a cell already reported as unparseable (``unparsed``,
    parsed to missing) is not reported again as ``not_nullable``."""
    import pandera.pandas as pa  # the rules' library: loaded when a table is validated

    schema = table_schema(table, list(df.columns), unique_keys=False)
    failures = []
    for column in UNIQUE_COLUMNS[table]:
        if column in df.columns:
            rows = duplicated_keys(df[column])
            if len(rows):
                failures.append(Failure(table, column, "unique", rows))
    try:
        schema.validate(df, lazy=True, inplace=True)  # checks only: no copy of the frame
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return failures
    unique, failures = failures, []
    unaddressed = cases[cases["index"].isna()]
    if len(unaddressed):  # a check that failed without naming rows would silently accept the rows it broke
        what = "; ".join(f"{c}: {k}: {f}" for c, k, f in unaddressed[["column", "check", "failure_case"]]
                         .astype(str).drop_duplicates().head(5).itertuples(index=False))
        raise RuntimeError(f"table {table}: a rule could not be checked row by row (carequal defect; please report "
                           f"it with this message): {what}")
    row_level = (cases["schema_context"] == "DataFrameSchema").to_numpy()
    for (column, check), group in cases[~row_level].groupby(["column", "check"], dropna=False, sort=False):
        rows = np.unique(group["index"].astype(np.int64).to_numpy())
        rule = _rule_name(str(check))
        if rule == "not_nullable":
            echoed = [f.rows for f in unparsed if f.column == column]
            rows = np.setdiff1d(rows, np.concatenate(echoed)) if echoed else rows
            if not len(rows):
                continue
        failures.append(Failure(table, str(column), rule, rows,
                                detail=_allowed_text(table, str(column)) if rule == "allowed_values" else ""))
    # pandera checks a column's nullability, then its uniqueness, then its other checks
    for f in unique:
        rank = _column_rank(table, f.column)
        at = next((i + 1 for i, g in enumerate(failures) if g.column == f.column and g.rule == "not_nullable"),
                  next((i for i, g in enumerate(failures) if _column_rank(table, g.column) > rank), len(failures)))
        failures.insert(at, f)
    # a row-level check reports every column of each failing row: name it by the check, once per row
    for number, group in cases[row_level].groupby("check_number", sort=True):
        rule = schema.checks[int(number)].name
        rows = np.unique(group["index"].astype(np.int64).to_numpy())
        failures.append(Failure(table, _ROW_RULE_COLUMNS.get(rule, table), rule, rows))
    return failures


def _column_rank(table: str, column: str) -> int:
    """Position of a column in the contract (the order pandera checks columns in)."""
    return next((i for i, spec in enumerate(CONTRACT[table]) if spec.name == column), len(CONTRACT[table]))


_ROW_RULE_COLUMNS = {
    "partner_since_without_partner": "partner_since",
    "death_before_birth": "death_date",
    "birth_in_future": "birth_date",
    "discharge_before_admit": "discharge_date",
    "poa_count_mismatch": "secondary_poa",
    "end_before_start": "end_date",
}


_BUILTIN_CHECKS = {
    "isin": "allowed_values",
    "str_matches": "code_format",
    "in_range": "range",
    "greater_than_or_equal_to": "range",
    "field_uniqueness": "unique",
    "multiple_fields_uniqueness": "unique",
    "not_nullable": "not_nullable",
}


def _allowed_text(table: str, column: str) -> str:
    """The allowed codes of a category column, for a reason (discharge status codes, a long list, are not)."""
    spec = next((s for s in CONTRACT[table] if s.name == column), None)
    return f"allowed: {', '.join(spec.allowed)}" if spec is not None and spec.allowed else ""


def _rule_name(check: str) -> str:
    """Our rule name for a pandera check (built-in checks report their call, e.g. ``isin([...])``)."""
    if check in RULES:
        return check
    return _BUILTIN_CHECKS.get(check.split("(", 1)[0], check)


# ---------------------------------------------------------------------------------------------- validation


def _missing_columns(table: str, df: pd.DataFrame) -> list[str]:
    return [s.name for s in CONTRACT[table] if s.required and s.name not in df.columns]


def parse_table(table: str, raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Failure]]:
    """Parse a raw table (text or typed) into contract types; report cells that cannot be parsed.

    Raises :class:`SchemaError` if a required column is missing (no row can be kept then).
    Columns outside the contract are kept as they are.
    """
    if table not in CONTRACT:
        raise ParameterError(f"unknown table {table!r}; the contract tables are {', '.join(TABLES)}")
    missing = _missing_columns(table, raw)
    if missing:
        raise SchemaError(
            f"{table}: required column(s) missing: {', '.join(missing)} (rule missing_column); "
            f"the file has {column_list(raw.columns)}. "
            f"See data/README.md for the contract."
        )
    if table in NONEMPTY_TABLES and len(raw) == 0:
        raise SchemaError(f"{table}: the table has no rows, only its header (rule table_empty); facilities, "
                          "patients and stays need at least one row each: there is nothing to report on")
    out = raw.reset_index(drop=True).copy()
    failures = []
    window = date_window()
    for spec in CONTRACT[table]:
        if spec.name not in out.columns:
            continue
        parsed, bad = _parse_column(out[spec.name], spec)
        out[spec.name] = parsed
        for rule, rows in bad.items():
            if len(rows):
                detail = f"expected {_EXPECTED[spec.kind]}" if rule == "type" else ""
                failures.append(Failure(table, spec.name, rule, rows, detail=detail))
        if spec.kind == "date":
            rows = _implausible_dates(table, spec.name, parsed, window)
            if len(rows):
                lo, hi = (d.date().isoformat() for d in window)
                plausible = f"from {lo} (no upper limit)" if (table, spec.name) in OPEN_ENDED_DATES else f"{lo} to {hi}"
                failures.append(Failure(table, spec.name, "date_implausible", rows, detail=f"plausible: {plausible}"))
    return out, failures


def column_list(columns, limit: int = 20, width: int = 40) -> str:
    """Column names for a message: at most ``limit``, each cut to ``width`` characters (a header read with the
    wrong separator is one long name).

    Examples
    --------
    >>> column_list(["a", "b" * 50, "c"], limit=2, width=5)
    'a, bbbb…, … (3 in all)'
    """
    names = [str(c) for c in columns]
    shown = [n if len(n) <= width else n[:width - 1] + "…" for n in names[:limit]]
    return (", ".join(shown) + (f", … ({len(names)} in all)" if len(names) > limit else "")) or "no columns"


def _examples(table: str, frame: pd.DataFrame, rows: np.ndarray, k: int = 5) -> str:
    """Up to ``k`` distinct keys of the failing rows (copies of one key, as in ``unique``, are shown once)."""
    keys = [c for c in KEYS[table] if c in frame.columns]
    sample = frame.iloc[rows[:10 * k]]
    parts: list[str] = []
    for _, row in sample[keys].iterrows():
        values = []
        for c in keys:
            v = row[c]
            values.append(v.strftime("%Y-%m-%d") if isinstance(v, pd.Timestamp) else str(v))
        part = "/".join(values)
        if part not in parts:
            parts.append(part)
        if len(parts) == k:
            break
    label = "/".join(keys)
    return f"{label} = {', '.join(parts)}"


def _failure_message(f: Failure, frame: pd.DataFrame) -> str:
    rule_text = RULES.get(f.rule, f.rule) + (f"; {f.detail}" if f.detail else "")
    noun = "row" if len(f.rows) == 1 else "rows"
    message = (f"{f.table}.{f.column}: {len(f.rows)} {noun} fail rule {f.rule} ({rule_text}); "
               f"examples {_examples(f.table, frame, f.rows)}")
    if f.detail and f.rule != "type":
        message += f"; {f.detail}"
    return message


def _failures_frame(failures: list[Failure], frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    rows = [
        {"table": f.table, "column": f.column, "rule": f.rule, "n_rows": len(f.rows),
         "examples": _examples(f.table, frames[f.table], f.rows), "message": _failure_message(f, frames[f.table])}
        for f in failures
    ]
    return pd.DataFrame(rows, columns=["table", "column", "rule", "n_rows", "examples", "message"])


def _died_before_stays(patients: pd.DataFrame, stays: pd.DataFrame, pos: np.ndarray | None = None) -> list[Failure]:
    """Patients whose ``death_date`` is before the admission (``admit_after_death``) or the discharge
    (``discharge_after_death``) of one of the given stays: failures of the **patient** rows, on ``death_date``
    (see the module docstring for why the patient carries them). ``detail`` names up to five of the
    contradicting stays, those of the first patients reported. ``pos``: each stay's patient row
    (:func:`key_positions`), if already known."""
    pos = key_positions(stays["patient_id"], patients["patient_id"]) if pos is None else pos
    death = pd.Series(take(patients["death_date"], pos, np.datetime64("NaT")), index=stays.index)
    admitted_after = (stays["admit_date"] > death).fillna(False).to_numpy()
    ended_after = (stays["discharge_date"] > death).fillna(False).to_numpy() & ~admitted_after
    out = []
    for rule, mask, what in (("admit_after_death", admitted_after, "admitted"),
                             ("discharge_after_death", ended_after, "discharged")):
        hit = np.flatnonzero(mask & (pos >= 0))
        if not len(hit):
            continue
        rows = np.unique(pos[hit])
        # the stays of the patients shown as examples, in patient then stay order
        shown = hit[np.isin(pos[hit], rows[:5])]
        shown = shown[np.lexsort((shown, pos[shown]))][:5]
        ids = ", ".join(map(str, stays["stay_id"].to_numpy()[shown]))
        out.append(Failure("patients", "death_date", rule, rows, detail=f"stays {what} after it: stay_id = {ids}"))
    return out


def _stays_before_birth(stays: pd.DataFrame, patients: pd.DataFrame, pos: np.ndarray | None = None) -> list[Failure]:
    """Stays admitted before their patient's birth; ``pos``: each stay's row in ``patients``, if already known."""
    pos = key_positions(stays["patient_id"], patients["patient_id"]) if pos is None else pos
    birth = pd.Series(take(patients["birth_date"], pos, np.datetime64("NaT")), index=stays.index)
    rows = np.flatnonzero((stays["admit_date"] < birth).fillna(False).to_numpy())
    return [Failure("stays", "admit_date", "admit_before_birth", rows)] if len(rows) else []


def _exact_duplicates(table: str, frame: pd.DataFrame, raw: pd.DataFrame, failures: list[Failure]) -> list[Failure]:
    """Split each ``unique`` failure by whether the copies of a key are the same row as given.

    A key whose copies are all identical in every column of ``raw`` keeps its first copy (in input order);
    the other copies fail ``exact_duplicate``. A key whose copies differ in any column keeps ``unique`` on
    every copy. Rows are compared as given, so ``1`` and ``01`` differ: only a true repeat is dropped.
    """
    out = []
    for f in failures:
        if f.rule != "unique":
            out.append(f)
            continue
        rows = np.sort(f.rows)
        copies = raw.reset_index(drop=True).iloc[rows]
        key = pd.factorize(frame[f.column].to_numpy()[rows])[0]
        first_version = ~copies.duplicated(keep="first").to_numpy()
        versions = np.bincount(key, weights=first_version)  # distinct rows per key
        exact = versions[key] == 1
        conflicting, extra = rows[~exact], rows[exact & ~first_version]
        if len(conflicting):
            out.append(Failure(table, f.column, "unique", conflicting))
        if len(extra):
            out.append(Failure(table, f.column, "exact_duplicate", extra))
    return out


def _sort_order(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``np.lexsort(keys)`` (last key primary, stable), by one stable radix sort of the keys packed into one
    int64 when their ranges fit in 63 bits (several times faster at millions of rows); else ``np.lexsort``.

    Examples
    --------
    >>> keys = (np.array([3, 1, 2, 1]), np.array([0, 0, 1, 0]))
    >>> _sort_order(keys).tolist() == np.lexsort(keys).tolist()
    True
    """
    if not len(keys[0]):
        return np.lexsort(keys)
    lows = [int(k.min()) for k in keys]
    bits = [(int(k.max()) - lo).bit_length() for k, lo in zip(keys, lows, strict=True)]
    if sum(bits) > 63:
        return np.lexsort(keys)
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    shift = 0
    for k, lo, b in zip(keys, lows, bits, strict=True):
        packed |= (k.astype(np.int64) - lo) << shift
        shift += b
    return np.argsort(packed, kind="stable")


def overlapping_stays(stays: pd.DataFrame, facilities: pd.DataFrame,
                      patient_codes: np.ndarray | None = None) -> np.ndarray:
    """Positions of stays that start before the same patient's previous stay in the same setting ended.

    Stays are ordered by admit date, then discharge date, then stay_id; a stay that starts on the day the
    previous one ended (a same-day transfer) is not an overlap. The later stay of an overlapping pair is
    the one reported. ``patient_codes``: one non-negative integer per patient for each stay (e.g. its
    patient's row), if already known; by default the patient ids are factorised.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["A", "B"], "setting": ["acute", "acute"]})
    >>> st = pd.DataFrame({"stay_id": ["s1", "s2", "s3"], "patient_id": ["p", "p", "p"],
    ...     "facility_id": ["A", "B", "A"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-03"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-08", "2024-01-04"])})
    >>> overlapping_stays(st, fac).tolist()  # s3 starts on day 3, inside s1 (days 1-5)
    [2]
    """
    # integer keys: patient codes, setting codes and day numbers sort an order of magnitude faster than text
    patient = (pd.factorize(stays["patient_id"])[0] if patient_codes is None else patient_codes).astype(np.int64)
    setting = key_positions(stays["facility_id"], facilities["facility_id"])
    setting = pd.factorize(take(facilities["setting"], setting, ""))[0].astype(np.int64)
    admit = stays["admit_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    discharge = stays["discharge_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    # stay_id only orders stays with the same admission and discharge day: rank those ids alone
    group = patient * 8 + setting
    order = _sort_order((discharge, admit, group))
    g, a, d = group[order], admit[order], discharge[order]
    same = (g[1:] == g[:-1]) & (a[1:] == a[:-1]) & (d[1:] == d[:-1])
    if same.any():
        tied = np.zeros(len(order), dtype=bool)
        tied[1:] |= same
        tied[:-1] |= same
        tie_break = np.zeros(len(order), dtype=np.int64)
        rows = order[tied]
        ids = stays["stay_id"].to_numpy()[rows].astype(str)
        tie_break[rows] = np.argsort(np.argsort(ids, kind="stable"), kind="stable")
        order = np.lexsort((tie_break, discharge, admit, group))
        g, a, d = group[order], admit[order], discharge[order]
    # running maximum of discharge within (patient, setting): offset each group so one accumulate serves all
    new_group = np.r_[True, g[1:] != g[:-1]]
    block = np.cumsum(new_group).astype(np.int64) * (1 << 32)
    running = np.maximum.accumulate(d + block) - block
    prev_end = np.r_[np.iinfo(np.int64).min, running[:-1]]
    overlap = ~new_group & (a < prev_end)
    return np.sort(order[overlap])


def overlapping_sponsors(enrollment: pd.DataFrame) -> np.ndarray:
    """Positions of enrollment periods that name a sponsor and overlap an earlier period of the same patient
    naming another sponsor.

    Periods with a sponsor are ordered by patient, start date and end date; each is compared with the earlier
    period of the patient that reaches furthest (ties: the later in that order). Periods without a sponsor
    never conflict. The later period of a conflicting pair is the one reported.

    Examples
    --------
    >>> enr = pd.DataFrame({"patient_id": ["p", "p", "p", "q"], "sponsor": ["A", "B", None, "A"],
    ...     "start_date": pd.to_datetime(["2024-01-01", "2024-06-01", "2024-02-01", "2024-01-01"]),
    ...     "end_date": pd.to_datetime(["2024-06-30", "2024-12-31", "2024-12-31", "2024-12-31"])})
    >>> overlapping_sponsors(enr).tolist()  # B starts on 1 June, while A runs to 30 June
    [1]
    """
    named = np.flatnonzero(enrollment["sponsor"].notna().to_numpy())
    if len(named) < 2:
        return np.zeros(0, dtype=np.int64)
    frame = enrollment.iloc[named]
    patient = pd.factorize(frame["patient_id"])[0].astype(np.int64)
    sponsor = pd.factorize(frame["sponsor"])[0].astype(np.int64)
    start = frame["start_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    end = frame["end_date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    order = np.lexsort((end, start, patient))
    p, s, e, k = patient[order], start[order], end[order], sponsor[order]
    new_patient = np.r_[True, p[1:] != p[:-1]]
    # the earlier period reaching furthest: the running maximum of the end within each patient (each patient's
    # days offset so that one accumulate serves all), and the last row that reached it
    days = e - e.min()
    block = np.cumsum(new_patient).astype(np.int64) * (int(days.max()) + 1)
    running = np.maximum.accumulate(days + block)
    holder = np.maximum.accumulate(np.where(days + block == running, np.arange(len(order)), -1))
    prev = np.r_[-1, holder[:-1]]
    conflict = ~new_patient & (s <= e[prev]) & (k != k[prev])
    return np.sort(named[order[conflict]])


def _is_in(values, value_set: pa_arrow.Array) -> np.ndarray:
    return pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False).astype(bool)


def _key_positions_many(columns: list[pd.Series], keys: pd.Series) -> list[np.ndarray]:
    """:func:`key_positions` of each column among ``keys``, by one ``index_in`` over all the columns as one
    chunked array, so the hash table of ``keys`` (millions of patients) is built once rather than once per table."""
    arrays = [arrow_text(c) for c in columns]
    found = pc.index_in(pa_arrow.chunked_array(arrays, type=pa_arrow.string()), value_set=arrow_text(keys))
    found = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.split(found, np.cumsum([len(a) for a in arrays])[:-1])


def _foreign_key(table: str, frame: pd.DataFrame, column: str, parent_keys: pa_arrow.Array,
                 quarantined_keys: pa_arrow.Array, known: np.ndarray | None = None) -> list[Failure]:
    """Unknown and quarantined parents of ``frame[column]``; ``known`` (from :func:`_key_positions_many`) saves the
    look-up among ``parent_keys``."""
    values = arrow_text(frame[column])
    known = _is_in(values, parent_keys) if known is None else known
    # no quarantined parent (the usual case): no second hash look-up
    in_quarantine = _is_in(values, quarantined_keys) if len(quarantined_keys) else np.zeros(len(values), bool)
    out = []
    unknown = np.flatnonzero(~known & ~in_quarantine)
    if len(unknown):
        out.append(Failure(table, column, "unknown_patient" if column == "patient_id" else "unknown_facility",
                           unknown))
    parent_q = np.flatnonzero(in_quarantine & ~known)
    if len(parent_q):
        out.append(Failure(table, column, "parent_quarantined", parent_q))
    return out


def _split(table: str, frame: pd.DataFrame, raw: pd.DataFrame, failures: list[Failure]):
    """Accepted rows and quarantine rows of one table given its failures."""
    n = len(frame)
    bad = np.zeros(n, dtype=bool)
    reasons = np.empty(n, dtype=object)
    reasons[:] = ""
    for f in failures:
        bad[f.rows] = True
        label = f"{f.column}: {f.rule}" + (f" ({f.detail})" if f.detail else "")
        reasons[f.rows] = np.where(reasons[f.rows] == "", label, reasons[f.rows] + "; " + label)
    accepted = frame.loc[~bad] if bad.any() else frame
    quarantined = raw.reset_index(drop=True).loc[bad].copy()
    quarantined.insert(0, "row_number", np.flatnonzero(bad) + 1)
    quarantined["reason"] = reasons[bad]
    return accepted, quarantined


_THREADS = 2
"""Tables parsed at once by :func:`validate_tables` (Arrow kernels release the GIL)."""


def validate_tables(raw_tables: Mapping[str, pd.DataFrame], *, mode: str = "strict") -> ValidatedTables:
    """Validate the contract tables, alone and against each other.

    Parameters
    ----------
    raw_tables : mapping of table name to DataFrame
        ``facilities``, ``patients``, ``stays`` and ``enrollment`` are required; ``ed_visits`` is optional.
        Values may be text (as read from CSV) or already typed (as read from Parquet).
    mode : {"strict", "quarantine"}
        ``strict`` raises one :class:`SchemaError` listing every failure; ``quarantine`` sets failing rows
        aside with a reason and keeps the rest.

    Returns
    -------
    ValidatedTables

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1"], "name": ["General"], "setting": ["acute"],
    ...     "market": ["North"], "is_partner": ["true"], "partner_since": ["2023-01-01"]})
    >>> pat = pd.DataFrame({"patient_id": ["P1"], "birth_date": ["1950-02-03"], "sex": ["f"],
    ...     "dual_eligible": ["0"], "death_date": [""], "market": ["North"]})
    >>> st = pd.DataFrame({"stay_id": ["S1", "S2"], "patient_id": ["P1", "P9"],
    ...     "facility_id": ["H1", "H1"], "admit_date": ["2024-03-01", "2024-04-01"],
    ...     "discharge_date": ["2024-03-05", "2024-04-03"], "discharge_status": ["1", "01"],
    ...     "admission_type": ["1", "1"], "principal_dx": ["i50.9", "J18.9"], "secondary_dx": ["E11.9", ""]})
    >>> enr = pd.DataFrame({"patient_id": ["P1"], "start_date": ["2020-01-01"], "end_date": ["2024-12-31"]})
    >>> out = validate_tables({"facilities": fac, "patients": pat, "stays": st, "enrollment": enr},
    ...                       mode="quarantine")
    >>> out.counts.set_index("table").loc["stays"].tolist()
    [2, 1, 1]
    >>> out.quarantine["stays"][["stay_id", "reason"]].to_string(index=False)
    'stay_id               reason\\n     S2 patient_id: unknown_patient'
    >>> out.tables["stays"][["principal_dx", "discharge_status"]].iloc[0].tolist()
    ['I509', '01']
    """
    if mode not in ("strict", "quarantine"):
        raise ParameterError(f"mode must be 'strict' or 'quarantine', not {mode!r}")
    unknown = sorted(set(raw_tables) - set(TABLES))
    if unknown:
        raise ParameterError(f"unknown table(s) {', '.join(unknown)}; the contract tables are {', '.join(TABLES)}")
    absent = [t for t in TABLES if t not in raw_tables and t not in OPTIONAL_TABLES]
    if absent:
        raise SchemaError(f"required table(s) missing: {', '.join(absent)}; see data/README.md for the contract")

    parsed: dict[str, pd.DataFrame] = {}
    failures: dict[str, list[Failure]] = {}
    missing_cols = []
    present = [t for t in TABLES if t in raw_tables]
    # tables parse independently, mostly inside Arrow kernels that release the GIL: two threads (the module
    # docstring); results are gathered in table order, so failures and messages do not depend on scheduling
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        jobs = {t: pool.submit(parse_table, t, raw_tables[t]) for t in present}
        for table in present:
            try:
                parsed[table], failures[table] = jobs[table].result()
            except SchemaError as exc:
                missing_cols.append(str(exc))
    if missing_cols:
        raise SchemaError("\n".join(missing_cols))

    accepted: dict[str, pd.DataFrame] = {}
    quarantine: dict[str, pd.DataFrame] = {}
    all_failures: list[Failure] = []

    def finish(table: str) -> None:
        fails = failures[table]
        all_failures.extend(fails)
        accepted[table], quarantine[table] = _split(table, parsed[table], raw_tables[table], fails)

    for table in parsed:
        failures[table] += _exact_duplicates(table, parsed[table], raw_tables[table],
                                             _pandera_failures(table, parsed[table], failures[table]))

    finish("facilities")
    fac_ok = arrow_text(accepted["facilities"]["facility_id"])
    fac_q = arrow_text(quarantine["facilities"]["facility_id"].astype("str"))
    facility_fk = {t: _foreign_key(t, parsed[t], "facility_id", fac_ok, fac_q)
                   for t in ("stays", "ed_visits") if t in parsed and "facility_id" in parsed[t].columns}
    # a death date before a stay is the patient's failure (module docstring); the evidence is every stay that
    # passes its own table's rules and names a known facility
    evidence = np.ones(len(parsed["stays"]), dtype=bool)
    for f in failures["stays"] + facility_fk["stays"]:
        evidence[f.rows] = False
    # one look-up of every child row's patient among the parsed patients (the first row of each id) serves the
    # death and birth checks and the foreign keys: the only row of an id that can be accepted is its first
    # (copies that differ are all quarantined, exact copies after the first too)
    children = [t for t in ("stays", "enrollment", "ed_visits") if t in parsed]
    patient_pos = dict(zip(children, _key_positions_many([parsed[t]["patient_id"] for t in children],
                                                         parsed["patients"]["patient_id"]), strict=True))
    stays = parsed["stays"][["stay_id", "patient_id", "admit_date", "discharge_date"]]  # no copy of the rest
    evidence = np.flatnonzero(evidence)
    failures["patients"] += _died_before_stays(parsed["patients"], stays.iloc[evidence],
                                               patient_pos["stays"][evidence])
    finish("patients")

    pat_ok = arrow_text(accepted["patients"]["patient_id"])
    pat_q = arrow_text(quarantine["patients"]["patient_id"].astype("str"))
    patient_accepted = np.ones(len(parsed["patients"]), dtype=bool)
    patient_accepted[quarantine["patients"]["row_number"].to_numpy() - 1] = False
    pat_known = {t: (pos >= 0) & patient_accepted[np.maximum(pos, 0)] for t, pos in patient_pos.items()}
    # a parsed patient's row among the accepted ones (int32 while it fits: held until the reference is built)
    accepted_patient_row = (np.cumsum(patient_accepted) - 1).astype(
        np.int32 if len(patient_accepted) < 2**31 else np.int64)
    patient_rows: dict[str, np.ndarray] = {}

    for table in ("stays", "enrollment", "ed_visits"):
        if table not in parsed:
            continue
        frame = parsed[table]
        fails = failures[table] + _foreign_key(table, frame, "patient_id", pat_ok, pat_q, pat_known[table])
        fails += facility_fk.get(table, [])
        if table == "stays":
            bad = np.zeros(len(frame), dtype=bool)
            for f in fails:
                bad[f.rows] = True
            ok_pos = np.flatnonzero(~bad)
            clean = frame.iloc[ok_pos]
            for f in _stays_before_birth(clean, parsed["patients"], patient_pos["stays"][ok_pos]):
                fails.append(Failure(table, f.column, f.rule, ok_pos[f.rows]))
            bad2 = bad.copy()
            for f in fails:
                bad2[f.rows] = True
            ok_pos = np.flatnonzero(~bad2)
            overlap = overlapping_stays(frame.iloc[ok_pos], accepted["facilities"], patient_pos["stays"][ok_pos])
            if len(overlap):
                fails.append(Failure(table, "admit_date", "overlapping_stay", ok_pos[overlap]))
        if table == "enrollment" and "sponsor" in frame.columns:
            bad = np.zeros(len(frame), dtype=bool)
            for f in fails:
                bad[f.rows] = True
            ok_pos = np.flatnonzero(~bad)
            overlap = overlapping_sponsors(frame.iloc[ok_pos])
            if len(overlap):
                fails.append(Failure(table, "sponsor", "sponsor_overlap", ok_pos[overlap]))
        failures[table] = fails
        finish(table)
        # every accepted row names an accepted patient (else the foreign key quarantined it): its row among the
        # accepted patients, from the look-up above
        accepted_rows = np.ones(len(frame), dtype=bool)
        accepted_rows[quarantine[table]["row_number"].to_numpy() - 1] = False
        patient_rows[table] = accepted_patient_row[patient_pos[table][accepted_rows]]

    failures_df = _failures_frame(all_failures, parsed)
    if mode == "strict" and len(all_failures):
        total = int(failures_df["n_rows"].sum())
        message = (
            f"the data break {len(all_failures)} contract rule(s) ({total} failing row-rules):\n  "
            + "\n  ".join(failures_df["message"])
            + "\nFix the source rows or load with mode='quarantine' to set them aside."
        )
        raise SchemaError(message, failures=failures_df)
    counts = pd.DataFrame(
        [{"table": t, "loaded": len(parsed[t]), "accepted": len(accepted[t]), "quarantined": len(quarantine[t])}
         for t in parsed]
    )
    return ValidatedTables(accepted, quarantine, failures_df, counts, patient_rows)


def diagnoses_long(stays: pd.DataFrame, *, stay_col: str = "stay_id") -> pd.DataFrame:
    """All diagnoses of each stay in long form: ``stay_id``, ``position`` (0 = principal), ``code``, ``poa``.

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["S1", "S2"], "principal_dx": ["I509", "J189"],
    ...     "secondary_dx": ["E119;N183", np.nan], "secondary_poa": ["Y;N", np.nan]})
    >>> diagnoses_long(st)
      stay_id  position  code   poa
    0      S1         0  I509  <NA>
    1      S1         1  E119     Y
    2      S1         2  N183     N
    3      S2         0  J189  <NA>
    """
    principal = pd.DataFrame({
        stay_col: stays[stay_col].to_numpy(), "position": 0, "code": stays["principal_dx"].to_numpy(),
        "poa": stays["principal_dx_poa"].to_numpy() if "principal_dx_poa" in stays else pd.NA,
    })
    sec = stays[[stay_col, "secondary_dx"]].dropna(subset=["secondary_dx"])
    codes = sec["secondary_dx"].str.split(CODE_SEPARATOR)
    lengths = codes.str.len().to_numpy()
    flat_codes = np.concatenate(codes.to_numpy()) if len(codes) else np.array([], dtype=object)
    positions = np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(codes) else np.array([], dtype=int)
    if "secondary_poa" in stays.columns:
        poa_lists = stays.loc[sec.index, "secondary_poa"]
        flat_poa = np.concatenate([
            p.split(CODE_SEPARATOR) if isinstance(p, str) else [pd.NA] * n
            for p, n in zip(poa_lists.to_numpy(), lengths, strict=True)
        ]) if len(codes) else np.array([], dtype=object)
    else:
        flat_poa = np.full(len(flat_codes), pd.NA, dtype=object)
    secondary = pd.DataFrame({
        stay_col: np.repeat(sec[stay_col].to_numpy(), lengths), "position": positions,
        "code": flat_codes, "poa": flat_poa,
    })
    out = pd.concat([principal, secondary], ignore_index=True)
    order = out[stay_col].map({s: i for i, s in enumerate(stays[stay_col])})
    out = out.assign(_o=order.to_numpy()).sort_values(["_o", "position"], kind="stable").drop(columns="_o")
    out["poa"] = out["poa"].astype("string")
    return out.reset_index(drop=True)


def contract_markdown() -> str:
    """The contract as Markdown tables (used to write ``data/README.md``; a test keeps them in step)."""
    lines = []
    for table in TABLES:
        opt = " (optional table)" if table in OPTIONAL_TABLES else ""
        lines += [f"### `{table}`{opt}", "", "| column | type | required | empty allowed | meaning |",
                  "|---|---|---|---|---|"]
        for s in CONTRACT[table]:
            allowed = f" Allowed: {', '.join(s.allowed)}." if s.allowed else ""
            lines.append(f"| `{s.name}` | {s.kind} | {'yes' if s.required else 'no'} | "
                         f"{'yes' if s.nullable else 'no'} | {s.description}{allowed} |")
        lines.append("")
    lines += ["### Rules", "", "| rule | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in RULES.items()]
    return "\n".join(lines) + "\n"

