"""Employer views: the alliance members' own employee populations, by sponsor, age band and period, safe to share.

The content of ``carequal/notebooks/employee_health.ipynb``. An *employer population* is every enrollment period
that names a ``sponsor`` (the alliance member, or another employer or plan sponsor, whose plan covers the member:
``enrollment.sponsor`` in the data contract). A member belongs to the sponsor on each day its period covers, so a
member who moves to another member of the alliance counts for each in turn, and every event is attributed to the
sponsor covering its date (the admission date; the discharge date for the PQIs, as AHRQ counts them).

Measures, the way employers read them (:data:`EMPLOYER_MEASURES`):

* **Hospital admissions** (acute hospital stays, by admission date), **avoidable admissions** (AHRQ PQI 90, the
  overall Prevention Quality Indicator composite: :mod:`carequal.pqi`), **emergency department visits** (the
  contract's ``ed_visits`` table as given; the sample holds visits that did not end in an admission) and
  **post-acute admissions** (skilled nursing, inpatient rehabilitation, long-term care hospital, home health),
  each per 1,000 member-years with exact Poisson intervals.
* **Inpatient spending per member per month** (PMPM): the ``stays.payment`` of acute stays over member-months.
  Only inpatient payments are in the data: no outpatient, professional or pharmacy claims, so this is not the
  total cost of care. Stays without a payment are left out of the sum (their number is reported).
* **Chronic-condition prevalence** (:func:`chronic_prevalence`): the share of members with the condition coded
  on a hospital stay in the period (:func:`carequal.cohorts.chronic_conditions`). With inpatient data only, a
  member never admitted has no diagnosis in the data, so these are floors, far below the true prevalence.

Member-years count from age 18 (:func:`carequal.pqi.pqi_person_time`: the PQIs are defined from 18), each day at
the age on it, stopped at death; dependants under 18, if the data hold any, are not in these views. Age bands:
:data:`EMPLOYER_AGE_BANDS`.

Every table returned here has been through small-cell suppression (:func:`carequal.disclosure.suppress_counts`:
counts 1 to ``min_cell - 1`` hidden, with complementary suppression within each measure and period against the
table's total row), so a notebook can show it as it stands. Tables are suppressed one by one.

Programme impact (:func:`programme_impact`): a care-management programme started by one sponsor on a known date,
compared with the members without it (the other sponsors) by difference-in-differences on monthly cells
(:func:`carequal.impact.difference_in_differences` with a Poisson link: sponsor, month and age-sex effects) and by
an interrupted time series of the monthly difference in rates (:func:`carequal.impact.interrupted_time_series`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

from carequal.cohorts import chronic_condition_codes, chronic_conditions, day_numbers
from carequal.compare import xmr_chart
from carequal.disclosure import cell_threshold, suppress_counts
from carequal.errors import ParameterError
from carequal.impact import difference_in_differences, interrupted_time_series
from carequal.intervals import poisson_exact, wilson
from carequal.pqi import pqi_admissions, pqi_age_band, pqi_person_time

__all__ = ["ALL_AGES", "ALL_SPONSORS", "EMPLOYER_AGE_BANDS", "EMPLOYER_MEASURES", "MEASURE_LABELS", "MEASURE_UNITS",
           "PQI_SHOWN", "SHORT_LABELS",
           "chronic_prevalence", "covering_sponsor", "employer_comparison", "employer_events", "employer_findings",
           "employer_trend", "employer_utilisation", "impact_finding", "kpi_record", "member_time", "pqi_rates_by",
           "pqi_table", "programme_findings", "programme_impact", "sponsor_periods", "sponsors",
           "trend_window"]

EMPLOYER_AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
"""Age bands of the employer views (age in whole years on the day of the event or of the member-time)."""

ALL_AGES = "All ages"
"""Label of the total row over age bands."""
ALL_SPONSORS = "All sponsors"
"""Label of the total row over sponsors (the alliance)."""

EMPLOYER_MEASURES: tuple[str, ...] = ("admissions", "pqi_admissions", "ed_visits", "post_acute_admissions",
                                      "inpatient_spending")
"""The measures of :func:`employer_utilisation`, in display order."""

MEASURE_LABELS: dict[str, str] = {
    "admissions": "Hospital admissions per 1,000 member-years",
    "pqi_admissions": "Avoidable admissions (AHRQ PQI 90) per 1,000 member-years",
    "ed_visits": "Emergency department visits per 1,000 member-years",
    "post_acute_admissions": "Post-acute admissions per 1,000 member-years",
    "inpatient_spending": "Inpatient spending per member per month ($)",
}
"""Plain-language names of the measures."""

_PER = 1000.0
_POST_ACUTE = ("snf", "irf", "ltch", "hha")
_PQI_BAND_TO_EMPLOYER = {"18-24": "18-24", "25-29": "25-34", "30-34": "25-34", "35-39": "35-44", "40-44": "35-44",
                         "45-49": "45-54", "50-54": "45-54", "55-59": "55-64", "60-64": "55-64"}


# ------------------------------------------------------------------------------------------ the population


def sponsor_periods(enrollment: pd.DataFrame) -> pd.DataFrame:
    """The enrollment periods that name a sponsor: ``patient_id``, ``sponsor``, ``start_date``, ``end_date``,
    periods of one patient and sponsor that overlap or touch merged into one.

    Raises
    ------
    ParameterError
        The enrollment table has no ``sponsor`` column (the contract's optional column: data/README.md).

    Examples
    --------
    >>> enr = pd.DataFrame({"patient_id": ["p", "p", "q"], "sponsor": ["A", "A", None],
    ...     "start_date": pd.to_datetime(["2024-01-01", "2024-07-01", "2024-01-01"]),
    ...     "end_date": pd.to_datetime(["2024-06-30", "2024-12-31", "2024-12-31"])})
    >>> sponsor_periods(enr)
      patient_id sponsor start_date   end_date
    0          p       A 2024-01-01 2024-12-31
    """
    if "sponsor" not in enrollment.columns:
        raise ParameterError("enrollment has no sponsor column: the employer views need enrollment.sponsor (the "
                             "employer or plan sponsor of each period; see data/README.md)")
    named = enrollment.loc[enrollment["sponsor"].notna(), ["patient_id", "sponsor", "start_date", "end_date"]]
    if named.empty:
        return named.reset_index(drop=True)
    frame = named.assign(s=day_numbers(named["start_date"]), e=day_numbers(named["end_date"]))
    frame = frame.sort_values(["patient_id", "sponsor", "s", "e"], kind="stable").reset_index(drop=True)
    key = frame["patient_id"].astype(str) + "\x1f" + frame["sponsor"].astype(str)
    reach = frame.groupby(key, sort=False)["e"].cummax().groupby(key, sort=False).shift()
    block = ((frame["s"] > reach + 1) | reach.isna()).cumsum()  # a new block unless it overlaps or touches
    out = frame.groupby(block, sort=False).agg(patient_id=("patient_id", "first"), sponsor=("sponsor", "first"),
                                               s=("s", "min"), e=("e", "max"))
    epoch = np.datetime64("1970-01-01", "D")
    return pd.DataFrame({"patient_id": out["patient_id"].to_numpy(), "sponsor": out["sponsor"].to_numpy(),
                         "start_date": pd.to_datetime(epoch + out["s"].to_numpy().astype("timedelta64[D]")),
                         "end_date": pd.to_datetime(epoch + out["e"].to_numpy().astype("timedelta64[D]"))})


def sponsors(enrollment: pd.DataFrame) -> list[str]:
    """The sponsors named in the enrollment table, sorted (empty when it has no ``sponsor`` column)."""
    if "sponsor" not in enrollment.columns:
        return []
    return sorted(enrollment["sponsor"].dropna().astype(str).unique())


def covering_sponsor(patient: pd.Series, when: pd.Series, periods: pd.DataFrame) -> np.ndarray:
    """The sponsor of the period covering each (patient, date), None where none does (``periods``:
    :func:`sponsor_periods`, disjoint per patient across sponsors, as the contract's sponsor_overlap rule ensures).

    Examples
    --------
    >>> periods = pd.DataFrame({"patient_id": ["p", "p"], "sponsor": ["A", "B"],
    ...     "start_date": pd.to_datetime(["2024-01-01", "2024-07-01"]),
    ...     "end_date": pd.to_datetime(["2024-06-30", "2024-09-30"])})
    >>> covering_sponsor(pd.Series(["p", "p", "p"]), pd.Series(pd.to_datetime(["2024-06-30", "2024-07-01",
    ...     "2024-10-01"])), periods).tolist()
    ['A', 'B', None]
    """
    out = np.full(len(patient), None, dtype=object)
    if periods.empty or len(patient) == 0:
        return out
    left = pd.DataFrame({"patient_id": patient.astype(str).to_numpy(), "day": day_numbers(when),
                         "row": np.arange(len(patient))})
    known = left["day"] != np.iinfo(np.int64).min
    left = left[known].sort_values("day", kind="stable")
    right = pd.DataFrame({"patient_id": periods["patient_id"].astype(str).to_numpy(),
                          "day": day_numbers(periods["start_date"]), "end": day_numbers(periods["end_date"]),
                          "sponsor": periods["sponsor"].to_numpy()}).sort_values("day", kind="stable")
    hit = pd.merge_asof(left, right, on="day", by="patient_id", direction="backward")
    ok = (hit["end"] >= hit["day"]).to_numpy()
    out[hit["row"].to_numpy()[ok]] = hit["sponsor"].to_numpy()[ok]
    return out


def _employer_band(age: pd.Series | np.ndarray) -> np.ndarray:
    a = np.asarray(age, dtype=float)
    edges = np.array([18, 25, 35, 45, 55, 65])
    idx = np.searchsorted(edges, a, side="right") - 1
    bands = np.array(EMPLOYER_AGE_BANDS, dtype=object)
    return np.where(np.isnan(a) | (a < 18), None, bands[np.clip(idx, 0, len(bands) - 1)])


def member_time(tables: dict[str, pd.DataFrame], *, start, end, freq: str | None = "year",
                fine_bands: bool = False) -> pd.DataFrame:
    """Member-years of the employer populations by sponsor, period, age band and sex.

    Parameters
    ----------
    tables : dict of DataFrame
        Contract tables (``enrollment`` with ``sponsor``, ``patients``).
    start, end : date
        Inclusive bounds.
    freq : {"year", "quarter", "month", None}
        Periods (None: one period).
    fine_bands : bool
        Keep the PQI age bands (18-24, 25-29, ...) instead of :data:`EMPLOYER_AGE_BANDS`.

    Returns
    -------
    DataFrame
        ``sponsor``, ``period``, ``period_start``, ``period_end``, ``age_band``, ``sex``, ``member_days``,
        ``member_years``.
    """
    pt = pqi_person_time(sponsor_periods(tables["enrollment"]), tables["patients"], start=start, end=end,
                         by=["sponsor"], freq=freq)
    pt = pt.rename(columns={"person_days": "member_days", "person_years": "member_years"})
    if not fine_bands:
        pt["age_band"] = pt["age_band"].map(lambda b: _PQI_BAND_TO_EMPLOYER.get(b, "65+"))
        keys = ["sponsor", "period", "period_start", "period_end", "age_band", "sex"]
        pt = pt.groupby(keys, sort=False, dropna=False)[["member_days", "member_years"]].sum().reset_index()
    return pt


def trend_window(tables: dict[str, pd.DataFrame], *, end, years: int = 3) -> tuple[str, str]:
    """The window of a report's trends: up to ``years`` whole years ending on ``end`` (inclusive), starting no
    earlier than the first admission in the data. Dates as ``YYYY-MM-DD`` text (notebook parameters).

    Examples
    --------
    >>> stays = pd.DataFrame({"admit_date": pd.to_datetime(["2021-03-02", "2024-05-01"])})
    >>> trend_window({"stays": stays}, end="2024-12-31")
    ('2022-01-01', '2024-12-31')
    >>> trend_window({"stays": stays}, end="2024-12-31", years=5)  # the data start later
    ('2021-03-02', '2024-12-31')
    """
    if isinstance(years, bool) or not isinstance(years, int) or years < 1:
        raise ParameterError(f"years must be a whole number of at least 1, not {years!r}")
    last = pd.Timestamp(end).normalize()
    first = last - pd.DateOffset(years=years) + pd.Timedelta(days=1)
    admitted = pd.to_datetime(tables["stays"]["admit_date"]).min()
    if pd.notna(admitted):
        first = max(first, admitted.normalize())
    return f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}"


# ------------------------------------------------------------------------------------------------ events


def employer_events(tables: dict[str, pd.DataFrame], *, start, end) -> pd.DataFrame:
    """Every event of the employer populations in ``[start, end]``, one row each, attributed to the sponsor whose
    period covers its date.

    Returns
    -------
    DataFrame
        ``measure`` (:data:`EMPLOYER_MEASURES`; ``inpatient_spending`` rows are the acute stays with a payment),
        ``patient_id``, ``sponsor``, ``date``, ``age`` (whole years on the date), ``sex``, ``value`` (1, or the
        payment). Events on days without a sponsor, of members under 18, or of sex other than F or M (as in the
        member-time) are left out. ``attrs["missing_payment"]``: acute stays of the populations without a
        payment.
    """
    periods = sponsor_periods(tables["enrollment"])
    patients = tables["patients"].set_index("patient_id")
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    stays = tables["stays"]
    stays = stays[stays["patient_id"].isin(periods["patient_id"]).to_numpy()]  # a patient's stays stay together
    setting = stays["facility_id"].map(tables["facilities"].set_index("facility_id")["setting"])
    pieces = []

    def add(measure: str, frame: pd.DataFrame, date: str, value=None) -> None:
        when = pd.to_datetime(frame[date])
        keep = ((when >= lo) & (when <= hi)).to_numpy()
        frame, when = frame[keep], when[keep]
        pieces.append(pd.DataFrame({
            "measure": measure, "patient_id": frame["patient_id"].to_numpy(),
            "sponsor": covering_sponsor(frame["patient_id"], when, periods), "date": when.to_numpy(),
            "value": 1.0 if value is None else np.asarray(value, dtype=float)[keep]}))

    acute = stays[(setting == "acute").to_numpy()]
    add("admissions", acute, "admit_date")
    payment = acute["payment"] if "payment" in acute.columns else pd.Series(np.nan, index=acute.index)
    paid = payment.notna().to_numpy()
    add("inpatient_spending", acute[paid], "admit_date", value=payment[paid].to_numpy())
    add("post_acute_admissions", stays[setting.isin(_POST_ACUTE).to_numpy()], "admit_date")
    if tables.get("ed_visits") is not None:
        visits = tables["ed_visits"]
        add("ed_visits", visits[visits["patient_id"].isin(periods["patient_id"]).to_numpy()], "visit_date")
    events = pd.concat(pieces, ignore_index=True)
    birth = pd.to_datetime(events["patient_id"].map(patients["birth_date"]))
    events["age"] = _age(birth, pd.to_datetime(events["date"]))
    # the PQIs as AHRQ counts them: in the period of the discharge, at the age and with the sponsor of the
    # admission (carequal.pqi)
    members = tables["patients"][tables["patients"]["patient_id"].isin(periods["patient_id"]).to_numpy()]
    adm = pqi_admissions(stays, members, tables["facilities"], enrollment=periods, by=["sponsor"],
                         indicators=["90"])
    when = pd.to_datetime(adm["discharge_date"])
    adm = adm[(adm["counted"].astype(bool) & (when >= lo) & (when <= hi)).to_numpy()]
    events = pd.concat([events, pd.DataFrame({
        "measure": "pqi_admissions", "patient_id": adm["patient_id"].to_numpy(),
        "sponsor": adm["sponsor"].to_numpy(dtype=object), "date": pd.to_datetime(adm["discharge_date"]).to_numpy(),
        "value": 1.0, "age": pd.to_numeric(adm["age"]).to_numpy(dtype=float)})], ignore_index=True)
    events["sex"] = events["patient_id"].map(patients["sex"]).astype(object)
    ok = events["sponsor"].notna() & (events["age"] >= 18) & events["sex"].isin(["F", "M"])
    out = events[ok.to_numpy()].reset_index(drop=True)
    out.attrs["missing_payment"] = int((~paid & np.isin(acute["patient_id"], periods["patient_id"])).sum())
    return out


def _age(birth, on) -> np.ndarray:
    """Whole years (a birthday counts from the day itself; missing where either date is)."""
    birth, on = pd.DatetimeIndex(pd.to_datetime(np.asarray(birth))), pd.DatetimeIndex(pd.to_datetime(np.asarray(on)))
    years = np.asarray(on.year - birth.year, dtype=float)
    before = (on.month < birth.month) | ((on.month == birth.month) & (on.day < birth.day))
    return years - np.asarray(before, dtype=float)


def _assign_period(events: pd.DataFrame, time: pd.DataFrame) -> pd.DataFrame:
    periods = time[["period", "period_start", "period_end"]].drop_duplicates().sort_values("period_start")
    d = day_numbers(events["date"])
    p_start, p_end = day_numbers(periods["period_start"]), day_numbers(periods["period_end"])
    pos = np.clip(np.searchsorted(p_start, d, side="right") - 1, 0, max(len(periods) - 1, 0))
    ok = (len(periods) > 0) & (d >= p_start[pos]) & (d <= p_end[pos]) if len(periods) else np.zeros(len(d), bool)
    return events[ok].assign(period=periods["period"].to_numpy()[pos[ok]])


# -------------------------------------------------------------------------------------------- the tables


def _rate_columns(table: pd.DataFrame, level: float) -> pd.DataFrame:
    spend = (table["measure"] == "inpatient_spending").to_numpy()
    py = table["member_years"].to_numpy(dtype=float)
    safe = np.where(py > 0, py, np.nan)
    lo, hi = poisson_exact(table["events"].to_numpy(), level=level)
    table["rate"] = np.where(spend, table["amount"] / (safe * 12), table["events"] / safe * _PER)
    table["lower"] = np.where(spend, np.nan, lo / safe * _PER)
    table["upper"] = np.where(spend, np.nan, hi / safe * _PER)
    table["level"] = level
    table["method"] = np.where(spend, "payments / member-months", "exact Poisson (Garwood)")
    return table


def employer_utilisation(tables: dict[str, pd.DataFrame], *, start, end, freq: str | None = "year",
                         by: str = "sponsor", sponsor: str | Sequence[str] | None = None, min_cell: int = 11,
                         level: float = 0.95, events: pd.DataFrame | None = None,
                         time: pd.DataFrame | None = None) -> pd.DataFrame:
    """Utilisation and inpatient spending of the employer populations, per period, by sponsor or by age band.

    Parameters
    ----------
    tables : dict of DataFrame
        Contract tables (``enrollment`` with ``sponsor``).
    start, end : date
        Inclusive bounds of the reporting window.
    freq : {"year", "quarter", "month", None}
        Periods.
    by : {"sponsor", "age_band"}
        Rows: one per sponsor plus :data:`ALL_SPONSORS` (the total row), or one per age band plus
        :data:`ALL_AGES`.
    sponsor : str or list of str, optional
        Only these sponsors' members (e.g. one member's own report).
    min_cell : int
        Smallest count shown (counts 1 to ``min_cell - 1`` are hidden).
    level : float
        Confidence level of the intervals.
    events, time : DataFrame, optional
        :func:`employer_events` and :func:`member_time` already computed (same window and periods).

    Returns
    -------
    DataFrame
        ``period``, ``period_start``, the ``by`` column, ``measure``, ``label``, ``events`` (admissions, visits;
        for spending the stays paid), ``member_years``, ``amount`` (spending only), ``rate`` (per 1,000
        member-years; spending: dollars per member-month), ``lower``, ``upper``, ``level``, ``method``,
        ``total`` (the total row), ``suppressed``, ``suppression_reason``.
    """
    if by not in ("sponsor", "age_band"):
        raise ParameterError(f"by must be 'sponsor' or 'age_band', not {by!r}")
    time = member_time(tables, start=start, end=end, freq=freq) if time is None else time
    events = employer_events(tables, start=start, end=end) if events is None else events
    if sponsor is not None:
        wanted = [sponsor] if isinstance(sponsor, str) else list(sponsor)
        unknown = sorted(set(wanted) - set(time["sponsor"]))
        if unknown:
            raise ParameterError(f"sponsor {', '.join(unknown)} has no member-time in the window; the sponsors "
                                 f"are {', '.join(sorted(time['sponsor'].unique()))}")
        time, events = time[time["sponsor"].isin(wanted)], events[events["sponsor"].isin(wanted)]
    events = _assign_period(events.assign(age_band=_employer_band(events["age"])), time)
    total_label = ALL_SPONSORS if by == "sponsor" else ALL_AGES
    ev = events.groupby([by, "period", "measure"], sort=False).agg(events=("value", "size"),
                                                                    amount=("value", "sum")).reset_index()
    py = time.groupby([by, "period", "period_start"], sort=False)["member_years"].sum().reset_index()
    grid = py.merge(pd.DataFrame({"measure": EMPLOYER_MEASURES}), how="cross")
    table = grid.merge(ev, on=[by, "period", "measure"], how="left")
    table["events"] = table["events"].fillna(0).astype(np.int64)
    table["amount"] = table["amount"].where(table["measure"] == "inpatient_spending").fillna(
        0.0).where(table["measure"] == "inpatient_spending")
    totals = table.groupby(["period", "period_start", "measure"], sort=False).agg(
        member_years=("member_years", "sum"), events=("events", "sum"), amount=("amount", "sum")).reset_index()
    totals[by] = total_label
    totals["amount"] = totals["amount"].where(totals["measure"] == "inpatient_spending")
    table = pd.concat([table.assign(total=False), totals.assign(total=True)], ignore_index=True)
    table = _rate_columns(table, level)
    table["label"] = table["measure"].map(MEASURE_LABELS)
    order = {m: i for i, m in enumerate(EMPLOYER_MEASURES)}
    table = table.sort_values(["period_start", "measure", "total", by], key=lambda c: c.map(order)
                              if c.name == "measure" else c, kind="stable").reset_index(drop=True)
    table = table[["period", "period_start", by, "measure", "label", "events", "member_years", "amount", "rate",
                   "lower", "upper", "level", "method", "total"]]
    return suppress_counts(table, count_cols="events", group_cols=["period", "measure"], total_rows="total",
                           threshold=cell_threshold(min_cell), derived_cols=["amount"], denominator=None)


def chronic_prevalence(tables: dict[str, pd.DataFrame], *, start, end, by: str = "sponsor",
                       sponsor: str | Sequence[str] | None = None, min_cell: int = 11,
                       level: float = 0.95) -> pd.DataFrame:
    """Share of members with each chronic condition coded on a hospital stay discharged in ``[start, end]``.

    Members are the people with member-time from age 18 in the window; a member counts for every sponsor (and
    the age band on the last day of member-time) they were with in it. Conditions: :func:`carequal.cohorts.
    chronic_condition_codes`. Inpatient data only: a member never admitted has no diagnosis here, so the shares
    are floors (the Notes of the notebook say so).

    Returns
    -------
    DataFrame
        The ``by`` column (its total row :data:`ALL_SPONSORS` / :data:`ALL_AGES`), ``condition`` (the key),
        ``label`` (its display name: :func:`carequal.cohorts.chronic_condition_codes`), ``events``
        (members with it), ``n`` (members), ``rate`` (share), ``lower``, ``upper`` (Wilson), ``level``,
        ``method``, ``total``, ``suppressed``, ``suppression_reason``.
    """
    if by not in ("sponsor", "age_band"):
        raise ParameterError(f"by must be 'sponsor' or 'age_band', not {by!r}")
    time = member_time(tables, start=start, end=end, freq=None)
    if sponsor is not None:
        time = time[time["sponsor"].isin([sponsor] if isinstance(sponsor, str) else list(sponsor))]
    periods = sponsor_periods(tables["enrollment"])
    members = _members(periods, tables["patients"], start, end)
    if sponsor is not None:
        members = members[members["sponsor"].isin(time["sponsor"].unique())]
    stays = tables["stays"][tables["stays"]["patient_id"].isin(members["patient_id"])]
    cc = chronic_conditions(stays, start=start, end=end)
    codes = chronic_condition_codes()
    names, labels = list(codes["condition"]), dict(zip(codes["condition"], codes["label"], strict=True))
    flagged = members.merge(cc[["patient_id"] + names], on="patient_id", how="left")
    flagged[names] = flagged[names].fillna(False).astype(bool)
    rows = []
    for key, grp in [*flagged.groupby(by, sort=True), (ALL_SPONSORS if by == "sponsor" else ALL_AGES,
                                                       flagged.drop_duplicates("patient_id"))]:
        n = grp["patient_id"].nunique()
        for name in names:
            rows.append({by: key, "condition": name, "label": labels[name],
                         "events": int(grp.loc[grp[name], "patient_id"].nunique()), "n": int(n),
                         "total": key in (ALL_SPONSORS, ALL_AGES)})
    table = pd.DataFrame(rows, columns=[by, "condition", "label", "events", "n", "total"])
    lo, hi = wilson(table["events"].to_numpy(), table["n"].to_numpy(), level=level)
    table["rate"] = table["events"] / table["n"].where(table["n"] > 0)
    table["lower"], table["upper"], table["level"], table["method"] = lo, hi, level, "Wilson"
    return suppress_counts(table, count_cols=["events", "n"], group_cols="condition", total_rows="total",
                           threshold=cell_threshold(min_cell), denominator="n")


def _members(periods: pd.DataFrame, patients: pd.DataFrame, start, end) -> pd.DataFrame:
    """One row per (member, sponsor) with sponsored days from age 18 in the window, and the age band on the last
    such day."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    p = periods[(periods["start_date"] <= hi) & (periods["end_date"] >= lo)]
    info = patients.set_index("patient_id")
    last = np.minimum(p["end_date"], hi)
    death = pd.to_datetime(p["patient_id"].map(info["death_date"]))
    last = last.where(death.isna() | (death >= last), death)
    birth = pd.to_datetime(p["patient_id"].map(info["birth_date"]))
    age = _age(birth, last)
    out = pd.DataFrame({"patient_id": p["patient_id"].to_numpy(), "sponsor": p["sponsor"].to_numpy(),
                        "age": age, "last": last.to_numpy(),
                        "sex": p["patient_id"].map(info["sex"]).to_numpy()})
    out = out[(out["age"] >= 18) & np.isin(out["sex"], ["F", "M"]) & (out["last"] >= np.maximum(
        p["start_date"].to_numpy(), lo.to_datetime64()))]
    out = out.sort_values("last").drop_duplicates(["patient_id", "sponsor"], keep="last")
    return out.assign(age_band=_employer_band(out["age"])).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ trends


def employer_trend(tables: dict[str, pd.DataFrame], *, measure: str, start, end, freq: str = "quarter",
                   sponsor: str | None = None, min_cell: int = 11, improvement: str | None = "lower",
                   events: pd.DataFrame | None = None, time: pd.DataFrame | None = None) -> pd.DataFrame:
    """A measure's rate per period for one sponsor (or the alliance) on an XmR control chart.

    Returns
    -------
    DataFrame
        :func:`carequal.compare.xmr_chart` of the rate per period (``period``, ``value``, ``centre``, the 2σ
        and 3σ limits, ``signal``), with ``events``, ``member_years`` and ``period_start``; a period whose
        count is 1 to ``min_cell - 1`` has its value and signal hidden (the limits, from every period, stay).
    """
    if measure not in EMPLOYER_MEASURES:
        raise ParameterError(f"unknown measure {measure!r}; the measures are {', '.join(EMPLOYER_MEASURES)}")
    time = member_time(tables, start=start, end=end, freq=freq) if time is None else time
    events = employer_events(tables, start=start, end=end) if events is None else events
    if sponsor is not None:
        time, events = time[time["sponsor"] == sponsor], events[events["sponsor"] == sponsor]
    events = _assign_period(events[events["measure"] == measure], time)
    py = time.groupby(["period", "period_start"], sort=False)["member_years"].sum().reset_index()
    ev = events.groupby("period").agg(events=("value", "size"), amount=("value", "sum"))
    table = py.merge(ev, on="period", how="left").fillna({"events": 0, "amount": 0.0})
    table = table.sort_values("period_start").reset_index(drop=True)
    table["events"] = table["events"].astype(np.int64)
    safe = table["member_years"].where(table["member_years"] > 0)
    rate = table["amount"] / (safe * 12) if measure == "inpatient_spending" else table["events"] / safe * _PER
    chart = xmr_chart(pd.Series(rate.to_numpy(), index=table["period"].to_numpy()), improvement=improvement)
    chart = chart.assign(events=table["events"].to_numpy(), member_years=table["member_years"].to_numpy(),
                         period_start=table["period_start"].to_numpy())
    lo, hi = cell_threshold(min_cell)
    small = chart["events"].between(lo, hi).to_numpy()
    chart.loc[small, ["value", "moving_range"]] = np.nan
    chart.loc[small, "signal"] = "hidden (small count)"
    chart["events"] = chart["events"].astype("Int64").mask(small)
    chart["measure"], chart["label"] = measure, MEASURE_LABELS[measure]
    chart.attrs["freq"] = freq  # plots.spc_plot(chart, period="period_start"): periods on a date axis
    return chart


# ------------------------------------------------------------------------------------------------ impact


_IMPACT_MEASURES = ("pqi_admissions", "ed_visits", "admissions")


def programme_impact(tables: dict[str, pd.DataFrame], *, sponsor: str, start, measure: str = "pqi_admissions",
                     window_start=None, window_end=None, comparison: Sequence[str] | None = None,
                     freq: str = "quarter", level: float = 0.95, events: pd.DataFrame | None = None,
                     time: pd.DataFrame | None = None) -> dict:
    """The effect of a programme started by ``sponsor`` on ``start``, its members against members without it.

    Difference-in-differences on cells of sponsor × period (quarter, or month): events against the events expected
    from the cell's member-years by age band and sex at the pooled rates (indirect standardisation), in a Poisson
    model with sponsor and period effects and the programme's exposure (the sponsor's periods from the start on):
    :func:`carequal.impact.difference_in_differences` with ``link="poisson"`` and the expected events as
    exposure. A period in which the programme starts, unless it starts on the period's first day, is
    left out (part before, part after). Standard errors are model-based with a quasi-likelihood scale (sponsors
    are too few to cluster on). Beside it, an interrupted time series
    (:func:`carequal.impact.interrupted_time_series`) of the difference between the sponsor's rate and the
    comparison's per period (per 1,000 member-years): its level change at the start.

    Assumptions (stated in the notebook): the programme's members and the comparison would have moved alike
    without it (parallel trends), nothing else changed for the sponsor at the start, and the membership did not
    change in a way that matters (composition is adjusted for age and sex only).

    Parameters
    ----------
    tables : dict of DataFrame
    sponsor : str
        The sponsor running the programme.
    start : date
        The programme's start.
    measure : {"pqi_admissions", "ed_visits", "admissions"}
    window_start, window_end : date, optional
        The window (default: the first admission to the last discharge of the data).
    freq : {"quarter", "month"}
        The periods of the cells and of the time series.
    events, time : DataFrame, optional
        :func:`employer_events` and :func:`member_time` (with ``fine_bands=True`` and ``freq``) already
        computed.
    comparison : list of str, optional
        The comparison sponsors (default: every other sponsor).

    Returns
    -------
    dict
        ``measure``, ``sponsor``, ``comparison`` (list), ``start``, ``rate_ratio`` with ``rate_ratio_lower``,
        ``rate_ratio_upper`` (the programme's multiplicative effect on the rate), ``effect`` (its log) with its
        interval, ``se``, ``p_value``, ``level``, ``percent_change`` (100 × (rate_ratio − 1)) and its interval,
        ``its_level_change`` (per 1,000 member-years) with ``its_lower``, ``its_upper``, ``its_p``,
        ``before_after`` (DataFrame: ``group``, ``when`` (before, after), ``events``, ``member_years``,
        ``rate``), ``n_cells``, ``n_left_out`` (cells of a period the start falls inside), ``method``,
        ``converged``, ``estimable`` and ``reason``: with no event in one of the four groups (programme or
        comparison, before or after) no effect is estimated (the numbers are missing and ``reason`` says why).
    """
    if measure not in _IMPACT_MEASURES:
        raise ParameterError(f"measure must be one of {', '.join(_IMPACT_MEASURES)}, not {measure!r}")
    start = pd.Timestamp(start)
    enr = tables["enrollment"]
    names = sponsors(enr)
    if sponsor not in names:
        raise ParameterError(f"sponsor {sponsor!r} is not in the enrollment table; the sponsors are "
                             f"{', '.join(names) or '(none)'}")
    comparison = [s for s in names if s != sponsor] if comparison is None else list(comparison)
    if not comparison or sponsor in comparison:
        raise ParameterError("the comparison must name at least one sponsor other than the programme's")
    if time is None:
        periods = sponsor_periods(enr)
        lo = pd.Timestamp(window_start) if window_start is not None else periods["start_date"].min()
        hi = pd.Timestamp(window_end) if window_end is not None else periods["end_date"].max()
        last_event = pd.to_datetime(tables["stays"]["discharge_date"]).max()
        hi = min(hi, last_event) if pd.notna(last_event) else hi
        lo = max(lo, pd.to_datetime(tables["stays"]["admit_date"]).min())
        time = member_time(tables, start=lo, end=hi, freq=freq, fine_bands=True)
    else:
        lo, hi = time["period_start"].min(), time["period_end"].max()
    if not (lo < start <= hi):
        raise ParameterError(f"the programme start {start.date()} must fall inside the window {lo.date()} to "
                             f"{hi.date()}")
    events = employer_events(tables, start=lo, end=hi) if events is None else events
    time = time[time["sponsor"].isin([sponsor, *comparison])]
    ev = events[(events["measure"] == measure) & events["sponsor"].isin([sponsor, *comparison])]
    ev = _assign_period(ev.assign(age_band=pqi_age_band(ev["age"]).to_numpy()), time)
    keys = ["sponsor", "period", "age_band", "sex"]
    counts = ev.groupby(keys, sort=False).size().rename("events").reset_index()
    strata = time.merge(counts, on=keys, how="left").fillna({"events": 0})
    # age-sex composition by indirect standardisation: each stratum's expected events at the pooled rate of its
    # age band and sex (every sponsor and period), summed per sponsor and period; the model's offset is the log
    # of this expected count (sparse age-sex cells of a rare event would leave a model with age-sex effects
    # unstable, and its overdispersion scale meaningless)
    pooled = strata.groupby(["age_band", "sex"])[["events", "member_years"]].transform("sum")
    strata["expected"] = strata["member_years"] * pooled["events"] / pooled["member_years"]
    cells = strata.groupby(["sponsor", "period", "period_start", "period_end"], sort=False)[
        ["events", "expected", "member_years"]].sum().reset_index()
    cells["events"] = cells["events"].astype(np.int64)
    straddles = (cells["period_start"] < start) & (cells["period_end"] >= start)
    cells["exposed"] = ((cells["sponsor"] == sponsor) & (cells["period_start"] >= start)).astype(object)
    cells.loc[straddles, "exposed"] = None
    clean = cells[~straddles.to_numpy()]
    clean = clean.assign(group=np.where(clean["sponsor"] == sponsor, sponsor, "Comparison (" + ", ".join(
        comparison) + ")"), when=np.where(clean["period_start"] >= start, "after", "before"))
    before_after = clean.groupby(["group", "when"], sort=False)[["events", "member_years"]].sum().reset_index()
    before_after["rate"] = before_after["events"] / before_after["member_years"] * _PER
    out = {"measure": measure, "label": MEASURE_LABELS[measure], "sponsor": sponsor, "comparison": comparison,
           "start": start, "level": level, "before_after": before_after, "estimable": True, "reason": "",
           "method": "two-way fixed effects Poisson model (sponsor and period effects, expected events by age "
                     "and sex at the pooled rates as offset), model-based standard errors with a quasi-likelihood "
                     "scale; segmented regression (WLS, Newey-West) of the difference in rates per period"}
    # with no event in one of the four groups (programme or comparison, before or after) the model's estimate
    # lies on the boundary (a rate ratio of 0 or infinity): nothing to report but the counts
    empty = before_after.loc[before_after["events"] == 0, ["group", "when"]]
    if len(before_after) < 4 or len(empty):
        keys = [f"{g} {w}" for g, w in empty.itertuples(index=False)] or ["a group before or after the start"]
        nan = float("nan")
        out.update({k: nan for k in ("rate_ratio", "rate_ratio_lower", "rate_ratio_upper", "effect",
                                     "effect_lower", "effect_upper", "se", "p_value", "percent_change",
                                     "percent_lower", "percent_upper", "its_level_change", "its_lower",
                                     "its_upper", "its_p")})
        out.update(estimable=False, reason=f"no events for {', '.join(keys)}: too few to estimate an effect",
                   converged=False, n_cells=len(cells), n_left_out=int(straddles.sum()))
        return out
    did = difference_in_differences(cells, outcome="events", facility="sponsor", period="period",
                                    exposed="exposed", link="poisson", exposure="expected", cluster=False,
                                    level=level)
    # the interrupted time series: the difference in rates per period, programme minus comparison
    per = clean.assign(arm=np.where(clean["sponsor"] == sponsor, "programme", "comparison")).groupby(
        ["period_start", "arm"])[["events", "member_years"]].sum().unstack("arm")
    rate = per["events"] / per["member_years"] * _PER
    series = pd.DataFrame({"period": rate.index, "difference": (rate["programme"] - rate["comparison"]).to_numpy()})
    its = interrupted_time_series(series, start=start, rate="difference", period="period", weight=None)
    z = special.ndtri(1 - (1 - level) / 2)
    out.update({k: did[k] for k in ("rate_ratio", "rate_ratio_lower", "rate_ratio_upper", "effect", "effect_lower",
                                    "effect_upper", "se", "p_value", "converged")})
    out.update({
        "percent_change": 100 * (did["rate_ratio"] - 1), "percent_lower": 100 * (did["rate_ratio_lower"] - 1),
        "percent_upper": 100 * (did["rate_ratio_upper"] - 1),
        "its_level_change": its["level_change"], "its_lower": its["level_change"] - z * its["level_se"],
        "its_upper": its["level_change"] + z * its["level_se"], "its_p": its["level_p"],
        "n_cells": did["n"], "n_left_out": did["n_left_out"]})
    return out


# ------------------------------------------------------------------------------------- the PQI table


PQI_SHOWN: tuple[str, ...] = ("90", "91", "92", "01", "03", "05", "07", "08", "11", "12", "14", "15", "16")
"""PQIs in the notebook's table: the composites first."""


def pqi_table(tables: dict[str, pd.DataFrame], *, start, end, by: str = "sponsor",
              sponsor: str | Sequence[str] | None = None, indicators: Sequence[str] = PQI_SHOWN,
              min_cell: int = 11, level: float = 0.95) -> pd.DataFrame:
    """PQI admissions per 100,000 member-years over ``[start, end]`` (one period), crude with exact intervals and,
    by sponsor, the indirectly standardised O/E against the pooled alliance (:func:`carequal.pqi.
    pqi_observed_expected`: above 1, more admissions than the alliance's age-sex rates give for the members).

    Returns
    -------
    DataFrame
        ``indicator``, ``name``, the ``by`` column (with its total row), ``events``, ``person_years``, ``rate``,
        ``lower``, ``upper``, ``expected``, ``ratio``, ``ratio_lower``, ``ratio_upper`` (by sponsor only),
        ``total``, ``suppressed``, ``suppression_reason``.
    """
    from carequal.pqi import INDICATORS, pqi_observed_expected

    if by not in ("sponsor", "age_band"):
        raise ParameterError(f"by must be 'sponsor' or 'age_band', not {by!r}")
    periods = sponsor_periods(tables["enrollment"])
    wanted = None if sponsor is None else ([sponsor] if isinstance(sponsor, str) else list(sponsor))
    if wanted is not None:
        periods = periods[periods["sponsor"].isin(wanted)]
    stays = tables["stays"][tables["stays"]["patient_id"].isin(periods["patient_id"]).to_numpy()]
    members = tables["patients"][tables["patients"]["patient_id"].isin(periods["patient_id"]).to_numpy()]
    adm = pqi_admissions(stays, members, tables["facilities"], enrollment=periods, by=["sponsor"],
                         indicators=list(indicators))
    adm = adm[adm["sponsor"].notna().to_numpy()]
    pt = pqi_person_time(periods, members, start=start, end=end, by=["sponsor"], freq=None)
    total_label = ALL_SPONSORS if by == "sponsor" else ALL_AGES
    if by == "sponsor":
        rates = pqi_rates_by(adm, pt, ["sponsor"], indicators, level)
        oe = pqi_observed_expected(adm, pt, by=["sponsor"], indicators=list(indicators), level=level)
        rates = rates.merge(oe[["sponsor", "indicator", "expected", "ratio", "lower", "upper"]].rename(
            columns={"lower": "ratio_lower", "upper": "ratio_upper"}), on=["sponsor", "indicator"], how="left")
    else:
        adm = adm.assign(age_band=_employer_band(adm["age"]))
        pt = pt.assign(age_band_pqi=pt["age_band"], age_band=pt["age_band"].map(
            lambda b: _PQI_BAND_TO_EMPLOYER.get(b, "65+")))
        rates = pqi_rates_by(adm.assign(band=adm["age_band"]), pt.assign(band=pt["age_band"]).drop(
            columns="age_band").rename(columns={"age_band_pqi": "age_band"}), ["band"], indicators, level)
        rates = rates.rename(columns={"band": "age_band"})
    totals = pqi_rates_by(adm, pt if by == "sponsor" else pt.drop(columns="age_band").rename(
        columns={"age_band_pqi": "age_band"}), [], indicators, level).assign(**{by: total_label})
    table = pd.concat([rates.assign(total=False), totals.assign(total=True)], ignore_index=True)
    table["name"] = table["indicator"].map(lambda n: INDICATORS[n].name)
    order = {n: i for i, n in enumerate(indicators)}
    table = table.sort_values(["indicator", "total", by], key=lambda c: c.map(order) if c.name == "indicator"
                              else c, kind="stable").reset_index(drop=True)
    derived = [c for c in ("expected", "ratio", "ratio_lower", "ratio_upper") if c in table.columns]
    return suppress_counts(table, count_cols="events", group_cols="indicator", total_rows="total",
                           threshold=cell_threshold(min_cell), derived_cols=derived or None, denominator=None)


def pqi_rates_by(admissions: pd.DataFrame, person_time: pd.DataFrame, by: list[str], indicators,
                 level: float) -> pd.DataFrame:
    """:func:`carequal.pqi.pqi_rates` over the whole window (its one period), ``period`` columns dropped."""
    from carequal.pqi import pqi_rates

    out = pqi_rates(admissions, person_time, by=by, indicators=list(indicators), level=level)
    return out.drop(columns=["period"])


# -------------------------------------------------------------------------------- display and findings


def employer_comparison(utilisation: pd.DataFrame, period: str, *, by: str = "sponsor") -> pd.DataFrame:
    """One period of :func:`employer_utilisation` laid out for reading: rows by sponsor (or age band), each
    measure's rate with its interval in one cell, "34.0 (23.5–47.5)" (the values of
    :func:`carequal.population.market_comparison`; one column a measure, so the table fits a page).

    Examples
    --------
    >>> u = pd.DataFrame({"sponsor": ["A", "All sponsors"], "period": "2024", "measure": "ed_visits",
    ...     "events": [250, 250], "member_years": [1000.0, 1000.0], "rate": [250.0, 250.0],
    ...     "lower": [220.0, 220.0], "upper": [283.0, 283.0], "level": 0.95, "suppressed": False})
    >>> employer_comparison(u, "2024").iloc[0].tolist()
    ['A', '1,000', '250.0 (220.0–283.0)']
    """
    from carequal.population import market_comparison

    part = utilisation.rename(columns={by: "market", "member_years": "person_years"}).assign(
        measure=utilisation["measure"].map(SHORT_LABELS), year=utilisation["period"])
    out = market_comparison(part, period)
    for ci in [c for c in out.columns if str(c).endswith("% CI") and ": " in str(c)]:
        rate, level = ci.rsplit(": ", 1)
        out[rate] = [r if r in ("suppressed", "–", "") or i in ("suppressed", "–", "") else f"{r} ({i})"
                     for r, i in zip(out[rate], out[ci], strict=True)]
        header = f"{rate} ({level})" if (out[ci] != "–").any() else rate  # spending has no interval
        out = out.drop(columns=ci).rename(columns={rate: header})
    return out.rename(columns={"Market": "Member" if by == "sponsor" else "Age band",
                               "Person-years": "Member-years"})


SHORT_LABELS: dict[str, str] = {
    "admissions": "Hospital admissions", "pqi_admissions": "Avoidable admissions (PQI 90)",
    "ed_visits": "ED visits", "post_acute_admissions": "Post-acute admissions",
    "inpatient_spending": "Inpatient $ PMPM"}
"""Short names of the measures (table columns, chart titles)."""

MEASURE_UNITS: dict[str, str] = {m: "per 1,000 member-years" for m in EMPLOYER_MEASURES} | {
    "inpatient_spending": "$ per member per month"}
"""The unit of each measure's rate (a chart's axis)."""


def employer_findings(utilisation: pd.DataFrame, *, period: str, previous: str | None = None,
                      by: str = "sponsor") -> list[str]:
    """Plain-language findings of one period of :func:`employer_utilisation` (hidden values are not quoted).

    For the total row: each rate per 1,000 member-years with its interval, and the change since ``previous``
    when both periods are shown; by sponsor, the members whose interval lies wholly above or below the
    alliance's rate.
    """
    rows = utilisation[utilisation["period"] == period]
    total = rows[rows["total"]].set_index("measure")
    before = utilisation[(utilisation["period"] == previous) & utilisation["total"]].set_index("measure") \
        if previous is not None else None
    out = []
    for measure in EMPLOYER_MEASURES:
        if measure not in total.index or pd.isna(total.loc[measure, "rate"]):
            continue
        r = total.loc[measure]
        if measure == "inpatient_spending":
            text = f"Inpatient spending was ${r['rate']:,.0f} per member per month in {period}"
        else:
            text = (f"{SHORT_LABELS[measure]}: {r['rate']:,.1f} per 1,000 member-years in {period} "
                    f"(95% CI {r['lower']:,.1f}–{r['upper']:,.1f})")
        if before is not None and measure in before.index and not pd.isna(before.loc[measure, "rate"]) \
                and before.loc[measure, "rate"] > 0:
            change = r["rate"] / before.loc[measure, "rate"] - 1
            text += f", {abs(change) * 100:.0f}% {'lower' if change < 0 else 'higher'} than in {previous}"
        out.append(text + ".")
        if by == "sponsor" and measure != "inpatient_spending":
            groups = rows[(rows["measure"] == measure) & ~rows["total"] & rows["lower"].notna()]
            high = groups.loc[groups["lower"] > r["rate"], "sponsor"].tolist()
            low = groups.loc[groups["upper"] < r["rate"], "sponsor"].tolist()
            if high:
                out.append(f"{SHORT_LABELS[measure]} were higher than the alliance's rate at {', '.join(high)}.")
            if low:
                out.append(f"{SHORT_LABELS[measure]} were lower than the alliance's rate at {', '.join(low)}.")
    return out


def impact_finding(result: dict, *, min_cell: int = 11) -> str:
    """One sentence on :func:`programme_impact`'s result, for the board. An effect resting on a group (programme
    or comparison, before or after) with 1 to ``min_cell - 1`` events is not reported: its size would say more
    about chance than about the programme, and it would rest on a count the reports hide."""
    what = {"pqi_admissions": "avoidable (PQI) admissions", "ed_visits": "emergency department visits",
            "admissions": "hospital admissions"}.get(result["measure"], result["measure"])
    start = pd.Timestamp(result["start"])
    lo_cell, hi_cell = cell_threshold(min_cell)
    if not result["estimable"] or result["before_after"]["events"].between(lo_cell, hi_cell).any():
        reason = result["reason"] or f"a group has fewer than {min_cell} of them before or after the start"
        return (f"The effect of {result['sponsor']}'s programme (from {start:%-d %B %Y}) on {what} cannot be "
                f"estimated yet: {reason.removesuffix(': too few to estimate an effect')}, too few to tell an "
                "effect from chance.")
    pct, lo, hi = result["percent_change"], result["percent_lower"], result["percent_upper"]
    direction = "fewer" if pct < 0 else "more"
    sure = ("the change is clear (its 95% interval excludes no change)" if hi < 0 or lo > 0 else
            "the interval includes no change, so the data cannot yet tell the effect from chance")
    return (f"Since {result['sponsor']} started its programme on {start:%-d %B %Y}, its members had "
            f"{abs(pct):.0f}% {direction} {what} than members without it would lead us to expect "
            f"(95% CI {lo:+.0f}% to {hi:+.0f}%); {sure}.")


def programme_findings(tables: dict[str, pd.DataFrame], *, programme_sponsor: str, programme_start,
                       window: tuple, sponsor: str | None = None, min_cell: int = 11,
                       events: pd.DataFrame | None = None) -> list[str]:
    """The report's sentences on a care-management programme: :func:`impact_finding` of :func:`programme_impact`
    on avoidable (PQI) admissions and on ED visits over ``window`` (``(first day, last day)``, e.g.
    :func:`trend_window`), or one sentence saying why no effect is shown: no programme named, a sponsor not in the
    data, another sponsor's report (``sponsor``), or a start outside the window.

    Examples
    --------
    >>> enr = pd.DataFrame({"patient_id": ["p"], "sponsor": ["A"], "start_date": pd.to_datetime(["2022-01-01"]),
    ...                     "end_date": pd.to_datetime(["2024-12-31"])})
    >>> programme_findings({"enrollment": enr}, programme_sponsor="", programme_start="",
    ...                    window=("2022-01-01", "2024-12-31"))
    ['No care-management programme was named for this report.']
    >>> programme_findings({"enrollment": enr}, programme_sponsor="A", programme_start="2021-07-01",
    ...                    window=("2022-01-01", "2024-12-31"))[0].split(":")[0]
    "A's programme started on 1 July 2021, before the period these reports look at (1 January 2022 to 31 December 2024)"
    """
    if not programme_sponsor:
        return ["No care-management programme was named for this report."]
    if programme_sponsor not in sponsors(tables["enrollment"]):
        return [f"The programme's sponsor, {programme_sponsor}, has no members in the data: no effect can be shown."]
    if sponsor is not None and sponsor != programme_sponsor:
        return [f"The care-management programme runs at {programme_sponsor}; its effect is shown in that member's "
                "report and in the alliance's."]
    start, lo, hi = pd.Timestamp(programme_start), pd.Timestamp(window[0]), pd.Timestamp(window[1])
    if not lo < start <= hi:
        when = "before" if start <= lo else "after"
        return [f"{programme_sponsor}'s programme started on {start:%-d %B %Y}, {when} the period these reports "
                f"look at ({lo:%-d %B %Y} to {hi:%-d %B %Y}): its effect cannot be estimated from them."]
    return [impact_finding(programme_impact(tables, sponsor=programme_sponsor, start=start, measure=measure,
                                            window_start=lo, window_end=hi, events=events), min_cell=min_cell)
            for measure in ("pqi_admissions", "ed_visits")]


def kpi_record(utilisation: pd.DataFrame, *, period: str) -> dict:
    """The headline numbers of a report (the batch index): the total row's rates in ``period`` (hidden: None)."""
    rows = utilisation[(utilisation["period"] == period) & utilisation["total"]].set_index("measure")
    record = {"period": period}
    for measure in EMPLOYER_MEASURES:
        value = rows.loc[measure, "rate"] if measure in rows.index else None
        record[measure] = None if value is None or pd.isna(value) else round(float(value), 2)
    any_row = rows.iloc[0] if len(rows) else None
    record["member_years"] = None if any_row is None else round(float(any_row["member_years"]), 1)
    return record
