"""What a run is asked to do, checked before anything is computed: paths, period, markets, notebook parameters.

Every check here runs before a lock is taken or a kernel starts, and fails with one message naming the argument,
what was given and what is allowed: papermill itself only warns about an unknown parameter and runs on with the
default, and a path mistake found after ten minutes of work is an operator's worst case.

The default notebooks are the ones shipped in the package (``carequal/notebooks/``, found through
:mod:`importlib.resources` by :mod:`carequal.packaged`), so an installed carequal runs the same notebooks as a
checkout; ``--notebook`` (hidden) runs another one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from carequal.batch.pdf import require_chromium
from carequal.cohorts import CONDITIONS
from carequal.disclosure import check_min_cell
from carequal.errors import ParameterError, SchemaError
from carequal.inputs import is_market_dataset
from carequal.loaders import TableSource, markets_in_dataset, read_table, table_path
from carequal.national import MEASURES
from carequal.packaged import as_path
from carequal.packaged import notebook as _shipped_notebook
from carequal.periods import parse_period
from carequal.report import parse_choices

__all__ = ["AGREEMENT_NAMES", "DEFAULT_NOTEBOOK", "EMPLOYEE_NOTEBOOK", "PACKET_NOTEBOOK", "RunConfig",
           "available_markets", "configure", "find_agreement", "parse_programme",
           "select_markets"]

DEFAULT_NOTEBOOK = _shipped_notebook("market_report")
"""The report notebook shipped in the package (``carequal/notebooks/market_report.ipynb``): a
:class:`~pathlib.Path` unless carequal is zipped (:func:`carequal.packaged.as_path` then gives a copy)."""

PACKET_NOTEBOOK = _shipped_notebook("partner_packet")
"""The partner packet notebook shipped in the package (``carequal report --by partner``)."""

EMPLOYEE_NOTEBOOK = _shipped_notebook("employee_health")
"""The employee health notebook shipped in the package (``carequal report --by sponsor``)."""

AGREEMENT_NAMES = ("agreement.toml", "agreement.yaml", "agreement.yml")
"""Agreement files looked for in the data folder when ``--agreement`` is not given."""

def available_markets(data: str | Path) -> list[str]:
    """Markets in the input: partition names of an ingested dataset, or the distinct ``patients.market``.

    Raises
    ------
    SchemaError
        If the patients file cannot be read as a contract table (see :func:`carequal.loaders.read_table`: e.g.
        no ``market`` column, not UTF-8) or has no rows (rule ``table_empty``).
    """
    if isinstance(data, TableSource):
        markets = data.markets()
        if not markets:
            raise SchemaError(f"{data}: the patients table has no rows with a market (table patients, rule "
                              "table_empty): there is nothing to report on")
        return markets
    if is_market_dataset(data):
        return markets_in_dataset(data)
    path = table_path(data, "patients")
    if path is None:
        raise ParameterError(f"{data}: no patients table (patients.csv or patients.parquet); see data/README.md")
    frame = read_table(path, columns=["market"])
    if not len(frame):
        raise SchemaError(f"{path}: the table has no rows, only its header (table patients, rule table_empty); "
                          "facilities, patients and stays need at least one row each: there is nothing to report on")
    markets = frame["market"].dropna().astype("str").str.strip()
    return sorted(m for m in markets.unique() if m)


def select_markets(requested, available: list[str]) -> list[str]:
    if requested in (None, "", "all") or requested == ["all"]:
        if not available:
            raise ParameterError("the data has no markets (patients.market is empty)")
        return list(available)
    items = [m.strip() for m in requested.split(",")] if isinstance(requested, str) else list(requested)
    unknown = [m for m in items if m not in available]
    if unknown:
        raise ParameterError(f"unknown market(s) {', '.join(map(repr, unknown))}; the data has "
                             f"{', '.join(available)} (or use 'all')")
    return list(dict.fromkeys(items))


def find_agreement(data, agreement: str | Path | None) -> Path:
    """The agreement file: the one given, else ``agreement.toml`` / ``.yaml`` / ``.yml`` in the data folder (for
    a source, the mapping file's folder)."""
    if agreement is not None:
        path = Path(agreement).resolve()
        if not path.is_file():
            raise ParameterError(f"--agreement {path} does not exist")
        return path
    source_folder = getattr(data, "folder", None)
    folder = source_folder if source_folder is not None else data if data.is_dir() else data.parent
    for name in AGREEMENT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise ParameterError(f"--by partner needs a partnership agreement: give --agreement FILE or put one of "
                         f"{', '.join(AGREEMENT_NAMES)} in {folder} (an example: the agreement.toml that "
                         "`carequal sample --out DIR` writes)")




@dataclass(frozen=True)
class RunConfig:
    """One run of the batch, every argument checked (see :func:`carequal.batch.run_batch`)."""

    data: Path  # or a carequal.loaders.TableSource (--source)
    out: Path
    work: Path
    notebook: Path
    by: str = "market"
    markets: str | tuple[str, ...] = "all"
    period: tuple[str, str] | None = None
    measures: str = "all"
    conditions: str = "all"
    min_cell: int = 11
    workers: int = 1
    force: bool = False
    strict: bool = False
    wait: float = 0.0
    scheduler: str | None = None
    agreement: Path | None = None
    patient_lists: Path | None = None
    reuse_kernels: bool = True
    progress: bool = True
    pdf: bool = False
    chromium: str | None = None  # the browser that prints the PDFs (--pdf)
    programme: tuple[str, str] | None = None  # --by sponsor: (sponsor, start date) of a care-management programme


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it."""
    return a == b or a.is_relative_to(b)


def _check_folder(path: Path, what: str) -> None:
    """``path`` must be a folder or not exist yet (its parent then must be a folder)."""
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{what} {path} is a file; give a folder")
    parent = next((q for q in path.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ParameterError(f"{what} {path}: {parent} is a file, not a folder")


def parse_programme(text: str | None) -> tuple[str, str] | None:
    """``--programme SPONSOR:YYYY-MM-DD`` as ``(sponsor, start)``: the sponsor (``enrollment.sponsor``) running a
    care-management programme and the day it started (the last colon separates them); None for none.

    Examples
    --------
    >>> parse_programme("Riverton Health:2023-07-01")
    ('Riverton Health', '2023-07-01')
    >>> parse_programme(None) is None
    True
    """
    if text is None or text == "":
        return None
    sponsor, sep, start = str(text).rpartition(":")
    sponsor, start = sponsor.strip(), start.strip()
    try:
        day = date.fromisoformat(start) if sep and sponsor and re.fullmatch(r"\d{4}-\d{2}-\d{2}", start) else None
    except ValueError:
        day = None
    if day is None:
        raise ParameterError(f"--programme must be SPONSOR:YYYY-MM-DD (the sponsor running the programme and the "
                             f"day it started, e.g. 'Riverton Health:2023-07-01'), not {text!r}")
    return sponsor, f"{day:%Y-%m-%d}"


def configure(data, out, *, work=None, notebook=None, by: str = "market", markets="all", period: str | None = None,
              measures: str = "all", conditions: str = "all", min_cell: int = 11, allow_small_cells: bool = False,
              workers: int = 1, force: bool = False, strict: bool = False, wait: float = 0.0,
              scheduler: str | None = None, agreement=None, patient_lists=None, fresh_kernels: bool = False,
              progress: bool = True, pdf: bool = False, programme: str | None = None) -> RunConfig:
    """Check a run's arguments (no data read beyond what the paths need) and resolve its folders.

    Refused: a missing ``data``; an ``out`` (or ``work``) that is a file, lies inside ``data`` (patient-level
    work files would land in the data folder, and the input's fingerprint would include the outputs) or holds
    ``data``; a work folder inside ``out`` (it holds patient-level data); ``min_cell`` below the disclosure
    floor without ``allow_small_cells``; a malformed period; workers < 1; ``patient_lists`` inside ``out``;
    ``pdf`` without a Chromium to print with (the message says what to install); ``markets`` other than "all"
    or a malformed ``programme`` (``SPONSOR:YYYY-MM-DD``) with ``by="sponsor"``, and ``programme`` with any other
    ``by``.
    """
    if by not in ("market", "partner", "sponsor"):
        raise ParameterError(f"--by must be 'market', 'partner' or 'sponsor', not {by!r}")
    from carequal.loaders import TableSource

    source = isinstance(data, TableSource)  # a database: no data folder to keep outputs out of
    out = Path(out).resolve()
    data = data if source else Path(data).resolve()
    work = Path(work).resolve() if work is not None else out.with_name(out.name + ".work")
    if not source and not data.exists():
        raise ParameterError(f"data {data} does not exist")
    _check_folder(out, "--out")
    _check_folder(work, "--work")
    data_folder = None if source else data if data.is_dir() else data.parent
    for path, what in ((out, "--out"), (work, "the work folder")) if data_folder is not None else ():
        if _inside(path, data_folder):
            raise ParameterError(f"{what} {path} is inside the data folder {data_folder}: outputs and patient-level "
                                 "work files must not be written among the inputs; choose a folder outside it")
        if _inside(data_folder, path):
            raise ParameterError(f"{what} {path} contains the data folder {data_folder}; choose a folder outside it")
    if _inside(work, out):
        raise ParameterError(f"the work folder {work} must not be inside the shared output folder {out}: it "
                             "holds patient-level data")
    if notebook is None:
        notebook = as_path({"partner": PACKET_NOTEBOOK, "sponsor": EMPLOYEE_NOTEBOOK}.get(by, DEFAULT_NOTEBOOK))
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise ParameterError(f"report notebook {notebook} does not exist")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"--workers must be a whole number ≥ 1, not {workers!r}")
    if not isinstance(wait, int | float) or wait < 0:
        raise ParameterError(f"--wait must be a number of seconds ≥ 0, not {wait!r}")
    min_cell = check_min_cell(min_cell, allow_small_cells=allow_small_cells)
    if patient_lists is not None:
        if by != "partner":
            raise ParameterError("--patient-lists goes with --by partner only")
        patient_lists = Path(patient_lists).resolve()
        if _inside(patient_lists, out):
            raise ParameterError(f"--patient-lists {patient_lists} must not be inside the shared output folder "
                                 f"{out}: the lists are patient-level")
        _check_folder(patient_lists, "--patient-lists")
    if by == "partner":
        agreement = find_agreement(data, agreement)
    elif agreement is not None:
        raise ParameterError("--agreement goes with --by partner only")
    if by == "sponsor" and markets not in ("all", None):
        raise ParameterError("--markets goes with --by market or partner: --by sponsor reports on every sponsor's "
                             "members wherever they live (one report for the alliance, one per sponsor)")
    programme = parse_programme(programme) if by == "sponsor" else programme
    if programme is not None and by != "sponsor":
        raise ParameterError("--programme goes with --by sponsor only")
    if by == "market":
        parse_choices(measures, tuple(MEASURES), "measure(s)")
        parse_choices(conditions, (*CONDITIONS, "other"), "condition(s)")
    chromium = require_chromium() if pdf else None
    return RunConfig(data=data, out=out, work=work, notebook=notebook, by=by, markets=markets,
                     period=parse_period(period) if period else None, measures=measures, conditions=conditions,
                     min_cell=min_cell, workers=workers, force=force, strict=strict, wait=float(wait),
                     scheduler=scheduler, agreement=agreement, patient_lists=patient_lists,
                     reuse_kernels=not fresh_kernels, progress=progress, pdf=bool(pdf), chromium=chromium,
                     programme=programme)
