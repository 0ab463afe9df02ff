"""All markets side by side: standardised utilisation and outcome trends, safe to share.

The content of ``carequal/notebooks/population_health.ipynb``, a leadership view of every market at once (the market
report, :mod:`carequal.report`, looks at one market in depth). Two questions:

* **How much care do each market's residents use?** Acute hospital admissions, post-acute admissions and
  emergency department visits per 1,000 person-years of enrollment, directly standardised by age and sex
  (:func:`utilisation_by_market`, laid out for reading by :func:`market_comparison`). The market is the
  patient's market of **residence** (``patients.market``), wherever the care was given.
* **How do outcomes move, and how do they compare with what the national risk model expects?** 30-day
  readmission and mortality of index stays by quarter (:func:`outcome_trends`) and over the reporting period
  (:func:`outcome_by_market`). The market is the market of the **facility judged** (``unit_market`` of the
  national reference rows, :func:`carequal.national.read_reference`), as in the market report.

Every table returned here has been through small-cell suppression
(:func:`carequal.disclosure.suppress_counts`: counts 1 to ``min_cell - 1`` hidden, with complementary
suppression and every rate, ratio or interval of a row whose count is hidden), so a notebook can show it as
it stands. Tables with an "All markets" row suppress within each measure (and year) with that row as the
group total, so the total minus the shown markets never reveals a hidden one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from carequal.cohorts import age_band, age_in_years, person_time, standard_population
from carequal.compare import indirect_standardisation
from carequal.disclosure import cell_threshold, suppress_counts
from carequal.errors import ParameterError
from carequal.intervals import wilson
from carequal.measures import standardised_rates, trend_table
from carequal.national import MEASURES, reporting_period
from carequal.presentation import COUNT_LABELS, fmt_ci

__all__ = ["POST_ACUTE_SETTINGS", "TOTAL_LABEL", "UTILISATION_MEASURES", "market_comparison", "outcome_by_market",
           "outcome_findings", "outcome_trends", "utilisation_by_market"]

UTILISATION_MEASURES: tuple[str, ...] = ("Acute hospital admissions", "Post-acute admissions",
                                         "Emergency department visits")
"""The utilisation measures, in display order: admissions to acute hospitals and to post-acute providers
(:data:`POST_ACUTE_SETTINGS`), counted by admission date, and ED visits (``ed_visits``), by visit date."""

POST_ACUTE_SETTINGS: tuple[str, ...] = ("snf", "irf", "ltch", "hha")
"""Facility settings counted as post-acute: skilled nursing, inpatient rehabilitation, long-term care hospital
and home health."""

TOTAL_LABEL = "All markets"
"""Default label of the all-markets row."""


# ------------------------------------------------------------------------------------------------ helpers


def _years(years: Sequence[int] | None, found: pd.Series) -> list[int]:
    if years is None:
        return sorted(int(y) for y in found.dropna().unique())
    out = []
    for y in years:
        if isinstance(y, bool) or not float(y).is_integer():
            raise ParameterError(f"years must be whole calendar years such as 2024, not {y!r}")
        out.append(int(y))
    if not out:
        raise ParameterError("years: give at least one calendar year, or None for every year in the data")
    return sorted(set(out))


def _measures(measures: Sequence[str] | None) -> list[str]:
    if measures is None:
        return list(MEASURES)
    items = [measures] if isinstance(measures, str) else list(measures)
    unknown = [m for m in items if m not in MEASURES]
    if unknown:
        raise ParameterError(f"unknown measure(s) {', '.join(map(repr, unknown))}; choose from {', '.join(MEASURES)}")
    return items


def _require(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ParameterError(f"{where}: column(s) {missing} not in the frame (it has {list(frame.columns)})")


def _utilisation_events(tables: dict[str, pd.DataFrame], years: Sequence[int] | None) -> tuple[pd.DataFrame, list]:
    """Events by ``market``, ``year``, ``measure``, ``age_band`` (age on the day) and ``sex``; and the years."""
    pat = tables["patients"].set_index("patient_id")
    fac = tables["facilities"].set_index("facility_id")
    stays = tables["stays"]
    setting = stays["facility_id"].map(fac["setting"])
    sources = [(UTILISATION_MEASURES[0], stays[setting == "acute"], "admit_date"),
               (UTILISATION_MEASURES[1], stays[setting.isin(POST_ACUTE_SETTINGS)], "admit_date")]
    if tables.get("ed_visits") is not None:
        sources.append((UTILISATION_MEASURES[2], tables["ed_visits"], "visit_date"))
    parts = []
    for name, frame, date_col in sources:
        when = pd.to_datetime(frame[date_col])
        birth = pd.to_datetime(frame["patient_id"].map(pat["birth_date"]))
        known = (when.notna() & birth.notna()).to_numpy()
        age = pd.Series(age_in_years(birth[known].to_numpy(), when[known].to_numpy()))
        parts.append(pd.DataFrame({
            "market": frame["patient_id"].map(pat["market"]).to_numpy()[known],
            "year": when.dt.year.to_numpy()[known],
            "measure": name,
            "age_band": age_band(age).to_numpy(),
            "sex": frame["patient_id"].map(pat["sex"]).to_numpy()[known]}))
    events = pd.concat(parts, ignore_index=True)
    chosen = _years(years, events["year"])
    events = events[events["year"].isin(chosen)]
    keys = ["market", "year", "measure", "age_band", "sex"]
    counts = events.groupby(keys, observed=True, sort=True).size().rename("events").reset_index()
    return counts, chosen


# ---------------------------------------------------------------------------------------------- utilisation


def utilisation_by_market(tables: dict[str, pd.DataFrame], *, years: list[int] | None = None, min_cell: int = 11,
                          total: str | None = TOTAL_LABEL, standard: pd.DataFrame | None = None,
                          min_age: int | None = 65, level: float = 0.95) -> pd.DataFrame:
    """Age–sex standardised utilisation per 1,000 person-years, per market of residence × calendar year ×
    measure, suppressed.

    Parameters
    ----------
    tables : dict of DataFrame
        Validated contract tables of every market: ``patients``, ``enrollment``, ``stays``, ``facilities``
        and, if present, ``ed_visits``.
    years : list of int, optional
        Calendar years; default every year with an admission or ED visit in the data.
    min_cell : int
        Smallest count that may be shown (11 under the CMS cell-size policy).
    total : str or None
        Label of an all-markets row per year and measure (None: no such row).
    standard : DataFrame, optional
        Standard population (``age_band``, ``population``); default the 2000 U.S. standard population
        from ``min_age`` (:func:`carequal.cohorts.standard_population`).
    min_age : int or None
        Leave out person-time and events below this age (65, the default: the Medicare population, so that
        a market's younger residents — disability, employees — do not take the weight of the under-65 bands
        of the all-ages standard); None for all ages. The employees of the alliance's members are shown by
        employer in :mod:`carequal.employers` (the ``employee_health`` notebook).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        One row per market (then the total row) × year × measure of :data:`UTILISATION_MEASURES` (ED visits
        only with an ``ed_visits`` table): ``market``, ``year``, ``measure``, ``events``, ``person_years``,
        ``crude_rate``, ``rate`` (standardised), ``lower``, ``upper`` (Dobson), ``level``, ``method``,
        ``suppressed``, ``suppression_reason``. Hidden values are missing. ``attrs["left_out"]`` counts the
        events left out because their age–sex stratum has no person-time in the market and year.

    Notes
    -----
    * **Person-time**: :func:`carequal.cohorts.person_time` over each calendar year (enrollment, split at the
      birthdays that change age band, stopping at death), by market of residence, age band and sex.
    * **Events**: admissions by admission date and ED visits by visit date in the year, placed in the
      patient's age band on that day; an event counts wherever the care was given. As in
      :func:`carequal.report.population_table`, an event is not required to fall in an enrolled period (the
      bundled sample has 2 of 29,349 stays outside enrollment); an event in a stratum with no person-time at
      all cannot be given a rate and is left out (``attrs["left_out"]``).
    * **Standardisation**: :func:`carequal.measures.standardised_rates`: 2000 U.S. standard population from
      ``min_age`` (65 and over by default; weights renormalised over the bands present), each age band's
      weight split equally between the sexes,
      Dobson et al. (1991) intervals. The all-markets row
      is standardised the same way from the sums of the markets' strata, so its events are the markets' sum.
    * **Suppression**: ``events`` and ``person_years`` are treated as counts (a handful of person-years tells
      how many people a market has); within each year × measure the markets add up to the total (a row of the
      table with ``total``, else assumed published elsewhere). ``crude_rate``, ``rate``, ``lower`` and
      ``upper`` are hidden with them.
    * A year in which a market has no person-time has no row for it; a market with person-time but no events
      has a row with 0 events and a rate of 0.

    References
    ----------
    Dobson AJ, Kuulasmaa K, Eberle E, Scherer J (1991). Confidence intervals for weighted sums of Poisson
    parameters. Statistics in Medicine 10:457–462.

    Examples
    --------
    Two women enrolled through 2024, aged 74 and 79: 20 and 40 acute admissions. The 65–74 and 75–84 rates
    (20 and 40 per 366/365.25 person-years) are weighted 18,135,514 : 12,314,793.

    >>> tables = {
    ...     "patients": pd.DataFrame({"patient_id": ["p1", "p2"], "market": "North", "sex": "F",
    ...         "birth_date": pd.to_datetime(["1950-01-01", "1945-01-01"]), "death_date": pd.NaT}),
    ...     "enrollment": pd.DataFrame({"patient_id": ["p1", "p2"], "start_date": pd.Timestamp("2020-01-01"),
    ...         "end_date": pd.Timestamp("2024-12-31")}),
    ...     "facilities": pd.DataFrame({"facility_id": ["H1"], "setting": ["acute"]}),
    ...     "stays": pd.DataFrame({"patient_id": ["p1"] * 20 + ["p2"] * 40, "facility_id": "H1",
    ...         "admit_date": pd.Timestamp("2024-06-01")})}
    >>> out = utilisation_by_market(tables, total=None, min_cell=2)  # only 1s hidden: 2 person-years shown
    >>> out[["market", "year", "measure", "events", "person_years"]]
      market  year                    measure  events  person_years
    0  North  2024  Acute hospital admissions      60      2.004107
    1  North  2024      Post-acute admissions       0      2.004107
    >>> round(float(out["rate"].iloc[0]), 1)  # (20 × 18,135,514 + 40 × 12,314,793) / 30,450,307 × 997.95
    28030.9
    """
    threshold = cell_threshold(min_cell)
    for name in ("patients", "enrollment", "stays", "facilities"):
        if tables.get(name) is None:
            raise ParameterError(f"utilisation_by_market needs the {name} table (tables has "
                                 f"{', '.join(k for k, v in tables.items() if v is not None)})")
    if total is not None and (tables["patients"]["market"] == total).any():
        raise ParameterError(f"a market is called {total!r}, the label of the all-markets row; pass another total=")
    events, chosen = _utilisation_events(tables, years)
    measures = [m for m in UTILISATION_MEASURES if m != UTILISATION_MEASURES[2] or tables.get("ed_visits") is not None]
    strata = ["market", "age_band", "sex"]
    pt = pd.concat([person_time(tables["enrollment"], tables["patients"], start=f"{y}-01-01", end=f"{y}-12-31",
                                by=tuple(strata)).assign(year=y) for y in chosen], ignore_index=True)
    if standard is None:
        standard = standard_population(min_age=min_age)
    if min_age is not None:
        pt = pt[pt["age_band"].isin(standard_population(min_age=min_age)["age_band"])]
        events = events[events["age_band"].isin(standard_population(min_age=min_age)["age_band"])]
    pt = pt[["market", "year", "age_band", "sex", "person_years"]]
    pt = pt.merge(pd.DataFrame({"measure": measures}), how="cross")
    keys = ["market", "year", "measure", "age_band", "sex"]
    # events in strata without person-time cannot be rated: leave them out here, so that the all-markets row
    # (computed from the same strata) is exactly the sum of the markets
    kept = events.merge(pt[keys], on=keys, how="inner")
    left_out = int(events["events"].sum() - kept["events"].sum())
    rates = standardised_rates(kept, pt, by=["market", "year", "measure"], standard=standard, level=level)
    if total is not None and len(pt):
        nat_keys = ["year", "measure", "age_band", "sex"]
        nat_pt = pt.groupby(nat_keys, observed=True, sort=True)["person_years"].sum().reset_index()
        nat_ev = kept.groupby(nat_keys, observed=True, sort=True)["events"].sum().reset_index()
        nat = standardised_rates(nat_ev, nat_pt, by=["year", "measure"], standard=standard,
                                 level=level).assign(market=total)
        rates = pd.concat([rates, nat], ignore_index=True)
    columns = ["market", "year", "measure", "events", "person_years", "crude_rate", "rate", "lower", "upper",
               "level", "method"]
    if rates.empty:
        out = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
        out = out.assign(suppressed=pd.Series(dtype="bool"), suppression_reason=pd.Series(dtype="str"))
        out.attrs["left_out"] = left_out
        return out
    rates = rates.rename(columns={"person_time": "person_years"})
    rates["events"] = rates["events"].round().astype("int64")
    rates["year"] = rates["year"].astype("int64")
    order = {m: i for i, m in enumerate(UTILISATION_MEASURES)}
    rates = rates.assign(_total=rates["market"] == total, _measure=rates["measure"].map(order))
    rates = rates.sort_values(["year", "_measure", "_total", "market"], ignore_index=True)
    is_total = rates["_total"].to_numpy(dtype=bool)
    safe = suppress_counts(rates[columns], count_cols=["events", "person_years"], group_cols=["year", "measure"],
                           total_rows=is_total if total is not None else None, threshold=threshold,
                           derived_cols="crude_rate", denominator=None)
    safe = safe.assign(_total=is_total, _measure=rates["_measure"].to_numpy())
    safe = safe.sort_values(["_total", "market", "year", "_measure"], ignore_index=True)
    safe = safe.drop(columns=["_total", "_measure"])
    safe.attrs["left_out"] = left_out
    return safe


def market_comparison(utilisation: pd.DataFrame, year: int, *, digits: int = 1) -> pd.DataFrame:
    """One year of :func:`utilisation_by_market` laid out for reading: markets as rows, each measure's
    standardised rate and 95% interval as text columns.

    Parameters
    ----------
    utilisation : DataFrame
        :func:`utilisation_by_market` output (already suppressed).
    year : int
        The year shown (usually the latest).
    digits : int
        Decimals of rates and limits.

    Returns
    -------
    DataFrame
        ``Market``, ``Person-years``, then per measure ``<measure>`` (rate per 1,000 person-years) and
        ``<measure>: 95% CI``; hidden values read "suppressed", values missing for another reason (no
        upper limit with 0 events) "–". Markets in the input's order (the all-markets row last).

    Examples
    --------
    >>> u = pd.DataFrame({"market": ["North", "South"], "year": 2024, "measure": "ED visits",
    ...     "events": pd.array([250, pd.NA], dtype="Int64"), "person_years": [1000.0, 900.0],
    ...     "rate": [251.26, None], "lower": [220.1, None], "upper": [285.3, None], "level": 0.95,
    ...     "suppressed": [False, True]})
    >>> market_comparison(u, 2024)
      Market Person-years   ED visits ED visits: 95% CI
    0  North        1,000       251.3       220.1–285.3
    1  South          900  suppressed        suppressed
    """
    _require(utilisation, ["market", "year", "measure", "person_years", "rate", "lower", "upper", "suppressed"],
             "market_comparison")
    part = utilisation[utilisation["year"] == year]
    if part.empty:
        known = ", ".join(str(y) for y in sorted(utilisation["year"].dropna().unique()))
        raise ParameterError(f"market_comparison: no utilisation rows for {year!r}; years: {known or 'none'}")
    level = part["level"].dropna() if "level" in part else pd.Series(dtype=float)
    ci = f"{level.iloc[0] * 100:g}% CI" if len(level) else "95% CI"
    markets = list(dict.fromkeys(part["market"]))
    measures = list(dict.fromkeys(part["measure"]))

    def text(value: float, hidden: bool) -> str:
        return ("suppressed" if hidden else "–") if pd.isna(value) else f"{float(value):,.{digits}f}"

    out: dict[str, list[str]] = {"Market": [str(m) for m in markets], COUNT_LABELS["person_years"]: []}
    for market in markets:
        rows = part[part["market"] == market]
        shown = rows["person_years"].dropna()
        out[COUNT_LABELS["person_years"]].append(f"{float(shown.iloc[0]):,.0f}" if len(shown) else "suppressed")
    for measure in measures:
        rates, intervals = [], []
        for market in markets:
            row = part[(part["market"] == market) & (part["measure"] == measure)]
            if row.empty:
                rates.append("–")
                intervals.append("–")
                continue
            r = row.iloc[0]
            hidden = bool(r["suppressed"])
            rates.append(text(r["rate"], hidden))
            if pd.isna(r["lower"]) or pd.isna(r["upper"]):
                intervals.append("suppressed" if hidden else "–")
            else:
                intervals.append(fmt_ci(r["lower"], r["upper"], percent=False, digits=digits))
        out[measure] = rates
        out[f"{measure}: {ci}"] = intervals
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------ outcomes


def _outcome_rows(rows: pd.DataFrame, measures: Sequence[str] | None, where: str) -> pd.DataFrame:
    _require(rows, ["measure", "discharge_date", "unit_market", "observed", "expected"], where)
    chosen = _measures(measures)
    r = rows[rows["measure"].isin(chosen)]
    return r.assign(event=r["observed"].to_numpy(dtype=float) > 0.5,
                    discharge_date=pd.to_datetime(r["discharge_date"]).astype("datetime64[ns]"))


def _with_ratio(table: pd.DataFrame, keys: list[str], level: float) -> pd.DataFrame:
    """Add ``expected_rate`` (mean expected), ``ratio`` (O/E) and its exact/Byar interval to a rate table."""
    std = indirect_standardisation(table.assign(observed=table["events"]), by=keys, level=level)
    out = table.merge(std[keys + ["ratio", "lower", "upper", "method"]].rename(
        columns={"lower": "ratio_lower", "upper": "ratio_upper", "method": "ratio_method"}), on=keys, how="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["expected_rate"] = out["expected"] / out["n"].where(out["n"] > 0)
    out["label"] = out["measure"].map({k: v.label for k, v in MEASURES.items()})
    return out


def outcome_trends(rows: pd.DataFrame, *, freq: str = "quarter", min_cell: int = 11,
                   measures: Sequence[str] | None = None, end: str | pd.Timestamp | None = None,
                   level: float = 0.95) -> pd.DataFrame:
    """Outcome rates per market of the judged facility × period × measure, with the expected rate and O/E,
    suppressed.

    Parameters
    ----------
    rows : DataFrame
        National reference rows (:func:`carequal.national.read_reference` ``.rows``): ``measure``,
        ``discharge_date``, ``unit_market``, ``observed`` (0/1), ``expected`` (the national model's
        probability at an average facility).
    freq : {"quarter", "month"}
        Period length (:func:`carequal.measures.trend_table`).
    min_cell : int
        Smallest count that may be shown.
    measures : list of str, optional
        Keys of :data:`carequal.national.MEASURES`; default all.
    end : date, optional
        Last discharge date charted (e.g. the reporting period's end).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        ``unit_market``, ``measure``, ``label``, ``period`` (first day), ``n`` (index stays), ``events``,
        ``rate``, ``lower``, ``upper`` (Wilson), ``level``, ``method``, ``expected`` (sum of the expected
        probabilities), ``expected_rate`` (their mean), ``ratio`` (O/E), ``ratio_lower``, ``ratio_upper``
        (exact Poisson below 10 events, Byar from 10), ``ratio_method``, ``suppressed``,
        ``suppression_reason``. Every period from the first to the last with data is present for each
        market and measure (``n = 0`` when empty, with no rate).

    Notes
    -----
    Suppression hides ``n`` and ``events`` of 1 to ``min_cell - 1``, ``events`` when the non-events
    ``n - events`` is that small, and a complementary period within each market and measure (its periods add
    up to the market's total over time); the rates, expected values and ratios of such a row are hidden too,
    so a chart built from this table leaves that period blank.

    Examples
    --------
    A quarter of 100 stays with 30 events, each expected at 25%: rate 0.30, expected rate 0.25, O/E 1.2.

    >>> rows = pd.DataFrame({"measure": "readmission", "unit_market": "North", "expected": 0.25,
    ...     "discharge_date": pd.Timestamp("2024-02-01"), "observed": [1.0] * 30 + [0.0] * 70})
    >>> outcome_trends(rows)[["unit_market", "period", "n", "events", "rate", "expected_rate", "ratio"]]
      unit_market     period    n  events  rate  expected_rate  ratio
    0       North 2024-01-01  100      30   0.3           0.25    1.2
    """
    threshold = cell_threshold(min_cell)
    if freq not in ("month", "quarter"):
        raise ParameterError(f"freq must be 'month' or 'quarter', not {freq!r}")
    r = _outcome_rows(rows, measures, "outcome_trends")
    if end is not None:
        r = r[r["discharge_date"] <= pd.Timestamp(end)]
    keys = ["unit_market", "measure"]
    columns = keys + ["label", "period", "n", "events", "rate", "lower", "upper", "level", "method", "expected",
                      "expected_rate", "ratio", "ratio_lower", "ratio_upper", "ratio_method"]
    if r.empty:
        out = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
        return out.assign(suppressed=pd.Series(dtype="bool"), suppression_reason=pd.Series(dtype="str"))
    trend = trend_table(r, freq=freq, events="event", by=keys, level=level)
    trend["period"] = pd.to_datetime(trend["period"]).astype("datetime64[ns]")
    code = {"month": "M", "quarter": "Q"}[freq]
    period = r["discharge_date"].dt.to_period(code).dt.start_time.astype("datetime64[ns]")
    expected = r.assign(period=period.to_numpy()).groupby(keys + ["period"], dropna=False, sort=True)["expected"]
    trend = trend.merge(expected.sum().reset_index(), on=keys + ["period"], how="left")
    trend["expected"] = trend["expected"].fillna(0.0)
    table = _with_ratio(trend, keys + ["period"], level)[columns]
    return suppress_counts(table, count_cols=["n", "events"], group_cols=keys, threshold=threshold,
                           derived_cols=["expected", "expected_rate", "ratio", "ratio_lower", "ratio_upper"])


def outcome_by_market(rows: pd.DataFrame, *, period_start: str | pd.Timestamp, period_end: str | pd.Timestamp,
                      min_cell: int = 11, measures: Sequence[str] | None = None, total: str | None = TOTAL_LABEL,
                      level: float = 0.95) -> pd.DataFrame:
    """Each market's outcome rates over the reporting period against the national expectation (O/E),
    with an all-markets row, suppressed.

    Parameters
    ----------
    rows : DataFrame
        National reference rows (as :func:`outcome_trends`).
    period_start, period_end : date
        Reporting period (inclusive, by discharge date).
    min_cell : int
        Smallest count that may be shown.
    measures : list of str, optional
        Keys of :data:`carequal.national.MEASURES`; default all.
    total : str or None
        Label of the all-markets row per measure (None: no such row).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        ``unit_market``, ``measure``, ``label``, ``n``, ``events``, ``rate``, ``lower``, ``upper``, ``level``,
        ``method``, ``expected``, ``expected_rate``, ``ratio``, ``ratio_lower``, ``ratio_upper``,
        ``ratio_method``, ``suppressed``, ``suppression_reason``; per measure, the markets in name order, then
        the total row.

    Notes
    -----
    Within each measure the markets add up to the all-markets row, which is the group total of the
    complementary suppression. The all-markets O/E is close to 1 by construction for the period the national
    models were fitted on.

    Examples
    --------
    North: 200 stays, 50 events, 40 expected (O/E 1.25). South: 100 stays and 5 events, hidden, and so is
    North's events (else the total 55 minus North's 50 would give South's 5).

    >>> rows = pd.DataFrame({"measure": "readmission", "unit_market": ["North"] * 200 + ["South"] * 100,
    ...     "discharge_date": pd.Timestamp("2024-05-01"), "expected": 0.2,
    ...     "observed": [1.0] * 50 + [0.0] * 150 + [1.0] * 5 + [0.0] * 95})
    >>> out = outcome_by_market(rows, period_start="2024-01-01", period_end="2024-12-31")
    >>> out[["unit_market", "n", "events", "rate", "ratio", "suppression_reason"]]
        unit_market    n  events      rate      ratio suppression_reason
    0         North  200    <NA>       NaN        NaN      complementary
    1         South  100    <NA>       NaN        NaN            primary
    2   All markets  300      55  0.183333  0.916667
    """
    threshold = cell_threshold(min_cell)
    start, end = reporting_period(period_start, period_end)
    r = _outcome_rows(rows, measures, "outcome_by_market")
    r = r[(r["discharge_date"] >= start) & (r["discharge_date"] <= end)]
    if total is not None and (r["unit_market"] == total).any():
        raise ParameterError(f"a market is called {total!r}, the label of the all-markets row; pass another total=")
    keys = ["unit_market", "measure"]
    parts = [r.assign(unit_market=r["unit_market"].astype("object"))]
    if total is not None:
        parts.append(r.assign(unit_market=total))
    data = pd.concat(parts, ignore_index=True)
    grouped = data.groupby(keys, dropna=False, sort=True)
    table = grouped.agg(n=("event", "size"), events=("event", "sum"), expected=("expected", "sum")).reset_index()
    table["events"] = table["events"].astype("int64")
    lo, hi = wilson(table["events"], table["n"], level=level)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["rate"] = table["events"] / table["n"].where(table["n"] > 0)
    table["lower"], table["upper"], table["level"], table["method"] = lo, hi, level, "Wilson"
    table = _with_ratio(table, keys, level)
    order = {m: i for i, m in enumerate(MEASURES)}
    table = table.assign(_total=table["unit_market"] == total, _measure=table["measure"].map(order))
    table = table.sort_values(["_measure", "_total", "unit_market"], ignore_index=True)
    columns = keys + ["label", "n", "events", "rate", "lower", "upper", "level", "method", "expected",
                      "expected_rate", "ratio", "ratio_lower", "ratio_upper", "ratio_method"]
    return suppress_counts(table[columns], count_cols=["n", "events"], group_cols="measure",
                           total_rows=table["_total"].to_numpy(dtype=bool) if total is not None else None,
                           threshold=threshold,
                           derived_cols=["expected", "expected_rate", "ratio", "ratio_lower", "ratio_upper"])


def outcome_findings(by_market: pd.DataFrame, *, total: str | None = TOTAL_LABEL) -> list[str]:
    """One plain-language sentence per measure of :func:`outcome_by_market`: which markets are higher or
    lower than the national expectation (the 95% interval of O/E wholly above or below 1), quoting only
    values that are shown.

    Examples
    --------
    >>> t = pd.DataFrame({"measure": "readmission", "label": "30-day unplanned readmission",
    ...     "unit_market": ["North", "South", "East", "All markets"], "ratio": [1.25, 0.97, None, 1.02],
    ...     "ratio_lower": [1.12, 0.84, None, 0.95], "ratio_upper": [1.40, 1.10, None, 1.09]})
    >>> print(outcome_findings(t)[0])
    30-day unplanned readmission: higher than expected in North (O/E 1.25, 95% CI 1.12–1.40); in line with
    expectation in South; not shown (small numbers) for East.
    """
    _require(by_market, ["measure", "label", "unit_market", "ratio", "ratio_lower", "ratio_upper"],
             "outcome_findings")
    sentences = []
    for _, part in by_market.groupby("measure", sort=False):
        part = part[part["unit_market"] != total] if total is not None else part
        groups: dict[str, list[str]] = {"higher": [], "lower": [], "in line": [], "hidden": []}
        for r in part.itertuples(index=False):
            if pd.isna(r.ratio) or pd.isna(r.ratio_lower) or pd.isna(r.ratio_upper):
                groups["hidden"].append(str(r.unit_market))
                continue
            interval = fmt_ci(r.ratio_lower, r.ratio_upper, percent=False)
            quoted = f"{r.unit_market} (O/E {r.ratio:.2f}, 95% CI {interval})"
            if r.ratio_lower > 1:
                groups["higher"].append(quoted)
            elif r.ratio_upper < 1:
                groups["lower"].append(quoted)
            else:
                groups["in line"].append(str(r.unit_market))
        clauses = []
        if groups["higher"]:
            clauses.append(f"higher than expected in {', '.join(groups['higher'])}")
        if groups["lower"]:
            clauses.append(f"lower than expected in {', '.join(groups['lower'])}")
        if groups["in line"]:
            clauses.append(f"in line with expectation in {', '.join(groups['in line'])}")
        if groups["hidden"]:
            clauses.append(f"not shown (small numbers) for {', '.join(groups['hidden'])}")
        if clauses:
            sentences.append(f"{part['label'].iloc[0]}: {'; '.join(clauses)}.")
    return sentences
