"""Charts for hospital / post-acute partnership reviews: one theme, one chart per question.

Theme
-----
:func:`set_theme` applies a seaborn ``whitegrid`` theme with the Okabe–Ito palette (Okabe & Ito 2008), which
stays distinguishable under the common colour-vision deficiencies and in greyscale print, and font sizes
readable on a projected slide. It is never applied at import: call it once, at the top of a notebook or report.
:data:`PALETTE` names the colours the charts use for meaning (partner vs non-partner; Making Data Count signal
colours: concern, improvement, neither, common cause), so the same colour means the same thing on every page.

Why these charts
----------------
* :func:`funnel_plot` — which facilities really differ from the rest, allowing for their size (a small
  facility's rate is noisy); the limits are those of :func:`carequal.compare.funnel_data`.
* :func:`caterpillar_plot` — facilities ranked by ratio with their intervals, to show how much of a league
  table is noise.
* :func:`spc_plot` — whether a measure changed over time (Making Data Count signals from
  :func:`carequal.compare.p_chart`, :func:`~carequal.compare.laney_p_chart` or
  :func:`~carequal.compare.xmr_chart`).
* :func:`trend_plot` — rates over time by market or partner status with their intervals.
* :func:`flow_heatmap` — where each hospital's patients go after discharge, partners marked.
* :func:`calibration_plot` — whether the risk model's expected rates match the observed ones.
* :func:`attrition_plot` — how the cohort was built: stays remaining after each exclusion.
* :func:`candidate_plot` — which non-partner post-acute providers look like good partners: each criterion's
  verdict against its benchmark (:mod:`carequal.screening`), with the volume and the score.

No data wrangling here: inputs are the library's tidy tables (``funnel_data``, ``scorecard``,
``bootstrap_pe``, ``p_chart``, ``trend_table``, ``calibration_table``, ``Cohort.attrition``, a hospital × PAC
count table) and column names; each function draws them as given, never modifies them, and returns the
matplotlib Axes so the caller can add to it or save it.

Size: about 800 lines, one module because one function per chart, sharing the theme, the palette and the legend
helpers; a reader looks up the one chart in hand.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import Collection, PathCollection
from matplotlib.colors import ListedColormap
from matplotlib.container import Container
from matplotlib.dates import date2num
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.path import Path
from matplotlib.ticker import PercentFormatter

from carequal.errors import ParameterError

__all__ = ["OKABE_ITO", "PALETTE", "THEME_RC", "set_theme", "seaborn_theme", "write_stored_theme", "funnel_plot",
           "caterpillar_plot", "spc_plot", "trend_plot", "target_trend_plot", "flow_heatmap", "calibration_plot",
           "attrition_plot", "candidate_plot", "describe", "layout", "legend", "period_positions", "place_labels",
           "show", "shared_legend"]

#: The Okabe–Ito colour-blind-safe palette (black first, as published).
OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]

#: Colours with a meaning, the same on every chart. The signal colours follow NHS Making Data Count (orange-red
#: for concern, blue for improvement, purple when no direction is better, grey for common-cause variation).
PALETTE = {
    "partner": "#E69F00",
    "non_partner": "#8C8C8C",
    "concern": "#D55E00",
    "improvement": "#0072B2",
    "neither": "#CC79A7",
    "common_cause": "#8C8C8C",
    "target": "#000000",
    "limit": "#404040",
    "line": "#404040",
}

_SIGNAL_LABELS = {"concern": "Concern", "improvement": "Improvement", "neither": "Special cause"}


#: carequal's settings over seaborn's ``whitegrid`` theme (:func:`set_theme`).
THEME_RC = {"axes.titleweight": "bold", "axes.titlelocation": "left", "axes.spines.top": False,
            "axes.spines.right": False, "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight",
            "legend.frameon": False}


def set_theme(*, font_scale: float = 1.2, context: str = "notebook") -> None:
    """Apply carequal's chart theme to matplotlib (global rcParams): seaborn's ``whitegrid`` style and
    ``context`` sizes, the Okabe–Ito palette, left-aligned bold titles, no top/right spines, PNGs at 200 dpi.

    Call once per session or report; plotting functions never call it.

    The settings are :func:`seaborn_theme`'s. For the notebooks' arguments (the defaults) they are read from
    ``carequal/data/theme.json``, written from seaborn and checked against ``seaborn.set_theme`` by
    ``tests/test_plots.py``: importing seaborn costs a report's kernel about 0.6 s (it imports scipy.stats),
    and a packet draws no seaborn chart.

    Parameters
    ----------
    font_scale : float
        Multiplier of seaborn's font sizes (1.2 reads well on slides).
    context : {"paper", "notebook", "talk", "poster"}
        seaborn plotting context.

    Examples
    --------
    >>> import matplotlib
    >>> from matplotlib.colors import to_hex
    >>> with matplotlib.rc_context():  # restores the previous settings afterwards
    ...     set_theme()
    ...     to_hex(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][1])
    '#e69f00'
    """
    stored = _stored_theme()
    if stored["font_scale"] == font_scale and stored["context"] == context:
        from matplotlib.rcsetup import cycler

        for name, colors in stored["colormaps"].items():  # seaborn's default image colormap, which it registers
            if name not in matplotlib.colormaps:
                matplotlib.colormaps.register(ListedColormap(colors, name=name))
        plt.rcParams.update({**stored["rc"], "axes.prop_cycle": cycler(color=[tuple(c) for c in stored["colors"]])})
    else:
        plt.rcParams.update(seaborn_theme(font_scale=font_scale, context=context))


def seaborn_theme(*, font_scale: float = 1.2, context: str = "notebook") -> dict:
    """The rcParams :func:`set_theme` applies, from seaborn: what ``seaborn.set_theme(context, style="whitegrid",
    palette=OKABE_ITO, font_scale=font_scale, rc=THEME_RC)`` sets, in the order it sets them (its context, its
    style with the sans-serif font family, the palette as the colour cycle, then :data:`THEME_RC`).

    Examples
    --------
    >>> theme = seaborn_theme()
    >>> theme["axes.titlelocation"], theme["axes.grid"], round(theme["axes.titlesize"], 1)
    ('left', True, 14.4)
    """
    import seaborn as sns  # ~0.6 s (it imports scipy.stats): only here and for the heatmap
    from matplotlib.rcsetup import cycler

    return {**sns.plotting_context(context, font_scale), **sns.axes_style("whitegrid", {"font.family": "sans-serif"}),
            "axes.prop_cycle": cycler(color=sns.color_palette(OKABE_ITO)), **THEME_RC}


def _stored_theme() -> dict:
    """``carequal/data/theme.json``: :func:`seaborn_theme` of its ``font_scale`` and ``context``, its colour cycle
    as RGB triples (``colors``) and the colours of the image colormap it names (``colormaps``: seaborn's
    "rocket", which matplotlib registers only once seaborn is imported); written by :func:`write_stored_theme`."""
    from importlib import resources

    return json.loads(resources.files("carequal").joinpath("data", "theme.json").read_text())


def write_stored_theme(path: str, *, font_scale: float = 1.2, context: str = "notebook") -> None:
    """Write ``carequal/data/theme.json`` (``path``) from seaborn: :func:`seaborn_theme` of ``font_scale`` and
    ``context`` (keep them :func:`set_theme`'s defaults: ``tests/test_plots.py`` checks). Run again when seaborn's
    theme changes (the test says when)::

        python -c "from carequal import plots; plots.write_stored_theme('carequal/data/theme.json')"
    """
    import seaborn as sns

    rc = seaborn_theme(font_scale=font_scale, context=context)
    colors = [list(map(float, c)) for c in rc.pop("axes.prop_cycle").by_key()["color"]]
    rc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in rc.items()}
    cmap = matplotlib.colormaps[rc["image.cmap"]]
    stored = {"written_by": f"seaborn {sns.__version__}", "font_scale": font_scale, "context": context, "rc": rc,
              "colors": colors, "colormaps": {rc["image.cmap"]: [list(map(float, c)) for c in cmap.colors]}}
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(stored, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------- helpers


def _ax(ax: Axes | None, figsize: tuple[float, float] = (8, 5)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _require(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise ParameterError(f"{where}: missing column(s) {missing}; the table has {list(frame.columns)}. Pass the "
                             "column names by keyword if yours differ.")


def _partner_mask(frame: pd.DataFrame, partner: str | None) -> np.ndarray:
    if partner is None:
        return np.zeros(len(frame), dtype=bool)
    # missing partner flags are drawn as non-partners (unknown is not a partnership)
    return frame[partner].fillna(False).astype(bool).to_numpy()


def _percent(axis) -> None:
    axis.set_major_formatter(PercentFormatter(xmax=1, decimals=None))


def _period_freq(periods: pd.Series, freq: str | None) -> str:
    """``freq`` if given, else the spacing of the periods: "month", "quarter" or "year"."""
    if freq in ("month", "quarter", "year"):
        return freq
    p = pd.Series(pd.to_datetime(pd.Series(periods).dropna().unique())).sort_values()
    if len(p) < 2:
        return "month"
    days = float(p.diff().dt.days.median())
    return "month" if days < 45 else "quarter" if days < 200 else "year"


def period_positions(periods, *, freq: str | None = None) -> tuple[pd.DatetimeIndex, list[str], str]:
    """Where periods (given by their first day) are drawn on a date axis: at their **midpoint**, so that a
    yearly point sits in the middle of its year and a date line (a partnership's start) falls where it
    belongs; with a label per period ("Mar 2024", "2024 Q1", "2024") and the frequency used.

    Examples
    --------
    >>> mid, labels, freq = period_positions(pd.to_datetime(["2023-01-01", "2024-01-01"]), freq="year")
    >>> [str(m.date()) for m in mid], labels, freq
    (['2023-07-02', '2024-07-02'], ['2023', '2024'], 'year')
    """
    start = pd.DatetimeIndex(pd.to_datetime(pd.Series(periods)))
    freq = _period_freq(pd.Series(start), freq)
    code = {"month": "M", "quarter": "Q", "year": "Y"}[freq]
    # the day after each period's last (all at once; with no period at all, the missing dates as they come)
    ends = start.to_period(code).end_time.normalize() + pd.Timedelta(days=1) if start.notna().any() else \
        pd.DatetimeIndex([pd.NaT] * len(start))
    mid = start + (ends - start) / 2
    mid = mid.floor("D")
    labels = [("" if pd.isna(p) else f"{p:%b %Y}" if freq == "month" else f"{p.year} Q{p.quarter}"
               if freq == "quarter" else str(p.year)) for p in start]
    return mid, labels, freq


def _period_ticks(ax: Axes, mid, labels: list[str], freq: str, *, at_most: int = 9) -> None:
    """One tick per period at its midpoint, labelled with the period (every k-th label, at regular steps, when
    there are more than ``at_most``; the other ticks stay as minor ticks), and the axis running half a period
    beyond. ``labels`` are those of :func:`period_positions` (the ticks are made for every period in the
    range)."""
    shown = [pd.Timestamp(m) for m in mid if not pd.isna(m)]
    if not shown:
        return
    # every period from the first to the last, including any the chart leaves out (hidden, too few cases), so
    # that labelled ticks fall at regular steps
    code = {"month": "M", "quarter": "Q", "year": "Y"}[freq]
    every = pd.period_range(min(shown).to_period(code), max(shown).to_period(code), freq=code).start_time
    full_mid, full_labels, _ = period_positions(every, freq=freq)
    keep = list(zip(full_mid, full_labels, strict=True))
    k = max(1, int(np.ceil(len(keep) / at_most)))
    major = keep[::-1][::k][::-1]  # the latest period always labelled
    # two lines ("Q1" over "2024", "Mar" over "2024"): short enough not to run into each other
    ax.set_xticks([m for m, _ in major], labels=[t.replace(" ", "\n", 1) if freq == "month" else
                                                 "\n".join(t.split(" ")[::-1]) for _, t in major])
    # the minor ticks that a labelled one covers are never drawn (matplotlib drops them): not made at all
    labelled = {m for m, _ in major}
    ax.set_xticks([m for m, _ in keep if m not in labelled], minor=True)
    ax.tick_params(axis="x", which="minor", length=3)
    half = pd.Timedelta(days={"month": 16, "quarter": 46, "year": 183}[freq])
    ax.set_xlim(min(m for m, _ in keep) - half, max(m for m, _ in keep) + half)


def _drawn(artist) -> bool:
    """Whether an artist shows anything: a line with a finite point, a collection with a finite offset or a
    finite path, a container (error bars) with a drawn part."""
    if isinstance(artist, Container):
        return any(_drawn(child) for child in artist.get_children() if child is not None)
    if not artist.get_visible():
        return False
    if isinstance(artist, Line2D):
        x = np.asarray(artist.get_xdata(orig=False), dtype=float).ravel()
        y = np.asarray(artist.get_ydata(orig=False), dtype=float).ravel()
        n = min(len(x), len(y))
        return bool(np.any(np.isfinite(x[:n]) & np.isfinite(y[:n])))
    if isinstance(artist, Collection):
        offsets = np.asarray(artist.get_offsets(), dtype=float).reshape(-1, 2)
        if len(offsets) and np.isfinite(offsets).all(axis=1).any() and len(artist.get_paths()):
            return True
        return any(len(path.vertices) and np.isfinite(path.vertices).all(axis=1).any() and
                   not (isinstance(artist, PathCollection)) for path in artist.get_paths())
    return True


def legend(ax: Axes, **kwargs):
    """The legend of ``ax`` with an entry only for what is drawn (a series whose values are all hidden or
    missing gets no entry); no legend when nothing labelled is drawn."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, t) for h, t in zip(handles, labels, strict=True) if _drawn(h)]
    if not keep:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        return None
    return ax.legend([h for h, _ in keep], [t for _, t in keep], **kwargs)


def _title(ax: Axes) -> str:
    """The Axes' title, wherever it is placed (the theme puts it on the left)."""
    return next((t for t in (ax.get_title(loc="left"), ax.get_title(), ax.get_title(loc="right")) if t), "chart")


def _n(k: int, word: str, plural: str | None = None) -> str:
    """``"1 facility"``, ``"3 facilities"``."""
    return f"{k} {word if k == 1 else plural or word + 's'}"


def _describe(ax: Axes, alt: str, caption: str) -> None:
    """Record what the chart shows (the image's alt text) and what to look at (its caption) on the Axes, for
    :func:`show`."""
    ax.carequal_alt = alt
    ax.carequal_caption = caption


def describe(fig) -> tuple[str, str]:
    """``(alt, caption)`` of a figure: the descriptions its carequal charts recorded, joined."""
    axes = [a for a in fig.get_axes() if getattr(a, "carequal_alt", None)]
    alt = " ".join(a.carequal_alt for a in axes)
    captions = []
    for a in axes:
        if a.carequal_caption and a.carequal_caption not in captions:
            captions.append(a.carequal_caption)
    return alt, " ".join(captions)


def _names(values, at_most: int = 4) -> str:
    values = [str(v) for v in values]
    more = len(values) - at_most
    return ", ".join(values[:at_most]) + (f" and {more} more" if more > 0 else "")


_LABEL_SPOTS = [(dx * r, dy * r, {1: "left", -1: "right", 0: "center"}[dx], {1: "bottom", -1: "top", 0: "center"}[dy])
                for r in (6, 16, 28, 42)
                for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]
"""Where a label may go around its point (offsets in points, alignment), nearest first."""


def _display_paths(artists) -> list:
    paths = []
    for artist in artists:
        path = artist.get_transform().transform_path(artist.get_path())
        v = path.vertices[np.isfinite(path.vertices).all(axis=1)]
        if len(v) > 1:
            paths.append(Path(v))
    return paths


def _text_box(note, renderer):
    """The box of an annotation's text with a little margin (without its leader line, which
    ``get_window_extent`` would include: a label set off with a leader would then cover its own point)."""
    from matplotlib.text import Text

    note.update_positions(renderer)
    return Text.get_window_extent(note, renderer).padded(2)


def place_labels(ax: Axes, x, y, texts, *, avoid=(), fontsize="small") -> list:
    """Label points so that no label crosses a line of ``avoid`` (limits, target), another label or another
    point: each label tries a ring of places around its point and takes the first clear one (else the least
    crowded). The placement is redone by :func:`layout` after the figure's layout changes. Returns the
    annotations."""
    fig = ax.figure
    points = list(zip(np.asarray(x, dtype=float), np.asarray(y, dtype=float), [str(t) for t in texts], strict=True))

    def run() -> list:
        for old in getattr(ax, "carequal_labels", []):
            old.remove()
        renderer = fig.canvas.get_renderer()
        ax.get_xlim(), ax.get_ylim()  # apply any pending autoscaling: the geometry must be final
        lines = _display_paths(avoid)
        xy = ax.transData.transform([(px, py) for px, py, _ in points]) if points else np.empty((0, 2))
        frame = ax.get_window_extent(renderer)
        placed, boxes = [], []
        for i, (px, py, text) in enumerate(points):
            best, best_score = None, None
            for dx, dy, ha, va in _LABEL_SPOTS:
                far = abs(dx) > 10 or abs(dy) > 10  # a thin leader line from a label set further off
                note = ax.annotate(text, (px, py), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                   fontsize=fontsize, zorder=5,
                                   arrowprops={"arrowstyle": "-", "color": "#888888", "linewidth": 0.6,
                                               "shrinkA": 0, "shrinkB": 4} if far else None)
                box = _text_box(note, renderer)
                score = 10 * sum(path.intersects_bbox(box, filled=False) for path in lines)
                if far:  # a leader crossing a line is less confusing than text over it, but still a cost
                    leader = Path([xy[i], box.corners().mean(axis=0)])
                    score += 5 * sum(path.intersects_path(leader, filled=False) for path in lines)
                score += 10 * sum(box.overlaps(b) for b in boxes)
                score += sum(1 for j, (qx, qy) in enumerate(xy) if j != i and box.x0 - 4 <= qx <= box.x1 + 4
                             and box.y0 - 4 <= qy <= box.y1 + 4)
                score += 20 * (not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)))
                if best_score is None or score < best_score:
                    if best is not None:
                        best.remove()
                    best, best_score = note, score
                else:
                    note.remove()
                if score == 0:
                    break
            placed.append(best)
            boxes.append(_text_box(best, renderer))
        ax.carequal_labels = placed
        return placed

    fig.carequal_relayout = [*getattr(fig, "carequal_relayout", []), run]
    return run()


