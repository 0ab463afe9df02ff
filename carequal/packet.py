"""Partner packets: what one partner facility is shown of its agreed metrics, safe to share with it.

A packet (``carequal/notebooks/partner_packet.ipynb``, rendered by ``carequal report --by partner``) holds, for one
partner of an agreement (:mod:`carequal.agreement`):

* its agreed metrics against their targets and the market benchmark, with status, per review period
  (:func:`status_table`, :func:`status_grid`, :func:`status_findings`);
* trends of each metric with the target, the benchmark and SPC signals (:func:`metric_trend`);
* where its patients came from and went next (:func:`patient_flows`, :func:`flow_display`);
* for a hospital, network leakage: the share of its discharges to post-acute care that went to providers
  outside the partnership, per review period, with a control chart (:func:`partner_leakage`,
  :func:`leakage_table`, :func:`leakage_trend`, :func:`leakage_findings`);
* an aggregate extract, CSV and Excel with one sheet per table (:func:`write_extract`).

Sharing rules, all enforced here and tested:

* counts of 1 to ``min_cell - 1`` are hidden, with every value that would reveal them (a rate, its interval,
  a change) and complementary cells (:func:`carequal.disclosure.suppress_counts`); every table is checked with
  :func:`carequal.disclosure.check_suppressed` before it is written to an extract;
* other facilities appear only as benchmark aggregates or under anonymous labels ("Hospital A", "SNF B"),
  unless the agreement sets ``show_facility_names = true``;
* no patient-level row reaches a packet. The care-coordination list of a partner's own readmitted patients
  (:func:`readmitted_patients`) is a separate file, written only on request, never inside an HTML report.

The patient-level inputs (:func:`packet_inputs`) are computed once for all partners, before the packets run,
and kept in the batch's work folder; each packet reads only its own partner's rows.

Size: about 900 lines, one module because the partner packet notebook's content, section by section (status, trends,
flows, leakage, the extract), sharing :class:`PartnerPacket` and the suppression of its results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from carequal.agreement import (
    NOT_COMPUTED,
    POST_ACUTE,
    SPENDING_ROOM_DAYS,
    Agreement,
    agreement_cases,
    evaluate_agreement,
    partner_table,
)
from carequal.cohorts import index_stays, post_acute_episodes
from carequal.compare import p_chart
from carequal.cost import network_leakage
from carequal.disclosure import cell_threshold, check_suppressed, suppress_counts, suppression_statement
from carequal.errors import ParameterError
from carequal.intervals import difference_interval, wilson
from carequal.measured import episodes_of, measure_cohort
from carequal.periods import previous_period
from carequal.presentation import HIDDEN_IN_TABLES, fmt_ci, fmt_pct, presentable, with_interval_text

__all__ = ["PACKET_SECTIONS", "PartnerPacket", "change_verdicts", "flow_display", "leakage_display",
           "leakage_findings", "leakage_plot", "leakage_table", "leakage_trend", "load_partner_packet",
           "metric_trend", "packet_glance", "packet_inputs", "packet_record", "packet_title", "partner_leakage",
           "patient_flows", "readmitted_patients", "spending_notes", "status_display", "status_findings",
           "status_grid", "status_table", "trend_findings", "value_axis", "write_extract", "write_packet_inputs",
           "write_record"]

SETTING_LABELS = {"acute": "Hospital", "snf": "SNF", "irf": "IRF", "ltch": "LTCH", "hha": "Home health"}

_WENT_NEXT = [("01", "Home"), ("81", "Home"), ("06", "Home with home health"), ("86", "Home with home health"),
              ("03", "Skilled nursing facility"), ("83", "Skilled nursing facility"), ("62", "Rehabilitation facility"),
              ("90", "Rehabilitation facility"), ("63", "Long-term care hospital"), ("91", "Long-term care hospital"),
              ("02", "Hospital"), ("82", "Hospital"), ("20", "Died"), ("40", "Died"), ("41", "Died"), ("42", "Died"),
              ("50", "Hospice"), ("51", "Hospice"), ("07", "Left against medical advice"),
              ("64", "Nursing facility (Medicaid only)"), ("84", "Nursing facility (Medicaid only)"),
              ("65", "Psychiatric hospital"), ("93", "Psychiatric hospital"), ("66", "Critical access hospital"),
              ("94", "Critical access hospital"), ("70", "Another institution"), ("95", "Another institution")]
"""UB-04 discharge status → where the patient went next (other and missing codes: "Other or unknown")."""


# ----------------------------------------------------------------------------------- inputs (once, all)


def patient_flows(tables: dict[str, pd.DataFrame], agreement: Agreement, *, period,
                  episodes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Where each partner's patients came from and went next, in the period (by index discharge date).

    Hospitals: where their index discharges went (post-acute setting and provider, or none). Post-acute
    providers: the hospitals that referred the patients (index discharges followed within a day by a stay
    with the provider) and how the provider's stay ended (its discharge status).

    ``episodes`` are the index stays' post-acute episodes (:func:`carequal.measured.episodes_of` of the measured
    cohort's CMS rows); without them the cohort is built from ``tables``.

    Returns
    -------
    DataFrame
        ``facility_id`` (partner), ``direction`` ("came from" / "went next"), ``other_id`` (a facility, or
        missing for a destination that is not one), ``category`` (setting or destination), ``n``. Not
        suppressed, not anonymised: patient-derived counts for :func:`flow_display`.
    """
    lo, hi = (pd.Timestamp(x) for x in period)
    fac = tables["facilities"]
    if episodes is None:
        episodes = _index_episodes(tables)
    when = pd.to_datetime(episodes["hospital_discharge_date"])
    ep = episodes[((when >= lo) & (when <= hi)).to_numpy()].reset_index(drop=True)
    ep["hospital_id"] = ep["hospital_id"].astype("str").to_numpy()
    setting = fac.set_index("facility_id")["setting"]
    status = dict(_WENT_NEXT)
    parts = []
    for p in agreement.partners:
        if setting.get(p.facility_id) == "acute":
            mine = ep[ep["hospital_id"] == p.facility_id]
            pac = mine["pac_setting"].isin(POST_ACUTE)
            cat = np.where(pac, mine["pac_setting"].map(SETTING_LABELS).fillna("Other"), "No post-acute care")
            parts.append(pd.DataFrame({"facility_id": p.facility_id, "direction": "went next",
                                       "other_id": np.where(pac, mine["pac_facility_id"].astype("str"), None),
                                       "category": cat}))
        else:
            mine = ep[ep["pac_facility_id"].astype("str") == p.facility_id]
            parts.append(pd.DataFrame({"facility_id": p.facility_id, "direction": "came from",
                                       "other_id": mine["hospital_id"].to_numpy(), "category": "Hospital"}))
            nxt = mine["pac_discharge_status"].astype("string").map(status).fillna("Other or unknown")
            parts.append(pd.DataFrame({"facility_id": p.facility_id, "direction": "went next", "other_id": None,
                                       "category": nxt.to_numpy()}))
    flows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["facility_id", "direction", "other_id", "category"])
    flows["other_id"] = flows["other_id"].astype("string")
    keys = ["facility_id", "direction", "category", "other_id"]
    return flows.groupby(keys, dropna=False, sort=True).size().rename("n").reset_index()


