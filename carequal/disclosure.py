"""Small-cell suppression for tables meant for sharing (CMS cell-size suppression policy).

The rule
--------
CMS's cell-size suppression policy (as ResDAC states it for CMS data-use agreements, following HHS): no
cell with a count of 1 to 10 may be displayed (0 may), nor any value from which a count of 1 to 10 can be
derived -- a percentage or rate computed from it, the difference of two displayed counts of the same row,
or a displayed total minus the displayed cells that add up to it.

What :func:`suppress_counts` does
---------------------------------
The table is tidy: one row per cell (e.g. facility x month) with one or more count columns. A hidden value
becomes missing; nothing is rounded or perturbed.

1. **Primary.** Every count in ``threshold`` (1..10 by default) is hidden.
2. **Within a row** (when the ``denominator`` column, ``n`` by default, is among the count columns; every
   other count column is read as a numerator of it, e.g. ``events``):

   * ``n`` in 1..10 hides the row's numerators (each lies in 0..n, so it narrows a hidden small count);
   * ``n - events`` (the non-events count, a cell the reader can compute) in 1..10 hides ``events``, since
     ``events = n - non-events`` would reveal it; ``n`` stays displayed.

3. **Complementary.** ``group_cols`` name the additive relations: the non-total rows of a group add up to
   the group's total (all facilities of one market, all months of one facility). The total is either a row
   of the table, flagged by ``total_rows`` and sharing the group's keys, or -- when the group has no total
   row -- *assumed displayed elsewhere* (conservative: a market total is usually published or derivable),
   column by column, unless it is itself a count in the threshold (which the rule hides wherever it is
   shown); its non-events total counts as displayed when both its ``n`` and ``events`` totals do.
   ``group_cols=None`` makes the whole table one group. For every count column, and for every implied
   non-events column ``n - events``, a group is protected when

   * its total is displayed: the number of hidden non-zero cells is not exactly 1 (a lone hidden cell is
     the total minus the displayed cells), and the sum of the hidden cells -- which a reader gets as
     total minus displayed -- is 0 or above the threshold (e.g. hidden 3 and 4 reveal the sum 7: not
     allowed);
   * its total row is hidden: at least one non-zero cell is hidden (else the total is the sum of the
     displayed cells), or every cell is 0.

   An unprotected group gets one more hidden cell, and the test is repeated until it passes. **The cell
   chosen** is the smallest non-zero displayed count of the group; ties go to the lowest index label (for
   a default ``RangeIndex``, the earlier row). Zeros are never chosen, and hidden zeros do not count as
   protection above: a reader can often guess them. For the non-events column the chosen row's numerator
   is hidden (its ``n`` stays). After primary suppression every displayed non-zero count exceeds the
   threshold, so one complement usually suffices; the loop is what guarantees "hidden sum above the
   threshold". When no non-zero cell is left to hide, the group's total row is hidden instead. When the
   group has no total row (its total is shown elsewhere), every non-zero cell is then hidden, so that total
   reveals only itself -- unless a single cell is hidden and the others are displayed zeros, which pins the
   total on that row (e.g. ``events`` hidden because ``n - events`` is small): a
   :class:`DisclosureWarning` then names the group, whose total must not be published. A group of one cell
   with no total row is skipped: its total is that very row, which the same rules hide.
4. **Iterated to a fixed point.** Complementary suppression runs per count column, group by group (groups
   in sorted key order; count columns first, then the non-events columns), and the whole pass repeats
   until it hides nothing new: a cell hidden in one column changes relations in another (a hidden
   ``events`` hides the row's non-events cell; a complement for the non-events column hides an ``events``
   cell, which can leave a lone hidden cell in that column's group). Each step only hides cells, so the
   loop ends (at worst when nothing is left to hide); groups are visited in key order and ties broken by
   index label, so the result does not depend on row order.
5. **Derived columns.** ``rate``, ``lower``, ``upper`` (those present) and ``derived_cols`` are hidden in
   every row where a count is hidden: ``rate = events / n`` reveals a hidden ``events`` (or ``n``) from the
   displayed other.

Each row gets ``suppressed`` (any value of the row hidden) and ``suppression_reason``, the strongest reason
among its cells: ``"primary"`` (the row holds a count in the threshold), ``"complementary"`` (hidden to
protect a cell of another row of its group), ``"derived"`` (hidden because of another value of the same
row: a small ``n`` or a small non-events count), or ``""``.

Not covered: bounds (a hidden ``events`` is at most the displayed ``n``), attacks that combine several
published tables, and cells that belong to two additive relations at once (a facility x month table with
both market and annual totals displayed). Such tables need a dedicated tool (tau-ARGUS, sdcTable).

References
----------
ResDAC, "CMS Cell Size Suppression Policy" (https://resdac.org/articles/cms-cell-size-suppression-policy).
Federal Committee on Statistical Methodology (2005), Statistical Policy Working Paper 22: Report on
Statistical Disclosure Limitation Methodology, ch. 4 (primary and complementary suppression).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from carequal.errors import DisclosureError, DisclosureWarning, ParameterError

__all__ = ["DISCLOSURE_FLOOR", "RATE_COLUMNS", "REASONS", "cell_threshold", "check_min_cell", "check_suppressed",
           "suppress_counts", "suppression_statement"]

DISCLOSURE_FLOOR = 11
"""The smallest count a shared table may show under the CMS policy (counts 1 to 10 are suppressed)."""

RATE_COLUMNS = ("rate", "lower", "upper")
"""Columns hidden with the counts of their row whenever present."""

REASONS = ("primary", "complementary", "derived")
"""Suppression reasons, strongest first (a row reports the strongest among its cells)."""


@dataclass(frozen=True)
class _Group:
    cells: np.ndarray
    total: int | None
    describe: Callable[[], str]
    """The group's keys as text ("market=A"), built only for a message: a row lookup per group costs more than
    the suppression of a small group."""

    @property
    def key(self) -> str:
        return self.describe()


# ---------------------------------------------------------------------------------------- the threshold


def cell_threshold(min_cell: int) -> tuple[float, float]:
    """The :func:`suppress_counts` threshold for "show counts of at least ``min_cell``": ``(1, min_cell - 1)``;
    ``min_cell=1`` shows every count (an empty threshold, for internal use only).

    Examples
    --------
    >>> cell_threshold(11), cell_threshold(1)
    ((1, 10), (0.5, 0.9))
    >>> cell_threshold(0)
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: min_cell must be a whole number ≥ 1, not 0
    """
    if isinstance(min_cell, bool) or not isinstance(min_cell, int | float) or int(min_cell) != min_cell \
            or min_cell < 1:
        raise ParameterError(f"min_cell must be a whole number ≥ 1, not {min_cell!r}")
    if min_cell == 1:
        return (0.5, 0.9)  # counts are whole numbers: nothing lies in this range
    return (1, int(min_cell) - 1)


def check_min_cell(min_cell: int, *, allow_small_cells: bool = False) -> int:
    """``min_cell`` for output meant for sharing: refused below :data:`DISCLOSURE_FLOOR` unless asked for.

    Examples
    --------
    >>> check_min_cell(11), check_min_cell(20), check_min_cell(5, allow_small_cells=True)
    (11, 20, 5)
    >>> check_min_cell(5)
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: --min-cell 5 would show counts of 5 to 10, below the disclosure floor of 11 ...
    """
    cell_threshold(min_cell)
    min_cell = int(min_cell)
    if min_cell < DISCLOSURE_FLOOR and not allow_small_cells:
        shown = f"counts of {min_cell} to {DISCLOSURE_FLOOR - 1}"
        raise ParameterError(
            f"--min-cell {min_cell} would show {shown}, below the disclosure floor of {DISCLOSURE_FLOOR} (CMS "
            "cell-size suppression policy); give --allow-small-cells to do so knowingly (every report then "
            "states the threshold on its first screen)")
    return min_cell


def suppression_statement(min_cell: int) -> str:
    """The sentence that tells a reader which counts are hidden, right for any threshold.

    Examples
    --------
    >>> suppression_statement(11)
    'Counts from 1 to 10 are suppressed, with any other value that would reveal one, to protect privacy.'
    >>> suppression_statement(2)
    'Counts of 1 are suppressed, ... This is below the standard threshold (counts 1 to 10).'
    >>> suppression_statement(1)
    'No counts are suppressed: this output shows small counts and is for internal use only ...'
    """
    cell_threshold(min_cell)
    min_cell = int(min_cell)
    standard = f"counts 1 to {DISCLOSURE_FLOOR - 1}"
    if min_cell == 1:
        return f"No counts are suppressed: this output shows small counts and is for internal use only (the " \
               f"standard hides {standard})."
    hidden = "Counts of 1" if min_cell == 2 else f"Counts from 1 to {min_cell - 1}"
    text = f"{hidden} are suppressed, with any other value that would reveal one, to protect privacy."
    if min_cell < DISCLOSURE_FLOOR:
        text += f" This is below the standard threshold ({standard})."
    return text


# ------------------------------------------------------------------------------------------- arguments


def _threshold(threshold: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(t) for t in threshold)
    except (TypeError, ValueError):
        raise ParameterError(f"threshold must be a pair (low, high) such as (1, 10), not {threshold!r}") from None
    if not 0 < lo <= hi:
        raise ParameterError(f"threshold must satisfy 0 < low <= high (0 is always displayable), not {threshold!r}")
    return lo, hi


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _columns(table: pd.DataFrame, cols: str | Sequence[str] | None, name: str) -> list[str]:
    if cols is None:
        return []
    cols = [cols] if isinstance(cols, str) else list(cols)
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ParameterError(f"{name}: column(s) {', '.join(map(str, missing))} not in the table; "
                             f"it has {', '.join(map(str, table.columns))}")
    return cols


def _examples(index: pd.Index, mask: np.ndarray, k: int = 5) -> str:
    return ", ".join(str(label) for label in index[mask][:k])


def _count_values(table: pd.DataFrame, counts: list[str]) -> dict[str, np.ndarray]:
    values = {}
    for c in counts:
        col = table[c]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            raise ParameterError(f"count column {c!r} must be numeric, not {col.dtype}")
        v = col.to_numpy(dtype=float, na_value=np.nan)
        for bad, what in ((np.isnan(v), "missing"), (v < 0, "negative")):
            if bad.any():
                raise ParameterError(f"count column {c!r}: {bad.sum()} {what} value(s) (rows "
                                     f"{_examples(table.index, bad)}); suppress_counts needs the complete raw "
                                     "counts (apply it once, before anything is hidden)")
        values[c] = v
    return values


def _numerators(values: dict[str, np.ndarray], denominator: str | None, index: pd.Index) -> list[str]:
    if denominator is None or denominator not in values:
        return []
    numerators = [c for c in values if c != denominator]
    for x in numerators:
        over = values[x] > values[denominator]
        if over.any():
            raise ParameterError(f"{x!r} exceeds the denominator {denominator!r} in {over.sum()} row(s) (rows "
                                 f"{_examples(index, over)}); pass denominator=None if {x!r} is not a count "
                                 f"of {denominator!r}")
    return numerators


def _total_mask(table: pd.DataFrame, total_rows: str | pd.Series | Sequence[bool] | None) -> np.ndarray:
    if total_rows is None:
        return np.zeros(len(table), dtype=bool)
    if isinstance(total_rows, str):
        mask = table[_columns(table, total_rows, "total_rows")[0]]
    elif isinstance(total_rows, pd.Series):
        if not total_rows.index.equals(table.index):
            raise ParameterError("total_rows: a Series mask must have the table's index")
        mask = total_rows
    else:
        mask = pd.Series(np.asarray(total_rows))
        if len(mask) != len(table):
            raise ParameterError(f"total_rows: mask has {len(mask)} values for a table of {len(table)} rows")
    if not pd.api.types.is_bool_dtype(mask) or mask.isna().any():
        raise ParameterError("total_rows must be boolean with no missing values (True marks a total row)")
    return mask.to_numpy(dtype=bool)


def _tie_rank(index: pd.Index) -> np.ndarray:
    """Rank of each row's index label: the tie-break between equal counts, independent of row order."""
    try:
        order = np.asarray(index.argsort(kind="stable"))
    except TypeError:  # labels that do not sort (mixed types): fall back to row order
        order = np.arange(len(index))
    rank = np.empty(len(index), dtype=np.int64)
    rank[order] = np.arange(len(index))
    return rank


