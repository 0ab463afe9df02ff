"""Small-cell suppression: hand-worked tables, the within-row rules, and properties over random tables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carequal.disclosure import DisclosureError, DisclosureWarning, check_suppressed, suppress_counts
from carequal.errors import CarequalError, ParameterError


def market(n: list[int], events: list[int] | None = None, *, total: bool = True) -> pd.DataFrame:
    """One market's facilities A, B, C, ... and (optionally) its total row, which is the column sums."""
    facilities = [chr(ord("A") + i) for i in range(len(n))]
    table = pd.DataFrame({"market": "M", "facility": facilities, "n": n, "is_total": False})
    if events is not None:
        table["events"] = events
    if total:
        sums = table[["n", "events"] if events is not None else ["n"]].sum()
        table = pd.concat([table, pd.DataFrame([{"market": "M", "facility": "ALL", **sums, "is_total": True}])],
                          ignore_index=True)
    return table


def hidden(out: pd.DataFrame, col: str = "n") -> list[str]:
    return out.loc[out[col].isna(), "facility"].tolist()


def suppress_market(table: pd.DataFrame, **kwargs) -> pd.DataFrame:
    counts = ["n", "events"] if "events" in table.columns else ["n"]
    return suppress_counts(table, count_cols=counts, group_cols="market", total_rows="is_total", **kwargs)


# ------------------------------------------------------------------------------------ hand-worked tables


def test_market_of_four_facilities():
    out = suppress_market(market([120, 8, 45, 30]))
    # 8 is primary. Alone it would be 203 - (120 + 45 + 30); the smallest other non-zero cell, 30, goes with it
    assert hidden(out) == ["B", "D"]
    assert out["suppression_reason"].tolist() == ["", "primary", "", "complementary", ""]
    assert out["suppressed"].tolist() == [False, True, False, True, False]
    total = out.loc[out["is_total"], "n"].item()
    assert total == 203
    revealed = total - out.loc[~out["is_total"], "n"].sum()  # what a reader learns: 8 + 30
    assert revealed == 38 and not 1 <= revealed <= 10


def test_zero_counts_stay_displayed_and_are_never_complements():
    out = suppress_market(market([0, 0, 50, 60]))
    assert hidden(out) == [] and not out["suppressed"].any()
    # 5 is primary; the zeros are not candidates, so the complement is 50 (the smallest non-zero)
    out = suppress_market(market([0, 5, 50, 60]))
    assert hidden(out) == ["B", "C"]
    assert out.loc[0, "n"] == 0


def test_two_primary_cells_summing_above_ten_need_no_complement():
    out = suppress_market(market([6, 7, 50, 60]))
    # a reader learns 6 + 7 = 13 from the total: not a count of 1..10, and neither cell alone
    assert hidden(out) == ["A", "B"]
    assert out["suppression_reason"].tolist() == ["primary", "primary", "", "", ""]


def test_two_primary_cells_summing_to_ten_or_less_need_one_more():
    out = suppress_market(market([3, 4, 50, 60]))
    # 3 + 4 = 7 would be total - displayed; hiding 50 too makes it 57
    assert hidden(out) == ["A", "B", "C"]
    assert out.loc[2, "suppression_reason"] == "complementary"
    assert out.loc[4, "n"] - out.loc[:3, "n"].sum() == 57


def test_complement_ties_go_to_the_lowest_index_label():
    table = pd.DataFrame({"facility": ["A", "B", "C"], "n": [8, 30, 30]}, index=[10, 7, 5])
    out = suppress_counts(table, count_cols="n")
    assert hidden(out) == ["A", "C"]  # C has label 5 < 7
    out = suppress_counts(table.iloc[::-1], count_cols="n")
    assert sorted(hidden(out)) == ["A", "C"]


def test_group_without_total_row_treats_its_total_as_displayed_elsewhere():
    table = market([120, 8, 45, 30], total=False)
    out = suppress_counts(table, count_cols="n", group_cols="market")
    assert hidden(out) == ["B", "D"]
    # each group on its own: the second market has nothing small
    two = pd.concat([table, table.assign(market="Z", n=[120, 80, 45, 30])], ignore_index=True)
    out = suppress_counts(two, count_cols="n", group_cols="market")
    assert out["n"].isna().tolist() == [False, True, False, True] + [False] * 4


# ------------------------------------------------------------------------------------------ within a row