def _index_episodes(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The post-acute episodes of the CMS index stays of ``tables`` (``hospital_id`` the discharging hospital)."""
    stays, fac = tables["stays"], tables["facilities"]
    index = index_stays(stays, fac, tables["patients"], tables.get("enrollment")).index
    ep = post_acute_episodes(stays, fac, hospital_stays=index)
    return ep.set_index("stay_id").reindex(index["stay_id"]).reset_index().assign(
        hospital_id=index["facility_id"].astype("str").to_numpy())


def partner_leakage(tables: dict[str, pd.DataFrame], agreement: Agreement, *, end=None,
                    episodes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Network leakage of each hospital partner, per review period of the agreement, up to ``end``.

    The hospital's index discharges (:func:`carequal.cohorts.index_stays`, as in :func:`patient_flows`) whose
    first post-acute stay started within a day (:func:`carequal.cohorts.post_acute_episodes`) are counted by
    :func:`carequal.cost.network_leakage`: ``n`` discharges to post-acute care, ``events`` of them to a
    provider outside the network.

    Notes
    -----
    The network is the agreement's post-acute partners, whatever the facilities table's ``is_partner`` says
    (``post_acute_episodes`` reads that column; another agreement over the same data has another network),
    and it is the same in every period: a discharge to a provider that joined later counts as in network
    before it joined too. Before the partnership the series thus shows how much of the hospital's post-acute
    care already went to the providers that joined, and the change at the start is a change of referrals,
    not of definition (with partner status on the admission date, every discharge before the start would
    leak by construction).

    ``episodes`` are the index stays' post-acute episodes (:func:`carequal.measured.episodes_of` of the measured
    cohort's CMS rows); without them the cohort is built from ``tables``.

    Returns
    -------
    DataFrame
        One row per hospital partner × review period from the first period with an index discharge of any
        hospital partner to the period of ``end`` (``n = 0`` kept): ``facility_id``, ``period``,
        ``period_end``, ``n``, ``events``. Patient-derived counts, not suppressed: for :func:`leakage_table`.
    """
    fac = tables["facilities"]
    partners = partner_table(agreement, fac)
    hospitals = partners.loc[partners["setting"] == "acute", "facility_id"].tolist()
    network = set(partners.loc[partners["setting"].isin(POST_ACUTE), "facility_id"])
    columns = ["facility_id", "period", "period_end", "n", "events"]
    empty = pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c.startswith("period") else
                                       "int64" if c in ("n", "events") else "str") for c in columns})
    if not hospitals:
        return empty
    if episodes is None:
        episodes = _index_episodes(tables)
    episodes = episodes[episodes["hospital_id"].astype("str").isin(hospitals).to_numpy()]
    if end is not None:
        episodes = episodes[(pd.to_datetime(episodes["hospital_discharge_date"]) <= pd.Timestamp(end)).to_numpy()]
    if episodes.empty:
        return empty
    episodes = episodes.assign(hospital_id=episodes["hospital_id"].astype("str"))
    episodes["pac_is_partner"] = episodes["pac_facility_id"].astype("string").isin(network).fillna(False)
    leak = network_leakage(episodes, by=["hospital_id"], freq=agreement.review_period, chart=False)
    code = {"month": "M", "quarter": "Q"}[agreement.review_period]
    last = pd.Timestamp(end).to_period(code).start_time if end is not None else leak["period"].max()
    grid = pd.DataFrame({"period": pd.period_range(leak["period"].min(), last, freq=code).start_time})
    grid = pd.DataFrame({"facility_id": hospitals}).merge(grid, how="cross")
    out = grid.merge(leak.rename(columns={"hospital_id": "facility_id"})[["facility_id", "period", "n", "events"]],
                     on=["facility_id", "period"], how="left")
    out[["n", "events"]] = out[["n", "events"]].fillna(0).astype("int64")
    out["period_end"] = (out["period"].dt.to_period(code).dt.end_time.dt.normalize()).to_numpy()
    return out[columns]


def readmitted_patients(cases: pd.DataFrame, tables: dict[str, pd.DataFrame], *, partner: str, metric: str,
                        period) -> pd.DataFrame:
    """The care-coordination list: the partner's **own** patients who were readmitted, minimum columns.

    Only for explicit requests (``carequal report --by partner --patient-lists DIR``); never shown in a report.

    Parameters
    ----------
    cases : DataFrame
        :func:`carequal.agreement.agreement_cases` output.
    partner : str
        The partner's facility id: only cases it answers for are listed.
    metric : str
        A readmission metric of the agreement (its window and planned-readmission rule decide who is listed).

    Returns
    -------
    DataFrame
        ``patient_id``, ``index_stay_id``, ``hospital_id``, ``admit_date``, ``discharge_date`` (the hospital
        stay), ``post_acute_facility_id``, ``post_acute_admit_date``, ``post_acute_discharge_date`` (when the
        partner is a post-acute provider), ``readmission_date``, ``readmission_facility_id``.
    """
    lo, hi = (pd.Timestamp(x) for x in period)
    mine = cases[(cases["metric"] == metric) & (cases["unit_id"] == partner) & (cases["value"] > 0.5)]
    mine = mine[(pd.to_datetime(mine["discharge_date"]) >= lo) & (pd.to_datetime(mine["discharge_date"]) <= hi)]
    stays = tables["stays"].set_index("stay_id")
    index = stays.loc[mine["stay_id"]].reset_index()
    acute = set(tables["facilities"].loc[tables["facilities"]["setting"] == "acute", "facility_id"])
    after = tables["stays"][tables["stays"]["facility_id"].isin(acute)
                            & tables["stays"]["patient_id"].isin(mine["patient_id"])]
    pairs = index[["stay_id", "patient_id", "discharge_date"]].merge(
        after[["patient_id", "admit_date", "facility_id"]].rename(columns={"facility_id": "readmit_facility"}),
        on="patient_id")
    pairs = pairs[pairs["admit_date"] >= pairs["discharge_date"]].sort_values(["stay_id", "admit_date"])
    first = pairs.drop_duplicates("stay_id").set_index("stay_id")
    ep = post_acute_episodes(tables["stays"], tables["facilities"], hospital_stays=index).set_index("stay_id")
    out = pd.DataFrame({"patient_id": index["patient_id"].to_numpy(), "index_stay_id": index["stay_id"].to_numpy(),
                        "hospital_id": index["facility_id"].to_numpy(), "admit_date": index["admit_date"].to_numpy(),
                        "discharge_date": index["discharge_date"].to_numpy()})
    if (mine["role"] == "post_acute").any():
        out["post_acute_facility_id"] = ep["pac_facility_id"].reindex(out["index_stay_id"]).to_numpy()
        out["post_acute_admit_date"] = ep["pac_admit_date"].reindex(out["index_stay_id"]).to_numpy()
        out["post_acute_discharge_date"] = ep["pac_discharge_date"].reindex(out["index_stay_id"]).to_numpy()
    out["readmission_date"] = first["admit_date"].reindex(out["index_stay_id"]).to_numpy()
    out["readmission_facility_id"] = first["readmit_facility"].reindex(out["index_stay_id"]).to_numpy()
    return out.sort_values(["discharge_date", "patient_id"], ignore_index=True)


