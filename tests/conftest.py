"""Shared fixtures: a tiny, valid set of contract tables, as text (as read from CSV)."""

from __future__ import annotations

import pandas as pd
import pytest


def valid_raw_tables() -> dict[str, pd.DataFrame]:
    """Two markets, four facilities, three patients, six stays: valid under the contract."""
    facilities = pd.DataFrame({
        "facility_id": ["H1", "H2", "S1", "S2"],
        "name": ["North General", "South General", "North Nursing", "South Nursing"],
        "setting": ["acute", "acute", "snf", "snf"],
        "market": ["North", "South", "North", "South"],
        "is_partner": ["true", "false", "true", "false"],
        "partner_since": ["2023-01-01", "", "2023-06-01", ""],
        "beds": ["300", "120", "90", ""],
    })
    patients = pd.DataFrame({
        "patient_id": ["P1", "P2", "P3"],
        "birth_date": ["1940-05-01", "1952-11-30", "1948-01-15"],
        "sex": ["F", "m", "F"],
        "dual_eligible": ["false", "1", "no"],
        "death_date": ["", "2024-03-09", ""],
        "market": ["North", "South", "North"],
        "population_group": ["medicare", "medicare", ""],
    })
    stays = pd.DataFrame({
        "stay_id": ["A1", "A2", "A3", "A4", "A5", "A6"],
        "patient_id": ["P1", "P1", "P1", "P2", "P2", "P3"],
        "facility_id": ["H1", "S1", "H1", "H2", "H1", "H1"],
        "admit_date": ["2024-01-02", "2024-01-06", "2024-02-20", "2024-03-01", "2024-03-05", "2024-04-01"],
        "discharge_date": ["2024-01-06", "2024-01-30", "2024-02-24", "2024-03-05", "2024-03-09", "2024-04-01"],
        "discharge_status": ["03", "01", "1", "02", "20", "07"],
        "admission_type": ["1", "", "1", "1", "2", "1"],
        "principal_dx": ["I50.9", "Z47.1", "j18.9", "I21.4", "I21.4", "J44.1"],
        "principal_dx_poa": ["Y", "", "Y", "Y", "Y", "y"],
        "secondary_dx": ["E11.9;I10", "", "N18.3", "", "E78.5|I10", "J96.01"],
        "secondary_poa": ["Y;N", "", "Y", "", "Y;Y", "Y"],
        "procedures": ["", "", "", "02703DZ", "", ""],
        "payment": ["12000", "8000.50", "", "15000", "9000", "4000"],
    })
    enrollment = pd.DataFrame({
        "patient_id": ["P1", "P2", "P3"],
        "start_date": ["2015-01-01", "2017-12-01", "2013-01-01"],
        "end_date": ["2024-12-31", "2024-03-09", "2024-12-31"],
        "coverage": ["ffs", "ffs", "MA"],
    })
    ed_visits = pd.DataFrame({
        "visit_id": ["E1", "E2"],
        "patient_id": ["P1", "P3"],
        "visit_date": ["2024-01-20", "2024-04-10"],
        "facility_id": ["H1", "H1"],
    })
    return {"facilities": facilities, "patients": patients, "stays": stays, "enrollment": enrollment,
            "ed_visits": ed_visits}


@pytest.fixture
def raw_tables() -> dict[str, pd.DataFrame]:
    return valid_raw_tables()


