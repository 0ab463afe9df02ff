"""Partner packets: `carequal report --by partner` on the sample, scanned for identifiers, other facilities'
names and small counts; the patient list only on request; and the sharing rules of carequal.packet by hand."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from call_log import count_calls
from carequal import batch, packet
from carequal.agreement import agreement_cases, read_agreement
from carequal.errors import DisclosureError, ParameterError
from carequal.loaders import load_tables
from conftest import copy_prepared
from safe_to_share import identifiers_in, sample_identifiers, small_counts_in_tables

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
LOAD_PACKET = "carequal.packet:load_partner_packet"  # called once per packet, in the packet's kernel


@pytest.fixture(scope="module")
def packets(tmp_path_factory, sample_work):
    base = tmp_path_factory.mktemp("packets")
    out, lists = base / "packets", base / "lists"
    # a warm work folder (a copy of the session's prepared sample, as an operator's run after the market reports):
    # the prepare step itself, and its one index_stays run, are tested on a cold folder in test_batch
    work = copy_prepared(sample_work, base / "work")
    with pytest.MonkeyPatch.context() as mp:
        calls = count_calls("carequal.cohorts:index_stays", base / "calls", mp, LOAD_PACKET)
        # two workers, as the monthly batch runs (test_batch's market batch runs on one, to reuse its kernel)
        result = batch.run_batch(SAMPLE, out, by="partner", workers=2, period="2024", progress=False,
                                 patient_lists=lists, work=work)
        index_stays_calls, packet_kernels = calls(), calls(LOAD_PACKET)
    return {"out": out, "work": result.work, "lists": lists, "result": result, "index_stays_calls": index_stays_calls,
            "packet_kernels": packet_kernels}


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


def test_index_stays_runs_once_per_batch(packets):
    # prepare builds the measured cohort with one index_stays run (in the batch's own process: test_batch's
    # cold run); packet_inputs, the workers and the packets' kernels read it, and one set of risk models serves
    # the three views: on the prepared sample, no process of the partner batch runs index_stays at all
    assert packets["result"].manifest["seconds"]["prepare"]["reused"] is True
    assert packets["index_stays_calls"] == []


def test_the_packets_ran_on_the_two_workers_kernels(packets):
    # one kernel per worker process, each reused for its share of the packets; neither in the batch's own process
    kernels = packets["packet_kernels"]
    assert len(kernels) == 7 and len(set(kernels)) == 2 and os.getpid() not in kernels
    assert packets["result"].manifest["parameters"]["workers"] == 2


def test_every_packet_opens_with_at_a_glance_and_never_hides_a_target(packets):
    """Issue 16: 3–5 sentences from the numbers at the top (the counts of targets met and missed those of the
    index), each linking to a section of the packet; a target never reads "suppressed"."""
    from html import unescape

    from safe_to_share import HtmlTables

    manifest = packets["result"].manifest
    for fid, record in manifest["partners"].items():
        html = (packets["out"] / f"{fid}.html").read_text()
        glance = re.search(r'<section[^>]*class="carequal-glance"[^>]*>(.*?)</section>', html, flags=re.DOTALL)
        assert glance, fid
        assert html.index("carequal-glance\"") < html.index('id="Where-the-partnership-stands"')  # first
        items = [unescape(re.sub(r"<[^>]+>", "", li)) for li in re.findall(r"<li>(.*?)</li>", glance[1])]
        assert 3 <= len(items) <= 5, (fid, items)
        kpis = record["kpis"]
        assert f"met {kpis['met']} of its" in items[0] and f"missed {kpis['not_met'] or 'none'}" in items[0]
        for target in re.findall(r'href="#([^"]+)"', glance[1]):
            assert f'id="{target}"' in html, (fid, target)
        parser = HtmlTables()
        parser.feed(html)
        status = parser.tables[0]
        column = status[0].index("Target")
        assert all(row[column] != "suppressed" for row in status[1:]), fid
        assert all(m.get("target") != "suppressed" for m in kpis["metrics"])
    index = (packets["out"] / "index.html").read_text()
    assert "over the whole reporting period (1 January 2024 to 31 December 2024)" in index.replace("\n", " ")


def test_spending_and_leakage_in_the_packets(packets, sample):
    # the sample agreement's spending metric is in every packet; network leakage only in the hospitals'
    fac = sample["facilities"].set_index("facility_id")
    for fid in packets["result"].markets:
        html = (packets["out"] / f"{fid}.html").read_text()
        extract = packets["out"] / f"{fid}_extract"
        assert "30-day episode spending (risk-adjusted)" in html and "counts episodes discharged up to" in html
        metrics = pd.read_csv(extract / "metrics.csv")
        spend = metrics[metrics["metric"] == "episode_spending_30d"]
        assert len(spend) == 5 and (spend["value"].dropna() > 1000).all()  # dollars, not proportions
        hospital = fac.at[fid, "setting"] == "acute"
        assert ("Network leakage" in html) == hospital
        assert (extract / "leakage.csv").is_file() == hospital
        if not hospital:
            continue
        assert html.count("data:image/png;base64") >= 8  # 7 metric trends and the leakage control chart
        leak = pd.read_csv(extract / "leakage.csv")
        assert set(pd.read_excel(extract / "extract.xlsx", sheet_name=None)) >= {"metrics", "leakage"}
        totals = leak[leak["row_type"] == "total"].set_index("group")
        assert list(totals.index) == ["before the partnership", "reporting period"]
        periods = leak[leak["row_type"] == "period"]
        reporting = periods[periods["group"] == "reporting period"]
        assert pd.to_datetime(reporting["period"]).dt.year.eq(2024).all() and len(reporting) == 4
        assert totals.loc["reporting period", "n"] == reporting["n"].sum()  # n: no cell hidden here
        # a hidden count hides its share and interval
        assert leak.loc[leak["events"].isna(), ["share", "lower", "upper"]].isna().all().all()
        # the reporting period's discharges to post-acute care are the flows table's, less "No post-acute care"
        went = pd.read_csv(extract / "went_next.csv").set_index("label")["n"]
        assert totals.loc["reporting period", "n"] == went["All"] - went["No post-acute care"]
        # the network got better at keeping its patients: less leakage than before the partnership
        assert totals.loc["reporting period", "share"] < totals.loc["before the partnership", "share"]


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
        # nor in words: a status reason quoting a hidden count ("too few cases (7, fewer than 25)")
        quoted = [int(k) for k in re.findall(r"too few cases \((\d+),", html)]
        assert not [k for k in quoted if 1 <= k <= 10], f"{fid}: {quoted}"
        for path in (packets["out"] / f"{fid}_extract").glob("*.csv"):
            text = path.read_text()
            assert not identifiers_in(text) & ids
            assert not [k for k in map(int, re.findall(r"too few cases \((\d+),", text)) if 1 <= k <= 10], path
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


def _leakage_tables() -> dict:
    """Hospital H1 and SNFs S1 (a partner in the facilities table, not in the agreement) and S2 (in the
    agreement from 1 June 2024, not in the facilities table)."""
    from carequal.schema import validate_tables

    rows = [  # (stay, patient, facility, admit, discharge, status)
        ("h1", "q1", "H1", "2024-01-10", "2024-01-15", "03"), ("s1", "q1", "S1", "2024-01-15", "2024-01-25", "01"),
        ("h2", "q2", "H1", "2024-02-10", "2024-02-15", "03"), ("s2", "q2", "S2", "2024-02-16", "2024-02-26", "01"),
        ("h3", "q3", "H1", "2024-03-01", "2024-03-04", "01"),
        ("h4", "q4", "H1", "2024-07-01", "2024-07-05", "03"), ("s4", "q4", "S2", "2024-07-05", "2024-07-15", "01"),
        ("h5", "q5", "H1", "2024-07-10", "2024-07-12", "03"), ("s5", "q5", "S1", "2024-07-12", "2024-07-20", "01"),
        ("h6", "q6", "H1", "2024-12-20", "2024-12-31", "01"),  # sets the data's end; too late to be an index
    ]
    stays = pd.DataFrame(rows, columns=["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date",
                                        "discharge_status"]).assign(admission_type="1", principal_dx="I50.9",
                                                                    secondary_dx="I10")
    patients = pd.DataFrame({"patient_id": [f"q{i}" for i in range(1, 7)], "birth_date": "1940-01-01",
                             "sex": "F", "dual_eligible": "false", "death_date": "", "market": "M"})
    enrollment = pd.DataFrame({"patient_id": patients["patient_id"], "start_date": "2010-01-01",
                               "end_date": "2025-12-31", "coverage": "ffs"})
    facilities = pd.DataFrame({"facility_id": ["H1", "S1", "S2"], "name": ["H one", "S one", "S two"],
                               "setting": ["acute", "snf", "snf"], "market": "M",
                               "is_partner": ["true", "true", "false"],
                               "partner_since": ["2023-01-01", "2023-01-01", ""]})
    return validate_tables({"facilities": facilities, "patients": patients, "stays": stays,
                            "enrollment": enrollment}).tables


def test_partner_leakage_counts_against_the_agreements_network():
    ag = read_agreement(text="""
