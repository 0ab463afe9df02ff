"""The index pages of an output folder, rendered from its manifest (:mod:`carequal.batch.state`).

Each page carries the manifest's revision in a ``<meta name="carequal-revision">`` tag, so a check can tell
that the index was rendered from the manifest beside it.
"""

from __future__ import annotations

from html import escape

from carequal.disclosure import suppression_statement
from carequal.national import MEASURES

__all__ = ["render_index", "render_market_index", "render_partner_index", "render_sponsor_index"]


_INDEX_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 2.5em;
       color: #222; max-width: 1200px; }
h1 { font-weight: 600; margin-bottom: 0.2em; } p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin-top: 1.5em; width: 100%; font-size: 0.95em; }
th { text-align: right; border-bottom: 2px solid #444; padding: 6px 10px; vertical-align: bottom; }
td { text-align: right; padding: 6px 10px; border-bottom: 1px solid #ddd; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child, td.status, th.status { text-align: left; }
td.failed { color: #b00020; font-weight: 600; } td.ok { color: #1b7f3b; } td.pending { color: #8a5a00; }
td.note { text-align: left; color: #555; font-size: 0.9em; white-space: nowrap; }
a { color: #0b5cad; } p.foot { color: #666; font-size: 0.85em; margin-top: 2em; }
"""


def _fmt_rate(kpis: dict, measure: str) -> str:
    value = (kpis or {}).get(measure, {}).get("rate")
    return "–" if value is None else f"{100 * value:.1f}%"


def _fmt_ratio(kpis: dict, measure: str) -> str:
    value = (kpis or {}).get(measure, {}).get("ratio")
    return "–" if value is None else f"{value:.2f}"


_STATUS = {"ok": ("ok", "ready"), "failed": ("failed", "failed"), "pending": ("pending", "not yet produced")}


def _status_cell(record: dict) -> str:
    css, text = _STATUS.get(record.get("status"), ("pending", "not yet produced"))
    return f'<td class="status {css}">{text}</td>'


def _link_cell(record: dict, kind: str, links: str) -> str:
    status = record.get("status")
    if status == "ok" and record.get("html"):
        return f'<td class="note">{links}</td>'
    if status == "failed":
        return (f'<td class="note">{kind} not produced: the run failed for it '
                f"({escape(str(record.get('error_kind', 'error')))}; details for the analytics team in the run's "
                "work folder)</td>")
    return f'<td class="note">{kind} not produced yet</td>'


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


def _page(title: str, manifest: dict, status: str, intro: str, head: list[str], rows: list[str], foot: str) -> str:
    params = manifest["parameters"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="carequal-revision" content="{manifest.get('revision')}">
<style>{_INDEX_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="sub">Reporting period {escape(params['period_start'])} to {escape(params['period_end'])} · {status}</p>
<p>{intro}</p>
<table><thead><tr>{''.join(f'<th>{escape(h)}</th>' for h in head)}</tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<p class="foot">{foot}</p>
</body></html>
"""


def _foot(manifest: dict) -> str:
    when = escape(str(manifest.get("committed", ""))[:16].replace("T", " "))
    return (f"Updated {when} UTC by carequal {escape(manifest['carequal_version'])} from input "
            f"{escape(manifest['data']['fingerprint'][:12])}.")


def _threshold_sentence(manifest: dict) -> str:
    return escape(suppression_statement(int(manifest["parameters"].get("min_cell", 11))))


def render_market_index(manifest: dict) -> str:
    """``index.html`` of a market run: one row per market with its headline KPIs, status and link."""
    measures = manifest.get("measures", list(MEASURES))
    head = ["Market", "Status"]
    for m in measures:
        head += [f"{MEASURES[m].label}", "O/E"]
    head += ["Facilities flagged (higher / lower than expected)", "Report"]
    rows = []
    for market, record in manifest["markets"].items():
        ok = record.get("status") == "ok"
        kpis = record.get("kpis", {}) if ok else {}
        cells = [f"<td>{escape(market)}</td>", _status_cell(record)]
        for m in measures:
            cells += [f"<td>{_fmt_rate(kpis, m)}</td>", f"<td>{_fmt_ratio(kpis, m)}</td>"]
        flagged = kpis.get("flagged")
        cells.append(f"<td>{flagged['higher']} / {flagged['lower']}</td>" if flagged else "<td>–</td>")
        cells.append(_link_cell(record, "report", f'<a href="{escape(str(record.get("html")))}">open report</a>'))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    intro = ("Each market's rates are for index hospital stays at its facilities. O/E compares them with the "
             "national average for the same patients: above 1 means more events than expected. Facilities are "
             "flagged only when the 95% interval of their O/E lies wholly above or below 1. "
             + _threshold_sentence(manifest))
    return _page("Partnership quality reports", manifest, _run_line(manifest, manifest["markets"], "market reports"),
                 intro, head, rows, _foot(manifest))


def render_partner_index(manifest: dict) -> str:
    """``index.html`` of a partner run: one row per partner with its statuses and links to packet and extract."""
    rows = []
    for fid, record in manifest["partners"].items():
        ok = record.get("status") == "ok"
        k = record.get("kpis", {}) if ok else {}
        cells = [f"<td>{escape(str(record.get('name', fid)))}</td>",
                 f"<td>{escape(str(record.get('setting', '')).upper().replace('ACUTE', 'Hospital'))}</td>",
                 f"<td>{escape(str(record.get('market', '')))}</td>", _status_cell(record)]
        cells += [f"<td>{k.get(c, '–')}</td>" for c in ("met", "not_met", "not_judgeable", "not_computed")]
        links = (f'<a href="{escape(str(record.get("html")))}">packet</a> · '
                 f'<a href="{escape(str(record.get("extract")))}">extract (Excel)</a>')
        cells.append(_link_cell(record, "packet", links))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ["Partner", "Setting", "Market", "Status", "Targets met", "Not met", "Not yet judgeable", "Not computed",
            "Packet"]
    name = manifest["agreement"]["name"]
    intro = ("Each packet shows one partner its agreed metrics against their targets in the latest review period, "
             "with trends and where its patients came from and went next. The counts here are of agreed targets. "
             + _threshold_sentence(manifest))
    foot = _foot(manifest)[:-1] + f" and agreement {escape(manifest['agreement']['sha256'][:12])}."
    return _page(f"{name}: partner packets", manifest,
                 _run_line(manifest, manifest["partners"], "partner packets"), intro, head, rows, foot)


def render_sponsor_index(manifest: dict) -> str:
    """``index.html`` of a sponsor run: the alliance and each sponsor with headline rates, status and link."""
    measures = (("admissions", "Hospital admissions"), ("ed_visits", "ED visits"),
                ("pqi_admissions", "Avoidable admissions (PQI 90)"), ("inpatient_spending", "Inpatient $ PMPM"))
    rows = []
    for unit, record in manifest["sponsors"].items():
        k = record.get("kpis", {}) if record.get("status") == "ok" else {}
        cells = [f"<td>{escape(str(record.get('name', unit)))}</td>", _status_cell(record)]
        years = k.get("member_years")
        cells.append(f"<td>{years:,.0f}</td>" if isinstance(years, int | float) else "<td>–</td>")
        for key, _ in measures:
            value = k.get(key)
            cells.append(f"<td>{value:,.1f}</td>" if isinstance(value, int | float) else
                         ("<td>suppressed</td>" if k and key in k else "<td>–</td>"))
        cells.append(_link_cell(record, "report", f'<a href="{escape(str(record.get("html")))}">open report</a>'))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    period = escape(str(next((r.get("kpis", {}).get("period") for r in manifest["sponsors"].values()
                              if r.get("kpis")), "")))
    head = ["Employer", "Status", f"Member-years {period}"] + [f"{label} {period}" for _, label in measures] + \
        ["Report"]
    intro = ("One report for the alliance's employees together and one for each member's own employees (ages 18 to "
             "64). Rates are per 1,000 member-years (one employee covered for a year), spending per member per "
             "month from inpatient payments only. " + _threshold_sentence(manifest))
    return _page("Our employees' health", manifest, _run_line(manifest, manifest["sponsors"], "employee reports"),
                 intro, head, rows, _foot(manifest))


def render_index(manifest: dict) -> str:
    """The index page for the manifest's kind of run."""
    by = manifest.get("by")
    if by == "sponsor":
        return render_sponsor_index(manifest)
    return render_partner_index(manifest) if by == "partner" else render_market_index(manifest)
