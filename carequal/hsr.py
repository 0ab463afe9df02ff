"""CMS Hospital-Specific Reports (HSR) for the Hospital Readmissions Reduction Program: read, re-compute, compare.

What an HSR is
--------------
Each year CMS sends every IPPS hospital a Hospital-Specific Report, an Excel workbook with the hospital's HRRP
results: Table 1 (payment adjustment factor, dual proportion, peer group), Table 2 (per measure: eligible
discharges, readmissions among them, predicted and expected readmission rates, the excess readmission ratio
ERR, peer-group median ERR, penalty indicator, payment weight, national observed rate) and one discharge-level
table per measure (AMI, COPD, HF, pneumonia, CABG, elective primary THA/TKA). A discharge table lists the
hospital's stays with the cohort inclusion/exclusion indicator, the 30-day unplanned-readmission flag and the
risk variables of CMS's logistic model (0/1 condition flags and "Years Over 65 (continuous)"); one row of the
table carries the national model's coefficients under the risk-variable headers, plus the hospital's own
intercept ``HOSP_EFFECT`` and the average hospital's intercept ``AVG_EFFECT``. CMS's mock HSRs carry mock
stays but CMS's real national coefficients and effects (methodology digest §1.1, §2.2, §6.1).

The formulas (HSR Table 2 footnotes [d]-[f]; methodology digest §2.2)
----------------------------------------------------------------------
For the hospital's eligible index stays ``i = 1..n`` with risk-variable vector ``x_i`` and coefficients ``β``::

    linear predictor   xβ_i        = Σ_k x_ik β_k                 (no intercept in β)
    predicted          p_i         = expit(HOSP_EFFECT + xβ_i)    expit(z) = 1 / (1 + e^-z)
    expected           e_i         = expit(AVG_EFFECT  + xβ_i)
    predicted rate     P           = mean_i p_i
    expected rate      E           = mean_i e_i
    ERR                            = P / E

``HOSP_EFFECT`` and ``AVG_EFFECT`` play the role of the model intercept: CMS's hierarchical logistic model has a
hospital-specific random intercept (its empirical-Bayes estimate for this hospital is ``HOSP_EFFECT``) and the
average of those intercepts (``AVG_EFFECT``). They are therefore passed separately, never as a coefficient.

Columns used
------------
Found by their header text (below): ``ID Number`` (the row key; rows whose ID is a whole number are stays),
``Cohort Inclusion/Exclusion Indicator`` (``0`` = the stay is in the measure cohort; any other value lists
the exclusion criteria the stay met, e.g. ``1,4,6``, codes defined in CMS's HSR user guide), ``Unplanned
Readmission within 30 Days (Yes/No)`` (``Yes`` = an event), ``HOSP_EFFECT`` and ``AVG_EFFECT``; optionally
``Index Stay (Yes/No)`` and ``Planned Readmission within 30 Days (Yes/No)``. The risk variables are the headed
columns whose cell in the coefficient row holds a number. Eligible discharges = stays with indicator ``0``;
readmissions = those of them flagged ``Yes``. A layout without the indicator but with a Yes/No column saying
whether the stay is in the cohort (``Index Stay (Yes/No)``, ``Included in Measure Cohort``) is read with that
column instead (``Yes`` = eligible); when both are present the indicator decides (:func:`eligible_stays`).

How the layout is found
-----------------------
Layouts differ between years (rows and columns move, footnote letters change, wording changes, and the
workbook's own note "row 8 contains risk factor coefficients beginning in column S" is not a contract), so
nothing is read by cell position. Header text is reduced to a key (:func:`normalise_header`: footnote markers
``[a]``, ``*``, ``†``, ``‡``, ``§`` and superscripts removed, case folded, punctuation and runs of whitespace
and line breaks turned into single spaces) and matched in full against the known wordings and their synonyms
(:data:`DISCHARGE_HEADERS`, :data:`TABLE2_HEADERS`; a footnote number after the wording, as in ``Excess
Readmission Ratio (ERR) 3``, is accepted too). The header row of a table is the row holding all its required
headers, searched over the whole sheet; Table 2 is the sheet with the results header row; a discharge table is
any sheet with a ``HOSP_EFFECT``, ``AVG_EFFECT``, cohort indicator or index-stay header, and its measure is read
from the sheet name, else from its title rows. Measures are recognised abbreviated or spelt out (``PN`` or
``Pneumonia``, ``HK`` or ``THA/TKA``, ``HF`` or ``Heart Failure``, ``AMI``, ``COPD``, ``CABG`` or their full
names). The coefficient row is the row, other than the header, that is not a stay (no whole-number ID) and
holds the most numbers; blank rows, title rows and footnotes are skipped wherever they are. A required header
that cannot be found raises :class:`~carequal.errors.SchemaError` naming the sheet, the header with the
wordings accepted for it, and the headers the closest row does have.

Numbers stored as text
----------------------
Any cell read as a number (Table 2 values, coefficients, ``HOSP_EFFECT``, ``AVG_EFFECT``, risk variables,
ID numbers) may also be text holding a number (:func:`cell_number`): surrounding spaces, thousands
separators and a trailing ``%`` (divided by 100) are accepted, so ``" 1,234 "`` is 1234 and ``"12.5%"`` is
0.125. A Table 2 value stored as text shows exactly its own digits, so it is compared at those.

Blank risk-variable cells
-------------------------
CMS's discharge tables hold "a 1 if the patient was identified as having that risk factor ...; 0 otherwise"
(the note above each table): a risk factor is present only when flagged, so a **blank** 0/1 risk-factor cell of
an eligible stay is read as 0, the factor absent, and the number of such cells per column is kept
(:attr:`HSRMeasure.blank_risk_cells`) and reported by :func:`reproduce_table2`. This applies to flags only: a
blank continuous variable (``Years Over 65 (continuous)``, any column whose values are not all 0/1) has no
"absent" value and raises :class:`~carequal.errors.SchemaError`. ``N/A`` ("not applicable for this
discharge") is not read as 0: it is missing, and an eligible stay with N/A in a risk variable cannot be
re-computed. Blank cells of excluded stays stay missing (they are not used).

How CMS rounds
--------------
Table 2 cells hold full-precision values; Excel displays them through the cell's number format: rates as
``0.0000%`` (four decimals of a percentage, i.e. six of the fraction; footnote 4 "per 100 discharges"), ERR as
``0.0000``, counts as whole numbers. Footnote [f] warns that the shown ERR need not equal the ratio of the
shown rates: compare each quantity at the digits shown for it (:attr:`HospitalSpecificReport.table2_decimals`,
read from the number formats, or from the text of a value stored as text), never a ratio of rounded numbers.

Size: about 1,200 lines, one module because reading the workbook (with its layout variants), re-computing its
numbers and comparing them are one job, tested as one against the mock reports.

References
----------
CMS, FY 2023 HRRP Hospital-Specific Report (mock), Table 2 footnotes [b]-[f], [k]; carequal methodology digest
§1.1 (programme frame), §2.2 (predicted, expected, ERR), §6.1 (national rates in the mock HSRs).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
from scipy.special import expit

from carequal.errors import ParameterError, SchemaError

__all__ = ["DISCHARGE_HEADERS", "HSRMeasure", "HospitalSpecificReport", "MEASURES", "TABLE2_HEADERS",
           "apply_published_model", "cell_number", "clean_header", "eligible_stays", "excess_readmission_ratio",
           "normalise_header", "read_hsr", "reproduce_table2", "shown_decimals"]

MEASURES: dict[str, str] = {
    "AMI": "acute myocardial infarction",
    "COPD": "chronic obstructive pulmonary disease",
    "HF": "heart failure",
    "PN": "pneumonia",
    "CABG": "coronary artery bypass graft surgery",
    "HK": "elective primary total hip and/or total knee arthroplasty (THA/TKA)",
}
"""The HRRP measures (codes as in CMS's HSR sheet names) and what they cover (methodology digest §1.1)."""

# Measure names on the header key (normalise_header: lower case, punctuation as spaces): the code as CMS
# abbreviates it, and the name spelt out.
_MEASURE_CODE: dict[str, str] = {"AMI": r"ami", "COPD": r"copd", "HF": r"hf", "PN": r"pn", "CABG": r"cabg",
                                 "HK": r"hk|tha tka"}
_MEASURE_NAME: dict[str, str] = {
    "AMI": r"acute myocardial infarction",
    "COPD": r"chronic obstructive pulmonary disease",
    "HF": r"heart failure",
    "PN": r"pneumonia",
    "CABG": r"coronary artery bypass( graft)?",
    "HK": r"(elective )?(primary )?(total hip arthroplasty and or total knee arthroplasty|total hip and or (total )?"
          r"knee arthroplasty|hip and or knee arthroplasty|hip knee( arthroplasty)?)",
}
# a Table 2 label is the whole cell: "HF", "Heart Failure", "Heart Failure (HF)", "CABG Surgery", "THA/TKA"
_MEASURE_LABEL: dict[str, str] = {
    code: rf"(({_MEASURE_CODE[code]})|({_MEASURE_NAME[code]})( ({_MEASURE_CODE[code]}))?)( surgery)?"
          r"( 30 day)?( readmissions?)?( measure)?"
    for code in MEASURES
}
# a sheet name or title mentions the measure somewhere: "Table 5 Discharges HF Readm", "... for the THA/TKA ..."
_MEASURE_IN_TITLE: dict[str, str] = {
    code: rf"\b({_MEASURE_CODE[code]}|{_MEASURE_NAME[code]})\b" for code in MEASURES
}
_MEASURE_IN_TITLE["HK"] += r"|\btha\b|\btka\b|\b(hip|knee) arthroplasty\b"

_INTERCEPT_NAMES = frozenset({"hosp_effect", "avg_effect", "intercept", "(intercept)", "const"})
_NOT_GIVEN = frozenset({"", "n/a", "na", "--", "-", "nq", "."})
"""Cell texts that mean "no value" in an HSR (Notes: "N/A = ... not applicable", "NQ = no qualifying cases")."""

_FOOTNOTE = re.compile(r"\[\s*([a-z0-9]{1,3})\s*\]", re.IGNORECASE)
# footnote markers that are not bracketed: *, daggers, section and pilcrow signs, superscript digits and letters
_MARKS = re.compile("[*\u2020\u2021\u00a7\u00b6\u00b9\u00b2\u00b3\u2070-\u209f\u1d2c-\u1d6a]+")
_YES_NO = r"( yes no| y n)?"


@dataclass(frozen=True)
class _Header:
    role: str
    text: str  # CMS's wording, used in messages
    pattern: str  # matched in full against the header key (normalise_header), a footnote number may follow
    required: bool = True
    also: tuple[str, ...] = ()  # other wordings accepted (documentation and messages; each must match pattern)
    group: str = ""  # required headers sharing a group are alternatives: one of them is enough

    def matches(self, key: str) -> bool:
        # a footnote number may follow the wording: "... (ERR) 3" and "... Days2" have the keys "... err 3", "... days2"
        return bool(key) and _header_regex(self.pattern).fullmatch(key) is not None


@functools.cache
def _header_regex(pattern: str) -> re.Pattern:
    """A header pattern compiled once (a reader matches it against every text cell of the workbook)."""
    return re.compile(rf"(?:{pattern})(?: ?\d{{1,2}})?")


DISCHARGE_HEADERS: tuple[_Header, ...] = (
    _Header("id", "ID Number", r"id( number| no)?", also=("ID", "ID No.")),
    _Header("inclusion", "Cohort Inclusion/Exclusion Indicator",
            r"(cohort )?inclusion( and| or)? exclusion (indicator|criteria|code|flag)s?|(cohort )?exclusion "
            r"(indicator|criteria|code)s?",
            also=("Inclusion/Exclusion Indicator", "Cohort Inclusion/Exclusion Criteria", "Exclusion Indicator"),
            group="eligibility"),
    _Header("unplanned", "Unplanned Readmission within 30 Days (Yes/No)",
            rf"(unplanned readmission within 30 days|unplanned 30 day readmission|30 day unplanned readmission|"
            rf"unplanned readmission){_YES_NO}",
            also=("Unplanned 30-Day Readmission (Y/N)", "Unplanned Readmission")),
    _Header("hospital_effect", "HOSP_EFFECT", r"hosp effect|hospital( specific)? effect",
            also=("Hospital Effect", "Hospital-Specific Effect")),
    _Header("average_effect", "AVG_EFFECT", r"avg effect|average( hospital)? effect",
            also=("Average Effect", "Average Hospital Effect")),
    _Header("index_stay", "Index Stay (Yes/No)",
            rf"(index stay|included in (the )?(measure )?cohort|(eligible|included) (for|in) (the )?measure"
            rf"( cohort)?){_YES_NO}",
            also=("Included in Measure Cohort", "Included in Measure Cohort (Y/N)", "Eligible for Measure"),
            group="eligibility"),
    _Header("planned", "Planned Readmission within 30 Days (Yes/No)",
            rf"(planned readmission within 30 days|planned 30 day readmission){_YES_NO}", required=False,
            also=("Planned 30-Day Readmission (Y/N)",)),
)
"""Headers of a discharge-level table: role, CMS's wording, the pattern matched on the header key and the other
wordings accepted. The stays CMS counts are told by the cohort indicator or, failing it, the index-stay column
(group ``eligibility``: one of the two is required)."""

TABLE2_HEADERS: tuple[_Header, ...] = (
    _Header("measure", "Measure", r"measures?( name)?|(measure )?cohort", also=("Measure Name", "Cohort")),
    _Header("n", "Number of Eligible Discharges", r"((number|no|count) of )?eligible discharges",
            also=("Eligible Discharges", "No. of Eligible Discharges")),
    _Header("events", "Number of Readmissions Among Eligible Discharges",
            r"((number|no|count) of )?readmissions among eligible discharges|(number|no|count) of readmissions",
            also=("Readmissions Among Eligible Discharges", "Number of Readmissions")),
    _Header("predicted", "Predicted Readmission Rate", r"predicted (readmission )?rate", also=("Predicted Rate",)),
    _Header("expected", "Expected Readmission Rate", r"expected (readmission )?rate", also=("Expected Rate",)),
    _Header("ratio", "Excess Readmission Ratio (ERR)", r"excess readmission ratio( err)?|err",
            also=("Excess Readmission Ratio", "ERR")),
    _Header("peer_median_ratio", "Peer Group Median ERR", r"peer group median (err|excess readmission ratio( err)?)",
            required=False, also=("Peer Group Median Excess Readmission Ratio",)),
    _Header("penalty", "Penalty Indicator (Yes/No)", rf"penalty indicator{_YES_NO}", required=False),
    _Header("payment_weight", "Ratio of DRG Payments Per Measure to Total Payments",
            r"ratio of drg payments per measure to total payments", required=False),
    _Header("national_rate", "National Observed Readmission Rate", r"national observed readmission rate",
            required=False),
)
"""Headers of Table 2 (CMS's results per measure); the roles are the column names of ``report.table2``."""

_TABLE2_VALUES = ("n", "events", "predicted", "expected", "ratio", "peer_median_ratio", "payment_weight",
                  "national_rate")


@dataclass(frozen=True, eq=False)
class HSRMeasure:
    """One measure's discharge-level table, as read from an HSR.

    Attributes
    ----------
    measure : str
        Measure code, a key of :data:`MEASURES`.
    sheet : str
        The worksheet it was read from.
    discharges : DataFrame
        One row per stay listed by CMS, every headed column in CMS's order, named by its header text (footnote
        markers removed, whitespace collapsed). Risk variables, ``HOSP_EFFECT`` and ``AVG_EFFECT`` are floats
        (numbers stored as text are converted; ``N/A`` becomes NaN; a blank risk-factor flag of an eligible stay
        becomes 0, see ``blank_risk_cells``); ``ID Number`` is an integer; every other column is text as CMS
        gives it.
    coefficients : Series
        The national model's coefficients, indexed by risk-variable column name (no intercept).
    hospital_effect, average_effect : float
        ``HOSP_EFFECT`` (NaN when CMS gives none, e.g. no qualifying cases) and ``AVG_EFFECT``.
    columns : dict
        Role → column name in ``discharges``: ``id``, ``unplanned``, ``hospital_effect``, ``average_effect``,
        at least one of ``inclusion`` (the cohort indicator) and ``index_stay`` (the Yes/No column), and
        ``planned`` when present.
    header_row, coefficient_row : int
        Sheet rows (1-based) where the header and the coefficients were found.
    blank_risk_cells : dict
        Risk-factor column → number of eligible stays whose cell was blank and was read as 0 (the factor
        absent; module docstring, "Blank risk-variable cells"). Columns without blanks are left out.
    """

    measure: str
    sheet: str
    discharges: pd.DataFrame
    coefficients: pd.Series
    hospital_effect: float
    average_effect: float
    columns: dict[str, str]
    header_row: int
    coefficient_row: int
    blank_risk_cells: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class HospitalSpecificReport:
    """The parts of an HRRP Hospital-Specific Report needed to re-compute CMS's Table 2.

    Attributes
    ----------
    path : Path
        The workbook read.
    fiscal_year : int or None
        Programme year found in the title text ("FY 2023"), if any.
    measures : dict
        Measure code → :class:`HSRMeasure`, one per discharge-level table.
    table2 : DataFrame
        CMS's Table 2, one row per measure: ``measure`` (code), ``label`` (as shown, footnote markers removed),
        ``n``, ``events``, ``predicted``, ``expected``, ``ratio`` (the ERR) and, when the workbook has them,
        ``peer_median_ratio``, ``penalty``, ``payment_weight``, ``national_rate``; ``status`` holds a text CMS
        shows instead of a value (``NQ``: no qualifying cases), ``footnotes`` the markers on the label (``k``).
        Rates are fractions (the workbook stores 0.1985 and displays 19.8479%).
    table2_sheet : str
        The worksheet Table 2 was read from.
    table2_decimals : dict
        Column → number of decimals of the stored value that the workbook displays (from the cells' number
        formats: ``0.0000%`` → 6, ``0.0000`` → 4, ``#,##0`` → 0; for a value stored as text, the digits the text
        shows: ``"19.8479%"`` → 6); the fewest over the column's cells; None when no format or text fixes it.
    table2_footnotes : dict
        Footnote marker → its text, from the rows below Table 2.
    """

    path: Path
    fiscal_year: int | None
    measures: dict[str, HSRMeasure]
    table2: pd.DataFrame
    table2_sheet: str
    table2_decimals: dict[str, int | None]
    table2_footnotes: dict[str, str]


# --------------------------------------------------------------------------------------------------------------
# The published model
# --------------------------------------------------------------------------------------------------------------

def _checked_coefficients(coefficients: pd.Series | Mapping[str, float]) -> pd.Series:
    beta = coefficients if isinstance(coefficients, pd.Series) else pd.Series(coefficients, dtype=float)
    if not beta.index.is_unique:
        dup = beta.index[beta.index.duplicated()].unique().tolist()
        raise ParameterError(f"coefficients: names repeat ({', '.join(map(repr, dup))}); give each risk variable "
                             "once.")
    intercepts = [k for k in beta.index if str(k).strip().casefold() in _INTERCEPT_NAMES]
    if intercepts:
        raise ParameterError(f"coefficients: {', '.join(map(repr, intercepts))} is an intercept; pass CMS's "
                             "HOSP_EFFECT as hospital_effect= and AVG_EFFECT as average_effect=, and keep only "
                             "risk-variable coefficients in coefficients.")
    values = pd.to_numeric(beta, errors="coerce").astype(float)
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        shown = ", ".join(f"{k!r}={v!r}" for k, v in beta[bad].head(5).items())
        raise ParameterError(f"coefficients: {int(bad.sum())} value(s) are not finite numbers ({shown}).")
    return values


def _checked_effect(name: str, value: float) -> float:
    try:
        effect = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number (the model intercept on the logit scale), got "
                             f"{value!r}.") from None
    if not math.isfinite(effect):
        raise ParameterError(f"{name} must be a finite number, got {value!r}; CMS gives no HOSP_EFFECT for a "
                             "measure with no qualifying cases, and then there is nothing to predict.")
    return effect


