"""Every fit is judged converged by its gradient and its last change, never by the optimiser's own flag.

Each fit runs twice under a wrapped optimiser: once where the optimiser's flag is false at the optimum (scipy's
L-BFGS-B and statsmodels' IRLS each stopped one iteration before their own stopping test would pass: they
report an iteration limit), which must not warn and must give the optimum; once stopped early (two
iterations), which must warn. A third test makes scipy end ``ABNORMAL`` with tolerances it cannot reach (what
scipy >= 1.15 does with ``ftol`` far below float64's reach).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM

from carequal.compare import beta_binomial_shrinkage
from carequal.convergence import NotConvergedWarning, glm_convergence, judge, minimise, projected_gradient
from carequal.cost import expected_spending
from carequal.impact import difference_in_differences
from carequal.risk import HierarchicalLogit, LogisticRiskModel

# ------------------------------------------------------------------------------------------------ the fits


def _bb_frame() -> pd.DataFrame:
    return pd.DataFrame({"facility_id": list("ABCDEF"), "events": [2, 30, 9, 45, 4, 20],
                         "n": [10, 100, 60, 150, 40, 120]})


def _stays(seed: int = 3, facilities: int = 30, per: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(facilities), per)
    x = rng.normal(size=g.size)
    u = rng.normal(0, 0.4, facilities)
    y = rng.random(g.size) < 1 / (1 + np.exp(-(-1.2 + 0.6 * x + u[g])))
    period = rng.integers(0, 4, g.size)
    exposed = (g < facilities // 2) & (period >= 2)
    spend = rng.gamma(4.0, np.exp(8 + 0.3 * x) / 4.0)
    return pd.DataFrame({"y": y, "x": x, "facility": g.astype(str), "period": period, "exposed": exposed,
                         "spend": spend})


def fit_beta_binomial():
    out = beta_binomial_shrinkage(_bb_frame(), by="facility_id")
    return np.array([out["a"].iloc[0], out["b"].iloc[0]])


def fit_hierarchical():
    m = HierarchicalLogit(["x"]).fit(_stays(), outcome="y", group="facility")
    return np.r_[m.params_.to_numpy(), m.sigma_]


def fit_logistic():
    return LogisticRiskModel(["x"]).fit(_stays(), outcome="y").result_.params.to_numpy()


def fit_spending():
    return expected_spending(_stays(), outcome="spend", covariates=["x"]).result.params.to_numpy()


def fit_did():
    out = difference_in_differences(_stays(), outcome="y", facility="facility", period="period",
                                    exposed="exposed", covariates=["x"])
    return np.array([out["effect"]])


SCIPY_FITS = [fit_beta_binomial, fit_hierarchical]
GLM_FITS = [fit_logistic, fit_spending, fit_did]


# ------------------------------------------------------------------------------------ optimisers, wrapped


@pytest.fixture
def scipy_flag_false(monkeypatch):
    """L-BFGS-B stopped one iteration before its own stopping test passes (flag: iteration limit reached)."""
    flags = []
    original = scipy.optimize.minimize

    def wrapped(*args, **kwargs):
        needed = int(original(*args, **kwargs).nit)
        kwargs["options"] = {**kwargs.get("options", {}), "maxiter": needed - 1}
        result = original(*args, **kwargs)
        flags.append(bool(result.success))
        return result

    monkeypatch.setattr(scipy.optimize, "minimize", wrapped)
    return flags


@pytest.fixture
def scipy_stopped_early(monkeypatch):
    original = scipy.optimize.minimize

    def wrapped(*args, **kwargs):
        kwargs["options"] = {**kwargs.get("options", {}), "maxiter": 2}
        return original(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", wrapped)


@pytest.fixture
def irls_flag_false(monkeypatch):
    """IRLS stopped one iteration before its own deviance test would pass: statsmodels says not converged."""
    flags = []
    original = GLM.fit

    def wrapped(self, *args, **kwargs):
        full = original(self, *args, **kwargs)
        needed = int(full.fit_history["iteration"])
        result = original(self, *args, **{**kwargs, "maxiter": needed - 1})
        flags.append(bool(result.converged))
        return result

    monkeypatch.setattr(GLM, "fit", wrapped)
    return flags


@pytest.fixture
def irls_stopped_early(monkeypatch):
    original = GLM.fit
    monkeypatch.setattr(GLM, "fit", lambda self, *a, **kw: original(self, *a, **{**kw, "maxiter": 1}))


def _quietly(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)
        return fit()


@pytest.mark.parametrize("fit", SCIPY_FITS, ids=lambda f: f.__name__)
def test_scipy_flag_false_at_the_optimum_does_not_warn(fit, scipy_flag_false):
    estimate = _quietly(fit)
    assert scipy_flag_false and not any(scipy_flag_false), "the wrapper must make scipy's flag false"
    np.testing.assert_allclose(estimate, _reference(fit), rtol=1e-5)


@pytest.mark.parametrize("fit", GLM_FITS, ids=lambda f: f.__name__)
def test_irls_flag_false_at_the_optimum_does_not_warn(fit, irls_flag_false):
    estimate = _quietly(fit)
    assert irls_flag_false and not any(irls_flag_false), "the wrapper must make statsmodels' flag false"
    np.testing.assert_allclose(estimate, _reference(fit), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("fit", SCIPY_FITS, ids=lambda f: f.__name__)
def test_scipy_fit_stopped_early_warns(fit, scipy_stopped_early):
    with pytest.warns(NotConvergedWarning, match="did not reach an optimum"):
        fit()


@pytest.mark.parametrize("fit", GLM_FITS, ids=lambda f: f.__name__)
def test_irls_fit_stopped_early_warns(fit, irls_stopped_early):
    with pytest.warns(NotConvergedWarning, match="did not reach an optimum"):
        fit()


def test_hierarchical_max_iter_two_warns_and_records():
    with pytest.warns(NotConvergedWarning):
        m = HierarchicalLogit(["x"], max_iter=2).fit(_stays(), outcome="y", group="facility")
    assert not m.converged_ and m.convergence_.gradient_norm > m.convergence_.gradient_tol


def test_convergence_is_recorded_in_results():
    out = beta_binomial_shrinkage(_bb_frame(), by="facility_id")
    assert out["converged"].all() and (out["gradient_norm"] < 1e-6).all()
    m = HierarchicalLogit(["x"]).fit(_stays(), outcome="y", group="facility")
    assert m.converged_ and m.convergence_.gradient_norm < 1e-6 and m.convergence_.objective_change < 1e-8
    did = difference_in_differences(_stays(), outcome="y", facility="facility", period="period", exposed="exposed")
    assert did["converged"] and did["gradient_norm"] < 1e-6


def _reference(fit):
    """The fit under the optimisers' ordinary stopping rules (no wrapper)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scipy.optimize, "minimize", _ORIGINAL_MINIMIZE)
        mp.setattr(GLM, "fit", _ORIGINAL_GLM_FIT)
        return _quietly(fit)