def packet_inputs(tables: dict[str, pd.DataFrame], agreement: Agreement, *, period_start, period_end,
                  cohort: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Everything the packets need, computed once from every market's tables: ``results``
    (:func:`carequal.agreement.evaluate_agreement` over the data up to ``period_end``, in three views,
    column ``view``:
    ``review`` — the agreement's review periods; ``year`` — calendar years, for trends of partners too small
    to show by review period; ``reporting`` — the reporting period and the one of the same length before it),
    ``flows``
    (:func:`patient_flows` in the reporting period), ``leakage`` (:func:`partner_leakage` up to the end of the
    reporting period), ``partners`` and ``cases`` (patient level: for
    :func:`readmitted_patients`; never passed to a packet).

    Spending metrics' rows carry ``counted_through``: the last index discharge date whose episode is counted
    (later ones await complete follow-up, :data:`carequal.agreement.SPENDING_ROOM_DAYS`), for the packet's
    notes.

    ``cohort`` is the measured cohort's rows (:func:`carequal.national.read_cohort`: the batch passes the one
    :func:`carequal.inputs.prepare` built, whose national models' expected values judge the risk-adjusted
    metrics); without it the cohort is built here, once. The three views are one evaluation (one set of cases,
    one set of models: nothing is refitted or reselected per view)."""
    if cohort is None:
        cohort = measure_cohort(tables).rows
    cases = agreement_cases(tables, agreement, cohort=cohort)
    lo, hi = pd.Timestamp(period_start), pd.Timestamp(period_end)
    results = evaluate_agreement(agreement, tables, cases=cases, end=hi, views={
        "review": {}, "year": {"review_period": "year"}, "reporting": {"periods": [previous_period(lo, hi), (lo, hi)]}})
    counted = cases[cases["excluded"].isna() & (pd.to_datetime(cases["discharge_date"]) <= hi)]
    through = pd.to_datetime(counted["discharge_date"]).groupby(counted["metric"]).max()
    spending = [m.id for m in agreement.metrics if m.measure == "episode_spending"]
    results["counted_through"] = results["metric"].map(through.reindex(spending)).astype("datetime64[ns]")
    episodes = episodes_of(cohort[cohort["cms"].to_numpy(dtype=bool)])
    flows = patient_flows(tables, agreement, period=(period_start, period_end), episodes=episodes)
    leakage = partner_leakage(tables, agreement, end=hi, episodes=episodes)
    return {"results": results, "flows": flows, "leakage": leakage,
            "partners": partner_table(agreement, tables["facilities"]), "cases": cases}


def write_packet_inputs(inputs: dict[str, pd.DataFrame], folder: str | Path, agreement: Agreement,
                        facilities: pd.DataFrame) -> Path:
    """Write :func:`packet_inputs` (without ``cases``) to ``folder``: ``results.parquet``, ``flows.parquet``,
    ``leakage.parquet``, ``partners.parquet``, ``facilities.parquet`` (names, for the labels) and
    ``agreement.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("results", "flows", "leakage", "partners"):
        if name in inputs:
            inputs[name].to_parquet(folder / f"{name}.parquet", index=False)
    facilities[["facility_id", "name", "setting", "market"]].to_parquet(folder / "facilities.parquet", index=False)
    (folder / "agreement.json").write_text(agreement.model_dump_json(indent=2))
    return folder


# ------------------------------------------------------------------------------------------- one packet


@dataclass
class PartnerPacket:
    """One partner's packet inputs (aggregates only) and settings."""

    agreement: Agreement
    partner: pd.Series
    results: pd.DataFrame
    flows: pd.DataFrame
    facilities: pd.DataFrame
    period: tuple[pd.Timestamp, pd.Timestamp]
    min_cell: int
    leakage: pd.DataFrame | None = None  # hospital partners: :func:`partner_leakage` rows
    _trends: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """:func:`metric_trend`'s results by metric, each with the inputs it was computed from (the glance, the
    trends and the record all draw on them; a field replaced since is noticed)."""
    _views: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """:func:`_suppressed_view`'s results by view, each with the results and ``min_cell`` it was computed from."""


def load_partner_packet(inputs: str | Path, partner: str, *, period_start: str, period_end: str,
                        min_cell: int = 11) -> PartnerPacket:
    """Read one partner's rows of the packet inputs written by :func:`write_packet_inputs`."""
    cell_threshold(min_cell)
    folder = Path(inputs)
    if not (folder / "agreement.json").is_file():
        raise ParameterError(f"{folder} holds no packet inputs (agreement.json is missing); run "
                             "`carequal report --by partner` or carequal.packet.write_packet_inputs first")
    agreement = Agreement.model_validate_json((folder / "agreement.json").read_text())
    partners = pd.read_parquet(folder / "partners.parquet")
    if partner not in set(partners["facility_id"]):
        raise ParameterError(f"{partner!r} is not a partner of {agreement.name!r}; partners: "
                             + ", ".join(partners["facility_id"]))
    filt = [("facility_id", "==", partner)]
    results = pd.read_parquet(folder / "results.parquet", filters=filt)
    flows = pd.read_parquet(folder / "flows.parquet", filters=filt)
    leakage = pd.read_parquet(folder / "leakage.parquet", filters=filt) if (folder / "leakage.parquet").is_file() \
        else None
    return PartnerPacket(agreement=agreement, partner=partners.set_index("facility_id").loc[partner].rename(partner),
                         results=results, flows=flows, facilities=pd.read_parquet(folder / "facilities.parquet"),
                         period=(pd.Timestamp(period_start), pd.Timestamp(period_end)), min_cell=int(min_cell),
                         leakage=leakage)


def packet_title(packet: PartnerPacket) -> str:
    """The packet's heading (Markdown)."""
    p = packet.partner
    lo, hi = packet.period
    start = "" if pd.isna(p["start"]) else f" · partner since {pd.Timestamp(p['start']):%d %B %Y}"
    return (f"# {p['name']}\n\n**{packet.agreement.name}: partner packet** · {SETTING_LABELS[p['setting']]} in "
            f"{p['market']}{start} · {lo:%d %B %Y} to {hi:%d %B %Y}, reviewed by {packet.agreement.review_period}"
            f"\n\n**Privacy:** {suppression_statement(packet.min_cell)} {HIDDEN_IN_TABLES}")


def _view(packet: PartnerPacket, view: str) -> pd.DataFrame:
    r = packet.results
    return r[r["view"] == view] if "view" in r.columns else r


