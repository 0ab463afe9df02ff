"""Fair comparison of facilities: indirect standardisation, funnel plots with over-dispersion, SPC charts with the
NHS "Making Data Count" rules, beta-binomial shrinkage, and a plain-language scorecard.

One function per statistical idea, each returning a tidy DataFrame in which every estimate travels with its
evidence (``observed``, ``expected``, ``ratio``, ``lower``, ``upper``, ``level``, ``method``):

* :func:`indirect_standardisation` — O/E by group, exact Poisson limits below 10 events and Byar's from 10
  (PHE practice; methodology digest §5.1);
* :func:`funnel_limits` and :func:`funnel_data` — Spiegelhalter funnel plots for standardised ratios (SHMI log or
  CQC square-root scale) and proportions (arcsine scale), with the dispersion ratio φ, the DerSimonian–Laird
  between-unit variance τ², limits with and without over-dispersion adjustment, and a class per unit (§5.4);
* :func:`p_chart`, :func:`laney_p_chart`, :func:`xmr_chart` — control charts with 2σ and 3σ limits and the
  Making Data Count rules, each signal labelled "improvement" or "concern" by the direction of improvement (§5.5);
* :func:`beta_binomial_shrinkage` — empirical-Bayes rates with reliability (§5.6);
* :func:`scorecard` — facility × measure rows with a plain-language label.

Why hand-written. The PyPI package list (``/work/.library/env/packages/pypi.tsv``, searched for funnel, SPC,
control chart, Shewhart, Making Data Count, qicharts, Laney, beta-binomial, over-dispersion) has no maintained,
widely used Python library for FunnelPlotR's over-dispersion-adjusted funnels or the MDC rules; none of the hits
is among the 15,000 most downloaded packages. What there is: ``funnelplot`` 0.2.1 (2020, "simple funnel
plots", no over-dispersion); ``controlchartspy`` 0.1.3 (SPC and funnel charts computed by a bundled JavaScript
engine through ``quickjs-ng``; GPL-3.0, so not a dependency for this Apache-2.0 package); ``abspc`` 1.1.0 (MIT,
alpha: MDC-styled XmR/p/u/c charts drawn with matplotlib, shift of 8 and trend of 6 points fixed, no Laney p′,
no funnels); general SPC packages known here by their one-line summaries only (``pyqicharts`` 2.0.0,
``processbehavior`` 0.4.0, ``spychart`` 1.0.0, ``pyspc`` 0.4 of 2016), none of which mentions funnels,
over-dispersion or Laney charts; ``bbpmf`` and ``betabinomial`` (a probability function and a test, not the
empirical-Bayes fit; scipy has ``betabinom``). The formulas are short and are written here from the published
methods (no code is taken from FunnelPlotR, PHEindicatormethods or qicharts2; published numbers and formulas
serve as test oracles).

Size: about 1,200 lines, one module because O/E, funnel limits, SPC charts, shrinkage and the scorecard share the
intervals and the dispersion estimates, and the scorecard combines them all.

References
----------
Spiegelhalter DJ (2005) Funnel plots for comparing institutional performance. Stat Med 24:1185-202.
Spiegelhalter DJ (2005) Handling over-dispersion of performance indicators. Qual Saf Health Care 14:347-51.
Spiegelhalter DJ, Sherlaw-Johnson C, Bardsley M, et al. (2012) Statistical methods for healthcare regulation:
rating, screening and surveillance. J R Stat Soc A 175:1-47.
DerSimonian R, Laird N (1986) Meta-analysis in clinical trials. Control Clin Trials 7:177-88.
Mainey C et al. FunnelPlotR (R package, NHS-R Community): https://github.com/nhs-r-community/FunnelPlotR.
NHS England, Making Data Count: statistical process control guidance, rules and icons for board reporting.
Laney DB (2002) Improved control charts for attributes. Quality Engineering 14:531-7.
Anhøj J, qicharts2 (R package): p, u and Laney p′/u′ charts.
Breslow NE, Day NE (1987) Statistical Methods in Cancer Research II, IARC (exact and Byar limits, p. 69).
Dobson AJ, Kuulasmaa K, Eberle E, Scherer J (1991) Confidence intervals for weighted sums of Poisson
parameters. Stat Med 10:457-62.
Public Health England / UKHSA, PHEindicatormethods (R package): indirectly standardised ratios.
QualityMeasure (R package; github.com/knieser/quality_measure_reliability): beta-binomial reliability of
quality measures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from carequal.convergence import minimise, warn_unless_converged
from carequal.errors import FunnelWarning, NoBetweenUnitVarianceWarning, ParameterError
from carequal.intervals import count_interval, poisson_byar, poisson_exact

__all__ = [
    "FUNNEL_LEVELS",
    "Funnel",
    "beta_binomial_shrinkage",
    "funnel_data",
    "funnel_limits",
    "indirect_standardisation",
    "laney_p_chart",
    "p_chart",
    "scorecard",
    "xmr_chart",
]

FUNNEL_LEVELS = (0.95, 0.998)
"""Funnel limits drawn by default: 95 % ("2σ") and 99.8 % ("3σ")."""

LABELS = ("higher than expected", "as expected", "lower than expected", "too few cases to judge")
"""The plain-language labels of :func:`scorecard`."""

_D2 = 1.128  # mean moving range of two normal values / σ (the constant of XmR and Laney charts)
_MR_UCL = 3.267  # upper limit of the moving-range chart, as a multiple of the mean moving range


# ------------------------------------------------------------------------------------------------------ helpers


def _as_list(by) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _require(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ParameterError(f"{where}: column(s) {missing} not in the frame (it has {list(frame.columns)}); "
                             "name the right columns by keyword")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")


def _check_levels(levels) -> tuple[float, ...]:
    levels = tuple(sorted({float(v) for v in np.atleast_1d(levels)}))
    if not levels:
        raise ParameterError("levels: give at least one level, e.g. (0.95, 0.998)")
    for level in levels:
        _check_level(level)
    return levels


def _z(level: float) -> float:
    return float(special.ndtri(1 - (1 - level) / 2))


def _pct(level: float) -> str:
    """0.95 → "95", 0.998 → "99.8" (for labels and column names)."""
    return f"{round(100 * level, 6):g}"


def _numeric(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) | (values < 0)
    if bad.any():
        raise ParameterError(f"{where}: {column} has {int(bad.sum())} missing, non-numeric or negative value(s); "
                             "counts and expected counts must be numbers ≥ 0")
    return values


# ------------------------------------------------------------------------------------ indirect standardisation


def indirect_standardisation(frame: pd.DataFrame, *, by, observed: str = "observed", expected: str = "expected",
                             level: float = 0.95, method: str = "auto") -> pd.DataFrame:
    """Indirectly standardised ratios O/E by group, with exact Poisson or Byar confidence limits.

    Parameters
    ----------
    frame : DataFrame
        One row per case (e.g. index stay: ``observed`` 0/1 and ``expected`` its predicted probability from a
        risk model) or already aggregated rows (counts and expected counts); rows are summed within groups.
    by : str or list of str
        Grouping columns (missing keys form their own group; they are not dropped).
    observed, expected : str
        Columns summed into O and E.
    level : float
        Confidence level of the limits.
    method : {"auto", "exact", "byar"}
        ``"auto"`` (PHE practice): exact (Garwood) Poisson limits when O < 10 and Byar's approximation from 10;
        ``"exact"`` or ``"byar"`` for one of them throughout.

    Returns
    -------
    DataFrame
        The ``by`` columns, ``observed`` (O), ``expected`` (E), ``ratio`` (O/E), ``lower``, ``upper``, ``level``,
        ``method`` ("exact Poisson" or "Byar", per row). Groups with E = 0 have a missing ratio and limits.

    Notes
    -----
    The limits are those of the Poisson count O, divided by E (E is treated as fixed): exact
    ``χ²_{α/2}(2O)/2 / E`` and ``χ²_{1−α/2}(2O+2)/2 / E`` (lower 0 when O = 0); Byar
    ``O(1 − 1/(9O) − z/(3√O))³ / E`` and ``(O+1)(1 − 1/(9(O+1)) + z/(3√(O+1)))³ / E`` (Breslow & Day 1987).
    The SMR is ``100 × ratio``.

    Examples
    --------
    >>> df = pd.DataFrame({"facility_id": ["A", "A", "B"], "observed": [3, 2, 20], "expected": [2.5, 1.5, 15.0]})
    >>> out = indirect_standardisation(df, by="facility_id")
    >>> out[["facility_id", "observed", "expected", "ratio", "method"]]
      facility_id  observed  expected     ratio         method
    0           A         5       4.0  1.250000  exact Poisson
    1           B        20      15.0  1.333333           Byar
    >>> [round(float(v), 4) for v in out.loc[0, ["lower", "upper"]]]
    [0.4059, 2.9171]
    """
    by = _as_list(by)
    _require(frame, by + [observed, expected], "indirect_standardisation")
    _check_level(level)
    if method not in ("auto", "exact", "byar"):
        raise ParameterError(f"method must be 'auto', 'exact' or 'byar', not {method!r}")
    _numeric(frame, observed, "indirect_standardisation")
    _numeric(frame, expected, "indirect_standardisation")
    grouped = frame.groupby(by, dropna=False, observed=True, sort=True)
    out = grouped.agg(observed=(observed, "sum"), expected=(expected, "sum")).reset_index()
    o = out["observed"].to_numpy(dtype=float)
    e = out["expected"].to_numpy(dtype=float)
    if method == "auto":
        lo, hi, used = count_interval(o, level=level)
    elif method == "exact":
        lo, hi = poisson_exact(o, level=level)
        used = np.full(len(o), "exact Poisson")
    else:
        lo, hi = poisson_byar(o, level=level)
        used = np.full(len(o), "Byar")
    safe = np.where(e > 0, e, np.nan)
    out["expected"] = e
    out["ratio"] = o / safe
    out["lower"], out["upper"] = lo / safe, hi / safe
    out["level"] = level
    out["method"] = used
    return out


# ------------------------------------------------------------------------------------------------- funnel plots


def _funnel_method(data_type: str, method: str | None) -> str:
    if data_type == "SR":
        method = "SHMI" if method is None else method
        if method not in ("SHMI", "CQC"):
            raise ParameterError(f"method for data_type='SR' must be 'SHMI' or 'CQC', not {method!r}")
        return method
    if data_type == "PR":
        if method not in (None, "arcsine"):
            raise ParameterError(f"method for data_type='PR' must be 'arcsine' (the default), not {method!r}")
        return "arcsine"
    raise ParameterError(f"data_type must be 'SR' (standardised ratio O/E) or 'PR' (proportion), not {data_type!r}")


def _check_overdispersion(overdispersion: str) -> None:
    if overdispersion not in ("additive", "multiplicative", "none"):
        raise ParameterError("overdispersion must be 'additive' (DerSimonian–Laird τ², as FunnelPlotR), "
                             f"'multiplicative' (√φ, Spiegelhalter 2005) or 'none', not {overdispersion!r}")


def _within_sd(x: np.ndarray, method: str) -> np.ndarray:
    """Standard error of one unit on the transformed scale, given its expected count (SR) or size (PR)."""
    with np.errstate(divide="ignore"):
        return 1 / np.sqrt(x) if method == "SHMI" else 1 / (2 * np.sqrt(x))


def _transformed_target(method: str, target: float) -> float:
    return {"SHMI": 0.0, "CQC": 1.0}.get(method, float(np.arcsin(np.sqrt(target))))


def _back_transform(method: str, t: np.ndarray) -> np.ndarray:
    if method == "SHMI":
        return np.exp(t)
    if method == "CQC":
        return np.clip(t, 0, None) ** 2
    return np.sin(np.clip(t, 0, np.pi / 2)) ** 2


def _exact_limits(x: np.ndarray, level: float, *, data_type: str, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact limits of the ratio (SR) or proportion (PR) at denominators ``x`` when there is no over-dispersion.

    The exact interval of a count equal to its expectation ``m = x · target``, divided by ``x``: Garwood's
    (chi-square / gamma) interval for a Poisson count (SR), Clopper–Pearson's (beta) interval for a binomial
    count out of ``x`` (PR). ``m`` need not be whole: the quantiles are those of the continuous gamma and beta
    distributions, which gives smooth limits (no steps from the discreteness of the counts).
    """
    a = 1 - level
    m = x * target
    with np.errstate(divide="ignore", invalid="ignore"):
        if data_type == "SR":
            # χ²_{α/2}(2m)/2 and χ²_{1−α/2}(2m + 2)/2: as FunnelPlotR's unadjusted limits (target 1)
            lower = special.gammaincinv(m, a / 2) / x
            upper = special.gammaincinv(m + 1, 1 - a / 2) / x
        else:
            # Beta_{α/2}(m, x − m + 1) and Beta_{1−α/2}(m + 1, x − m); 0 and 1 at the ends (m = 0, m = x)
            has_low, has_high = m > 0, m < x
            lower = np.where(has_low, special.betaincinv(np.where(has_low, m, 1), x - m + 1, a / 2), 0.0)
            upper = np.where(has_high, special.betaincinv(m + 1, np.where(has_high, x - m, 1), 1 - a / 2), 1.0)
    return lower, upper


