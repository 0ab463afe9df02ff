"""Presentation: numbers as text, tables as HTML, findings and tables shown in a notebook.

Every report (the market report, the partner packet, population health, the cohort explorer) formats,
labels and displays through this module, so a rate, an interval or a hidden value reads the same everywhere:

* numbers as text: :func:`fmt_pct`, :func:`fmt_ci`, :func:`with_interval_text`, :func:`shown_text`;
* a computed table as the text a leader reads: :func:`presentable` (count columns under the names of
  :data:`COUNT_LABELS`; hidden values read "suppressed"), with each report table's display names and formats
  in one place (:data:`DISPLAYS`, :func:`displayed`), so a notebook holds no column names;
* HTML: :func:`table_html` and its style :data:`REPORT_CSS`;
* in a notebook: :func:`show_table` (a presentable table, or a computed one with its :data:`DISPLAYS` key),
  :func:`show_findings` and :func:`show_glance` (the "At a glance" block at the top of a report:
  :func:`glance_html`, each sentence linking to its section, :func:`section_anchor`).

Nothing here computes or suppresses: the tables arrive already through small-cell suppression
(:mod:`carequal.disclosure`); a missing value in a row marked ``suppressed`` is shown as "suppressed".
"""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

__all__ = ["COUNT_LABELS", "DISPLAYS", "HIDDEN_IN_TABLES", "REPORT_CSS", "displayed", "fmt_ci", "fmt_pct",
           "glance_html", "presentable", "section_anchor", "show_findings", "show_glance", "show_table", "shown_text",
           "table_html", "with_interval_text"]

COUNT_LABELS: dict[str, str] = {
    "n": "Cases", "events": "Events", "observed": "Observed", "prev_n": "Cases (last period)",
    "prev_events": "Events (last period)", "discharges": "Discharges", "removed": "Stays removed",
    "patients": "Patients", "person_years": "Person-years", "remaining": "Stays remaining",
    "dtc_n": "Post-acute stays", "admissions": "Admissions", "members": "Members",
    "members_with": "Members with it",
}
"""Display names of the count columns of the report's tables. Every column shown under one of these names has
passed small-cell suppression; the safe-to-share test reads the rendered tables by these names."""


def fmt_pct(x: float, digits: int = 1) -> str:
    """A proportion as a percentage, or "–" when missing.

    Examples
    --------
    >>> fmt_pct(0.14321), fmt_pct(float("nan"))
    ('14.3%', '–')
    """
    return "–" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}%"


def fmt_ci(lo: float, hi: float, *, percent: bool = True, digits: int | None = None) -> str:
    """An interval as "lo–hi" (percent or ratio).

    Examples
    --------
    >>> fmt_ci(0.1234, 0.1567), fmt_ci(0.876, 1.052, percent=False)
    ('12.3–15.7%', '0.88–1.05')
    """
    if pd.isna(lo) or pd.isna(hi):
        return "–"
    if percent:
        d = 1 if digits is None else digits
        return f"{100 * lo:.{d}f}–{100 * hi:.{d}f}%"
    d = 2 if digits is None else digits
    return f"{lo:.{d}f}–{hi:.{d}f}"


