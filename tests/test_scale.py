"""Partitioned and distributed computation give the single-machine results: stay for stay, facility for
facility (a dask.distributed LocalCluster with real worker processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.compare import scorecard
from carequal.loaders import load_tables
from carequal.national import build_reference, measured_index_stays
from carequal.scale import measured_index_stays_partitioned, reference_partitioned

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
PERIOD = {"period_start": "2024-01-01", "period_end": "2024-12-31"}


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      worker_dashboard_address=None) as local, Client(local) as client:
        yield client


@pytest.fixture(scope="module")
def whole(sample_work):
    tables = load_tables(sample_work.dataset).tables
    return tables, measured_index_stays(tables).sort_values("stay_id", ignore_index=True)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
            np.testing.assert_array_equal(x.to_numpy(dtype=float), y.to_numpy(dtype=float), err_msg=col)
        else:
            assert (x.astype("str").fillna("<NA>").to_numpy() == y.astype("str").fillna("<NA>").to_numpy()).all(), col


def test_partition_by_partition_equals_the_whole(sample_work, whole):
    _, expected = whole
    parts = measured_index_stays_partitioned(sample_work.dataset)
    assert parts["stay_id"].is_unique and len(parts) > 10_000
    _same(parts, expected)


def test_a_local_cluster_gives_the_same_stays(sample_work, whole, cluster):
    _, expected = whole
    on_cluster = measured_index_stays_partitioned(sample_work.dataset, client=cluster)
    _same(on_cluster, expected)
    assert len(cluster.scheduler_info()["workers"]) == 2  # real worker processes did the work


def test_the_reference_is_the_same_facility_for_facility(sample_work, whole, cluster):
    tables, _ = whole
    single = build_reference(tables, **PERIOD)
    distributed = reference_partitioned(sample_work.dataset, client=cluster, **PERIOD)
    a = single.rows.sort_values(["measure", "stay_id"], ignore_index=True)
    b = distributed.rows.sort_values(["measure", "stay_id"], ignore_index=True)
    _same(a, b)
    pd.testing.assert_frame_equal(single.models, distributed.models)
    cards = [scorecard(r.rows[r.rows["in_period"]], facility="unit_id", measure="measure").sort_values(
        ["measure", "unit_id"], ignore_index=True) for r in (single, distributed)]
    pd.testing.assert_frame_equal(*cards)
    assert len(cards[0]) > 40


def test_report_on_a_dask_cluster(tmp_path, cluster, stand_in):
    """The batch's markets run on the cluster's workers (each starts its kernel there). The batch machinery is
    under test, not the report: the fault tests' stand-in notebook (``operator_runs``), which shows the market
    and period it was given and writes the KPI record the batch reads back."""
    from carequal.batch import run_batch

    address = cluster.scheduler.address
    out = tmp_path / "reports"
    result = run_batch(SAMPLE, out, markets="Northvale,Riverton", period="2024", scheduler=address,
                       notebook=stand_in, progress=False)
    assert result.ok and result.manifest["parameters"]["scheduler"] == address
    for market in ("Northvale", "Riverton"):
        assert result.manifest["markets"][market]["status"] == "ok"
        assert f"{market}: report for 2024-01-01 to 2024-12-31" in (out / f"{market}.html").read_text()
