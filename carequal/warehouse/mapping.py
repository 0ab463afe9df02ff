"""The source mapping file: where each contract table lives in a database and how its columns and codes map.

A mapping file (TOML, or YAML with the same keys) names a connection and, for each contract table, either a
table or view (``table``, with an optional ``filter``) or a SQL ``query``; ``columns`` maps contract columns to
the source's (a contract column not mapped is looked for under its own name), and ``values`` maps codes that
differ from the contract's (``values.setting = { STH = "acute" }``; a value not listed passes unchanged, so the
contract's rules judge it; ``""`` as a target means missing). Rows are read in the order of the table's key
(:data:`carequal.schema.KEYS`, e.g. ``stay_id``), so a snapshot does not depend on the database's physical order;
``order_by`` names other contract columns, ``order_by = []`` takes the database's order (faster on big tables).

:func:`read_mapping` validates the file with pydantic and then against the contract, and raises one
:class:`~carequal.errors.SourceError` listing every problem, each naming the key, what was given and the valid
choices (as :func:`carequal.agreement.read_agreement` does for agreements).

Credentials never live in the file: the URL's password is ``${VARIABLE}`` (expanded from the environment),
``password_env`` names the variable that holds it, ``keyring`` names a system keyring entry, or the driver
finds it itself (libpq reads ``PGPASSWORD`` and ``~/.pgpass``). A password written out in the URL is refused.
:class:`Credentials` holds the resolved password and :meth:`Credentials.redact` removes it (and any
``user:password@`` of a URL) from every message carequal prints or writes.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carequal.errors import SourceError
from carequal.schema import CONTRACT, OPTIONAL_TABLES, TABLES

__all__ = ["SNAPSHOT", "ConnectionSpec", "Credentials", "SourceMapping", "TableSpec", "read_mapping", "redact_url"]

SNAPSHOT = "snapshot"
"""``signature = "snapshot"``: the content signature is a hash of the rows read (see :mod:`carequal.warehouse`)."""

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_USERINFO = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class KeyringSpec(_Strict):
    """A password kept in the system keyring (``keyring.get_password(service, username)``)."""

    service: str = Field(min_length=1)
    username: str = Field(min_length=1)


class ConnectionSpec(_Strict):
    """Where the data are: a database URL without its password, and where the password comes from."""

    url: str = Field(min_length=1)
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    keyring: KeyringSpec | None = None
    reader: Literal["auto", "adbc", "sqlalchemy"] = "auto"
    batch_rows: int = Field(default=200_000, ge=1_000, le=10_000_000)


class TableSpec(_Strict):
    """One contract table: a table or view (optionally filtered) or a query, its column and value mappings."""

    table: str | None = Field(default=None, min_length=1)
    db_schema: str | None = Field(default=None, alias="schema", min_length=1)
    query: str | None = Field(default=None, min_length=1)
    filter: str | None = Field(default=None, min_length=1)
    columns: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    signature: str | None = Field(default=None, min_length=1)
    order_by: list[str] | None = None


class SourceMapping(_Strict):
    """A source mapping file (see the module docstring and ``data/sample/warehouse.toml``)."""

    db_schema: str | None = Field(default=None, alias="schema", min_length=1)
    connection: ConnectionSpec
    tables: dict[str, TableSpec]


def redact_url(url: str) -> str:
    """``url`` without the password of its ``user:password@`` part (the user and host stay).

    Examples
    --------
    >>> redact_url("postgresql://ana:s3cret@db.example:5432/dw?sslmode=require")
    'postgresql://ana@db.example:5432/dw?sslmode=require'
    >>> redact_url("sqlite:///tmp/x.db")
    'sqlite:///tmp/x.db'
    """
    return _USERINFO.sub(r"\1@", url)


@dataclass
class Credentials:
    """A resolved connection: the URL to connect with (password included) and the secrets to keep out of text."""

    url: str
    display: str
    reader: str
    batch_rows: int
    secrets: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        """``text`` with every secret (as given and URL-encoded) and any URL's ``:password@`` replaced."""
        text = _USERINFO.sub(r"\1:***@", str(text))
        for secret in self.secrets:
            for form in {secret, quote(secret, safe=""), quote(secret)}:
                if form:
                    text = text.replace(form, "***")
        return text

    def __repr__(self) -> str:  # never the password, even in a traceback's locals
        return f"Credentials({self.display!r}, reader={self.reader!r})"


def _expand(text: str, key: str, problems: list[str], environ=os.environ) -> str:
    """``${NAME}`` and ``${NAME:-default}`` from the environment; an unset name without default is a problem."""

    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append(f"{key}: environment variable {name} is not set; set it, or write "
                                f"${{{name}:-default}}")
                return ""
            return default
        return value

    return _VARIABLE.sub(one, text)