def _as_number(value) -> float:
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(value)
    return math.nan


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _covariate_matrix(covariates: pd.DataFrame, names: pd.Index) -> np.ndarray:
    if not isinstance(covariates, pd.DataFrame):
        raise ParameterError(f"covariates must be a DataFrame (one row per stay), got {type(covariates).__name__}.")
    missing = [k for k in names if k not in covariates.columns]
    if missing:
        raise ParameterError(
            f"covariates: no column for {len(missing)} coefficient(s): {', '.join(map(repr, missing))}. Every "
            "coefficient needs a column of the same name (e.g. the HSR discharge table's risk-variable columns).")
    repeated = [k for k in names if isinstance(covariates[k], pd.DataFrame)]
    if repeated:
        raise ParameterError(f"covariates: column(s) {', '.join(map(repr, repeated))} appear more than once.")
    matrix = np.empty((len(covariates), len(names)), dtype=float)
    problems = []
    for j, name in enumerate(names):
        column = covariates[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=float, na_value=np.nan)
        else:
            values = np.array([_as_number(v) for v in column], dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = covariates.index[bad][:5]
            shown = ", ".join(f"{r!r}: {_plain(column.loc[r])!r}" for r in rows)
            problems.append(f"{name!r}: {int(bad.sum())} of {len(column)} rows missing or not numeric "
                            f"(rows {shown})")
        matrix[:, j] = values
    if problems:
        raise ParameterError("covariates: " + "; ".join(problems) + ". Keep only stays CMS counts (cohort "
                             "indicator 0) or fill the values; risk variables are 0/1 flags or years over 65.")
    return matrix


def apply_published_model(covariates: pd.DataFrame, coefficients: pd.Series | Mapping[str, float], *,
                          hospital_effect: float, average_effect: float) -> pd.DataFrame:
    """Per stay, CMS's predicted and expected readmission probabilities from a published logistic model.

    Parameters
    ----------
    covariates : DataFrame
        One row per stay; a numeric column for every coefficient (extra columns are ignored). Not modified.
    coefficients : Series or mapping
        Risk-variable name → coefficient β_k, **without** an intercept.
    hospital_effect : float
        The hospital's intercept on the logit scale (CMS's ``HOSP_EFFECT``).
    average_effect : float
        The average hospital's intercept (CMS's ``AVG_EFFECT``).

    Returns
    -------
    DataFrame
        Indexed like ``covariates``: ``linear_predictor`` (xβ), ``predicted`` = expit(hospital_effect + xβ),
        ``expected`` = expit(average_effect + xβ).

    Raises
    ------
    ParameterError
        A coefficient has no column (names them), a covariate value is missing or not a number (names the
        column, the count and example rows), a coefficient is not finite or is an intercept, or an effect is
        not a finite number.

    Notes
    -----
    ``expit(z) = 1 / (1 + exp(-z))``. The intercepts are explicit arguments because CMS's model has a
    hospital-specific random intercept: the same xβ gives the hospital's prediction with ``HOSP_EFFECT`` and the
    average hospital's with ``AVG_EFFECT`` (methodology digest §2.2).

    Examples
    --------
    With β(male) = ln 2, a man's odds are twice a woman's; HOSP_EFFECT = ln(1/4) gives odds 1/4 at xβ = 0:

    >>> stays = pd.DataFrame({"male": [0, 1]}, index=["S1", "S2"])
    >>> out = apply_published_model(stays, pd.Series({"male": math.log(2)}),
    ...                              hospital_effect=math.log(1 / 4), average_effect=math.log(1 / 9))
    >>> out.round(4)
        linear_predictor  predicted  expected
    S1            0.0000     0.2000    0.1000
    S2            0.6931     0.3333    0.1818
    """
    beta = _checked_coefficients(coefficients)
    hosp = _checked_effect("hospital_effect", hospital_effect)
    avg = _checked_effect("average_effect", average_effect)
    x = _covariate_matrix(covariates, beta.index)
    linear = x @ beta.to_numpy() if len(beta) else np.zeros(len(covariates))
    return pd.DataFrame({"linear_predictor": linear, "predicted": expit(hosp + linear),
                         "expected": expit(avg + linear)}, index=covariates.index)


def excess_readmission_ratio(covariates: pd.DataFrame, coefficients: pd.Series | Mapping[str, float], *,
                             hospital_effect: float, average_effect: float) -> pd.DataFrame:
    """CMS's predicted rate, expected rate and excess readmission ratio (ERR) for a set of stays.

    Parameters
    ----------
    covariates, coefficients, hospital_effect, average_effect
        As for :func:`apply_published_model`; ``covariates`` should hold only the stays CMS counts.

    Returns
    -------
    DataFrame
        One row: ``n`` (stays), ``predicted`` = mean of expit(HOSP_EFFECT + xβ), ``expected`` = mean of
        expit(AVG_EFFECT + xβ), ``ratio`` = predicted / expected (the ERR), ``method``. With no stays, ``n`` is
        0 and the rates are NaN.

    Examples
    --------
    >>> stays = pd.DataFrame({"male": [0, 1]})
    >>> excess_readmission_ratio(stays, {"male": math.log(2)}, hospital_effect=math.log(1 / 4),
    ...                          average_effect=math.log(1 / 9)).round(4)
       n  predicted  expected   ratio                  method
    0  2     0.2667    0.1409  1.8925  cms_published_logistic
    """
    per_stay = apply_published_model(covariates, coefficients, hospital_effect=hospital_effect,
                                     average_effect=average_effect)
    n = len(per_stay)
    predicted = float(per_stay["predicted"].mean()) if n else math.nan
    expected = float(per_stay["expected"].mean()) if n else math.nan
    ratio = predicted / expected if n else math.nan
    return pd.DataFrame({"n": [n], "predicted": [predicted], "expected": [expected], "ratio": [ratio],
                         "method": ["cms_published_logistic"]})


# --------------------------------------------------------------------------------------------------------------
# Reading the workbook
# --------------------------------------------------------------------------------------------------------------

def clean_header(value) -> str:
    """Header text as shown, tidied: footnote markers removed, whitespace collapsed, no spaces around ``/``.

    Markers are bracketed footnotes (``[a]``, ``[12]``), ``*`` (CMS's mark on publicly reported columns), the
    daggers ``†`` ``‡``, ``§``, ``¶`` and superscript digits and letters. A plain number is kept (``History of
    COVID-19`` ends in digits); header matching accepts a footnote number after a known wording instead
    (:data:`DISCHARGE_HEADERS`).

    Examples
    --------
    >>> clean_header("Unplanned \\nReadmission within \\n30 Days (Yes/No) [b]")
    'Unplanned Readmission within 30 Days (Yes/No)'
    >>> clean_header("Drug/\\nAlcohol Abuse/ \\nDependence")
    'Drug/Alcohol Abuse/Dependence'
    >>> clean_header("Excess Readmission Ratio (ERR)*\\u2020 "), clean_header("History of COVID-19")
    ('Excess Readmission Ratio (ERR)', 'History of COVID-19')
    """
    if value is None:
        return ""
    text = _FOOTNOTE.sub(" ", str(value).replace("\u00a0", " "))
    text = re.sub(r"\s+", " ", _MARKS.sub(" ", text))
    return re.sub(r"\s*/\s*", "/", text).strip()


def normalise_header(value) -> str:
    """The key a header is matched on: :func:`clean_header`, case folded, ``&`` as ``and``, and every run of
    punctuation, underscores and whitespace as one space.

    Examples
    --------
    >>> normalise_header(" Excess Readmission Ratio (ERR) [f]")
    'excess readmission ratio err'
    >>> normalise_header("HOSP_EFFECT*"), normalise_header("Cohort Inclusion / Exclusion\\nIndicator\\u2020")
    ('hosp effect', 'cohort inclusion exclusion indicator')
    """
    text = clean_header(value).casefold().replace("&", " and ")
    return re.sub(r"[\W_]+", " ", text).strip()


@functools.lru_cache(maxsize=8192)
def _header_key(text: str) -> str:
    """:func:`normalise_header` for the header search, which keys every text cell of every sheet: a text met
    again (``"0"``, ``"1"``, a repeated label) is keyed once."""
    return normalise_header(text)


def shown_decimals(number_format: str | None) -> int | None:
    """How many decimals of the stored value an Excel number format displays; None if it does not fix them.

    Examples
    --------
    >>> [shown_decimals(f) for f in ["0.0000%", "0.0000", "#,##0_);(#,##0)", "0.0%", "General"]]
    [6, 4, 0, 3, None]
    """
    if not number_format:
        return None
    section = number_format.split(";")[0]
    # drop quoted text, escaped characters, [colour]/[locale] codes, padding (_x) and fill (*x)
    section = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]|_.|\*.', "", section)
    if section.strip().casefold() in {"general", "@", ""} or "e+" in section.casefold():
        return None
    if not re.search(r"[0#?]", section):
        return None
    frac = re.search(r"\.([0#?]+)", section)
    return (len(frac.group(1)) if frac else 0) + 2 * section.count("%")


