"""The notebooks (shipped in the package, ``carequal/notebooks/``): kept without outputs, paired with their
py:percent sources, typed parameters, a kernelspec, and each one executed with papermill on the sample (the
market report through the batch, in test_batch), run as the batch runs them: with the kernel's working folder
outside the package."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "carequal" / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
SAMPLE = ROOT / "data" / "sample"


def test_the_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} == {"market_report", "partner_packet", "cohort_explorer", "population_health",
                                           "employee_health"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_typed_and_paired(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:  # no outputs in version control: they could hold patient rows
        if cell.cell_type == "code":
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, path.name
    assert nb.metadata["kernelspec"]["name"] == "python3"  # papermill needs a kernelspec
    assert nb.metadata["kernelspec"]["language"] == "python"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and nb.cells.index(tagged[0]) == 0
    declared = papermill.inspect_notebook(str(path))
    assert declared and all(p["inferred_type_name"] not in (None, "None") for p in declared.values())
    # the .py source (reviewed in diffs) and the .ipynb (run by papermill) hold the same cells
    source = jupytext.read(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in source.cells] == [(c.cell_type, c.source) for c in nb.cells]


@pytest.mark.parametrize("name", ["cohort_explorer", "population_health", "partner_packet", "employee_health"])
def test_notebook_runs_on_the_sample(name, tmp_path, sample_work, monkeypatch):
    from carequal.batch import ipc_kernel_manager

    out = tmp_path / f"{name}.ipynb"
    before = sorted(p.name for p in FOLDER.iterdir())
    # parameters left at their defaults, as by hand, mean the sample, written to the cache (the same bytes as
    # data/sample, so a work folder prepared from data/sample is reused); partner_packet: every default, so its
    # inputs are prepared from the sample and the shipped agreement
    monkeypatch.setenv("CAREQUAL_CACHE", str(tmp_path / "cache"))
    parameters = {"cohort_explorer": {"data": str(SAMPLE), "work": str(sample_work.dataset.parent.parent)},
                  "population_health": {"work": str(sample_work.dataset.parent.parent)},
                  "partner_packet": {}, "employee_health": {}}[name]
    # IPC kernels, as the batch uses: TCP kernels started at the same moment by another process can collide
    papermill.execute_notebook(str(FOLDER / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(tmp_path), progress_bar=False, execution_timeout=600,
                               kernel_manager_class=ipc_kernel_manager(str(tmp_path)))
    executed = nbformat.read(str(out), as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, "the notebook showed nothing"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings or progress bars leaked into output"
    assert sorted(p.name for p in FOLDER.iterdir()) == before  # nothing written beside the notebooks
    cache = sorted(p.name for p in (tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else []
    expected = {"cohort_explorer": 0, "population_health": 1, "partner_packet": 2,  # sample (and .work)
                "employee_health": 1}[name]
    assert len(cache) == expected and all(n.startswith("sample-") for n in cache)
