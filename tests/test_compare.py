"""Institutional comparison: published test vectors, hand-worked funnels and control charts, a simulated
beta-binomial truth, scorecard labels, and properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import optimize, stats

from carequal.compare import (
    LABELS,
    FunnelWarning,
    NoBetweenUnitVarianceWarning,
    _transformed_limits,
    beta_binomial_shrinkage,
    funnel_data,
    funnel_limits,
    indirect_standardisation,
    laney_p_chart,
    p_chart,
    scorecard,
    xmr_chart,
)
from carequal.errors import ParameterError
from carequal.intervals import poisson_exact, wilson

Z95, Z998 = 1.959964, 3.090232  # the normal quantiles FunnelPlotR writes out

# ------------------------------------------------------------------------------------ indirect standardisation


def _one(o, e, **kw):
    return indirect_standardisation(pd.DataFrame({"g": ["x"], "observed": [o], "expected": [e]}), by="g",
                                    **kw).iloc[0]


@pytest.mark.parametrize(("o", "e", "method", "ratio", "lower", "upper", "used"), [
    # methodology digest §5.1 test vectors (95 %)
    (5, 4.0, "auto", 1.25, 0.4059, 2.9171, "exact Poisson"),
    (5, 4.0, "byar", 1.25, 0.4028, 2.9170, "Byar"),
    (20, 15.0, "auto", 1.3333, 0.8141, 2.0593, "Byar"),
    (20, 15.0, "exact", 1.3333, 0.8144, 2.0592, "exact Poisson"),
    (120, 100.0, "exact", 1.20, 0.9949, 1.4349, "exact Poisson"),
])
def test_indirect_standardisation_digest_vectors(o, e, method, ratio, lower, upper, used):
    row = _one(o, e, method=method)
    assert row["ratio"] == pytest.approx(ratio, abs=1e-4)
    assert row["lower"] == pytest.approx(lower, abs=1e-4) and row["upper"] == pytest.approx(upper, abs=1e-4)
    assert row["method"] == used and row["level"] == 0.95


def test_indirect_standardisation_sums_cases_and_keeps_empty_expected():
    stays = pd.DataFrame({"facility_id": ["A", "A", "A", "B", "C", None],
                          "observed": [1, 0, 1, 0, 1, 1],
                          "expected": [0.2, 0.3, 0.5, 0.0, 0.4, 0.5]})
    before = stays.copy()
    out = indirect_standardisation(stays, by=["facility_id"])
    assert stays.equals(before)
    a = out[out["facility_id"] == "A"].iloc[0]
    assert a["observed"] == 2 and a["expected"] == pytest.approx(1.0) and a["ratio"] == pytest.approx(2.0)
    lo, hi = poisson_exact([2])
    assert a["lower"] == pytest.approx(lo[0]) and a["upper"] == pytest.approx(hi[0])
    b = out[out["facility_id"] == "B"].iloc[0]  # E = 0: nothing to compare with
    assert np.isnan(b["ratio"]) and np.isnan(b["lower"])
    assert out["facility_id"].isna().sum() == 1  # the stay without a facility is its own group, not dropped


def test_indirect_standardisation_level_and_errors():
    wide = _one(20, 15.0, level=0.998)
    narrow = _one(20, 15.0)
    assert wide["lower"] < narrow["lower"] and wide["upper"] > narrow["upper"]
    frame = pd.DataFrame({"g": ["x"], "observed": [1], "expected": [1.0]})
    with pytest.raises(ParameterError, match="method"):
        indirect_standardisation(frame, by="g", method="mid-p")
    with pytest.raises(ParameterError, match="not in the frame"):
        indirect_standardisation(frame, by="g", expected="E")
    with pytest.raises(ParameterError, match="negative"):
        indirect_standardisation(frame.assign(observed=-1), by="g")


@pytest.mark.parametrize(("x", "n", "lower", "upper"), [
    # methodology digest §5.2 Wilson test vectors (95 %)
    (10, 50, 0.1124, 0.3304), (0, 25, 0.0, 0.1332), (45, 300, 0.1140, 0.1948),
])
def test_wilson_digest_vectors(x, n, lower, upper):
    lo, hi = wilson([x], [n])
    assert lo[0] == pytest.approx(lower, abs=1e-4) and hi[0] == pytest.approx(upper, abs=1e-4)


# ------------------------------------------------------------------------------------------------- funnel plots

# Twelve facilities, standardised ratios; no ties among the z-scores.
SR_UNITS = pd.DataFrame({
    "facility_id": [f"F{i:02d}" for i in range(12)],
    "observed": [12, 30, 45, 62, 20, 95, 52, 140, 33, 8, 75, 58],
    "expected": [20.0, 40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0, 6.0, 80.0, 50.0],
})


def _dl_tau2(z_kept, w_kept):
    """DerSimonian–Laird from the retained z-scores and weights, written out as sums."""
    k = len(z_kept)
    phi = sum(v * v for v in z_kept) / k
    sw = sum(w_kept)
    sw2 = sum(v * v for v in w_kept)
    tau2 = 0.0 if k * phi < k - 1 else max(0.0, (k * phi - (k - 1)) / (sw - sw2 / sw))
    return phi, tau2


def _type7_quantile(values, p):
    """R's default quantile: linear interpolation between order statistics at h = (N − 1)p."""
    v = sorted(values)
    h = (len(v) - 1) * p
    lo = math.floor(h)
    return v[lo] + (h - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])


