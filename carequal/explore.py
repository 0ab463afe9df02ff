"""The cohort explorer: one market's index stays as a flat table, filters, a Table 1 and outcome rates.

``carequal/notebooks/cohort_explorer.ipynb`` calls only these functions (and :func:`carequal.plots.attrition_plot`) and
wires them to widgets; everything it shows is computed and tested here.

* :class:`CohortExplorer` — the explorer's state and its two displays: the measured cohort read once, each
  market's view computed once, the tables for the widgets' choices and the attrition chart (drawn by the plot
  function the notebook passes, so this module stays below :mod:`carequal.plots`).

* :func:`explorer_frame` — one row per index stay of a market's tables: patient and stay attributes a Table 1
  needs, the outcomes, the partner status of the discharging hospital and the discharge month. No patient,
  stay or facility identifiers and no exact dates: the frame is what an analyst slices, not a record list.
* :func:`filter_explorer` — the widgets' filters (condition, partner, age bands, months), with errors that
  list the valid choices.
* :func:`table_one` — a Table 1 built with the ``tableone`` package (Pollard et al. 2018), made safe to show:
  counts from 1 to ``min_cell - 1`` read ``"<11"`` and every cell that would give one away is hidden too.
* :func:`explorer_rates` — readmission, mortality and referral-to-partner rates by a grouping, with Wilson
  intervals (:func:`carequal.measures.rate_table`), suppressed with :func:`carequal.disclosure.suppress_counts`.
* :func:`attrition_for_chart` — the cohort's attrition with small exclusion steps merged, for
  :func:`carequal.plots.attrition_plot`.

Choices where the sources are silent:

* "Partner" is the discharging hospital's partner flag in the facilities table (as in
  :func:`carequal.cohorts.filter_cohort` and the market report), not its status on the discharge date.
* The period filter works on whole discharge months: the frame keeps the month, not the date, so a start or
  end date selects its whole month.
* Missing values of a categorical Table 1 variable are a level of their own, ``"(missing)"``, so they are
  counted and suppressed like any other level; tableone's separate "Missing" column is not shown.

References
----------
Pollard TJ, Johnson AEW, Raffa JD, Mark RG (2018). tableone: An open source Python package for producing
summary statistics for research papers. JAMIA Open 1(1):26–31.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from carequal.cohorts import ALL_PAYER_RULES, CONDITIONS, Cohort, age_band, index_stays, standard_population
from carequal.disclosure import cell_threshold, suppress_counts
from carequal.employers import covering_sponsor, sponsor_periods
from carequal.errors import CarequalError, ParameterError
from carequal.loaders import read_market
from carequal.measured import MeasuredCohort
from carequal.measures import index_measures, rate_table
from carequal.presentation import displayed, table_html, with_interval_text
from carequal.risk import risk_covariates

__all__ = ["FRAME_COLUMNS", "GROUPINGS", "PARTNER_CHOICES", "POPULATIONS", "RATE_MEASURES", "CohortExplorer",
           "attrition_for_chart", "explorer_choices", "explorer_frame", "explorer_rates", "filter_explorer",
           "market_view", "population_cohort", "table_one"]

FRAME_COLUMNS: tuple[str, ...] = (
    "market", "period", "partner", "age", "age_band", "sex", "dual_eligible", "condition", "los_days",
    "n_secondary", "pac_setting", "unplanned_readmit_30d", "died_30d", "to_any_pac", "to_partner_pac",
    "days_at_home_30")
"""Columns of :func:`explorer_frame`, in order (``n_secondary`` only when the stays carry ``secondary_dx``)."""

PARTNER_CHOICES: tuple[str, ...] = ("all", "partner", "other")
"""Values of the partner filter: every index stay, or those of partner / other discharging hospitals."""

GROUPINGS: tuple[str, ...] = ("partner", "sex", "dual_eligible", "condition", "age_band", "pac_setting", "sponsor")
"""Columns a Table 1 or the rates can be grouped by (``sponsor``: the employer populations' frames only)."""

POPULATIONS: dict[str, str] = {
    "medicare": "Medicare fee-for-service, 65 and over (CMS rules)",
    "employees": "Employees of the alliance's employers (every age and coverage; by employer)",
}
"""The populations the explorer can show (:func:`population_cohort`)."""

RATE_MEASURES: dict[str, tuple[str, str]] = {
    "readmission": ("unplanned_readmit_30d", "30-day unplanned readmission"),
    "mortality": ("died_30d", "30-day mortality"),
    "to_partner_pac": ("to_partner_pac", "Discharged to a partner post-acute provider"),
}
"""Measures of :func:`explorer_rates`: name → (outcome column, label)."""

_CONTINUOUS: dict[str, str] = {"age": "Age (years)", "los_days": "Length of stay (days)",
                               "n_secondary": "Secondary diagnoses"}
_CATEGORICAL: dict[str, str] = {"sex": "Sex", "dual_eligible": "Dual eligible", "condition": "Condition",
                                "age_band": "Age band", "pac_setting": "Post-acute setting", "sponsor": "Employer"}
_MISSING_LEVEL = "(missing)"
_PAC_ORDER = ("none", "snf", "irf", "ltch", "hha")


def _age_bands() -> tuple[str, ...]:
    return tuple(standard_population()["age_band"])


# ------------------------------------------------------------------------------------------------ the frame


def explorer_frame(tables: dict[str, pd.DataFrame] | None = None, *, cohort: Cohort | None = None,
                   measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per index stay of a market's tables, with what a Table 1 and the outcome rates need.

    Parameters
    ----------
    tables : dict of DataFrame
        Validated contract tables (``read_market(...).tables``): ``stays``, ``facilities``, ``patients`` and
        optional ``enrollment`` and ``ed_visits``. Not needed with ``measured``.
    cohort : Cohort, optional
        The index-stay cohort of these tables, when the caller already has it (e.g. for its attrition);
        default :func:`carequal.cohorts.index_stays` with the CMS rules.
    measured : DataFrame, optional
        The market's rows of the measured cohort (:func:`carequal.national.read_cohort` with ``cms=True``): every
        column is read from them and nothing is recomputed (the notebook reads the cohort once per session).

    Returns
    -------
    DataFrame
        :data:`FRAME_COLUMNS`, one row per index stay in the cohort's order: ``market`` (of the discharging
        hospital), ``period`` (first day of the discharge month), ``partner`` (``"partner"``/``"other"``:
        the discharging hospital), ``age``, ``age_band`` (:func:`carequal.cohorts.age_band`), ``sex``,
        ``dual_eligible``, ``condition``, ``los_days``, ``n_secondary`` (number of secondary diagnoses,
        :func:`carequal.risk.risk_covariates`; only when the stays have ``secondary_dx``), ``pac_setting``
        and the outcomes ``unplanned_readmit_30d``, ``died_30d``, ``to_any_pac``, ``to_partner_pac``,
        ``days_at_home_30`` (:func:`carequal.measures.index_measures`). No identifiers or exact dates.

    Raises
    ------
    ParameterError
        A required table is missing.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1", "H2", "S1"], "setting": ["acute", "acute", "snf"],
    ...                     "market": "M", "is_partner": [True, False, True]})
    >>> pat = pd.DataFrame({"patient_id": ["p", "q"], "birth_date": pd.to_datetime(["1940-01-01", "1950-07-01"]),
    ...                     "sex": ["F", "M"], "dual_eligible": [False, True], "death_date": pd.NaT, "market": "M"})
    >>> st = pd.DataFrame({"stay_id": ["a", "s", "b", "c"], "patient_id": ["p", "p", "q", "q"],
    ...     "facility_id": ["H1", "S1", "H2", "H2"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-03-01", "2024-09-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-05", "2024-01-20", "2024-03-04", "2024-09-02"]),
    ...     "discharge_status": ["03", "01", "01", "01"], "principal_dx": ["I509", "Z471", "J189", "J189"],
    ...     "secondary_dx": ["E119;I10", None, None, None]})
    >>> frame = explorer_frame({"stays": st, "facilities": fac, "patients": pat})
    >>> frame[["period", "partner", "age", "age_band", "condition", "los_days", "n_secondary", "pac_setting"]]
          period  partner  age age_band      condition  los_days  n_secondary pac_setting
    0 2024-01-01  partner   84    75-84  heart_failure         4          2.0         snf
    1 2024-03-01    other   73    65-74      pneumonia         3          0.0        none
    >>> frame[["unplanned_readmit_30d", "died_30d", "to_partner_pac", "days_at_home_30"]]
       unplanned_readmit_30d  died_30d  to_partner_pac  days_at_home_30
    0                  False     False            True               16
    1                  False     False           False               30

    (The September stay is within 30 days of the end of the data, so it is not an index stay.)
    """
    if measured is None:
        missing = [t for t in ("stays", "facilities", "patients") if (tables or {}).get(t) is None]
        if missing:
            raise ParameterError(f"explorer_frame: no {', '.join(missing)} table(s); pass the validated tables of "
                                 "a market (carequal.loaders.read_market(...).tables) or its measured cohort")
        stays = tables["stays"]
        if cohort is None:
            cohort = index_stays(stays, tables["facilities"], tables["patients"], tables.get("enrollment"))
        measured = index_measures(cohort.index, tables)
        if "secondary_dx" in stays.columns:
            measured = risk_covariates(measured, stays)
    out = pd.DataFrame({
        "market": measured["market"].to_numpy(),
        "period": pd.to_datetime(measured["discharge_date"]).dt.to_period("M").dt.start_time.to_numpy(),
        "partner": np.where(measured["is_partner"].fillna(False).astype(bool), "partner", "other"),
        "age": measured["age"].to_numpy(),
        "age_band": age_band(measured["age"]).to_numpy(),
    })
    for col in FRAME_COLUMNS[5:]:
        if col in measured.columns:
            out[col] = measured[col].to_numpy()
    return out


def market_view(cohort: MeasuredCohort, market: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(attrition, frame)`` of one market's residents from the measured cohort read once
    (:func:`carequal.national.read_cohort`): the CMS cohort's attrition (``step``, ``description``,
    ``excluded``, ``remaining``) and :func:`explorer_frame` of its CMS rows."""
    rows = cohort.rows[(cohort.rows["patient_market"] == market).to_numpy()
                       & cohort.rows["cms"].to_numpy(dtype=bool)].reset_index(drop=True)
    att = cohort.attrition[(cohort.attrition["rules"] == "cms") & (cohort.attrition["market"] == market)]
    if att.empty:
        raise ParameterError(f"no market {market!r} in the cohort; markets: "
                             + ", ".join(sorted(set(cohort.attrition["market"]) - {""})))
    return att[["step", "description", "excluded", "remaining"]].reset_index(drop=True), explorer_frame(measured=rows)


def population_cohort(tables: dict[str, pd.DataFrame], population: str = "medicare") -> tuple[Cohort, pd.DataFrame]:
    """The index-stay cohort and :func:`explorer_frame` of one population of a market's tables.

    ``"medicare"``: every patient, the CMS rules (:func:`carequal.cohorts.index_stays`' default: 65 and over,
    fee-for-service coverage), as before populations were added. ``"employees"``: the members of the employer
    populations (patients with an enrollment period naming a ``sponsor``), their sponsored periods as the
    enrollment, the all-payer rules (every age and coverage); the frame gains ``sponsor``, the employer covering
    the discharge date.

    Raises
    ------
    ParameterError
        An unknown population, or ``"employees"`` without an ``enrollment.sponsor`` column.
    """
    if population not in POPULATIONS:
        raise ParameterError(f"unknown population {population!r}; choose from {', '.join(POPULATIONS)}")
    if population == "medicare":
        cohort = index_stays(tables["stays"], tables["facilities"], tables["patients"], tables.get("enrollment"))
        return cohort, explorer_frame(tables, cohort=cohort)
    if tables.get("enrollment") is None:
        raise ParameterError("the employee populations need an enrollment table with a sponsor column")
    periods = sponsor_periods(tables["enrollment"])
    enrollment = tables["enrollment"][tables["enrollment"]["sponsor"].notna().to_numpy()]
    members = periods["patient_id"].unique()
    part = {**tables, "enrollment": enrollment,
            "patients": tables["patients"][tables["patients"]["patient_id"].isin(members).to_numpy()],
            "stays": tables["stays"][tables["stays"]["patient_id"].isin(members).to_numpy()]}
    cohort = index_stays(part["stays"], part["facilities"], part["patients"], enrollment, rules=ALL_PAYER_RULES)
    frame = explorer_frame(part, cohort=cohort)
    index = cohort.index
    frame["sponsor"] = covering_sponsor(index["patient_id"], pd.to_datetime(index["discharge_date"]), periods)
    return cohort, frame


# ---------------------------------------------------------------------------------------------- filters


def explorer_choices(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The options of the explorer's controls: ``condition`` and ``partner`` ("all" first) and ``age_bands``
    (the bands present in ``frame``, youngest first).

    Examples
    --------
    >>> frame = pd.DataFrame({"condition": ["copd", "other", "ami"], "age_band": ["85+", "65-74", "85+"]})
    >>> choices = explorer_choices(frame)
    >>> choices["condition"], choices["partner"], choices["age_bands"]
    (['all', 'ami', 'copd', 'other'], ['all', 'partner', 'other'], ['65-74', '85+'])
    """
    present = set(frame["condition"].dropna())
    conditions = [c for c in (*CONDITIONS, "other") if c in present]
    bands = set(frame["age_band"].dropna())
    return {"condition": ["all", *conditions], "partner": list(PARTNER_CHOICES),
            "age_bands": [b for b in _age_bands() if b in bands]}


def _month(value, what: str) -> pd.Timestamp | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
        return None
    try:
        when = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ParameterError(f"{what} {value!r} is not a date (use YYYY-MM-DD)") from None
    return when.to_period("M").start_time


def filter_explorer(frame: pd.DataFrame, *, condition: str = "all", partner: str = "all",
                    age_bands: Iterable[str] | None = None, start=None, end=None) -> pd.DataFrame:
    """The index stays of :func:`explorer_frame` that match the explorer's filters.

    Parameters
    ----------
    frame : DataFrame
        :func:`explorer_frame` output (not modified).
    condition : str
        ``"all"``, a condition of :data:`carequal.cohorts.CONDITIONS` or ``"other"`` (in no condition cohort).
    partner : {"all", "partner", "other"}
        Partner status of the discharging hospital.
    age_bands : iterable of str, optional
        Age bands to keep (labels of :func:`carequal.cohorts.standard_population`, e.g. ``"85+"``). None or
        an empty selection (a SelectMultiple with nothing chosen) keeps every band.
    start, end : date-like, optional
        First and last discharge month to keep (inclusive; a date selects its whole month). None leaves that
        end open.

    Returns
    -------
    DataFrame
        The matching rows, with a fresh index.

    Raises
    ------
    ParameterError
        An unknown condition, partner value or age band (the message lists the valid ones), a start or end
        that is not a date, or a start after the end.

    Examples
    --------
    >>> frame = pd.DataFrame({"condition": ["ami", "copd", "ami"], "partner": ["partner", "other", "other"],
    ...     "age_band": ["65-74", "85+", "85+"], "period": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"])})
    >>> filter_explorer(frame, condition="ami", start="2024-02-15")
      condition partner age_band     period
    0       ami   other      85+ 2024-03-01
    >>> filter_explorer(frame, partner="yes")
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: unknown partner value 'yes'; choose from all, partner, other
    """
    valid_conditions = ("all", *CONDITIONS, "other")
    if condition not in valid_conditions:
        raise ParameterError(f"unknown condition {condition!r}; choose from {', '.join(valid_conditions)}")
    if partner not in PARTNER_CHOICES:
        raise ParameterError(f"unknown partner value {partner!r}; choose from {', '.join(PARTNER_CHOICES)}")
    bands = [age_bands] if isinstance(age_bands, str) else list(age_bands or [])
    unknown = [b for b in bands if b not in _age_bands()]
    if unknown:
        raise ParameterError(f"unknown age band(s) {', '.join(map(repr, unknown))}; choose from "
                             f"{', '.join(_age_bands())}")
    lo, hi = _month(start, "start"), _month(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise ParameterError(f"period: start {pd.Timestamp(start).date()} is after end {pd.Timestamp(end).date()}")
    mask = np.ones(len(frame), dtype=bool)
    if condition != "all":
        mask &= (frame["condition"] == condition).to_numpy()
    if partner != "all":
        mask &= (frame["partner"] == partner).to_numpy()
    if bands:
        mask &= frame["age_band"].isin(bands).to_numpy()
    if lo is not None:
        mask &= (frame["period"] >= lo).to_numpy()
    if hi is not None:
        mask &= (frame["period"] <= hi).to_numpy()
    return frame[mask].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ Table 1


def _grouping(by: str | None, what: str) -> None:
    if by is not None and by not in GROUPINGS:
        raise ParameterError(f"unknown {what} {by!r}; choose from {', '.join(GROUPINGS)} (or None)")


def _levels_order(values: pd.Series, column: str) -> list[str]:
    preferred = {"partner": ("partner", "other"), "dual_eligible": ("no", "yes"), "age_band": _age_bands(),
                 "condition": (*CONDITIONS, "other"), "pac_setting": _PAC_ORDER}.get(column, ())
    present = list(pd.unique(values))
    first = [v for v in preferred if v in present]
    rest = sorted((v for v in present if v not in first and v != _MISSING_LEVEL), key=str)
    return first + rest + [_MISSING_LEVEL] * (_MISSING_LEVEL in present)


def _as_level(values: pd.Series, column: str) -> pd.Series:
    if column == "dual_eligible":
        text = values.map({True: "yes", False: "no"}, na_action="ignore")
    else:
        text = values.astype("str").where(values.notna())
    return text.fillna(_MISSING_LEVEL).astype(object)


def table_one(frame: pd.DataFrame, *, groupby: str | None = "partner", min_cell: int = 11) -> pd.DataFrame:
    """A Table 1 of index stays (tableone), safe to show: no count from 1 to ``min_cell - 1`` can be read.

    Continuous rows (mean (SD)): age, length of stay and number of secondary diagnoses (when present).
    Categorical rows (n (%)): sex, dual eligibility, condition, age band and post-acute setting. Columns:
    "Overall" and one per level of ``groupby``; no p-values.

    Parameters
    ----------
    frame : DataFrame
        :func:`explorer_frame` rows (filtered or not).
    groupby : str or None
        A column of :data:`GROUPINGS` (it is then not a row of the table), or None for the overall column only.
    min_cell : int
        Smallest count that may be shown (11 under the CMS cell-size policy).

    Returns
    -------
    DataFrame
        ``TableOne(...).tableone`` after suppression (see Notes): rows indexed by (variable, level), with
        tableone's labels (``"Sex, n (%)"``, ``"Age (years), mean (SD)"``, ``"n"``); columns
        ``("Grouped by <groupby>", level)`` with ``"Overall"`` first, or just ``"Overall"``. Every cell is
        text. An empty ``frame`` gives the single cell ``n = 0``.

    Notes
    -----
    tableone writes a categorical cell as the text ``"<count> (<percent>)"`` (e.g. ``"12 (40.0)"``, no
    thousands separator; the percent is of the column's ``n``, as missing values are a level here) and the
    ``n`` row as integers. Those counts are read back from the text and suppressed, cell by cell:

    1. **Primary.** A count from 1 to ``min_cell - 1`` (``n`` included) reads ``"<{min_cell}"`` (``"<11"``).
    2. **Complementary.** Two additive relations can give a hidden count away: the levels of a variable add
       up to their column's ``n``, and the group columns of a row add up to "Overall". Whenever a relation
       with a shown total has exactly one hidden non-zero cell, or hidden cells summing to 1..``min_cell - 1``,
       the smallest shown non-zero cell of it is hidden too (reading ``"suppressed"``; its count may be
       large); a relation whose total is hidden but whose cells are all shown gets the same treatment. This
       is repeated until nothing changes (the rules of :func:`carequal.disclosure.suppress_counts`,
       applied to both relations at once).
    3. **Columns.** A column whose ``n`` is hidden is hidden entirely (its percentages would give ``n``
       back, and a mean of fewer than ``min_cell`` stays describes individuals): counts 1..``min_cell - 1``
       read ``"<{min_cell}"``, everything else but zeros ``"suppressed"``.

    Zeros are always shown (complementary cells are never zeros, and hidden zeros are not counted as
    protection). Not covered: bounds (a hidden count is at most its column's ``n``) and what could be
    combined with other tables.

    Examples
    --------
    Thirty stays of partner hospitals and twenty of others; 6 men at the others are hidden, and with them
    the cells that would give them back.

    >>> frame = pd.DataFrame({"partner": ["partner"] * 30 + ["other"] * 20,
    ...     "sex": ["F"] * 18 + ["M"] * 12 + ["F"] * 14 + ["M"] * 6, "dual_eligible": False,
    ...     "condition": "copd", "age_band": "75-84", "pac_setting": "none", "age": 80, "los_days": 4})
    >>> t = table_one(frame)
    >>> t.loc[["n", "Sex, n (%)", "Dual eligible, n (%)"]]
                           Grouped by partner
                                      Overall     partner       other
    n                                      50          30          20
    Sex, n (%)           F           32 (64.0)  suppressed  suppressed
                         M           18 (36.0)  suppressed         <11
    Dual eligible, n (%) no         50 (100.0)  30 (100.0)  20 (100.0)
    """
    from tableone import TableOne  # ~0.7 s (it loads statsmodels) for this one table: loaded when drawn

    cell_threshold(min_cell)
    _grouping(groupby, "groupby")
    continuous = [c for c in _CONTINUOUS if c in frame.columns]
    categorical = [c for c in _CATEGORICAL if c in frame.columns and c != groupby]
    missing = [c for c in (*_CATEGORICAL, "age", "los_days") if c not in frame.columns and c != groupby
               and c != "sponsor"]  # sponsor: the employer populations' frames only
    if groupby is not None and groupby not in frame.columns:
        missing.append(groupby)
    if missing:
        raise ParameterError(f"table_one: frame has no column(s) {', '.join(missing)}; pass explorer_frame rows")
    if frame.empty:
        return pd.DataFrame({"Overall": ["0"]}, index=pd.MultiIndex.from_tuples([("n", "")]))
    data = frame[continuous].astype(float)
    for col in categorical + ([groupby] if groupby is not None else []):
        data[col] = _as_level(frame[col], col).to_numpy()
    order = {col: _levels_order(data[col], col) for col in categorical + ([groupby] if groupby else [])}
    with warnings.catch_warnings():
        # tableone 0.9 trips pandas 3 deprecations of its own (e.g. a partial MultiIndex key when it adds the
        # n row): not the user's concern, and not to be printed under every table
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"tableone")
        table = TableOne(data, columns=continuous + categorical, continuous=continuous, categorical=categorical,
                         groupby=groupby, order=order, rename={**_CONTINUOUS, **_CATEGORICAL}, pval=False,
                         missing=False, include_null=False, overall=True).tableone
    return _suppress_table_one(table, int(min_cell))


def _cell_count(value) -> float:
    """The count of a tableone cell: an integer (``n`` row) or ``"<count> (<percent>)"``."""
    if isinstance(value, int | np.integer):
        return float(value)
    match = re.fullmatch(r"\s*(\d+) \(\s*[\d.]+\)\s*", str(value))
    if match is None:
        raise CarequalError(f"table_one: cannot read a count from tableone's cell {value!r}; has the "
                            "tableone output format changed?")
    return float(match.group(1))


def _complement(counts: np.ndarray, hidden: np.ndarray, total: tuple[int, int], cells: list[tuple[int, int]],
                hi: int) -> tuple[int, int] | None:
    """The next cell to hide in one additive relation (``cells`` add up to ``total``), or None if it is safe."""
    values = np.array([counts[c] for c in cells])
    hid = np.array([hidden[c] for c in cells])
    nonzero_hidden = hid & (values > 0)
    if hidden[total]:
        safe = nonzero_hidden.any() or bool((values == 0).all())
    else:
        hidden_sum = values[hid].sum()
        safe = nonzero_hidden.sum() != 1 and not (1 <= hidden_sum <= hi)
    if safe:
        return None
    shown = np.flatnonzero(~hid & (values > 0))
    if len(shown) == 0:
        return total
    return cells[shown[np.argmin(values[shown])]]  # smallest shown non-zero cell; ties to the first


def _suppress_table_one(table: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    hi = min_cell - 1
    labels = [str(i[0]) if isinstance(i, tuple) else str(i) for i in table.index]
    columns = [c[-1] if isinstance(c, tuple) else c for c in table.columns]
    n_rows, n_cols = table.shape
    is_count = np.array([lab == "n" or lab.endswith(", n (%)") for lab in labels])
    counts = np.full((n_rows, n_cols), np.nan)
    for i in np.flatnonzero(is_count):
        for j in range(n_cols):
            counts[i, j] = _cell_count(table.iat[i, j])
    n_row, overall = labels.index("n"), columns.index("Overall")
    groups = [j for j in range(n_cols) if j != overall]
    relations = []
    for var in dict.fromkeys(lab for lab, c in zip(labels, is_count, strict=True) if c and lab != "n"):
        rows = [i for i, lab in enumerate(labels) if lab == var]
        relations += [((n_row, j), [(i, j) for i in rows]) for j in range(n_cols)]
    if groups:
        relations += [((i, overall), [(i, j) for j in groups]) for i in np.flatnonzero(is_count)]
    small = (counts >= 1) & (counts <= hi)
    hidden = small.copy()
    changed = True
    while changed:
        changed = False
        for j in range(n_cols):
            if hidden[n_row, j] and not hidden[:, j].all():
                hidden[:, j] = True
                changed = True
        for total, cells in relations:
            extra = _complement(counts, hidden, total, cells, hi)
            if extra is not None:
                hidden[extra] = True
                changed = True
    hidden &= ~(counts == 0)  # a zero gives nothing away, even in a hidden column
    out = table.astype("str")
    for i, j in zip(*np.nonzero(hidden), strict=True):
        out.iat[i, j] = f"<{min_cell}" if small[i, j] else "suppressed"
    return out


# -------------------------------------------------------------------------------------------------- rates


def explorer_rates(frame: pd.DataFrame, *, by: str = "partner", min_cell: int | None = 11,
                   level: float = 0.95) -> pd.DataFrame:
    """30-day unplanned readmission, 30-day mortality and discharge to a partner post-acute provider, by
    group and for all the stays, with Wilson intervals (:func:`carequal.measures.rate_table`).

    Parameters
    ----------
    frame : DataFrame
        :func:`explorer_frame` rows (filtered or not).
    by : str
        A column of :data:`GROUPINGS`.
    min_cell : int or None
        Smallest count that may be shown: counts below it, and the values that would reveal them, are hidden
        (:func:`carequal.disclosure.suppress_counts`, within each measure the groups add up to its ``"all"``
        row). None shows every value (for analysis, not for sharing).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        ``measure`` (a key of :data:`RATE_MEASURES`), ``label``, ``by``'s column (its levels in the order of
        :func:`table_one`'s columns, then ``"all"``),
        ``n``, ``events``, ``rate``, ``lower``, ``upper``, ``level``, ``method``, and with ``min_cell``
        ``suppressed`` and ``suppression_reason``.

    Examples
    --------
    >>> frame = pd.DataFrame({"partner": ["partner"] * 4 + ["other"] * 2,
    ...     "unplanned_readmit_30d": [True, False, False, False, True, True], "died_30d": False,
    ...     "to_partner_pac": [True, True, False, False, False, True]})
    >>> explorer_rates(frame, min_cell=None)[["measure", "partner", "n", "events", "rate"]]
              measure  partner  n  events  rate
    0     readmission  partner  4       1  0.25
    1     readmission    other  2       2  1.00
    2     readmission      all  6       3  0.50
    3       mortality  partner  4       0  0.00
    4       mortality    other  2       0  0.00
    5       mortality      all  6       0  0.00
    6  to_partner_pac  partner  4       2  0.50
    7  to_partner_pac    other  2       1  0.50
    8  to_partner_pac      all  6       3  0.50
    """
    _grouping(by, "by")
    if by is None:
        raise ParameterError(f"explorer_rates: by must be one of {', '.join(GROUPINGS)}")
    parts = []
    for name, (outcome, label) in RATE_MEASURES.items():
        data = frame[[by, outcome]].assign(**{outcome: frame[outcome].fillna(False).astype(bool)})
        groups = rate_table(data, by=[by], events=outcome, level=level)
        groups[by] = groups[by].astype(object)
        order = {level: i for i, level in enumerate(_levels_order(groups[by], by))}
        groups = groups.sort_values(by, key=lambda values: values.map(order), ignore_index=True)
        total = rate_table(data.assign(**{by: "all"}), by=[by], events=outcome, level=level)
        part = pd.concat([groups, total], ignore_index=True)
        part.insert(0, "label", label)
        part.insert(0, "measure", name)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    if min_cell is None:
        return table

    return suppress_counts(table, count_cols=["n", "events"], group_cols="measure",
                           total_rows=(table[by] == "all").to_numpy(), threshold=cell_threshold(min_cell))


# ---------------------------------------------------------------------------------------------- attrition


def attrition_for_chart(attrition: pd.DataFrame, *, min_cell: int = 11) -> pd.DataFrame:
    """A cohort's attrition with no exclusion count from 1 to ``min_cell - 1``, for
    :func:`carequal.plots.attrition_plot`.

    Steps that excluded nothing are left out; a step that excluded fewer than ``min_cell`` stays is merged
    with the steps after it (or, at the end, before it) until the merged step excludes at least ``min_cell``,
    so neither an exclusion count nor the difference of two shown "remaining" counts is small. When all the
    exclusions together are fewer than ``min_cell``, only the final count is kept.

    Parameters
    ----------
    attrition : DataFrame
        :attr:`carequal.cohorts.Cohort.attrition` (``step``, ``description``, ``excluded``, ``remaining``;
        the first row is the starting count). Not modified.
    min_cell : int

    Returns
    -------
    DataFrame
        The same columns: the first row, then one row per (merged) step; merged steps join their names with
        ``+`` and their descriptions with ``;``.

    Examples
    --------
    >>> a = pd.DataFrame({"step": ["acute", "young", "died", "ama", "enrol"],
    ...     "description": ["acute stays", "under 65", "died", "left AMA", "not enrolled"],
    ...     "excluded": [0, 30, 4, 0, 9], "remaining": [200, 170, 166, 166, 157]})
    >>> attrition_for_chart(a)
             step         description  excluded  remaining
    0       acute         acute stays         0        200
    1       young            under 65        30        170
    2  died+enrol  died; not enrolled        13        157
    """
    _, hi = cell_threshold(min_cell)
    first, steps = attrition.iloc[:1], attrition.iloc[1:]
    steps = steps[steps["excluded"] > 0]
    groups: list[list[int]] = []
    current: list[int] = []
    for pos in range(len(steps)):
        current.append(pos)
        if steps["excluded"].iloc[current].sum() > hi:
            groups.append(current)
            current = []
    if current:
        if not groups:
            last = attrition.iloc[[-1]][["step", "description", "excluded", "remaining"]]
            return last.assign(excluded=np.nan).reset_index(drop=True)
        groups[-1] += current
    rows = [{"step": "+".join(steps["step"].iloc[g].astype(str)),
             "description": "; ".join(steps["description"].iloc[g].astype(str)),
             "excluded": int(steps["excluded"].iloc[g].sum()), "remaining": int(steps["remaining"].iloc[g[-1]])}
            for g in groups]
    head = first[["step", "description", "excluded", "remaining"]]
    return pd.concat([head, pd.DataFrame(rows, columns=head.columns)], ignore_index=True)


# ------------------------------------------------------------------------------------------- the explorer


class CohortExplorer:
    """The cohort explorer's state: the measured cohort read once per session, each market's view
    (:func:`market_view`) computed once (the last ``cache`` markets kept), and the two displays the notebook
    wires to its widgets.

    Parameters
    ----------
    cohort : MeasuredCohort
        :func:`carequal.national.read_cohort` of the prepared inputs (``cms=True`` reads only the CMS rows).
    attrition_plot : callable, optional
        Draws an attrition table (:func:`carequal.plots.attrition_plot`, passed by the notebook: this module
        sits below the plots).
    min_cell : int
        Disclosure threshold of the tables and the chart.
    """

    def __init__(self, cohort: MeasuredCohort, *, dataset: str | Path | None = None,
                 attrition_plot: Callable | None = None, min_cell: int = 11, cache: int = 3):
        self.cohort, self.dataset, self.attrition_plot, self.min_cell = cohort, dataset, attrition_plot, min_cell
        self._views = lru_cache(maxsize=cache)(self._view)

    def view(self, market: str, population: str = "medicare") -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(attrition, frame)`` of the market's ``population``, computed once (the last ``cache`` kept)."""
        return self._views(market, population)

    def _view(self, market: str, population: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        if population == "medicare":
            return market_view(self.cohort, market)
        if population not in POPULATIONS:
            raise ParameterError(f"unknown population {population!r}; choose from {', '.join(POPULATIONS)}")
        if self.dataset is None:
            raise ParameterError("CohortExplorer: the employee populations need dataset= (the prepared dataset)")
        cohort, frame = population_cohort(read_market(self.dataset, market).tables, population)
        return cohort.attrition[["step", "description", "excluded", "remaining"]].reset_index(drop=True), frame

    def tables(self, market: str, condition: str = "all", partner: str = "all", age_bands=None, start=None,
               end=None, population: str = "medicare") -> tuple[str, pd.DataFrame, str]:
        """The heading, the Table 1 and the outcome rates (as HTML) of the market's stays of ``population``
        matching the choices: by the discharging hospital's partner status, or for the employees by employer."""
        chosen = filter_explorer(self.view(market, population)[1], condition=condition, partner=partner,
                                 age_bands=age_bands, start=start, end=end)
        by = "sponsor" if population == "employees" else "partner"
        rates = with_interval_text(explorer_rates(chosen, by=by, min_cell=self.min_cell), percent=True)
        heading = (f"### {market}: index stays by the discharging hospital's partner status" if by == "partner"
                   else f"### {market}, {POPULATIONS[population]}: index stays by employer")
        return (heading, table_one(chosen, groupby=by, min_cell=self.min_cell),
                table_html(displayed(rates, "explorer_rates" if by == "partner" else "explorer_rates_employer")))

    def show_tables(self, market: str, condition: str = "all", partner: str = "all", age_bands=None, start=None,
                    end=None, population: str = "medicare") -> None:
        """Display :meth:`tables` in a notebook (the callback of the explorer's controls)."""
        from IPython.display import HTML, Markdown, display  # only in a notebook kernel

        heading, one, rates = self.tables(market, condition, partner, age_bands, start, end, population)
        display(Markdown(heading))
        display(one)
        display(HTML(rates))

    def show_attrition(self, market: str, population: str = "medicare") -> None:
        """Draw the market's attrition chart (:func:`attrition_for_chart`) with ``attrition_plot`` and show it."""
        import matplotlib.pyplot as plt  # only where a chart is drawn

        if self.attrition_plot is None:
            raise ParameterError("CohortExplorer.show_attrition needs attrition_plot (carequal.plots.attrition_plot)")
        self.attrition_plot(attrition_for_chart(self.view(market, population)[0], min_cell=self.min_cell),
                            title=f"{market}: acute stays to index stays")
        plt.show()
