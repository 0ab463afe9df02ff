"""Beyond one machine: the stay-level measures partition by partition, on a Dask cluster.

Every per-stay measure is a computation over one patient's rows: the index-stay rules (transfers, washout,
enrollment), readmissions at any hospital, deaths, post-acute episodes. The residence-market partitions of an
ingested dataset (``carequal ingest``) hold all of each patient's rows (patients, stays, enrollment, ED
visits), with the whole facilities table beside them, so the measures of each partition are exactly the
measures of those patients computed on the whole data — partitioned by patient, as the method needs. This
module runs them partition by partition:

* in this process (``client=None``), one partition at a time: peak memory is one partition's, not the nation's;
* on a Dask cluster: a ``dask.dataframe`` built from one delayed task per partition
  (``dask.dataframe.from_delayed``), computed by the cluster's workers, each reading its partition straight
  from the dataset (a path every worker sees: a shared file system or object store).

The result is sorted by ``stay_id`` and identical, value for value, whichever way it was computed (a test
compares the in-process, partitioned and LocalCluster results stay for stay). The models are then fitted on
the client from the measured rows (:func:`carequal.national.reference_from_measured`): a few dozen numeric
columns per index stay.

Starting a cluster (any Dask deployment works; the simplest by hand)::

    dask scheduler                                  # on the scheduler host: prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 2 --nthreads 1    # on each worker host, same carequal install
    carequal report --data /shared/dataset --out /shared/reports --scheduler tcp://HOST:8786

Every worker needs the same environment (``pip install carequal``) and must see ``--data``, the work folder
and ``--out`` at the same paths.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from carequal.loaders import markets_in_dataset, read_market, read_table
from carequal.measured import ATTRITION_COLUMNS, MeasuredCohort, measure_cohort
from carequal.national import MEASURED_COLUMNS, MEASURES, attach_expected, measured_index_stays, reference_from_measured

__all__ = ["cohort_partitioned", "cohort_reference_partitioned", "measure_market", "measured_index_stays_partitioned",
           "reference_partitioned"]


def measure_market(dataset: str | Path, market: str, *, rules=None) -> pd.DataFrame:
    """:func:`carequal.national.measured_index_stays` of one residence-market partition (read on its own)."""
    tables = read_market(dataset, market).tables
    if tables["stays"].empty:
        return _empty_measured()
    measured = measured_index_stays(tables, rules=rules)
    return measured.reindex(columns=list(MEASURED_COLUMNS))


def _empty_measured() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in MEASURED_COLUMNS})


def measured_index_stays_partitioned(dataset: str | Path, *, client=None, rules=None,
                                     markets: list[str] | None = None) -> pd.DataFrame:
    """Measured index stays of every residence-market partition of ``dataset``, concatenated and sorted by
    ``stay_id``.

    Parameters
    ----------
    dataset : path
        A market-partitioned dataset (``carequal ingest``).
    client : distributed.Client, optional
        Run on this Dask cluster (one task per partition, as a ``dask.dataframe``); None: in this process.
    rules : IndexRules, optional
    markets : list of str, optional
        Partitions to measure (default all).
    """
    dataset = str(Path(dataset).resolve())
    chosen = markets if markets is not None else markets_in_dataset(dataset)
    if client is None:
        parts = [measure_market(dataset, m, rules=rules) for m in chosen]
        parts = [p for p in parts if len(p)]
        out = pd.concat(parts, ignore_index=True) if parts else _empty_measured()
    else:
        import dask  # only on a Dask cluster (heavy, optional)
        import dask.dataframe as dd

        # the partitions' own columns and dtypes are kept (verify_meta=False): the meta only names the columns
        meta = _empty_measured()
        tasks = [dask.delayed(measure_market)(dataset, m, rules=rules) for m in chosen]
        frame = dd.from_delayed(tasks, meta=meta, verify_meta=False)
        out = client.compute(frame).result()
        out = out.reset_index(drop=True)
    return out.sort_values("stay_id", kind="stable", ignore_index=True)


def reference_partitioned(dataset: str | Path, *, period_start, period_end, measures=None, client=None,
                          rules=None):
    """The national reference computed partition by partition (:func:`measured_index_stays_partitioned`)
    and fitted on the client; equal to :func:`carequal.national.build_reference` on the whole data."""
    measured = measured_index_stays_partitioned(dataset, client=client, rules=rules)
    return reference_from_measured(measured, _facilities(dataset), period_start=period_start,
                                   period_end=period_end, measures=tuple(measures or MEASURES))


def _facilities(dataset: str | Path) -> pd.DataFrame:
    """The facilities table of a dataset (validated at ingest, stored typed; one small table, read whole)."""
    return read_table(Path(dataset) / "facilities")


def _cohort_of_market(dataset: str, market: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`carequal.measured.measure_cohort` of one residence-market partition: ``(rows, attrition)``."""
    tables = read_market(dataset, market).tables
    if tables["stays"].empty:
        return pd.DataFrame(), pd.DataFrame(columns=list(ATTRITION_COLUMNS))
    cohort = measure_cohort(tables)
    return cohort.rows, cohort.attrition[cohort.attrition["market"] != ""]


def cohort_partitioned(dataset: str | Path, *, client=None) -> MeasuredCohort:
    """The measured cohort of every residence-market partition of ``dataset`` (in this process or one task per
    partition on a Dask cluster), concatenated in market order; the all-markets attrition is the sum of the
    markets'."""
    dataset = str(Path(dataset).resolve())
    chosen = markets_in_dataset(dataset)
    if client is None:
        parts = [_cohort_of_market(dataset, m) for m in chosen]
    else:
        import dask  # only on a Dask cluster (heavy, optional)

        parts = client.compute([dask.delayed(_cohort_of_market)(dataset, m) for m in chosen], sync=True)
    rows = pd.concat([r for r, _ in parts if len(r)], ignore_index=True)
    rows["order"] = range(len(rows))
    attrition = pd.concat([a for _, a in parts if len(a)], ignore_index=True)
    total = attrition.groupby(["rules", "step"], sort=False, as_index=False).agg(
        description=("description", "first"), excluded=("excluded", "sum"), remaining=("remaining", "sum"))
    attrition = pd.concat([total.assign(market=""), attrition], ignore_index=True)[list(ATTRITION_COLUMNS)]
    return MeasuredCohort(rows=rows, attrition=attrition)


def cohort_reference_partitioned(dataset: str | Path, *, period_start, period_end, measures=None, client=None):
    """:func:`carequal.national.cohort_and_reference` computed partition by partition (:func:`cohort_partitioned`)
    and fitted on the client: ``(cohort, reference)``."""
    cohort = cohort_partitioned(dataset, client=client)
    cms = cohort.cms()
    reference = reference_from_measured(cms[[c for c in MEASURED_COLUMNS if c in cms.columns]], _facilities(dataset),
                                        period_start=period_start, period_end=period_end,
                                        measures=tuple(measures or MEASURES))
    return attach_expected(cohort, reference), reference
