"""The chart defects a leader could misread (issue 16), each tested on the figure object: every series told
apart by line style or marker as well as colour, legend entries only for what is drawn, periods at their
midpoints with matching ticks, labels clear of the limit and target lines, and alt text that says what the
chart shows (set on the displayed image and written by the report template)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.dates import num2date  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from carequal import plots  # noqa: E402
from carequal.compare import funnel_data, p_chart  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    # the theme some tests apply (plots.set_theme: a left-aligned title...) must not reach other tests of the
    # same worker process
    with matplotlib.rc_context():
        yield
    plt.close("all")


def _line(ax, label):
    found = [line for line in ax.get_lines() if line.get_label() == label]
    assert found, f"no line labelled {label!r}: {[line.get_label() for line in ax.get_lines()]}"
    return found[0]


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def _monthly_chart(months: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"period": pd.date_range("2024-01-01", periods=months, freq="MS"),
                          "n": 200, "events": rng.binomial(200, 0.15, months)})
    frame.loc[months - 1, "events"] = 80  # a signal of concern
    chart = p_chart(frame, improvement="lower")
    chart.attrs["freq"] = "month"
    return chart


def _yearly_trend(target=0.18) -> pd.DataFrame:
    trend = pd.DataFrame({"period": pd.to_datetime(["2022-01-01", "2023-01-01", "2024-01-01"]),
                          "value": [0.2, 0.17, 0.15], "lower": [0.15, 0.13, 0.11], "upper": [0.25, 0.21, 0.19],
                          "target": target, "benchmark": [0.21, 0.2, 0.2], "signal": ["", "", ""]})
    trend.attrs["freq"] = "year"
    return trend


# ----------------------------------------------------------------------------------- distinct line styles


def test_spc_series_differ_by_line_style_or_marker_not_colour_alone():
    ax = plots.spc_plot(_monthly_chart())
    styles = {label: (_line(ax, label).get_linestyle(), _line(ax, label).get_marker())
              for label in ("Value", "Centre", "2σ limits", "3σ limits")}
    assert len(set(styles.values())) == 4, styles
    # the values are the one solid line, and carry markers
    assert styles["Value"][0] == "-" and styles["Value"][1] not in ("", "None", None)
    assert all(style != "-" for label, (style, _) in styles.items() if label != "Value")
    # signals are told apart by marker shape as well as colour
    shapes = {c.get_label(): c.get_paths()[0].vertices.round(2).tobytes() for c in ax.collections}
    assert shapes["Concern"] != shapes["Common cause"]


def test_target_trend_and_trend_series_differ_by_style():
    ax = plots.target_trend_plot(_yearly_trend(), start="2023-06-09")
    styles = [(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()
              if not line.get_label().startswith("_")]
    assert len(set(styles)) == len(styles)
    trend = pd.DataFrame({"period": pd.to_datetime(["2024-01-01", "2024-04-01"] * 2),
                          "rate": [0.1, 0.2, 0.15, 0.1], "lower": 0.05, "upper": 0.3,
                          "partner": ["Partner facilities"] * 2 + ["Other facilities"] * 2})
    ax2 = plots.trend_plot(trend, hue="partner")
    styles2 = [(line.get_linestyle(), line.get_marker()) for line in ax2.get_lines()]
    assert len(set(styles2)) == 2


# ------------------------------------------------------------------------- legend only for what is drawn


def test_no_target_in_the_legend_when_no_target_line_is_drawn():
    ax = plots.target_trend_plot(_yearly_trend(target=np.nan), percent=False)
    assert "Target" not in _legend_texts(ax)
    assert "Partner" in _legend_texts(ax)


def test_no_legend_entry_for_a_group_whose_values_are_all_hidden():
    trend = pd.DataFrame({"period": pd.to_datetime(["2024-01-01", "2024-04-01"] * 2),
                          "rate": [0.1, 0.2, np.nan, np.nan], "lower": [0.05, 0.1, np.nan, np.nan],
                          "upper": [0.2, 0.3, np.nan, np.nan],
                          "partner": ["Partner facilities"] * 2 + ["Other facilities"] * 2})
    ax = plots.trend_plot(trend, hue="partner")
    assert _legend_texts(ax) == ["Partner facilities"]


@pytest.mark.parametrize("build", ["spc", "funnel", "target", "caterpillar"])
def test_every_legend_entry_is_a_drawn_artist(build):
    if build == "spc":
        ax = plots.spc_plot(_monthly_chart())
    elif build == "target":
        ax = plots.target_trend_plot(_yearly_trend(), start="2023-06-09")
    elif build == "caterpillar":
        t = pd.DataFrame({"group": ["A", "B"], "ratio": [1.2, 0.8], "lower": [1.05, 0.6], "upper": [1.4, 1.1],
                          "is_partner": [False, False]})  # no partner: no "Partner" entry
        ax = plots.caterpillar_plot(t, partner="is_partner")
        assert "Partner" not in _legend_texts(ax)
    else:
        df = pd.DataFrame({"unit_id": list("ABCDEFGH"), "observed": [30, 45, 62, 20, 95, 52, 140, 33],
                           "expected": [40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0]})
        ax = plots.funnel_plot(funnel_data(df, overdispersion="none"), label_col="unit_id")
    legend = ax.get_legend()
    assert legend is not None
    for handle in legend.legend_handles:
        label = handle.get_label()
        drawn = [a for a in [*ax.get_lines(), *ax.collections, *ax.containers] if a.get_label() == label]
        assert drawn and any(plots._drawn(a) for a in drawn), label


# ------------------------------------------------------------------------------ periods at their midpoint


def test_yearly_points_sit_mid_year_with_matching_ticks_and_the_start_where_it_belongs():
    ax = plots.target_trend_plot(_yearly_trend(), start="2023-06-09")
    xs = [num2date(x).date().isoformat() for x in _line(ax, "Partner").get_xdata(orig=False)]
    assert xs == ["2022-07-02", "2023-07-02", "2024-07-02"]  # the middle of each year, not 1 January
    ticks = [num2date(t).date().isoformat() for t in ax.get_xticks()]
    assert ticks == xs
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2022", "2023", "2024"]
    start = [line for line in ax.get_lines() if line.get_label().startswith("Partnership starts")][0]
    when = num2date(start.get_xdata(orig=False)[0]).date().isoformat()
    assert when == "2023-06-09"  # inside the 2023 point's year, before its midpoint
    assert xs[0] < when < xs[1]


def test_monthly_and_quarterly_points_at_midpoints():
    ax = plots.spc_plot(_monthly_chart(3))
    xs = [num2date(x).date().isoformat() for x in _line(ax, "Value").get_xdata(orig=False)]
    assert xs == ["2024-01-16", "2024-02-15", "2024-03-16"]
    mid, labels, freq = plots.period_positions(pd.to_datetime(["2024-01-01", "2024-04-01"]))
    assert freq == "quarter" and labels == ["2024 Q1", "2024 Q2"]
    assert [m.date().isoformat() for m in mid] == ["2024-02-15", "2024-05-16"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Jan\n2024", "Feb\n2024", "Mar\n2024"]


# ---------------------------------------------------------------------------------- labels avoid the lines


def _overlaps_line(ax, box, line) -> bool:
    path = line.get_transform().transform_path(line.get_path())
    from matplotlib.path import Path

    v = path.vertices[np.isfinite(path.vertices).all(axis=1)]
    return Path(v).intersects_bbox(box, filled=False)


def test_funnel_labels_clear_of_the_limits_target_and_each_other():
    # facilities just outside the limits, where a label written up and to the right crosses the curve
    df = pd.DataFrame({"unit_id": [f"Facility number {i}" for i in range(12)],
                       "observed": [30, 45, 62, 20, 95, 52, 140, 33, 12, 80, 60, 110],
                       "expected": [40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0, 22.0, 60.0, 61.0, 84.0]})
    fig, ax = plt.subplots(figsize=(7, 5))
    plots.funnel_plot(funnel_data(df, overdispersion="none"), label_col="unit_id", ax=ax)
    plots.layout(fig)
    labels = ax.carequal_labels
    assert len(labels) >= 2
    renderer = fig.canvas.get_renderer()
    lines = [line for line in ax.get_lines() if "limits" in line.get_label() or line.get_label() == "Target"]
    # the text of each label (a label set further off has a thin leader line back to its point)
    boxes = [Text.get_window_extent(label, renderer) for label in labels]
    for label, box in zip(labels, boxes, strict=True):
        for line in lines:
            assert not _overlaps_line(ax, box, line), (label.get_text(), line.get_label())
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1:])


def test_funnel_and_caterpillar_legends_sit_outside_the_plot():
    # inside, "best" still put the legend over the target line and a dot (issue 16's screenshots)
    df = pd.DataFrame({"unit_id": list("ABCDE"), "observed": [25, 47, 30, 60, 20],
                       "expected": [23.0, 44.6, 25.0, 50.0, 22.0]})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5))
    plots.funnel_plot(funnel_data(df, overdispersion="none"), label_col="unit_id", ax=ax1)
    t = pd.DataFrame({"group": list("AB"), "ratio": [1.2, 0.8], "lower": [1.05, 0.6], "upper": [1.4, 1.1],
                      "is_partner": [True, False]})
    plots.caterpillar_plot(t, partner="is_partner", ax=ax2)
    plots.layout(fig)
    renderer = fig.canvas.get_renderer()
    for ax in (ax1, ax2):
        box = ax.get_legend().get_window_extent(renderer)
        assert not box.overlaps(ax.get_window_extent(renderer))
        assert box.y0 >= 0  # and inside the figure


def test_partnership_start_is_not_written_over_the_target_line():
    fig, ax = plt.subplots(figsize=(9, 4.2))
    plots.target_trend_plot(_yearly_trend(target=0.19), start="2022-03-01", ax=ax)
    plots.layout(fig)
    renderer = fig.canvas.get_renderer()
    target = _line(ax, "Target")
    texts = [t for t in ax.texts if t.get_text()]
    for text in texts:
        assert not _overlaps_line(ax, text.get_window_extent(renderer), target), text.get_text()
    assert any(t.startswith("Partnership starts (1 Mar 2022)") for t in _legend_texts(ax))
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert not _overlaps_line(ax, legend_box, target)


# ------------------------------------------------------------------------------------------------ alt text


def test_alt_text_states_what_the_chart_shows():
    df = pd.DataFrame({"unit_id": list("ABCDEFGH"), "observed": [30, 45, 62, 20, 95, 52, 140, 33],
                       "expected": [40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0],
                       "name": ["Oak", "Elm", "Ash", "Fir", "Yew", "Box", "Bay", "Ivy"]})
    fig, ax = plt.subplots()
    plots.funnel_plot(funnel_data(df, overdispersion="none"), label_col="name", ax=ax, title="Readmission")
    alt, caption = plots.describe(fig)
    assert alt.startswith("Funnel plot (Readmission): 2 of 8 facilities above the limits (")
    assert "Bay, O/E 1.56" in alt and "Yew" in alt and "99.8%" in alt
    assert caption.startswith("Look for dots outside the funnel lines")

    ax2 = plots.spc_plot(_monthly_chart(), title="Readmission by month")
    alt2, _ = plots.describe(ax2.figure)
    assert "12 periods from Jan 2024" in alt2 and "concern in Dec 2024" in alt2


def test_show_sets_the_alt_text_on_the_image_and_the_template_writes_it(monkeypatch, tmp_path):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    ax = plots.spc_plot(_monthly_chart(), title="Readmission by month")
    plots.show(ax.figure)
    (data,), kwargs = shown[0]
    alt = kwargs["metadata"]["image/png"]["alt"]
    assert alt.startswith("Control chart (Readmission by month)") and data["text/plain"] == alt
    assert kwargs["raw"] is True and data["image/png"]
    assert "carequal-caption" in shown[1][0][0].data  # the caption: what to look at

    from carequal.batch.jobs import render_html

    output = nbformat.v4.new_output("display_data", data=data, metadata=kwargs["metadata"])
    default = nbformat.v4.new_output("display_data", data={"image/png": data["image/png"],
                                                           "text/plain": "<Figure size 640x480 with 1 Axes>"})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[output, default])])
    nbformat.write(nb, str(tmp_path / "x.ipynb"))
    render_html(tmp_path / "x.ipynb", tmp_path / "x.html", title="x", footer='Period "2024"')
    html = (tmp_path / "x.html").read_text()
    assert f'alt="{alt}"' in html.replace("&quot;", '"') or f"alt=\"{alt}\"" in html
    assert 'content: "Period \\"2024\\""' in html  # the printed footer, a CSS string
    assert html.count("No description has been provided for this image") == 1  # only the bare figure


def test_a_shown_chart_is_the_tight_png_drawn_once():
    # plots.show saves the box "tight" finds, measured without its layout draw: the same PNG, byte for byte,
    # with a legend outside the axes (beyond the figure) and a title
    import io

    plots.set_theme()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(pd.date_range("2023-01-01", periods=8, freq="QS"), np.linspace(0.1, 0.2, 8), label="Partner")
    ax.set_title("A title long enough to matter")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    tight, once = io.BytesIO(), io.BytesIO()
    fig.savefig(tight, format="png", dpi=144, bbox_inches="tight")
    fig.savefig(once, format="png", dpi=144, bbox_inches=plots._tight_bbox(fig, 144))
    plt.close(fig)
    assert tight.getvalue() == once.getvalue()


def _titled_chart(kind: str):
    """A chart with a left title (the packets' style), in one of the layouts _pin_titles must tell apart; built
    afresh for every save. ``grid``: two titled axes side by side (laid out by ``plots.layout``)."""
    from matplotlib.ticker import PercentFormatter, StrMethodFormatter

    fig, axes = plt.subplots(1, 2 if kind == "grid" else 1, figsize=(6, 3), squeeze=False)
    x = pd.date_range("2023-01-01", periods=8, freq="QS")
    y = {"big": np.linspace(1.0e6, 3.5e6, 8), "dollars": np.linspace(15000, 19000, 8)}.get(
        kind, np.linspace(0.1, 0.2, 8))
    for k, ax in enumerate(axes[0]):
        ax.plot(x, y)
        ax.set_title(f"A left title {k}", loc="left")
    ax = axes[0][0]
    if kind == "percent":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    elif kind == "dollars":
        ax.yaxis.set_major_formatter(StrMethodFormatter("${x:,.0f}"))
    elif kind == "top ticks":
        ax.xaxis.tick_top()
    elif kind == "twin":
        ax.twinx().plot(x, y[::-1])
    return fig, ax


@pytest.mark.parametrize(("kind", "pinned"), [("percent", True), ("dollars", True), ("scalar", True),
                                               ("grid", True), ("big", False), ("top ticks", False),
                                               ("twin", False)])
def test_a_title_is_pinned_only_where_matplotlib_would_not_move_it(kind, pinned):
    # plots.show pins a title where automatic placement would leave it (a tenth of a trend chart's drawing):
    # the PNG is the one the automatic placement gives (laid out, saved "tight"), byte for byte; a "1e6" offset
    # text, ticks at the top or a twin axes keep the automatic placement (which moves the title or may)
    import io

    plots.set_theme()
    fig, ax = _titled_chart(kind)
    plots.layout(fig)
    auto = io.BytesIO()
    fig.savefig(auto, format="png", dpi=144, bbox_inches="tight")
    plt.close(fig)
    fig, ax = _titled_chart(kind)
    plots._pin_titles(fig, 144)  # as plots.show: pinned, laid out, saved in the box "tight" finds
    assert [a._autotitlepos is False for a in fig.axes if a.get_title(loc="left")] == \
        [pinned] * (2 if kind == "grid" else 1)
    plots.layout(fig)
    shown = io.BytesIO()
    fig.savefig(shown, format="png", dpi=144, bbox_inches=plots._tight_bbox(fig, 144))
    plt.close(fig)
    assert shown.getvalue() == auto.getvalue()
    if kind == "big":  # the case the rule exists for: the offset text pushes the title up
        fig, ax = _titled_chart(kind)
        fig.canvas.draw()
        assert ax.yaxis.offsetText.get_text() and ax._left_title.get_position()[1] > 1.0
