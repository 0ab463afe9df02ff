"""Write a report run's aggregate, already-suppressed tables back to a database, for BI tools (``--to-db``).

What is written is what the run already shares, never a patient-level row:

* ``carequal report --by partner``: every partner's extract (the CSV files of ``<out>/<partner>_extract/``:
  ``about``, ``metrics``, the flows and ``leakage``, as :func:`carequal.packet.write_extract` wrote them, counts
  1–10 already hidden), one table per extract table (``carequal_packet_metrics``, …) with the partner's
  ``partner_id`` and ``partner_name`` in front;
* ``carequal report`` by market: the headline KPIs each report shows (``carequal_market_kpis``: market, measure,
  cases, rate, ratio; ``carequal_market_flags``: facilities flagged higher or lower than expected);
* ``carequal report --by sponsor``: the headline rates each employee report shows (``carequal_sponsor_kpis``:
  sponsor, the alliance as "All sponsors", measure, rate; a hidden rate is missing).

Every table is checked again before anything is written: no column of the contract's patient-level keys or
dates (:data:`IDENTIFIER_COLUMNS`) and :func:`carequal.disclosure.check_suppressed` at the run's threshold; a
failure writes nothing. The tables are replaced whole in one transaction (each mirrors the output folder, which
holds one report set), with ``run_id``, ``period_start`` and ``period_end`` columns saying what they are.

The target is ``URL[/SCHEMA]``: for a server database the last path segment after the database names the
schema (``postgresql://bi@host/dw/carequal``: database ``dw``, schema ``carequal``, created if absent). The
password is ``${VARIABLE}`` in the URL (expanded here, so quote it from the shell) or found by the driver
(``PGPASSWORD``, ``~/.pgpass``); it is never printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa

from carequal.errors import DisclosureError, SourceError
from carequal.warehouse.mapping import Credentials, redact_url

__all__ = ["IDENTIFIER_COLUMNS", "Target", "open_target", "shared_tables", "write_back"]

IDENTIFIER_COLUMNS = frozenset({"patient_id", "stay_id", "visit_id", "birth_date", "death_date", "admit_date",
                                "discharge_date", "visit_date", "row_number"})
"""Columns of patient-level rows: a table holding one is never written."""

PREFIX = "carequal_"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SERVER_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "redshift")


@dataclass
class Target:
    """Where the tables go: the connection and the schema (None: the database's default)."""

    credentials: Credentials
    schema: str | None

    def __str__(self) -> str:
        return self.credentials.display + (f" (schema {self.schema})" if self.schema else "")


def open_target(text: str, *, environ=os.environ, check: bool = True) -> Target:
    """Parse ``--to-db URL[/SCHEMA]`` and (``check``) connect once, so a bad target fails before the run.

    Raises
    ------
    SourceError
        Naming ``--to-db``: an unset ``${VARIABLE}``, a URL that is not one, a connection that fails (the
        driver's message, without the password).
    """
    def expand(match: re.Match) -> str:
        if match.group(1) not in environ:
            raise SourceError(f"--to-db: environment variable {match.group(1)} is not set")
        return environ[match.group(1)]

    url = _VARIABLE.sub(expand, text)
    parts = urlsplit(url)
    if not parts.scheme or "://" not in url:
        raise SourceError(f"--to-db: not a database URL (given {redact_url(text)!r}); write e.g. "
                          "postgresql://user@host:5432/database/schema")
    password = unquote(parts.password) if parts.password else None
    scheme = parts.scheme.split("+", 1)[0].lower()
    schema = None
    segments = [s for s in parts.path.split("/") if s]
    if scheme in _SERVER_SCHEMES and len(segments) == 2:
        schema = unquote(segments[1])
        url = urlunsplit(parts._replace(path=f"/{segments[0]}"))
    reader = "adbc" if scheme in ("postgresql", "postgres") and "+" not in parts.scheme else "sqlalchemy"
    credentials = Credentials(url=url, display=redact_url(url), reader=reader, batch_rows=100_000,
                              secrets=[password] if password else [])
    target = Target(credentials, schema)
    if check:
        with _connection(target):
            pass
    return target


class _connection:
    """An ADBC (PostgreSQL) or SQLAlchemy connection for writing, errors redacted and named ``--to-db``."""

    def __init__(self, target: Target):
        from carequal.warehouse.connect import AdbcConnection, DriverError, SqlAlchemyConnection

        self.target = target
        try:
            self.conn = AdbcConnection(target.credentials, autocommit=False) \
                if target.credentials.reader == "adbc" else SqlAlchemyConnection(target.credentials)
        except DriverError as exc:
            raise SourceError(f"--to-db: cannot connect to {target}: {exc}") from None

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()


def _check(name: str, table: pd.DataFrame, threshold: tuple[float, float]) -> None:
    from carequal.disclosure import check_suppressed

    leaked = sorted(IDENTIFIER_COLUMNS & set(table.columns))
    if leaked:
        raise DisclosureError(f"--to-db: table {name} has patient-level column(s) {', '.join(leaked)}; nothing "
                              "was written")
    counts = [c for c in ("n", "events", "cases") if c in table.columns]
    if counts:
        totals = {"group_cols": ["partner_id", "group"], "total_rows": table["row_type"] == "total"} \
            if "row_type" in table.columns else {}
        check_suppressed(table.assign(**{c: table[c].astype("Float64") for c in counts}), count_cols=counts,
                         threshold=threshold, denominator="n" if {"n", "events"} <= set(counts) else None, **totals)


def _dates(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ("period", "period_end"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], errors="coerce").dt.date
    return frame


def shared_tables(result) -> dict[str, pd.DataFrame]:
    """The tables :func:`write_back` writes for a :class:`carequal.batch.BatchResult` (see the module docstring),
    each checked (patient-level columns, the cell-size rule)."""
    from carequal.disclosure import cell_threshold

    manifest = result.manifest
    report_set = manifest.get("set", {})
    stamp = {"run_id": manifest.get("run_id"), "period_start": report_set.get("period_start"),
             "period_end": report_set.get("period_end")}
    ok = {unit: r for unit, r in result.markets.items() if r.get("status") == "ok"}
    tables: dict[str, list[pd.DataFrame]] = {}
    if manifest.get("by") == "sponsor":  # the headline rates each report shows (already suppressed: None)
        rows = [{"sponsor": unit, "measure": key, "rate": value} for unit, record in ok.items()
                for key, value in (record.get("kpis") or {}).items() if key not in ("period", "member_years")]
        if rows:
            tables[f"{PREFIX}sponsor_kpis"] = [pd.DataFrame(rows)]
    elif manifest.get("by") == "partner":
        for unit, record in ok.items():
            folder = Path(result.out) / str(record.get("extract_dir"))
            for path in sorted(folder.glob("*.csv")):
                frame = _dates(pd.read_csv(path))
                frame.insert(0, "partner_name", record.get("name", unit))
                frame.insert(0, "partner_id", unit)
                tables.setdefault(f"{PREFIX}packet_{path.stem}", []).append(frame)
    else:
        kpis, flags = [], []
        for market, record in ok.items():
            for measure, value in (record.get("kpis") or {}).items():
                if measure == "flagged":
                    flags.append({"market": market, "higher": value.get("higher"), "lower": value.get("lower")})
                else:
                    kpis.append({"market": market, "measure": measure, "label": value.get("label"),
                                 "cases": value.get("cases"), "rate": value.get("rate"), "ratio": value.get("ratio")})
        if kpis:
            frame = pd.DataFrame(kpis)
            frame["cases"] = frame["cases"].astype("Int64")
            tables[f"{PREFIX}market_kpis"] = [frame]
        if flags:
            tables[f"{PREFIX}market_flags"] = [pd.DataFrame(flags)]
    out = {}
    threshold = cell_threshold(int(report_set.get("min_cell", 11)))
    for name, frames in tables.items():
        table = pd.concat(frames, ignore_index=True)
        _check(name, table, threshold)
        out[name] = table.assign(**stamp)
    return out


def write_back(result, target: Target) -> dict[str, int]:
    """Write :func:`shared_tables` of a run to ``target``, each table replaced, all in one transaction.

    Returns
    -------
    dict
        Rows written per table.

    Raises
    ------
    DisclosureError
        A table fails the checks (nothing is written).
    SourceError
        The database refuses (the table, and the driver's message without the password).
    """
    tables = shared_tables(result)
    if not tables:
        return {}
    with _connection(target) as conn:
        name = ""
        try:
            if conn.kind == "adbc":
                raw = conn.conn
                with raw.cursor() as cur:
                    if target.schema:
                        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {conn.quote(target.schema)}")
                    for name, frame in tables.items():
                        cur.adbc_ingest(name, pa.Table.from_pandas(frame, preserve_index=False), mode="replace",
                                        db_schema_name=target.schema)
                raw.commit()
            else:
                with conn.engine.begin() as tx:
                    for name, frame in tables.items():
                        frame.to_sql(name, tx, schema=target.schema, if_exists="replace", index=False)
        except Exception as exc:  # noqa: BLE001 - every driver failure is reported the same way
            raise SourceError(f"--to-db: writing {name or 'the tables'} to {target} failed: "
                              f"{conn.error(exc)}") from None
    return {name: len(frame) for name, frame in tables.items()}
