"""Synthetic hospital / post-acute partnership data whose truth is known.

The generator writes the five contract tables (``facilities``, ``patients``, ``stays``, ``enrollment``,
``ed_visits``) and, beside them, the truth they were drawn from, so that methods (cohorts, readmission
measures, risk models, partnership comparisons) can be checked against a known answer.

Public API
----------
:class:`SynthConfig` (sizes and parameters), :func:`generate` (tables in memory), :func:`write_synthetic`
(CSV or Parquet files, block by block), :func:`config_for_stays` (a configuration for about *n* stays) and
:func:`truth` (the parameters, also written as ``truth.json``).

What is simulated
-----------------
*Markets and facilities.* Each market has acute hospitals and SNF, IRF, LTCH and HHA providers. The
partnership starts in each market on a launch date between 30 % and 55 % of the period: about 40 % of the
hospitals (the largest) join on that date, and a share ``partner_share`` of the post-acute providers of each
setting join on the launch date or up to 120 days later. Every facility has a random effect on the log-odds
of readmission, normal with SD ``facility_effect_sd``. Home-health agencies have no ``beds`` and no
``nurse_hours_ppd`` (empty).

*Patients.* A Medicare population (age 65–97 at the start, some ageing into Medicare during the period,
~17 % dual eligible, fee-for-service or Medicare Advantage coverage with yearly switches) and, optionally,
the employer populations below. Chronic conditions are drawn with a shared latent frailty, so comorbidities,
admissions and deaths are correlated.

*Employer populations.* The employees of ``n_sponsors`` alliance members (the plan sponsors, named
``enrollment.sponsor``; ``population_group = "employees"``, commercial coverage), ages 18–64: hired before or
during the period (20 %), leaving at 8 % a year and at 65, 2 % moving to another member on 1 January (a new
enrollment period). Dependants are not simulated. Their community admissions and ED visits come from Poisson
processes whose rates are known exactly by sponsor, period, age band and sex (:func:`employer_rates`): the
AHRQ PQI admissions (principal diagnoses from each indicator's v2023 list; the chronic indicators only for
people with the condition, whose prevalence by age band is fixed), other admissions and ED visits without
admission, each times a sponsor multiplier, a yearly trend of 0.97 and, for ``programme_sponsor``'s employees
from ``programme_start`` on, ``1 - programme_pqi_reduction`` (PQI) and ``1 - programme_ed_reduction`` (ED);
other admissions are not changed by the programme (a negative control). Days in a stay and the 30 days after an
acute discharge are not at risk of a new community admission (the true rates are per member-year at risk in
the community; the measured rates per member-year are a little lower). Acute payments are the Medicare amounts
times a sponsor multiplier (1.6–1.85). The employees are drawn from random streams of their own, so the
Medicare part of a seed does not depend on them (``truth.json``, ``employers``).

*Timelines.* Each patient's history is simulated forward, event by event, vectorised over patients (one loop
iteration handles the next acute stay of every patient still in the data). An acute stay comes from a
seasonal Poisson process (winter higher), a scheduled chemotherapy course (planned stays, ``Z51.11``), a
transfer from another hospital (discharge status ``02``, next stay on the same or the next day) or a
readmission drawn from the readmission model below. After discharge the patient may go to post-acute care
(status 03 SNF, 06 home health, 62 IRF, 63 LTCH: a stay in that setting in the same market starts on the
same or the next day; partner providers are chosen more often once their partnership has started), possibly
followed by a second post-acute stay (IRF/LTCH → SNF, or → home health).

*Readmissions.* For every acute discharge that is alive and not a transfer or hospice discharge::

    logit P(readmitted within 30 days) = intercept + coefficients · covariates
        + u[hospital] + v[first post-acute provider] + partnership_effect · partner_after_start
        + amplitude · cos(2π (day_of_year(discharge) − peak_day) / 365.25)

with the covariates, coefficients and definitions in :func:`truth`. A readmission is an unplanned acute stay
(admission type 1 or 2) starting 1–30 days after discharge; a post-acute stay running on that day ends on it
with status ``02``. Within those 30 days the only other acute stays are planned chemotherapy (``Z51.11``),
which a readmission postpones, and the stays that follow a chemotherapy stay; so the drawn outcome is
exactly the observable one: the first acute admission 1–30 days after discharge exists and is not planned
chemotherapy (as in the CMS rule that only the first readmission counts).

*Payments.* ``stays.payment``: acute stays by condition (lognormal noise, longer stays and PCI cost more,
employees times their sponsor's multiplier); SNF 530 a day; IRF and LTCH lognormal per stay; home health per
started 30-day period.
Every post-acute stay at a partner provider admitted on or after its ``partner_since`` is paid
``exp(payment_partnership_effect)`` times as much (default ``exp(-0.15)`` = 0.86): a fixed multiplier, not a
random draw, so the rest of the data does not depend on it. Amounts and the effect are in ``truth.json``.

*Post-acute outcomes.* A post-acute stay that is not ended by a readmission ends in the community
(01 home, 06 home health) with a logistic probability (``discharge_to_community`` in :func:`truth`);
otherwise in death, hospice, a nursing facility (64) or, from IRF/LTCH, a SNF.

Outputs and truth files
-----------------------
``write_synthetic`` writes ``<table>.csv`` (or ``.parquet``) for the contract tables plus:

``truth.json``
    ``seed``, ``config`` (every :class:`SynthConfig` field), ``period``, ``readmission`` (``intercept``,
    ``coefficients``, ``covariates`` (definitions), ``facility_effect_sd``, ``partnership_effect``,
    ``partnership_definition``, ``seasonality``, ``day_offsets``), ``in_hospital_death``,
    ``post_discharge_death``, ``discharge_to_community``, ``partnership_choice``, ``admissions``,
    ``acute_discharge_status_weights``, ``length_of_stay``, ``payment`` (amounts per setting and
    ``partnership_effect``), ``comorbidities``, ``employers`` (sponsors, programme, every true employer rate's
    parts) and ``files``.
``truth_facility_effects.csv``
    ``facility_id``, ``setting``, ``effect`` (readmission log-odds effect; a post-acute provider's effect
    lowers its discharge-to-community log-odds by the same amount).
``truth_stays.csv``
    ``stay_id``, ``p_readmit`` and ``readmit`` (acute discharges with a readmission draw), ``p_community``
    and ``community`` (post-acute stays not ended by a readmission); empty where not applicable.

Determinism
-----------
Facilities use the random stream ``SeedSequence(seed, spawn_key=(0,))``; patients are generated in blocks of
``chunk_patients`` and Medicare block ``b`` uses ``SeedSequence(seed, spawn_key=(1, b))`` (the ``b``-th child of the
second child of ``SeedSequence(seed)``), employee block ``b`` ``spawn_key=(2, b)``, so a block does not depend on
any other, the Medicare part does not depend on the employer settings, and the files are byte-identical for the
same configuration. (Medicare blocks still make the draws of a simpler under-65 group of earlier versions and drop
its people, :data:`_FORMER_EMPLOYEE_SHARE`, so every earlier seed's Medicare rows are unchanged.)
``chunk_patients`` is part of the recipe: another block size
gives another (equally valid) sample.

Size: about 2,350 lines, one module because the generator is one simulation: within a block, calendar, people and
stays are drawn from one random stream in a fixed order (above), so that a seed reproduces the data, and the truth it
writes must name the same parameters the draws used; split, that order and those parameters would be spread across
files.

Examples
--------
>>> cfg = SynthConfig(n_markets=1, patients_per_market=300, hospitals_per_market=2, snf_per_market=2,
...                   irf_per_market=1, ltch_per_market=1, hha_per_market=1)
>>> tables = generate(cfg)
>>> sorted(tables)
['ed_visits', 'enrollment', 'facilities', 'patients', 'stays', 'truth_facility_effects', 'truth_stays']
>>> tables["stays"].equals(generate(cfg)["stays"])
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy.special import ndtr

from carequal.errors import ParameterError
from carequal.schema import CONTRACT

__all__ = ["SynthConfig", "config_for_stays", "generate", "truth", "write_synthetic"]

CONTRACT_TABLES: tuple[str, ...] = ("facilities", "patients", "stays", "enrollment", "ed_visits")
TRUTH_TABLES: tuple[str, ...] = ("truth_facility_effects", "truth_stays")

SETTINGS: tuple[str, ...] = ("acute", "snf", "irf", "ltch", "hha")
_ACUTE, _SNF, _IRF, _LTCH, _HHA = range(5)

CONDITIONS: tuple[str, ...] = ("hf", "ami", "pneumonia", "copd", "sepsis", "stroke", "hip_knee", "chemo", "other")
_HF, _AMI, _PN, _COPD, _SEPSIS, _STROKE, _HIPKNEE, _CHEMO, _OTHER = range(9)

_STATUS: tuple[str, ...] = ("01", "02", "03", "06", "07", "20", "50", "51", "62", "63", "64")
_S = {code: i for i, code in enumerate(_STATUS)}
_ADMISSION_TYPES: tuple[str, ...] = ("1", "2", "3", "5", "9")
_POA: tuple[str, ...] = ("Y", "N", "U", "W", "1")
_SEX: tuple[str, ...] = ("F", "M")
_COVERAGE: tuple[str, ...] = ("ffs", "ma", "commercial")
_GROUPS: tuple[str, ...] = ("medicare", "employees")

_INF = 10**9
_SPONTANEOUS, _PLANNED, _READMISSION, _TRANSFER = range(4)

_MARKET_NAMES: tuple[str, ...] = (
    "Northvale", "Riverton", "Lakeshore", "Cedar Falls", "Pinehurst", "Millbrook", "Eastport", "Westfield",
    "Stonebridge", "Fairhaven", "Ashford", "Brookside", "Clearwater", "Dunmore", "Elmwood", "Foxborough",
)
_NAME_PREFIXES: tuple[str, ...] = (
    "North", "South", "East", "West", "Oak", "Maple", "Pine", "Cedar", "Elm", "Ash", "Birch", "Willow",
    "Stone", "Clear", "Fair", "Green", "High", "Lake", "River", "Spring", "Silver", "Golden", "Red", "Blue",
    "Fox", "Bear", "Eagle", "Hawk", "Deer", "Wolf",
)
_NAME_SUFFIXES: tuple[str, ...] = (
    "vale", "ton", "field", "ford", "port", "brook", "haven", "wood", "ridge", "bridge", "view", "dale",
    "mont", "burg", "crest", "land",
)
_FACILITY_STEMS: dict[int, tuple[str, ...]] = {
    _ACUTE: ("General Hospital", "Memorial Hospital", "Regional Medical Center", "Community Hospital",
             "St. Luke's Hospital", "University Hospital", "Mercy Hospital", "Valley Medical Center",
             "Baptist Hospital", "County Hospital", "Methodist Hospital", "Sisters of Charity Hospital"),
    _SNF: ("Care Center", "Rehabilitation and Nursing", "Health Care Center", "Gardens Nursing Home",
           "Manor", "Transitional Care", "Post-Acute Center", "Senior Rehab", "Healthcare and Rehab",
           "Nursing and Rehabilitation Center"),
    _IRF: ("Rehabilitation Hospital", "Rehab Institute", "Acute Rehabilitation Center"),
    _LTCH: ("Specialty Hospital", "Long-Term Acute Care Hospital", "Continuing Care Hospital"),
    _HHA: ("Home Health", "Visiting Nurse Association", "Home Care Services", "Home Health Partners"),
}
_FACILITY_PREFIX = {_ACUTE: "H", _SNF: "S", _IRF: "R", _LTCH: "L", _HHA: "A"}


@dataclass
class SynthConfig:
    """Size and parameters of a synthetic dataset.

    Parameters
    ----------
    seed : int
        Seed of every random draw (see the module notes on determinism).
    n_markets : int
        Number of markets. The first 16 have fixed names (Northvale, Riverton, Lakeshore, ...), the rest are
        composed names.
    patients_per_market : int
        Medicare beneficiaries per market (the employee population comes on top).
    hospitals_per_market, snf_per_market, irf_per_market, ltch_per_market, hha_per_market : int
        Providers of each setting per market (at least one hospital; a setting with none is never chosen).
    start, end : str
        First and last day of the data (ISO dates); stays are kept when they end within it.
    employee_population : bool
        Add the employer populations: the employees (ages 18-64, ``population_group = "employees"``, commercial
        coverage with a ``sponsor``) of ``n_sponsors`` alliance members (see *Employer populations* above).
    employee_share : float
        Employees of all sponsors together per Medicare beneficiary (``n_markets * patients_per_market``); may
        be above 1 (a large employer population beside a small Medicare one).
    n_sponsors : int
        Alliance members whose employees are simulated (the plan sponsors; 1 to 99). Member ``j`` (from 1) is
        based in market ``(j - 1) % n_markets``; sizes fall in the ratio ``n : n - 1 : ... : 1``.
    programme_sponsor : int
        The member (1 to ``n_sponsors``) that starts the care-management programme; 0 for none.
    programme_start : str
        The programme's start date (ISO), after ``start`` and not after ``end``.
    programme_pqi_reduction, programme_ed_reduction : float
        Relative reduction (0 to < 1) of the PQI admission rates and of the ED visit rate of the programme
        sponsor's employees from ``programme_start`` on (the rate is multiplied by ``1 - reduction``); other
        admissions are not changed (a negative control).
    chunk_patients : int
        Patients per generation block (memory bound; part of the random recipe).
    partner_share : float
        Share of the post-acute providers of each setting and market that join the partnership.
    facility_effect_sd : float
        SD of the facility random effects (log-odds of readmission).
    partnership_effect : float
        Log-odds effect on readmission of discharge to a partner post-acute provider after it joined.
    payment_partnership_effect : float
        Log multiplier of the payment of every post-acute stay (SNF, IRF, LTCH, HHA) at a partner provider
        admitted on or after its ``partner_since``: the payment is multiplied by ``exp(effect)`` (no random draw,
        so every other value is the same as with 0).
    truth_stays : bool
        Also produce the per-stay truth table ``truth_stays``.

    Examples
    --------
    >>> SynthConfig().n_markets
    3
    >>> SynthConfig(n_markets=0)
    Traceback (most recent call last):
    ...
    carequal.errors.ParameterError: SynthConfig.n_markets must be at least 1, not 0
    """

    seed: int = 20240601
    n_markets: int = 3
    patients_per_market: int = 6800
    hospitals_per_market: int = 4
    snf_per_market: int = 6
    irf_per_market: int = 2
    ltch_per_market: int = 1
    hha_per_market: int = 4
    start: str = "2022-01-01"
    end: str = "2024-12-31"
    employee_population: bool = True
    employee_share: float = 0.3
    n_sponsors: int = 4
    programme_sponsor: int = 2
    programme_start: str = "2023-07-01"
    programme_pqi_reduction: float = 0.25
    programme_ed_reduction: float = 0.15
    chunk_patients: int = 50_000
    partner_share: float = 0.4
    facility_effect_sd: float = 0.25
    partnership_effect: float = -0.3
    payment_partnership_effect: float = -0.15
    truth_stays: bool = True

    def __post_init__(self) -> None:
        minimum = {"n_markets": 1, "patients_per_market": 1, "hospitals_per_market": 1, "snf_per_market": 0,
                   "irf_per_market": 0, "ltch_per_market": 0, "hha_per_market": 0, "chunk_patients": 1}
        for name, lo in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < lo:
                raise ParameterError(f"SynthConfig.{name} must be at least {lo}, not {value!r}")
        if self.n_markets > 999 or self.hospitals_per_market > 999 or max(
                self.snf_per_market, self.irf_per_market, self.ltch_per_market, self.hha_per_market) > 999:
            raise ParameterError("SynthConfig: at most 999 markets and 999 facilities of a setting per market")
        try:
            start, end = pd.Timestamp(self.start), pd.Timestamp(self.end)
        except ValueError as exc:
            raise ParameterError(f"SynthConfig.start/end must be ISO dates: {exc}") from exc
        if end < start + pd.Timedelta(days=180):
            raise ParameterError(f"SynthConfig: the period {self.start} to {self.end} must span 180 days or more")
        if not 0 <= self.partner_share <= 1:
            raise ParameterError(f"SynthConfig.partner_share must be between 0 and 1, not {self.partner_share!r}")
        if not isinstance(self.employee_share, int | float | np.integer | np.floating) or not (
                np.isfinite(self.employee_share) and self.employee_share >= 0):
            raise ParameterError(f"SynthConfig.employee_share must be a number of at least 0, not "
                                 f"{self.employee_share!r}")
        if not isinstance(self.n_sponsors, int | np.integer) or not 1 <= self.n_sponsors <= 99:
            raise ParameterError(f"SynthConfig.n_sponsors must be from 1 to 99, not {self.n_sponsors!r}")
        if not isinstance(self.programme_sponsor, int | np.integer) or not 0 <= self.programme_sponsor <= \
                self.n_sponsors:
            raise ParameterError(f"SynthConfig.programme_sponsor must be from 0 (no programme) to n_sponsors "
                                 f"({self.n_sponsors}), not {self.programme_sponsor!r}")
        try:
            programme = pd.Timestamp(self.programme_start)
        except ValueError as exc:
            raise ParameterError(f"SynthConfig.programme_start must be an ISO date: {exc}") from exc
        if not start < programme <= end:
            raise ParameterError(f"SynthConfig.programme_start {self.programme_start} must be after start "
                                 f"({self.start}) and not after end ({self.end})")
        for name in ("programme_pqi_reduction", "programme_ed_reduction"):
            value = getattr(self, name)
            if not isinstance(value, int | float | np.integer | np.floating) or not 0 <= value < 1:
                raise ParameterError(f"SynthConfig.{name} must be from 0 to less than 1, not {value!r}")
        if self.facility_effect_sd < 0:
            raise ParameterError(f"SynthConfig.facility_effect_sd must be >= 0, not {self.facility_effect_sd!r}")
        for name in ("partnership_effect", "payment_partnership_effect"):
            value = getattr(self, name)
            if not isinstance(value, int | float | np.integer | np.floating) or not np.isfinite(value):
                raise ParameterError(f"SynthConfig.{name} must be a finite number, not {value!r}")


# ------------------------------------------------------------------------------------------ the known model

READMISSION_INTERCEPT = -2.2
READMISSION_COEFFICIENTS: dict[str, float] = {
    "age10": 0.05, "comorbidity_count": 0.13, "dual_eligible": 0.20, "male": 0.05, "employees": -0.30,
    "condition_hf": 0.40, "condition_ami": 0.10, "condition_pneumonia": 0.10, "condition_copd": 0.30,
    "condition_sepsis": 0.25, "condition_stroke": -0.05, "condition_hip_knee": -1.20, "condition_chemo": 0.35,
    "discharge_ama": 0.60, "discharge_snf": 0.25, "discharge_hha": 0.10, "discharge_irf": -0.10,
    "discharge_ltch": 0.35,
}
SEASONAL_AMPLITUDE = 0.12
SEASONAL_PEAK_DAY = 15
READMIT_DAY_SCALE = 12.0
"""Readmission day d (1–30 after discharge) has probability proportional to exp(−d / 12)."""

IN_HOSPITAL_DEATH: dict[str, object] = {
    "intercept_by_condition": {"hf": -4.0, "ami": -3.6, "pneumonia": -3.7, "copd": -4.4, "sepsis": -2.4,
                               "stroke": -3.4, "hip_knee": -7.0, "chemo": -4.9, "other": -4.3},
    "coefficients": {"age10": 0.35, "comorbidity_count": 0.10},
}
POST_DISCHARGE_DEATH: dict[str, object] = {
    "intercept": -4.6,
    "coefficients": {"age10": 0.5, "comorbidity_count": 0.15, "condition_hf": 0.5, "condition_ami": 0.2,
                     "condition_pneumonia": 0.4, "condition_copd": 0.3, "condition_sepsis": 0.6,
                     "condition_stroke": 0.3, "condition_hip_knee": -1.5, "condition_chemo": 1.0},
}
COMMUNITY_MODEL: dict[str, object] = {
    "intercept_by_setting": {"snf": 0.05, "irf": 1.15, "ltch": -0.85, "hha": 2.1},
    "coefficients": {"age10": -0.30, "comorbidity_count": -0.10, "partner_after_start": 0.20},
    "facility_effect_sign": -1.0,
}
_COMMUNITY_SPLIT = {  # where a post-acute stay ends: community codes, then the rest
    _SNF: ((("01", .55), ("06", .45)), (("20", .30), ("50", .12), ("51", .08), ("64", .50))),
    _IRF: ((("01", .35), ("06", .65)), (("03", .70), ("20", .05), ("50", .10), ("64", .15))),
    _LTCH: ((("01", .35), ("06", .65)), (("03", .40), ("20", .35), ("50", .10), ("51", .05), ("64", .10))),
    _HHA: ((("01", 1.0),), (("20", .30), ("50", .45), ("64", .25))),
}
PARTNER_CHOICE_LOG_BOOST = 0.9
"""Log multiplier of a partner post-acute provider's choice weight once its partnership has started."""
PARTNER_HOSPITAL_LOG_BOOST = 0.5
"""Further log multiplier when the discharging hospital is itself a partner (after its start)."""