_NUMBER_TEXT = re.compile(r"([+-]?)(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d+))?(e[+-]?\d+)?\s*(%?)", re.IGNORECASE)


def _number_text(text: str) -> tuple[float, int | None] | None:
    """A number written as text and how many decimals of its value the text shows; None if it is no number."""
    found = _NUMBER_TEXT.fullmatch(text.strip().replace("\u2212", "-"))
    if not found or (found.group(2) is None and found.group(3) is None):
        return None
    sign, whole, frac, exponent, percent = found.groups()
    value = Decimal(f"{sign}{(whole or '0').replace(',', '')}.{frac or '0'}{exponent or ''}")
    if percent:
        value = value.scaleb(-2)  # exact: "19.8479%" is 0.198479, not 19.8479 / 100 in binary
    decimals = None if exponent else len(frac or "") + (2 if percent else 0)
    return float(value), decimals


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(float(value)))


def cell_number(value) -> float:
    """A worksheet cell as a number: numbers as they are, text holding a number converted, anything else NaN.

    Text may carry surrounding spaces, a sign, thousands separators (``1,234``), an exponent and a trailing
    ``%`` (the value is then divided by 100, as Excel displays a fraction as a percentage). Booleans, dates,
    ``N/A``, ``NQ``, ``--``, lists such as ``1,4`` (exclusion codes) and blanks are not numbers.

    Examples
    --------
    >>> [cell_number(v) for v in [0.1234, "0.1234", " 1,234 ", "12.5%", "-2.86518808993795", 7]]
    [0.1234, 0.1234, 1234.0, 0.125, -2.86518808993795, 7.0]
    >>> [cell_number(v) for v in ["N/A", "1,4", "", None, True]]
    [nan, nan, nan, nan, nan]
    """
    if _is_number(value):
        return float(value)
    parsed = _number_text(value) if isinstance(value, str) else None
    return parsed[0] if parsed else math.nan