def presentable(table: pd.DataFrame, *, columns: dict[str, str | None], counts: tuple[str, ...] = (),
                percent: tuple[str, ...] = (), ratio: tuple[str, ...] = (), number: tuple[str, ...] = (),
                points: tuple[str, ...] = (), integers: tuple[str, ...] = ()) -> pd.DataFrame:
    """A table as text for a leadership report: chosen columns renamed, counts with thousands separators
    (under the names of :data:`COUNT_LABELS`; ``integers``: whole numbers that are not counts of patients,
    e.g. rows of an input file, under the names given in ``columns``), rates as percentages, differences of
    rates in percentage points, ratios to two decimals; hidden values read "suppressed", once a row (see
    :data:`HIDDEN_IN_TABLES`: beside a hidden count the values it would give away are blank), and values
    missing for another reason are blank.

    Parameters
    ----------
    columns : dict
        Source column → display name for the non-count columns, in display order (count columns are placed
        where they appear in this dict with value ``None`` or appended).

    Examples
    --------
    >>> t = pd.DataFrame({"name": ["A", "B", "C"], "n": pd.array([120, pd.NA, 300], dtype="Int64"),
    ...                   "rate": [0.1, None, None], "suppressed": [False, True, True]})
    >>> presentable(t, columns={"name": "Facility", "n": None, "rate": "Rate"}, counts=("n",), percent=("rate",))
      Facility       Cases        Rate
    0        A         120       10.0%
    1        B  suppressed
    2        C         300  suppressed
    """
    hidden_row = (table["suppressed"].astype(bool).to_numpy() if "suppressed" in table
                  else np.ones(len(table), dtype=bool))

    def text(values, fmt) -> list[str]:
        return [("suppressed" if hide else "") if pd.isna(v) else fmt(v)
                for v, hide in zip(values, hidden_row, strict=True)]

    out = {}
    for col, name in columns.items():
        values = table[col]
        if col in counts:
            out[COUNT_LABELS[col]] = text(values, lambda v: f"{int(round(float(v))):,d}")
        elif col in integers:
            out[name] = text(values, lambda v: f"{int(round(float(v))):,d}")
        elif col in percent:
            out[name] = text(values, fmt_pct)
        elif col in ratio:
            out[name] = text(values, lambda v: f"{float(v):.2f}")
        elif col in points:
            out[name] = text(values, lambda v: f"{100 * float(v):+.1f} pts")
        elif col in number:
            out[name] = text(values, lambda v: f"{float(v):,.1f}")
        else:
            out[name] = ["" if pd.isna(v) else str(v) for v in values]
    # a hidden value is said once: where a count of the row reads "suppressed", the values it would give away
    # (rate, ratio, interval, change) are left blank rather than saying it again in every cell
    count_names = [COUNT_LABELS[c] for c in columns if c in counts] + [columns[c] for c in columns if c in integers]
    said = np.zeros(len(table), dtype=bool)
    for name in count_names:
        said |= np.array([t == "suppressed" for t in out[name]], dtype=bool)
    for name in out:
        if name not in count_names:
            out[name] = ["" if s and t == "suppressed" else t for t, s in zip(out[name], said, strict=True)]
    return pd.DataFrame(out)


DISPLAYS: dict[str, dict] = {
    # market report (carequal.report)
    "headline": {"columns": {"label": "Measure", "n": None, "events": None, "rate": "Rate",
                             "expected_rate": "Expected rate", "ratio": "O/E", "prev_rate": "Last period",
                             "change": "Change"},
                 "counts": ("n", "events"), "percent": ("rate", "expected_rate", "prev_rate"), "points": ("change",),
                 "ratio": ("ratio",)},
    "scorecard": {"columns": {"name": "Facility", "setting": "Setting", "partner": "Partner", "n": None,
                              "observed": None, "rate": "Rate", "ratio": "O/E", "interval": "95% CI",
                              "judgement": "Judgement"},
                  "counts": ("n", "observed"), "percent": ("rate",), "ratio": ("ratio",)},
    "destinations": {"columns": {"destination": "Next setting", "discharges": None, "share": "Share"},
                     "counts": ("discharges",), "percent": ("share",)},
    "population": {"columns": {"measure": "Measure", "events": None, "person_years": None,
                               "rate": "Standardised rate per 1,000", "interval": "95% CI"},
                   "counts": ("events", "person_years"), "number": ("rate",)},
    "chronic": {"columns": {"condition": "Condition", "patients": None, "per_1000": "Per 1,000"},
                "counts": ("patients",), "number": ("per_1000",)},
    # rows of input files, not patients: never suppressed (report.validation_table says why)
    "validation": {"columns": {"table": "Table", "rows_read": "Rows read", "rows_kept": "Rows kept",
                               "rows_set_aside": "Rows set aside"},
                   "integers": ("rows_read", "rows_kept", "rows_set_aside")},
    "attrition": {"columns": {"description": "Step", "removed": None, "remaining": None},
                  "counts": ("removed", "remaining")},
    # partner packet (carequal.packet)
    "flows": {"columns": {"label": "", "n": None, "share": "Share"}, "counts": ("n",), "percent": ("share",)},
    # population health (carequal.population)
    "market_outcomes": {"columns": {"unit_market": "Market", "n": None, "events": None, "rate": "Rate",
                                    "expected_rate": "Expected rate", "ratio": "O/E", "interval": "95% CI"},
                        "counts": ("n", "events"), "percent": ("rate", "expected_rate"), "ratio": ("ratio",)},
    # employee health (carequal.employers)
    "pqi_by_sponsor": {"rename": {"events": "admissions"},
                       "columns": {"indicator": "PQI", "name": "Indicator", "sponsor": "Member", "admissions": None,
                                   "rate": "Per 100,000", "interval": "95% CI", "ratio": "O/E"},
                       "counts": ("admissions",), "number": ("rate",), "ratio": ("ratio",)},
    "pqi_by_age_band": {"rename": {"events": "admissions"},
                        "columns": {"indicator": "PQI", "name": "Indicator", "age_band": "Age band",
                                    "admissions": None, "rate": "Per 100,000", "interval": "95% CI"},
                        "counts": ("admissions",), "number": ("rate",)},
    "chronic_prevalence": {"rename": {"events": "members_with", "n": "members"},
                           "columns": {"label": "Condition", "members_with": None, "members": None,
                                       "rate": "Share", "interval": "95% CI"},
                           "counts": ("members_with", "members"), "percent": ("rate",)},
    # cohort explorer (carequal.explore)
    "explorer_rates": {"columns": {"label": "Measure", "partner": "Hospital", "n": None, "events": None,
                                   "rate": "Rate", "interval": "95% CI"},
                       "counts": ("n", "events"), "percent": ("rate",)},
    "explorer_rates_employer": {"columns": {"label": "Measure", "sponsor": "Employer", "n": None, "events": None,
                                   "rate": "Rate", "interval": "95% CI"},
                       "counts": ("n", "events"), "percent": ("rate",)},
}
"""How each report table is shown (the keyword arguments of :func:`presentable`, and ``rename``: columns renamed
first, so that a count shows under another name of :data:`COUNT_LABELS`): which columns, under which names, in
which order, and how each is written. The notebooks name a table's display by its key
(:func:`displayed`, :func:`show_table`) and hold no column names of their own."""