def test_rates_and_derived_columns_go_with_their_events():
    table = pd.DataFrame({"facility": ["A", "B", "C"], "n": [100, 100, 100], "events": [5, 30, 40]})
    table["rate"] = table["events"] / table["n"]
    table["lower"], table["upper"] = table["rate"] - 0.05, table["rate"] + 0.05
    table["pct"] = (100 * table["rate"]).map("{:.0f}%".format)
    out = suppress_counts(table, count_cols=["n", "events"], derived_cols="pct")
    # 5 is primary, 30 its complement; n stays displayed throughout
    assert hidden(out, "events") == ["A", "B"] and hidden(out, "n") == []
    for col in ["rate", "lower", "upper", "pct"]:
        assert out[col].isna().tolist() == [True, True, False], col
    assert out.loc[2, "pct"] == "40%"


def test_few_non_events_hide_the_events():
    table = pd.DataFrame({"facility": ["A", "B", "C"], "n": [50, 200, 300], "events": [45, 60, 90]})
    out = suppress_counts(table, count_cols=["n", "events"])
    # 50 - 45 = 5 non-events: events = n - non-events would reveal them, so 45 goes; then 60 protects it
    assert hidden(out, "events") == ["A", "B"]
    assert hidden(out, "n") == []
    assert out["suppression_reason"].tolist() == ["derived", "complementary", ""]


def test_small_denominator_hides_its_events_even_when_zero():
    table = pd.DataFrame({"facility": ["A", "B", "C"], "n": [8, 100, 120], "events": [0, 20, 30],
                          "rate": [0.0, 0.2, 0.25]})
    out = suppress_counts(table, count_cols=["n", "events"])
    assert hidden(out, "n") == ["A", "B"]  # 8 primary, 100 its complement
    assert hidden(out, "events") == ["A"]  # a hidden 0 reveals nothing in the events column
    assert out["rate"].isna().tolist() == [True, True, False]  # rate = events / n would give n back
    assert out["suppression_reason"].tolist() == ["primary", "complementary", ""]


def test_no_pair_rules_without_a_denominator():
    table = pd.DataFrame({"n": [50, 200, 300], "events": [45, 60, 90]})
    out = suppress_counts(table, count_cols=["n", "events"], denominator=None)
    assert not out["suppressed"].any()


def test_iterates_until_no_column_has_a_lone_hidden_cell():
    table = market([0, 40, 15, 5], [0, 28, 15, 0])
    out = suppress_market(table)
    # Pass 1. n: 5 is primary (D), 15 (C) its complement. events: D's 0 is hidden (n = 5) but protects
    # nothing. non-events (0, 12, 0, 5): hidden at C and D (n hidden), i.e. 5 alone among non-zero -> hide
    # B's events (non-events 12). Pass 2. events: B's 28 is now the lone hidden non-zero cell -> hide C's 15.
    # Pass 3 changes nothing.
    assert hidden(out, "n") == ["C", "D"]
    assert hidden(out, "events") == ["B", "C", "D"]
    assert out["suppression_reason"].tolist() == ["", "complementary", "complementary", "primary", ""]
    assert out.loc[4, ["n", "events"]].tolist() == [60, 43]


def test_total_row_is_hidden_when_no_cell_is_left():
    table = market([50, 30], [45, 0])
    out = suppress_market(table)
    # A's events go (non-events 5); B's events are 0, so only the total's 45 can protect them
    assert hidden(out, "events") == ["A", "ALL"]
    assert hidden(out, "n") == []
    assert out["suppression_reason"].tolist() == ["derived", "", "complementary"]


def test_hidden_total_needs_a_hidden_non_zero_cell():
    table = market([30, 5], [30, 0])
    out = suppress_market(table)
    # total non-events 35 - 30 = 5 hide the total's events; B's events (0) are hidden because n = 5, but a
    # hidden 0 does not stop 30 + 0 from giving the total back, so A's 30 goes too
    assert hidden(out, "events") == ["A", "B", "ALL"]
    assert hidden(out, "n") == ["A", "B"]
    assert out["suppression_reason"].tolist() == ["complementary", "primary", "derived"]


def test_total_rows_follow_the_primary_rule():
    out = suppress_market(market([3, 4, 0]))
    assert hidden(out) == ["A", "B", "ALL"]


