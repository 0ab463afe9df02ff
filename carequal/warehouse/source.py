"""A database as the source of the contract tables: plan the queries, sign the content, read as text.

:class:`Source` is what ``--source FILE`` gives :func:`carequal.loaders.read_tables`, :func:`carequal.inputs.prepare`
and the batch in place of a data folder. It has three operations:

* :meth:`Source.read_tables`: the contract tables as the CSV reader gives them (every column text, empty or NULL
  = missing), so validation and everything after it are unchanged. The rows come from the database in Arrow
  record batches; each batch is turned into text at once (dates ``YYYY-MM-DD``, booleans ``true``/``false``,
  numbers as written) and its codes mapped, so memory holds the text tables and one batch, not a typed copy.
* :meth:`Source.fingerprint`: SHA-256 over the mapping (without credentials), the SQL of every query and each
  table's content signature: its row count and, by default, the earliest and latest of each date column, or
  the aggregate its ``signature`` names (e.g. ``max(updated_at)``), or with ``signature = "snapshot"`` a hash
  of the rows themselves (the tables are then read once, for the signature, and kept for :meth:`read_tables`).
  Prepared inputs are reused while the fingerprint is unchanged: a change the signature does not see (a code
  corrected in place, with the same count and dates) needs ``--force`` or a better signature.
* :meth:`Source.markets`: the distinct ``patients.market`` values, for choosing markets before any work.

Before reading, every table's database object and columns are checked (:meth:`Source.plan`) and all problems
are reported at once, each naming the mapping key, the object and the valid choices. Column types: a column is
read if its SQL type can hold the contract's values as the contract writes them; a date held as a number (e.g.
``20240301`` in an integer column) or a number held as a date is refused, with the key and the type (convert it
in a ``query``), since every row would fail: through ADBC before anything is read (the driver gives the types
of an empty result), through SQLAlchemy at the first batch that holds such a value. A text column is read as it
is and the contract's rules judge each value (quarantine or strict). A ``timestamp`` at midnight is read as its
date; one with a time of day is kept whole and fails the date rule; a ``timestamp with time zone`` is read in
UTC (convert it in a query for a local date).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from carequal.errors import SourceError
from carequal.schema import CONTRACT, KEYS, TABLES
from carequal.warehouse.connect import Connection, DriverError, connect
from carequal.warehouse.mapping import (
    SNAPSHOT,
    Credentials,
    SourceMapping,
    TableSpec,
    read_mapping,
    redact_url,
    resolve_credentials,
)

__all__ = ["Source", "TablePlan", "open_source"]

_LISTED = 20
"""Names listed in a message before ``…``."""


def _listing(names: list[str]) -> str:
    return ", ".join(names[:_LISTED]) + (f", … ({len(names)} in all)" if len(names) > _LISTED else "") \
        if names else "nothing"


def _problems(what: str, problems: list[str]) -> SourceError:
    return SourceError(f"{what} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
                       + "\n".join(f"  {p}" for p in problems))


# ------------------------------------------------------------------------------------------ types and text


_ACCEPTS = {
    "date": ("string", "date", "timestamp", "null"),
    "int": ("string", "integer", "floating", "decimal", "null"),
    "float": ("string", "integer", "floating", "decimal", "null"),
    "bool": ("string", "boolean", "integer", "null"),
}
_OTHER = ("string", "integer", "floating", "decimal", "boolean", "date", "timestamp", "null")
_NEEDS = {"date": "a SQL date, timestamp or text (YYYY-MM-DD) column",
          "int": "a SQL number or text column", "float": "a SQL number or text column",
          "bool": "a SQL boolean, integer (1/0) or text (true/false) column"}
_CONVERT = {"date": "to_date(\"{c}\"::text, 'YYYYMMDD') for a yyyymmdd number",
            "int": "\"{c}\"::text", "float": "\"{c}\"::text", "bool": "\"{c}\" = 'Y'"}


# pyarrow 16 added the string_view type (and its test); an older pyarrow never reads one
_is_string_view = getattr(pa.types, "is_string_view", lambda t: False)


def _family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    for name, test in (("string", lambda x: pa.types.is_string(x) or pa.types.is_large_string(x)
                        or _is_string_view(x)),
                       ("boolean", pa.types.is_boolean), ("integer", pa.types.is_integer),
                       ("floating", pa.types.is_floating), ("decimal", pa.types.is_decimal),
                       ("date", pa.types.is_date), ("timestamp", pa.types.is_timestamp), ("null", pa.types.is_null)):
        if test(t):
            return name
    return "other"


def type_problem(kind: str, arrow_type: pa.DataType) -> str | None:
    """Why a column of ``arrow_type`` cannot give the contract's ``kind``, or None when it can.

    Examples
    --------
    >>> type_problem("date", pa.int32())
    'holds int32 values; a date column needs a SQL date, timestamp or text (YYYY-MM-DD) column'
    >>> type_problem("date", pa.date32()) is None, type_problem("id", pa.int64()) is None
    (True, True)
    """
    family = _family(arrow_type)
    if family in _ACCEPTS.get(kind, _OTHER):
        return None
    need = _NEEDS.get(kind, "a SQL text, number, boolean or date column")
    return f"holds {arrow_type} values; a {kind} column needs {need}"


def _as_text(values: pa.Array) -> pa.Array:
    """One column of a batch as the contract's text: ISO dates, true/false, numbers as Arrow writes them;
    empty text is missing (as an empty CSV cell)."""
    t = values.type
    if pa.types.is_dictionary(t):
        values = values.dictionary_decode()
        t = values.type
    if pa.types.is_timestamp(t):
        plain = values.cast(pa.timestamp(t.unit)) if t.tz is not None else values
        day = plain.cast(pa.date32())
        midnight = pc.equal(day.cast(pa.timestamp(t.unit)), plain)
        text = pc.if_else(midnight, day.cast(pa.large_string()), pc.strftime(plain.cast(pa.timestamp("s"), safe=False),
                                                                                 "%Y-%m-%d %H:%M:%S"))
    elif pa.types.is_large_string(t):
        text = values
    else:
        text = values.cast(pa.large_string())
    if _family(t) == "string":
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text)
    return text


def _mapped(values: pa.Array, codes: dict[str, str]) -> pa.Array:
    """``values`` with each code of ``codes`` replaced (``""`` → missing); other values unchanged."""
    keys = pa.array(list(codes), type=pa.large_string())
    targets = pa.array([v or None for v in codes.values()], type=pa.large_string())
    position = pc.index_in(values, value_set=keys)
    return pc.if_else(pc.is_null(position), values, pc.take(targets, position))


# --------------------------------------------------------------------------------------------- the plan


@dataclass
class TablePlan:
    """How one contract table is read: the relation, its column pairs, the SELECT and the signature query."""

    table: str
    key: str
    label: str
    relation: str
    where: str
    columns: list[tuple[str, str, pa.DataType | None]] = field(default_factory=list)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    select: str = ""
    signature: str = ""
    snapshot: bool = False

    def kind(self, column: str) -> str:
        return next(s.kind for s in CONTRACT[self.table] if s.name == column)


def _split_name(spec: TableSpec, default_schema: str | None) -> tuple[str | None, str]:
    name = spec.table or ""
    schema = spec.db_schema or None
    if schema is None and "." in name:
        schema, name = name.split(".", 1)
    return schema or default_schema, name


def _match(name: str, candidates: list[str]) -> list[str]:
    exact = [c for c in candidates if c == name]
    return exact or [c for c in candidates if c.lower() == name.lower()]


class Source:
    """The contract tables in a database, as a source mapping file describes them (see the module docstring).

    Parameters
    ----------
    mapping : SourceMapping
        The validated mapping (:func:`carequal.warehouse.mapping.read_mapping`).
    path : path, optional
        The mapping file, named in messages and the manifest.
    progress : bool
        Show a progress bar (tqdm, on stderr) while reading.
    """

    def __init__(self, mapping: SourceMapping, path: str | Path | None = None, *, progress: bool = True,
                 environ=None):
        self.mapping = mapping
        self.path = Path(path) if path is not None else None
        self.progress = progress
        self._environ = environ
        self._credentials: Credentials | None = None
        self._plans: dict[str, TablePlan] | None = None
        self._fingerprint: str | None = None
        self._snapshot: dict[str, pd.DataFrame] | None = None
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ naming

    @property
    def url(self) -> str:
        """The connection URL as shown: variables not expanded, no password."""
        return redact_url(self.mapping.connection.url)

    def __str__(self) -> str:
        name = str(self.path) if self.path is not None else "source mapping"
        return f"{name} ({self.url})"

    def __repr__(self) -> str:
        return f"Source({str(self)!r})"

    @property
    def folder(self) -> Path | None:
        """The folder of the mapping file (where an agreement file is looked for)."""
        return self.path.resolve().parent if self.path is not None else None

    def credentials(self) -> Credentials:
        if self._credentials is None:
            import os

            self._credentials = resolve_credentials(self.mapping.connection,
                                                    environ=self._environ if self._environ is not None
                                                    else os.environ)
        return self._credentials

    def redact(self, text: str) -> str:
        return self.credentials().redact(text) if self._credentials is not None else redact_url(str(text))

    def connect(self) -> Connection:
        """An open connection; a failure names ``connection.url`` and the cause, without the password."""
        credentials = self.credentials()
        try:
            return connect(credentials)
        except DriverError as exc:
            raise SourceError(f"connection.url: cannot connect to {credentials.display}: {exc}") from None

    # ------------------------------------------------------------------------------------------ the plan

    def plan(self, conn: Connection | None = None) -> dict[str, TablePlan]:
        """Every mapped table's relation, columns, SELECT and signature query, checked against the database.

        Raises
        ------
        SourceError
            Listing every problem: an object that does not exist (naming those that do), a query or filter that
            fails, a mapped column that is not there or a required one not found (naming the columns there are),
            a column whose type cannot hold the contract's values.
        """
        if self._plans is not None:
            return self._plans
        if conn is None:
            with self.connect() as conn:
                return self.plan(conn)
        problems: list[str] = []
        objects = None
        plans = {}
        for table in TABLES:
            spec = self.mapping.tables.get(table)
            if spec is None:
                continue
            key = f"tables.{table}"
            if spec.table is not None:
                if objects is None:
                    try:
                        objects = conn.objects()
                        default = conn.default_schema()
                    except DriverError as exc:
                        raise SourceError(f"{key}.table: cannot list the database's tables and views: {exc}") \
                            from None
                found = self._find(key, spec, objects, default, problems)
                if found is None:
                    continue
                schema, name = found
                relation = (f"{conn.quote(schema)}." if schema else "") + conn.quote(name)
                label = f"{schema}.{name}" if schema else name
            else:
                relation, label = f"({spec.query}) q", "the query"
            try:
                described = conn.describe(f"SELECT * FROM {relation} WHERE 1 = 0")
            except DriverError as exc:
                what = "query" if spec.query is not None else "table"
                problems.append(f"{key}.{what}: {'the query' if spec.query else label} cannot be read: {exc}")
                continue
            where = f" WHERE ({spec.filter})" if spec.filter else ""
            if spec.filter:
                try:
                    conn.describe(f"SELECT * FROM {relation} WHERE ({spec.filter}) AND 1 = 0")
                except DriverError as exc:
                    problems.append(f"{key}.filter: the filter fails on {label}: {exc}")
                    continue
            plan = TablePlan(table, key, label, relation, where, values=dict(spec.values))
            self._columns(plan, spec, described, problems)
            for column in spec.values:
                if column not in {c for c, _, _ in plan.columns}:
                    problems.append(f"{key}.values.{column}: the column is not read from {label} (not mapped and "
                                    "not found under its own name)")
            select = ", ".join(f"{conn.quote(src)} AS {conn.quote(col)}" for col, src, _ in plan.columns)
            read = {c: s for c, s, _ in plan.columns}
            order = spec.order_by if spec.order_by is not None else [c for c in KEYS[table] if c in read]
            for column in order:
                if column not in read:
                    problems.append(f"{key}.order_by: {column} is not read from {label}")
            order_sql = ", ".join(conn.quote(read[c]) for c in order if c in read)
            plan.select = f"SELECT {select} FROM {relation}{where}" + (f" ORDER BY {order_sql}" if order_sql else "")
            plan.snapshot = spec.signature == SNAPSHOT
            aggregates = ["count(*)"]
            if spec.signature and not plan.snapshot:
                aggregates.append(spec.signature)
            elif not plan.snapshot:
                for col, src, _ in plan.columns:
                    if plan.kind(col) == "date":
                        aggregates += [f"min({conn.quote(src)})", f"max({conn.quote(src)})"]
            plan.signature = f"SELECT {', '.join(aggregates)} FROM {relation}{where}"
            plans[table] = plan
        if problems:
            raise _problems(f"{self} does not fit the database", problems)
        self._plans = plans
        return plans

    def _find(self, key: str, spec: TableSpec, objects: list[tuple[str, str]], default: str | None,
              problems: list[str]) -> tuple[str, str] | None:
        schema, name = _split_name(spec, self.mapping.db_schema)
        schemas = sorted({s for s, _ in objects})
        if schema is not None:
            hit = _match(schema, schemas)
            if not hit:
                where = (f"{key}.schema" if spec.db_schema else f"{key}.table" if "." in (spec.table or "")
                         else "schema")
                problems.append(f"{where}: no schema {schema} in the database (or no access to it); its schemas "
                                f"are {_listing(schemas)}")
                return None
            schema = hit[0]
            names = sorted(n for s, n in objects if s == schema)
            hit = _match(name, names)
            if len(hit) != 1:
                problems.append(f"{key}.table: no table or view {name} in schema {schema}"
                                + (f" (several differ only in case: {', '.join(hit)}; write it exactly)" if hit
                                   else f"; it has {_listing(names)}"))
                return None
            return schema, hit[0]
        candidates = [(s, n) for s, n in objects if n == name] or \
            [(s, n) for s, n in objects if n.lower() == name.lower()]
        if len(candidates) > 1:
            preferred = [c for c in candidates if c[0] == default]
            if len(preferred) == 1:
                return preferred[0]
            problems.append(f"{key}.table: {name} is in several schemas ({', '.join(s for s, _ in candidates)}); "
                            "name one with schema = \"...\" or table = \"schema.name\"")
            return None
        if not candidates:
            problems.append(f"{key}.table: no table or view {name} in the database; it has "
                            f"{_listing([f'{s}.{n}' for s, n in objects])}")
            return None
        return candidates[0]

    @staticmethod
    def _columns(plan: TablePlan, spec: TableSpec, described: list, problems: list[str]) -> None:
        names = [n for n, _ in described]
        types = dict(described)
        for contract in CONTRACT[plan.table]:
            given = spec.columns.get(contract.name)
            hit = _match(given or contract.name, names)
            key = f"{plan.key}.columns.{contract.name}"
            if len(hit) > 1:
                problems.append(f"{key}: {', '.join(hit)} in {plan.label} differ only in case; map one exactly")
                continue
            if not hit:
                if given is not None:
                    problems.append(f"{key}: column {given} not found in {plan.label}; it has {_listing(names)}")
                elif contract.required:
                    problems.append(f"{key}: no column {contract.name} in {plan.label} and none mapped; map it "
                                    f"(columns.{contract.name} = \"...\"); it has {_listing(names)}")
                continue
            source = hit[0]
            arrow_type = types[source]
            if arrow_type is not None:
                why = type_problem(contract.kind, arrow_type)
                if why is not None:
                    problems.append(f"{key}: column {source} of {plan.label} {why}; convert it in a query, e.g. "
                                    + _CONVERT.get(contract.kind, "{c}::text").format(c=source))
                    continue
            plan.columns.append((contract.name, source, arrow_type))

    # ------------------------------------------------------------------------------------------ reading

    def _read_one(self, conn: Connection, plan: TablePlan) -> pd.DataFrame:
        from tqdm.auto import tqdm

        names = [c for c, _, _ in plan.columns]
        kinds = {c: plan.kind(c) for c in names}
        sources = {c: s for c, s, _ in plan.columns}
        schema = pa.schema([(c, pa.large_string()) for c in names])
        chunks = []
        bar = tqdm(total=self.counts.get(plan.table), unit=" rows", unit_scale=True, desc=f"reading {plan.table}",
                   disable=not self.progress, file=sys.stderr, leave=False)
        try:
            for batch in conn.batches(plan.select):
                arrays = []
                for i, column in enumerate(names):
                    values = batch.column(i)
                    why = type_problem(kinds[column], values.type)
                    if why is not None:
                        raise SourceError(f"{plan.key}.columns.{column}: column {sources[column]} of {plan.label} "
                                          f"{why}; convert it in a query")
                    text = _as_text(values)
                    if column in plan.values:
                        text = _mapped(text, plan.values[column])
                    arrays.append(text)
                chunks.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
                bar.update(batch.num_rows)
        except DriverError as exc:
            raise SourceError(f"{plan.key}: reading {plan.label} failed: {exc}") from None
        finally:
            bar.close()
        table = pa.Table.from_batches(chunks, schema=schema)
        del chunks
        # text as pandas' "str" dtype, the CSV reader's (pyarrow before 19 would give object columns)
        text = pd.api.types.pandas_dtype("str")
        return table.to_pandas(self_destruct=True, types_mapper={pa.string(): text, pa.large_string(): text}.get)

    def read_tables(self) -> dict[str, pd.DataFrame]:
        """Every mapped contract table as text (see the module docstring), ready for
        :func:`carequal.schema.validate_tables`.

        Raises
        ------
        SourceError
            The connection cannot be made, the mapping does not fit the database (:meth:`plan`), or reading fails
            (the table's key and the database's message, without the password).
        """
        if self._snapshot is not None:
            tables, self._snapshot = self._snapshot, None
            return tables
        with self.connect() as conn:
            plans = self.plan(conn)
            return {table: self._read_one(conn, plan) for table, plan in plans.items()}

    # ------------------------------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """SHA-256 of the mapping (no credentials), the queries and each table's content signature."""
        if self._fingerprint is not None:
            return self._fingerprint
        credentials = self.credentials()
        body = self.mapping.model_dump(mode="json", by_alias=True, exclude={"connection"})
        parts = {"connection": credentials.display, "mapping": body, "tables": {}}
        with self.connect() as conn:
            plans = self.plan(conn)
            snapshot = {}
            for table, plan in plans.items():
                try:
                    row = conn.row(plan.signature)
                except DriverError as exc:
                    key = f"{plan.key}.signature" if self.mapping.tables[table].signature else plan.key
                    raise SourceError(f"{key}: the content signature of {plan.label} failed: {exc}") from None
                self.counts[table] = int(row[0]) if row else 0
                parts["tables"][table] = {"select": plan.select, "signature": plan.signature,
                                          "values": [str(v) for v in row]}
                if plan.snapshot:
                    frame = self._read_one(conn, plan)
                    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
                    parts["tables"][table]["rows"] = hashlib.sha256(hashed.tobytes()).hexdigest()
                    snapshot[table] = frame
            if snapshot:  # the other tables too, on this connection: one snapshot of the source
                self._snapshot = {t: snapshot.get(t) if t in snapshot else self._read_one(conn, p)
                                  for t, p in plans.items()}
        text = json.dumps(parts, sort_keys=True, default=str)
        self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
        return self._fingerprint

    def markets(self) -> list[str]:
        """The distinct, non-empty ``patients.market`` values (code mappings applied), sorted."""
        with self.connect() as conn:
            plan = self.plan(conn)["patients"]
            source = dict((c, s) for c, s, _ in plan.columns)["market"]
            try:
                batches = list(conn.batches(f"SELECT DISTINCT {conn.quote(source)} AS market FROM "
                                            f"{plan.relation}{plan.where}"))
            except DriverError as exc:
                raise SourceError(f"{plan.key}.columns.market: reading the markets of {plan.label} failed: "
                                  f"{exc}") from None
        values = [_as_text(b.column(0)) for b in batches]
        if "market" in plan.values:
            values = [_mapped(v, plan.values["market"]) for v in values]
        found = {str(v).strip() for array in values for v in array.to_pylist() if v is not None}
        return sorted(m for m in found if m)


def open_source(path: str | Path, *, progress: bool = True) -> Source:
    """The :class:`Source` a mapping file describes (the file is validated; nothing is connected yet).

    Raises
    ------
    SourceError
        The file is missing or not a valid mapping (every problem listed).
    """
    return Source(read_mapping(path), path, progress=progress)
