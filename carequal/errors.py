"""Exceptions and warnings raised by carequal.

Errors are raised at the boundary (loading, function entry) and say what was given and how to fix it;
statistical caveats are typed warnings a user can filter, never errors.
"""

from __future__ import annotations


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


class AgreementError(CarequalError):
    """A partnership agreement file is malformed or does not fit the data (every problem is listed)."""


class DisclosureError(CarequalError):
    """A table meant for sharing displays a value the cell-size rule forbids (counts 1–10, or values from
    which such a count can be derived)."""


class CarequalWarning(UserWarning):
    """Base class of carequal's warnings."""


class DataQualityWarning(CarequalWarning):
    """Input rows were set aside (quarantined) or a value was inferred rather than observed."""


class DisclosureWarning(CarequalWarning):
    """A hidden cell can only be protected by suppressing a total that is not in the table."""
