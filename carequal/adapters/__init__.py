"""Adapters: turn other data layouts into the carequal data contract (see :mod:`carequal.schema`).

Each adapter returns the contract tables (``facilities``, ``patients``, ``stays``, ``enrollment``) ready for
:func:`carequal.schema.validate_tables`, plus a ``notes`` table that says, rule by rule, how many rows or
codes were inferred, blanked or dropped on the way, so nothing is lost silently.

- :mod:`carequal.adapters.desynpuf`: CMS 2008–2010 DE-SynPUF inpatient claims and beneficiary summary files.
"""

from carequal.adapters.desynpuf import DesynpufTables, from_desynpuf, read_desynpuf

__all__ = ["DesynpufTables", "from_desynpuf", "read_desynpuf"]
