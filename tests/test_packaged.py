"""What the package ships and finds without a checkout: the notebooks and template (carequal.packaged), the sample
and its agreement (carequal.sample, ``carequal sample``), and the folders a notebook run by hand uses.
The wheel itself is tested in test_wheel.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from carequal import packaged, sample
from carequal.batch import DEFAULT_NOTEBOOK, PACKET_NOTEBOOK
from carequal.cli import main as cli_main
from carequal.errors import ParameterError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def test_the_shipped_agreement_is_the_committed_sample_agreement():
    # two copies of one hand-written file: data/sample/ (beside the tables, for a checkout) and the package's
    assert sample.agreement_bytes() == (SAMPLE / "agreement.toml").read_bytes()
    assert (ROOT / "carequal" / "data" / "sample" / "agreement.toml").read_bytes() == sample.agreement_bytes()


def test_the_shipped_notebooks_are_found_in_the_package():
    folder = ROOT / "carequal" / "notebooks"
    assert {p.stem for p in folder.glob("*.ipynb")} == set(packaged.NOTEBOOKS)
    assert {p.stem for p in folder.glob("*.py")} == set(packaged.NOTEBOOKS)
    assert packaged.as_path(DEFAULT_NOTEBOOK) == folder / "market_report.ipynb"
    assert packaged.as_path(PACKET_NOTEBOOK) == folder / "partner_packet.ipynb"
    assert (packaged.template_dir() / "carequal_report" / "index.html.j2").is_file()
    with pytest.raises(ValueError, match="no notebook 'market' in carequal/notebooks"):
        packaged.notebook("market")


def test_sample_command_writes_the_committed_sample(tmp_path, capsys):
    out = tmp_path / "sample"
    assert cli_main(["sample", "--out", str(out)]) == 0
    assert "carequal report --data" in capsys.readouterr().out
    # warehouse.toml maps the sample's warehouse layout (tests/pg_server.py) for a checkout's developers: not shipped
    committed = sorted(p.name for p in SAMPLE.iterdir() if p.is_file() and p.name != "warehouse.toml")
    assert sorted(p.name for p in out.iterdir()) == committed
    for name in committed:
        assert (out / name).read_bytes() == (SAMPLE / name).read_bytes(), name


def test_sample_command_refuses_a_folder_with_files_unless_forced(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli_main(["sample", "--out", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert cli_main(["sample", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "stays.csv").is_file()
    with pytest.raises(ParameterError, match="is a file"):
        sample.write_sample(tmp_path / "notes.txt")


def test_a_notebook_run_by_hand_uses_the_sample_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREQUAL_CACHE", str(tmp_path / "cache"))
    data, work = sample.notebook_folders("", "")
    assert data.parent == tmp_path / "cache" and data.name.startswith("sample-")
    assert work == data.with_name(data.name + ".work")
    shipped = sorted(p.name for p in SAMPLE.iterdir() if p.is_file() and p.name != "warehouse.toml")
    assert sorted(p.name for p in data.iterdir()) == shipped
    assert (data / "stays.csv").read_bytes() == (SAMPLE / "stays.csv").read_bytes()
    written = (data / "stays.csv").stat().st_mtime_ns
    assert sample.notebook_folders() == (data, work)  # written once, then reused
    assert (data / "stays.csv").stat().st_mtime_ns == written
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [data.name]  # no temporary folder left behind
    # given folders are used as they are; a given data folder's work folder is beside it
    assert sample.notebook_folders(str(SAMPLE), "/w") == (SAMPLE, Path("/w"))
    assert sample.notebook_folders(str(SAMPLE)) == (SAMPLE, ROOT / "data" / "sample.work")


def test_the_command_freezes_the_collector_before_exit_and_main_leaves_it_alone(tmp_path):
    """``carequal`` (the console script, ``carequal.cli:run``) runs with the batch's collector thresholds and exits
    with main's status after gc.freeze (a fast exit: see run's docstring); ``main`` called in a process, as here,
    changes neither."""
    import gc
    import subprocess
    import sys
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"carequal": "carequal.cli:run"}
    from carequal.batch.kernels import COLLECTOR_THRESHOLDS

    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0, gc.get_threshold()))\n"
            "sys.argv = ['carequal', 'sample', '--out', sys.argv[1]]\n"
            "from carequal.cli import run\nrun()\n")
    for out, status in ((tmp_path / "new", 0), (tmp_path / "new", 2)):  # the second run is refused: not empty
        done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
        assert done.returncode == status, done.stderr
        # frozen, and the collector ran with the batch's thresholds
        assert done.stdout.rstrip().endswith(f"frozen at exit: True {COLLECTOR_THRESHOLDS}")
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # whatever the calling process chose (the tests' conftest: the batch's)
    try:
        assert cli_main(["sample", "--out", str(tmp_path / "in-process")]) == 0
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*thresholds)
