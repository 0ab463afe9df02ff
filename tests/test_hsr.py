"""CMS Hospital-Specific Reports: the published model by hand, CMS's own Table 2, and layout independence.

The FY2023 mock HSR is a public CMS file copied into the repository (``tests/data/cms/hsr``, see the README
there), so these tests run in every clone. Its discharge rows are mock, but its coefficients, HOSP_EFFECT/
AVG_EFFECT and Table 2 are CMS's own, so agreement with Table 2 is agreement with CMS. The layouts of other
programme years (reworded or marked headers, numbers stored as text, blank risk cells, measure labels spelt out
or abbreviated) are built here from that file and must reproduce the same published Table 2.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from carequal.errors import ParameterError, SchemaError
from carequal.hsr import (
    DISCHARGE_HEADERS,
    MEASURES,
    TABLE2_HEADERS,
    apply_published_model,
    eligible_stays,
    excess_readmission_ratio,
    normalise_header,
    read_hsr,
    reproduce_table2,
)

HSR_DIR = Path(__file__).resolve().parent / "data" / "cms" / "hsr"
FY2023 = HSR_DIR / "FY2023_HRRP_MockHSR.xlsx"


def expit_by_hand(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ---------------------------------------------------------------------------------------------------------------
# The published model, worked by hand
# ---------------------------------------------------------------------------------------------------------------

# Coefficients chosen so every probability is a simple fraction: HOSP_EFFECT = ln(1/4) and AVG_EFFECT = ln(1/9)
# are odds 1/4 and 1/9 at xβ = 0; β(male) = ln 2 doubles the odds; β(years over 65) = ln(3)/10 triples them
# at 10 years. p = odds / (1 + odds).
BETA = pd.Series({"years_over_65": math.log(3) / 10, "male": math.log(2)})
HOSP, AVG = math.log(1 / 4), math.log(1 / 9)
STAYS = pd.DataFrame({"years_over_65": [0, 0, 10], "male": [0, 1, 0], "unused": ["a", "b", "c"]},
                     index=["S1", "S2", "S3"])


def test_apply_published_model_by_hand():
    out = apply_published_model(STAYS, BETA, hospital_effect=HOSP, average_effect=AVG)
    assert list(out.index) == ["S1", "S2", "S3"]
    # S1: xβ = 0          → predicted odds 1/4 → 1/5;  expected odds 1/9 → 1/10
    # S2: xβ = ln 2       → predicted odds 1/2 → 1/3;  expected odds 2/9 → 2/11
    # S3: xβ = 10·ln(3)/10 = ln 3 → predicted odds 3/4 → 3/7;  expected odds 3/9 → 1/4
    np.testing.assert_allclose(out["linear_predictor"], [0.0, math.log(2), math.log(3)], rtol=1e-15)
    np.testing.assert_allclose(out["predicted"], [1 / 5, 1 / 3, 3 / 7], rtol=1e-14)
    np.testing.assert_allclose(out["expected"], [1 / 10, 2 / 11, 1 / 4], rtol=1e-14)
    # and the same through the logistic function written out
    for stay, xb in zip(out.index, out["linear_predictor"], strict=True):
        assert out.loc[stay, "predicted"] == pytest.approx(expit_by_hand(HOSP + xb), rel=1e-14)
        assert out.loc[stay, "expected"] == pytest.approx(expit_by_hand(AVG + xb), rel=1e-14)


def test_excess_readmission_ratio_by_hand():
    out = excess_readmission_ratio(STAYS, BETA, hospital_effect=HOSP, average_effect=AVG)
    predicted = (1 / 5 + 1 / 3 + 3 / 7) / 3
    expected = (1 / 10 + 2 / 11 + 1 / 4) / 3
    row = out.iloc[0]
    assert row["n"] == 3
    assert row["predicted"] == pytest.approx(predicted, rel=1e-14)
    assert row["expected"] == pytest.approx(expected, rel=1e-14)
    assert row["ratio"] == pytest.approx(predicted / expected, rel=1e-14)


def test_excess_readmission_ratio_of_no_stays_is_a_row_with_n_0():
    out = excess_readmission_ratio(STAYS.iloc[:0], BETA, hospital_effect=HOSP, average_effect=AVG)
    assert out["n"].tolist() == [0]
    assert out[["predicted", "expected", "ratio"]].isna().all(axis=None)


def test_apply_published_model_leaves_input_alone_and_follows_rows():
    before = STAYS.copy()
    shuffled = STAYS.loc[["S3", "S1", "S2"]]
    out = apply_published_model(shuffled, BETA, hospital_effect=HOSP, average_effect=AVG)
    assert STAYS.equals(before)
    reference = apply_published_model(STAYS, BETA, hospital_effect=HOSP, average_effect=AVG)
    pd.testing.assert_frame_equal(out, reference.loc[["S3", "S1", "S2"]])


def test_missing_coefficient_column_is_named():
    with pytest.raises(ParameterError, match=r"no column for 2 coefficient\(s\): 'dialysis', 'stroke'"):
        apply_published_model(STAYS, pd.concat([BETA, pd.Series({"dialysis": 0.1, "stroke": 0.2})]),
                              hospital_effect=HOSP, average_effect=AVG)


def test_non_numeric_and_missing_covariates_are_named_with_count_and_rows():
    bad = STAYS.assign(male=pd.Series(["1", None, 0], index=STAYS.index, dtype=object),
                       years_over_65=[0.0, np.nan, 1.0])
    with pytest.raises(ParameterError) as info:
        apply_published_model(bad, BETA, hospital_effect=HOSP, average_effect=AVG)
    message = str(info.value)
    assert "'years_over_65': 1 of 3 rows missing or not numeric (rows 'S2': nan)" in message
    assert "'male': 2 of 3 rows missing or not numeric (rows 'S1': '1', 'S2': None)" in message


def test_intercepts_are_arguments_not_coefficients():
    with pytest.raises(ParameterError, match="'HOSP_EFFECT' is an intercept"):
        apply_published_model(STAYS, pd.concat([BETA, pd.Series({"HOSP_EFFECT": -2.0})]), hospital_effect=HOSP,
                              average_effect=AVG)
    with pytest.raises(ParameterError, match="hospital_effect must be a finite number"):
        apply_published_model(STAYS, BETA, hospital_effect=float("nan"), average_effect=AVG)


def test_booleans_are_numeric_covariates():
    flags = STAYS.assign(male=[False, True, False])
    out = apply_published_model(flags, BETA, hospital_effect=HOSP, average_effect=AVG)
    np.testing.assert_allclose(out["predicted"], [1 / 5, 1 / 3, 3 / 7], rtol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# CMS's own results: the FY2023 mock HSR
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fy2023():
    return read_hsr(FY2023)


@pytest.fixture(scope="module")
def fy2023_reproduced(fy2023):
    return reproduce_table2(fy2023).set_index("measure")


def as_shown(value: float, decimals: int) -> str:
    """The value as the workbook displays it (Excel rounds the stored number to the format's decimals)."""
    return f"{value:.{decimals}f}"


def test_fy2023_has_every_hrrp_measure(fy2023):
    assert fy2023.fiscal_year == 2023
    assert set(fy2023.measures) == set(MEASURES)
    assert fy2023.table2["measure"].tolist() == ["AMI", "COPD", "HF", "PN", "CABG", "HK"]
    # what the workbook displays (number formats "#,##0", "0.0000%", "0.0000"): rates as percentages with
    # four decimals, i.e. six decimals of the stored fraction; the ERR with four.
    assert {k: fy2023.table2_decimals[k] for k in ("n", "events", "predicted", "expected", "ratio")} == {
        "n": 0, "events": 0, "predicted": 6, "expected": 6, "ratio": 4}


def test_fy2023_model_read_by_header(fy2023):
    ami = fy2023.measures["AMI"]
    # values as they stand in the workbook (coefficient row under the header), found by header text
    assert ami.coefficients["Years Over 65 (continuous)"] == 0.008023553177513
    assert ami.coefficients["Anterior Myocardial Infarction"] == 0.27919742261769
    assert ami.hospital_effect == -2.86518808993795 and ami.average_effect == -2.86998934034354
    assert len(ami.coefficients) == 32 and "HOSP_EFFECT" not in ami.coefficients.index
    assert {m: len(t.coefficients) for m, t in fy2023.measures.items()} == {
        "AMI": 32, "COPD": 41, "HF": 38, "PN": 42, "CABG": 27, "HK": 34}
    for table in fy2023.measures.values():
        assert table.coefficients.index[0] == "Years Over 65 (continuous)"
        assert set(table.coefficients.index) <= set(table.discharges.columns)


def test_fy2023_inclusion_indicator_agrees_with_index_stay_flag(fy2023):
    # the workbook marks a counted stay twice: indicator "0" and "Index Stay (Yes/No)" = Yes
    for table in fy2023.measures.values():
        index_stay = table.discharges[table.columns["index_stay"]].eq("Yes")
        assert eligible_stays(table).equals(index_stay.rename("eligible"))


@pytest.mark.parametrize("measure", ["AMI", "COPD", "HF", "PN", "HK"])
def test_fy2023_table2_reproduced_at_the_digits_shown(fy2023, fy2023_reproduced, measure):
    row = fy2023_reproduced.loc[measure]
    assert row["n"] == row["n_cms"]
    assert row["events"] == row["events_cms"]
    for q in ("predicted", "expected", "ratio"):
        decimals = fy2023.table2_decimals[q]
        assert as_shown(row[q], decimals) == as_shown(row[f"{q}_cms"], decimals), q
        # the stored values agree far beyond the display: CMS stores 14 significant digits
        assert abs(row[f"{q}_diff"]) < 1e-12, q
    assert row["agrees"]


# Table 2 of the FY2023 mock HSR as the workbook displays it (number formats "#,##0", "0.0000%", "0.0000"):
# eligible discharges, readmissions, predicted rate, expected rate, ERR; CABG shows NQ. CMS's published values.
FY2023_TABLE2_SHOWN = {
    "AMI": "4 1 19.8479% 19.7720% 1.0038",
    "COPD": "10 1 15.0555% 15.1592% 0.9932",
    "HF": "36 13 21.8777% 20.2413% 1.0808",
    "PN": "27 0 14.1833% 14.9585% 0.9482",
    "HK": "65 3 4.2326% 4.1710% 1.0148",
}


def shown_row(r) -> str:
    """carequal's results for one measure written out as Table 2 shows them (percent with four decimals, ERR
    with four)."""
    return f"{r.n} {r.events} {100 * r.predicted:.4f}% {100 * r.expected:.4f}% {r.ratio:.4f}"


def test_fy2023_values_shown(fy2023_reproduced):
    shown = fy2023_reproduced[["n", "events", "predicted", "expected", "ratio"]]
    assert {r.Index: shown_row(r) for r in shown.drop(index="CABG").itertuples()} == FY2023_TABLE2_SHOWN


def test_fy2023_cabg_has_no_qualifying_cases(fy2023, fy2023_reproduced):
    # Table 2 shows NQ ("Hospital had no qualifying cases") for every CABG value; the CABG sheet lists no stay,
    # gives the national coefficients and AVG_EFFECT but "--" for HOSP_EFFECT. Nothing to compute, and that
    # absence is itself what CMS reports.
    cabg = fy2023.measures["CABG"]
    assert cabg.discharges.empty
    assert math.isnan(cabg.hospital_effect) and cabg.average_effect == -2.56700189154681
    cms = fy2023.table2.set_index("measure").loc["CABG"]
    assert cms["status"] == "NQ" and pd.isna(cms["n"]) and math.isnan(cms["ratio"])
    row = fy2023_reproduced.loc["CABG"]
    assert row["n"] == 0 and row["events"] == 0 and math.isnan(row["ratio"])
    assert row["agrees"] and "NQ" in row["note"]


def test_fy2023_pneumonia_is_reproduced_but_suppressed_from_payment(fy2023, fy2023_reproduced):
    # footnote [k]: pneumonia is suppressed from FY2023 payment (COVID-19) but its results are shown; they
    # reproduce like the others, and the peer-group median and payment weight are N/A.
    cms = fy2023.table2.set_index("measure").loc["PN"]
    assert cms["footnotes"] == "k" and cms["penalty"] == "No"
    assert math.isnan(cms["peer_median_ratio"]) and math.isnan(cms["payment_weight"])
    assert "suppressed" in fy2023.table2_footnotes["k"]
    row = fy2023_reproduced.loc["PN"]
    assert row["agrees"] and "footnote [k]" in row["note"]


def test_fy2023_only_counted_stays_reproduce_cms(fy2023):
    # THA/TKA lists 96 stays, 4 with an unplanned readmission; CMS counts 65 and 3: the indicator is what
    # makes the numbers right.
    hk = fy2023.measures["HK"]
    unplanned = hk.discharges[hk.columns["unplanned"]].eq("Yes")
    assert (len(hk.discharges), int(unplanned.sum())) == (96, 4)
    eligible = eligible_stays(hk)
    assert (int(eligible.sum()), int((unplanned & eligible).sum())) == (65, 3)
    with pytest.raises(ParameterError, match="missing or not numeric"):
        excess_readmission_ratio(hk.discharges, hk.coefficients, hospital_effect=hk.hospital_effect,
                                 average_effect=hk.average_effect)


def rewrite_shuffled(source: Path, target: Path, *, seed: int) -> None:
    """Copy every sheet with its columns permuted, two rows on top and a blank row inserted after row 8."""
    rng = np.random.default_rng(seed)
    original = openpyxl.load_workbook(source)
    copy = openpyxl.Workbook()
    copy.remove(copy.active)
    for ws in original.worksheets:
        out = copy.create_sheet(ws.title)
        order = rng.permutation(ws.max_column)  # new position of each old column
        for row in ws.iter_rows():
            for cell in row:
                if cell.value is None:
                    continue
                new_row = cell.row + 2 + (cell.row > 8)
                target_cell = out.cell(row=new_row, column=int(order[cell.column - 1]) + 1, value=cell.value)
                target_cell.number_format = cell.number_format
    copy.save(target)


def test_fy2023_shuffled_layout_gives_the_same_results(fy2023, tmp_path):
    shuffled_path = tmp_path / "shuffled.xlsx"
    rewrite_shuffled(FY2023, shuffled_path, seed=7)
    shuffled = read_hsr(shuffled_path)
    assert {m: t.header_row for m, t in shuffled.measures.items()} == dict.fromkeys(MEASURES, 9)
    for measure, table in fy2023.measures.items():
        moved = shuffled.measures[measure]
        pd.testing.assert_series_equal(moved.coefficients.sort_index(), table.coefficients.sort_index())
        pd.testing.assert_frame_equal(moved.discharges[table.discharges.columns], table.discharges)
    pd.testing.assert_frame_equal(reproduce_table2(shuffled), reproduce_table2(fy2023))


# ---------------------------------------------------------------------------------------------------------------
# Layouts of other programme years, built from the FY2023 file: each must reproduce the published Table 2
# ---------------------------------------------------------------------------------------------------------------

DISCHARGE_ORDER = ["AMI", "COPD", "HF", "PN", "CABG", "HK"]  # FY2023 sheets 4-9 (Tables 3-8), in this order
TEXT_MARKS = ["*", "\u2020", "\u2021", "\u00b9", "\u00b2", "*\u2020"]  # *, daggers, superscript 1 and 2


def plain(value) -> str:
    """Cell text with bracketed footnote letters dropped and whitespace collapsed (written here, independently
    of carequal's header matching)."""
    return " ".join(re.sub(r"\[[a-z]\]", " ", str(value)).split())


def table2_sheet(wb) -> openpyxl.worksheet.worksheet.Worksheet:
    return wb.worksheets[2]


def discharge_sheets(wb) -> dict:
    return dict(zip(DISCHARGE_ORDER, wb.worksheets[3:9], strict=True))


def header_row(ws) -> int:
    """The FY2023 header row: 'ID Number' in a discharge table, 'Measure' (reworded: 'Measure Name') in Table 2
    (rows 7 and 5)."""
    for row in ws.iter_rows(max_row=20):
        for cell in row:
            if isinstance(cell.value, str) and plain(cell.value) in ("ID Number", "Measure", "Measure Name"):
                return cell.row
    raise AssertionError(f"no header row in {ws.title}")


def column_of(ws, text: str) -> int:
    found = [c.column for c in ws[header_row(ws)] if c.value is not None and plain(c.value) == text]
    assert len(found) == 1, (ws.title, text)
    return found[0]


def stay_rows(ws) -> list[int]:
    return [r for r in range(header_row(ws) + 2, ws.max_row + 1) if isinstance(ws.cell(r, 1).value, int)]


def risk_columns(ws) -> list[int]:
    """Columns with a coefficient in the row under the header (FY2023: row 8), the effects left out."""
    top = header_row(ws)
    return [c.column for c in ws[top] if c.value is not None and not plain(c.value).endswith("_EFFECT")
            and isinstance(ws.cell(top + 1, c.column).value, (int, float))]


def rename_headers(wb, table2: dict[str, str], discharges: dict[str, str]) -> dict[str, int]:
    changed = {}
    for ws, names in [(table2_sheet(wb), table2)] + [(ws, discharges) for ws in discharge_sheets(wb).values()]:
        cells = [c for c in ws[header_row(ws)] if c.value is not None and plain(c.value) in names]
        for cell in cells:
            cell.value = names[plain(cell.value)]
        changed[ws.title] = len(cells)
    return changed


def marked_headers(wb) -> dict[str, int]:
    """Markers after every header: *, daggers, superscripts, and plain footnote numbers after the wordings
    carequal looks for (CMS marks publicly reported columns with * and numbers its footnotes)."""
    numbers = {"Predicted Readmission Rate": " 4", "Excess Readmission Ratio (ERR)": "*3", "ERR": " 6",
               "Unplanned Readmission within 30 Days (Yes/No)": "2", "Hospital Effect": "1", "ID Number": " 1"}
    changed = {}
    for ws in [table2_sheet(wb), *discharge_sheets(wb).values()]:
        cells = [c for c in ws[header_row(ws)] if c.value is not None]
        for i, cell in enumerate(cells):
            text = plain(cell.value)
            cell.value = text + numbers.get(text, TEXT_MARKS[i % len(TEXT_MARKS)])
        changed[ws.title] = len(cells)
    return changed


def reworded_headers(wb) -> dict[str, int]:
    """Other wordings of the same columns (carequal.hsr documents them as accepted synonyms)."""
    return rename_headers(
        wb,
        table2={"Measure": "Measure Name", "Number of Eligible Discharges": "Eligible Discharges",
                "Number of Readmissions Among Eligible Discharges": "Number of Readmissions",
                "Predicted Readmission Rate": "Predicted Rate", "Expected Readmission Rate": "Expected Rate",
                "Excess Readmission Ratio (ERR)": "ERR"},
        discharges={"Cohort Inclusion/Exclusion Indicator": "Inclusion/Exclusion Indicator",
                    "Index Stay (Yes/No)": "Included in Measure Cohort",
                    "Unplanned Readmission within 30 Days (Yes/No)": "Unplanned 30-Day Readmission (Y/N)",
                    "HOSP_EFFECT": "Hospital Effect", "AVG_EFFECT": "Average Effect"})


def index_stay_column_only(wb) -> dict[str, int]:
    """No cohort indicator: the stays CMS counts are told only by a Yes/No column, here 'Included in Measure
    Cohort'."""
    changed = {}
    for ws in discharge_sheets(wb).values():
        ws.delete_cols(column_of(ws, "Cohort Inclusion/Exclusion Indicator"))
        changed[ws.title] = 1
    rename_headers(wb, table2={}, discharges={"Index Stay (Yes/No)": "Included in Measure Cohort"})
    return changed


def as_displayed(value: float, number_format: str) -> str:
    """The text Excel shows for a number under a fixed format, rounded half up, with spaces around it."""
    percent = number_format.endswith("%")
    decimals = len(number_format.split(".")[1].rstrip("%")) if "." in number_format else 0
    shown = Decimal(repr(float(value))).scaleb(2 if percent else 0).quantize(Decimal(1).scaleb(-decimals),
                                                                                 rounding=ROUND_HALF_UP)
    return f" {shown:,}{'%' if percent else ''} "


def numbers_as_text(wb) -> dict[str, int]:
    """Every number as text: Table 2 values as the workbook displays them (" 36 ", "21.8777%", "1.0808"); the
    coefficients, HOSP_EFFECT and AVG_EFFECT at full precision; risk variables and ID numbers as digits."""
    changed = {}
    ws = table2_sheet(wb)
    top = header_row(ws)
    cells = [c for row in ws.iter_rows(min_row=top + 1, max_row=top + 6, min_col=2) for c in row
             if isinstance(c.value, (int, float))]
    for cell in cells:
        cell.value, cell.number_format = as_displayed(cell.value, cell.number_format), "@"
    changed[ws.title] = len(cells)
    for ws in discharge_sheets(wb).values():
        cells = [c for row in ws.iter_rows(min_row=header_row(ws) + 1) for c in row
                 if isinstance(c.value, (int, float))]
        for cell in cells:
            cell.value = repr(float(cell.value)) if isinstance(cell.value, float) else f" {cell.value} "
            cell.number_format = "@"
        changed[ws.title] = len(cells)
    return changed


def blank_risk_flags(wb) -> dict[str, int]:
    """Every 0 of a 0/1 risk factor of an eligible stay (indicator "0") left blank."""
    changed = {}
    for measure, ws in discharge_sheets(wb).items():
        indicator = column_of(ws, "Cohort Inclusion/Exclusion Indicator")
        age = column_of(ws, "Years Over 65 (continuous)")
        flags = [c for c in risk_columns(ws) if c != age]
        count = 0
        for r in stay_rows(ws):
            if ws.cell(r, indicator).value != "0":
                continue
            for c in flags:
                if ws.cell(r, c).value == 0:
                    ws.cell(r, c).value = None
                    count += 1
        changed[measure] = count
    return changed


def measure_labels(wb) -> dict[str, int]:
    """Table 2 labels the other way round from FY2023 (spelt out where it abbreviates, and back), and sheet names
    that spell the measure out or name it in a way only the sheet's title resolves ('Acute MI')."""
    labels = {"AMI": "Acute Myocardial Infarction (AMI)", "COPD": "Chronic Obstructive Pulmonary Disease",
              "HF": "Heart Failure", "Pneumonia [k]": "PN [k]",
              "CABG": "Coronary Artery Bypass Graft (CABG) Surgery", "THA/TKA": "HK"}
    ws = table2_sheet(wb)
    cells = [c for c in ws["A"] if isinstance(c.value, str) and c.value.strip() in labels]
    for cell in cells:
        cell.value = labels[cell.value.strip()]
    names = {"AMI": "Table 3 Acute MI", "COPD": "Table 4 Chronic Obstr Pulm Dis", "HF": "Table 5 Heart Failure",
             "PN": "Table 6 Pneumonia", "CABG": "Table 7 Coronary Artery Bypass", "HK": "Table 8 THA-TKA"}
    for measure, sheet in discharge_sheets(wb).items():
        sheet.title = names[measure]
    return {ws.title: len(cells), "sheets": len(names)}


VARIATIONS = {
    "marked headers": (marked_headers,),
    "reworded headers": (reworded_headers,),
    "index-stay column only": (index_stay_column_only,),
    "numbers stored as text": (numbers_as_text,),
    "blank risk-factor cells": (blank_risk_flags,),
    "measure labels": (measure_labels,),
    "all at once": (blank_risk_flags, numbers_as_text, measure_labels, reworded_headers, marked_headers),
    "index stay, text, marks": (blank_risk_flags, numbers_as_text, index_stay_column_only, marked_headers),
}


@pytest.fixture(scope="module")
def variation(tmp_path_factory):
    """name → (the report read from the variation's workbook, cells changed by each step); each built once."""
    built = {}

    def build(name: str):
        if name not in built:
            wb = openpyxl.load_workbook(FY2023)
            changed = {step.__name__: step(wb) for step in VARIATIONS[name]}
            path = tmp_path_factory.mktemp("hsr_variation") / "hsr.xlsx"
            wb.save(path)
            built[name] = read_hsr(path), changed
        return built[name]

    return build


@pytest.mark.parametrize("name", list(VARIATIONS))
def test_fy2023_variation_reproduces_published_table2(variation, name):
    report, changed = variation(name)
    for step, cells in changed.items():
        assert sum(cells.values()) > 0, f"{step} changed nothing"
    assert set(report.measures) == set(MEASURES)
    assert {k: report.table2_decimals[k] for k in ("n", "events", "predicted", "expected", "ratio")} == {
        "n": 0, "events": 0, "predicted": 6, "expected": 6, "ratio": 4}
    out = reproduce_table2(report).set_index("measure")
    assert out.index.tolist() == ["AMI", "COPD", "HF", "PN", "CABG", "HK"]
    assert {r.Index: shown_row(r) for r in out.drop(index="CABG").itertuples()} == FY2023_TABLE2_SHOWN
    assert out["agrees"].tolist() == [True] * 6
    assert out.loc["CABG", "n"] == 0 and "NQ" in out.loc["CABG", "note"]
    assert "footnote [k]" in out.loc["PN", "note"]


def test_fy2023_numbers_stored_as_text_are_read_as_written(fy2023, variation):
    report, _ = variation("numbers stored as text")
    cms = report.table2.set_index("measure")
    # Table 2 now holds the displayed text: " 36 ", "21.8777%", "1.0808" → 36, 0.218777, 1.0808 exactly
    assert cms.loc["HF", ["n", "events"]].tolist() == [36, 13]
    assert cms.loc["HF", ["predicted", "expected", "ratio"]].tolist() == [0.218777, 0.202413, 1.0808]
    assert cms.loc["CABG", "status"] == "NQ"
    for measure, table in fy2023.measures.items():
        moved = report.measures[measure]
        pd.testing.assert_series_equal(moved.coefficients, table.coefficients)
        assert moved.average_effect == table.average_effect
        assert moved.hospital_effect == table.hospital_effect or math.isnan(table.hospital_effect)
        pd.testing.assert_frame_equal(moved.discharges, table.discharges)


def test_fy2023_blank_risk_flags_of_eligible_stays_are_read_as_absent(fy2023, variation):
    report, changed = variation("blank risk-factor cells")
    blanked = changed["blank_risk_flags"]
    assert blanked["HF"] > 500 and blanked["CABG"] == 0  # most cells: the flags are mostly 0
    assert {m: sum(t.blank_risk_cells.values()) for m, t in report.measures.items()} == blanked
    for measure, table in fy2023.measures.items():
        # every blank was a 0, so reading it as 0 gives back the original table
        pd.testing.assert_frame_equal(report.measures[measure].discharges, table.discharges)
    note = reproduce_table2(report).set_index("measure").loc["HF", "note"]
    assert f"{blanked['HF']} blank risk-factor cell(s) of eligible stays read as 0" in note


def test_fy2023_blank_continuous_risk_variable_is_an_error(tmp_path):
    wb = openpyxl.load_workbook(FY2023)
    ws = discharge_sheets(wb)["HF"]
    indicator, age = column_of(ws, "Cohort Inclusion/Exclusion Indicator"), column_of(ws, "Years Over 65 (continuous)")
    first = next(r for r in stay_rows(ws) if ws.cell(r, indicator).value == "0")
    ws.cell(first, age).value = None
    wb.save(tmp_path / "hsr.xlsx")
    with pytest.raises(SchemaError, match=rf"sheet '{ws.title}': continuous risk variable\(s\) blank for eligible "
                                          rf"stays: 'Years Over 65 \(continuous\)': 1 eligible stay\(s\) "
                                          rf"\(ID {ws.cell(first, 1).value}\)"):
        read_hsr(tmp_path / "hsr.xlsx")


def test_fy2023_index_stay_column_alone_tells_eligible_stays(fy2023, variation):
    report, _ = variation("index-stay column only")
    for measure, table in report.measures.items():
        assert "inclusion" not in table.columns and table.columns["index_stay"] == "Included in Measure Cohort"
        assert eligible_stays(table).tolist() == eligible_stays(fy2023.measures[measure]).tolist()


def test_fy2023_reworded_and_marked_headers_name_the_same_columns(fy2023, variation):
    reworded, _ = variation("reworded headers")
    assert reworded.measures["HF"].columns["inclusion"] == "Inclusion/Exclusion Indicator"
    assert reworded.measures["HF"].columns["hospital_effect"] == "Hospital Effect"
    marked, _ = variation("marked headers")
    for measure, table in fy2023.measures.items():
        # markers are not part of a risk variable's name: "History of COVID-19*" is "History of COVID-19"
        assert marked.measures[measure].coefficients.index.tolist() == table.coefficients.index.tolist()
    assert marked.measures["HF"].columns["unplanned"] == "Unplanned Readmission within 30 Days (Yes/No)2"


def test_fy2023_measure_labels_spelt_out_or_abbreviated(variation):
    report, _ = variation("measure labels")
    assert report.table2[["measure", "label"]].values.tolist() == [
        ["AMI", "Acute Myocardial Infarction (AMI)"], ["COPD", "Chronic Obstructive Pulmonary Disease"],
        ["HF", "Heart Failure"], ["PN", "PN"], ["CABG", "Coronary Artery Bypass Graft (CABG) Surgery"],
        ["HK", "HK"]]
    # 'Acute MI' and 'Chronic Obstr Pulm Dis' name no measure: the sheets' titles ("... for the AMI 30-Day ...")
    # do
    assert {m: t.sheet for m, t in report.measures.items()} == {
        "AMI": "Table 3 Acute MI", "COPD": "Table 4 Chronic Obstr Pulm Dis", "HF": "Table 5 Heart Failure",
        "PN": "Table 6 Pneumonia", "CABG": "Table 7 Coronary Artery Bypass", "HK": "Table 8 THA-TKA"}


def test_fy2023_missing_header_names_sheet_column_and_headers_present(tmp_path):
    wb = openpyxl.load_workbook(FY2023)
    ws = discharge_sheets(wb)["AMI"]
    ws.cell(header_row(ws), column_of(ws, "HOSP_EFFECT")).value = "Hospital Intercept"
    wb.save(tmp_path / "hsr.xlsx")
    with pytest.raises(SchemaError) as info:
        read_hsr(tmp_path / "hsr.xlsx")
    message = str(info.value)
    assert message.startswith("sheet 'Table 3 Discharges AMI Readm': discharge-level table header 'HOSP_EFFECT' "
                              "not found (also accepted: 'Hospital Effect', 'Hospital-Specific Effect').")
    assert ("Headers present in row 7 (the closest row, with 4 of the 5 required): 'ID Number', 'HICNO', 'MBI', "
            "'Medical Record Number', 'Beneficiary DOB', 'Admission Date of Index Stay', 'Discharge Date of Index "
            "Stay', 'Cohort Inclusion/Exclusion Indicator', … (52 in all).") in message
    assert "999999999A" not in message and len(message) < 1000  # headers, a few of them, never values
    assert info.value.failures[["table", "column", "rule"]].values.tolist() == [
        ["Table 3 Discharges AMI Readm", "'HOSP_EFFECT'", "header not found"]]


@pytest.mark.parametrize("headers", [DISCHARGE_HEADERS, TABLE2_HEADERS], ids=["discharge", "table2"])
def test_documented_wordings_match_their_header_only(headers):
    for header in headers:
        for wording in (header.text, *header.also):
            for marked in (wording, f"{wording} [a]", f"{wording}*", f"{wording}\u2020", f"{wording} 3",
                           f" {wording.upper()}\n"):
                key = normalise_header(marked)
                assert [h.role for h in headers if h.matches(key)] == [header.role], marked


# ---------------------------------------------------------------------------------------------------------------
# Layout: a small synthetic HSR written here
# ---------------------------------------------------------------------------------------------------------------

HF_HEADER = ["AVG_EFFECT", "Male [x]", "ID\nNumber", "Years over 65 (continuous)",
             "COHORT INCLUSION/EXCLUSION  INDICATOR [a]", "Unplanned \nReadmission within\n30 Days (Yes/No) [b]",
             "HOSP_EFFECT", "Index Stay (Yes / No)"]
TABLE2_HEADER = ["Excess Readmission Ratio (ERR) [f]", "Measure [a]", "Expected Readmission Rate [e]",
                 "Predicted  Readmission\nRate [d]", "Number of Readmissions Among Eligible Discharges [c]",
                 "Number of Eligible Discharges [b]"]


def write_synthetic_hsr(path: Path, *, drop: tuple[str, ...] = (), male_cell: object = 1,
                        index_stay_cell: object = "Yes", hf_label: str = "HF ") -> None:
    """Table 2 with its columns reordered and a blank row inside; an HF table whose coefficient row stands
    ABOVE its header, columns in an odd order, header text with odd case, spacing and footnotes, and a blank
    row between the header and the stays. ``drop`` leaves headers out; the cells set stay 1's male flag, its
    index-stay flag and Table 2's HF label."""
    wb = openpyxl.Workbook()
    results = wb.active
    results.title = "Results"
    results.append(["Table 2: Your Hospital's Measure Results"])
    results.append([])
    results.append([h for h in TABLE2_HEADER if h not in drop])
    # HF (worked below): ERR 1.6, expected 0.25, predicted 0.4, 1 readmission, 2 eligible discharges
    hf_row = {"Excess Readmission Ratio (ERR) [f]": (1.6, "0.0000"), "Measure [a]": (hf_label, "General"),
              "Expected Readmission Rate [e]": (0.25, "0.0000%"),
              "Predicted  Readmission\nRate [d]": (0.4, "0.0000%"),
              "Number of Readmissions Among Eligible Discharges [c]": (1, "#,##0"),
              "Number of Eligible Discharges [b]": (2, "#,##0")}
    results.append([])
    results.append([hf_row[h][0] for h in TABLE2_HEADER if h not in drop])
    for cell, header in zip(results[5], [h for h in TABLE2_HEADER if h not in drop], strict=True):
        cell.number_format = hf_row[header][1]
    results.append(["NQ" if h != "Measure [a]" else "CABG" for h in TABLE2_HEADER if h not in drop])
    results.append([])
    results.append(["[k] A footnote that mentions pneumonia."])

    hf = wb.create_sheet("Table 5 Discharges HF Readm")
    hf.append(["Table 5: Discharge-Level Information for the HF 30-Day Readmission Measure"])
    coefficients = {"AVG_EFFECT": math.log(1 / 9), "Male [x]": math.log(2), "ID\nNumber": "--",
                    "Years over 65 (continuous)": math.log(3) / 10, "HOSP_EFFECT": math.log(1 / 4)}
    hf.append([coefficients.get(h, "--") for h in HF_HEADER if h not in drop])
    hf.append([h for h in HF_HEADER if h not in drop])
    hf.append([])
    stays = [  # AVG, male, id, years, indicator, unplanned, HOSP, index stay
        ["N/A", male_cell, 1, 10, "0", "Yes", "N/A", index_stay_cell],
        ["N/A", 0, 2, 0, "0", "No", "N/A", "Yes"],
        ["N/A", "N/A", 3, "N/A", "1,4", "Yes", "N/A", "No"],
    ]
    for stay in stays:
        hf.append([v for h, v in zip(HF_HEADER, stay, strict=True) if h not in drop])
    hf.append([])
    hf.append(["2. N/A = Case information is not applicable for this discharge."])
    wb.save(path)


def test_synthetic_layout_is_found_by_header(tmp_path):
    write_synthetic_hsr(tmp_path / "hsr.xlsx")
    report = read_hsr(tmp_path / "hsr.xlsx")
    hf = report.measures["HF"]
    assert (hf.header_row, hf.coefficient_row) == (3, 2)
    assert hf.coefficients.to_dict() == pytest.approx({"Male": math.log(2),
                                                       "Years over 65 (continuous)": math.log(3) / 10})
    assert hf.columns["inclusion"] == "COHORT INCLUSION/EXCLUSION INDICATOR"
    assert hf.discharges["ID Number"].tolist() == [1, 2, 3]
    assert report.table2_decimals == {"n": 0, "events": 0, "predicted": 6, "expected": 6, "ratio": 4}
    assert report.table2_footnotes == {"k": "A footnote that mentions pneumonia."}
    # stay 1: odds 1/4·2·3 = 3/2 → 0.6 predicted, 1/9·2·3 = 2/3 → 0.4 expected; stay 2: 0.2 and 0.1;
    # stay 3 is excluded ("1,4"): P = 0.4, E = 0.25, ERR = 1.6, 1 readmission among 2 eligible stays
    out = reproduce_table2(report).set_index("measure")
    assert out.loc["HF", ["n", "events"]].tolist() == [2, 1]
    assert out.loc["HF", ["predicted", "expected", "ratio"]].tolist() == pytest.approx([0.4, 0.25, 1.6])
    assert out.loc["HF", "agrees"]
    assert out.loc["CABG", "note"] == "no discharge-level table in the workbook; CMS shows NQ (no qualifying cases)"


@pytest.mark.parametrize("headers, sheet, wording", [
    # the indicator or the index-stay column will do; only without both is a table unreadable
    (("COHORT INCLUSION/EXCLUSION  INDICATOR [a]", "Index Stay (Yes / No)"), "Table 5 Discharges HF Readm",
     "'Cohort Inclusion/Exclusion Indicator' or 'Index Stay (Yes/No)'"),
    (("HOSP_EFFECT",), "Table 5 Discharges HF Readm", "'HOSP_EFFECT'"),
    (("Expected Readmission Rate [e]",), "Results", "'Expected Readmission Rate'"),
])
def test_missing_header_is_named_with_its_sheet(tmp_path, headers, sheet, wording):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", drop=headers)
    with pytest.raises(SchemaError, match=rf"sheet '{sheet}': .* header {re.escape(wording)} not found") as info:
        read_hsr(tmp_path / "hsr.xlsx")
    assert "Headers present in row 3 (the closest row" in str(info.value)


def test_synthetic_without_indicator_counts_the_index_stays(tmp_path):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", drop=("COHORT INCLUSION/EXCLUSION  INDICATOR [a]",))
    report = read_hsr(tmp_path / "hsr.xlsx")
    assert "inclusion" not in report.measures["HF"].columns
    # stays 1 and 2 are index stays (Yes), stay 3 is not (No): the same 2 stays, P 0.4, E 0.25, ERR 1.6
    out = reproduce_table2(report).set_index("measure")
    assert out.loc["HF", ["n", "events"]].tolist() == [2, 1]
    assert out.loc["HF", ["predicted", "expected", "ratio"]].tolist() == pytest.approx([0.4, 0.25, 1.6])
    assert out.loc["HF", "agrees"]


def test_synthetic_unreadable_index_stay_flag_is_named(tmp_path):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", drop=("COHORT INCLUSION/EXCLUSION  INDICATOR [a]",),
                        index_stay_cell="Maybe")
    report = read_hsr(tmp_path / "hsr.xlsx")
    with pytest.raises(SchemaError, match=r"sheet 'Table 5 Discharges HF Readm': 1 stay\(s\) have a 'Index Stay "
                                          r"\(Yes/No\)' that is neither Yes nor No \(ID 1: 'Maybe'\)"):
        reproduce_table2(report)


