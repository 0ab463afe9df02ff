"""The measured cohort: every index stay with every per-stay measure, built once and read by everything after it.

One :func:`carequal.cohorts.index_stays` run with the broadest rules (:data:`carequal.cohorts.ALL_PAYER_RULES`:
every age and payer) records, per acute stay, the checks the CMS Medicare fee-for-service rules add (age 65 and
over, fee-for-service coverage over the look-back and the follow-up); the CMS cohort is then a filter (column
``cms``) and its attrition table a count (:func:`carequal.cohorts.restrict_cohort`), identical to a run with the
CMS rules. :func:`measure_cohort` adds every per-stay measure (:func:`carequal.measures.index_measures`), the
risk covariates (:data:`carequal.risk.RISK_COVARIATES`) and the outcomes at the resolution any window needs:

* ``days_to_readmit`` (discharge to the first acute admission after it) and ``first_readmit_planned`` (that
  admission is planned, CMS Planned Readmission Algorithm) give ``readmitted_{n}d`` and
  ``unplanned_readmit_{n}d`` for any ``n`` (:func:`readmission_outcome`);
* ``days_to_death`` (from the episode's admission) and ``days_to_death_discharge`` give ``died_{n}d`` from
  either anchor (:func:`mortality_outcome`);
* the first post-acute stay (``pac_stay_id``, dates, discharge status) and, for DTC-PAC, whether it ended in the
  community (``dtc_community``, ``dtc_excluded``) and the days from its discharge to death
  (``dtc_days_to_death``) and to the first unplanned acute or LTCH admission (``dtc_days_to_unplanned``) give
  discharge to community for any window (:func:`dtc_outcome`).

The national reference (:mod:`carequal.national`) adds each model's ``expected_<measure>`` and
``predicted_<measure>`` and ``in_period``; :func:`carequal.inputs.prepare` writes the whole cohort once per run.

Why hand-written: the cohort is carequal's own composition of its cohort and measure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from carequal.cohorts import (
    ALL_PAYER_RULES,
    MEDICARE_FFS_RULES,
    Cohort,
    IndexRules,
    attrition_by,
    attrition_of,
    index_stays,
    post_acute_episodes,
    recorded_reasons,
)
from carequal.errors import ParameterError
from carequal.measures import (
    READMISSION_WINDOW_DAYS,
    discharge_to_community_days,
    index_measures,
    mortality,
    planned_stays,
    readmissions,
)
from carequal.risk import risk_covariates
from carequal.schema import few_key_positions, key_positions, take, take_text

__all__ = ["ATTRITION_COLUMNS", "POST_ACUTE", "MeasuredCohort", "dtc_outcome", "episodes_of", "episodes_of_index",
           "first_readmit_planned", "measure_cohort", "mortality_outcome", "readmission_outcome"]

POST_ACUTE = ("snf", "irf", "ltch", "hha")
_ANY_WINDOW = 100_000
"""Days: a readmission window longer than any data, so that the planned algorithm judges every first readmission."""

ATTRITION_COLUMNS = ("rules", "market", "step", "description", "excluded", "remaining")
"""The stored attrition: ``rules`` ``"cms"`` (Medicare FFS) or ``"all_payer"``, ``market`` (the residents' market;
empty for all markets), then :func:`carequal.cohorts.attrition_of`'s columns."""


@dataclass
class MeasuredCohort:
    """The measured cohort (see the module docstring).

    Attributes
    ----------
    rows : DataFrame
        One row per index stay under the broad rules, in the cohort's order (``order``): the index columns, ``cms``
        (also an index stay under the CMS rules), the per-stay measures, the outcome resolution columns and the
        risk covariates.
    attrition : DataFrame
        :data:`ATTRITION_COLUMNS`: the attrition of both rule sets, per residence market and for all markets.
    """

    rows: pd.DataFrame
    attrition: pd.DataFrame

    def cms(self) -> pd.DataFrame:
        """The rows of the CMS cohort."""
        return self.rows[self.rows["cms"].to_numpy(dtype=bool)].reset_index(drop=True)


