"""carequal as a pip user gets it: a wheel built from the checkout, installed in a new virtual environment outside
the checkout, writes the sample and renders a market report from a folder that knows nothing of the checkout.

The new environment does not download carequal's dependencies again: a ``.pth`` file adds this environment's
site-packages *after* its own, and ``JUPYTER_PATH`` this environment's ``share/jupyter`` (nbconvert's base
templates, the kernelspec). Neither makes the checkout importable there: a ``.pth`` line does not run the
``.pth`` files of the folder it adds (so not the editable install's finder), and the test checks where
``carequal`` is imported from. The same wheel, imported as a zip, checks the zipped case of
:mod:`carequal.packaged`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def _package_files(folder: Path) -> set[str]:
    """Every file of the checkout's ``carequal/`` (caches and hidden files aside), as wheel names."""
    return {p.relative_to(folder.parent).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not any(q.startswith(".") for q in p.parts)
            and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what it is made of (a stale ``build/`` of the checkout cannot leak in)."""
    folder = tmp_path_factory.mktemp("wheel")
    src = folder / "src"
    shutil.copytree(ROOT / "carequal", src / "carequal", ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(folder / "dist"), str(src)], check=True)
    (built,) = (folder / "dist").glob("carequal-*.whl")
    return built


@pytest.fixture(scope="module")
def env(tmp_path_factory, wheel) -> dict:
    """A virtual environment outside the checkout with the wheel installed, and the environment to run it in."""
    folder = tmp_path_factory.mktemp("venv")
    prefix = folder / "venv"
    venv.create(prefix, with_pip=False)
    bin_dir = prefix / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    # this environment's pip installs into the new one (--python): nothing else is seen while installing
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz-carequal-test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CAREQUAL_CACHE")}
    environ.update(PATH=str(bin_dir) + os.pathsep + os.environ.get("PATH", ""), PYTHONNOUSERSITE="1",
                   JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
                   JUPYTER_DATA_DIR=str(folder / "jupyter-data"), JUPYTER_CONFIG_DIR=str(folder / "jupyter-config"))
    user = folder / "user"  # the pip user's folder: not the checkout, not the environment
    user.mkdir()
    return {"prefix": prefix.resolve(), "python": python, "carequal": bin_dir / "carequal", "site": site,
            "environ": environ, "user": user}


def test_the_wheel_holds_every_file_of_the_package(wheel):
    # notebooks (.ipynb and their jupytext .py), the template, code lists, value sets, the sample's agreement:
    # whatever the checkout's carequal/ holds is in the wheel, so no file is found only in a checkout
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _package_files(ROOT / "carequal") - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert {"carequal/notebooks/market_report.ipynb", "carequal/notebooks/partner_packet.ipynb",
            "carequal/templates/carequal_report/index.html.j2", "carequal/data/sample/agreement.toml"} <= names


def test_carequal_is_imported_from_the_new_environment_only(env):
    code = ("import json, sys, carequal, jupyter_client.manager as m; print(json.dumps({'file': carequal.__file__, "
            "'path': sys.path, 'kernel': m.KernelManager(kernel_name='python3').format_kernel_cmd()[0]}))")
    found = json.loads(subprocess.run([str(env["python"]), "-c", code], cwd=env["user"], env=env["environ"],
                                      check=True, capture_output=True, text=True).stdout)
    assert Path(found["file"]).resolve().is_relative_to(env["prefix"])
    assert not any(p and Path(p).resolve() == ROOT for p in found["path"])
    # the report kernels run the new environment's interpreter (so import the wheel's carequal too)
    assert Path(found["kernel"]) == env["python"]


def test_sample_and_report_run_from_the_installed_wheel(env):
    installed = env["site"] / "carequal" / "notebooks"
    before = sorted(p.name for p in installed.iterdir())
    run = {"cwd": env["user"], "env": env["environ"], "capture_output": True, "text": True}
    sample = subprocess.run([str(env["carequal"]), "sample", "--out", "S"], **run)
    assert sample.returncode == 0, sample.stderr
    assert (env["user"] / "S" / "agreement.toml").read_bytes() == (ROOT / "data" / "sample" / "agreement.toml"
                                                                   ).read_bytes()
    # one market and one measure: what is under test is the installed package (its notebooks, template and code
    # lists, all used by any report), not the report's content (test_batch renders every market and measure)
    report = subprocess.run([str(env["carequal"]), "report", "--data", "S", "--out", "R", "--period", "2024",
                             "--markets", "Riverton", "--measures", "readmission", "--quiet"], **run)
    assert report.returncode == 0, report.stdout + report.stderr
    out = env["user"] / "R"
    assert (out / "index.html").is_file() and (out / "Riverton.html").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["markets"]["Riverton"]["status"] == "ok" and manifest["measures"] == ["readmission"]
    notebook = Path(manifest["parameters"]["notebook"]).resolve()
    assert notebook.is_relative_to(env["prefix"]) and notebook.name == "market_report.ipynb"
    # the kernel worked in the run's work folder: nothing was written beside the installed notebooks
    assert sorted(p.name for p in installed.iterdir()) == before
    assert (env["user"] / "R.work" / "notebooks" / "Riverton.ipynb").is_file()


def test_a_zipped_package_gives_its_notebooks_and_template_as_files(wheel, tmp_path):
    # a wheel is a zip with carequal/ at its root: imported from it (zipimport), carequal has no files on disk
    code = """
import hashlib, json, sys
import carequal
from carequal.batch import DEFAULT_NOTEBOOK, render_html
from carequal.packaged import as_path, template_dir
import nbformat
notebook = as_path(DEFAULT_NOTEBOOK)
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Zipped and rendered")])
nbformat.write(nb, sys.argv[1] + "/executed.ipynb")
render_html(sys.argv[1] + "/executed.ipynb", sys.argv[1] + "/out.html", title="zipped")
print(json.dumps({"package": carequal.__file__, "notebook": str(notebook), "again": str(as_path(DEFAULT_NOTEBOOK)),
                  "sha256": hashlib.sha256(notebook.read_bytes()).hexdigest(), "template": str(template_dir()),
                  "conf": (template_dir() / "carequal_report" / "conf.json").is_file()}))
"""
    environ = {**os.environ, "PYTHONPATH": str(wheel)}
    found = json.loads(subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=environ, cwd=tmp_path,
                                      check=True, capture_output=True, text=True).stdout)
    assert found["package"].startswith(str(wheel))
    shipped = (ROOT / "carequal" / "notebooks" / "market_report.ipynb").read_bytes()
    assert found["sha256"] == hashlib.sha256(shipped).hexdigest()
    assert found["again"] == found["notebook"]  # copied out once per process
    assert found["conf"] and not Path(found["template"]).is_relative_to(ROOT)
    assert not Path(found["notebook"]).exists()  # the copies are removed when the process exits
    assert "Zipped and rendered" in (tmp_path / "out.html").read_text()