ADMISSION_RATE = {"medicare": 0.34, "employees": 0.045}
"""Yearly rate of unplanned acute admissions before frailty, age and dual-eligibility multipliers."""
ADMISSION_SEASONAL_AMPLITUDE = 0.15
DEATH_RATE = {"medicare": 0.022, "employees": 0.0015}
ED_RATE = {"medicare": 0.30, "employees": 0.12}

_ACUTE_DISPOSITIONS = ("01", "02", "03", "06", "62", "63", "50", "51", "07")
ACUTE_DISCHARGE_WEIGHTS: dict[str, tuple[float, ...]] = {
    # relative weights of _ACUTE_DISPOSITIONS among patients discharged alive
    "hf": (48, 2, 18, 22, 1, 1, 1.5, .8, 1),
    "ami": (60, 6, 12, 14, 2, .5, .9, .5, 1),
    "pneumonia": (47, 1.2, 22, 18, 1.2, 1.2, 1.9, 1.1, 1.2),
    "copd": (55, 1, 14, 22, 1, 1, 1.1, .8, 2),
    "sepsis": (36, 1.2, 30, 18, 2, 3, 3, 1.9, 1),
    "stroke": (34, 3, 22, 12, 22, 1, 1.9, 1.1, 1),
    "hip_knee": (45, .2, 12, 38, 4, 0, 0, 0, .1),
    "chemo": (88, 0, 2, 6, 0, 0, 1.5, 1, .5),
    "other": (56, 1.5, 18, 15, 3, 1, 1.1, .8, 1.5),
}
ACUTE_LOS = {  # median days and log-scale SD
    "hf": (4.5, .55), "ami": (3.5, .6), "pneumonia": (4.5, .55), "copd": (4.0, .55), "sepsis": (6.0, .6),
    "stroke": (4.0, .6), "hip_knee": (2.0, .4), "chemo": (4.0, .5), "other": (4.0, .6),
}
PAC_LOS = {"snf": (24.0, .55, 1, 100), "irf": (13.0, .3, 3, 60), "ltch": (25.0, .35, 5, 120)}
"""Median, log-scale SD, minimum and maximum length of stay; home health episodes are 30-day periods."""

_SPONTANEOUS_MIX = {
    "medicare": {"hf": .09, "ami": .04, "pneumonia": .07, "copd": .045, "sepsis": .085, "stroke": .045,
                 "hip_knee": .05, "other": .575},
    "employees": {"hf": .02, "ami": .05, "pneumonia": .05, "copd": .01, "sepsis": .04, "stroke": .02,
                  "hip_knee": .07, "other": .74},
}

# Chronic conditions: key, Medicare prevalence at 75, log-odds per 10 years, employee prevalence,
# counted in comorbidity_count, ICD-10-CM codes and their shares.
_CHRONIC = (
    ("diabetes", .28, -0.05, .07, True, ("E11.9", "E11.65", "E11.22"), (.65, .2, .15)),
    ("chf", .14, .35, .005, True, ("I50.9", "I50.22", "I50.32"), (.4, .3, .3)),
    ("af", .15, .45, .01, True, ("I48.91", "I48.0", "I48.20"), (.5, .3, .2)),
    ("copd", .12, .10, .01, True, ("J44.9",), (1.0,)),
    ("ckd", .16, .30, .01, True, ("N18.30", "N18.31", "N18.32", "N18.4"), (.4, .25, .2, .15)),
    ("dementia", .09, .80, 0.0, True, ("F03.90", "G30.9"), (.75, .25)),
    ("obesity", .14, -.35, .30, True, ("E66.9", "E66.01"), (.7, .3)),
    ("depression", .14, 0.0, .10, True, ("F32.9", "F32.A"), (.6, .4)),
    ("anemia", .12, .25, .03, True, ("D64.9", "D63.1"), (.7, .3)),
    ("metastatic_cancer", .025, 0.0, .004, True, ("C78.00", "C78.7", "C79.51", "C79.31"), (.3, .3, .3, .1)),
    ("malnutrition", .04, .40, .003, True, ("E44.0", "E43"), (.6, .4)),
    ("hypertension", .62, .20, .22, False, ("I10",), (1.0,)),
    ("hyperlipidemia", .45, 0.0, .20, False, ("E78.5",), (1.0,)),
)
# N18.3 was split into N18.30-N18.32 in October 2020, so 2022-2024 data carry the new codes.
_CHRONIC_KEYS = tuple(c[0] for c in _CHRONIC)
_CK = {k: i for i, k in enumerate(_CHRONIC_KEYS)}
_CODED_SHARE = 0.85
"""Probability that a chronic condition the patient has is coded on a given acute stay (0.7 on PAC stays)."""

# Principal diagnoses by condition: code, share, principal on a post-acute stay that follows.
_PRINCIPAL = {
    "hf": (("I50.23", .15, "I50.23"), ("I50.33", .15, "I50.33"), ("I50.43", .05, "I50.43"),
           ("I50.21", .05, "I50.22"), ("I50.31", .05, "I50.32"), ("I50.9", .15, "I50.9"),
           ("I11.0", .25, "I11.0"), ("I13.0", .15, "I13.0")),
    "ami": (("I21.4", .55, "I21.4"), ("I21.A1", .12, "I21.A1"), ("I21.09", .10, "I25.10"),
            ("I21.19", .10, "I25.10"), ("I21.29", .05, "I25.10"), ("I21.3", .08, "I21.3")),
    "pneumonia": (("J18.9", .60, "J18.9"), ("J15.9", .08, "J15.9"), ("J15.1", .04, "J15.1"),
                  ("J13", .05, "J13"), ("J69.0", .15, "J69.0"), ("J15.212", .03, "J15.212"),
                  ("J18.1", .05, "J18.1")),
    "copd": (("J44.1", .60, "J44.1"), ("J44.0", .25, "J44.1"), ("J96.01", .10, "J96.01"),
             ("J96.02", .05, "J96.02")),
    "sepsis": (("A41.9", .75, "A41.9"), ("A41.51", .10, "A41.51"), ("A41.01", .05, "A41.01"),
               ("A41.89", .05, "A41.89"), ("A41.02", .05, "A41.02")),
    "stroke": (("I63.9", .35, "I69.398"), ("I63.512", .15, "I69.351"), ("I63.511", .15, "I69.354"),
               ("I63.412", .08, "I69.351"), ("I63.411", .08, "I69.354"), ("I63.81", .09, "I69.398"),
               ("I63.50", .10, "I69.398")),
    "hip_knee": (("M16.11", .20, "Z47.1"), ("M16.12", .20, "Z47.1"), ("M17.11", .30, "Z47.1"),
                 ("M17.12", .30, "Z47.1")),
    "chemo": (("Z51.11", 1.0, "R53.81"),),
    "other": (("N39.0", .11, "N39.0"), ("K92.2", .06, "K92.2"), ("S72.001A", .02, "S72.001D"),
              ("S72.002A", .02, "S72.002D"), ("E86.0", .04, "E86.0"), ("N17.9", .07, "N17.9"),
              ("R55", .05, "R55"), ("K56.609", .03, "K56.609"), ("I48.91", .06, "I48.91"),
              ("U07.1", .06, "U07.1"), ("A04.72", .02, "A04.72"), ("L03.115", .04, "L03.115"),
              ("E11.65", .03, "E11.65"), ("K57.32", .03, "K57.32"), ("K85.90", .02, "K85.90"),
              ("G93.41", .04, "G93.41"), ("R07.9", .04, "R07.9"), ("I26.99", .03, "I26.99"),
              ("E87.1", .02, "E87.1"), ("I95.9", .02, "I95.9"), ("R42", .02, "R42")),
}
_PAC_DEBILITY = ("M62.81", "R26.89")
"""Principal diagnoses of a post-acute stay in 30 % of SNF and home-health stays (weakness, gait)."""

# Principal codes that already say what a chronic category would (the category is not coded again), and
# combination codes that require another category ("use additional code").
_SUPPRESS = {"I50": ("chf",), "I11.0": ("hypertension",), "I13.0": ("hypertension",), "J44": ("copd",),
             "J96": ("copd",), "I48": ("af",), "E11": ("diabetes",), "I11.9": ("hypertension",),
             "I16": ("hypertension",)}
_FORCE = {"I11.0": ("chf",), "I13.0": ("chf", "ckd"), "E11.22": ("ckd",), "I70.261": ("diabetes",),
          "I70.262": ("diabetes",), "I96": ("diabetes",)}
_COMPANION = {"J44.0": "J20.9", "J96.01": "J44.1", "J96.02": "J44.1"}

# Acute secondary diagnoses: codes of one slot (at most one drawn), probability by condition ("*" default),
# probability that the code was not present on admission.
_EXTRA_SLOTS = (
    (("R65.20", "R65.21"), {"sepsis": (.35, .15)}, 0.0),
    (("N17.9",), {"*": (.10,), "sepsis": (.35,), "hf": (.20,)}, .20),
    (("E87.1",), {"*": (.07,)}, .15),
    (("E86.0",), {"*": (.06,)}, .10),
    (("N39.0",), {"*": (.06,)}, .30),
    (("J96.01",), {"copd": (.10,), "pneumonia": (.12,), "hf": (.08,), "sepsis": (.10,)}, .15),
    (("D62",), {"*": (.02,), "hip_knee": (.15,)}, .50),
    (("F05",), {"*": (.04,)}, .35),
    (("R13.10",), {"stroke": (.25,)}, .10),
    (("G81.91", "G81.94"), {"stroke": (.20, .15)}, .05),
    (("L89.154",), {"*": (.01,)}, .50),
    (("Z66",), {"*": (.05,), "sepsis": (.12,)}, 0.0),
    (("Z79.01",), {"*": (.06,)}, 0.0),
    (("Z87.891",), {"*": (.18,)}, 0.0),
)
_CANCER_SITES = ("C34.90", "C18.9", "C25.9", "C85.90", "C20")

# Procedures: by principal code (code, probability), and one more by condition.
_PRINCIPAL_PROCEDURE = {
    "M16.11": ("0SR9019", 1.0), "M16.12": ("0SRB019", 1.0), "M17.11": ("0SRC0J9", 1.0),
    "M17.12": ("0SRD0J9", 1.0), "S72.001A": ("0QS604Z", .8), "S72.002A": ("0QS704Z", .8),
    "I21.4": ("027034Z", .45), "I21.09": ("027034Z", .75), "I21.19": ("027034Z", .75),
    "I21.29": ("027034Z", .70), "I21.3": ("027034Z", .70), "Z51.11": ("3E04305", .95),
    "I63.9": ("3E03317", .10), "I63.512": ("3E03317", .12), "I63.511": ("3E03317", .12),
    "J96.01": ("5A1935Z", .30), "J96.02": ("5A1935Z", .30), "K92.2": ("30233N1", .40),
}
_CONDITION_PROCEDURE = {"sepsis": ("5A1945Z", .10), "pneumonia": ("5A1945Z", .04), "ami": ("B2111ZZ", .50),
                        "hip_knee": ("30233N1", .05)}

_ACUTE_PAYMENT = {"hf": 11000, "ami": 15000, "pneumonia": 10000, "copd": 9000, "sepsis": 17000,
                  "stroke": 12000, "hip_knee": 14000, "chemo": 9000, "other": 9500}
PAC_PAYMENT = {"snf_per_day": 530.0, "irf": 21000.0, "ltch": 45000.0, "hha_per_period": 2000.0}
"""Post-acute payment amounts: SNF per day, IRF and LTCH median per stay, home health per started 30-day period."""


# ------------------------------------------------------------------------------- the employer populations

EMPLOYEE_AGE_BANDS: tuple[str, ...] = ("18-24", "25-29", "30-34", "35-39", "40-44", "45-49", "50-54", "55-59",
                                       "60-64")
"""The employees' age bands: the PQI age bands of :mod:`carequal.pqi` from 18 to 64 (age in whole years on the
day, a birthday counting from the day itself)."""
_BAND_EDGES: tuple[int, ...] = (18, 25, 30, 35, 40, 45, 50, 55, 60, 65)

PQI_INDICATORS: tuple[str, ...] = ("01", "03", "05", "07", "08", "11", "12", "14", "15", "16")
"""The component PQIs the generator emits for the employer populations (v2023; the composites follow)."""
PQI_COMPOSITES: dict[str, tuple[str, ...]] = {"90": PQI_INDICATORS, "91": ("11", "12"),
                                              "92": ("01", "03", "05", "07", "08", "14", "15", "16")}

