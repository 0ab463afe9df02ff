"""The index pages of an output folder, rendered from its manifest (:mod:`carequal.batch.state`).

Each page carries the manifest's revision in a ``<meta name="carequal-revision">`` tag, so a check can tell
that the index was rendered from the manifest beside it.
"""

from __future__ import annotations

from html import escape

from carequal.batch.dashboard import change_html, mark_html, sparkline_svg, status_mark_html
from carequal.disclosure import suppression_statement
from carequal.national import MEASURES

__all__ = ["render_index", "render_market_index", "render_partner_index", "render_sponsor_index"]


_INDEX_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 2em;
       color: #222; max-width: 1280px; }
h1 { font-weight: 600; margin-bottom: 0.2em; } p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin-top: 1em; width: 100%; font-size: 0.95em; }
th { text-align: left; border-bottom: 2px solid #444; padding: 6px 8px; vertical-align: bottom; }
td { text-align: left; padding: 8px; border-bottom: 1px solid #ddd; vertical-align: top;
     font-variant-numeric: tabular-nums; }
tr.group th { background: #f3f3f3; border-bottom: 1px solid #bbb; font-size: 0.95em; padding-top: 10px; }
td.failed, .status.failed { color: #b00020; font-weight: 600; } .status.ok { color: #1b5e20; }
.status.pending { color: #8a5a00; }
td.note { color: #555; font-size: 0.9em; }
.kpi { display: flex; flex-direction: column; gap: 2px; min-width: 11em; }
.oe { font-weight: 600; } .oe small, .muted { color: #555; font-weight: normal; }
.mark { font-weight: 600; white-space: nowrap; } .mark.worse { color: #b3460b; } .mark.better { color: #0b5cad; }
.mark.neutral { color: #444; } .mark.none { color: #777; font-weight: normal; }
.change { font-size: 0.88em; color: #444; } .change.worse { color: #b3460b; } .change.better { color: #0b5cad; }
.change.none { color: #777; }
svg.spark { color: #333; margin-top: 2px; } td.attention { font-weight: 600; }
ul.metrics { list-style: none; padding: 0; margin: 0; } ul.metrics li { margin-bottom: 6px; }
dl.key { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; font-size: 0.9em; color: #333; }
dl.key dt { font-weight: 600; }
a { color: #0b5cad; } p.foot { color: #666; font-size: 0.85em; margin-top: 2em; }
@media (max-width: 760px) {
  body { margin: 1em; }
  table, thead, tbody, tr, td, th { display: block; width: auto; }
  thead { display: none; }
  tr { border-bottom: 2px solid #444; padding: 6px 0; }
  tr.group { border: 0; }
  td { border: 0; padding: 4px 0; }
  td[data-label]::before { content: attr(data-label); display: block; font-size: 0.8em; color: #555;
                           font-weight: 600; }
  dl.key { grid-template-columns: 1fr; }
}
@media print { body { margin: 0; } tr { break-inside: avoid; } }
"""


def _since(manifest: dict) -> str:
    """The previous period's name: its year when it is a calendar year, else its dates."""
    from carequal.periods import previous_period, reporting_period

    start, end = reporting_period(manifest["parameters"]["period_start"], manifest["parameters"]["period_end"])
    lo, hi = previous_period(start, end)
    if lo.month == 1 and lo.day == 1 and hi.month == 12 and hi.day == 31 and lo.year == hi.year:
        return str(lo.year)
    return f"{lo:%d %b %Y}–{hi:%d %b %Y}"


def _period_text(manifest: dict) -> str:
    from carequal.periods import reporting_period

    start, end = reporting_period(manifest["parameters"]["period_start"], manifest["parameters"]["period_end"])
    return f"{start.day} {start:%B %Y} to {end.day} {end:%B %Y}"


def _measure_cell(kpis: dict, measure: str, since: str) -> str:
    k = (kpis or {}).get(measure)
    if not k:
        return "<td>–</td>"
    if k.get("rate") is None:
        return '<td><span class="mark none">too few cases to show (small numbers)</span></td>'
    improvement = k.get("improvement", "down")
    parts = [mark_html(k.get("verdict"), improvement)]
    if k.get("ratio") is not None:
        interval = (f' <small>(95% CI {k["ratio_lower"]:.2f}–{k["ratio_upper"]:.2f})</small>'
                    if k.get("ratio_lower") is not None else "")
        parts.append(f'<span class="oe">O/E {k["ratio"]:.2f}{interval}</span>')
    parts.append(f'<span class="muted">rate {100 * k["rate"]:.1f}%</span>')
    if "change" in k:
        parts.append(change_html(k.get("change"), k.get("change_verdict"), since=since))
    parts.append(sparkline_svg(k.get("recent") or [], label=k.get("label", measure)))
    return '<td><div class="kpi">' + "".join(parts) + "</div></td>"


def _worse(k: dict) -> bool:
    return k.get("verdict") == ("higher" if k.get("improvement", "down") == "down" else "lower")


def _attention(kpis: dict, measures: list[str]) -> tuple[int, int, str]:
    """(measures worse than expected, measures significantly worse since last period, text)."""
    worse = [m for m in measures if isinstance(kpis.get(m), dict) and _worse(kpis[m])]
    changed = [m for m in measures if isinstance(kpis.get(m), dict) and kpis[m].get("change_verdict") == "worse"]
    words = []
    if worse:
        words.append(f"▲ {len(worse)} of {len(measures)} measures worse than expected: "
                     + ", ".join(escape(kpis[m]["label"]) for m in worse))
    if changed:
        words.append(f"↑ {len(changed)} significantly worse since last period")
    return len(worse), len(changed), "; ".join(words) or "● nothing worse than expected"


def _fmt_rate(kpis: dict, measure: str) -> str:
    value = (kpis or {}).get(measure, {}).get("rate")
    return "–" if value is None else f"{100 * value:.1f}%"


def _fmt_ratio(kpis: dict, measure: str) -> str:
    value = (kpis or {}).get(measure, {}).get("ratio")
    return "–" if value is None else f"{value:.2f}"


_STATUS = {"ok": ("ok", "ready"), "failed": ("failed", "failed"), "pending": ("pending", "not yet produced")}


def _report_cell(record: dict, kind: str, links: str) -> str:
    """The batch status of a unit (ready / failed / not yet produced) and its links: kept apart from how the
    unit performs."""
    status = record.get("status")
    css, text = _STATUS.get(status, ("pending", "not yet produced"))
    if status == "ok" and record.get("html"):
        pdf = f' · <a href="{escape(str(record["pdf"]))}">PDF</a>' if record.get("pdf") else ""
        return f'<td class="note" data-label="{kind.capitalize()}"><span class="status ok">{text}</span>: ' \
               f"{links}{pdf}</td>"
    if status == "failed":
        return (f'<td class="note" data-label="{kind.capitalize()}"><span class="status failed">{kind} not '
                f"produced</span>: the run failed for it ({escape(str(record.get('error_kind', 'error')))}; details "
                "for the analytics team in the run's work folder)</td>")
    return f'<td class="note" data-label="{kind.capitalize()}"><span class="status pending">{kind} not produced ' \
           "yet</span></td>"


def _run_line(manifest: dict, units: dict, kind: str) -> str:
    n_ok = sum(1 for r in units.values() if r.get("status") == "ok")
    n_failed = sum(1 for r in units.values() if r.get("status") == "failed")
    line = f"{n_ok} of {len(units)} {kind} ready"
    if n_failed:
        line += f"; <b>{n_failed} failed</b> (details in the run manifest)"
    state = manifest.get("state")
    if state == "running":
        line += (f" · <b>a run started {escape(manifest.get('started', '')[:16].replace('T', ' '))} UTC has not "
                 "finished</b> (still running, or stopped before the end: the next run completes it)")
    return line


def _page(title: str, manifest: dict, status: str, intro: str, key: str, head: list[str], groups: list,
          foot: str) -> str:
    """The page: heading, period, intro, key, then the table with one ``<tbody>`` per group (its heading row
    first); ``groups`` is ``[(heading, rows)]`` and empty groups are left out."""
    width = len(head)
    bodies = "".join(f'<tbody><tr class="group"><th colspan="{width}">{heading}</th></tr>{"".join(rows)}</tbody>'
                     for heading, rows in groups if rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<meta name="carequal-revision" content="{manifest.get('revision')}">
<style>{_INDEX_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="sub">Reporting period {escape(_period_text(manifest))} · batch: {status}</p>
<p>{intro}</p>
{key}
<table><thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr></thead>
{bodies}</table>
<p class="foot">{foot}</p>
</body></html>
"""


def _foot(manifest: dict) -> str:
    when = escape(str(manifest.get("committed", ""))[:16].replace("T", " "))
    return (f"Updated {when} UTC by carequal {escape(manifest['carequal_version'])} from input "
            f"{escape(manifest['data']['fingerprint'][:12])}.")


def _threshold_sentence(manifest: dict) -> str:
    return escape(suppression_statement(int(manifest["parameters"].get("min_cell", 11))))


_MARKET_KEY = """<dl class="key">
<dt>▲ Higher / ▼ Lower than expected</dt><dd>the market's O/E (observed over expected events) with its 95% interval
wholly above / below 1; orange when that is worse, blue when better. ● As expected: the interval includes 1.</dd>
<dt>↑ ↓ since last period</dt><dd>the change in the rate from the period before; "significantly" only when the 95%
interval of the change excludes 0, else "within chance".</dd>
<dt>Trend line</dt><dd>the rate by quarter over the last two years (a gap: too few cases to show); the dot is the
latest quarter.</dd></dl>"""


def render_market_index(manifest: dict) -> str:
    """``index.html`` of a market run: a dashboard with one row per market (what needs attention first): each
    headline measure's O/E with its interval and judgement (a symbol and words, not colour alone), the change
    since the last period with its significance, a trend line, the facilities flagged, and, apart from all
    that, the report's batch status and links."""
    measures = manifest.get("measures", list(MEASURES))
    since = _since(manifest)
    head = ["Market", "Needs attention"] + [MEASURES[m].label for m in measures] + [
        "Facilities flagged (higher / lower than expected)", "Report"]
    ranked = []
    for market, record in manifest["markets"].items():
        ok = record.get("status") == "ok"
        kpis = record.get("kpis", {}) if ok else {}
        links = f'<a href="{escape(str(record.get("html")))}">open report</a>'
        cells = [f'<td><b>{escape(market)}</b></td>']
        if ok and kpis:
            n_worse, n_changed, attention = _attention(kpis, measures)
            cells.append(f'<td class="attention" data-label="Needs attention">{attention}</td>')
            cells += [_measure_cell(kpis, m, since).replace("<td>", f'<td data-label="{escape(MEASURES[m].label)}">',
                                                            1) for m in measures]
            flagged = kpis.get("flagged")
            cells.append(f'<td data-label="Facilities flagged (higher / lower)">{flagged["higher"]} / '
                         f'{flagged["lower"]}</td>' if flagged else "<td>–</td>")
            group = 0 if n_worse else 1 if n_changed else 2
        else:
            n_worse = n_changed = 0
            cells += ['<td data-label="Needs attention">–</td>'] + ["<td>–</td>" for _ in measures] + ["<td>–</td>"]
            group = 3
        cells.append(_report_cell(record, "report", links))
        ranked.append((group, -n_worse, -n_changed, market, "<tr>" + "".join(cells) + "</tr>"))
    ranked.sort(key=lambda r: r[:4])
    headings = ["Needs attention: a measure worse than expected", "Worse since last period",
                "No measure worse than expected", "No report yet (batch status)"]
    groups = [(headings[g], [r[-1] for r in ranked if r[0] == g]) for g in range(4)]
    intro = ("Each market's measures are for index hospital stays at its facilities. O/E compares them with the "
             "national average for the same patients: above 1 means more events than expected. Markets that need "
             "attention come first. Facilities are flagged only when the 95% interval of their O/E lies wholly "
             "above or below 1. " + _threshold_sentence(manifest))
    return _page("Partnership quality reports", manifest, _run_line(manifest, manifest["markets"], "market reports"),
                 intro, _MARKET_KEY, head, groups, _foot(manifest))


_PARTNER_KEY = """<dl class="key">
<dt>✔ met / ✘ not met</dt><dd>the whole 95% interval of the partner's value over the reporting period lies on
the better / worse side of its target; – not yet judgeable: the interval includes the target, or too few cases.
</dd>
<dt>↑ ↓ since last period</dt><dd>the change from the period of the same length before; "significantly" only when
its 95% interval excludes 0.</dd>
<dt>Trend line</dt><dd>the value in each review period (a gap: too few cases to show).</dd></dl>"""


def _metric_item(m: dict, since: str, by: str) -> str:
    value = m.get("value") or "suppressed"
    interval = f' <small class="muted">({escape(m["interval"])})</small>' if m.get("interval") else ""
    target = f' <span class="muted">target {escape(m["target"])}</span>' if m.get("target") else ""
    change = change_html(m.get("change"), m.get("change_verdict"), since=since, text=m.get("change_text")) \
        if m.get("change") is not None else ""
    spark = sparkline_svg(m.get("recent") or [], key="value", label=m.get("label", ""),
                          percent=m.get("unit") == "proportion", by=m.get("by", by))
    return (f'<li>{status_mark_html(m.get("status", ""))} <b>{escape(m.get("label", ""))}</b>: '
            f'{escape(value)}{interval}{target}<br>{change} {spark}</li>')


def render_partner_index(manifest: dict) -> str:
    """``index.html`` of a partner run: a dashboard with one row per partner (targets not met first): its
    targets met and not met over the reporting period, each agreed metric with its status (a symbol and words),
    value, interval, change since the last period and trend line; apart from that, the packet's batch status
    and links to the packet and its extract."""
    since = _since(manifest)
    ranked = []
    for fid, record in manifest["partners"].items():
        ok = record.get("status") == "ok"
        k = record.get("kpis", {}) if ok else {}
        cells = [f"<td><b>{escape(str(record.get('name', fid)))}</b></td>",
                 f'<td data-label="Setting, market">'
                 f"{escape(str(record.get('setting', '')).upper().replace('ACUTE', 'Hospital'))} · "
                 f"{escape(str(record.get('market', '')))}</td>"]
        if ok and k:
            counts = (f"{status_mark_html('met')} {k.get('met', 0)}<br>{status_mark_html('not met')} "
                      f"{k.get('not_met', 0)}<br>{status_mark_html('not yet judgeable')} {k.get('not_judgeable', 0)}")
            if k.get("not_computed"):
                counts += f"<br>{status_mark_html('not computed')} {k['not_computed']}"
            cells.append(f'<td class="attention" data-label="Targets">{counts}</td>')
            by = k.get("review_period", "review period")
            items = "".join(_metric_item(m, since, by) for m in k.get("metrics", []))
            cells.append(f'<td data-label="Agreed metrics"><ul class="metrics">{items}</ul></td>' if items
                         else "<td>–</td>")
            group = 0 if k.get("not_met") else 1
            not_met = int(k.get("not_met", 0))
        else:
            cells += ["<td>–</td>", "<td>–</td>"]
            group, not_met = 2, 0
        links = (f'<a href="{escape(str(record.get("html")))}">packet</a> · '
                 f'<a href="{escape(str(record.get("extract")))}">extract (Excel)</a>')
        cells.append(_report_cell(record, "packet", links))
        ranked.append((group, -not_met, str(record.get("name", fid)), "<tr>" + "".join(cells) + "</tr>"))
    ranked.sort(key=lambda r: r[:3])
    headings = ["Needs attention: a target not met", "No target missed", "No packet yet (batch status)"]
    groups = [(headings[g], [r[-1] for r in ranked if r[0] == g]) for g in range(3)]
    head = ["Partner", "Setting · market", "Targets over the reporting period", "Agreed metrics", "Packet"]
    name = manifest["agreement"]["name"]
    intro = (f"Each partner's agreed metrics over the whole reporting period ({escape(_period_text(manifest))}) "
             "against their targets, with the change from the period before; each packet also shows every review "
             "period. Partners with a target not met come first. " + _threshold_sentence(manifest))
    foot = _foot(manifest)[:-1] + f" and agreement {escape(manifest['agreement']['sha256'][:12])}."
    return _page(f"{name}: partner packets", manifest,
                 _run_line(manifest, manifest["partners"], "partner packets"), intro, _PARTNER_KEY, head, groups, foot)


def render_sponsor_index(manifest: dict) -> str:
    """``index.html`` of a sponsor run: the alliance and each sponsor with headline rates, status and link."""
    measures = (("admissions", "Hospital admissions"), ("ed_visits", "ED visits"),
                ("pqi_admissions", "Avoidable admissions (PQI 90)"), ("inpatient_spending", "Inpatient $ PMPM"))
    rows = []
    for unit, record in manifest["sponsors"].items():
        k = record.get("kpis", {}) if record.get("status") == "ok" else {}
        cells = [f"<td>{escape(str(record.get('name', unit)))}</td>"]
        years = k.get("member_years")
        cells.append(f"<td>{years:,.0f}</td>" if isinstance(years, int | float) else "<td>–</td>")
        for key, _ in measures:
            value = k.get(key)
            cells.append(f"<td>{value:,.1f}</td>" if isinstance(value, int | float) else
                         ("<td>suppressed</td>" if k and key in k else "<td>–</td>"))
        cells.append(_report_cell(record, "report", f'<a href="{escape(str(record.get("html")))}">open report</a>'))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    period = escape(str(next((r.get("kpis", {}).get("period") for r in manifest["sponsors"].values()
                              if r.get("kpis")), "")))
    head = ["Employer", f"Member-years {period}"] + [f"{label} {period}" for _, label in measures] + \
        ["Report"]
    intro = ("One report for the alliance's employees together and one for each member's own employees (ages 18 to "
             "64). Rates are per 1,000 member-years (one employee covered for a year), spending per member per "
             "month from inpatient payments only. " + _threshold_sentence(manifest))
    return _page("Our employees' health", manifest, _run_line(manifest, manifest["sponsors"], "employee reports"),
                 intro, "", head, [("The alliance and each member", rows)], _foot(manifest))


def render_index(manifest: dict) -> str:
    """The index page for the manifest's kind of run."""
    by = manifest.get("by")
    if by == "sponsor":
        return render_sponsor_index(manifest)
    return render_partner_index(manifest) if by == "partner" else render_market_index(manifest)