def _numeric(value) -> bool:
    return not math.isnan(cell_number(value))


def _cell_decimals(value, number_format: str | None) -> int | None:
    """Decimals of the stored value a cell displays: by its number format, or a text's own digits."""
    if _is_number(value):
        return shown_decimals(number_format)
    parsed = _number_text(value) if isinstance(value, str) else None
    return parsed[1] if parsed else None


def _sheet_grid(ws) -> tuple[list[list], list[list[str]]]:
    values, formats = [], []
    for row in ws.iter_rows():
        values.append([cell.value for cell in row])
        formats.append([getattr(cell, "number_format", None) or "General" for cell in row])
    width = max((len(r) for r in values), default=0)
    for v, f in zip(values, formats, strict=True):
        v.extend([None] * (width - len(v)))
        f.extend(["General"] * (width - len(f)))
    return values, formats


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _stay_id(value) -> int | None:
    number = cell_number(value)
    if math.isnan(number) or not number.is_integer() or (isinstance(value, str) and "%" in value):
        return None
    return int(number)


def _roles_in_row(row: list, headers: tuple[_Header, ...]) -> dict[str, list[int]]:
    # each distinct text is keyed and matched once (a stay row repeats "0" and "1" in dozens of cells)
    keys: dict[str, str] = {}
    for v in row:
        if isinstance(v, str) and v not in keys:
            keys[v] = _header_key(v)
    hits = {h.role: {v for v, k in keys.items() if h.matches(k)} for h in headers}
    return {role: [j for j, v in enumerate(row) if isinstance(v, str) and v in texts] if texts else []
            for role, texts in hits.items()}