def resolve_credentials(spec: ConnectionSpec, *, environ=os.environ) -> Credentials:
    """The URL to connect with and the secrets to redact, from the ``connection`` table of a mapping.

    Raises
    ------
    SourceError
        A password written in the URL, an environment variable that is not set, a keyring entry that is missing.
    """
    problems: list[str] = []
    raw = spec.url
    parts = urlsplit(raw)
    if not parts.scheme or "://" not in raw:
        raise SourceError(f"connection.url: not a database URL (given {redact_url(raw)!r}); write e.g. "
                          "postgresql://user@host:5432/database or sqlite:///path/to/file.db")
    secrets = []
    password = None
    user, host = _userinfo(raw)
    if user is not None and ":" in user:
        given = user.split(":", 1)[1]
        if not _VARIABLE.fullmatch(given):
            raise SourceError("connection.url: the URL holds a password written out; the mapping file must not "
                              "hold one: write ${VARIABLE} in its place (expanded from the environment), or use "
                              "password_env, keyring, or the driver's own (PGPASSWORD, ~/.pgpass)")
        password = _expand(given, "connection.url", problems, environ)
        secrets.append(password)
        raw = raw.replace(f":{given}@", "@", 1)
    if password is None and spec.password_env:
        password = environ.get(spec.password_env)
        if password is None:
            problems.append(f"connection.password_env: environment variable {spec.password_env} is not set; set it "
                            "to the database password")
    if password is None and spec.keyring is not None:
        try:
            import keyring
        except ImportError:
            problems.append("connection.keyring: the keyring package is not installed (pip install keyring), "
                            "or use password_env")
        else:
            password = keyring.get_password(spec.keyring.service, spec.keyring.username)
            if password is None:
                problems.append(f"connection.keyring: no password in the keyring for service "
                                f"{spec.keyring.service!r}, user {spec.keyring.username!r}")
    expanded = _expand(raw, "connection.url", problems, environ)
    if problems:
        raise SourceError("the source's connection cannot be made (" + str(len(problems)) + " problem"
                          + ("s" if len(problems) > 1 else "") + "):\n" + "\n".join(f"  {p}" for p in problems))
    secrets += [password] if password else []
    display = redact_url(expanded)
    url = with_password(expanded, password) if password else expanded
    scheme = parts.scheme.split("+", 1)[0].lower()
    reader = spec.reader
    if reader == "auto":
        reader = "adbc" if scheme in ("postgresql", "postgres") and "+" not in parts.scheme else "sqlalchemy"
    if reader == "adbc" and scheme not in ("postgresql", "postgres"):
        raise SourceError(f"connection.reader: adbc reads PostgreSQL only; {parts.scheme}:// is read with "
                          "reader = \"sqlalchemy\" (or \"auto\")")
    return Credentials(url=url, display=display, reader=reader, batch_rows=spec.batch_rows,
                       secrets=sorted(set(secrets), key=len, reverse=True))


def _userinfo(url: str) -> tuple[str | None, str]:
    """``(user[:password], rest)`` of a URL's authority: string operations only, since ``urlunsplit`` would turn
    ``sqlite:////abs/path`` into ``sqlite://abs/path``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    end = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return None, rest
    user, host = netloc.rsplit("@", 1)
    return user, host + rest[end:]


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (URL-encoded) after its user name.

    Examples
    --------
    >>> with_password("postgresql://ana@db:5432/dw", "p@ss/w:rd")
    'postgresql://ana:p%40ss%2Fw%3Ard@db:5432/dw'
    """
    scheme = url.split("://", 1)[0]
    user, rest = _userinfo(url)
    user = (user or "").split(":", 1)[0]
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def _parse(text: str, source: str) -> dict:
    suffix = Path(source).suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - any syntax error of the file is reported the same way
        raise SourceError(f"{source}: not valid {'YAML' if suffix in ('.yaml', '.yml') else 'TOML'}: "
                          f"{redact_url(str(exc))}") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{source}: a source mapping is a table of keys (connection, schema, tables), not "
                          f"{type(raw).__name__}")
    return raw


def allowed_values(table: str, column: str) -> tuple[str, ...] | None:
    """The values a category column of the contract allows (discharge status: the UB-04 codes), or None."""
    from carequal.schema import discharge_codes

    if table == "stays" and column == "discharge_status":
        return discharge_codes()
    spec = next(s for s in CONTRACT[table] if s.name == column)
    return spec.allowed


def _normalised(table: str, column: str, value: str) -> str:
    """A mapped value as the contract reads it (case of categories, leading zeros of codes)."""
    if column in ("discharge_status", "admission_type") and value.isdigit():
        return value.zfill(2 if column == "discharge_status" else 1)
    if column in ("setting", "coverage"):
        return value.lower()
    if column == "sex":
        return value.upper()
    return value