def test_funnel_shmi_by_hand():
    o = SR_UNITS["observed"].tolist()
    e = SR_UNITS["expected"].tolist()
    z = [math.sqrt(ei) * math.log(oi / ei) for oi, ei in zip(o, e, strict=True)]
    # truncation: rank r of N = 12; keep 0 < floor(10 r / 13) < 9, i.e. ranks 2..11 (lowest and highest dropped)
    order = sorted(range(12), key=lambda i: z[i])
    rank = {i: r + 1 for r, i in enumerate(order)}
    kept = [i for i in range(12) if 0 < math.floor(10 * rank[i] / 13) < 9]
    assert sorted(rank[i] for i in kept) == list(range(2, 12))
    phi, tau2 = _dl_tau2([z[i] for i in kept], [e[i] for i in kept])  # w = 1/s² = E on the log scale
    assert tau2 > 0

    f = funnel_data(SR_UNITS)
    assert f.phi == pytest.approx(phi) and f.tau2 == pytest.approx(tau2) and f.n_used == 10
    u = f.units
    np.testing.assert_allclose(u["z"], z)
    assert u["z_robust"].isna().tolist() == [i not in kept for i in range(12)]
    for i in range(12):
        sd = math.sqrt(1 / e[i] + tau2)
        assert u.loc[i, "lower_95"] == pytest.approx(math.exp(-Z95 * sd), rel=1e-6)
        assert u.loc[i, "upper_99.8"] == pytest.approx(math.exp(Z998 * sd), rel=1e-6)
        r = o[i] / e[i]
        expect = ("high 99.8%" if r > math.exp(Z998 * sd) else "high 95%" if r > math.exp(Z95 * sd)
                  else "low 99.8%" if r < math.exp(-Z998 * sd) else "low 95%" if r < math.exp(-Z95 * sd)
                  else "within")
        assert u.loc[i, "funnel_class"] == expect
        assert u.loc[i, "z_adjusted"] == pytest.approx(math.log(r) / sd)
    assert set(u["funnel_class"]) >= {"within", "high 95%"}  # the data set exercises more than one class


def test_funnel_cqc_by_hand():
    o = SR_UNITS["observed"].tolist()
    e = SR_UNITS["expected"].tolist()
    z = [2 * (math.sqrt(oi) - math.sqrt(ei)) for oi, ei in zip(o, e, strict=True)]  # (√(O/E) − 1)/(1/(2√E))
    lo, hi = _type7_quantile(z, 0.1), _type7_quantile(z, 0.9)
    zw = [min(max(v, lo), hi) for v in z]
    phi, tau2 = _dl_tau2(zw, [4 * ei for ei in e])
    f = funnel_data(SR_UNITS, method="CQC")
    assert f.phi == pytest.approx(phi) and f.tau2 == pytest.approx(tau2) and f.n_used == 12
    np.testing.assert_allclose(f.units["z_robust"], zw)
    for i in range(12):
        sd = math.sqrt(1 / (4 * e[i]) + tau2)
        assert f.units.loc[i, "upper_95"] == pytest.approx((1 + Z95 * sd) ** 2, rel=1e-6)
        assert f.units.loc[i, "lower_99.8"] == pytest.approx(max(0.0, 1 - Z998 * sd) ** 2, rel=1e-6)


def test_funnel_proportions_by_hand():
    units = pd.DataFrame({"facility_id": list("ABCDEFGH"), "events": [8, 30, 12, 55, 20, 5, 41, 70],
                          "n": [40, 120, 90, 200, 150, 60, 160, 240]})
    x, n = units["events"].tolist(), units["n"].tolist()
    p_bar = sum(x) / sum(n)
    t = math.asin(math.sqrt(p_bar))
    z = [(math.asin(math.sqrt(xi / ni)) - t) * 2 * math.sqrt(ni) for xi, ni in zip(x, n, strict=True)]
    lo, hi = _type7_quantile(z, 0.1), _type7_quantile(z, 0.9)
    phi, tau2 = _dl_tau2([min(max(v, lo), hi) for v in z], [4 * ni for ni in n])
    f = funnel_data(units, data_type="PR")
    assert f.target == pytest.approx(p_bar)
    assert f.phi == pytest.approx(phi) and f.tau2 == pytest.approx(tau2)
    for i in range(8):
        sd = math.sqrt(1 / (4 * n[i]) + tau2)
        assert f.units.loc[i, "lower_95"] == pytest.approx(math.sin(t - Z95 * sd) ** 2, rel=1e-6)
        assert f.units.loc[i, "upper_95"] == pytest.approx(math.sin(t + Z95 * sd) ** 2, rel=1e-6)
    assert f.units["rate"].tolist() == pytest.approx([xi / ni for xi, ni in zip(x, n, strict=True)])


def test_unadjusted_sr_limits_are_exact_poisson_at_o_equals_e():
    x = np.array([0.5, 3.0, 10.0, 37.5, 200.0])
    lim = funnel_limits(x, overdispersion="none")
    assert not lim["adjusted"].any()
    for level, a in ((0.95, 0.05), (0.998, 0.002)):
        part = lim[lim["level"] == level]
        np.testing.assert_allclose(part["lower"], stats.chi2.ppf(a / 2, 2 * x) / (2 * x))
        np.testing.assert_allclose(part["upper"], stats.chi2.ppf(1 - a / 2, 2 * x + 2) / (2 * x))
    # for whole-number E these are the Garwood limits of a count O = E, divided by E
    part = lim[(lim["level"] == 0.95) & (lim["x"] == 10.0)]
    lo, hi = poisson_exact([10])
    assert part["lower"].iloc[0] == pytest.approx(lo[0] / 10) and part["upper"].iloc[0] == pytest.approx(hi[0] / 10)


@pytest.mark.parametrize("method", ["SHMI", "CQC"])
def test_transformed_limits_approach_poisson_for_large_expected(method):
    # with τ² = 0 the log and square-root scale limits (back-transformed) agree with the exact ones for large E;
    # funnel_limits itself returns only the exact ones then, so the transformed ones come from their helper
    exact = funnel_limits([2000.0], method=method, tau2=0.0, levels=[0.95])
    assert len(exact) == 1 and not exact["adjusted"].any()
    lower, upper = _transformed_limits(np.array([2000.0]), 0.95, method=method, target=1.0, tau2=0.0, phi=1.0,
                                       mode="additive")
    assert lower[0] == pytest.approx(exact["lower"].iloc[0], abs=2e-3)
    assert upper[0] == pytest.approx(exact["upper"].iloc[0], abs=2e-3)


def test_multiplicative_overdispersion_scales_by_root_phi_only_when_above_one():
    e = np.array([10.0, 50.0])
    inflated = funnel_limits(e, overdispersion="multiplicative", phi=2.5, levels=[0.95])
    inflated = inflated[inflated["adjusted"]]
    np.testing.assert_allclose(inflated["upper"], np.exp(Z95 * np.sqrt(2.5) / np.sqrt(e)), rtol=1e-6)
    # φ ≤ 1: nothing to inflate, and the limits are the exact Poisson ones alone
    underdispersed = funnel_limits(e, overdispersion="multiplicative", phi=0.4, levels=[0.95])
    assert not underdispersed["adjusted"].any()
    np.testing.assert_allclose(underdispersed["upper"], stats.chi2.ppf(0.975, 2 * e + 2) / (2 * e))
    f = funnel_data(SR_UNITS, overdispersion="multiplicative")
    assert f.phi > 1
    np.testing.assert_allclose(f.units["z_adjusted"], f.units["z"] / math.sqrt(f.phi))


