"""Convergence judged by the mathematics, not by an optimiser's flag.

An optimiser's ``success`` flag says why it stopped, not whether it stopped at an optimum. scipy's L-BFGS-B,
since 1.15, reports ``ABNORMAL`` when its line search cannot reach an ``ftol`` set below what float64 allows,
at the very optimum that scipy 1.14 called converged; statsmodels' IRLS says ``converged = False`` when its
iteration limit falls one iteration before its deviance test would have passed, at the same estimate. So every
fit in carequal is judged here, from two quantities computed at the returned point:

* the **projected gradient**: the gradient with components that push against an active bound set to zero
  (``P(x − g) − x``, with ``P`` the projection on the bounds), as its largest absolute component divided by
  ``max(1, |f|)`` — the first-order optimality condition, relative to the objective's size so that the same
  tolerance means the same for 100 or 1,000,000 rows (both grow with the number of rows);
* the **relative change of the objective** over the optimiser's last iteration,
  ``|f_{k−1} − f_k| / max(1, |f_k|)``: an optimiser still making progress has not finished.

A fit is converged when both are within tolerances that float64 can reach (defaults: gradient ``1e-6``,
change ``1e-8``; the optimisers are run to tighter stopping rules than these, so a fit that ends normally
passes with room to spare). Both numbers are recorded in a :class:`Convergence` kept on the result, and
:func:`warn_unless_converged` warns only when the point is really not an optimum. Written here because neither
scipy nor statsmodels offers a version-independent optimality check.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from carequal.errors import NotConvergedWarning

__all__ = ["Convergence", "judge", "minimise", "glm_convergence", "guarded_fit",
           "projected_gradient", "relative_change", "warn_unless_converged", "GRADIENT_TOL", "CHANGE_TOL"]

GRADIENT_TOL = 1e-6
CHANGE_TOL = 1e-8


@dataclass(frozen=True)
class Convergence:
    """How a fit ended, judged at the returned point.

    Attributes
    ----------
    converged : bool
        Both ``gradient_norm <= gradient_tol`` and ``objective_change <= change_tol``.
    gradient_norm : float
        Largest absolute projected-gradient component, relative to ``max(1, |objective|)``.
    objective_change : float
        Relative change of the objective over the last iteration (0 when the start was already optimal).
    objective : float
        The objective (to be minimised) at the returned point.
    iterations, evaluations : int
        Optimiser iterations and objective evaluations.
    gradient_tol, change_tol : float
        The tolerances used.
    optimiser_message : str
        What the optimiser said (for diagnosis only; it does not decide).
    """

    converged: bool
    gradient_norm: float
    objective_change: float
    objective: float
    iterations: int
    evaluations: int
    gradient_tol: float = GRADIENT_TOL
    change_tol: float = CHANGE_TOL
    optimiser_message: str = ""

    def describe(self) -> str:
        """One line for logs and warnings, e.g. ``converged: gradient 3.1e-09 (tol 1e-06), change 0 (tol 1e-08)``."""
        state = "converged" if self.converged else "NOT converged"
        return (f"{state}: relative projected gradient {self.gradient_norm:.2g} (tol {self.gradient_tol:g}), "
                f"relative change of the objective {self.objective_change:.2g} (tol {self.change_tol:g}) after "
                f"{self.iterations} iteration(s)")


def projected_gradient(x: np.ndarray, gradient: np.ndarray,
                       bounds: Sequence[tuple[float | None, float | None]] | None = None) -> np.ndarray:
    """The gradient with the components that point out of the feasible box removed: ``P(x − g) − x``.

    Examples
    --------
    >>> projected_gradient(np.array([0.0, 1.0]), np.array([2.0, -3.0]), [(0.0, None), (None, None)])
    array([0., 3.])
    """
    x = np.asarray(x, dtype=float)
    g = np.asarray(gradient, dtype=float)
    if bounds is None:
        return -g
    lower = np.array([-np.inf if lo is None else lo for lo, _ in bounds], dtype=float)
    upper = np.array([np.inf if hi is None else hi for _, hi in bounds], dtype=float)
    return np.clip(x - g, lower, upper) - x


def relative_change(previous: float | None, current: float) -> float:
    """``|previous − current| / max(1, |current|)`` (0 when there is no previous value)."""
    if previous is None:
        return 0.0
    return abs(float(previous) - float(current)) / max(1.0, abs(float(current)))


def judge(objective: float, gradient: np.ndarray, x: np.ndarray, *, objective_change: float, iterations: int,
          evaluations: int, bounds=None, gradient_tol: float = GRADIENT_TOL, change_tol: float = CHANGE_TOL,
          message: str = "") -> Convergence:
    """Judge a point from its objective, its gradient and the relative change of the objective at the last step.

    Examples
    --------
    >>> c = judge(10.0, np.array([1e-9, -2e-9]), np.zeros(2), objective_change=1e-13, iterations=7, evaluations=9)
    >>> c.converged, f"{c.gradient_norm:.1e}"
    (True, '2.0e-10')
    >>> judge(10.0, np.array([0.5, 0.0]), np.zeros(2), objective_change=0.2, iterations=2, evaluations=3).converged
    False
    """
    scale = max(1.0, abs(float(objective)))
    if not np.all(np.isfinite(gradient)) or not np.isfinite(objective):
        grad_norm = change = float("inf")
    else:
        grad_norm = float(np.max(np.abs(projected_gradient(x, gradient, bounds)), initial=0.0)) / scale
        change = float(objective_change)
    return Convergence(converged=bool(grad_norm <= gradient_tol and change <= change_tol),
                       gradient_norm=grad_norm, objective_change=change, objective=float(objective),
                       iterations=int(iterations), evaluations=int(evaluations), gradient_tol=gradient_tol,
                       change_tol=change_tol, optimiser_message=str(message))


def minimise(fun: Callable[..., tuple[float, np.ndarray]], x0: np.ndarray, *, args: tuple = (), bounds=None,
             max_iter: int = 1000, gradient_tol: float = GRADIENT_TOL, change_tol: float = CHANGE_TOL,
             transform: np.ndarray | None = None):
    """L-BFGS-B on ``fun`` (returning objective and gradient), judged by :func:`judge`.

    scipy is asked to stop at a projected gradient 1,000 times smaller than the judging tolerance (relative to the
    objective at the start) or when its own relative reduction falls below 1e-13; whatever it then reports, the
    returned point is judged by its gradient and last change. When only the change test fails (a small gradient
    right after a large step), the optimiser is restarted once from the point to confirm it.

    ``transform`` (a square matrix ``T``, no ``bounds``) is a linear change of variables: the optimiser works on
    ``z`` with ``x = x_start + T z`` (gradient ``T' g``), e.g. ``T = H^(-1/2)`` for the Hessian ``H`` at the start,
    so that the problem it sees is well conditioned. The optimum is the same, and the returned ``x``, the
    gradient judged and scipy's stopping gradient (scaled so that it still implies the one above in ``x``) are
    all in the original variables.

    Returns
    -------
    (OptimizeResult, Convergence)

    Examples
    --------
    >>> def f(x):
    ...     return float((x[0] - 1) ** 2 + 10 * (x[1] + 2) ** 2), np.array([2 * (x[0] - 1), 20 * (x[1] + 2)])
    >>> result, conv = minimise(f, np.zeros(2))
    >>> np.round(result.x, 6).tolist(), conv.converged
    ([1.0, -2.0], True)
    >>> result, conv = minimise(f, np.zeros(2), transform=np.diag([2 ** -0.5, 20 ** -0.5]))
    >>> np.round(result.x, 6).tolist(), conv.converged
    ([1.0, -2.0], True)
    """
    # scipy.optimize takes 0.2-0.3 s to import and a report's kernel fits nothing: loaded by the first fit
    from scipy import optimize

    x0 = np.asarray(x0, dtype=float)
    T = None if transform is None else np.asarray(transform, dtype=float)
    if T is not None and bounds is not None:
        raise ValueError("minimise: a transform cannot be combined with bounds")
    history: list[float] = []
    last: list[float] = [np.nan]

    def recorded(x, *a):
        value, grad = fun(x, *a)
        last[0] = float(value)
        return value, grad

    start_value, _ = fun(x0, *args)
    history.append(float(start_value))
    scale = max(1.0, abs(float(start_value)))
    gtol = 1e-3 * gradient_tol * scale
    if T is not None:
        # g_x = T^-T g_z: |g_x|_inf <= |T^-T|_inf |g_z|_inf, so this stopping gradient in z implies gtol in x
        gtol /= max(float(np.abs(np.linalg.inv(T).T).sum(axis=1).max()), 1e-300)
    options = {"maxiter": max_iter, "gtol": gtol, "ftol": 1e-13}
    def iterated(xk):  # L-BFGS-B's last evaluation is at the accepted point
        history.append(last[0])

    iterations = evaluations = 0
    for attempt in range(2):
        if T is None:
            result = optimize.minimize(recorded, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                                       options=options, callback=iterated)
        else:
            def in_z(z, *a, base=x0):
                value, grad = recorded(base + T @ z, *a)
                return value, T.T @ grad

            result = optimize.minimize(in_z, np.zeros_like(x0), args=args, jac=True, method="L-BFGS-B",
                                       options=options, callback=iterated)
            result.x = x0 + T @ result.x
        iterations, evaluations = iterations + int(result.nit), evaluations + int(result.nfev) + 2
        value, grad = fun(result.x, *args)
        if T is not None:
            result.jac = np.asarray(grad, dtype=float)
        previous = history[-2] if len(history) >= 2 else None
        conv = judge(float(value), grad, result.x, objective_change=relative_change(previous, float(value)),
                     iterations=iterations, evaluations=evaluations, bounds=bounds, gradient_tol=gradient_tol,
                     change_tol=change_tol, message=str(result.message))
        if conv.converged or conv.gradient_norm > gradient_tol or attempt:
            return result, conv
        # a small gradient after a large last step (a quasi-Newton step can land on the optimum): confirm it by a
        # restart from the point, which at an optimum stops at once without changing the objective
        x0, history[:] = result.x, [float(value)]
    return result, conv


def glm_convergence(result, *, gradient_tol: float = GRADIENT_TOL, change_tol: float = CHANGE_TOL) -> Convergence:
    """Judge a statsmodels GLM fit (IRLS) from its score and its Newton decrement at the estimate.

    The objective is ``−loglik`` at scale 1 (the score's zero does not depend on the dispersion). The change is the
    decrease one more Newton (IRLS) step would bring, ``g' H⁻¹ g / 2`` (the Newton decrement), relative to
    ``max(1, |objective|)``: IRLS converges quadratically, so the change between its last two iterations says
    little about the estimate, while the decrement measures what is left to gain.

    Examples
    --------
    >>> import statsmodels.api as sm
    >>> rng = np.random.default_rng(0)
    >>> X = sm.add_constant(rng.normal(size=500))
    >>> y = (rng.random(500) < 1 / (1 + np.exp(-X @ [-1.0, 0.8]))).astype(float)
    >>> glm_convergence(sm.GLM(y, X, family=sm.families.Binomial()).fit()).converged
    True
    """
    model, params = result.model, np.asarray(result.params, dtype=float)
    with np.errstate(all="ignore"):
        objective = -float(model.loglike(params, scale=1.0))
        gradient = -np.asarray(model.score(params, scale=1.0), dtype=float)
        hessian = np.asarray(model.hessian(params, scale=1.0), dtype=float)
    # the Newton decrement: what one more Newton (IRLS) step would still take off the objective (a pseudo-inverse,
    # as statsmodels uses, for designs with collinear columns)
    try:
        decrement = float(gradient @ np.linalg.pinv(-hessian) @ gradient) / 2 if gradient.size else 0.0
    except np.linalg.LinAlgError:
        decrement = float("inf")
    change = abs(decrement) / max(1.0, abs(objective)) if np.isfinite(decrement) else float("inf")
    history = getattr(result, "fit_history", None) or {}
    iterations = int(history.get("iteration", 0))
    return judge(objective, gradient, params, objective_change=change, iterations=iterations,
                 evaluations=iterations, gradient_tol=gradient_tol, change_tol=change_tol,
                 message=f"statsmodels converged={getattr(result, 'converged', None)}")


def warn_unless_converged(convergence: Convergence, what: str, *, stacklevel: int = 3) -> None:
    """Issue a :class:`NotConvergedWarning` naming ``what`` when the fit is not at an optimum."""
    if not convergence.converged:
        warnings.warn(f"{what}: the fit did not reach an optimum ({convergence.describe()}; the optimiser said: "
                      f"{convergence.optimiser_message or 'nothing'})", NotConvergedWarning, stacklevel=stacklevel)


def guarded_fit(fit: Callable[[], object], fail: Callable[[str, str], Exception], *,
                fatal: dict[type, tuple[str, str]] | None = None):
    """Run ``fit()`` and turn its numerical failures into the error ``fail(cause, detail)`` builds.

    statsmodels and numpy report a fit that left the floating-point range in their own words (``The first guess on
    the deviance function returned a nan``, ``Singular matrix``, ``SVD did not converge``) after a trail of
    ``RuntimeWarning`` s; the caller knows which measure and facilities the model was for, so it names them
    (:class:`carequal.errors.ModelError`). The cause is ``"overflow"`` when numpy warned of an overflow during the
    fit, ``"non-convergence"`` for a singular matrix (a step the iterations could not take), else
    ``"non-finite values"``. A warning of a category in ``fatal`` (e.g. statsmodels' ``PerfectSeparationWarning``)
    fails the fit too, with the ``(cause, detail)`` given for it. Warnings of a fit that succeeds are passed on as
    they were.

    Returns
    -------
    ``(result, overflowed)``: the fit's return value, and whether numpy warned of an overflow on the way (the
    caller then checks the estimates are finite).

    Examples
    --------
    >>> def fit():
    ...     np.exp(np.array([1000.0]))
    ...     raise ValueError("The first guess on the deviance function returned a nan.")
    >>> guarded_fit(fit, lambda cause, detail: RuntimeError(f"{cause}: {detail}"))
    Traceback (most recent call last):
    ...
    RuntimeError: overflow: the fit overflowed the range of floating-point numbers
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with np.errstate(over="warn", invalid="warn", divide="warn"), one_blas_thread():
                result = fit()
            failure = None
        except (ValueError, FloatingPointError, OverflowError, np.linalg.LinAlgError) as exc:
            failure = exc
    overflowed = any(issubclass(w.category, RuntimeWarning) and "overflow" in str(w.message) for w in caught)
    if failure is not None:
        if overflowed:
            cause, detail = "overflow", "the fit overflowed the range of floating-point numbers"
        elif isinstance(failure, np.linalg.LinAlgError):
            cause, detail = "non-convergence", "the fit's iterations met a singular matrix and could not go on"
        else:
            cause, detail = "non-finite values", "the fit produced a deviance or estimates that are not numbers"
        raise fail(cause, detail) from failure
    for category, (cause, detail) in (fatal or {}).items():
        if any(issubclass(w.category, category) for w in caught):
            raise fail(cause, detail)
    for w in caught:  # one registry, as each module has: a "default" filter shows a warning once per place
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=_PASSED_ON)
    return result, overflowed


_PASSED_ON: dict = {}

_BLAS = None


def one_blas_thread():
    """A context that limits BLAS to one thread, as every :func:`guarded_fit` runs. The fits' BLAS calls are
    small (statsmodels' IRLS solves a least-squares problem of a few thousand rows and a few dozen columns each
    iteration); a second OpenBLAS thread gains nothing there and, when the other core is busy (two report
    workers, two test workers), waits for it: ``numpy.linalg.lstsq`` of 3,000 x 25 took 50-100 ms a call with
    OpenBLAS's two threads on a loaded 2-core machine against 1.3-2 ms with one (see also
    :func:`carequal.risk._one_blas_thread`). One threadpoolctl controller, made on the first fit (scipy, which
    the fits load, then has its OpenBLAS loaded too)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")
