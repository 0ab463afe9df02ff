"""DuckDB counting exactly the rules of ``carequal.schema.validate_tables``: the same-rules peer of the foundation
benchmark (issue 18), and the SQL a test compares with carequal on data with a fault of every rule.

:func:`same_rules_sql` builds one SQL query over the five contract tables, straight from their Parquet files,
that returns the number of rows failing each (table, column, rule) as ``validate_tables`` reports them in
quarantine mode (its ``failures``), and :func:`count_rules` runs it. Importing this module has no side effects
(it imports only the standard library and, inside functions, carequal and duckdb), so a test can load it.

What the query does, in carequal's order (the rules are read from ``carequal.schema``: ``CONTRACT``, ``KEYS``,
the code patterns, the date window, ``discharge_codes()``):

1. *Parsing*, per column kind and per Parquet type: text is trimmed of ASCII blanks and empty text is missing;
   ISO dates (``%Y-%m-%d``, checked by a round trip as carequal does) and booleans and numbers are parsed from
   text (``type``), numbers that are infinite or whole numbers of 2^53 or more fail ``out_of_range``, dates
   outside ``date_window()`` fail ``date_implausible``; codes are normalised (upper case, no dots or blanks;
   lists split on ``;``, ``|`` or ``,``), discharge status and admission type lose a trailing ``.0`` and are
   padded with zeros, sex and POA flags upper case, setting and coverage lower case.
2. *Per-table rules*: ``not_nullable`` (not for a cell already counted as ``type``), ``unique`` and
   ``exact_duplicate`` (copies of a key compared as given in every column of the file; the first copy of an
   exact repeat is kept), ``allowed_values``, ``code_format``, ``range`` and the row rules.
3. *Cross-table rules*, with carequal's sequencing: a patient's death before a stay counts only stays that pass
   their own rules and name an accepted facility, and fails the first patient row with that id; foreign keys are
   ``unknown_*`` when the key is neither an accepted parent's id nor a quarantined parent's id as given;
   ``admit_before_birth`` looks at stays with no other failure, ``overlapping_stay`` at stays with no other
   failure including that one, ``sponsor_overlap`` at enrollment periods with no other failure.

What it does not do (carequal-only work): the quarantine cascade (``parent_quarantined`` is not counted: a row
whose parent is quarantined is neither unknown nor counted), row lists, examples, reasons, the split into
accepted and quarantined frames, and the refusals of whole files (missing columns, empty tables, unreadable
files), which raise before any row is counted.

Where the counts can differ from carequal's (none of these is in the benchmark data or the test's faults):

* Text that only one of the two parsers reads: blanks other than ASCII ones (carequal trims Unicode blanks),
  numbers such as ``1_000`` (DuckDB reads it, pandas does not) or dates with years before 1000.
* A code list whose text ends in a newline inside the list (Python's ``$`` matches before a final newline, a
  full match in DuckDB does not).
"""

from __future__ import annotations

import datetime as dt

TABLE_ORDER = ("facilities", "patients", "stays", "enrollment", "ed_visits")
_BLANKS = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "FLOAT", "DOUBLE", "REAL")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _is_numeric(dtype: str) -> bool:
    return dtype.upper().startswith(_NUMERIC) or dtype.upper().startswith("DECIMAL") or dtype.upper() == "BOOLEAN"


def _text(col: str, dtype: str) -> str:
    """The column as text, trimmed of blanks, empty = missing (carequal's ``_clean_text`` of ``arrow_text``)."""
    value = _q(col) if dtype.upper() == "VARCHAR" else f"CAST({_q(col)} AS VARCHAR)"
    if dtype.upper() == "BOOLEAN":  # pandas writes booleans as True/False
        value = f"CASE WHEN {_q(col)} THEN 'True' WHEN NOT {_q(col)} THEN 'False' END"
    # trimming only text that starts or ends with a character up to the blank (DuckDB's trim with a character set
    # is several times slower than the test; a string without such a character at either end trims to itself)
    return (f"nullif(CASE WHEN ascii({value}) <= 32 OR ascii(right({value}, 1)) <= 32 "
            f"THEN trim({value}, {_BLANKS}) ELSE {value} END, '')")


def _strip_code(text: str) -> str:
    return f"replace(replace(replace(upper({text}), '.', ''), ' ', ''), chr(9), '')"


def _code_list(text: str) -> str:
    s = _strip_code(text)
    s = f"replace(replace({s}, '|', ';'), ',', ';')"
    s = f"CASE WHEN contains({s}, ';;') THEN regexp_replace({s}, ';{{2,}}', ';', 'g') ELSE {s} END"
    return f"nullif(trim({s}, ';'), '')"