name = "t"
[[partners]]
facility_id = "H1"
start = 2024-01-01
[[partners]]
facility_id = "S2"
start = 2024-06-01
[[metrics]]
id = "v"
measure = "volume"
target = { kind = "absolute", value = 1 }
""")
    leak = packet.partner_leakage(_leakage_tables(), ag, end="2024-12-31")
    # Q1: h1 → S1 leaks (a partner in the facilities table, not in this agreement); h2 → S2 stays in the network
    # though S2 joined only in June; h3 had no post-acute care. Q2: nothing. Q3: h4 → S2 in, h5 → S1 out.
    # Q4: h6 is too close to the end of the data to be an index stay; the quarter is kept with n = 0.
    assert leak["facility_id"].eq("H1").all()
    assert leak["period"].dt.strftime("%Y-%m").tolist() == ["2024-01", "2024-04", "2024-07", "2024-10"]
    assert leak["n"].tolist() == [2, 0, 2, 0] and leak["events"].tolist() == [1, 0, 1, 0]
    assert leak["period_end"].dt.strftime("%m-%d").tolist() == ["03-31", "06-30", "09-30", "12-31"]
    # no hospital partner: nothing to count
    only_snf = read_agreement(text='name = "t"\n[[partners]]\nfacility_id = "S2"\nstart = 2024-06-01\n'
                                   '[[metrics]]\nid = "v"\nmeasure = "volume"\n'
                                   'target = { kind = "absolute", value = 1 }')
    assert packet.partner_leakage(_leakage_tables(), only_snf).empty


def _hospital_packet(n, events, *, start="2023-04-15", min_cell: int = 11):
    """A hospital partner's packet with leakage counts for the quarters from 2022 Q1."""
    periods = pd.date_range("2022-01-01", periods=len(n), freq="QS")
    leak = pd.DataFrame({"facility_id": "H1", "period": periods, "period_end": periods + pd.offsets.QuarterEnd(0),
                         "n": n, "events": events})
    pp = _packet(_results([100] * 3, [20] * 3), pd.DataFrame(columns=["facility_id", "direction", "other_id",
                                                                       "category", "n"]), min_cell=min_cell)
    pp.partner = pd.Series({"name": "Own Hospital", "setting": "acute", "market": "M", "start": pd.Timestamp(start)},
                           name="H1")
    pp.leakage = leak
    return pp


