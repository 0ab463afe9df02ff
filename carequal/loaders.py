"""Read the contract tables from CSV or Parquet, validate them, and keep a market-partitioned Parquet copy.

A data directory holds one file per table, named for it: ``stays.csv``, ``stays.csv.gz``, ``stays.parquet``
or a Parquet dataset folder ``stays/``. CSV is read as text (every column ``str``; an empty cell is
missing, but the text ``NA`` is not — a market may be called that); the contract parses it.

The market-partitioned dataset (``write_market_dataset``) puts every patient-level table (patients, stays,
enrollment, ED visits) under the patient's **market of residence**, so one partition holds each of its
patients' complete history — every stay at any facility, which readmission and episode measures need —
and facilities (a small table) under the facility's market. ``read_market`` then opens only one market's
files (pyarrow dataset partition pruning) plus the facilities table.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from carequal.errors import ParameterError, SchemaError
from carequal.schema import (
    CONTRACT,
    OPTIONAL_TABLES,
    TABLES,
    ValidatedTables,
    column_list,
    key_positions,
    take,
    take_text,
    validate_tables,
)

__all__ = ["PATIENT_TABLES", "VALIDATION_FILES", "csv_header", "load_tables", "markets_in_dataset", "partition_folder",
           "read_csv_text", "read_dataset_tables", "read_market", "read_table", "read_tables",
           "read_validation_summary", "summarise", "table_path", "write_market_dataset", "write_validation_summary"]

PATIENT_TABLES: tuple[str, ...] = ("patients", "stays", "enrollment", "ed_visits")
_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def table_path(directory: str | Path, table: str) -> Path | None:
    """The file (or Parquet dataset folder) holding ``table`` in ``directory``, or None.

    Examples
    --------
    >>> table_path("/nonexistent", "stays") is None
    True
    """
    directory = Path(directory)
    for suffix in _SUFFIXES:
        path = directory / f"{table}{suffix}"
        if path.is_file():
            return path
    folder = directory / table
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        return folder
    return None


def _table_name(path: Path) -> str:
    """The contract table a file or dataset folder holds, from its name (``stays.csv.gz`` → ``stays``)."""
    return path.name.split(".", 1)[0]


def _label(path: Path, rule: str) -> str:
    """``(table stays, rule x)`` for a contract table's file, ``(rule x)`` for another file (e.g. DE-SynPUF)."""
    table = _table_name(path)
    return f"(table {table}, rule {rule})" if table in TABLES else f"(rule {rule})"


def _unreadable(path: Path, exc: OSError) -> ParameterError:
    reason = exc.strerror.lower() if exc.strerror else type(exc).__name__
    return ParameterError(f"{path}: cannot read the file ({reason}); give the user running carequal read access "
                          "to it")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _first_bad_byte(path: Path) -> tuple[int, int, int, int] | None:
    """``(line, column, offset, byte)`` of the first byte that is not UTF-8: 1-based line and byte-in-line,
    0-based offset in the (decompressed) file; None if every byte decodes."""
    offset = 0
    with _open_binary(path) as handle:
        for number, line in enumerate(handle, 1):  # no UTF-8 character contains the byte of a newline
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start + 1, offset + exc.start, line[exc.start]
            offset += len(line)
    return None


def _not_utf8(path: Path) -> SchemaError:
    where = _first_bad_byte(path)
    at = (f": byte 0x{where[3]:02X} on line {where[0]} (byte {where[1]} of the line, offset {where[2]} in the "
          "file) is not UTF-8" if where is not None else "")
    return SchemaError(f"{path}: the file is not UTF-8 text{at} {_label(path, 'not_utf8')}. "
                       "Save it as UTF-8 (e.g. 'CSV UTF-8' in Excel, or iconv -f latin1 -t utf-8) and run again")


