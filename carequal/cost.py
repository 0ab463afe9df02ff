"""Episode spending: payments around an index stay, expected spending, spending ratios and network leakage.

An episode is an index stay (:func:`carequal.cohorts.index_stays`) plus the windows of ``W`` days after its
discharge. :func:`episode_spending` adds up ``stays.payment`` per episode and setting; :func:`expected_spending`
fits a gamma GLM with a log link (statsmodels) for what an episode would cost given its patient;
:func:`spending_ratio` turns observed and expected into O/E ratios with an interval;
:func:`provider_spending_ratios` gives them by hospital, post-acute provider and partner status; and
:func:`network_leakage` follows the share of post-acute discharges that went to providers outside the
partnership, by hospital and month.

Window rules (the CMS Medicare Spending per Beneficiary (MSPB) episode counts Part A and B payments "from 3
days prior to an inpatient hospital admission through 30 days after discharge", medicare.gov, *Medicare
hospital spending by claim type*; carequal counts the index hospitalisation and the days after it, with no
pre-admission days, since the data hold inpatient and post-acute stays only):

* day ``d`` of a stay is ``admit_date − index discharge_date`` in calendar days; a stay belongs to the window of
  ``W`` days when ``0 ≤ d ≤ W`` (day 0 is the discharge day, as in the readmission window of the methodology
  digest §1.3);
* acute stays in the window (readmissions, planned or not) count in full: a hospital is paid per admission
  (DRG), so a per-day share would misstate it;
* post-acute stays (SNF, IRF, LTCH, HHA) in the window count in proportion to their days inside it, as MSPB-PAC
  prorates post-acute claims that run past the end of its episode window (CMS, *MSPB-PAC Measure
  Specifications*, Acumen for CMS, 2016; the per-day share below is carequal's reading of that rule):
  a stay's days are ``admit_date … discharge_date − 1`` (Medicare day counting; a same-day stay has one day),
  the window's days are ``0 … W``, and the share is ``days inside / days of the stay``;
* a transfer chain (acute-to-acute transfers linked as in :func:`carequal.cohorts.link_transfers`) is one
  index hospitalisation: ``spend_index`` is the sum of the payments of every stay of the chain, and the window
  starts at the final discharge.

Why hand-written: no library builds payment episodes from stay-level claims (MSPB is CMS code on CMS data),
and the window join must scale to millions of stays, so it is a sorted-array search (numpy) over the
patient's stays, with no per-patient loop. The GLM is statsmodels'; the ratio interval is the textbook
ratio-estimator variance (Cochran 1977), written out because statsmodels has no O/E ratio with it.

Size: about 800 lines, one module because the episode table (index hospitalisation plus windows) is built, modelled
(expected spending), compared (spending ratios) and split by provider (leakage) here, and every step reads its
columns; split, the steps would import those columns and constants from each other.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import patsy
from scipy import special

from carequal.cohorts import acute_stays, day_numbers, link_transfers, post_acute_episodes
from carequal.compare import p_chart
from carequal.convergence import Convergence, glm_convergence, guarded_fit, warn_unless_converged
from carequal.errors import CarequalWarning, DataQualityWarning, ModelError, ParameterError, describe_facilities
from carequal.measures import rate_table
from carequal.schema import POST_ACUTE_SETTINGS, key_positions, take

__all__ = ["SPENDING_CATEGORIES", "SPENDING_CEILING", "SpendingModel", "episode_spending", "expected_spending",
           "network_leakage", "provider_spending_ratios", "spending_ratio", "unusable_spending"]

SPENDING_CATEGORIES: tuple[str, ...] = ("readmit", *POST_ACUTE_SETTINGS)
"""Where window payments are attributed: acute readmissions, then each post-acute setting."""

SPENDING_CEILING = 10_000_000.0
"""Dollars per episode above which spending is taken for a data error, not a cost: the costliest Medicare
hospitalisations are paid a few million dollars, so an episode above ten million (or a payment read as 1e300) is
a wrong payment, and one such value dominates every mean and model it enters (a gamma GLM overflows outright)."""

RATIO_METHOD = "O/E; log-scale delta method, ratio-estimator variance, expected fixed"
RATIO_METHOD_MODEL = "O/E; log-scale delta method, ratio-estimator variance + model variance of expected"

_EXCLUSIONS = (("incomplete_followup", "the window ends after the end of the data"),
               ("missing_payment", "a stay of the index hospitalisation or of the window has no payment"))


def _examples(values, k: int = 5) -> str:
    return ", ".join(map(str, list(values)[:k]))


def _count(n: int, noun: str) -> str:
    return f"{n:,d} {noun}{'' if n == 1 else 's'}"


def _require(frame: pd.DataFrame, columns, table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ParameterError(f"{table}: no column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}")


def _check_windows(windows) -> tuple[int, ...]:
    values = tuple(windows)
    if not values or any(not isinstance(w, int | np.integer) or isinstance(w, bool) or w < 0 for w in values):
        raise ParameterError(f"windows must be whole numbers of days of at least 0, e.g. (30, 90); got {windows!r}")
    if len(set(values)) != len(values):
        raise ParameterError(f"windows must not repeat a length; got {windows!r}")
    return tuple(sorted(int(w) for w in values))


def _payments(stays: pd.DataFrame, payment: str) -> np.ndarray:
    if payment not in stays.columns:
        raise ParameterError(
            f"stays.{payment}: no such column. Episode spending needs the payment of every stay; the column is "
            "optional in the data contract, so load a source that has it (or name it with payment=...)")
    values = pd.to_numeric(stays[payment], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isnan(values) & (values < 0)
    if bad.any():
        raise ParameterError(
            f"stays.{payment}: {int(bad.sum())} negative payment(s) (rule: payment >= 0); examples stay_id = "
            f"{_examples(stays['stay_id'].to_numpy()[bad])}. Net adjustments into the stay they adjust, or blank them")
    return values


# ---------------------------------------------------------------------------------------- episode spending


def episode_spending(index: pd.DataFrame, stays: pd.DataFrame, facilities: pd.DataFrame, *,
                     windows: tuple[int, ...] = (30, 90), payment: str = "payment",
                     transfer_gap_days: int | None = 1, pac_gap_days: int = 1,
                     data_end: str | pd.Timestamp | None = None) -> pd.DataFrame:
    """Payments of each index stay's hospitalisation and of the stays in the windows after its discharge.

    Parameters
    ----------
    index : DataFrame
        Index stays (``stay_id``, ``patient_id``, ``facility_id``, ``discharge_date``), e.g. ``Cohort.index``.
    stays, facilities : DataFrame
        Contract tables (all settings); ``stays`` must have the ``payment`` column.
    windows : tuple of int
        Window lengths in days after the index discharge (day 0 through day ``W``).
    payment : str
        The payment column of ``stays``.
    transfer_gap_days : int or None
        Link acute-to-acute transfers as the cohort did (:class:`carequal.cohorts.IndexRules`
        ``transfer_gap_days``); None when the cohort did not chain transfers (each index stay alone).
    pac_gap_days : int
        Days from the index discharge within which the first post-acute stay must start to be the episode's
        post-acute provider (:func:`carequal.cohorts.post_acute_episodes`).
    data_end : date, optional
        Last day the data cover; default the last discharge in ``stays``.

    Returns
    -------
    DataFrame
        One row per index stay, in the order given: ``stay_id``, ``patient_id``, ``facility_id`` (the
        discharging hospital), ``discharge_date``, ``index_chain_stays`` (acute stays in the index
        hospitalisation), ``pac_setting`` (``"none"`` if no post-acute stay follows), ``pac_facility_id``,
        ``pac_is_partner`` (partner on the post-acute admission date), ``spend_index``; then for each window
        ``W``: ``spend_readmit_Wd``, ``spend_snf_Wd``, ``spend_irf_Wd``, ``spend_ltch_Wd``, ``spend_hha_Wd``,
        ``spend_pac_Wd`` (the four settings), ``spend_total_Wd`` (index + readmissions + post-acute),
        ``missing_payments_Wd`` (stays of the index hospitalisation or the window without a payment) and
        ``exclusion_reason_Wd`` (missing when the episode's window is usable).

    Notes
    -----
    The window rules are in the module notes (post-acute stays prorated by days, readmissions in full, a
    transfer chain as one hospitalisation). Two reasons leave a window unusable; its spending columns are then
    missing, never 0, and ``exclusion_reason_Wd`` says why (first reason wins):

    * ``incomplete_followup``: ``discharge_date + W`` is after ``data_end``. An extract by discharge date also
      lacks the stays still running at its end; pass an earlier ``data_end`` to leave room for them.
    * ``missing_payment``: a stay of the index hospitalisation or starting in the window has no payment. The
      count is in ``missing_payments_Wd`` and a :class:`carequal.errors.DataQualityWarning` reports it.

    Death is not an exclusion (spending simply stops), and every index stay keeps its own window even when it
    lies inside an earlier index stay's window (a hospital-wide cohort has no washout), so such spending counts
    in both episodes. Enrollment after discharge is not checked here: for 90-day windows build the cohort with
    ``IndexRules(followup_days=90)``.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H", "S"], "setting": ["acute", "snf"], "market": "M",
    ...     "is_partner": [False, True], "partner_since": pd.to_datetime([None, "2023-01-01"])})
    >>> st = pd.DataFrame({"stay_id": ["h1", "s1", "h2"], "patient_id": "p", "facility_id": ["H", "S", "H"],
    ...     "admit_date": pd.to_datetime(["2024-01-01", "2024-01-11", "2024-03-01"]),
    ...     "discharge_date": pd.to_datetime(["2024-01-10", "2024-02-20", "2024-03-04"]),
    ...     "payment": [10000.0, 12000.0, 8000.0]})
    >>> out = episode_spending(st[st.stay_id == "h1"], st, fac, data_end="2024-12-31")
    >>> out[["spend_index", "spend_snf_30d", "spend_readmit_30d", "spend_snf_90d", "spend_readmit_90d"]]
       spend_index  spend_snf_30d  spend_readmit_30d  spend_snf_90d  spend_readmit_90d
    0      10000.0         9000.0                0.0        12000.0             8000.0

    The SNF stay covers days 1–40 after the discharge: 30 of its 40 days fall in the 30-day window (days 0–30),
    so 0.75 of its payment counts there, all of it in the 90-day window. The readmission starts on day 51.
    """
    windows = _check_windows(windows)
    _require(index, ("stay_id", "patient_id", "facility_id", "discharge_date"), "index")
    _require(stays, ("stay_id", "patient_id", "facility_id", "admit_date", "discharge_date"), "stays")
    _require(facilities, ("facility_id", "setting"), "facilities")
    pay = _payments(stays, payment)
    if index["stay_id"].duplicated().any():
        dup = index["stay_id"][index["stay_id"].duplicated()]
        raise ParameterError(f"index.stay_id: {len(dup)} repeated id(s), e.g. {_examples(dup)}; one row per index stay")
    n = len(index)
    srow = key_positions(index["stay_id"], stays["stay_id"])
    if (srow < 0).any():
        raise ParameterError(f"index.stay_id: {int((srow < 0).sum())} index stay(s) not in stays, e.g. "
                             f"{_examples(index['stay_id'].to_numpy()[srow < 0])}")
    setting = take(facilities["setting"], key_positions(stays["facility_id"], facilities["facility_id"]), None)
    admit, discharge = day_numbers(stays["admit_date"]), day_numbers(stays["discharge_date"])

    # the index hospitalisation: every acute stay of the index stay's transfer chain
    chain = np.arange(len(stays), dtype=np.int64)  # chain id of each stay (its own row unless chained)
    if transfer_gap_days is not None:
        acute = link_transfers(acute_stays(stays[["stay_id", "patient_id", "facility_id", "admit_date",
                                                  "discharge_date"]], facilities), gap_days=transfer_gap_days)
        rows = key_positions(acute["stay_id"], stays["stay_id"])
        chain[rows] = key_positions(acute["episode_id"], stays["stay_id"])
    index_chain = chain[srow]
    shared = pd.Series(index_chain).duplicated().to_numpy()
    if shared.any():
        raise ParameterError(f"index: {int(shared.sum())} index stay(s) in the same transfer chain as another, e.g. "
                             f"stay_id {_examples(index['stay_id'].to_numpy()[shared])}; a chain is one index "
                             "hospitalisation (give its final stay only, as index_stays does)")
    index_of_chain = np.full(len(stays), -1, dtype=np.int64)
    index_of_chain[index_chain] = np.arange(n)
    chain_rows = np.flatnonzero((index_of_chain[chain] >= 0) & (setting == "acute"))
    chain_pos = index_of_chain[chain[chain_rows]]
    chain_pay = pay[chain_rows]
    spend_index = np.bincount(chain_pos, weights=np.nan_to_num(chain_pay), minlength=n)
    index_missing = np.bincount(chain_pos, weights=np.isnan(chain_pay), minlength=n).astype(np.int64)
    index_chain_stays = np.bincount(chain_pos, minlength=n)

    # window stays: a sorted search over (patient, admission day) of the acute and post-acute stays
    candidate = np.flatnonzero((setting == "acute") | np.isin(setting, POST_ACUTE_SETTINGS))
    codes = pd.factorize(pd.concat([index["patient_id"], stays["patient_id"].iloc[candidate]], ignore_index=True))[0]
    i_code, c_code = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    shift, base = np.int64(1 << 32), np.int64(1 << 31)
    c_key = c_code * shift + admit[candidate] + base
    order = np.argsort(c_key, kind="stable")
    candidate, c_key = candidate[order], c_key[order]
    i_discharge = day_numbers(index["discharge_date"])
    lo = np.searchsorted(c_key, i_code * shift + i_discharge + base, side="left")
    hi = np.searchsorted(c_key, i_code * shift + i_discharge + max(windows) + base, side="right")
    counts = hi - lo
    owner = np.repeat(np.arange(n), counts)
    offsets = np.repeat(lo - np.cumsum(counts) + counts, counts)
    rows = candidate[np.arange(counts.sum()) + offsets]
    # the index hospitalisation's own stays (a same-day stay starts on its discharge day) are not window stays
    not_chain = (setting[rows] != "acute") | (chain[rows] != index_chain[owner])
    owner, rows = owner[not_chain], rows[not_chain]
    day = admit[rows] - i_discharge[owner]
    length = np.maximum(discharge[rows] - admit[rows], 1)
    category = np.where(setting[rows] == "acute", "readmit", setting[rows].astype(object))
    row_pay = pay[rows]

    end_day = day_numbers(np.array([pd.Timestamp(data_end) if data_end is not None
                              else stays["discharge_date"].max()], dtype="datetime64[ns]"))[0]
    out = pd.DataFrame({"stay_id": index["stay_id"].array, "patient_id": index["patient_id"].array,
                        "facility_id": index["facility_id"].array, "discharge_date": index["discharge_date"].to_numpy(),
                        "index_chain_stays": index_chain_stays})
    pac = post_acute_episodes(stays[[c for c in ("stay_id", "patient_id", "facility_id", "admit_date",
                                                 "discharge_date") if c in stays.columns]],
                              facilities, max_gap_days=pac_gap_days, hospital_stays=index)
    pac = pac.set_index("stay_id").reindex(index["stay_id"].to_numpy())
    out["pac_setting"] = pac["pac_setting"].fillna("none").to_numpy()
    out["pac_facility_id"] = pac["pac_facility_id"].array
    out["pac_is_partner"] = pac["pac_is_partner"].fillna(False).astype(bool).to_numpy()
    out["spend_index"] = np.where(index_missing > 0, np.nan, spend_index)
    columns: dict[str, np.ndarray] = {}
    excluded_total = {}
    for w in windows:
        inside = day <= w
        share = np.where(category == "readmit", 1.0, np.clip((w + 1 - day) / length, 0.0, 1.0))
        missing = index_missing + np.bincount(owner[inside], weights=np.isnan(row_pay[inside]),
                                              minlength=n).astype(np.int64)
        incomplete = i_discharge + w > end_day
        reason = np.where(incomplete, "incomplete_followup", np.where(missing > 0, "missing_payment", None))
        usable = pd.isna(reason)
        parts = {}
        for cat in SPENDING_CATEGORIES:
            sel = inside & (category == cat)
            parts[cat] = np.bincount(owner[sel], weights=np.nan_to_num(row_pay[sel]) * share[sel], minlength=n)
        pac_sum = sum(parts[s] for s in POST_ACUTE_SETTINGS)
        for cat in SPENDING_CATEGORIES:
            columns[f"spend_{cat}_{w}d"] = np.where(usable, parts[cat], np.nan)
        columns[f"spend_pac_{w}d"] = np.where(usable, pac_sum, np.nan)
        columns[f"spend_total_{w}d"] = np.where(usable, spend_index + parts["readmit"] + pac_sum, np.nan)
        columns[f"missing_payments_{w}d"] = missing
        columns[f"exclusion_reason_{w}d"] = pd.array(reason, dtype="str")
        excluded_total[w] = (int((reason == "missing_payment").sum()), int(missing.sum()))
    out = pd.concat([out, pd.DataFrame(columns)], axis=1)
    flagged = {w: v for w, v in excluded_total.items() if v[0]}
    if flagged:
        w = max(flagged)
        examples = out.loc[out[f"exclusion_reason_{w}d"] == "missing_payment", "stay_id"]
        warnings.warn(
            "episode_spending: stays.payment is missing for stays in some episodes; those windows are left out "
            "(exclusion_reason 'missing_payment'), not counted as 0: "
            + "; ".join(f"{v[0]} episode(s) ({v[1]} stay(s)) in the {k}-day window" for k, v in flagged.items())
            + f"; examples index stay_id = {_examples(examples)}", DataQualityWarning, stacklevel=2)
    return out


# ---------------------------------------------------------------------------------------- expected spending


@dataclass
class SpendingModel:
    """A fitted spending model (:func:`expected_spending`).

    Attributes
    ----------
    expected : Series
        Expected spending of every row of the frame (same index).
    coefficients : DataFrame
        ``term``, ``estimate`` (log scale), ``se`` (robust), ``ratio`` (``exp(estimate)``: the multiplicative
        effect), ``lower``, ``upper``, ``p_value``.
    result : statsmodels GLMResults
        The fit (``cov_type="HC0"``).
    n_fit : int
        Rows the model was fitted on.
    dispersion : float
        Estimated gamma dispersion φ (Pearson χ² / residual df; the squared coefficient of variation).
    outcome, covariates
        What was modelled.
    dropped : tuple of str
        Design columns left out because they were constant on the fitted rows (e.g. ``employees`` in a cohort
        of people aged 65 or more).
    convergence : Convergence
        How the fit ended, judged by the score and the last deviance change (:mod:`carequal.convergence`).
    """

    expected: pd.Series
    coefficients: pd.DataFrame
    result: object
    n_fit: int
    dispersion: float
    outcome: str
    covariates: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    design_info: object = field(default=None, repr=False)
    columns: tuple[str, ...] = field(default=(), repr=False)
    convergence: Convergence | None = None

    def design(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's design matrix for the rows of ``frame`` (which must hold the covariates)."""
        return _design_matrix(self.design_info, frame, self.covariates)[list(self.columns)].to_numpy(dtype=float)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Expected spending of the rows of ``frame``."""
        return np.exp(self.design(frame) @ np.asarray(self.result.params, dtype=float))


def _clean_name(term: str) -> str:
    return term.replace("Q('", "").replace("')", "")


def _design_matrix(design_info, frame: pd.DataFrame, covariates: tuple[str, ...]) -> pd.DataFrame:
    levels = {_clean_name(factor.name()): info.categories for factor, info in design_info.factor_infos.items()
              if info.type == "categorical"}
    try:
        X = patsy.build_design_matrices([design_info], _text_as_categories(frame, covariates, levels),
                                        return_type="dataframe")[0]
    except patsy.PatsyError as exc:
        raise ParameterError(f"expected_spending: a covariate has a value the fitted rows do not have ({exc})") from exc
    X.columns = [_clean_name(c) for c in X.columns]
    return X


def _text_as_categories(frame: pd.DataFrame, covariates: tuple[str, ...],
                        levels: dict[str, tuple] | None = None) -> pd.DataFrame:
    """The covariates, each text column as a pandas ``Categorical`` of its levels: patsy reads a Categorical's
    codes, where for text it looks every value up in Python (two thirds of fitting and predicting a model of a
    few thousand episodes). The levels are the model's (``levels``, by column) or, to fit, the sorted distinct
    values, the order patsy gives text; the design matrix is the same. A value outside the model's levels is
    left as text, so that patsy names it in its error."""
    out = frame[list(covariates)]
    converted = {}
    for col in covariates:
        values = out[col]
        if not (pd.api.types.is_string_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype)):
            continue
        present = values.dropna().unique()
        if not all(isinstance(v, str) for v in present):
            continue
        known = sorted(present) if levels is None else levels.get(col)
        if known is None or not set(present) <= set(known):
            continue
        converted[col] = pd.Categorical(values, categories=list(known))
    return out.assign(**converted) if converted else out


def unusable_spending(values, ids=None, *, ceiling: float | None = SPENDING_CEILING) -> tuple[np.ndarray, str]:
    """Which spending values no mean or model can use: infinite, or above ``ceiling`` dollars per episode.

    Returns
    -------
    (mask, cause)
        A boolean mask of the values at fault, and the :class:`carequal.errors.ModelError` cause
        (``"non-finite values"`` when any is infinite, else ``"extreme values"``; ``""`` when none is at fault).

    Examples
    --------
    >>> unusable_spending([12000.0, 1e300, 8000.0])
    (array([False,  True, False]), 'extreme values')
    """
    y = np.asarray(values, dtype=float)
    infinite = np.isinf(y)
    bad = infinite | ((y > ceiling) if ceiling is not None else np.zeros(len(y), dtype=bool))
    return bad, ("non-finite values" if infinite.any() else "extreme values" if bad.any() else "")


def _facility_count(frame: pd.DataFrame, mask: np.ndarray) -> str:
    for col in ("facility_id", "unit_id"):
        if col in frame.columns:
            return describe_facilities(int(frame.loc[mask, col].nunique()), scope="")
    return "the rows given"


def expected_spending(frame: pd.DataFrame, *, outcome: str, covariates: list[str] | tuple[str, ...],
                      fit_mask: pd.Series | np.ndarray | None = None, level: float = 0.95,
                      ceiling: float | None = SPENDING_CEILING, measure: str | None = None,
                      facilities: str | None = None) -> SpendingModel:
    """Expected episode spending from a gamma GLM with a log link.

    ``log E[spending] = x'β``, spending ~ Gamma with constant dispersion (variance φ μ²: spending is skewed and
    its spread grows with its level). Fitted by IRLS (statsmodels ``GLM`` with ``Gamma(links.Log())``) on all
    rows or on the ``fit_mask`` rows, and predicted for every row.

    Parameters
    ----------
    frame : DataFrame
        One row per episode, e.g. :func:`episode_spending` joined to
        :func:`carequal.risk.risk_covariates` output.
    outcome : str
        Spending column (e.g. ``"spend_pac_30d"``); it must be positive on the fitted rows and not missing
        (filter on ``exclusion_reason_Wd`` first; for spending that can be 0, model the episodes with spending).
    covariates : list of str
        Columns used as they are; text columns are dummy-coded (patsy), e.g.
        ``list(RISK_COVARIATES) + ["pac_setting"]``.
    fit_mask : boolean array, optional
        Rows to fit on. The non-partner episodes give the counterfactual "what these patients would cost at a
        non-partner provider" for the partner episodes.
    level : float
        Level of the coefficient intervals.
    ceiling : float or None
        Spending per episode above which a value is a data error (:data:`SPENDING_CEILING`); None: no limit.
    measure, facilities : str, optional
        What the model is for and the facility set of its rows, to name them if it cannot be fitted (default:
        the outcome, and the number of facilities in ``facility_id`` or ``unit_id``).

    Returns
    -------
    SpendingModel

    Raises
    ------
    ParameterError
        A covariate is missing, or the outcome is missing or not positive on a fitted row (filter first).
    ModelError
        The model cannot be fitted: an infinite value, spending above ``ceiling`` on a fitted row (it would
        overflow the fit or dominate it), the same spending in every fitted row, too few rows for the
        covariates, or a numerical failure of the fit itself (overflow, a singular matrix, estimates that are
        not finite). The message names the measure, the facility set, the cause and up to 5 ``stay_id`` s.

    Notes
    -----
    Coefficient standard errors are robust (sandwich, ``HC0``): real spending is not exactly gamma.
    A design column that is constant on the fitted rows (other than the intercept) is left out with a
    :class:`carequal.errors.CarequalWarning` (``SpendingModel.dropped``). The log link is not the gamma's
    canonical link: with an intercept the fit makes the mean of ``y / μ`` equal 1, not ``Σy = Σμ``, so the
    fitted rows' own O/E is close to, but not exactly, 1.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> df = pd.DataFrame({"age10": rng.normal(0, 1, 3000)})
    >>> df["spend"] = rng.gamma(2.0, np.exp(9 + 0.2 * df["age10"]) / 2.0)
    >>> model = expected_spending(df, outcome="spend", covariates=["age10"])
    >>> round(float(model.coefficients.set_index("term").loc["age10", "estimate"]), 1)
    0.2
    >>> round(float((df["spend"] / model.expected).mean()), 6)  # the gamma score equation of the intercept
    1.0
    """
    # loaded on the first fit, and not through statsmodels.api, which loads every model (time series, plots)
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    covariates = tuple(covariates)
    if not covariates:
        raise ParameterError("expected_spending: give at least one covariate")
    _require(frame, (outcome, *covariates), "expected_spending frame")
    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")
    mask = np.ones(len(frame), dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    if mask.shape != (len(frame),):
        raise ParameterError(f"fit_mask has {mask.shape[0] if mask.ndim else 0} values; the frame has "
                             f"{len(frame)} rows")
    ids = frame["stay_id"].to_numpy() if "stay_id" in frame.columns else frame.index.to_numpy()
    n_fit = int(mask.sum())

    def fail(cause: str, detail: str, specifics: str = "", advice: str = "") -> ModelError:
        return ModelError(measure=measure or outcome, facilities=facilities or _facility_count(frame, mask),
                          cause=cause, detail=detail, model="gamma spending model", n=n_fit, cases="episodes",
                          specifics=specifics, advice=advice)

    for col in covariates:
        bad = frame[col].isna().to_numpy()
        if bad.any():
            raise ParameterError(f"expected_spending: covariate {col} is missing in {int(bad.sum())} row(s), e.g. "
                                 f"{_examples(ids[bad])}; fill or drop them first")
        if pd.api.types.is_numeric_dtype(frame[col]):
            bad = mask & np.isinf(frame[col].to_numpy(dtype=float))
            if bad.any():
                raise fail("non-finite values", f"covariate {col} has infinite values",
                           f"{_count(int(bad.sum()), 'episode')}, e.g. stay {_examples(ids[bad])}",
                           f"correct {col} of those episodes")
    y = pd.to_numeric(frame[outcome], errors="coerce").to_numpy(dtype=float)
    bad = mask & ~(y > 0)
    if bad.any():
        raise ParameterError(
            f"expected_spending: {outcome} is missing or not positive in {int(bad.sum())} of the {n_fit} "
            f"rows to fit (a gamma model needs spending > 0), e.g. {_examples(ids[bad])}; leave out excluded "
            "windows and episodes without spending of this kind")
    unusable, cause = unusable_spending(y, ceiling=ceiling)
    bad = mask & unusable
    if bad.any():
        limit = f", over ${ceiling:,.0f} per episode" if ceiling is not None else ""
        raise fail(cause, f"{outcome} has non-finite or extreme values{limit}",
                   f"{_count(int(bad.sum()), 'episode')}, e.g. stay {_examples(ids[bad])}",
                   "correct or remove the payments of those episodes' stays")
    if n_fit <= len(covariates) + 1:
        raise fail("too few cases", "too few episodes for the model's covariates",
                   f"{_count(n_fit, 'episode')} for {_count(len(covariates), 'covariate')}", "fit on more episodes")
    if np.ptp(y[mask]) == 0:
        raise fail("no variation", f"{outcome} is the same in every episode, so it has no spread to model",
                   advice="check the payments, or compare crude means")
    X = patsy.dmatrix(" + ".join(f"Q('{c}')" for c in covariates),
                      _text_as_categories(frame.loc[mask, list(covariates)], covariates),
                      return_type="dataframe", NA_action="raise")
    design_info = X.design_info
    X.columns = [_clean_name(c) for c in X.columns]
    constant = [c for c in X.columns if c != "Intercept" and X[c].nunique() <= 1]
    if constant:
        warnings.warn(f"expected_spending: {', '.join(constant)} constant on the {n_fit} fitted rows; "
                      "left out of the model", CarequalWarning, stacklevel=2)
        X = X.drop(columns=constant)
    result, _ = guarded_fit(lambda: GLM(y[mask], X, family=families.Gamma(families.links.Log())).fit(
        cov_type="HC0"), lambda cause, detail: fail(cause, detail, advice="check the payments and the covariates"))
    with np.errstate(all="ignore"):
        finite = (np.isfinite(np.asarray(result.params, dtype=float)).all()
                  and np.isfinite(np.asarray(result.bse, dtype=float)).all() and np.isfinite(result.scale)
                  and np.isfinite(np.asarray(result.fittedvalues, dtype=float)).all())
    if not finite:
        raise fail("non-convergence", "the fit ended with estimates that are not finite numbers",
                   advice="check the payments and the covariates")
    convergence = glm_convergence(result)
    warn_unless_converged(convergence, f"expected_spending ({outcome})")
    ci = result.conf_int(alpha=1 - level)
    coefficients = pd.DataFrame({
        "term": X.columns, "estimate": result.params.to_numpy(), "se": result.bse.to_numpy(),
        "ratio": np.exp(result.params.to_numpy()), "lower": np.exp(ci[0].to_numpy()),
        "upper": np.exp(ci[1].to_numpy()), "p_value": result.pvalues.to_numpy()})
    model = SpendingModel(expected=pd.Series(dtype=float), coefficients=coefficients, result=result,
                          n_fit=n_fit, dispersion=float(result.scale), outcome=outcome,
                          covariates=covariates, dropped=tuple(constant), design_info=design_info,
                          columns=tuple(X.columns), convergence=convergence)
    model.expected = pd.Series(model.predict(frame), index=frame.index, name=f"expected_{outcome}")
    return model


# ---------------------------------------------------------------------------------------- spending ratios


def spending_ratio(frame: pd.DataFrame, *, by: list[str], observed: str, expected: str, level: float = 0.95,
                   model: SpendingModel | None = None, include_empty: pd.DataFrame | None = None,
                   design: np.ndarray | None = None) -> pd.DataFrame:
    """Observed-to-expected spending ratio per group, with a log-scale delta-method interval.

    Parameters
    ----------
    frame : DataFrame
        One row per episode with the ``by`` columns, observed spending and expected spending.
    by : list of str
        Grouping columns (missing keys form their own group).
    observed, expected : str
        Columns of observed and expected spending (no missing values: filter excluded episodes first).
    level : float
        Confidence level.
    model : SpendingModel, optional
        The model ``expected`` comes from (:func:`expected_spending`); its estimation error is then added to
        the interval. Without it, expected spending is treated as known.
    include_empty : DataFrame, optional
        Groups that must appear (e.g. every partner provider); groups without episodes get ``n = 0``.
    design : array, optional
        ``model.design(frame)``, when the caller has it already (building a design matrix takes longer than
        the ratios of a small frame).

    Returns
    -------
    DataFrame
        The ``by`` columns, ``n``, ``observed`` (Σ observed), ``expected`` (Σ expected), ``ratio``, ``lower``,
        ``upper``, ``level``, ``method``. The interval is missing with fewer than 2 episodes; with
        ``observed = 0`` the lower limit is 0 and the upper missing.

    Notes
    -----
    ``R = Σy / Σμ``, and the interval is ``R exp(∓ z se)`` with ``se`` the standard error of ``log R`` (the log
    scale because a ratio of skewed sums is skewed), by the delta method:

    * observed: ``var(log Σy) ≈ V / (Σy)²`` with ``V = n/(n−1) Σ (y_i − R μ_i)²``, the ratio-estimator
      (linearisation) variance (Cochran 1977, *Sampling Techniques*, §6.3). It assumes no distribution, and a
      group whose spending differs from its expected level is not charged the difference as noise;
    * expected (with ``model``): ``var(log Σμ) ≈ g' Σ_β g`` with ``g = Σ μ_i x_i / Σ μ_i`` (the gradient of
      ``log Σμ`` in β) and ``Σ_β`` the model's robust covariance; added to the first as if the two were
      independent, which holds when the group's episodes were not in the fit (partner episodes against a
      model of non-partner ones) and is conservative when they were.

    Leaving the model's error out is fine only when the model is fitted on far more episodes than the group
    holds: with a fitted group half the size of the reference, the interval's coverage drops to about 0.85.
    Coverage is checked by simulation in the tests (gamma spending, expected from a GLM fitted on other
    episodes).

    Examples
    --------
    >>> df = pd.DataFrame({"g": ["a", "a", "a", "b"], "y": [100.0, 300.0, 200.0, 50.0],
    ...                    "mu": [200.0, 200.0, 200.0, 100.0]})
    >>> spending_ratio(df, by=["g"], observed="y", expected="mu")[["g", "n", "observed", "expected", "ratio"]]
       g  n  observed  expected  ratio
    0  a  3     600.0     600.0    1.0
    1  b  1      50.0     100.0    0.5
    """
    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")
    by = list(by)
    _require(frame, (*by, observed, expected), "spending_ratio frame")
    y = pd.to_numeric(frame[observed], errors="coerce").to_numpy(dtype=float)
    mu = pd.to_numeric(frame[expected], errors="coerce").to_numpy(dtype=float)
    ids = frame["stay_id"].to_numpy() if "stay_id" in frame.columns else frame.index.to_numpy()
    for name, values in ((observed, y), (expected, mu)):
        bad = np.isnan(values)
        if bad.any():
            raise ParameterError(f"spending_ratio: {name} is missing in {int(bad.sum())} row(s), e.g. "
                                 f"{_examples(ids[bad])}; leave out excluded episodes (exclusion_reason) first")
    if (mu <= 0).any():
        raise ParameterError(f"spending_ratio: {expected} is not positive in {int((mu <= 0).sum())} row(s), e.g. "
                             f"{_examples(ids[mu <= 0])}")
    if by:
        grouped = frame.groupby(by, dropna=False, observed=True, sort=True)
        group = grouped.ngroup().to_numpy()
        keys = grouped.size().reset_index()[by]
    else:
        group = np.zeros(len(frame), dtype=np.int64)
        keys = pd.DataFrame(index=range(1 if len(frame) else 0))
    k = len(keys)
    n = np.bincount(group, minlength=k)
    o = np.bincount(group, weights=y, minlength=k)
    e = np.bincount(group, weights=mu, minlength=k)
    ratio = o / np.where(e > 0, e, np.nan)
    resid = y - ratio[group] * mu
    with np.errstate(divide="ignore", invalid="ignore"):
        var_log = np.bincount(group, weights=resid**2, minlength=k) * n / (n - 1) / o**2
    method = RATIO_METHOD
    if model is not None:
        X = model.design(frame) if design is None else np.asarray(design, dtype=float)
        if not np.allclose(np.exp(X @ np.asarray(model.result.params, dtype=float)), mu, rtol=1e-6):
            raise ParameterError(f"spending_ratio: {expected} is not the prediction of the model given; pass the "
                                 "model's own expected values (SpendingModel.expected or .predict)")
        gradient = np.column_stack([np.bincount(group, weights=mu * X[:, j], minlength=k) for j in range(X.shape[1])])
        gradient /= e[:, None]
        cov = np.asarray(model.result.cov_params(), dtype=float)
        var_log = var_log + np.einsum("gp,pq,gq->g", gradient, cov, gradient)
        method = RATIO_METHOD_MODEL
    se_log = np.sqrt(var_log)
    z = special.ndtri(1 - (1 - level) / 2)
    ok = n >= 2
    with np.errstate(invalid="ignore", over="ignore"):
        lower = np.where(ok, np.where(o > 0, ratio * np.exp(-z * se_log), 0.0), np.nan)
        upper = np.where(ok & (o > 0), ratio * np.exp(z * se_log), np.nan)
    out = keys.assign(n=n, observed=o, expected=e, ratio=ratio, lower=lower, upper=upper)
    if include_empty is not None and by:
        grid = include_empty[by].drop_duplicates()
        for col in by:
            if out[col].dtype != grid[col].dtype:
                out[col], grid[col] = out[col].astype(object), grid[col].astype(object)
        out = grid.merge(out, on=by, how="outer")
        out["n"] = out["n"].fillna(0).astype("int64")
        out[["observed", "expected"]] = out[["observed", "expected"]].fillna(0.0)
        out = out.sort_values(by, kind="stable", ignore_index=True)
    out["level"] = level
    out["method"] = method
    return out


def provider_spending_ratios(frame: pd.DataFrame, *, observed: str, expected: str, hospital: str = "facility_id",
                             pac_facility: str = "pac_facility_id", pac_setting: str = "pac_setting",
                             partner: str = "pac_is_partner", level: float = 0.95,
                             model: SpendingModel | None = None) -> pd.DataFrame:
    """Spending ratios by hospital, by post-acute provider and by partner status, in one long table.

    Parameters
    ----------
    frame : DataFrame
        Episodes with observed and expected spending (e.g. :func:`episode_spending` plus
        ``SpendingModel.expected``), without excluded windows.
    observed, expected : str
        Spending columns.
    hospital, pac_facility, pac_setting, partner : str
        The index stay's hospital, the post-acute provider the episode went to, its setting (``"none"`` without
        post-acute care) and whether it was a partner on the post-acute admission date.
    level, model
        As in :func:`spending_ratio`.

    Returns
    -------
    DataFrame
        ``unit_type`` (``"hospital"``, ``"post_acute_provider"``, ``"partner_status"``), ``unit`` (facility id,
        or ``"partner"``, ``"non-partner"``, ``"no post-acute care"``), ``setting`` (the provider's setting;
        ``"acute"`` for hospitals, missing for partner status), then the columns of :func:`spending_ratio`.
        Episodes without post-acute care have no post-acute provider row.

    Examples
    --------
    >>> df = pd.DataFrame({"facility_id": ["H1", "H1", "H2"], "pac_facility_id": ["S1", None, "S1"],
    ...     "pac_setting": ["snf", "none", "snf"], "pac_is_partner": [True, False, True],
    ...     "y": [10.0, 5.0, 30.0], "mu": [20.0, 5.0, 20.0]})
    >>> provider_spending_ratios(df, observed="y", expected="mu")[["unit_type", "unit", "n", "ratio"]]
                 unit_type                unit  n  ratio
    0             hospital                  H1  2    0.6
    1             hospital                  H2  1    1.5
    2  post_acute_provider                  S1  2    1.0
    3       partner_status  no post-acute care  1    1.0
    4       partner_status             partner  2    1.0
    """
    _require(frame, (hospital, pac_facility, pac_setting, partner, observed, expected),
             "provider_spending_ratios frame")
    hosp = spending_ratio(frame, by=[hospital], observed=observed, expected=expected, level=level, model=model)
    hosp = hosp.rename(columns={hospital: "unit"}).assign(unit_type="hospital", setting="acute")
    has_pac = (frame[pac_setting].fillna("none") != "none").to_numpy()
    prov = spending_ratio(frame[has_pac], by=[pac_facility, pac_setting], observed=observed, expected=expected,
                          level=level, model=model)
    prov = prov.rename(columns={pac_facility: "unit", pac_setting: "setting"}).assign(unit_type="post_acute_provider")
    status = np.where(~has_pac, "no post-acute care",
                      np.where(frame[partner].fillna(False).astype(bool).to_numpy(), "partner", "non-partner"))
    part = spending_ratio(frame.assign(_status=status), by=["_status"], observed=observed, expected=expected,
                          level=level, model=model)
    part = part.rename(columns={"_status": "unit"}).assign(unit_type="partner_status", setting=None)
    columns = ["unit_type", "unit", "setting", "n", "observed", "expected", "ratio", "lower", "upper", "level",
               "method"]
    return pd.concat([hosp[columns], prov[columns], part[columns]], ignore_index=True)


# ------------------------------------------------------------------------------------------ network leakage


def network_leakage(episodes: pd.DataFrame, *, by: list[str] | tuple[str, ...] = ("hospital_id",),
                    date: str = "hospital_discharge_date", pac_setting: str = "pac_setting",
                    partner: str = "pac_is_partner", freq: str = "month", level: float = 0.95,
                    chart: bool = True) -> pd.DataFrame:
    """Share of discharges to post-acute care that went to providers outside the partnership, by period.

    Parameters
    ----------
    episodes : DataFrame
        One row per hospital discharge with its first post-acute stay: :func:`carequal.cohorts.post_acute_episodes`
        output (the defaults), or :func:`carequal.measures.index_measures` output with ``by=["facility_id"]``
        and ``date="discharge_date"``.
    by : list of str
        Grouping columns (the hospital); empty for the whole network.
    date : str
        Discharge date column (the period a discharge falls in).
    pac_setting, partner : str
        Post-acute setting (``"none"`` without post-acute care) and whether the provider was a partner on the
        post-acute admission date (``post_acute_episodes``: ``is_partner`` and ``partner_since`` missing or
        on/before the admission).
    freq : {"month", "quarter"}
    level : float
        Level of the Wilson intervals.
    chart : bool
        Add a p-chart per group (:func:`carequal.compare.p_chart`, improvement = lower leakage).

    Returns
    -------
    DataFrame
        One row per group and period from the first to the last period of any discharge given (periods and
        groups without discharges to post-acute care are kept with ``n = 0``): the ``by`` columns, ``period``
        (first day), ``n`` (discharges to post-acute care), ``events`` (of them, to a non-partner provider),
        ``rate`` (the leakage), Wilson ``lower``/``upper``, ``level``, ``method``; with ``chart``, the p-chart
        columns (``centre``, ``sigma``, ``lower_3sigma``, ``upper_3sigma``, …, ``signal``, ``chart``), missing
        for a group with no discharge to post-acute care at all.

    Examples
    --------
    >>> ep = pd.DataFrame({"hospital_id": "H", "hospital_discharge_date": pd.to_datetime(
    ...     ["2024-01-03", "2024-01-20", "2024-01-25", "2024-03-02"]),
    ...     "pac_setting": ["snf", "hha", "none", "snf"], "pac_is_partner": [True, False, False, False]})
    >>> network_leakage(ep, chart=False)[["period", "n", "events", "rate"]]
          period  n  events  rate
    0 2024-01-01  2       1   0.5
    1 2024-02-01  0       0   NaN
    2 2024-03-01  1       1   1.0
    """
    by = list(by)
    _require(episodes, (*by, date, pac_setting, partner), "network_leakage episodes")
    if freq not in ("month", "quarter"):
        raise ParameterError(f"freq must be 'month' or 'quarter', not {freq!r}")
    code = {"month": "M", "quarter": "Q"}[freq]
    dates = pd.to_datetime(episodes[date])
    if dates.isna().any():
        raise ParameterError(f"network_leakage: {date} is missing in {int(dates.isna().sum())} row(s)")
    period = dates.dt.to_period(code).dt.start_time
    data = episodes[by].assign(period=period.to_numpy())
    to_pac = (episodes[pac_setting].fillna("none") != "none").to_numpy()
    data["leaked"] = to_pac & ~episodes[partner].fillna(False).astype(bool).to_numpy()
    grid = pd.DataFrame({"period": pd.period_range(period.min(), period.max(), freq=code).start_time}) \
        if len(data) else pd.DataFrame({"period": pd.to_datetime([])})
    if by:
        grid = data[by].drop_duplicates().merge(grid, how="cross")
    out = rate_table(data[to_pac], by=by + ["period"], events="leaked", level=level, include_empty=grid)
    if not chart or out.empty:
        return out
    pieces = []
    for _, group in (out.groupby(by, dropna=False, sort=False) if by else [((), out)]):
        if group["n"].sum() > 0:
            pieces.append(p_chart(group, improvement="lower"))
        else:
            pieces.append(group)
    charted = pd.concat(pieces, ignore_index=True)
    return charted.sort_values(by + ["period"], kind="stable", ignore_index=True)
