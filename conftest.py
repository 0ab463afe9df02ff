"""pytest set-up shared by the doctests in carequal/ and the tests in tests/."""

import pandas as pd

# the notebooks' jupytext sources are not modules: importing one (--doctest-modules) would run the notebook
collect_ignore_glob = ["carequal/notebooks/*"]

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)
