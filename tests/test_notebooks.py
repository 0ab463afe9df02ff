"""The notebooks (shipped in the package, ``carequal/notebooks/``): kept without outputs, paired with their
py:percent sources, typed parameters, the ``carequal`` kernelspec, only library calls (no function, class or
column-rename dictionary of their own), metadata that opening and saving them in JupyterLab does not change, and
each one executed with papermill on the sample (the market report through the batch, in test_batch), run as the
batch runs them: with the kernel's working folder outside the package and the interpreter's own kernel."""

from __future__ import annotations

import ast
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from carequal.batch import ipc_kernel_manager

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
    # papermill needs a kernelspec: the kernel `python3 tasks.py lab` registers (the batch runs its own, python3)
    assert nb.metadata["kernelspec"] == {"display_name": "Python 3 (carequal)", "language": "python",
                                         "name": "carequal"}
    assert set(nb.metadata) == {"kernelspec", "jupytext"}  # no language_info: JupyterLab's, filtered out
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and nb.cells.index(tagged[0]) == 0
    declared = papermill.inspect_notebook(str(path))
    assert declared and all(p["inferred_type_name"] not in (None, "None") for p in declared.values())
    # the .py source (reviewed in diffs) and the .ipynb (run by papermill) hold the same cells
    source = jupytext.read(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in source.cells] == [(c.cell_type, c.source) for c in nb.cells]


def _rename_dicts(tree: ast.AST) -> list[str]:
    """Dictionary literals that map names to names (or None): column renames, which belong in the library."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and node.keys and all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys) and all(
                isinstance(v, ast.Constant) and (v.value is None or isinstance(v.value, str)) for v in node.values):
            found.append(ast.unparse(node)[:60])
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_only_call_the_library(path):
    # helpers and column renames live in carequal (tested there), not in a notebook's cells
    nb = nbformat.read(str(path), as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
        tree = ast.parse(source)
        defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                    ast.ClassDef))]
        defined += ["lambda" for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        assert defined == [], f"{path.name} code cell {i} defines {defined}"
        assert _rename_dicts(tree) == [], f"{path.name} code cell {i} holds a rename dictionary"


def _as_jupyterlab_saves_it(nb):
    """A notebook as JupyterLab (with jupytext) saves it after opening and running it: the kernel's language_info,
    cell execution metadata, outputs and execution counts."""
    nb = copy.deepcopy(nb)
    nb.metadata["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                                    "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                                    "pygments_lexer": "ipython3", "version": "3.11.9"}
    nb.metadata["jupytext"]["text_representation"] = {"extension": ".py", "format_name": "percent",
                                                      "format_version": "1.3", "jupytext_version": "1.99.0"}
    for n, cell in enumerate(nb.cells):
        cell.metadata["jupyter"] = {"source_hidden": False}
        cell.metadata["editable"] = True
        if cell.cell_type == "code":
            cell.metadata["execution"] = {"iopub.status.busy": "2026-12-01T10:00:00.000000Z"}
            cell.execution_count = n + 1
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="patient rows\n")]
    return nb


def test_opening_and_saving_in_jupyterlab_leaves_git_status_clean(tmp_path):
    # a copy of the notebooks in a repository with the filter `python3 tasks.py lab` configures: saved as JupyterLab
    # saves them (the .ipynb with its additions, the .py written by jupytext from it), git sees no change
    assert 'filter.carequal-notebook.clean' in (ROOT / "tasks.py").read_text()
    repo = tmp_path / "repo"
    (repo / "carequal").mkdir(parents=True)
    shutil.copytree(FOLDER, repo / "carequal" / "notebooks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    shutil.copy(ROOT / "jupytext.toml", repo / "jupytext.toml")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "filter.carequal-notebook.clean", f'"{sys.executable}" "{ROOT / "scripts" / "notebook_filter.py"}"')
    git("add", "-A")
    git("commit", "-qm", "notebooks")
    assert git("status", "--porcelain") == ""
    sources = {p.name: p.read_bytes() for p in (repo / "carequal" / "notebooks").glob("*.py")}
    for path in sorted((repo / "carequal" / "notebooks").glob("*.ipynb")):
        saved = _as_jupyterlab_saves_it(nbformat.read(str(path), as_version=4))
        nbformat.write(saved, str(path))
        path.with_suffix(".py").write_text(jupytext.writes(saved, fmt="py:percent"))
    assert "patient rows" in (repo / "carequal" / "notebooks" / "market_report.ipynb").read_text()
    # the .py sources: byte for byte what was committed (jupytext's metadata filters pin their header)
    assert {p.name: p.read_bytes() for p in (repo / "carequal" / "notebooks").glob("*.py")} == sources
    # the .ipynb: git sees no difference through the filter; git status, which flags a file whose size changed
    # before it compares contents, is clean once the index is refreshed with `git add` (nothing is staged)
    assert git("diff", "--stat") == ""
    git("add", "-A")
    assert git("status", "--porcelain") == ""
    # a real edit is still seen
    source = repo / "carequal" / "notebooks" / "market_report.py"
    source.write_text(source.read_text() + "\n# %%\n1 + 1\n")
    assert git("status", "--porcelain").split() == ["M", "carequal/notebooks/market_report.py"]


@pytest.fixture(scope="module")
def cache_sample_prepared(tmp_path_factory):
    """The sample as a notebook run by hand writes it to the cache (``carequal.sample.sample_folder``: the sample's
    tables without data/sample's warehouse.toml, so another fingerprint than data/sample's), and its inputs
    prepared for the notebooks' default period: the ``prepared/`` folder of a work folder, built once for the
    notebooks below that prepare from the cache's sample (each still writes the sample to a cache of its own)."""
    from carequal.inputs import prepare
    from carequal.sample import notebook_folders

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAREQUAL_CACHE", str(tmp_path_factory.mktemp("cache")))
        data, work = notebook_folders()
        prepare(data, work, period_start="2024-01-01", period_end="2024-12-31")
    return data.name, work / "prepared"


