"""Exceptions and warnings raised by carequal: every class of them, in one place.

Errors are raised at the boundary (loading, function entry) and say what was given and how to fix it;
statistical caveats are typed warnings a user can filter, never errors. All derive from :class:`CarequalError`
or :class:`CarequalWarning`, so ``except carequal.CarequalError`` catches what carequal raises on purpose and
nothing else. This module imports nothing: ``import carequal`` loads it and stays cheap.
"""

from __future__ import annotations

__all__ = ["AgreementError", "CarequalError", "CarequalWarning", "DataQualityWarning", "DisclosureError",
           "DisclosureWarning", "FolderBusyError", "FunnelWarning", "MODEL_CAUSES", "ModelError", "ModelWarning",
           "NoBetweenUnitVarianceWarning", "NotConvergedWarning", "ParameterError", "SchemaError",
           "describe_facilities"]


class CarequalError(Exception):
    """Base class of every error carequal raises on purpose."""


class SchemaError(CarequalError):
    """Input data break the data contract (a rule of one table, or between tables).

    ``failures`` holds the individual findings (a tidy DataFrame: table, column, rule, n_rows, examples).
    """

    def __init__(self, message: str, failures=None):
        super().__init__(message)
        self.failures = failures


class ParameterError(CarequalError):
    """A function or command was given an argument outside its allowed values."""


class SourceError(CarequalError):
    """A source mapping file (``--source``) is malformed, or the database it names cannot give the contract
    tables: every problem is listed, each naming the mapping key, the database object and the valid choices.
    Messages never hold a password."""


class AgreementError(CarequalError):
    """A partnership agreement file is malformed or does not fit the data (every problem is listed)."""


MODEL_CAUSES: tuple[str, ...] = ("non-finite values", "extreme values", "overflow", "no variation", "separation",
                                 "non-convergence", "too few cases")
"""What can stop a model from being fitted (:attr:`ModelError.cause`)."""


class ModelError(CarequalError):
    """A statistical model could not be fitted: the measure, the facility set and the cause are named.

    Raised before fitting when the data cannot give a model (non-finite or absurd values, an outcome with no
    variation, a covariate that separates the outcome), and in place of the numerical failure of a fit
    (overflow, a not-a-number deviance, a singular matrix, estimates that are not finite).

    Attributes
    ----------
    measure : str
        The measure (or metric) the model was for, e.g. ``"pac_readmission"``, ``"episode_spending_30d"``.
    facilities : str
        The facility set it was fitted on, e.g. ``"14 SNFs (all markets)"``.
    cause : str
        One of :data:`MODEL_CAUSES`.
    detail : str
        What was found, in words: no keys and no patient counts, so it can be shown in a shared report
        (:attr:`reason`).
    model : str
        The model, e.g. ``"gamma spending model"``.
    n : int or None
        Cases the model was to be fitted on.
    cases : str
        What a case is (``"episodes"``, ``"index stays"``).
    specifics : str
        Counts and up to 5 example keys of the rows at fault, for the message only (never shared).
    advice : str
        What to do about it.
    action : str
        What could not be done to it: ``"fitted"`` (a model), ``"computed"`` (a crude mean).

    Examples
    --------
    >>> err = ModelError(measure="episode_spending", facilities="14 facilities (all markets)",
    ...                  cause="extreme values", detail="payment has a non-finite or extreme value",
    ...                  model="gamma spending model", n=1234, cases="episodes",
    ...                  specifics="1 episode over $10,000,000, e.g. stay S1", advice="correct the payment")
    >>> print(err)
    episode_spending: the gamma spending model could not be fitted on 1,234 episodes at 14 facilities (all \
markets): payment has a non-finite or extreme value (1 episode over $10,000,000, e.g. stay S1); correct the payment
    >>> err.reason
    'episode_spending: the gamma spending model could not be fitted at 14 facilities (all markets): payment has a \
non-finite or extreme value'
    """

    exit_code = 2

    def __init__(self, *, measure: str, facilities: str, cause: str, detail: str, model: str = "model",
                 n: int | None = None, cases: str = "cases", specifics: str = "", advice: str = "",
                 action: str = "fitted"):
        if cause not in MODEL_CAUSES:
            raise ValueError(f"ModelError cause must be one of {', '.join(MODEL_CAUSES)}, not {cause!r}")
        self.measure, self.facilities, self.cause, self.detail = measure, facilities, cause, detail
        self.model, self.n, self.cases, self.specifics, self.advice = model, n, cases, specifics, advice
        self.action = action
        super().__init__(self._message())

    def _message(self) -> str:
        size = f" on {self.n:,d} {self.cases}" if self.n is not None else ""
        text = f"{self.measure}: the {self.model} could not be {self.action}{size} at {self.facilities}: {self.detail}"
        if self.specifics:
            text += f" ({self.specifics})"
        return text + (f"; {self.advice}" if self.advice else "")

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):  # keyword-only arguments: pickle (worker processes) needs them by name
        return _rebuild_model_error, (self._fields(),)

    def _fields(self) -> dict:
        return {k: getattr(self, k) for k in ("measure", "facilities", "cause", "detail", "model", "n", "cases",
                                              "specifics", "advice", "action")}

    @property
    def reason(self) -> str:
        """The failure in one plain sentence without keys or patient counts, safe to show in a shared report."""
        return f"{self.measure}: the {self.model} could not be {self.action} at {self.facilities}: {self.detail}"

    def within(self, **names) -> ModelError:
        """The same failure named by the caller, which knows more: e.g. ``within(measure="pac_readmission",
        facilities="212 post-acute providers (all markets)")``."""
        return ModelError(**{**self._fields(), **{k: v for k, v in names.items() if v is not None}})