def test_proportion_limits_stay_in_range_and_monotone_at_small_n():
    grid = np.arange(1, 400, dtype=float)
    lim = funnel_limits(grid, data_type="PR", target=0.1, tau2=0.01)
    assert lim["lower"].between(0, 1).all() and lim["upper"].between(0, 1).all()
    for (_, _), part in lim.groupby(["adjusted", "level"]):
        assert (np.diff(part["lower"]) >= -1e-12).all()  # lower limits rise toward the target
        assert (np.diff(part["upper"]) <= 1e-12).all()
    with pytest.raises(ParameterError, match="target"):
        funnel_limits(grid, data_type="PR")


def test_funnel_curves_are_tidy_and_cover_both_adjustments():
    f = funnel_data(SR_UNITS, levels=(0.9, 0.95, 0.998), grid_points=50)
    assert list(f.limits.columns) == ["x", "level", "lower", "upper", "adjusted", "method"]
    assert len(f.limits) == 50 * 3 * 2
    assert f.limits["x"].min() == pytest.approx(3.0) and f.limits["x"].max() == pytest.approx(99.0)
    assert {"lower_90", "upper_90", "lower_95", "lower_99.8"} <= set(f.units.columns)
    none = funnel_data(SR_UNITS, overdispersion="none")
    assert not none.limits["adjusted"].any()


def test_supplied_phi_and_tau2_are_used():
    f = funnel_data(SR_UNITS, tau2=0.0)
    g = funnel_data(SR_UNITS, overdispersion="none")
    assert f.tau2 == 0 and f.phi == pytest.approx(g.phi)
    # τ² = 0 given: no over-dispersion to adjust for, so the exact Poisson limits classify (φ > 1 notwithstanding)
    e = SR_UNITS["expected"].to_numpy()
    np.testing.assert_allclose(f.units["upper_95"], stats.chi2.ppf(0.975, 2 * e + 2) / (2 * e))
    assert not f.adjusted and f.limits_method == "SR, exact Poisson (no over-dispersion: τ² = 0)"
    assert f.units["funnel_class"].tolist() == g.units["funnel_class"].tolist()
    # a τ² given above 0 is used as given, even where the units' own φ would show no over-dispersion
    calm = pd.DataFrame({"observed": [20, 40, 60], "expected": [20.0, 40.0, 60.0]})
    h = funnel_data(calm, tau2=0.05)
    assert h.phi == 0 and h.adjusted
    np.testing.assert_allclose(h.units["upper_95"], np.exp(Z95 * np.sqrt(1 / calm["expected"] + 0.05)), rtol=1e-6)


def test_funnel_zero_events_and_zero_expected():
    units = pd.DataFrame({"observed": [0, 5, 9, 12], "expected": [3.0, 4.0, 0.0, 10.0]})
    with pytest.warns(FunnelWarning, match="infinite"):
        f = funnel_data(units)
    u = f.units
    assert f.n_used == 2  # the unit with no events was left out of φ; the one with E = 0 is not a unit
    assert u.loc[0, "funnel_class"] in {"within", "low 95%", "low 99.8%"}
    assert pd.isna(u.loc[2, "funnel_class"]) and np.isnan(u.loc[2, "z"])
    with pytest.raises(ParameterError, match="exceeds"):
        funnel_data(pd.DataFrame({"events": [5], "n": [3]}), data_type="PR")
    with pytest.raises(ParameterError, match="method"):
        funnel_data(SR_UNITS, method="arcsine")


def test_funnel_takes_indirect_standardisation_output_without_clobbering_it():
    stays = SR_UNITS.loc[SR_UNITS.index.repeat(2)].assign(observed=lambda d: d["observed"] / 2,
                                                           expected=lambda d: d["expected"] / 2)
    ratios = indirect_standardisation(stays, by="facility_id")
    f = funnel_data(ratios)
    assert (f.units["method"] == ratios["method"]).all() and (f.units["lower"] == ratios["lower"]).all()
    assert f.units["funnel_method"].iloc[0] == "SR SHMI, additive τ² (10% truncation)"
    assert f.phi == pytest.approx(funnel_data(SR_UNITS).phi)


_CLASS_ORDER = {"low 99.8%": 0, "low 95%": 1, "within": 2, "high 95%": 3, "high 99.8%": 4}


@settings(max_examples=60, deadline=None)
@given(e=hst.floats(0.5, 500), o1=hst.integers(0, 800), o2=hst.integers(0, 800), tau2=hst.floats(0, 0.2),
       method=hst.sampled_from(["SHMI", "CQC"]),
       overdispersion=hst.sampled_from(["additive", "multiplicative", "none"]))
def test_funnel_class_monotone_in_observed(e, o1, o2, tau2, method, overdispersion):
    lo, hi = sorted((o1, o2))
    frame = pd.DataFrame({"observed": [lo, hi], "expected": [e, e]})
    # φ and τ² fixed, so each unit's class depends on its own O and E alone
    f = funnel_data(frame, method=method, overdispersion=overdispersion, phi=1.7, tau2=tau2, grid=[1.0])
    c = [_CLASS_ORDER[v] for v in f.units["funnel_class"]]
    assert c[0] <= c[1]


@settings(max_examples=60, deadline=None)
@given(x=hst.floats(0.5, 5000), l1=hst.floats(0.5, 0.999), l2=hst.floats(0.5, 0.999), tau2=hst.floats(0, 0.3),
       kind=hst.sampled_from([("SR", "SHMI"), ("SR", "CQC"), ("PR", None)]),
       overdispersion=hst.sampled_from(["additive", "multiplicative", "none"]))
def test_funnel_limits_widen_with_level(x, l1, l2, tau2, kind, overdispersion):
    small, big = sorted((l1, l2))
    data_type, method = kind
    target = 0.3 if data_type == "PR" else None
    args = dict(data_type=data_type, method=method, target=target, tau2=tau2, phi=1.5,
                overdispersion=overdispersion)
    a = funnel_limits([x], levels=[small], **args)
    b = funnel_limits([x], levels=[big], **args)
    assert (b["lower"].to_numpy() <= a["lower"].to_numpy() + 1e-12).all()
    assert (b["upper"].to_numpy() >= a["upper"].to_numpy() - 1e-12).all()