@pytest.mark.parametrize("name", ["cohort_explorer", "population_health", "partner_packet", "employee_health"])
def test_notebook_runs_on_the_sample(name, tmp_path, sample_work, cache_sample_prepared, monkeypatch):
    out = tmp_path / f"{name}.ipynb"
    before = sorted(p.name for p in FOLDER.iterdir())
    # parameters left at their defaults, as by hand, mean the sample, written to the cache; the work folders the
    # notebooks prepare in hold the inputs prepared from that sample (the cache's, a copy: prepare reuses them).
    # population_health: an explicit work folder; partner_packet: every default, so its work folder is the
    # cache's <sample>.work, where it prepares the packet inputs from the sample and the shipped agreement
    monkeypatch.setenv("CAREQUAL_CACHE", str(tmp_path / "cache"))
    sample_name, prepared = cache_sample_prepared
    default_work = tmp_path / "cache" / f"{sample_name}.work"
    if name in ("population_health", "partner_packet"):
        shutil.copytree(prepared, (tmp_path / "work" if name == "population_health" else default_work) / "prepared")
    parameters = {"cohort_explorer": {"data": str(SAMPLE), "work": str(sample_work.dataset.parent.parent)},
                  "population_health": {"work": str(tmp_path / "work")},
                  "partner_packet": {}, "employee_health": {}}[name]
    # the batch's IPC kernels: TCP kernels started at the same moment by another process can collide; a shell
    # reply missed by the event loop is read within a second (carequal.batch.kernels.wait_in_slices). The
    # explorer's widget cell is where nbclient missed it (jupyter/nbclient#312): its cells each take seconds, so a
    # one-minute limit
    timeout = 60 if name == "cohort_explorer" else 600
    papermill.execute_notebook(str(FOLDER / f"{name}.ipynb"), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False, execution_timeout=timeout,
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
    if name in ("population_health", "partner_packet"):  # the copied inputs were reused: nothing prepared again
        work = tmp_path / "work" if name == "population_health" else default_work
        assert sorted(p.name for p in (work / "prepared").iterdir()) == sorted(p.name for p in prepared.iterdir())
    if name == "partner_packet":  # its inputs prepared in the default work folder, <sample>.work in the cache
        assert [p.name for p in (default_work / "agreement").iterdir()] == ["sample-2024-01-01-2024-12-31"]
