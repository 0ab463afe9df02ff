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
sponsor: str = ""  # one alliance member's own report; empty: the whole alliance, every sponsor side by side
data: str = ""  # contract tables or an ingested dataset; empty: the sample (carequal.sample)
period_start: str = "2024-01-01"
period_end: str = "2024-12-31"
min_cell: int = 11
programme_sponsor: str = "Riverton Health"  # the member running a care-management programme ("" for none)
programme_start: str = "2023-07-01"  # the day it started (the sample's; carequal report --programme SPONSOR:DATE)
kpi_path: str = ""  # the batch's record of the headline numbers (empty: none written)

# %% tags=["setup"]
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from carequal import employers as em
from carequal import plots
from carequal import presentation as pres
from carequal import report as rpt
from carequal.loaders import load_tables
from carequal.sample import notebook_folders

# third-party deprecation chatter is not for the board; carequal's own warnings stay visible
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
plots.set_theme()
plt.rcParams["figure.dpi"] = 96
display(HTML(pres.REPORT_CSS))

folder, _ = notebook_folders(data)  # data empty: the sample
tables = load_tables(folder).tables
start, end = pd.Timestamp(period_start), pd.Timestamp(period_end)
window = em.trend_window(tables, end=period_end, years=3)  # trends: up to three years to the end of the period
chosen = sponsor or None
by = "age_band" if chosen else "sponsor"
events = em.employer_events(tables, start=window[0], end=window[1])
years = em.member_time(tables, start=window[0], end=window[1], freq="year")
utilisation = em.employer_utilisation(tables, start=window[0], end=window[1], freq="year", by=by, sponsor=chosen,
                                      min_cell=min_cell, events=events, time=years)
latest, previous = str(end.year), str(end.year - 1)
who = sponsor or "The alliance"

# %%
display(Markdown(f"# {who}: our employees' health\n\n"
                 f"**Reporting period:** {start:%-d %B %Y} to {end:%-d %B %Y}. "
                 + (f"**Members:** the employees of {sponsor} on its health plan. " if sponsor else
                    f"**Members:** the employees of the alliance's members on their health plans "
                    f"({', '.join(em.sponsors(tables['enrollment']))}). ")
                 + "How much hospital and emergency care our own employees use, how much of it good primary care "
                   "could prevent, what their inpatient care costs, and whether our care-management programme "
                   "is working. Employees aged 18 to 64 are shown here; the market reports and the population "
                   "health view cover Medicare residents aged 65 and over."))

# %% [markdown]
# ## How much care do our employees use?
#
# Hospital admissions, avoidable admissions (see below), emergency department visits and admissions to
# post-acute care (skilled nursing, rehabilitation, home health) per 1,000 member-years: one employee covered
# for a whole year is one member-year. Each rate has its 95% interval: the range the true rate most likely lies
# in, given how many members there are. Inpatient spending is what the plan paid for hospital stays per member
# per month; **only inpatient payments are in the data** (no doctor visits, outpatient care or pharmacy), so it
# is not the total cost of care.

# %%
pres.show_findings(em.employer_findings(utilisation, period=latest, previous=previous, by=by))
display(Markdown(f"**{'By age band' if chosen else 'By alliance member'}, {latest}**"))
pres.show_table(em.employer_comparison(utilisation, latest, by=by))

# %% [markdown]
# ## Trends
#
# Each chart shows one rate by quarter on a control chart: the centre line is the average, the shaded limits
# show how far a rate moves by chance alone. Points marked as a signal (outside the limits, or a run of quarters
# on one side of the average) are changes worth a look; the rest is ordinary variation. A quarter with fewer
# than 11 events is left blank.

