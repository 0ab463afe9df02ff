# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (carequal)
#     language: python
#     name: carequal
# ---

# %% tags=["parameters"]
# Parameters (papermill injects the batch's values after this cell; every one is typed for validation)
partner: str = "S001003"
period_start: str = "2024-01-01"
period_end: str = "2024-12-31"
inputs: str = ""  # the packet inputs the batch prepared; empty: the sample and its agreement
min_cell: int = 11
extract_dir: str = ""
record_path: str = ""

# %% tags=["setup"]
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from carequal import packet as pk
from carequal import plots
from carequal import presentation as pres
from carequal.sample import sample_packet_inputs

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
plots.set_theme()
plt.rcParams["figure.dpi"] = 96

if not inputs:  # run by hand: the sample and its agreement
    inputs = sample_packet_inputs(period_start=period_start, period_end=period_end)
pp = pk.load_partner_packet(inputs, partner, period_start=period_start, period_end=period_end, min_cell=min_cell)
latest = pk.status_table(pp)
if extract_dir:
    pk.write_extract(pp, extract_dir)
if record_path:
    pk.write_record(pk.packet_record(latest, pp), record_path)




display(HTML(pres.REPORT_CSS))

# %%
display(Markdown(pk.packet_title(pp)))
pres.show_glance(pk.packet_glance(latest, pp))

# %% [markdown]
# ## Where the partnership stands
#
# Each agreed metric is judged against its target over the reporting period: **met** when the whole 95%
# interval is on the better side of the target, **not met** when it is wholly on the worse side, and
# **not yet judgeable** when the interval includes the target or there are too few cases. The change is
# from the period of the same length just before.

# %%
pres.show_findings(pk.status_findings(latest, pp) + pk.spending_notes(pp))
pres.show_table(pk.status_display(latest))

# %% [markdown]
# ### Status in each review period of the reporting period

# %%
pres.show_table(pk.status_grid(pp))

# %% [markdown]
# ## Trends
#
# The partner's value per review period (shaded: 95% interval), the target (dashed), the market's
# non-partner facilities (grey, dash-dot) and the partnership's start (dotted; its date in the legend).
# Circled points are statistical process control signals (crude rates only). Periods with too few cases to
# share are left blank; where that would blank most review periods, the chart shows calendar years instead.

# %%
for metric in pp.agreement.metrics:
    trend = pk.metric_trend(pp, metric.id)
    if trend.empty:
        continue
    if trend.attrs.get("not_computed"):
        pres.show_findings([trend.attrs["not_computed"]])
        continue
    fig, ax = plt.subplots(figsize=(9, 4.2))
    plots.target_trend_plot(trend, start=pp.partner["start"], percent=metric.spec.unit == "proportion",
                            title=metric.title, ax=ax)
    pk.value_axis(ax, metric)
    plots.show(fig)
    pres.show_findings(pk.trend_findings(trend)) if pk.trend_findings(trend) else None

# %% [markdown]
# ## Where patients came from and went next
#
# Other facilities are shown under anonymous labels unless the agreement allows names. Small counts are
# suppressed as the packet's first page states, with further cells where needed so that none can be worked out
# from the total.

# %%
for direction, flows in pk.flow_display(pp).items():
    display(Markdown(f"**{direction.capitalize()}** (index hospital stays in the reporting period)"))
    pres.show_table(flows, "flows")

# %%
leakage = pk.leakage_table(pp)  # hospital partners only
if len(leakage):
    leakage_trend = pk.leakage_trend(leakage)
    display(Markdown(
        "## Network leakage\n\nOf the hospital's index discharges that went on to post-acute care (a skilled "
        "nursing, rehabilitation, long-term care or home health stay starting within a day), the share that went "
        "to providers outside the partnership. The partnership's providers are counted as in network in every "
        "period, so the periods before its start show where these patients went before. The control chart's "
        "centre line and limits come from the periods before the partnership (when at least four can be shown); "
        "coloured points are special-cause signals."))
    pres.show_findings(pk.leakage_findings(leakage, leakage_trend, pp))
    ax = pk.leakage_plot(leakage_trend, pp)
    plots.show(ax.figure)
    display(Markdown("Discharges: to post-acute care; Events: of them, to providers outside the partnership."))
    pres.show_table(pk.leakage_display(leakage, leakage_trend))

# %% [markdown]
# ## Notes
#
# - Cases are index hospital stays (CMS-style rules: age 65+, enrolled, no transfers out, not against
#   medical advice). A hospital answers for the stays it discharged; a post-acute provider for the stays
#   whose first post-acute stay, within a day of the hospital discharge, was with it.
# - Risk-adjusted rates compare observed events with those expected for the same patients nationally, times
#   the national rate. Expected events come from the national risk model the market reports use (a
#   random-intercept logistic model on age, sex, dual eligibility, population, secondary diagnoses and
#   condition, fitted on the reporting period across all markets); a metric no national model covers has a
#   model of the same kind of its own.
# - A market target pools the market's non-partner facilities of the same setting in the same period.
# - Episode spending adds up the payments of the index hospital stay (with any transfers before it) and of
#   every stay in the 30 days after discharge: readmissions in full, post-acute stays by their share of days
#   in the window. Risk-adjusted spending is observed over expected spending (a gamma model on the same
#   patient characteristics, fitted on every market) times the national mean per episode.
# - An aggregate extract of these tables (CSV and Excel) comes with this packet; it follows the same
#   small-cell rule.