@pytest.fixture(scope="session")
def sample_work(tmp_path_factory):
    """The sample's inputs prepared once per test run, also under pytest-xdist (the first worker prepares, under a
    file lock; the others' ``prepare`` reuses them): a :class:`~carequal.inputs.Prepared` (``.dataset``,
    ``.reference`` 2024). Read it, or copy it (:func:`copy_prepared`) for a batch's work folder: never run a batch
    in it (a batch locks its work folder and writes into it, and other workers read it at the same time)."""
    import fcntl
    from pathlib import Path

    from carequal.inputs import prepare

    root = shared_root(tmp_path_factory)
    with open(root / "sample_work.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker prepares; the others find it prepared and reuse it
        return prepare(Path(__file__).resolve().parents[1] / "data" / "sample", root / "sample_work",
                       period_start="2024-01-01", period_end="2024-12-31")


def shared_root(tmp_path_factory):
    """The folder every process of this test run shares: the base temporary folder, or under pytest-xdist the
    folder holding every worker's. Session fixtures built there under a file lock are built once per run."""
    import os

    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def copy_prepared(prepared, work):
    """A new work folder ``work`` holding a copy of ``prepared``'s inputs (``sample_work``): a batch on the sample
    for 2024 with every measure and ``--work`` there reuses them (keyed by the data's fingerprint, the period and
    the measures) instead of preparing again. For tests of what a batch does after its prepare step."""
    import shutil
    from pathlib import Path

    shutil.copytree(Path(prepared.dataset).parent, Path(work) / "prepared")
    return Path(work)


def agreement_with(partners, folder):
    """``folder/agreement.toml``: the sample's agreement (data/sample/agreement.toml) with only ``partners`` (facility
    ids) of its partners, its metrics unchanged; returns the path. A partner batch of fewer packets, for tests
    whose point is a source or a failure rather than the packets themselves (test_packet renders all seven)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "data" / "sample" / "agreement.toml").read_text()
    block = re.compile(r'\[\[partners\]\]\nfacility_id = "(\w+)"[^\n]*\n')
    assert set(partners) <= set(block.findall(text)), f"not partners of the sample's agreement: {partners}"
    path = Path(folder) / "agreement.toml"
    path.write_text(block.sub(lambda m: m[0] if m[1] in partners else "", text))
    return path


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """The fault tests' stand-in report notebook (operator_runs.write_stand_in)."""
    from operator_runs import write_stand_in

    return write_stand_in(tmp_path_factory.mktemp("notebook"))


@pytest.fixture(scope="module")
def work(tmp_path_factory, sample_work):
    """The fault tests' work folder, holding the sample's prepared inputs for 2024 (a copy of ``sample_work``, one
    per module): their runs start from a warm work folder, as an operator's second run does."""
    return copy_prepared(sample_work, tmp_path_factory.mktemp("faults") / "work")


@pytest.fixture(scope="session")
def riverton_alone(tmp_path_factory, sample_work):
    """Riverton's report (the market with measures worse than expected) rendered once per test run by a batch of
    that market alone, so on a kernel of its own, with the index, and with its PDF where Chromium is installed:
    the report the browser and PDF tests open, and the fresh-kernel report ``test_batch`` compares a
    reused kernel's with. Rendered once per test run, also under pytest-xdist (the first worker renders, under a
    file lock; the others reuse it). Returns the output folder; the executed notebook is
    ``<output>.work/notebooks/Riverton.ipynb``."""
    import fcntl
    from pathlib import Path

    from carequal.batch.pdf import find_chromium
    from carequal.cli import main

    root = shared_root(tmp_path_factory)
    out, done = root / "riverton_alone" / "reports", root / "riverton_alone.done"
    with open(root / "riverton_alone.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            work = copy_prepared(sample_work, out.with_name("reports.work"))
            code = main(["report", "--data", str(Path(__file__).resolve().parents[1] / "data" / "sample"),
                         "--out", str(out), "--work", str(work), "--markets", "Riverton", "--period", "2024",
                         "--workers", "1", *(["--pdf"] if find_chromium() is not None else []), "--quiet"])
            assert code == 0, f"the sample batch failed (exit status {code})"
            done.write_text("rendered\n")
    return out


@pytest.fixture(scope="session")
def rendered_sample(riverton_alone):
    """The sample's Riverton report, its PDF and the index (:func:`riverton_alone`), for the tests that open it in a
    browser or read its PDF. Skips, saying what to install, when there is no Chromium."""
    from carequal.batch.pdf import find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium to print and open the reports: install Debian's `chromium` package (`.ci/run` "
                    "does, as root) or set CAREQUAL_CHROMIUM to a Chromium or Chrome binary")
    return riverton_alone
