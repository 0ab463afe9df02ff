"""pytest set-up shared by the doctests in carequal/ and the tests in tests/."""

import pandas as pd

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)