# PQI admissions of employees, per indicator: the chronic category an admission requires (None: anyone), the
# condition the stay is simulated as (length of stay, payment, readmission model), the men's rate as a multiple
# of the women's, the women's rate per 100,000 member-years by age band (18-24 ... 60-64; 05 is 40+, 15 is
# 18-39 in AHRQ's definitions) and the principal diagnoses with their shares. Every code is in the indicator's
# v2023 numerator list and in no other's (so PQI 90 is the sum of its components); tests check both.
_EMPLOYER_PQI: dict[str, tuple] = {
    "01": ("diabetes", "other", 1.1, (45, 40, 38, 38, 38, 38, 38, 36, 34),
           (("E11.10", .6), ("E11.11", .05), ("E11.641", .2), ("E11.00", .1), ("E11.01", .05))),
    "03": ("diabetes", "other", 1.5, (4, 6, 9, 14, 22, 34, 50, 66, 80),
           (("E11.22", .25), ("E11.21", .1), ("E11.40", .15), ("E11.42", .15), ("E11.51", .1), ("E11.621", .15),
            ("E11.59", .1))),
    "05": ("copd", "copd", 0.9, (0, 0, 0, 0, 14, 22, 40, 70, 110), (("J44.1", .6), ("J44.0", .25), ("J45.901", .15))),
    "07": ("hypertension", "other", 1.1, (2, 3, 5, 8, 12, 16, 20, 24, 28),
           (("I10", .35), ("I16.0", .25), ("I16.1", .15), ("I11.9", .25))),
    "08": ("chf", "hf", 1.5, (2, 3, 5, 9, 16, 28, 48, 75, 110), tuple((c, w) for c, w, _ in _PRINCIPAL["hf"])),
    "11": (None, "pneumonia", 1.1, (12, 12, 14, 16, 20, 26, 34, 46, 62),
           (("J18.9", .67), ("J15.9", .1), ("J13", .1), ("J18.1", .1), ("J15.212", .03))),
    "12": (None, "other", 0.35, (16, 14, 14, 14, 14, 16, 18, 22, 28), (("N39.0", .75), ("N10", .15), ("N30.00", .1))),
    "14": ("diabetes", "other", 1.2, (3, 3, 4, 5, 6, 7, 8, 9, 10), (("E11.65", .8), ("E11.649", .2))),
    "15": (None, "copd", 0.6, (18, 15, 14, 13, 0, 0, 0, 0, 0),
           (("J45.901", .6), ("J45.41", .2), ("J45.51", .1), ("J45.31", .1))),
    "16": ("diabetes", "other", 2.5, (0.3, 0.5, 1, 2, 3, 5, 8, 11, 14),
           (("I70.261", .4), ("I70.262", .4), ("I96", .2))),
}
_AMPUTATION = {"I70.261": "0Y6H0Z1", "I70.262": "0Y6J0Z1", "I96": "0Y6M0Z0"}
"""PQI 16 stays: gangrene or atherosclerosis with gangrene of a leg, an amputation on the same side (every one
of them; an any-listed diabetes code is forced too, so each counts)."""
_PQI_PRINCIPAL_CODES = frozenset(code for v in _EMPLOYER_PQI.values() for code, _ in v[4])
"""Codes of a PQI numerator: employees' admissions other than the PQI process never have one as principal."""

EMPLOYER_UTILISATION: dict[str, tuple[float, tuple[float, ...]]] = {
    "other_admissions": (1.1, (18, 19, 21, 24, 28, 35, 44, 55, 68)),
    "ed_visits": (0.85, (240, 215, 200, 185, 170, 160, 155, 150, 150)),
}
"""Employees' rates per 1,000 member-years by age band (women; men: times the first number): admissions from the
community for conditions outside the PQIs (no obstetrics: not simulated), and emergency department visits
without admission."""
EMPLOYER_YEARLY_TREND = 0.97
"""Every employer rate is multiplied by this each calendar year after the first (a shared secular decline)."""
_EMPLOYEE_OTHER_MIX = {"ami": .06, "pneumonia": .01, "copd": .005, "sepsis": .05, "stroke": .025, "hip_knee": .08,
                       "other": .77}
"""Conditions of employees' admissions outside the PQIs (codes of a PQI numerator are never drawn for them)."""
_EMPLOYEE_CHRONIC_SLOPE = {"diabetes": .45, "chf": .7, "af": .7, "copd": .6, "ckd": .5, "dementia": 0.0,
                           "obesity": .1, "depression": 0.0, "anemia": .1, "metastatic_cancer": .5,
                           "malnutrition": .3, "hypertension": .55, "hyperlipidemia": .5}
"""Log-odds per 10 years of age of each chronic category among employees (prevalence at 45: ``_CHRONIC``)."""
EMPLOYEE_LATENT_CORRELATION = 0.4
"""Correlation of the employees' latent chronic-disease scores (a shared normal factor: comorbidities cluster)."""
_SPONSOR_SUFFIXES = ("Health", "Medical Group", "Care Network", "Physicians")
_SPONSOR_PROFILES = (
    # PQI, other admission and ED visit rate multipliers, payment multiplier, share of women, age Beta(a, b)
    (1.00, 1.00, 1.00, 1.70, .76, 1.6, 1.7),
    (1.25, 1.05, 1.15, 1.85, .78, 1.8, 1.5),
    (0.85, 0.95, 0.90, 1.60, .72, 1.4, 1.9),
    (1.10, 1.00, 1.05, 1.75, .70, 1.7, 1.6),
)
_EMPLOYEE_HIRE_SHARE = 0.2
_EMPLOYEE_LEAVE_RATE = 0.08
_SPONSOR_SWITCH = 0.02


def truth(config: SynthConfig) -> dict:
    """The parameters the synthetic data were drawn from (written as ``truth.json``).

    Parameters
    ----------
    config : SynthConfig

    Returns
    -------
    dict
        JSON-serialisable; keys ``seed``, ``config``, ``period``, ``readmission``, ``in_hospital_death``,
        ``post_discharge_death``, ``discharge_to_community``, ``partnership_choice``, ``admissions``,
        ``acute_discharge_status_weights``, ``length_of_stay``, ``payment``, ``comorbidities``, ``employers``
        (sponsors with their sizes and multipliers, the programme, base rates per member-year by measure, sex
        and age band, the multiplier of every sponsor and period, chronic prevalence by age band), ``files``.

    Examples
    --------
    >>> t = truth(SynthConfig())
    >>> t["readmission"]["partnership_effect"], t["readmission"]["facility_effect_sd"]
    (-0.3, 0.25)
    >>> sorted(t["readmission"]["coefficients"])[:3]
    ['age10', 'comorbidity_count', 'condition_ami']
    """
    counted = [c[0] for c in _CHRONIC if c[4]]
    return {
        "description": "Parameters of carequal.synth: synthetic partnership data with a known truth.",
        "seed": config.seed,
        "config": asdict(config),
        "period": {"start": config.start, "end": config.end},
        "readmission": {
            "outcome": "the first acute admission 1-30 days after an acute discharge (alive, not a transfer 02 "
                       "or hospice 50/51 discharge) exists and is not planned chemotherapy (Z51.11); "
                       "exactly the drawn outcome",
            "link": "logit",
            "intercept": READMISSION_INTERCEPT,
            "coefficients": dict(READMISSION_COEFFICIENTS),
            "covariates": {
                "age10": "((admit_date - birth_date) in days / 365.25 - 75) / 10",
                "comorbidity_count": "number of categories among " + ", ".join(counted) + " coded in the "
                                     "secondary diagnoses of the stay (codes in comorbidities)",
                "dual_eligible": "patients.dual_eligible",
                "male": "patients.sex == 'M'",
                "employees": "patients.population_group == 'employees'",
                "condition_*": "condition of the stay (reference: other); see comorbidities.principal_codes",
                "discharge_*": "discharge status of the stay: ama 07, snf 03, hha 06, irf 62, ltch 63 "
                               "(reference: home 01)",
            },
            "facility_effect_sd": config.facility_effect_sd,
            "facility_effects": "truth_facility_effects.csv: u of the discharging hospital plus v of the first "
                                "post-acute provider after discharge (0 if none)",
            "partnership_effect": config.partnership_effect,
            "partnership_definition": "first post-acute provider after discharge is a partner and the post-acute "
                                      "stay starts on or after its partner_since",
            "seasonality": {"amplitude": SEASONAL_AMPLITUDE, "peak_day_of_year": SEASONAL_PEAK_DAY,
                            "term": "amplitude * cos(2 * pi * (day_of_year(discharge_date) - peak) / 365.25)"},
            "day_offsets": f"readmission day d = 1..30 after discharge, P(d) proportional to "
                           f"exp(-d / {READMIT_DAY_SCALE})",
        },
        "in_hospital_death": {"link": "logit", **IN_HOSPITAL_DEATH},
        "post_discharge_death": {
            "link": "logit", "applies_to": "discharges home (01) or AMA (07) without readmission; death on day "
                                           "1-30 after discharge, uniform", **POST_DISCHARGE_DEATH},
        "discharge_to_community": {
            "link": "logit",
            "applies_to": "post-acute stays not ended by a readmission; community = status 01 or 06",
            "covariates": "age10 and comorbidity_count of the preceding acute stay; partner_after_start: the "
                          "provider is a partner and the stay starts on or after its partner_since",
            **COMMUNITY_MODEL,
            "facility_effect": "minus the provider's effect in truth_facility_effects.csv",
            "other_destinations": {SETTINGS[s]: dict(v[1]) for s, v in _COMMUNITY_SPLIT.items()},
        },
        "partnership_choice": {
            "launch": "per market, uniform between 30% and 55% of the period; partner hospitals (about 40%, "
                      "the largest) join on it, partner post-acute providers on it or up to 120 days later",
            "partner_share": config.partner_share,
            "log_boost_after_start": PARTNER_CHOICE_LOG_BOOST,
            "extra_log_boost_from_partner_hospital": PARTNER_HOSPITAL_LOG_BOOST,
        },
        "admissions": {
            "yearly_rate": ADMISSION_RATE, "seasonal_amplitude": ADMISSION_SEASONAL_AMPLITUDE,
            "multipliers": "gamma frailty (mean 1) * exp(0.35 z) * exp(0.25 age10) * 1.25 if dual",
            "condition_mix": _SPONTANEOUS_MIX, "yearly_death_rate": DEATH_RATE, "yearly_ed_visit_rate": ED_RATE,
            "planned": "chemotherapy courses (Z51.11, admission type 3) every 21-24 days for patients with "
                       "metastatic cancer (20%)",
        },
        "acute_discharge_status_weights": {"codes": list(_ACUTE_DISPOSITIONS),
                                           **{k: list(v) for k, v in ACUTE_DISCHARGE_WEIGHTS.items()}},
        "length_of_stay": {"acute_median_and_log_sd": ACUTE_LOS, "post_acute": PAC_LOS,
                           "hha": "30-day periods: 1 (50%), 2 (40%) or 3 (10%), minus 0-5 days"},
        "payment": {
            "description": "stays.payment, rounded to cents after every multiplier",
            "acute": {
                "base_by_condition": dict(_ACUTE_PAYMENT),
                "formula": "max(base[condition] * exp(0.25 z) * (1 + 0.05 (los - median_los[condition])) "
                           "+ 8000 if the first procedure is PCI (027034Z), 1500) * the sponsor's multiplier "
                           "for employees (employers.sponsors); "
                           "z standard normal, los = discharge_date - admit_date",
            },
            "snf": f"{PAC_PAYMENT['snf_per_day']:g} per day, days = max(discharge_date - admit_date, 1)",
            "irf": f"{PAC_PAYMENT['irf']:g} * exp(0.25 z) per stay",
            "ltch": f"{PAC_PAYMENT['ltch']:g} * exp(0.3 z) per stay",
            "hha": f"{PAC_PAYMENT['hha_per_period']:g} * ceil(days / 30) * exp(0.15 z), days = "
                   "max(discharge_date - admit_date, 1) (per started 30-day period)",
            "partnership_effect": config.payment_partnership_effect,
            "partnership_definition": "every post-acute stay (snf, irf, ltch, hha) at a partner provider whose "
                                      "admit_date is on or after the provider's partner_since has its payment "
                                      "multiplied by exp(partnership_effect); acute stays, stays at non-partner "
                                      "providers and stays admitted before partner_since are unchanged (a "
                                      "deterministic multiplier: no random draw depends on it)",
        },
        "comorbidities": {
            "counted": counted,
            "codes": {c[0]: list(c[5]) for c in _CHRONIC},
            "prevalence_at_75": {c[0]: c[1] for c in _CHRONIC},
            "coded_share": _CODED_SHARE,
            "principal_codes": _principal_codes(),
        },
        "employers": _employer_truth(config),
        "files": {
            "truth_facility_effects.csv": "facility_id, setting, effect",
            "truth_stays.csv": "stay_id, p_readmit, readmit, p_community, community",
        },
    }


def _principal_codes() -> dict[str, list[str]]:
    """Principal codes by the condition a stay is simulated as (the employees' PQI codes under theirs)."""
    out = {k: [p[0] for p in v] for k, v in _PRINCIPAL.items()}
    for _, condition, _, _, codes in _EMPLOYER_PQI.values():
        out[condition] += [code for code, _ in codes if code not in out[condition]]
    return out


def _employer_truth(config: SynthConfig) -> dict:
    """The ``employers`` part of :func:`truth`."""
    if not config.employee_population:
        return {}
    spons = _sponsors(config)
    markets = _market_names(config.n_markets)
    base = _employer_base_rates()
    return {
        "description": "employees of alliance members (enrollment.sponsor), ages 18-64, commercial coverage; rate "
                       "= base[measure][sex][age band] * multipliers[sponsor][period][group], group pqi for pqi_*, "
                       "else the measure's own; per member-year at risk in the community (days in a stay and the "
                       "30 days after an acute discharge are not at risk of a community admission); "
                       "carequal.synth.employer_rates gives every rate",
        "sponsors": [{"name": name, "market": markets[spons.market[j]], "employees": int(spons.size[j]),
                      "share_female": float(spons.female[j]), "pqi_multiplier": float(spons.pqi[j]),
                      "other_admissions_multiplier": float(spons.other[j]), "ed_multiplier": float(spons.ed[j]),
                      "acute_payment_multiplier": float(spons.payment[j])} for j, name in enumerate(spons.names)],
        "programme": ({"sponsor": spons.names[spons.programme], "start": config.programme_start,
                       "pqi_reduction": config.programme_pqi_reduction,
                       "ed_reduction": config.programme_ed_reduction,
                       "not_changed": "other_admissions (a negative control)"} if spons.programme >= 0 else None),
        "yearly_trend": EMPLOYER_YEARLY_TREND,
        "age_bands": list(EMPLOYEE_AGE_BANDS),
        "base_rates_per_member_year": {
            measure: {sex: [round(base[measure, sex, band], 10) for band in EMPLOYEE_AGE_BANDS]
                      for sex in ("F", "M")} for measure in EMPLOYER_MEASURES},
        "multipliers": _period_multipliers(config),
        "chronic_prevalence_by_age_band": {c[0]: [round(float(v), 6) for v in _employee_prevalence()[k]]
                                           for k, c in enumerate(_CHRONIC)},
        "pqi_principal_codes": {number: [code for code, _ in v[4]] for number, v in _EMPLOYER_PQI.items()},
        "dependants": "not simulated",
    }


def _employer_periods(config: SynthConfig) -> list[tuple[str, pd.Timestamp, pd.Timestamp, int]]:
    """The periods over which every employer rate is constant: calendar years (their part within the data), the
    year of the programme start cut at it. Each: label, first day, last day, year index (0 = first year)."""
    start, end = pd.Timestamp(config.start), pd.Timestamp(config.end)
    cut = pd.Timestamp(config.programme_start) if config.programme_sponsor else None
    out = []
    for y, year in enumerate(range(start.year, end.year + 1)):
        lo, hi = max(start, pd.Timestamp(year, 1, 1)), min(end, pd.Timestamp(year, 12, 31))
        parts = [(lo, cut - pd.Timedelta(days=1)), (cut, hi)] if cut is not None and lo < cut <= hi else [(lo, hi)]
        for a, b in parts:
            whole = a == pd.Timestamp(year, 1, 1) and b == pd.Timestamp(year, 12, 31)
            out.append((str(year) if whole else f"{a:%Y-%m-%d}/{b:%Y-%m-%d}", a, b, y))
    return out