def displayed(table: pd.DataFrame, display: str) -> pd.DataFrame:
    """``table`` as :func:`presentable` shows it with the settings of ``DISPLAYS[display]``.

    Examples
    --------
    >>> t = pd.DataFrame({"destination": ["Home"], "discharges": [1200], "share": [0.6], "suppressed": [False]})
    >>> displayed(t, "destinations")
      Next setting Discharges  Share
    0         Home      1,200  60.0%
    """
    if display not in DISPLAYS:
        raise KeyError(f"no display {display!r}; choose from {', '.join(DISPLAYS)}")
    settings = dict(DISPLAYS[display])
    rename = settings.pop("rename", None)
    return presentable(table.rename(columns=rename) if rename else table, **settings)


REPORT_CSS = """<style>
table.carequal-table { border-collapse: collapse; margin: 0.4em 0 1.2em 0; font-size: 0.95em; }
table.carequal-table th { text-align: right; padding: 4px 10px; border-bottom: 1px solid #999; }
table.carequal-table td { text-align: right; padding: 3px 10px; font-variant-numeric: tabular-nums; }
table.carequal-table th:first-child, table.carequal-table td:first-child { text-align: left; }
table.carequal-table td.text, table.carequal-table th.text { text-align: left; }
table.carequal-table tr:nth-child(even) td { background: #f5f5f5; }
section.carequal-glance { border: 2px solid #1f4e79; border-radius: 6px; padding: 0.3em 1.2em 0.6em 1.2em;
  margin: 0.8em 0 1.4em 0; background: #f3f7fb; max-width: 60em; }
section.carequal-glance h2 { margin-top: 0.4em; }
section.carequal-glance li { margin: 0.35em 0; line-height: 1.45; }
span.carequal-see { white-space: nowrap; font-size: 0.9em; }
</style>"""
"""Style of the report's tables: text columns left-aligned, numbers right-aligned in tabular figures."""


HIDDEN_IN_TABLES = ('In the tables a hidden count reads "suppressed"; the rate, ratio and interval it would give '
                    "away are left blank beside it.")
"""How a hidden value looks in a report's tables (:func:`presentable`), said once under the report's title."""