def measure_cohort(tables: dict[str, pd.DataFrame], *, rules: IndexRules | None = ALL_PAYER_RULES,
                   record: IndexRules | None = MEDICARE_FFS_RULES, release: bool = False,
                   known_patients: dict[str, np.ndarray] | None = None) -> MeasuredCohort:
    """Build the measured cohort of ``tables`` with one :func:`carequal.cohorts.index_stays` run.

    Parameters
    ----------
    tables : dict of DataFrame
        Validated contract tables (``stays``, ``facilities``, ``patients``, optional ``enrollment``,
        ``ed_visits``).
    rules : IndexRules
        The broad rules the cohort is built with (default every age and payer).
    record : IndexRules or None
        The narrower rules whose cohort is flagged in ``cms`` (default CMS Medicare FFS); None: ``rules`` are the
        cohort's only rules, every row is flagged.
    release : bool
        Remove each table but ``facilities`` from the dict ``tables`` as soon as no later step reads it (the
        enrollment after the index stays, the ED visits after the measures, the patients after the outcomes,
        the stays at the end): a caller done with the tables (:func:`carequal.inputs.prepare`) then does not hold
        them while the cohort is built, the peak memory of the national reference.
    known_patients : dict of ndarray, optional
        Each row's patient as a row of ``tables["patients"]``, per table
        (:attr:`carequal.schema.ValidatedTables.patient_rows`): validation's look-ups, reused.
    """
    stays, fac, pats = tables["stays"], tables["facilities"], tables["patients"]
    rules = rules or IndexRules()
    stay_patients = (known_patients or {}).get("stays")
    cohort = index_stays(stays, fac, pats, tables.get("enrollment"), rules=rules, record=record,
                         known_patients=known_patients)
    del known_patients
    _release(tables, "enrollment", release)
    attrition = _attrition(cohort, pats, record)  # now: the acute stays' table is not needed after it
    index = cohort.index
    in_record = index.pop("in_record").to_numpy(dtype=bool) if record is not None else np.ones(len(index), bool)
    # what index_stays looked up and the episodes both steps read: computed once
    is_index = cohort.stays["is_index"].to_numpy(dtype=bool)
    patient_rows, stay_rows = cohort.patient_rows[is_index], cohort.stay_rows[is_index]
    del cohort, is_index
    episodes = episodes_of_index(index, tables, stay_rows=stay_rows)
    rows = index_measures(index, tables, episodes=episodes, patient_rows=patient_rows, stay_rows=stay_rows,
                          window_days=READMISSION_WINDOW_DAYS, stay_patients=stay_patients)
    _release(tables, "ed_visits", release)
    outcomes = stay_outcomes(index, tables, episodes=episodes, patient_rows=patient_rows,
                             readmits=(rows, READMISSION_WINDOW_DAYS), stay_patients=stay_patients)
    del stay_patients
    del episodes, index, pats
    _release(tables, "patients", release)
    rows = pd.concat([rows, outcomes.drop(columns="stay_id").set_axis(rows.index)], axis=1)
    del outcomes
    rows = risk_covariates(rows, stays, stay_rows=stay_rows)
    del stays
    _release(tables, "stays", release)
    rows.insert(0, "order", np.arange(len(rows), dtype=np.int64))
    rows.insert(1, "cms", in_record)
    return MeasuredCohort(rows=rows, attrition=attrition)


def _release(tables: dict[str, pd.DataFrame], name: str, release: bool) -> None:
    """``tables`` without ``name`` when ``release`` (see :func:`measure_cohort`)."""
    if release:
        tables.pop(name, None)


