"""``carequal report --by sponsor`` on the sample: one employee health report for the alliance and one per sponsor,
indexed, and safe to share (no identifier, no small count in a table)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from carequal import batch
from carequal.errors import ParameterError
from safe_to_share import identifiers_in, sample_identifiers, small_counts_in_tables

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SPONSORS = ["Lakeshore Health", "Northvale Health", "Northvale Medical Group", "Riverton Health"]


@pytest.fixture(scope="module")
def sponsor_run(tmp_path_factory, sample_work):
    out = tmp_path_factory.mktemp("employees") / "reports"
    work = Path(sample_work.dataset).parents[1]  # the session's prepared sample is reused
    result = batch.run_batch(SAMPLE, out, by="sponsor", period="2024", work=work, workers=2, progress=False)
    return result, out


def test_one_report_for_the_alliance_and_one_per_sponsor(sponsor_run):
    result, out = sponsor_run
    assert result.ok
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["by"] == "sponsor" and list(manifest["sponsors"]) == ["All sponsors", *SPONSORS]
    assert sorted(p.name for p in out.glob("*.html")) == sorted(
        ["index.html", "All_sponsors.html"] + [f"{s.replace(' ', '_')}.html" for s in SPONSORS])
    kpis = manifest["sponsors"]["All sponsors"]["kpis"]
    assert kpis["period"] == "2024" and kpis["ed_visits"] > 100 and kpis["member_years"] > 4000
    index = html.unescape((out / "index.html").read_text())
    assert "Our employees' health" in index and all(s in index for s in SPONSORS)


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


def test_by_sponsor_is_checked_before_it_runs(tmp_path):
    with pytest.raises(ParameterError, match="--by must be 'market', 'partner' or 'sponsor'"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="employer")
    with pytest.raises(ParameterError, match="--agreement goes with --by partner only"):
        batch.run_batch(SAMPLE, tmp_path / "r", by="sponsor", agreement=SAMPLE / "agreement.toml")
