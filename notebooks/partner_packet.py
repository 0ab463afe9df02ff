# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (carequal)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
# Parameters (papermill injects the batch's values after this cell; every one is typed for validation)
partner: str = "S001003"
period_start: str = "2024-01-01"
period_end: str = "2024-12-31"
inputs: str = "../packets.work/agreement"
min_cell: int = 11
extract_dir: str = ""
record_path: str = ""

# %% tags=["setup"]
import warnings

import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from carequal import packet as pk
from carequal import plots
from carequal import report as rpt

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
plots.set_theme()
plt.rcParams["figure.dpi"] = 96

pp = pk.load_partner_packet(inputs, partner, period_start=period_start, period_end=period_end, min_cell=min_cell)
latest = pk.status_table(pp)
if extract_dir:
    pk.write_extract(pp, extract_dir)
if record_path:
    pk.write_record(pk.packet_record(latest), record_path)


def bullets(sentences):
    display(Markdown("\n".join(f"- {s}" for s in sentences)))


def table(frame):
    display(HTML(rpt.table_html(frame)))


display(HTML(rpt.REPORT_CSS))

# %%
display(Markdown(pk.packet_title(pp)))

# %% [markdown]
# ## Where the partnership stands
#
# Each agreed metric is judged against its target over the reporting period: **met** when the whole 95%
# interval is on the better side of the target, **not met** when it is wholly on the worse side, and
# **not yet judgeable** when the interval includes the target or there are too few cases. The change is
# from the period of the same length just before.

# %%
bullets(pk.status_findings(latest, pp))
table(pk.status_display(latest))

# %% [markdown]
# ### Status in each review period of the reporting period

# %%
table(pk.status_grid(pp))

# %% [markdown]
# ## Trends
#
# The partner's value per review period (shaded: 95% interval), the target (dashed), the market's
# non-partner facilities (grey) and the partnership's start (dotted). Circled points are statistical
# process control signals (crude rates only). Periods with too few cases to share are left blank; where
# that would blank most review periods, the chart shows calendar years instead.

# %%
for metric in pp.agreement.metrics:
    trend = pk.metric_trend(pp, metric.id)
    if trend.empty:
        continue
    fig, ax = plt.subplots(figsize=(9, 4.2))
    plots.target_trend_plot(trend, start=pp.partner["start"], percent=metric.spec.unit == "proportion",
                            title=metric.title, ylabel=metric.spec.unit.capitalize(), ax=ax)
    plt.show()
    bullets(pk.trend_findings(trend)) if pk.trend_findings(trend) else None

# %% [markdown]
# ## Where patients came from and went next
#
# Other facilities are shown under anonymous labels unless the agreement allows names. Counts from 1 to 10
# are suppressed, with further cells where needed so that none can be worked out from the total.

# %%
for direction, flows in pk.flow_display(pp).items():
    display(Markdown(f"**{direction.capitalize()}** (index hospital stays in the reporting period)"))
    table(rpt.presentable(flows, columns={"label": "", "n": None, "share": "Share"}, counts=("n",),
                          percent=("share",)))

# %% [markdown]
# ## Notes
#
# - Cases are index hospital stays (CMS-style rules: age 65+, enrolled, no transfers out, not against
#   medical advice). A hospital answers for the stays it discharged; a post-acute provider for the stays
#   whose first post-acute stay, within a day of the hospital discharge, was with it.
# - Risk-adjusted rates compare observed events with those expected for the same patients nationally
#   (logistic model on age, sex, dual eligibility, population, secondary diagnoses and condition), times the
#   national rate.
# - A market target pools the market's non-partner facilities of the same setting in the same period.
# - An aggregate extract of these tables (CSV and Excel) comes with this packet; it follows the same
#   small-cell rule.