# ---------------------------------------------------------------------------------------------------- SPC

# Baseline of ten points alternating 10, 12: centre 11, mean moving range 2, σ = 2/1.128.
# 2σ limits 11 ± 3.546 = (7.454, 14.546); 3σ limits 11 ± 5.319 = (5.681, 16.319). The baseline itself alternates
# sides and directions, so it signals nothing.
BASE = [10.0, 12.0] * 5
RULES = ["beyond_3sigma", "shift", "trend", "two_of_three"]


def _flagged(out):
    return {rule: [i for i, v in enumerate(out[rule]) if v] for rule in RULES}


def test_xmr_limits_by_hand():
    out = xmr_chart(BASE + [11.0], baseline=10)
    sigma = 2 / 1.128
    assert out["centre"].iloc[0] == pytest.approx(11) and out["sigma"].iloc[0] == pytest.approx(sigma)
    assert out["upper_2sigma"].iloc[0] == pytest.approx(11 + 2 * sigma)
    assert out["lower_3sigma"].iloc[0] == pytest.approx(11 - 3 * sigma)
    assert out["moving_range_upper"].iloc[0] == pytest.approx(3.267 * 2)
    assert np.isnan(out["moving_range"].iloc[0]) and out["moving_range"].iloc[10] == 1


@pytest.mark.parametrize(("tail", "improvement", "rule", "points", "label"), [
    # one point above the 3σ limit
    ([11.5, 10.5, 20.0, 10.5, 11.5], "lower", "beyond_3sigma", [12], "concern"),
    # seven points above the centre (between a point below and a point below), alternating, within 2σ
    ([10.0, 12.0, 13.0, 12.0, 13.0, 12.0, 13.0, 12.0, 10.0], "higher", "shift", list(range(11, 18)), "improvement"),
    # seven rising points straddling the centre (after a fall from 12 and before a fall to 10)
    ([8.0, 9.0, 10.0, 10.5, 11.5, 12.0, 13.0, 10.0], "higher", "trend", list(range(10, 17)), "improvement"),
    # two of three consecutive points above the upper 2σ limit (15, 12, 15)
    ([10.0, 15.0, 12.0, 15.0, 10.0], "lower", "two_of_three", [11, 13], "concern"),
])
def test_each_rule_fires_once(tail, improvement, rule, points, label):
    out = xmr_chart(BASE + tail, baseline=10, improvement=improvement)
    flagged = _flagged(out)
    assert flagged[rule] == points
    assert all(not flagged[r] for r in RULES if r != rule)  # and no other rule fires
    assert set(out.loc[points, rule]) == {label}
    assert (out.loc[points, "signal"] == label).all()
    assert (out.drop(index=points)["signal"] == "common cause").all()


def test_no_rule_fires_on_common_cause_variation():
    out = xmr_chart(BASE + [11.5, 10.5, 12.0, 10.0], baseline=10, improvement="higher")
    assert (out["signal"] == "common cause").all()
    assert all(not v for rule in RULES for v in out[rule])


def test_ties_break_a_trend_and_the_centre_line_breaks_a_run():
    tied = xmr_chart(BASE + [8.0, 9.0, 9.0, 10.0, 10.5, 11.5, 12.0, 10.0], baseline=10)
    assert not any(tied["trend"])  # 9, 9 splits eight rising points into runs of 2 and 6
    rising = xmr_chart(BASE + [8.0, 9.0, 9.5, 10.0, 10.5, 11.5, 12.0, 10.0], baseline=10)
    assert any(rising["trend"])
    on_line = xmr_chart(BASE + [10.0, 12.0, 13.0, 12.0, 11.0, 13.0, 12.0, 13.0, 10.0], baseline=10)
    assert not any(on_line["shift"])  # 11 sits on the centre line: 3 + 3 points above, not 7


def test_signals_without_direction_are_neither():
    out = xmr_chart(BASE + [11.5, 10.5, 20.0, 10.5], baseline=10)
    assert out.loc[12, "beyond_3sigma"] == "neither" and out.loc[12, "signal"] == "neither"


def test_concern_takes_precedence_when_a_point_carries_both_kinds():
    # seven points below the centre that also rise for seven points: a low shift and a rising trend at once
    out = xmr_chart(BASE + [12.0, 7.6, 8.0, 8.5, 9.0, 9.5, 10.0, 10.5, 12.0], baseline=10, improvement="lower")
    both = [i for i in range(len(out)) if out.loc[i, "shift"] and out.loc[i, "trend"]]
    assert both
    assert set(out.loc[both, "shift"]) == {"improvement"} and set(out.loc[both, "trend"]) == {"concern"}
    assert (out.loc[both, "signal"] == "concern").all()


def test_p_chart_limits_by_hand():
    df = pd.DataFrame({"facility_id": "H1", "period": pd.period_range("2024-01", periods=5, freq="M"),
                       "events": [3, 5, 2, 4, 0], "n": [40, 60, 25, 50, 0]})
    out = p_chart(df.iloc[::-1], improvement="lower")  # rows out of order: the chart sorts by period
    assert out["period"].is_monotonic_increasing and (out["facility_id"] == "H1").all()
    p_bar = 14 / 175
    for i, n in enumerate([40, 60, 25, 50]):
        sigma = math.sqrt(p_bar * (1 - p_bar) / n)
        assert out.loc[i, "centre"] == pytest.approx(p_bar)
        assert out.loc[i, "sigma"] == pytest.approx(sigma)
        assert out.loc[i, "upper_3sigma"] == pytest.approx(p_bar + 3 * sigma)
        assert out.loc[i, "lower_2sigma"] == pytest.approx(max(0.0, p_bar - 2 * sigma))
        assert out.loc[i, "lower_3sigma"] == 0  # p̄ − 3σ < 0 at these sizes: clipped
    assert np.isnan(out.loc[4, "rate"]) and pd.isna(out.loc[4, "signal"])  # a period with no cases
    base = p_chart(df, baseline=2)
    assert base["centre"].iloc[0] == pytest.approx(8 / 100) and base["baseline"].tolist() == [True] * 2 + [False] * 3


def test_p_chart_signal_on_a_jump():
    df = pd.DataFrame({"period": range(12), "events": [10, 12, 9, 11, 10, 12, 9, 11, 10, 12, 40, 11],
                       "n": [100] * 12})
    out = p_chart(df, baseline=10, improvement="lower")
    assert out.loc[10, "beyond_3sigma"] == "concern" and out.loc[10, "signal"] == "concern"
    with pytest.raises(ParameterError, match="repeated"):
        p_chart(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ParameterError, match="baseline"):
        p_chart(df, baseline=0)


