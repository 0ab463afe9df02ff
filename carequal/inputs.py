"""The inputs every market report reads, prepared once per run: the ingested dataset and the national reference.

:func:`prepare` validates and ingests the contract tables into a market-partitioned dataset (unless they already
are one) and builds the national reference (:mod:`carequal.national`) — in this process, or with a Dask client
partition by partition (:mod:`carequal.scale`) — in a work folder, reusing both while the input's fingerprint,
the period and the measures are unchanged. :func:`market_inputs` is what a market's notebook calls: the paths
the batch prepared, or a :func:`prepare` of its own when run by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from carequal.errors import ParameterError
from carequal.national import MEASURES, build_reference, reporting_period, write_reference

__all__ = ["Prepared", "data_fingerprint", "is_market_dataset", "market_inputs", "prepare"]


def data_fingerprint(path: str | Path) -> str:
    """SHA-256 over the relative names and bytes of every file under ``path`` (or of one file), in name order:
    the identity of a run's input, recorded in the manifest and used to tell when prepared inputs are stale.

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
    import hashlib

    path = Path(path)
    if not path.exists():
        raise ParameterError(f"data {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def is_market_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a market-partitioned dataset written by ``carequal ingest``."""
    return any((Path(path) / "patients").glob("market=*"))


@dataclass
class Prepared:
    """The inputs every market report reads: a market-partitioned dataset and the national reference."""

    dataset: Path
    reference: Path
    fingerprint: str
    markets: list[str]
    reused: bool
    seconds: dict


def prepare(data: str | Path, work: str | Path, *, period_start, period_end,
            measures: tuple[str, ...] | list[str] = tuple(MEASURES), mode: str = "quarantine",
            force: bool = False, client=None) -> Prepared:
    """Ingest ``data`` (unless it already is a market dataset) and build the national reference, in ``work``.

    Both are reused when ``work/prepared.json`` records the same input fingerprint, period and measures (and
    ``force`` is false). Rejected rows (``mode="quarantine"``) are written to ``work/quarantine/`` — they
    hold patient rows and stay out of the shared reports; their counts go into the dataset's validation
    summary. Everything is built in a temporary folder and moved into place, so an interrupted run leaves the
    previous inputs or none, never half of new ones. With a Dask ``client`` the stay-level measures of the
    reference run on the cluster, partition by partition (:mod:`carequal.scale`); the result is the same.
    """
    import shutil
    import time

    from carequal import __version__
    from carequal.loaders import load_tables, markets_in_dataset, write_market_dataset

    start, end = reporting_period(period_start, period_end)
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ParameterError(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    data, work = Path(data), Path(work)
    t0 = time.perf_counter()
    fingerprint = data_fingerprint(data)
    t_fp = time.perf_counter() - t0
    key = {"fingerprint": fingerprint, "period_start": start.date().isoformat(),
           "period_end": end.date().isoformat(), "measures": list(measures), "mode": mode, "carequal": __version__,
           "data": str(data.resolve())}
    stamp = work / "prepared.json"
    dataset = data if is_market_dataset(data) else work / "dataset"
    reference = work / "reference"
    if not force and stamp.is_file() and json.loads(stamp.read_text()) == key and reference.is_dir() \
            and dataset.is_dir():
        return Prepared(dataset, reference, fingerprint, markets_in_dataset(dataset), True,
                        {"fingerprint": t_fp})
    work.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    seconds = {"fingerprint": t_fp}
    t0 = time.perf_counter()
    if dataset == data:  # already ingested (validated then): read only the columns the reference needs
        from carequal.loaders import read_dataset_tables
        from carequal.national import INPUT_COLUMNS

        tables = read_dataset_tables(data, columns=INPUT_COLUMNS)
        seconds["read"] = time.perf_counter() - t0
    else:
        validated = load_tables(data, mode=mode)
        tables = validated.tables
        seconds["validate"] = time.perf_counter() - t0
    if dataset != data:
        t0 = time.perf_counter()
        tmp = work / "dataset.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_market_dataset(validated, tmp)
        quarantine = work / "quarantine"
        shutil.rmtree(quarantine, ignore_errors=True)
        for table, rows in validated.quarantine.items():
            if len(rows):
                quarantine.mkdir(parents=True, exist_ok=True)
                rows.to_csv(quarantine / f"{table}.csv", index=False)
        shutil.rmtree(dataset, ignore_errors=True)
        tmp.rename(dataset)
        seconds["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if client is None:
        built = build_reference(tables, period_start=start, period_end=end, measures=measures)
    else:  # the stay-level measures on the cluster, partition by partition; the models here
        from carequal.scale import reference_partitioned

        del tables
        built = reference_partitioned(dataset, period_start=start, period_end=end, measures=measures,
                                      client=client)
    tmp = work / "reference.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_reference(built, tmp)
    shutil.rmtree(reference, ignore_errors=True)
    tmp.rename(reference)
    seconds["reference"] = time.perf_counter() - t0
    stamp.write_text(json.dumps(key, indent=2))
    return Prepared(dataset, reference, fingerprint, markets_in_dataset(dataset), False, seconds)


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
