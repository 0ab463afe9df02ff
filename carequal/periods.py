"""Reporting periods: parse one, check one, and find the period before it.

A reporting period is a pair of inclusive dates (``start``, ``end``), by discharge date. The command line takes
it as text (:func:`parse_period`: a year, a quarter, a month or two dates), functions take two dates and check
them (:func:`reporting_period`), and a report compares it with the period of the same length just before it
(:func:`previous_period`). Only pandas below this module: every stage of the stack may read a period.
"""

from __future__ import annotations

import re

import pandas as pd

from carequal.errors import ParameterError

__all__ = ["parse_period", "previous_period", "reporting_period"]


def reporting_period(start: str | pd.Timestamp, end: str | pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Parse and check a reporting period (inclusive dates).

    Examples
    --------
    >>> reporting_period("2024-01-01", "2024-12-31")
    (Timestamp('2024-01-01 00:00:00'), Timestamp('2024-12-31 00:00:00'))
    >>> reporting_period("2024-12-31", "2024-01-01")
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: period: start 2024-12-31 is after end 2024-01-01
    """
    try:
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"period: {start!r} to {end!r} are not dates (use YYYY-MM-DD): {exc}") from None
    if pd.isna(lo) or pd.isna(hi):
        raise ParameterError(f"period: give both a start and an end date, not {start!r} to {end!r}")
    if lo > hi:
        raise ParameterError(f"period: start {lo.date()} is after end {hi.date()}")
    return lo, hi


def previous_period(start: pd.Timestamp, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The period of the same length just before ``[start, end]``: whole calendar months shift by their
    number of months, other periods by their number of days.

    Examples
    --------
    >>> previous_period(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31"))
    (Timestamp('2023-01-01 00:00:00'), Timestamp('2023-12-31 00:00:00'))
    >>> previous_period(pd.Timestamp("2024-03-01"), pd.Timestamp("2024-05-31"))
    (Timestamp('2023-12-01 00:00:00'), Timestamp('2024-02-29 00:00:00'))
    >>> previous_period(pd.Timestamp("2024-01-11"), pd.Timestamp("2024-01-20"))
    (Timestamp('2024-01-01 00:00:00'), Timestamp('2024-01-10 00:00:00'))
    """
    prev_end = start - pd.Timedelta(days=1)
    if start.day == 1 and (end + pd.Timedelta(days=1)).day == 1:
        months = (end.year - start.year) * 12 + end.month - start.month + 1
        return start - pd.DateOffset(months=months), prev_end
    return start - (end - start) - pd.Timedelta(days=1), prev_end


def parse_period(text: str) -> tuple[str, str]:
    """A reporting period from the command line: ``2024`` (a calendar year), ``2024-Q3`` (a quarter),
    ``2024-07`` (a month) or ``START:END`` (ISO dates, inclusive).

    Examples
    --------
    >>> parse_period("2024"), parse_period("2024-Q3"), parse_period("2024-02")
    (('2024-01-01', '2024-12-31'), ('2024-07-01', '2024-09-30'), ('2024-02-01', '2024-02-29'))
    >>> parse_period("2024-01-01:2024-06-30")
    ('2024-01-01', '2024-06-30')
    >>> parse_period("last year")
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: --period 'last year': use YYYY, YYYY-Qn, YYYY-MM or START:END (YYYY-MM-DD)
    """
    text = text.strip()
    bad = ParameterError(f"--period {text!r}: use YYYY, YYYY-Qn, YYYY-MM or START:END (YYYY-MM-DD)")
    if re.fullmatch(r"\d{4}", text):
        start, end = pd.Timestamp(f"{text}-01-01"), pd.Timestamp(f"{text}-12-31")
    elif m := re.fullmatch(r"(\d{4})-?Q([1-4])", text, flags=re.IGNORECASE):
        start = pd.Timestamp(f"{m[1]}-{3 * int(m[2]) - 2:02d}-01")
        end = start + pd.offsets.QuarterEnd(0)
    elif re.fullmatch(r"\d{4}-\d{2}", text):
        try:
            start = pd.Timestamp(f"{text}-01")
        except ValueError:
            raise bad from None
        end = start + pd.offsets.MonthEnd(0)
    elif ":" in text:
        lo, hi = text.split(":", 1)
        if not (re.fullmatch(r"\d{4}-\d{2}-\d{2}", lo.strip()) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", hi.strip())):
            raise bad
        start, end = reporting_period(lo.strip(), hi.strip())
    else:
        raise bad
    return start.date().isoformat(), end.date().isoformat()