def _period_multipliers(config: SynthConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Sponsor -> period -> multiplier of the base rates of each group of measures (``pqi``, ``other_admissions``,
    ``ed_visits``): the sponsor's multiplier, the yearly trend and the programme's reduction where it runs."""
    spons = _sponsors(config)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for j, name in enumerate(spons.names):
        out[name] = {}
        for label, first, _, y in _employer_periods(config):
            trend = EMPLOYER_YEARLY_TREND ** y
            running = j == spons.programme and first >= pd.Timestamp(config.programme_start)
            out[name][label] = {
                "pqi": round(float(spons.pqi[j] * trend * (1 - config.programme_pqi_reduction * running)), 10),
                "other_admissions": round(float(spons.other[j] * trend), 10),
                "ed_visits": round(float(spons.ed[j] * trend * (1 - config.programme_ed_reduction * running)), 10),
            }
    return out


EMPLOYER_MEASURES: tuple[str, ...] = tuple(f"pqi_{n}" for n in PQI_INDICATORS + tuple(PQI_COMPOSITES)) + (
    "other_admissions", "community_admissions", "ed_visits")
"""The measures of :func:`employer_rates`: PQI admissions by indicator and composite (AHRQ v2023 numbers),
admissions from the community outside the PQIs, all admissions from the community (PQI 90 + other) and ED
visits."""


def employer_rates(config: SynthConfig | None = None) -> pd.DataFrame:
    """The true rates of the employer populations: every sponsor, period, age band, sex and measure.

    The rates the employees' events are drawn at under ``config`` (default: the committed sample's,
    ``SynthConfig()``).

    Returns
    -------
    DataFrame
        ``sponsor``, ``period`` (a calendar year such as ``"2022"``, or ``first/last`` for the two parts of the
        year the programme starts in), ``period_start``, ``period_end``, ``programme`` (the programme runs for
        this sponsor in this period), ``age_band`` (:data:`EMPLOYEE_AGE_BANDS`), ``sex`` (F, M), ``measure``
        (:data:`EMPLOYER_MEASURES`) and ``rate`` per member-year: the expected events per year of enrollment
        of a person of that age band and sex, with that sponsor, in that period (``truth.json``, ``employers``:
        base rate times the period multiplier). PQI rates are per member-year here; ``carequal.pqi`` reports
        them per 100,000.

    Examples
    --------
    >>> r = employer_rates()
    >>> sorted(r["period"].unique())
    ['2022', '2023-01-01/2023-06-30', '2023-07-01/2023-12-31', '2024']
    >>> cell = r[(r.sponsor == "Riverton Health") & (r.age_band == "55-59") & (r.sex == "F")].set_index(
    ...     ["period", "measure"])["rate"]
    >>> # 75 per 100,000 x 1.25 (the sponsor); in 2024 also x 0.97^2 (trend) x 0.75 (the programme)
    >>> round(float(cell["2022", "pqi_08"]) * 100_000, 2), round(float(cell["2024", "pqi_08"]) * 100_000, 2)
    (93.75, 66.16)
    """
    config = SynthConfig() if config is None else config
    multipliers = _period_multipliers(config)
    base = _employer_base_rates()
    periods = {label: (first, last) for label, first, last, _ in _employer_periods(config)}
    programme = _sponsors(config)
    rows = []
    for j, (name, by_period) in enumerate(multipliers.items()):
        for label, mult in by_period.items():
            first, last = periods[label]
            running = j == programme.programme and first >= pd.Timestamp(config.programme_start)
            for (measure, sex, band), rate in base.items():
                group = "pqi" if measure.startswith("pqi_") else ("other_admissions" if measure ==
                                                                  "other_admissions" else "ed_visits")
                value = rate * mult[group]
                if measure == "community_admissions":  # PQI 90 and the other admissions scale differently
                    value = base["pqi_90", sex, band] * mult["pqi"] + base["other_admissions", sex, band] * \
                        mult["other_admissions"]
                rows.append((name, label, first, last, running, band, sex, measure, value))
    return pd.DataFrame(rows, columns=["sponsor", "period", "period_start", "period_end", "programme", "age_band",
                                       "sex", "measure", "rate"])


def _employer_base_rates() -> dict[tuple[str, str, str], float]:
    """(measure, sex, age band) -> rate per member-year with multiplier 1 (first year, a sponsor with multiplier 1,
    no programme)."""
    out: dict[tuple[str, str, str], float] = {}
    for sex in ("F", "M"):
        for b, band in enumerate(EMPLOYEE_AGE_BANDS):
            for number in PQI_INDICATORS:
                _, _, men, women, _ = _EMPLOYER_PQI[number]
                out[f"pqi_{number}", sex, band] = women[b] * (men if sex == "M" else 1.0) / 100_000
            for number, parts in PQI_COMPOSITES.items():
                out[f"pqi_{number}", sex, band] = sum(out[f"pqi_{c}", sex, band] for c in parts)
            for measure, (men, women) in EMPLOYER_UTILISATION.items():
                out[measure, sex, band] = women[b] * (men if sex == "M" else 1.0) / 1000
            out["community_admissions", sex, band] = out["pqi_90", sex, band] + out["other_admissions", sex, band]
    return {key: out[key] for key in sorted(out, key=lambda k: (EMPLOYER_MEASURES.index(k[0]), k[1],
                                                                  EMPLOYEE_AGE_BANDS.index(k[2])))}


# ---------------------------------------------------------------------------------------------- codebook


@dataclass(frozen=True)
class _Codebook:
    dx: tuple[str, ...]
    pcs: tuple[str, ...]
    principal_ids: np.ndarray  # (conditions, options) code ids, -1 padded
    principal_cum: np.ndarray  # cumulative shares, 1 padded
    pac_code: np.ndarray  # dx id -> principal of a following post-acute stay
    suppress: np.ndarray  # (dx, chronic) principal suppresses category
    force: np.ndarray  # (dx, chronic) principal forces category
    companion: np.ndarray  # dx id -> extra dx id or -1
    proc_code: np.ndarray  # dx id -> pcs id or -1
    proc_prob: np.ndarray
    cond_proc: np.ndarray  # condition -> pcs id or -1
    cond_proc_prob: np.ndarray
    chronic_ids: np.ndarray  # (chronic, variants) dx ids, -1 padded
    chronic_cum: np.ndarray
    extra_ids: np.ndarray  # (slots, options)
    extra_prob: np.ndarray  # (slots, conditions, options)
    extra_poa_n: np.ndarray  # (slots,)
    cancer_ids: np.ndarray
    debility_ids: np.ndarray
    is_z: np.ndarray  # dx id -> Z code (POA exempt flag "1")
    other_cum: np.ndarray  # (conditions, options) cumulative shares without the codes of a PQI numerator
    has_other: np.ndarray  # condition -> has a principal code outside the PQI numerators
    pqi_ids: np.ndarray  # (indicators, options) principal codes of the employees' PQI admissions
    pqi_cum: np.ndarray
    pqi_cond: np.ndarray  # indicator -> condition of the stay


def _cumulative(shares) -> np.ndarray:
    """Cumulative shares ending at exactly 1 from the last positive share on (so a uniform draw never falls past
    the last option with a share)."""
    shares = np.asarray(shares, float)
    cum = np.cumsum(shares / np.sum(shares))
    cum[np.flatnonzero(shares > 0)[-1]:] = 1.0
    return cum


@lru_cache(maxsize=1)
def _codebook() -> _Codebook:
    dx: list[str] = []
    pcs: list[str] = []

    def d(code: str) -> int:
        if code not in dx:
            dx.append(code)
        return dx.index(code)

    def p(code: str) -> int:
        if code not in pcs:
            pcs.append(code)
        return pcs.index(code)

    n_cond = len(CONDITIONS)
    width = max(len(v) for v in _PRINCIPAL.values())
    principal_ids = np.full((n_cond, width), -1, np.int64)
    principal_cum = np.ones((n_cond, width))
    pac_pairs = []
    for c, name in enumerate(CONDITIONS):
        opts = _PRINCIPAL[name]
        shares = np.array([o[1] for o in opts], float)
        principal_ids[c, :len(opts)] = [d(o[0]) for o in opts]
        principal_cum[c, :len(opts)] = _cumulative(shares)
        pac_pairs += [(o[0], o[2]) for o in opts]
    for slot in _EXTRA_SLOTS:
        for code in slot[0]:
            d(code)
    n_chronic = len(_CHRONIC)
    vwidth = max(len(c[5]) for c in _CHRONIC)
    chronic_ids = np.full((n_chronic, vwidth), -1, np.int64)
    chronic_cum = np.ones((n_chronic, vwidth))
    for k, c in enumerate(_CHRONIC):
        chronic_ids[k, :len(c[5])] = [d(code) for code in c[5]]
        chronic_cum[k, :len(c[5])] = _cumulative(c[6])
    cancer_ids = np.array([d(c) for c in _CANCER_SITES])
    debility_ids = np.array([d(c) for c in _PAC_DEBILITY])
    for comp in _COMPANION.values():
        d(comp)
    for _, pac in pac_pairs:
        d(pac)
    # the employer populations' PQI admissions (codes added last: the ids above do not depend on them)
    pqi_width = max(len(v[4]) for v in _EMPLOYER_PQI.values())
    pqi_ids = np.full((len(PQI_INDICATORS), pqi_width), -1, np.int64)
    pqi_cum = np.ones((len(PQI_INDICATORS), pqi_width))
    for i, number in enumerate(PQI_INDICATORS):
        opts = _EMPLOYER_PQI[number][4]
        pqi_ids[i, :len(opts)] = [d(code) for code, _ in opts]
        pqi_cum[i, :len(opts)] = _cumulative([w for _, w in opts])
    pqi_cond = np.array([CONDITIONS.index(_EMPLOYER_PQI[number][1]) for number in PQI_INDICATORS])
    other_cum = principal_cum.copy()
    has_other = np.zeros(n_cond, bool)
    for c, name in enumerate(CONDITIONS):
        opts = _PRINCIPAL[name]
        shares = [0.0 if o[0] in _PQI_PRINCIPAL_CODES else o[1] for o in opts]
        if sum(shares) > 0:
            other_cum[c, :len(opts)] = _cumulative(shares)
            has_other[c] = True

    n_dx = len(dx)
    pac_code = np.arange(n_dx)
    for acute, pac in pac_pairs:
        pac_code[dx.index(acute)] = dx.index(pac)
    suppress = np.zeros((n_dx, n_chronic), bool)
    force = np.zeros((n_dx, n_chronic), bool)
    for i, code in enumerate(dx):
        for prefix, cats in _SUPPRESS.items():
            if code.startswith(prefix):
                suppress[i, [_CK[c] for c in cats]] = True
        for cats in [v for k, v in _FORCE.items() if k == code]:
            force[i, [_CK[c] for c in cats]] = True
        for k, c in enumerate(_CHRONIC):  # a principal code is never repeated as a secondary one
            if code in c[5]:
                suppress[i, k] = True
    companion = np.full(n_dx, -1, np.int64)
    for code, comp in _COMPANION.items():
        companion[dx.index(code)] = dx.index(comp)
    proc_code = np.full(n_dx, -1, np.int64)
    proc_prob = np.zeros(n_dx)
    for code, (proc, prob) in _PRINCIPAL_PROCEDURE.items():
        proc_code[dx.index(code)] = p(proc)
        proc_prob[dx.index(code)] = prob
    cond_proc = np.full(n_cond, -1, np.int64)
    cond_proc_prob = np.zeros(n_cond)
    for name, (proc, prob) in _CONDITION_PROCEDURE.items():
        cond_proc[CONDITIONS.index(name)] = p(proc)
        cond_proc_prob[CONDITIONS.index(name)] = prob
    for code, proc in _AMPUTATION.items():
        proc_code[dx.index(code)] = p(proc)
        proc_prob[dx.index(code)] = 1.0
    ewidth = max(len(s[0]) for s in _EXTRA_SLOTS)
    extra_ids = np.full((len(_EXTRA_SLOTS), ewidth), -1, np.int64)
    extra_prob = np.zeros((len(_EXTRA_SLOTS), n_cond, ewidth))
    extra_poa_n = np.zeros(len(_EXTRA_SLOTS))
    for j, (codes, probs, poa_n) in enumerate(_EXTRA_SLOTS):
        extra_ids[j, :len(codes)] = [dx.index(c) for c in codes]
        for c, name in enumerate(CONDITIONS):
            row = probs.get(name, probs.get("*", (0.0,) * len(codes)))
            extra_prob[j, c, :len(codes)] = row
        extra_poa_n[j] = poa_n
    is_z = np.array([code.startswith("Z") for code in dx])
    return _Codebook(tuple(dx), tuple(pcs), principal_ids, principal_cum, pac_code, suppress, force, companion,
                     proc_code, proc_prob, cond_proc, cond_proc_prob, chronic_ids, chronic_cum, extra_ids,
                     extra_prob, extra_poa_n, cancer_ids, debility_ids, is_z, other_cum, has_other, pqi_ids,
                     pqi_cum, pqi_cond)


# ------------------------------------------------------------------------------------------- small helpers


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick_rows(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the first column whose cumulative share exceeds ``u``, row by row."""
    return np.minimum((cum <= u[:, None]).sum(axis=1), cum.shape[1] - 1)


def _pick_weighted(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise weighted choice of a column; rows with no weight give -1."""
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1]
    idx = (cum <= (u * total)[:, None]).sum(axis=1)
    # the last column with positive weight, in case of rounding at u * total == total
    last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    return np.where(total > 0, np.minimum(idx, last), -1)


def _lognormal_days(rng: np.random.Generator, median: np.ndarray, sd: np.ndarray, lo, hi) -> np.ndarray:
    z = rng.standard_normal(len(median))
    return np.clip(np.rint(median * np.exp(sd * z)), lo, hi).astype(np.int64)


def _day_of_year(start: np.datetime64, days: np.ndarray) -> np.ndarray:
    dates = start + days.astype("timedelta64[D]")
    return (dates - dates.astype("datetime64[Y]")).astype(np.int64) + 1


def _seasonal(start: np.datetime64, days: np.ndarray, amplitude: float) -> np.ndarray:
    doy = _day_of_year(start, days)
    return amplitude * np.cos(2 * np.pi * (doy - SEASONAL_PEAK_DAY) / 365.25)


def _market_names(n: int) -> list[str]:
    """Fixed names first, then composed ones, then numbered.

    Examples
    --------
    >>> _market_names(4)
    ['Northvale', 'Riverton', 'Lakeshore', 'Cedar Falls']
    >>> len(set(_market_names(1000)))
    1000
    """
    names = list(_MARKET_NAMES)
    seen = set(names)
    for suffix in _NAME_SUFFIXES:
        for prefix in _NAME_PREFIXES:
            name = prefix + suffix
            if name not in seen:
                names.append(name)
                seen.add(name)
    k = 2
    base = list(names)
    while len(names) < n:
        names += [f"{b} {k}" for b in base]
        k += 1
    return names[:n]


def _string_array(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as an Arrow string array, built without Python loops.

    Examples
    --------
    >>> _string_array("P", np.array([7, 123]), 4).to_pylist()
    ['P0007', 'P0123']
    """
    numbers = np.asarray(numbers, np.int64)
    n = len(numbers)
    head = np.frombuffer(prefix.encode(), np.uint8)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    buf = np.empty((n, len(head) + width), np.uint8)
    buf[:, :len(head)] = head
    buf[:, len(head):] = (numbers[:, None] // powers) % 10 + 48
    row = len(head) + width
    offsets = np.arange(n + 1, dtype=np.int64) * row
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.tobytes())).cast(pa.string())


def _join_codes(ids: np.ndarray, vocab: tuple[str, ...]) -> pa.Array:
    """Join the codes of each row (ids into ``vocab``, -1 = none) with ``;``; rows without codes are null.

    Examples
    --------
    >>> _join_codes(np.array([[0, -1, 1], [-1, -1, -1], [1, 0, -1]]), ("I10", "E11.9")).to_pylist()
    ['I10;E11.9', None, 'E11.9;I10']
    """
    n = ids.shape[0]
    encoded = [v.encode() for v in vocab]
    lens = np.array([len(e) + 1 for e in encoded], np.int64)  # each entry is ";" + code
    source = np.frombuffer(b"".join(b";" + e for e in encoded), np.uint8)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    rows, cols = np.nonzero(ids >= 0)
    codes = ids[rows, cols]
    first = np.ones(len(rows), bool)
    first[1:] = rows[1:] != rows[:-1]
    src_start = starts[codes] + first
    src_len = lens[codes] - first
    out_start = np.cumsum(src_len) - src_len
    gather = np.repeat(src_start - out_start, src_len) + np.arange(src_len.sum())
    data = source[gather]
    row_bytes = np.bincount(rows, weights=src_len, minlength=n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(row_bytes)]).astype(np.int64)
    valid = row_bytes > 0
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()), bitmap,
                                           null_count=int(n - valid.sum()))
    return arr.cast(pa.string())


def _take(vocab: tuple[str, ...], ids: np.ndarray) -> pa.Array:
    """Vocabulary lookup; -1 gives null."""
    ids = np.asarray(ids, np.int64)
    return pc.take(pa.array(vocab, pa.string()), pa.array(ids, mask=ids < 0))


