"""CMS Hospital-Specific Reports: the published model by hand, CMS's own Table 2, and layout independence.

The FY2023 mock HSR lives beside the repository (``../shared/data/cms_hsr``, as on the team's machines); the
tests that need it skip when it is absent (a fresh clone). Its discharge rows are mock, but its coefficients,
HOSP_EFFECT/AVG_EFFECT and Table 2 are CMS's own, so agreement with Table 2 is agreement with CMS.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from carequal.errors import ParameterError, SchemaError
from carequal.hsr import (
    MEASURES,
    apply_published_model,
    eligible_stays,
    excess_readmission_ratio,
    read_hsr,
    reproduce_table2,
)

HSR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cms_hsr"
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
    if not FY2023.is_file():
        pytest.skip(f"CMS mock HSR not found at {FY2023} (not part of the repository)")
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


def test_fy2023_values_shown(fy2023_reproduced):
    shown = fy2023_reproduced[["n", "events", "predicted", "expected", "ratio"]]
    # carequal's results written out as Table 2 shows them (percent with four decimals, ERR with four)
    assert [f"{r.n} {r.events} {100 * r.predicted:.4f}% {100 * r.expected:.4f}% {r.ratio:.4f}"
            for r in shown.drop(index="CABG").itertuples()] == [
        "4 1 19.8479% 19.7720% 1.0038",
        "10 1 15.0555% 15.1592% 0.9932",
        "36 13 21.8777% 20.2413% 1.0808",
        "27 0 14.1833% 14.9585% 0.9482",
        "65 3 4.2326% 4.1710% 1.0148",
    ]


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
# Layout: a small synthetic HSR written here
# ---------------------------------------------------------------------------------------------------------------

HF_HEADER = ["AVG_EFFECT", "Male [x]", "ID\nNumber", "Years over 65 (continuous)",
             "COHORT INCLUSION/EXCLUSION  INDICATOR [a]", "Unplanned \nReadmission within\n30 Days (Yes/No) [b]",
             "HOSP_EFFECT", "Index Stay (Yes / No)"]
TABLE2_HEADER = ["Excess Readmission Ratio (ERR) [f]", "Measure [a]", "Expected Readmission Rate [e]",
                 "Predicted  Readmission\nRate [d]", "Number of Readmissions Among Eligible Discharges [c]",
                 "Number of Eligible Discharges [b]"]


def write_synthetic_hsr(path: Path, *, drop: str | None = None, male_cell: object = 1) -> None:
    """Table 2 with its columns reordered and a blank row inside; an HF table whose coefficient row stands
    ABOVE its header, columns in an odd order, header text with odd case, spacing and footnotes, and a blank
    row between the header and the stays."""
    wb = openpyxl.Workbook()
    results = wb.active
    results.title = "Results"
    results.append(["Table 2: Your Hospital's Measure Results"])
    results.append([])
    results.append([h for h in TABLE2_HEADER if h != drop])
    # HF (worked below): ERR 1.6, expected 0.25, predicted 0.4, 1 readmission, 2 eligible discharges
    hf_row = {"Excess Readmission Ratio (ERR) [f]": (1.6, "0.0000"), "Measure [a]": ("HF ", "General"),
              "Expected Readmission Rate [e]": (0.25, "0.0000%"),
              "Predicted  Readmission\nRate [d]": (0.4, "0.0000%"),
              "Number of Readmissions Among Eligible Discharges [c]": (1, "#,##0"),
              "Number of Eligible Discharges [b]": (2, "#,##0")}
    results.append([])
    results.append([hf_row[h][0] for h in TABLE2_HEADER if h != drop])
    for cell, header in zip(results[5], [h for h in TABLE2_HEADER if h != drop], strict=True):
        cell.number_format = hf_row[header][1]
    results.append(["NQ" if h != "Measure [a]" else "CABG" for h in TABLE2_HEADER if h != drop])
    results.append([])
    results.append(["[k] A footnote that mentions pneumonia."])

    hf = wb.create_sheet("Table 5 Discharges HF Readm")
    hf.append(["Table 5: Discharge-Level Information for the HF 30-Day Readmission Measure"])
    coefficients = {"AVG_EFFECT": math.log(1 / 9), "Male [x]": math.log(2), "ID\nNumber": "--",
                    "Years over 65 (continuous)": math.log(3) / 10, "HOSP_EFFECT": math.log(1 / 4)}
    hf.append([coefficients.get(h, "--") for h in HF_HEADER if h != drop])
    hf.append([h for h in HF_HEADER if h != drop])
    hf.append([])
    stays = [  # AVG, male, id, years, indicator, unplanned, HOSP, index stay
        ["N/A", male_cell, 1, 10, "0", "Yes", "N/A", "Yes"],
        ["N/A", 0, 2, 0, "0", "No", "N/A", "Yes"],
        ["N/A", "N/A", 3, "N/A", "1,4", "Yes", "N/A", "No"],
    ]
    for stay in stays:
        hf.append([v for h, v in zip(HF_HEADER, stay, strict=True) if h != drop])
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


@pytest.mark.parametrize("header, sheet", [
    ("COHORT INCLUSION/EXCLUSION  INDICATOR [a]", "Table 5 Discharges HF Readm"),
    ("HOSP_EFFECT", "Table 5 Discharges HF Readm"),
    ("Expected Readmission Rate [e]", "Results"),
])
def test_missing_header_is_named_with_its_sheet(tmp_path, header, sheet):
    write_synthetic_hsr(tmp_path / "hsr.xlsx", drop=header)
    wording = {"COHORT INCLUSION/EXCLUSION  INDICATOR [a]": "Cohort Inclusion/Exclusion Indicator",
               "HOSP_EFFECT": "HOSP_EFFECT", "Expected Readmission Rate [e]": "Expected Readmission Rate"}[header]
    with pytest.raises(SchemaError, match=rf"sheet '{sheet}': .* header '{wording}' not found"):
        read_hsr(tmp_path / "hsr.xlsx")


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
