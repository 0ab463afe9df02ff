"""Structural tests of carequal.plots: each chart is built from the real producer's tidy table and inspected
(points, lines, labels, colours), never compared pixel by pixel."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection, QuadMesh  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from scipy import stats  # noqa: E402

from carequal import plots  # noqa: E402
from carequal.cohorts import index_stays, post_acute_episodes  # noqa: E402
from carequal.compare import funnel_data, p_chart, scorecard, xmr_chart  # noqa: E402
from carequal.errors import ParameterError  # noqa: E402
from carequal.measures import rate_table, trend_table  # noqa: E402
from carequal.risk import HierarchicalLogit, calibration_table  # noqa: E402
from carequal.schema import validate_tables  # noqa: E402
from conftest import valid_raw_tables  # noqa: E402

PARTNER = plots.PALETTE["partner"].lower()
NON_PARTNER = plots.PALETTE["non_partner"].lower()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _colour(collection) -> str:
    return to_hex(collection.get_facecolor()[0])


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def _has_text(ax) -> None:
    assert ax.get_title()
    assert ax.get_xlabel()


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def sr_units() -> pd.DataFrame:
    # the funnel_data docstring's eight facilities; under Poisson limits alone E is above 95 % and G above 99.8 %
    return pd.DataFrame({"facility_id": list("ABCDEFGH"), "observed": [30, 45, 62, 20, 95, 52, 140, 33],
                         "expected": [40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0],
                         "is_partner": [True, False, False, True, False, False, True, False]})


@pytest.fixture
def stay_outcomes() -> pd.DataFrame:
    """400 stays in 8 facilities (3 partners) over 6 months, readmission depending on risk and facility."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(8), 50)
    risk = rng.normal(size=g.size)
    effect = np.array([-0.6, -0.2, 0.0, 0.1, 0.2, 0.4, 0.7, 1.0])
    p = 1 / (1 + np.exp(-(-1.4 + 0.6 * risk + effect[g])))
    return pd.DataFrame({"facility_id": [f"F{j}" for j in g], "risk": risk, "readmitted": rng.random(g.size) < p,
                         "is_partner": np.isin(g, [0, 3, 6]), "market": np.where(g < 4, "North", "South"),
                         "discharge_date": pd.Timestamp("2024-01-01")
                         + pd.to_timedelta(rng.integers(0, 181, g.size), unit="D")})


# ---------------------------------------------------------------------------------------------- import & theme


def test_import_sets_no_theme():
    code = ("import matplotlib, sys\n"
            "before = {k: repr(v) for k, v in matplotlib.rcParams.items()}\n"
            "import carequal.plots\n"
            "after = {k: repr(v) for k, v in matplotlib.rcParams.items()}\n"
            "changed = [k for k in before if before[k] != after[k]]\n"
            "assert not changed, changed\n"
            "assert 'seaborn' not in sys.modules, 'seaborn imported at import time'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "Agg"})


def test_set_theme_applies_okabe_ito_palette():
    with matplotlib.rc_context():
        plots.set_theme()
        cycle = [to_hex(c) for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert cycle == [c.lower() for c in plots.OKABE_ITO]
        assert matplotlib.rcParams["axes.grid"]
    assert len(set(plots.PALETTE[k] for k in ("partner", "non_partner", "concern", "improvement"))) == 4


def _rc_after(apply, base: str) -> dict:
    """Every rcParam after ``apply()`` from matplotlib's ``base`` style ("default" or "classic")."""
    with matplotlib.rc_context():
        matplotlib.style.use(base)
        apply()
        return dict(matplotlib.rcParams)


@pytest.mark.parametrize("arguments", [{}, {"font_scale": 1.0, "context": "talk"}], ids=["stored", "seaborn"])
@pytest.mark.parametrize("base", ["default", "classic"])
def test_set_theme_sets_what_seaborn_set_theme_sets(arguments, base):
    """The stored theme (the notebooks' arguments) and any other from seaborn's functions: every rcParam the same
    as ``seaborn.set_theme`` leaves it, from matplotlib's defaults and from its classic style (which differs in
    most of them, so a key the theme missed shows)."""
    import seaborn as sns

    font_scale, context = arguments.get("font_scale", 1.2), arguments.get("context", "notebook")
    ours = _rc_after(lambda: plots.set_theme(**arguments), base)
    theirs = _rc_after(lambda: sns.set_theme(context=context, style="whitegrid", palette=plots.OKABE_ITO,
                                             font_scale=font_scale, rc=plots.THEME_RC), base)
    assert ours.keys() == theirs.keys()
    assert {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]} == {}
    assert sum(ours[k] != _rc_after(lambda: None, base)[k] for k in ours) >= 20  # the theme changed things


def test_stored_theme_is_seaborns_for_set_themes_defaults():
    """``carequal/data/theme.json`` is what seaborn gives today for set_theme's default arguments: after a seaborn
    upgrade that changes its theme, write it again (``plots.write_stored_theme``)."""
    import inspect
    import json
    from importlib import resources

    import seaborn as sns

    stored = json.loads(resources.files("carequal").joinpath("data", "theme.json").read_text())
    defaults = {k: v.default for k, v in inspect.signature(plots.set_theme).parameters.items()}
    assert {"font_scale": stored["font_scale"], "context": stored["context"]} == defaults
    fresh = plots.seaborn_theme(**defaults)
    assert [list(c) for c in fresh.pop("axes.prop_cycle").by_key()["color"]] == stored["colors"]
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in fresh.items()} == stored["rc"], \
        "seaborn's theme changed: run plots.write_stored_theme('carequal/data/theme.json')"
    assert list(stored["colormaps"]) == [fresh["image.cmap"]] == ["rocket"]
    np.testing.assert_array_equal(np.array(stored["colormaps"]["rocket"]), np.array(sns.cm.rocket.colors))