def _transformed_limits(x: np.ndarray, level: float, *, method: str, target: float, tau2: float, phi: float,
                        mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Limits built on the transformed scale (log, square root or arcsine), back-transformed; mode "additive"
    (variance ``s² + τ²``), "multiplicative" (``s² · max(φ, 1)``) or "none" (``s²``: the normal approximation)."""
    s2 = _within_sd(x, method) ** 2
    if mode == "additive":
        var = s2 + tau2
    elif mode == "multiplicative":
        var = s2 * max(phi, 1.0)  # inflate only for over-dispersion, never narrow
    else:
        var = s2
    t0 = _transformed_target(method, target)
    half = _z(level) * np.sqrt(var)
    return _back_transform(method, t0 - half), _back_transform(method, t0 + half)


def _limits_one(x: np.ndarray, level: float, *, method: str, target: float, tau2: float, phi: float,
                mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper funnel limits at each x for one level: exact (mode "none") or over-dispersion-adjusted
    (mode "additive" or "multiplicative")."""
    x = np.asarray(x, dtype=float)
    if mode == "none":
        return _exact_limits(x, level, data_type="PR" if method == "arcsine" else "SR", target=target)
    return _transformed_limits(x, level, method=method, target=target, tau2=tau2, phi=phi, mode=mode)


def _classifying_mode(overdispersion: str, *, tau2: float, phi: float, judge_phi: bool) -> str:
    """The limits that classify: ``overdispersion`` when there is over-dispersion to adjust for, else "none".

    Additive: τ² > 0 and, when ``judge_phi`` (τ² estimated from the units), φ > 1. Multiplicative: φ > 1.
    A missing φ counts as no over-dispersion.
    """
    if overdispersion == "multiplicative":
        return overdispersion if phi > 1 else "none"
    if overdispersion == "additive":
        return overdispersion if tau2 > 0 and (phi > 1 or not judge_phi) else "none"
    return "none"


def funnel_limits(x, *, data_type: str = "SR", method: str | None = None, target: float | None = None,
                  tau2: float = 0.0, phi: float = 1.0, overdispersion: str = "additive",
                  levels=FUNNEL_LEVELS) -> pd.DataFrame:
    """Funnel-plot control limits at the given denominators: exact, and over-dispersion-adjusted when there is
    over-dispersion to adjust for.

    Parameters
    ----------
    x : array-like
        Denominators at which to draw the limits: expected counts E (SR) or unit sizes n (PR).
    data_type : {"SR", "PR"}
        Indirectly standardised ratio O/E, or proportion events/n.
    method : str, optional
        For SR, ``"SHMI"`` (log scale, the default) or ``"CQC"`` (square-root scale); for PR, ``"arcsine"``.
        The scale of the adjusted limits (the exact ones need none).
    target : float, optional
        Centre line: 1 for SR (the default and the only sensible value; must be > 0), the overall proportion
        for PR (required).
    tau2 : float
        Between-unit variance on the transformed scale (additive adjustment).
    phi : float
        Dispersion ratio (multiplicative adjustment; used only when above 1).
    overdispersion : {"additive", "multiplicative", "none"}
        The adjustment of the ``adjusted`` rows; ``"none"`` returns the exact (unadjusted) rows only.
    levels : sequence of float
        Confidence levels of the limits (95 % and 99.8 % by default; any levels may be given).

    Returns
    -------
    DataFrame
        Tidy: ``x``, ``level``, ``lower``, ``upper``, ``adjusted`` (False for the exact, unadjusted limits, True
        for the over-dispersion-adjusted ones), ``method``. With nothing to adjust for — additive with τ² = 0,
        multiplicative with φ ≤ 1 — only the exact rows are returned: they are then the limits that classify
        (as FunnelPlotR, which draws its unadjusted limits when τ² = 0).

    Notes
    -----
    Exact limits (``adjusted`` False), with ``m = x · target`` the count expected at the denominator:

    * SR, exact Poisson: Garwood's exact interval of a count equal to ``m = E · target``, divided by E —
      ``χ²_{α/2}(2m)/2/E`` and ``χ²_{1−α/2}(2m+2)/2/E``. With target 1 these are FunnelPlotR's unadjusted
      limits (``calculate_limits.R``: ``qchisq(0.975, 2E, lower.tail = FALSE)/2/E`` and
      ``qchisq(0.025, 2(E+1), lower.tail = FALSE)/2/E``), reproduced to the digits it publishes (tests). E is
      not rounded to a whole count: the chi-square (gamma) quantiles are smooth in E, which is the continuity
      convention — no step function and no interpolation between Poisson quantiles (Spiegelhalter 2005's
      alternative, Stat Med 24, appendix, interpolates between the quantiles of Poisson(E)). For a whole E
      the lower limit L solves ``P(X ≥ E | mean L·E) = α/2`` and the upper U ``P(X ≤ E | mean U·E) = α/2``.
      Being a confidence interval at O = E rather than the quantiles of Poisson(E), the limits are not the
      exact test of a unit's own count: an in-control unit falls below the lower limit with probability above
      α/2 and above the upper one with less (at 95 % and E ≤ 50, medians 0.033 and 0.012: Seaton & Manktelow
      2012), and O = 0 is always below the lower limit.
    * PR, exact binomial (not in FunnelPlotR, whose unadjusted proportion limits are the arcsine ones with
      τ² = 0): the same construction with the binomial — the Clopper–Pearson interval of ``m = n · target``
      events out of n, ``Beta_{α/2}(m, n − m + 1)`` and ``Beta_{1−α/2}(m + 1, n − m)`` (0 and 1 when m is 0
      or n).

    Adjusted limits (``adjusted`` True), with ``z`` the normal quantile of the level and ``s`` the unit's
    standard error on the transformed scale:

    * SR, SHMI (``s = 1/√E``): ``exp(± z √(s² + τ²))``.
    * SR, CQC (``s = 1/(2√E)``): ``(1 ± z √(s² + τ²))²``. The square back-transforms the square-root scale on
      which the limits are built; FunnelPlotR (2021–2025 versions) draws ``1 ± z √(s² + τ²)`` without
      squaring (its ``calculate_limits.R`` as read at two commits), about half as wide as the Poisson limits when
      τ² = 0. Here the CQC limits agree with
      the exact Poisson ones for large E (a test checks this).
    * PR (``s = 1/(2√n)``): ``sin²(asin √target ± z √(s² + τ²))``, the angle held within [0, π/2] so that the
      limits stay in [0, 1] and never turn back at small n (FunnelPlotR truncates such segments).
    * Multiplicative (Spiegelhalter 2005): ``s`` replaced by ``√φ · s`` on the transformed scale when φ > 1.

    References
    ----------
    Garwood F (1936) Fiducial limits for the Poisson distribution. Biometrika 28:437-42.
    Clopper CJ, Pearson ES (1934) The use of confidence or fiducial limits illustrated in the case of the
    binomial. Biometrika 26:404-13.
    Seaton SE, Manktelow BN (2012) The probability of being identified as an outlier with commonly used funnel
    plot control limits for the standardised mortality ratio. BMC Med Res Methodol 12:98.

    Examples
    --------
    >>> funnel_limits([25, 100], levels=[0.95]).round(4)  # τ² = 0: nothing to adjust for, the exact limits
           x  level   lower   upper  adjusted             method
    0   25.0   0.95  0.6471  1.4762     False  SR, exact Poisson
    1  100.0   0.95  0.8136  1.2163     False  SR, exact Poisson
    >>> funnel_limits([25, 100], tau2=0.02, levels=[0.95]).round(4)
           x  level   lower   upper  adjusted                method
    0   25.0   0.95  0.6471  1.4762     False     SR, exact Poisson
    1  100.0   0.95  0.8136  1.2163     False     SR, exact Poisson
    2   25.0   0.95  0.6187  1.6162      True  SR SHMI, additive τ²
    3  100.0   0.95  0.7121  1.4042      True  SR SHMI, additive τ²
    """
    method = _funnel_method(data_type, method)
    _check_overdispersion(overdispersion)
    levels = _check_levels(levels)
    if data_type == "SR":
        target = 1.0 if target is None else float(target)
        if not target > 0:
            raise ParameterError(f"target: a standardised ratio's target must be above 0 (it is 1), not {target}")
    elif target is None or not 0 <= target <= 1:
        raise ParameterError(f"target: proportions need the overall proportion in [0, 1] as target, not {target}")
    x = np.asarray(x, dtype=float)
    if np.any(~np.isfinite(x) | (x <= 0)):
        raise ParameterError("x: funnel limits need positive, finite denominators")
    used = _classifying_mode(overdispersion, tau2=tau2, phi=phi, judge_phi=False)
    modes = ["none"] if used == "none" else ["none", used]
    parts = []
    for mode in modes:
        for level in levels:
            lower, upper = _limits_one(x, level, method=method, target=target, tau2=tau2, phi=phi, mode=mode)
            parts.append(pd.DataFrame({"x": x, "level": level, "lower": lower, "upper": upper,
                                       "adjusted": mode != "none", "method": _limits_label(data_type, method, mode)}))
    return pd.concat(parts, ignore_index=True)


def _limits_label(data_type: str, method: str, mode: str) -> str:
    if mode == "none":
        return "SR, exact Poisson" if data_type == "SR" else "PR, exact binomial"
    name = f"SR {method}" if data_type == "SR" else "PR arcsine"
    return f"{name}, {'additive τ²' if mode == 'additive' else 'multiplicative φ'}"


def _robust_z(z: np.ndarray, method: str, trim: float) -> np.ndarray:
    """SHMI: truncate ``trim`` of each tail (NaN = left out); otherwise winsorise at the trim quantiles."""
    if method == "SHMI":
        k = 1 / trim
        rank = pd.Series(z).rank(method="average").to_numpy()
        # FunnelPlotR keeps 0 < floor(rank·k/(N+1)) < k − 1 (k = 10); written without the floor it also holds for
        # a k that is not whole (keep trim ≤ rank/(N+1) < 1 − trim). Rounding guards float noise (3·10/30 = 1).
        v = np.round(rank * k / (len(z) + 1), 9)
        return np.where((v >= 1) & (v < k - 1), z, np.nan)
    lo, hi = np.quantile(z, [trim, 1 - trim])  # R's default (type 7) quantiles, as numpy's "linear"
    return np.clip(z, lo, hi)


def _dispersion(z_robust: np.ndarray, s: np.ndarray) -> tuple[float, float, int]:
    """φ = mean of squared robust z; DerSimonian–Laird τ² with weights 1/s² (retained units only)."""
    keep = np.isfinite(z_robust)
    n = int(keep.sum())
    if n == 0:
        return np.nan, 0.0, 0
    phi = float(np.mean(z_robust[keep] ** 2))
    w = 1 / s[keep] ** 2
    denom = w.sum() - (w**2).sum() / w.sum()
    if n * phi < n - 1 or denom <= 0:
        return phi, 0.0, n
    return phi, float(max(0.0, (n * phi - (n - 1)) / denom)), n


@dataclass(frozen=True)
class Funnel:
    """Result of :func:`funnel_data`.

    Attributes
    ----------
    units : DataFrame
        One row per input row (unit), see :func:`funnel_data`.
    limits : DataFrame
        Limit curves over a grid of denominators for plotting (:func:`funnel_limits` layout).
    data_type, method, overdispersion : str
        What was computed.
    target : float
        Centre line on the natural scale (1 for SR; the overall proportion for PR).
    phi : float
        Dispersion ratio φ (mean squared robust z-score).
    tau2 : float
        Between-unit variance τ² on the transformed scale (DerSimonian–Laird; 0 when ``kφ ≤ k − 1``).
    n_used : int
        Number of units whose z-scores entered φ and τ².
    adjusted : bool
        Whether the over-dispersion-adjusted limits classified the units (and are in ``limits``); False with
        ``overdispersion="none"`` or when there was no over-dispersion to adjust for, and the exact limits
        classified them.
    limits_method : str
        The limits that classified the units, e.g. ``"SR SHMI, additive τ²"``, ``"SR, exact Poisson"`` or
        ``"SR, exact Poisson (no over-dispersion: φ ≤ 1)"``.
    """

    units: pd.DataFrame
    limits: pd.DataFrame
    data_type: str
    method: str
    overdispersion: str
    target: float
    phi: float
    tau2: float
    n_used: int
    adjusted: bool
    limits_method: str


def funnel_data(frame: pd.DataFrame, *, data_type: str = "SR", observed: str = "observed",
                expected: str = "expected", events: str = "events", n: str = "n", method: str | None = None,
                overdispersion: str = "additive", trim: float = 0.1, levels=FUNNEL_LEVELS,
                phi: float | None = None, tau2: float | None = None, grid=None, grid_points: int = 200) -> Funnel:
    """Funnel plot for units (facilities): z-scores, dispersion φ, between-unit τ², limits and outlier classes.

    Parameters
    ----------
    frame : DataFrame
        One row per unit, e.g. the output of :func:`indirect_standardisation` (SR) or of
        :func:`carequal.measures.rate_table` (PR).
    data_type : {"SR", "PR"}
        Standardised ratio (``observed`` / ``expected``) or proportion (``events`` / ``n``).
    observed, expected : str
        Columns of O and E (SR).
    events, n : str
        Columns of the numerator and denominator (PR).
    method : str, optional
        SR: ``"SHMI"`` (default; log scale, 10 % of z truncated in each tail) or ``"CQC"`` (square-root scale,
        z winsorised at the 10th/90th percentiles). PR: ``"arcsine"`` (winsorised).
    overdispersion : {"additive", "multiplicative", "none"}
        The over-dispersion adjustment of the limits that classify the units when there is over-dispersion:
        additive random-effects τ² (DerSimonian–Laird, as FunnelPlotR; the default) or multiplicative √φ
        (Spiegelhalter 2005); ``"none"`` for the exact limits whatever φ. With no over-dispersion (see Notes)
        the exact limits classify the units whichever is asked for.
    trim : float
        Fraction truncated (SHMI) or winsorised (other methods) in each tail before estimating φ.
    levels : sequence of float
        Levels of the limits and classes (95 % and 99.8 % by default).
    phi, tau2 : float, optional
        Use these instead of estimating them from the units (e.g. values from a reference period or a national
        funnel); the units' z-scores are still reported.
    grid : array-like, optional
        Denominators for the limit curves; by default ``grid_points`` values spaced geometrically from half the
        smallest to 1.1 × the largest denominator.

    Returns
    -------
    Funnel
        ``units`` has the input columns plus ``ratio`` (SR) or ``rate`` (PR), ``z`` (unadjusted z-score on the
        transformed scale), ``z_robust`` (after truncation/winsorisation; missing for truncated units),
        ``z_adjusted`` (z with the over-dispersion adjustment in use; z itself when the exact limits classify),
        ``lower_<L>`` / ``upper_<L>`` (the classifying limits at the unit's denominator for each level, e.g.
        ``lower_95``, ``upper_99.8``), ``funnel_class`` (``"high 99.8%"``, ``"high 95%"``, ``"within"``,
        ``"low 95%"``, ``"low 99.8%"``; missing for units with a zero denominator), ``phi``, ``tau2``, ``target``
        and ``funnel_method`` (the classifying limits, as :attr:`Funnel.limits_method`, and the robust
        estimation; named so that it does not overwrite the ``method`` of an interval in the input). ``limits``
        has the curves for plotting: the exact ones, and the adjusted ones when they classified the units.
        :attr:`Funnel.adjusted` and :attr:`Funnel.limits_method` say which limits classified the units.

    Notes
    -----
    Per unit, on the transformed scale (FunnelPlotR's algorithm, methodology digest §5.4):
    SHMI ``y = log(O/E)``, ``s = 1/√E``, target 0; CQC ``y = √(O/E)``, ``s = 1/(2√E)``, target 1; PR
    ``y = asin √(x/n)``, ``s = 1/(2√n)``, target ``asin √(Σx/Σn)``; ``z = (y − target)/s``.
    ``φ = (1/k) Σ z_r²`` over the k retained robust z-scores. τ² = 0 if ``kφ < k − 1``, otherwise
    ``(kφ − (k − 1)) / (Σw − Σw²/Σw)`` with ``w = 1/s²``. A unit is classed by the outermost level whose
    classifying limits it lies strictly outside.

    Which limits classify. With over-dispersion — additive: τ² > 0 and φ > 1; multiplicative: φ > 1 — the
    adjusted limits of :func:`funnel_limits`. Without it (τ² = 0 or φ ≤ 1; φ missing), and always with
    ``overdispersion="none"``, the exact limits: Poisson for SR, binomial for PR (:func:`funnel_limits`,
    Notes), not the transformed-scale limits with τ² = 0, whose normal approximation misjudges small units
    (O = 10 at E = 16.54 lies below ``exp(−1.96/√E)`` = 0.618 though ``P(X ≤ 10 | 16.54)`` = 0.061). This is
    FunnelPlotR's rule (``funnel_plot.R``: "No overdispersion detected … plotting using unadjusted limits" when
    τ² = 0), widened to φ ≤ 1: for ``(k − 1)/k < φ ≤ 1`` the DerSimonian–Laird τ² is a small positive number and
    FunnelPlotR would still draw adjusted limits. A τ² given by the caller is used as given (adjusted limits when
    it is above 0, whatever φ). FunnelPlotR has no exact binomial limits: its unadjusted proportion limits are the
    arcsine ones with τ² = 0.

    Units with O = 0 have ``z = −∞`` on the SHMI log scale: they rank lowest and are normally truncated; if
    truncation keeps them (fewer than ~9 units) they are left out of φ and τ² with a :class:`FunnelWarning`.
    Units with a zero denominator are left out altogether (no z, no class). SHMI's rounding of E to 2 decimals
    is not applied.

    Examples
    --------
    >>> df = pd.DataFrame({"facility_id": list("ABCDEFGH"), "observed": [30, 45, 62, 20, 95, 52, 140, 33],
    ...                    "expected": [40.0, 44.0, 50.0, 25.0, 70.0, 55.0, 90.0, 35.0]})
    >>> f = funnel_data(df)
    >>> round(f.phi, 2), round(f.tau2, 4), f.n_used
    (3.91, 0.0693, 8)
    >>> f.units["funnel_class"].tolist()  # over-dispersion allowed for: no unit stands out
    ['within', 'within', 'within', 'within', 'within', 'within', 'within', 'within']
    >>> funnel_data(df, overdispersion="none").units["funnel_class"].tolist()  # Poisson limits alone
    ['within', 'within', 'within', 'within', 'high 95%', 'within', 'high 99.8%', 'within']

    Units that vary no more than chance (τ² = 0): the exact Poisson limits classify them.

    >>> calm = pd.DataFrame({"observed": [10, 21, 29, 41, 50, 62],
    ...                      "expected": [16.54, 20.0, 30.0, 40.0, 52.0, 60.0]})
    >>> g = funnel_data(calm)
    >>> round(g.phi, 2), g.tau2, g.adjusted, g.limits_method
    (0.74, 0.0, False, 'SR, exact Poisson (no over-dispersion: τ² = 0)')
    >>> g.units.loc[0, ["ratio", "lower_95", "funnel_class"]]  # 10/16.54 is inside the exact limits
    ratio           0.604595
    lower_95        0.577609
    funnel_class      within
    Name: 0, dtype: object
    """
    method = _funnel_method(data_type, method)
    _check_overdispersion(overdispersion)
    levels = _check_levels(levels)
    if not 0 < trim < 0.5:
        raise ParameterError(f"trim must be a fraction between 0 and 0.5 (e.g. 0.1), not {trim}")
    num_col, den_col = (observed, expected) if data_type == "SR" else (events, n)
    _require(frame, [num_col, den_col], "funnel_data")
    num = _numeric(frame, num_col, "funnel_data")
    den = _numeric(frame, den_col, "funnel_data")
    if data_type == "PR" and np.any(num > den):
        raise ParameterError(f"funnel_data: {num_col} exceeds {den_col} in {int((num > den).sum())} row(s)")
    ok = den > 0
    if not ok.any():
        raise ParameterError(f"funnel_data: no unit has a positive {den_col}")
    value = np.where(ok, num / np.where(ok, den, 1), np.nan)
    target = 1.0 if data_type == "SR" else float(num[ok].sum() / den[ok].sum())

    s = _within_sd(np.where(ok, den, np.nan), method)
    if method == "SHMI":
        with np.errstate(divide="ignore"):
            y = np.log(value)
    elif method == "CQC":
        y = np.sqrt(value)
    else:
        y = np.arcsin(np.sqrt(value))
    t0 = _transformed_target(method, target)
    z = (y - t0) / s

    z_robust = np.full(len(z), np.nan)
    z_robust[ok] = _robust_z(z[ok], method, trim)
    estimating = phi is None or tau2 is None
    if estimating and np.isinf(z_robust).any():
        warnings.warn(f"funnel_data: {int(np.isinf(z_robust).sum())} unit(s) with no events have an infinite "
                      "z-score on the SHMI log scale and were left out of φ and τ²", FunnelWarning, stacklevel=2)
    z_robust[np.isinf(z_robust)] = np.nan
    est_phi, est_tau2, n_used = _dispersion(z_robust, s)
    if estimating and n_used < 2:
        warnings.warn(f"funnel_data: only {n_used} unit(s) to estimate the dispersion; τ² set to 0",
                      FunnelWarning, stacklevel=2)
    tau2_estimated = tau2 is None
    phi = est_phi if phi is None else float(phi)
    tau2 = est_tau2 if tau2 is None else float(tau2)

    # the limits that classify: adjusted only when there is over-dispersion to adjust for
    used = _classifying_mode(overdispersion, tau2=tau2, phi=phi, judge_phi=tau2_estimated)
    limits_method = _limits_label(data_type, method, used)
    if used == "none" and overdispersion != "none":
        limits_method += f" (no over-dispersion: {'τ² = 0' if overdispersion == 'additive' and tau2 <= 0 else 'φ ≤ 1'})"
    if used == "additive":
        z_adj = (y - t0) / np.sqrt(s**2 + tau2)
    elif used == "multiplicative":
        z_adj = z / np.sqrt(phi)
    else:
        z_adj = z

    units = frame.copy()
    units["ratio" if data_type == "SR" else "rate"] = value
    units["z"], units["z_robust"], units["z_adjusted"] = z, z_robust, z_adj
    cls = np.full(len(units), "within", dtype=object)
    x_safe = np.where(ok, den, 1.0)
    for level in levels:  # ascending: a wider limit overrides a narrower one
        lower, upper = _limits_one(x_safe, level, method=method, target=target, tau2=tau2, phi=phi, mode=used)
        lower, upper = np.where(ok, lower, np.nan), np.where(ok, upper, np.nan)
        units[f"lower_{_pct(level)}"], units[f"upper_{_pct(level)}"] = lower, upper
        cls[value > upper] = f"high {_pct(level)}%"
        cls[value < lower] = f"low {_pct(level)}%"
    cls[~ok] = None
    units["funnel_class"] = cls
    units["phi"], units["tau2"], units["target"] = phi, tau2, target
    robust = "10% truncation" if method == "SHMI" else "winsorised"
    robust = robust.replace("10%", f"{_pct(trim)}%")
    units["funnel_method"] = f"{limits_method} ({robust})"

    if grid is None:
        lo, hi = den[ok].min() / 2, den[ok].max() * 1.1
        grid = np.geomspace(lo, hi, grid_points)
    limits = funnel_limits(grid, data_type=data_type, method=method, target=target, tau2=tau2, phi=phi,
                           overdispersion=used, levels=levels)
    return Funnel(units=units, limits=limits, data_type=data_type, method=method, overdispersion=overdispersion,
                  target=target, phi=phi, tau2=tau2, n_used=n_used, adjusted=used != "none",
                  limits_method=limits_method)


# ---------------------------------------------------------------------------------------- statistical process control


def _check_improvement(improvement: str | None) -> None:
    if improvement not in ("higher", "lower", None):
        raise ParameterError(f"improvement must be 'higher', 'lower' or None, not {improvement!r}")


def _direction_labels(high: np.ndarray, low: np.ndarray, improvement: str | None) -> np.ndarray:
    up = {"higher": "improvement", "lower": "concern", None: "neither"}[improvement]
    down = {"higher": "concern", "lower": "improvement", None: "neither"}[improvement]
    out = np.full(len(high), "", dtype=object)
    out[high] = up
    out[low] = down
    out[high & low] = "concern" if improvement else "neither"  # a point in both kinds of signal: concern first
    return out


def _runs(codes: np.ndarray, min_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in runs of ≥ ``min_length`` equal codes of +1 (first mask) or −1 (second mask); 0 breaks runs."""
    up = np.zeros(len(codes), dtype=bool)
    down = np.zeros(len(codes), dtype=bool)
    start = 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[start]:
            if i - start >= min_length and codes[start] != 0:
                (up if codes[start] > 0 else down)[start:i] = True
            start = i
    return up, down


def _mdc_rules(value: np.ndarray, centre: np.ndarray, lower2: np.ndarray, upper2: np.ndarray, lower3: np.ndarray,
               upper3: np.ndarray, *, improvement: str | None, shift_length: int, trend_length: int) -> dict:
    """The four Making Data Count rules, evaluated over the points with a value (others are skipped)."""
    valid = np.isfinite(value)
    m = len(value)
    idx = np.flatnonzero(valid)
    v, c = value[idx], centre[idx]
    masks = {}
    masks["beyond_3sigma"] = (v > upper3[idx], v < lower3[idx])
    masks["shift"] = _runs(np.sign(v - c).astype(int), shift_length)
    # a trend of k points is k − 1 consecutive rises (or falls); equal neighbours (ties) end it
    rise_up, rise_down = _runs(np.sign(np.diff(v)).astype(int), trend_length - 1)
    trend_up, trend_down = np.zeros(len(v), bool), np.zeros(len(v), bool)
    trend_up[:-1] |= rise_up
    trend_up[1:] |= rise_up
    trend_down[:-1] |= rise_down
    trend_down[1:] |= rise_down
    masks["trend"] = (trend_up, trend_down)
    above, below = v > upper2[idx], v < lower2[idx]
    two_up, two_down = np.zeros(len(v), bool), np.zeros(len(v), bool)
    for i in range(len(v) - 2):
        if above[i:i + 3].sum() >= 2:
            two_up[i:i + 3] |= above[i:i + 3]
        if below[i:i + 3].sum() >= 2:
            two_down[i:i + 3] |= below[i:i + 3]
    masks["two_of_three"] = (two_up, two_down)

    out = {}
    any_high, any_low = np.zeros(m, bool), np.zeros(m, bool)
    for name, (high, low) in masks.items():
        full_high, full_low = np.zeros(m, bool), np.zeros(m, bool)
        full_high[idx], full_low[idx] = high, low
        out[name] = _direction_labels(full_high, full_low, improvement)
        any_high |= full_high
        any_low |= full_low
    signal = _direction_labels(any_high, any_low, improvement)
    signal[signal == ""] = "common cause"
    signal[~valid] = None
    out["signal"] = signal
    return out


def _period_frame(frame: pd.DataFrame, period: str, columns: list[str], where: str) -> pd.DataFrame:
    _require(frame, [period] + columns, where)
    data = frame.sort_values(period, kind="stable", ignore_index=True)
    dup = data[period].duplicated()
    if dup.any():
        raise ParameterError(f"{where}: {int(dup.sum())} repeated {period} value(s), e.g. "
                             f"{data.loc[dup, period].iloc[0]!r}; give one row per period (chart one facility at a "
                             "time)")
    return data


def _baseline_mask(m: int, baseline: int | None, where: str) -> np.ndarray:
    if baseline is None:
        return np.ones(m, dtype=bool)
    if int(baseline) != baseline or not 1 <= baseline <= m:
        raise ParameterError(f"{where}: baseline is the number of first periods that set the limits, between 1 and "
                             f"{m}; got {baseline!r}")
    return np.arange(m) < baseline


def _spc_columns(data: pd.DataFrame, value: np.ndarray, centre, sigma: np.ndarray, *, clip: bool,
                 improvement: str | None, shift_length: int, trend_length: int, in_baseline: np.ndarray,
                 method: str) -> pd.DataFrame:
    centre = np.broadcast_to(np.asarray(centre, dtype=float), value.shape)
    lims = {}
    for k in (2, 3):
        lo, hi = centre - k * sigma, centre + k * sigma
        if clip:
            lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
        lims[f"lower_{k}sigma"], lims[f"upper_{k}sigma"] = lo, hi
    out = data.copy()
    out["centre"], out["sigma"] = centre, sigma
    for name, col in lims.items():
        out[name] = col
    rules = _mdc_rules(value, centre, lims["lower_2sigma"], lims["upper_2sigma"], lims["lower_3sigma"],
                       lims["upper_3sigma"], improvement=improvement, shift_length=shift_length,
                       trend_length=trend_length)
    for name, col in rules.items():
        out[name] = col
    out["baseline"] = in_baseline
    out["chart"] = method
    return out


def _proportion_periods(frame: pd.DataFrame, period: str, events: str, n: str, baseline: int | None,
                        name: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The checked inputs of a proportion chart: period frame, events, denominators and the baseline mask."""
    data = _period_frame(frame, period, [events, n], name)
    x = _numeric(data, events, name)
    size = _numeric(data, n, name)
    if np.any(x > size):
        raise ParameterError(f"{name}: {events} exceeds {n} in {int((x > size).sum())} period(s)")
    return data, x, size, _baseline_mask(len(data), baseline, name)


def p_chart(frame: pd.DataFrame, *, period: str = "period", events: str = "events", n: str = "n",
            baseline: int | None = None, improvement: str | None = None, shift_length: int = 7,
            trend_length: int = 7) -> pd.DataFrame:
    """p-chart of a proportion over time, with Making Data Count signals.

    Parameters
    ----------
    frame : DataFrame
        One row per period for one unit (e.g. :func:`carequal.measures.trend_table` output for one facility).
    period, events, n : str
        Columns of the period, the numerator and the denominator.
    baseline : int, optional
        Number of first periods (in period order) that set the centre line; all periods by default.
    improvement : {"higher", "lower", None}
        Which direction is better (readmissions: ``"lower"``; discharge to community: ``"higher"``). With
        None, signals are labelled ``"neither"``.
    shift_length, trend_length : int
        Points in a run on one side of the centre (7) and in a rising or falling trend (7).

    Returns
    -------
    DataFrame
        One row per period in period order: the input columns, ``rate``, ``centre`` (p̄),
        ``sigma`` (``√(p̄(1−p̄)/n_i)``), ``lower_2sigma``, ``upper_2sigma``, ``lower_3sigma``, ``upper_3sigma``
        (clipped to [0, 1]), one column per rule — ``beyond_3sigma``, ``shift``, ``trend``, ``two_of_three`` —
        holding ``"improvement"``, ``"concern"``, ``"neither"`` or ``""`` (rule silent), the summary ``signal``
        (``"concern"``, ``"improvement"``, ``"neither"`` or ``"common cause"``; missing where n = 0),
        ``baseline`` (the period set the limits) and ``chart`` ("p-chart"; named so that it does not overwrite the
        ``method`` of a rate table's Wilson interval).

    Notes
    -----
    The rules (NHS England, Making Data Count), each labelled by ``improvement``:

    * beyond 3σ: a point strictly outside the 3σ limits;
    * shift: ``shift_length`` or more consecutive points on the same side of the centre line; a point exactly on
      the centre line belongs to neither side and ends the run; every point of the run is flagged;
    * trend: ``trend_length`` or more consecutive points each higher (or each lower) than the one before; two
      equal consecutive values (a tie) end the trend (a choice: MDC guidance does not settle ties); every point of
      the trend is flagged;
    * two of three: two or three of three consecutive points strictly beyond the same 2σ limit; the points beyond
      the limit are flagged.

    The summary is "concern" when any rule signals concern at the point (a concern is never hidden by a
    simultaneous improvement signal), else "improvement", else "neither", else "common cause". Periods with
    n = 0 have no rate; the rules skip them (runs and trends continue across them). The lengths are keywords
    because MDC-style tools differ (``abspc``, for example, uses 8 and 6).

    Examples
    --------
    >>> df = pd.DataFrame({"period": range(1, 5), "events": [10, 12, 9, 30], "n": [100, 100, 100, 100]})
    >>> out = p_chart(df, baseline=3, improvement="lower")
    >>> out[["period", "rate", "centre", "upper_3sigma", "beyond_3sigma", "signal"]].round(4)
       period  rate  centre  upper_3sigma beyond_3sigma        signal
    0       1  0.10  0.1033        0.1947                common cause
    1       2  0.12  0.1033        0.1947                common cause
    2       3  0.09  0.1033        0.1947                common cause
    3       4  0.30  0.1033        0.1947       concern       concern
    """
    _check_improvement(improvement)
    data, x, size, base = _proportion_periods(frame, period, events, n, baseline, "p_chart")
    if not size[base].sum() > 0:
        raise ParameterError("p_chart: the baseline periods have no cases (n = 0 throughout)")
    p_bar = x[base].sum() / size[base].sum()
    safe = np.where(size > 0, size, np.nan)
    rate = x / safe
    sigma = np.sqrt(p_bar * (1 - p_bar) / safe)
    data["rate"] = rate
    return _spc_columns(data, rate, p_bar, sigma, clip=True, improvement=improvement, shift_length=shift_length,
                        trend_length=trend_length, in_baseline=base, method="p-chart")


def laney_p_chart(frame: pd.DataFrame, *, period: str = "period", events: str = "events", n: str = "n",
                  baseline: int | None = None, improvement: str | None = None, shift_length: int = 7,
                  trend_length: int = 7) -> pd.DataFrame:
    """Laney p′-chart: a p-chart whose limits are widened (or narrowed) by the between-period variation.

    For large denominators (thousands of discharges a month) ordinary p-chart limits are so narrow that almost
    every point is "special cause"; Laney's p′ chart scales them by σ_z, the variation of the points' z-scores.

    Parameters and returns as :func:`p_chart`, plus the column ``sigma_z``; ``sigma`` is ``σ_i · σ_z`` and
    ``chart`` is "Laney p′-chart".

    Notes
    -----
    ``z_i = (p_i − p̄)/σ_i`` with ``σ_i = √(p̄(1−p̄)/n_i)``; ``σ_z = mean|z_i − z_{i−1}| / 1.128`` over the
    baseline periods (the moving-range estimate of an XmR chart on the z's; periods with n = 0 are skipped; no
    screening of large moving ranges); limits ``p̄ ± k σ_i σ_z`` clipped to [0, 1] (Laney 2002; qicharts2).

    Examples
    --------
    >>> df = pd.DataFrame({"period": range(1, 7), "events": [200, 260, 190, 250, 210, 240],
    ...                    "n": [1000, 1100, 1000, 1050, 980, 1020]})
    >>> out = laney_p_chart(df)
    >>> round(float(out["sigma_z"].iloc[0]), 3), out["signal"].unique().tolist()
    (2.415, ['common cause'])
    """
    _check_improvement(improvement)
    data, x, size, base = _proportion_periods(frame, period, events, n, baseline, "laney_p_chart")
    p_bar = x[base].sum() / size[base].sum() if size[base].sum() > 0 else np.nan
    if not 0 < p_bar < 1:  # also catches a baseline without cases (NaN)
        raise ParameterError(f"laney_p_chart: the baseline proportion is {p_bar}; with no variation (0 or 1) there "
                             "is nothing to scale — use p_chart")
    safe = np.where(size > 0, size, np.nan)
    rate = x / safe
    sigma_i = np.sqrt(p_bar * (1 - p_bar) / safe)
    z = (rate - p_bar) / sigma_i
    zb = z[base & np.isfinite(z)]
    if len(zb) < 2:
        raise ParameterError("laney_p_chart: σ_z needs at least two baseline periods with cases")
    sigma_z = float(np.mean(np.abs(np.diff(zb))) / _D2)
    data["rate"] = rate
    out = _spc_columns(data, rate, p_bar, sigma_i * sigma_z, clip=True, improvement=improvement,
                       shift_length=shift_length, trend_length=trend_length, in_baseline=base,
                       method="Laney p′-chart")
    out.insert(out.columns.get_loc("sigma") + 1, "sigma_z", sigma_z)
    return out


def xmr_chart(values, *, improvement: str | None = None, baseline: int | None = None, shift_length: int = 7,
              trend_length: int = 7) -> pd.DataFrame:
    """XmR (individuals and moving range) chart of a series, with Making Data Count signals.

    Parameters
    ----------
    values : Series or array-like
        One value per period, in time order; a Series' index becomes the ``period`` column.
    improvement, baseline, shift_length, trend_length
        As :func:`p_chart`.

    Returns
    -------
    DataFrame
        ``period``, ``value``, ``moving_range`` (``|x_i − x_{i−1}|``), ``moving_range_upper`` (3.267 × mean
        moving range), ``centre`` (baseline mean), ``sigma`` (mean moving range / 1.128), the 2σ and 3σ limits
        (not clipped), the rule columns and ``signal`` as :func:`p_chart`, ``baseline`` and ``chart`` ("XmR").

    Examples
    --------
    >>> out = xmr_chart(pd.Series([5.0, 7, 6, 8, 6, 30], index=list("abcdef")), baseline=5, improvement="higher")
    >>> out[["period", "value", "centre", "sigma", "signal"]].round(3)
      period  value  centre  sigma        signal
    0      a    5.0     6.4  1.551  common cause
    1      b    7.0     6.4  1.551  common cause
    2      c    6.0     6.4  1.551  common cause
    3      d    8.0     6.4  1.551  common cause
    4      e    6.0     6.4  1.551  common cause
    5      f   30.0     6.4  1.551   improvement
    """
    _check_improvement(improvement)
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=float))
    value = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    m = len(value)
    if m < 2:
        raise ParameterError("xmr_chart: needs at least two values")
    base = _baseline_mask(m, baseline, "xmr_chart")
    valid = np.isfinite(value)
    mr = np.full(m, np.nan)
    idx = np.flatnonzero(valid)
    mr[idx[1:]] = np.abs(np.diff(value[idx]))  # moving ranges between consecutive values present
    mr_base = mr[base & np.isfinite(mr)]
    if len(mr_base) < 1:
        raise ParameterError("xmr_chart: the baseline needs at least two values")
    mr_bar = float(np.mean(mr_base))
    centre = float(np.mean(value[base & valid]))
    data = pd.DataFrame({"period": series.index.to_numpy() if isinstance(values, pd.Series) else np.arange(m),
                         "value": value, "moving_range": mr, "moving_range_upper": _MR_UCL * mr_bar})
    return _spc_columns(data, value, centre, np.full(m, mr_bar / _D2), clip=False, improvement=improvement,
                        shift_length=shift_length, trend_length=trend_length, in_baseline=base, method="XmR")