def _parse(table: str, spec, dtype: str, window: tuple[str, str], open_ended: bool) -> tuple[str, dict[str, str]]:
    """(expression of the parsed value, {rule: expression of the failure flag}) for one column."""
    col, kind = spec.name, spec.kind
    flags: dict[str, str] = {}
    upper = dtype.upper()
    if kind == "date":
        if upper == "DATE":
            value = _q(col)
        elif upper.startswith("TIMESTAMP"):
            value = f"CAST({_q(col)} AS DATE)"
        else:
            t = _text(col, dtype)
            parsed = f"CAST(try_strptime({t}, '%Y-%m-%d') AS DATE)"
            value = f"CASE WHEN strftime({parsed}, '%Y-%m-%d') = {t} THEN {parsed} END"
            flags["type"] = f"({t} IS NOT NULL AND ({value}) IS NULL)"
        lo, hi = window
        cond = f"v_{col} < DATE {_lit(lo)}" + ("" if open_ended else f" OR v_{col} > DATE {_lit(hi)}")
        flags["date_implausible"] = f"coalesce({cond}, false)"
        return value, flags
    if kind == "bool":
        if upper == "BOOLEAN":
            return _q(col), flags
        low = f"lower({_text(col, dtype)})"
        value = (f"CASE WHEN {low} IN ('true', 't', 'yes', 'y', '1') THEN true "
                 f"WHEN {low} IN ('false', 'f', 'no', 'n', '0') THEN false END")
        flags["type"] = f"({low} IS NOT NULL AND ({value}) IS NULL)"
        return value, flags
    if kind in ("int", "float"):
        if _is_numeric(dtype):
            number, present = f"CAST({_q(col)} AS DOUBLE)", "false"
        else:
            t = _text(col, dtype)
            number, present = f"TRY_CAST({t} AS DOUBLE)", f"({t} IS NOT NULL)"
        huge = f"coalesce(isinf({number})" + (f" OR abs({number}) >= 9007199254740992" if kind == "int" else "") \
            + ", false)"
        value = f"CASE WHEN {huge} OR isnan({number}) THEN NULL ELSE {number} END"
        bad = f"({present} AND ({number} IS NULL OR isnan({number})) AND NOT {huge})"
        if kind == "int":
            bad = f"({bad} OR coalesce(({value}) <> floor({value}), false))"
            value = f"CASE WHEN {bad} THEN NULL ELSE {value} END"
        flags["type"] = bad
        flags["out_of_range"] = huge
        return value, flags
    t = _text(col, dtype)
    if kind == "icd10cm":
        return f"nullif({_strip_code(t)}, '')", flags
    if kind in ("icd10cm_list", "icd10pcs_list", "poa_list"):
        return _code_list(t), flags
    if col in ("discharge_status", "admission_type"):
        width = 2 if col == "discharge_status" else 1
        s = f"CASE WHEN suffix({t}, '.0') THEN left({t}, length({t}) - 2) ELSE {t} END"  # regex \.0$
        return (f"nullif(CASE WHEN length({s}) < {width} AND regexp_full_match({s}, '\\d+') "
                f"THEN lpad({s}, {width}, '0') ELSE {s} END, '')"), flags
    if col in ("sex", "principal_dx_poa"):
        return f"upper({t})", flags
    if col in ("setting", "coverage"):
        return f"lower({t})", flags
    return t, flags