def layout(fig) -> None:
    """Lay out a figure of several charts (``tight_layout``; a figure with a colour bar keeps its own layout),
    then redo what depends on the final geometry (label placement)."""
    if len(fig.axes) > 1 and not any(hasattr(a, "_colorbar") for a in fig.axes):
        fig.tight_layout()
    for run in getattr(fig, "carequal_relayout", []):
        run()


def show(fig=None, *, alt: str | None = None, caption: str | None = None, dpi: int = 144) -> None:
    """Display a figure in a notebook as a PNG whose **alt text** says what the chart shows (from the
    descriptions the carequal charts record, or ``alt``), followed by its caption (what to look at); the
    figure is then closed. The report template (``carequal/templates/carequal_report``) writes the alt text
    from the output's metadata; ``text/plain`` carries it too."""
    import base64
    import io
    from html import escape

    from IPython.display import HTML, display  # only in a notebook kernel

    fig = fig if fig is not None else plt.gcf()
    _pin_titles(fig, dpi)  # before the layout, whose passes place the titles too
    layout(fig)
    described, described_caption = describe(fig)
    alt = alt or described or "Chart"
    caption = caption if caption is not None else described_caption
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches=_tight_bbox(fig, dpi))
    plt.close(fig)
    png = buffer.getvalue()
    width = int.from_bytes(png[16:20], "big") * 96 // dpi  # shown at the size the figure was drawn at
    display({"image/png": base64.b64encode(png).decode("ascii"), "text/plain": alt}, raw=True,
            metadata={"image/png": {"alt": alt, "width": width}})
    if caption:
        display(HTML(f'<p class="carequal-caption">{escape(caption)}</p>'))