def test_warns_when_only_an_outside_total_could_protect():
    table = market([0, 20, 0], [0, 19, 0], total=False)
    with pytest.warns(DisclosureWarning, match="events in group market=M"):
        out = suppress_counts(table, count_cols=["n", "events"], group_cols="market")
    assert hidden(out, "events") == ["B"]


def test_single_row_groups_without_totals_do_not_warn():
    table = pd.DataFrame({"facility": ["A", "B"], "n": [50, 60], "events": [45, 30]})
    out = suppress_counts(table, count_cols=["n", "events"], group_cols="facility")
    assert hidden(out, "events") == ["A"]


# ------------------------------------------------------------------------------------ output and errors


def test_dtypes_and_input_untouched():
    table = pd.DataFrame({"n": [120, 8, 45, 30], "events": [10.0, 2.0, 20.0, 15.0]})
    before = table.copy(deep=True)
    out = suppress_counts(table, count_cols=["n", "events"])
    assert table.equals(before)
    assert out["n"].dtype == "Int64" and out["n"].isna().sum() == 2
    assert out["events"].dtype == np.float64
    assert out["suppressed"].dtype == bool
    # events 10 and 2 are primary (hidden sum 12); n = 8 is primary and 30 its complement
    assert out["suppression_reason"].tolist() == ["primary", "primary", "", "complementary"]


def test_threshold_is_a_parameter():
    out = suppress_counts(pd.DataFrame({"n": [120, 8, 45, 30]}), count_cols="n", threshold=(1, 5))
    assert not out["suppressed"].any()


@pytest.mark.parametrize(("table", "kwargs", "match"), [
    (pd.DataFrame({"n": [1.0, np.nan]}), {}, "1 missing"),
    (pd.DataFrame({"n": [-1, 20]}), {}, "negative"),
    (pd.DataFrame({"n": ["a", "b"]}), {}, "numeric"),
    (pd.DataFrame({"n": [10, 20], "events": [11, 2]}), {"count_cols": ["n", "events"]}, "exceeds"),
    (pd.DataFrame({"n": [10, 20]}), {"count_cols": "m"}, "not in the table"),
    (pd.DataFrame({"n": [10, 20]}), {"threshold": (0, 10)}, "threshold"),
    (pd.DataFrame({"n": [10, 20]}), {"total_rows": [1, 0]}, "boolean"),
    (pd.DataFrame({"n": [10, 20]}), {"total_rows": [True, True]}, "at most one total row"),
    (pd.DataFrame({"n": [10, 20], "rate": [0.1, 0.2]}), {"derived_cols": "n"}, "count columns"),
])
def test_bad_arguments(table, kwargs, match):
    kwargs = {"count_cols": "n", **kwargs}
    with pytest.raises(ParameterError, match=match):
        suppress_counts(table, **kwargs)


def test_check_suppressed_raises_on_raw_and_passes_on_suppressed():
    raw = market([120, 8, 45, 30], [60, 2, 20, 15])
    with pytest.raises(DisclosureError, match=r"n: 1 displayed cell\(s\) in 1\.\.10 \(rows 1\)") as info:
        check_suppressed(raw, count_cols=["n", "events"])
    assert isinstance(info.value, CarequalError)
    assert "events: 1 displayed cell(s)" in str(info.value)
    check_suppressed(suppress_market(raw), count_cols=["n", "events"], group_cols="market", total_rows="is_total")


def test_check_suppressed_sees_non_events_and_subtraction():
    with pytest.raises(DisclosureError, match=r"n - events: 1 displayed"):
        check_suppressed(pd.DataFrame({"n": [50], "events": [45]}), count_cols=["n", "events"])
    only_primary = market([120, 8, 45, 30]).astype({"n": "Int64"})
    only_primary.loc[1, "n"] = pd.NA
    check_suppressed(only_primary, count_cols="n")  # no displayed small count...
    with pytest.raises(DisclosureError, match=r"n: 1 group\(s\) .* recovers .*market=M"):
        check_suppressed(only_primary, count_cols="n", group_cols="market", total_rows="is_total")  # ...but 203-195


def test_check_suppressed_lists_at_most_five_rows():
    table = pd.DataFrame({"n": [1, 2, 3, 4, 5, 6, 7]}, index=list("abcdefg"))
    with pytest.raises(DisclosureError, match=r"n: 7 displayed cell\(s\) in 1\.\.10 \(rows a, b, c, d, e\)\."):
        check_suppressed(table, count_cols="n")


