"""Risk adjustment: comorbidity indices from ICD-10-CM diagnoses.

Charlson (Quan 2005 ICD-10 algorithm; Charlson 1987 or Quan 2011 weights) and Elixhauser (Quan 2005 ICD-10;
van Walraven 2009 weights), with their hierarchies, built from the published definitions shipped in
``carequal/data/comorbidity/`` (see its README for the sources).

Why hand-written: the maps are data, and matching is a prefix look-up; ``pycomorb`` (MIT) computes the same
scores on polars frames, patient by patient, but not per stay with present-on-admission filtering and a
look-back over prior stays, which risk models for readmission need. It is used in the tests as an
independent check.

Size: about 800 lines, one module because the comorbidity flags, the risk covariates built from them
(:data:`RISK_COVARIATES`) and the logistic and hierarchical models with their diagnostics change together (a new
covariate reaches every model). The comorbidity maps could stand alone as a module; that split is left to the
hierarchical model's rework (issue 18), which edits this file.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import patsy
from scipy import special
from threadpoolctl import ThreadpoolController

from carequal.convergence import GRADIENT_TOL, glm_convergence, guarded_fit, minimise, warn_unless_converged
from carequal.errors import ModelError, ParameterError, describe_facilities
from carequal.schema import diagnoses_long, few_key_positions, take_text

__all__ = ["HIERARCHIES", "HierarchicalLogit", "LogisticRiskModel", "PRESENT_ON_ADMISSION", "RISK_CONDITIONS",
           "RISK_COVARIATES", "SCHEMES", "WEIGHTS", "apply_hierarchy", "brier_score", "c_statistic",
           "calibration_table", "code_flags", "comorbidities", "comorbidity_map", "hosmer_lemeshow", "risk_covariates"]

SCHEMES: dict[str, str] = {"charlson": "charlson_quan2005_icd10.csv", "elixhauser": "elixhauser_quan2005_icd10.csv"}
WEIGHTS: dict[str, dict[str, str]] = {
    "charlson": {"quan2011": "weight_quan2011", "charlson1987": "weight_charlson1987"},
    "elixhauser": {"van_walraven": "weight_van_walraven"},
}
HIERARCHIES: dict[str, tuple[tuple[str, str], ...]] = {
    "charlson": (("msld", "mld"), ("diabwc", "diab"), ("metacanc", "canc")),
    "elixhauser": (("hypc", "hypunc"), ("diabc", "diabunc"), ("metacanc", "solidtum")),
}
"""(severe, mild) pairs: when the severe form is present the mild one is set to 0."""

PRESENT_ON_ADMISSION = ("Y", "W", "1")
"""POA flags that count as present on admission: Y yes, W clinically undetermined, 1 exempt from reporting."""


@cache
def comorbidity_map(scheme: str) -> pd.DataFrame:
    """The category table of a scheme: ``key``, ``category``, ``prefixes`` (``|``-separated), weights.

    Examples
    --------
    >>> len(comorbidity_map("charlson")), len(comorbidity_map("elixhauser"))
    (17, 31)
    """
    if scheme not in SCHEMES:
        raise ParameterError(f"unknown comorbidity scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    path = resources.files("carequal") / "data" / "comorbidity" / SCHEMES[scheme]
    with path.open(encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype={"key": str, "category": str, "prefixes": str})


def code_flags(codes: pd.Series, *, scheme: str = "charlson") -> pd.DataFrame:
    """Which categories each ICD-10 code falls in (no hierarchy): one boolean column per category.

    Codes may have dots and any case. A code falls in a category when it starts with one of its prefixes.

    Examples
    --------
    >>> code_flags(pd.Series(["I50.9", "k70.0", "E11.9"]), scheme="elixhauser")[["chf", "ld", "alcohol", "diabunc"]]
         chf     ld  alcohol  diabunc
    0   True  False    False    False
    1  False   True     True    False
    2  False  False    False     True
    """
    table = comorbidity_map(scheme)
    clean = codes.astype("string").str.upper().str.replace(r"[.\s]", "", regex=True).fillna("")
    uniques = pd.Series(clean.unique())
    out = {}
    for row in table.itertuples(index=False):
        prefixes = row.prefixes.split("|")
        hit = np.zeros(len(uniques), dtype=bool)
        for length in sorted({len(p) for p in prefixes}):
            wanted = {p for p in prefixes if len(p) == length}
            hit |= uniques.str.slice(0, length).isin(wanted).to_numpy(dtype=bool)
        out[row.key] = hit
    by_code = pd.DataFrame(out, index=uniques.to_numpy())
    return by_code.reindex(clean.to_numpy()).reset_index(drop=True).set_axis(codes.index)


def apply_hierarchy(flags: pd.DataFrame, *, scheme: str) -> pd.DataFrame:
    """Set the milder form to False where the severe form is present (a new frame).

    Examples
    --------
    >>> f = pd.DataFrame({"msld": [True, False], "mld": [True, True], "diabwc": [False, False],
    ...                   "diab": [True, False], "metacanc": [False, False], "canc": [False, True]})
    >>> apply_hierarchy(f, scheme="charlson")["mld"].tolist()
    [False, True]
    """
    out = flags.copy()
    for severe, mild in HIERARCHIES[scheme]:
        out[mild] = out[mild] & ~out[severe]
    return out


def comorbidities(stays: pd.DataFrame, *, scheme: str = "charlson", weights: str | None = None,
                  include_principal: bool = False, poa_only: bool = False, index: pd.DataFrame | None = None,
                  lookback_days: int | None = None) -> pd.DataFrame:
    """Comorbidity flags and weighted score per stay.

    Parameters
    ----------
    stays : DataFrame
        Contract stays (``stay_id``, ``principal_dx``, ``secondary_dx``, optional ``secondary_poa``,
        ``patient_id``, ``admit_date``, ``discharge_date``).
    scheme : {"charlson", "elixhauser"}
    weights : str, optional
        Charlson: ``"quan2011"`` (default) or ``"charlson1987"``; Elixhauser: ``"van_walraven"`` (default).
    include_principal : bool
        Count the principal diagnosis of the stay itself (default False: the principal diagnosis is the
        reason for admission, not a comorbidity; it is risk-adjusted through the condition).
    poa_only : bool
        Count only the stay's secondary diagnoses flagged present on admission (Y, W or 1); diagnoses with no
        flag count (the data cannot tell), diagnoses flagged N or U do not — complications arising in
        hospital are not risk-adjusted (CMS).
    index : DataFrame, optional
        The stays to score (by ``stay_id``); default every stay in ``stays``.
    lookback_days : int, optional
        Also count every diagnosis (any position, any POA flag) of the patient's other stays in any setting
        discharged in the ``lookback_days`` days before the scored stay's admission (CMS uses 12 months of
        history).

    Returns
    -------
    DataFrame
        ``stay_id``, one boolean column per category (after the hierarchy), ``score``.

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["a"], "principal_dx": ["I50.9"], "secondary_dx": ["E11.22;N18.4;K70.30"],
    ...                    "secondary_poa": ["Y;Y;N"]})
    >>> c = comorbidities(st)  # diabetes with complications 1, renal 1, mild liver 2 (Quan 2011)
    >>> c[["diabwc", "rend", "mld", "chf", "score"]]
       diabwc  rend   mld    chf  score
    0    True  True  True  False      4
    >>> int(comorbidities(st, poa_only=True)["score"].iloc[0])  # K70.30 not present on admission
    2
    """
    table = comorbidity_map(scheme)
    weight_col = _weight_column(scheme, weights)
    targets = stays if index is None else stays[stays["stay_id"].isin(index["stay_id"])]
    dx = diagnoses_long(targets)
    if not include_principal:
        dx = dx[dx["position"] > 0]
    if poa_only:
        poa = dx["poa"]
        dx = dx[poa.isna() | poa.isin(PRESENT_ON_ADMISSION) | (dx["position"] == 0)]
    pairs = dx[["stay_id", "code"]]
    if lookback_days is not None:
        pairs = pd.concat([pairs, _history(stays, targets, lookback_days)], ignore_index=True)
    flags = code_flags(pairs["code"], scheme=scheme)
    per_stay = flags.groupby(pairs["stay_id"].to_numpy()).any()
    per_stay = per_stay.reindex(targets["stay_id"].to_numpy(), fill_value=False)
    per_stay = apply_hierarchy(per_stay, scheme=scheme)
    score = per_stay[table["key"].tolist()].to_numpy(dtype=int) @ table[weight_col].to_numpy(dtype=int)
    out = per_stay.reset_index(drop=True)
    out.insert(0, "stay_id", targets["stay_id"].to_numpy())
    out["score"] = score
    return out


def _weight_column(scheme: str, weights: str | None) -> str:
    options = WEIGHTS.get(scheme)
    if options is None:
        raise ParameterError(f"unknown comorbidity scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    name = weights or next(iter(options))
    if name not in options:
        raise ParameterError(f"unknown weights {name!r} for {scheme}; choose from {', '.join(options)}")
    return options[name]


def _history(stays: pd.DataFrame, targets: pd.DataFrame, lookback_days: int) -> pd.DataFrame:
    """(stay_id of the scored stay, code) for every diagnosis of the patient's earlier stays in the window."""
    prior = diagnoses_long(stays)[["stay_id", "code"]].rename(columns={"stay_id": "prior_id"})
    meta = stays[["stay_id", "patient_id", "discharge_date"]].rename(
        columns={"stay_id": "prior_id", "discharge_date": "prior_discharge"})
    prior = prior.merge(meta, on="prior_id")
    scored = targets[["stay_id", "patient_id", "admit_date"]]
    pairs = scored.merge(prior, on="patient_id")
    gap = (pairs["admit_date"] - pairs["prior_discharge"]).dt.days
    keep = (pairs["prior_id"] != pairs["stay_id"]) & (gap >= 0) & (gap <= lookback_days)
    return pairs.loc[keep, ["stay_id", "code"]]


