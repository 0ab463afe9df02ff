"""AHRQ Prevention Quality Indicators (PQI, v2023): admissions, person-time denominators, rates, standardisation.

The PQIs count hospital admissions for ambulatory-care-sensitive conditions in a population, per 100,000 people
(here per 100,000 person-years of enrollment). carequal implements the ten v2023 area-level indicators and the
three composites:

==========  ====================================================================  ===========  =========
indicator   numerator (principal diagnosis unless stated)                         ages         kind
==========  ====================================================================  ===========  =========
PQI 01      diabetes with short-term complications                                18+          chronic
PQI 03      diabetes with long-term complications                                 18+          chronic
PQI 05      COPD or asthma                                                        40+          chronic
PQI 07      hypertension                                                          18+          chronic
PQI 08      heart failure                                                         18+          chronic
PQI 11      community-acquired bacterial pneumonia                                18+          acute
PQI 12      urinary tract infection                                               18+          acute
PQI 14      uncontrolled diabetes without complications                           18+          chronic
PQI 15      asthma                                                                18-39        chronic
PQI 16      any-listed lower-extremity amputation and any-listed diabetes         18+          chronic
PQI 90      any of 01, 03, 05, 07, 08, 11, 12, 14, 15, 16 (an admission once)    18+          composite
PQI 91      any of 11, 12 (acute)                                                 18+          composite
PQI 92      any of 01, 03, 05, 07, 08, 14, 15, 16 (chronic)                       18+          composite
==========  ====================================================================  ===========  =========

:func:`pqi_rules` lists every rule with the value set it uses and its source. Source: AHRQ QI, *Prevention
Quality Indicators Technical Specifications*, v2023 (qualityindicators.ahrq.gov; one document per indicator and
one for the composites). The official PDFs could not be opened where this module was written; the numerator,
exclusion and denominator text was read in the endorsed measure descriptions (Partnership for Quality
Measurement, CBE 0279 PQI 11 and 0285 PQI 16; ACP reviews of NQF 0275 PQI 05 and 0277 PQI 08), in transcriptions
of AHRQ's ICD-10 specifications (PQI 01, 03, 07, 12; Healthy People 2030 for PQI 11) and in the Tuva Project's
v2023 measure list; the composites' membership and the MDC 14/15 rules are AHRQ's as published (PQI 90: any of
the ten, each discharge once; 91: 11, 12; 92: the eight chronic). The code lists are AHRQ's, as transcribed by
the Tuva Project (``carequal/data/valuesets_pqi/``, Apache-2.0); the logic here is written from the
specifications, not from any project's code.

Rules common to every indicator (AHRQ: "Exclude discharges ..."):

* **Acute inpatient stays only**: the PQIs count hospital discharges; a stay whose facility's ``setting`` is not
  ``acute`` is ``not_acute``.
* **Missing data**: missing sex (``sex`` empty or ``U``), age (no ``birth_date``), principal diagnosis or
  admission / discharge date (AHRQ: missing gender, age, quarter, year, principal diagnosis). AHRQ's missing
  county and ungroupable DRG have no counterpart in the data contract (no county, no DRG).
* **Population at risk**: with ``enrollment`` given, an admission counts only when an enrollment period covers
  its admission date (``not_enrolled`` otherwise), so that numerator and person-time denominator describe the
  same people; this replaces AHRQ's assignment by county of residence.
* **Ages**: age in whole years on the admission date (AHRQ ``AGE``; birthdays count on the day, 29 February on
  1 March in other years, as :func:`carequal.cohorts.age_in_years`); outside the indicator's ages is
  ``outside_age_range``.
* **Obstetric admissions**: principal diagnosis in MDC 14, pregnancy, childbirth and the puerperium (the
  appendix list ``mdc_14_principal_diagnosis_codes``) is ``obstetric_mdc14``.
* **Newborns**: principal diagnosis in MDC 15, newborns and other neonates (``mdc_15_principal_diagnosis_codes``,
  which holds every live-birth code of appendix D) is ``newborn_mdc15``.
* **Transfers in**: AHRQ excludes admissions whose point of origin is a transfer from a hospital, a skilled
  nursing or intermediate care facility or another health care facility (UB-04 point of origin 4, 5, 6;
  admission source 2, 3). The contract has no point of origin, so a transfer is inferred from dates, as
  :func:`carequal.cohorts.link_transfers` links acute transfers: an acute admission is ``transfer_in`` when the
  same patient had an earlier stay (earlier by admission date, then discharge date, then ``stay_id``) at a
  *different* facility of setting ``acute``, ``snf``, ``irf`` or ``ltch`` that was discharged on the admission
  day, the day before, or later (a stay still open when the patient was admitted). Home health is not a health
  care facility point of origin (UB-04 code 1), so an ``hha`` episode is no source. ``transfer_settings`` and
  ``transfer_gap_days`` change the rule; a discharge home followed by an admission elsewhere the next day cannot
  be told apart from a transfer without the point of origin.

Rule order: every (stay, indicator) row carries one ``reason``, the first rule it fails in this order:
``not_acute``, ``missing_sex``, ``missing_age``, ``missing_principal_dx``, ``missing_dates``, ``not_enrolled``,
``not_in_numerator``, ``outside_age_range``, ``obstetric_mdc14``, ``newborn_mdc15``, ``transfer_in``, then the
indicator's own exclusions; ``counted`` otherwise. A composite row is ``counted`` when any component counts the
stay (so a stay counts once however many components it meets); otherwise its reason is the component reason
furthest along this order.

Denominators (:func:`pqi_person_time`): person-days of enrollment (overlapping periods of a patient merged) in
the reporting window, stopped at death, split at period boundaries (year, quarter or month) and at the birthdays that
move a person into the next age band, from age 18: bands 18-24, 25-29, ..., 80-84, 85+ (their edges include 40,
so PQI 05's 40+ and PQI 15's 18-39 are whole bands). Each indicator's denominator is the person-time in its ages.
Person-time of sex ``U`` or without a birth date is left out, as are such admissions.

Period of an admission: its **discharge date**. The PQI numerators are discharges: AHRQ's software reads one record
per discharge and places it in the data year and quarter of discharge (``YEAR``, ``DQTR``), so a stay admitted on
30 December 2023 and discharged on 3 January 2024 is a 2024 event, and one still in hospital at the end of the
reporting window is not yet counted. Age (AHRQ ``AGE``), the enrollment that puts the patient in the population
and the ``by`` groups taken from it (e.g. the sponsor) are those of the admission date.

Standardisation (:func:`pqi_standardised`): direct age-sex standardisation to the 2000 U.S. standard population
(NCHS, 19 age groups, Census P25-1130; ``carequal/data/standard_population_us2000_19.csv``), restricted to each
indicator's ages: bands 25-29 ... 85+ take the standard's groups; 18-24 takes 20-24 plus two fifths of 15-19 (the
15-19 group split evenly over its five single years: the single-year standard is not shipped). The standard has
no sex split: each sex gets half of its age band's weight. AHRQ's software adjusts area rates by age and sex to
its own reference population (HCUP data, with coefficients shipped in the software); that is not reproduced, so
these are not AHRQ risk-adjusted rates.
Indirect standardisation (:func:`pqi_observed_expected`): observed / expected admissions, expected from the pooled
population's age-sex rates (by default all groups of the input in the same period, e.g. the whole alliance).
Intervals: exact Poisson (Garwood) for rates and O/E; Dobson's method for directly standardised rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from carequal.cohorts import age_in_years
from carequal.errors import ParameterError
from carequal.intervals import dobson_dsr, poisson_exact

__all__ = ["COMPONENTS", "COMPOSITES", "INDICATORS", "Indicator", "PER", "PQI_VERSION", "REASONS", "SEXES",
           "SHARED_REASONS", "SPECIFIC_REASONS", "TRANSFER_SETTINGS", "pqi_admissions", "pqi_age_band",
           "pqi_attrition", "pqi_observed_expected", "pqi_person_time", "pqi_rates", "pqi_rules",
           "pqi_standardised", "pqi_value_sets", "standard_population_pqi"]

PQI_VERSION = "v2023"
PER = 100_000
"""Rates are per 100,000 person-years."""


@dataclass(frozen=True)
class Indicator:
    """One PQI: its number, name, kind (``acute``, ``chronic`` or ``composite``), ages and components."""

    number: str
    name: str
    kind: str
    min_age: int
    max_age: int | None = None
    components: tuple[str, ...] = ()


_ACUTE = ("11", "12")
_CHRONIC = ("01", "03", "05", "07", "08", "14", "15", "16")

INDICATORS: dict[str, Indicator] = {i.number: i for i in (
    Indicator("01", "Diabetes Short-Term Complications Admission Rate", "chronic", 18),
    Indicator("03", "Diabetes Long-Term Complications Admission Rate", "chronic", 18),
    Indicator("05", "COPD or Asthma in Older Adults Admission Rate", "chronic", 40),
    Indicator("07", "Hypertension Admission Rate", "chronic", 18),
    Indicator("08", "Heart Failure Admission Rate", "chronic", 18),
    Indicator("11", "Community-Acquired Pneumonia Admission Rate", "acute", 18),
    Indicator("12", "Urinary Tract Infection Admission Rate", "acute", 18),
    Indicator("14", "Uncontrolled Diabetes Admission Rate", "chronic", 18),
    Indicator("15", "Asthma in Younger Adults Admission Rate", "chronic", 18, 39),
    Indicator("16", "Lower-Extremity Amputation among Patients with Diabetes Rate", "chronic", 18),
    Indicator("90", "Prevention Quality Overall Composite", "composite", 18,
              components=tuple(sorted(_ACUTE + _CHRONIC))),
    Indicator("91", "Prevention Quality Acute Composite", "composite", 18, components=_ACUTE),
    Indicator("92", "Prevention Quality Chronic Composite", "composite", 18, components=_CHRONIC),
)}
"""The v2023 PQIs. PQI 10 (dehydration) is not among them: AHRQ retired it, so the acute composite is 11 + 12."""

COMPONENTS: tuple[str, ...] = tuple(n for n, i in INDICATORS.items() if i.kind != "composite")
COMPOSITES: tuple[str, ...] = tuple(n for n, i in INDICATORS.items() if i.kind == "composite")

SHARED_REASONS: tuple[str, ...] = ("not_acute", "missing_sex", "missing_age", "missing_principal_dx",
                                   "missing_dates", "not_enrolled", "not_in_numerator", "outside_age_range",
                                   "obstetric_mdc14", "newborn_mdc15", "transfer_in")
SPECIFIC_REASONS: dict[str, tuple[str, ...]] = {
    "05": ("cystic_fibrosis_or_respiratory_anomaly",),
    "07": ("cardiac_procedure", "ckd_stage_1_4_with_dialysis_access"),
    "08": ("cardiac_procedure",),
    "11": ("sickle_cell", "immunocompromised"),
    "12": ("kidney_or_urinary_tract_disorder", "immunocompromised"),
    "15": ("cystic_fibrosis_or_respiratory_anomaly",),
    "16": ("traumatic_amputation",),
}
REASONS: tuple[str, ...] = ("counted",) + SHARED_REASONS + tuple(dict.fromkeys(
    r for n in COMPONENTS for r in SPECIFIC_REASONS.get(n, ())))
"""Every ``reason`` :func:`pqi_admissions` can give, in rule order after ``counted``."""
_CODE = {r: k for k, r in enumerate(REASONS)}  # reasons as integer codes; a larger code is further along

TRANSFER_SETTINGS: tuple[str, ...] = ("acute", "snf", "irf", "ltch")
"""Settings whose stays are a transfer point of origin (hospital, SNF, other health care facility)."""

SEXES: tuple[str, ...] = ("F", "M")

_VS = {  # (pqi_number, value_set_name) of each list used below
    "01": ("01", "diabetes_with_short-term_complications_diagnosis_codes"),
    "03": ("03", "diabetes_with_long-term_complications_diagnosis_codes"),
    "05_copd": ("05", "chronic_obstructive_pulmonary_disorder"),
    "05_asthma": ("05", "asthma"),
    "05_resp": ("05", "cystic_fibrosis_and_anomalies_of_the_respiratory_system"),
    "07": ("07", "hypertension_diagnosis_codes"),
    "07_ckd": ("07", "exclusion_kidney_disease_diagnosis_codes"),
    "07_dialysis": ("07", "exclusion_dialysis_access_procedure_codes"),
    "08": ("08", "heart_failure_diagnosis_codes"),
    "11": ("11", "community_acquired_bacterial_pneumonia_diagnosis_codes"),
    "11_sickle": ("11", "sickle_cell_anemia_or_hb-s_disease_diagnosis_codes"),
    "12": ("12", "urinary_tract_infection_diagnosis_codes"),
    "12_kidney": ("12", "kidney_or_urinary_tract_disorder_diagnosis_codes"),
    "14": ("14", "uncontrolled_diabetes_diagnosis_codes"),
    "15": ("15", "asthma_diagnosis_codes"),
    "15_resp": ("15", "cystic_fibrosis_and_anomalies_of_the_respiratory_system_diagnosis_codes"),
    "16_amputation": ("16", "lower-extremity_amputation_procedure_codes"),
    "16_diabetes": ("16", "diabetes_diagnosis_codes"),
    "16_trauma": ("16", "traumatic_amputation_of_the_lower_extremity_diagnosis_codes"),
    "cardiac": ("appendix_b", "cardiac_procedure_codes"),
    "immuno_dx": ("appendix_c", "immunocompromised_state_diagnosis_codes"),
    "immuno_pr": ("appendix_c", "immunocompromised_state_procedure_codes"),
    "mdc14": ("appendix_f", "mdc_14_principal_diagnosis_codes"),
    "mdc15": ("appendix_f", "mdc_15_principal_diagnosis_codes"),
}

_SPEC = "AHRQ PQI technical specifications v2023"
_RULES = [  # indicator, step, rule, value sets, source
    ("all", "setting", "acute inpatient stays only (the PQIs count hospital discharges)", "",
     f"{_SPEC}: numerator = hospital discharges"),
    ("all", "missing", "exclude missing sex (empty or U), age, principal diagnosis, admission or discharge date",
     "", f"{_SPEC}: exclude missing gender, age, quarter, year, principal diagnosis (county, DRG: not in contract)"),
    ("all", "population", "with enrollment given: the admission date lies in an enrollment period", "",
     "carequal: numerator restricted to the population at risk of the person-time denominator"),
    ("all", "obstetric", "exclude principal diagnosis in MDC 14", "appendix_f/mdc_14_principal_diagnosis_codes",
     f"{_SPEC}: exclude obstetric discharges (MDC 14)"),
    ("all", "newborn", "exclude principal diagnosis in MDC 15", "appendix_f/mdc_15_principal_diagnosis_codes",
     f"{_SPEC}: exclude MDC 15 (newborns and other neonates)"),
    ("all", "transfer", "exclude admissions within 0-1 day of discharge from (or during a stay at) another "
     "acute, SNF, IRF or LTCH facility", "",
     f"{_SPEC}: exclude transfers from a hospital, SNF/ICF or other health care facility (point of origin "
     "4, 5, 6); dates stand in for the point of origin, which the contract lacks"),
    ("01", "numerator", "principal diagnosis of diabetes with short-term complications, ages 18+",
     "01/diabetes_with_short-term_complications_diagnosis_codes", f"{_SPEC}, PQI 01"),
    ("03", "numerator", "principal diagnosis of diabetes with long-term complications, ages 18+",
     "03/diabetes_with_long-term_complications_diagnosis_codes", f"{_SPEC}, PQI 03"),
    ("05", "numerator", "principal diagnosis of COPD or asthma, ages 40+",
     "05/chronic_obstructive_pulmonary_disorder; 05/asthma", f"{_SPEC}, PQI 05"),
    ("05", "exclusion", "any-listed diagnosis of cystic fibrosis or anomalies of the respiratory system",
     "05/cystic_fibrosis_and_anomalies_of_the_respiratory_system", f"{_SPEC}, PQI 05"),
    ("07", "numerator", "principal diagnosis of hypertension, ages 18+", "07/hypertension_diagnosis_codes",
     f"{_SPEC}, PQI 07"),
    ("07", "exclusion", "any-listed cardiac procedure", "appendix_b/cardiac_procedure_codes", f"{_SPEC}, PQI 07"),
    ("07", "exclusion", "any-listed stage I-IV kidney disease diagnosis with any-listed dialysis access "
     "procedure", "07/exclusion_kidney_disease_diagnosis_codes + 07/exclusion_dialysis_access_procedure_codes",
     f"{_SPEC}, PQI 07"),
    ("08", "numerator", "principal diagnosis of heart failure, ages 18+", "08/heart_failure_diagnosis_codes",
     f"{_SPEC}, PQI 08"),
    ("08", "exclusion", "any-listed cardiac procedure", "appendix_b/cardiac_procedure_codes", f"{_SPEC}, PQI 08"),
    ("11", "numerator", "principal diagnosis of community-acquired bacterial pneumonia, ages 18+",
     "11/community_acquired_bacterial_pneumonia_diagnosis_codes", f"{_SPEC}, PQI 11"),
    ("11", "exclusion", "any-listed sickle cell anemia or HB-S disease diagnosis",
     "11/sickle_cell_anemia_or_hb-s_disease_diagnosis_codes", f"{_SPEC}, PQI 11"),
    ("11", "exclusion", "any-listed immunocompromised-state diagnosis or procedure",
     "appendix_c/immunocompromised_state_diagnosis_codes; appendix_c/immunocompromised_state_procedure_codes",
     f"{_SPEC}, PQI 11"),
    ("12", "numerator", "principal diagnosis of urinary tract infection, ages 18+",
     "12/urinary_tract_infection_diagnosis_codes", f"{_SPEC}, PQI 12"),
    ("12", "exclusion", "any-listed kidney or urinary tract disorder diagnosis",
     "12/kidney_or_urinary_tract_disorder_diagnosis_codes", f"{_SPEC}, PQI 12"),
    ("12", "exclusion", "any-listed immunocompromised-state diagnosis or procedure",
     "appendix_c/immunocompromised_state_diagnosis_codes; appendix_c/immunocompromised_state_procedure_codes",
     f"{_SPEC}, PQI 12"),
    ("14", "numerator", "principal diagnosis of uncontrolled diabetes without complications, ages 18+",
     "14/uncontrolled_diabetes_diagnosis_codes", f"{_SPEC}, PQI 14"),
    ("15", "numerator", "principal diagnosis of asthma, ages 18-39", "15/asthma_diagnosis_codes",
     f"{_SPEC}, PQI 15"),
    ("15", "exclusion", "any-listed diagnosis of cystic fibrosis or anomalies of the respiratory system",
     "15/cystic_fibrosis_and_anomalies_of_the_respiratory_system_diagnosis_codes", f"{_SPEC}, PQI 15"),
    ("16", "numerator", "any-listed lower-extremity amputation procedure (the list holds no toe amputation, "
     "0Y6P-0Y6Y) and any-listed diabetes diagnosis, ages 18+",
     "16/lower-extremity_amputation_procedure_codes + 16/diabetes_diagnosis_codes", f"{_SPEC}, PQI 16"),
    ("16", "exclusion", "any-listed traumatic lower-extremity amputation diagnosis",
     "16/traumatic_amputation_of_the_lower_extremity_diagnosis_codes", f"{_SPEC}, PQI 16"),
    ("90", "numerator", "a stay counted by any of PQI 01, 03, 05, 07, 08, 11, 12, 14, 15, 16 (once), ages 18+", "",
     f"{_SPEC}, PQI 90 (composite)"),
    ("91", "numerator", "a stay counted by PQI 11 or 12 (once), ages 18+; PQI 10 is retired", "",
     f"{_SPEC}, PQI 91 (composite)"),
    ("92", "numerator", "a stay counted by any of PQI 01, 03, 05, 07, 08, 14, 15, 16 (once), ages 18+", "",
     f"{_SPEC}, PQI 92 (composite)"),
]


# ----------------------------------------------------------------------------------------------------- value sets


@cache
def pqi_value_sets() -> pd.DataFrame:
    """The shipped PQI v2023 value sets: ``code``, ``value_set_name``, ``pqi_number`` (text).

    Examples
    --------
    >>> vs = pqi_value_sets()
    >>> sorted(vs.loc[vs.pqi_number == "14", "code"])
    ['E10649', 'E1065', 'E11649', 'E1165']
    """
    path = resources.files("carequal") / "data" / "valuesets_pqi" / "pqi_value_sets.csv"
    with path.open(encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False)


@cache
def _codes(key: str) -> frozenset:
    number, name = _VS[key]
    vs = pqi_value_sets()
    codes = frozenset(vs.loc[(vs["pqi_number"] == number) & (vs["value_set_name"] == name), "code"])
    if not codes:  # a renamed list must not silently empty a rule
        raise ParameterError(f"PQI value set {number}/{name} is missing from pqi_value_sets.csv")
    return codes


def pqi_rules() -> pd.DataFrame:
    """Every rule applied, per indicator: ``indicator``, ``step``, ``rule``, ``value_sets``, ``source``.

    Examples
    --------
    >>> rules = pqi_rules()
    >>> rules.loc[rules.indicator == "16", "step"].tolist()
    ['numerator', 'exclusion']
    """
    return pd.DataFrame(_RULES, columns=["indicator", "step", "rule", "value_sets", "source"])


def _indicator_list(indicators) -> list[str]:
    if indicators is None:
        return list(INDICATORS)
    if isinstance(indicators, str | int):
        indicators = [indicators]
    out = []
    for value in indicators:
        key = f"{int(value):02d}" if str(value).isdigit() else str(value)
        if key not in INDICATORS:
            raise ParameterError(f"unknown PQI {value!r}; choose from {', '.join(INDICATORS)}")
        out.append(key)
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------------------ admissions


def _normalise_codes(values: pd.Series) -> pd.Series:
    """Upper-case codes without dots or spaces, lists separated by ';' ('|' and ',' accepted); '' -> NA."""
    text = values.astype("string").str.upper().str.replace(r"[.\s]", "", regex=True)
    text = text.str.replace(r"[|,]", ";", regex=True)
    return text.mask(text.fillna("").str.strip(";") == "")


def _long_codes(lists: pd.Series) -> pd.DataFrame:
    """One row per code of ';'-separated lists: ``row`` (position in ``lists``) and ``code``."""
    split = lists.reset_index(drop=True).str.split(";")
    long = split.explode()
    long = long[long.notna() & (long != "")]
    return pd.DataFrame({"row": long.index.to_numpy(dtype=np.int64), "code": long.to_numpy(dtype=object)})


def _any_in(long: pd.DataFrame, key: str, n: int) -> np.ndarray:
    rows = long["row"].to_numpy()[long["code"].isin(_codes(key)).to_numpy()]
    return np.bincount(rows, minlength=n) > 0


def _days(values) -> np.ndarray:
    """Dates as days since 1970-01-01 (float, NaN for missing)."""
    arr = pd.to_datetime(pd.Series(values)).to_numpy(dtype="datetime64[D]")
    out = arr.astype("int64").astype(float)
    out[np.isnat(arr)] = np.nan
    return out


def _lookup(keys: pd.Series, table: pd.DataFrame, key: str, column: str) -> np.ndarray:
    """``table[column]`` for each of ``keys`` matched on ``table[key]`` (first row of a key; NA if absent)."""
    first, rows = _first_rows(keys, table, key)
    return _take(first[column].to_numpy(dtype=object), rows, np.nan)


def _first_rows(keys: pd.Series, table: pd.DataFrame, key: str) -> tuple[pd.DataFrame, np.ndarray]:
    """``table``'s first row of each key, and the position in it of each of ``keys`` (-1 if absent), matched as
    text: found once, then every column is taken with :func:`_take` (typed, as the table holds it)."""
    first = table.drop_duplicates(key)
    index = pd.Index(first[key].astype(str).to_numpy())
    if not index.is_unique:  # keys distinct as values but not as text (1 and "1")
        raise ValueError(f"cannot match {key}: values that are the same as text ({index[index.duplicated()][0]})")
    return first, index.get_indexer(keys.astype(str).to_numpy())


def _take(values: np.ndarray, rows: np.ndarray, missing) -> np.ndarray:
    """``values[rows]``, ``missing`` where a row is -1 (absent)."""
    out = values[np.clip(rows, 0, None)] if len(values) else np.full(len(rows), missing, dtype=values.dtype)
    absent = rows < 0
    if absent.any():
        out = out.astype(object) if out.dtype.kind in "OUS" else out.copy()
        out[absent] = missing
    return out


def _birth_and_sex(first: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, pd.Series]:
    """Each row's birth date (``datetime64[D]``, NaT if unknown) and sex (trimmed, upper case), taken from
    ``first`` (patients: :func:`_first_rows`)."""
    birth = _take(pd.to_datetime(first["birth_date"]).to_numpy(dtype="datetime64[D]"), rows, np.datetime64("NaT"))
    sex = pd.Series(_take(first["sex"].to_numpy(dtype=object), rows, np.nan), dtype="string")
    return birth, sex.str.strip().str.upper()


def _split_by(by: Sequence[str], enrollment: pd.DataFrame | None, patients: pd.DataFrame,
              where: str) -> tuple[list[str], list[str]]:
    """Grouping columns taken from the enrollment period (time-varying, e.g. ``sponsor``) or from patients."""
    from_enrollment, from_patients = [], []
    reserved = {"period", "period_start", "period_end", "age_band", "sex", "indicator"}
    for col in by:
        if col in reserved:
            raise ParameterError(f"{where}: {col!r} is always a column of the output; leave it out of `by`")
        if enrollment is not None and col in enrollment.columns and col != "patient_id":
            from_enrollment.append(col)
        elif col in patients.columns:
            from_patients.append(col)
        else:
            where_from = "enrollment or patients" if enrollment is not None else "patients (no enrollment given)"
            raise ParameterError(f"{where}: grouping column {col!r} is in neither {where_from}")
    return from_enrollment, from_patients


def _group_key(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if not columns:
        return np.zeros(len(frame), dtype=np.int64)
    return frame.groupby(columns, dropna=False, sort=False).ngroup().to_numpy()


def _merge_periods(periods: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Union of each patient's periods (``patient_id``, ``s``, ``e`` in days) within each value of ``columns``:
    overlapping or touching periods become one."""
    enr = periods.assign(_g=_group_key(periods, ["patient_id"] + columns))
    enr = enr.sort_values(["_g", "s", "e"], kind="stable").reset_index(drop=True)
    run_end = enr.groupby("_g", sort=False)["e"].cummax()
    prev_end = run_end.groupby(enr["_g"], sort=False).shift()
    block = (prev_end.isna() | (enr["s"] > prev_end + 1)).cumsum()
    agg = {"patient_id": "first", "s": "min", "e": "max", **{c: "first" for c in columns}}
    return enr.groupby(block, sort=False).agg(agg).reset_index(drop=True)