def _dates(epoch_day: int, days: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    values = (np.asarray(days, np.int64) + epoch_day).astype(np.int32)
    mask = None if valid is None else ~np.asarray(valid, bool)
    return pa.array(values, pa.date32(), mask=mask)


# ------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Calendar:
    start: np.datetime64
    horizon: int  # last day index (end - start)
    epoch_day: int  # start as days since 1970-01-01
    cum_admission: np.ndarray  # cumulative seasonal intensity, length horizon + 2
    cum_death: np.ndarray
    jan_firsts: np.ndarray  # day indexes of 1 January within (0, horizon]


def _calendar(config: SynthConfig) -> _Calendar:
    start = np.datetime64(pd.Timestamp(config.start).date(), "D")
    end = np.datetime64(pd.Timestamp(config.end).date(), "D")
    horizon = int((end - start).astype(np.int64))
    days = np.arange(horizon + 1)
    cum_adm = np.concatenate([[0.0], np.cumsum(1 + _seasonal(start, days, ADMISSION_SEASONAL_AMPLITUDE))])
    cum_death = np.concatenate([[0.0], np.cumsum(1 + _seasonal(start, days, 0.10))])
    doy = _day_of_year(start, days)
    jan = days[(doy == 1) & (days > 0)]
    return _Calendar(start, horizon, int(start.astype(np.int64)), cum_adm, cum_death, jan)


def _next_event(cum: np.ndarray, t: np.ndarray, rate_per_day: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Day of the next event of a seasonal Poisson process from day ``t`` on (``_INF`` beyond the data)."""
    n = len(t)
    e = rng.exponential(size=n)
    inside = t < len(cum) - 1
    base = cum[np.minimum(t, len(cum) - 1)]
    with np.errstate(divide="ignore"):
        target = base + e / rate_per_day
    day = np.searchsorted(cum, target, side="right") - 1
    return np.where(inside & (day < len(cum) - 1), day, _INF).astype(np.int64)


def _blocks(config: SynthConfig) -> list[tuple[tuple[int, int], int, int]]:
    """The generation blocks: (random stream's spawn key, first and one-past-last global patient number).

    The Medicare beneficiaries come first, market by market, each market followed by its *former draws*
    (:data:`_FORMER_EMPLOYEE_SHARE`): streams ``(1, b)`` as in every earlier version of the generator. The
    employees follow, sponsor by sponsor, in blocks of their own with streams ``(2, b)``: no block holds both, so
    the Medicare part does not depend on any setting of the employer populations."""
    medicare = config.n_markets * _medicare_stride(config)
    edges = []
    for stream, lo, hi in ((1, 0, medicare), (2, medicare, medicare + _n_employees(config))):
        cuts = list(range(lo, hi, config.chunk_patients)) + [hi]
        edges += [((stream, i), a, b) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))]
    return edges


_FORMER_EMPLOYEE_SHARE = 0.15
"""Earlier versions of the generator drew a simple under-65 group inside each market's block, 15 % of the market's
beneficiaries, interleaved with them in every vectorised draw. Those draws are still made, and their people
dropped, so that the Medicare beneficiaries of a seed are the same, row for row, as before the employer
populations were added (the committed sample's Medicare numbers stay as they were); the employees come from
streams of their own."""


def _former_per_market(config: SynthConfig) -> int:
    return int(round(config.patients_per_market * _FORMER_EMPLOYEE_SHARE)) if config.employee_population else 0


def _medicare_stride(config: SynthConfig) -> int:
    """Global patient numbers per market in the Medicare blocks (beneficiaries, then the former draws)."""
    return config.patients_per_market + _former_per_market(config)


# ---------------------------------------------------------------------------------------------- facilities


@dataclass(frozen=True)
class _Facilities:
    ids: tuple[str, ...]
    setting: np.ndarray
    market: np.ndarray
    partner: np.ndarray
    partner_day: np.ndarray  # day index the partnership starts (_INF if none)
    weight: np.ndarray  # choice weight
    effect: np.ndarray
    first: np.ndarray  # (market, setting) -> index of the first facility
    count: np.ndarray  # (market, setting) -> number of facilities
    market_names: tuple[str, ...]
    table: pa.Table


def _facilities(config: SynthConfig, cal: _Calendar) -> _Facilities:
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    per = {_ACUTE: config.hospitals_per_market, _SNF: config.snf_per_market, _IRF: config.irf_per_market,
           _LTCH: config.ltch_per_market, _HHA: config.hha_per_market}
    names = _market_names(config.n_markets)
    ids, fac_names, setting, market, partner, pday, beds, nurse, weight = ([] for _ in range(9))
    first = np.zeros((config.n_markets, 5), np.int64)
    count = np.zeros((config.n_markets, 5), np.int64)
    for m in range(config.n_markets):
        launch = int(rng.uniform(0.30, 0.55) * cal.horizon)
        for s in range(5):
            k = per[s]
            first[m, s], count[m, s] = len(ids), k
            if s == _ACUTE:
                size = np.clip(np.rint(180 * np.exp(0.6 * rng.standard_normal(k))), 25, 1200)
                hours = np.clip(10 + 1.5 * rng.standard_normal(k), 6, 16)
                n_partner = 1 + int(0.4 * (k - 1))
                is_partner = np.zeros(k, bool)
                is_partner[np.argsort(-size, kind="stable")[:n_partner]] = True
                since = np.where(is_partner, launch, _INF)
            else:
                med, sd, lo, hi, h_mu, h_sd = {
                    _SNF: (110, .35, 30, 300, 3.9, .6), _IRF: (45, .4, 12, 150, 6.5, 1.0),
                    _LTCH: (40, .3, 20, 120, 9.0, 1.2), _HHA: (1, .6, 0, 1e9, 0, 0)}[s]
                size = np.clip(np.rint(med * np.exp(sd * rng.standard_normal(k))), lo, hi)
                hours = np.clip(h_mu + h_sd * rng.standard_normal(k), 0.5 * h_mu, 1.8 * h_mu)
                if s == _HHA:
                    size = np.exp(0.6 * rng.standard_normal(k))
                n_partner = int(round(config.partner_share * k))
                if k == 1:
                    n_partner = int(rng.random() < config.partner_share)
                is_partner = np.zeros(k, bool)
                is_partner[rng.permutation(k)[:n_partner]] = True
                since = np.where(is_partner, launch + rng.integers(0, 121, k), _INF)
            stems = _FACILITY_STEMS[s]
            for j in range(k):
                stem = stems[j % len(stems)]
                repeat = j // len(stems)
                fac_names.append(f"{names[m]} {stem}" + (f" {repeat + 1}" if repeat else ""))
                ids.append(f"{_FACILITY_PREFIX[s]}{m + 1:03d}{j + 1:03d}")
            setting += [s] * k
            market += [m] * k
            partner += is_partner.tolist()
            pday += since.tolist()
            beds += (size if s != _HHA else np.full(k, np.nan)).tolist()
            nurse += (np.round(hours, 2) if s != _HHA else np.full(k, np.nan)).tolist()
            weight += size.tolist()
    n = len(ids)
    effect = rng.normal(0.0, config.facility_effect_sd, n)
    pday_arr = np.array(pday, np.int64)
    beds_arr = np.array(beds, float)
    nurse_arr = np.array(nurse, float)
    table = pa.table({
        "facility_id": pa.array(ids, pa.string()),
        "name": pa.array(fac_names, pa.string()),
        "setting": _take(SETTINGS, np.array(setting)),
        "market": _take(tuple(names), np.array(market)),
        "is_partner": pa.array(partner, pa.bool_()),
        "partner_since": _dates(cal.epoch_day, np.where(pday_arr < _INF, pday_arr, 0), pday_arr < _INF),
        "beds": pa.array(np.nan_to_num(beds_arr).astype(np.int64), pa.int64(), mask=np.isnan(beds_arr)),
        "nurse_hours_ppd": pa.array(nurse_arr, pa.float64(), mask=np.isnan(nurse_arr)),
    })
    return _Facilities(tuple(ids), np.array(setting), np.array(market), np.array(partner), pday_arr,
                       np.array(weight, float), effect, first, count, tuple(names), table)


def _choose_facility(fac: _Facilities, market: np.ndarray, setting: int | np.ndarray, u: np.ndarray,
                     weight_power: float = 1.0, exclude: np.ndarray | None = None,
                     day: np.ndarray | None = None, from_partner: np.ndarray | None = None) -> np.ndarray:
    """Weighted choice of a facility of ``setting`` in each row's market (-1 if the market has none).

    With ``day``, partner post-acute providers whose partnership has started get the choice boost, larger when
    ``from_partner`` (the discharging hospital is an active partner).
    """
    setting = np.broadcast_to(np.asarray(setting), market.shape)
    first = fac.first[market, setting]
    count = fac.count[market, setting]
    width = max(int(count.max()) if len(count) else 0, 1)
    j = np.arange(width)
    idx = first[:, None] + j
    valid = j < count[:, None]
    idx_safe = np.where(valid, idx, 0)
    w = np.where(valid, fac.weight[idx_safe] ** weight_power, 0.0)
    if exclude is not None:
        w = np.where(idx == exclude[:, None], 0.0, w)
    if day is not None:
        active = fac.partner[idx_safe] & (fac.partner_day[idx_safe] <= day[:, None]) & valid
        boost = PARTNER_CHOICE_LOG_BOOST + (PARTNER_HOSPITAL_LOG_BOOST * from_partner[:, None]
                                            if from_partner is not None else 0.0)
        w = w * np.exp(np.where(active, boost, 0.0))
    pick = _pick_weighted(w, u)
    return np.where(pick >= 0, first + pick, -1)


# ------------------------------------------------------------------------------------------------ patients


@dataclass
class _People:
    n: int
    gid: np.ndarray
    market: np.ndarray
    employee: np.ndarray
    age0: np.ndarray  # age in years on day 0
    birth: np.ndarray  # birth day index (negative)
    male: np.ndarray
    dual: np.ndarray
    chronic: np.ndarray  # (n, chronic) bool (employees: on their first day in the data)
    variant: np.ndarray  # (n, chronic) dx id of the patient's code of each category
    counted: np.ndarray  # bool per chronic category
    lam: np.ndarray  # admissions per day (Medicare; employees' admissions come from _employee_events)
    mu: np.ndarray  # deaths per day
    ed: np.ndarray  # ED visits per day (Medicare; employees' visits come from _employee_events)
    t0: np.ndarray  # first day in the data
    t_end: np.ndarray  # last day covered
    enroll_start: np.ndarray  # first day of coverage (may be before day 0)
    preferred: np.ndarray  # preferred hospital
    chemo: np.ndarray
    cancer_site: np.ndarray
    cond_logw: np.ndarray  # (n, conditions) log weight of spontaneous conditions
    # employees only
    sponsor_year: np.ndarray | None = None  # (n, calendar years) sponsor index of each year of the data
    latent: np.ndarray | None = None  # (n, chronic) uniform latent scores: category present when below prevalence
    anniversary: np.ndarray | None = None  # (n, band edges) day the person turns 18, 25, 30, ..., 60, 65


def _people(config: SynthConfig, cal: _Calendar, fac: _Facilities, g0: int, g1: int,
            rng: np.random.Generator) -> _People:
    """The Medicare beneficiaries and the former draws (``employee`` true: dropped from the tables) of numbers
    ``g0 .. g1 - 1``. Every draw is made for both, in the order of earlier versions (see _FORMER_EMPLOYEE_SHARE)."""
    cb = _codebook()
    per_market = _medicare_stride(config)
    gid = np.arange(g0, g1)
    n = len(gid)
    market = gid // per_market
    employee = (gid % per_market) >= config.patients_per_market
    med = ~employee
    # age on day 0: 65-95 (6 % ageing in from 62-65); former draws 25-62
    age0 = np.where(med, 65 + 30 * rng.beta(1.1, 2.6, n), 25 + 37 * rng.random(n))
    ageing_in = med & (rng.random(n) < 0.06)
    age0 = np.where(ageing_in, 65 - min(3.0, 0.9 * cal.horizon / 365.25) * rng.random(n), age0)
    birth = -np.rint(age0 * 365.25).astype(np.int64)
    male = rng.random(n) < np.where(med, 0.44, 0.5)
    z = rng.standard_normal(n)
    age10 = (age0 - 75) / 10
    dual = med & (rng.random(n) < _expit(np.log(0.15 / 0.85) + 0.6 * z - 0.1 * age10))
    n_chronic = len(_CHRONIC)
    chronic = np.zeros((n, n_chronic), bool)
    for k, c in enumerate(_CHRONIC):
        prev = np.where(med, c[1], max(c[3], 1e-6))
        logit = np.log(prev / (1 - prev)) + np.where(med, c[2] * age10, 0.0) + 0.9 * z
        chronic[:, k] = rng.random(n) < _expit(logit)
    variant = _variants(cb, chronic, rng)
    counted = np.array([c[4] for c in _CHRONIC])
    frailty = rng.gamma(2.0, 0.5, n) * np.exp(0.35 * z - 0.35**2 / 2)
    base = np.where(med, ADMISSION_RATE["medicare"], ADMISSION_RATE["employees"])
    lam = base * frailty * np.exp(0.25 * np.clip(age10, -1, None)) * np.where(dual, 1.25, 1.0) / 365.25
    mu = np.where(med, DEATH_RATE["medicare"] * np.exp(0.85 * age10 + 0.25 * z),
                  DEATH_RATE["employees"] * np.exp(0.8 * (age0 - 45) / 10)) / 365.25
    ed = np.where(med, ED_RATE["medicare"], ED_RATE["employees"]) * np.sqrt(frailty) / 365.25
    # Medicare coverage from the first of the month of the 65th birthday; former draws from a hire date
    birth_dates = cal.start + birth.astype("timedelta64[D]")
    at65 = (birth_dates.astype("datetime64[M]") + np.timedelta64(65 * 12, "M")).astype("datetime64[D]")
    medicare_start = (at65 - cal.start).astype(np.int64)
    hired_in = rng.random(n) < 0.15
    hire = np.where(hired_in, rng.integers(0, int(cal.horizon * 0.8) + 1, n), -rng.integers(1, 15 * 365, n))
    enroll_start = np.where(med, medicare_start, hire)
    # stays start on the 65th birthday at the earliest (coverage starts on the first of that month)
    birthday65 = _anniversaries(cal, birth, (65,))[:, 0]
    t0 = np.maximum(np.where(med, np.maximum(birthday65, enroll_start), enroll_start), 0)
    leave = t0 + np.ceil(rng.exponential(365.25 / 0.08, n)).astype(np.int64)
    t_end = np.where(med, cal.horizon, np.minimum(leave, cal.horizon))
    preferred = _choose_facility(fac, market, _ACUTE, rng.random(n))
    chemo = chronic[:, _CK["metastatic_cancer"]] & (rng.random(n) < np.where(med, 0.20, 0.30))
    cancer_site = cb.cancer_ids[rng.integers(0, len(cb.cancer_ids), n)]
    mix = np.array([[_SPONTANEOUS_MIX[g].get(c, 0.0) for c in CONDITIONS] for g in _GROUPS])
    with np.errstate(divide="ignore"):
        cond_logw = _condition_weights(np.log(mix[employee.astype(int)]), chronic)
    return _People(n, gid, market, employee, age0, birth, male, dual, chronic, variant, counted, lam, mu, ed,
                   t0, t_end, enroll_start, preferred, chemo, cancer_site, cond_logw)


def _variants(cb: _Codebook, chronic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The code of each chronic category for each person (codes that name CKD only for people with CKD)."""
    n, n_chronic = chronic.shape
    variant_pick = _pick_rows(np.repeat(cb.chronic_cum[None], n, axis=0).reshape(n * n_chronic, -1),
                              rng.random(n * n_chronic)).reshape(n, n_chronic)
    ckd_only = np.isin(cb.chronic_ids, [cb.dx.index("E11.22"), cb.dx.index("D63.1")])
    variant_pick = np.where(ckd_only[np.arange(n_chronic)[None, :], variant_pick] & ~chronic[:, [_CK["ckd"]]],
                            0, variant_pick)
    return cb.chronic_ids[np.arange(n_chronic)[None, :], variant_pick]


def _condition_weights(logw: np.ndarray, chronic: np.ndarray) -> np.ndarray:
    """Log weights of the conditions of spontaneous admissions, raised by the chronic conditions that lead to them."""
    logw = logw.copy()
    logw[:, _HF] += np.log(4.0) * chronic[:, _CK["chf"]]
    logw[:, _COPD] += np.log(5.0) * chronic[:, _CK["copd"]]
    logw[:, _PN] += np.log(1.4) * (chronic[:, _CK["copd"]] | chronic[:, _CK["dementia"]])
    logw[:, _STROKE] += np.log(1.6) * chronic[:, _CK["af"]]
    logw[:, _AMI] += np.log(1.3) * chronic[:, _CK["diabetes"]]
    logw[:, _SEPSIS] += np.log(1.3) * chronic[:, _CK["ckd"]]
    return logw


def _anniversaries(cal: _Calendar, birth: np.ndarray, ages) -> np.ndarray:
    """Day index on which each person (``birth``: day index) turns each of ``ages``; born on 29 February, on
    1 March in other years (as :func:`carequal.cohorts.age_in_years` and the PQI person-time count it).

    Examples
    --------
    >>> cal = _calendar(SynthConfig())
    >>> birth = (np.datetime64("2004-02-29") - cal.start).astype(np.int64)
    >>> [str(cal.start + d) for d in _anniversaries(cal, np.array([birth]), (18, 20))[0]]
    ['2022-03-01', '2024-02-29']
    """
    dates = cal.start + np.asarray(birth, np.int64).astype("timedelta64[D]")
    months = dates.astype("datetime64[M]")
    day = (dates - months.astype("datetime64[D]")).astype("timedelta64[D]")
    out = np.empty((len(dates), len(ages)), np.int64)
    for j, age in enumerate(ages):  # the first of the month, then the day: 29 February + 28 days = 1 March
        out[:, j] = ((months + np.timedelta64(12 * int(age), "M")).astype("datetime64[D]") + day
                     - cal.start).astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------------- employers


@dataclass(frozen=True)
class _Sponsors:
    names: tuple[str, ...]
    programme: int  # index of the programme sponsor, -1 if none
    market: np.ndarray  # home market of each sponsor
    size: np.ndarray  # employees
    female: np.ndarray  # share of women
    age_a: np.ndarray  # Beta parameters of the age on the first day in the data
    age_b: np.ndarray
    programme_day: int  # day index of the programme start (_INF if none)
    pqi: np.ndarray  # rate multipliers
    other: np.ndarray
    ed: np.ndarray
    payment: np.ndarray  # multiplier of acute payments


def _n_employees(config: SynthConfig) -> int:
    if not config.employee_population:
        return 0
    return int(round(config.employee_share * config.patients_per_market * config.n_markets))


def _sponsors(config: SynthConfig) -> _Sponsors:
    """The alliance members (plan sponsors): names, home markets, sizes and their known rate multipliers."""
    k = config.n_sponsors
    markets = _market_names(config.n_markets)
    names, market = [], []
    for j in range(k):
        suffix = _SPONSOR_SUFFIXES[(j // config.n_markets) % len(_SPONSOR_SUFFIXES)]
        repeat = j // (config.n_markets * len(_SPONSOR_SUFFIXES))
        names.append(f"{markets[j % config.n_markets]} {suffix}" + (f" {repeat + 1}" if repeat else ""))
        market.append(j % config.n_markets)
    weights = np.arange(k, 0, -1, dtype=float)
    total = _n_employees(config)
    exact = total * weights / weights.sum()
    size = np.floor(exact).astype(np.int64)
    size[np.argsort(-(exact - size), kind="stable")[:total - int(size.sum())]] += 1  # largest remainders
    prof = np.array([_SPONSOR_PROFILES[j % len(_SPONSOR_PROFILES)] for j in range(k)], float)
    day = (pd.Timestamp(config.programme_start) - pd.Timestamp(config.start)).days
    return _Sponsors(names=tuple(names), programme=config.programme_sponsor - 1, market=np.array(market, np.int64),
                     size=size, female=prof[:, 4], age_a=prof[:, 5], age_b=prof[:, 6],
                     programme_day=day if config.programme_sponsor else _INF, pqi=prof[:, 0], other=prof[:, 1],
                     ed=prof[:, 2], payment=prof[:, 3])


@lru_cache(maxsize=1)
def _employee_prevalence() -> np.ndarray:
    """Prevalence of each chronic category (rows) among employees in each age band (columns)."""
    mid = np.array([(lo + hi - 1) / 2 for lo, hi in zip(_BAND_EDGES[:-1], _BAND_EDGES[1:], strict=True)])
    out = np.zeros((len(_CHRONIC), len(mid)))
    for k, c in enumerate(_CHRONIC):
        if c[3] > 0:
            out[k] = _expit(np.log(c[3] / (1 - c[3])) + _EMPLOYEE_CHRONIC_SLOPE[c[0]] * (mid - 45) / 10)
    return out


def _employees(config: SynthConfig, cal: _Calendar, fac: _Facilities, spons: _Sponsors, g0: int, g1: int,
               rng: np.random.Generator) -> _People:
    """The employees ``g0 .. g1 - 1`` (global numbers after the Medicare beneficiaries), sponsor by sponsor."""
    cb = _codebook()
    gid = np.arange(g0, g1)
    n = len(gid)
    first = config.n_markets * _medicare_stride(config)
    sponsor = np.searchsorted(np.cumsum(spons.size), gid - first, side="right")
    market = spons.market[sponsor]
    # in the data from hire (20 %: during the period) to leaving (8 % a year), retirement at 65 or the end
    hired_in = rng.random(n) < _EMPLOYEE_HIRE_SHARE
    hire = np.where(hired_in, rng.integers(0, int(cal.horizon * 0.8) + 1, n), -rng.integers(1, 15 * 365, n))
    t0 = np.maximum(hire, 0)
    male = rng.random(n) >= spons.female[sponsor]
    # age on the first day in the data 18-64 (new hires younger), with a margin from the birthdays at both ends
    age_in = 18.05 + 46.8 * rng.beta(spons.age_a[sponsor], spons.age_b[sponsor] * np.where(hired_in, 1.4, 1.0))
    birth = t0 - np.rint(age_in * 365.25).astype(np.int64)
    age0 = -birth / 365.25
    anniversary = _anniversaries(cal, birth, _BAND_EDGES)
    enroll_start = np.maximum(hire, anniversary[:, 0])  # coverage as an employee from 18 at the earliest
    leave = t0 + np.ceil(rng.exponential(365.25 / _EMPLOYEE_LEAVE_RATE, n)).astype(np.int64)
    t_end = np.minimum(np.minimum(leave, anniversary[:, -1] - 1), cal.horizon)
    # chronic categories: present while a latent uniform score is below the prevalence of the age band, so that
    # on any day the prevalence in each band is exact; a shared normal factor makes comorbidities cluster
    rho = np.sqrt(EMPLOYEE_LATENT_CORRELATION)
    w = rng.standard_normal(n)
    latent = ndtr(rho * w[:, None] + np.sqrt(1 - rho**2) * rng.standard_normal((n, len(_CHRONIC))))
    chronic = latent < _employee_prevalence()[:, _band(anniversary, t0)].T
    variant = _variants(cb, chronic, rng)
    variant[:, _CK["malnutrition"]] = cb.dx.index("E44.0")  # not E43: an immunocompromised state (PQI 11, 12)
    counted = np.array([c[4] for c in _CHRONIC])
    mu = DEATH_RATE["employees"] * np.exp(0.8 * (age0 - 45) / 10) / 365.25
    preferred = _choose_facility(fac, market, _ACUTE, rng.random(n))
    chemo = chronic[:, _CK["metastatic_cancer"]] & (rng.random(n) < 0.30)
    cancer_site = cb.cancer_ids[rng.integers(0, len(cb.cancer_ids), n)]
    with np.errstate(divide="ignore"):
        mix = np.log(np.array([_EMPLOYEE_OTHER_MIX.get(c, 0.0) for c in CONDITIONS]))
    cond_logw = _condition_weights(np.repeat(mix[None], n, axis=0), chronic)
    # the sponsor of each calendar year: 2 % move to another member on 1 January
    years = len(cal.jan_firsts) + 1
    sponsor_year = np.repeat(sponsor[:, None], years, axis=1)
    for y, jan in enumerate(cal.jan_firsts, start=1):
        current = sponsor_year[:, y - 1]
        move = (rng.random(n) < _SPONSOR_SWITCH) & (jan > t0) & (jan <= t_end) & (spons.size.sum()
                                                                                  > spons.size[current])
        weights = np.repeat(spons.size[None, :].astype(float), move.sum(), axis=0)  # another member, by size
        weights[np.arange(move.sum()), current[move]] = 0.0
        sponsor_year[move, y:] = _pick_weighted(weights, rng.random(move.sum()))[:, None]
    zero = np.zeros(n)
    return _People(n, gid, market, np.ones(n, bool), age0, birth, male, np.zeros(n, bool), chronic, variant, counted,
                   zero, mu, zero, t0, t_end, enroll_start, preferred, chemo, cancer_site, cond_logw,
                   sponsor_year, latent, anniversary)


def _band(anniversary: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Index of the age band (0 = 18-24 ... 8 = 60-64) on ``day`` from the band birthdays (25 ... 60)."""
    return (anniversary[:, 1:-1] <= np.asarray(day)[:, None]).sum(axis=1)


def _chronic_on(ppl: _People, pats: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The chronic categories the patients have on ``day`` (Medicare: fixed; employees: by their age band)."""
    if ppl.latent is None:
        return ppl.chronic[pats]
    return ppl.latent[pats] < _employee_prevalence()[:, _band(ppl.anniversary[pats], day)].T


def _year_index(cal: _Calendar, day: np.ndarray) -> np.ndarray:
    """Calendar year of each day index, counted from the year of the first day (0)."""
    return np.searchsorted(cal.jan_firsts, day, side="right")


def _employee_rates(config: SynthConfig, cal: _Calendar, ppl: _People, spons: _Sponsors, pats: np.ndarray,
                    start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rates per day of each employee segment starting on ``start`` (constant until the next birthday of a band
    edge, 1 January or the programme start): PQI admissions by indicator (rows, indicators), other admissions
    and ED visits."""
    band = _band(ppl.anniversary[pats], start)
    year = _year_index(cal, start)
    sponsor = ppl.sponsor_year[pats, year]
    in_programme = (sponsor == spons.programme) & (start >= spons.programme_day)
    male = ppl.male[pats]
    trend = EMPLOYER_YEARLY_TREND ** year
    prevalence = _employee_prevalence()
    pqi = np.zeros((len(pats), len(PQI_INDICATORS)))
    for i, number in enumerate(PQI_INDICATORS):
        category, _, men, women, _ = _EMPLOYER_PQI[number]
        rate = np.asarray(women, float)[band] * np.where(male, men, 1.0) / 100_000
        if category is not None:  # only people with the condition, at a rate that keeps the band's rate
            k = _CK[category]
            p = prevalence[k, band]
            rate = np.where(ppl.latent[pats, k] < p, rate / np.where(p > 0, p, 1.0), 0.0)
        pqi[:, i] = rate
    pqi *= (spons.pqi[sponsor] * trend * np.where(in_programme, 1 - config.programme_pqi_reduction, 1.0))[:, None]
    men, women = EMPLOYER_UTILISATION["other_admissions"]
    other = np.asarray(women, float)[band] * np.where(male, men, 1.0) / 1000 * spons.other[sponsor] * trend
    men, women = EMPLOYER_UTILISATION["ed_visits"]
    ed = (np.asarray(women, float)[band] * np.where(male, men, 1.0) / 1000 * spons.ed[sponsor] * trend
          * np.where(in_programme, 1 - config.programme_ed_reduction, 1.0))
    return pqi / 365.25, other / 365.25, ed / 365.25


def _employee_events(config: SynthConfig, cal: _Calendar, ppl: _People, spons: _Sponsors,
                     rng: np.random.Generator):
    """The employees' Poisson processes over their days in the data (``t0`` to ``t_end``), drawn segment by
    segment (rates constant within one): candidate community admissions (PQI indicator index, or
    ``len(PQI_INDICATORS)`` for another condition), sorted by patient and day, and ED visits.

    The timeline takes the first candidate on or after the day the patient is back in the community; candidates
    on days in a stay or in the 30 days after an acute discharge are passed over (those days are not at risk)."""
    n = ppl.n
    cuts = list(cal.jan_firsts) + ([spons.programme_day] if 0 < spons.programme_day <= cal.horizon else [])
    cuts = np.concatenate([np.broadcast_to(np.array(cuts, np.int64), (n, len(cuts))), ppl.anniversary[:, 1:-1]],
                          axis=1)
    cuts = np.sort(np.where((cuts > ppl.t0[:, None]) & (cuts <= ppl.t_end[:, None]), cuts, _INF), axis=1)
    starts = np.concatenate([ppl.t0[:, None], cuts], axis=1)
    ends = np.concatenate([np.where(cuts < _INF, cuts - 1, ppl.t_end[:, None]), ppl.t_end[:, None]], axis=1)
    valid = (starts < _INF) & (ends >= starts)
    pat, col = np.nonzero(valid)
    start, end = starts[pat, col], ends[pat, col]
    length = (end - start + 1).astype(float)
    pqi, other, ed = _employee_rates(config, cal, ppl, spons, pat, start)

    def draw(rate: np.ndarray):
        k = rng.poisson(rate * length)
        seg = np.repeat(np.arange(len(pat)), k)
        return seg, start[seg] + (rng.random(len(seg)) * length[seg]).astype(np.int64)

    total = pqi.sum(axis=1)
    seg_p, day_p = draw(total)
    kind_p = _pick_weighted(pqi[seg_p], rng.random(len(seg_p)))
    seg_o, day_o = draw(other)
    seg_e, day_e = draw(ed)
    cand_pat = np.concatenate([pat[seg_p], pat[seg_o]])
    cand_day = np.concatenate([day_p, day_o])
    cand_kind = np.concatenate([kind_p, np.full(len(seg_o), len(PQI_INDICATORS))])
    order = np.lexsort((cand_kind, cand_day, cand_pat))
    return (cand_pat[order], cand_day[order], cand_kind[order]), (pat[seg_e], day_e)


# ------------------------------------------------------------------------------------------- the timeline


class _Recorder:
    """Accumulates the stays, ED visits and truth rows of one block as column arrays."""

    def __init__(self) -> None:
        self.stays: list[dict[str, np.ndarray]] = []
        self.ed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add_stays(self, **cols: np.ndarray) -> None:
        if len(cols["pat"]):
            self.stays.append(cols)

    def add_ed(self, pat: np.ndarray, day: np.ndarray, facility: np.ndarray) -> None:
        if len(pat):
            self.ed.append((pat, day, facility))


def _pad(matrix: np.ndarray, width: int) -> np.ndarray:
    if matrix.shape[1] >= width:
        return matrix
    return np.concatenate([matrix, np.full((matrix.shape[0], width - matrix.shape[1]), -1, matrix.dtype)], 1)


def _acute_codes(cb: _Codebook, ppl: _People, pats: np.ndarray, has: np.ndarray, cond: np.ndarray,
                 code: np.ndarray, rng: np.random.Generator):
    """Secondary diagnoses with POA flags, procedures and the comorbidity count of acute stays (``has``: the
    patients' chronic categories on the admission day)."""
    m = len(pats)
    coded = has & (rng.random(has.shape) < _CODED_SHARE)
    coded = (coded | cb.force[code]) & ~cb.suppress[code]
    # a forced category the patient does not have is coded with the category's first code
    chronic_ids = np.where(coded, np.where(has, ppl.variant[pats], cb.chronic_ids[None, :, 0]), -1)
    comorbidity = (coded & ppl.counted[None, :]).sum(axis=1)
    n_slots = len(_EXTRA_SLOTS)
    extra = np.full((m, n_slots), -1, np.int64)
    extra_poa = np.full((m, n_slots), -1, np.int64)
    u = rng.random((m, n_slots))
    u_poa = rng.random((m, n_slots))
    for j in range(n_slots):
        cum = np.cumsum(cb.extra_prob[j, cond], axis=1)
        pick = (cum <= u[:, j:j + 1]).sum(axis=1)
        hit = pick < cum.shape[1]
        ids = np.where(hit, cb.extra_ids[j, np.minimum(pick, cum.shape[1] - 1)], -1)
        ids = np.where(ids == code, -1, ids)
        extra[:, j] = ids
        extra_poa[:, j] = np.where(u_poa[:, j] < cb.extra_poa_n[j], 1, 0)
    companion = cb.companion[code]
    cancer = np.where(cond == _CHEMO, ppl.cancer_site[pats], -1)
    lead = np.stack([companion, cancer], axis=1)
    sec = np.concatenate([lead, extra, chronic_ids], axis=1)
    u_c = rng.random(chronic_ids.shape)
    chronic_poa = np.where(u_c < 0.985, 0, np.where(u_c < 0.995, 2, 3))
    poa = np.concatenate([np.zeros_like(lead), extra_poa, chronic_poa], axis=1)
    poa = np.where(cb.is_z[np.maximum(sec, 0)], 4, poa)
    poa = np.where(sec >= 0, poa, -1)
    proc1 = np.where(rng.random(m) < cb.proc_prob[code], cb.proc_code[code], -1)
    proc2 = np.where(rng.random(m) < cb.cond_proc_prob[cond], cb.cond_proc[cond], -1)
    proc2 = np.where(proc2 == proc1, -1, proc2)
    procs = np.stack([proc1, proc2], axis=1)
    return sec, poa, procs, comorbidity


def _pac_codes(cb: _Codebook, ppl: _People, pats: np.ndarray, has: np.ndarray, acute_code: np.ndarray,
               setting: np.ndarray, rng: np.random.Generator):
    m = len(pats)
    principal = cb.pac_code[acute_code]
    debility = np.isin(setting, [_SNF, _HHA]) & (rng.random(m) < 0.3)
    principal = np.where(debility, cb.debility_ids[rng.integers(0, 2, m)], principal)
    coded = has & (rng.random(has.shape) < 0.7)
    sec = np.where(coded, ppl.variant[pats], -1)
    sec = np.where((sec == principal[:, None]) | cb.suppress[principal], -1, sec)
    return principal, sec


def _simulate_block(config: SynthConfig, cal: _Calendar, fac: _Facilities, block: int, stream: tuple[int, int],
                    g0: int, g1: int) -> dict[str, pa.Table]:
    """Simulate the timelines of patients ``g0 .. g1 - 1`` (one block, numbered ``block`` in the key of its stays
    and visits, drawn from the random stream ``stream``) and return their tables."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=stream))
    cb = _codebook()
    employees = stream[0] == 2  # a block is all Medicare (with the former draws) or all employees
    if employees:
        spons = _sponsors(config)
        ppl = _employees(config, cal, fac, spons, g0, g1, rng)
        (c_pat, c_day, c_kind), (ed_pat, ed_day) = _employee_events(config, cal, ppl, spons, rng)
        c_key = c_pat * (cal.horizon + 2) + c_day
    else:
        ppl = _people(config, cal, fac, g0, g1, rng)
    n = ppl.n
    rec = _Recorder()
    partner_hospital = fac.partner & (fac.setting == _ACUTE)
    single_hospital = fac.count[:, _ACUTE] < 2
    has_setting = fac.count > 0
    hip_fracture = np.array([cb.dx.index("S72.001A"), cb.dx.index("S72.002A")])
    pci = cb.pcs.index("027034Z")

    active = np.ones(n, bool)
    t_free = ppl.t0.copy()  # first day the patient is back in the community and at risk of a new admission
    f_day = np.full(n, -1, np.int64)  # a forced next stay (transfer or readmission): day, kind, from where
    f_kind = np.zeros(n, np.int64)
    f_hosp = np.full(n, -1, np.int64)
    f_cond = np.zeros(n, np.int64)
    f_code = np.zeros(n, np.int64)
    planned = np.where(ppl.chemo, ppl.t0 + (rng.random(n) * (ppl.t_end - ppl.t0 + 1)).astype(np.int64), _INF)
    death = np.full(n, _INF, np.int64)

    disp_codes = np.array([_S[c] for c in _ACUTE_DISPOSITIONS])
    with np.errstate(divide="ignore"):
        disp_logw = np.log(np.array([ACUTE_DISCHARGE_WEIGHTS[c] for c in CONDITIONS], float))
    disp_setting = {_S["03"]: _SNF, _S["06"]: _HHA, _S["62"]: _IRF, _S["63"]: _LTCH}
    d_probs = np.exp(-np.arange(1, 31) / READMIT_DAY_SCALE)
    d_cum = _cumulative(d_probs)
    rc = READMISSION_COEFFICIENTS
    cond_coef = np.array([rc.get(f"condition_{c}", 0.0) for c in CONDITIONS])
    disp_coef = np.zeros(len(_STATUS))
    for code, key in (("07", "ama"), ("03", "snf"), ("06", "hha"), ("62", "irf"), ("63", "ltch")):
        disp_coef[_S[code]] = rc[f"discharge_{key}"]
    pd_coef = POST_DISCHARGE_DEATH["coefficients"]
    death_cond = np.array([pd_coef.get(f"condition_{c}", 0.0) for c in CONDITIONS])
    ih_intercept = np.array([IN_HOSPITAL_DEATH["intercept_by_condition"][c] for c in CONDITIONS])
    ih_coef = IN_HOSPITAL_DEATH["coefficients"]
    los_med = np.array([ACUTE_LOS[c][0] for c in CONDITIONS])
    los_sd = np.array([ACUTE_LOS[c][1] for c in CONDITIONS])
    pay_base = np.array([_ACUTE_PAYMENT[c] for c in CONDITIONS], float)
    community_intercept = np.zeros(5)
    for s in (_SNF, _IRF, _LTCH, _HHA):
        community_intercept[s] = COMMUNITY_MODEL["intercept_by_setting"][SETTINGS[s]]
    cc = COMMUNITY_MODEL["coefficients"]
    deaths = np.array([_S["20"], _S["50"], _S["51"]])

    def pac_stay(pats, has, setting, facility, start, age10, comorbidity, acute_code, y, r, can_hha, can_snf):
        """Record one post-acute stay per row; return its discharge day and status."""
        m = len(pats)
        partner_post = fac.partner[facility] & (fac.partner_day[facility] <= start)
        natural = np.empty(m, np.int64)
        for s in (_SNF, _IRF, _LTCH):
            rows = setting == s
            med_, sd_, lo_, hi_ = PAC_LOS[SETTINGS[s]]
            natural[rows] = _lognormal_days(rng, np.full(rows.sum(), med_), np.full(rows.sum(), sd_), lo_, hi_)
        rows = setting == _HHA
        periods = _pick_rows(np.tile([0.5, 0.9, 1.0], (rows.sum(), 1)), rng.random(rows.sum())) + 1
        natural[rows] = 30 * periods - rng.integers(0, 6, rows.sum())
        end = start + natural
        interrupted = y & (r <= end)  # a readmission ends the stay with status 02
        end = np.where(interrupted, r, end)
        p_comm = _expit(community_intercept[setting] + cc["age10"] * age10 + cc["comorbidity_count"] * comorbidity
                        + COMMUNITY_MODEL["facility_effect_sign"] * fac.effect[facility]
                        + cc["partner_after_start"] * partner_post)
        comm = rng.random(m) < p_comm
        status = np.full(m, _S["01"], np.int64)
        u = rng.random(m)
        for s in (_SNF, _IRF, _LTCH, _HHA):
            for outcome, split in zip((True, False), _COMMUNITY_SPLIT[s], strict=True):
                sel = (setting == s) & (comm == outcome)
                codes = np.array([_S[c] for c, _ in split])
                cum = _cumulative([w for _, w in split])
                status[sel] = codes[_pick_rows(np.tile(cum, (sel.sum(), 1)), u[sel])]
        status = np.where((status == _S["06"]) & ~can_hha, _S["01"], status)
        status = np.where((status == _S["03"]) & ~can_snf, _S["64"], status)
        status = np.where(y & np.isin(status, deaths), _S["64"], status)  # readmitted later: did not die here
        status = np.where(interrupted, _S["02"], status)
        principal, sec = _pac_codes(cb, ppl, pats, has, acute_code, setting, rng)
        days = np.maximum(end - start, 1)
        noise = rng.standard_normal(m)
        payment = np.select([setting == _SNF, setting == _IRF, setting == _LTCH],
                            [PAC_PAYMENT["snf_per_day"] * days, PAC_PAYMENT["irf"] * np.exp(0.25 * noise),
                             PAC_PAYMENT["ltch"] * np.exp(0.3 * noise)],
                            PAC_PAYMENT["hha_per_period"] * np.ceil(days / 30) * np.exp(0.15 * noise))
        # the partnership's payment effect: a deterministic multiplier (no draw), exp(0) = 1 exactly elsewhere
        payment = payment * np.exp(config.payment_partnership_effect * partner_post)
        rec.add_stays(pat=pats, fac=facility, admit=start, disch=end, status=status, adm_type=np.full(m, -1),
                      principal=principal, principal_poa=np.full(m, -1), sec=sec, sec_poa=np.full(sec.shape, -1),
                      procs=np.full((m, 1), -1), payment=payment, p_readmit=np.full(m, np.nan),
                      readmit=np.full(m, -1), p_comm=np.where(interrupted, np.nan, p_comm),
                      comm=np.where(interrupted, -1, comm.astype(np.int64)))
        return end, status

    rounds = 0
    while active.any():
        rounds += 1
        if rounds > 5000:  # every round moves each active patient forward in time; this cannot happen
            raise RuntimeError("synthetic timeline did not terminate")
        a = np.flatnonzero(active)
        forced = f_day[a] >= 0

        # patients in the community: next admission, death or planned stay, whichever comes first
        nf = a[~forced]
        if employees:  # the first candidate admission on or after the day back in the community
            pos = np.searchsorted(c_key, nf * (cal.horizon + 2) + t_free[nf])
            hit = pos < len(c_key)
            hit[hit] = c_pat[pos[hit]] == nf[hit]
            s_day = np.where(hit, c_day[np.minimum(pos, len(c_key) - 1)], _INF)
            s_kind = np.where(hit, c_kind[np.minimum(pos, len(c_key) - 1)], -1)
        else:
            s_day = _next_event(cal.cum_admission, t_free[nf], ppl.lam[nf], rng)
        b_day = _next_event(cal.cum_death, t_free[nf], ppl.mu[nf], rng)
        stacked = np.stack([b_day, planned[nf], s_day])
        which = np.argmin(stacked, axis=0)
        ev = stacked[which, np.arange(len(nf))]
        limit = ppl.t_end[nf]
        if not employees:  # ED visits while in the community (employees': drawn with their admissions)
            span = np.maximum(np.minimum(ev, limit + 1) - t_free[nf], 0)
            n_ed = rng.poisson(ppl.ed[nf] * span)
            ed_pat = np.repeat(nf, n_ed)
            ed_day = (np.repeat(t_free[nf], n_ed)
                      + (rng.random(n_ed.sum()) * np.repeat(span, n_ed)).astype(np.int64))
            rec.add_ed(ed_pat, ed_day, ppl.preferred[ed_pat])
        happens = ev <= limit
        dies = happens & (which == 0)
        death[nf[dies]] = b_day[dies]
        active[nf[~happens | dies]] = False
        go = happens & ~dies
        fa = a[forced]
        f_ok = f_day[fa] <= ppl.t_end[fa]
        active[fa[~f_ok]] = False
        pats = np.concatenate([fa[f_ok], nf[go]])
        day = np.concatenate([f_day[fa[f_ok]], ev[go]])
        kind = np.concatenate([f_kind[fa[f_ok]], np.where(which[go] == 1, _PLANNED, _SPONTANEOUS)])
        if employees:  # the PQI indicator of an admission from the PQI process, else -1
            indicator = np.concatenate([np.full(len(fa[f_ok]), -1), np.where(
                (which[go] == 2) & (s_kind[go] < len(PQI_INDICATORS)), s_kind[go], -1)])
        f_day[a] = -1
        m = len(pats)
        if m == 0:
            continue
        mk = ppl.market[pats]
        age10 = ((day - ppl.birth[pats]) / 365.25 - 75) / 10
        emp = ppl.employee[pats]
        is_re = kind == _READMISSION
        tr = kind == _TRANSFER

        # condition and principal diagnosis
        logw = ppl.cond_logw[pats].copy()
        logw[:, [_PN, _COPD, _SEPSIS]] += np.log1p(0.45 * _seasonal(cal.start, day, 1.0))[:, None]
        cond = _pick_weighted(np.exp(logw - logw.max(axis=1, keepdims=True)), rng.random(m))
        keep = rng.random(m) < 0.35
        if employees:  # an employee's admission outside the PQI process has a principal code of no PQI
            keep &= cb.has_other[f_cond[pats]]
        cond = np.where((is_re & keep) | tr, f_cond[pats], cond)
        cond = np.where(is_re & np.isin(cond, [_HIPKNEE, _CHEMO]), _OTHER, cond)
        cond = np.where(kind == _PLANNED, _CHEMO, cond)
        cum = cb.other_cum if employees else cb.principal_cum
        code = cb.principal_ids[cond, _pick_rows(cum[cond], rng.random(m))]
        code = np.where(tr, f_code[pats], code)
        if employees and (indicator >= 0).any():
            rows = np.flatnonzero(indicator >= 0)
            ind = indicator[rows]
            cond[rows] = cb.pqi_cond[ind]
            code[rows] = cb.pqi_ids[ind, _pick_rows(cb.pqi_cum[ind], rng.random(len(rows)))]

        # hospital: mostly the preferred one; readmissions mostly where the patient was discharged
        anywhere = _choose_facility(fac, mk, _ACUTE, rng.random(m))
        hosp = np.where(rng.random(m) < 0.8, ppl.preferred[pats], anywhere)
        hosp = np.where(is_re, np.where(rng.random(m) < 0.7, f_hosp[pats], anywhere), hosp)
        if tr.any():
            hosp[tr] = _choose_facility(fac, mk[tr], _ACUTE, rng.random(tr.sum()), weight_power=1.5,
                                        exclude=f_hosp[pats[tr]])
        hosp_partner = partner_hospital[hosp] & (fac.partner_day[hosp] <= day)

        # admission type (index into _ADMISSION_TYPES): 1 emergency, 2 urgent, 3 elective, 5 trauma
        u = rng.random(m)
        adm = np.where(u < 0.78, 0, np.where(u < 0.96, 1, np.where(u < 0.99, 2, 4)))
        adm = np.where(np.isin(code, hip_fracture) & (u > 0.93), 3, adm)
        adm = np.where(is_re, np.where(u < 0.85, 0, 1), adm)
        adm = np.where(tr, np.where(u < 0.5, 0, 1), adm)
        adm = np.where(np.isin(cond, [_HIPKNEE, _CHEMO]) & ~tr, 2, adm)

        has = _chronic_on(ppl, pats, day)
        sec, poa, procs, comorbidity = _acute_codes(cb, ppl, pats, has, cond, code, rng)
        los = _lognormal_days(rng, los_med[cond] * np.exp(0.04 * (comorbidity - 3)), los_sd[cond], 1, 60)
        disch = day + los
        payment = (pay_base[cond] * np.exp(0.25 * rng.standard_normal(m)) * (1 + 0.05 * (los - los_med[cond]))
                   + 8000 * (procs[:, 0] == pci))
        payer = spons.payment[ppl.sponsor_year[pats, _year_index(cal, day)]] if employees else 1.0
        payment = np.maximum(payment, 1500) * payer

        # discharge status: death in hospital, else a disposition by condition, age, dementia, population
        died = rng.random(m) < _expit(ih_intercept[cond] + ih_coef["age10"] * age10
                                      + ih_coef["comorbidity_count"] * comorbidity)
        logw = disp_logw[cond].copy()
        logw[:, 2] += 0.35 * age10 + np.log(1.6) * ppl.chronic[pats, _CK["dementia"]]
        logw[:, 0] -= 0.25 * age10
        logw[:, 6:8] += 0.3 * age10[:, None]
        logw[:, [2, 3, 5, 6, 7]] += np.log([0.15, 0.6, 0.3, 0.3, 0.3])[None, :] * emp[:, None]
        logw[:, 1] = np.where(tr | single_hospital[mk], -np.inf, logw[:, 1])
        for col, s in ((2, _SNF), (3, _HHA), (4, _IRF), (5, _LTCH)):
            logw[:, col] = np.where(has_setting[mk, s], logw[:, col], -np.inf)
        status = disp_codes[_pick_weighted(np.exp(logw - logw.max(axis=1, keepdims=True)), rng.random(m))]
        status = np.where(died, _S["20"], status)
        hospice = np.isin(status, [_S["50"], _S["51"]])
        transfer = status == _S["02"]
        eligible = ~np.isin(status, [_S["20"], _S["02"], _S["50"], _S["51"]])

        # the first post-acute provider is chosen before the readmission draw: its effect is in the model
        pac_setting = np.full(m, -1, np.int64)
        for code_s, s in disp_setting.items():
            pac_setting[status == code_s] = s
        has_pac = pac_setting >= 0
        pp = np.flatnonzero(has_pac)
        p1_start = disch + (rng.random(m) < np.where(pac_setting == _HHA, 0.7, 0.4))
        p1_fac = np.full(m, -1, np.int64)
        p1_fac[pp] = _choose_facility(fac, mk[pp], pac_setting[pp], rng.random(len(pp)), day=p1_start[pp],
                                      from_partner=hosp_partner[pp])
        partner_post = has_pac & fac.partner[p1_fac] & (fac.partner_day[p1_fac] <= p1_start)

        # readmission: the known model
        lp = (READMISSION_INTERCEPT + rc["age10"] * age10 + rc["comorbidity_count"] * comorbidity
              + rc["dual_eligible"] * ppl.dual[pats] + rc["male"] * ppl.male[pats] + rc["employees"] * emp
              + cond_coef[cond] + disp_coef[status] + SEASONAL_AMPLITUDE * _seasonal(cal.start, disch, 1.0)
              + fac.effect[hosp] + np.where(has_pac, fac.effect[p1_fac], 0.0)
              + config.partnership_effect * partner_post)
        p_re = _expit(lp)
        y = eligible & (rng.random(m) < p_re)
        r = disch + 1 + _pick_rows(np.tile(d_cum, (m, 1)), rng.random(m))

        # post-acute stays: the first, then possibly a second (IRF/LTCH -> SNF, or -> home health)
        p1_end = np.full(m, -1, np.int64)
        p1_status = np.full(m, -1, np.int64)
        if len(pp):
            p1_end[pp], p1_status[pp] = pac_stay(
                pats[pp], has[pp], pac_setting[pp], p1_fac[pp], p1_start[pp], age10[pp], comorbidity[pp], code[pp],
                y[pp], r[pp], has_setting[mk[pp], _HHA], has_setting[mk[pp], _SNF])
        second = np.where(p1_status == _S["06"], _HHA, np.where(p1_status == _S["03"], _SNF, -1))
        p2 = np.flatnonzero(second >= 0)
        p2_end = np.full(m, -1, np.int64)
        p2_status = np.full(m, -1, np.int64)
        if len(p2):
            start2 = p1_end[p2] + (rng.random(len(p2)) < np.where(second[p2] == _HHA, 0.7, 0.2))
            fac2 = _choose_facility(fac, mk[p2], second[p2], rng.random(len(p2)), day=start2,
                                    from_partner=hosp_partner[p2])
            no = np.zeros(len(p2), bool)
            p2_end[p2], p2_status[p2] = pac_stay(pats[p2], has[p2], second[p2], fac2, start2, age10[p2],
                                                 comorbidity[p2], code[p2], y[p2], r[p2], no, no)

        rec.add_stays(pat=pats, fac=hosp, admit=day, disch=disch, status=status, adm_type=adm, principal=code,
                      principal_poa=np.where(cb.is_z[code], 4, np.where(rng.random(m) < 0.997, 0, 2)),
                      sec=sec, sec_poa=poa, procs=procs, payment=payment,
                      p_readmit=np.where(eligible, p_re, np.nan), readmit=np.where(eligible, y, -1),
                      p_comm=np.full(m, np.nan), comm=np.full(m, -1))

        # deaths after the stay: in hospital, in hospice, in post-acute care, at home within 30 days
        last_end = np.maximum(np.maximum(disch, p1_end), p2_end)
        hospice_days = rng.geometric(1 / 15, m)
        new_death = np.where(status == _S["20"], disch, _INF)
        new_death = np.where(hospice, disch + hospice_days, new_death)
        for end_, st_ in ((p1_end, p1_status), (p2_end, p2_status)):
            new_death = np.where(st_ == _S["20"], end_, new_death)
            new_death = np.where(np.isin(st_, [_S["50"], _S["51"]]), end_ + hospice_days, new_death)
        home = eligible & ~y & ~has_pac
        dies_home = home & (rng.random(m) < _expit(POST_DISCHARGE_DEATH["intercept"] + pd_coef["age10"] * age10
                                                   + pd_coef["comorbidity_count"] * comorbidity
                                                   + death_cond[cond]))
        new_death = np.where(dies_home, disch + rng.integers(1, 31, m), new_death)
        dead = new_death < _INF
        death[pats[dead]] = new_death[dead]
        active[pats[dead]] = False

        # what comes next: a transfer, a readmission, or back to the community
        nxt = transfer & ~dead
        f_day[pats[nxt]] = disch[nxt] + (rng.random(nxt.sum()) < 0.4)
        f_kind[pats[nxt]] = _TRANSFER
        f_hosp[pats[nxt]] = hosp[nxt]
        f_cond[pats[nxt]] = cond[nxt]
        f_code[pats[nxt]] = code[nxt]
        nxt = y & ~dead
        f_day[pats[nxt]] = r[nxt]
        f_kind[pats[nxt]] = _READMISSION
        f_hosp[pats[nxt]] = hosp[nxt]
        f_cond[pats[nxt]] = cond[nxt]
        back = ~dead & ~y & ~transfer
        # no unplanned admission in the 30 days after a discharge other than the drawn readmission (employees:
        # nor on the day after a post-acute discharge, which the PQIs would take for a transfer)
        t_free[pats[back]] = np.maximum(disch[back] + 31, last_end[back] + 1 + employees)
        chemo_now = kind == _PLANNED
        planned[pats[chemo_now]] = np.where(rng.random(chemo_now.sum()) < 0.7,
                                            disch[chemo_now] + 21 + rng.integers(0, 4, chemo_now.sum()), _INF)
        later = planned[pats] < _INF
        planned[pats[later]] = np.maximum(planned[pats[later]], np.maximum(disch[later] + 7, last_end[later] + 1))
        if not employees:
            ed_after = home & ~dead & (rng.random(m) < 0.08)  # ED visit within 30 days, not admitted
            rec.add_ed(pats[ed_after], disch[ed_after] + rng.integers(1, 31, ed_after.sum()), hosp[ed_after])

    if employees:
        rec.add_ed(ed_pat, ed_day, ppl.preferred[ed_pat])
        return _assemble(config, cal, fac, ppl, rec, death, block, rng, spons)
    return _assemble(config, cal, fac, ppl, rec, death, block, rng)


# ------------------------------------------------------------------------------------------- the tables

_ARROW_TYPES = {"date": pa.date32(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}


def _schema(table: str) -> pa.Schema:
    if table == "truth_facility_effects":
        return pa.schema([("facility_id", pa.string()), ("setting", pa.string()), ("effect", pa.float64())])
    if table == "truth_stays":
        return pa.schema([("stay_id", pa.string()), ("p_readmit", pa.float64()), ("readmit", pa.bool_()),
                          ("p_community", pa.float64()), ("community", pa.bool_())])
    return pa.schema([(s.name, _ARROW_TYPES.get(s.kind, pa.string())) for s in CONTRACT[table]])


def _concat_records(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        empty = np.zeros(0, np.int64)
        return {k: empty for k in ("pat", "fac", "admit", "disch", "status", "adm_type", "principal",
                                   "principal_poa", "readmit", "comm")} | {
            "payment": np.zeros(0), "p_readmit": np.zeros(0), "p_comm": np.zeros(0),
            "sec": np.zeros((0, 1), np.int64), "sec_poa": np.zeros((0, 1), np.int64),
            "procs": np.zeros((0, 1), np.int64)}
    out = {}
    for key in parts[0]:
        if parts[0][key].ndim == 2:
            width = max(p[key].shape[1] for p in parts)
            out[key] = np.concatenate([_pad(p[key].astype(np.int64), width) for p in parts])
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


def _enrollment(cal: _Calendar, ppl: _People, death: np.ndarray, rng: np.random.Generator):
    """Medicare coverage periods: FFS or MA with yearly switches on 1 January (no sponsor: -1)."""
    end_day = np.minimum(np.minimum(death, ppl.t_end), cal.horizon)
    cov = np.where(rng.random(ppl.n) < 0.72, 0, 1)
    start = ppl.enroll_start.copy()
    rows: list[tuple[np.ndarray, ...]] = []
    for jan in cal.jan_firsts:
        u = rng.random(ppl.n)
        switch = (jan > start) & (jan <= end_day) & (u < np.where(cov == 0, 0.06, 0.03))
        idx = np.flatnonzero(switch)
        rows.append((idx, start[idx], np.full(len(idx), jan - 1), cov[idx]))
        start[idx] = jan
        cov[idx] = 1 - cov[idx]
    idx = np.arange(ppl.n)
    rows.append((idx, start, end_day, cov))
    pat, s, e, c = (np.concatenate(col) for col in zip(*rows, strict=True))
    order = np.lexsort((s, pat))
    return pat[order], s[order], e[order], c[order], np.full(len(pat), -1)


def _employee_enrollment(cal: _Calendar, ppl: _People, death: np.ndarray):
    """Employees' coverage periods: commercial, from hire (18 at the earliest) to leaving, the day before the 65th
    birthday, death or the end of the data, a new period on the 1 January they move to another sponsor."""
    end_day = np.minimum(np.minimum(death, ppl.t_end), cal.horizon)
    start = ppl.enroll_start.copy()
    rows: list[tuple[np.ndarray, ...]] = []
    for y, jan in enumerate(cal.jan_firsts, start=1):
        change = (ppl.sponsor_year[:, y] != ppl.sponsor_year[:, y - 1]) & (jan > start) & (jan <= end_day)
        idx = np.flatnonzero(change)
        rows.append((idx, start[idx], np.full(len(idx), jan - 1), ppl.sponsor_year[idx, y - 1]))
        start[idx] = jan
    idx = np.arange(ppl.n)
    rows.append((idx, start, end_day, ppl.sponsor_year[idx, _year_index(cal, start)]))
    pat, s, e, sponsor = (np.concatenate(col) for col in zip(*rows, strict=True))
    order = np.lexsort((s, pat))
    return pat[order], s[order], e[order], np.full(len(pat), 2), sponsor[order]


def _assemble(config: SynthConfig, cal: _Calendar, fac: _Facilities, ppl: _People, rec: _Recorder,
              death: np.ndarray, block: int, rng: np.random.Generator,
              spons: _Sponsors | None = None) -> dict[str, pa.Table]:
    cb = _codebook()
    epoch = cal.epoch_day
    patient_ids = _string_array("P", ppl.gid + 1, 9)

    st = _concat_records(rec.stays)
    keep = st["disch"] <= cal.horizon  # the data hold stays that ended within the period
    seq = np.arange(len(keep))
    order = np.lexsort((seq[keep], st["disch"][keep], st["admit"][keep], st["pat"][keep]))
    st = {k: v[keep][order] for k, v in st.items()}
    n_st = len(st["pat"])
    if n_st >= 10**7:
        raise ParameterError("SynthConfig.chunk_patients is too large: a block holds 10 million stays at most")
    stay_ids = _string_array("S", block * 10**7 + np.arange(n_st), 11)
    stays = pa.table({
        "stay_id": stay_ids,
        "patient_id": pc.take(patient_ids, pa.array(st["pat"])),
        "facility_id": _take(fac.ids, st["fac"]),
        "admit_date": _dates(epoch, st["admit"]),
        "discharge_date": _dates(epoch, st["disch"]),
        "discharge_status": _take(_STATUS, st["status"]),
        "admission_type": _take(_ADMISSION_TYPES, st["adm_type"]),
        "principal_dx": _take(cb.dx, st["principal"]),
        "principal_dx_poa": _take(_POA, st["principal_poa"]),
        "secondary_dx": _join_codes(st["sec"], cb.dx),
        "secondary_poa": _join_codes(st["sec_poa"], _POA),
        "procedures": _join_codes(st["procs"], cb.pcs),
        "payment": pa.array(np.round(st["payment"], 2)),
    }, schema=_schema("stays"))

    truth_rows = ~np.isnan(st["p_readmit"]) | ~np.isnan(st["p_comm"])
    truth_stays = pa.table({
        "stay_id": stay_ids.filter(pa.array(truth_rows)),
        "p_readmit": pa.array(np.round(st["p_readmit"][truth_rows], 5), from_pandas=True),
        "readmit": pa.array(st["readmit"][truth_rows] == 1, mask=st["readmit"][truth_rows] < 0),
        "p_community": pa.array(np.round(st["p_comm"][truth_rows], 5), from_pandas=True),
        "community": pa.array(st["comm"][truth_rows] == 1, mask=st["comm"][truth_rows] < 0),
    }, schema=_schema("truth_stays"))

    dead = death <= cal.horizon
    patients = pa.table({
        "patient_id": patient_ids,
        "birth_date": _dates(epoch, ppl.birth),
        "sex": _take(_SEX, ppl.male.astype(np.int64)),
        "dual_eligible": pa.array(ppl.dual),
        "death_date": _dates(epoch, np.where(dead, death, 0), dead),
        "market": _take(fac.market_names, ppl.market),
        "population_group": _take(_GROUPS, ppl.employee.astype(np.int64)),
    }, schema=_schema("patients"))

    if spons is None:
        e_pat, e_start, e_end, e_cov, e_sponsor = _enrollment(cal, ppl, death, rng)
    else:
        e_pat, e_start, e_end, e_cov, e_sponsor = _employee_enrollment(cal, ppl, death)
    enrollment = pa.table({
        "patient_id": pc.take(patient_ids, pa.array(e_pat)),
        "start_date": _dates(epoch, e_start),
        "end_date": _dates(epoch, e_end),
        "coverage": _take(_COVERAGE, e_cov),
        "sponsor": _take(spons.names if spons is not None else (), e_sponsor),
    }, schema=_schema("enrollment"))

    if rec.ed:
        v_pat, v_day, v_fac = (np.concatenate(col) for col in zip(*rec.ed, strict=True))
    else:
        v_pat = v_day = v_fac = np.zeros(0, np.int64)
    # employees' visits on the day of death count (their person-time includes it)
    ok = ((v_day <= np.minimum(ppl.t_end[v_pat], cal.horizon)) & (v_day < death[v_pat] + ppl.employee[v_pat])
          & (v_day >= ppl.t0[v_pat]))
    key = np.unique(v_pat[ok] * (2 * _INF) + v_day[ok], return_index=True)[1]  # one visit a day, sorted
    v_pat, v_day, v_fac = v_pat[ok][key], v_day[ok][key], v_fac[ok][key]
    ed_visits = pa.table({
        "visit_id": _string_array("V", block * 10**7 + np.arange(len(v_pat)), 11),
        "patient_id": pc.take(patient_ids, pa.array(v_pat)),
        "visit_date": _dates(epoch, v_day),
        "facility_id": _take(fac.ids, v_fac),
    }, schema=_schema("ed_visits"))
    out = {"patients": patients, "stays": stays, "enrollment": enrollment, "ed_visits": ed_visits}
    if config.truth_stays:
        out["truth_stays"] = truth_stays
    if spons is None and ppl.employee.any():  # the former draws leave no row (keys are given before this)
        kept = ~ppl.employee
        masks = {"patients": kept, "stays": kept[st["pat"]], "enrollment": kept[e_pat], "ed_visits": kept[v_pat],
                 "truth_stays": kept[st["pat"]][truth_rows]}
        out = {name: table.filter(pa.array(masks[name])) for name, table in out.items()}
    return out


def _facility_effects(fac: _Facilities) -> pa.Table:
    return pa.table({"facility_id": pa.array(fac.ids, pa.string()),
                     "setting": _take(SETTINGS, fac.setting),
                     "effect": pa.array(np.round(fac.effect, 6))}, schema=_schema("truth_facility_effects"))


def _tables(config: SynthConfig):
    """Yield (table name, Arrow table) pieces: facilities, then each block's tables, then facility effects."""
    cal = _calendar(config)
    fac = _facilities(config, cal)
    yield "facilities", fac.table.cast(_schema("facilities"))
    for block, (stream, g0, g1) in enumerate(_blocks(config)):
        yield from _simulate_block(config, cal, fac, block, stream, g0, g1).items()
    yield "truth_facility_effects", _facility_effects(fac)


def _output_tables(config: SynthConfig) -> tuple[str, ...]:
    return CONTRACT_TABLES + ("truth_facility_effects",) + (("truth_stays",) if config.truth_stays else ())


def generate(config: SynthConfig | None = None) -> dict[str, pd.DataFrame]:
    """Generate a synthetic dataset in memory (for small configurations: tests, examples, notebooks).

    Parameters
    ----------
    config : SynthConfig, optional
        Defaults to ``SynthConfig()`` (the committed sample).

    Returns
    -------
    dict of DataFrame
        The contract tables ``facilities``, ``patients``, ``stays``, ``enrollment``, ``ed_visits`` (typed:
        dates as ``datetime64``, booleans as ``bool``, codes as text with dots) and the truth tables
        ``truth_facility_effects`` and ``truth_stays`` (unless ``config.truth_stays`` is false). The
        model parameters are :func:`truth` ``(config)``.

    Examples
    --------
    >>> cfg = SynthConfig(n_markets=1, patients_per_market=200, snf_per_market=2, hha_per_market=2)
    >>> out = generate(cfg)
    >>> list(out["stays"].columns[:4])
    ['stay_id', 'patient_id', 'facility_id', 'admit_date']
    >>> bool((out["stays"]["discharge_date"] >= out["stays"]["admit_date"]).all())
    True
    """
    config = SynthConfig() if config is None else config
    parts: dict[str, list[pa.Table]] = {name: [] for name in _output_tables(config)}
    for name, table in _tables(config):
        parts[name].append(table)
    out = {}
    for name in _output_tables(config):
        frame = pa.concat_tables(parts[name]).to_pandas(date_as_object=False)
        for col, spec_type in zip(_schema(name).names, _schema(name).types, strict=True):
            if spec_type == pa.int64():
                frame[col] = frame[col].astype("Int64")
            elif spec_type == pa.bool_() and frame[col].dtype == object:
                frame[col] = frame[col].astype("boolean")
            elif spec_type == pa.date32():
                frame[col] = frame[col].astype("datetime64[ns]")
        out[name] = frame
    return out


class _Writer:
    """Append Arrow tables to one CSV or Parquet file."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str) -> None:
        self.rows = 0
        self.fmt = fmt
        if fmt == "csv":
            self.handle = open(path, "wb")  # closed in close()
            self.handle.write((",".join(schema.names) + "\n").encode())
            options = pacsv.WriteOptions(include_header=False, quoting_style="none")
            self.writer = pacsv.CSVWriter(self.handle, schema, write_options=options)
        else:
            self.handle = None
            self.writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        if self.handle is not None:
            self.handle.close()


def write_synthetic(out_dir: str | Path, config: SynthConfig | None = None, *, fmt: str = "csv") -> dict[str, int]:
    """Write a synthetic dataset, block by block, with its truth files.

    Parameters
    ----------
    out_dir : path
        Directory to write to (created if needed). Files: ``facilities``, ``patients``, ``stays``,
        ``enrollment``, ``ed_visits``, ``truth_facility_effects`` and ``truth_stays`` as ``.csv`` or
        ``.parquet``, and ``truth.json``.
    config : SynthConfig, optional
        Defaults to ``SynthConfig()`` (the committed sample, ``data/sample``).
    fmt : {"csv", "parquet"}
        CSV: dates ``YYYY-MM-DD``, booleans ``true``/``false``, empty cells for missing values, no quoting.

    Returns
    -------
    dict of str to int
        Rows written per table.

    Notes
    -----
    Memory is bounded by one block (``config.chunk_patients`` patients). The same configuration gives
    byte-identical files. A file of the other format for the same table in ``out_dir`` would be read instead
    of (Parquet) or beside (CSV) the new one, so its presence is an error.

    Examples
    --------
    >>> import tempfile
    >>> cfg = SynthConfig(n_markets=1, patients_per_market=200, snf_per_market=2, hha_per_market=2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     counts = write_synthetic(tmp, cfg)
    ...     names = sorted(p.name for p in Path(tmp).iterdir())
    >>> names[:3]
    ['ed_visits.csv', 'enrollment.csv', 'facilities.csv']
    >>> counts["facilities"], counts["stays"] > 0
    (11, True)
    """
    config = SynthConfig() if config is None else config
    if fmt not in ("csv", "parquet"):
        raise ParameterError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    other = "parquet" if fmt == "csv" else "csv"
    stale = [out / f"{name}.{other}" for name in _output_tables(config) if (out / f"{name}.{other}").exists()]
    if stale:
        raise ParameterError(f"{out} already holds {', '.join(p.name for p in stale)}; remove them or write the "
                             f"{fmt} files to another directory (loaders would mix the two formats)")
    writers = {name: _Writer(out / f"{name}.{fmt}", _schema(name), fmt) for name in _output_tables(config)}
    try:
        for name, table in _tables(config):
            writers[name].write(table)
    finally:
        for w in writers.values():
            w.close()
    (out / "truth.json").write_text(json.dumps(truth(config), indent=2) + "\n", encoding="utf-8")
    return {name: w.rows for name, w in writers.items()}


STAYS_PER_PATIENT = 1.48
"""Stays (all settings) per Medicare beneficiary of ``patients_per_market`` over a three-year period, with the
default employee share (measured on the default sample; used by :func:`config_for_stays`)."""


def config_for_stays(n_stays: int, seed: int = 20240601) -> SynthConfig:
    """A configuration giving roughly ``n_stays`` stays (all settings) over the default three-year period.

    Markets hold about 10,000 stays up to 250,000 stays in total, then about 16,700 with a national-scale
    provider mix per market (13 hospitals, 50 SNFs, 4 IRFs, 1 LTCH, 37 home-health agencies): 5 million
    stays give 300 markets and 3,900 hospitals.

    Examples
    --------
    >>> cfg = config_for_stays(5_000_000)
    >>> cfg.n_markets, cfg.n_markets * cfg.hospitals_per_market
    (299, 3887)
    >>> config_for_stays(30_000).n_markets
    3
    """
    if not isinstance(n_stays, int | np.integer) or n_stays < 1000:
        raise ParameterError(f"n_stays must be an integer of at least 1000, not {n_stays!r}")
    if n_stays < 250_000:
        n_markets = max(1, round(n_stays / 10_000))
        counts = {"hospitals_per_market": 4, "snf_per_market": 6, "irf_per_market": 2, "ltch_per_market": 1,
                  "hha_per_market": 4}
    else:
        n_markets = max(1, round(n_stays / 16_700))
        counts = {"hospitals_per_market": 13, "snf_per_market": 50, "irf_per_market": 4, "ltch_per_market": 1,
                  "hha_per_market": 37}
    patients = max(1, round(n_stays / n_markets / STAYS_PER_PATIENT))
    return SynthConfig(seed=seed, n_markets=n_markets, patients_per_market=patients, **counts)