def table_html(frame: pd.DataFrame) -> str:
    """A presentable table as HTML (class ``carequal-table``; columns of text left-aligned).

    Examples
    --------
    >>> html = table_html(pd.DataFrame({"Facility": ["A"], "Cases": ["1,200"]}))
    >>> '<td class="text">A</td>' in html and "<td>1,200</td>" in html
    True
    """
    numeric_text = r"[-+]?[\d,.]+%?|suppressed|–|"
    attr = {c: "" if frame[c].astype("str").str.fullmatch(numeric_text).all() else ' class="text"' for c in frame}
    head = "".join(f"<th{attr[c]}>{escape(str(c))}</th>" for c in frame)
    rows = []
    for values in frame.itertuples(index=False):
        cells = "".join(f"<td{attr[c]}>{escape(str(v))}</td>" for c, v in zip(frame.columns, values, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    body = "".join(rows)
    return f'<table class="carequal-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def show_findings(sentences: list[str]) -> None:
    """Display plain-language findings as a bullet list in a notebook (the reports' one way to do it)."""
    # IPython is there only in a notebook kernel (and costs half a second): imported where it is used
    from IPython.display import Markdown, display

    display(Markdown("\n".join(f"- {s}" for s in sentences)))


def section_anchor(heading: str) -> str:
    """The id the report's HTML gives a Markdown heading (nbconvert: the text, spaces as hyphens).

    Examples
    --------
    >>> section_anchor("Which facilities stand out?")
    'Which-facilities-stand-out?'
    """
    return heading.strip().replace(" ", "-")


def glance_html(items: list[tuple[str, str]]) -> str:
    """The "At a glance" block: a heading and one bullet per ``(sentence, section heading)``, each ending with
    a link to its section (:func:`section_anchor`).

    Examples
    --------
    >>> html = glance_html([("Readmission is worse than expected.", "Headline findings")])
    >>> '<a href="#Headline-findings">Headline findings</a>' in html and 'id="At-a-glance"' in html
    True
    """
    items_html = "".join(f'<li>{escape(text)} <span class="carequal-see">See <a href="#'
                         f'{escape(section_anchor(section))}">{escape(section)}</a>.</span></li>'
                         for text, section in items)
    return (f'<section class="carequal-glance" aria-labelledby="At-a-glance"><h2 id="At-a-glance">At a glance</h2>'
            f"<ul>{items_html}</ul></section>")


def show_glance(items: list[tuple[str, str]]) -> None:
    """Display :func:`glance_html` in a notebook."""
    from IPython.display import HTML, display  # only in a notebook kernel, as in show_findings

    display(HTML(glance_html(items)))


def show_table(frame: pd.DataFrame, display: str | None = None) -> None:
    """Display a presentable table in a notebook as :func:`table_html`; with ``display`` (a :data:`DISPLAYS`
    key), a computed table as :func:`displayed` shows it."""
    from IPython.display import HTML
    from IPython.display import display as show  # only in a notebook kernel, as in show_findings

    show(HTML(table_html(frame if display is None else displayed(frame, display))))


def with_interval_text(frame: pd.DataFrame, *, lower: str = "lower", upper: str = "upper", percent: bool = False,
                       digits: int = 1) -> pd.DataFrame:
    """Add ``interval``: "lo–hi" text of two columns ("suppressed" when either is hidden).

    Examples
    --------
    >>> with_interval_text(pd.DataFrame({"lower": [12.04, None], "upper": [15.5, 3.0]}))["interval"].tolist()
    ['12.0–15.5', 'suppressed']
    """
    if frame.empty:
        return frame.assign(interval=pd.Series(dtype="str"))
    text = [("suppressed" if pd.isna(lo) or pd.isna(hi) else fmt_ci(lo, hi, percent=percent, digits=digits))
            for lo, hi in zip(frame[lower], frame[upper], strict=True)]
    return frame.assign(interval=text)


def shown_text(values, hidden, fmt) -> list[str]:
    """Text of values: "suppressed" where ``hidden``, "–" where missing for another reason (no cases, not
    reported), else ``fmt(value)``.

    Examples
    --------
    >>> shown_text([0.5, None, None], [False, True, False], fmt_pct)
    ['50.0%', 'suppressed', '–']
    """
    return ["suppressed" if hide else ("–" if pd.isna(v) else fmt(v)) for v, hide in zip(values, hidden, strict=True)]