def test_leakage_table_totals_and_suppression_by_hand():
    # 2022 Q1-2023 Q1 before the start (15 April 2023); 2023 Q2 starts it; 2023 Q3-Q4 after; 2024 reported.
    n = [50, 40, 60, 45, 55, 50, 40, 42, 60, 50, 48, 30]
    events = [25, 20, 30, 22, 28, 20, 12, 9, 12, 8, 20, 15]
    pp = _hospital_packet(n, events)
    table = packet.leakage_table(pp)
    totals = table[table["row_type"] == "total"].set_index("group")
    assert totals.loc["before the partnership", "label"] == "Before the partnership (2022 Q1 to 2023 Q1)"
    assert (totals.loc["before the partnership", "n"], totals.loc["before the partnership", "events"]) == (250, 125)
    assert totals.loc["reporting period", "label"] == "Reporting period (2024 Q1 to 2024 Q4)"
    assert (totals.loc["reporting period", "n"], totals.loc["reporting period", "events"]) == (188, 55)
    rows = table[table["row_type"] == "period"].set_index("label")
    # 2023 Q4: 9 events, hidden (no total adds it up: nothing else goes); 2024 Q2: 8 events, hidden, and the
    # smallest other events of 2024 (12, Q1) with them, since the year's 55 would give the 8 away
    assert rows["events"].isna().tolist() == [False] * 7 + [True, True, True, False, False]
    assert rows.loc["2024 Q1", "suppression_reason"] == "complementary"
    assert rows.loc[["2023 Q4", "2024 Q1", "2024 Q2"], "rate"].isna().all()
    assert rows["n"].notna().all()  # n itself never small here
    assert rows.loc["2023 Q2", "phase"] == "starting" and rows.loc["2023 Q3", "group"] == "2023-07-01"
    from carequal.disclosure import check_suppressed

    check_suppressed(table.assign(n=table["n"].astype("Float64"), events=table["events"].astype("Float64")),
                     count_cols=["n", "events"], group_cols="group", total_rows=table["row_type"] == "total")

    trend = packet.leakage_trend(table)
    # the centre line is the share of the five quarters before the start: 125 / 250
    assert trend.attrs["baseline"] == "before the partnership"
    assert trend["centre"].dropna().unique().tolist() == [0.5]
    assert trend.loc[trend["events"].isna(), ["rate", "centre", "upper_3sigma"]].isna().all().all()
    assert (trend.loc[trend["events"].isna(), "signal"] == "").all()

    findings = packet.leakage_findings(table, trend, pp)
    assert findings[0] == ("In the reporting period, 29.3% (95% interval 23.2–36.1%) of Own Hospital's 188 "
                           "discharges to post-acute care went to providers outside the partnership, against "
                           "50.0% before the partnership started (2022 Q1 to 2023 Q1).")
    assert not re.search(r"\b(8|9|12)\b", " ".join(findings))  # the hidden counts are nowhere
    shown = packet.leakage_display(table, trend)
    assert shown["Period"].tolist() == ["Before the partnership (2022 Q1 to 2023 Q1)", "2024 Q1", "2024 Q2",
                                        "2024 Q3", "2024 Q4", "Reporting period (2024 Q1 to 2024 Q4)"]
    assert shown["Events"].tolist() == ["125", "suppressed", "suppressed", "20", "15", "55"]
    # the hidden count said once: the share it would give away is left blank beside it
    assert shown.loc[1, "Share to non-partners"] == "" and shown.loc[3, "Share to non-partners"] == "41.7%"