def _pin_titles(fig, dpi: int) -> None:
    """Keep each axes' title where matplotlib's automatic placement would leave it (at the top of the axes), so
    that neither the layout passes nor the drawing search for decorations that could push it up.

    matplotlib moves a title up only over x tick marks, tick labels or an x label at the top, over the y axis's
    offset text (e.g. "1e6"), or when the title would reach below the top of the axes; finding that out measures
    every y tick label (and, when the x ticks are not plainly at the bottom, as with seaborn's themes, every x
    tick label), in every layout pass and drawing: about a tenth of drawing a packet's trend chart, a seventh
    of a market report's charts. An axes' titles are pinned only when none of these can happen: no twin, inset
    or title-aligned axes (whose decorations count too) and automatic aspect; no x tick mark, tick label or axis
    label at the top (the x axis's labels then lie below the axes); no y offset text (a formatter that never
    writes one, such as percent or "$" formats, or a ``ScalarFormatter`` whose offset for the ticks it will
    label is empty); and the titles already clear of the axes at ``dpi`` (their distance to the axes' top is
    the title pad less the text's descent, wherever the layout puts the axes). Anything else keeps the
    automatic placement. The PNG is the same, byte for byte, either way (``tests/test_chart_defects.py``).
    Pinning sets the flag ``Axes.set_title(y=...)`` sets, without re-applying the title's style; should a
    matplotlib version lack what this reads, nothing changes but the speed."""
    try:
        candidates = [ax for ax in fig.axes if _title_may_be_pinned(fig, ax)]
    except AttributeError:  # another matplotlib's internals: keep the automatic placement
        return
    if not candidates:
        return
    with _measured_at(fig, dpi) as renderer:
        for ax in candidates:
            top = ax.get_window_extent(renderer).ymax
            titles = [t for t in (ax.title, ax._left_title, ax._right_title) if t.get_text()]
            if all(t.get_position()[1] == 1.0 and t.get_window_extent(renderer).ymin >= top for t in titles):
                ax._autotitlepos = False


def _title_may_be_pinned(fig, ax) -> bool:
    """Whether nothing but the title's own height could move ``ax``'s titles (see :func:`_pin_titles`)."""
    from matplotlib.ticker import Formatter, ScalarFormatter

    if (not any(t.get_text() for t in (ax.title, ax._left_title, ax._right_title))
            or ax._autotitlepos is not True or ax.child_axes or ax.get_aspect() != "auto"
            or ax._twinned_axes.get_siblings(ax) != [ax]
            or fig._align_label_groups["title"].get_siblings(ax) != [ax]
            or ax.xaxis.get_label_position() != "bottom"
            or any(t.tick2line.get_visible() or t.label2.get_visible()  # anything at the top (matplotlib looks
                   for t in (ax.xaxis.majorTicks[0], ax.xaxis.minorTicks[0]))  # at the first tick of each kind)
            or ax.yaxis.offsetText.get_text()):
        return False
    formatter = ax.yaxis.get_major_formatter()
    if type(formatter).get_offset is Formatter.get_offset:
        return True
    if not isinstance(formatter, ScalarFormatter):
        return False
    # the offset the drawing will find: the formatter set to the ticks it will label (as drawing does)
    formatter.set_locs(ax.yaxis.get_majorticklocs())
    return not formatter.get_offset()


def _tight_bbox(fig, dpi: int):
    """The box ``savefig(bbox_inches="tight")`` would save (inches, padded by ``savefig.pad_inches``), measured
    at ``dpi`` without drawing the figure: given the box, ``savefig`` draws the figure once, where "tight"
    draws it twice (a layout pass to find the box, then the image) — two fifths of a chart's rendering."""
    with _measured_at(fig, dpi) as renderer:
        return fig.get_tightbbox(renderer).padded(plt.rcParams["savefig.pad_inches"])


@contextmanager
def _measured_at(fig, dpi: int):
    """``fig``'s renderer with the figure set to ``dpi`` meanwhile (text is measured at the dpi it is drawn at;
    the figure's own dpi is restored after)."""
    original = fig.dpi
    fig.dpi = dpi
    try:
        yield fig.canvas.get_renderer()
    finally:
        fig.dpi = original


