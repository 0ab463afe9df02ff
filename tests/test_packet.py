"""Partner packets: `carequal report --by partner` on the sample, scanned for identifiers, other facilities'
names and small counts; the patient list only on request; and the sharing rules of carequal.packet by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal import batch, packet
from carequal.agreement import agreement_cases, read_agreement
from carequal.errors import DisclosureError, ParameterError
from carequal.loaders import load_tables
from safe_to_share import identifiers_in, sample_identifiers, small_counts_in_tables

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="module")
def packets(tmp_path_factory):
    base = tmp_path_factory.mktemp("packets")
    out, lists = base / "packets", base / "lists"
    result = batch.run_batch(SAMPLE, out, by="partner", workers=2, period="2024", progress=False,
                             patient_lists=lists)
    return {"out": out, "work": result.work, "lists": lists, "result": result}


@pytest.fixture(scope="module")
def sample():
    return load_tables(SAMPLE).tables


def test_a_packet_and_an_extract_per_partner(packets):
    result = packets["result"]
    assert result.ok and result.manifest["by"] == "partner"
    partners = read_agreement(SAMPLE / "agreement.toml").partners
    assert set(result.markets) == {p.facility_id for p in partners}
    for p in partners:
        html = (packets["out"] / f"{p.facility_id}.html").read_text()
        assert "Where the partnership stands" in html and "Trends" in html
        assert html.count("data:image/png;base64") >= 4
        extract = packets["out"] / f"{p.facility_id}_extract"
        csvs = sorted(f.stem for f in extract.glob("*.csv"))
        assert "metrics" in csvs
        sheets = pd.read_excel(extract / "extract.xlsx", sheet_name=None)
        assert sorted(sheets) == csvs  # one sheet per table
        from_csv = pd.read_csv(extract / "metrics.csv")
        assert list(sheets["metrics"].columns) == list(from_csv.columns) and len(sheets["metrics"]) == len(from_csv)
        np.testing.assert_array_equal(sheets["metrics"]["n"].to_numpy(float), from_csv["n"].to_numpy(float))
    index = (packets["out"] / "index.html").read_text()
    assert "7 of 7 partner packets ready" in index and "extract (Excel)" in index


def test_packets_and_extracts_are_safe_to_share(packets, sample):
    ids = sample_identifiers(SAMPLE)
    fac = sample["facilities"]
    checked = 0
    for fid in packets["result"].markets:
        others = set(fac.loc[fac["facility_id"] != fid, "name"])
        own_name = fac.set_index("facility_id").at[fid, "name"]
        html = (packets["out"] / f"{fid}.html").read_text()
        assert own_name in html
        assert not identifiers_in(html) & ids
        named = [n for n in others if n in html]
        assert not named, f"{fid}: other facilities named: {named[:3]}"
        for marker in ("Traceback", "Warning:", "import carequal", 'class="highlight hl-ipython3"', "<script src="):
            assert marker not in html
        checked += small_counts_in_tables(html, where=fid)
        for path in (packets["out"] / f"{fid}_extract").glob("*.csv"):
            text = path.read_text()
            assert not identifiers_in(text) & ids
            assert not [n for n in others if n in text]
            table = pd.read_csv(path)
            for col in ("n", "events"):
                if col in table.columns:
                    values = pd.to_numeric(table[col], errors="coerce").dropna()
                    checked += len(values)
                    assert not values.between(1, 10).any(), f"{path}: {col}"
    assert checked > 200


def test_patient_lists_only_on_request_only_own_patients(packets, sample):
    lists = sorted(packets["lists"].glob("*.csv"))
    assert len(lists) == 7
    # never beside the packets, never in the work folder's packet inputs
    assert not list(packets["out"].rglob("*readmitted*")) and not list((packets["work"] / "agreement").rglob("*readm*"))
    ag = read_agreement(SAMPLE / "agreement.toml")
    cases = agreement_cases(sample, ag)
    metric = next(m.id for m in ag.metrics if m.measure == "readmission")
    listed_any = 0
    for path in lists:
        fid = path.name.removesuffix("_readmitted.csv")
        frame = pd.read_csv(path, dtype=str)
        mine = cases[(cases["metric"] == metric) & (cases["unit_id"] == fid) & (cases["value"] > 0.5)]
        mine = mine[pd.to_datetime(mine["discharge_date"]).dt.year == 2024]
        assert set(frame["index_stay_id"]) == set(mine["stay_id"])  # exactly its own readmitted patients
        assert list(frame.columns[:5]) == ["patient_id", "index_stay_id", "hospital_id", "admit_date",
                                           "discharge_date"]
        assert frame["readmission_date"].notna().all()
        assert (pd.to_datetime(frame["readmission_date"]) >= pd.to_datetime(frame["discharge_date"])).all()
        listed_any += len(frame)
    assert listed_any > 50


def test_patient_lists_refused_inside_out_and_without_partner_mode(tmp_path):
    with pytest.raises(ParameterError, match="must not be inside the shared output folder"):
        batch.run_batch(SAMPLE, tmp_path / "out", by="partner", patient_lists=tmp_path / "out" / "lists",
                        progress=False)
    with pytest.raises(ParameterError, match="--patient-lists goes with --by partner only"):
        batch.run_batch(SAMPLE, tmp_path / "out", patient_lists=tmp_path / "lists", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_agreement_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in SAMPLE.glob("*.csv"):
        (data / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ParameterError, match="--by partner needs a partnership agreement"):
        batch.run_batch(data, tmp_path / "out", by="partner", progress=False)


# ---------------------------------------------------------------------------------------- the rules by hand


def _packet(results: pd.DataFrame, flows: pd.DataFrame, *, names: bool = False, min_cell: int = 11):
    ag = read_agreement(text=f"""