def test_leakage_with_few_periods_before_and_a_hidden_total():
    # the partnership starts in 2022 Q3: two quarters before it, too few for a baseline of their own
    pp = _hospital_packet([50, 40, 60, 45, 55, 50, 40, 42, 60, 50, 48, 4], [25, 20, 30, 22, 28, 20, 12, 12, 12, 12,
                                                                               12, 2], start="2022-07-01")
    table = packet.leakage_table(pp)
    trend = packet.leakage_trend(table)
    assert trend.attrs["baseline"] == "all periods shown"
    # 2024 Q4 has 4 discharges: hidden with its events, and a complement so the total (162) does not tell
    rows = table[table["group"] == "reporting period"].set_index("label")
    assert rows.loc["2024 Q4", "n"] is pd.NA and rows["n"].isna().sum() == 2
    assert "Reporting period (2024 Q1 to 2024 Q4)" in rows.index and rows.loc[
        "Reporting period (2024 Q1 to 2024 Q4)", "rate"] == pytest.approx(38 / 162)
    # a post-acute partner has no leakage section
    assert packet.leakage_table(_packet(_results([100] * 3, [20] * 3), pd.DataFrame())).empty


def test_extract_writes_leakage_and_refuses_it_unsuppressed(tmp_path, monkeypatch):
    pp = _hospital_packet([50, 40, 60, 45, 55, 50, 40, 42, 60, 50, 48, 30], [25, 20, 30, 22, 28, 20, 12, 9, 12, 8, 20,
                                                                              15])
    written = packet.write_extract(pp, tmp_path / "ok")
    assert {p.name for p in written} == {"about.csv", "metrics.csv", "leakage.csv", "extract.xlsx"}
    leak = pd.read_csv(tmp_path / "ok" / "leakage.csv")
    assert leak["events"].isna().sum() == 3 and leak.loc[leak["events"].isna(), "share"].isna().all()
    # only the primary cells hidden: the 2024 total then gives the hidden 8 away, and the check says so
    def primary_only(table, *, count_cols, threshold, **_):
        lo, hi = threshold
        out = table.copy()
        small = out["events"].between(lo, hi)
        out["events"] = out["events"].astype("Int64").mask(small)
        out.loc[small, ["rate", "lower", "upper"]] = np.nan
        return out.assign(suppressed=small, suppression_reason=np.where(small, "primary", ""))

    monkeypatch.setattr(packet, "suppress_counts", primary_only)  # the suppression the packet calls
    with pytest.raises(DisclosureError, match="displayed total minus the displayed cells"):
        packet.write_extract(pp, tmp_path / "unsafe")
    assert not (tmp_path / "unsafe").exists()