# %%
quarters = em.member_time(tables, start=window[0], end=window[1], freq="quarter")
shown = ("admissions", "ed_visits", "inpatient_spending")
fig, axes = plt.subplots(len(shown), 1, figsize=(10, 3.4 * len(shown)))
for ax, measure in zip(axes, shown, strict=True):
    chart = em.employer_trend(tables, measure=measure, start=window[0], end=window[1], freq="quarter",
                              sponsor=chosen, min_cell=min_cell, events=events, time=quarters)
    plots.spc_plot(chart, period="period_start", percent=False, ax=ax, title=em.SHORT_LABELS[measure],
                   ylabel=em.MEASURE_UNITS[measure])
plots.show(fig)

# %% [markdown]
# ## Avoidable admissions
#
# The Prevention Quality Indicators of the U.S. Agency for Healthcare Research and Quality (AHRQ PQI, v2023)
# count admissions that good outpatient care can often prevent: complications of diabetes, COPD and asthma,
# high blood pressure, heart failure, pneumonia and urinary tract infections, lower-limb amputations in
# diabetes. PQI 90 is all of them, 91 the acute and 92 the chronic ones. They are rare among working-age members,
# so this table pools the whole three years. Rates are per 100,000 member-years. By member, O/E compares each
# member's count with the alliance's rates for members of the same age and sex: above 1 means more avoidable
# admissions than expected.

# %%
pqi = em.pqi_table(tables, start=window[0], end=window[1], by=by, sponsor=chosen, min_cell=min_cell)
pqi = pres.with_interval_text(pqi)
pres.show_table(pqi[pqi["indicator"].isin(["90", "91", "92"])], f"pqi_by_{by}")

# %% [markdown]
# ## Chronic conditions
#
# The share of members with each condition recorded on a hospital stay in the reporting period. Only members who
# were admitted have diagnoses in the data, so these shares show conditions serious enough to appear in hospital
# care, far below how many members live with them.

# %%
chronic = em.chronic_prevalence(tables, start=period_start, end=period_end, by=by, sponsor=chosen,
                                min_cell=min_cell)
chronic = chronic[chronic["total"]]  # the alliance, or the member (all ages)
pres.show_table(pres.with_interval_text(chronic, percent=True), "chronic_prevalence")

# %% [markdown]
# ## Is the care-management programme working?
#
# The programme's members are compared with the members of the other alliance employers, who did not have it,
# before and after it started (a difference-in-differences): if both groups were moving alike before, the
# programme's effect is how much more its members' rate changed. The comparison allows for differences in age
# and sex and for changes over time that all members share. It assumes nothing else changed for the programme's
# members when it started.

# %%
findings = em.programme_findings(tables, programme_sponsor=programme_sponsor, programme_start=programme_start,
                                 window=window, sponsor=chosen, min_cell=min_cell, events=events)
pres.show_findings(findings)

# %% [markdown]
# ## Methods
#
# **Members and member-years.** Every enrollment period that names the employer (`enrollment.sponsor`) counts,
# from age 18, each day at the age on it; a member who moves to another employer counts for each in turn.
# Events (admissions, visits, payments) count for the employer whose period covers their date. Dependants under
# 18 are not included. Intervals of rates are exact Poisson intervals.
#
# **Avoidable admissions.** AHRQ PQI v2023 specifications: principal diagnosis lists, each indicator's
# exclusions, and the shared exclusions (transfers from another facility, obstetric and newborn admissions);
# counted in the period of discharge, as AHRQ counts them. O/E: indirect standardisation by age band and sex to
# the pooled alliance.
#
# **Programme effect.** Quarterly counts of each member against the counts expected for its members' ages and
# sex at the alliance's rates, in a Poisson model with member and quarter effects and a term for the programme's
# quarters from its start; the interval is model-based, widened for extra variation between quarters. A
# segmented regression of the difference between the programme's rate and the others' is computed beside it.

# %%
display(Markdown(f"**Privacy.** No patient-level data or identifiers are shown. Counts from 1 to {min_cell - 1}, "
                 "and any value that would reveal one (a rate, a ratio, another cell of the same total), are "
                 "shown as \"suppressed\"; chart points for such quarters are left blank."))
if kpi_path:
    rpt.write_kpis(em.kpi_record(utilisation, period=latest), kpi_path)