def _requirements(headers: tuple[_Header, ...]) -> list[tuple[_Header, ...]]:
    """The required headers, alternatives (same group) together: each entry needs one of its headers."""
    units: dict[str, list[_Header]] = {}
    for h in headers:
        if h.required:
            units.setdefault(h.group or h.role, []).append(h)
    return [tuple(unit) for unit in units.values()]


def _missing_headers(values: list[list], row: int | None, found: int, missing: list[tuple[_Header, ...]],
                     sheet: str, table: str) -> SchemaError:
    if row is None:  # no row has a required header: show the row with the most text, the likeliest header
        row = max(range(len(values)), default=None,
                  key=lambda i: sum(1 for v in values[i] if isinstance(v, str) and v.strip()))
        where = "no row has any of the required headers; the row with the most text"
    else:
        where = f"the closest row, with {found} of the {found + len(missing)} required"
    present = [clean_header(v) for v in values[row] if isinstance(v, str) and clean_header(v)] if row is not None \
        else []
    shown = ", ".join(map(repr, present[:8])) + (f", … ({len(present)} in all)" if len(present) > 8 else "")
    names = [" or ".join(repr(h.text) for h in unit) for unit in missing]
    also = [(f"for {unit[0].text!r}: " if len(missing) > 1 else "") + ", ".join(repr(w) for h in unit for w in h.also)
            for unit in missing if any(h.also for h in unit)]
    message = (f"sheet {sheet!r}: {table} header{'s' if len(missing) > 1 else ''} {', '.join(names)} not found"
               + (f" (also accepted{', ' if len(missing) > 1 else ': '}{'; '.join(also)})" if also else "")
               + (f". Headers present in row {row + 1} ({where}): {shown or 'none'}" if row is not None else "")
               + ". Headers are matched ignoring case, spacing, punctuation and footnote markers. Is this a CMS HRRP "
               "Hospital-Specific Report? If CMS changed the wording, extend carequal.hsr's header patterns.")
    failures = pd.DataFrame({"table": sheet, "column": names, "rule": "header not found",
                             "n_rows": 0, "examples": shown})
    return SchemaError(message, failures=failures)


def _find_header_row(values: list[list], headers: tuple[_Header, ...], sheet: str,
                     table: str) -> tuple[int, dict[str, int]]:
    units = _requirements(headers)
    best_row, best_hits, best_roles = -1, -1, {}
    for i, row in enumerate(values):
        roles = _roles_in_row(row, headers)
        hits = sum(1 for unit in units if any(roles[h.role] for h in unit))
        if hits > best_hits:
            best_row, best_hits, best_roles = i, hits, roles
    missing = [unit for unit in units if not any(best_roles.get(h.role) for h in unit)]
    if missing:
        raise _missing_headers(values, best_row if best_hits > 0 else None, best_hits, missing, sheet, table)
    found = {}
    for h in headers:
        cols = best_roles[h.role]
        if len(cols) > 1:
            shown = ", ".join(repr(clean_header(values[best_row][j])) for j in cols[:5])
            raise SchemaError(f"sheet {sheet!r}, row {best_row + 1}: header {h.text!r} appears in "
                              f"{len(cols)} columns ({shown}); cannot tell which holds the {table} values.")
        if cols:
            found[h.role] = cols[0]
    return best_row, found


def _measures_matching(text: str, patterns: Mapping[str, str], *, full: bool) -> list[str]:
    key = normalise_header(text)
    if full:  # a whole label, perhaps with a footnote number after it
        return [code for code, pattern in patterns.items() if re.fullmatch(rf"(?:{pattern})(?: ?\d{{1,2}})?", key)]
    return [code for code, pattern in patterns.items() if re.search(pattern, key)]


def _sheet_measure(sheet: str, title_rows: list[list]) -> str:
    hits = _measures_matching(sheet, _MEASURE_IN_TITLE, full=False)
    if len(hits) == 1:
        return hits[0]
    title = " ".join(str(v) for row in title_rows for v in row if isinstance(v, str))
    hits = _measures_matching(title, _MEASURE_IN_TITLE, full=False)
    if len(hits) == 1:
        return hits[0]
    raise SchemaError(f"sheet {sheet!r}: a discharge-level table, but neither its name nor its title names exactly "
                      f"one HRRP measure (found {hits or 'none'}; known: {', '.join(MEASURES)}, or their names "
                      "spelt out).")