# ------------------------------------------------------------------------------------------- properties


@st.composite
def markets(draw, *, totals: bool = True) -> pd.DataFrame:
    """1-4 markets of 1-8 facilities; counts 0..200, often near the threshold; events <= n."""
    frames = []
    for m in range(draw(st.integers(1, 4))):
        cells = draw(st.integers(1, 8))
        n = [draw(st.one_of(st.integers(0, 15), st.integers(0, 200))) for _ in range(cells)]
        events = [draw(st.one_of(st.integers(0, min(k, 12)), st.integers(max(0, k - 12), k), st.integers(0, k)))
                  for k in n]
        frame = market(n, events, total=totals).assign(market=f"M{m}")
        frames.append(frame)
    return keyed(pd.concat(frames, ignore_index=True))


def views(table: pd.DataFrame, out: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per count (and the non-events count): the true values and whether the reader sees them."""
    hidden_n, hidden_e = out["n"].isna().to_numpy(), out["events"].isna().to_numpy()
    n, e = table["n"].to_numpy(), table["events"].to_numpy()
    return {"n": (n, hidden_n), "events": (e, hidden_e), "n - events": (n - e, hidden_n | hidden_e)}


def assert_protected(table: pd.DataFrame, out: pd.DataFrame) -> None:
    is_total = table["is_total"].to_numpy()
    for name, (values, hid) in views(table, out).items():
        shown = values[~hid]
        assert not ((shown >= 1) & (shown <= 10)).any(), f"{name}: a displayed count in 1..10"
        for _, rows in table.groupby("market").indices.items():
            cells, total = rows[~is_total[rows]], rows[is_total[rows]]
            nonzero_hidden = (hid[cells] & (values[cells] > 0)).sum()
            if not hid[total].any():
                # the total is displayed: total - displayed cells = the hidden sum
                hidden_sum = values[cells][hid[cells]].sum()
                assert hidden_sum == 0 or hidden_sum > 10, f"{name}: hidden sum {hidden_sum}"
                assert nonzero_hidden != 1, f"{name}: a lone hidden cell"
            else:
                # a hidden total (e.g. 3 + 0 = 3, primary) must not be the sum of displayed cells; its own
                # hidden sum may be small, since then nothing gives it away
                assert nonzero_hidden >= 1 or not (values[cells] > 0).any(), f"{name}: total = sum of cells"


def keyed(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(key=table["market"] + "/" + table["facility"],
                        rate=table["events"] / table["n"].where(table["n"] > 0))


@settings(max_examples=75, deadline=None)
@given(table=markets(), seed=st.integers(0, 2**32 - 1))
@example(table=keyed(market([0, 40, 15, 5], [0, 28, 15, 0])), seed=0)  # needs a second pass
@example(table=keyed(market([30, 5], [30, 0])), seed=0)  # hidden total, only a hidden 0 among the cells
def test_properties_with_displayed_totals(table, seed):
    before = table.copy(deep=True)
    out = suppress_market(table)
    assert_protected(table, out)
    assert table.equals(before)
    any_hidden = out["n"].isna() | out["events"].isna()
    assert out["rate"].isna().to_numpy()[any_hidden.to_numpy()].all()
    assert (out["suppressed"] == any_hidden).all()
    check_suppressed(out, count_cols=["n", "events"], group_cols="market", total_rows="is_total")

    shuffled = suppress_market(table.sample(frac=1, random_state=seed))
    a = out.set_index("key")[["n", "events", "suppression_reason"]]
    b = shuffled.set_index("key").loc[a.index, ["n", "events", "suppression_reason"]]
    assert a.isna().equals(b.isna())
    assert a["suppression_reason"].equals(b["suppression_reason"])


@settings(max_examples=40, deadline=None)
@given(table=markets(totals=False), seed=st.integers(0, 2**32 - 1))
def test_properties_without_total_rows(table, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisclosureWarning)
        out = suppress_market(table)
        shuffled = suppress_market(table.sample(frac=1, random_state=seed))
    for name, (values, hid) in views(table, out).items():
        assert not ((values[~hid] >= 1) & (values[~hid] <= 10)).any(), name
    a = out.set_index("key")[["n", "events"]].isna()
    assert a.equals(shuffled.set_index("key").loc[a.index, ["n", "events"]].isna())