def csv_header(path: str | Path) -> list[str]:
    """The column names in a CSV file's header row (a UTF-8 byte order mark removed), checked.

    Raises
    ------
    SchemaError
        If the file is empty or only blank lines (rule ``empty_file``), its header is not UTF-8 (``not_utf8``),
        it looks separated by semicolons or tabs instead of commas (``delimiter``), or a name repeats
        (``duplicate_column``: a CSV reader would silently rename the second ``beds`` to ``beds.1``).
    ParameterError
        If the file cannot be opened (permissions).
    """
    path = Path(path)
    line = b""
    try:
        with _open_binary(path) as handle:
            for line in handle:  # the header is the first line that is not blank (as pandas reads it)
                if line.strip():
                    break
    except (gzip.BadGzipFile, EOFError, zlib.error):
        raise SchemaError(f"{path}: not a readable gzip file {_label(path, 'csv_format')}; compress it again or "
                          "give the plain .csv") from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if not line.strip():
        raise SchemaError(f"{path.name} is empty (no header row): {path} {_label(path, 'empty_file')}. Export it "
                          "again with its header row")
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    names = next(csv.reader([text]))
    if len(names) == 1:
        for sign, what in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sign in names[0]:
                raise SchemaError(f"{path}: the header reads as one column; the file looks {what}-separated "
                                  f"{_label(path, 'delimiter')}. carequal reads comma-separated CSV: export it "
                                  "again with ',' as the separator")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SchemaError(f"{path}: column name(s) repeated in the header: {column_list(repeated)} "
                          f"{_label(path, 'duplicate_column')}; keep one column of each name")
    return names


def read_csv_text(path: str | Path, *, columns: Iterable[str] | None = None,
                  empty_as_missing: bool = True) -> pd.DataFrame:
    """Read a CSV file (``.csv`` or ``.csv.gz``) as text, every fault of the file in one message.

    Parameters
    ----------
    path : path
        The file.
    columns : iterable of str, optional
        Read only these columns; one that is absent is an error (rule ``missing_column``) naming the columns the
        file has.
    empty_as_missing : bool
        Empty cells become missing values (default) or stay empty text. The text ``NA`` is a value either way.

    Raises
    ------
    SchemaError
        The faults of :func:`csv_header`, a missing column, bytes that are not UTF-8 past the header
        (``not_utf8``, naming the line and offset of the first) and malformed CSV (``csv_format``, naming the
        line, e.g. more fields than the header).
    ParameterError
        If the file cannot be opened (permissions).
    """
    path = Path(path)
    cols = list(columns) if columns is not None else None
    names = csv_header(path)
    if cols is not None:
        missing = [c for c in cols if c not in names]
        if missing:
            raise SchemaError(f"{path}: required column(s) missing: {column_list(missing)} "
                              f"{_label(path, 'missing_column')}; the file has {column_list(names)}. See "
                              "data/README.md for the contract")
    try:
        return pd.read_csv(path, dtype="str", keep_default_na=False, na_values=[""] if empty_as_missing else None,
                           usecols=cols)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except pd.errors.EmptyDataError:  # blank lines only after all (e.g. whitespace pandas skips)
        raise SchemaError(f"{path.name} is empty (no header row): {path} {_label(path, 'empty_file')}") from None
    except pd.errors.ParserError as exc:  # pandas names the line and the counts, never the values
        detail = str(exc).strip().splitlines()[0].replace("Error tokenizing data. C error: ", "")
        raise SchemaError(f"{path}: cannot be read as CSV: {detail} {_label(path, 'csv_format')}; quote values "
                          "that contain commas") from None
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _read_parquet(path: Path, cols: list[str] | None) -> pd.DataFrame:
    try:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        if cols is not None:
            missing = [c for c in cols if c not in dataset.schema.names]
            if missing:
                raise SchemaError(f"{path}: required column(s) missing: {column_list(missing)} "
                                  f"{_label(path, 'missing_column')}; the file has "
                                  f"{column_list(dataset.schema.names)}. See data/README.md for the contract")
        table = dataset.to_table(columns=cols)
    except PermissionError as exc:
        raise _unreadable(path, exc) from None
    except pa.ArrowInvalid:
        raise SchemaError(f"{path}: cannot be read as Parquet {_label(path, 'parquet_format')}; write it again, "
                          "or give the table as CSV") from None
    return table.to_pandas(date_as_object=False)