def _as_text(value) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if _is_number(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _not_given(value) -> bool:
    return _blank(value) or (isinstance(value, str) and value.strip().casefold() in _NOT_GIVEN)


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _coefficient_row(values: list[list], header: int, id_col: int, headed: list[int]) -> int | None:
    # the row that is neither the header nor a stay and holds the most numbers; ties go to the row nearest the header
    candidates = []
    for i, row in enumerate(values):
        if i == header or _stay_id(row[id_col]) is not None:
            continue
        count = sum(1 for j in headed if j != id_col and _numeric(row[j]))
        if count:
            candidates.append((-count, abs(i - header), i))
    return min(candidates)[2] if candidates else None


_YES = frozenset({"yes", "y"})
_NO = frozenset({"no", "n"})
_CONTINUOUS = re.compile(r"\bcontinuous\b|\byears (over|above) 65\b|^age( minus 65)?( years)?$")
"""Header keys of risk variables that are not 0/1 flags (FY2023 "Years Over 65 (continuous)", FY2019 "Age
Minus 65"), so a blank cell of theirs cannot mean "absent"."""


def _eligibility(discharges: pd.DataFrame, columns: Mapping[str, str]) -> pd.Series:
    """Per stay: True (CMS counts it), False, or NA (the column that decides is blank or unreadable)."""
    if "inclusion" in columns:
        codes = discharges[columns["inclusion"]].str.replace(r"\s+", "", regex=True)
        decided = pd.Series(codes.eq("0").to_numpy(dtype=bool), index=discharges.index, dtype="boolean")
        return decided.mask(codes.isna().to_numpy(dtype=bool))
    flag = discharges[columns["index_stay"]].str.strip().str.casefold()
    out = pd.Series(pd.NA, index=discharges.index, dtype="boolean")
    out[flag.isin(_YES).to_numpy(dtype=bool)] = True
    out[flag.isin(_NO).to_numpy(dtype=bool)] = False
    return out


def _fill_blank_flags(sheet: str, discharges: pd.DataFrame, blank: dict[str, np.ndarray], id_column: str,
                      eligible: np.ndarray) -> dict[str, int]:
    """Blank risk-factor flags of eligible stays become 0 (the factor absent); a blank continuous variable of an
    eligible stay is a SchemaError. Returns column → number of cells filled."""
    filled, problems = {}, []
    for name, is_blank in blank.items():
        rows = is_blank & eligible
        if not rows.any():
            continue
        known = discharges[name].to_numpy()[~is_blank]
        known = known[~np.isnan(known)]
        if _CONTINUOUS.search(normalise_header(name)) or not np.isin(known, (0.0, 1.0)).all():
            ids = discharges[id_column].to_numpy()[rows][:5]
            problems.append({"table": sheet, "column": name, "rule": "continuous risk variable blank",
                             "n_rows": int(rows.sum()), "examples": ", ".join(f"ID {k}" for k in ids)})
            continue
        discharges.loc[rows, name] = 0.0
        filled[name] = int(rows.sum())
    if problems:
        detail = "; ".join(f"{p['column']!r}: {p['n_rows']} eligible stay(s) ({p['examples']})" for p in problems)
        raise SchemaError(f"sheet {sheet!r}: continuous risk variable(s) blank for eligible stays: {detail}. A blank "
                          "0/1 risk factor means the factor is absent (0), but a continuous variable such as years "
                          "over 65 has no such reading; fill the cells from the source or exclude the stays.",
                          failures=pd.DataFrame(problems))
    return filled


def _read_discharge_table(sheet: str, values: list[list]) -> HSRMeasure:
    header, roles = _find_header_row(values, DISCHARGE_HEADERS, sheet, "discharge-level table")
    measure = _sheet_measure(sheet, values[:header])
    head = values[header]
    headed = [j for j, v in enumerate(head) if not _blank(v)]
    names = dict(zip(headed, _unique_names([clean_header(head[j]) for j in headed]), strict=True))
    coef_row = _coefficient_row(values, header, roles["id"], headed)
    if coef_row is None:
        raise SchemaError(f"sheet {sheet!r}: no coefficient row (a row that is not a stay and holds the model's "
                          "numbers under the risk-variable headers) was found.")
    coefs = values[coef_row]
    role_cols = set(roles.values())
    risk = [j for j in headed if j not in role_cols and _numeric(coefs[j])]
    if not risk:
        raise SchemaError(f"sheet {sheet!r}: the coefficient row (row {coef_row + 1}) has no number under any "
                          "risk-variable header.")
    average_effect = cell_number(coefs[roles["average_effect"]])
    if math.isnan(average_effect):
        raise SchemaError(f"sheet {sheet!r}: no AVG_EFFECT value in the coefficient row (row {coef_row + 1}); "
                          f"found {coefs[roles['average_effect']]!r}.")
    stays = [row for i, row in enumerate(values) if i > header and i != coef_row and _stay_id(row[roles["id"]])
             is not None]
    numeric = set(risk) | {roles["hospital_effect"], roles["average_effect"]}
    data, failures, blank = {}, [], {}
    for j in headed:
        column = [row[j] for row in stays]
        if j == roles["id"]:
            data[names[j]] = pd.array([_stay_id(v) for v in column], dtype="Int64")
        elif j in numeric:
            odd = [(stays[i][roles["id"]], v) for i, v in enumerate(column) if not _numeric(v) and not _not_given(v)]
            if odd:
                failures.append({"table": sheet, "column": names[j], "rule": "number or N/A", "n_rows": len(odd),
                                 "examples": ", ".join(f"ID {k}: {v!r}" for k, v in odd[:5])})
            data[names[j]] = np.array([cell_number(v) for v in column], dtype=float)
            if j in risk:
                blank[names[j]] = np.array([_blank(v) for v in column], dtype=bool)
        else:
            data[names[j]] = pd.array([_as_text(v) for v in column], dtype="str")
    if failures:
        detail = "; ".join(f"{f['column']!r}: {f['n_rows']} cell(s) ({f['examples']})" for f in failures)
        raise SchemaError(f"sheet {sheet!r}: risk-variable cells that are neither numbers nor N/A: {detail}.",
                          failures=pd.DataFrame(failures))
    discharges = pd.DataFrame(data, columns=[names[j] for j in headed])
    columns = {role: names[j] for role, j in roles.items()}
    eligible = _eligibility(discharges, columns).fillna(False).to_numpy(dtype=bool)
    filled = _fill_blank_flags(sheet, discharges, blank, columns["id"], eligible)
    return HSRMeasure(
        measure=measure, sheet=sheet, discharges=discharges,
        coefficients=pd.Series([cell_number(coefs[j]) for j in risk], index=[names[j] for j in risk], dtype=float,
                               name="coefficient"),
        hospital_effect=cell_number(coefs[roles["hospital_effect"]]), average_effect=average_effect,
        columns=columns, header_row=header + 1, coefficient_row=coef_row + 1, blank_risk_cells=filled)


def _read_table2(sheet: str, values: list[list], formats: list[list[str]]) -> tuple[pd.DataFrame, dict, dict]:
    header, roles = _find_header_row(values, TABLE2_HEADERS, sheet, "Table 2")
    label_col = roles["measure"]
    records, seen = [], {}
    decimals: dict[str, list[int]] = {}
    for i in range(header + 1, len(values)):
        row = values[i]
        label = row[label_col]
        if not isinstance(label, str):
            continue
        codes = _measures_matching(label, _MEASURE_LABEL, full=True)
        if len(codes) != 1 or all(_blank(row[roles[r]]) for r in ("n", "predicted", "ratio")):
            continue  # titles, notes and footnotes ("[k] ... the pneumonia measure ...") are not result rows
        code = codes[0]
        if code in seen:
            raise SchemaError(f"sheet {sheet!r}: Table 2 lists {code} twice (rows {seen[code]} and {i + 1}).")
        seen[code] = i + 1
        record = {"measure": code, "label": clean_header(label)}
        status = []
        for role in _TABLE2_VALUES:
            if role not in roles:
                continue
            cell = row[roles[role]]
            record[role] = cell_number(cell)
            if _numeric(cell):
                shown = _cell_decimals(cell, formats[i][roles[role]])
                if shown is not None:
                    decimals.setdefault(role, []).append(shown)
            elif role in ("n", "events", "predicted", "expected", "ratio") and not _blank(cell):
                status.append(str(cell).strip())
        if "penalty" in roles:
            record["penalty"] = _as_text(row[roles["penalty"]])
        record["status"] = ",".join(dict.fromkeys(status))
        record["footnotes"] = ",".join(m.lower() for m in _FOOTNOTE.findall(label))
        records.append(record)
    if not records:
        raise SchemaError(f"sheet {sheet!r}: Table 2 header found in row {header + 1} but no measure rows below "
                          f"it (measures are recognised by their label: {', '.join(MEASURES)}, THA/TKA, or their "
                          "names spelt out, e.g. Heart Failure, Pneumonia).")
    table = pd.DataFrame.from_records(records)
    for role in ("n", "events"):
        # counts are whole numbers in every HSR; NQ/N/A stay missing
        table[role] = pd.array([None if math.isnan(v) else round(v) for v in table[role]], dtype="Int64")
    columns = ["measure", "label"] + [r for r in _TABLE2_VALUES + ("penalty",) if r in table.columns]
    table = table[columns + ["status", "footnotes"]]
    footnotes = {}
    for row in values[header + 1:]:
        first = next((v for v in row if not _blank(v)), None)
        found = re.match(r"\s*\[([a-z0-9]{1,3})\]\s*(.*)", first, re.IGNORECASE | re.DOTALL) if isinstance(
            first, str) else None
        if found:
            footnotes.setdefault(found.group(1).lower(), found.group(2).strip())
    # a column is compared at the fewest decimals any of its cells shows (cells of one column normally agree)
    return table, {k: min(decimals[k]) if k in decimals else None for k in columns if k in _TABLE2_VALUES}, \
        footnotes


def _is_discharge_sheet(values: list[list]) -> bool:
    markers = tuple(h for h in DISCHARGE_HEADERS
                    if h.role in ("hospital_effect", "average_effect", "inclusion", "index_stay"))
    return any(any(found for found in _roles_in_row(row, markers).values()) for row in values)


def _is_table2_sheet(values: list[list]) -> bool:
    markers = tuple(h for h in TABLE2_HEADERS if h.role in ("predicted", "expected", "ratio"))
    return any(any(found for found in _roles_in_row(row, markers).values()) for row in values)


def _fiscal_year(grids: dict[str, list[list]]) -> int | None:
    for values in grids.values():
        for row in values[:5]:
            for v in row:
                found = re.search(r"\bFY\)?\s?(\d{4})\b", v) if isinstance(v, str) else None
                if found:
                    return int(found.group(1))
    return None


def read_hsr(path: str | Path) -> HospitalSpecificReport:
    """Read an HRRP Hospital-Specific Report workbook: each measure's discharge table and model, and Table 2.

    Parameters
    ----------
    path : str or Path
        The ``.xlsx`` workbook CMS delivers (or a mock HSR).

    Returns
    -------
    HospitalSpecificReport
        ``measures`` (code → :class:`HSRMeasure`: discharges, coefficients, effects) and ``table2`` (CMS's
        results), with where each was found.

    Raises
    ------
    SchemaError
        No Table 2 or no discharge-level table; a required header is missing (names the sheet, the header and
        the headers present); a header is ambiguous; a discharge sheet has no coefficient row or no
        ``AVG_EFFECT``; a risk-variable cell holds text other than a number or N/A; a continuous risk variable
        is blank for an eligible stay; two sheets hold the same measure.

    Notes
    -----
    Tables and columns are found by header text, never by cell position; see the module docstring. Values are
    read as stored (formula cells by their cached value).

    Examples
    --------
    A minimal workbook: a results sheet and one heart-failure discharge table with the coefficients in the row
    under the headers and a blank row before the stays, columns in an unusual order.

    >>> import tempfile, openpyxl
    >>> wb = openpyxl.Workbook()
    >>> results = wb.active
    >>> results.title = "Results"
    >>> results.append(["Measure [a]", "Number of Eligible Discharges", "Number of Readmissions Among Eligible "
    ...                 "Discharges", "Predicted Readmission Rate", "Expected Readmission Rate",
    ...                 "Excess Readmission Ratio (ERR) [f]"])
    >>> results.append(["HF", 2, 1, 0.2667, 0.1409, 1.8925])
    >>> hf = wb.create_sheet("Discharges HF")
    >>> hf.append(["Male", "ID Number", "AVG_EFFECT", "Unplanned Readmission within 30 Days (Yes/No)",
    ...            "Cohort Inclusion/Exclusion Indicator", "HOSP_EFFECT"])
    >>> hf.append([math.log(2), "--", math.log(1 / 9), "--", "--", math.log(1 / 4)])
    >>> hf.append([])
    >>> for row in ([0, 1, "N/A", "Yes", "0", "N/A"], [1, 2, "N/A", "No", "0", "N/A"],
    ...             ["N/A", 3, "N/A", "Yes", "1,4", "N/A"]):
    ...     hf.append(row)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     wb.save(Path(tmp) / "hsr.xlsx")
    ...     report = read_hsr(Path(tmp) / "hsr.xlsx")
    >>> hf_table = report.measures["HF"]
    >>> hf_table.coefficients.round(4).to_dict(), round(hf_table.hospital_effect, 4), hf_table.header_row
    ({'Male': 0.6931}, -1.3863, 1)
    >>> hf_table.discharges[["ID Number", "Cohort Inclusion/Exclusion Indicator", "Male"]]
       ID Number Cohort Inclusion/Exclusion Indicator  Male
    0          1                                    0   0.0
    1          2                                    0   1.0
    2          3                                  1,4   NaN
    >>> reproduce_table2(report)[["measure", "n", "events", "predicted", "ratio", "ratio_cms"]].round(4)
      measure  n  events  predicted   ratio  ratio_cms
    0      HF  2       1     0.2667  1.8925     1.8925
    """
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"read_hsr: no file at {path}.")
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        grids = {ws.title: _sheet_grid(ws) for ws in workbook.worksheets}
    finally:
        workbook.close()
    values = {name: grid[0] for name, grid in grids.items()}

    table2_sheets = [name for name, v in values.items() if _is_table2_sheet(v)]
    if not table2_sheets:
        wanted = ", ".join(repr(h.text) for h in TABLE2_HEADERS if h.required)
        raise SchemaError(f"{path.name}: no sheet holds Table 2 (looked in {', '.join(map(repr, values))} for a "
                          f"header row with {wanted}).")
    errors = []
    table2 = None
    for name in table2_sheets:
        try:
            table2 = (name, *_read_table2(name, values[name], grids[name][1]))
            break
        except SchemaError as exc:
            errors.append(exc)
    if table2 is None:
        raise errors[0]

    measures: dict[str, HSRMeasure] = {}
    for name, v in values.items():
        if name == table2[0] or not _is_discharge_sheet(v):
            continue
        table = _read_discharge_table(name, v)
        if table.measure in measures:
            raise SchemaError(f"{path.name}: sheets {measures[table.measure].sheet!r} and {name!r} both hold the "
                              f"{table.measure} discharge table.")
        measures[table.measure] = table
    if not measures:
        raise SchemaError(f"{path.name}: no discharge-level table (a sheet with the headers 'HOSP_EFFECT', "
                          f"'AVG_EFFECT' and 'Cohort Inclusion/Exclusion Indicator' or 'Index Stay (Yes/No)'); "
                          f"sheets: {', '.join(map(repr, values))}.")
    sheet2, frame2, decimals, footnotes = table2
    return HospitalSpecificReport(path=path, fiscal_year=_fiscal_year(values), measures=measures, table2=frame2,
                                  table2_sheet=sheet2, table2_decimals=decimals, table2_footnotes=footnotes)