def _attrition(cohort: Cohort, patients: pd.DataFrame, record: IndexRules | None) -> pd.DataFrame:
    """:data:`ATTRITION_COLUMNS` of both rule sets (``record`` given) or of the cohort's only rules: all markets,
    then each residence market (one pass over the acute stays: :func:`carequal.cohorts.attrition_by`)."""
    # each acute stay's residence market from the patients index_stays looked up, kept in Arrow (no Python strings)
    market = pd.Series(take_text(patients["market"], cohort.patient_rows))
    reasons = {"all_payer" if record is not None else "cms": cohort.stays["exclusion_reason"].to_numpy(dtype=object)}
    if record is not None:
        reasons["cms"] = recorded_reasons(cohort.stays)
    parts = []
    for name, reason in reasons.items():
        parts.append(attrition_of(reason).assign(rules=name, market=""))
        parts.append(attrition_by(reason, market).rename(columns={"group": "market"}).assign(rules=name))
    return pd.concat(parts, ignore_index=True)[list(ATTRITION_COLUMNS)]


def episodes_of_index(index: pd.DataFrame, tables: dict[str, pd.DataFrame], *,
                      stay_rows: np.ndarray | None = None) -> pd.DataFrame:
    """The post-acute episodes (:func:`carequal.cohorts.post_acute_episodes`, CMS's one-day gap) of the index
    stays, one row per index stay in the index's order: what :func:`carequal.measures.index_measures` and
    :func:`stay_outcomes` both read, computed once. ``stay_rows``: each index stay's row in ``tables["stays"]``
    (``Cohort.stay_rows`` of the index stays), when the caller has them."""
    episodes = post_acute_episodes(tables["stays"], tables["facilities"], hospital_stays=index,
                                   hospital_rows=stay_rows)
    at = key_positions(index["stay_id"], episodes["stay_id"])
    if (at < 0).any():  # not every index stay is an acute stay of ``tables``: missing rows, as a reindex makes them
        return episodes.set_index("stay_id").reindex(index["stay_id"]).reset_index()
    return episodes.take(at).reset_index(drop=True)


def stay_outcomes(index: pd.DataFrame, tables: dict[str, pd.DataFrame], *, episodes: pd.DataFrame | None = None,
                  patient_rows: np.ndarray | None = None,
                  readmits: tuple[pd.DataFrame, int] | None = None,
                  stay_patients: np.ndarray | None = None) -> pd.DataFrame:
    """The outcome columns any window derives from (see the module docstring), one row per index stay, in order.

    ``episodes`` (:func:`episodes_of_index`), ``patient_rows`` (each index stay's patient as its row in
    ``tables["patients"]``) and ``readmits`` (:func:`carequal.measures.readmissions` of the index stays with
    some window, and that window: :func:`first_readmit_planned`) and ``stay_patients`` (each row of
    ``tables["stays"]``'s patient as its row in ``tables["patients"]``) when the caller has them; computed here
    otherwise.

    Returns
    -------
    DataFrame
        ``stay_id``, ``first_readmit_planned``, ``days_to_death_discharge``, ``pac_stay_id``, ``pac_admit_date``,
        ``pac_discharge_date``, ``pac_discharge_status``, ``final_discharge_status``, ``dtc_excluded``,
        ``dtc_community``, ``dtc_days_to_death``, ``dtc_days_to_unplanned``.
    """
    stays, fac, pats = tables["stays"], tables["facilities"], tables["patients"]
    index = index.reset_index(drop=True)
    if readmits is None:
        planned = readmissions(index, stays, fac, window_days=_ANY_WINDOW)["readmit_planned"].to_numpy(dtype=bool)
    else:
        planned = first_readmit_planned(*readmits, stays)
    death = mortality(index, pats, anchor="discharge", patient_rows=patient_rows)
    ep = episodes_of_index(index, tables) if episodes is None else episodes
    dtc = discharge_to_community_days(stays, fac, pats, settings=POST_ACUTE, patient_rows=stay_patients)
    at = key_positions(ep["pac_stay_id"], dtc["stay_id"])  # each first post-acute stay's row (−1: none)
    return pd.DataFrame({
        "stay_id": index["stay_id"].to_numpy(),
        "first_readmit_planned": planned,
        "days_to_death_discharge": death["days_to_death"].to_numpy(dtype=float),
        "pac_stay_id": ep["pac_stay_id"].astype("string").array,
        "pac_admit_date": ep["pac_admit_date"].to_numpy(),
        "pac_discharge_date": ep["pac_discharge_date"].to_numpy(),
        "pac_discharge_status": ep["pac_discharge_status"].astype("string").array,
        "final_discharge_status": ep["final_discharge_status"].astype("string").array,
        "dtc_excluded": pd.Series(take_text(dtc["dtc_excluded"], at)).astype("string").array,
        "dtc_community": pd.Series(take(dtc["discharged_to_community"], at, None)).astype("boolean").array,
        "dtc_days_to_death": take(dtc["days_to_death"], at).astype(float),
        "dtc_days_to_unplanned": take(dtc["days_to_unplanned"], at).astype(float),
    })