def test_spending_values_read_as_dollars_and_hidden_counts_are_not_quoted():
    r = _results([100, 7, 95], [0, 0, 0]).assign(measure="episode_spending", metric_label="30-day episode spending",
                                                 events=np.nan, benchmark_events=np.nan,
                                                 value=[17400.0, 18000.0, 17390.0], lower=[16500.0, 15000.0, 16400.0],
                                                 upper=[18300.0, 21000.0, 18400.0], benchmark=[18000.0] * 3,
                                                 target=18000.0, status_reason=["", "too few cases (7, fewer than 25)",
                                                                                "too few cases (95, fewer than 100)"])
    r["previous_value"], r["change"] = r["value"].shift(1), r["value"].diff()
    pp = _packet(r, pd.DataFrame(columns=["facility_id", "direction", "other_id", "category", "n"]))
    safe = packet._suppressed(pp.results, 11)
    # 7 episodes: hidden, and the reason that would quote it too; 95 is shown, and so is its reason
    assert safe["status_reason"].tolist()[1:] == ["too few cases to share", "too few cases (95, fewer than 100)"]
    table = packet.status_table(pp, period=pd.Timestamp("2024-04-01"))
    shown = packet.status_display(table).iloc[0]
    assert (shown["Value"], shown["95% interval"], shown["Target"]) == ("$17,390", "$16,400–$18,400", "≤ $18,000")
    assert shown["Market non-partners"] == "$18,000" and shown["Change since last period"] == ""  # Q1 hidden
    assert packet._fmt_value(-29.4, "episode_spending", change=True) == "-$29"
    assert packet._fmt_value(1234, "episode_spending", change=True) == "+$1,234"
    # the note on follow-up: the last discharge counted, when it falls before the end of the reporting period
    pp.agreement = read_agreement(text='name = "t"\n[[partners]]\nfacility_id = "S1"\n[[metrics]]\nid = "r"\n'
                                       'measure = "episode_spending"\ntarget = { kind = "market" }')
    pp.results = r.assign(view="reporting", counted_through=pd.Timestamp("2024-10-02"))
    assert packet.spending_notes(pp) == ["30-day episode spending counts episodes discharged up to 2 October 2024: "
                                         "an episode is counted once its 30 days and 60 more (for post-acute stays "
                                         "still running) are in the data. Episodes with a stay that has no payment "
                                         "are left out."]


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


def test_a_change_from_a_hidden_period_before_the_reporting_period_is_hidden_everywhere():
    """2023 Q4 (before the 2024 reporting period) has 8 events: hidden. 2024 Q1 is shown (60 cases, 15 events),
    but its change (0.25 - 0.08) would give Q4's hidden value away: blank in the status table of Q1 and in the
    extract, as in the packet's own table (found in the sample: S001003's extract showed such changes)."""
    pp = _packet(_results([100, 60, 95], [8, 15, 85]), pd.DataFrame(columns=["facility_id", "direction",
                                                                             "other_id", "category", "n"]))
    q1 = packet.status_table(pp, period=pd.Timestamp("2024-01-01"))
    assert q1["value"].tolist() == [0.25] and q1["change"].isna().all()
    metrics = packet.extract_tables(pp)["metrics"]
    rows = metrics[metrics["view"] == "review period"].set_index("period")
    assert list(rows.index.astype(str)) == ["2024-01-01", "2024-04-01"]  # Q4 2023 is not in the extract
    assert rows["value"].iloc[0] == 0.25 and pd.isna(rows["change"].iloc[0])
    assert rows["change"].isna().all()  # Q2 is hidden itself (10 non-events)


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
    assert {p.name for p in written} == {"about.csv", "metrics.csv", "extract.xlsx"}
    monkeypatch.setattr(packet, "_suppressed", lambda results, min_cell: results.assign(
        suppressed=False, benchmark_suppressed=False))
    pp = _packet(pp.results, pp.flows)  # a new packet: the first one keeps its hidden views for its life
    with pytest.raises(DisclosureError):
        packet.write_extract(pp, tmp_path / "unsafe")
    assert not (tmp_path / "unsafe").exists()


def test_a_trend_is_computed_once_and_again_when_the_packet_changes():
    pp = _packet(_results([100, 60, 95], [20, 15, 30]), pd.DataFrame(columns=["facility_id", "direction",
                                                                              "other_id", "category", "n"]))
    first = packet.metric_trend(pp, "r")
    first.loc[0, "value"] = -1.0  # a caller's change does not reach the packet's copy
    assert packet.metric_trend(pp, "r")["value"].iloc[0] == pytest.approx(0.2)
    pp.results = _results([100, 60, 95], [30, 15, 30])  # a field replaced: computed again
    assert packet.metric_trend(pp, "r")["value"].iloc[0] == pytest.approx(0.3)
    pp.min_cell = 16  # 15 events are now hidden
    assert packet.metric_trend(pp, "r")["suppressed"].tolist() == [False, True, False]
