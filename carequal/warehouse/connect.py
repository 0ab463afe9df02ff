"""Connections that stream query results as Arrow record batches: PostgreSQL through ADBC, others through
SQLAlchemy in chunks.

Both give the same four operations (:class:`Connection`): the tables and views of the database, the columns of
a ``SELECT`` (with their Arrow types where the driver knows them before reading), one row of a small query, and
the record batches of a large one. Every driver error becomes a :class:`~carequal.errors.SourceError` in one
line with the password removed; the caller names the mapping key it concerns.

Why two paths: the ADBC PostgreSQL driver reads with ``COPY ... TO STDOUT (FORMAT binary)`` straight into Arrow
(no Python object per value); for other databases SQLAlchemy is the one interface every driver has, read with a
server-side cursor (``stream_results``) in chunks of ``batch_rows`` rows, each turned into an Arrow batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from carequal.errors import SourceError
from carequal.warehouse.mapping import Credentials

__all__ = ["Connection", "DriverError", "connect", "quote_identifier"]


class DriverError(Exception):
    """A database error, its message already redacted: the caller adds the mapping key."""


def quote_identifier(name: str) -> str:
    """``name`` as a SQL identifier in double quotes (standard SQL; ``"`` doubled).

    Examples
    --------
    >>> quote_identifier('ADM_DT'), quote_identifier('odd"name')
    ('"ADM_DT"', '"odd""name"')
    """
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # SQLAlchemy appends the statement and a link; libpq and ADBC prefix their layer: keep the cause
    text = text.split("\n[SQL:")[0].split("\n(Background on this error")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("LINE ", "^", "HINT", "DETAIL", "QUERY:", "CONTEXT"))]
    return " ".join(lines[:2]) if lines else type(exc).__name__


class Connection:
    """An open connection (see the module docstring). Use as a context manager."""

    kind = "?"

    def __init__(self, credentials: Credentials):
        self.credentials = credentials

    def quote(self, name: str) -> str:
        """``name`` quoted as an identifier of this database."""
        return quote_identifier(name)

    def error(self, exc: BaseException) -> DriverError:
        return DriverError(self.credentials.redact(_first_line(exc)))

    def objects(self) -> list[tuple[str, str]]:
        """``(schema, name)`` of every table and view the user can see (system schemas left out)."""
        raise NotImplementedError

    def describe(self, sql: str) -> list[tuple[str, pa.DataType | None]]:
        """Column names (and Arrow types, or None where unknown before reading) of ``sql``'s result."""
        raise NotImplementedError

    def row(self, sql: str) -> tuple:
        """The first row of ``sql``'s result."""
        raise NotImplementedError

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        """``sql``'s result as record batches of about ``batch_rows`` rows (memory stays bounded)."""
        raise NotImplementedError

    def default_schema(self) -> str | None:
        return None

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _libpq_uri(url: str) -> str:
    """A libpq connection URI: ``postgresql://`` (no SQLAlchemy driver suffix), a connect timeout of 10 s unless
    one is given (an unreachable host fails in seconds, not minutes)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("connect_timeout", "10")
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))


class AdbcConnection(Connection):
    """PostgreSQL through ``adbc_driver_postgresql`` (libpq; COPY binary into Arrow)."""

    kind = "adbc"

    def __init__(self, credentials: Credentials, *, autocommit: bool = True):
        super().__init__(credentials)
        try:
            import adbc_driver_postgresql.dbapi as pg
        except ImportError:
            raise SourceError("connection.reader: the ADBC PostgreSQL driver is not installed; install carequal's "
                              "warehouse extra (pip install 'carequal[warehouse]') or set reader = "
                              "\"sqlalchemy\"") from None
        try:
            self.conn = pg.connect(_libpq_uri(credentials.url), autocommit=autocommit)
        except Exception as exc:  # noqa: BLE001 - every driver failure is reported the same way
            raise self.error(exc) from None

    def _cursor(self):
        return self.conn.cursor()

    def objects(self) -> list[tuple[str, str]]:
        sql = ("SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
               "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND n.nspname NOT IN "
               "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND "
               "has_schema_privilege(n.oid, 'USAGE') ORDER BY 1, 2")
        table = self._table(sql)
        return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))

    def default_schema(self) -> str | None:
        return self.row("SELECT current_schema()::text")[0]

    def _table(self, sql: str) -> pa.Table:
        try:
            with self._cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None

    def describe(self, sql: str) -> list[tuple[str, pa.DataType | None]]:
        schema = self._table(sql).schema
        return [(f.name, f.type) for f in schema]

    def row(self, sql: str) -> tuple:
        table = self._table(sql)
        return tuple(table.column(i)[0].as_py() for i in range(table.num_columns)) if table.num_rows else ()

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        try:
            with self._cursor() as cur:
                cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(32 << 20)})
                cur.execute(sql)
                reader = cur.fetch_record_batch()
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    yield batch
        except DriverError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken connection has nothing left to report
            pass


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL of a connection URL: ``postgresql://`` is read with psycopg 3 (SQLAlchemy's default,
    psycopg2, is not a carequal dependency)."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "sys", "mysql", "performance_schema"}


def _text_value(value) -> str | None:
    """One value of a column whose values have mixed Python types (SQLite), as the contract's text."""
    import datetime as dt
    from decimal import Decimal

    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float | Decimal | int):
        return str(pa.array([value])[0])  # the same text Arrow's cast gives a typed column
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _column_array(values: list) -> pa.Array:
    """Arrow array of one column's Python values: inferred when they share a type, else each as text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([_text_value(v) for v in values], type=pa.string())


class SqlAlchemyConnection(Connection):
    """Any database SQLAlchemy has a dialect for, read in chunks with a server-side cursor."""

    kind = "sqlalchemy"

    def __init__(self, credentials: Credentials):
        super().__init__(credentials)
        try:
            import sqlalchemy as sa
        except ImportError:
            raise SourceError("connection.url: SQLAlchemy is not installed; install carequal's warehouse extra "
                              "(pip install 'carequal[warehouse]')") from None
        self.sa = sa
        try:
            self.engine = sa.create_engine(sqlalchemy_url(credentials.url))
            self.conn = self.engine.connect()
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None

    def objects(self) -> list[tuple[str, str]]:
        try:
            inspector = self.sa.inspect(self.conn)
            out = []
            for schema in inspector.get_schema_names():
                if schema in _SYSTEM_SCHEMAS or schema.startswith("pg_"):
                    continue
                out += [(schema, n) for n in inspector.get_table_names(schema=schema)]
                out += [(schema, n) for n in inspector.get_view_names(schema=schema)]
            return sorted(out)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc) from None

    def default_schema(self) -> str | None:
        return self.engine.dialect.default_schema_name or None

    def quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote_identifier(name)

    def describe(self, sql: str) -> list[tuple[str, pa.DataType | None]]:
        try:
            result = self.conn.execute(self.sa.text(sql))
            names = list(result.keys())
            result.close()
        except Exception as exc:  # noqa: BLE001
            self._rollback()
            raise self.error(exc) from None
        return [(n, None) for n in names]

    def row(self, sql: str) -> tuple:
        try:
            return tuple(self.conn.execute(self.sa.text(sql)).first() or ())
        except Exception as exc:  # noqa: BLE001
            self._rollback()
            raise self.error(exc) from None

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        size = self.credentials.batch_rows
        try:
            result = self.conn.execution_options(stream_results=True, yield_per=size).execute(self.sa.text(sql))
            names = list(result.keys())
            for rows in result.partitions(size):
                columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
                yield pa.RecordBatch.from_arrays([_column_array(list(c)) for c in columns], names=names)
            result.close()
        except Exception as exc:  # noqa: BLE001
            self._rollback()
            raise self.error(exc) from None

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001, S110 - the original error is the one to report
            pass

    def close(self) -> None:
        try:
            self.conn.close()
            self.engine.dispose()
        except Exception:  # noqa: BLE001, S110
            pass


def connect(credentials: Credentials) -> Connection:
    """Open the connection ``credentials`` describe.

    Raises
    ------
    DriverError
        The driver's message (redacted) when the connection cannot be made: wrong password, unreachable host,
        unknown database.
    SourceError
        The driver for the URL is not installed.
    """
    if credentials.reader == "adbc":
        return AdbcConnection(credentials)
    return SqlAlchemyConnection(credentials)