def first_readmit_planned(readmits: pd.DataFrame, window: int, stays: pd.DataFrame) -> np.ndarray:
    """Whether each index stay's first readmission (any time after it) is planned, from
    :func:`carequal.measures.readmissions` output with a window of ``window`` days: identical to
    ``readmissions(..., window_days=_ANY_WINDOW)["readmit_planned"]`` without a second pass over every acute stay.

    Inside ``window`` the flag is ``readmit_planned`` as given; the CMS Planned Readmission Algorithm
    (:func:`carequal.measures.planned_stays`, one stay at a time) runs only on the first readmissions after it,
    found by their ``readmit_stay_id`` among ``stays`` (stay ids are the contract's unique key).

    Examples
    --------
    >>> st = pd.DataFrame({"stay_id": ["r1", "r2"], "principal_dx": ["Z5111", "I509"], "procedures": np.nan})
    >>> r = pd.DataFrame({"readmit_stay_id": ["r2", "r1", None], "days_to_readmit": [3.0, 40.0, np.nan],
    ...                   "readmit_planned": [False, False, False]})
    >>> first_readmit_planned(r, 30, st).tolist()
    [False, True, False]
    """
    days = readmits["days_to_readmit"].to_numpy(dtype=float)
    planned = readmits["readmit_planned"].to_numpy(dtype=bool).copy()
    beyond = np.flatnonzero((days > window) & (days <= _ANY_WINDOW))  # NaN (no readmission): never
    if len(beyond):
        rows = few_key_positions(readmits["readmit_stay_id"].iloc[beyond].reset_index(drop=True), stays["stay_id"])
        needed = [c for c in ("stay_id", "principal_dx", "procedures") if c in stays.columns]
        planned[beyond] = planned_stays(stays[needed].iloc[rows])["planned"].to_numpy(dtype=bool)
    return planned


