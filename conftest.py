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

import pandas as pd  # noqa: E402 - after the BLAS set-up

# the notebooks' jupytext sources are not modules: importing one (--doctest-modules) would run the notebook
collect_ignore_glob = ["carequal/notebooks/*"]

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)
