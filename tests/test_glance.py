""""At a glance" (issue 16): the three to five sentences at the top of every report and packet, generated from
the numbers the report shows, each linking to a section that exists; and the plain-language rules around them
(technical notes in manager words, row counts of input files never suppressed, a target never "suppressed")."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import carequal
from carequal import packet as pk
from carequal import report as rpt
from carequal.presentation import glance_html, presentable, section_anchor


def _kpis(**over) -> pd.DataFrame:
    base = {"measure": ["readmission", "mortality", "pac_readmission"],
            "label": ["30-day unplanned readmission", "30-day mortality", "30-day readmission after post-acute"],
            "rate": [0.169, 0.058, 0.192], "prev_rate": [0.185, 0.05, 0.181],
            "ratio": [1.23, 0.99, 1.34], "ratio_lower": [1.07, 0.76, 1.09], "ratio_upper": [1.42, 1.25, 1.64],
            "change": [-0.016, 0.008, 0.011], "change_lower": [-0.046, -0.009, -0.034],
            "change_upper": [0.013, 0.026, 0.057]}
    base.update(over)
    return pd.DataFrame(base)


def _card() -> pd.DataFrame:
    return pd.DataFrame({"measure": ["readmission", "readmission", "mortality"],
                         "label": ["30-day unplanned readmission", "30-day unplanned readmission", "30-day mortality"],
                         "name": ["Riverton Regional", "Riverton Memorial", "Riverton Regional"],
                         "is_partner": [True, False, True], "ratio": [1.36, 0.7, 1.05], "lower": [1.15, 0.5, 0.77],
                         "upper": [1.61, 0.95, 1.4],
                         "judgement": ["higher than expected", "lower than expected", "as expected"]})


def test_glance_names_what_is_worse_what_changed_and_who():
    chart = pd.DataFrame({"period": pd.date_range("2023-10-01", periods=6, freq="MS"),
                          "signal": ["", "concern", "", "", "concern", ""]})
    items = rpt.at_a_glance(_kpis(), _card(), {"readmission": chart}, since=pd.Timestamp("2024-01-01"))
    assert 3 <= len(items) <= 5
    text = [t for t, _ in items]
    assert text[0].startswith("Worse than expected for these patients: 30-day unplanned readmission (O/E 1.23, "
                              "95% CI 1.07–1.42) and 30-day readmission after post-acute (O/E 1.34")
    assert "mortality" not in text[0]
    assert text[1] == "No measure changed by more than chance since last period."
    # the partner worse than expected is named; the facility lower than expected (better) is not "worse"
    assert "Riverton Regional (partner; 30-day unplanned readmission, O/E 1.36" in text[2]
    assert "Memorial" not in text[2]
    # only the signal inside the reporting period (Feb 2024), not the one of November 2023
    assert text[3].endswith("30-day unplanned readmission in February 2024.")
    assert [s for _, s in items] == ["Headline findings", "Headline findings", "Partner scorecard",
                                     "Trends and signals"]


def test_glance_when_nothing_is_wrong_and_when_a_change_is_real():
    k = _kpis(ratio_lower=[0.9, 0.76, 0.8], ratio_upper=[1.1, 1.25, 1.2], change=[-0.05, 0.0, 0.0],
              change_lower=[-0.08, -0.01, -0.01], change_upper=[-0.02, 0.01, 0.01])
    items = rpt.at_a_glance(k, _card().iloc[[1, 2]], {})
    text = [t for t, _ in items]
    assert len(items) == 3
    assert text[0] == "Every measure shown is in line with what is expected for these patients nationally."
    assert text[1] == ("Changed for real since last period: 30-day unplanned readmission fell from 18.5% to 16.9% "
                       "(better).")
    assert text[2] == "No facility is worse than expected on any measure."
    hidden = rpt.at_a_glance(_kpis(ratio=[np.nan] * 3, ratio_lower=[np.nan] * 3, ratio_upper=[np.nan] * 3,
                                   rate=[np.nan] * 3, change=[np.nan] * 3, change_lower=[np.nan] * 3,
                                   change_upper=[np.nan] * 3), _card().iloc[:0], {})
    assert hidden[0][0].startswith("Too few cases")
    assert "nan" not in " ".join(t for t, _ in hidden)


@pytest.mark.parametrize(("notebook", "sections"), [("market_report", rpt.SECTIONS),
                                                    ("partner_packet", pk.PACKET_SECTIONS)])
def test_every_glance_link_has_its_section(notebook, sections):
    source = (Path(carequal.__file__).parent / "notebooks" / f"{notebook}.py").read_text()
    headings = set(re.findall(r"^# #+ (.+)$", source, flags=re.MULTILINE))
    assert set(sections.values()) <= headings
    html = glance_html([("x", s) for s in sections.values()])
    for title in sections.values():
        assert f'href="#{section_anchor(title)}"' in html


def test_technical_notes_in_manager_words():
    note = rpt.plain_note("funnel_data: 3 unit(s) with no events have an infinite z-score on the SHMI log scale "
                          "and were left out of φ and τ²")
    assert note.startswith("3 facilities had no events in the period.")
    for word in ("z-score", "SHMI", "φ", "τ²", "funnel_data", "unit(s)"):
        assert word not in note
    candidates = rpt.plain_note("cannot protect 2 group column(s) inside the table (snf in group A; irf in group "
                                "B): one cell is hidden and the others show 0, so the group's total, which is not "
                                "in the table, would reveal it; do not publish that total, or add total rows "
                                "(total_rows) so that suppress_counts can hide them")
    assert candidates.startswith("In the candidate partners' table") and "suppress_counts" not in candidates
    card = pd.DataFrame()
    card.attrs["notes"] = ["funnel_data: only 1 unit(s) to estimate the dispersion; τ² set to 0"] * 2
    notes = rpt.report_notes(card, SimpleNamespace(min_cell=11))
    assert len(notes) == 1 and "Only 1 facility could be used" in notes[0] and "τ" not in notes[0]


def test_row_counts_of_input_files_are_never_suppressed():
    counts = pd.DataFrame({"table": ["facilities", "stays"], "loaded": [51, 12000], "accepted": [49, 11997],
                           "quarantined": [2, 3]})
    table = rpt.validation_table((counts, pd.DataFrame()), min_cell=11)
    shown = presentable(table, columns={"table": "Table", "rows_read": "Rows read", "rows_kept": "Rows kept",
                                        "rows_set_aside": "Rows set aside"},
                        integers=("rows_read", "rows_kept", "rows_set_aside"))
    assert shown.to_dict("records") == [
        {"Table": "facilities", "Rows read": "51", "Rows kept": "49", "Rows set aside": "2"},
        {"Table": "stays", "Rows read": "12,000", "Rows kept": "11,997", "Rows set aside": "3"}]


def test_a_target_is_never_shown_as_suppressed():
    row = SimpleNamespace(target=np.nan, target_basis="market non-partners", better="lower",
                          measure="readmission")
    assert pk._target_text(row) == "≤ market non-partners"
    assert pk._target_text(SimpleNamespace(target=0.15, target_basis="fixed", better="lower",
                                           measure="readmission")) == "≤ 15.0%"
