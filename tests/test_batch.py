"""The report batch end to end on the sample: parameters checked before any kernel, one market forced to
fail, a resume that redoes only that market, a market rendered on a kernel reused from another the same as on a
kernel of its own, and the rendered HTML scanned for identifiers and small counts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from call_log import count_calls
from carequal import batch
from carequal.cli import main as cli_main
from carequal.errors import ParameterError
from safe_to_share import identifiers_in, sample_identifiers, small_counts_in_tables

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
FAIL_ENV = "CAREQUAL_TEST_FAIL_MARKET"
LOAD_REPORT = "carequal.report:load_market_report"  # called once per report, in the report's kernel


def _failing_copy(folder: Path) -> Path:
    """The real report notebook plus one cell (after the injected parameters) that fails for the market named
    in an environment variable: the forced failure of one market."""
    nb = nbformat.read(str(batch.DEFAULT_NOTEBOOK), as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(
        "import os\n"
        f"if os.environ.get({FAIL_ENV!r}) == market:\n"
        "    raise RuntimeError(f'forced failure for the test in {market}')"))
    path = folder / "market_report.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The sample's batch on one worker with Lakeshore, the first market, forced to fail: its kernel is replaced,
    and Northvale and then Riverton run on the new one (the reused kernel compared with a kernel of its own
    below); then the resume, which redoes Lakeshore only."""
    folder = tmp_path_factory.mktemp("batch")
    notebook = _failing_copy(folder)
    out, work = folder / "reports", folder / "reports.work"
    mp = pytest.MonkeyPatch()
    mp.setenv(FAIL_ENV, "Lakeshore")
    calls = count_calls("carequal.cohorts:index_stays", folder / "calls", mp, LOAD_REPORT)
    code = cli_main(["report", "--data", str(SAMPLE), "--out", str(out), "--workers", "1", "--period", "2024",
                     "--notebook", str(notebook), "--quiet"])
    first = json.loads((out / "manifest.json").read_text())
    index_first = (out / "index.html").read_text()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.html")}
    executed = {m: json.loads(Path(r["notebook"]).read_text()) for m, r in first["markets"].items()}
    failed_nb = nbformat.from_dict(executed["Lakeshore"])
    failed_error = Path(first["markets"]["Lakeshore"]["error_file"]).read_text()
    mp.delenv(FAIL_ENV)
    index_stays_first, reports_first = calls(), calls(LOAD_REPORT)
    second = batch.run_batch(SAMPLE, out, workers=2, period="2024", notebook=notebook, progress=False)
    index_stays_second = calls()[len(index_stays_first):]
    mp.undo()
    return {"index_stays": (index_stays_first, index_stays_second),
            "code": code, "first": first, "index_first": index_first, "mtimes": mtimes, "second": second,
            "out": out, "work": work, "failed_nb": failed_nb, "failed_error": failed_error, "executed": executed,
            "report_kernels": reports_first}


def test_index_stays_runs_once_per_batch(runs):
    # the first run's prepare builds the measured cohort with one index_stays run (in the batch's process); the
    # market kernels read it (and a failing market calls nothing more); the second run reuses it: no run at all
    first, second = runs["index_stays"]
    assert first == [os.getpid()] and second == []


def test_a_failed_market_does_not_stop_the_others(runs):
    first = runs["first"]
    assert runs["code"] == 1  # non-zero exit status
    status = {m: r["status"] for m, r in first["markets"].items()}
    assert status == {"Lakeshore": "failed", "Northvale": "ok", "Riverton": "ok"}
    lakeshore = first["markets"]["Lakeshore"]
    assert lakeshore["error_kind"] == "RuntimeError" and "error" not in lakeshore  # the text stays in the work folder
    assert "RuntimeError: forced failure for the test in Lakeshore" in runs["failed_error"]
    executed = runs["failed_nb"]  # kept, up to the failing cell
    assert any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    assert "forced failure" in runs["failed_error"] and "Traceback" in runs["failed_error"]
    assert "Lakeshore.html" not in runs["mtimes"]
    # the failed market's row: its batch status apart, no measures (a report not produced is not "as expected")
    row = re.search(r"<tr><td><b>Lakeshore</b></td>.*?</tr>", runs["index_first"], flags=re.DOTALL)[0]
    assert '<span class="status failed">report not produced</span>' in row and "As expected" not in row
    assert "2 of 3 market reports ready" in runs["index_first"]
    for market in ("Northvale", "Riverton"):
        record = first["markets"][market]
        assert record["html"] == f"{market}.html" and record["kpis"]["readmission"]["rate"] > 0
        assert set(record["seconds"]) == {"kernel_start", "compute", "execute", "render", "total"}