def test_synthetic_blank_risk_flag_of_an_eligible_stay_is_absent(tmp_path):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", male_cell=None)
    report = read_hsr(tmp_path / "hsr.xlsx")
    hf = report.measures["HF"]
    assert hf.blank_risk_cells == {"Male": 1}
    assert hf.discharges["Male"].tolist()[:2] == [0.0, 0.0]
    # stay 1 read as a woman: odds 1/4·3 = 3/4 → 3/7 predicted, 1/9·3 = 1/3 → 1/4 expected; stay 2: 1/5, 1/10.
    # P = (3/7 + 1/5)/2 = 11/35, E = (1/4 + 1/10)/2 = 7/40, ERR = (11/35)/(7/40) = 88/49 (CMS's table says 1.6,
    # computed with the flag at 1, so the comparison now fails, as it should)
    out = reproduce_table2(report).set_index("measure")
    assert out.loc["HF", ["predicted", "expected", "ratio"]].tolist() == pytest.approx([11 / 35, 7 / 40, 88 / 49])
    assert not out.loc["HF", "agrees"]
    assert out.loc["HF", "note"] == ("1 blank risk-factor cell(s) of eligible stays read as 0 (factor absent) in 1 "
                                     "column(s)")


def test_synthetic_na_risk_flag_of_an_eligible_stay_is_not_read_as_absent(tmp_path):
    # "N/A = Case information is not applicable": missing, not 0; the eligible stay cannot be re-computed
    write_synthetic_hsr(tmp_path / "hsr.xlsx", male_cell="N/A")
    report = read_hsr(tmp_path / "hsr.xlsx")
    assert report.measures["HF"].blank_risk_cells == {}
    with pytest.raises(ParameterError, match=r"'Male': 1 of 2 rows missing or not numeric"):
        reproduce_table2(report)


@pytest.mark.parametrize("label", ["HF", "Heart Failure", "Heart Failure (HF)*", "hf [b]", "HEART FAILURE 2",
                                   "Heart Failure\u2020"])
def test_synthetic_measure_label_abbreviated_or_spelt_out(tmp_path, label):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", hf_label=label)
    report = read_hsr(tmp_path / "hsr.xlsx")
    assert report.table2["measure"].tolist() == ["HF", "CABG"]
    assert reproduce_table2(report).set_index("measure").loc["HF", "agrees"]


def test_text_in_a_risk_variable_is_a_schema_error(tmp_path):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", male_cell="yes")
    with pytest.raises(SchemaError, match=r"'Male': 1 cell\(s\) \(ID 1: 'yes'\)") as info:
        read_hsr(tmp_path / "hsr.xlsx")
    assert info.value.failures["column"].tolist() == ["Male"]


def test_a_workbook_without_table2_is_a_schema_error(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(["Something else"])
    wb.save(tmp_path / "other.xlsx")
    with pytest.raises(SchemaError, match="no sheet holds Table 2"):
        read_hsr(tmp_path / "other.xlsx")
