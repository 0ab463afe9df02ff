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
# Parameters (papermill injects values after this cell; every one is typed for validation)
market: str = "Northvale"
population: str = "medicare"  # or "employees": the alliance's employer populations (carequal.explore.POPULATIONS)
data: str = ""  # contract tables or an ingested dataset; empty: the sample (carequal.sample)
work: str = ""  # patient-level work files; empty: <data>.work beside the data folder
period_start: str = "2024-01-01"
period_end: str = "2024-12-31"

# %% [markdown]
# # Cohort explorer
#
# Index stays of one market's residents, described with a Table 1 and three outcome rates, by the partner status
# of the discharging hospital (or, for the employees, by employer). Choose the population (Medicare residents 65
# and over under the CMS hospital-wide rules, or the employees of the alliance's employers under all-payer rules),
# the market, condition, partner status, age bands and discharge months below; the tables follow. Counts from 1
# to 10, and the cells that would give them back, are hidden ("<11" or "suppressed"), so the tables can be shown
# as they are.
# Everything here is computed by `carequal.explore`; this notebook only wires it to the controls.

# %% tags=["setup"]
# %matplotlib inline
import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display

from carequal import explore as ex
from carequal import plots
from carequal import presentation as pres
from carequal.inputs import prepare
from carequal.loaders import markets_in_dataset
from carequal.national import read_cohort
from carequal.sample import notebook_folders

plots.set_theme()
plt.rcParams["figure.dpi"] = 96
display(HTML(pres.REPORT_CSS))

data, work = notebook_folders(data, work)  # data empty: the sample
inputs = prepare(data, work, period_start=period_start, period_end=period_end)
# the measured cohort prepare built, read once per session; each market's view is computed once (the employee
# populations from the prepared dataset)
explorer = ex.CohortExplorer(read_cohort(inputs.cohort, cms=True), dataset=inputs.dataset,
                             attrition_plot=plots.attrition_plot)
choices = ex.explorer_choices(explorer.view(market, population)[1])

# %% [markdown]
# ## Controls

# %%
controls = {
    "population": widgets.Dropdown(options=[(label, key) for key, label in ex.POPULATIONS.items()], value=population,
                                   description="Population"),
    "market": widgets.Dropdown(options=markets_in_dataset(inputs.dataset), value=market, description="Market"),
    "condition": widgets.Dropdown(options=choices["condition"], value="all", description="Condition"),
    "partner": widgets.Dropdown(options=choices["partner"], value="all", description="Hospital"),
    "age_bands": widgets.SelectMultiple(options=choices["age_bands"], value=tuple(choices["age_bands"]),
                                        description="Age bands"),
    "start": widgets.DatePicker(value=pd.Timestamp(period_start).date(), description="From month"),
    "end": widgets.DatePicker(value=pd.Timestamp(period_end).date(), description="To month"),
}
tables_out = widgets.interactive_output(explorer.show_tables, controls)
attrition_out = widgets.interactive_output(explorer.show_attrition, {"population": controls["population"],
                                                                     "market": controls["market"]})
display(widgets.VBox([widgets.HBox([controls["population"], controls["market"]]),
                      widgets.HBox([controls["condition"], controls["partner"]]),
                      widgets.HBox([controls["age_bands"], widgets.VBox([controls["start"], controls["end"]])])]))

# %% [markdown]
# ## Table 1 and outcome rates
#
# Table 1: means (SD) and counts (% of the column). Rates: 30-day unplanned readmission (CMS Planned Readmission
# Algorithm), death within 30 days of admission, and discharge to a partner post-acute provider within a day,
# with 95% Wilson intervals. Months are discharge months.

# %%
display(tables_out)

# %% [markdown]
# ## How the cohort was built
#
# Acute stays of the market's residents and the stays each rule removed (steps that removed fewer than 11 are
# merged with the next).

# %%
display(attrition_out)