# --------------------------------------------------------------------------------------------------------------
# Re-computing Table 2
# --------------------------------------------------------------------------------------------------------------

def eligible_stays(table: HSRMeasure) -> pd.Series:
    """Which listed stays CMS counts in the measure: Cohort Inclusion/Exclusion Indicator is ``0``.

    Any other indicator lists the exclusion criteria the stay met (``1``, ``1,4,6``, …). A table without the
    indicator is read by its Yes/No column instead (``Index Stay (Yes/No)``, ``Included in Measure Cohort``):
    ``Yes``/``Y`` counts, ``No``/``N`` does not. When both are present the indicator decides. A missing or
    unreadable value raises :class:`SchemaError` rather than being guessed.

    Returns
    -------
    Series of bool, indexed like ``table.discharges``.
    """
    decided = _eligibility(table.discharges, table.columns)
    column = table.columns["inclusion" if "inclusion" in table.columns else "index_stay"]
    unknown = decided.isna().to_numpy(dtype=bool)
    if unknown.any():
        rows = table.discharges.loc[unknown, [table.columns["id"], column]].head(5)
        shown = ", ".join(f"ID {k}: {v!r}" for k, v in rows.itertuples(index=False, name=None))
        rule = ("blank" if "inclusion" in table.columns else "neither Yes nor No")
        raise SchemaError(f"sheet {table.sheet!r}: {int(unknown.sum())} stay(s) have a {column!r} that is {rule} "
                          f"({shown}); cannot tell whether CMS counts them.")
    return decided.astype(bool).rename("eligible")