# ------------------------------------------------------------------------------------ logistic risk model


def _design(frame: pd.DataFrame, covariates: list[str] | None, formula: str | None, fail=None):
    _check_covariates(frame, covariates, formula, fail)
    rhs = formula if formula is not None else " + ".join(covariates)
    try:
        design = patsy.dmatrix(rhs, frame, return_type="dataframe", NA_action="raise")
    except patsy.PatsyError as exc:
        if fail is None or "missing values" not in str(exc):
            raise
        raise fail("non-finite values", "a covariate of the formula has missing values",
                   advice="fill or drop those rows") from None
    if fail is not None:
        bad = ~np.isfinite(design.to_numpy(dtype=float)).all(axis=1)
        if bad.any():
            raise fail("non-finite values", "a covariate of the formula has infinite values",
                       f"{_plural(int(bad.sum()), 'row')}{_example_keys(frame, bad)}", "fill or drop those rows")
    return design


def _check_covariates(frame: pd.DataFrame, covariates: list[str] | None, formula: str | None, fail) -> None:
    if (covariates is None) == (formula is None):
        raise ParameterError("give either covariates (a list of columns) or formula (a patsy right-hand side)")
    if fail is not None:
        for col in covariates or []:
            if col in frame.columns and pd.api.types.is_numeric_dtype(frame[col]):
                values = frame[col].to_numpy(dtype=float)
                bad = ~np.isfinite(values)
            elif col in frame.columns:
                bad = frame[col].isna().to_numpy()
            else:
                continue
            if bad.any():
                raise fail("non-finite values", f"covariate {col} has missing or infinite values",
                           f"{_plural(int(bad.sum()), 'row')}{_example_keys(frame, bad)}",
                           f"fill or drop those rows, or leave {col} out")


def _plain_numeric(frame: pd.DataFrame, covariates: list[str] | None) -> bool:
    """Whether the design of ``covariates`` is the intercept followed by the columns as they are: what patsy builds
    for distinct numeric (not boolean) columns named by plain identifiers. Such a design is built without patsy
    (:func:`_numeric_design`), whose formula handling alone takes tens of milliseconds."""
    if covariates is None or len(set(covariates)) != len(covariates) or not frame.columns.is_unique:
        return False
    for col in covariates:
        if (not isinstance(col, str) or not col.isidentifier() or keyword.iskeyword(col) or col == "Intercept"
                or col not in frame.columns):
            return False
        dtype = frame[col].dtype
        if not isinstance(dtype, np.dtype) or dtype.kind not in "iuf":
            return False
    return True


def _numeric_design(frame: pd.DataFrame, covariates: list[str], order: np.ndarray | None = None) -> np.ndarray:
    """``[1, covariates]`` as an n × p float array in Fortran order (one contiguous column per term), the values
    patsy gives for :func:`_plain_numeric` covariates; with ``order``, of the rows in that order."""
    XT = np.empty((len(covariates) + 1, len(frame) if order is None else len(order)))
    XT[0] = 1.0
    for j, col in enumerate(covariates, start=1):
        values = frame[col].to_numpy()
        XT[j] = values if order is None else values[order]
    return XT.T


def _facility_order(codes: np.ndarray) -> np.ndarray:
    """The rows sorted by facility code, stably (a radix sort when the codes fit 16 bits: linear in the rows)."""
    small = codes.astype(np.int16) if len(codes) and codes.max() < 2**15 else codes
    return np.argsort(small, kind="stable")


def _plural(n: int, noun: str) -> str:
    return f"{n:,d} {noun}{'' if n == 1 else 's'}"


def _example_keys(frame: pd.DataFrame, bad: np.ndarray, k: int = 5) -> str:
    """``", e.g. stay_id S1, S2"`` (at most ``k`` keys), or ``""`` when the frame has no ``stay_id``."""
    if "stay_id" not in frame.columns:
        return ""
    return ", e.g. stay_id " + ", ".join(map(str, frame["stay_id"].to_numpy()[np.asarray(bad, dtype=bool)][:k]))


