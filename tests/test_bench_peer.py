"""The same-rules DuckDB peer of the foundation benchmark (``benchmarks/same_rules.py``, issue 18) counts, rule by
rule, the rows ``validate_tables`` reports failing, on the sample data with a fault of every row rule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from carequal.loaders import read_tables
from carequal.schema import RULES

REPO = Path(__file__).resolve().parent.parent


def _same_rules():
    # benchmarks/ is not a package: load the module from its file (it has no side effects when imported)
    spec = importlib.util.spec_from_file_location("bench_same_rules", REPO / "benchmarks" / "same_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


same_rules = _same_rules()


@pytest.fixture(scope="module")
def faulty():
    return same_rules.inject_faults(read_tables(REPO / "data" / "sample"))


@pytest.mark.parametrize("typed", [False, True], ids=["text", "typed"])
def test_duckdb_counts_the_rows_carequal_reports_for_every_rule(tmp_path, faulty, typed):
    # text columns test parsing; typed Parquet (dates, booleans, numbers) is what the benchmark data are
    same_rules.write_parquet(faulty, tmp_path, typed=typed)
    result = same_rules.compare(tmp_path)
    assert result["mismatches"] == []
    hit = {rule for (_, _, rule), n in result["carequal"].items() if n}
    assert set(RULES) - same_rules.ROW_RULES_EXCLUDED - hit == set()  # a fault of every row rule was counted
    assert sum(result["carequal"].values()) > 100


def test_clean_data_break_no_rule(tmp_path):
    same_rules.write_parquet(read_tables(REPO / "data" / "sample"), tmp_path, typed=True)
    result = same_rules.compare(tmp_path)
    assert result["mismatches"] == []
    assert not any(result["duckdb"].values())