def _in_period(packet: PartnerPacket, view: str = "review", rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The review periods (or years) that overlap the reporting period: of ``rows`` (default the view's
    results). Small counts must be hidden *before* this filter (``rows=_suppressed_view(...)``): whether a
    period's change can be shown depends on the period before it, which may lie outside the reporting period."""
    lo, hi = packet.period
    freq = packet.agreement.review_period if view == "review" else "year"
    first = pd.Timestamp(lo).to_period({"month": "M", "quarter": "Q", "year": "Y"}[freq]).start_time
    r = _view(packet, view) if rows is None else rows
    return r[(r["period"] >= first) & (r["period"] <= hi)]


def _suppressed(results: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """Results with small counts hidden: the partner's n/events (and its value, interval, change) and the
    benchmark's (and the target derived from it). A previous period's hidden value hides the change too.

    Rows come back in the order of their index labels (as ``results`` when its index is sorted). A column is
    blanked only when some row needs it: on these small tables pandas' per-call overhead, not the data, is the
    cost."""
    lo, hi = cell_threshold(min_cell)
    events = results["events"].astype(float)
    counts = pd.DataFrame({"n": results["n"].astype(float).to_numpy(), "events": events.fillna(0).to_numpy(),
                           "key": np.arange(len(results))}, index=results.index)
    safe = suppress_counts(counts, count_cols=["n", "events"], group_cols="key", threshold=(lo, hi))
    hidden = safe["suppressed"].to_numpy(bool)
    b_n = results["benchmark_n"].to_numpy(float)
    b_e = results["benchmark_events"].fillna(0).to_numpy(float)
    b_hidden = ((b_n >= lo) & (b_n <= hi)) | ((b_e >= lo) & (b_e <= hi)) | ((b_n - b_e >= lo) & (b_n - b_e <= hi)
                                                                             & results["benchmark_events"].notna())
    out = results.drop(columns=["benchmark_n", "benchmark_events"]).assign(
        n=safe["n"].astype("Float64"), events=np.where(events.isna(), np.nan, safe["events"]))
    if hidden.any():
        _blank(out, hidden, ["value", "lower", "upper", "ratio", "expected"])
    if b_hidden.any():
        _blank(out, b_hidden, ["benchmark"])
        _blank(out, b_hidden & results["target_basis"].str.startswith("market"), ["target"])
    out["suppressed"] = hidden
    out["benchmark_suppressed"] = b_hidden
    # "too few cases (7, fewer than 25)" would quote a hidden count
    few = out["n"].isna().to_numpy() & out["status_reason"].astype("string").str.startswith(
        "too few cases").fillna(False).to_numpy()
    if few.any():
        out.loc[few, "status_reason"] = "too few cases to share"
    # the change needs this and the previous period's value, both shown: the previous period is the row before
    # in (metric, period) order
    keys = pd.DataFrame({"metric": results["metric"].to_numpy(), "period": results["period"].to_numpy(),
                         "suppressed": hidden}).sort_values(["metric", "period"])
    prev_hidden = keys.groupby("metric")["suppressed"].shift(1).fillna(False).astype(bool)
    clear = np.zeros(len(out), dtype=bool)
    clear[keys.index.to_numpy()] = (keys["suppressed"] | prev_hidden).to_numpy()
    if clear.any():
        _blank(out, clear, ["change", "previous_value"])
    return out if out.index.is_monotonic_increasing else out.sort_index()


def _blank(frame: pd.DataFrame, rows, columns: list[str]) -> None:
    """Set ``columns`` of ``frame`` missing in ``rows`` (a boolean array or Series), in place."""
    for c in columns:
        frame.loc[rows, c] = np.nan


def _suppressed_view(packet: PartnerPacket, view: str) -> pd.DataFrame:
    """:func:`_suppressed` of the packet's ``view`` rows, computed once per packet and view while its results and
    ``min_cell`` stay the same (the status table, the changes and every metric's trend draw on it). Callers
    select rows from it and never change it."""
    cached = packet._views.get(view)
    if cached is None or cached[0] is not packet.results or cached[1] != packet.min_cell:
        cached = packet._views[view] = (packet.results, packet.min_cell,
                                        _suppressed(_view(packet, view), packet.min_cell))
    return cached[2]


def status_table(packet: PartnerPacket, *, period: pd.Timestamp | None = None) -> pd.DataFrame:
    """The agreed metrics over the reporting period as a whole (the change is from the period of the same
    length before it), or in one review period starting at ``period``; suppressed.

    Returns
    -------
    DataFrame
        ``metric_label``, ``n``, ``events``, ``value``, ``lower``, ``upper``, ``target``, ``target_basis``,
        ``benchmark``, ``status``, ``status_reason``, ``change``, ``better``, ``measure``, ``suppressed``.
    """
    if period is None:  # the reporting period as a whole, with the change from the one before it
        r = _suppressed_view(packet, "reporting")
        r = r[r["period"] == packet.period[0]]
    else:
        r = _in_period(packet, "review", _suppressed_view(packet, "review"))
        r = r[r["period"] == pd.Timestamp(period)]
    if r.empty:
        return r
    order = {m.id: i for i, m in enumerate(packet.agreement.metrics)}
    r = r.assign(order=r["metric"].map(order)).sort_values("order").drop(columns="order")
    return r.reset_index(drop=True)


def _fmt_value(value: float, measure: str, *, change: bool = False) -> str:
    """A metric's value in its unit (``change``: signed, rates in percentage points)."""
    if pd.isna(value):
        return ""
    sign = "+" if change else ""
    if measure == "volume":
        return f"{value:{sign},.0f}"
    if measure == "length_of_stay":
        return f"{value:{sign}.1f} days"
    if measure == "episode_spending":
        return f"{('+' if value >= 0 else '-') if change else ''}${abs(value) if change else value:,.0f}"
    return f"{100 * value:{sign}.1f} pts" if change else f"{100 * value:.1f}%"


def _why_not_computed(reason: str, metric: str) -> str:
    """The reason of a metric not computed, without the status and the metric id it repeats."""
    return str(reason).removeprefix(f"{NOT_COMPUTED}: ").removeprefix(f"{metric}: ")


def status_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`status_table` as text for the packet (a metric that could not be computed reads "not computed",
    with the reason under "Why")."""
    rows = []
    for r in table.itertuples(index=False):
        hidden = bool(r.suppressed)
        value = NOT_COMPUTED if r.status == NOT_COMPUTED else "suppressed" if hidden else _fmt_value(r.value,
                                                                                                     r.measure)
        interval = "" if hidden or r.measure == "volume" or pd.isna(r.lower) else \
            f"{_fmt_value(r.lower, r.measure)}–{_fmt_value(r.upper, r.measure)}"
        target = _target_text(r)
        bench = "–" if r.measure == "volume" else ("suppressed" if r.benchmark_suppressed
                                                   else _fmt_value(r.benchmark, r.measure) or "–")
        change = _fmt_value(r.change, r.measure, change=True)
        n = "suppressed" if pd.isna(r.n) else f"{int(r.n):,d}"
        rows.append({"Metric": r.metric_label, "Cases": n, "Value": value, "95% interval": interval,
                     "Target": target, "Target basis": r.target_basis, "Market non-partners": bench,
                     "Status": r.status, "Why": r.status_reason, "Change since last period": change})
    return pd.DataFrame(rows)


def status_grid(packet: PartnerPacket) -> pd.DataFrame:
    """Status of every agreed metric in every review period of the reporting period (rows: metrics;
    columns: periods), for a quick read of how the partnership is going."""
    r = _in_period(packet)
    if r.empty:
        return pd.DataFrame()
    fmt = "%Y-%m" if packet.agreement.review_period == "month" else None
    label = r["period"].dt.strftime(fmt) if fmt else (r["period"].dt.year.astype(str) + " Q"
                                                      + r["period"].dt.quarter.astype(str))
    short = r["status"].map({"met": "met", "not met": "not met", "not yet judgeable": "–",
                             NOT_COMPUTED: NOT_COMPUTED})
    grid = pd.DataFrame({"Metric": r["metric_label"], "period": label, "status": short}).pivot(
        index="Metric", columns="period", values="status")
    order = [m.title for m in packet.agreement.metrics if m.title in grid.index]
    return grid.loc[order].reset_index().rename_axis(columns=None)


def status_findings(table: pd.DataFrame, packet: PartnerPacket) -> list[str]:
    """Plain-language sentences on the latest period's statuses (never quoting a hidden value)."""
    if table.empty:
        return ["No agreed metric applies to this partner in the reporting period."]
    p = packet.partner
    lo, hi = packet.period
    when = f"the reporting period ({lo:%d %b %Y} to {hi:%d %b %Y})"
    counts = table["status"].value_counts()
    out = [f"In {when}, {p['name']} met {counts.get('met', 0)} of its {len(table)} agreed targets and missed "
           f"{counts.get('not met', 0)}; {counts.get('not yet judgeable', 0)} cannot be judged yet (too few cases, "
           "or the interval includes the target)"
           + (f"; {counts.get(NOT_COMPUTED)} could not be computed." if counts.get(NOT_COMPUTED, 0) else ".")]
    for r in table.itertuples(index=False):
        if r.status == NOT_COMPUTED:
            out.append(f"{r.metric_label} could not be computed: {_why_not_computed(r.status_reason, r.metric)}.")
        if r.status == "not met" and not r.suppressed:
            target = f"its target ({r.target_basis})" if pd.isna(r.target) else \
                f"a target of {'at most' if r.better == 'lower' else 'at least'} " \
                f"{_fmt_value(r.target, r.measure)} ({r.target_basis})"
            out.append(f"{r.metric_label}: {_fmt_value(r.value, r.measure)} against {target}.")
        if r.status == "met" and not r.suppressed and r.measure != "volume":
            target = f"its target ({r.target_basis})" if pd.isna(r.target) else \
                f"the target of {_fmt_value(r.target, r.measure)}"
            out.append(f"{r.metric_label}: {_fmt_value(r.value, r.measure)}, better than {target} beyond "
                       "statistical doubt.")
    return out


def metric_trend(packet: PartnerPacket, metric: str) -> pd.DataFrame:
    """One metric over every review period up to the end of the reporting period, suppressed, with an SPC
    signal for crude rates (p-chart over the shown periods: :func:`carequal.compare.p_chart`). When more than
    a third of the review periods would be hidden or empty (a small partner), calendar years are shown
    instead; ``attrs["freq"]`` says which.

    Returns ``period``, ``value``, ``lower``, ``upper``, ``target``, ``benchmark``, ``phase``, ``signal``,
    and for crude rates the p-chart columns (``centre``, limits). A metric that could not be computed in any
    period has ``attrs["not_computed"]``: the sentence to show instead of a chart.

    Computed once per packet and metric (a copy is returned), while the packet's fields stay the same.
    """
    objects, values = (packet.results, packet.agreement, packet.partner), (packet.min_cell, packet.period)
    cached = packet._trends.get(metric)
    if cached is None or any(a is not b for a, b in zip(cached[0], objects, strict=True)) or cached[1] != values:
        cached = packet._trends[metric] = (objects, values, _metric_trend(packet, metric))
    return cached[2].copy()


def _metric_trend(packet: PartnerPacket, metric: str) -> pd.DataFrame:
    m = packet.agreement.metric(metric)
    freq = packet.agreement.review_period
    for view in ("review", "year"):
        # the view's rows suppressed once for every metric: a row's suppression depends only on its own counts
        # and on the metric's previous period, both kept by selecting the metric's periods up to the end
        r = _suppressed_view(packet, view)
        safe = r[(r["metric"] == metric) & (r["period"] <= packet.period[1])].sort_values("period", ignore_index=True)
        hidden = safe["suppressed"] | (safe["n"].fillna(0) == 0)
        if not len(safe) or hidden.mean() <= 1 / 3:
            break
        freq = "year"
    safe["signal"] = ""
    crude_rate = m.spec.kind == "rate" and not m.risk_adjusted
    shown = safe[~safe["suppressed"] & (safe["n"].fillna(0) > 0)]
    if crude_rate and len(shown) >= 3:
        chart = p_chart(shown.assign(n=shown["n"].astype(int), events=shown["events"].astype(int)),
                        improvement=m.better)
        cols = ["centre", "lower_3sigma", "upper_3sigma", "signal"]
        safe = safe.drop(columns="signal").merge(chart[["period", *cols]], on="period", how="left")
        safe["signal"] = safe["signal"].fillna("")
    safe.attrs.update(label=m.title, measure=m.measure, better=m.better, start=packet.partner["start"], freq=freq)
    if len(safe) and (safe["status"] == NOT_COMPUTED).all():  # nothing to chart: say why instead
        safe.attrs["not_computed"] = f"{m.title} could not be computed: " \
            f"{_why_not_computed(safe['status_reason'].iloc[-1], metric)}."
    return safe


def trend_findings(trend: pd.DataFrame) -> list[str]:
    """Sentences on SPC signals in a :func:`metric_trend`."""
    label = trend.attrs.get("label", "the metric")
    out = []
    for kind, words in (("improvement", "improvement"), ("concern", "concern")):
        hit = trend["period"][(trend["signal"] == kind).to_numpy()]  # the periods only: the rows are wide
        if len(hit):
            freq = trend.attrs.get("freq", "quarter")
            periods = ", ".join(str(p.year) if freq == "year" else f"{p.year} Q{p.quarter}" if freq == "quarter"
                                else f"{p:%b %Y}" for p in hit)
            out.append(f"{label}: a special-cause signal of {words} in {periods}.")
    return out


def value_axis(ax, metric) -> None:
    """Label the vertical axis of a metric's trend by its unit; dollars with a "$" and thousands separators."""
    # matplotlib only when a chart is drawn (this is not the plotting module)
    from matplotlib.ticker import StrMethodFormatter

    if metric.spec.unit == "dollars":
        ax.yaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
        ax.set_ylabel("Dollars per episode")
    else:
        ax.set_ylabel(metric.spec.unit.capitalize())


def spending_notes(packet: PartnerPacket) -> list[str]:
    """What the spending metrics count in the reporting period: the last discharge whose episode is complete
    (later ones wait for their window and :data:`carequal.agreement.SPENDING_ROOM_DAYS` more), and the
    episodes left out for a missing payment. No count is quoted."""
    r = _view(packet, "reporting")
    out = []
    for m in packet.agreement.metrics:
        if m.measure != "episode_spending" or packet.partner["setting"] not in m.spec.settings:
            continue
        rows = r[r["metric"] == m.id]
        if len(rows) and (rows["status"] == NOT_COMPUTED).all():  # the status table says why
            continue
        through = rows["counted_through"].max() if "counted_through" in rows.columns and len(rows) else pd.NaT
        if pd.notna(through) and pd.Timestamp(through) < packet.period[1]:
            day = pd.Timestamp(through)
            out.append(f"{m.title} counts episodes discharged up to {day.day} {day:%B %Y}: an episode "
                       f"is counted once its {m.window} days and {SPENDING_ROOM_DAYS} more (for post-acute stays "
                       "still running) are in the data. Episodes with a stay that has no payment are left out.")
    return out


# ------------------------------------------------------------------------------------------ network leakage

_LEAK_COLUMNS = ["label", "group", "row_type", "period", "period_end", "phase", "n", "events", "rate", "lower",
                 "upper", "level", "method", "suppressed", "suppression_reason"]


def _period_label(period: pd.Timestamp, freq: str) -> str:
    return f"{period:%b %Y}" if freq == "month" else f"{period.year} Q{period.quarter}"


def leakage_table(packet: PartnerPacket, *, level: float = 0.95) -> pd.DataFrame:
    """A hospital partner's network leakage per review period up to the end of the reporting period, with two
    totals, suppressed: before the partnership (the periods that ended before its start) and the reporting
    period (the review periods that overlap it).

    Returns
    -------
    DataFrame
        ``label`` ("2024 Q1", or the total's name), ``group`` ("before the partnership", "reporting period",
        or the period itself for the periods between, which no displayed total adds up), ``row_type``
        ("period" or "total"), ``period``, ``period_end`` (first and last day; of the total's first and last
        period), ``phase`` (before / starting / after the partner's start), ``n`` (discharges to post-acute
        care), ``events`` (of them, to providers outside the network), ``rate`` (the leakage), Wilson
        ``lower``/``upper``, ``level``, ``method``, ``suppressed``, ``suppression_reason``. Counts 1 to
        ``min_cell − 1`` are hidden with complementary cells within each total's periods
        (:func:`carequal.disclosure.suppress_counts`), and the rate and interval with them. Empty for a
        post-acute partner.

    Examples
    --------
    >>> from carequal.agreement import read_agreement
    >>> ag = read_agreement(text='name = "x"\\n[[partners]]\\nfacility_id = "H"\\n[[metrics]]\\nid = "v"\\n'
    ...                          'measure = "volume"\\ntarget = { kind = "absolute", value = 1 }')
    >>> q = pd.to_datetime(["2023-10-01", "2024-01-01", "2024-04-01"])
    >>> leak = pd.DataFrame({"facility_id": "H", "period": q, "period_end": q + pd.offsets.QuarterEnd(0),
    ...                      "n": [40, 30, 25], "events": [20, 5, 12]})
    >>> pp = PartnerPacket(ag, pd.Series({"name": "H", "setting": "acute", "market": "M",
    ...     "start": pd.Timestamp("2024-01-01")}), pd.DataFrame(), pd.DataFrame(), pd.DataFrame(),
    ...     (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-06-30")), 11, leak)
    >>> leakage_table(pp)[["label", "n", "events", "rate"]].round(3)
                                       label   n  events   rate
    0                                2023 Q4  40      20  0.500
    1       Before the partnership (2023 Q4)  40      20  0.500
    2                                2024 Q1  30    <NA>    NaN
    3                                2024 Q2  25    <NA>    NaN
    4  Reporting period (2024 Q1 to 2024 Q2)  55      17  0.309

    5 discharges to non-partners in 2024 Q1 are hidden, and 12 in Q2 with them: the total of 17 would give
    the 5 away.
    """
    lk = packet.leakage
    if lk is None or lk.empty or packet.partner["setting"] != "acute":
        return pd.DataFrame(columns=_LEAK_COLUMNS)
    lo, hi = packet.period
    freq = packet.agreement.review_period
    rows = lk[lk["period"] <= hi].sort_values("period", ignore_index=True)
    start = pd.Timestamp(packet.partner["start"])
    first = pd.Timestamp(lo).to_period({"month": "M", "quarter": "Q"}[freq]).start_time
    rows["phase"] = np.where(rows["period_end"] < start, "before", np.where(rows["period"] >= start, "after",
                                                                            "starting"))
    rows["group"] = np.where(rows["period"] >= first, "reporting period",
                             np.where(rows["phase"] == "before", "before the partnership",
                                      rows["period"].dt.strftime("%Y-%m-%d")))
    rows["label"] = [_period_label(p, freq) for p in rows["period"]]
    rows["row_type"] = "period"
    rows["order"] = np.arange(len(rows), dtype=float)
    parts = [rows]
    for name, title in (("before the partnership", "Before the partnership"), ("reporting period", "Reporting period")):
        g = rows[rows["group"] == name]
        if g.empty:
            continue
        span = g["label"].iloc[0] if len(g) == 1 else f"{g['label'].iloc[0]} to {g['label'].iloc[-1]}"
        parts.append(pd.DataFrame({"label": [f"{title} ({span})"], "group": name, "row_type": "total",
                                   "period": g["period"].min(), "period_end": g["period_end"].max(),
                                   "phase": g["phase"].iloc[0] if g["phase"].nunique() == 1 else "",
                                   "n": g["n"].sum(), "events": g["events"].sum(),
                                   "order": g["order"].max() + 0.5}))  # right after its last period
    table = pd.concat(parts, ignore_index=True).sort_values("order", ignore_index=True)
    table = table[["label", "group", "row_type", "period", "period_end", "phase", "n", "events"]]
    n, events = table["n"].to_numpy(float), table["events"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["rate"] = np.where(n > 0, events / n, np.nan)
    table["lower"], table["upper"] = wilson(events, n, level=level)
    table["level"], table["method"] = level, "Wilson"
    safe = suppress_counts(table, count_cols=["n", "events"], group_cols="group",
                           total_rows=table["row_type"] == "total", threshold=cell_threshold(packet.min_cell))
    return safe[_LEAK_COLUMNS]


def leakage_trend(table: pd.DataFrame, *, baseline_min: int = 4) -> pd.DataFrame:
    """The periods of a :func:`leakage_table` with a p-chart (:func:`carequal.compare.p_chart`, lower leakage
    is the improvement) over the shown periods: the centre line and limits come from the periods before the
    partnership when at least ``baseline_min`` of them are shown, else from every shown period
    (``attrs["baseline"]`` says which). Hidden periods stay, with no rate, limits or signal."""
    rows = table[table["row_type"] == "period"].reset_index(drop=True)
    chart_cols = ["centre", "lower_2sigma", "upper_2sigma", "lower_3sigma", "upper_3sigma", "signal"]
    shown = rows[~rows["suppressed"].astype(bool) & (rows["n"].fillna(0) > 0)]
    before = int((shown["phase"] == "before").sum())
    baseline = before if before >= baseline_min else None
    if len(shown) >= 3:
        chart = p_chart(shown.assign(n=shown["n"].astype(int), events=shown["events"].astype(int)),
                        baseline=baseline, improvement="lower")
        rows = rows.merge(chart[["period", *chart_cols, "chart"]], on="period", how="left")
    else:
        rows = rows.assign(**{c: np.nan for c in chart_cols}, chart="p-chart")
        baseline = None
    rows["signal"] = rows["signal"].fillna("")
    rows.attrs["baseline"] = "before the partnership" if baseline else "all periods shown"
    return rows


def leakage_findings(table: pd.DataFrame, trend: pd.DataFrame, packet: PartnerPacket) -> list[str]:
    """One sentence on the reporting period's leakage against the share before the partnership, and one on
    the control chart's signals in the reporting period; never quoting a hidden value."""
    name = packet.partner["name"]
    totals = table[table["row_type"] == "total"].set_index("group")
    if "reporting period" not in totals.index:
        return [f"{name} had no index discharges in the reporting period."]
    now = totals.loc["reporting period"]
    if now["suppressed"] or pd.isna(now["rate"]):
        if pd.notna(now["n"]) and now["n"] == 0:
            return [f"{name} discharged no patients to post-acute care in the reporting period."]
        return [f"Too few of {name}'s discharges to post-acute care in the reporting period to share its "
                "network leakage."]
    text = (f"In the reporting period, {fmt_pct(now['rate'])} (95% interval {fmt_ci(now['lower'], now['upper'])}) "
            f"of {name}'s {int(now['n']):,d} discharges to post-acute care went to providers outside the "
            "partnership")
    if "before the partnership" in totals.index and not totals.loc["before the partnership", "suppressed"] \
            and pd.notna(totals.loc["before the partnership", "rate"]):
        before = totals.loc["before the partnership"]
        span = before["label"][before["label"].index("("):]
        text += f", against {fmt_pct(before['rate'])} before the partnership started {span}."
    else:
        text += "."
    out = [text]
    freq = packet.agreement.review_period
    recent = trend[(trend["group"] == "reporting period")]
    for kind in ("improvement", "concern"):
        hit = recent[recent["signal"] == kind]
        if len(hit):
            against = "the share before the partnership" if trend.attrs.get("baseline") == "before the partnership" \
                else "its own average"
            out.append(f"The control chart signals {kind} against {against} in "
                       + ", ".join(_period_label(p, freq) for p in hit["period"]) + ".")
    return out


def leakage_display(table: pd.DataFrame, trend: pd.DataFrame) -> pd.DataFrame:
    """The packet's leakage table: the total before the partnership, each review period of the reporting
    period and its total, as text (counts under :data:`carequal.presentation.COUNT_LABELS` names)."""
    keep = table[(table["group"] == "before the partnership") & (table["row_type"] == "total")
                 | (table["group"] == "reporting period")]
    signal = trend.set_index("period")["signal"]
    keep = keep.assign(signal=[signal.get(p, "") if t == "period" else "" for p, t in
                               zip(keep["period"], keep["row_type"], strict=True)],
                       discharges=keep["n"])
    keep = with_interval_text(keep, percent=True)
    return presentable(keep, columns={"label": "Period", "discharges": None, "events": None,
                                      "rate": "Share to non-partners", "interval": "95% interval",
                                      "signal": "SPC signal"}, counts=("discharges", "events"), percent=("rate",))


def leakage_plot(trend: pd.DataFrame, packet: PartnerPacket, ax=None):
    """:func:`carequal.plots.spc_plot` of the leakage per period, with the partnership's start."""
    # matplotlib only when a chart is drawn (this is not the plotting module); the plots sit above the report content
    import matplotlib.pyplot as plt

    from carequal.plots import spc_plot

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.2))
    spc_plot(trend, value="rate", percent=True, ax=ax,
             title="Discharges to post-acute care going to non-partner providers",
             ylabel="Share to non-partners")
    start = packet.partner["start"]
    if pd.notna(start):  # the start's date in the legend, not written over the lines
        from carequal.plots import legend

        ax.axvline(pd.Timestamp(start), color="#555555", linewidth=1.2, linestyle=(0, (1, 3)),
                   label=f"Partnership starts ({pd.Timestamp(start):%-d %b %Y})")
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, ax.convert_xunits(pd.Timestamp(start)) - 20), hi)
        legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.carequal_alt = ax.carequal_alt.rstrip(".") + f"; partnership started {pd.Timestamp(start):%-d %B %Y}."
    ax.set_xlabel({"month": "Month", "quarter": "Quarter"}[packet.agreement.review_period])
    return ax