name = "t"
show_facility_names = {'true' if names else 'false'}
[[partners]]
facility_id = "S1"
[[metrics]]
id = "r"
measure = "readmission"
target = {{ kind = "absolute", value = 0.2 }}
""")
    fac = pd.DataFrame({"facility_id": ["S1", "H1", "H2", "H3"], "name": ["Own SNF", "Alpha Hospital",
                        "Beta Hospital", "Gamma Hospital"], "setting": ["snf", "acute", "acute", "acute"],
                        "market": "M"})
    partner = pd.Series({"name": "Own SNF", "setting": "snf", "market": "M", "start": pd.Timestamp("2023-01-01")},
                        name="S1")
    return packet.PartnerPacket(agreement=ag, partner=partner, results=results, flows=flows, facilities=fac,
                                period=(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-31")), min_cell=min_cell)


def _results(n, events, periods=("2023-10-01", "2024-01-01", "2024-04-01")) -> pd.DataFrame:
    k = len(periods)
    value = np.asarray(events, float) / np.asarray(n, float)
    return pd.DataFrame({"metric": "r", "metric_label": "Readmission", "measure": "readmission",
                         "facility_id": "S1", "period": pd.to_datetime(list(periods)),
                         "period_end": pd.to_datetime(list(periods)) + pd.offsets.QuarterEnd(0), "phase": "after",
                         "n": n, "events": np.asarray(events, float), "expected": np.nan, "ratio": np.nan,
                         "value": value, "lower": value - 0.05, "upper": value + 0.05, "benchmark": [0.2] * k,
                         "benchmark_n": [100, 5, 100], "benchmark_events": [20, 1, 20], "target": 0.2,
                         "target_basis": "agreed value", "better": "lower", "status": "met", "status_reason": "",
                         "previous_value": pd.Series(value).shift(1), "change": pd.Series(value).diff(),
                         "view": "review"})


def test_small_counts_hide_their_value_change_and_benchmark():
    # 2023 Q4: 100 cases, 8 events → hidden; 2024 Q1: 60 cases, 15 events but its change needs Q4: hidden;
    # 2024 Q1's benchmark has 5 cases → hidden; 2024 Q2: 95 cases, 85 events → 10 non-events reveal → hidden
    pp = _packet(_results([100, 60, 95], [8, 15, 85]), pd.DataFrame(columns=["facility_id", "direction",
                                                                             "other_id", "category", "n"]))
    safe = packet._suppressed(pp.results, 11)
    assert safe["suppressed"].tolist() == [True, False, True]
    assert safe["value"].isna().tolist() == [True, False, True]
    assert np.isnan(safe["change"].iloc[1])  # the previous period is hidden
    assert safe["benchmark"].isna().tolist() == [False, True, False]
    assert safe.loc[1, "events"] == 15 and pd.isna(safe.loc[0, "events"])


def test_flows_anonymous_unless_the_agreement_allows_names():
    flows = pd.DataFrame({"facility_id": "S1", "direction": "came from", "other_id": ["H1", "H2", "H3"],
                          "category": "Hospital", "n": [40, 30, 5]})
    table = packet.flow_display(_packet(_results([100] * 3, [20] * 3), flows))["came from"]
    assert table["label"].tolist() == ["Hospital A", "Hospital B", "Hospital C", "All"]
    # 5 is hidden, and so is the next smallest (30): the total (75) would give it away
    assert table["n"].isna().tolist() == [False, True, True, False]
    named = packet.flow_display(_packet(_results([100] * 3, [20] * 3), flows, names=True))["came from"]
    assert named["label"].tolist()[:3] == ["Alpha Hospital", "Beta Hospital", "Gamma Hospital"]


def test_extract_refuses_an_unsafe_table(tmp_path, monkeypatch):
    pp = _packet(_results([100, 60, 95], [8, 15, 85]), pd.DataFrame(columns=["facility_id", "direction",
                                                                             "other_id", "category", "n"]))
    written = packet.write_extract(pp, tmp_path / "ok")
    assert {p.name for p in written} == {"metrics.csv", "extract.xlsx"}
    monkeypatch.setattr(packet, "_suppressed", lambda results, min_cell: results.assign(
        suppressed=False, benchmark_suppressed=False))
    with pytest.raises(DisclosureError):
        packet.write_extract(pp, tmp_path / "unsafe")
    assert not (tmp_path / "unsafe").exists()