def same_rules_sql(sources: dict[str, str], columns: dict[str, dict[str, str]], *,
                   today: dt.date | None = None) -> tuple[str, list[tuple[str, str, str]]]:
    """The query, and the (table, column, rule) named by each of its output columns, in order.

    Parameters
    ----------
    sources : table -> DuckDB relation text, e.g. ``read_parquet('x/stays.parquet', file_row_number = true)``;
        each must have a ``file_row_number`` column (the row's position in the table as carequal reads it).
    columns : table -> {column: DuckDB type} of the file (``file_row_number`` excluded).
    today : the run date of the date window and of ``birth_in_future`` (default: today, as carequal).
    """
    import pandas as pd

    from carequal.schema import (
        CONTRACT,
        ICD10CM_PATTERN,
        ICD10PCS_PATTERN,
        KEYS,
        OPEN_ENDED_DATES,
        date_window,
        discharge_codes,
    )

    today_ts = pd.Timestamp.today().normalize() if today is None else pd.Timestamp(today)
    window = tuple(d.date().isoformat() for d in date_window(today_ts))
    patterns = {"icd10cm": ICD10CM_PATTERN, "icd10cm_list": f"(?:{ICD10CM_PATTERN})(?:;(?:{ICD10CM_PATTERN}))*",
                "icd10pcs_list": f"(?:{ICD10PCS_PATTERN})(?:;(?:{ICD10PCS_PATTERN}))*", "poa": "[YNUW1]",
                "poa_list": "[YNUW1](?:;[YNUW1])*"}
    ctes: list[str] = []
    outputs: list[tuple[str, str, str, str]] = []  # (table, column, rule, flag expression over the final CTE)
    present = {t: [s for s in CONTRACT[t] if s.name in columns[t]] for t in TABLE_ORDER if t in sources}

    for table, specs in present.items():
        cols = columns[table]
        raw_cols = list(cols)
        values, flag_exprs = [], []
        for spec in specs:
            value, flags = _parse(table, spec, cols[spec.name], window, (table, spec.name) in OPEN_ENDED_DATES)
            values.append(f"{value} AS v_{spec.name}")
            for rule, expr in flags.items():
                if rule != "date_implausible":
                    flag_exprs.append((spec.name, rule, expr))
        # stage 1: parsed values (v_*) and parse failures (f_<column>__<rule>), the raw columns kept as given
        # a parent's id as given: a child naming a quarantined parent is matched on it (carequal's _foreign_key)
        parent_key = {"facilities": "facility_id", "patients": "patient_id"}.get(table)
        if parent_key:
            values.append(f"CAST({_q(parent_key)} AS VARCHAR) AS r_{parent_key}")
        ctes.append(f"{table}_p AS (SELECT file_row_number AS rn, {', '.join(values)}, "
                    + ", ".join([f"{e} AS f_{c}__{r}" for c, r, e in flag_exprs] or ["NULL AS f__none"])
                    + f" FROM {sources[table]})")
        flags_now: list[tuple[str, str, str]] = [(c, r, f"f_{c}__{r}") for c, r, _ in flag_exprs]
        for spec in specs:
            if spec.kind == "date":
                _, f = _parse(table, spec, cols[spec.name], window, (table, spec.name) in OPEN_ENDED_DATES)
                flags_now.append((spec.name, "date_implausible", f["date_implausible"]))
        # per-table rules of layer 2
        for spec in specs:
            v = f"v_{spec.name}"
            if not spec.nullable:
                unparsed = [e for c, r, e in flags_now if c == spec.name and r in ("type", "out_of_range")]
                flags_now.append((spec.name, "not_nullable",
                                  f"({v} IS NULL" + "".join(f" AND NOT {e}" for e in unparsed) + ")"))
            allowed = discharge_codes() if spec.name == "discharge_status" else spec.allowed
            if allowed is not None:
                flags_now.append((spec.name, "allowed_values",
                                  f"({v} IS NOT NULL AND {v} NOT IN ({', '.join(_lit(a) for a in allowed)}))"))
            if spec.kind in patterns:
                flags_now.append((spec.name, "code_format",
                                  f"({v} IS NOT NULL AND NOT regexp_full_match({v}, {_lit(patterns[spec.kind])}))"))
            if spec.kind in ("int", "float") and (spec.minimum is not None or spec.maximum is not None):
                cond = " OR ".join(([f"{v} < {spec.minimum}"] if spec.minimum is not None else [])
                                   + ([f"{v} > {spec.maximum}"] if spec.maximum is not None else []))
                flags_now.append((spec.name, "range", f"coalesce({cond}, false)"))
        rules = {
            "facilities": [("partner_since", "partner_since_without_partner",
                            "coalesce(v_partner_since IS NOT NULL AND v_is_partner = false, false)")],
            "patients": [("death_date", "death_before_birth", "coalesce(v_death_date < v_birth_date, false)"),
                         ("birth_date", "birth_in_future",
                          f"coalesce(v_birth_date > DATE {_lit(today_ts.date().isoformat())}, false)")],
            "stays": [("discharge_date", "discharge_before_admit", "coalesce(v_discharge_date < v_admit_date, false)")]
            + ([("secondary_poa", "poa_count_mismatch",
                 "(v_secondary_poa IS NOT NULL AND coalesce(length(v_secondary_poa) - length(replace(v_secondary_poa, "
                 "';', '')) <> length(v_secondary_dx) - length(replace(v_secondary_dx, ';', '')), true))")]
               if "secondary_poa" in cols else []),
            "enrollment": [("end_date", "end_before_start", "coalesce(v_end_date < v_start_date, false)")],
            "ed_visits": [],
        }[table]
        flags_now += rules
        # unique keys: copies differ somewhere (unique, every copy) or are the same row as given (exact_duplicate,
        # every copy but the first)
        key_cols = [s.name for s in specs if (s.kind == "id" and KEYS[table] == (s.name,))
                    or (table == "ed_visits" and s.name == "visit_id")]
        joins = []
        for k in key_cols:
            # the few duplicated keys first, then their copies compared as given (every column of the file)
            row = "row(" + ", ".join(f"s.{_q(c)}" for c in raw_cols) + ")"
            key = _parse(table, next(s for s in specs if s.name == k), cols[k], window, False)[0]
            ctes.append(f"{table}_dk_{k} AS (SELECT v_{k} AS k, min(rn) AS first FROM {table}_p "
                        f"WHERE v_{k} IS NOT NULL GROUP BY v_{k} HAVING count(*) > 1)")
            ctes.append(f"{table}_dup_{k} AS (SELECT d.k, any_value(d.first) AS first, "
                        f"count(DISTINCT {row}) AS versions FROM (SELECT *, {key} AS __k FROM {sources[table]}) AS s "
                        f"JOIN {table}_dk_{k} AS d ON s.__k = d.k GROUP BY d.k)")
            joins.append(f"LEFT JOIN {table}_dup_{k} AS d_{k} ON p.v_{k} = d_{k}.k")
            flags_now.append((k, "unique", f"coalesce(d_{k}.versions > 1, false)"))
            flags_now.append((k, "exact_duplicate", f"coalesce(d_{k}.versions = 1 AND p.rn <> d_{k}.first, false)"))
        names = [f"g_{c}__{r}" for c, r, _ in flags_now]
        own_ok = " AND ".join(f"NOT {n}" for n in names) or "true"
        flag_cols = ", ".join(f"{e} AS {n}" for (_, _, e), n in zip(flags_now, names, strict=True))
        ctes.append(f"{table}_r AS (SELECT p.*, {flag_cols}"
                    + f", ({own_ok}) AS own_ok FROM {table}_p AS p {' '.join(joins)})")
        outputs += [(table, c, r, n) for (c, r, _), n in zip(flags_now, names, strict=True)]

    # layer 3: cross-table rules, in carequal's order
    ctes.append("fac_ok AS (SELECT v_facility_id AS id, any_value(v_setting) AS setting FROM facilities_r "
                "WHERE own_ok GROUP BY v_facility_id)")
    # the keys a child may name: accepted parents' ids (parsed), quarantined parents' ids as given
    ctes.append("fac_keys1 AS (SELECT id, bool_or(accepted) AS accepted, true AS hit FROM (SELECT v_facility_id AS id, "
                "true AS accepted FROM facilities_r WHERE own_ok UNION ALL SELECT r_facility_id, false "
                "FROM facilities_r WHERE NOT own_ok) GROUP BY id)")
    # death before a stay: stays passing their own rules at an accepted facility, against the first patient row
    ctes.append("pat_first AS (SELECT p.v_patient_id AS id, p.v_death_date AS death, p.rn FROM patients_r AS p "
                "JOIN (SELECT min(rn) AS rn FROM patients_r GROUP BY v_patient_id) AS m ON p.rn = m.rn)")
    ctes.append("died AS (SELECT pf.rn, bool_or(s.v_admit_date > pf.death) AS admit_after, "
                "bool_or(s.v_discharge_date > pf.death AND NOT coalesce(s.v_admit_date > pf.death, false)) "
                "AS discharge_after FROM stays_r AS s JOIN fac_ok ON s.v_facility_id = fac_ok.id "
                "JOIN pat_first AS pf ON s.v_patient_id IS NOT DISTINCT FROM pf.id WHERE s.own_ok GROUP BY pf.rn)")
    ctes.append("patients_x AS (SELECT p.*, coalesce(died.admit_after, false) AS g_death_date__admit_after_death, "
                "coalesce(died.discharge_after, false) AS g_death_date__discharge_after_death FROM patients_r AS p "
                "LEFT JOIN died ON p.rn = died.rn)")
    outputs += [("patients", "death_date", "admit_after_death", "g_death_date__admit_after_death"),
                ("patients", "death_date", "discharge_after_death", "g_death_date__discharge_after_death")]
    ok = ("own_ok AND NOT g_death_date__admit_after_death AND NOT g_death_date__discharge_after_death")
    # one row per key a child may name: accepted patients' ids (parsed, with the birth date), quarantined ones'
    # ids as given
    ctes.append("pat_keys1 AS (SELECT id, bool_or(accepted) AS accepted, any_value(birth) FILTER (WHERE accepted) "
                "AS birth, true AS hit FROM (SELECT v_patient_id AS id, true AS accepted, v_birth_date AS birth "
                f"FROM patients_x WHERE {ok} UNION ALL SELECT r_patient_id, false, NULL FROM patients_x "
                f"WHERE NOT ({ok})) GROUP BY id)")

    def fk(column: str, keys: str, rule: str) -> tuple[str, str, str]:
        alias = f"k_{column}"
        join = f"LEFT JOIN {keys} AS {alias} ON c.v_{column} IS NOT DISTINCT FROM {alias}.id"
        return join, f"({alias}.hit IS NULL) AS g_{column}__{rule}", f"coalesce({alias}.accepted, false) AS ok_{column}"

    for table in ("stays", "enrollment", "ed_visits"):
        if table not in present:
            continue
        joins, selects = [], []
        parents = [("patient_id", "pat_keys1", "unknown_patient")]
        if table in ("stays", "ed_visits"):
            parents.append(("facility_id", "fac_keys1", "unknown_facility"))
        for column, keys, rule in parents:
            j, unknown, ok = fk(column, keys, rule)
            joins.append(j)
            selects += [unknown, ok]
            outputs.append((table, column, rule, f"g_{column}__{rule}"))
        known = " AND ".join(f"ok_{column}" for column, _, _ in parents)
        ctes.append(f"{table}_x AS (SELECT c.*, {', '.join(selects)}, (c.own_ok AND {known}) AS clean "
                    f"FROM {table}_r AS c {' '.join(joins)})")
    if "stays" in present:
        ctes.append("stays_b AS (SELECT s.*, coalesce(s.clean AND s.v_admit_date < po.birth, false) "
                    "AS g_admit_date__admit_before_birth FROM stays_x AS s LEFT JOIN pat_keys1 AS po "
                    "ON s.clean AND s.v_patient_id = po.id)")
        ctes.append("stays_o AS (SELECT s.rn, coalesce(s.v_admit_date < max(s.v_discharge_date) OVER (PARTITION BY "
                    "s.v_patient_id, f.setting ORDER BY s.v_admit_date, s.v_discharge_date, s.v_stay_id "
                    "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS overlap FROM stays_b AS s "
                    "JOIN fac_ok AS f ON s.v_facility_id = f.id "
                    "WHERE s.clean AND NOT g_admit_date__admit_before_birth)")
        outputs += [("stays", "admit_date", "admit_before_birth", "g_admit_date__admit_before_birth")]
    if "enrollment" in present and "sponsor" in columns["enrollment"]:
        # each period against the earlier one of the patient reaching furthest (ties: the later in the order)
        ctes.append("enr_n AS (SELECT rn, v_patient_id, v_start_date, v_end_date, v_sponsor, row_number() OVER "
                    "(PARTITION BY v_patient_id ORDER BY v_start_date, v_end_date, rn) AS seq FROM enrollment_x "
                    "WHERE clean AND v_sponsor IS NOT NULL)")
        ctes.append("enr_o AS (SELECT rn, v_start_date, v_sponsor, arg_max(v_sponsor, "
                    "(date_diff('day', DATE '1900-01-01', v_end_date)::BIGINT << 32) + seq) OVER w AS prev_sponsor, "
                    "max(v_end_date) OVER w AS prev_end FROM enr_n WINDOW w AS (PARTITION BY v_patient_id "
                    "ORDER BY v_start_date, v_end_date, rn ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))")
    selects = []
    order = {t: i for i, t in enumerate(TABLE_ORDER)}
    outputs.sort(key=lambda o: order[o[0]])  # stable: carequal's order within a table does not matter
    for table in present:
        final = {"patients": "patients_x", "stays": "stays_b", "enrollment": "enrollment_x",
                 "ed_visits": "ed_visits_x"}.get(table, f"{table}_r")
        mine = [o for o in outputs if o[0] == table]
        parts = [f"count(*) FILTER (WHERE {n}) AS {_q(f'{t}.{c}: {r}')}" for t, c, r, n in mine]
        selects.append(f"(SELECT {', '.join(parts)} FROM {final})")
    extra = []
    if "stays" in present:
        extra.append(("stays", "admit_date", "overlapping_stay",
                      "(SELECT count(*) FILTER (WHERE overlap) AS \"stays.admit_date: overlapping_stay\" "
                      "FROM stays_o)"))
    if "enrollment" in present and "sponsor" in columns["enrollment"]:
        extra.append(("enrollment", "sponsor", "sponsor_overlap",
                      "(SELECT count(*) FILTER (WHERE v_start_date <= prev_end AND v_sponsor <> prev_sponsor) "
                      "AS \"enrollment.sponsor: sponsor_overlap\" FROM enr_o)"))
    names = [(t, c, r) for t, c, r, _ in outputs] + [(t, c, r) for t, c, r, _ in extra]
    froms = [f"{s} AS q{i}" for i, s in enumerate(selects + [e[3] for e in extra])]
    sql = "WITH " + ",\n".join(ctes) + "\nSELECT * FROM " + ", ".join(froms)
    return sql, names