def test_laney_sigma_z_by_hand():
    # about 10,000 cases a month: between-month variation far beyond binomial noise
    df = pd.DataFrame({"period": range(6), "events": [2000, 2600, 1900, 2500, 2100, 2400],
                       "n": [10000, 11000, 10000, 10500, 9800, 10200]})
    x, n = df["events"].tolist(), df["n"].tolist()
    p_bar = sum(x) / sum(n)
    s = [math.sqrt(p_bar * (1 - p_bar) / ni) for ni in n]
    z = [(xi / ni - p_bar) / si for xi, ni, si in zip(x, n, s, strict=True)]
    sigma_z = sum(abs(z[i] - z[i - 1]) for i in range(1, 6)) / 5 / 1.128
    out = laney_p_chart(df)
    assert out["sigma_z"].iloc[0] == pytest.approx(sigma_z)
    for i in range(6):
        assert out.loc[i, "upper_3sigma"] == pytest.approx(p_bar + 3 * s[i] * sigma_z)
        assert out.loc[i, "lower_2sigma"] == pytest.approx(p_bar - 2 * s[i] * sigma_z)
    # the ordinary p-chart calls most of these months special cause; the p′ chart (σ_z ≈ 7.6) calls none
    assert (p_chart(df)["signal"] != "common cause").sum() >= 4
    assert (out["signal"] == "common cause").all()
    with pytest.raises(ParameterError, match="no variation"):
        laney_p_chart(df.assign(events=0))


# ---------------------------------------------------------------------------------------------- shrinkage


def _simulate(seed, a=8.0, b=32.0, units=200):
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 400, units)
    x = rng.binomial(n, rng.beta(a, b, units))
    return pd.DataFrame({"facility_id": [f"U{i:03d}" for i in range(units)], "events": x, "n": n})


def test_beta_binomial_recovers_known_prior():
    df = _simulate(3)
    out = beta_binomial_shrinkage(df, by="facility_id")
    a, b = out["a"].iloc[0], out["b"].iloc[0]
    assert a / (a + b) == pytest.approx(0.2, abs=0.02)
    assert 25 < a + b < 70  # truth 40
    assert out["reliability"].between(0, 1, inclusive="neither").all()
    # reliability rises with size; the posterior mean is the reliability-weighted average
    order = np.argsort(out["n"].to_numpy())
    assert (np.diff(out["reliability"].to_numpy()[order]) >= 0).all()
    r = out["reliability"]
    np.testing.assert_allclose(out["shrunken_rate"], r * out["rate"] + (1 - r) * out["prior_mean"])
    # small units move further toward the prior mean than large ones
    move = (out["shrunken_rate"] - out["rate"]).abs() / (out["rate"] - out["prior_mean"]).abs()
    small = out["n"] < out["n"].median()
    assert move[small].mean() > move[~small].mean()
    assert (out["lower"] <= out["shrunken_rate"]).all() and (out["shrunken_rate"] <= out["upper"]).all()


def test_beta_binomial_fit_matches_a_direct_maximisation():
    df = _simulate(11, units=60)
    out = beta_binomial_shrinkage(df, by="facility_id")
    x, n = df["events"].to_numpy(), df["n"].to_numpy()

    def nll(theta):  # scipy's beta-binomial pmf, derivative-free optimiser, different start
        return -stats.betabinom.logpmf(x, n, *np.exp(theta)).sum()

    res = optimize.minimize(nll, np.log([1.0, 1.0]), method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 5000})
    assert out["a"].iloc[0] == pytest.approx(np.exp(res.x[0]), rel=1e-3)
    assert out["b"].iloc[0] == pytest.approx(np.exp(res.x[1]), rel=1e-3)


def test_beta_binomial_row_level_input_and_empty_units():
    stays = pd.DataFrame({"facility_id": ["A"] * 10 + ["B"] * 20 + ["C"] * 5,
                          "readmitted": [1] * 3 + [0] * 7 + [1] * 2 + [0] * 18 + [1] * 4 + [0]})
    out = beta_binomial_shrinkage(stays, by="facility_id", events="readmitted", n=None)
    assert out["n"].tolist() == [10, 20, 5] and out["events"].tolist() == [3, 2, 4]
    agg = pd.DataFrame({"facility_id": ["A", "B", "C", "D"], "events": [3, 2, 4, 0], "n": [10, 20, 5, 0]})
    out2 = beta_binomial_shrinkage(agg, by="facility_id")
    np.testing.assert_allclose(out2["a"].iloc[0], out["a"].iloc[0], rtol=1e-5)  # D adds nothing to the fit
    d = out2.iloc[3]
    assert np.isnan(d["rate"]) and d["reliability"] == 0 and d["shrunken_rate"] == pytest.approx(d["prior_mean"])