def test_set_theme_with_the_notebooks_arguments_does_not_import_seaborn():
    # a PNG needs a valid image colormap even for RGBA pixels: the theme's ("rocket") must be registered
    code = ("import io, sys\nimport matplotlib.pyplot as plt\nfrom carequal import plots\nplots.set_theme()\n"
            "fig, ax = plt.subplots(); ax.plot([0, 1]); ax.imshow([[0, 1], [1, 0]]); fig.savefig(io.BytesIO())\n"
            "assert plt.rcParams['image.cmap'] == 'rocket'\n"
            "assert 'seaborn' not in sys.modules and 'scipy.stats' not in sys.modules, 'seaborn imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "Agg"})


# ---------------------------------------------------------------------------------------------- funnel


def test_funnel_plot_structure(sr_units):
    before = sr_units.copy()
    funnel = funnel_data(sr_units, overdispersion="none")
    units_before = funnel.units.copy()
    ax = plots.funnel_plot(funnel, label_col="facility_id", partner="is_partner")

    # every unit is a point, partners in their own colour
    offsets = {c.get_label(): c for c in ax.collections}
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(sr_units)
    assert len(offsets["Partner"].get_offsets()) == 3
    assert _colour(offsets["Partner"]) == PARTNER
    assert _colour(offsets["Not a partner"]) == NON_PARTNER

    # two levels × two sides, narrower dashed, wider solid; target line at 1
    limit_lines = [ln for ln in ax.get_lines() if "limits" in ln.get_label()]
    assert len(limit_lines) == 4
    styles = {ln.get_label().lstrip("_").split(" ")[0]: ln.get_linestyle() for ln in limit_lines}
    assert styles == {"95%": "--", "99.8%": "-"}
    target = [ln for ln in ax.get_lines() if ln.get_label() == "Target"]
    assert len(target) == 1 and list(target[0].get_ydata()) == [1, 1]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"95% limits", "99.8% limits", "Target", "Partner", "Not a partner"} <= set(legend)

    # the two outliers, and only they, are labelled
    assert sorted(t.get_text() for t in ax.texts) == ["E", "G"]
    _has_text(ax)
    assert "1 = as expected" in ax.get_ylabel()
    pd.testing.assert_frame_equal(sr_units, before)
    pd.testing.assert_frame_equal(funnel.units, units_before)