def _groups(table: pd.DataFrame, group_cols: list[str], is_total: np.ndarray, rank: np.ndarray) -> list[_Group]:
    """The additive relations: per group (sorted key order), its cells in tie-break order and its total row."""
    if not len(table):
        return []
    if group_cols:
        try:
            codes = table.groupby(group_cols, sort=True, dropna=False).ngroup().to_numpy()
        except TypeError:  # keys that do not sort
            codes = table.groupby(group_cols, sort=False, dropna=False).ngroup().to_numpy()
    else:
        codes = np.zeros(len(table), dtype=np.int64)
    order = np.lexsort((rank, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    def describe(first: int) -> str:
        return ", ".join(f"{c}={v}" for c, v in table[group_cols].iloc[first].items()) if group_cols \
            else "(whole table)"

    groups = []
    for members in np.split(order, bounds):
        totals = members[is_total[members]]
        if len(totals) > 1:
            raise ParameterError(f"group {describe(members[0])}: {len(totals)} total rows (rows "
                                 f"{_examples(table.index, np.isin(np.arange(len(table)), totals))}); "
                                 "a group has at most one total row")
        groups.append(_Group(members[~is_total[members]], int(totals[0]) if len(totals) else None,
                             partial(describe, members[0])))
    return groups


# ------------------------------------------------------------------------------------------- the rules


def _in_threshold(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """True where a value is a forbidden count (nan is never)."""
    with np.errstate(invalid="ignore"):
        return (values >= lo) & (values <= hi)


def _protected(cell_values: np.ndarray, cell_hidden: np.ndarray, total_hidden: bool, lo: float, hi: float) -> bool:
    """Whether no hidden cell of a group, nor their sum, can be recovered from the group's total.

    Examples
    --------
    >>> _protected(np.array([120., 8, 45, 30]), np.array([False, True, False, False]), False, 1, 10)
    False
    >>> _protected(np.array([120., 8, 45, 30]), np.array([False, True, False, True]), False, 1, 10)
    True
    >>> _protected(np.array([50., 3, 4]), np.array([False, True, True]), False, 1, 10)
    False
    """
    hidden_nonzero = cell_hidden & (cell_values > 0)
    if total_hidden:
        return bool(hidden_nonzero.any() or not (cell_values > 0).any())
    hidden_sum = cell_values[cell_hidden].sum()
    return bool(hidden_nonzero.sum() != 1 and not lo <= hidden_sum <= hi)


def _smallest_shown(cell_values: np.ndarray, cell_hidden: np.ndarray, cell_rank: np.ndarray) -> int | None:
    """Position (within the group) of the smallest non-zero displayed cell, ties by rank; None if none."""
    candidates = np.flatnonzero(~cell_hidden & (cell_values > 0))
    if not len(candidates):
        return None
    return int(candidates[np.lexsort((cell_rank[candidates], cell_values[candidates]))[0]])


def _complements(values: np.ndarray, hidden: np.ndarray, group: _Group, rank: np.ndarray, lo: float, hi: float,
                 outside_hidden: bool) -> tuple[list[int], bool]:
    """Rows to hide so that ``group`` is protected in one column, and whether the group is then safe.

    ``outside_hidden`` is used for a group without a total row: whether its total, shown elsewhere, is hidden
    there (being itself a forbidden count). Such a group can run out of cells to hide while unprotected;
    every non-zero cell is then hidden, so the outside total reveals only itself -- unless exactly one cell
    is hidden and all the others are displayed zeros, which pins the total on that one row: not safe.
    """
    cell_values = values[group.cells]
    cell_hidden = hidden[group.cells].copy()
    total_hidden = bool(hidden[group.total]) if group.total is not None else outside_hidden
    added: list[int] = []
    while not _protected(cell_values, cell_hidden, total_hidden, lo, hi):
        pick = _smallest_shown(cell_values, cell_hidden, rank[group.cells])
        if pick is not None:
            cell_hidden[pick] = True
            added.append(int(group.cells[pick]))
        elif group.total is not None and not total_hidden:
            total_hidden = True
            added.append(group.total)
        else:
            return added, int(cell_hidden.sum()) != 1
    return added, True


def _primary(values: dict[str, np.ndarray], lo: float, hi: float) -> tuple[dict, dict]:
    hidden = {c: _in_threshold(v, lo, hi) for c, v in values.items()}
    reason = {c: np.where(h, "primary", "").astype(object) for c, h in hidden.items()}
    return hidden, reason


def _within_row(values: dict[str, np.ndarray], hidden: dict, reason: dict, denominator: str | None,
                numerators: list[str], lo: float, hi: float) -> None:
    for x in numerators:
        rule = _in_threshold(values[denominator], lo, hi) | _in_threshold(values[denominator] - values[x], lo, hi)
        reason[x][rule & ~hidden[x]] = "derived"
        hidden[x] |= rule


def _complementary(values: dict[str, np.ndarray], hidden: dict, reason: dict, groups: list[_Group],
                   rank: np.ndarray, denominator: str | None, numerators: list[str],
                   lo: float, hi: float) -> list[tuple[str, str]]:
    """Hide complements until every group is protected in every column; return the groups that cannot be."""
    views = [(c, values[c], c) for c in values]
    views += [(f"{denominator} - {x}", values[denominator] - values[x], x) for x in numerators]
    groups = [g for g in groups if g.total is not None or len(g.cells) > 1]
    sums = {c: np.array([v[g.cells].sum() for g in groups]) for c, v in values.items()}
    outside_hidden = {c: _in_threshold(total, lo, hi) for c, total in sums.items()}
    for x in numerators:  # the non-events total is known wherever the n and events totals are both shown
        outside_hidden[f"{denominator} - {x}"] = outside_hidden[denominator] | outside_hidden[x]
    changed = True
    while changed:
        changed = False
        unprotected = []
        for name, view_values, target in views:
            if name == target:
                view_hidden = hidden[target]
            else:  # a non-events cell is hidden when its n or its events is
                view_hidden = hidden[denominator] | hidden[target]
            for i, group in enumerate(groups):
                added, ok = _complements(view_values, view_hidden, group, rank, lo, hi, outside_hidden[name][i])
                if not ok:
                    unprotected.append((name, group.key))
                for pos in added:
                    if not hidden[target][pos]:
                        hidden[target][pos] = True
                        reason[target][pos] = "complementary"
                        changed = True
                    view_hidden[pos] = True
    return unprotected


def _row_reason(reason: dict, n_rows: int) -> np.ndarray:
    label = np.full(n_rows, "", dtype=object)
    for r in reversed(REASONS):
        for cell_reason in reason.values():
            label[cell_reason == r] = r
    return label


# ------------------------------------------------------------------------------------------- public API


def suppress_counts(table: pd.DataFrame, *, count_cols: str | Sequence[str],
                    group_cols: str | Sequence[str] | None = None,
                    total_rows: str | pd.Series | Sequence[bool] | None = None,
                    threshold: tuple[float, float] = (1, 10), derived_cols: str | Sequence[str] | None = None,
                    denominator: str | None = "n") -> pd.DataFrame:
    """Hide small counts, and every value that would reveal one, in a table meant for sharing.

    Parameters
    ----------
    table : DataFrame
        Tidy table, one row per cell; the count columns must be complete, non-negative numbers.
    count_cols : str or list of str
        Count columns (e.g. ``["n", "events"]``).
    group_cols : str or list of str, optional
        Columns whose values define the groups of rows that add up to a displayed total (e.g. ``"market"``
        for facilities within a market). None: the whole table is one group. Missing keys form a group.
    total_rows : str, boolean Series or array, optional
        The rows holding group totals: a boolean column name or a mask. A total row shares its group's keys;
        at most one per group. Totals are displayed unless a rule hides them. A group without a total row
        is treated as if its total were displayed elsewhere.
    threshold : (low, high)
        Forbidden counts, inclusive: ``(1, 10)`` under the CMS policy.
    derived_cols : str or list of str, optional
        Columns computed from the counts of their row, hidden with them, in addition to ``rate``,
        ``lower`` and ``upper`` (always, when present).
    denominator : str or None
        The count column the other count columns are numerators of (the within-row rules); None switches
        those rules off. Ignored when it is not among ``count_cols``.

    Returns
    -------
    DataFrame
        A copy of ``table`` with hidden values missing (integer count columns become nullable ``Int64``),
        plus ``suppressed`` (bool: any value of the row hidden) and ``suppression_reason`` (``"primary"``,
        ``"complementary"``, ``"derived"`` or ``""``). The input is not modified.

    Raises
    ------
    ParameterError
        Unknown columns, non-numeric, missing or negative counts, a numerator above its denominator, a bad
        threshold or ``total_rows`` mask, or two total rows in one group.

    Warns
    -----
    DisclosureWarning
        A group without a total row, one hidden cell and zeros elsewhere: its total, if published, would
        reveal that cell.

    Notes
    -----
    The rules, the choice of complementary cells (smallest non-zero displayed count, ties by index label)
    and the fixed-point iteration are described in the module docstring (:mod:`carequal.disclosure`).

    Examples
    --------
    Four facilities of one market: 8 is hidden, and 30 (the smallest other count) with it, so the market
    total of 203 gives away only 8 + 30 = 38.

    >>> t = pd.DataFrame({"facility": ["A", "B", "C", "D"], "n": [120, 8, 45, 30]})
    >>> suppress_counts(t, count_cols="n")
      facility     n  suppressed suppression_reason
    0        A   120       False
    1        B  <NA>        True            primary
    2        C    45       False
    3        D  <NA>        True      complementary

    ``n - events = 5`` at A hides its events and rate; B's events are hidden so A's cannot be recovered.

    >>> t = pd.DataFrame({"n": [50, 40, 60], "events": [45, 12, 20], "rate": [0.9, 0.3, 0.3333]})
    >>> suppress_counts(t, count_cols=["n", "events"])
        n  events    rate  suppressed suppression_reason
    0  50    <NA>     NaN        True            derived
    1  40    <NA>     NaN        True      complementary
    2  60      20  0.3333       False
    """
    lo, hi = _threshold(threshold)
    counts = _columns(table, count_cols, "count_cols")
    if not counts:
        raise ParameterError("count_cols: give at least one count column")
    by = _columns(table, group_cols, "group_cols")
    extra = _columns(table, derived_cols, "derived_cols")
    overlap = sorted(set(extra) & set(counts))
    if overlap:
        raise ParameterError(f"derived_cols: {', '.join(overlap)} are count columns; list them in one place only")
    derived = [c for c in RATE_COLUMNS if c in table.columns and c not in counts and c not in extra] + extra

    values = _count_values(table, counts)
    numerators = _numerators(values, denominator, table.index)
    rank = _tie_rank(table.index)
    groups = _groups(table, by, _total_mask(table, total_rows), rank)

    hidden, reason = _primary(values, lo, hi)
    _within_row(values, hidden, reason, denominator, numerators, lo, hi)
    unprotected = _complementary(values, hidden, reason, groups, rank, denominator, numerators, lo, hi)
    if unprotected:
        shown = "; ".join(f"{name} in group {key}" for name, key in unprotected[:5])
        warnings.warn(f"cannot protect {len(unprotected)} group column(s) inside the table ({shown}): one "
                      "cell is hidden and the others show 0, so the group's total, which is not in the table, "
                      "would reveal it; do not publish that total, or add total rows (total_rows) so that "
                      "suppress_counts can hide them", DisclosureWarning, stacklevel=2)
    return _apply(table, counts, derived, hidden, reason)


def _apply(table: pd.DataFrame, counts: list[str], derived: list[str], hidden: dict, reason: dict) -> pd.DataFrame:
    out = table.copy()
    row_hidden = np.zeros(len(table), dtype=bool)
    for c in counts:
        col = out[c].astype("Int64") if pd.api.types.is_integer_dtype(out[c]) else out[c]
        out[c] = col.mask(hidden[c])
        row_hidden |= hidden[c]
    for c in derived:
        out[c] = out[c].mask(row_hidden)
    out["suppressed"] = row_hidden
    out["suppression_reason"] = pd.Series(_row_reason(reason, len(table)), index=out.index, dtype=str)
    return out


def _relation_failures(values: np.ndarray, groups: list[_Group], lo: float, hi: float) -> list[str]:
    """Groups whose displayed total minus displayed cells recovers a hidden cell or a small hidden sum."""
    failed = []
    for group in groups:
        if group.total is None or np.isnan(values[group.total]):
            continue
        cells = values[group.cells]
        n_hidden = int(np.isnan(cells).sum())
        recovered = values[group.total] - np.nansum(cells)
        if n_hidden and ((n_hidden == 1 and recovered != 0) or lo <= recovered <= hi):
            failed.append(group.key)
    return failed


def check_suppressed(table: pd.DataFrame, *, count_cols: str | Sequence[str], threshold: tuple[float, float] = (1, 10),
                     denominator: str | None = "n", group_cols: str | Sequence[str] | None = None,
                     total_rows: str | pd.Series | Sequence[bool] | None = None) -> None:
    """Raise :class:`DisclosureError` if a table meant for sharing displays a forbidden count.

    Checks, as a reader of the table could: every displayed count; the non-events count ``n - x`` of every
    row where ``denominator`` and a numerator ``x`` are both displayed; and, when ``total_rows`` is given,
    every group whose displayed total minus its displayed cells recovers a lone hidden cell or a hidden sum
    in the threshold. Missing values are taken as hidden. Passing is necessary, not sufficient: groups
    whose totals are published elsewhere cannot be checked from this table.

    Parameters
    ----------
    table : DataFrame
        The table as it would be shared.
    count_cols, threshold, denominator, group_cols, total_rows
        As in :func:`suppress_counts`.

    Raises
    ------
    ParameterError
        Unknown or non-numeric columns, a bad threshold or ``total_rows`` mask.
    DisclosureError
        Naming each failing column, the number of offending cells (or groups) and up to five row labels
        (or group keys).

    Examples
    --------
    >>> t = pd.DataFrame({"n": [120, 8, 45, 30]})
    >>> check_suppressed(t, count_cols="n")
    Traceback (most recent call last):
    ...
    carequal.errors.DisclosureError: table fails the cell-size rule: n: 1 displayed cell(s) in 1..10 (rows 1)...
    >>> check_suppressed(suppress_counts(t, count_cols="n"), count_cols="n")
    """
    lo, hi = _threshold(threshold)
    counts = _columns(table, count_cols, "count_cols")
    by = _columns(table, group_cols, "group_cols")
    values = {}
    for c in counts:
        if pd.api.types.is_bool_dtype(table[c]) or not pd.api.types.is_numeric_dtype(table[c]):
            raise ParameterError(f"count column {c!r} must be numeric, not {table[c].dtype}")
        values[c] = table[c].to_numpy(dtype=float, na_value=np.nan)
    if denominator in values:
        for x in [c for c in counts if c != denominator]:
            values[f"{denominator} - {x}"] = values[denominator] - values[x]

    problems = []
    for name, v in values.items():
        bad = _in_threshold(v, lo, hi)
        if bad.any():
            problems.append(f"{name}: {bad.sum()} displayed cell(s) in {_fmt(lo)}..{_fmt(hi)} "
                            f"(rows {_examples(table.index, bad)})")
    if total_rows is not None:
        groups = _groups(table, by, _total_mask(table, total_rows), _tie_rank(table.index))
        for name, v in values.items():
            failed = _relation_failures(v, groups, lo, hi)
            if failed:
                problems.append(f"{name}: {len(failed)} group(s) where the displayed total minus the displayed "
                                f"cells recovers a hidden cell or a hidden sum in {_fmt(lo)}..{_fmt(hi)} "
                                f"(groups {'; '.join(failed[:5])})")
    if problems:
        raise DisclosureError("table fails the cell-size rule: " + "; ".join(problems)
                              + ". Apply suppress_counts with the same columns before sharing.")