def _share(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pct_label(level: float) -> str:
    return f"{level * 100:g}%"


def _partner_legend(ax: Axes, marker: str = "o", **kwargs) -> None:
    handles = [Line2D([], [], marker=marker, linestyle="", color=PALETTE["partner"], label="Partner"),
               Line2D([], [], marker=marker, linestyle="", color=PALETTE["non_partner"], label="Not a partner")]
    ax.legend(handles=handles, **kwargs)


# ------------------------------------------------------------------------------------------------ funnel


def funnel_plot(funnel, *, x: str | None = None, label_col: str | None = None, partner: str | None = None,
                adjusted: bool = True, title: str | None = None, ax: Axes | None = None) -> Axes:
    """Funnel plot: each unit's ratio (or rate) against its size, with the limits at both levels.

    Parameters
    ----------
    funnel : carequal.compare.Funnel
        The result of :func:`carequal.compare.funnel_data`; ``funnel.units`` gives the points,
        ``funnel.limits`` the curves, ``funnel.target`` the centre line.
    x : str, optional
        Column of the units' size on the horizontal axis: ``"expected"`` (SR) or ``"n"`` (PR) by default.
    label_col : str, optional
        Column naming the units; units outside the limits (``funnel_class`` not "within") are labelled with it.
    partner : str, optional
        Boolean column of ``funnel.units``; partners are drawn in the partner colour.
    adjusted : bool
        Draw the over-dispersion-adjusted limits (the ones that classified the units) when the funnel has them;
        otherwise the exact (unadjusted) ones. A funnel with no over-dispersion to adjust for has only the exact
        limits (``funnel.adjusted`` is False), which then classified the units and are drawn.
    title : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        One scatter collection per partner group, one limit line per level and side (narrower level dashed,
        wider solid), labelled ``"<level> limits"``, and the target line labelled ``"Target"``.

    Examples
    --------
    >>> from carequal.compare import funnel_data
    >>> df = pd.DataFrame({"facility_id": list("ABCDEFGH"), "observed": [30, 45, 62, 20, 95, 52, 140, 33],
    ...                    "expected": [40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0],
    ...                    "is_partner": [True, False, False, True, False, False, False, False]})
    >>> ax = funnel_plot(funnel_data(df), label_col="facility_id", partner="is_partner")
    >>> sum(len(c.get_offsets()) for c in ax.collections)
    8
    >>> plt.close("all")
    """
    units, limits = funnel.units, funnel.limits
    sr = funnel.data_type == "SR"
    x = x or ("expected" if sr else "n")
    y = "ratio" if sr else "rate"
    _require(units, [x, y, label_col, partner], "funnel_plot")
    _require(limits, ["x", "level", "lower", "upper", "adjusted"], "funnel_plot limits")
    ax = _ax(ax)

    has_adjusted = bool(limits["adjusted"].any())
    use = limits["adjusted"] == (adjusted and has_adjusted)
    levels = sorted(limits.loc[use, "level"].unique())
    styles = ["--", "-", ":", "-."]
    xs_all = units[x].to_numpy(dtype=float)
    # draw the limits from half the smallest unit's size: near zero they fan out to ratios no unit can have
    x_from = 0.5 * np.nanmin(xs_all[xs_all > 0]) if np.any(xs_all > 0) else -np.inf
    limit_lines = []
    for i, level in enumerate(levels):
        curve = limits[use & (limits["level"] == level) & (limits["x"] >= x_from)]
        style = styles[i % len(styles)]
        limit_lines += ax.plot(curve["x"], curve["upper"], linestyle=style, color=PALETTE["limit"], linewidth=1.2,
                               label=f"{_pct_label(level)} limits")
        limit_lines += ax.plot(curve["x"], curve["lower"], linestyle=style, color=PALETTE["limit"], linewidth=1.2,
                               label=f"_{_pct_label(level)} limits (lower)")
    target_line = ax.axhline(funnel.target, color=PALETTE["target"], linewidth=1.5, linestyle="-.",
                             label="Target")

    is_partner = _partner_mask(units, partner)
    xs, ys = units[x].to_numpy(dtype=float), units[y].to_numpy(dtype=float)
    groups = [(~is_partner, PALETTE["non_partner"], "o", "Not a partner" if partner else "Facility")]
    if partner is not None:
        groups.append((is_partner, PALETTE["partner"], "D", "Partner"))
    for mask, colour, marker, name in groups:
        if mask.any():
            ax.scatter(xs[mask], ys[mask], color=colour, marker=marker, edgecolor="white", s=55, zorder=3,
                       label=name)

    ax.set_xlabel("Expected events (bigger facilities to the right)" if sr
                  else "Number of cases (bigger facilities to the right)")
    if sr:
        ax.set_ylabel("Observed / expected (1 = as expected)")
    else:
        ax.set_ylabel("Rate")
        _percent(ax.yaxis)
    adjusted_note = " (allowing for between-facility variation)" if adjusted and has_adjusted else ""
    ax.set_title(title or f"Which facilities stand out?{adjusted_note}")
    legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)  # below: clear of the limits and dots

    cls = units["funnel_class"].fillna("within").to_numpy() if "funnel_class" in units.columns else \
        np.array(["within"] * len(units))
    names = units[label_col].astype(str).to_numpy() if label_col is not None else \
        np.array([f"facility {i + 1}" for i in range(len(units))])
    if label_col is not None:
        out = np.flatnonzero(cls != "within")
        place_labels(ax, xs[out], ys[out], names[out], avoid=[*limit_lines, target_line])
    widest = f"{_pct_label(levels[-1])} limit" if levels else "limits"
    parts = []
    for side, word in (("high", "above"), ("low", "below")):
        hit = np.flatnonzero(np.char.startswith(cls.astype(str), side))
        if len(hit):
            parts.append(f"{len(hit)} of {_n(len(units), 'facility', 'facilities')} {word} the limits ("
                         + _names(f"{names[i]}, {'O/E' if sr else 'rate'} {ys[i]:.2f}"
                                  f"{', partner' if is_partner[i] else ''}, outside the {cls[i].split()[-1]} limit"
                                  for i in hit) + ")")
    found = "; ".join(parts) if parts else ("the one facility within the limits" if len(units) == 1 else
                                            "both facilities within the limits" if len(units) == 2 else
                                            f"all {len(units)} facilities within the limits")
    _describe(ax, f"Funnel plot ({_title(ax)}): {found}. The widest limits drawn are the {widest}s.",
              "Look for dots outside the funnel lines: only those facilities differ from expectation by more than "
              "chance; a dot inside the funnel is within ordinary variation for its size.")
    return ax


# ------------------------------------------------------------------------------------------------ caterpillar


def caterpillar_plot(table: pd.DataFrame, *, ratio: str = "ratio", lower: str = "lower", upper: str = "upper",
                     label: str = "group", partner: str | None = None, reference: float = 1.0,
                     title: str | None = None, xlabel: str | None = None, ax: Axes | None = None) -> Axes:
    """Facilities ranked by ratio (lowest at the bottom) with their intervals and a reference line at 1.

    Parameters
    ----------
    table : DataFrame
        One row per facility, e.g. :meth:`carequal.risk.HierarchicalLogit.bootstrap_pe` (``group``, ``ratio``,
        ``lower``, ``upper``) or :func:`carequal.compare.scorecard` for one measure (``label="facility_id"``).
    ratio, lower, upper, label : str
        Columns of the estimate, its interval and the facility name.
    partner : str, optional
        Boolean column; partners are drawn in the partner colour and their names in bold.
    reference : float
        Where the "as expected" line goes (1 for ratios).
    title, xlabel : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        One error-bar container per partner group; the points' order is the ranking by ``ratio``.

    Examples
    --------
    >>> t = pd.DataFrame({"group": ["A", "B", "C"], "ratio": [1.2, 0.8, 1.0], "lower": [1.05, 0.6, 0.9],
    ...                   "upper": [1.4, 1.1, 1.1], "is_partner": [True, False, False]})
    >>> ax = caterpillar_plot(t, partner="is_partner")
    >>> [tick.get_text() for tick in ax.get_yticklabels()]
    ['B', 'C', 'A']
    >>> plt.close("all")
    """
    _require(table, [ratio, lower, upper, label, partner], "caterpillar_plot")
    # rank for display only; the table itself is left as given
    order = np.argsort(table[ratio].to_numpy(dtype=float), kind="stable")
    est = table[ratio].to_numpy(dtype=float)[order]
    lo = table[lower].to_numpy(dtype=float)[order]
    hi = table[upper].to_numpy(dtype=float)[order]
    names = table[label].astype(str).to_numpy()[order]
    is_partner = _partner_mask(table, partner)[order]
    pos = np.arange(len(est))
    ax = _ax(ax, figsize=(8, max(3.0, 0.28 * len(est) + 1.5)))

    ax.axvline(reference, color=PALETTE["target"], linewidth=1.2, linestyle="--", label="As expected")
    groups = [(~is_partner, PALETTE["non_partner"], "o", "Not a partner" if partner else "Facility")]
    if partner is not None:
        groups.append((is_partner, PALETTE["partner"], "D", "Partner"))
    for mask, colour, marker, name in groups:
        if mask.any():
            ax.errorbar(est[mask], pos[mask], xerr=[est[mask] - lo[mask], hi[mask] - est[mask]], fmt=marker,
                        color=colour, ecolor=colour, elinewidth=2, capsize=0, markersize=6, label=name, zorder=3)
    ax.set_yticks(pos, labels=names)
    for tick, p in zip(ax.get_yticklabels(), is_partner, strict=True):
        if p:
            tick.set_fontweight("bold")
            tick.set_color(PALETTE["partner"])
    ax.set_ylim(-0.7, len(est) - 0.3)
    ax.set_xlabel(xlabel or "Ratio to expected (1 = as expected; interval shown)")
    ax.set_ylabel("")
    ax.set_title(title or "Facilities ranked, with their uncertainty")
    legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)  # below: clear of the intervals
    above, below = np.flatnonzero(lo > reference), np.flatnonzero(hi < reference)
    parts = [f"{len(idx)} with the interval wholly {word} {reference:g} ({_names(names[idx][::-1])})"
             for idx, word in ((above, "above"), (below, "below")) if len(idx)]
    span = (f"from {names[0]} ({est[0]:.2f}) to {names[-1]} ({est[-1]:.2f})" if len(est) > 1 else
            f"{names[0]} ({est[0]:.2f})" if len(est) else "")
    _describe(ax, f"Caterpillar plot ({_title(ax)}): {_n(len(est), 'facility', 'facilities')} ranked {span}; "
              + ("; ".join(parts) if parts else f"every interval includes {reference:g}") + ".",
              f"Look for intervals that do not cross the dashed line at {reference:g}; where most intervals "
              "overlap, the ranking is mostly noise.")
    return ax