def test_funnel_plot_adjusted_limits_and_proportions(stay_outcomes):
    rates = rate_table(stay_outcomes, by=["facility_id"], events="readmitted")
    funnel = funnel_data(rates, data_type="PR")
    ax = plots.funnel_plot(funnel)
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 8
    assert "between-facility" in ax.get_title()
    # the drawn curves are the adjusted ones at the two levels
    upper95 = funnel.limits.query("adjusted and level == 0.95")["upper"].to_numpy()
    drawn = [ln for ln in ax.get_lines() if ln.get_label() == "95% limits"][0]
    np.testing.assert_allclose(drawn.get_ydata(), upper95)
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert "cases" in ax.get_xlabel()


def test_funnel_plot_without_overdispersion_draws_the_exact_limits_that_classified():
    # six units that vary no more than chance (τ² = 0), O = 10 at E = 16.54 among them
    calm = pd.DataFrame({"facility_id": list("ABCDEF"), "observed": [10, 21, 29, 41, 50, 62],
                         "expected": [16.54, 20.0, 30.0, 40.0, 52.0, 60.0]})
    funnel = funnel_data(calm)
    assert not funnel.adjusted
    ax = plots.funnel_plot(funnel, label_col="facility_id")
    assert "between-facility" not in ax.get_title()
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for level, name in ((0.95, "95% limits"), (0.998, "99.8% limits")):
        drawn = lines[name]
        x = np.asarray(drawn.get_xdata(), dtype=float)
        # Garwood's exact upper limit at O = E, written out: χ²_{1−α/2}(2E + 2) / (2E)
        expect = stats.chi2.ppf(1 - (1 - level) / 2, 2 * x + 2) / (2 * x)
        np.testing.assert_allclose(drawn.get_ydata(), expect)
    assert not ax.texts  # no unit outside the exact limits, so none labelled (A at 10/16.54 included)


# ---------------------------------------------------------------------------------------------- caterpillar


def test_caterpillar_plot_from_bootstrap(stay_outcomes):
    model = HierarchicalLogit(["risk"]).fit(stay_outcomes, outcome="readmitted", group="facility_id")
    pe = model.bootstrap_pe(stay_outcomes, outcome="readmitted", group="facility_id", n_boot=20, seed=1)
    partners = stay_outcomes.groupby("facility_id")["is_partner"].first()
    table = pe.assign(is_partner=pe["group"].map(partners))
    before = table.copy()
    ax = plots.caterpillar_plot(table, partner="is_partner")

    # ranked: the tick labels read bottom-to-top in ascending order of ratio
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == table.sort_values("ratio")["group"].tolist()
    # all units drawn, partners in their colour, one error-bar container per group
    points = {c.get_label(): c for c in ax.containers}
    assert set(points) == {"Partner", "Not a partner"}
    assert len(points["Partner"].lines[0].get_xdata()) == 3
    assert len(points["Not a partner"].lines[0].get_xdata()) == 5
    assert to_hex(points["Partner"].lines[0].get_color()) == PARTNER
    bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert sorted(bold) == ["F0", "F3", "F6"]
    # reference line at 1
    ref = [ln for ln in ax.get_lines() if ln.get_label() == "As expected"]
    assert len(ref) == 1 and list(ref[0].get_xdata()) == [1, 1]
    _has_text(ax)
    pd.testing.assert_frame_equal(table, before)


def test_caterpillar_plot_from_scorecard(stay_outcomes):
    cases = stay_outcomes.assign(observed=stay_outcomes["readmitted"].astype(int), expected=0.25)
    card = scorecard(cases, measure=None)
    ax = plots.caterpillar_plot(card, label="facility_id")
    assert len(ax.get_yticklabels()) == 8
    assert [c.get_label() for c in ax.containers] == ["Facility"]


# ---------------------------------------------------------------------------------------------- SPC


