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
market: str = "Northvale"
period_start: str = "2024-01-01"
period_end: str = "2024-12-31"
conditions: str = "all"
measures: str = "all"
data: str = ""  # contract tables or an ingested dataset; empty: the sample (carequal.sample)
work: str = ""  # patient-level work files; empty: <data>.work beside the data folder
reference: str = ""
min_cell: int = 11
kpi_path: str = ""

# %% tags=["setup"]
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from carequal import plots
from carequal import presentation as pres
from carequal import report as rpt
from carequal import screening as scr
from carequal.inputs import market_inputs
from carequal.national import MEASURES
from carequal.sample import notebook_folders

# third-party deprecation chatter is not for leaders; carequal's own warnings are turned into findings
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
plots.set_theme()
plt.rcParams["figure.dpi"] = 96

data, work = notebook_folders(data, work)  # run by hand with data empty: the sample
dataset, reference_dir = market_inputs(data, work, reference=reference, period_start=period_start,
                                       period_end=period_end)
mr = rpt.load_market_report(dataset, reference_dir, market, period_start=period_start,
                            period_end=period_end, measures=measures, conditions=conditions, min_cell=min_cell)
kpis = rpt.headline_kpis(mr.rows, period=mr.period, previous=mr.previous, measures=mr.measures,
                         min_cell=mr.min_cell)
card = rpt.facility_scorecard(mr.rows, mr.facilities[mr.facilities["market"] == market], period=mr.period,
                              measures=mr.measures, min_cell=mr.min_cell)
if kpi_path:
    rpt.write_kpis(rpt.kpi_record(kpis, card, rpt.recent_rates(mr.rows, mr.measures, end=mr.period[1],
                                                                min_cell=mr.min_cell)), kpi_path)




display(HTML(pres.REPORT_CSS))


# %%
display(Markdown(rpt.report_title(mr)))
charts = {name: rpt.trend_chart(mr.rows, name, min_cell=mr.min_cell, end=mr.period[1]) for name in mr.measures}
pres.show_glance(rpt.at_a_glance(kpis, card, charts, since=mr.period[0]))

# %% [markdown]
# ## Headline findings
#
# Rates are for index hospital stays of the market's facilities; "expected" is what the national risk model
# predicts for these same patients at an average facility, so O/E above 1 means more events than expected.

# %%
pres.show_findings(rpt.headline_findings(kpis, market=market, period=mr.period, previous=mr.previous)
                   + rpt.unavailable_findings(mr))
pres.show_table(kpis, "headline")

# %% [markdown]
# ## Partner scorecard
#
# Each facility against the national expectation for its own patients. A facility is called higher or lower
# than expected only when the 95% interval of its O/E lies wholly above or below 1; facilities with fewer than
# 25 cases are not judged.

# %%
pres.show_findings(rpt.partner_findings(card))
shown_card = rpt.scorecard_display(card)
for name in mr.measures:
    part = shown_card[shown_card["measure"] == name]
    display(Markdown(f"**{MEASURES[name].label}** (judging each {MEASURES[name].unit_kind})"))
    pres.show_table(part, "scorecard")

# %% [markdown]
# ## Which facilities stand out?
#
# Funnel plots: each dot is a facility, placed by its size (expected events) and its O/E. Dots outside the
# funnel differ from expectation by more than chance explains. The caterpillar plots rank the same facilities
# with their 95% intervals; partners are highlighted.

# %%
for name in mr.measures:
    funnel, left_off, _notes = rpt.funnel_for(mr.rows, card, name, period=mr.period)
    if funnel is None:
        display(Markdown(f"*{MEASURES[name].label}: no facility has enough cases to chart.*"))
        continue
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5))
    plots.funnel_plot(funnel, label_col="name", partner="is_partner", ax=ax1,
                      title=f"{MEASURES[name].label}: funnel")
    shown, _ = rpt.shown_for_chart(card, name)
    plots.caterpillar_plot(shown, label="name", partner="is_partner", ax=ax2,
                           title=f"{MEASURES[name].label}: O/E with 95% intervals", xlabel="Observed / expected")
    plots.show(fig)
    if left_off:
        display(Markdown(f"*{left_off} facilit{'y' if left_off == 1 else 'ies'} with too few cases or small "
                         "numbers not shown.*"))

# %% [markdown]
# ## Trends and signals
#
# Monthly rates for the market's facilities on a statistical process control chart: the dash-dot centre line is
# the average, the dotted and dashed lines the 2σ and 3σ limits. Marked points (▲ concern, ▼ improvement) are
# special-cause signals worth investigating; movement inside the limits is ordinary month-to-month variation.
# Months with small numbers are left blank.

# %%
for name in mr.measures:
    chart = charts[name]
    pres.show_findings(rpt.trend_findings(chart, MEASURES[name].label, since=mr.period[0]))
    if len(chart) >= 3:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 4.8))
        plots.spc_plot(chart, ax=ax1, title=f"{MEASURES[name].label}: {chart.attrs['freq']}ly control chart")
        by_partner = rpt.trend_chart(mr.rows, name, freq="quarter", by_partner=True, min_cell=mr.min_cell,
                                     end=mr.period[1])
        plots.trend_plot(by_partner, hue="partner", ax=ax2,
                         title=f"{MEASURES[name].label}: partners and others, by quarter")
        plots.show(fig)