def _rebuild_model_error(fields: dict) -> ModelError:
    return ModelError(**fields)


def describe_facilities(n: int, kind: str = "facilities", scope: str = "all markets") -> str:
    """``"14 hospitals (all markets)"``: the facility set a model was fitted on, for :class:`ModelError`.

    Examples
    --------
    >>> describe_facilities(1, "hospitals", "Northvale"), describe_facilities(1)
    ('1 hospital (Northvale)', '1 facility (all markets)')
    """
    if n == 1:
        kind = kind[:-3] + "y" if kind.endswith("ies") else kind.removesuffix("s")
    return f"{n:,d} {kind} ({scope})" if scope else f"{n:,d} {kind}"


class FolderBusyError(CarequalError):
    """Another carequal run holds the output (or work) folder (:func:`carequal.batch.state.hold`). The command
    line exits with status 3."""

    exit_code = 3


class DisclosureError(CarequalError):
    """A table meant for sharing displays a value the cell-size rule forbids (counts 1–10, or values from
    which such a count can be derived)."""


class CarequalWarning(UserWarning):
    """Base class of carequal's warnings."""


class DataQualityWarning(CarequalWarning):
    """Input rows were set aside (quarantined) or a value was inferred rather than observed."""


class DisclosureWarning(CarequalWarning):
    """A hidden cell can only be protected by suppressing a total that is not in the table."""


class NotConvergedWarning(CarequalWarning):
    """A fit stopped away from an optimum (its gradient or its last change is still too large;
    :mod:`carequal.convergence`)."""


class FunnelWarning(CarequalWarning):
    """The funnel's dispersion could not be estimated as asked (too few units, or units left out;
    :func:`carequal.compare.funnel_data`)."""


class NoBetweenUnitVarianceWarning(CarequalWarning):
    """The beta-binomial fit found no between-unit variance: every unit is shrunk (almost) to the overall rate
    (:func:`carequal.compare.beta_binomial_shrinkage`)."""


class ModelWarning(CarequalWarning):
    """A model could not be fitted and what depends on it was left out while the rest went on (a national
    measure not available, an agreed metric not computed); the message is the :class:`ModelError`'s."""
