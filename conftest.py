"""pytest set-up shared by the doctests in carequal/ and the tests in tests/."""

import os

# One BLAS thread per test process, unless the environment chooses. The suite runs on two cores with two
# pytest-xdist workers: a second OpenBLAS thread in each has no free core and waits for one (numpy.linalg.lstsq of
# 3,000 x 25 took 50-100 ms a call with two threads on a busy 2-core machine, 1.3-2 ms with one;
# test_partnership_agreement 34.4 -> 25.3 s alone). The variable reaches the libraries loaded later (scipy's own
# OpenBLAS) and the processes the tests start (kernels, Dask workers, xdist workers); threadpoolctl limits the
# numpy OpenBLAS that is already loaded.
if not {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"} & set(os.environ):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")

import gc  # noqa: E402

import pandas as pd  # noqa: E402 - after the BLAS set-up

from carequal.batch.kernels import COLLECTOR_THRESHOLDS  # noqa: E402

# The test processes collect garbage with the thresholds the batch's own processes use
# (carequal.batch.kernels.COLLECTOR_THRESHOLDS: 1.2-1.4 s of collecting became 0.5 s over five in-process test files,
# about 2% of their CPU), not after every 700 new objects. The processes
# the tests start (commands, kernels) choose their own: Python's defaults, or the batch's where carequal sets them.
gc.set_threshold(*COLLECTOR_THRESHOLDS)

# the notebooks' jupytext sources are not modules: importing one (--doctest-modules) would run the notebook
collect_ignore_glob = ["carequal/notebooks/*"]

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)


# The files that take longest, longest first (CPU seconds measured with --durations on 2 cores, December 2026).
# pytest-xdist's --dist loadfile hands out whole files in collection order, each worker holding the next one: with
# the long files first, the short ones (the rest, in their usual order) fill in at the end and both workers finish
# together, where files ordered by their number of tests (xdist's default) left one worker running test_wheel or
# test_warehouse alone at the end. Only the order changes: every file still runs whole, on one worker.
LONGEST_FIRST = ["test_batch.py", "test_warehouse.py", "test_faults.py", "test_notebooks.py", "test_faults_kill.py",
                 "test_employee_batch.py", "test_scale.py", "test_cost.py", "test_packet.py", "test_model_errors.py",
                 "test_wheel.py", "test_hsr.py", "test_kernel_session.py", "test_schema.py", "test_browser.py",
                 "test_national.py", "test_pqi.py", "test_measures.py", "test_explore.py",
                 "test_partnership_agreement.py", "test_cohorts.py", "test_input_faults.py", "test_employers.py"]


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist >= 3.6 orders files by number of tests
        config.option.loadscopereorder = False  # keep the collection order pytest_collection_modifyitems sets


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