# ------------------------------------------------------------------------------------------------ SPC


def spc_plot(chart: pd.DataFrame, *, period: str = "period", value: str | None = None, percent: bool | None = None,
             title: str | None = None, ylabel: str | None = None, ax: Axes | None = None) -> Axes:
    """Control chart: the values over time, the centre line, 2σ (dashed) and 3σ (solid) limits, signals marked.

    Parameters
    ----------
    chart : DataFrame
        Output of :func:`carequal.compare.p_chart`, :func:`~carequal.compare.laney_p_chart` or
        :func:`~carequal.compare.xmr_chart` (``centre``, ``lower_2sigma`` … ``upper_3sigma``, ``signal``).
    period : str
        Column of the period.
    value : str, optional
        Column plotted: ``"rate"`` if the chart has it, else ``"value"``.
    percent : bool, optional
        Format the vertical axis as %; by default when ``value`` is ``"rate"``.
    title, ylabel : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        Lines labelled ``"Value"``, ``"Centre"``, ``"2σ limits"``, ``"3σ limits"``; one scatter collection per
        signal present (``"Concern"``, ``"Improvement"``, ``"Special cause"``) and one for common-cause points.

    Examples
    --------
    >>> from carequal.compare import p_chart
    >>> df = pd.DataFrame({"period": range(1, 5), "events": [10, 12, 9, 30], "n": [100, 100, 100, 100]})
    >>> ax = spc_plot(p_chart(df, baseline=3, improvement="lower"))
    >>> [c.get_label() for c in ax.collections]
    ['Common cause', 'Concern']
    >>> plt.close("all")
    """
    if value is None:
        value = "rate" if "rate" in chart.columns else "value"
    limit_cols = ["centre", "lower_2sigma", "upper_2sigma", "lower_3sigma", "upper_3sigma", "signal"]
    _require(chart, [period, value] + limit_cols, "spc_plot")
    ax = _ax(ax, figsize=(9, 4.5))
    t = chart[period].to_numpy()
    v = chart[value].to_numpy(dtype=float)

    dated = pd.api.types.is_datetime64_any_dtype(pd.Series(t))
    if dated:  # each period at its midpoint, one tick per period
        t, tick_labels, freq = period_positions(t, freq=chart.attrs.get("freq"))
        t = t.to_numpy()
    # limits vary with the denominator on p-charts: steps centred on each period show that honestly. Each series
    # has its own line style (and the values markers), so none is told apart by colour alone
    step = {"drawstyle": "steps-mid"}
    ax.plot(t, chart["centre"].astype(float), color=PALETTE["target"], linewidth=1.2, linestyle="-.", label="Centre",
            **step)
    for k, style in ((2, ":"), (3, "--")):
        ax.plot(t, chart[f"upper_{k}sigma"].astype(float), color=PALETTE["limit"], linestyle=style, linewidth=1.1,
                label=f"{k}σ limits", **step)
        ax.plot(t, chart[f"lower_{k}sigma"].astype(float), color=PALETTE["limit"], linestyle=style, linewidth=1.1,
                label=f"_{k}σ lower", **step)
    ax.plot(t, v, color=OKABE_ITO[5], linewidth=1.8, linestyle="-", marker="o", markersize=4, label="Value",
            zorder=2)

    signal = chart["signal"].fillna("").to_numpy()
    common = ((signal == "common cause") | (signal == "")) & np.isfinite(v)
    ax.scatter(t[common], v[common], color=PALETTE["common_cause"], marker="o", s=30, zorder=3, label="Common cause")
    markers = {"concern": "^", "improvement": "v", "neither": "s"}
    for name, text in _SIGNAL_LABELS.items():
        mask = signal == name
        if mask.any():
            ax.scatter(t[mask], v[mask], color=PALETTE[name], marker=markers[name], s=70, zorder=4, label=text)

    is_percent = percent if percent is not None else value == "rate"
    if is_percent:
        _percent(ax.yaxis)
    if dated:
        _period_ticks(ax, t, tick_labels, freq)
    method = str(chart["chart"].iloc[0]) if "chart" in chart.columns and len(chart) else "Control chart"
    ax.set_title(title or f"Is it changing? ({method})")
    ax.set_xlabel({"month": "Month", "quarter": "Quarter", "year": "Year"}.get(freq, "Period") if dated
                  else "Period")
    ax.set_ylabel(ylabel or ("Rate" if value == "rate" else "Value"))
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1))

    def fmt(x: float) -> str:
        return f"{100 * x:.1f}%" if is_percent else f"{x:,.2f}"

    names = tick_labels if dated else [str(p) for p in chart[period]]
    shown = np.flatnonzero(np.isfinite(v))
    if len(shown):
        centre = chart["centre"].astype(float).to_numpy()
        seen = f"{_n(len(shown), 'period')} from {names[shown[0]]} ({fmt(v[shown[0]])}) to {names[shown[-1]]} " \
               f"({fmt(v[shown[-1]])})"
        if np.isfinite(centre).any():
            seen += f", centre line {fmt(float(np.nanmean(centre)))}"
        hits = [f"{_SIGNAL_LABELS[k].lower()} in {_names([names[i] for i in np.flatnonzero(signal == k)])}"
                for k in _SIGNAL_LABELS if (signal == k).any()]
        found = "special-cause signals: " + "; ".join(hits) if hits else "no special-cause signal"
    else:
        seen, found = "no period with enough cases to show", "nothing to judge"
    _describe(ax, f"Control chart ({_title(ax)}): {seen}; {found}.",
              "Look for the marked points (▲ concern, ▼ improvement): signals of special-cause change worth "
              "investigating; movement inside the dashed 3σ limits is ordinary variation.")
    return ax


# ------------------------------------------------------------------------------------------------ trend


def trend_plot(trend: pd.DataFrame, *, period: str = "period", rate: str = "rate", lower: str | None = "lower",
               upper: str | None = "upper", hue: str | None = None, percent: bool = True, title: str | None = None,
               ylabel: str | None = None, ax: Axes | None = None) -> Axes:
    """Rates over time, one line per ``hue`` group (market, partner status), with interval bands.

    Parameters
    ----------
    trend : DataFrame
        :func:`carequal.measures.trend_table` output (``period``, ``n``, ``events``, ``rate``, ``lower``,
        ``upper``), by group if ``hue`` is given. Periods with ``n = 0`` have no rate and leave a gap.
    period, rate, lower, upper : str
        Columns; ``lower=None`` or ``upper=None`` draws no band.
    hue : str, optional
        Grouping column, one line (and band) per value, in sorted order. Boolean partner columns are named
        "Partner" / "Not a partner" and drawn in the partner colours.
    percent : bool
        Format the vertical axis as %.
    title, ylabel : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        One line per group, labelled with the group, and one band (``PolyCollection``) per group.

    Examples
    --------
    >>> from carequal.measures import trend_table
    >>> df = pd.DataFrame({"discharge_date": pd.to_datetime(["2024-01-05", "2024-02-02", "2024-03-20"] * 2),
    ...                    "market": ["N"] * 3 + ["S"] * 3, "readmitted_30d": [True, False, True] * 2})
    >>> ax = trend_plot(trend_table(df, by=["market"], events="readmitted_30d"), hue="market")
    >>> [line.get_label() for line in ax.get_lines()]
    ['N', 'S']
    >>> plt.close("all")
    """
    band = lower is not None and upper is not None
    _require(trend, [period, rate, hue] + ([lower, upper] if band else []), "trend_plot")
    ax = _ax(ax, figsize=(9, 4.5))
    if hue is None:
        keys = [None]
    else:
        keys = sorted(trend[hue].dropna().unique().tolist())
    boolean_hue = hue is not None and set(keys) <= {True, False}
    trend = trend.reset_index(drop=True)  # a copy: positions and labels by row
    dated = pd.api.types.is_datetime64_any_dtype(trend[period])
    if dated:
        positions, tick_labels, freq = period_positions(trend[period], freq=trend.attrs.get("freq"))
        x_all = pd.Series(positions, index=trend.index)
        names_of = pd.Series(tick_labels, index=trend.index)
    else:
        x_all = trend[period]
        names_of = trend[period].astype(str)
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    summary = []
    for i, key in enumerate(keys):
        part = trend if key is None else trend[trend[hue] == key]
        if boolean_hue:
            colour = PALETTE["partner"] if key else PALETTE["non_partner"]
            name = "Partner" if key else "Not a partner"
            style, marker = styles[0] if key else styles[1]
        else:
            colour = OKABE_ITO[(i + 5) % len(OKABE_ITO)] if len(keys) > 1 else PALETTE["line"]
            name = "Rate" if key is None else str(key)
            style, marker = styles[i % len(styles)]
        values = part[rate].astype(float)
        ax.plot(x_all[part.index], values, color=colour, linewidth=2, linestyle=style, marker=marker, markersize=4,
                label=name)
        if band:
            ax.fill_between(x_all[part.index], part[lower].astype(float), part[upper].astype(float), color=colour,
                            alpha=0.18, linewidth=0, label=f"_{name} interval")
        ok = np.flatnonzero(values.notna().to_numpy())
        if len(ok):
            first, last = ok[0], ok[-1]
            when = names_of.loc[part.index].to_numpy()
            fmt = "{:.1%}" if percent else "{:,.2f}"
            summary.append(f"{name}: {fmt.format(values.iloc[first])} in {when[first]}" + (
                f" to {fmt.format(values.iloc[last])} in {when[last]}" if last != first else ""))
    if percent:
        _percent(ax.yaxis)
    if dated:
        unique = x_all.drop_duplicates()
        _period_ticks(ax, unique.to_numpy(), names_of.loc[unique.index].tolist(), freq)
    ax.set_xlabel({"month": "Month", "quarter": "Quarter", "year": "Year"}.get(freq, "Period") if dated else "Period")
    if ylabel is None:
        level = trend["level"].dropna() if "level" in trend.columns else pd.Series(dtype=float)
        interval = f"{_pct_label(float(level.iloc[0]))} interval" if len(level) else "interval"
        ylabel = f"Rate (shaded: {interval})" if band else "Rate"
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Rate over time")
    if hue is not None:
        legend(ax, title=None, loc="best")
    _describe(ax, f"Line chart ({_title(ax)}): " + ("; ".join(summary) if summary else
                                                        "no period with enough cases to show") + ".",
              "Look at whether the lines move apart or together over time; the shaded bands are the 95% "
              "intervals, and a gap is a period with too few cases to show.")
    return ax


