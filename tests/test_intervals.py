"""Intervals checked against independent computations and published values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from carequal.errors import ParameterError
from carequal.intervals import count_interval, dobson_dsr, poisson_byar, poisson_exact, wilson


def test_wilson_matches_the_closed_form():
    events, n, z = 15.0, 100.0, stats.norm.ppf(0.975)
    p = events / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    lo, hi = wilson([events], [n])
    assert lo[0] == pytest.approx(centre - half) and hi[0] == pytest.approx(centre + half)


@pytest.mark.parametrize("level", [0.95, 0.9, 0.99, 0.8])
def test_wilson_gives_statsmodels_values_bit_for_bit(level):
    """Written out (statsmodels' interval module costs a report kernel ~0.7 s to import): the same values as
    ``statsmodels.stats.proportion.proportion_confint(method="wilson")``, to the last bit, after the same clipping
    to [0, 1] and to the estimate."""
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(7)
    n = np.concatenate([[1, 1, 2, 3, 10, 11, 50, 1_000_000], rng.integers(1, 5000, 3000)]).astype(float)
    events = np.concatenate([[0, 1, 1, 3, 0, 11, 25, 999_999], np.floor(rng.random(3000) * (n[8:] + 1))])
    lo, hi = wilson(events, n, level=level)
    ref_lo, ref_hi = proportion_confint(events, n, alpha=1 - level, method="wilson")
    p = events / n
    np.testing.assert_array_equal(lo, np.clip(np.minimum(ref_lo, p), 0, 1))
    np.testing.assert_array_equal(hi, np.clip(np.maximum(ref_hi, p), 0, 1))


def test_wilson_zero_denominator_is_missing():
    lo, hi = wilson([0, 0], [0, 10])
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] == 0


def test_exact_poisson_published_values():
    # Garwood limits tabulated e.g. in Breslow & Day vol. II, appendix: O=0 → (0, 3.689); O=1 → (0.0253, 5.572);
    # O=10 → (4.795, 18.390)
    lo, hi = poisson_exact([0, 1, 10])
    np.testing.assert_allclose(lo, [0, 0.0253, 4.795], atol=1e-3)
    np.testing.assert_allclose(hi, [3.689, 5.572, 18.390], atol=1e-3)


def test_byar_close_to_exact_for_large_counts():
    o = np.array([10, 50, 200, 1000])
    blo, bhi = poisson_byar(o)
    elo, ehi = poisson_exact(o)
    np.testing.assert_allclose(blo, elo, rtol=2e-3)
    np.testing.assert_allclose(bhi, ehi, rtol=2e-3)


def test_count_interval_switches_method_at_10():
    lo, hi, method = count_interval([9, 10])
    assert method.tolist() == ["exact Poisson", "Byar"]
    elo, _ = poisson_exact([9])
    assert lo[0] == elo[0]


def test_dobson_hand_worked():
    # strata rates 10/1000 and 30/2000 with equal weights: DSR = 0.5·0.010 + 0.5·0.015 = 0.0125 (12.5 per 1,000)
    # var = 0.25·10/1000² + 0.25·30/2000² = 4.375e-6; O = 40, exact limits (28.58, 54.47)
    d = dobson_dsr(pd.Series([10, 30]), pd.Series([1000.0, 2000.0]), pd.Series([1.0, 1.0]))
    o_lo, o_hi = poisson_exact([40])
    scale = np.sqrt(4.375e-6 / 40)
    assert d["rate"] == pytest.approx(12.5)
    assert d["lower"] == pytest.approx((0.0125 + scale * (o_lo[0] - 40)) * 1000)
    assert d["upper"] == pytest.approx((0.0125 + scale * (o_hi[0] - 40)) * 1000)


def test_dobson_equals_crude_rate_with_one_stratum():
    d = dobson_dsr(pd.Series([25]), pd.Series([5000.0]), pd.Series([3.0]))
    lo, hi = poisson_exact([25])
    assert d["rate"] == pytest.approx(5.0)
    assert d["lower"] == pytest.approx(lo[0] / 5000 * 1000) and d["upper"] == pytest.approx(hi[0] / 5000 * 1000)


def test_bad_level():
    with pytest.raises(ParameterError, match="level must be between 0 and 1"):
        wilson([1], [2], level=95)
