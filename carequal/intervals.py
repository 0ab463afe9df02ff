"""Confidence intervals for proportions, counts, rates and directly standardised rates.

One function per idea, vectorised over arrays, the method named in the output (as PHEindicatormethods
does). Proportions use the Wilson interval; counts use exact (Garwood) Poisson limits below 10
events and Byar's approximation from 10 up; directly standardised rates use Dobson's method; the difference
of two proportions uses Newcombe's hybrid score interval.

Quantiles come from ``scipy.special`` (``ndtri``, ``gammaincinv``, ``betaincinv``, ``stdtrit``), the
functions ``scipy.stats``' distributions call themselves, so the values are the same to the bit; carequal's
modules do not import ``scipy.stats``, which takes about 0.7 s to import (it builds every distribution's
docstring), paid by every report kernel. The chi-squared quantile used by Garwood's limits is written as
``chi2.ppf(p, 2k) / 2 = gammaincinv(k, p)``.

Why the Wilson interval is written here rather than called from statsmodels (``proportion_confint``): importing
``statsmodels.stats.proportion`` takes about 0.7 s (statsmodels, scipy.stats and polars), and every report
kernel that shows a proportion (a market report's rates, a hospital packet's leakage) would pay it for five
lines of arithmetic. The formula is Wilson's; ``tests/test_intervals.py`` checks that it gives statsmodels'
values bit for bit.

References
----------
Wilson EB (1927) JASA 22:209-12. Garwood F (1936) Biometrika 28:437-42. Breslow NE, Day NE (1987)
Statistical Methods in Cancer Research II (Byar's approximation, p. 69). Dobson AJ, Kuulasmaa K, Eberle E,
Scherer J (1991) Confidence intervals for weighted sums of Poisson parameters. Stat Med 10:457-62. Newcombe RG
(1998) Interval estimation for the difference between independent proportions. Stat Med 17:873-90.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from carequal.errors import ParameterError

__all__ = ["EXACT_BELOW", "change_interval", "count_interval", "difference_interval", "dobson_dsr", "poisson_byar",
           "poisson_exact", "wilson"]

EXACT_BELOW = 10
"""Counts below this use exact Poisson limits; from it up, Byar's approximation."""


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")


def wilson(events, n, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for proportions ``events / n`` (missing where ``n == 0``).

    Examples
    --------
    >>> lo, hi = wilson([15], [100])
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.0931, 0.2328)
    """
    _check_level(level)
    events = np.asarray(events, dtype=float)
    n = np.asarray(n, dtype=float)
    safe_n = np.where(n > 0, n, 1)
    # Wilson (1927): centre (p + z²/2n) / (1 + z²/n), half-width z √(p(1 - p)/n + z²/4n²) / (1 + z²/n), written in
    # the order of statsmodels' proportion_confint(method="wilson"), which gives the same bits (a test compares)
    z = -special.ndtri((1 - level) / 2)
    z2 = z**2
    q = events / safe_n
    denom = 1 + z2 / safe_n
    center = (q + z2 / (2 * safe_n)) / denom
    dist = z * np.sqrt(q * (1.0 - q) / safe_n + z2 / (4.0 * safe_n**2))
    dist /= denom
    lo, hi = center - dist, center + dist
    # the interval contains the estimate; remove floating-point residue (e.g. 5.6e-17 for 0 events)
    p = events / safe_n
    lo, hi = np.clip(np.minimum(lo, p), 0, 1), np.clip(np.maximum(hi, p), 0, 1)
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)


def poisson_exact(events, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood) limits for a Poisson count, from the chi-square distribution.

    Examples
    --------
    >>> lo, hi = poisson_exact([0, 5])
    >>> [round(float(x), 4) for x in lo], [round(float(x), 4) for x in hi]
    ([0.0, 1.6235], [3.6889, 11.6683])
    """
    _check_level(level)
    o = np.asarray(events, dtype=float)
    a = 1 - level
    lo = np.where(o > 0, special.gammaincinv(o, a / 2), 0.0)
    hi = special.gammaincinv(o + 1, 1 - a / 2)
    return lo, hi


