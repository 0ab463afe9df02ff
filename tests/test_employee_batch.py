"""``carequal report --by sponsor`` on the sample: one employee health report for the alliance and one per sponsor,
indexed, and safe to share (no identifier, no small count in a table); the programme named on the command line;
the sponsor table ``--to-db`` writes."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from pathlib import Path

import pytest

from carequal import batch
from carequal.errors import ParameterError
from conftest import copy_prepared
from safe_to_share import identifiers_in, sample_identifiers, small_counts_in_tables

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SPONSORS = ["Lakeshore Health", "Northvale Health", "Northvale Medical Group", "Riverton Health"]


@pytest.fixture(scope="module")
def sponsor_run(tmp_path_factory, sample_work):
    base = tmp_path_factory.mktemp("employees")
    out, work = base / "reports", copy_prepared(sample_work, base / "work")  # the session's prepared sample is reused
    result = batch.run_batch(SAMPLE, out, by="sponsor", period="2024", work=work, progress=False,
                             programme="Riverton Health:2023-07-01")  # the sample's (truth.json, employers)
    return result, out


def test_one_report_for_the_alliance_and_one_per_sponsor(sponsor_run):
    result, out = sponsor_run
    assert result.ok
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["by"] == "sponsor" and list(manifest["sponsors"]) == ["All sponsors", *SPONSORS]
    assert manifest["parameters"]["programme"] == "Riverton Health:2023-07-01"
    assert sorted(p.name for p in out.glob("*.html")) == sorted(
        ["index.html", "All_sponsors.html"] + [f"{s.replace(' ', '_')}.html" for s in SPONSORS])
    kpis = manifest["sponsors"]["All sponsors"]["kpis"]
    assert kpis["period"] == "2024" and kpis["ed_visits"] > 100 and kpis["member_years"] > 4000
    index = html.unescape((out / "index.html").read_text())
    assert "Our employees' health" in index and all(s in index for s in SPONSORS)


def test_a_second_run_keeps_every_sponsor_report_and_the_folder_agrees(sponsor_run, tmp_path):
    """Run again on the same inputs (in a copy of the folder, so the other tests read the first run's): every
    report is reused and stays in place, and reports, manifest and index agree. A sponsor folder's records were
    once not found by the folder's own checks (``units_of`` knew markets and partners only): the second run then
    deleted every report as unrecorded, and said they were ready."""
    import shutil

    result, out = sponsor_run
    assert batch.verify_folder(out) == []
    again = tmp_path / "reports"
    shutil.copytree(out, again)
    second = batch.run_batch(SAMPLE, again, by="sponsor", period="2024", work=result.manifest["work"],
                             progress=False, programme="Riverton Health:2023-07-01")
    assert second.ok and all(r["reused"] for r in second.markets.values()) and len(second.markets) == 5
    assert sorted(p.name for p in again.glob("*.html")) == sorted(p.name for p in out.glob("*.html"))
    assert batch.verify_folder(again) == []


def test_employee_reports_are_safe_to_share(sponsor_run):
    _, out = sponsor_run
    ids = sample_identifiers(SAMPLE)
    checked = 0
    for page in sorted(out.glob("*.html")):
        text = page.read_text()
        assert not identifiers_in(text) & ids, page.name
        for marker in ("Traceback", 'data-mime-type="application/vnd.jupyter.stderr"', "Warning:", "import carequal"):
            assert marker not in text, f"{page.name}: {marker!r}"
        checked += small_counts_in_tables(text, where=page.name)
    assert checked > 100
    alliance = html.unescape((out / "All_sponsors.html").read_text())
    for section in ("How much care do our employees use?", "Trends", "Avoidable admissions", "Chronic conditions",
                    "Is the care-management programme working?", "Methods",
                    "only inpatient payments are in the data", "aged 65 and over"):
        assert section in alliance, section


def test_the_named_programme_is_shown_where_it_runs(sponsor_run):
    _, out = sponsor_run
    for page in ("All_sponsors.html", "Riverton_Health.html"):
        text = html.unescape((out / page).read_text())
        # an effect on ED visits (thousands of visits), and on avoidable admissions or why it cannot be told
        assert "Since Riverton Health started its programme on 1 July 2023" in text, page
        assert "emergency department visits than members without it would lead us to expect" in text, page
        assert "avoidable (PQI) admissions" in text, page
    other = html.unescape((out / "Lakeshore_Health.html").read_text())
    assert "The care-management programme runs at Riverton Health" in other
    # chronic conditions under their display names, never the data's keys
    alliance = html.unescape((out / "All_sponsors.html").read_text())
    assert "Heart failure" in alliance and "heart_failure" not in alliance


def test_the_to_db_sponsor_table(sponsor_run, tmp_path):
    from carequal.warehouse.writeback import open_target, shared_tables, write_back

    result, _ = sponsor_run
    db = tmp_path / "bi.sqlite"
    written = write_back(result, open_target(f"sqlite:///{db}"))
    assert written == {"carequal_sponsor_kpis": len(shared_tables(result)["carequal_sponsor_kpis"])}
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT sponsor, measure, rate, run_id, period_start, period_end "
                           "FROM carequal_sponsor_kpis").fetchall()
        columns = [c[1] for c in con.execute("PRAGMA table_info(carequal_sponsor_kpis)")]
    assert columns == ["sponsor", "measure", "rate", "run_id", "period_start", "period_end"]
    assert {r[0] for r in rows} == {"All sponsors", *SPONSORS}
    assert {r[1] for r in rows} == {"admissions", "pqi_admissions", "ed_visits", "post_acute_admissions",
                                    "inpatient_spending"}
    assert {r[3:] for r in rows} == {(result.manifest["run_id"], "2024-01-01", "2024-12-31")}
    kpis = result.markets["All sponsors"]["kpis"]
    assert {(r[1], r[2]) for r in rows if r[0] == "All sponsors"} == {
        (m, kpis[m]) for m in ("admissions", "pqi_admissions", "ed_visits", "post_acute_admissions",
                               "inpatient_spending")}


def test_by_sponsor_is_checked_before_it_runs(tmp_path):
    with pytest.raises(ParameterError, match="--by must be 'market', 'partner' or 'sponsor'"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="employer")
    with pytest.raises(ParameterError, match="--agreement goes with --by partner only"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="sponsor", agreement=SAMPLE / "agreement.toml")
    with pytest.raises(ParameterError, match="--markets goes with --by market or partner"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="sponsor", markets="Riverton")
    with pytest.raises(ParameterError, match="--programme must be SPONSOR:YYYY-MM-DD"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="sponsor", programme="Riverton Health")
    with pytest.raises(ParameterError, match="--programme must be SPONSOR:YYYY-MM-DD"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="sponsor", programme="Riverton Health:1 July")
    with pytest.raises(ParameterError, match="--programme goes with --by sponsor only"):
        batch.run_batch(SAMPLE, tmp_path / "r", programme="Riverton Health:2023-07-01")
    assert batch.parse_programme(" Riverton Health : 2023-07-01 ") == ("Riverton Health", "2023-07-01")


@pytest.mark.parametrize(("programme", "message"), [
    ("Nobody Health:2023-07-01", "--programme: sponsor 'Nobody Health' is not in enrollment.sponsor"),
    ("Riverton Health:2025-03-01", "--programme: the start 2025-03-01 is after the reporting period"),
])
def test_a_programme_the_data_cannot_hold_is_refused_before_any_report(programme, message, tmp_path, sample_work):
    # checked against the prepared data (the session's, copied: nothing is prepared again), before any kernel runs
    out, work = tmp_path / "r", copy_prepared(sample_work, tmp_path / "work")
    with pytest.raises(ParameterError, match=re.escape(message)):
        batch.run_batch(SAMPLE, out, by="sponsor", period="2024", work=work, programme=programme, progress=False)
    assert not list(out.glob("*.html")) and not (work / "notebooks").exists()
