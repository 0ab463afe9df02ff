"""Partnership impact: difference-in-differences and interrupted time series on stay-level outcomes.

Difference-in-differences (two-way fixed effects): for stays attributed to facilities (e.g. hospital
discharges attributed to the post-acute provider that received them), a logistic model

``logit P(y) = δ · (partner × after start) + facility effects + period effects + risk covariates``

where "after start" is the stay's date on or after *that* facility's ``partner_since`` (each partnership has
its own start: staggered adoption), facility fixed effects absorb stable differences between partners and
non-partners, and period (calendar quarter) effects absorb trends and seasonality shared by all. ``δ`` is
the partnership effect on the log-odds scale (``exp(δ)`` an odds ratio), with standard errors clustered by
facility (statsmodels GLM, ``cov_type="cluster"``). A linear-probability version gives the effect in
percentage points. The interrupted-time-series alternative fits partner facilities' monthly risk-adjusted
rates with a level and slope change at the start.

Assumptions, stated in reports: parallel trends (partners and non-partners would have moved alike without
the partnership), no anticipation, and stable composition; with staggered starts and effects that change
over time, two-way fixed effects can be biased (Goodman-Bacon 2021), so the event-study table
(:func:`event_study`) should be read beside the single number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from carequal.cohorts import ALL_PAYER_RULES, MEDICARE_FFS_RULES, index_stays, post_acute_episodes
from carequal.convergence import glm_convergence, guarded_fit, warn_unless_converged
from carequal.errors import ModelError, ParameterError, describe_facilities
from carequal.measures import readmissions
from carequal.risk import RISK_COVARIATES, risk_covariates

__all__ = ["RISK_COVARIATES", "partnership_exposure", "difference_in_differences", "event_study",
           "interrupted_time_series", "pac_attributed_stays"]


def partnership_exposure(frame: pd.DataFrame, facilities: pd.DataFrame, *, facility: str, date: str) -> pd.DataFrame:
    """Add ``partner`` (the facility is in the partnership), ``after_start`` (the stay's date is on or after
    the facility's ``partner_since``) and ``exposed`` (both) to stay rows, plus ``period`` (calendar quarter).

    Partners without a known start date cannot be placed before or after: their rows get ``exposed``
    missing and are left out of the models (the count is reported by :func:`difference_in_differences`).

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["S1", "S2"], "is_partner": [True, False],
    ...                     "partner_since": pd.to_datetime(["2023-07-01", None])})
    >>> rows = pd.DataFrame({"pac_facility_id": ["S1", "S1", "S2"],
    ...                      "date": pd.to_datetime(["2023-01-10", "2023-08-01", "2023-08-01"])})
    >>> partnership_exposure(rows, fac, facility="pac_facility_id", date="date")[["partner", "exposed"]]
       partner  exposed
    0     True    False
    1     True     True
    2    False    False
    """
    fac = facilities.set_index("facility_id")
    partner = frame[facility].map(fac["is_partner"]).fillna(False).astype(bool)
    since = pd.to_datetime(frame[facility].map(fac["partner_since"]))
    when = pd.to_datetime(frame[date])
    after = (when >= since).where(since.notna())
    exposed = (partner & after.fillna(False).astype(bool)).astype(object)
    exposed[partner & since.isna()] = np.nan
    out = frame.copy()
    out["partner"] = partner.to_numpy()
    out["after_start"] = after.to_numpy()
    out["exposed"] = exposed.to_numpy()
    out["period"] = when.dt.to_period("Q").astype(str).to_numpy()
    return out


def difference_in_differences(frame: pd.DataFrame, *, outcome: str, facility: str, covariates: list[str] = (),
                              period: str = "period", exposed: str = "exposed", link: str = "logit",
                              level: float = 0.95, exposure: str | None = None, cluster: bool = True) -> dict:
    """Two-way fixed-effects difference-in-differences with facility-clustered standard errors.

    Parameters
    ----------
    frame : DataFrame
        Stay rows with the outcome (bool), the facility, the period and ``exposed`` (from
        :func:`partnership_exposure`), and numeric risk covariates. With ``link="poisson"``: cells with a count
        ``outcome`` and their person-time ``exposure`` (e.g. events and member-years of one sponsor, quarter,
        age band and sex).
    link : {"logit", "linear", "poisson"}
        ``"logit"``: effect on the log-odds (``odds_ratio`` = exp); ``"linear"``: linear probability model,
        effect in percentage points; ``"poisson"``: log-linear rate model with ``log(exposure)`` as offset,
        effect on the log-rate scale (``rate_ratio`` = exp).
    exposure : str, optional
        Person-time column (``link="poisson"`` only; required there).
    cluster : bool
        Standard errors clustered by ``facility`` (the default). False: model-based standard errors, scaled
        by the Pearson chi-square over the residual degrees of freedom when that is above 1 (quasi-likelihood)
        — the choice when the units are few (clustered standard errors need many clusters, some 30 or more).

    Raises
    ------
    ParameterError
        No exposed rows (no partner facility after its start): nothing to estimate.
    ModelError
        The fit failed numerically (a singular matrix, values out of the floating-point range): the outcome, the
        facilities and the cause are named.

    Returns
    -------
    dict
        ``effect`` (log-odds for logit, a difference of proportions for linear, a log rate ratio for poisson)
        with ``effect_lower``, ``effect_upper`` (its interval, on the same scale), ``se``, ``p_value``,
        ``level``; for logit also ``odds_ratio`` = exp(``effect``) with ``odds_ratio_lower``,
        ``odds_ratio_upper`` (the interval exponentiated), for poisson ``rate_ratio`` and its limits; ``n``,
        ``n_facilities``, ``n_exposed``, ``n_left_out`` (rows without a usable exposure), ``method``, and
        ``converged``, ``gradient_norm``, ``objective_change`` (:mod:`carequal.convergence`).
    """
    # loaded on the first fit, and not through statsmodels.api, which loads every model (time series, plots):
    # 0.25 s more for each report kernel that shows an effect
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    if link not in ("logit", "linear", "poisson"):
        raise ParameterError(f"link must be 'logit', 'linear' or 'poisson', not {link!r}")
    if (link == "poisson") != (exposure is not None):
        raise ParameterError("exposure (a person-time column) is required with link='poisson' and only there")
    usable = frame[exposed].notna().to_numpy().copy()
    if exposure is not None:  # cells without person-time carry no information (and no log offset)
        usable &= (frame[exposure].to_numpy(dtype=float) > 0)
    data = frame.loc[usable].reset_index(drop=True)
    if data[exposed].astype(bool).sum() == 0:
        raise ParameterError("no exposed rows (partner facilities after their start): nothing to estimate")
    fac_codes, _ = pd.factorize(data[facility])
    X = pd.concat([
        pd.DataFrame({"exposed": data[exposed].astype(float).to_numpy()}),
        data[list(covariates)].astype(float).reset_index(drop=True),
        pd.get_dummies(data[facility], prefix="f", drop_first=True, dtype=float),
        pd.get_dummies(data[period], prefix="t", drop_first=True, dtype=float),
    ], axis=1)
    X.insert(0, "const", 1.0)
    y = data[outcome].astype(float).to_numpy()
    family = {"logit": families.Binomial(), "linear": families.Gaussian(),
              "poisson": families.Poisson()}[link]
    offset = np.log(data[exposure].to_numpy(dtype=float)) if exposure is not None else None
    n_facilities = int(fac_codes.max() + 1)

    def fail(cause: str, detail: str) -> ModelError:
        return ModelError(measure=outcome, facilities=describe_facilities(n_facilities, scope=""), cause=cause,
                          detail=detail, model="difference-in-differences model", n=len(data), cases="stays")

    def fit():
        model = GLM(y, X, family=family, offset=offset)
        if cluster:
            return model.fit(cov_type="cluster", cov_kwds={"groups": fac_codes})
        result = model.fit()
        scale = float(result.pearson_chi2 / result.df_resid) if result.df_resid > 0 else 1.0
        if link == "linear" or scale <= 1:
            return result
        return model.fit(scale=scale, start_params=result.params)  # the same estimates, wider intervals

    result, _ = guarded_fit(fit, fail)
    convergence = glm_convergence(result)
    warn_unless_converged(convergence, f"difference_in_differences ({outcome})")
    effect, se = float(result.params["exposed"]), float(result.bse["exposed"])
    z = special.ndtri(1 - (1 - level) / 2)
    out = {"effect": effect, "effect_lower": effect - z * se, "effect_upper": effect + z * se, "se": se,
           "p_value": float(result.pvalues["exposed"]), "level": level, "n": len(data),
           "n_facilities": n_facilities, "n_exposed": int(data[exposed].astype(bool).sum()),
           "n_left_out": int((~usable).sum()), "converged": convergence.converged,
           "gradient_norm": convergence.gradient_norm, "objective_change": convergence.objective_change,
           "method": f"two-way fixed effects {_MODEL_NAMES[link]} model, facility and period effects, "
                     + ("facility-clustered standard errors" if cluster else
                        "model-based standard errors (quasi-likelihood scale when overdispersed)")}
    if link in ("logit", "poisson"):  # each interval beside the estimate on its own scale
        name = "odds_ratio" if link == "logit" else "rate_ratio"
        with np.errstate(over="ignore"):  # an estimate on the boundary has an infinite upper limit
            out[name] = float(np.exp(effect))
            out[f"{name}_lower"] = float(np.exp(out["effect_lower"]))
            out[f"{name}_upper"] = float(np.exp(out["effect_upper"]))
    return out


_MODEL_NAMES = {"logit": "logistic", "linear": "linear probability", "poisson": "Poisson (log person-time offset)"}


def event_study(frame: pd.DataFrame, facilities: pd.DataFrame, *, outcome: str, facility: str, date: str,
                window_quarters: int = 4) -> pd.DataFrame:
    """Observed rates of partner facilities by quarter relative to their start (−window … +window), beside
    non-partners' rates in the same calendar quarters: ``relative_quarter``, ``partner_rate``,
    ``comparison_rate``, ``difference``, ``n_partner``, ``n_comparison``."""
    data = partnership_exposure(frame, facilities, facility=facility, date=date)
    fac = facilities.set_index("facility_id")
    since = pd.to_datetime(data[facility].map(fac["partner_since"]))
    when = pd.to_datetime(data[date])
    rel = ((when.dt.year - since.dt.year) * 4 + (when.dt.quarter - since.dt.quarter))
    data["relative_quarter"] = rel
    partners = data[data["partner"] & rel.notna() & rel.between(-window_quarters, window_quarters)]
    others = data[~data["partner"]]
    other_rate = others.groupby("period")[outcome].agg(["mean", "size"])
    rows = []
    for q, grp in partners.groupby("relative_quarter"):
        comp = other_rate.reindex(grp["period"].unique())
        comp_rate = float(np.average(comp["mean"], weights=comp["size"])) if comp["size"].sum() else np.nan
        rows.append({"relative_quarter": int(q), "partner_rate": float(grp[outcome].mean()),
                     "comparison_rate": comp_rate, "n_partner": len(grp), "n_comparison": int(comp["size"].sum())})
    out = pd.DataFrame(rows)
    if len(out):
        out["difference"] = out["partner_rate"] - out["comparison_rate"]
    return out


def interrupted_time_series(monthly: pd.DataFrame, *, start: str | pd.Timestamp, rate: str = "rate",
                            period: str = "period", weight: str | None = "n") -> dict:
    """Segmented regression of a monthly rate on time, with a level change and a slope change at ``start``
    (weighted least squares, Newey–West standard errors with 3 lags).

    Returns ``level_change``, ``slope_change`` (per month), their standard errors and p-values, ``n_periods``.
    """
    from statsmodels.regression.linear_model import WLS  # loaded on the first fit (see difference_in_differences)

    data = monthly.sort_values(period).reset_index(drop=True)
    t = np.arange(len(data), dtype=float)
    after = (pd.to_datetime(data[period]) >= pd.Timestamp(start)).to_numpy().astype(float)
    if after.sum() == 0 or after.sum() == len(data):
        raise ParameterError("the start date must fall inside the series: no months before or none after")
    t0 = t[after.argmax()]
    X = pd.DataFrame({"const": 1.0, "time": t, "level": after, "slope": after * (t - t0)})
    w = data[weight].to_numpy(dtype=float) if weight else None
    model = WLS(data[rate].to_numpy(dtype=float), X, weights=w if w is not None else 1.0)
    result = model.fit(cov_type="HAC", cov_kwds={"maxlags": 3})
    return {"level_change": float(result.params["level"]), "level_se": float(result.bse["level"]),
            "level_p": float(result.pvalues["level"]), "slope_change": float(result.params["slope"]),
            "slope_se": float(result.bse["slope"]), "slope_p": float(result.pvalues["slope"]),
            "n_periods": len(data), "method": "segmented regression, WLS, Newey-West (3 lags)"}


def pac_attributed_stays(tables: dict[str, pd.DataFrame], *, rules=None, cohort: pd.DataFrame | None = None
                         ) -> pd.DataFrame:
    """Index hospital discharges that went to post-acute care, attributed to the receiving PAC provider, with
    the 30-day readmission outcome, the partnership exposure and :data:`RISK_COVARIATES`.

    This is the frame for partnership-impact models: a partner PAC provider's patients before and after its
    start, against non-partner providers' patients in the same quarters. By default every patient the
    partnership serves is in it, whatever the age or the payer (:data:`carequal.cohorts.ALL_PAYER_RULES`);
    pass ``rules`` to narrow it (e.g. ``MEDICARE_FFS_RULES``).

    With ``cohort`` (the rows of the measured cohort, :mod:`carequal.measured`, as
    :func:`carequal.national.read_cohort` gives them), nothing is recomputed: its rows are the all-payer index
    stays, or with ``rules=MEDICARE_FFS_RULES`` its CMS rows; ``tables`` then needs only ``facilities``.
    """
    if cohort is not None:
        if rules is not None and rules != MEDICARE_FFS_RULES:
            raise ParameterError("pac_attributed_stays: a measured cohort holds the all-payer and the CMS Medicare FFS "
                                 "cohorts; other rules need the tables (cohort=None)")
        data = cohort[cohort["cms"].to_numpy(dtype=bool)] if rules is not None else cohort
        data = data[data["pac_setting"] != "none"].reset_index(drop=True)
        return partnership_exposure(data, tables["facilities"], facility="pac_facility_id", date="pac_admit_date")
    stays, fac, pats = tables["stays"], tables["facilities"], tables["patients"]
    cohort = index_stays(stays, fac, pats, tables.get("enrollment"), rules=rules or ALL_PAYER_RULES)
    flags = readmissions(cohort.index, stays, fac)
    episodes = post_acute_episodes(stays, fac, hospital_stays=cohort.index)
    data = cohort.index.merge(flags, on="stay_id").merge(
        episodes[["stay_id", "pac_facility_id", "pac_setting", "pac_admit_date"]], on="stay_id")
    data = data[data["pac_setting"] != "none"].reset_index(drop=True)
    data = risk_covariates(data, stays)
    return partnership_exposure(data, fac, facility="pac_facility_id", date="pac_admit_date")