def test_spc_plot_p_chart_signals():
    # twelve stable months, then one very high (concern when lower is better) and one very low (improvement)
    events = [20, 22, 19, 21, 18, 20, 23, 19, 21, 20, 22, 19, 45, 3]
    df = pd.DataFrame({"period": pd.date_range("2023-01-01", periods=14, freq="MS"), "events": events, "n": 200})
    chart = p_chart(df, baseline=12, improvement="lower")
    before = chart.copy()
    ax = plots.spc_plot(chart)

    labels = _labels(ax)
    assert labels.count("Centre") == 1 and labels.count("Value") == 1
    assert labels.count("2σ limits") == 1 and labels.count("3σ limits") == 1
    assert len(labels) == 6  # centre, 2 × 2σ, 2 × 3σ, values
    marks = {c.get_label(): c for c in ax.collections}
    assert set(marks) == {"Common cause", "Concern", "Improvement"}
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(df)
    assert _colour(marks["Concern"]) == plots.PALETTE["concern"].lower()
    assert _colour(marks["Improvement"]) == plots.PALETTE["improvement"].lower()
    np.testing.assert_allclose(marks["Concern"].get_offsets()[:, 1], [45 / 200])
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert "p-chart" in ax.get_title()
    _has_text(ax)
    pd.testing.assert_frame_equal(chart, before)


def test_spc_plot_xmr_uses_value_column():
    chart = xmr_chart(pd.Series([5.0, 7, 6, 8, 6, 30], index=list("abcdef")), baseline=5)
    ax = plots.spc_plot(chart)
    marks = {c.get_label(): c for c in ax.collections}
    assert len(marks["Special cause"].get_offsets()) == 1  # no better direction given: "neither"
    assert not isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert ax.get_ylabel() == "Value"


# ---------------------------------------------------------------------------------------------- trend


def test_trend_plot_by_partner(stay_outcomes):
    trend = trend_table(stay_outcomes, by=["is_partner"], events="readmitted")
    before = trend.copy()
    ax = plots.trend_plot(trend, hue="is_partner")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"Partner", "Not a partner"}
    assert to_hex(lines["Partner"].get_color()) == PARTNER
    assert len(lines["Partner"].get_xdata()) == trend["is_partner"].sum() == 6
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2  # one band per group
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert "95% interval" in ax.get_ylabel()
    _has_text(ax)
    pd.testing.assert_frame_equal(trend, before)


def test_trend_plot_by_market_and_single_series(stay_outcomes):
    by_market = trend_table(stay_outcomes, by=["market"], events="readmitted", freq="quarter")
    ax = plots.trend_plot(by_market, hue="market")
    assert _labels(ax) == ["North", "South"]
    assert len({ln.get_color() for ln in ax.get_lines()}) == 2
    _, ax2 = plt.subplots()
    overall = trend_table(stay_outcomes, events="readmitted")
    assert plots.trend_plot(overall, lower=None, ax=ax2) is ax2
    assert len(ax2.get_lines()) == 1 and not ax2.collections


# ---------------------------------------------------------------------------------------------- flows