def _readmitted(table: HSRMeasure, eligible: pd.Series) -> pd.Series:
    column = table.columns["unplanned"]
    flag = table.discharges[column]
    missing = (flag.isna() & eligible).to_numpy()
    if missing.any():
        ids = table.discharges.loc[missing, table.columns["id"]].head(5).tolist()
        raise SchemaError(f"sheet {table.sheet!r}: {int(missing.sum())} eligible stay(s) have no {column!r} "
                          f"(ID Number {', '.join(map(str, ids))}).")
    # "Yes" is an event; "No" and "N/A-COVID patient" (footnote: such readmissions were excluded) are not
    return flag.fillna("").str.strip().str.casefold().eq("yes")


def _as_shown(value: float, decimals: int) -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _agrees(ours: float, cms: float, decimals: int | None) -> bool:
    if decimals is None:
        return math.isclose(ours, cms, rel_tol=1e-9, abs_tol=1e-12)
    return _as_shown(ours, decimals) == _as_shown(cms, decimals)


def _recompute(table: HSRMeasure | None) -> tuple[dict, str]:
    if table is None:
        return {"n": pd.NA, "events": pd.NA, "predicted": math.nan, "expected": math.nan, "ratio": math.nan}, \
            "no discharge-level table in the workbook"
    eligible = eligible_stays(table)
    events = int((_readmitted(table, eligible) & eligible).sum())
    out = {"n": int(eligible.sum()), "events": events, "predicted": math.nan, "expected": math.nan,
           "ratio": math.nan}
    if out["n"] == 0:
        return out, "no eligible stays in the discharge table"
    if math.isnan(table.hospital_effect):
        return out, "no HOSP_EFFECT in the discharge table"
    summary = excess_readmission_ratio(table.discharges.loc[eligible.to_numpy()], table.coefficients,
                                       hospital_effect=table.hospital_effect, average_effect=table.average_effect)
    out.update(summary.iloc[0][["predicted", "expected", "ratio"]].to_dict())
    filled = sum(table.blank_risk_cells.values())
    return out, (f"{filled} blank risk-factor cell(s) of eligible stays read as 0 (factor absent) in "
                 f"{len(table.blank_risk_cells)} column(s)" if filled else "")


def reproduce_table2(report: HospitalSpecificReport) -> pd.DataFrame:
    """Re-compute CMS's Table 2 from the discharge rows and set it beside CMS's published values.

    Parameters
    ----------
    report : HospitalSpecificReport
        From :func:`read_hsr`.

    Returns
    -------
    DataFrame
        One row per measure (Table 2's order, then measures with only a discharge table): ``measure``,
        ``label``; for each quantity ``q`` in ``n`` (eligible discharges), ``events`` (unplanned readmissions
        among them), ``predicted``, ``expected``, ``ratio`` (ERR): ``q`` (carequal), ``q_cms`` (Table 2) and
        ``q_diff`` = ``q - q_cms``; ``agrees`` (every value CMS shows equals carequal's at the decimals CMS
        displays, and where CMS shows NQ carequal finds no eligible stay; NA when nothing can be compared);
        ``note`` (why a value is missing, how many blank risk-factor cells were read as 0, CMS's status text
        and footnotes).

    Notes
    -----
    Eligible stays are those whose Cohort Inclusion/Exclusion Indicator is ``0``, or, without an indicator,
    whose index-stay column says ``Yes`` (:func:`eligible_stays`); events are those of them with ``Yes`` in the
    unplanned-readmission column. A blank risk-factor flag of an eligible stay counts as 0 (module docstring).
    The rates are the means of :func:`apply_published_model`'s ``predicted`` and ``expected`` over the eligible
    stays, ``ratio`` their quotient; all are compared unrounded in ``*_diff`` and rounded as displayed in
    ``agrees``.

    Examples
    --------
    See :func:`read_hsr`.
    """
    table2 = report.table2.set_index("measure")
    order = list(table2.index) + [m for m in report.measures if m not in table2.index]
    rows = []
    for code in order:
        ours, why = _recompute(report.measures.get(code))
        cms = table2.loc[code] if code in table2.index else None
        row = {"measure": code, "label": cms["label"] if cms is not None else MEASURES.get(code, code)}
        comparable, agree = 0, True
        for q in ("n", "events", "predicted", "expected", "ratio"):
            cms_value = cms[q] if cms is not None else math.nan
            cms_value = math.nan if pd.isna(cms_value) else float(cms_value)
            value = math.nan if pd.isna(ours[q]) else float(ours[q])
            row[q], row[f"{q}_cms"], row[f"{q}_diff"] = ours[q], cms_value, value - cms_value
            if not math.isnan(cms_value):
                comparable += 1
                agree &= not math.isnan(value) and _agrees(value, cms_value, report.table2_decimals.get(q))
        notes = [why] if why else []
        if cms is not None and cms["status"]:
            shows_nq = "nq" in cms["status"].casefold().split(",")
            notes.append(f"CMS shows {cms['status']}" + (" (no qualifying cases)" if shows_nq else ""))
            if shows_nq:
                comparable += 1
                agree &= pd.isna(ours["n"]) or ours["n"] == 0
        if cms is not None and cms["footnotes"]:
            for mark in cms["footnotes"].split(","):
                text = report.table2_footnotes.get(mark, "")
                notes.append(f"Table 2 footnote [{mark}]" + (f": {text}" if text else ""))
        if cms is None:
            notes.append("not in Table 2")
        row["agrees"] = bool(agree) if comparable else pd.NA
        row["note"] = "; ".join(notes)
        rows.append(row)
    out = pd.DataFrame(rows)
    for q in ("n", "events"):
        out[q] = pd.array([None if pd.isna(v) else int(v) for v in out[q]], dtype="Int64")
        out[f"{q}_cms"] = pd.array([None if math.isnan(v) else round(v) for v in out[f"{q}_cms"]], dtype="Int64")
        out[f"{q}_diff"] = out[q] - out[f"{q}_cms"]
    out["agrees"] = out["agrees"].astype("boolean")
    return out
