"""Market report content: every table and sentence of ``carequal/notebooks/market_report.ipynb``, safe to share.

The report notebook only calls these functions and the plots in :mod:`carequal.plots`; everything it shows
is computed and tested here. Each ``*_table`` function returns a tidy table that has already been through
small-cell suppression (:func:`carequal.disclosure.suppress_counts`, counts 1 to ``min_cell - 1`` hidden with
complementary and derived suppression), so what the notebook displays is shareable as it stands; the
``findings`` functions turn those tables into plain-language sentences for leaders and never quote a hidden
value.

Inputs are a market's residents (:func:`carequal.loaders.read_market`) and the national reference rows of the
market's facilities (:func:`carequal.national.read_reference`): the report never reads other markets' data.

Choices where the sources are silent (documented in the report's methods appendix):

* "This period" is the reporting period; "last period" is the period of the same length just before it.
  A change is called a change only when the 95% interval of the difference in rates excludes 0
  (Newcombe's hybrid Wilson interval).
* A facility is named "higher" or "lower than expected" when the 95% interval of its O/E lies wholly above or
  below 1 (:func:`carequal.compare.scorecard`); facilities with fewer than 25 cases are "too few cases to
  judge".
* Charts show no point whose count would be hidden in a table: facilities with 1–10 events are left off the
  funnel and caterpillar plots and counted in a note; trend periods with 1–10 events (or non-events) are
  left blank.

Size: about 800 lines, one module because one function (or two: a table and its findings) per section of the market
report, in the notebook's order, sharing :class:`MarketReport`, the period filter and the cell threshold. Formatting
and display are in :mod:`carequal.presentation`, the candidate-partner section in :mod:`carequal.screening`.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from carequal.cohorts import (
    CONDITIONS,
    age_band,
    chronic_condition_codes,
    chronic_conditions,
    index_stays,
    person_time,
    standard_population,
)
from carequal.compare import funnel_data, indirect_standardisation, p_chart, scorecard
from carequal.disclosure import cell_threshold, suppress_counts, suppression_statement
from carequal.errors import CarequalWarning, ModelError, ParameterError, describe_facilities
from carequal.impact import RISK_COVARIATES, difference_in_differences, pac_attributed_stays
from carequal.intervals import change_interval, wilson
from carequal.loaders import read_market, read_validation_summary
from carequal.measures import standardised_rates, trend_table
from carequal.national import MEASURES, read_cohort, read_reference
from carequal.periods import previous_period, reporting_period
from carequal.presentation import HIDDEN_IN_TABLES, fmt_ci, fmt_pct, with_interval_text

__all__ = ["MarketReport", "SECTIONS", "at_a_glance", "attrition_table", "chronic_table", "destination_findings",
           "destination_table", "facility_scorecard", "flow_for_chart", "flow_table", "funnel_for",
           "headline_findings", "headline_kpis", "impact_finding", "impact_summary", "kpi_record",
           "load_market_report", "model_table", "oe_verdict", "parse_choices", "partner_findings", "plain_note",
           "population_table", "recent_rates", "report_notes", "report_title", "scorecard_display",
           "shown_for_chart", "trend_chart", "trend_findings", "unavailable_findings", "validation_table",
           "write_kpis"]

# ------------------------------------------------------------------------------------------- the inputs


@dataclass
class MarketReport:
    """A market's inputs: residents' tables, its facilities' reference rows, and the report settings."""

    market: str
    tables: dict[str, pd.DataFrame]
    rows: pd.DataFrame
    reference: object
    facilities: pd.DataFrame
    period: tuple[pd.Timestamp, pd.Timestamp]
    previous: tuple[pd.Timestamp, pd.Timestamp]
    measures: tuple[str, ...]
    conditions: tuple[str, ...]
    min_cell: int
    validation: tuple[pd.DataFrame, pd.DataFrame]
    unavailable: dict[str, str] = field(default_factory=dict)
    """Measures asked for whose national model could not be fitted → why (left out of ``measures``; their rows
    stay in ``rows`` without expected values, for the post-acute flows)."""
    cohort: pd.DataFrame | None = None
    """The market residents' rows of the measured cohort (:func:`carequal.national.read_cohort`), or None when the
    reference was written without one."""
    attrition: pd.DataFrame | None = None
    """The market residents' index-stay attrition (CMS rules: ``step``, ``description``, ``excluded``,
    ``remaining``), as stored with the cohort."""

    @property
    def market_facilities(self) -> pd.DataFrame:
        return self.facilities[self.facilities["market"] == self.market]