def _check_outcome(y: np.ndarray, frame: pd.DataFrame, outcome: str, fail, cases: str = "cases") -> None:
    """A binary outcome a logistic model can be fitted to: finite, 0/1, with both values present."""
    bad = ~np.isfinite(y)
    if bad.any():
        raise fail("non-finite values", f"the outcome {outcome} has missing or infinite values",
                   f"{_plural(int(bad.sum()), 'row')}{_example_keys(frame, bad)}", "fill or drop those rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ParameterError(f"{outcome}: a logistic model needs a 0/1 outcome; it has other values, e.g. "
                             + ", ".join(map(str, pd.unique(y[~np.isin(y, (0.0, 1.0))])[:5])))
    if len(y) == 0:
        raise fail("too few cases", "there are no cases to fit", advice="choose a longer period")
    if y.min() == y.max():
        what = "no events" if y.max() == 0 else "only events (every one had the outcome)"
        raise fail("no variation", f"the {cases} have {what}, so there is no risk to model",
                   advice="choose a longer period or a larger set of facilities")


def _separating_column(X: np.ndarray, y: np.ndarray, columns: list[str]) -> str | None:
    """The first design column that on its own separates events from non-events (every event above every
    non-event, or below): the likelihood then has no maximum. A level with no events (quasi-complete separation)
    is not reported: the other coefficients are still estimated and that level's expected risk goes to 0."""
    events = y == 1
    XT = X.T if X.flags.f_contiguous else np.ascontiguousarray(X.T)  # contiguous rows of terms
    with_event, without = XT[:, events], XT[:, ~events]  # both non-empty: the outcome was checked first
    lo1, hi1, lo0, hi0 = with_event.min(axis=1), with_event.max(axis=1), without.min(axis=1), without.max(axis=1)
    varies = np.minimum(lo1, lo0) < np.maximum(hi1, hi0)
    for j, name in enumerate(columns):
        if name != "Intercept" and varies[j] and (hi0[j] < lo1[j] or hi1[j] < lo0[j]):
            return name
    return None


def _check_separation(X: np.ndarray, y: np.ndarray, columns: list[str], fail) -> None:
    name = _separating_column(X, y, columns)
    if name is not None:
        raise fail("separation", f"covariate {name} separates the cases with the outcome from those without "
                   "(complete separation: the model has no finite estimate)",
                   advice=f"leave {name} out, or fit on more cases")
    if X.shape[0] <= X.shape[1]:
        raise fail("too few cases", "there are no more cases than model terms",
                   f"{_plural(X.shape[0], 'case')} for {_plural(X.shape[1], 'term')}", "fit on more cases")


def _failure(model: str, measure: str | None, facilities: str, n: int, cases: str | None = None):
    """A builder of :class:`ModelError` for one fit: ``fail(cause, detail, specifics="", advice="")``."""

    def fail(cause: str, detail: str, specifics: str = "", advice: str = "") -> ModelError:
        return ModelError(measure=measure or "outcome", facilities=facilities, cause=cause, detail=detail,
                          model=model, n=n, cases=cases or "cases", specifics=specifics, advice=advice)

    return fail


class LogisticRiskModel:
    """A logistic risk model (statsmodels GLM, binomial) with the diagnostics risk adjustment needs.

    Parameters
    ----------
    covariates : list of str, optional
        Columns used as they are (numeric or boolean; categorical columns are dummy-coded).
    formula : str, optional
        A patsy right-hand side instead, e.g. ``"age + C(condition) + score"``.

    Attributes
    ----------
    result_ : statsmodels GLMResults
    convergence_ : Convergence
        The fit judged by its score and last deviance change (:mod:`carequal.convergence`), not statsmodels' flag.
    odds_ratios_ : DataFrame
        ``term``, ``odds_ratio``, ``lower``, ``upper``, ``p_value``.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame({"age": rng.normal(75, 8, 4000)})
    >>> df["readmitted_30d"] = rng.random(4000) < 1 / (1 + np.exp(-(-2 + 0.05 * (df["age"] - 75))))
    >>> model = LogisticRiskModel(covariates=["age"]).fit(df, outcome="readmitted_30d")
    >>> round(float(model.result_.params["age"]), 2)
    0.05
    """

    def __init__(self, covariates: list[str] | None = None, *, formula: str | None = None):
        self.covariates = covariates
        self.formula = formula

    def fit(self, frame: pd.DataFrame, *, outcome: str, measure: str | None = None,
            facilities: str | None = None) -> LogisticRiskModel:
        """Fit the model to ``frame`` (one row per case) with 0/1 column ``outcome``.

        ``measure`` and ``facilities`` name what the model is for and its facility set if it cannot be fitted:
        a :class:`carequal.errors.ModelError` (missing or infinite covariates or outcome, an outcome with no
        events or only events, a covariate that completely separates the outcome, no more cases than terms, or a
        numerical failure of the fit).
        """
        # loaded on the first fit, and not through statsmodels.api, which loads every model (time series, plots):
        # 0.3 s more for each process that fits one (a packet batch's, on its critical path)
        from statsmodels.genmod import families
        from statsmodels.genmod.generalized_linear_model import GLM
        from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

        unit = next((c for c in ("facility_id", "unit_id") if c in frame.columns), None)
        where = facilities or (describe_facilities(int(frame[unit].nunique()), scope="") if unit
                               else "the facilities of the cases given")
        fail = _failure("logistic risk model", measure or outcome, where, len(frame))
        X = _design(frame, self.covariates, self.formula, fail)
        y = frame[outcome].astype(float).to_numpy()
        _check_outcome(y, frame, outcome, fail)
        _check_separation(X.to_numpy(dtype=float), y, list(X.columns), fail)
        self.design_info_ = X.design_info
        separated = ("separation", "the covariates together separate the cases with the outcome from those without "
                     "(complete separation: the model has no finite estimate)")
        self.result_, _ = guarded_fit(lambda: GLM(y, X, family=families.Binomial()).fit(), fail,
                                      fatal={PerfectSeparationWarning: separated})
        if not np.isfinite(np.asarray(self.result_.params, dtype=float)).all():
            raise fail("non-convergence", "the fit ended with estimates that are not finite numbers")
        self.convergence_ = glm_convergence(self.result_)
        warn_unless_converged(self.convergence_, "LogisticRiskModel")
        ci = self.result_.conf_int()
        with np.errstate(over="ignore"):  # a covariate with (almost) no events has an infinite upper limit
            self.odds_ratios_ = pd.DataFrame({
                "term": X.columns, "odds_ratio": np.exp(self.result_.params.to_numpy()),
                "lower": np.exp(ci[0].to_numpy()), "upper": np.exp(ci[1].to_numpy()),
                "p_value": self.result_.pvalues.to_numpy(),
            })
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted probabilities (the expected outcome of each row under the model)."""
        X = patsy.build_design_matrices([self.design_info_], frame, return_type="dataframe")[0]
        return np.asarray(self.result_.predict(X))


def _design_like(design_info, frame: pd.DataFrame) -> pd.DataFrame:
    return patsy.build_design_matrices([design_info], frame, return_type="dataframe")[0]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (``scipy.stats.rankdata``'s default, without importing
    scipy.stats: see :mod:`carequal.intervals`)."""
    return pd.Series(values).rank(method="average").to_numpy()