def target_trend_plot(trend: pd.DataFrame, *, period: str = "period", value: str = "value", lower: str = "lower",
                      upper: str = "upper", target: str = "target", benchmark: str | None = "benchmark",
                      signal: str | None = "signal", start=None, percent: bool = True, title: str | None = None,
                      ylabel: str | None = None, ax: Axes | None = None) -> Axes:
    """An agreed metric over review periods: the value with its interval, the target, the market benchmark,
    the partnership's start, and SPC signals.

    Parameters
    ----------
    trend : DataFrame
        One row per period (:func:`carequal.packet.metric_trend`); missing values (hidden or no cases) leave gaps.
    start : date-like, optional
        Partnership start, drawn as a vertical line.
    percent : bool
        Format the vertical axis as %.

    Returns
    -------
    Axes
        Lines labelled ``"Partner"``, ``"Target"`` and (when present) ``"Market non-partners"``; one scatter
        collection per signal present.

    Examples
    --------
    >>> t = pd.DataFrame({"period": pd.to_datetime(["2024-01-01", "2024-04-01", "2024-07-01"]),
    ...                   "value": [0.2, None, 0.15], "lower": [0.15, None, 0.1], "upper": [0.25, None, 0.2],
    ...                   "target": 0.18, "benchmark": [0.2, 0.21, 0.19], "signal": ["", "", "improvement"]})
    >>> ax = target_trend_plot(t, start="2024-03-01")
    >>> [line.get_label() for line in ax.get_lines()][:3]
    ['Partner', 'Target', 'Market non-partners']
    >>> plt.close("all")
    """
    _require(trend, [period, value, lower, upper, target], "target_trend_plot")
    ax = _ax(ax, figsize=(9, 4.2))
    x, tick_labels, freq = period_positions(trend[period], freq=trend.attrs.get("freq"))
    values = trend[value].astype(float).to_numpy()
    ax.plot(x, values, color=PALETTE["partner"], linewidth=2, linestyle="-", marker="o", markersize=5,
            label="Partner")
    ax.fill_between(x, trend[lower].astype(float), trend[upper].astype(float), color=PALETTE["partner"], alpha=0.18,
                    linewidth=0, label="_interval")
    targets = trend[target].astype(float).to_numpy()
    lines = []
    if np.isfinite(targets).any():  # no line, no legend entry
        lines += ax.plot(x, targets, color=PALETTE["target"], linewidth=1.5, linestyle="--", label="Target")
    has_benchmark = benchmark is not None and benchmark in trend.columns and trend[benchmark].notna().any()
    if has_benchmark:
        lines += ax.plot(x, trend[benchmark].astype(float), color=PALETTE["non_partner"], linewidth=1.5,
                         linestyle="-.", marker="s", markersize=4, label="Market non-partners")
    hits = []
    if signal is not None and signal in trend.columns:
        for kind in ("concern", "improvement", "neither"):
            hit = (trend[signal] == kind).to_numpy()
            if hit.any():
                ax.scatter(x[hit], values[hit], s=90, facecolors="none", edgecolors=PALETTE[kind], linewidths=2,
                           zorder=5, label=f"{_SIGNAL_LABELS[kind]} (SPC)")
                hits.append(f"{_SIGNAL_LABELS[kind].lower()} in {_names(np.asarray(tick_labels)[hit])}")
    started = start is not None and not pd.isna(start)
    if started:  # the start's date is in the legend, not written over the lines
        ax.axvline(pd.Timestamp(start), color=PALETTE["line"], linewidth=1.2, linestyle=":",
                   label=f"Partnership starts ({pd.Timestamp(start):%-d %b %Y})")
    if percent:
        _percent(ax.yaxis)
    _period_ticks(ax, x, tick_labels, freq)
    if started and len(x):  # the start inside the axis even when it falls before the first period shown
        lo_x, hi_x = ax.get_xlim()
        s_x = float(date2num(pd.Timestamp(start)))
        ax.set_xlim(min(lo_x, s_x - 20), max(hi_x, s_x + 20))
    ax.set_xlabel({"year": "Year", "month": "Month", "quarter": "Quarter"}.get(freq, "Review period"))
    ax.set_ylabel(ylabel or "Value (shaded: 95% interval)")
    ax.set_title(title or "Agreed metric over time")
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)

    fmt = "{:.1%}" if percent else "{:,.1f}"
    ok = np.flatnonzero(np.isfinite(values))
    seen = (f"partner from {fmt.format(values[ok[0]])} in {tick_labels[ok[0]]} to {fmt.format(values[ok[-1]])} in "
            f"{tick_labels[ok[-1]]} ({len(ok)} of {len(values)} periods shown)") if len(ok) else \
        "no period with enough cases to show the partner's value"
    if np.isfinite(targets).any():
        seen += f"; target {fmt.format(targets[np.isfinite(targets)][-1])} in the latest period with one"
    if started:
        seen += f"; partnership started {pd.Timestamp(start):%-d %B %Y}"
    seen += "; " + ("SPC signals: " + "; ".join(hits) if hits else "no SPC signal")
    _describe(ax, f"Trend by {freq} ({_title(ax)}): {seen}.",
              "Look at where the partner's line sits against the dashed target line, and how it moved after the "
              "dotted line where the partnership started; circled points are SPC signals.")
    return ax


# ------------------------------------------------------------------------------------------------ flows