def test_resume_redoes_only_the_failed_market(runs):
    second, out = runs["second"], runs["out"]
    assert second.ok
    assert {m: r["reused"] for m, r in second.markets.items()} == {
        "Lakeshore": False, "Northvale": True, "Riverton": True}
    for name, mtime in runs["mtimes"].items():
        if name != "index.html":
            assert (out / name).stat().st_mtime_ns == mtime, name  # untouched
    assert (out / "Lakeshore.html").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["fingerprint"] == runs["first"]["data"]["fingerprint"]
    assert manifest["parameters"]["period_start"] == "2024-01-01"
    assert manifest["packages"]["papermill"] and manifest["packages"]["pandas"]
    assert manifest["seconds"]["prepare"]["reused"] is True
    assert "3 of 3 market reports ready" in (out / "index.html").read_text()


def test_a_reused_kernel_renders_what_a_kernel_of_its_own_renders(runs, riverton_alone):
    """Riverton ran on the kernel that had just run Northvale: its executed notebook has the same outputs, cell
    for cell, as from a kernel of its own (the session's ``riverton_alone``: a batch of Riverton alone), this
    batch's forced-failure cell apart."""

    def code_cells(nb: dict) -> list[dict]:
        return [c for c in nb["cells"] if c["cell_type"] == "code" and FAIL_ENV not in "".join(c["source"])]

    def outputs(nb: dict) -> list[list[dict]]:
        return [[{k: v for k, v in o.items() if k != "execution_count"} for o in c.get("outputs", [])]
                for c in code_cells(nb)]

    # one kernel process loaded both reports (Lakeshore's failed before loading its report, on the kernel that
    # was then replaced), and not the batch's own process
    [northvale_kernel, riverton_kernel] = runs["report_kernels"]
    assert northvale_kernel == riverton_kernel != os.getpid()
    reused = runs["executed"]["Riverton"]
    fresh = json.loads((riverton_alone.with_name("reports.work") / "notebooks" / "Riverton.ipynb").read_text())
    assert list(json.loads((riverton_alone / "manifest.json").read_text())["markets"]) == ["Riverton"]
    assert runs["first"]["parameters"]["reuse_kernel"] is True
    assert len(code_cells(reused)) == len(code_cells(fresh)) and sum(len(o) for o in outputs(reused)) > 20
    assert outputs(reused) == outputs(fresh)


def test_outputs_are_complete_files_only(runs):
    out = runs["out"]
    assert sorted(p.name for p in out.iterdir()) == [".carequal", "Lakeshore.html", "Northvale.html",
                                                     "Riverton.html", "index.html", "manifest.json"]
    # the lock and its holder's description; the staging folder is emptied at the end of a run
    assert sorted(p.name for p in (out / ".carequal").iterdir()) in (["holder.json", "lock"],
                                                                     ["holder.json", "lock", "staging"])
    assert not [p for p in (out / ".carequal").rglob("*") if p.is_file() and p.parent.name != ".carequal"]
    assert not list(runs["work"].rglob(".tmp-*"))
    assert batch.verify_folder(out) == []


# ------------------------------------------------------------------------------------------------ safe to share


def test_rendered_reports_are_safe_to_share(runs):
    ids = sample_identifiers(SAMPLE)
    pages = sorted(runs["out"].glob("*.html"))
    assert len(pages) == 4
    checked_cells = 0
    for page in pages:
        html = page.read_text()
        tokens = identifiers_in(html)
        assert not tokens & ids, f"{page.name}: identifiers {sorted(tokens & ids)[:5]}"
        for marker in ("Traceback", 'data-mime-type="application/vnd.jupyter.stderr"', "Warning:",
                       "import carequal", "rpt.", 'class="highlight hl-ipython3"'):
            assert marker not in html, f"{page.name}: {marker!r} in the rendered report"
        assert "cdnjs" not in html and "<script src=" not in html
        checked_cells += small_counts_in_tables(html, where=page.name)
        # counts quoted in sentences
        for number in re.findall(r"\bof ([\d,]+) (?:cases|discharges|referrals)", html):
            assert int(number.replace(",", "")) > 10
    assert checked_cells > 100  # the scan did read the report tables
    report = (runs["out"] / "Northvale.html").read_text()
    for section in ("Headline findings", "Partner scorecard", "Which facilities stand out?", "Trends and signals",
                    "Where patients go after the hospital", "Population health", "Partnership impact",
                    "Appendix: methods and data quality"):
        assert section in report
    assert report.count("data:image/png;base64") >= 8  # the charts are embedded: one self-contained file


def test_the_identifier_scan_finds_what_a_whole_text_search_finds(runs):
    # identifiers_in searches its second pattern word by word (fast on base64 charts): on a rendered report and on
    # hand-made text (identifiers inside words, next to punctuation, non-ASCII digits) it finds the same tokens
    from safe_to_share import _same_as_whole_text

    assert _same_as_whole_text((runs["out"] / "Northvale.html").read_text())
    text = "S00000000000, xH001001; Ab12cD34567 Z1234a5678_9999 é١٢٣٤٥ A12 B1234x 12345678 <td>P0000123</td>"
    assert _same_as_whole_text(text)
    assert identifiers_in(text) >= {"S00000000000", "H001001", "D34567", "Z1234a5678_9999", "B1234", "P0000123"}


