"""The sample partnership data, for anyone with the package (a pip install has no ``data/sample``), and the folders
a notebook run by hand reads and writes.

Where things are found:

* the sample's tables are not shipped but generated: they are what :func:`carequal.synth.write_synthetic` writes
  with the default :class:`~carequal.synth.SynthConfig` — byte for byte the checkout's ``data/sample``
  (``tests/test_synth.py`` checks it);
* its partnership agreement is shipped as package data, ``carequal/data/sample/agreement.toml``, read through
  :mod:`importlib.resources`; the checkout's ``data/sample/agreement.toml`` is a copy (``tests/test_packaged.py``
  checks the two are the same bytes);
* :func:`write_sample` (``carequal sample --out DIR``) writes both to a folder;
* a notebook run by hand (not by ``carequal report``, which passes every folder) leaves ``data`` and ``work``
  empty by default; :func:`notebook_folders` then uses the sample, generated once into carequal's folder of
  the user's cache (:func:`cache_dir`; ``CAREQUAL_CACHE`` chooses another folder), and its work folder beside
  it. Nothing depends on where the notebook is, or on a checkout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from carequal.errors import ParameterError

__all__ = ["AGREEMENT", "agreement_bytes", "cache_dir", "notebook_folders", "sample_folder", "sample_packet_inputs",
           "write_sample"]

AGREEMENT = ("data", "sample", "agreement.toml")
"""The sample's partnership agreement inside the package (``carequal/data/sample/agreement.toml``)."""


def agreement_bytes() -> bytes:
    """The shipped sample agreement, as stored."""
    from carequal.packaged import files

    return files().joinpath(*AGREEMENT).read_bytes()


def write_sample(out: str | Path, *, force: bool = False) -> dict[str, int]:
    """Write the sample to ``out``: the default synthetic dataset and ``agreement.toml``.

    Parameters
    ----------
    out : path
        The folder to write (created if needed).
    force : bool
        Write into a folder that already holds files (the sample's files are replaced, others are left).

    Returns
    -------
    dict of str to int
        Rows written per table (:func:`carequal.synth.write_synthetic`).

    Raises
    ------
    ParameterError
        If ``out`` is a file, or a folder that is not empty and ``force`` is not given.
    """
    from carequal.synth import SynthConfig, write_synthetic

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ParameterError(f"--out {out} is not empty; give a new folder, or --force to write the sample's files "
                             "into it")
    counts = write_synthetic(out, SynthConfig())
    (out / "agreement.toml").write_bytes(agreement_bytes())
    return counts


def cache_dir() -> Path:
    """carequal's folder in the user's cache: ``$CAREQUAL_CACHE`` if set, else ``$XDG_CACHE_HOME/carequal``
    (default ``~/.cache/carequal``), ``~/Library/Caches/carequal`` on macOS, ``%LOCALAPPDATA%\\carequal`` on
    Windows."""
    if os.environ.get("CAREQUAL_CACHE"):
        return Path(os.environ["CAREQUAL_CACHE"])
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "carequal"


def _sample_key() -> str:
    """What the sample depends on: carequal's version, the generator's source and the shipped agreement."""
    from carequal import __version__
    from carequal.packaged import files

    digest = hashlib.sha256(__version__.encode())
    digest.update((files() / "synth.py").read_bytes())
    digest.update(agreement_bytes())
    return digest.hexdigest()[:12]


def sample_folder() -> Path:
    """The sample in the user's cache (``<cache_dir>/sample-<key>``), written on first use.

    The key changes with carequal's version, the generator and the agreement, so a changed sample is a new folder.
    The sample is written to a temporary folder and renamed into place: a kernel that starts while another
    writes it sees the complete sample or writes its own.
    """
    folder = cache_dir() / f"sample-{_sample_key()}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sample-", dir=folder.parent))
    try:
        write_sample(tmp, force=True)
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():  # not a lost race with another writer: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def notebook_folders(data: str | Path = "", work: str | Path = "") -> tuple[Path, Path]:
    """The ``(data, work)`` folders of a notebook's parameters, with the defaults of a run by hand.

    ``carequal report`` always passes both, and they are returned as they are (no file is touched). An empty
    ``data`` is the sample (:func:`sample_folder`); an empty ``work`` is ``<data>.work`` beside the data folder
    (for the sample, in the cache too). The work folder holds patient-level data, as the data folder does.

    Examples
    --------
    >>> [p.as_posix() for p in notebook_folders("/srv/extract", "/srv/extract-work")]
    ['/srv/extract', '/srv/extract-work']
    >>> data, work = notebook_folders("extract")
    >>> data.is_absolute(), work == data.with_name("extract.work")
    (True, True)
    """
    folder = Path(data) if str(data) else sample_folder()
    if str(work):
        return folder, Path(work)
    folder = folder.resolve()  # "." or "extract/" have a name only once resolved
    return folder, folder.with_name(folder.name + ".work")


def sample_packet_inputs(*, period_start: str, period_end: str) -> Path:
    """The partner packets' inputs for the sample and its agreement (a packet notebook run by hand), written to
    ``<sample work>/agreement/sample-<start>-<end>`` (the batch writes its own from the run's agreement)."""
    from carequal.agreement import load_agreement
    from carequal.inputs import prepare
    from carequal.loaders import read_dataset_tables
    from carequal.national import read_cohort
    from carequal.packet import packet_inputs, write_packet_inputs

    data, work = notebook_folders()
    prepared = prepare(data, work, period_start=period_start, period_end=period_end)
    tables = read_dataset_tables(prepared.dataset)
    agreement = load_agreement(data / "agreement.toml", tables["facilities"])
    inputs = packet_inputs(tables, agreement, period_start=period_start, period_end=period_end,
                           cohort=read_cohort(prepared.cohort).rows)
    return write_packet_inputs(inputs, work / "agreement" / f"sample-{period_start}-{period_end}", agreement,
                               tables["facilities"])