def flow_display(packet: PartnerPacket) -> dict[str, pd.DataFrame]:
    """"Came from" and "went next" tables of the partner, other facilities anonymised unless the agreement
    allows names, counts suppressed (complementary within each table, whose total is shown)."""
    names = packet.facilities.set_index("facility_id")
    out = {}
    for direction in ("came from", "went next"):
        f = packet.flows[packet.flows["direction"] == direction]
        if f.empty:
            continue
        has_other = f["other_id"].notna()
        if has_other.any():
            totals = f[has_other].groupby("other_id")["n"].sum().sort_values(ascending=False, kind="stable")
            labels = {}
            per_setting: dict[str, int] = {}
            for fid in totals.index:
                setting = names.at[fid, "setting"] if fid in names.index else "acute"
                k = per_setting.get(setting, 0)
                per_setting[setting] = k + 1
                labels[fid] = names.at[fid, "name"] if packet.agreement.show_facility_names and fid in names.index \
                    else f"{SETTING_LABELS.get(setting, setting)} {_letters(k)}"
            who = f["other_id"].map(labels)
            label = np.where(has_other, who, f["category"])
            if direction == "went next":
                label = np.where(has_other, f["category"] + ": " + who.fillna(""), f["category"])
        else:
            label = f["category"].to_numpy()
        table = pd.DataFrame({"label": label, "n": f["n"].to_numpy()}).groupby("label", sort=False)["n"].sum()
        table = table.sort_values(ascending=False, kind="stable").reset_index()
        total = pd.DataFrame({"label": ["All"], "n": [int(table["n"].sum())]})
        table = pd.concat([table, total], ignore_index=True)
        table["share"] = table["n"] / max(int(total["n"].iloc[0]), 1)
        safe = suppress_counts(table, count_cols="n", total_rows=table["label"] == "All",
                               threshold=cell_threshold(packet.min_cell), derived_cols="share", denominator=None)
        out[direction] = safe
    return out