# ------------------------------------------------------------------------------------------------ parameters


def test_parameters_are_checked_before_anything_runs(tmp_path):
    out, work = tmp_path / "reports", tmp_path / "reports.work"
    with pytest.raises(ParameterError, match=r"unknown market\(s\) 'Atlantis'.*Lakeshore, Northvale, Riverton"):
        batch.run_batch(SAMPLE, out, markets="Northvale,Atlantis")
    with pytest.raises(ParameterError, match="--period"):
        batch.run_batch(SAMPLE, out, period="2024-13")
    with pytest.raises(ParameterError, match="unknown measure"):
        batch.run_batch(SAMPLE, out, period="2024", measures="readmission,los")
    with pytest.raises(ParameterError, match="unknown condition"):
        batch.run_batch(SAMPLE, out, period="2024", conditions="gout")
    with pytest.raises(ParameterError, match="min_cell"):
        batch.run_batch(SAMPLE, out, period="2024", min_cell=0)
    with pytest.raises(ParameterError, match="below the disclosure floor of 11.*--allow-small-cells"):
        batch.run_batch(SAMPLE, out, period="2024", min_cell=5)
    with pytest.raises(ParameterError, match="workers"):
        batch.run_batch(SAMPLE, out, period="2024", workers=0)
    with pytest.raises(ParameterError, match="must not be inside"):
        batch.run_batch(SAMPLE, out, period="2024", work=out / "work")
    assert not out.exists() and not work.exists()  # nothing was prepared or run


def test_workers_started_before_the_run_stop_when_it_is_refused(tmp_path):
    # the command line starts the worker processes before it loads the batch (run_batch(pool=...)): a run
    # refused before it starts (here a bad period) still shuts them down, and says why
    from carequal.batch.jobs import start_workers

    pool = start_workers(2)
    with pytest.raises(ParameterError, match="--period 'bogus'"):
        batch.run_batch(SAMPLE, tmp_path / "out", by="partner", period="bogus", workers=2, pool=pool, progress=False)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(int)
    assert not (tmp_path / "out").exists()


def test_check_parameters_against_the_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("market: str = 'A'\nmin_cell: int = 11\nuntyped = 3",
                                          metadata={"tags": ["parameters"]})]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    batch.check_parameters(path, {"market": "B", "min_cell": 5})
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) markt; nb.ipynb declares market, min_cell"):
        batch.check_parameters(path, {"markt": "B"})
    with pytest.raises(ParameterError, match="min_cell must be int, not str"):
        batch.check_parameters(path, {"min_cell": "11"})
    with pytest.raises(ParameterError, match="untyped has no type annotation"):
        batch.check_parameters(path, {"untyped": 4})


def test_the_report_notebook_declares_what_the_batch_passes():
    declared = __import__("papermill").inspect_notebook(str(batch.DEFAULT_NOTEBOOK))
    assert set(declared) == {"market", "period_start", "period_end", "conditions", "measures", "data", "work",
                             "reference", "min_cell", "kpi_path"}
    assert all(p["inferred_type_name"] not in (None, "None") for p in declared.values())


def test_a_port_collision_is_retried(tmp_path, monkeypatch):
    """With a fresh kernel per market (papermill's way): a kernel start that collides is retried."""
    import papermill

    calls = []

    def flaky(input_path, output_path, **kwargs):
        calls.append(kwargs["kernel_manager_class"].__name__)
        if len(calls) == 1:
            raise RuntimeError("ZMQError: Address already in use (addr='tcp://127.0.0.1:50123')")
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell("# done")]
        nbformat.write(nb, output_path)

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    job = batch.MarketJob(market="M", notebook=str(batch.DEFAULT_NOTEBOOK), parameters={},
                          html=str(tmp_path / "M.html"), executed=str(tmp_path / "M.ipynb"),
                          kpis=str(tmp_path / "M.json"), error=str(tmp_path / "M.error.txt"), reuse_kernel=False)
    result = batch.run_market(job)
    assert result["status"] == "ok" and result["attempts"] == 2
    assert calls == ["IPCKernelManager", "IPCKernelManager"]  # IPC sockets: no TCP port to collide on
    assert "done" in (tmp_path / "M.html").read_text()


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "index.html"
    target.write_text("old complete page")

    def broken_replace(self, other):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", broken_replace)
    monkeypatch.setattr("os.replace", lambda a, b: broken_replace(a, b))
    with pytest.raises(OSError):
        batch.write_atomic(target, "new page")
    assert target.read_text() == "old complete page"
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left behind


def test_parse_period_forms():
    assert batch.parse_period("2023-Q4") == ("2023-10-01", "2023-12-31")
    assert batch.parse_period("2024-01-01:2024-03-31") == ("2024-01-01", "2024-03-31")
    with pytest.raises(ParameterError, match="after end"):
        batch.parse_period("2024-03-31:2024-01-01")