def test_flow_heatmap_partner_columns():
    fac = pd.DataFrame({"facility_id": ["H1", "H2", "S1", "S2", "S3"],
                        "setting": ["acute", "acute", "snf", "snf", "snf"], "market": "M",
                        "is_partner": [False, False, True, False, True],
                        "partner_since": pd.to_datetime([None, None, "2023-01-01", None, "2023-01-01"])})
    # three patients per hospital; H1 sends to S1, S1, S2; H2 to S3, S3 and nowhere
    hosp = ["H1", "H1", "H1", "H2", "H2", "H2"]
    snf = ["S1", "S1", "S2", "S3", "S3", None]
    rows = []
    for i, (h, s) in enumerate(zip(hosp, snf, strict=True)):
        rows.append({"stay_id": f"h{i}", "patient_id": f"p{i}", "facility_id": h, "admit_date": "2024-01-01",
                     "discharge_date": "2024-01-05", "discharge_status": "03"})
        if s:
            rows.append({"stay_id": f"s{i}", "patient_id": f"p{i}", "facility_id": s, "admit_date": "2024-01-05",
                         "discharge_date": "2024-01-20", "discharge_status": "01"})
    stays = pd.DataFrame(rows).assign(admit_date=lambda d: pd.to_datetime(d["admit_date"]),
                                      discharge_date=lambda d: pd.to_datetime(d["discharge_date"]))
    episodes = post_acute_episodes(stays, fac)
    counts = (episodes[episodes["pac_setting"] != "none"]
              .groupby(["hospital_id", "pac_facility_id", "pac_is_partner"]).size().rename("n").reset_index())
    before = counts.copy()
    ax = plots.flow_heatmap(counts, partner="pac_is_partner")

    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(mesh) == 1
    cells = np.asarray(mesh[0].get_array()).reshape(2, 3)  # hospitals × facilities, absent pairs are 0
    np.testing.assert_array_equal(cells, [[2, 1, 0], [0, 0, 2]])
    outlines = [p for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert sorted(p.get_x() for p in outlines) == [0, 2]  # S1 and S3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["S1 ★", "S2", "S3 ★"]
    bold = [t.get_text() for t in ax.get_xticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["S1 ★", "S3 ★"]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "0", "0", "1", "2", "2"]
    _has_text(ax)
    assert ax.get_ylabel() == "Discharging hospital"
    pd.testing.assert_frame_equal(counts, before)

    with pytest.raises(ParameterError, match="repeated"):
        plots.flow_heatmap(pd.concat([counts, counts]))


def test_flow_heatmap_suppressed_cells_are_hatched_not_zero():
    counts = pd.DataFrame({"hospital_id": ["H1", "H1", "H2"], "pac_facility_id": ["S1", "S2", "S1"],
                           "n": pd.array([40, pd.NA, 25], dtype="Int64")})
    ax = plots.flow_heatmap(counts)
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)][0]
    cells = np.ma.asarray(mesh.get_array()).reshape(2, 2)
    assert cells.mask[0, 1] and not cells.mask[0, 0] and not cells.mask[1, 1]  # hidden, not drawn
    assert cells[0, 0] == 40 and cells[1, 1] == 0 and cells[1, 0] == 25  # H2 → S2 is absent: a true 0
    hatched = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch()]
    assert [(p.get_x(), p.get_y()) for p in hatched] == [(1, 0)]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "25", "40"]  # no number in the hidden cell
    assert "not shown" in ax.get_xlabel()


# ---------------------------------------------------------------------------------------------- calibration


def test_calibration_plot(stay_outcomes):
    p = 1 / (1 + np.exp(-(-1.2 + 0.6 * stay_outcomes["risk"])))
    table = calibration_table(stay_outcomes["readmitted"], p)
    before = table.copy()
    ax = plots.calibration_plot(table)
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 10
    np.testing.assert_allclose(ax.collections[0].get_offsets()[:, 1], table["observed_rate"])
    diagonal = [ln for ln in ax.get_lines() if ln.get_label() == "Perfect calibration"]
    assert len(diagonal) == 1
    np.testing.assert_allclose(diagonal[0].get_xdata(), diagonal[0].get_ydata())
    assert isinstance(ax.xaxis.get_major_formatter(), PercentFormatter)
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert ax.get_ylabel() == "Observed rate"
    _has_text(ax)
    pd.testing.assert_frame_equal(table, before)


# ---------------------------------------------------------------------------------------------- attrition


def test_attrition_plot():
    tables = validate_tables(valid_raw_tables()).tables
    cohort = index_stays(tables["stays"], tables["facilities"], tables["patients"], tables["enrollment"])
    attrition = cohort.attrition
    before = attrition.copy()
    ax = plots.attrition_plot(attrition)
    widths = [p.get_width() for p in ax.patches]
    assert widths == attrition["remaining"].tolist()
    assert [t.get_text() for t in ax.get_yticklabels()] == attrition["description"].astype(str).tolist()
    assert ax.yaxis_inverted()  # the first step at the top
    annotated = [t.get_text() for t in ax.texts if "excluded" in t.get_text()]
    assert len(annotated) == int((attrition["excluded"] > 0).sum()) > 0
    _has_text(ax)
    pd.testing.assert_frame_equal(attrition, before)


# ---------------------------------------------------------------------------------------------- errors


def test_missing_column_is_a_parameter_error(sr_units):
    with pytest.raises(ParameterError, match="missing column"):
        plots.caterpillar_plot(sr_units)
    with pytest.raises(ParameterError, match="missing column"):
        plots.funnel_plot(funnel_data(sr_units), partner="no_such_column")