def _letters(k: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    s = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        s = chr(65 + r) + s
    return s


def extract_tables(packet: PartnerPacket) -> dict[str, pd.DataFrame]:
    """The packet's aggregate extract: the status of every metric in every period, and the flows; every count
    already suppressed."""
    # hidden over each whole view, then cut to the reporting period: the first period's change is shown only
    # when the period before it (outside the reporting period) is shown too
    r = pd.concat([_in_period(packet, v, _suppressed_view(packet, v)).assign(view=v)
                   for v in ("reporting", "review")], ignore_index=True)
    r = r[(r["view"] == "review") | (r["period"] == packet.period[0])]
    r["view"] = r["view"].map({"reporting": "reporting period", "review": "review period"})
    metrics = r[["view", "metric", "metric_label", "period", "period_end", "phase", "n", "events", "value", "lower",
                 "upper", "target", "target_basis", "benchmark", "status", "status_reason", "change"]].copy()
    for c in ("n", "events"):  # whole numbers in the files (hidden ones empty)
        metrics[c] = metrics[c].astype("Float64").round().astype("Int64")
    metrics["period"] = metrics["period"].dt.date
    metrics["period_end"] = metrics["period_end"].dt.date
    lo, hi = packet.period
    about = pd.DataFrame({"item": ["Partner", "Agreement", "Reporting period", "Privacy"],
                          "value": [str(packet.partner["name"]), packet.agreement.name,
                                    f"{lo:%Y-%m-%d} to {hi:%Y-%m-%d}", suppression_statement(packet.min_cell)]})
    out = {"about": about, "metrics": metrics}
    for direction, table in flow_display(packet).items():
        out[direction.replace(" ", "_")] = table[["label", "n", "share", "suppressed"]]
    leak = leakage_table(packet)
    if len(leak):
        trend = leakage_trend(leak).set_index("period")["signal"]
        leak = leak.assign(signal=[trend.get(p, "") if t == "period" else "" for p, t in
                                   zip(leak["period"], leak["row_type"], strict=True)])
        leak = leak.rename(columns={"rate": "share"})
        leak["period"], leak["period_end"] = leak["period"].dt.date, leak["period_end"].dt.date
        out["leakage"] = leak[["label", "group", "row_type", "period", "period_end", "phase", "n", "events", "share",
                               "lower", "upper", "signal", "suppressed"]]
    return out


def write_extract(packet: PartnerPacket, folder: str | Path) -> list[Path]:
    """Write the extract: one CSV per table and one Excel workbook with a sheet per table, each checked by
    :func:`carequal.disclosure.check_suppressed` first (a failing table raises and nothing is written)."""
    tables = extract_tables(packet)
    threshold = cell_threshold(packet.min_cell)
    for table in tables.values():
        counts = [c for c in ("n", "events") if c in table.columns]
        if not counts:  # the "about" sheet: no counts
            continue
        # a table with totals (leakage) is checked against them too
        totals = {"group_cols": "group", "total_rows": table["row_type"] == "total"} if "row_type" in table else {}
        check_suppressed(table.assign(**{c: table[c].astype("Float64") for c in counts}), count_cols=counts,
                         threshold=threshold, denominator="n" if "events" in counts else None, **totals)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        path = folder / f"{name}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(path)
        written.append(path)
    book = folder / "extract.xlsx"
    tmp = book.with_name(".extract.xlsx.tmp")
    with pd.ExcelWriter(tmp, engine="openpyxl") as xl:
        for name, table in tables.items():
            table.to_excel(xl, sheet_name=name[:31], index=False)
    tmp.replace(book)
    written.append(book)
    return written


def change_verdicts(table: pd.DataFrame, packet: PartnerPacket) -> dict[str, str | None]:
    """For each metric of :func:`status_table` with a change shown, whether it changed for real since the period
    before: "better", "worse" (the change's 95% interval, :func:`carequal.intervals.difference_interval`,
    excludes 0), "no clear change", or None (a volume, or no interval)."""
    reporting = _suppressed_view(packet, "reporting")
    before = reporting[reporting["period"] < packet.period[0]].sort_values("period").groupby("metric").tail(1)
    before = before.set_index("metric")
    out = {}
    for r in table.itertuples(index=False):
        if pd.isna(r.change) or r.metric not in before.index:
            continue
        prev = before.loc[r.metric]
        lo, hi = difference_interval(r.value, r.lower, r.upper, prev["value"], prev["lower"], prev["upper"])
        lo, hi = float(lo), float(hi)
        if r.measure == "volume" or np.isnan(lo) or np.isnan(hi):
            out[r.metric] = None
        elif lo > 0 or hi < 0:
            out[r.metric] = "better" if (lo > 0) == (r.better == "higher") else "worse"
        else:
            out[r.metric] = "no clear change"
    return out


PACKET_SECTIONS = {"status": "Where the partnership stands", "trends": "Trends"}
"""The packet's section headings (``##`` in ``notebooks/partner_packet.py``) that "At a glance" links to."""


def _target_text(r) -> str:
    """A target as text: "≤ 15.0%", or for a market target whose value is hidden (the market's non-partners
    have small numbers) its definition, "≤ market non-partners −5%": a target is never "suppressed"."""
    sign = "≤" if r.better == "lower" else "≥"
    if pd.isna(r.target):
        return f"{sign} {r.target_basis}" if str(r.target_basis).startswith("market") else "–"
    return f"{sign} {_fmt_value(r.target, r.measure)}"


def packet_glance(table: pd.DataFrame, packet: PartnerPacket, *, at_most: int = 3) -> list[tuple[str, str]]:
    """Three or four plain-language sentences for the top of a partner packet, each with the heading of the
    section that holds the detail (:data:`PACKET_SECTIONS`): how many agreed targets were met and missed over
    the reporting period, which targets were missed (with the value against the target), which metrics changed
    for real since the period before (:func:`change_verdicts`), and any control-chart signal of concern. Only
    values the packet shows; a hidden value is never quoted."""
    section = PACKET_SECTIONS["status"]
    if table.empty:
        return [("No agreed metric applies to this partner in the reporting period.", section)]
    counts = table["status"].value_counts()
    met, missed, open_ = (int(counts.get(k, 0)) for k in ("met", "not met", "not yet judgeable"))
    first = f"Over the reporting period {packet.partner['name']} met {met} of its {len(table)} agreed targets " \
            f"and missed {missed or 'none'}"
    first += f"; {open_} cannot be judged yet (too few cases, or too close to the target to call)." if open_ else "."
    out = [(first, section)]
    for status, words in (("not met", "Targets missed"), ("met", "Targets met beyond doubt")):
        hits = table[table["status"] == status]
        if hits.empty:
            continue
        items = [f"{r.metric_label} ({_fmt_value(r.value, r.measure)} against a target of {_target_text(r)})"
                 if not r.suppressed else r.metric_label for r in hits.itertuples(index=False)]
        more = len(items) - at_most
        out.append((f"{words}: {'; '.join(items[:at_most])}{f'; and {more} more' if more > 0 else ''}.", section))
        break  # the missed targets when there are any, else the ones met
    changes = change_verdicts(table, packet)
    moved = [f"{r.metric_label} {'rose' if r.change > 0 else 'fell'} by "
             f"{_fmt_value(abs(r.change), r.measure, change=True).lstrip('+')} ({changes[r.metric]})"
             for r in table.itertuples(index=False) if changes.get(r.metric) in ("better", "worse")]
    out.append((f"Changed for real since the period before: {'; '.join(moved)}." if moved else
                "No agreed metric changed by more than chance since the period before.", section))
    concerns = []
    for metric in packet.agreement.metrics:
        if metric.id not in set(table["metric"]):
            continue
        trend = metric_trend(packet, metric.id)
        if "signal" in trend and ((trend["period"] >= packet.period[0]) & (trend["signal"] == "concern")).any():
            concerns.append(metric.title)
    if concerns:
        out.append((f"A signal of concern on the control chart in the reporting period: {'; '.join(concerns)}.",
                    PACKET_SECTIONS["trends"]))
    return out


def packet_record(table: pd.DataFrame, packet: PartnerPacket | None = None, *, recent: int = 8) -> dict:
    """The index's summary of a packet over the reporting period (``period``: its first day; ``period_end``):
    counts of each status and, with ``packet``, every agreed metric's status, value, interval and target as
    text, its change from the period before with the change's 95% interval (:func:`carequal.intervals.
    difference_interval`) and verdict ("better", "worse", "no clear change"), and its values in the last
    ``recent`` review periods for the trend line. Only values already suppressed; no count."""
    counts = table["status"].value_counts() if len(table) else pd.Series(dtype=int)
    record = {"period": None if table.empty else str(table["period"].iloc[0].date()),
              "period_end": None if packet is None else str(packet.period[1].date()),
              "met": int(counts.get("met", 0)), "not_met": int(counts.get("not met", 0)),
              "not_judgeable": int(counts.get("not yet judgeable", 0)),
              "not_computed": int(counts.get(NOT_COMPUTED, 0))}
    if packet is None:
        return record
    record["review_period"] = packet.agreement.review_period
    changes = change_verdicts(table, packet)
    metrics = []
    for r in table.itertuples(index=False):
        m = packet.agreement.metric(r.metric)
        item = {"id": r.metric, "label": r.metric_label, "status": r.status, "unit": m.spec.unit,
                "value": None if r.suppressed or r.status == NOT_COMPUTED else _fmt_value(r.value, r.measure),
                "interval": None if r.suppressed or r.measure == "volume" or pd.isna(r.lower) else
                f"{_fmt_value(r.lower, r.measure)}–{_fmt_value(r.upper, r.measure)}",
                "target": None if _target_text(r) == "–" else _target_text(r),
                "change": None, "change_text": None, "change_verdict": None}
        if r.metric in changes:
            item.update(change=float(r.change), change_text=_fmt_value(abs(r.change), r.measure,
                                                                        change=True).lstrip("+"),
                        change_verdict=changes[r.metric])
        trend = metric_trend(packet, r.metric)
        if len(trend) and not trend.attrs.get("not_computed"):
            trend = trend.tail(recent)
            freq = trend.attrs.get("freq", "quarter")
            item["by"] = "year" if freq == "year" else {"month": "month", "quarter": "quarter"}.get(freq, freq)
            item["recent"] = [{"label": str(p.year) if freq == "year" else _period_label(p, freq),
                               "value": None if hidden or pd.isna(v) else float(v)}
                              for p, v, hidden in zip(trend["period"], trend["value"], trend["suppressed"],
                                                      strict=True)]
        metrics.append(item)
    record["metrics"] = metrics
    return record


def write_record(record: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