def _check(rows: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ParameterError(f"{what}: the cohort has no column(s) {', '.join(missing)} (use measure_cohort's rows)")


def readmission_outcome(rows: pd.DataFrame, window: int, *, planned: str = "exclude") -> np.ndarray:
    """``unplanned_readmit_{window}d`` (``planned="exclude"``) or ``readmitted_{window}d`` (``"include"``) of
    the cohort's rows, as :func:`carequal.measures.readmissions` gives them with ``window_days=window``.

    Examples
    --------
    >>> rows = pd.DataFrame({"days_to_readmit": [3.0, 20.0, np.nan, 5.0],
    ...                      "first_readmit_planned": [False, False, False, True]})
    >>> readmission_outcome(rows, 7).tolist(), readmission_outcome(rows, 30, planned="include").tolist()
    ([True, False, False, False], [True, True, False, True])
    """
    _check(rows, ("days_to_readmit", "first_readmit_planned"), "readmission_outcome")
    if planned not in ("exclude", "include"):
        raise ParameterError(f"planned must be 'exclude' or 'include', not {planned!r}")
    days = rows["days_to_readmit"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        within = (days >= 0) & (days <= window)
    if planned == "include":
        return within
    return within & ~rows["first_readmit_planned"].to_numpy(dtype=bool)


def mortality_outcome(rows: pd.DataFrame, window: int, *, anchor: str = "admission") -> np.ndarray:
    """``died_{window}d`` of the cohort's rows from the episode's admission or from the discharge, as
    :func:`carequal.measures.mortality` gives it.

    Examples
    --------
    >>> rows = pd.DataFrame({"days_to_death": [5.0, 40.0, np.nan], "days_to_death_discharge": [1.0, 36.0, np.nan]})
    >>> mortality_outcome(rows, 30).tolist(), mortality_outcome(rows, 60, anchor="discharge").tolist()
    ([True, False, False], [True, True, False])
    """
    if anchor not in ("admission", "discharge"):
        raise ParameterError(f"anchor must be 'admission' or 'discharge', not {anchor!r}")
    column = "days_to_death" if anchor == "admission" else "days_to_death_discharge"
    _check(rows, (column,), "mortality_outcome")
    days = rows[column].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        return (days <= window) & ~np.isnan(days) if anchor == "admission" else (days >= 0) & (days <= window)


def dtc_outcome(rows: pd.DataFrame, window: int) -> tuple[np.ndarray, np.ndarray]:
    """DTC-PAC with ``window`` days of the cohort's rows: ``(counted, dtc)``, ``counted`` the rows whose first
    post-acute stay (in :data:`POST_ACUTE`) the measure counts (not excluded), ``dtc`` the success, as
    :func:`carequal.measures.discharge_to_community` gives it for that stay.

    Examples
    --------
    >>> rows = pd.DataFrame({"pac_setting": ["snf", "snf", "none", "hha"],
    ...     "dtc_excluded": [None, None, None, "hospice"], "dtc_community": [True, True, None, False],
    ...     "dtc_days_to_death": [np.nan, 20.0, np.nan, np.nan],
    ...     "dtc_days_to_unplanned": [40.0, np.nan, np.nan, np.nan]})
    >>> counted, dtc = dtc_outcome(rows, 31)
    >>> counted.tolist(), dtc.tolist()
    ([True, True, False, False], [True, False, False, False])
    """
    _check(rows, ("pac_setting", "dtc_excluded", "dtc_community", "dtc_days_to_death", "dtc_days_to_unplanned"),
           "dtc_outcome")
    counted = rows["pac_setting"].isin(POST_ACUTE).to_numpy() & rows["dtc_excluded"].isna().to_numpy() \
        & rows["dtc_community"].notna().to_numpy()
    with np.errstate(invalid="ignore"):
        died = rows["dtc_days_to_death"].to_numpy(dtype=float) <= window
        readmitted = rows["dtc_days_to_unplanned"].to_numpy(dtype=float) <= window
    community = rows["dtc_community"].fillna(False).to_numpy(dtype=bool)
    return counted, counted & community & ~died & ~readmitted


def episodes_of(rows: pd.DataFrame) -> pd.DataFrame:
    """The cohort's post-acute episodes in :func:`carequal.cohorts.post_acute_episodes`' columns (one row per
    index stay, ``hospital_id`` its discharging hospital)."""
    _check(rows, ("pac_stay_id", "pac_setting", "pac_facility_id", "pac_is_partner", "pac_admit_date",
                  "pac_discharge_date", "pac_los_days", "pac_discharge_status", "episode_days",
                  "final_discharge_status"), "episodes_of")
    return pd.DataFrame({
        "stay_id": rows["stay_id"].to_numpy(), "patient_id": rows["patient_id"].to_numpy(),
        "hospital_id": rows["facility_id"].to_numpy(),
        "hospital_discharge_date": pd.to_datetime(rows["discharge_date"]).to_numpy(),
        "pac_stay_id": rows["pac_stay_id"].to_numpy(), "pac_setting": rows["pac_setting"].to_numpy(),
        "pac_facility_id": rows["pac_facility_id"].to_numpy(),
        "pac_is_partner": rows["pac_is_partner"].to_numpy(dtype=bool),
        "pac_admit_date": pd.to_datetime(rows["pac_admit_date"]).to_numpy(),
        "pac_discharge_date": pd.to_datetime(rows["pac_discharge_date"]).to_numpy(),
        "pac_los_days": rows["pac_los_days"].to_numpy(dtype=float),
        "pac_discharge_status": rows["pac_discharge_status"].to_numpy(),
        "episode_days": rows["episode_days"].to_numpy(), "final_discharge_status": rows["final_discharge_status"]
        .to_numpy()})