def flow_heatmap(counts: pd.DataFrame, *, source: str = "hospital_id", target: str = "pac_facility_id",
                 n: str = "n", partner: str | None = None, annotate: bool = True, title: str | None = None,
                 ax: Axes | None = None) -> Axes:
    """Heatmap of discharges from each hospital (rows) to each post-acute facility (columns); partners marked.

    Parameters
    ----------
    counts : DataFrame
        Pre-aggregated, one row per hospital × PAC facility: ``source``, ``target``, ``n`` and optionally a
        boolean ``partner`` flag of the PAC facility — e.g. ``post_acute_episodes(...)`` counted by
        ``["hospital_id", "pac_facility_id", "pac_is_partner"]``. Pairs not in the table are drawn as 0; a
        pair whose ``n`` is missing (suppressed, :func:`carequal.report.flow_table`) is hatched, not drawn.
    source, target, n : str
        Columns of the hospital, the PAC facility and the count.
    partner : str, optional
        Boolean column flagging partner PAC facilities: their columns are outlined and their names bold.
    annotate : bool
        Write the counts in the cells.
    title : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        The heatmap (a ``QuadMesh`` with one cell per hospital × facility) and one outline ``Rectangle`` per
        partner column.

    Examples
    --------
    >>> c = pd.DataFrame({"hospital_id": ["H1", "H1", "H2"], "pac_facility_id": ["S1", "S2", "S1"],
    ...                   "n": [12, 3, 7], "pac_is_partner": [True, False, True]})
    >>> ax = flow_heatmap(c, partner="pac_is_partner")
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['S1 ★', 'S2']
    >>> plt.close("all")
    """
    import seaborn as sns  # ~0.6 s, for the theme and one chart: loaded when they are used

    _require(counts, [source, target, n, partner], "flow_heatmap")
    dup = counts.duplicated([source, target])
    if dup.any():
        raise ParameterError(f"flow_heatmap: {int(dup.sum())} repeated ({source}, {target}) pair(s); give one "
                             f"row per pair (count the episodes by [{source!r}, {target!r}] first)")
    # a reshape, not an aggregation: one cell per given row, absent pairs are zero flows, and a pair whose
    # count is missing (suppressed) is hatched, never drawn as 0
    values = pd.to_numeric(counts[n], errors="coerce").astype("float64")
    matrix = counts.assign(_value=values.to_numpy()).pivot(index=source, columns=target, values="_value")
    present = counts.assign(_present=1.0).pivot(index=source, columns=target, values="_present").notna()
    hidden = (present & matrix.isna()).to_numpy()
    matrix = matrix.where(present, 0.0)
    ax = _ax(ax, figsize=(max(6.0, 0.6 * matrix.shape[1] + 3), max(4.0, 0.45 * matrix.shape[0] + 2)))
    sns.heatmap(matrix, ax=ax, cmap="Blues", annot=annotate, fmt=".0f", linewidths=0.5, linecolor="white",
                mask=hidden, cbar_kws={"label": "Discharges"})
    for i, j in zip(*np.nonzero(hidden), strict=True):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor=PALETTE["limit"], linewidth=0,
                               label="_suppressed"))
    is_partner_col = np.zeros(matrix.shape[1], dtype=bool)
    if partner is not None:
        flags = counts.groupby(target)[partner].agg(lambda s: bool(s.fillna(False).astype(bool).any()))
        is_partner_col = flags.reindex(matrix.columns).fillna(False).to_numpy(dtype=bool)
        for j in np.flatnonzero(is_partner_col):
            ax.add_patch(Rectangle((j, 0), 1, matrix.shape[0], fill=False, edgecolor=PALETTE["partner"],
                                   linewidth=2.5, clip_on=False))
        labels = [f"{c} ★" if p else str(c) for c, p in zip(matrix.columns, is_partner_col, strict=True)]
        ax.set_xticks(np.arange(matrix.shape[1]) + 0.5, labels=labels)
        for tick, p in zip(ax.get_xticklabels(), is_partner_col, strict=True):
            if p:
                tick.set_fontweight("bold")
                tick.set_color(PALETTE["partner"])
    ax.tick_params(axis="y", labelrotation=0)
    notes = (["★ outlined = partner"] if partner is not None else []) + (
        ["hatched = small number, not shown"] if hidden.any() else [])
    ax.set_xlabel("Post-acute facility" + (f" ({'; '.join(notes)})" if notes else ""))
    ax.set_ylabel("Discharging hospital")
    ax.set_title(title or "Where patients go after hospital")
    shown = matrix.where(~pd.DataFrame(hidden, index=matrix.index, columns=matrix.columns))
    stacked = shown.stack().dropna()
    top = stacked.idxmax() if len(stacked) and stacked.max() > 0 else None
    biggest = f"; the largest flow is from {top[0]} to {top[1]} ({stacked.max():,.0f} discharges)" if top else ""
    _describe(ax, f"Heatmap ({_title(ax)}): discharges from {_n(matrix.shape[0], 'hospital')} (rows) to "
              f"{_n(matrix.shape[1], 'post-acute provider')} (columns), {int(is_partner_col.sum())} of them partners "
              f"(outlined, ★){biggest}" + ("; hatched cells are small numbers not shown" if hidden.any() else "")
              + ".", "Look at how much of each hospital's row falls in the outlined partner columns: darker cells "
              "are more discharges.")
    return ax


# ------------------------------------------------------------------------------------------------ calibration


def calibration_plot(table: pd.DataFrame, *, expected_rate: str = "expected_rate",
                     observed_rate: str = "observed_rate", title: str | None = None, ax: Axes | None = None) -> Axes:
    """Observed against expected rate by decile of predicted risk, with the line of perfect calibration.

    Parameters
    ----------
    table : DataFrame
        :func:`carequal.risk.calibration_table` output (``decile``, ``n``, ``observed``, ``expected``,
        ``observed_rate``, ``expected_rate``).
    expected_rate, observed_rate : str
        Columns on the horizontal and vertical axes.
    title : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        The diagonal (label ``"Perfect calibration"``), the decile line and one scatter point per decile; both
        axes in %.

    Examples
    --------
    >>> from carequal.risk import calibration_table
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.05, 0.4, 200)
    >>> ax = calibration_plot(calibration_table(rng.uniform(size=200) < p, p))
    >>> len(ax.collections[0].get_offsets())
    10
    >>> plt.close("all")
    """
    _require(table, [expected_rate, observed_rate], "calibration_plot")
    ax = _ax(ax, figsize=(5.5, 5.5))
    e = table[expected_rate].to_numpy(dtype=float)
    o = table[observed_rate].to_numpy(dtype=float)
    top = float(np.nanmax(np.concatenate([e, o, [0.01]]))) * 1.08
    ax.plot([0, top], [0, top], color=PALETTE["limit"], linestyle="--", linewidth=1, label="Perfect calibration")
    ax.plot(e, o, color=OKABE_ITO[5], linewidth=1.5, label="_deciles")
    ax.scatter(e, o, color=OKABE_ITO[5], s=45, zorder=3, label="Decile of predicted risk")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    _percent(ax.xaxis)
    _percent(ax.yaxis)
    ax.set_xlabel("Expected rate (model)")
    ax.set_ylabel("Observed rate")
    ax.set_title(title or "Does the risk model predict well?")
    legend(ax, loc="upper left")
    gap = float(np.nanmax(np.abs(o - e))) if len(e) else float("nan")
    _describe(ax, f"Calibration plot ({_title(ax)}): observed against expected rate in {len(e)} groups of "
              f"predicted risk, expected rates from {_share(np.nanmin(e))} to {_share(np.nanmax(e))}; the "
              f"largest gap between observed and expected is {100 * gap:.1f} percentage points.",
              "Look at how close the points lie to the dashed diagonal: on it, the model predicts as many events "
              "as happened.")
    return ax


def shared_legend(fig, axes) -> None:
    """One legend for a row of charts that share their series (each market the same colour in every panel),
    centred below them: the first chart's entries, every chart's own legend removed.

    Examples
    --------
    >>> fig, axes = plt.subplots(1, 2)
    >>> for ax in axes:
    ...     _ = ax.plot([0, 1], label="A"), ax.plot([1, 0], label="B"), ax.legend()
    >>> shared_legend(fig, axes)
    >>> [t.get_text() for t in fig.legends[0].get_texts()], [ax.get_legend() for ax in axes]
    (['A', 'B'], [None, None])
    >>> plt.close("all")
    """
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        ax.get_legend().remove()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.08, 1, 1))


# ------------------------------------------------------------------------------------------------ attrition


def attrition_plot(attrition: pd.DataFrame, *, label: str = "description", remaining: str = "remaining",
                   excluded: str = "excluded", title: str | None = None, ax: Axes | None = None) -> Axes:
    """Horizontal bars of the stays remaining after each cohort step, top to bottom, exclusions annotated.

    Parameters
    ----------
    attrition : DataFrame
        :attr:`carequal.cohorts.Cohort.attrition` (``step``, ``description``, ``excluded``, ``remaining``).
    label, remaining, excluded : str
        Columns of the bar label, the bar length and the annotation.
    title : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        One bar per step (in the table's order, first at the top), its ``remaining`` count written at its end
        and "−<excluded> excluded" next to it where stays were excluded.

    Examples
    --------
    >>> a = pd.DataFrame({"step": [0, 1], "description": ["acute stays", "alive at discharge"],
    ...                   "excluded": [0, 3], "remaining": [10, 7]})
    >>> ax = attrition_plot(a)
    >>> [round(p.get_width()) for p in ax.patches]
    [10, 7]
    >>> plt.close("all")
    """
    _require(attrition, [label, remaining, excluded], "attrition_plot")
    labels = attrition[label].astype(str).to_numpy()
    rem = attrition[remaining].to_numpy(dtype=float)
    exc = attrition[excluded].to_numpy(dtype=float)
    ax = _ax(ax, figsize=(9, max(3.0, 0.45 * len(rem) + 1.5)))
    pos = np.arange(len(rem))
    ax.barh(pos, rem, color=OKABE_ITO[5], height=0.6)
    width = float(np.nanmax(rem)) if len(rem) else 1.0
    for i in pos:
        text = f"{rem[i]:,.0f}"
        if np.isfinite(exc[i]) and exc[i] > 0:
            text += f"  (−{exc[i]:,.0f} excluded)"
        ax.text(rem[i] + width * 0.01, i, text, va="center", fontsize="small")
    ax.set_yticks(pos, labels=labels)
    ax.invert_yaxis()
    ax.set_xlim(0, width * 1.35)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("Stays remaining")
    ax.set_title(title or "How the cohort was built")
    ends = f" from {rem[0]:,.0f} to {rem[-1]:,.0f}" if len(rem) else ""
    _describe(ax, f"Bar chart ({_title(ax)}): stays remaining after each of {len(rem)} steps{ends}.",
              "Look for the steps that remove the most stays.")
    return ax