def parquet_sources(data_dir) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """DuckDB relations over the contract tables' Parquet files in ``data_dir`` (one file per table, or a folder of
    hive-partitioned files), with their row numbers, and each table's column types."""
    from pathlib import Path

    import duckdb

    from carequal.loaders import table_path

    sources, columns = {}, {}
    for table in TABLE_ORDER:
        path = table_path(Path(data_dir), table)
        if path is None:
            continue
        if path.is_dir():
            # rows in carequal's order: files in path order, rows in file order
            src = (f"(SELECT * EXCLUDE (filename, file_row_number), row_number() OVER (ORDER BY filename, "
                   f"file_row_number) - 1 AS file_row_number FROM read_parquet({_lit(str(path) + '/**/*.parquet')}, "
                   f"hive_partitioning = true, filename = true, file_row_number = true))")
        else:
            src = f"read_parquet({_lit(str(path))}, file_row_number = true)"
        sources[table] = src
        described = duckdb.sql(f"DESCRIBE SELECT * FROM {src}").fetchall()
        columns[table] = {r[0]: r[1] for r in described if r[0] != "file_row_number"}
    return sources, columns


def count_rules(data_dir, *, con=None, today: dt.date | None = None) -> tuple[dict[tuple[str, str, str], int], float]:
    """Rows failing each (table, column, rule) of the contract in ``data_dir``'s Parquet files, by DuckDB, and
    the seconds the query took (building it excluded)."""
    import time

    import duckdb

    sources, columns = parquet_sources(data_dir)
    sql, names = same_rules_sql(sources, columns, today=today)
    con = con or duckdb.connect()
    t0 = time.perf_counter()
    row = con.execute(sql).fetchone()
    seconds = time.perf_counter() - t0
    return {n: int(v) for n, v in zip(names, row, strict=True)}, seconds