_ORIGINAL_MINIMIZE = scipy.optimize.minimize
_ORIGINAL_GLM_FIT = GLM.fit


# ------------------------------------------------------------------------------------------- the criteria


def test_projected_gradient_ignores_pushes_against_active_bounds():
    # at the lower bound with a positive gradient (descent would leave the box): that component is optimal
    pg = projected_gradient(np.array([0.0, 0.0, 2.0]), np.array([3.0, 3.0, -1.0]),
                            [(0.0, 5.0), (-1.0, 5.0), (None, 2.5)])
    # component 1: free to move down by 1 (clipped at -1); component 2: can rise by 0.5 only
    np.testing.assert_allclose(pg, [0.0, -1.0, 0.5])


def test_judge_needs_both_a_small_gradient_and_a_settled_objective():
    small = np.array([1e-8])
    assert judge(100.0, small, np.zeros(1), objective_change=1e-12, iterations=5, evaluations=6).converged
    assert not judge(100.0, small, np.zeros(1), objective_change=1e-4, iterations=5, evaluations=6).converged
    # 1e-3 relative to an objective of 100 is 1e-5 > 1e-6
    assert not judge(100.0, np.array([1e-3]), np.zeros(1), objective_change=0.0, iterations=5,
                     evaluations=6).converged
    assert not judge(np.nan, small, np.zeros(1), objective_change=0.0, iterations=1, evaluations=1).converged