def test_beta_binomial_warns_without_between_unit_variance():
    n = np.array([50, 100, 150, 200, 250, 300, 80, 120])
    df = pd.DataFrame({"u": range(8), "events": n // 5, "n": n})  # every unit at exactly 20 %
    with pytest.warns(NoBetweenUnitVarianceWarning):
        out = beta_binomial_shrinkage(df, by="u")
    assert out["reliability"].max() < 0.01
    np.testing.assert_allclose(out["shrunken_rate"], 0.2, atol=1e-3)
    with pytest.raises(ParameterError, match="no events"):
        beta_binomial_shrinkage(df.assign(events=0), by="u")


# ---------------------------------------------------------------------------------------------- scorecard


def _card_input():
    # two measures; facility D has 20 cases only
    return pd.DataFrame({
        "facility_id": ["A", "B", "C", "D", "A", "B", "C", "D"],
        "measure": ["readmission"] * 4 + ["mortality"] * 4,
        "observed": [70, 30, 52, 9, 12, 14, 11, 1],
        "expected": [50.0, 45.0, 50.0, 4.0, 12.5, 13.0, 12.0, 1.5],
        "n": [250, 230, 240, 20, 250, 230, 240, 20],
    })


def test_scorecard_labels_from_the_interval():
    df = _card_input()
    before = df.copy()
    card = scorecard(df, n="n")
    assert df.equals(before)
    assert list(card.columns) == ["measure", "facility_id", "n", "observed", "expected", "ratio", "lower", "upper",
                                  "level", "method", "funnel_class", "label", "label_basis"]
    got = dict(zip(zip(card["measure"], card["facility_id"], strict=True), card["label"], strict=True))
    assert got[("readmission", "A")] == "higher than expected"  # 70/50, Byar lower limit > 1
    assert got[("readmission", "B")] == "lower than expected"  # 30/45, upper limit < 1
    assert got[("readmission", "C")] == "as expected"
    assert got[("readmission", "D")] == "too few cases to judge"  # 9/4 would be "higher", but 20 < 25 cases
    assert got[("mortality", "D")] == "too few cases to judge"
    assert {got[("mortality", f)] for f in "ABC"} == {"as expected"}
    judged = card[card["n"] >= 25]
    # the label is read off the row's own interval
    assert ((judged["label"] == LABELS[0]) == (judged["lower"] > 1)).all()
    assert ((judged["label"] == LABELS[2]) == (judged["upper"] < 1)).all()
    assert set(card.loc[card["n"] < 25, "label_basis"]) == {"fewer than 25 cases"}


def test_scorecard_from_stay_rows_counts_cases():
    stays = pd.DataFrame({"facility_id": ["A"] * 30 + ["B"] * 10, "observed": [1] * 6 + [0] * 24 + [1] + [0] * 9,
                          "expected": [0.2] * 40})
    card = scorecard(stays, measure=None)
    assert card["n"].tolist() == [30, 10] and card["observed"].tolist() == [6, 1]
    assert card["expected"].tolist() == pytest.approx([6.0, 2.0])
    assert card["label"].tolist() == ["as expected", "too few cases to judge"]
    assert scorecard(stays, measure=None, min_cases=5)["label"].tolist() == ["as expected", "as expected"]


def test_scorecard_funnel_labels_and_signals():
    df = _card_input()
    card = scorecard(df, n="n", label_by="funnel", funnel_method="SHMI", overdispersion="none")
    for measure, part in df.groupby("measure"):
        f = funnel_data(part.reset_index(drop=True), overdispersion="none")
        classes = dict(zip(f.units["facility_id"], f.units["funnel_class"], strict=True))
        sub = card[card["measure"] == measure]
        for _, row in sub.iterrows():
            assert row["funnel_class"] == classes[row["facility_id"]]
            if row["n"] >= 25:
                expect = ("higher than expected" if row["funnel_class"].startswith("high") else
                          "lower than expected" if row["funnel_class"].startswith("low") else "as expected")
                assert row["label"] == expect
    signals = pd.DataFrame({"facility_id": ["A", "B"], "measure": ["readmission"] * 2,
                            "signal": ["concern", "common cause"]})
    with_spc = scorecard(df, n="n", signals=signals)
    a = with_spc[(with_spc["facility_id"] == "A") & (with_spc["measure"] == "readmission")]
    assert a["spc_signal"].iloc[0] == "concern"
    assert with_spc["spc_signal"].isna().sum() == 6
    with pytest.raises(ParameterError, match="repeated"):
        scorecard(df, n="n", signals=pd.concat([signals, signals]))
    with pytest.raises(ParameterError, match="label_by"):
        scorecard(df, n="n", label_by="rank")


def test_reproduces_funnelplotr_published_poisson_limits():
    """FunnelPlotR's own test values (tests/testthat/test-poisson_limits.R): unadjusted ratio limits at expected
    counts 15, 20, 30 with target 1, to the digits it publishes."""
    from carequal.compare import funnel_limits

    limits = funnel_limits(np.array([15.0, 20.0, 30.0]), data_type="SR")
    plain = limits[~limits["adjusted"]]
    low95, up95 = plain[plain["level"] == 0.95]["lower"], plain[plain["level"] == 0.95]["upper"]
    low998, up998 = plain[plain["level"] == 0.998]["lower"], plain[plain["level"] == 0.998]["upper"]
    assert np.round(low95, 7).tolist() == [0.5596924, 0.6108260, 0.6746958]
    assert np.round(up95, 6).tolist() == [1.649348, 1.544419, 1.427562]
    assert np.round(low998, 7).tolist() == [0.3862650, 0.4479107, 0.5289724]
    assert np.round(up998, 6).tolist() == [2.082907, 1.902094, 1.702771]


# ------------------------------------------------------------------ funnel: exact limits without over-dispersion


def _poisson_cdf(k: int, mean: float) -> float:
    """P(X ≤ k) for X ~ Poisson(mean), summed term by term (independent of scipy)."""
    term, total = math.exp(-mean), 0.0
    for i in range(k + 1):
        total += term
        term *= mean / (i + 1)
    return total


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


# Units that vary no more than chance, with O = 10 at E = 16.54 among them.
CALM = pd.DataFrame({"facility_id": list("ABCDEF"), "observed": [10, 21, 29, 41, 50, 62],
                     "expected": [16.54, 20.0, 30.0, 40.0, 52.0, 60.0]})


def test_o10_at_e16_54_is_inside_the_exact_limits_when_there_is_no_overdispersion():
    # The exact test: P(X ≤ 10 | mean 16.54) = 0.0608, more than 0.025, so 10/16.54 = 0.6046 is not low at 95 %.
    p_low = _poisson_cdf(10, 16.54)
    assert p_low == pytest.approx(0.0608, abs=5e-4) and p_low > 0.025
    # The log-normal limit with τ² = 0, exp(−1.96/√16.54) = 0.6176, would have flagged it (the old behaviour).
    assert 10 / 16.54 < math.exp(-Z95 / math.sqrt(16.54))

    f = funnel_data(CALM)
    # φ by hand: with N = 6 truncation keeps every rank (floor(10 r / 7) is 1, 2, 4, 5, 7, 8, all in 1..8);
    # 6φ < 5, so τ² = 0 and there is no over-dispersion to adjust for
    z = [math.sqrt(e) * math.log(o / e) for o, e in zip(CALM["observed"], CALM["expected"], strict=True)]
    assert f.n_used == 6 and f.phi == pytest.approx(sum(v * v for v in z) / 6)
    assert 6 * f.phi < 5 and f.tau2 == 0
    assert not f.adjusted and f.limits_method == "SR, exact Poisson (no over-dispersion: τ² = 0)"
    a = f.units.iloc[0]
    assert a["funnel_class"] == "within"
    # the classifying limit is Garwood's at O = E: the gamma(16.54) quantile at 0.025, divided by E (0.5776)
    assert a["lower_95"] == pytest.approx(stats.gamma.ppf(0.025, 16.54) / 16.54, rel=1e-9)
    assert a["lower_95"] == pytest.approx(0.5776, abs=1e-4)
    assert a["upper_99.8"] == pytest.approx(stats.gamma.ppf(0.999, 17.54) / 16.54, rel=1e-9)
    assert (f.units["funnel_method"] == "SR, exact Poisson (no over-dispersion: τ² = 0) (10% truncation)").all()
    # the curves for plotting are the exact ones only
    assert not f.limits["adjusted"].any() and set(f.limits["method"]) == {"SR, exact Poisson"}
    # the same with the multiplicative adjustment (φ ≤ 1) and on the CQC scale
    g = funnel_data(CALM, overdispersion="multiplicative")
    assert g.limits_method == "SR, exact Poisson (no over-dispersion: φ ≤ 1)"
    assert g.units.iloc[0]["funnel_class"] == "within"
    np.testing.assert_allclose(g.units["lower_95"], f.units["lower_95"])
    h = funnel_data(CALM, method="CQC")
    assert h.tau2 == 0 and not h.adjusted
    np.testing.assert_allclose(h.units["upper_95"], f.units["upper_95"])


def test_phi_at_most_one_uses_exact_limits_even_with_a_small_positive_tau2():
    # k φ ≥ k − 1 but φ ≤ 1: DerSimonian–Laird gives a small τ² > 0 (FunnelPlotR would draw adjusted limits);
    # with no over-dispersion (φ ≤ 1) the exact limits classify
    units = pd.DataFrame({"observed": [22, 30, 46, 35, 69, 78, 76, 77, 102, 107],
                          "expected": [20.0, 25.0, 35.0, 45.0, 60.0, 70.0, 80.0, 90.0, 100.0, 120.0]})
    f = funnel_data(units)
    k = f.n_used
    assert (k - 1) / k <= f.phi <= 1 and f.tau2 > 0
    assert not f.adjusted and f.limits_method == "SR, exact Poisson (no over-dispersion: φ ≤ 1)"
    e = units["expected"].to_numpy()
    np.testing.assert_allclose(f.units["lower_95"], stats.chi2.ppf(0.025, 2 * e) / (2 * e))
    np.testing.assert_allclose(f.units["z_adjusted"], f.units["z"])


@pytest.mark.parametrize("e", [1, 5, 12, 40])
@pytest.mark.parametrize("level", [0.95, 0.998])
def test_exact_poisson_limits_are_garwood_at_o_equals_e(e, level):
    # For whole E the lower limit L makes E the α/2 upper-tail count of Poisson(L·E), the upper limit U the
    # α/2 lower-tail count of Poisson(U·E): the exact (Garwood) interval of a count O = E
    lim = funnel_limits([float(e)], overdispersion="none", levels=[level]).iloc[0]
    a = (1 - level) / 2
    assert 1 - _poisson_cdf(e - 1, lim["lower"] * e) == pytest.approx(a, rel=1e-6)
    assert _poisson_cdf(e, lim["upper"] * e) == pytest.approx(a, rel=1e-6)
    # a target other than 1 is the mean of the count: Poisson(E · target)
    lim2 = funnel_limits([float(e)], target=2.0, overdispersion="none", levels=[level]).iloc[0]
    assert 1 - _poisson_cdf(2 * e - 1, lim2["lower"] * e) == pytest.approx(a, rel=1e-6)
    assert _poisson_cdf(2 * e, lim2["upper"] * e) == pytest.approx(a, rel=1e-6)


@pytest.mark.parametrize(("n", "p"), [(20, 0.2), (50, 0.1), (10, 0.5), (8, 0.0), (8, 1.0)])
def test_exact_binomial_limits_are_clopper_pearson_at_the_expected_count(n, p):
    lim = funnel_limits([float(n)], data_type="PR", target=p, overdispersion="none", levels=[0.95]).iloc[0]
    assert lim["method"] == "PR, exact binomial" and not lim["adjusted"]
    m = round(n * p)
    # lower L: P(X ≥ m | n, L) = 0.025 (0 when m = 0); upper U: P(X ≤ m | n, U) = 0.025 (1 when m = n)
    if m == 0:
        assert lim["lower"] == 0
    else:
        assert 1 - _binom_cdf(m - 1, n, lim["lower"]) == pytest.approx(0.025, rel=1e-6)
    if m == n:
        assert lim["upper"] == 1
    else:
        assert _binom_cdf(m, n, lim["upper"]) == pytest.approx(0.025, rel=1e-6)


def test_proportions_without_overdispersion_use_exact_binomial_limits():
    # overall rate 156/780 = 0.2; unit A has 8 of 20 (expected 4)
    units = pd.DataFrame({"facility_id": list("ABCDEFG"), "events": [8, 20, 40, 30, 10, 12, 36],
                          "n": [20, 100, 200, 150, 50, 60, 200]})
    f = funnel_data(units, data_type="PR")
    assert f.target == pytest.approx(0.2) and f.tau2 == 0 and not f.adjusted
    assert f.limits_method == "PR, exact binomial (no over-dispersion: τ² = 0)"
    # The exact test: P(X ≥ 8 | 20, 0.2) = 0.0321 > 0.025, so A is not high at 95 %; the arcsine limit with
    # τ² = 0, sin²(asin √0.2 + 1.96/(2√20)) = 0.3981, would have flagged its 0.4.
    assert 1 - _binom_cdf(7, 20, 0.2) == pytest.approx(0.0321, abs=1e-4)
    arcsine_upper = math.sin(math.asin(math.sqrt(0.2)) + Z95 / (2 * math.sqrt(20))) ** 2
    assert arcsine_upper == pytest.approx(0.3981, abs=1e-4) and 0.4 > arcsine_upper
    a = f.units.iloc[0]
    assert a["funnel_class"] == "within"
    # its classifying upper limit: P(X ≤ 4 | 20, U) = 0.025
    assert _binom_cdf(4, 20, a["upper_95"]) == pytest.approx(0.025, rel=1e-6) and a["upper_95"] > 0.4
    assert not f.limits["adjusted"].any()


def test_no_overdispersion_simulation_with_known_truth():
    """Counts drawn as Poisson(E), no between-unit variation: the exact branch is taken and the 95 % limits flag
    about 5 % of units; with between-unit variation (log-normal, sd 0.3) the adjusted branch is taken."""
    rng = np.random.default_rng(2024)
    exact_branch, flagged, flagged_lognormal, units = 0, 0, 0, 0
    for _ in range(150):
        e = rng.uniform(3, 60, 30)
        o = rng.poisson(e)
        f = funnel_data(pd.DataFrame({"observed": o, "expected": e}), grid=[1.0], levels=[0.95])
        exact_branch += not f.adjusted
        flagged += int((f.units["funnel_class"] != "within").sum())
        flagged_lognormal += int((np.abs(np.log(np.maximum(o, 1e-300) / e)) * np.sqrt(e) > Z95).sum())
        units += 30
    assert exact_branch >= 0.95 * 150
    assert 0.035 < flagged / units < 0.06  # nominal 5 %
    assert flagged / units < flagged_lognormal / units  # the log-normal limits flag more chance variation
    adjusted = 0
    for _ in range(50):
        e = rng.uniform(20, 300, 40)
        o = rng.poisson(e * np.exp(rng.normal(0, 0.3, 40)))
        adjusted += funnel_data(pd.DataFrame({"observed": o, "expected": e}), grid=[1.0]).adjusted
    assert adjusted == 50


# FunnelPlotR's medpar length-of-stay example, as published on its reference page for funnel_plot()
# (pkgdown, version 0.4.2; nhs-r-community/FunnelPlotR reference/funnel_plot.html, `source_data(fp)`): group,
# observed length of stay and expected (rounded to 2 decimals, FunnelPlotR's SHMI rounding) for 54 hospitals.
MEDPAR = pd.DataFrame([row.split() for row in """
030001 406 523.70  030002 642 612.98  030003 46 53.79  030006 764 763.72  030007 82 120.94  030008 201 250.19
030009 193 155.49  030010 569 484.71  030011 404 362.22  030012 134 188.93  030013 614 554.38  030014 491 616.74
030016 501 360.15  030017 131 245.61  030018 274 263.56  030019 124 154.66  030022 456 475.02  030023 48 38.93
030024 429 445.10  030025 14 28.80  030030 369 347.54  030033 8 7.56  030035 37 73.21  030036 128 118.11
030037 145 273.34  030038 493 449.79  030043 104 172.38  030044 6 19.20  030055 308 321.86  030059 34 36.56
030060 7 19.96  030061 935 851.72  030062 134 198.94  030064 339 302.39  030065 458 410.16  030067 22 45.87
030068 2 9.67  030069 160 212.34  030073 87 38.92  030078 55 31.74  030080 252 285.64  030083 174 186.66
030084 43 33.98  030085 228 255.65  030086 210 242.03  030087 321 279.48  030088 631 619.26  030089 543 626.13
030092 105 145.67  030093 389 413.86  030094 92 111.26  032000 1012 685.59  032002 283 181.11  032003 95 24.81
""".replace("  ", "\n").split("\n") if row.strip()], columns=["group", "observed", "expected"]).astype(
    {"observed": int, "expected": float})


def test_reproduces_funnelplotr_medpar_example_both_branches():
    # Over-dispersed branch: published φ = 8.532851, τ² = 0.02841023, 16 of 54 outliers at the 95 % OD limits
    # (reference page, summary(fp) with limit = 95) and 9 at the 99.8 % ones (README, limit = 99).
    assert len(MEDPAR) == 54
    f = funnel_data(MEDPAR)
    assert round(f.phi, 6) == 8.532851 and round(f.tau2, 8) == 0.02841023
    assert f.n_used == 44 and f.adjusted and f.limits_method == "SR SHMI, additive τ²"
    u = f.units.set_index("group")
    outliers95 = set(u.index[u["funnel_class"] != "within"])
    assert outliers95 == {"030007", "030017", "030025", "030035", "030037", "030043", "030044", "030060", "030062",
                          "030067", "030068", "030073", "030078", "032000", "032002", "032003"}
    assert u["funnel_class"].str.endswith("99.8%").sum() == 9
    # published per-unit limits, OD95LCL, OD95UCL, OD99LCL, OD99UCL | LCL95, UCL95, LCL99, UCL99
    published = {
        "030033": (0.4558174, 2.193861, 0.2897498, 3.451253, 0.4192450, 2.007393, 0.2339215, 2.709899),
        "030068": (0.4908522, 2.037273, 0.3256333, 3.070939, 0.4725050, 1.857410, 0.2885378, 2.445625),
        "032003": (0.5982289, 1.671601, 0.4448276, 2.248062, 0.6459532, 1.478364, 0.4919575, 1.789136),
        "030023": (0.6338995, 1.577537, 0.4873600, 2.051871, 0.7108611, 1.367413, 0.5767359, 1.601144),
        "030006": (0.7132769, 1.401980, 0.5869963, 1.703588, 0.9303262, 1.073510, 0.8918993, 1.116945),
        "030061": (0.7138263, 1.400901, 0.5877093, 1.701521, 0.9339606, 1.069477, 0.8974496, 1.110477),
    }
    e = MEDPAR.set_index("group")["expected"]
    exact = funnel_limits(e[list(published)].to_numpy(), overdispersion="none").set_index(["x", "level"])
    for group, values in published.items():
        row = u.loc[group]
        got = [row["lower_95"], row["upper_95"], row["lower_99.8"], row["upper_99.8"]]
        got += [exact.loc[(e[group], lv), side] for lv in (0.95, 0.998) for side in ("lower", "upper")]
        # the exact limits to the 7 significant digits printed; the adjusted ones to within 1 in the 7th digit, as
        # FunnelPlotR writes z = 3.090232 for 99.8 % (here 3.0902323...: its OD99UCL of 030033 prints 3.451253,
        # this 3.4512536)
        assert [float(f"{v:.7g}") for v in got[4:]] == list(values[4:]), group
        for g, v in zip(got[:4], values[:4], strict=True):
            assert abs(g - v) <= 10 ** (math.floor(math.log10(v)) - 6), group
    # Exact branch: FunnelPlotR's README prints 25 of 54 outliers at its unadjusted (exact Poisson) 99.8 % limits;
    # the same limits classify here with overdispersion="none", or when τ² = 0 (no over-dispersion)
    for g in (funnel_data(MEDPAR, overdispersion="none"), funnel_data(MEDPAR, tau2=0.0)):
        assert not g.adjusted
        assert g.units["funnel_class"].str.endswith("99.8%").sum() == 25
