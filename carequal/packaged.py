"""Files shipped inside the package, found through :mod:`importlib.resources` (never through the checkout's layout).

Where things are (paths inside the ``carequal`` package, listed in ``pyproject.toml``'s package data):

* ``notebooks/*.ipynb`` and their jupytext sources ``notebooks/*.py``: the report notebooks
  (:func:`notebook`; ``carequal report`` runs ``market_report``, ``--by partner`` runs ``partner_packet``);
* ``templates/carequal_report/``: the nbconvert template the reports are rendered with (:func:`template_dir`);
* ``data/``: code lists and value sets (read where they are used, e.g. :mod:`carequal.measures`) and
  ``data/sample/agreement.toml``, the sample's partnership agreement (:mod:`carequal.sample`).

An installed or checked-out package is a folder, and a resource is then the file itself: nothing is copied or
written. Only a zipped package (zipimport) has no files on disk for papermill and nbconvert to open; :func:`as_path`
then copies the resource once per process into a temporary folder, removed when the process exits.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["NOTEBOOKS", "as_path", "files", "notebook", "template_dir"]

NOTEBOOKS = ("market_report", "partner_packet", "population_health", "cohort_explorer", "employee_health")
"""The notebooks shipped in ``carequal/notebooks/`` (each as ``.ipynb`` and its jupytext ``.py`` source)."""

_EXTRACTED: dict[tuple[str, ...], Path] = {}
_TEMP = None


def files() -> Traversable:
    """The ``carequal`` package's root as a resource folder (a :class:`~pathlib.Path` unless it is zipped)."""
    return resources.files("carequal")


def notebook(name: str) -> Traversable:
    """The shipped notebook ``name`` (``carequal/notebooks/<name>.ipynb``), unopened.

    Examples
    --------
    >>> notebook("market_report").name
    'market_report.ipynb'
    >>> notebook("budget")
    Traceback (most recent call last):
    ...
    ValueError: no notebook 'budget' in carequal/notebooks; shipped: market_report, partner_packet, ...
    """
    if name not in NOTEBOOKS:
        raise ValueError(f"no notebook {name!r} in carequal/notebooks; shipped: {', '.join(NOTEBOOKS)}")
    return files() / "notebooks" / f"{name}.ipynb"


def as_path(resource: Traversable) -> Path:
    """A resource of the package as a file or folder on disk.

    Parameters
    ----------
    resource : Traversable
        A file or folder below :func:`files`.

    Returns
    -------
    Path
        ``resource`` itself for a package on disk; for a zipped package, a copy (of the file, or of the folder
        with everything below it) in a temporary folder of this process, made once and removed at exit.
    """
    if isinstance(resource, Path):
        return resource
    global _TEMP
    key = tuple(_parts(resource))
    if key not in _EXTRACTED:
        if _TEMP is None:
            import tempfile

            _TEMP = tempfile.TemporaryDirectory(prefix="carequal-resources-")  # removed when the process exits
        target = Path(_TEMP.name, *key)
        _copy(resource, target)
        _EXTRACTED[key] = target
    return _EXTRACTED[key]


def template_dir() -> Path:
    """The folder holding nbconvert's ``carequal_report`` template (``carequal/templates``)."""
    return as_path(files() / "templates")


def _parts(resource: Traversable) -> list[str]:
    """The path of ``resource`` below the package root, as names (for its copy's location)."""
    root = str(files()).rstrip("/")
    text = str(resource)
    if not text.startswith(root):
        raise ValueError(f"{resource} is not a resource of the carequal package")
    return [p for p in text[len(root):].split("/") if p] or ["carequal"]


def _copy(resource: Traversable, target: Path) -> None:
    if resource.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for child in resource.iterdir():
            _copy(child, target / child.name)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(resource.read_bytes())
