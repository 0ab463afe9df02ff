"""The inputs every market report reads, prepared once per run: the ingested dataset and the national reference.

:func:`prepare` validates and ingests the contract tables into a market-partitioned dataset (unless they already
are one) and builds the national reference (:mod:`carequal.national`) — in this process, or with a Dask client
partition by partition (:mod:`carequal.scale`) — in a work folder, reusing both while the input's fingerprint,
the period and the measures are unchanged. :func:`market_inputs` is what a market's notebook calls: the paths
the batch prepared, or a :func:`prepare` of its own when run by hand.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from carequal import __version__
from carequal.errors import ParameterError, SchemaError
from carequal.loaders import (
    TableSource,
    load_tables,
    markets_in_dataset,
    read_dataset_tables,
    read_table,
    read_validation_summary,
    write_market_dataset,
)
from carequal.measured import measure_cohort
from carequal.national import INPUT_COLUMNS, MEASURES, reference_of_cohort, write_cohort, write_reference
from carequal.periods import reporting_period
from carequal.scale import cohort_reference_partitioned

__all__ = ["Prepared", "data_fingerprint", "is_market_dataset", "market_inputs", "prepare"]


def data_fingerprint(path) -> str:
    """SHA-256 over the relative names and bytes of every file under ``path`` (or of one file), in name order:
    the identity of a run's input, recorded in the manifest and used to tell when prepared inputs are stale.
    For a :class:`~carequal.loaders.TableSource` (a database), its own :meth:`fingerprint` (see
    :mod:`carequal.warehouse.source`).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "stays.csv").write_text("stay_id\\nS1\\n")
    ...     a = data_fingerprint(d)
    ...     _ = (Path(d) / "stays.csv").write_text("stay_id\\nS2\\n")
    ...     a != data_fingerprint(d)
    True
    """
    if isinstance(path, TableSource):
        return path.fingerprint()
    path = Path(path)
    if not path.exists():
        raise ParameterError(f"data {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        try:
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except PermissionError as exc:  # an input, not an output: say "read", not "write"
            raise ParameterError(f"{file}: cannot read the file ({(exc.strerror or 'permission denied').lower()}); "
                                 "give the user running carequal read access to it") from None
    return digest.hexdigest()


def is_market_dataset(path) -> bool:
    """Whether ``path`` is a market-partitioned dataset written by ``carequal ingest`` (a source is not)."""
    from carequal.loaders import TableSource

    return not isinstance(path, TableSource) and any((Path(path) / "patients").glob("market=*"))


@dataclass
class Prepared:
    """The inputs every market report reads: a market-partitioned dataset and the national reference.

    ``period`` is the reporting period the reference was fitted for (the one asked for, or the calendar year of
    the last accepted discharge); ``counts`` and ``failures`` summarise validation (rows loaded, accepted and
    quarantined per table; rows per broken rule, without example keys); ``quarantine`` is the folder of the
    quarantined rows (patient-level: work folder only).
    """

    dataset: Path
    reference: Path
    fingerprint: str
    markets: list[str]
    reused: bool
    seconds: dict
    period: tuple[str, str] = ("", "")
    counts: pd.DataFrame | None = None
    failures: pd.DataFrame | None = None
    quarantine: Path | None = None

    @property
    def cohort(self) -> Path:
        """The measured cohort (:func:`carequal.national.write_cohort`), kept in the reference's folder: built with
        it, keyed like it."""
        return self.reference / "cohort"

    def quarantine_summary(self) -> list[str]:
        """One line per table with quarantined rows: how many of how many, and the rules they broke."""
        lines = []
        if self.counts is None or not len(self.counts):
            return lines
        for row in self.counts.itertuples(index=False):
            if int(row.quarantined) == 0:
                continue
            rules = self.failures[self.failures["table"] == row.table] if self.failures is not None else None
            broken = ", ".join(f"{r.rule} {int(r.n_rows):,d}" for r in rules.itertuples(index=False)) \
                if rules is not None and len(rules) else "see the quarantine file"
            where = f" → {self.quarantine / (row.table + '.csv')}" if self.quarantine is not None else ""
            lines.append(f"{row.table}: {int(row.quarantined):,d} of {int(row.loaded):,d} rows quarantined "
                         f"({broken}){where}")
        return lines


_KEEP_PREPARED = 3
"""Prepared datasets (and references) kept in a work folder: the current one and the most recent others."""


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prune(folder: Path, prefix: str, keep: Path) -> None:
    """Remove all but the most recent prepared folders of one kind (never ``keep``)."""
    others = sorted((p for p in folder.glob(f"{prefix}-*") if p.is_dir() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[_KEEP_PREPARED - 1:]:
        shutil.rmtree(old, ignore_errors=True)
        key = old.name.split("-", 1)[1]
        old.with_name(f"{old.name}.json").unlink(missing_ok=True)  # a dataset's summary and quarantined rows
        shutil.rmtree(folder / f"quarantine-{key}", ignore_errors=True)


def _last_discharge(tables_or_dataset) -> str | None:
    """The last accepted discharge date (ISO), from validated tables or an ingested dataset."""
    if isinstance(tables_or_dataset, dict):
        dates = tables_or_dataset["stays"]["discharge_date"]
    else:
        dates = read_table(Path(tables_or_dataset) / "stays", columns=["discharge_date"])["discharge_date"]
    last = pd.to_datetime(dates, errors="coerce").max()
    return None if pd.isna(last) else last.date().isoformat()


def prepare(data, work: str | Path, *, period_start=None, period_end=None,
            measures: tuple[str, ...] | list[str] = tuple(MEASURES), mode: str = "quarantine",
            force: bool = False, client=None, refuse_quarantine: bool = False) -> Prepared:
    """Ingest ``data`` (unless it already is a market dataset) and build the national reference, in ``work``.

    ``data`` is a folder of contract tables, an ingested market dataset, or a :class:`~carequal.loaders.TableSource`
    (``--source``: a database), whose own fingerprint keys the prepared folders.

    Each is kept in a folder of ``work/prepared/`` named for a key of everything that changes it — the ingested
    dataset for (input fingerprint, validation mode, carequal version), the reference for (dataset key, period,
    measures) — and reused while the key is the same (unless ``force``): runs with other parameters never share a
    model, and switching back and forth rebuilds nothing (the three most recent of each are kept). Without a
    period, the calendar year of the last *accepted* discharge is used (a quarantined date cannot move it).
    Rejected rows (``mode="quarantine"``) are written beside the dataset as ``quarantine/<table>.csv`` — patient
    rows that stay out of the shared reports; their counts go into the dataset's validation summary. Everything
    is built in a temporary folder and moved into place, so an interrupted run leaves complete inputs or none.
    With a Dask ``client`` the stay-level measures of the reference run on the cluster, partition by partition
    (:mod:`carequal.scale`); the result is the same. ``refuse_quarantine`` (``carequal report --strict``) raises
    a :class:`~carequal.errors.SchemaError` as soon as validation has quarantined any row, before the reference.
    """
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ParameterError(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    if (period_start is None) != (period_end is None):
        raise ParameterError("give both period_start and period_end, or neither (the last discharge's year)")
    from carequal.loaders import TableSource

    # a database (carequal.warehouse.Source) is fingerprinted and read by itself; everything else is the same
    data = data if isinstance(data, TableSource) else Path(data)
    work = Path(work)
    prepared_dir = work / "prepared"
    t0 = time.perf_counter()
    fingerprint = data_fingerprint(data)
    seconds = {"fingerprint": time.perf_counter() - t0}
    ingested = is_market_dataset(data)
    dataset_key = _key({"fingerprint": fingerprint, "mode": mode, "carequal": __version__, "ingested": ingested})
    dataset = data if ingested else prepared_dir / f"dataset-{dataset_key}"
    quarantine = None if ingested else prepared_dir / f"quarantine-{dataset_key}"
    about_path = prepared_dir / f"dataset-{dataset_key}.json"
    tables = known_patients = None
    reused = True
    if force or not about_path.is_file() or not dataset.is_dir():
        reused = False
        prepared_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if ingested:  # already validated at ingest: read only the columns the reference needs

            tables = read_dataset_tables(data, columns=INPUT_COLUMNS)
            seconds["read"] = time.perf_counter() - t0
        else:
            validated = load_tables(data, mode=mode)
            tables = validated.tables
            # validation's look-ups of each stay's and enrollment's patient, reused by the reference
            known_patients = {t: rows for t, rows in validated.patient_rows.items() if t in ("stays", "enrollment")}
            seconds["validate"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            tmp = prepared_dir / f"dataset-{dataset_key}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            write_market_dataset(validated, tmp)
            shutil.rmtree(quarantine, ignore_errors=True)
            for table, rows in validated.quarantine.items():
                if len(rows):
                    quarantine.mkdir(parents=True, exist_ok=True)
                    rows.to_csv(quarantine / f"{table}.csv", index=False)
            shutil.rmtree(dataset, ignore_errors=True)
            tmp.rename(dataset)
            seconds["ingest"] = time.perf_counter() - t0
            # the reference reads the columns it reads from a reused dataset, no more (the code lists of POA
            # flags, payments, sponsors... would only hold memory while the cohort is built beside them)
            tables = {name: frame[[c for c in INPUT_COLUMNS[name] if c in frame.columns]]
                      if name in INPUT_COLUMNS else frame for name, frame in tables.items()}
            del validated
        about_path.write_text(json.dumps({"fingerprint": fingerprint, "last_discharge": _last_discharge(tables)}))
    about = json.loads(about_path.read_text())
    if refuse_quarantine:
        counts, failures = read_validation_summary(dataset)
        summary = Prepared(dataset, Path(), fingerprint, [], reused, seconds, counts=counts, failures=failures,
                           quarantine=quarantine).quarantine_summary()
        if summary:
            raise SchemaError("--strict: rows were quarantined, so nothing was run: " + "; ".join(summary)
                              + ". Fix the data, or run without --strict to report on the accepted rows")
    if period_start is None:
        if about["last_discharge"] is None:
            raise ParameterError(f"{data}: no stay was accepted, so there is no default period (and nothing to "
                                 "report); see the validation summary")
        year = about["last_discharge"][:4]
        period_start, period_end = f"{year}-01-01", f"{year}-12-31"
    start, end = reporting_period(period_start, period_end)
    period = (start.date().isoformat(), end.date().isoformat())
    reference_key = _key({"dataset": dataset_key, "period": period, "measures": list(measures)})
    reference = prepared_dir / f"reference-{reference_key}"
    if force or not (reference / "models.csv").is_file() or not (reference / "cohort" / "cohort.json").is_file():
        reused = False
        t0 = time.perf_counter()
        if tables is None and client is None:
            tables = read_dataset_tables(dataset, columns=INPUT_COLUMNS)
        if client is None:  # one index_stays run: the measured cohort, and the reference from its CMS rows
            facilities = tables["facilities"]
            # each table let go once the cohort has read it
            cohort = measure_cohort(tables, release=True, known_patients=known_patients)
            tables = known_patients = None
            cohort, built = reference_of_cohort(cohort, facilities, period_start=start, period_end=end,
                                                measures=measures)
        else:  # the stay-level measures on the cluster, partition by partition; the models here

            cohort, built = cohort_reference_partitioned(dataset, period_start=start, period_end=end,
                                                         measures=measures, client=client)
        tmp = reference.with_name(reference.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_reference(built, tmp)
        write_cohort(cohort, tmp / "cohort")
        shutil.rmtree(reference, ignore_errors=True)
        tmp.rename(reference)
        seconds["reference"] = time.perf_counter() - t0
    if not ingested:
        _prune(prepared_dir, "dataset", dataset)
    _prune(prepared_dir, "reference", reference)
    counts, failures = read_validation_summary(dataset)
    return Prepared(dataset, reference, fingerprint, markets_in_dataset(dataset), reused, seconds, period,
                    counts, failures, quarantine if quarantine is not None and quarantine.is_dir() else None)


def market_inputs(data: str | Path, work: str | Path, *, reference: str | Path = "", period_start,
                  period_end) -> tuple[Path, Path]:
    """The ``(dataset, reference)`` a market report reads.

    With ``reference`` (the batch passes the inputs it prepared), ``data`` must be the market dataset and
    nothing else is opened: no fingerprint of the whole input is computed in each market's kernel. Without it
    (a notebook run by hand), :func:`prepare` makes or reuses them in ``work``.
    """
    if reference:
        if not is_market_dataset(data):
            raise ParameterError(f"with reference={reference!r}, data must be a market dataset (carequal ingest), "
                                 f"not {data}")
        return Path(data), Path(reference)
    prepared = prepare(data, work, period_start=period_start, period_end=period_end)
    return prepared.dataset, prepared.reference