def _enrollment_days(enrollment: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    enr = pd.DataFrame({"patient_id": enrollment["patient_id"].astype(str).to_numpy(),
                        "s": _days(enrollment["start_date"]), "e": _days(enrollment["end_date"])})
    for col in columns:
        enr[col] = enrollment[col].to_numpy(dtype=object)
    return enr.dropna(subset=["s", "e"])


def _check_enrollment_groups(enrollment: pd.DataFrame, columns: list[str], where: str) -> None:
    """Enrollment periods of one patient that overlap must agree on the grouping columns taken from enrollment
    (otherwise a day, and an admission on it, would belong to two groups)."""
    if not columns or enrollment.empty:
        return
    blocks = _merge_periods(_enrollment_days(enrollment, columns), columns)  # disjoint within a group
    blocks = blocks.sort_values(["patient_id", "s", "e"], kind="stable").reset_index(drop=True)
    prev_end = blocks.groupby("patient_id", sort=False)["e"].cummax().groupby(blocks["patient_id"]).shift()
    clash = (blocks["s"] <= prev_end).to_numpy()  # so an overlap is between different groups
    if clash.any():
        patients = blocks["patient_id"].to_numpy()[clash]
        raise ParameterError(
            f"{where}: enrollment periods of {len(set(patients)):,d} patient(s) overlap with different "
            f"{', '.join(columns)} (e.g. patient_id = {patients[0]}); a day cannot belong to two groups")


def _transfer_in(stay_id: np.ndarray, patient: np.ndarray, facility: np.ndarray, setting: np.ndarray,
                 admit: np.ndarray, discharge: np.ndarray, candidates: np.ndarray, *,
                 settings: Sequence[str], gap_days: int) -> np.ndarray:
    """Whether each candidate stay follows, within ``gap_days`` of its discharge (or during it), a stay at
    another facility of one of ``settings``."""
    n = len(stay_id)
    out = np.zeros(n, dtype=bool)
    valid = ~np.isnan(admit) & ~np.isnan(discharge)
    src_rows = np.flatnonzero(valid & np.isin(setting.astype(str), list(settings)))
    cand_rows = np.flatnonzero(valid & candidates)
    if len(src_rows) == 0 or len(cand_rows) == 0:
        return out
    cand = pd.DataFrame({"c": cand_rows, "patient": patient[cand_rows]})
    src = pd.DataFrame({"s": src_rows, "patient": patient[src_rows]})
    pairs = cand.merge(src, on="patient")
    c, s = pairs["c"].to_numpy(), pairs["s"].to_numpy()
    earlier = (admit[s] < admit[c]) | ((admit[s] == admit[c]) & (
        (discharge[s] < discharge[c]) | ((discharge[s] == discharge[c]) & (stay_id[s].astype(str)
                                                                            < stay_id[c].astype(str)))))
    hit = (facility[s].astype(str) != facility[c].astype(str)) & earlier & (discharge[s] >= admit[c] - gap_days)
    out[np.unique(c[hit])] = True
    return out


def _covering_enrollment(patient: np.ndarray, admit: np.ndarray, enrollment: pd.DataFrame,
                         columns: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Whether an enrollment period covers each admission date, and its grouping values."""
    n = len(patient)
    stays = pd.DataFrame({"row": np.arange(n), "patient_id": patient.astype(str), "admit": admit})
    enr = pd.DataFrame({"patient_id": enrollment["patient_id"].astype(str).to_numpy(),
                        "_s": _days(enrollment["start_date"]), "_e": _days(enrollment["end_date"])})
    for col in columns:
        enr[col] = enrollment[col].to_numpy(dtype=object)
    pairs = stays[~np.isnan(admit)].merge(enr, on="patient_id")
    pairs = pairs[(pairs["_s"] <= pairs["admit"]) & (pairs["admit"] <= pairs["_e"])].drop_duplicates("row")
    covered = np.zeros(n, dtype=bool)
    covered[pairs["row"].to_numpy()] = True
    values = {}
    for col in columns:
        v = np.full(n, None, dtype=object)
        v[pairs["row"].to_numpy()] = pairs[col].to_numpy(dtype=object)
        values[col] = v
    return covered, values


def _component_flags(number: str, pdx: pd.Series, dx: pd.DataFrame, pr: pd.DataFrame,
                     n: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Numerator condition and ordered indicator-specific exclusions of one component PQI."""
    def principal(*keys: str) -> np.ndarray:
        return pdx.isin(frozenset().union(*(_codes(k) for k in keys))).fillna(False).to_numpy(dtype=bool)

    immuno = _any_in(dx, "immuno_dx", n) | _any_in(pr, "immuno_pr", n)
    if number == "05":
        return principal("05_copd", "05_asthma"), [("cystic_fibrosis_or_respiratory_anomaly",
                                                    _any_in(dx, "05_resp", n))]
    if number == "07":
        return principal("07"), [("cardiac_procedure", _any_in(pr, "cardiac", n)),
                                 ("ckd_stage_1_4_with_dialysis_access",
                                  _any_in(dx, "07_ckd", n) & _any_in(pr, "07_dialysis", n))]
    if number == "08":
        return principal("08"), [("cardiac_procedure", _any_in(pr, "cardiac", n))]
    if number == "11":
        return principal("11"), [("sickle_cell", _any_in(dx, "11_sickle", n)), ("immunocompromised", immuno)]
    if number == "12":
        return principal("12"), [("kidney_or_urinary_tract_disorder", _any_in(dx, "12_kidney", n)),
                                 ("immunocompromised", immuno)]
    if number == "15":
        return principal("15"), [("cystic_fibrosis_or_respiratory_anomaly", _any_in(dx, "15_resp", n))]
    if number == "16":
        return (_any_in(pr, "16_amputation", n) & _any_in(dx, "16_diabetes", n),
                [("traumatic_amputation", _any_in(dx, "16_trauma", n))])
    return principal(number), []  # 01, 03, 14: no indicator-specific exclusion


def pqi_admissions(stays: pd.DataFrame, patients: pd.DataFrame, facilities: pd.DataFrame, *,
                   enrollment: pd.DataFrame | None = None, indicators=None, by: Sequence[str] = (),
                   transfer_settings: Sequence[str] = TRANSFER_SETTINGS, transfer_gap_days: int = 1
                   ) -> pd.DataFrame:
    """Every stay against every PQI: counted, or excluded with the first rule it fails.

    Parameters
    ----------
    stays, patients, facilities : DataFrame
        Contract tables (codes with or without dots, any case). Every stay is considered; stays at facilities
        that are not acute hospitals are ``not_acute``.
    enrollment : DataFrame, optional
        Enrollment periods (the population at risk). When given, an admission counts only if a period covers
        its admission date (``not_enrolled`` otherwise); pass the same table to :func:`pqi_person_time`.
    indicators : str, int or list, optional
        PQI numbers (``"01"``, ``5``, ``"90"`` ...); default all 13. Composites are computed from all their
        components whether or not these are asked for.
    by : sequence of str
        Grouping columns to attach for :func:`pqi_rates`: columns of ``enrollment`` (the value of the period
        covering the admission date, e.g. ``sponsor``) or of ``patients`` (e.g. ``market``,
        ``population_group``). An enrollment column wins over a patient column of the same name.
    transfer_settings : sequence of str
        Settings whose stays are a transfer point of origin (default acute, snf, irf, ltch).
    transfer_gap_days : int
        Days allowed between that stay's discharge and the admission (default 1: same day or next day).

    Returns
    -------
    DataFrame
        One row per (stay, indicator), stays in input order: ``stay_id``, ``patient_id``, ``facility_id``,
        ``admit_date``, ``discharge_date``, ``age`` (at admission; missing when unknown), ``sex``, the ``by``
        columns, ``indicator``, ``numerator`` (meets the diagnosis / procedure condition), ``transfer_in``,
        ``obstetric``, ``newborn``, ``counted`` and ``reason`` (``"counted"`` or the first rule failed; see
        :data:`REASONS` and the module notes for the order).

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1", "H2"], "setting": ["acute", "acute"]})
    >>> pat = pd.DataFrame({"patient_id": ["p"], "birth_date": pd.to_datetime(["1950-01-01"]), "sex": ["F"]})
    >>> st = pd.DataFrame({"stay_id": ["a", "b"], "patient_id": "p", "facility_id": ["H1", "H2"],
    ...     "admit_date": pd.to_datetime(["2024-03-01", "2024-03-05"]),
    ...     "discharge_date": pd.to_datetime(["2024-03-04", "2024-03-09"]),
    ...     "principal_dx": ["I50.9", "I50.9"], "secondary_dx": ["E11.9", None], "procedures": [None, None]})
    >>> out = pqi_admissions(st, pat, fac, indicators=["08", "90"])
    >>> out[["stay_id", "indicator", "counted", "reason"]]
      stay_id indicator  counted       reason
    0       a        08     True      counted
    1       a        90     True      counted
    2       b        08    False  transfer_in
    3       b        90    False  transfer_in
    """
    wanted = _indicator_list(indicators)
    by = list(by)
    by_enr, by_pat = _split_by(by, enrollment, patients, "pqi_admissions")
    if enrollment is not None:
        _check_enrollment_groups(enrollment, by_enr, "pqi_admissions")
    n = len(stays)
    stay_id = stays["stay_id"].to_numpy(dtype=object)
    patient = stays["patient_id"].astype(str).to_numpy()
    facility = stays["facility_id"].astype(str).to_numpy()
    setting = _lookup(stays["facility_id"], facilities, "facility_id", "setting")
    setting = np.array([str(s).strip().lower() if isinstance(s, str) else "" for s in setting], dtype=object)
    admit = _days(stays["admit_date"])
    discharge = _days(stays["discharge_date"])
    first, rows = _first_rows(stays["patient_id"], patients, "patient_id")  # each stay's patient
    birth, sex = _birth_and_sex(first, rows)
    sex_ok = sex.isin(SEXES).fillna(False).to_numpy(dtype=bool)
    admit_dt = pd.to_datetime(stays["admit_date"]).to_numpy(dtype="datetime64[D]")
    age = np.full(n, np.nan)
    has_age = ~np.isnat(birth) & ~np.isnat(admit_dt)
    if has_age.any():
        age[has_age] = age_in_years(birth[has_age], admit_dt[has_age])
    pdx = _normalise_codes(stays["principal_dx"]).reset_index(drop=True)
    pdx = pdx.str.split(";").str[0]  # a principal diagnosis is one code
    empty = pd.Series(pd.NA, index=stays.index, dtype="string")
    secondary = _normalise_codes(stays["secondary_dx"]) if "secondary_dx" in stays.columns else empty
    procedures = _normalise_codes(stays["procedures"]) if "procedures" in stays.columns else empty
    all_dx = pdx.fillna("").str.cat(secondary.reset_index(drop=True).fillna(""), sep=";")
    dx_long = _long_codes(all_dx)
    pr_long = _long_codes(procedures.reset_index(drop=True).fillna(""))

    acute = setting == "acute"
    shared = {
        "not_acute": ~acute,
        "missing_sex": ~sex_ok,
        "missing_age": np.isnan(age),
        "missing_principal_dx": pdx.isna().to_numpy(),
        "missing_dates": np.isnan(admit) | np.isnan(discharge),
    }
    by_values: dict[str, np.ndarray] = {}
    if enrollment is not None:
        covered, enr_values = _covering_enrollment(patient, admit, enrollment, by_enr)
        shared["not_enrolled"] = ~covered
        by_values.update(enr_values)
    for col in by_pat:
        by_values[col] = _take(first[col].to_numpy(dtype=object), rows, np.nan)
    obstetric = pdx.isin(_codes("mdc14")).fillna(False).to_numpy(dtype=bool)
    newborn = pdx.isin(_codes("mdc15")).fillna(False).to_numpy(dtype=bool)
    transfer = _transfer_in(stay_id, patient, facility, setting, admit, discharge, acute,
                            settings=tuple(transfer_settings), gap_days=int(transfer_gap_days))

    results: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # numerator, counted, reason
    for number in COMPONENTS:
        ind = INDICATORS[number]
        numerator, specific = _component_flags(number, pdx, dx_long, pr_long, n)
        with np.errstate(invalid="ignore"):
            in_ages = (age >= ind.min_age) & ((age <= ind.max_age) if ind.max_age is not None else True)
        steps = list(shared.items()) + [
            ("not_in_numerator", ~numerator), ("outside_age_range", ~in_ages), ("obstetric_mdc14", obstetric),
            ("newborn_mdc15", newborn), ("transfer_in", transfer)] + specific
        reason = np.zeros(n, dtype=np.int16)  # counted
        undecided = np.ones(n, dtype=bool)
        for name, fails in steps:
            hit = undecided & fails
            reason[hit] = _CODE[name]
            undecided &= ~hit
        results[number] = (numerator, undecided, reason)
    for number in COMPOSITES:
        comps = INDICATORS[number].components
        counted = np.any([results[c][1] for c in comps], axis=0)
        numerator = np.any([results[c][0] for c in comps], axis=0)
        reason = np.max([results[c][2] for c in comps], axis=0)  # the component furthest along the rules
        reason[counted] = _CODE["counted"]
        results[number] = (numerator, counted, reason)

    k = len(wanted)
    base = pd.DataFrame({
        "stay_id": np.repeat(stay_id, k),
        "patient_id": np.repeat(stays["patient_id"].to_numpy(dtype=object), k),
        "facility_id": np.repeat(stays["facility_id"].to_numpy(dtype=object), k),
        "admit_date": np.repeat(pd.to_datetime(stays["admit_date"]).to_numpy(), k),
        "discharge_date": np.repeat(pd.to_datetime(stays["discharge_date"]).to_numpy(), k),
        "age": pd.Series(np.repeat(age, k)).astype("Int64"),
        "sex": np.repeat(np.where(sex_ok, sex.fillna("").to_numpy(dtype=object), None), k),
    })
    for col in by:
        base[col] = np.repeat(by_values[col], k)
    base["indicator"] = np.tile(np.array(wanted, dtype=object), n)
    for name, pos in (("numerator", 0), ("counted", 1), ("reason", 2)):
        stacked = np.column_stack([results[w][pos] for w in wanted]) if n else np.empty((0, k), dtype=np.int16)
        base[name] = stacked.reshape(-1) if name != "reason" else np.array(REASONS, dtype=object)[
            stacked.reshape(-1).astype(np.int64)]
    base["numerator"] = base["numerator"].astype(bool)
    base["counted"] = base["counted"].astype(bool)
    base["transfer_in"] = np.repeat(transfer, k)
    base["obstetric"] = np.repeat(obstetric, k)
    base["newborn"] = np.repeat(newborn, k)
    columns = (["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date", "age", "sex"] + by
               + ["indicator", "numerator", "transfer_in", "obstetric", "newborn", "counted", "reason"])
    return base[columns]


def pqi_attrition(admissions: pd.DataFrame) -> pd.DataFrame:
    """Stays by indicator and reason (the accounting of :func:`pqi_admissions`): ``indicator``, ``reason``,
    ``stays``, in rule order; every stay of the input appears once per indicator.

    Examples
    --------
    >>> adm = pd.DataFrame({"indicator": ["08", "08", "08"], "reason": ["counted", "transfer_in", "counted"]})
    >>> pqi_attrition(adm)
      indicator       reason  stays
    0        08      counted      2
    1        08  transfer_in      1
    """
    out = admissions.groupby(["indicator", "reason"], sort=False).size().rename("stays").reset_index()
    out["_rank"] = out["reason"].map({r: k for k, r in enumerate(REASONS)})
    return out.sort_values(["indicator", "_rank"], kind="stable").drop(columns="_rank").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------- person-time


@cache
def standard_population_pqi() -> pd.DataFrame:
    """The PQI age bands (``age_band``, ``age_lo``, ``age_hi``) with their 2000 U.S. standard population.

    Bands 25-29 ... 85+ are the standard's 5-year groups (NCHS 19 age groups, Census P25-1130); 18-24 is 20-24
    plus two fifths of 15-19 (the 15-19 group split evenly over single years, which are not shipped).

    Examples
    --------
    >>> std = standard_population_pqi()
    >>> std["age_band"].tolist()[:3], round(float(std["population"].iloc[0]), 1)
    (['18-24', '25-29', '30-34'], 26185032.2)
    """
    path = resources.files("carequal") / "data" / "standard_population_us2000_19.csv"
    with path.open(encoding="utf-8") as fh:
        std = pd.read_csv(fh, dtype={"age_band": str})
    pop = dict(zip(std["age_band"], std["population"].astype(float), strict=True))
    rows = [("18-24", 18, 24, pop["20-24"] + 0.4 * pop["15-19"])]
    rows += [(r.age_band, int(r.age_lo), int(r.age_hi), float(r.population))
             for r in std.itertuples(index=False) if r.age_lo >= 25]
    return pd.DataFrame(rows, columns=["age_band", "age_lo", "age_hi", "population"])


def pqi_age_band(age) -> pd.Series:
    """PQI age band of whole-year ages (missing under 18).

    Examples
    --------
    >>> pqi_age_band([17, 18, 39, 40, 85]).tolist()
    [None, '18-24', '35-39', '40-44', '85+']
    """
    bands = standard_population_pqi()
    a = pd.Series(age, dtype="Float64").to_numpy(dtype=float, na_value=np.nan)
    pos = np.searchsorted(bands["age_lo"].to_numpy(), a, side="right") - 1
    labels = bands["age_band"].to_numpy(dtype=object)[np.clip(pos, 0, None)]
    return pd.Series(np.where((pos >= 0) & ~np.isnan(a), labels, None), name="age_band", dtype=object)


def _anniversary(year: np.ndarray, month: np.ndarray, day: np.ndarray, years: int) -> np.ndarray:
    """Day (days since epoch) on which a person born on ``year``-``month``-``day`` turns ``years`` (29 February:
    1 March in other years, as :func:`carequal.cohorts.age_in_years`)."""
    y = year + years
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    shift = (month == 2) & (day == 29) & ~leap
    m = np.where(shift, 3, month)
    d = np.where(shift, 1, day)
    first_of_month = ((y - 1970) * 12 + (m - 1)).astype("datetime64[M]").astype("datetime64[D]")
    return (first_of_month + (d - 1)).astype(np.int64)


def _periods(start: pd.Timestamp, end: pd.Timestamp, freq: str | None) -> pd.DataFrame:
    if freq is None:
        return pd.DataFrame({"period": [f"{start:%Y-%m-%d}/{end:%Y-%m-%d}"], "period_start": [start],
                             "period_end": [end]})
    codes = {"year": "Y", "quarter": "Q", "month": "M"}
    if freq not in codes:
        raise ParameterError(f"freq must be 'year', 'quarter', 'month' or None, not {freq!r}")
    rng = pd.period_range(start, end, freq=codes[freq])
    return pd.DataFrame({"period": [str(p) for p in rng],
                         "period_start": [max(p.start_time.normalize(), start) for p in rng],
                         "period_end": [min(p.end_time.normalize(), end) for p in rng]})


def pqi_person_time(enrollment: pd.DataFrame, patients: pd.DataFrame, *, start, end, by: Sequence[str] = (),
                    freq: str | None = "year") -> pd.DataFrame:
    """Person-years at risk from age 18, by the ``by`` columns, period, PQI age band and sex.

    Parameters
    ----------
    enrollment, patients : DataFrame
        Contract tables. A patient's overlapping or touching periods are merged (no day counts twice); periods
        that overlap must agree on any grouping column taken from enrollment.
    start, end : date
        Inclusive reporting window.
    by : sequence of str
        Columns of ``enrollment`` (e.g. ``sponsor``, ``coverage``) or ``patients`` (e.g. ``market``,
        ``population_group``).
    freq : {"year", "quarter", "month"} or None
        Period length; None makes the whole window one period.

    Returns
    -------
    DataFrame
        The ``by`` columns, ``period``, ``period_start``, ``period_end``, ``age_band``, ``sex`` (F or M),
        ``person_days`` and ``person_years`` (days / 365.25). Each day is counted at the age the person has on
        it; time stops on the day of death; person-time of sex U or without birth date is left out.

    Examples
    --------
    >>> pat = pd.DataFrame({"patient_id": ["p"], "birth_date": pd.to_datetime(["1984-07-01"]), "sex": ["F"],
    ...                     "death_date": [pd.NaT]})
    >>> enr = pd.DataFrame({"patient_id": ["p"], "start_date": pd.to_datetime(["2020-01-01"]),
    ...                     "end_date": pd.to_datetime(["2030-12-31"])})
    >>> pqi_person_time(enr, pat, start="2024-01-01", end="2024-12-31")[["period", "age_band", "person_days"]]
      period age_band  person_days
    0   2024    35-39          182
    1   2024    40-44          184
    """
    by = list(by)
    by_enr, by_pat = _split_by(by, enrollment, patients, "pqi_person_time")
    _check_enrollment_groups(enrollment, by_enr, "pqi_person_time")
    lo, hi = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if hi < lo:
        raise ParameterError(f"pqi_person_time: end {hi:%Y-%m-%d} is before start {lo:%Y-%m-%d}")
    periods = _periods(lo, hi, freq)
    columns = by + ["period", "period_start", "period_end", "age_band", "sex", "person_days", "person_years"]

    merged = _merge_periods(_enrollment_days(enrollment, by_enr), by_enr)
    first, rows = _first_rows(merged["patient_id"], patients, "patient_id")
    birth, sex = _birth_and_sex(first, rows)
    death = (_take(_days(first["death_date"]), rows, np.nan) if "death_date" in patients.columns
             else np.full(len(merged), np.nan))
    for col in by_pat:
        merged[col] = _take(first[col].to_numpy(dtype=object), rows, np.nan)
    keep = ~np.isnat(birth) & sex.isin(SEXES).fillna(False).to_numpy(dtype=bool)
    merged, birth, sex, death = merged[keep].reset_index(drop=True), birth[keep], sex[keep], death[keep]
    s = np.maximum(merged["s"].to_numpy(), _days([lo])[0])
    e = np.minimum(merged["e"].to_numpy(), _days([hi])[0])
    e = np.where(np.isnan(death), e, np.minimum(e, death))
    live = e >= s
    merged, birth, sex, s, e = merged[live].reset_index(drop=True), birth[live], sex[live], s[live], e[live]
    if merged.empty:
        return pd.DataFrame(columns=columns)
    born = pd.DatetimeIndex(birth)
    year, month, day = (np.asarray(born.year, dtype=np.int64), np.asarray(born.month, dtype=np.int64),
                        np.asarray(born.day, dtype=np.int64))
    p_start = _days(periods["period_start"])
    p_end = _days(periods["period_end"])
    # every (person-period, band, period) with days in it, gathered as positions; the rows built once
    bands = standard_population_pqi()
    found: list[tuple[np.ndarray, int, int, np.ndarray]] = []
    for j, band in enumerate(bands.itertuples(index=False)):
        band_s = _anniversary(year, month, day, int(band.age_lo)).astype(float)
        band_e = (_anniversary(year, month, day, int(band.age_hi) + 1) - 1).astype(float) if band.age_hi < 200 \
            else np.full(len(merged), np.inf)
        bs, be = np.maximum(s, band_s), np.minimum(e, band_e)
        has = be >= bs
        if not has.any():
            continue
        for k in range(len(periods)):
            days = np.minimum(be, p_end[k]) - np.maximum(bs, p_start[k]) + 1
            inside = np.flatnonzero(has & (days > 0))
            if len(inside):
                found.append((inside, k, j, days[inside]))
    if not found:
        return pd.DataFrame(columns=columns)
    at = np.concatenate([f[0] for f in found])
    sizes = [len(f[0]) for f in found]
    pt = merged[by].take(at).reset_index(drop=True) if by else pd.DataFrame(index=pd.RangeIndex(len(at)))
    pt["period"] = periods["period"].to_numpy(dtype=object)[np.repeat([f[1] for f in found], sizes)]
    pt["age_band"] = bands["age_band"].to_numpy(dtype=object)[np.repeat([f[2] for f in found], sizes)]
    pt["sex"] = sex.to_numpy(dtype=object)[at]
    pt["person_days"] = np.concatenate([f[3] for f in found]).astype(np.int64)
    out = pt.groupby(by + ["period", "age_band", "sex"], dropna=False, sort=False)["person_days"].sum().reset_index()
    out = out.merge(periods, on="period", how="left")
    band_order = {b: k for k, b in enumerate(bands["age_band"])}
    out["_p"] = out["period_start"]
    out["_b"] = out["age_band"].map(band_order)
    out = out.sort_values(by + ["_p", "_b", "sex"], kind="stable", na_position="last")
    out["person_years"] = out["person_days"] / 365.25
    return out[columns].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------- rates


def _indicator_bands(number: str) -> list[str]:
    ind = INDICATORS[number]
    bands = standard_population_pqi()
    keep = (bands["age_lo"] >= ind.min_age) & ((bands["age_hi"] <= ind.max_age) if ind.max_age is not None
                                               else True)
    return bands.loc[keep, "age_band"].tolist()


def _require(frame: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ParameterError(f"{where}: missing column(s) {', '.join(missing)}")


def _strata_table(admissions: pd.DataFrame, person_time: pd.DataFrame, by: list[str], indicators,
                  where: str) -> pd.DataFrame:
    """Events and person-years per (by, period, indicator, age band, sex), over every stratum of the
    indicator's ages with person-time or events (zeros filled)."""
    _require(admissions, ["indicator", "counted", "discharge_date", "age", "sex"] + by, where)
    _require(person_time, by + ["period", "period_start", "period_end", "age_band", "sex", "person_years"], where)
    wanted = _indicator_list(indicators if indicators is not None else sorted(admissions["indicator"].unique()))
    periods = person_time[["period", "period_start", "period_end"]].drop_duplicates().sort_values("period_start")
    counted = admissions[admissions["counted"].astype(bool) & admissions["indicator"].isin(wanted)]
    # AHRQ counts discharges: an admission belongs to the period of its discharge date (module docstring)
    discharge = _days(counted["discharge_date"])
    p_start, p_end = _days(periods["period_start"]), _days(periods["period_end"])
    pos = np.searchsorted(p_start, discharge, side="right") - 1
    ok = (pos >= 0) & (pos < len(periods))
    ok &= np.where(ok, discharge <= p_end[np.clip(pos, 0, None)], False)
    events = counted[ok].assign(period=periods["period"].to_numpy()[pos[ok]],
                                age_band=pqi_age_band(counted.loc[ok, "age"]).to_numpy())
    keys = by + ["period", "indicator", "age_band", "sex"]
    ev = events.groupby(keys, dropna=False).size().rename("events").reset_index()
    tables = []
    for number in wanted:
        bands = _indicator_bands(number)
        pt = person_time[person_time["age_band"].isin(bands)]
        pt = pt.groupby(by + ["period", "age_band", "sex"], dropna=False, sort=False)["person_years"].sum()
        pt = pt.reset_index().assign(indicator=number)
        e = ev[(ev["indicator"] == number) & ev["age_band"].isin(bands)]
        for col in by:  # align dtypes of key columns before merging (an all-missing column is float)
            if pt[col].dtype != e[col].dtype:
                pt[col], e = pt[col].astype(object), e.assign(**{col: e[col].astype(object)})
        tables.append(pt.merge(e, on=keys, how="outer"))
    table = pd.concat(tables, ignore_index=True)
    table["events"] = table["events"].fillna(0).astype(np.int64)
    table["person_years"] = table["person_years"].fillna(0.0)
    return table


def _period_order(table: pd.DataFrame, person_time: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    order = person_time[["period", "period_start"]].drop_duplicates("period")
    out = table.merge(order, on="period", how="left")
    return out.sort_values(keys[:-2] + ["period_start", "indicator"], kind="stable").drop(
        columns="period_start").reset_index(drop=True)


def pqi_rates(admissions: pd.DataFrame, person_time: pd.DataFrame, *, by: Sequence[str] = (), indicators=None,
              level: float = 0.95, per: float = PER) -> pd.DataFrame:
    """Crude PQI rates per 100,000 person-years with exact Poisson (Garwood) intervals.

    Parameters
    ----------
    admissions : DataFrame
        From :func:`pqi_admissions` (with the ``by`` columns attached); only ``counted`` rows are events, placed
        in the period holding their discharge date.
    person_time : DataFrame
        From :func:`pqi_person_time` with the same ``by``; each indicator's denominator is the person-time in
        its ages (PQI 05: 40+, PQI 15: 18-39, the others 18+).
    by : sequence of str
        Grouping columns (besides ``period`` and ``indicator``).
    indicators : optional
        Indicators to report (default those in ``admissions``).
    level : float
        Confidence level.
    per : float
        Rate multiplier (default 100,000).

    Returns
    -------
    DataFrame
        The ``by`` columns, ``period``, ``indicator``, ``events``, ``person_years``, ``rate``, ``lower``,
        ``upper``, ``level``, ``method``.

    Examples
    --------
    >>> pt = pd.DataFrame({"period": "2024", "period_start": pd.Timestamp("2024-01-01"),
    ...     "period_end": pd.Timestamp("2024-12-31"), "age_band": ["35-39", "40-44"], "sex": "F",
    ...     "person_years": [1000.0, 1000.0]})
    >>> adm = pd.DataFrame({"indicator": "05", "counted": True, "discharge_date": pd.to_datetime(["2024-05-04"]),
    ...     "age": [41], "sex": ["F"]})
    >>> pqi_rates(adm, pt)[["period", "indicator", "events", "person_years", "rate"]]
      period indicator  events  person_years  rate
    0   2024        05       1        1000.0 100.0
    """
    by = list(by)
    table = _strata_table(admissions, person_time, by, indicators, "pqi_rates")
    keys = by + ["period", "indicator"]
    out = table.groupby(keys, dropna=False, sort=False).agg(events=("events", "sum"),
                                                            person_years=("person_years", "sum")).reset_index()
    lo, hi = poisson_exact(out["events"].to_numpy(), level=level)
    py = out["person_years"].to_numpy(dtype=float)
    safe = np.where(py > 0, py, np.nan)
    out["rate"] = out["events"] / safe * per
    out["lower"], out["upper"] = lo / safe * per, hi / safe * per
    out["level"], out["method"] = level, "exact Poisson (Garwood)"
    return _period_order(out, person_time, keys)


def _standard_weights(standard, number: str, person_time: pd.DataFrame) -> pd.DataFrame:
    """Standard population per (age_band, sex) for the indicator's bands."""
    bands = _indicator_bands(number)
    if isinstance(standard, pd.DataFrame):
        _require(standard, ["age_band", "population"], "pqi_standardised (standard)")
        std = standard[standard["age_band"].isin(bands)]
        if "sex" not in std.columns:
            std = pd.concat([std.assign(sex=s, population=std["population"] / 2) for s in SEXES])
        return std[["age_band", "sex", "population"]]
    if standard == "us2000":
        std = standard_population_pqi()
        std = std[std["age_band"].isin(bands)]
        return pd.concat([std.assign(sex=s, population=std["population"] / 2) for s in SEXES])[
            ["age_band", "sex", "population"]]
    if standard == "pooled":
        pt = person_time[person_time["age_band"].isin(bands)]
        return pt.groupby(["age_band", "sex"])["person_years"].sum().rename("population").reset_index()
    raise ParameterError(f"standard must be 'us2000', 'pooled' or a DataFrame, not {standard!r}")


def pqi_standardised(admissions: pd.DataFrame, person_time: pd.DataFrame, *, by: Sequence[str] = (),
                     indicators=None, standard="us2000", level: float = 0.95, per: float = PER) -> pd.DataFrame:
    """Directly age-sex standardised PQI rates per 100,000 person-years, with Dobson intervals (for trends).

    Parameters
    ----------
    admissions, person_time, by, indicators, level, per
        As :func:`pqi_rates`.
    standard : {"us2000", "pooled"} or DataFrame
        ``"us2000"``: the 2000 U.S. standard population in the indicator's age bands
        (:func:`standard_population_pqi`), each band's weight split equally between the sexes. ``"pooled"``:
        the input person-time summed over groups and periods, by age band and sex. A DataFrame gives
        ``age_band`` and ``population`` (and optionally ``sex``; without it, halves per sex).

    Returns
    -------
    DataFrame
        The ``by`` columns, ``period``, ``indicator``, ``events``, ``person_years``, ``crude_rate``, ``rate``
        (standardised), ``lower``, ``upper``, ``level``, ``method``, ``standard``. Strata of the standard with
        no person-time in a group are left out and the weights renormalised (``method`` says so).

    Notes
    -----
    ``DSR = Σ w_s O_s / T_s`` over strata ``s`` (age band × sex) with ``w_s`` the standard's share; the interval
    is Dobson et al. (1991) via :func:`carequal.intervals.dobson_dsr`.

    Examples
    --------
    >>> pt = pd.DataFrame({"period": "2024", "period_start": pd.Timestamp("2024-01-01"),
    ...     "period_end": pd.Timestamp("2024-12-31"), "age_band": ["80-84", "85+"], "sex": "F",
    ...     "person_years": [1000.0, 1000.0]})
    >>> adm = pd.DataFrame({"indicator": "08", "counted": True, "age": [82, 90], "sex": "F",
    ...     "discharge_date": pd.to_datetime(["2024-05-01", "2024-06-01"])})
    >>> std = pd.DataFrame({"age_band": ["80-84", "85+"], "population": [3.0, 1.0]})
    >>> float(pqi_standardised(adm, pt, standard=std)["rate"].iloc[0])  # (3 × 100 + 1 × 100) / 4
    100.0
    """
    by = list(by)
    table = _strata_table(admissions, person_time, by, indicators, "pqi_standardised")
    keys = by + ["period", "indicator"]
    label = standard if isinstance(standard, str) else "given"
    rows = []
    for number, part in table.groupby("indicator", sort=False):
        std = _standard_weights(standard, number, person_time)
        groups = part[keys].drop_duplicates()
        grid = groups.merge(std, how="cross")
        full = grid.merge(part, on=keys + ["age_band", "sex"], how="left")
        full[["events", "person_years"]] = full[["events", "person_years"]].fillna(0)
        for key, g in full.groupby(keys, dropna=False, sort=False):
            row = dict(zip(keys, key, strict=True))
            if g["person_years"].sum() <= 0:  # events without person-time: no rate
                row.update({"events": int(g["events"].sum()), "person_years": 0.0, "crude_rate": np.nan,
                            "rate": np.nan, "lower": np.nan, "upper": np.nan, "level": level,
                            "method": "no person-time", "standard": label})
                rows.append(row)
                continue
            d = dobson_dsr(g["events"], g["person_years"], g["population"], level=level, multiplier=per)
            row.update({"events": int(d["events"]), "person_years": d["person_time"],
                        "crude_rate": d["events"] / d["person_time"] * per, "rate": d["rate"], "lower": d["lower"],
                        "upper": d["upper"], "level": level, "method": d["method"], "standard": label})
            rows.append(row)
    out = pd.DataFrame(rows, columns=keys + ["events", "person_years", "crude_rate", "rate", "lower", "upper",
                                             "level", "method", "standard"])
    return _period_order(out, person_time, keys)


def pqi_observed_expected(admissions: pd.DataFrame, person_time: pd.DataFrame, *, by: Sequence[str],
                          indicators=None, reference="pooled", level: float = 0.95, per: float = PER
                          ) -> pd.DataFrame:
    """Indirectly age-sex standardised ratios (observed / expected admissions) by group, for comparing groups.

    Parameters
    ----------
    admissions, person_time, indicators, level, per
        As :func:`pqi_rates`.
    by : sequence of str
        The groups compared (e.g. ``["sponsor"]`` or ``["market"]``).
    reference : {"pooled", "pooled_all_periods"} or DataFrame
        Age-sex rates giving the expected count: ``"pooled"`` (default) pools all groups of the input in the
        same period (e.g. the whole alliance that year); ``"pooled_all_periods"`` pools periods too; a DataFrame
        gives ``indicator``, ``age_band``, ``sex`` and ``rate`` (per person-year).

    Returns
    -------
    DataFrame
        The ``by`` columns, ``period``, ``indicator``, ``observed``, ``expected``, ``ratio`` (O/E), ``lower``,
        ``upper`` (exact Poisson limits of O over E), ``reference_rate`` (the reference's crude rate per
        ``per`` in the group's age-sex mix, E / person-years), ``standardised_rate`` (ratio × the reference's
        overall crude rate), ``person_years``, ``level``, ``method``.

    Examples
    --------
    >>> pt = pd.DataFrame({"sponsor": ["A", "B"], "period": "2024", "period_start": pd.Timestamp("2024-01-01"),
    ...     "period_end": pd.Timestamp("2024-12-31"), "age_band": "45-49", "sex": "M",
    ...     "person_years": [1000.0, 1000.0]})
    >>> adm = pd.DataFrame({"sponsor": ["A", "A", "A", "B"], "indicator": "08", "counted": True,
    ...     "discharge_date": pd.Timestamp("2024-03-01"), "age": 46, "sex": "M"})
    >>> pqi_observed_expected(adm, pt, by=["sponsor"])[["sponsor", "observed", "expected", "ratio"]]
      sponsor  observed  expected  ratio
    0       A         3       2.0    1.5
    1       B         1       2.0    0.5
    """
    from carequal.compare import indirect_standardisation

    by = list(by)
    table = _strata_table(admissions, person_time, by, indicators, "pqi_observed_expected")
    keys = by + ["period", "indicator"]
    strata = ["age_band", "sex"]
    if isinstance(reference, pd.DataFrame):
        _require(reference, ["indicator", "age_band", "sex", "rate"], "pqi_observed_expected (reference)")
        ref = reference[["indicator", "age_band", "sex", "rate"]].rename(columns={"rate": "_ref"})
        ref = ref.assign(indicator=[_indicator_list([i])[0] for i in ref["indicator"]])
        table = table.merge(ref, on=["indicator"] + strata, how="left")
    elif reference in ("pooled", "pooled_all_periods"):
        ref_keys = ["indicator"] + strata + (["period"] if reference == "pooled" else [])
        pooled = table.groupby(ref_keys, dropna=False).agg(_o=("events", "sum"), _t=("person_years", "sum"))
        pooled["_ref"] = np.where(pooled["_t"] > 0, pooled["_o"] / pooled["_t"].where(pooled["_t"] > 0, 1), 0.0)
        table = table.merge(pooled["_ref"].reset_index(), on=ref_keys, how="left")
    else:
        raise ParameterError(f"reference must be 'pooled', 'pooled_all_periods' or a DataFrame, not {reference!r}")
    table["_expected"] = table["_ref"].fillna(0.0) * table["person_years"]
    agg = table.groupby(keys, dropna=False, sort=False).agg(observed=("events", "sum"),
                                                            expected=("_expected", "sum"),
                                                            person_years=("person_years", "sum")).reset_index()
    # the reference's crude rate in the pooled input's age-sex mix (the pooled crude rate for "pooled")
    tot = agg.groupby(["period", "indicator"]).agg(_e=("expected", "sum"), _t=("person_years", "sum"))
    overall = (tot["_e"] / tot["_t"].where(tot["_t"] > 0, np.nan)).rename("_overall").reset_index()
    ratios = indirect_standardisation(agg, by=keys, observed="observed", expected="expected", level=level,
                                      method="exact")
    out = ratios.merge(agg[keys + ["person_years"]], on=keys, how="left").merge(
        overall, on=["period", "indicator"], how="left")
    py = out["person_years"].to_numpy(dtype=float)
    out["reference_rate"] = out["expected"] / np.where(py > 0, py, np.nan) * per
    out["standardised_rate"] = out["ratio"] * out["_overall"] * per
    out["observed"] = out["observed"].astype(np.int64)
    out = out[keys + ["observed", "expected", "ratio", "lower", "upper", "reference_rate", "standardised_rate",
                      "person_years", "level", "method"]]
    return _period_order(out, person_time, keys)