# ------------------------------------------------------------------------------------------------------ shrinkage


def _bb_negloglik(theta: np.ndarray, x: np.ndarray, m: np.ndarray) -> tuple[float, np.ndarray]:
    """Beta-binomial −log-likelihood (without the binomial coefficients) and its gradient in (log a, log b)."""
    a, b = np.exp(theta)
    ll = np.sum(special.betaln(x + a, m - x + b) - special.betaln(a, b))
    common = special.digamma(a + b) - special.digamma(m + a + b)
    da = np.sum(special.digamma(x + a) - special.digamma(a) + common)
    db = np.sum(special.digamma(m - x + b) - special.digamma(b) + common)
    return -float(ll), -np.array([a * da, b * db])


def _bb_start(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Method-of-moments starting values: between-unit variance = variance of rates − mean binomial variance."""
    mu = x.sum() / m.sum()
    has = m > 0
    p = x[has] / m[has]
    between = (np.var(p, ddof=1) if has.sum() > 1 else 0.0) - mu * (1 - mu) * np.mean(1 / m[has])
    size = mu * (1 - mu) / between - 1 if between > 0 else 1e4
    size = float(np.clip(size, 1e-2, 1e6))
    return np.log([mu * size, (1 - mu) * size])


def beta_binomial_shrinkage(frame: pd.DataFrame, *, by, events: str = "events", n: str | None = "n",
                            level: float = 0.95) -> pd.DataFrame:
    """Empirical-Bayes (beta-binomial) shrunken rates and reliability per unit.

    Parameters
    ----------
    frame : DataFrame
        Rows summed within units: aggregated (``events`` and ``n`` per row) or one row per case (``n=None``:
        each row counts once and ``events`` is 0/1).
    by : str or list of str
        Unit columns (e.g. ``"facility_id"``).
    events, n : str
        Numerator and denominator columns.
    level : float
        Level of the equal-tailed posterior (credible) interval.

    Returns
    -------
    DataFrame
        The ``by`` columns, ``events``, ``n``, ``rate`` (x/n; missing when n = 0), ``reliability``
        (``n/(a+b+n)``), ``shrunken_rate`` (posterior mean), ``lower``, ``upper`` (posterior interval), ``level``,
        ``prior_mean`` (``a/(a+b)``), ``a``, ``b``, ``method``, and how the fit ended (:mod:`carequal.convergence`):
        ``converged``, ``gradient_norm``, ``objective_change``.

    Notes
    -----
    Rates ``p_j ~ Beta(a, b)`` and ``x_j ~ Binomial(n_j, p_j)``; (a, b) maximise ``Σ log BetaBin(x_j | n_j, a, b)``
    (L-BFGS-B on log a, log b from method-of-moments values; QualityMeasure's ``calcBetaBin``). The
    between-unit variance is ``ab/((a+b+1)(a+b)²)``, the reliability ``R_j = n_j/(a+b+n_j)`` and the
    posterior mean ``(x_j + a)/(n_j + a + b) = R_j x_j/n_j + (1 − R_j) a/(a+b)``: small units move most toward
    the overall rate. The posterior is ``Beta(x_j + a, n_j − x_j + b)``.

    When the beta-binomial likelihood is no better than one common rate (``a + b`` runs off to very large
    values: the units vary no more than chance), a :class:`NoBetweenUnitVarianceWarning` is issued; the
    reliabilities are then ~0 and every shrunken rate is ~the overall rate.

    Examples
    --------
    >>> df = pd.DataFrame({"facility_id": list("ABCDEF"), "events": [2, 30, 9, 45, 4, 20],
    ...                    "n": [10, 100, 60, 150, 40, 120]})
    >>> out = beta_binomial_shrinkage(df, by="facility_id")
    >>> out[["facility_id", "rate", "reliability", "shrunken_rate"]].round(3)
      facility_id   rate  reliability  shrunken_rate
    0           A  0.200        0.195          0.210
    1           B  0.300        0.708          0.275
    2           C  0.150        0.592          0.176
    3           D  0.300        0.784          0.281
    4           E  0.100        0.492          0.157
    5           F  0.167        0.744          0.179
    """
    by = _as_list(by)
    _check_level(level)
    _require(frame, by + [events] + ([n] if n is not None else []), "beta_binomial_shrinkage")
    work = frame[by + [events]].copy()
    work["_n"] = 1 if n is None else frame[n]
    _numeric(work, events, "beta_binomial_shrinkage")
    _numeric(work, "_n", "beta_binomial_shrinkage")
    grouped = work.groupby(by, dropna=False, observed=True, sort=True)
    out = grouped.agg(events=(events, "sum"), n=("_n", "sum")).reset_index()
    x = out["events"].to_numpy(dtype=float)
    m = out["n"].to_numpy(dtype=float)
    if np.any(x > m):
        raise ParameterError(f"beta_binomial_shrinkage: events exceed n in {int((x > m).sum())} unit(s)")
    if (m > 0).sum() < 2:
        raise ParameterError("beta_binomial_shrinkage: needs at least two units with cases")
    mu = x.sum() / m.sum()
    if not 0 < mu < 1:
        raise ParameterError(f"beta_binomial_shrinkage: the overall rate is {mu}; with no events (or no "
                             "non-events) at all a beta prior cannot be fitted")
    bounds = [(np.log(1e-6), np.log(1e9))] * 2
    result, convergence = minimise(_bb_negloglik, _bb_start(x, m), args=(x, m), bounds=bounds, max_iter=2000)
    a, b = (float(v) for v in np.exp(result.x))
    # the likelihood of one common rate is the beta-binomial's limit as a + b → ∞ with a/(a+b) = mu
    ll_common = float(np.sum(special.xlogy(x, mu) + special.xlogy(m - x, 1 - mu)))
    if -result.fun - ll_common < 1e-2 or a + b > 1e8:
        warnings.warn(f"beta_binomial_shrinkage: no between-unit variance (a + b = {a + b:.3g}; the units vary no "
                      "more than chance): reliabilities are ~0 and every unit is shrunk to the overall rate",
                      NoBetweenUnitVarianceWarning, stacklevel=2)
    else:
        warn_unless_converged(convergence, "beta_binomial_shrinkage")
    out["rate"] = np.where(m > 0, x / np.where(m > 0, m, 1), np.nan)
    out["reliability"] = m / (a + b + m)
    out["shrunken_rate"] = (x + a) / (m + a + b)
    alpha = 1 - level
    out["lower"] = special.betaincinv(x + a, m - x + b, alpha / 2)
    out["upper"] = special.betaincinv(x + a, m - x + b, 1 - alpha / 2)
    out["level"] = level
    out["prior_mean"] = a / (a + b)
    out["a"], out["b"] = a, b
    out["method"] = "beta-binomial empirical Bayes"
    out["converged"] = convergence.converged
    out["gradient_norm"], out["objective_change"] = convergence.gradient_norm, convergence.objective_change
    return out


# ------------------------------------------------------------------------------------------------------ scorecard


def scorecard(frame: pd.DataFrame, *, facility: str = "facility_id", measure: str | None = "measure",
              observed: str = "observed", expected: str = "expected", n: str | None = None, min_cases: int = 25,
              level: float = 0.95, label_by: str = "interval", funnel_method: str = "SHMI",
              overdispersion: str = "additive", signals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Facility × measure scorecard: O, E, O/E with its interval, funnel class, optional SPC signal, and a label.

    Parameters
    ----------
    frame : DataFrame
        One row per case (index stay) with ``observed`` (0/1) and ``expected`` (predicted probability), or
        aggregated rows with counts, expected counts and a case count column ``n``.
    facility, measure : str
        Key columns; ``measure=None`` for a table of one measure.
    n : str, optional
        Column with the number of cases each row stands for; by default each row is one case.
    min_cases : int
        Units with fewer cases are labelled "too few cases to judge" (25, as CMS HRRP and SNF VBP).
    level : float
        Level of the O/E interval (and of the narrower funnel limit).
    label_by : {"interval", "funnel"}
        What drives the label; see Notes.
    funnel_method, overdispersion : str
        Funnel settings (:func:`funnel_data`), computed per measure over the facilities with E > 0.
    signals : DataFrame, optional
        An SPC result per facility × measure — the key columns and ``signal`` (e.g. the last period of each
        facility's :func:`p_chart`) — added as ``spc_signal``.

    Returns
    -------
    DataFrame
        One row per measure × facility: ``measure``, ``facility``, ``n`` (cases), ``observed``, ``expected``,
        ``ratio``, ``lower``, ``upper``, ``level``, ``method`` (the interval's), ``funnel_class``,
        [``spc_signal``], ``label`` and ``label_basis`` (what the label was read from).

    Notes
    -----
    The label, in this order:

    1. "too few cases to judge" when ``n < min_cases`` or E = 0 (whatever the interval or funnel say);
    2. ``label_by="interval"`` (default): "higher than expected" when the ``level`` interval of O/E (exact
       Poisson below 10 events, Byar from 10: :func:`indirect_standardisation`) lies wholly above 1, "lower than
       expected" when wholly below 1, otherwise "as expected" — the label can always be read off the ``lower``
       and ``upper`` columns of the same row;
    3. ``label_by="funnel"``: "higher than expected" when the unit lies above its funnel's ``level`` upper limit
       (``funnel_class`` "high …", with the funnel's over-dispersion adjustment), "lower than expected" below the
       lower limit, otherwise "as expected". This allows for between-facility variation the risk model does not
       explain, so fewer large facilities are flagged.

    Examples
    --------
    >>> df = pd.DataFrame({"facility_id": ["A", "B", "C", "D"], "measure": "readmission",
    ...                    "observed": [70, 30, 52, 3], "expected": [50.0, 45.0, 50.0, 4.0],
    ...                    "n": [250, 230, 240, 20]})
    >>> card = scorecard(df, n="n")
    >>> card[["facility_id", "n", "ratio", "label"]].round(3)
      facility_id    n  ratio                   label
    0           A  250  1.400    higher than expected
    1           B  230  0.667     lower than expected
    2           C  240  1.040             as expected
    3           D   20  0.750  too few cases to judge
    """
    if label_by not in ("interval", "funnel"):
        raise ParameterError(f"label_by must be 'interval' or 'funnel', not {label_by!r}")
    if min_cases < 0:
        raise ParameterError(f"min_cases must be ≥ 0, not {min_cases}")
    _check_level(level)
    keys = ([measure] if measure is not None else []) + [facility]
    _require(frame, keys + [observed, expected] + ([n] if n is not None else []), "scorecard")
    work = frame[keys + [observed, expected]].copy()
    work["_cases"] = 1 if n is None else _numeric(frame, n, "scorecard")
    out = indirect_standardisation(work, by=keys, observed=observed, expected=expected, level=level)
    cases = work.groupby(keys, dropna=False, observed=True, sort=True)["_cases"].sum().to_numpy()
    if np.all(cases == np.round(cases)):
        cases = cases.astype("int64")
    out.insert(len(keys), "n", cases)

    levels = tuple(sorted({level, 0.998})) if level < 0.998 else (level,)
    out["funnel_class"] = None
    groups = out.groupby(measure, sort=False, dropna=False).groups if measure is not None else {None: out.index}
    for rows in groups.values():
        part = out.loc[rows]
        part = part[part["expected"] > 0]
        if len(part) == 0:
            continue
        fun = funnel_data(part, observed="observed", expected="expected", method=funnel_method,
                          overdispersion=overdispersion, levels=levels, grid=[1.0])
        out.loc[part.index, "funnel_class"] = fun.units["funnel_class"].to_numpy()

    if signals is not None:
        _require(signals, keys + ["signal"], "scorecard signals")
        dup = signals.duplicated(keys)
        if dup.any():
            raise ParameterError(f"scorecard: signals has {int(dup.sum())} repeated {keys} key(s); give one signal "
                                 "per facility and measure (e.g. the last period's)")
        out = out.merge(signals[keys + ["signal"]].rename(columns={"signal": "spc_signal"}), on=keys, how="left")

    too_few = (out["n"] < min_cases) | ~(out["expected"] > 0)
    if label_by == "interval":
        high = out["lower"] > 1
        low = out["upper"] < 1
        basis = f"{_pct(level)}% interval of O/E vs 1"
    else:
        fclass = out["funnel_class"].fillna("")
        high = fclass.str.startswith("high")
        low = fclass.str.startswith("low")
        basis = f"{_pct(level)}% funnel limits ({funnel_method}, {overdispersion} over-dispersion)"
    label = np.select([too_few, high, low], [LABELS[3], LABELS[0], LABELS[2]], default=LABELS[1])
    out["label"] = label
    out["label_basis"] = np.where(too_few, f"fewer than {min_cases} cases", basis)
    return out
