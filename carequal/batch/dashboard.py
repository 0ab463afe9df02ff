"""The pieces of the index dashboards (:mod:`carequal.batch.index`): marks, changes and trend lines as HTML.

Every judgement is shown with a symbol **and** a word as well as a colour (a reader who cannot tell the colours
apart, or prints in grey, reads the same), and the trend line is an inline SVG (no script) whose ``aria-label``
states its first and last values. Only values already cleared for sharing reach these functions (rates, ratios
and intervals of the KPI and packet records); none prints a count.
"""

from __future__ import annotations

from html import escape

__all__ = ["change_html", "mark_html", "sparkline_svg", "status_mark_html"]

_MARK = {  # verdict → (css class, symbol, words), for a measure where fewer events are better
    "higher": ("worse", "▲", "Higher than expected"),
    "lower": ("better", "▼", "Lower than expected"),
    "as expected": ("neutral", "●", "As expected"),
}


def mark_html(verdict: str | None, improvement: str = "down") -> str:
    """The O/E judgement as a symbol and words, coloured by whether it is better or worse.

    Examples
    --------
    >>> mark_html("higher")
    '<span class="mark worse">▲ Higher than expected</span>'
    >>> mark_html(None)
    '<span class="mark none">not judged (small numbers)</span>'
    """
    if verdict not in _MARK:
        return '<span class="mark none">not judged (small numbers)</span>'
    css, symbol, words = _MARK[verdict]
    if improvement == "up" and css != "neutral":  # more events are better (e.g. discharge to community)
        css = "better" if css == "worse" else "worse"
    return f'<span class="mark {css}">{symbol} {words}</span>'


_STATUS = {"met": ("better", "✔", "met"), "not met": ("worse", "✘", "not met"),
           "not yet judgeable": ("neutral", "–", "not yet judgeable"), "not computed": ("none", "?", "not computed")}


def status_mark_html(status: str) -> str:
    """A target's status as a symbol and words (met ✔, not met ✘, not yet judgeable –).

    Examples
    --------
    >>> status_mark_html("not met")
    '<span class="mark worse">✘ not met</span>'
    """
    css, symbol, words = _STATUS.get(status, ("none", "?", str(status)))
    return f'<span class="mark {css}">{symbol} {escape(words)}</span>'


def change_html(change: float | None, verdict: str | None, *, since: str, unit: str = "pts",
                text: str | None = None) -> str:
    """The change since the last period: an arrow, its size, and whether it is more than chance.

    ``verdict`` is "better", "worse" or "no clear change" (the 95% interval of the change excludes 0, or not);
    ``text`` replaces the formatted size (a packet metric in its own unit).

    Examples
    --------
    >>> change_html(-0.0166, "no clear change", since="2023")
    '<span class="change">↓ 1.7 pts since 2023 <em>within chance</em></span>'
    >>> change_html(0.04, "worse", since="2023")
    '<span class="change worse">↑ 4.0 pts since 2023 <b>significantly worse</b></span>'
    """
    if change is None:
        return '<span class="change none">no comparison with last period (small numbers)</span>'
    arrow = "↑" if change > 0 else "↓" if change < 0 else "→"
    size = text if text is not None else f"{abs(100 * change):.1f} {unit}"
    if verdict in ("better", "worse"):
        return (f'<span class="change {verdict}">{arrow} {escape(size)} since {escape(since)} '
                f"<b>significantly {verdict}</b></span>")
    words = "within chance" if verdict == "no clear change" else "not tested"
    return f'<span class="change">{arrow} {escape(size)} since {escape(since)} <em>{words}</em></span>'


def sparkline_svg(points: list[dict], *, key: str = "rate", label: str = "", percent: bool = True,
                  by: str = "quarter", width: int = 110, height: int = 26) -> str:
    """A small trend line (inline SVG, no script) of ``points`` (``{"label": ..., key: value or None}``), a gap
    where a value is hidden, the last value marked; its ``aria-label`` and ``<title>`` say what it shows.

    Examples
    --------
    >>> svg = sparkline_svg([{"label": "2024 Q1", "rate": 0.2}, {"label": "2024 Q2", "rate": None},
    ...                      {"label": "2024 Q3", "rate": 0.15}], label="Readmission")
    >>> 'aria-label="Readmission by quarter, 2024 Q1 to 2024 Q3: 20.0% to 15.0% (1 period hidden)"' in svg
    True
    >>> sparkline_svg([], label="x")
    ''
    """
    values = [p.get(key) for p in points]
    shown = [v for v in values if v is not None]
    if len(shown) < 2:
        return ""
    lo, hi = min(shown), max(shown)
    span = (hi - lo) or max(abs(hi), 1e-9) * 0.1
    pad = 3
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i * step, height - pad - (v - lo) / span * (height - 2 * pad)

    runs, run = [], []
    for i, v in enumerate(values):
        if v is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(xy(i, v))
    if run:
        runs.append(run)
    lines = "".join(
        (f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in r)}"/>' if len(r) > 1 else
         f'<circle cx="{r[0][0]:.1f}" cy="{r[0][1]:.1f}" r="1.5"/>') for r in runs)
    last_i = max(i for i, v in enumerate(values) if v is not None)
    lx, ly = xy(last_i, values[last_i])

    def fmt(v: float) -> str:
        return f"{100 * v:.1f}%" if percent else f"{v:,.1f}"

    hidden = len(values) - len(shown)
    first_i = min(i for i, v in enumerate(values) if v is not None)
    desc = (f"{label} by {by}, {points[first_i].get('label')} to {points[last_i].get('label')}: "
            f"{fmt(values[first_i])} to {fmt(values[last_i])}"
            + (f" ({hidden} period{'s' if hidden > 1 else ''} hidden)" if hidden else ""))
    return (f'<svg class="spark" role="img" aria-label="{escape(desc)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{escape(desc)}</title><g fill="none" stroke="currentColor" '
            f'stroke-width="1.5">{lines}</g><circle cx="{lx:.1f}" cy="{ly:.1f}" r="2.5" fill="currentColor"/></svg>')