def parse_choices(value, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``"all"`` (or empty) → every allowed value; a comma-separated string or list → those values, checked.

    Examples
    --------
    >>> parse_choices("readmission, mortality", ("readmission", "mortality", "pac_readmission"), "measure(s)")
    ('readmission', 'mortality')
    >>> parse_choices("los", ("readmission", "mortality"), "measure(s)")
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: unknown measure(s) 'los'; choose from readmission, mortality or 'all'
    """
    if value in (None, "", "all") or value == ["all"]:
        return allowed
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise ParameterError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)} "
                             "or 'all'")
    return tuple(items)


def load_market_report(data: str | Path, reference: str | Path, market: str, *, period_start: str,
                       period_end: str, measures="all", conditions="all", min_cell: int = 11) -> MarketReport:
    """Read one market's data (only its partition) and its facilities' national reference rows.

    Parameters
    ----------
    data : path
        A market-partitioned dataset (``carequal ingest``).
    reference : path
        A national reference (:func:`carequal.national.write_reference`).
    market : str
    period_start, period_end : str
        Reporting period, ISO dates, inclusive.
    measures, conditions : "all", comma-separated str or list
        Measures of :data:`carequal.national.MEASURES` and condition cohorts to report on (conditions filter
        the facility comparisons; "other" is the index stays in no condition cohort).
    min_cell : int
        Smallest count that may be shown (11 under the CMS cell-size policy).
    """
    cell_threshold(min_cell)
    start, end = reporting_period(period_start, period_end)
    measure_list = parse_choices(measures, tuple(MEASURES), "measure(s)")
    condition_list = parse_choices(conditions, (*CONDITIONS, "other"), "condition(s)")
    validated = read_market(data, market)
    ref = read_reference(reference, market=market)
    fitted = tuple(ref.meta.get("measures", ()))
    unavailable = {name: info["reason"] for name, info in ref.meta.get("unavailable", {}).items()}
    missing = [m for m in measure_list if m not in fitted and m not in unavailable]
    if missing:
        raise ParameterError(f"the national reference has no model for {', '.join(missing)}; it has "
                             f"{', '.join(fitted)}")
    rows = ref.rows[ref.rows["measure"].isin(measure_list) & ref.rows["condition"].isin(condition_list)]
    cohort = attrition = None
    if (Path(reference) / "cohort" / "cohort.json").is_file():
        stored = read_cohort(Path(reference) / "cohort", market=market)
        cohort = stored.rows
        attrition = stored.attrition[stored.attrition["rules"] == "cms"].drop(columns=["rules", "market"])
        attrition = attrition.reset_index(drop=True)
    return MarketReport(market=market, tables=validated.tables, rows=rows.reset_index(drop=True), reference=ref,
                        facilities=validated.tables["facilities"], period=(start, end),
                        previous=previous_period(start, end),
                        measures=tuple(m for m in measure_list if m in fitted), conditions=condition_list,
                        min_cell=int(min_cell), validation=read_validation_summary(data),
                        unavailable={m: unavailable[m] for m in measure_list if m in unavailable},
                        cohort=cohort, attrition=attrition)


def unavailable_findings(mr: MarketReport) -> list[str]:
    """One sentence per measure asked for whose national model could not be fitted (:attr:`MarketReport.unavailable`):
    the report leaves it out and says why, in words that name no patient.

    Examples
    --------
    >>> mr = MarketReport("Northvale", {}, pd.DataFrame(), None, pd.DataFrame(), (None, None), (None, None),
    ...                   ("readmission",), ("all",), 11, (None, None), unavailable={"mortality": "mortality: the "
    ...                   "random-intercept logistic model could not be fitted at 12 hospitals (all markets): the "
    ...                   "stays have no events, so there is no risk to model"})
    >>> print(unavailable_findings(mr)[0])
    30-day mortality is not available in this report: the random-intercept logistic model could not be fitted at \
12 hospitals (all markets): the stays have no events, so there is no risk to model.
    """
    out = []
    for name, reason in mr.unavailable.items():
        text = reason.removeprefix(f"{name}: ")
        out.append(f"{MEASURES[name].label} is not available in this report: {text}.")
    return out


def _in(frame: pd.DataFrame, period: tuple[pd.Timestamp, pd.Timestamp], column: str = "discharge_date") -> pd.Series:
    when = pd.to_datetime(frame[column])
    return (when >= period[0]) & (when <= period[1])


# -------------------------------------------------------------------------------------------- headline KPIs


def headline_kpis(rows: pd.DataFrame, *, period, previous, measures: tuple[str, ...], min_cell: int = 11,
                  level: float = 0.95) -> pd.DataFrame:
    """One row per measure for the market's facilities: this period's cases, events, rate (Wilson interval),
    expected rate and O/E (exact/Byar interval); last period's rate; the change with Newcombe's interval.

    Parameters
    ----------
    rows : DataFrame
        Reference rows of the market's facilities (``measure``, ``discharge_date``, ``observed``,
        ``expected``).

    Returns
    -------
    DataFrame
        ``measure``, ``label``, ``n``, ``events``, ``rate``, ``lower``, ``upper``, ``expected_rate``,
        ``ratio``, ``ratio_lower``, ``ratio_upper``, ``prev_n``, ``prev_events``, ``prev_rate``, ``change``,
        ``change_lower``, ``change_upper``, ``suppressed``, ``suppression_reason``; values that would
        reveal a count below ``min_cell`` are missing.

    Examples
    --------
    >>> rows = pd.DataFrame({"measure": "readmission", "observed": [1.0] * 30 + [0.0] * 170,
    ...                      "expected": 0.1, "discharge_date": pd.to_datetime(["2024-06-01"] * 100
    ...                                                                          + ["2023-06-01"] * 100)})
    >>> k = headline_kpis(rows, period=(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31")),
    ...                   previous=(pd.Timestamp("2023-01-01"), pd.Timestamp("2023-12-31")),
    ...                   measures=("readmission",))
    >>> k[["n", "events", "rate", "expected_rate", "ratio", "prev_events"]]
         n  events  rate  expected_rate  ratio  prev_events
    0  100      30   0.3            0.1    3.0            0
    """
    out = []
    for name in measures:
        r = rows[rows["measure"] == name]
        cur, prev = r[_in(r, period)], r[_in(r, previous)]
        n, e, x = len(cur), float(cur["observed"].sum()), float(cur["expected"].sum())
        n0, e0 = len(prev), float(prev["observed"].sum())
        out.append({"measure": name, "label": MEASURES[name].label, "n": n, "events": int(e), "expected": x,
                    "prev_n": n0, "prev_events": int(e0)})
    table = pd.DataFrame(out)
    lo, hi = wilson(table["events"], table["n"], level=level)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["rate"] = table["events"] / table["n"].where(table["n"] > 0)
        table["prev_rate"] = table["prev_events"] / table["prev_n"].where(table["prev_n"] > 0)
        table["expected_rate"] = table["expected"] / table["n"].where(table["n"] > 0)
    table["lower"], table["upper"] = lo, hi
    std = indirect_standardisation(table.assign(observed=table["events"]), by=["measure"], level=level)
    std = std.set_index("measure").reindex(table["measure"])
    table["ratio"] = std["ratio"].to_numpy()
    table["ratio_lower"] = std["lower"].to_numpy()
    table["ratio_upper"] = std["upper"].to_numpy()
    table["change"] = table["rate"] - table["prev_rate"]
    cl, cu = change_interval(table["events"], table["n"], table["prev_events"], table["prev_n"], level=level)
    table["change_lower"], table["change_upper"] = cl, cu
    threshold = cell_threshold(min_cell)
    # current and previous counts are suppressed separately; what is derived from both is hidden with either
    current = suppress_counts(table[["measure", "n", "events", "rate", "lower", "upper", "expected_rate", "ratio",
                                     "ratio_lower", "ratio_upper"]],
                              count_cols=["n", "events"], group_cols="measure", threshold=threshold,
                              derived_cols=["expected_rate", "ratio", "ratio_lower", "ratio_upper"])
    last = suppress_counts(table[["measure", "prev_n", "prev_events", "prev_rate"]],
                           count_cols=["prev_n", "prev_events"], group_cols="measure", threshold=threshold,
                           derived_cols=["prev_rate"], denominator="prev_n")
    result = current.drop(columns=["suppressed", "suppression_reason"])
    result.insert(1, "label", table["label"].to_numpy())
    for col in ("prev_n", "prev_events", "prev_rate"):
        result[col] = last[col].to_numpy()
    hide_change = (current["suppressed"] | last["suppressed"]).to_numpy()
    for col in ("change", "change_lower", "change_upper"):
        result[col] = table[col].where(~hide_change).to_numpy()
    result["suppressed"] = hide_change
    result["suppression_reason"] = np.where(current["suppressed"], current["suppression_reason"],
                                            last["suppression_reason"])
    return result


def _direction(spec_improvement: str, lo: float, hi: float) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return "unknown"
    if lo > 0:
        return "worse" if spec_improvement == "down" else "better"
    if hi < 0:
        return "better" if spec_improvement == "down" else "worse"
    return "no clear change"


def headline_findings(kpis: pd.DataFrame, *, market: str, period, previous) -> list[str]:
    """Plain-language sentences for leaders, one per measure of :func:`headline_kpis`.

    Examples
    --------
    >>> k = pd.DataFrame({"measure": ["readmission"], "label": ["30-day unplanned readmission"], "n": [500],
    ...     "events": [80], "rate": [0.16], "lower": [0.13], "upper": [0.195], "expected_rate": [0.14],
    ...     "ratio": [1.14], "ratio_lower": [0.91], "ratio_upper": [1.42], "prev_rate": [0.2],
    ...     "change": [-0.04], "change_lower": [-0.085], "change_upper": [0.006]})
    >>> print(headline_findings(k, market="Northvale", period=(pd.Timestamp("2024-01-01"),
    ...       pd.Timestamp("2024-12-31")), previous=(pd.Timestamp("2023-01-01"), pd.Timestamp("2023-12-31")))[0])
    30-day unplanned readmission: 16.0% (95% CI 13.0–19.5%) of 500 cases at Northvale's facilities, against
    14.0% expected for these patients nationally (O/E 1.14, 0.91–1.42): in line with expectation. Last period
    (2023-01-01 to 2023-12-31) it was 20.0%; the change of -4.0 percentage points (-8.5 to 0.6) is within what
    chance alone could produce.
    """
    sentences = []
    for row in kpis.itertuples(index=False):
        spec = MEASURES[row.measure]
        if pd.isna(row.rate):
            sentences.append(f"{row.label}: too few cases at {market}'s facilities in this period to report "
                             "(suppressed).")
            continue
        if pd.isna(row.ratio_lower):
            verdict = "not compared with expectation (suppressed)"
        elif row.ratio_lower > 1:
            verdict = "higher than expected"
        elif row.ratio_upper < 1:
            verdict = "lower than expected"
        else:
            verdict = "in line with expectation"
        text = (f"{row.label}: {fmt_pct(row.rate)} (95% CI {fmt_ci(row.lower, row.upper)}) of {int(row.n):,d} "
                f"cases at {market}'s facilities, against {fmt_pct(row.expected_rate)} expected for these patients "
                f"nationally (O/E {row.ratio:.2f}, {fmt_ci(row.ratio_lower, row.ratio_upper, percent=False)}): "
                f"{verdict}.")
        prev = f"{previous[0].date()} to {previous[1].date()}"
        if pd.isna(row.prev_rate):
            text += f" Last period ({prev}) had too few cases to compare."
        else:
            direction = _direction(spec.improvement, row.change_lower, row.change_upper)
            change = (f"the change of {100 * row.change:+.1f} percentage points "
                      f"({100 * row.change_lower:.1f} to {100 * row.change_upper:.1f})").replace("+", "")
            if direction == "no clear change":
                text += f" Last period ({prev}) it was {fmt_pct(row.prev_rate)}; {change} is within what chance " \
                        "alone could produce."
            else:
                text += f" Last period ({prev}) it was {fmt_pct(row.prev_rate)}; {change} is a real change for " \
                        f"the {direction}."
        sentences.append(text)
    return sentences


# ------------------------------------------------------------------------------------------------ at a glance

SECTIONS = {"headline": "Headline findings", "scorecard": "Partner scorecard", "trends": "Trends and signals",
            "appendix": "Appendix: methods and data quality"}
"""The market report's section headings (``##`` in ``notebooks/market_report.py``) that "At a glance" links to."""


def _worse_side(improvement: str) -> str:
    """The O/E verdict (:func:`oe_verdict`) that is bad news for a measure: "higher" where fewer events are
    better."""
    return "higher" if improvement == "down" else "lower"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def at_a_glance(kpis: pd.DataFrame, card: pd.DataFrame, charts: dict[str, pd.DataFrame] | None = None, *,
                since: pd.Timestamp | None = None, at_most: int = 3) -> list[tuple[str, str]]:
    """Three or four plain-language sentences for the top of a market report, each with the heading of the
    section that holds the detail (:data:`SECTIONS`): which measures are worse (or better) than expected for
    these patients, which changed for real since last period, which facilities are worse than expected, and
    (only when there is one) a control-chart signal of concern since ``since``. Built from the tables the
    report shows (:func:`headline_kpis`, :func:`facility_scorecard`, :func:`trend_chart`), so it quotes no
    hidden value.

    "Worse" takes each measure's direction into account (:attr:`carequal.national.MeasureSpec.improvement`):
    an O/E whose 95% interval lies wholly above 1 is worse where fewer events are better.

    Examples
    --------
    >>> k = pd.DataFrame({"measure": ["readmission", "mortality"], "label": ["30-day readmission", "30-day death"],
    ...     "rate": [0.2, 0.05], "prev_rate": [0.18, 0.07], "ratio": [1.25, 0.9], "ratio_lower": [1.12, 0.7],
    ...     "ratio_upper": [1.4, 1.1], "change": [0.02, -0.02], "change_lower": [-0.01, -0.03],
    ...     "change_upper": [0.05, -0.01]})
    >>> card = pd.DataFrame({"measure": "readmission", "label": "30-day readmission", "name": ["Oak", "Elm"],
    ...     "is_partner": [True, False], "ratio": [1.5, 1.0], "lower": [1.2, 0.8], "upper": [1.9, 1.2],
    ...     "judgement": ["higher than expected", "as expected"]})
    >>> for text, section in at_a_glance(k, card): print(f"{text} [{section}]")
    Worse than expected for these patients: 30-day readmission (O/E 1.25, 95% CI 1.12–1.40). [Headline findings]
    Changed for real since last period: 30-day death fell from 7.0% to 5.0% (better). [Headline findings]
    Facilities worse than expected: Oak (partner; 30-day readmission, O/E 1.50, 95% CI 1.20–1.90). [Partner scorecard]
    """
    out = []
    worse, better, unknown = [], [], []
    for row in kpis.itertuples(index=False):
        verdict = oe_verdict(row.ratio_lower, row.ratio_upper)
        text = f"{row.label} (O/E {row.ratio:.2f}, 95% CI {fmt_ci(row.ratio_lower, row.ratio_upper, percent=False)})"
        if verdict is None:
            unknown.append(row.label)
        elif verdict == _worse_side(MEASURES[row.measure].improvement):
            worse.append(text)
        elif verdict != "as expected":
            better.append(text)
    if worse:
        sentence = f"Worse than expected for these patients: {_and(worse)}."
    elif better:
        sentence = f"No measure is worse than expected for these patients; better than expected: {_and(better)}."
    elif len(unknown) < len(kpis):
        sentence = "Every measure shown is in line with what is expected for these patients nationally."
    else:
        sentence = "Too few cases this period to compare any measure with what is expected."
    if unknown and len(unknown) < len(kpis):
        sentence += f" Not compared (too few cases): {_and(unknown)}."
    out.append((sentence, SECTIONS["headline"]))

    moved = []
    for row in kpis.itertuples(index=False):
        direction = _direction(MEASURES[row.measure].improvement, row.change_lower, row.change_upper)
        if direction in ("better", "worse") and pd.notna(row.prev_rate):
            moved.append(f"{row.label} {'rose' if row.change > 0 else 'fell'} from {fmt_pct(row.prev_rate)} to "
                         f"{fmt_pct(row.rate)} ({direction})")
    out.append((f"Changed for real since last period: {_and(moved)}." if moved else
                "No measure changed by more than chance since last period.", SECTIONS["headline"]))

    bad = []
    judged = card[card["judgement"].isin(["higher than expected", "lower than expected"])] if len(card) else card
    for r in judged.sort_values(["is_partner", "ratio"], ascending=[False, False]).itertuples(index=False):
        if r.judgement.startswith(_worse_side(MEASURES[r.measure].improvement)):
            bad.append(f"{r.name} ({'partner; ' if r.is_partner else ''}{r.label}, O/E {r.ratio:.2f}, 95% CI "
                       f"{fmt_ci(r.lower, r.upper, percent=False)})")
    if bad:
        more = len(bad) - at_most
        listed = "; ".join(bad[:at_most]) + (f"; and {more} more" if more > 0 else "")
        out.append((f"Facilities worse than expected: {listed}.", SECTIONS["scorecard"]))
    else:
        out.append(("No facility is worse than expected on any measure.", SECTIONS["scorecard"]))

    concerns = []
    for name, chart in (charts or {}).items():
        if chart.empty or "signal" not in chart:
            continue
        part = chart if since is None else chart[pd.to_datetime(chart["period"]) >= since]
        hits = part[part["signal"] == "concern"]
        if len(hits):
            fmt = "%B %Y" if chart.attrs.get("freq", "month") == "month" else "the quarter from %B %Y"
            when = [pd.Timestamp(p).strftime(fmt) for p in hits["period"]]
            concerns.append(f"{MEASURES[name].label} in {_and(when)}")
    if concerns:
        out.append((f"A signal of concern on the control chart, worth a look at what changed then: "
                    f"{_and(concerns)}.", SECTIONS["trends"]))
    return out


# ---------------------------------------------------------------------------------------- facility scorecard


def facility_scorecard(rows: pd.DataFrame, facilities: pd.DataFrame, *, period, measures: tuple[str, ...],
                       min_cell: int = 11, min_cases: int = 25, level: float = 0.95) -> pd.DataFrame:
    """Facility × measure scorecard for the period, with names, setting and partner flags, suppressed.

    O/E is :func:`carequal.compare.scorecard` (indirect standardisation on the national expected rates);
    ``pe_ratio`` is the hierarchical model's P/E (the CMS excess-ratio form, shrunk towards 1 for small
    facilities). Counts below ``min_cell`` are hidden, with the rate, ratios and intervals they determine.

    Returns
    -------
    DataFrame
        ``measure``, ``label``, ``facility_id``, ``name``, ``setting``, ``is_partner``, ``n``, ``observed``,
        ``expected``, ``rate``, ``ratio``, ``lower``, ``upper``, ``pe_ratio``, ``funnel_class``, ``judgement``
        (the scorecard label), ``suppressed``, ``suppression_reason``.
    """
    cur = rows[_in(rows, period) & rows["measure"].isin(measures)]
    if cur.empty:
        return pd.DataFrame(columns=["measure", "label", "facility_id", "name", "setting", "is_partner", "n",
                                     "observed", "expected", "rate", "ratio", "lower", "upper", "pe_ratio",
                                     "funnel_class", "judgement", "suppressed", "suppression_reason"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CarequalWarning)
        card = scorecard(cur, facility="unit_id", measure="measure", min_cases=min_cases, level=level)
    pe = cur.groupby(["measure", "unit_id"]).agg(predicted=("predicted", "sum"), exp=("expected", "sum"))
    card = card.merge((pe["predicted"] / pe["exp"]).rename("pe_ratio").reset_index(), on=["measure", "unit_id"],
                      how="left")
    fac = facilities.set_index("facility_id")
    card = card.rename(columns={"unit_id": "facility_id", "label": "judgement"})
    card["name"] = card["facility_id"].map(fac["name"]).fillna(card["facility_id"])
    card["setting"] = card["facility_id"].map(fac["setting"])
    card["is_partner"] = card["facility_id"].map(fac["is_partner"]).fillna(False).astype(bool)
    card["label"] = card["measure"].map({k: v.label for k, v in MEASURES.items()})
    card["rate"] = card["observed"] / card["n"]
    card["observed"] = card["observed"].round().astype("int64")
    card = card[["measure", "label", "facility_id", "name", "setting", "is_partner", "n", "observed", "expected",
                 "rate", "ratio", "lower", "upper", "pe_ratio", "funnel_class", "judgement"]]
    card = suppress_counts(card, count_cols=["n", "observed"], group_cols="measure", threshold=cell_threshold(min_cell),
                           derived_cols=["expected", "ratio", "pe_ratio"], denominator="n")
    hidden = card["suppressed"].to_numpy()
    card["funnel_class"] = card["funnel_class"].where(~hidden)
    card.loc[hidden & (card["judgement"] != "too few cases to judge"), "judgement"] = "not shown (small numbers)"
    order = card["measure"].map({name: i for i, name in enumerate(MEASURES)})
    card = card.assign(_order=order).sort_values(["_order", "is_partner", "name"], ascending=[True, False, True],
                                                 ignore_index=True).drop(columns="_order")
    # notes for the methods appendix (e.g. facilities with no events left out of the funnel's dispersion)
    card.attrs["notes"] = [str(w.message) for w in caught if issubclass(w.category, CarequalWarning)]
    return card


def partner_findings(card: pd.DataFrame) -> list[str]:
    """Which facilities (partners first) are higher or lower than expected, with their O/E and interval.

    Examples
    --------
    >>> card = pd.DataFrame({"measure": "readmission", "label": "30-day unplanned readmission",
    ...     "name": ["Oak SNF", "Elm SNF", "Ash SNF"], "is_partner": [True, False, True],
    ...     "ratio": [1.41, 0.7, 1.0], "lower": [1.12, 0.52, 0.8], "upper": [1.76, 0.93, 1.2],
    ...     "judgement": ["higher than expected", "lower than expected", "as expected"]})
    >>> for s in partner_findings(card): print(s)
    30-day unplanned readmission — higher than expected: Oak SNF (partner; O/E 1.41, 95% CI 1.12–1.76).
    30-day unplanned readmission — lower than expected: Elm SNF (O/E 0.70, 95% CI 0.52–0.93).
    30-day unplanned readmission — 1 facility as expected.
    """
    sentences = []
    for _, part in card.groupby("measure", sort=False):
        label = part["label"].iloc[0]
        for verdict in ("higher than expected", "lower than expected"):
            hits = part[part["judgement"] == verdict].sort_values(["is_partner", "ratio"], ascending=[False, False])
            if len(hits):
                names = "; ".join(
                    f"{r.name} ({'partner; ' if r.is_partner else ''}O/E {r.ratio:.2f}, 95% CI "
                    f"{fmt_ci(r.lower, r.upper, percent=False)})" for r in hits.itertuples(index=False))
                sentences.append(f"{label} — {verdict}: {names}.")
        counts = part["judgement"].value_counts()
        rest = []
        for verdict in ("as expected", "too few cases to judge", "not shown (small numbers)"):
            k = int(counts.get(verdict, 0))
            if k:
                rest.append(f"{k} facilit{'y' if k == 1 else 'ies'} {verdict}")
        if rest:
            sentences.append(f"{label} — {', '.join(rest)}.")
    return sentences


def shown_for_chart(card: pd.DataFrame, measure: str) -> tuple[pd.DataFrame, int]:
    """The scorecard rows of ``measure`` that a chart may show (judged and not suppressed), and how many
    facilities were left off."""
    part = card[card["measure"] == measure]
    ok = part["ratio"].notna() & ~part["suppressed"] & (part["judgement"] != "too few cases to judge")
    return part[ok].reset_index(drop=True), int((~ok).sum())


def funnel_for(rows: pd.DataFrame, card: pd.DataFrame, measure: str, *, period):
    """The funnel of ``measure`` (limits from every facility with expected events, as in the scorecard)
    with only the facilities a chart may show (:func:`shown_for_chart`) as points.

    Returns ``(funnel, left_off, notes)``: a :class:`carequal.compare.Funnel` or None when no facility may
    be shown, the number of facilities left off, and any warnings of the funnel as text.
    """
    shown, left_off = shown_for_chart(card, measure)
    cur = rows[(rows["measure"] == measure) & _in(rows, period)]
    agg = cur.groupby("unit_id").agg(observed=("observed", "sum"), expected=("expected", "sum")).reset_index()
    agg = agg[agg["expected"] > 0]
    if shown.empty or agg.empty:
        return None, left_off, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CarequalWarning)
        funnel = funnel_data(agg, observed="observed", expected="expected", method="SHMI")
    units = funnel.units[funnel.units["unit_id"].isin(shown["facility_id"])].copy()
    names = shown.set_index("facility_id")
    units["name"] = units["unit_id"].map(names["name"])
    units["is_partner"] = units["unit_id"].map(names["is_partner"]).astype(bool)
    notes = [str(w.message) for w in caught if issubclass(w.category, CarequalWarning)]
    return replace(funnel, units=units.reset_index(drop=True)), left_off, notes


# -------------------------------------------------------------------------------------------------- trends


def trend_chart(rows: pd.DataFrame, measure: str, *, freq: str = "auto", by_partner: bool = False,
                min_cell: int = 11, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """Rates over time of a measure at the market's facilities: a p-chart (one line, with signals) or, with
    ``by_partner``, rates by partner status; periods with a count below ``min_cell`` (events, non-events or
    cases) have their rate hidden (``rate`` missing) and are not used for SPC limits.

    ``freq="auto"`` charts months unless more than a third of them would be hidden, then quarters (a rare
    event such as 30-day death in a small market); the result's ``attrs["freq"]`` says which.
    """
    if freq == "auto":
        monthly = _safe_trend(rows, measure, freq="month", by_partner=by_partner, min_cell=min_cell, end=end)
        freq = "month" if len(monthly) and monthly["suppressed"].mean() <= 1 / 3 else "quarter"
    safe = _safe_trend(rows, measure, freq=freq, by_partner=by_partner, min_cell=min_cell, end=end)
    safe.attrs["freq"] = freq
    if by_partner:
        return safe
    usable = safe[~safe["suppressed"]].astype({"n": "int64", "events": "int64"})
    if len(usable) < 3:
        out = usable.assign(signal=pd.Series(dtype="str"))
    else:
        out = p_chart(usable, improvement="lower" if MEASURES[measure].improvement == "down" else "higher")
    out.attrs["freq"] = freq
    return out


def _safe_trend(rows: pd.DataFrame, measure: str, *, freq: str, by_partner: bool, min_cell: int,
                end: pd.Timestamp | None) -> pd.DataFrame:
    r = rows[rows["measure"] == measure]
    if end is not None:
        r = r[pd.to_datetime(r["discharge_date"]) <= end]
    if r.empty:  # no stays of this measure at the market's facilities: an empty, fully shaped table
        return pd.DataFrame({"partner": pd.Series(dtype="str"), "period": pd.Series(dtype="datetime64[ns]"),
                             "n": pd.Series(dtype="Int64"), "events": pd.Series(dtype="Int64"),
                             "rate": pd.Series(dtype="float64"), "lower": pd.Series(dtype="float64"),
                             "upper": pd.Series(dtype="float64"), "suppressed": pd.Series(dtype="bool"),
                             "suppression_reason": pd.Series(dtype="str")})
    r = r.assign(event=r["observed"] > 0.5,
                 partner=np.where(r["unit_is_partner"].astype(bool), "Partner facilities", "Other facilities"))
    trend = trend_table(r, freq=freq, events="event", by=["partner"] if by_partner else None)
    safe = suppress_counts(trend[[c for c in trend.columns if c not in ("level", "method")]],
                           count_cols=["n", "events"], threshold=cell_threshold(min_cell),
                           group_cols=["partner"] if by_partner else None)
    return safe


_RULE_WORDS = {"beyond_3sigma": "a point outside the control limits", "shift": "a run of 7 or more points on one "
               "side of the average", "trend": "7 or more points rising or falling in a row",
               "two_of_three": "two of three points near a limit"}


def trend_findings(chart: pd.DataFrame, label: str, *, since: pd.Timestamp | None = None) -> list[str]:
    """Plain-language sentences on the special-cause signals of a :func:`trend_chart` p-chart, over the
    periods from ``since`` (the reporting period's start) on.

    Examples
    --------
    >>> chart = pd.DataFrame({"period": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
    ...     "signal": ["common cause", "concern", "common cause"], "beyond_3sigma": ["", "concern", ""],
    ...     "shift": "", "trend": "", "two_of_three": ""})
    >>> print(trend_findings(chart, "30-day unplanned readmission")[0])
    30-day unplanned readmission: a special-cause signal of concern in February 2024 (a point outside the
    control limits); check what changed then.
    """
    if chart.empty or "signal" not in chart:
        return [f"{label}: too few periods with enough cases to chart."]
    part = chart if since is None else chart[pd.to_datetime(chart["period"]) >= since]
    sentences = []
    for kind in ("concern", "improvement"):
        hits = part[part["signal"] == kind]
        if hits.empty:
            continue
        fmt = "%B %Y" if chart.attrs.get("freq", "month") == "month" else "quarter from %B %Y"
        months = ", ".join(pd.Timestamp(p).strftime(fmt) for p in hits["period"])
        rules = sorted({_RULE_WORDS[r] for r in _RULE_WORDS if r in hits and (hits[r] == kind).any()})
        follow = "; check what changed then" if kind == "concern" else ""
        sentences.append(f"{label}: a special-cause signal of {kind} in {months} ({'; '.join(rules)}){follow}.")
    if not sentences:
        unit = "month-to-month" if chart.attrs.get("freq", "month") == "month" else "quarter-to-quarter"
        sentences.append(f"{label}: no special-cause signal in the period; {unit} movement is within the range "
                         "expected by chance (common-cause variation).")
    return sentences


# ----------------------------------------------------------------------------------------- post-acute care


def flow_table(tables: dict[str, pd.DataFrame], rows: pd.DataFrame, *, market: str, period,
               min_cell: int = 11) -> pd.DataFrame:
    """Discharges from the market's hospitals to each post-acute provider in the period (from the
    ``pac_readmission`` reference rows), suppressed within each hospital.

    Returns ``hospital_id``, ``hospital``, ``pac_facility_id``, ``pac_facility``, ``pac_setting``,
    ``pac_is_partner``, ``n``, ``suppressed``.
    """
    fac = tables["facilities"].set_index("facility_id")
    r = rows[(rows["measure"] == "pac_readmission") & _in(rows, period)]
    stays = tables["stays"].set_index("stay_id")
    hospital = r["stay_id"].map(stays["facility_id"])
    known = hospital.notna().to_numpy()
    frame = pd.DataFrame({"hospital_id": hospital[known].astype("str").to_numpy(),
                          "pac_facility_id": r.loc[known, "unit_id"].to_numpy()})
    frame = frame[frame["hospital_id"].map(fac["market"]) == market]
    counts = frame.groupby(["hospital_id", "pac_facility_id"]).size().rename("n").reset_index()
    counts["hospital"] = counts["hospital_id"].map(fac["name"])
    counts["pac_facility"] = counts["pac_facility_id"].map(fac["name"])
    counts["pac_setting"] = counts["pac_facility_id"].map(fac["setting"]).str.upper()
    counts["pac_is_partner"] = counts["pac_facility_id"].map(fac["is_partner"]).fillna(False).astype(bool)
    safe = suppress_counts(counts, count_cols="n", group_cols="hospital_id", threshold=cell_threshold(min_cell))
    return safe[["hospital_id", "hospital", "pac_facility_id", "pac_facility", "pac_setting", "pac_is_partner", "n",
                 "suppressed"]]


def flow_for_chart(flows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The flows worth a heatmap column: providers with at least one shown, non-zero count (columns that
    would be all hatched say nothing); returns the rows and the number of providers left off."""
    shown = flows["n"].notna() & (flows["n"].fillna(0) > 0)
    keep = flows.loc[shown, "pac_facility_id"].unique()
    return (flows[flows["pac_facility_id"].isin(keep)].reset_index(drop=True),
            int(flows["pac_facility_id"].nunique() - len(keep)))


def destination_table(rows: pd.DataFrame, *, period, min_cell: int = 11) -> pd.DataFrame:
    """Where discharges from the market's hospitals went next, by setting and partner status.

    Uses the ``readmission`` rows (every index discharge of the market's hospitals) and the
    ``pac_readmission`` rows (those that went on to post-acute care). Returns ``destination``,
    ``discharges``, ``share``, suppressed.
    """
    base = rows[(rows["measure"] == "readmission") & _in(rows, period)]
    pac = rows[(rows["measure"] == "pac_readmission") & _in(rows, period)]
    pac = pac[pac["stay_id"].isin(base["stay_id"])]
    label = pac["unit_setting"].str.upper() + np.where(pac["unit_is_partner"], " (partner)", " (other)")
    counts = label.value_counts().rename("discharges")
    table = counts.rename_axis("destination").reset_index().sort_values("destination", ignore_index=True)
    home = pd.DataFrame({"destination": ["No post-acute care"], "discharges": [len(base) - len(pac)]})
    table = pd.concat([table, home], ignore_index=True)
    total = pd.DataFrame({"destination": ["All discharges"], "discharges": [len(base)]})
    table = pd.concat([table, total], ignore_index=True)
    table["share"] = table["discharges"] / max(len(base), 1)
    is_total = table["destination"] == "All discharges"
    safe = suppress_counts(table, count_cols="discharges", total_rows=is_total, threshold=cell_threshold(min_cell),
                           derived_cols="share")
    return safe


# --------------------------------------------------------------------------------------- population health


def population_table(tables: dict[str, pd.DataFrame], *, market: str, period, min_cell: int = 11,
                     min_age: int | None = 65) -> pd.DataFrame:
    """Age–sex standardised rates per 1,000 person-years for the market's residents in the period: acute
    admissions, post-acute admissions and ED visits (2000 U.S. standard from ``min_age``, Dobson intervals),
    suppressed. Person-time and events of residents younger than ``min_age`` are left out (65: the Medicare
    population; None: all ages).
    """
    pats = tables["patients"]
    if tables.get("enrollment") is None or pats.empty:
        return pd.DataFrame()
    pt = person_time(tables["enrollment"], pats, start=period[0], end=period[1], by=("market", "age_band", "sex"))
    bands = standard_population(min_age=min_age)
    pt = pt[(pt["market"] == market) & pt["age_band"].isin(bands["age_band"])]
    fac = tables["facilities"].set_index("facility_id")
    pat = pats.set_index("patient_id")
    events = []

    def add(name: str, frame: pd.DataFrame, date_col: str) -> None:
        when = pd.to_datetime(frame[date_col])
        frame = frame[(when >= period[0]) & (when <= period[1])]
        birth = pd.to_datetime(frame["patient_id"].map(pat["birth_date"]))
        age = ((pd.to_datetime(frame[date_col]) - birth).dt.days // 365.25).astype("Int64")
        ev = pd.DataFrame({"market": frame["patient_id"].map(pat["market"]).to_numpy(),
                           "age_band": age_band(age).to_numpy(),
                           "sex": frame["patient_id"].map(pat["sex"]).to_numpy()})
        ev = ev[(ev["market"] == market) & ev["age_band"].isin(bands["age_band"])]
        counts = ev.groupby(["market", "age_band", "sex"], observed=True).size().rename("events").reset_index()
        events.append(counts.assign(measure=name))

    stays = tables["stays"]
    setting = stays["facility_id"].map(fac["setting"])
    add("Acute hospital admissions", stays[setting == "acute"], "admit_date")
    add("Post-acute admissions (SNF, IRF, LTCH, HHA)", stays[setting.isin(["snf", "irf", "ltch", "hha"])],
        "admit_date")
    if tables.get("ed_visits") is not None:
        add("Emergency department visits", tables["ed_visits"], "visit_date")
    ev = pd.concat(events, ignore_index=True)
    rates = standardised_rates(ev, pt.assign(key=1).merge(pd.DataFrame({"measure": ev["measure"].unique(),
                                                                        "key": 1}), on="key"),
                               by=["market", "measure"], standard=bands)
    rates["events"] = rates["events"].round().astype("int64")
    rates = rates.rename(columns={"person_time": "person_years"})
    safe = suppress_counts(rates[["measure", "events", "person_years", "crude_rate", "rate", "lower", "upper"]],
                           count_cols="events", threshold=cell_threshold(min_cell), derived_cols="crude_rate",
                           denominator=None)
    return safe


def chronic_table(tables: dict[str, pd.DataFrame], *, market: str, period, min_cell: int = 11) -> pd.DataFrame:
    """Residents with each chronic condition on a stay in the period (per 1,000 residents with a stay)."""
    pats = tables["patients"]
    cc = chronic_conditions(tables["stays"], start=period[0], end=period[1])
    cc = cc[cc["patient_id"].map(pats.set_index("patient_id")["market"]) == market]
    names = [c for c in cc.columns if c not in ("patient_id", "n_conditions")]
    labels = chronic_condition_codes().set_index("condition")["label"]
    table = pd.DataFrame({"condition": [labels.get(n, n) for n in names],
                          "patients": [int(cc[n].sum()) for n in names]})
    table["per_1000"] = 1000 * table["patients"] / max(len(cc), 1)
    table = pd.concat([table, pd.DataFrame({"condition": ["Residents with a stay"], "patients": [len(cc)],
                                            "per_1000": [1000.0]})], ignore_index=True)
    return suppress_counts(table, count_cols="patients", threshold=cell_threshold(min_cell), derived_cols="per_1000",
                           denominator=None).sort_values("patients", ascending=False, ignore_index=True)


# ------------------------------------------------------------------------------------------ partnership impact


def impact_summary(tables: dict[str, pd.DataFrame], *, market: str, cohort: pd.DataFrame | None = None) -> dict:
    """Difference-in-differences estimate of the partnership effect on 30-day readmission of patients sent
    to post-acute providers of this market (partners after their start vs the same quarters elsewhere).

    ``tables`` are the market residents' (``MarketReport.tables``); ``cohort``, their rows of the measured
    cohort (``MarketReport.cohort``), saves recomputing the index stays and their outcomes.

    Returns the :func:`carequal.impact.difference_in_differences` result, or ``{"error": reason}`` when the
    market's data cannot support the model: no referral with both outcomes, no referral to a partner since its
    partnership began (no partner, or none with a start date), or a model that cannot be fitted (the
    :class:`carequal.errors.ModelError`'s shareable reason). Nothing else is caught: a missing column or a bug
    fails the market, with its traceback in the work folder, instead of becoming a sentence for leaders.
    """
    data = pac_attributed_stays(tables) if cohort is None else pac_attributed_stays(tables, cohort=cohort)
    fac = tables["facilities"].set_index("facility_id")
    data = data[data["pac_facility_id"].map(fac["market"]) == market]
    covariates = [c for c in RISK_COVARIATES if data[c].nunique() > 1]
    if data.empty or data["unplanned_readmit_30d"].nunique() < 2:
        return {"error": "no post-acute referrals with both outcomes in this market"}
    exposed = data["exposed"]
    if not exposed[exposed.notna()].astype(bool).any():  # the condition difference_in_differences refuses
        return {"error": "no exposed rows (partner facilities after their start): nothing to estimate"}
    try:
        return difference_in_differences(data, outcome="unplanned_readmit_30d", facility="pac_facility_id",
                                         covariates=covariates)
    except ModelError as exc:
        failure = exc.within(measure="partnership effect",
                             facilities=describe_facilities(int(data["pac_facility_id"].nunique()),
                                                            "post-acute providers", market))
        return {"error": failure.reason.removeprefix("partnership effect: ")}


def impact_finding(result: dict, *, min_cell: int = 11) -> str:
    """One sentence on :func:`impact_summary` for leaders, with the assumptions it rests on.

    Examples
    --------
    >>> print(impact_finding({"odds_ratio": 0.74, "odds_ratio_lower": 0.59, "odds_ratio_upper": 0.92,
    ...                       "effect": -0.3, "n_exposed": 400, "n": 2000, "n_facilities": 9}))
    After partnerships began, the odds of a 30-day readmission for patients sent to partner post-acute
    providers fell by 26% relative to other providers in the same quarters (odds ratio 0.74, 95% CI 0.59–0.92;
    2,000 referrals to 9 providers). This assumes partners and other providers would otherwise have moved in
    parallel.
    """
    if "error" in result:
        return f"The partnership effect could not be estimated for this market: {result['error']}."
    if result.get("n_exposed", 0) < min_cell:
        return "Too few referrals to partners since their partnerships began to estimate the effect."
    orr = result["odds_ratio"]
    lo, hi = result["odds_ratio_lower"], result["odds_ratio_upper"]
    if hi < 1:
        what = f"fell by {100 * (1 - orr):.0f}%"
    elif lo > 1:
        what = f"rose by {100 * (orr - 1):.0f}%"
    else:
        what = "did not change clearly"
    return (f"After partnerships began, the odds of a 30-day readmission for patients sent to partner post-acute "
            f"providers {what} relative to other providers in the same quarters (odds ratio {orr:.2f}, 95% CI "
            f"{fmt_ci(lo, hi, percent=False)}; {result['n']:,d} referrals to {result['n_facilities']} providers). "
            "This assumes partners and other providers would otherwise have moved in parallel.")


# ---------------------------------------------------------------------------------------------- appendix


def attrition_table(source: dict[str, pd.DataFrame] | pd.DataFrame, *, min_cell: int = 11) -> pd.DataFrame:
    """The index-stay attrition of the market's residents: stays removed at each step (suppressed, with a
    complementary cell so the total removed does not reveal a hidden one), and the stays at start and end.

    ``source`` is the attrition stored with the measured cohort (``MarketReport.attrition``: ``step``,
    ``description``, ``excluded``, ``remaining``) or, for a reference without a cohort, the residents' tables
    (the cohort is then built here)."""
    if isinstance(source, pd.DataFrame):
        att = source.reset_index(drop=True)
    else:
        att = index_stays(source["stays"], source["facilities"], source["patients"], source.get("enrollment")).attrition
    first = int(att["remaining"].iloc[0])
    steps = att.iloc[1:][["step", "description", "excluded"]].rename(columns={"excluded": "removed"})
    steps = steps.reset_index(drop=True)
    safe = suppress_counts(steps, count_cols="removed", threshold=cell_threshold(min_cell), denominator=None)
    head = pd.DataFrame({"step": ["acute_stays"], "description": ["acute hospital stays of residents"],
                         "removed": pd.array([pd.NA], dtype="Int64"), "suppressed": [False],
                         "suppression_reason": [""]})
    tail = pd.DataFrame({"step": ["index_stays"], "description": ["index stays (all rules applied)"],
                         "removed": pd.array([pd.NA], dtype="Int64"), "suppressed": [False],
                         "suppression_reason": [""]})
    out = pd.concat([head, safe, tail], ignore_index=True)
    ends = [first, int(att["remaining"].iloc[-1])]
    lo, hi = cell_threshold(min_cell)
    ends = [pd.NA if lo <= v <= hi else v for v in ends]
    out["remaining"] = pd.array([ends[0]] + [pd.NA] * len(safe) + [ends[1]], dtype="Int64")
    out.loc[[0, len(out) - 1], "suppressed"] = [pd.isna(ends[0]), pd.isna(ends[1])]
    return out


def validation_table(validation: tuple[pd.DataFrame, pd.DataFrame], *, min_cell: int = 11) -> pd.DataFrame:
    """Rows read, kept and set aside per input table at ingest (all markets), **not** suppressed: these count
    the rows of whole input files (a table of 51 facilities, a handful of malformed rows), not the patients of
    a group, so a small number reveals nothing about anyone. ``min_cell`` is accepted for the callers' sake
    and not used. Columns ``table``, ``rows_read``, ``rows_kept``, ``rows_set_aside``."""
    counts = validation[0]
    if counts.empty:
        return counts
    return counts.rename(columns={"loaded": "rows_read", "accepted": "rows_kept", "quarantined": "rows_set_aside"})


def model_table(models: pd.DataFrame) -> pd.DataFrame:
    """The national models' diagnostics in reader-facing columns (national counts, all well above any cell
    threshold; a model with fewer than 11 events could not be fitted meaningfully and is not shown)."""
    m = models[models["events"] >= 11]
    return pd.DataFrame({
        "Measure": m["label"], "Judged": m["unit_kind"], "Stays (national)": m["n"].map("{:,d}".format),
        "Event rate": m["rate"].map(fmt_pct), "Facilities": m["facilities"],
        "c-statistic (95% CI)": [f"{c:.3f} ({lo:.3f}–{hi:.3f})" for c, lo, hi in
                                 zip(m["c"], m["c_lower"], m["c_upper"], strict=True)],
        "Brier": m["brier"].round(3), "Hosmer–Lemeshow p": m["hl_p_value"].round(3),
        "Facility SD (log-odds)": m["sigma"].round(3), "Converged": m["converged"].map({True: "yes", False: "no"}),
    })


# ------------------------------------------------------------------------------------------------ outputs


def recent_rates(rows: pd.DataFrame, measures: tuple[str, ...], *, end: pd.Timestamp, min_cell: int = 11,
                 periods: int = 8) -> dict[str, list[dict]]:
    """The market's quarterly rates of each measure over the last ``periods`` quarters up to ``end`` (for the
    index's trend line): ``{measure: [{"period": "2024-01-01", "label": "2024 Q1", "rate": 0.18}, ...]}``, a
    quarter whose counts would be hidden (1 to ``min_cell - 1`` events, non-events or cases) with ``rate``
    None. Only rates: no count leaves the report."""
    out = {}
    for name in measures:
        trend = _safe_trend(rows, name, freq="quarter", by_partner=False, min_cell=min_cell, end=end).tail(periods)
        out[name] = [{"period": str(p.date()), "label": f"{p.year} Q{p.quarter}",
                      "rate": None if hidden or pd.isna(rate) else float(rate)}
                     for p, rate, hidden in zip(pd.to_datetime(trend["period"]), trend["rate"], trend["suppressed"],
                                                strict=True)]
    return out


def oe_verdict(lower: float, upper: float) -> str | None:
    """``"higher"``, ``"lower"`` or ``"as expected"``: where the 95% interval of an O/E lies against 1 (None when
    the interval is not shown).

    Examples
    --------
    >>> oe_verdict(1.07, 1.42), oe_verdict(0.9, 1.1), oe_verdict(float("nan"), 1.2)
    ('higher', 'as expected', None)
    """
    if lower is None or upper is None or pd.isna(lower) or pd.isna(upper):
        return None
    return "higher" if lower > 1 else "lower" if upper < 1 else "as expected"


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def kpi_record(kpis: pd.DataFrame, card: pd.DataFrame, recent: dict[str, list[dict]] | None = None) -> dict:
    """The headline numbers the batch index shows for a market (only values already cleared for sharing).

    Per measure: ``label``, ``rate``, ``ratio`` with ``ratio_lower``/``ratio_upper`` and its ``verdict``
    (:func:`oe_verdict`), ``improvement`` (``"down"``: fewer events are better), the last period's rate, the
    ``change`` with its interval and ``change_verdict`` ("better", "worse", "no clear change"; None when
    hidden), ``cases`` (already suppressed) and, with ``recent`` (:func:`recent_rates`), the quarterly rates
    for the trend line. ``flagged``: facilities higher / lower than expected.
    """
    out = {}
    for row in kpis.itertuples(index=False):
        spec = MEASURES[row.measure]
        change_verdict = None if pd.isna(row.change) else _direction(spec.improvement, row.change_lower,
                                                                     row.change_upper)
        out[row.measure] = {"label": row.label, "rate": _number(row.rate), "ratio": _number(row.ratio),
                            "ratio_lower": _number(row.ratio_lower), "ratio_upper": _number(row.ratio_upper),
                            "verdict": oe_verdict(row.ratio_lower, row.ratio_upper),
                            "improvement": spec.improvement, "prev_rate": _number(row.prev_rate),
                            "change": _number(row.change), "change_lower": _number(row.change_lower),
                            "change_upper": _number(row.change_upper),
                            "change_verdict": None if change_verdict == "unknown" else change_verdict,
                            "cases": None if pd.isna(row.n) else int(row.n),
                            "recent": (recent or {}).get(row.measure, [])}
    judged = card[card["judgement"].isin(["higher than expected", "lower than expected"])] if len(card) else card
    out["flagged"] = {"higher": int((judged["judgement"] == "higher than expected").sum()) if len(card) else 0,
                      "lower": int((judged["judgement"] == "lower than expected").sum()) if len(card) else 0}
    return out


def write_kpis(record: dict, path: str | Path) -> None:
    """Write the market's KPI record (JSON) for the batch index, atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)


def scorecard_display(card: pd.DataFrame) -> pd.DataFrame:
    """The scorecard with reader-facing text columns: ``partner`` ("yes"/""), ``setting`` in capitals and the
    O/E ``interval`` as text."""
    out = with_interval_text(card, percent=False, digits=2)
    out["partner"] = np.where(out["is_partner"].astype(bool), "yes", "")
    out["setting"] = out["setting"].astype("str").str.upper().replace({"ACUTE": "Hospital"})
    return out


def destination_findings(dest: pd.DataFrame) -> list[str]:
    """One sentence on where discharges went (from :func:`destination_table`), quoting shown shares only.

    Examples
    --------
    >>> d = pd.DataFrame({"destination": ["SNF (partner)", "SNF (other)", "No post-acute care", "All discharges"],
    ...                   "discharges": pd.array([300, 100, 600, 1000], dtype="Int64"),
    ...                   "share": [0.3, 0.1, 0.6, 1.0]})
    >>> print(destination_findings(d)[0])
    Of 1,000 discharges, 40.0% went on to post-acute care; partners received 75.0% of those whose
    destination can be shown.
    """
    total = dest.loc[dest["destination"] == "All discharges", "discharges"]
    home = dest.loc[dest["destination"] == "No post-acute care", "discharges"]
    if total.empty or pd.isna(total.iloc[0]) or home.empty or pd.isna(home.iloc[0]):
        return ["Too few discharges in the period to describe where patients went."]
    n_total, n_home = int(total.iloc[0]), int(home.iloc[0])
    pac = dest[~dest["destination"].isin(["All discharges", "No post-acute care"]) & dest["discharges"].notna()]
    partner = pac.loc[pac["destination"].str.endswith("(partner)"), "discharges"].sum()
    text = f"Of {n_total:,d} discharges, {fmt_pct((n_total - n_home) / n_total)} went on to post-acute care"
    shown = pac["discharges"].sum()
    if shown > 0:
        text += f"; partners received {fmt_pct(partner / shown)} of those whose destination can be shown"
    return [text + "."]


def report_title(mr: MarketReport) -> str:
    """The report's heading (Markdown): market, period and what is compared."""
    start, end = (d.strftime("%-d %B %Y") for d in mr.period)
    return (f"# {mr.market}: partnership quality report\n\n**Reporting period:** {start} to {end}. "
            f"**Compared with:** the national average for the same patients (all markets in the data). "
            f"**Conditions:** {', '.join(c.replace('_', ' ') for c in mr.conditions)}.\n\n"
            f"**Privacy:** {suppression_statement(mr.min_cell)} {HIDDEN_IN_TABLES}")


_PLAIN_NOTES = [
    (r"funnel_data: (\d+) unit\(s\) with no events have an infinite z-score.*",
     lambda m: f"{m[1]} facilit{'y' if m[1] == '1' else 'ies'} had no events in the period. They are judged as "
               "usual, but were left out when measuring how much facilities differ from each other beyond chance "
               "(which sets how wide the funnel's limits are): a facility with no events says little about that."),
    (r"funnel_data: only (\d+) unit\(s\) to estimate the dispersion.*",
     lambda m: f"Only {m[1]} facilit{'y' if m[1] == '1' else 'ies'} could be used to measure how much facilities "
               "differ from each other beyond chance, too few to measure it: the funnel's limits allow for chance "
               "alone, so they may flag a facility that a larger comparison would not."),
    (r"cannot protect (\d+) group column\(s\) inside the table.*",
     lambda m: "In the candidate partners' table, a hidden small number sits beside zeros in "
               f"{m[1]} column{'' if m[1] == '1' else 's'}: the column's total is therefore not shown anywhere in "
               "this report, since it would give the hidden number away."),
]
"""Technical warnings raised while the report is computed, and the words a manager reads in the appendix."""


def plain_note(message: str) -> str:
    """A computation's warning in words for the methods appendix (:data:`_PLAIN_NOTES`; another warning is
    kept as it is, introduced as a detail for analysts).

    Examples
    --------
    >>> print(plain_note("funnel_data: 3 unit(s) with no events have an infinite z-score on the SHMI log scale "
    ...                  "and were left out of φ and τ²"))  # doctest: +ELLIPSIS
    3 facilities had no events in the period. They are judged as usual, but were left out when measuring ...
    """
    for pattern, words in _PLAIN_NOTES:
        found = re.fullmatch(pattern, message.strip(), flags=re.DOTALL)
        if found:
            return words(found)
    return f"Detail for analysts: {message}"


def report_notes(card: pd.DataFrame, mr: MarketReport, *more: pd.DataFrame) -> list[str]:
    """Notes for the methods appendix, in plain words (:func:`plain_note`): what happened while the
    scorecard and the funnel limits were computed, and while any of ``more`` tables (e.g. the candidate
    partners) was made safe to share (their ``attrs["notes"]``). The suppression rule is stated once, under
    the title."""
    notes = [n for table in (card, *more) for n in table.attrs.get("notes", [])]
    return [plain_note(n) for n in dict.fromkeys(notes)]