def read_table(path: str | Path, *, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read one table from CSV (as text) or Parquet (file or dataset folder), without validating it.

    Parameters
    ----------
    path : path
        ``.csv``, ``.csv.gz``, ``.parquet`` or a folder of Parquet files.
    columns : iterable of str, optional
        Read only these columns (Parquet reads only their bytes).

    Raises
    ------
    SchemaError
        If the file cannot be read as a contract table, in one line naming the file, the table and the rule:
        an empty CSV (``empty_file``), bytes that are not UTF-8 (``not_utf8``: line and offset of the first),
        another separator than ``,`` (``delimiter``), a repeated header name (``duplicate_column``), one of
        ``columns`` absent (``missing_column``), malformed CSV (``csv_format``) or Parquet (``parquet_format``).
    ParameterError
        If the file cannot be opened (permissions).
    """
    path = Path(path)
    cols = list(columns) if columns is not None else None
    if path.is_dir() or path.suffix == ".parquet":
        return _read_parquet(path, cols)
    if path.name.endswith((".csv", ".csv.gz")):
        return read_csv_text(path, columns=cols)
    raise ParameterError(f"{path}: cannot read this file type; use .csv, .csv.gz or .parquet")


@runtime_checkable
class TableSource(Protocol):
    """The contract tables somewhere else than a data folder, e.g. a database (:class:`carequal.warehouse.Source`):
    accepted by :func:`read_tables`, :func:`load_tables`, :func:`carequal.inputs.prepare` and the batch wherever
    they take a data folder."""

    def read_tables(self) -> dict[str, pd.DataFrame]:
        """The raw contract tables as :func:`read_tables` gives them for CSV: every column text, missing = NA."""

    def fingerprint(self) -> str:
        """The identity of the content (as :func:`carequal.inputs.data_fingerprint` is of a folder)."""

    def markets(self) -> list[str]:
        """The distinct non-empty ``patients.market`` values."""


def read_tables(directory: str | Path | TableSource) -> dict[str, pd.DataFrame]:
    """Read every contract table present in ``directory`` (raw, unvalidated), or a :class:`TableSource`'s.

    Raises
    ------
    SchemaError
        Naming the missing files if a required table is absent; naming each file, its missing required
        columns and the columns it has (rule ``missing_column``); or a fault of one file (:func:`read_table`).
    """
    if isinstance(directory, TableSource):
        return directory.read_tables()
    directory = Path(directory)
    if not directory.is_dir():
        raise ParameterError(f"data directory {directory} does not exist")
    raw, missing, paths = {}, [], {}
    for table in TABLES:
        path = table_path(directory, table)
        if path is None:
            if table not in OPTIONAL_TABLES:
                missing.append(table)
            continue
        raw[table], paths[table] = read_table(path), path
    if missing:
        raise SchemaError(
            f"{directory}: no file for required table(s) {', '.join(missing)} "
            f"(expected e.g. {missing[0]}.csv or {missing[0]}.parquet); see data/README.md"
        )
    problems = []
    for table, frame in raw.items():
        absent = [s.name for s in CONTRACT[table] if s.required and s.name not in frame.columns]
        if absent:
            problems.append(f"{paths[table]}: required column(s) missing: {column_list(absent)} "
                            f"{_label(paths[table], 'missing_column')}; the file has {column_list(frame.columns)}")
    if problems:
        raise SchemaError("; ".join(problems) + ". See data/README.md for the contract")
    return raw


def load_tables(directory: str | Path | TableSource, *, mode: str = "strict") -> ValidatedTables:
    """Read and validate the contract tables of a data directory.

    Parameters
    ----------
    directory : path or TableSource
        Folder with one file per table (see module docstring), or a :class:`TableSource` such as a database.
    mode : {"strict", "quarantine"}
        See :func:`carequal.schema.validate_tables`.
    """
    return validate_tables(read_tables(directory), mode=mode)


def _with_market(table: str, frame: pd.DataFrame, patients: pd.DataFrame,
                 patient_rows: np.ndarray | None = None) -> pd.DataFrame:
    """``frame`` with its patients' ``market``; ``patient_rows`` (each row's patient as a row of ``patients``,
    :attr:`carequal.schema.ValidatedTables.patient_rows`) saves the look-up."""
    if table in ("facilities", "patients"):
        return frame
    # one Arrow hash look-up (a pandas map on text keys is ~10x slower at millions of rows), unless validation
    # made it; every accepted row names a known patient (the contract's foreign key), so no row is left without
    # a market
    if patient_rows is None:
        patient_rows = key_positions(frame["patient_id"], patients["patient_id"])
    market = patients["market"]
    # Arrow text gathered in Arrow: no Python string per row, made and then converted back for the write
    return frame.assign(market=take_text(market, patient_rows) if isinstance(market.dtype, pd.StringDtype)
                        else take(market, patient_rows))


def write_market_dataset(validated: ValidatedTables, out_dir: str | Path) -> dict[str, int]:
    """Write accepted rows as Parquet datasets partitioned by market (``<table>/market=<m>/...``).

    Patient-level tables are partitioned by the patient's market of residence, facilities by their own
    market (see the module docstring). Returns the number of rows written per table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for table, frame in validated.tables.items():
        data = _with_market(table, frame, validated.tables["patients"], validated.patient_rows.get(table))
        arrow = pa.Table.from_pandas(data, preserve_index=False)
        ds.write_dataset(
            arrow, out_dir / table, format="parquet", partitioning=["market"], partitioning_flavor="hive",
            existing_data_behavior="delete_matching",
            basename_template="part-{i}.parquet",
            preserve_order=True,  # each partition in the table's order, the same on every run
        )
        written[table] = len(frame)
    write_validation_summary(validated, out_dir)
    return written