def poisson_byar(events, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Byar's approximation to the exact Poisson limits (good from about 10 events).

    Examples
    --------
    >>> lo, hi = poisson_byar([100])
    >>> round(float(lo[0]), 3), round(float(hi[0]), 3)
    (81.362, 121.628)
    """
    _check_level(level)
    o = np.asarray(events, dtype=float)
    z = special.ndtri(1 - (1 - level) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = o * (1 - 1 / (9 * o) - z / (3 * np.sqrt(o))) ** 3
    lo = np.where(o > 0, lo, 0.0)
    o1 = o + 1
    hi = o1 * (1 - 1 / (9 * o1) + z / (3 * np.sqrt(o1))) ** 3
    return lo, hi


def count_interval(events, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Limits for counts: exact Poisson below :data:`EXACT_BELOW` events, Byar from there.

    Returns ``(lower, upper, method)`` with method ``"exact Poisson"`` or ``"Byar"`` per element.
    """
    o = np.asarray(events, dtype=float)
    elo, ehi = poisson_exact(o, level=level)
    blo, bhi = poisson_byar(o, level=level)
    exact = o < EXACT_BELOW
    method = np.where(exact, "exact Poisson", "Byar")
    return np.where(exact, elo, blo), np.where(exact, ehi, bhi), method


def change_interval(e1: np.ndarray, n1: np.ndarray, e0: np.ndarray, n0: np.ndarray,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval (method 10) for the difference of two proportions ``e1/n1 - e0/n0``.

    Each proportion gets its Wilson interval (:func:`wilson`); the difference's limits combine the distances
    from each estimate to its limits: ``d − sqrt((p1 − l1)² + (u0 − p0)²)`` and
    ``d + sqrt((u1 − p1)² + (p0 − l0)²)``. Missing where either ``n`` is 0.

    References
    ----------
    Newcombe RG (1998) Interval estimation for the difference between independent proportions: comparison of
    eleven methods. Stat Med 17:873-90.

    Examples
    --------
    Newcombe (1998), Table II, example (a): 56/70 − 48/80 = 0.20, interval 0.0524 to 0.3339.

    >>> lo, hi = change_interval(np.array([56]), np.array([70]), np.array([48]), np.array([80]))
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.0524, 0.3339)
    """
    e1, n1, e0, n0 = (np.asarray(a, dtype=float) for a in (e1, n1, e0, n0))
    l1, u1 = wilson(e1, n1, level=level)
    l0, u0 = wilson(e0, n0, level=level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p0 = e1 / n1, e0 / n0
    d = p1 - p0
    lo = d - np.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)


def difference_interval(v1, l1, u1, v0, l0, u0) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the difference ``v1 − v0`` of two independent estimates from their own intervals (MOVER,
    Zou & Donner 2008): ``d − sqrt((v1 − l1)² + (u0 − v0)²)`` to ``d + sqrt((u1 − v1)² + (v0 − l0)²)``. With
    Wilson intervals of two proportions it is Newcombe's interval (:func:`change_interval`); it serves any
    estimate with an interval (a risk-adjusted rate, a mean length of stay or spending). Missing where any
    input is.

    References
    ----------
    Zou GY, Donner A (2008) Construction of confidence limits about effect measures: a general approach. Stat Med
    27:1693-1702.

    Examples
    --------
    >>> l1, u1 = wilson(np.array([56]), np.array([70]))
    >>> l0, u0 = wilson(np.array([48]), np.array([80]))
    >>> lo, hi = difference_interval(0.8, l1, u1, 0.6, l0, u0)
    >>> round(float(lo[0]), 4), round(float(hi[0]), 4)
    (0.0524, 0.3339)
    """
    v1, l1, u1, v0, l0, u0 = (np.asarray(a, dtype=float) for a in (v1, l1, u1, v0, l0, u0))
    d = v1 - v0
    lo = d - np.sqrt((v1 - l1) ** 2 + (u0 - v0) ** 2)
    hi = d + np.sqrt((u1 - v1) ** 2 + (v0 - l0) ** 2)
    return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)


def dobson_dsr(events: pd.Series, person_time: pd.Series, standard: pd.Series, *,
               level: float = 0.95, multiplier: float = 1000.0) -> dict:
    """Directly standardised rate with Dobson's confidence interval, for one population.

    Parameters
    ----------
    events, person_time, standard : Series aligned on the strata (e.g. age band × sex)
        Observed events, person-time (e.g. person-years) and standard-population weights per stratum.
    multiplier : float
        Rate per ``multiplier`` units of person-time (per 1,000 person-years by default).

    Returns
    -------
    dict
        ``events``, ``person_time``, ``rate`` (the DSR), ``lower``, ``upper``, ``level``, ``method``.

    Notes
    -----
    ``DSR = Σ w_i O_i / n_i`` with ``w_i = standard_i / Σ standard``. Dobson et al. (1991): with
    ``O = Σ O_i`` and its exact Poisson limits ``O_L, O_U``, ``var(DSR) = Σ w_i² O_i / n_i²`` and the
    limits are ``DSR + sqrt(var(DSR) / O) × (O_L − O)`` and likewise with ``O_U``. Strata with no
    person-time contribute nothing (their weight is left out, and the rate is flagged in ``method``).

    Examples
    --------
    >>> d = dobson_dsr(pd.Series([10, 30]), pd.Series([1000.0, 2000.0]), pd.Series([0.5, 0.5]))
    >>> round(d["rate"], 3), round(float(d["lower"]), 3), round(float(d["upper"]), 3)
    (12.5, 8.722, 17.285)
    """
    _check_level(level)
    o_i = np.asarray(events, dtype=float)
    n_i = np.asarray(person_time, dtype=float)
    w = np.asarray(standard, dtype=float)
    has_time = n_i > 0
    method = "DSR, Dobson" if has_time.all() else "DSR, Dobson (strata without person-time left out)"
    w = np.where(has_time, w, 0.0)
    w = w / w.sum()
    safe = np.where(has_time, n_i, 1.0)
    dsr = float(np.sum(w * o_i / safe))
    var = float(np.sum(w**2 * o_i / safe**2))
    o = float(o_i.sum())
    lo_o, hi_o = poisson_exact([o], level=level)
    if o > 0:
        lower = dsr + np.sqrt(var / o) * (lo_o[0] - o)
        upper = dsr + np.sqrt(var / o) * (hi_o[0] - o)
    else:
        lower, upper = 0.0, np.nan
    return {"events": o, "person_time": float(n_i.sum()), "rate": dsr * multiplier,
            "lower": lower * multiplier, "upper": upper * multiplier, "level": level, "method": method}