def carequal_counts(validated) -> dict[tuple[str, str, str], int]:
    """``validate_tables``' failures as {(table, column, rule): rows}, without ``parent_quarantined`` (the cascade,
    which the DuckDB peer does not count)."""
    f = validated.failures
    return {(t, c, r): int(n) for t, c, r, n in zip(f["table"], f["column"], f["rule"], f["n_rows"], strict=True)
            if r != "parent_quarantined"}


# ------------------------------------------------------------------------------ a fault of every rule, and the check

ROW_RULES_EXCLUDED = frozenset({"missing_column", "empty_file", "not_utf8", "delimiter", "duplicate_column",
                                "csv_format", "parquet_format", "table_empty", "parent_quarantined"})
"""Rules that are not counts of failing rows (whole files refused) or are the cascade: not compared."""


def inject_faults(raw: dict, today: dt.date | None = None) -> dict:
    """The contract tables as text (e.g. ``read_tables('data/sample')``) with at least one row breaking every row
    rule of the contract, plus values that only normalisation makes valid (``f``, ``01``, ``E11.9|I10``...).

    The rows are chosen by position, so the tables need some hundreds of stays (the sample has about 30,000).
    """
    import pandas as pd

    today = pd.Timestamp(today or pd.Timestamp.today().normalize())
    t = {k: v.copy().astype(object).where(v.notna(), None).reset_index(drop=True) for k, v in raw.items()}

    def put(table: str, row: int, **values) -> None:
        for col, value in values.items():
            t[table].loc[row, col] = value

    def append(table: str, row: int, **changes) -> None:
        copy = t[table].iloc[[row]].copy()
        for col, value in changes.items():
            copy[col] = value
        t[table] = pd.concat([t[table], copy], ignore_index=True)

    # facilities
    put("facilities", 1, setting="clinic")                       # allowed_values
    put("facilities", 2, is_partner="maybe")                     # type
    put("facilities", 3, partner_since="2024-02-31")             # type (no such day)
    put("facilities", 4, partner_since="1850-06-01")             # date_implausible
    put("facilities", 5, is_partner="false", partner_since="2023-01-01")  # partner_since_without_partner
    put("facilities", 6, beds="-3")                              # range
    put("facilities", 7, beds="2.5")                             # type (not whole)
    put("facilities", 8, beds="1e16")                            # out_of_range
    put("facilities", 9, nurse_hours_ppd="25")                   # range
    put("facilities", 10, nurse_hours_ppd="inf")                 # out_of_range
    put("facilities", 11, nurse_hours_ppd="many")                # type
    put("facilities", 12, market=" ")                            # not_nullable (blank)
    put("facilities", 13, facility_id=None)                      # not_nullable
    put("facilities", 16, facility_id=f" {t['facilities'].loc[16, 'facility_id']} ")  # trimmed: still valid
    put("facilities", 17, setting=str(t["facilities"].loc[17, "setting"]).upper(), is_partner="YES")
    append("facilities", 14)                                     # exact_duplicate
    append("facilities", 15, name="Another name")                # unique (both copies)

    # stays for the cross-table rules: at facilities and of patients left untouched above and below, one patient each
    st = t["stays"]
    fac_ok = set(t["facilities"]["facility_id"].iloc[20:])
    pat_ok = set(t["patients"]["patient_id"].iloc[30:])
    days = (pd.to_datetime(st["discharge_date"], errors="coerce")
            - pd.to_datetime(st["admit_date"], errors="coerce")).dt.days
    candidates = st.index[(st.index >= 1000) & st["facility_id"].isin(fac_ok) & st["patient_id"].isin(pat_ok)
                          & (days > 3)]
    chosen: list[int] = []
    for i in candidates:
        if st.loc[i, "patient_id"] not in {st.loc[j, "patient_id"] for j in chosen}:
            chosen.append(int(i))
        if len(chosen) == 4:
            break
    one, two, young, long = chosen
    p_index = {pid: i for i, pid in enumerate(t["patients"]["patient_id"])}
    put("patients", p_index[st.loc[one, "patient_id"]],          # admit_after_death
        death_date=(pd.Timestamp(st.loc[one, "admit_date"]) - pd.Timedelta(days=5)).date().isoformat())
    put("patients", p_index[st.loc[two, "patient_id"]], death_date=st.loc[two, "admit_date"])  # discharge_after_death
    append("patients", p_index[st.loc[one, "patient_id"]])       # exact copy: only the first fails the death rule
    put("patients", 1, birth_date="1950-13-01")                  # type
    put("patients", 2, birth_date="1880-01-01")                  # date_implausible
    put("patients", 3, birth_date=(today + pd.Timedelta(days=30)).date().isoformat())  # birth_in_future
    put("patients", 4, birth_date="2999-01-01")                  # both
    put("patients", 5, birth_date=None)                          # not_nullable
    put("patients", 6, sex="X")                                  # allowed_values
    put("patients", 7, sex="f", dual_eligible="YES")             # normalised: valid
    put("patients", 8, dual_eligible="perhaps")                  # type
    put("patients", 9, death_date="yesterday")                   # type
    put("patients", 10, birth_date="1950-01-01", death_date="1940-01-01")  # death_before_birth
    put("patients", 11, death_date="1800-01-01")                 # date_implausible and death_before_birth
    put("patients", 12, market=None)                             # not_nullable
    put("patients", 13, patient_id=None)                         # not_nullable
    append("patients", 20)                                       # exact_duplicate
    append("patients", 21, sex="U" if t["patients"].loc[21, "sex"] != "U" else "F")  # unique

    # stays
    births = dict(zip(t["patients"]["patient_id"], t["patients"]["birth_date"], strict=True))
    put("stays", 1, stay_id=None)                                # not_nullable
    put("stays", 2, patient_id="P999999999")                     # unknown_patient
    put("stays", 3, facility_id="H999999")                       # unknown_facility
    put("stays", 4, admit_date="2023-02-30")                     # type
    put("stays", 5, admit_date="1899-12-31")                     # date_implausible
    put("stays", 6, discharge_date="2023/01/01")                 # type
    put("stays", 7, admit_date="2023-05-10", discharge_date="2023-05-01")  # discharge_before_admit
    put("stays", 8, discharge_status="77")                       # allowed_values
    put("stays", 9, discharge_status="1", admission_type="1.0")  # normalised: valid
    put("stays", 10, admission_type="7")                         # allowed_values
    put("stays", 11, principal_dx="123")                         # code_format
    put("stays", 12, principal_dx=".")                           # not_nullable once normalised
    put("stays", 13, principal_dx_poa="Q")                       # code_format
    put("stays", 14, secondary_dx="E11.9;XYZ", secondary_poa=None)  # code_format
    put("stays", 15, secondary_dx="e11.9|I10", secondary_poa="Y;n")  # normalised: valid
    put("stays", 16, secondary_dx="E11.9;I10", secondary_poa="Y")  # poa_count_mismatch
    put("stays", 17, secondary_dx=None, secondary_poa="Y")       # poa_count_mismatch
    put("stays", 18, secondary_dx="E11.9;I10", secondary_poa="Y;Q")  # code_format
    put("stays", 19, procedures="0ABC")                          # code_format
    put("stays", 20, payment="-5")                               # range
    put("stays", 21, payment="abc")                              # type
    put("stays", 22, payment="inf")                              # out_of_range
    put("stays", 23, patient_id=None)                            # not_nullable
    put("stays", 24, patient_id=f" {st.loc[24, 'patient_id']} ")  # trimmed: still valid
    birth = pd.Timestamp(births[st.loc[young, "patient_id"]])
    put("stays", young, admit_date=(birth - pd.Timedelta(days=1)).date().isoformat())  # admit_before_birth
    append("stays", long, stay_id="S-overlap",                   # overlapping_stay (the later one)
           admit_date=(pd.Timestamp(st.loc[long, "admit_date"]) + pd.Timedelta(days=1)).date().isoformat())
    append("stays", 700)                                         # exact_duplicate
    append("stays", 800, payment="1.5")                          # unique (both copies)

    # enrollment
    put("enrollment", 1, patient_id="P999999999")                # unknown_patient
    put("enrollment", 2, patient_id=None)                        # not_nullable
    put("enrollment", 3, start_date="2020-02-30")                # type
    put("enrollment", 4, start_date="1850-01-01")                # date_implausible
    put("enrollment", 5, start_date="2021-01-01", end_date="2020-01-01")  # end_before_start
    put("enrollment", 6, end_date="9999-12-31")                  # open end: valid
    put("enrollment", 7, coverage="gold")                        # allowed_values
    put("enrollment", 8, coverage="FFS")                         # normalised: valid
    put("enrollment", 9, end_date="never")                       # type
    en = t["enrollment"]
    named = en.index[en["sponsor"].notna()] if "sponsor" in en.columns else []
    if len(named):
        r = named[0]
        append("enrollment", r, sponsor="Another Sponsor",        # sponsor_overlap
               start_date=(pd.Timestamp(en.loc[r, "start_date"]) + pd.Timedelta(days=10)).date().isoformat())

    # ed_visits
    if "ed_visits" in t:
        put("ed_visits", 1, visit_id=None)                       # empty ids are not duplicates
        put("ed_visits", 2, visit_id=None)
        put("ed_visits", 3, patient_id="P999999999")             # unknown_patient
        put("ed_visits", 4, facility_id="H999999")               # unknown_facility
        put("ed_visits", 5, visit_date="2023-13-01")             # type
        put("ed_visits", 6, visit_date="1800-01-01")             # date_implausible
        put("ed_visits", 7, visit_date=None)                     # not_nullable
        put("ed_visits", 8, patient_id=None)                     # not_nullable
        append("ed_visits", 10)                                  # exact_duplicate
        append("ed_visits", 11, visit_date="2023-01-02")         # unique
    return t