def test_minimise_finds_a_bounded_optimum_and_says_so():
    # minimum of (x - 3)^2 on [0, 1] is at the bound x = 1, where the gradient (-4) is not zero
    result, conv = minimise(lambda x: (float((x[0] - 3) ** 2), np.array([2 * (x[0] - 3)])), np.array([0.5]),
                            bounds=[(0.0, 1.0)])
    assert result.x[0] == pytest.approx(1.0) and conv.converged


def test_glm_convergence_judges_a_hand_stopped_fit():
    rng = np.random.default_rng(5)
    X = np.column_stack([np.ones(400), rng.normal(size=400)])
    y = (rng.random(400) < 0.3).astype(float)
    model = GLM(y, X, family=families.Binomial())
    assert glm_convergence(_ORIGINAL_GLM_FIT(model)).converged
    assert not glm_convergence(_ORIGINAL_GLM_FIT(model, maxiter=1)).converged


def test_abnormal_line_search_at_the_optimum_does_not_warn(monkeypatch):
    """The reported case: scipy >= 1.15 ends ABNORMAL when ftol is below what the line search can reach.

    Whether L-BFGS-B's last line search fails, or instead finds the objective exactly unchanged ("RELATIVE
    REDUCTION OF F"), depends on the processor's floating point (AVX2 and AVX-512 builds of OpenBLAS differ): where
    it does not end ABNORMAL by itself, the optimizer's verdict is set to what the reported machine gave, at the
    point it reached. ``minimise`` must judge that point by its gradient and not warn."""
    flags = []

    def wrapped(*args, **kwargs):
        kwargs["options"] = {**kwargs.get("options", {}), "ftol": 1e-300, "gtol": 0.0, "maxiter": 15000}
        result = _ORIGINAL_MINIMIZE(*args, **kwargs)
        if result.success:
            result.success, result.status = False, 2
            result.message = "ABNORMAL: (set by the test, as scipy >= 1.15 ended on the reported machine)"
        flags.append((bool(result.success), str(result.message)))
        return result

    monkeypatch.setattr(scipy.optimize, "minimize", wrapped)
    estimate = _quietly(fit_beta_binomial)
    assert flags and not any(ok for ok, _ in flags) and all("ABNORMAL" in m for _, m in flags), flags
    # the optimum the issue reports (scipy 1.14 to 1.17): a = 8.79308, b = 32.51006
    np.testing.assert_allclose(estimate, [8.79308, 32.51006], atol=5e-5)


def test_minimise_with_a_change_of_variables_is_judged_in_the_original_ones():
    """An ill-conditioned quadratic: L-BFGS-B in the variables its Hessian whitens finds the same optimum in fewer
    iterations; the returned point, its gradient and the verdict are in the original variables; with bounds a
    transform is refused."""
    scales = np.array([1.0, 1e4, 1e-2])
    target = np.array([1.0, -2.0, 3.0])

    def f(x):
        return float(np.sum(scales * (x - target) ** 2)), 2 * scales * (x - target)

    plain, plain_conv = minimise(f, np.zeros(3))
    whitened, conv = minimise(f, np.zeros(3), transform=np.diag(1 / np.sqrt(2 * scales)))
    np.testing.assert_allclose(whitened.x, target, atol=1e-6)
    assert conv.converged and conv.iterations < plain_conv.iterations
    np.testing.assert_allclose(whitened.jac, f(whitened.x)[1])
    assert conv.gradient_norm == pytest.approx(np.abs(f(whitened.x)[1]).max() / max(1.0, f(whitened.x)[0]))
    with pytest.raises(ValueError, match="bounds"):
        minimise(f, np.zeros(3), bounds=[(None, None)] * 3, transform=np.eye(3))