def c_statistic(y, p, *, level: float = 0.95) -> dict:
    """Area under the ROC curve with a DeLong confidence interval.

    Examples
    --------
    >>> c_statistic([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["c"]
    0.75
    """
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    pos, neg = p[y], p[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ParameterError("the c-statistic needs both outcomes present")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    auc = (ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    # DeLong: structural components from within-group ranks
    v10 = (ranks[:m] - _average_ranks(pos)) / n
    v01 = 1 - (ranks[m:] - _average_ranks(neg)) / m
    se = np.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n) if m > 1 and n > 1 else np.nan
    z = special.ndtri(1 - (1 - level) / 2)
    return {"c": float(auc), "lower": float(max(0.0, auc - z * se)), "upper": float(min(1.0, auc + z * se)),
            "level": level, "method": "DeLong"}


def brier_score(y, p) -> float:
    """Mean squared difference between outcome and predicted probability.

    Examples
    --------
    >>> brier_score([0, 1], [0.2, 0.6])
    0.1
    """
    y = np.asarray(y, dtype=float)
    return float(np.round(np.mean((np.asarray(p, dtype=float) - y) ** 2), 12))


def calibration_table(y, p, *, groups: int = 10) -> pd.DataFrame:
    """Observed and expected events by decile of predicted risk (for calibration plots and the
    Hosmer–Lemeshow test): ``decile``, ``n``, ``observed``, ``expected``, ``observed_rate``,
    ``expected_rate``.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    decile = np.empty(len(p), dtype=int)
    decile[order] = np.arange(len(p)) * groups // len(p)
    frame = pd.DataFrame({"decile": decile + 1, "y": y, "p": p})
    out = frame.groupby("decile").agg(n=("y", "size"), observed=("y", "sum"), expected=("p", "sum")).reset_index()
    out["observed_rate"] = out["observed"] / out["n"]
    out["expected_rate"] = out["expected"] / out["n"]
    return out


def hosmer_lemeshow(y, p, *, groups: int = 10) -> dict:
    """Hosmer–Lemeshow goodness-of-fit statistic over deciles of risk (chi-square, groups − 2 df)."""
    table = calibration_table(y, p, groups=groups)
    o, e, n = table["observed"], table["expected"], table["n"]
    stat = float((((o - e) ** 2) / (e * (1 - e / n))).sum())
    df = len(table) - 2
    return {"statistic": stat, "df": df, "p_value": float(special.chdtrc(df, stat))}


# --------------------------------------------------------------------- hierarchical (random-intercept) logit


def _expit(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-x))``: scipy's ``expit`` (exact to rounding, and two to four times
    as fast as the ``tanh`` form on 100k values here)."""
    from scipy.special import expit

    return expit(x) if out is None else expit(x, out=out)


_BLAS = None


def _one_blas_thread():
    """A context that limits BLAS to one thread. The model's passes are products of a long, thin design with a
    vector, where BLAS threads cost more than they give (measured with the earlier implementation: 100k stays,
    1.8 s with 2 OpenBLAS threads, 0.4 s with 1). One threadpoolctl controller, made once: ``threadpool_limits``
    looks the libraries up anew on every call (about 5 ms). It is made after scipy's optimiser is loaded, so that
    it limits scipy's own OpenBLAS too: L-BFGS-B's small BLAS calls, left with two threads, wait for a busy second
    core (5 ms a call measured on a loaded machine, against 0.3 ms)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _sum_log_half_to_one(values: np.ndarray, block: int = 512) -> float:
    """``Σ log(v)`` for values in [0.5, 1], as the logarithms of products of blocks of 512 (each at least 2^-512:
    no underflow; rounding errors of the size of those of summed logarithms) — a multiplication per value instead of
    a logarithm, the dearest operation of the likelihood after the logistic function."""
    return float(np.log(np.multiply.reduceat(values, np.arange(0, len(values), block))).sum()) if len(values) else 0.0


@dataclass(eq=False)
class _Laplace:
    """The Laplace objective at one point ``theta = (β, log σ)``: per stay (rows sorted by facility) the linear
    predictor ``eta = Xβ`` and, at the conditional modes, ``p``, ``w = p(1 − p)``, ``w1 = w(1 − 2p)``; per facility
    the modes ``u``, ``S0 = Σ w``, ``S1 = Σ w1`` and ``H = S0 + 1/σ²``; the objective, its gradient and the modes'
    last Newton step. Kept for the next evaluation's start, the exact Hessian and the facility effects."""

    theta: np.ndarray
    s2: float
    eta: np.ndarray
    u: np.ndarray
    p: np.ndarray
    w: np.ndarray
    w1: np.ndarray
    S0: np.ndarray
    S1: np.ndarray
    H: np.ndarray
    step: float
    value: float
    grad: np.ndarray


class HierarchicalLogit:
    """Random-intercept logistic regression fitted by maximum likelihood with the Laplace approximation
    (the model and criterion of ``lme4::glmer(y ~ x + (1 | facility), family = binomial, nAGQ = 1)``).

    ``logit P(y_ij = 1) = x_ij' β + u_j``, ``u_j ~ N(0, σ²)``; the intercept in β is the average facility's
    (CMS's "average effect") and ``β_0 + u_j`` the facility's own ("hospital effect").

    Why hand-written: statsmodels' ``BinomialBayesMixedGLM`` is variational Bayes (a different estimator) and,
    like ``glmer``, takes over a minute on 100,000 stays in 200 facilities. With one random intercept the
    Laplace likelihood separates by facility: the conditional modes ``û_j`` are 1-D Newton problems solved for
    all facilities at once (each evaluation starts them one linearised Newton step from the last evaluation's),
    and the implicit derivatives of ``û_j`` give the Laplace log-likelihood's exact gradient (one product
    ``X' r`` with a per-stay residual ``r``) and its exact Hessian in ``(β, log σ)``. The fit starts from the
    logistic regression without facility effects and a moment estimate of σ, takes the Hessian there once, and
    runs L-BFGS (:func:`carequal.convergence.minimise`) in the variables that Hessian whitens, scaled so that
    the optimiser's first step is the Newton step: it converges in a handful of passes over the data.

    Attributes (after ``fit``)
    --------------------------
    params_ : Series
        Fixed effects β (by design-matrix column).
    bse_ : Series
        Their standard errors, from the exact Hessian of the Laplace log-likelihood in ``(β, log σ)`` (as
        glmer's ``vcov``, which differentiates the same deviance numerically). Computed when first read, not
        by ``fit``: P/E does not need them.
    sigma_ : float
        Standard deviation of the facility intercepts.
    effects_ : DataFrame
        ``group``, ``n``, ``effect`` (conditional mode ``û_j``), ``effect_se`` (``1/sqrt(H_j)``).
    loglik_ : float
        Laplace-approximated log-likelihood (``-deviance / 2`` in lme4's terms).
    convergence_ : Convergence
        How the fit ended, judged from the projected gradient and the last change of the objective
        (:mod:`carequal.convergence`); ``converged_`` is its verdict. A fit away from an optimum warns.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> g = np.repeat(np.arange(40), 250)
    >>> x = rng.normal(size=g.size)
    >>> u = rng.normal(0, 0.4, 40)
    >>> y = rng.random(g.size) < _expit(-1.5 + 0.5 * x + u[g])
    >>> df = pd.DataFrame({"y": y, "x": x, "facility": g})
    >>> m = HierarchicalLogit(["x"]).fit(df, outcome="y", group="facility")
    >>> round(float(m.params_["x"]), 1), round(m.sigma_, 1)
    (0.5, 0.4)
    """

    def __init__(self, covariates: list[str] | None = None, *, formula: str | None = None,
                 tol: float = GRADIENT_TOL, max_iter: int = 500):
        self.covariates = covariates
        self.formula = formula
        self.tol = tol
        self.max_iter = max_iter
        self._state: _Laplace | None = None
        self._bse: pd.Series | None = None
        self._design_info = None
        self._design_sample: pd.DataFrame | None = None
        self._numeric: list[str] | None = None

    # -- data layout ------------------------------------------------------------------------------------------

    def _setup(self, X: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int | None = None, *,
               presorted: bool = False) -> None:
        """Keep the rows sorted by facility (``presorted``: they already are), the design in Fortran order so that
        ``X β`` and ``X' r`` are contiguous passes; per facility the row counts, first rows and events."""
        order = None if presorted else _facility_order(codes)
        XT = np.ascontiguousarray(X.T)  # free for a Fortran-order design
        self._X = (XT if order is None else np.take(XT, order, axis=1)).T
        self._y = np.ascontiguousarray(y if order is None else y[order], dtype=float)
        codes = codes if order is None else codes[order]
        self._G = int(codes.max()) + 1 if n_groups is None else int(n_groups)
        self._counts = np.bincount(codes, minlength=self._G)
        self._starts = np.r_[0, np.cumsum(self._counts)[:-1]]
        self._present = self._counts > 0
        self._all_present = bool(self._present.all())
        self._Y = self._group_sum(self._y)
        self._Xty = self._X.T @ self._y
        self._state = None
        self._u0 = np.zeros(self._G)

    def _group_sum(self, values: np.ndarray) -> np.ndarray:
        """Sums over each facility's rows along the last axis (rows are sorted by facility: contiguous slices)."""
        if self._all_present:
            return np.add.reduceat(values, self._starts, axis=-1)
        out = np.zeros(values.shape[:-1] + (self._G,))
        out[..., self._present] = np.add.reduceat(values, self._starts[self._present], axis=-1)
        return out

    def _per_stay(self, values: np.ndarray) -> np.ndarray:
        """A value per facility, repeated for each of its rows."""
        return np.repeat(values, self._counts)

    # -- the Laplace likelihood, its gradient and Hessian -------------------------------------------------------

    def _modes(self, eta: np.ndarray, s2: float, u: np.ndarray):
        """Conditional modes ``û_j`` by Newton's method from ``u``, for all facilities at once. Returns the modes and,
        at them, ``η + u``, ``p``, ``w``, ``S0``, ``H`` and the size of the Newton step that was left (below 1e-10 when
        converged: it is not taken, so that ``p`` and ``w`` are exactly those of the modes returned)."""
        Y = self._Y
        for it in range(100):
            lin = eta + self._per_stay(u)
            p = _expit(lin)
            w = p * (1 - p)
            S0 = self._group_sum(w)
            H = S0 + 1 / s2
            step = np.clip((Y - self._group_sum(p) - u / s2) / H, -5, 5)
            size = float(np.max(np.abs(step), initial=0.0))
            if size < 1e-10 or it == 99:
                break
            u = u + step
        return u, lin, p, w, S0, H, size

    def _start_modes(self, eta: np.ndarray, s2: float) -> np.ndarray:
        """The last evaluation's modes moved by one Newton step with its weights: exact to first order in the
        change of ``(β, σ²)`` (as the implicit derivatives of the modes), for the cost of one group sum."""
        last = self._state
        if last is None:
            return self._u0
        change = -self._group_sum(last.w * (eta - last.eta)) - last.u * (1 / s2 - 1 / last.s2)
        return last.u + np.clip(change / (last.S0 + 1 / s2), -5, 5)

    def _objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Minus the Laplace log-likelihood and its exact gradient at ``theta = (β, log σ)`` (the last point's are
        kept: asking again for it costs nothing)."""
        theta = np.asarray(theta, dtype=float)
        last = self._state
        if last is not None and np.array_equal(theta, last.theta):
            return last.value, last.grad.copy()
        beta, s2 = theta[:-1], float(np.exp(2 * theta[-1]))
        eta = self._X @ beta
        u, lin, p, w, S0, H, step = self._modes(eta, s2, self._start_modes(eta, s2))
        w1 = w * (1 - 2 * p)
        S1 = self._group_sum(w1)
        # Σ y·lin − log(1 + e^lin), with Σ y·lin = (X'y)'β + Y'u and log(1 + e^x) = max(x, 0) − log(max(p, 1 − p))
        data = self._Xty @ beta + self._Y @ u - np.maximum(lin, 0).sum() + _sum_log_half_to_one(np.maximum(p, 1 - p))
        loglik = data - u @ u / (2 * s2) - 0.5 * np.sum(np.log(s2 * H))
        # gradient: envelope term Σ x(y − p), and −½ Σ_j (dH_j/dβ)/H_j with dH_j/dβ = Σ w1 x + S1_j dû_j/dβ and
        # dû_j/dβ = −Σ w x / H_j: together X' r with r = y − p − (w1 − S1 w / H) / (2H)
        half = 0.5 / H
        r = self._y - p - self._per_stay(half) * w1 + self._per_stay(half * S1 / H) * w
        grad_beta = self._X.T @ r
        dH_ds2 = -1 / s2**2 + S1 * u / (s2**2 * H)  # dû/dσ² = û / (σ⁴ H)
        grad_s2 = np.sum(u**2 / (2 * s2**2) - 1 / (2 * s2) - dH_ds2 / (2 * H))
        grad = np.append(grad_beta, grad_s2 * 2 * s2)
        value = -float(loglik)
        if np.isfinite(value) and np.isfinite(grad).all():
            self._state = _Laplace(theta.copy(), s2, eta, u, p, w, w1, S0, S1, H, step, value, -grad)
        return value, -grad

    def _hessian(self, theta: np.ndarray) -> np.ndarray:
        """The exact Hessian of the objective (minus the Laplace log-likelihood) in ``(β, log σ)``.

        Per facility ``L_j = f(û) − ½ log σ² − ½ log H`` with ``f(u) = Σ y η − log(1 + e^η) − u²/(2σ²)``,
        ``η = x'β + u``, ``H = Σ w + 1/σ²``. With ``θ = (β, σ²)`` and the modes' implicit derivatives
        ``dû/dθ = a/H`` (``a = ∂²f/∂u∂θ``) and ``d²û/dθ² = (∂³f/∂u∂θ² + e U' + U e' − S1 U U')/H``
        (``U = dû/dθ``, ``e = ∂³f/∂u²∂θ``): ``∇²L_j = ∂²f/∂θ² + a a'/H + ½/σ⁴ e_σσ − ½ d²H/dθ² / H
        + ½ (dH/dθ)(dH/dθ)' / H²`` with ``d²H/dθ² = ∂²h/∂θ² + c U' + U c' + S2 U U' + S1 d²û/dθ²`` (``h`` is ``H``
        as a function of ``u`` and ``θ``, ``c = ∂²h/∂u∂θ``, ``S2 = Σ w(1 − 6w)``). The per-stay parts of the
        β block add up to one weighted ``X' diag(c) X``; the rest are per-facility outer products. Then the chain
        rule to ``log σ``.
        """
        _, grad = self._objective(theta)
        st = self._state
        s2, u, H, S1, w, w1 = st.s2, st.u, st.H, st.S1, st.w, st.w1
        w2 = w * (1 - 6 * w)
        S2 = self._group_sum(w2)
        XT = self._X.T
        k, G = XT.shape[0], self._G
        A, B, C = (self._group_sum(XT * v).T for v in (w, w1, w2))  # Σ w x, Σ w1 x, Σ w2 x per facility
        zero, inv_s4 = np.zeros((G, 1)), np.full((G, 1), 1 / s2**2)
        a = np.hstack([-A, (u / s2**2)[:, None]])  # ∂²f/∂u∂θ
        U = a / H[:, None]  # dû/dθ
        c = np.hstack([C, zero])  # ∂²h/∂u∂θ
        e = np.hstack([-B, inv_s4])  # ∂³f/∂u²∂θ
        D = np.hstack([B, -inv_s4]) + S1[:, None] * U  # dH/dθ
        q = (1 / H)[:, None]
        hess = np.zeros((k + 1, k + 1))
        weight = -w + self._per_stay(0.5 / H) * (self._per_stay(S1 / H) * w1 - w2)
        hess[:k, :k] = (XT * weight) @ XT.T
        hess[k, k] = np.sum(-u**2 / s2**3 + 0.5 / s2**2 - 1 / (H * s2**3) + S1 * u / (H**2 * s2**3))
        hess += U.T @ a
        cross = (U * q).T @ c + (U * (q**2 * S1[:, None])).T @ e
        hess -= 0.5 * (cross + cross.T + (U * (q * (S2 - S1**2 / H)[:, None])).T @ U)
        hess += 0.5 * (D * q**2).T @ D
        # to (β, log σ): σ² = e^{2 log σ}
        dL_ds2 = -grad[k] / (2 * s2)
        hess[k, :k] *= 2 * s2
        hess[:k, k] *= 2 * s2
        hess[k, k] = 4 * s2**2 * hess[k, k] + 4 * s2 * dL_ds2
        return -(hess + hess.T) / 2

    # -- fitting ----------------------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, *, outcome: str, group: str, measure: str | None = None,
            facilities: str | None = None) -> HierarchicalLogit:
        """Fit the model to ``frame`` (one row per stay) with facility column ``group``.

        ``measure`` and ``facilities`` name what the model is for and its facility set (default: the outcome,
        and the number of facilities in ``group``) in the :class:`carequal.errors.ModelError` raised when it
        cannot be fitted: missing or infinite covariates or outcome, an outcome with no events or only events,
        covariates that completely separate the outcome (checked column by column before the fit, then on the
        start values without facility effects), no more stays than terms, or a numerical failure of the fit
        (overflow, a singular matrix, estimates that are not finite).
        """
        with _one_blas_thread():
            return self._fit(frame, outcome=outcome, group=group, measure=measure, facilities=facilities)

    def _fit(self, frame: pd.DataFrame, *, outcome: str, group: str, measure: str | None,
             facilities: str | None) -> HierarchicalLogit:
        where = facilities or describe_facilities(int(frame[group].nunique()), scope="")
        fail = _failure("random-intercept logistic model", measure or outcome, where, len(frame), "stays")
        numeric = _plain_numeric(frame, self.covariates)
        if numeric:
            _check_covariates(frame, self.covariates, self.formula, fail)
            self._numeric = list(self.covariates)
            self.columns_ = ["Intercept", *self.covariates]
            self._design_info, self._design_sample = None, frame[self.covariates].iloc[:1].copy()
        else:
            design = _design(frame, self.covariates, self.formula, fail)
            self._design_info, self._numeric = design.design_info, None
            self.columns_ = list(design.columns)
        codes, groups = pd.factorize(frame[group], sort=True)
        if (codes < 0).any():
            raise ParameterError(f"{group}: {int((codes < 0).sum())} rows have no facility")
        self.groups_ = pd.Index(groups)
        y = frame[outcome].astype(float).to_numpy()
        _check_outcome(y, frame, outcome, fail, "stays")
        # rows in facility order (group sums are then slices); the plain numeric design is built in that order
        order = _facility_order(codes)
        X = (_numeric_design(frame, self.covariates, order) if numeric
             else np.take(np.ascontiguousarray(design.to_numpy(dtype=float).T), order, axis=1).T)
        y = y[order]
        _check_separation(X, y, self.columns_, fail)
        self._setup(X, y, codes[order], presorted=True)
        with np.errstate(all="ignore"):
            start = self._glm_start()
            eta = self._X @ start
        if np.isfinite(eta).all() and ((eta > 0) == (self._y == 1)).all() and (eta != 0).all():
            # the start values (no facility effects) classify every stay: the covariates separate the outcome
            raise fail("separation", "the covariates together separate the stays with the outcome from those "
                       "without (complete separation: the model has no finite estimate)",
                       advice="leave out the rarest covariates, or fit on more stays")
        if not np.isfinite(start).all():
            start = np.zeros_like(start)
        theta0 = np.append(start, self._log_sigma_start(start))
        self._bse = None
        (result, convergence), _ = guarded_fit(lambda: self._optimise(theta0), fail)
        theta = result.x
        if not np.isfinite(theta).all():
            raise fail("non-convergence", "the fit ended with estimates that are not finite numbers")
        nll, _ = self._objective(theta)  # the optimiser's last point: kept, not computed again
        st = self._state
        if st.step >= 1e-8:  # the facility modes themselves did not settle: the gradient is not exact
            convergence = replace(convergence, converged=False,
                                  optimiser_message=f"{convergence.optimiser_message}; facility modes still moving "
                                                    f"by {st.step:.2g}")
        self.convergence_ = convergence
        self.converged_ = convergence.converged
        self.n_evaluations_ = convergence.evaluations
        warn_unless_converged(convergence, "HierarchicalLogit")
        self.loglik_ = -float(nll)
        self.params_ = pd.Series(theta[:-1], index=self.columns_)
        self.sigma_ = float(np.exp(theta[-1]))
        self.effects_ = pd.DataFrame({"group": self.groups_, "n": self._counts, "effect": st.u,
                                      "effect_se": 1 / np.sqrt(st.H)})
        self._theta = theta
        self._fail = fail
        return self

    def _optimise(self, start: np.ndarray):
        return minimise(self._objective, start, max_iter=self.max_iter, gradient_tol=self.tol,
                        transform=self._preconditioner(start))

    def _preconditioner(self, theta: np.ndarray) -> np.ndarray | None:
        """The change of variables ``θ = θ0 + T z`` for L-BFGS: ``T = V |Λ|^(-1/2) ν`` from the exact Hessian
        ``V Λ V'`` at the start (its eigenvalues' sizes, floored at 1e-12 of the largest), so that the Hessian
        in ``z`` is ``I/ν²``, scaled by the length ``ν`` of the Newton step in the whitened variables: L-BFGS-B's
        first step, of unit length along minus the gradient, is then the Newton step. ``None`` (no change of
        variables) when the Hessian is not finite."""
        _, grad = self._objective(theta)
        hess = self._hessian(theta)
        if not np.isfinite(hess).all():
            return None
        lam, V = np.linalg.eigh(hess)
        top = float(np.max(np.abs(lam)))
        if not top > 0:
            return None
        T = V / np.sqrt(np.maximum(np.abs(lam), 1e-12 * top))
        newton = float(np.linalg.norm(T.T @ grad))
        return T * newton if np.isfinite(newton) and newton > 0 else T

    def _glm_start(self) -> np.ndarray:
        """IRLS for the model without facility effects (from the overall rate when there is an intercept)."""
        X, XT, y = self._X, self._X.T, self._y
        beta = np.zeros(X.shape[1])
        if "Intercept" in getattr(self, "columns_", ()):
            rate = y.mean()
            beta[self.columns_.index("Intercept")] = np.log(rate / (1 - rate))
        for _ in range(25):
            p = _expit(X @ beta)
            w = np.clip(p * (1 - p), 1e-10, None)
            step = np.linalg.lstsq((XT * w) @ X, XT @ (y - p), rcond=None)[0]
            beta += step
            if np.max(np.abs(step)) < 1e-3:  # a start value; Newton's: the error left is about the step squared
                break
        return beta

    def _log_sigma_start(self, beta: np.ndarray) -> float:
        """log σ from the moments of the facilities' observed − expected events ``O − E`` under the start values:
        ``E(O_j − E_j)² ≈ V_j² σ² + V_j`` (``V_j = Σ w``), so ``σ² ≈ Σ((O − E)² − V) / Σ V²``, kept within
        [0.05, 3] (0.3 if it cannot be computed). The modes' start is one Newton step from 0 under them."""
        with np.errstate(all="ignore"):
            p = _expit(self._X @ beta)
            V = self._group_sum(p * (1 - p))
            excess = self._Y - self._group_sum(p)
            s2 = float(np.sum(excess**2 - V) / np.sum(V**2))
            sigma = float(np.clip(np.sqrt(max(s2, 0.0)), 0.05, 3.0)) if np.isfinite(s2) else 0.3
            u0 = np.clip(excess / (V + 1 / sigma**2), -5, 5)
        if np.isfinite(u0).all():
            self._u0 = u0
        return float(np.log(sigma))

    # -- standard errors, on demand ---------------------------------------------------------------------------

    @property
    def bse_(self) -> pd.Series:
        """Standard errors of β: square roots of the diagonal of the inverse exact Hessian of the Laplace
        log-likelihood in ``(β, log σ)`` at the estimate (computed when first read, then kept)."""
        if self._bse is None:
            if not hasattr(self, "_theta"):
                raise AttributeError("bse_: fit the model first")
            with _one_blas_thread():
                cov, _ = guarded_fit(lambda: np.linalg.pinv(self._hessian(self._theta)), self._fail)
            self._bse = pd.Series(np.sqrt(np.clip(np.diag(cov)[:-1], 0, None)), index=self.columns_)
        return self._bse

    @property
    def design_info_(self):
        """patsy's description of the design (built on first use from a row of the fitting data when the
        covariates are plain numeric columns, for which the fit itself needs no patsy)."""
        if self._design_info is None and self._design_sample is not None:
            self._design_info = _design(self._design_sample, self.covariates, None).design_info
        return self._design_info

    # -- bootstrap --------------------------------------------------------------------------------------------

    def bootstrap_pe(self, frame: pd.DataFrame, *, outcome: str, group: str, n_boot: int = 200,
                     level: float = 0.95, seed: int = 0) -> pd.DataFrame:
        """Facility-bootstrap intervals for P/E and the risk-standardised rate (CMS-style; approximate).

        Each replicate samples facilities with replacement (a facility drawn twice enters twice, as two
        facilities), refits the model on their stays, then re-estimates every original facility's effect
        (its conditional mode given the replicate's β and σ and the facility's own stays) and its P/E.
        The interval is the replicate percentiles. Austin et al. (2022) found such bootstraps can have poor
        coverage for hospital P/E ratios: report them as approximate.

        The replicates use the fit's machinery: the rows are sorted by facility once (a replicate's are slices of
        them), each refit starts from the full-data estimate and its facilities' modes, with the exact-Hessian
        preconditioning of :meth:`fit`, and one thread of BLAS throughout.

        Returns
        -------
        DataFrame
            :meth:`predicted_expected` plus ``lower``, ``upper`` (of ``ratio``), ``rsr_lower``,
            ``rsr_upper``, ``level``, ``n_boot``, ``method``.
        """
        base = self.predicted_expected(frame, outcome=outcome, group=group)
        X = self._design_rows(frame)
        y = frame[outcome].astype(float).to_numpy()
        codes = pd.Index(self.groups_).get_indexer(frame[group])
        if (codes < 0).any():
            raise ParameterError(f"{group}: facilities not seen in fitting; bootstrap the fitting data")
        G = self._G
        effects = self.effects_["effect"].to_numpy()
        with _one_blas_thread():
            full = HierarchicalLogit(tol=self.tol, max_iter=self.max_iter)
            full._setup(X, y, codes, G)
            starts, counts = full._starts, full._counts
            rng = np.random.default_rng(seed)
            overall = y.mean()
            ratios = np.empty((n_boot, G))
            helper = HierarchicalLogit(tol=self.tol, max_iter=self.max_iter)
            for b in range(n_boot):
                drawn = rng.integers(0, G, G)
                sizes = counts[drawn]
                # the drawn facilities' rows, facility after facility: slices of the sorted rows
                offsets = np.r_[0, np.cumsum(sizes)[:-1]]
                rows = np.arange(int(sizes.sum())) + np.repeat(starts[drawn] - offsets, sizes)
                helper._setup(np.take(full._X.T, rows, axis=1).T, full._y[rows], np.repeat(np.arange(G), sizes), G,
                              presorted=True)
                helper._u0 = effects[drawn]
                theta = helper._optimise(self._theta)[0].x
                beta, s2 = theta[:-1], float(np.exp(2 * theta[-1]))
                # empirical-Bayes effects of every original facility under the replicate's parameters
                eta = full._X @ beta
                u, _, _, _, _, H, _ = full._modes(eta, s2, effects)
                # draw each effect from its approximate (Laplace) posterior N(û_j, 1/H_j), as CMS's bootstrap samples
                # the hospital effects from their posterior
                u = u + rng.normal(size=G) / np.sqrt(H)
                ratios[b] = full._group_sum(_expit(eta + full._per_stay(u))) / full._group_sum(_expit(eta))
        alpha = (1 - level) / 2
        lo, hi = np.quantile(ratios, [alpha, 1 - alpha], axis=0)
        order = pd.Index(self.groups_).get_indexer(base["group"])
        out = base.copy()
        out["lower"], out["upper"] = lo[order], hi[order]
        out["rsr_lower"], out["rsr_upper"] = out["lower"] * overall, out["upper"] * overall
        out["level"], out["n_boot"] = level, n_boot
        out["method"] = "facility bootstrap (CMS-style), percentile interval; approximate"
        return out

    # -- CMS outputs ------------------------------------------------------------------------------------------

    def _design_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's design for the rows of ``frame`` (without patsy for plain numeric covariates, the same
        values; with it otherwise, or when a value is missing, as before)."""
        if self._numeric is not None and _plain_numeric(frame, self._numeric):
            X = _numeric_design(frame, self._numeric)
            if np.isfinite(X).all():
                return X
        return _design_like(self.design_info_, frame).to_numpy(dtype=float)

    def linear_predictor(self, frame: pd.DataFrame) -> np.ndarray:
        """``x' β`` for new rows (the average facility's log-odds)."""
        X = self._design_rows(frame)
        with _one_blas_thread():
            return X @ self.params_.to_numpy()

    def facility_effects(self) -> pd.DataFrame:
        """Facility effects: ``group``, ``n``, ``effect`` (conditional mode), ``effect_se``."""
        return self.effects_.copy()

    def predicted_expected(self, frame: pd.DataFrame, *, outcome: str, group: str) -> pd.DataFrame:
        """CMS predicted / expected by facility for the rows of ``frame`` (usually the fitting data).

        ``predicted_i = expit(x_i'β + û_j)`` (own effect), ``expected_i = expit(x_i'β)`` (average effect);
        per facility ``observed``, ``predicted`` (P), ``expected`` (E), ``ratio`` = P/E,
        ``observed_to_expected`` = O/E, and ``risk_standardised_rate`` = P/E × the overall observed rate.
        A facility unseen in fitting gets effect 0 (the average). Facilities in sorted order; rows with no
        facility count in the overall rate only.
        """
        lp = self.linear_predictor(frame)
        codes, names = pd.factorize(frame[group], sort=True)
        effect = (pd.Series(self.effects_["effect"].to_numpy(), index=self.groups_).reindex(names)
                  .fillna(0.0).to_numpy())
        y = frame[outcome].astype(float).to_numpy()
        overall = y.mean()
        if (codes < 0).any():
            keep = codes >= 0
            codes, lp, y = codes[keep], lp[keep], y[keep]
        G = len(names)
        out = pd.DataFrame({"group": np.asarray(names), "n": np.bincount(codes, minlength=G),
                            "observed": np.bincount(codes, y, G),
                            "predicted": np.bincount(codes, _expit(lp + effect[codes]), G),
                            "expected": np.bincount(codes, _expit(lp), G)})
        out["ratio"] = out["predicted"] / out["expected"]
        out["observed_to_expected"] = out["observed"] / out["expected"]
        out["risk_standardised_rate"] = out["ratio"] * overall
        return out


# ------------------------------------------------------------------------------------ risk covariates

RISK_CONDITIONS = ("heart_failure", "ami", "pneumonia", "copd", "sepsis", "stroke", "hip_knee_replacement")
"""Condition cohorts entered as indicators; index stays in no cohort ("other") are the reference level."""

RISK_COVARIATES = ("age10", "male", "dual", "employees", "n_secondary", "chemotherapy",
                   *(f"c_{name}" for name in RISK_CONDITIONS))
"""Stay-level risk covariates built by :func:`risk_covariates`: age in decades from 75, male sex, dual
eligibility, employee population, number of secondary diagnoses, chemotherapy admission (Z51.1x) and the
condition cohort. They describe the patient on admission only: discharge destination and length of stay are
choices of the provider being judged and are deliberately left out (CMS convention)."""


def risk_covariates(index: pd.DataFrame, stays: pd.DataFrame, *, stay_rows: np.ndarray | None = None) -> pd.DataFrame:
    """The :data:`RISK_COVARIATES` of index stays, as float columns added to a copy of ``index``.

    Parameters
    ----------
    index : DataFrame
        Index stays with ``stay_id``, ``age``, ``sex``, ``dual_eligible``, ``principal_dx``, ``condition`` and
        optional ``population_group`` (``Cohort.index`` has them all).
    stays : DataFrame
        Contract stays: ``secondary_dx`` of each index stay is counted there.
    stay_rows : ndarray, optional
        Each index stay's row in ``stays`` (``Cohort.stay_rows`` of the index stays); looked up by ``stay_id``
        otherwise.

    Examples
    --------
    >>> idx = pd.DataFrame({"stay_id": ["s1", "s2"], "age": [85, 65], "sex": ["M", "F"],
    ...                     "dual_eligible": [True, False], "principal_dx": ["I5020", "Z5111"],
    ...                     "condition": ["heart_failure", "other"]})
    >>> st = pd.DataFrame({"stay_id": ["s1", "s2"], "secondary_dx": ["E119;N183", None]})
    >>> risk_covariates(idx, st)[["age10", "male", "dual", "n_secondary", "chemotherapy", "c_heart_failure"]]
       age10  male  dual  n_secondary  chemotherapy  c_heart_failure
    0    1.0   1.0   1.0          2.0           0.0              1.0
    1   -1.0   0.0   0.0          0.0           1.0              0.0
    """
    missing = [c for c in ("stay_id", "age", "sex", "dual_eligible", "principal_dx", "condition")
               if c not in index.columns]
    if missing:
        raise ParameterError(f"risk_covariates: index has no column(s) {', '.join(missing)}")
    out = index.copy(deep=False)  # copy-on-write: only the added columns are new
    group = out["population_group"] if "population_group" in out else pd.Series("", index=out.index)
    out["age10"] = (out["age"].astype(float) - 75) / 10
    out["male"] = (out["sex"] == "M").astype(float)
    out["dual"] = out["dual_eligible"].fillna(False).astype(float)
    out["employees"] = (group == "employees").astype(float)
    # each index stay's row among the stays (an Arrow hash look-up: a pandas reindex by text ids is slower)
    if stay_rows is None:
        stay_rows = few_key_positions(out["stay_id"], stays["stay_id"])
    secondary = pd.Series(take_text(stays["secondary_dx"], stay_rows))
    out["n_secondary"] = secondary.str.count(";").add(1).fillna(0).to_numpy(dtype=float)
    out["chemotherapy"] = out["principal_dx"].str.startswith("Z511").fillna(False).astype(float)
    for name in RISK_CONDITIONS:
        out[f"c_{name}"] = (out["condition"] == name).astype(float)
    return out