# %% [markdown]
# ## Where patients go after the hospital
#
# Discharges from the market's hospitals in the reporting period, by the post-acute setting that followed
# within a day, and hospital by hospital to each post-acute provider.

# %%
dest = rpt.destination_table(mr.rows, period=mr.period, min_cell=mr.min_cell)
pres.show_findings(rpt.destination_findings(dest))
pres.show_table(dest, "destinations")
flows = rpt.flow_table(mr.tables, mr.rows, market=market, period=mr.period, min_cell=mr.min_cell)
chart_flows, left_off = rpt.flow_for_chart(flows)
if len(chart_flows):
    ax = plots.flow_heatmap(chart_flows, source="hospital", target="pac_facility", partner="pac_is_partner",
                            title="Discharges from each hospital to each post-acute provider")
    plt.setp(ax.get_xticklabels(), rotation=40, ha="right")
    plots.show(ax.figure)
if left_off:
    display(Markdown(f"*{left_off} post-acute provider(s) with only small numbers of discharges not shown.*"))

# %% [markdown]
# ## Candidate partners
#
# The market's skilled nursing, rehabilitation, long-term care and home health providers that are not yet
# partners, screened as candidates. Each is judged against a benchmark: **readmission** within 30 days of
# every patient referred to it (from any hospital) against the national expectation for the same patients;
# **discharge to community** (home, alive and not readmitted for 31 days) against the rate expected for
# residents of the same age, sex and dual eligibility in its setting; **nurse staffing** hours per patient day
# against the median of the market's providers of its setting (more than 10% away). Length of stay is shown
# against the setting's median but not scored. A result is "better" or "worse" only when its 95% interval
# excludes the benchmark; with fewer than 25 cases it is not judged.
#
# **Ranking.** Score: +1 for each of readmission, discharge to community and staffing better than its
# benchmark, −1 for each worse. Providers judged on readmission or discharge to community come first (above the
# dashed line), by score, then by discharges from the market's hospitals; the others follow in the same order.
# A screen, not a verdict: it points to providers worth a closer look.

# %%
candidates = scr.candidate_table(mr, card, flows)
pres.show_findings(scr.market_candidate_findings(candidates, mr))
if len(candidates):
    ax = plots.candidate_plot(candidates, title=f"{market}: candidate partners against their benchmarks")
    plots.show(ax.figure)
    pres.show_table(scr.candidate_display(candidates))

# %% [markdown]
# ## Population health
#
# Use of care by the market's residents aged 65 and over, per 1,000 person-years of enrollment, directly
# standardised by age and sex to the 2000 U.S. population of those ages, so that markets with older
# populations can be compared fairly.

# %%
pop = rpt.population_table(mr.tables, market=market, period=mr.period, min_cell=mr.min_cell)
pres.show_table(pres.with_interval_text(pop), "population")
display(Markdown("**Chronic conditions** among residents with a hospital or post-acute stay in the period:"))
chronic = rpt.chronic_table(mr.tables, market=market, period=mr.period, min_cell=mr.min_cell)
pres.show_table(chronic, "chronic")

# %% [markdown]
# ## Partnership impact
#
# Did readmissions of patients sent to partner post-acute providers change once each partnership began,
# relative to other providers over the same quarters? (Difference-in-differences, adjusted for patient risk.)

# %%
pres.show_findings([rpt.impact_finding(rpt.impact_summary(mr.tables, market=market, cohort=mr.cohort),
                                      min_cell=mr.min_cell)])

# %% [markdown]
# ## Appendix: methods and data quality
#
# **Cohort.** Index stays follow the CMS hospital-wide readmission conventions: acute stays of patients 65 and
# over, transfers chained into one episode, in-hospital deaths and discharges against medical advice
# excluded, 12 months of enrollment before and 30 days after required. **Outcomes.** Unplanned readmission to
# any acute hospital within 30 days of discharge (CMS Planned Readmission Algorithm); death within 30 days of
# admission; post-acute readmission attributed to the provider that received the patient. **Expected
# rates.** A national random-intercept logistic model per measure (age, sex, dual eligibility, population,
# secondary diagnoses, chemotherapy and condition), fitted on the reporting period across all markets; O/E
# intervals are exact Poisson below 10 events and Byar's approximation above.

# %%
display(Markdown("**Data quality at ingest** (all markets):"))
validation = rpt.validation_table(mr.validation, min_cell=mr.min_cell)
if len(validation):
    pres.show_table(validation, "validation")
display(Markdown("**Cohort attrition** (acute stays of the market's residents):"))
pres.show_table(rpt.attrition_table(mr.attrition if mr.attrition is not None else mr.tables,
                                   min_cell=mr.min_cell), "attrition")
display(Markdown("**National risk models:**"))
pres.show_table(rpt.model_table(mr.reference.models))

# %%
if mr.measures:
    fig, axes = plt.subplots(1, len(mr.measures), figsize=(5.5 * len(mr.measures), 4.8), squeeze=False)
    for ax, name in zip(axes[0], mr.measures, strict=True):
        calib = mr.reference.calibration[mr.reference.calibration["measure"] == name]
        plots.calibration_plot(calib, ax=ax, title=f"{MEASURES[name].label}: calibration")
    plots.show(fig)
pres.show_findings(rpt.unavailable_findings(mr) + rpt.report_notes(card, mr, candidates))
