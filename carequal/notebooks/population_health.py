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
data: str = ""  # contract tables or an ingested dataset; empty: the sample (carequal.sample)
work: str = ""  # patient-level work files; empty: <data>.work beside the data folder
period_start: str = "2024-01-01"
period_end: str = "2024-12-31"
min_cell: int = 11

# %% tags=["setup"]
# %matplotlib inline
import warnings

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from carequal import plots
from carequal import population as pop
from carequal import presentation as pres
from carequal.inputs import prepare
from carequal.loaders import load_tables
from carequal.national import MEASURES, read_reference
from carequal.sample import notebook_folders

# third-party deprecation chatter is not for leaders; carequal's own warnings stay visible
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
plots.set_theme()
plt.rcParams["figure.dpi"] = 96

data, work = notebook_folders(data, work)  # data empty: the sample
inputs = prepare(data, work, period_start=period_start, period_end=period_end)
tables = load_tables(inputs.dataset).tables
reference = read_reference(inputs.reference)
latest = pd.Timestamp(period_end).year
utilisation = pop.utilisation_by_market(tables, min_cell=min_cell)
# an outcome whose national model could not be fitted has no expected rates: it is named, not charted
outcomes = tuple(m for m in ("readmission", "mortality") if m in reference.meta["measures"])
not_available = [f"{MEASURES[m].label} is not available: {reason.removeprefix(f'{m}: ')}."
                 for m, reason in reference.unavailable.items() if m in ("readmission", "mortality")]
if outcomes:
    trends = pop.outcome_trends(reference.rows, freq="quarter", min_cell=min_cell, measures=outcomes,
                                end=period_end)
    by_market = pop.outcome_by_market(reference.rows, period_start=period_start, period_end=period_end,
                                      min_cell=min_cell, measures=outcomes)

display(HTML(pres.REPORT_CSS))

# %%
start, end = pd.Timestamp(period_start), pd.Timestamp(period_end)
display(Markdown(f"# All markets: population health\n\n**Markets:** {', '.join(inputs.markets)}. "
                 f"**Reporting period:** {start:%-d %B %Y} to {end:%-d %B %Y}. "
                 "Every market side by side: how much hospital, post-acute and emergency care its residents use, "
                 "and how its hospitals' outcomes compare with what is expected for their patients."))

# %% [markdown]
# ## How much care do residents use?
#
# Admissions and emergency department visits per 1,000 person-years of enrollment of residents aged 65 and
# over (one person enrolled for a whole year is one person-year). Rates are **age- and sex-standardised**: each
# market's rates are reweighted to the same standard population, so a market is not made to look busier just
# because its residents are older. Residents are counted in their home market, wherever they were treated.
# The charts show each year with its 95% interval (shaded); markets whose intervals overlap cannot be told
# apart with confidence.

# %%
display(Markdown(f"**Standardised rates per 1,000 person-years, {latest}**"))
pres.show_table(pop.market_comparison(utilisation, latest))

# %%
markets_only = utilisation[utilisation["market"] != pop.TOTAL_LABEL]
fig, axes = plt.subplots(1, len(pop.UTILISATION_MEASURES), figsize=(16, 5))
for ax, name in zip(axes, pop.UTILISATION_MEASURES, strict=True):
    plots.trend_plot(markets_only[markets_only["measure"] == name], period="year", hue="market", percent=False,
                     ax=ax, title=name, ylabel="Per 1,000 person-years (standardised)")
    ax.set_xticks(sorted(utilisation["year"].unique()))
    ax.set_xlabel("Calendar year")
plots.shared_legend(fig, axes)
plt.show()

# %% [markdown]
# ## How do outcomes compare?
#
# 30-day unplanned readmission and 30-day mortality after a hospital stay, for the hospitals of each market,
# by quarter (shaded: 95% interval). "Expected" is what the national risk model predicts for the same patients
# at an average hospital, so an observed-to-expected ratio (O/E) above 1 means more events than expected. A
# market is called higher or lower than expected only when the 95% interval of its O/E lies wholly above or
# below 1.

# %%
if outcomes:
    fig, axes = plt.subplots(1, len(outcomes), figsize=(16, 5), squeeze=False)
    for ax, name in zip(axes[0], outcomes, strict=True):
        plots.trend_plot(trends[trends["measure"] == name], hue="unit_market", ax=ax,
                         title=f"{MEASURES[name].label}, by quarter")
        ax.xaxis.set_major_locator(mdates.YearLocator())
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
        ax.set_xlabel("Quarter of discharge (one point per quarter)")
    plots.shared_legend(fig, list(axes[0]))
    plt.show()

# %%
findings = (pop.outcome_findings(by_market) if outcomes else []) + not_available
display(Markdown("\n".join(f"- {s}" for s in findings)))
for name in outcomes:
    shown = pres.with_interval_text(by_market, lower="ratio_lower", upper="ratio_upper", percent=False, digits=2)
    display(Markdown(f"**{MEASURES[name].label}**, {start:%-d %B %Y} to {end:%-d %B %Y}"))
    pres.show_table(shown[shown["measure"] == name], "market_outcomes")

# %% [markdown]
# ## Methods
#
# **Use of care.** Acute hospital admissions, admissions to post-acute providers (skilled nursing,
# inpatient rehabilitation, long-term care hospitals, home health) and emergency department visits of each
# market's residents aged 65 and over in each calendar year, divided by their person-years of enrollment at
# those ages that year. Rates are directly standardised by age band (65–74, 75–84, 85 and over) and sex to the
# 2000 U.S. standard population of those ages; the intervals are Dobson's. Younger residents (disability,
# employee plans) are left out here, so that their small numbers do not carry the weight of the standard's
# under-65 bands; the employees of the alliance's members, ages 18 to 64, are shown in the employee health
# reports (`employee_health`, `carequal report --by sponsor`).
#
# **Outcomes.** Index hospital stays as in the market reports (CMS hospital-wide readmission conventions),
# counted for the market of the hospital. Rates carry Wilson 95% intervals; expected rates come from the
# national random-intercept logistic model fitted on the reporting period across all markets; O/E intervals
# are exact Poisson below 10 events and Byar's approximation above.

# %%
display(Markdown(f"**Privacy.** No patient-level data are shown. Counts from 1 to {min_cell - 1}, and any value "
                 "that would reveal one (a rate, a ratio, another cell of the same total), are shown as "
                 "\"suppressed\"; chart points for such periods are left blank."))
if utilisation.attrs.get("left_out"):
    display(Markdown(f"*{utilisation.attrs['left_out']:,d} admissions or visits of residents with no enrollment "
                     "in their age group, market and year could not be given a rate and are left out.*"))