VALIDATION_FILES = {"counts": "validation_counts.csv", "failures": "validation_failures.csv"}


def write_validation_summary(validated: ValidatedTables, out_dir: str | Path) -> None:
    """Write the validation counts per table and per broken rule beside a dataset, **without** example keys
    (the summary is shown in shared reports; the examples are patient identifiers)."""
    out_dir = Path(out_dir)
    validated.counts.to_csv(out_dir / VALIDATION_FILES["counts"], index=False)
    keep = [c for c in ("table", "column", "rule", "n_rows") if c in validated.failures.columns]
    failures = validated.failures[keep]
    failures.to_csv(out_dir / VALIDATION_FILES["failures"], index=False)


def read_validation_summary(dataset_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``(counts, failures)`` tables written by :func:`write_validation_summary` (empty when absent)."""
    dataset_dir = Path(dataset_dir)
    out = []
    for name in ("counts", "failures"):
        path = dataset_dir / VALIDATION_FILES[name]
        out.append(pd.read_csv(path, dtype={"table": "str"}) if path.is_file() and path.stat().st_size
                   else pd.DataFrame())
    return out[0], out[1]


def partition_folder(key: str, value: str) -> str:
    """The folder name pyarrow's hive partitioning gives a value: ``key=<value, URL-encoded>``.

    Examples
    --------
    >>> partition_folder("market", "Cedar Falls")
    'market=Cedar%20Falls'
    """
    return f"{key}={quote(str(value), safe='')}"


def markets_in_dataset(dataset_dir: str | Path) -> list[str]:
    """Markets present in a market-partitioned dataset (from its ``patients`` folder names, decoded; no data
    read)."""
    folder = Path(dataset_dir) / "patients"
    return sorted(unquote(p.name.split("=", 1)[1]) for p in folder.glob("market=*") if p.is_dir())


def read_dataset_tables(dataset_dir: str | Path, *, columns: dict[str, list[str]] | None = None
                        ) -> dict[str, pd.DataFrame]:
    """Every market's rows of an ingested dataset with only the ``columns`` asked for (per table; a table not
    named is read whole), **without** validating again: the dataset holds rows that passed validation at
    ingest, stored typed. For computations over all markets that need a few columns (the national models).
    """
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "patients").is_dir():
        raise ParameterError(f"{dataset_dir} is not a market dataset (no patients/ folder); run carequal ingest")
    return {table: read_table(folder, columns=(columns or {}).get(table))
            for table, folder in _table_folders(dataset_dir)}


def _table_folders(dataset_dir: Path):
    """``(table, folder)`` of every contract table present in a dataset; a missing required table is an error."""
    for table in TABLES:
        folder = dataset_dir / table
        if folder.is_dir():
            yield table, folder
        elif table not in OPTIONAL_TABLES:
            raise SchemaError(f"{dataset_dir}: no folder for required table {table}")


def read_market(dataset_dir: str | Path, market: str, *, mode: str = "strict",
                columns: dict[str, list[str]] | None = None) -> ValidatedTables:
    """Read one market from a market-partitioned dataset without opening the other markets' files.

    Returns the market's residents, all their stays, enrollment and ED visits, and every facility (so stays
    at out-of-market facilities keep their setting), validated.

    Raises
    ------
    ParameterError
        If the market is not in the dataset (the message lists the markets that are).
    """
    dataset_dir = Path(dataset_dir)
    known = markets_in_dataset(dataset_dir)
    if market not in known:
        raise ParameterError(f"market {market!r} is not in {dataset_dir}; markets: {', '.join(known) or 'none'}")
    raw = {}
    for table, folder in _table_folders(dataset_dir):
        cols = (columns or {}).get(table)
        if table == "facilities":
            raw[table] = read_table(folder, columns=cols)
            continue
        part = folder / partition_folder("market", market)
        if not part.is_dir():
            continue
        frame = ds.dataset(part, format="parquet").to_table(columns=cols).to_pandas(date_as_object=False)
        # the market is the partition key (a folder name), not a column of the files
        raw[table] = frame.assign(market=market) if table == "patients" else frame
    return validate_tables(raw, mode=mode)


def summarise(validated: ValidatedTables) -> pd.DataFrame:
    """A one-table overview of validated data: per market, facilities by setting, patients, stays, date range.

    Returns one row per market plus a ``total`` row, with columns ``market``, ``facilities``, one column per
    setting (facility counts), ``patients``, ``stays``, ``acute_stays``, ``first_admit``, ``last_discharge``.
    """
    t = validated.tables
    fac = t["facilities"]
    stays = t["stays"].merge(fac[["facility_id", "setting", "market"]], on="facility_id", how="left")
    by_setting = pd.crosstab(fac["market"], fac["setting"]).rename_axis(columns=None)
    rows = pd.DataFrame({
        "facilities": fac.groupby("market").size(),
    }).join(by_setting).join(t["patients"].groupby("market").size().rename("patients"), how="outer")
    rows = rows.join(stays.groupby("market").size().rename("stays"), how="outer")
    rows = rows.join(stays[stays["setting"] == "acute"].groupby("market").size().rename("acute_stays"),
                     how="outer")
    rows = rows.join(stays.groupby("market").agg(first_admit=("admit_date", "min"),
                                                 last_discharge=("discharge_date", "max")), how="outer")
    count_cols = [c for c in rows.columns if c not in ("first_admit", "last_discharge")]
    rows[count_cols] = rows[count_cols].fillna(0).astype("int64")
    total = rows[count_cols].sum().to_frame().T
    total["first_admit"] = rows["first_admit"].min()
    total["last_discharge"] = rows["last_discharge"].max()
    total.index = ["total"]
    out = pd.concat([rows, total]).rename_axis("market").reset_index()
    return out