# ------------------------------------------------------------------------------------------------ candidates


#: How each screening verdict (:mod:`carequal.screening`) is drawn: colour, filled or hollow, short word.
#: Better and worse use the Making Data Count improvement and concern colours; "shorter"/"longer" (length of
#: stay: different, neither better nor worse) the no-direction colour; verdicts that judge nothing are hollow.
_VERDICT_STYLE = {
    "better than benchmark": ("improvement", True, "better"),
    "worse than benchmark": ("concern", True, "worse"),
    "no different": ("common_cause", True, "no different"),
    "shorter than benchmark": ("neither", True, "shorter"),
    "longer than benchmark": ("neither", True, "longer"),
    "too few cases to judge": ("common_cause", False, "too few cases"),
    "not shown (small numbers)": ("common_cause", False, "not shown"),
    "not reported": ("common_cause", False, "not reported"),
    "no benchmark": ("common_cause", False, "no benchmark"),
}


def candidate_plot(table: pd.DataFrame, *, criteria: dict[str, str] | None = None, label: str = "name",
                   setting: str | None = "setting", rank: str | None = "rank", volume: str | None = "discharges",
                   score: str | None = "score", judged: str | None = "judged", title: str | None = None,
                   ax: Axes | None = None) -> Axes:
    """Candidate partners at a glance: one row per provider (in the table's order, the first at the top), one
    column per criterion with its verdict as a coloured dot and a word, then the volume and the score.

    Parameters
    ----------
    table : DataFrame
        :func:`carequal.screening.candidate_shortlist` output (already suppressed), in rank order.
    criteria : dict, optional
        Verdict column → column heading; default readmission, discharge to community, nurse staffing and
        length of stay.
    label, setting, rank : str
        Columns of the provider's name, setting (added to the name in capitals) and rank (before the name);
        ``setting`` or ``rank`` None leaves it out.
    volume, score : str, optional
        Columns written as text in the last columns (a hidden volume reads "–"); None leaves them out.
    judged : str, optional
        Boolean column: a dashed line separates the providers judged on an outcome from those that are not.
    title : str, optional
    ax : Axes, optional

    Returns
    -------
    Axes
        One scatter collection per verdict present (labelled with its short word, e.g. ``"better"``), with one
        point per provider and criterion; y tick labels are the providers, top to bottom in table order.

    Examples
    --------
    >>> t = pd.DataFrame({"rank": [1, 2], "name": ["Oak", "Elm"], "setting": "snf", "judged": [True, False],
    ...     "discharges": pd.array([40, None], "Int64"), "score": [1, 0],
    ...     "readmit_label": ["better than benchmark", "too few cases to judge"],
    ...     "dtc_label": ["no different", "too few cases to judge"], "staffing_label": ["no different"] * 2,
    ...     "los_label": ["longer than benchmark", "too few cases to judge"]})
    >>> ax = candidate_plot(t)
    >>> [tick.get_text() for tick in ax.get_yticklabels()]
    ['1. Oak (SNF)', '2. Elm (SNF)']
    >>> sorted(c.get_label() for c in ax.collections)
    ['better', 'longer', 'no different', 'too few cases']
    >>> plt.close("all")
    """
    criteria = criteria or {"readmit_label": "Readmission\nvs national", "dtc_label": "Discharge to\ncommunity",
                            "staffing_label": "Nurse\nstaffing", "los_label": "Length\nof stay"}
    _require(table, [label, setting, rank, volume, score, judged, *criteria], "candidate_plot")
    unknown = sorted({str(v) for c in criteria for v in table[c].unique()} - set(_VERDICT_STYLE))
    if unknown:
        raise ParameterError(f"candidate_plot: unknown verdict(s) {unknown}; the verdicts are those of "
                             "carequal.screening.VERDICTS")
    names = table[label].astype(str).to_numpy()
    if setting is not None:
        names = np.array([f"{n} ({str(s).upper()})" for n, s in zip(names, table[setting], strict=True)])
    if rank is not None:
        names = np.array([f"{r}. {n}" for r, n in zip(table[rank], names, strict=True)])
    k = len(criteria)
    extra = [(volume, "Discharges"), (score, "Score")]
    extra = [(col, head) for col, head in extra if col is not None]
    ax = _ax(ax, figsize=(2.0 * (k + len(extra)) + 3.5, max(2.5, 0.48 * len(table) + 1.6)))
    y = -np.arange(len(table), dtype=float)

    verdicts = np.column_stack([table[c].astype(str).to_numpy() for c in criteria]) if len(table) else \
        np.empty((0, k), dtype=object)
    for verdict, (colour_key, filled, word) in _VERDICT_STYLE.items():
        rows, cols = np.nonzero(verdicts == verdict)
        if not len(rows):
            continue
        colour = PALETTE[colour_key]
        ax.scatter(cols, y[rows], s=140, marker="o", facecolors=colour if filled else "white", edgecolors=colour,
                   linewidths=1.5, zorder=3, label=word)
        for r, c in zip(rows, cols, strict=True):
            ax.annotate(word, (c, y[r]), xytext=(10, 0), textcoords="offset points", va="center", fontsize="small",
                        color=PALETTE["line"] if filled else PALETTE["common_cause"])
    for j, (col, _) in enumerate(extra):
        values = table[col].to_numpy()
        for r, v in enumerate(values):
            text = "–" if pd.isna(v) else (f"{int(v):+d}".replace("-", "−") if col == score and v else f"{int(v):,d}")
            ax.text(k + j, y[r], text, ha="center", va="center", fontsize="medium")

    ax.set_yticks(y, labels=names)
    ax.set_xticks(np.arange(k + len(extra)), labels=[*criteria.values(), *[h for _, h in extra]])
    ax.xaxis.tick_top()
    ax.tick_params(axis="both", length=0)
    ax.set_xlim(-0.4, k + len(extra) - 0.3)
    ax.set_ylim(y.min() - 0.6 if len(y) else -1, 0.6)
    ax.grid(False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    for i in range(len(y)):  # light bands: rows are easy to follow across
        if i % 2 == 0:
            ax.axhspan(y[i] - 0.5, y[i] + 0.5, color="#f2f2f2", zorder=0, linewidth=0)
    if judged is not None and len(table):
        flags = table[judged].fillna(False).astype(bool).to_numpy()
        for i in np.flatnonzero(flags[:-1] & ~flags[1:]):
            ax.axhline(y[i] - 0.5, color=PALETTE["limit"], linestyle="--", linewidth=1)
    ax.set_title(title or "Candidate partners: each criterion against its benchmark", pad=34)
    notes = ["filled dot: judged against its benchmark", "hollow: not judged"]
    if volume is not None and table[volume].isna().any():
        notes.append("–: small number, not shown")
    ax.set_xlabel("; ".join(notes), fontsize="small", color=PALETTE["line"])
    better = [str(table[label].iloc[r]) for r in range(len(table)) if (verdicts[r] == "better than benchmark").any()]
    worse = [str(table[label].iloc[r]) for r in range(len(table)) if (verdicts[r] == "worse than benchmark").any()]
    _describe(ax, f"Candidate chart ({_title(ax)}): {_n(len(table), 'provider')} in rank order"
              + (f", first {names[0]}" if len(table) else "")
              + (f"; better than a benchmark: {_names(better)}" if better else "; none better than a benchmark")
              + (f"; worse than a benchmark: {_names(worse)}" if worse else "") + ".",
              "Look along each row: filled blue dots are criteria better than the benchmark, orange worse; "
              "hollow dots were not judged.")
    return ax
