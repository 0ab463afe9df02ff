"""Read the contract tables where they live: a database, described by a source mapping file.

``carequal check|ingest|report --source FILE`` reads the contract tables from a database instead of a folder of
CSV or Parquet files. The mapping file (:mod:`carequal.warehouse.mapping`) says where each table is and how its
columns and codes map; :class:`~carequal.warehouse.source.Source` reads them as the CSV reader would (text, so the
contract's validation is the same) and signs their content for the fingerprint of prepared inputs;
:mod:`carequal.warehouse.writeback` writes the aggregate, already-suppressed extracts of a report run back to
database tables (``--to-db``) for BI tools.

The database drivers (ADBC for PostgreSQL, SQLAlchemy and psycopg) are the optional ``warehouse`` extra:
``pip install 'carequal[warehouse]'``. Importing this package needs none of them.
"""

from __future__ import annotations

from carequal.warehouse.mapping import SourceMapping, read_mapping, redact_url
from carequal.warehouse.source import Source, open_source

__all__ = ["Source", "SourceMapping", "open_source", "read_mapping", "redact_url"]