def write_parquet(tables: dict, directory, *, typed: bool) -> None:
    """Write text tables as Parquet: every column text (``typed=False``: parsing is tested) or, with ``typed``,
    dates, booleans and numbers as Parquet types (what cannot be read as one becomes missing)."""
    from pathlib import Path

    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from carequal.schema import CONTRACT

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for table, frame in tables.items():
        kinds = {s.name: s.kind for s in CONTRACT[table]}
        arrays, names = [], []
        for col in frame.columns:
            text = pa.array(frame[col].astype(object).where(frame[col].notna(), None).tolist(), pa.string())
            kind = kinds.get(col) if typed else None
            if kind == "date":
                text = pc.cast(pc.strptime(pc.utf8_trim_whitespace(text), format="%Y-%m-%d", unit="s",
                                           error_is_null=True), pa.date32())
            elif kind == "bool":
                low = pc.utf8_lower(pc.utf8_trim_whitespace(text))
                text = pc.if_else(pc.is_in(low, pa.array(["true", "t", "yes", "y", "1"])), True,
                                  pc.if_else(pc.is_in(low, pa.array(["false", "f", "no", "n", "0"])), False, None))
            elif kind in ("int", "float"):
                text = pa.array(pd.to_numeric(pd.Series(text.to_pylist(), dtype=object), errors="coerce")
                                .astype("float64").to_numpy(), pa.float64(), from_pandas=True)
                text = pc.if_else(pc.is_nan(text), pa.scalar(None, pa.float64()), text) if len(text) else text
            arrays.append(text)
            names.append(col)
        pq.write_table(pa.table(arrays, names=names), directory / f"{table}.parquet")


def compare(data_dir, *, today: dt.date | None = None) -> dict:
    """carequal's failures (quarantine mode, before the cascade) and DuckDB's counts on ``data_dir``, side by side:
    ``{"carequal": {...}, "duckdb": {...}, "mismatches": [(key, carequal, duckdb), ...]}``."""
    from carequal.loaders import load_tables

    duck, seconds = count_rules(data_dir, today=today)
    car = carequal_counts(load_tables(data_dir, mode="quarantine"))
    keys = sorted(set(car) | {k for k, n in duck.items() if n})
    mismatches = [(k, car.get(k, 0), duck.get(k, 0)) for k in keys if car.get(k, 0) != duck.get(k, 0)]
    return {"carequal": car, "duckdb": duck, "mismatches": mismatches, "duckdb_seconds": seconds}