def _check_contract(mapping: SourceMapping) -> list[str]:
    """Problems of a structurally valid mapping against the contract: tables, columns, values, signatures."""
    problems = []
    for name in mapping.tables:
        if name not in TABLES:
            problems.append(f"tables.{name}: not a contract table; the tables are {', '.join(TABLES)}")
    missing = [t for t in TABLES if t not in mapping.tables and t not in OPTIONAL_TABLES]
    if missing:
        problems.append(f"tables: no mapping for required table(s) {', '.join(missing)}; add [tables.{missing[0]}] "
                        "with table = \"...\" or query = \"...\"")
    for name, spec in mapping.tables.items():
        if name not in TABLES:
            continue
        key = f"tables.{name}"
        if (spec.table is None) == (spec.query is None):
            problems.append(f"{key}: give either table (a table or view) or query (a SQL query), "
                            + ("not both" if spec.table else "one of them"))
        if spec.query is not None and spec.db_schema is not None:
            problems.append(f"{key}.schema: goes with table, not with query (name the schema in the query)")
        contract = [s.name for s in CONTRACT[name]]
        for column, source in spec.columns.items():
            if column not in contract:
                problems.append(f"{key}.columns.{column}: not a column of the contract's {name} table (given "
                                f"{source!r}); its columns are {', '.join(contract)}")
            elif not source:
                problems.append(f"{key}.columns.{column}: empty column name; name the source column, or leave the "
                                "key out")
        for column in spec.order_by or []:
            if column not in contract:
                problems.append(f"{key}.order_by: {column!r} is not a column of the contract's {name} table; its "
                                f"columns are {', '.join(contract)}")
        for column, codes in spec.values.items():
            if column not in contract:
                problems.append(f"{key}.values.{column}: not a column of the contract's {name} table; its columns "
                                f"are {', '.join(contract)}")
                continue
            allowed = allowed_values(name, column)
            if allowed is None:
                continue
            for code, target in codes.items():
                if target and _normalised(name, column, target) not in allowed:
                    problems.append(f"{key}.values.{column}.{code}: {target!r} is not an allowed {column}; choose "
                                    f"from {', '.join(allowed)} (or \"\" for missing)")
        if spec.signature is not None and spec.signature != SNAPSHOT and ";" in spec.signature:
            problems.append(f"{key}.signature: one SQL aggregate expression, e.g. max(updated_at), or "
                            f"\"{SNAPSHOT}\" (given {spec.signature!r})")
    return problems


def read_mapping(path: str | Path | None = None, *, text: str | None = None,
                 source: str = "warehouse.toml") -> SourceMapping:
    """Read and validate a source mapping file (``.toml``, ``.yaml`` or ``.yml``).

    Every problem is reported at once, each line naming the key, what is wrong and the valid choices. The
    connection's credentials are not looked at here (:func:`resolve_credentials` does that when connecting).

    Examples
    --------
    >>> m = read_mapping(text='''
    ... [connection]
    ... url = "postgresql://carequal@localhost/hospital"
    ... [tables.facilities]
    ... table = "providers"
    ... [tables.patients]
    ... table = "members"
    ... [tables.stays]
    ... table = "stays_v"
    ... columns = { admit_date = "ADM_DT" }
    ... [tables.enrollment]
    ... query = "SELECT * FROM eligibility"
    ... ''')
    >>> m.tables["stays"].columns
    {'admit_date': 'ADM_DT'}
    >>> read_mapping(text='[connection]\\nurl = "sqlite:///x.db"\\n[tables.stays]\\ntable = "s"\\n'
    ...                   'columns = { admit_dt = "ADM_DT" }')
    Traceback (most recent call last):
    ...
    carequal.errors.SourceError: warehouse.toml is not a valid source mapping (2 problems):
      tables: no mapping for required table(s) facilities, patients, enrollment; ...
      tables.stays.columns.admit_dt: not a column of the contract's stays table (given 'ADM_DT'); its columns \
are stay_id, patient_id, ...
    """
    if text is None:
        if path is None:
            raise SourceError("read_mapping: give a path or text")
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"source mapping file {path} does not exist")
        source, text = str(path), path.read_text(encoding="utf-8")
    raw = _parse(text, source)
    try:
        mapping = SourceMapping.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            given = err.get("input")
            shown = "" if err["type"] in ("missing", "model_type") or isinstance(given, dict | list) \
                else f" (given {redact_url(str(given))!r})"
            lines.append(f"  {_where(err['loc'])}: {err['msg'].removeprefix('Value error, ')}{shown}")
        raise SourceError(f"{source} is not a valid source mapping ({len(lines)} problem"
                          f"{'s' if len(lines) > 1 else ''}):\n" + "\n".join(lines)) from None
    problems = _check_contract(mapping)
    if problems:
        raise SourceError(f"{source} is not a valid source mapping ({len(problems)} problem"
                          f"{'s' if len(problems) > 1 else ''}):\n" + "\n".join(f"  {p}" for p in problems))
    return mapping
