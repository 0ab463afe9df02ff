"""The national reference: risk models fitted on every market, and each index stay's expected outcome.

A market report compares its facilities with the nation (every market in the data), not with the market
itself: four hospitals cannot carry a risk model of their own, and "as expected" must mean the same in every
report. The batch therefore builds the reference once (:func:`carequal.inputs.prepare`), before any
market's report starts, and writes it partitioned by the market of the facility being judged, so that a
report reads only its own facilities' rows (:func:`read_reference`).

The reference, per measure of :data:`MEASURES`:

1. index stays (:func:`carequal.cohorts.index_stays`) and all their outcomes
   (:func:`carequal.measures.index_measures`), with :data:`carequal.risk.RISK_COVARIATES`;
2. a random-intercept logistic model (:class:`carequal.risk.HierarchicalLogit`, facility intercepts) fitted
   on the stays discharged in the reporting period;
3. for every index stay of every period: ``expected`` = expit(x'β) (the average facility, CMS's "expected")
   and ``predicted`` = expit(x'β + û_j) (its own facility); the facility's O/E is then the indirectly
   standardised ratio of :func:`carequal.compare.scorecard`, and P/E the CMS excess-readmission-style ratio;
4. model diagnostics: c-statistic (DeLong interval), Brier score, Hosmer–Lemeshow, calibration by decile,
   facility-intercept SD and the odds ratio of every covariate.

Stays outside the reporting period are scored with the same model (trend charts and the previous-period
comparison use them), never used to fit it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from scipy import special

from carequal.cohorts import index_stays
from carequal.errors import ModelError, ModelWarning, ParameterError, describe_facilities
from carequal.loaders import partition_folder
from carequal.measured import ATTRITION_COLUMNS, MeasuredCohort, measure_cohort
from carequal.measures import index_measures
from carequal.periods import reporting_period
from carequal.risk import (
    RISK_COVARIATES,
    HierarchicalLogit,
    brier_score,
    c_statistic,
    calibration_table,
    hosmer_lemeshow,
    risk_covariates,
)
from carequal.schema import key_positions, take

__all__ = ["MEASURED_COLUMNS", "MEASURES", "MeasureSpec", "Reference", "attach_expected", "build_reference",
           "cohort_and_reference", "measure_rows", "measured_index_stays", "read_cohort", "read_reference",
           "reference_from_measured", "reference_of_cohort", "write_cohort", "write_reference"]


@dataclass(frozen=True)
class MeasureSpec:
    """One facility comparison measure: which outcome, whose stays, and which facility is judged."""

    name: str
    label: str
    outcome: str
    unit: str
    unit_kind: str
    post_acute_only: bool = False
    improvement: str = "down"


MEASURES: dict[str, MeasureSpec] = {
    "readmission": MeasureSpec("readmission", "30-day unplanned readmission", "unplanned_readmit_30d",
                               "facility_id", "hospital"),
    "mortality": MeasureSpec("mortality", "30-day mortality", "died_30d", "facility_id", "hospital"),
    "pac_readmission": MeasureSpec("pac_readmission", "30-day readmission after post-acute referral",
                                   "unplanned_readmit_30d", "pac_facility_id", "post-acute provider",
                                   post_acute_only=True),
}
"""The comparison measures. ``pac_readmission`` follows hospital discharges that went on to a skilled nursing,
rehabilitation, long-term care hospital or home health provider within a day, and judges that provider
(SNFRM-style attribution: the 30 days run from the hospital discharge)."""

MEASURED_COLUMNS = ("stay_id", "patient_id", "facility_id", "discharge_date", "condition", "unplanned_readmit_30d",
                    "died_30d", "pac_setting", "pac_facility_id", "age10", "male", "dual", "employees", "n_secondary",
                    "chemotherapy", "c_heart_failure", "c_ami", "c_pneumonia", "c_copd", "c_sepsis", "c_stroke",
                    "c_hip_knee_replacement")
"""The columns of an index stay the reference needs: keys, outcomes, the post-acute provider, risk covariates."""

INPUT_COLUMNS: dict[str, list[str]] = {
    "patients": ["patient_id", "birth_date", "sex", "dual_eligible", "death_date", "market", "population_group"],
    "stays": ["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date", "discharge_status",
              "admission_type", "principal_dx", "secondary_dx", "procedures"],
    "enrollment": ["patient_id", "start_date", "end_date", "coverage"],
    "ed_visits": ["visit_id", "patient_id", "visit_date"],
}
"""The columns of each contract table the national reference reads (facilities: all; a small table)."""

ROW_COLUMNS = ("measure", "stay_id", "unit_id", "unit_market", "unit_setting", "unit_is_partner", "discharge_date",
               "condition", "in_period", "observed", "expected", "predicted")


@dataclass
class Reference:
    """The national reference (see the module docstring).

    Attributes
    ----------
    rows : DataFrame
        One row per measure × index stay: ``measure``, ``stay_id``, ``unit_id`` (the facility judged),
        ``unit_market``, ``unit_setting``, ``unit_is_partner``, ``discharge_date``, ``condition``,
        ``in_period`` (used to fit the model), ``observed`` (0/1), ``expected``, ``predicted``.
    models : DataFrame
        One row per measure: period, ``n``, ``events``, ``rate``, ``facilities``, ``sigma``, ``c``,
        ``c_lower``, ``c_upper``, ``brier``, ``hl_statistic``, ``hl_p_value``, ``converged`` (judged from the
        relative projected gradient ``gradient_norm`` and the last ``objective_change``, :mod:`carequal.convergence`).
    coefficients : DataFrame
        ``measure``, ``term``, ``estimate``, ``se``, ``odds_ratio``, ``lower``, ``upper``.
    calibration : DataFrame
        ``measure`` and :func:`carequal.risk.calibration_table` over the fitting stays.
    meta : dict
        ``period_start``, ``period_end``, ``measures`` (those with a model), ``unavailable`` (each measure whose
        model could not be fitted: ``label``, ``cause``, ``facilities`` and ``reason``, a sentence without keys
        or patient counts), ``index_stays``.

    A measure whose model could not be fitted keeps its rows (who was judged, what was observed: the post-acute
    flows of a market report read them) with ``expected`` and ``predicted`` missing, and has no row in ``models``,
    ``coefficients`` or ``calibration``.
    """

    rows: pd.DataFrame
    models: pd.DataFrame
    coefficients: pd.DataFrame
    calibration: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def unavailable(self) -> dict[str, str]:
        """Measures without a model → why (a shareable sentence)."""
        return {name: info["reason"] for name, info in self.meta.get("unavailable", {}).items()}


def measure_rows(measured: pd.DataFrame, facilities: pd.DataFrame, spec: MeasureSpec) -> pd.DataFrame:
    """The index stays a measure counts, with the facility judged (``unit_id``) and the outcome (``observed``).

    Parameters
    ----------
    measured : DataFrame
        :func:`carequal.measures.index_measures` output (with risk covariates if a model is to be fitted).
    facilities : DataFrame
        Contract facilities (market, setting and partner flag of the judged facility).
    spec : MeasureSpec

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["H1", "S1"], "market": ["A", "A"], "setting": ["acute", "snf"],
    ...                     "is_partner": [True, False]})
    >>> m = pd.DataFrame({"stay_id": ["s1", "s2"], "facility_id": ["H1", "H1"], "pac_facility_id": ["S1", None],
    ...                   "pac_setting": ["snf", "none"], "unplanned_readmit_30d": [True, False]})
    >>> measure_rows(m, fac, MEASURES["pac_readmission"])[["stay_id", "unit_id", "unit_setting", "observed"]]
      stay_id unit_id unit_setting  observed
    0      s1      S1          snf       1.0
    """
    data = measured
    if spec.post_acute_only:
        data = data[(data["pac_setting"] != "none") & data[spec.unit].notna()]
    data = data.reset_index(drop=True)
    unit = data[spec.unit].astype("str")
    at = key_positions(unit, facilities["facility_id"])  # one hash look-up for the three facility columns
    out = data.assign(
        measure=spec.name, unit_id=unit.to_numpy(),
        unit_market=take(facilities["market"], at), unit_setting=take(facilities["setting"], at),
        unit_is_partner=take(facilities["is_partner"], at, False).astype(bool),
        observed=data[spec.outcome].fillna(False).astype(float).to_numpy())
    return out


def _fit_measure(rows: pd.DataFrame, spec: MeasureSpec, covariates: list[str], in_period: np.ndarray):
    """The measure's model fitted on the reporting period and every row scored; a :class:`ModelError` naming the
    measure, its facilities and the cause when the model cannot be fitted."""
    fit_rows = rows[in_period]
    facilities = describe_facilities(int(fit_rows["unit_id"].nunique()), f"{spec.unit_kind}s", "all markets")
    if len(fit_rows) == 0:
        raise ModelError(measure=spec.name, facilities=facilities, cause="too few cases",
                         detail="the reporting period has no index stays for this measure",
                         model="random-intercept logistic model", n=0, cases="index stays",
                         advice="choose a longer period")
    # drop covariates that do not vary in the fitting stays (e.g. no employees in a Medicare-only extract)
    usable = [c for c in covariates if fit_rows[c].nunique() > 1]
    model = HierarchicalLogit(usable).fit(fit_rows, outcome="observed", group="unit_id", measure=spec.name,
                                          facilities=facilities)
    lp = model.linear_predictor(rows)
    at = key_positions(rows["unit_id"], pd.Series(model.groups_))
    effect = np.asarray(take(model.effects_["effect"], at, 0.0), dtype=float)  # 0: a facility the fit never saw
    expected = 1 / (1 + np.exp(-lp))
    predicted = 1 / (1 + np.exp(-(lp + effect)))
    y, p = fit_rows["observed"].to_numpy(), expected[in_period]
    c = c_statistic(y, p)
    hl = hosmer_lemeshow(y, p)
    summary = {"measure": spec.name, "label": spec.label, "unit_kind": spec.unit_kind, "n": len(fit_rows),
               "events": int(y.sum()), "rate": float(y.mean()), "facilities": len(model.groups_),
               "sigma": model.sigma_, "c": c["c"], "c_lower": c["lower"], "c_upper": c["upper"],
               "brier": brier_score(y, p), "hl_statistic": hl["statistic"], "hl_p_value": hl["p_value"],
               "converged": model.converged_, "gradient_norm": model.convergence_.gradient_norm,
               "objective_change": model.convergence_.objective_change, "covariates": len(usable)}

    z = special.ndtri(0.975)
    coef = pd.DataFrame({"measure": spec.name, "term": model.params_.index, "estimate": model.params_.to_numpy(),
                         "se": model.bse_.to_numpy()})
    with np.errstate(over="ignore"):  # a covariate with almost no events has a huge SE: its upper limit is inf
        coef["odds_ratio"] = np.exp(coef["estimate"])
        coef["lower"] = np.exp(coef["estimate"] - z * coef["se"])
        coef["upper"] = np.exp(coef["estimate"] + z * coef["se"])
    calib = calibration_table(y, p).assign(measure=spec.name)
    return expected, predicted, summary, coef, calib


def measured_index_stays(tables: dict[str, pd.DataFrame], *, rules=None) -> pd.DataFrame:
    """Index stays with every outcome and risk covariate the reference needs (:data:`MEASURED_COLUMNS`).

    The computation is per patient (a patient's index stays, readmissions, deaths and post-acute stays are
    all among that patient's rows), so it can run on any partition of the data that keeps each patient's
    rows together — the residence-market partitions of an ingested dataset — and the results concatenated
    (:func:`carequal.scale.measured_index_stays_partitioned`).
    """
    cohort = index_stays(tables["stays"], tables["facilities"], tables["patients"], tables.get("enrollment"),
                         rules=rules)
    measured = risk_covariates(index_measures(cohort.index, tables), tables["stays"])
    return measured[[c for c in MEASURED_COLUMNS if c in measured.columns]].reset_index(drop=True)


def build_reference(tables: dict[str, pd.DataFrame], *, period_start, period_end,
                    measures: tuple[str, ...] | list[str] = tuple(MEASURES), rules=None) -> Reference:
    """Fit the national models and score every index stay (see the module docstring).

    Parameters
    ----------
    tables : dict of DataFrame
        Validated contract tables of **every** market.
    period_start, period_end : date-like
        Reporting period (inclusive, by discharge date): the stays the models are fitted on.
    measures : sequence of str
        Keys of :data:`MEASURES`.
    rules : IndexRules, optional
        Index-stay rules (CMS defaults).

    Returns
    -------
    Reference

    Raises
    ------
    ParameterError
        The reporting period holds no index stay of any measure.
    ModelError
        No measure's model could be fitted (the message names each measure, its facilities and the cause).
        When only some cannot be fitted, the others are built: the failed ones are listed in
        ``meta["unavailable"]`` with their reason and a :class:`carequal.errors.ModelWarning` names each.
    """
    _check_measures(measures)
    reporting_period(period_start, period_end)
    return reference_from_measured(measured_index_stays(tables, rules=rules), tables["facilities"],
                                   period_start=period_start, period_end=period_end, measures=measures)


def _check_measures(measures) -> None:
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ParameterError(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")


def reference_from_measured(measured: pd.DataFrame, facilities: pd.DataFrame, *, period_start, period_end,
                            measures: tuple[str, ...] | list[str] = tuple(MEASURES)) -> Reference:
    """The reference from :func:`measured_index_stays` output (computed in one piece or by partition)."""
    _check_measures(measures)
    start, end = reporting_period(period_start, period_end)
    # one order whatever the partitioning: the fits and every row of the result are then identical
    measured = measured.sort_values("stay_id", kind="stable", ignore_index=True)
    when = pd.to_datetime(measured["discharge_date"])
    if not ((when >= start) & (when <= end)).any():
        raise ParameterError(f"the reporting period {start.date()} to {end.date()} has no index stays; a risk model "
                             "needs both outcomes (choose a longer period, or one the data cover)")
    rows, models, coefs, calibs, fitted, failed = [], [], [], [], [], {}
    for name in measures:
        spec = MEASURES[name]
        data = measure_rows(measured, facilities, spec)
        when = pd.to_datetime(data["discharge_date"])
        in_period = ((when >= start) & (when <= end)).to_numpy()
        try:
            expected, predicted, summary, coef, calib = _fit_measure(data, spec, list(RISK_COVARIATES), in_period)
        except ModelError as exc:  # this measure is left out of the comparisons; the others go on
            failed[name] = exc
            data = data.assign(in_period=in_period, expected=np.nan, predicted=np.nan)
            rows.append(data[list(ROW_COLUMNS)])
            continue
        data = data.assign(in_period=in_period, expected=expected, predicted=predicted)
        rows.append(data[list(ROW_COLUMNS)])
        models.append({**summary, "period_start": start.date().isoformat(), "period_end": end.date().isoformat()})
        coefs.append(coef)
        calibs.append(calib)
        fitted.append(name)
    if failed and not fitted:
        first, *others = failed.values()
        raise ModelError(**{**first._fields(), "advice": "; ".join(
            [a for a in [first.advice] if a] + [f"no other measure could be fitted either: {e}" for e in others])})
    for exc in failed.values():
        warnings.warn(f"{exc}; the measure is left out of the national reference and shown as not available",
                      ModelWarning, stacklevel=2)
    out = pd.concat(rows, ignore_index=True)
    out["discharge_date"] = pd.to_datetime(out["discharge_date"])
    unavailable = {name: {"label": MEASURES[name].label, "cause": e.cause, "facilities": e.facilities,
                          "reason": e.reason} for name, e in failed.items()}
    return Reference(rows=out, models=pd.DataFrame(models), coefficients=pd.concat(coefs, ignore_index=True),
                     calibration=pd.concat(calibs, ignore_index=True),
                     meta={"period_start": start.date().isoformat(), "period_end": end.date().isoformat(),
                           "measures": fitted, "unavailable": unavailable, "index_stays": len(measured)})


def _write_rows(rows: pd.DataFrame, out_dir: Path, market: str) -> pd.DataFrame:
    """``rows`` written to ``out_dir/rows/<market>=<m>/`` (Parquet, hive partitions; a missing market is
    ``(unknown)``), replacing what was there; returns the rows as written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = rows.copy(deep=False)  # copy-on-write: only the market column is new
    rows[market] = rows[market].fillna("(unknown)").astype("str")
    # preserve_order: each partition's rows in the frame's order, the same on every run (threads otherwise
    # interleave batches differently from one run to the next)
    ds.write_dataset(pa.Table.from_pandas(rows, preserve_index=False), out_dir / "rows", format="parquet",
                     partitioning=[market], partitioning_flavor="hive", preserve_order=True,
                     existing_data_behavior="delete_matching", basename_template="part-{i}.parquet")
    return rows


def write_reference(reference: Reference, out_dir: str | Path) -> None:
    """Write a reference: ``rows/unit_market=<m>/`` (Parquet, by the judged facility's market), model tables
    as CSV and ``reference.json``. An existing reference in ``out_dir`` is replaced."""
    out_dir = Path(out_dir)
    _write_rows(reference.rows, out_dir, "unit_market")
    reference.models.to_csv(out_dir / "models.csv", index=False)
    reference.coefficients.to_csv(out_dir / "coefficients.csv", index=False)
    reference.calibration.to_csv(out_dir / "calibration.csv", index=False)
    (out_dir / "reference.json").write_text(json.dumps(reference.meta, indent=2))


def read_reference(directory: str | Path, *, market: str | None = None) -> Reference:
    """Read a reference written by :func:`write_reference`; with ``market``, only the rows of that market's
    facilities are read (partition pruning: the other markets' files are not opened)."""
    directory = Path(directory)
    if not (directory / "reference.json").is_file():
        raise ParameterError(f"{directory} holds no national reference (reference.json is missing); "
                             "build one with carequal.national.build_reference or `carequal report`")
    folder = directory / "rows"
    if market is not None:
        part = folder / partition_folder("unit_market", market)
        if part.is_dir():
            rows = ds.dataset(part, format="parquet").to_table().to_pandas(date_as_object=False)
            rows["unit_market"] = market
        else:
            rows = pd.DataFrame({c: pd.Series(dtype="float64") for c in ROW_COLUMNS})
    else:
        rows = ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas(date_as_object=False)
    rows = rows[list(ROW_COLUMNS)]
    return Reference(rows=rows, models=pd.read_csv(directory / "models.csv"),
                     coefficients=pd.read_csv(directory / "coefficients.csv"),
                     calibration=pd.read_csv(directory / "calibration.csv"),
                     meta=json.loads((directory / "reference.json").read_text()))


# ------------------------------------------------------------------------------------- the measured cohort


def cohort_and_reference(tables: dict[str, pd.DataFrame], *, period_start, period_end,
                         measures: tuple[str, ...] | list[str] = tuple(MEASURES)) -> tuple[MeasuredCohort, Reference]:
    """The measured cohort (:func:`carequal.measured.measure_cohort`: one ``index_stays`` run, all-payer rules with
    the CMS checks recorded) and the national reference fitted on its CMS rows — the same reference as
    :func:`build_reference` — with each model's expected and predicted values added to the cohort
    (:func:`attach_expected`)."""
    _check_measures(measures)
    reporting_period(period_start, period_end)
    return reference_of_cohort(measure_cohort(tables), tables["facilities"], period_start=period_start,
                               period_end=period_end, measures=measures)


def reference_of_cohort(cohort: MeasuredCohort, facilities: pd.DataFrame, *, period_start, period_end,
                        measures: tuple[str, ...] | list[str] = tuple(MEASURES)) -> tuple[MeasuredCohort, Reference]:
    """:func:`cohort_and_reference` from a measured cohort: the reference fitted on its CMS rows, and the cohort
    with each model's expected and predicted values (:func:`attach_expected`). Needs only the facilities of the
    contract tables, so a caller that measured the cohort can let the other tables go first
    (:func:`carequal.inputs.prepare`: the peak memory)."""
    _check_measures(measures)
    cms = cohort.cms()
    measured = cms[[c for c in MEASURED_COLUMNS if c in cms.columns]]
    del cms
    reference = reference_from_measured(measured, facilities, period_start=period_start,
                                        period_end=period_end, measures=measures)
    return attach_expected(cohort, reference), reference


def attach_expected(cohort: MeasuredCohort, reference: Reference) -> MeasuredCohort:
    """The cohort with ``in_period`` (discharged in the reference's period: the stays its models were fitted on)
    and, per measure of the reference, ``expected_<measure>`` and ``predicted_<measure>`` (missing for stays the
    measure does not count, for stays outside the CMS cohort and for a measure whose model could not be
    fitted)."""
    rows = cohort.rows.copy(deep=False)  # copy-on-write: the added columns never reach cohort.rows
    start, end = (pd.Timestamp(reference.meta[k]) for k in ("period_start", "period_end"))
    when = pd.to_datetime(rows["discharge_date"])
    rows["in_period"] = ((when >= start) & (when <= end)).to_numpy()
    for name in MEASURES:
        part = reference.rows[(reference.rows["measure"] == name).to_numpy()]
        if not len(part) and name not in reference.meta.get("unavailable", {}):
            continue
        at = key_positions(rows["stay_id"], part["stay_id"])  # one look-up per measure (a stay is scored once)
        for kind in ("expected", "predicted"):
            rows[f"{kind}_{name}"] = np.asarray(take(part[kind], at), dtype=float)
    return MeasuredCohort(rows=rows, attrition=cohort.attrition)


def write_cohort(cohort: MeasuredCohort, out_dir: str | Path) -> None:
    """Write a measured cohort: ``rows/patient_market=<m>/`` (Parquet, by the residents' market, as the dataset),
    ``attrition.csv`` and ``cohort.json`` (its columns). An existing cohort in ``out_dir`` is replaced."""
    out_dir = Path(out_dir)
    rows = _write_rows(cohort.rows, out_dir, "patient_market")
    cohort.attrition.to_csv(out_dir / "attrition.csv", index=False)
    (out_dir / "cohort.json").write_text(json.dumps({"columns": list(cohort.rows.columns), "index_stays": len(rows),
                                                     "cms_index_stays": int(rows["cms"].sum())}, indent=2))


def read_cohort(directory: str | Path, *, market: str | None = None, cms: bool = False,
                columns: list[str] | None = None) -> MeasuredCohort:
    """Read a cohort written by :func:`write_cohort`, in the cohort's order; with ``market``, only that market's
    residents (partition pruning) and its attrition; with ``cms``, only the CMS cohort's rows."""
    directory = Path(directory)
    if not (directory / "cohort.json").is_file():
        raise ParameterError(f"{directory} holds no measured cohort (cohort.json is missing); build one with "
                             "carequal.inputs.prepare or `carequal report`")
    names = json.loads((directory / "cohort.json").read_text())["columns"]
    wanted = None if columns is None else [c for c in names if c in {*columns, "order", "cms", "patient_market"}]
    folder = directory / "rows"
    if market is not None:
        part = folder / partition_folder("patient_market", market)
        if part.is_dir():
            rows = ds.dataset(part, format="parquet").to_table(
                columns=[c for c in (wanted or names) if c != "patient_market"]).to_pandas(date_as_object=False)
            rows["patient_market"] = market
        else:
            rows = pd.DataFrame({c: pd.Series(dtype="object") for c in (wanted or names)})
    else:
        rows = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=wanted).to_pandas(
            date_as_object=False)
        rows["patient_market"] = rows["patient_market"].astype("str")
    rows = rows[[c for c in (wanted or names)]]
    if cms:
        rows = rows[rows["cms"].to_numpy(dtype=bool)]
    rows = rows.sort_values("order", kind="stable", ignore_index=True)
    attrition = pd.read_csv(directory / "attrition.csv", keep_default_na=False,
                            dtype={"rules": str, "market": str, "step": str, "description": str})
    if market is not None:
        attrition = attrition[attrition["market"] == market].reset_index(drop=True)
    return MeasuredCohort(rows=rows, attrition=attrition[list(ATTRITION_COLUMNS)])
