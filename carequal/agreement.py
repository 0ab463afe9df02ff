"""Partnership agreements: the metrics partners agreed on, their targets, and whether each partner meets them.

A partnership is described in one small file that lives with the data (TOML or YAML): who the partners
are, which of the library's measures they agreed to be judged on, a target for each, which direction is
better and how often they review. :func:`read_agreement` validates it with pydantic (types, allowed values,
unknown keys) and :func:`check_agreement` against the data (facilities that exist, metrics that apply to the
partner's setting); both raise :class:`carequal.errors.AgreementError` naming the key, the value given and
the valid choices. :func:`evaluate_agreement` then gives, per partner × metric × review period, the value
with its interval, the target, the status and the change since the previous period.

The metrics (:data:`AGREEMENT_MEASURES`) are counted on index hospital stays (:func:`carequal.cohorts.index_stays`)
and attributed by the partner's setting: a hospital answers for the index stays it discharged; a skilled
nursing, rehabilitation, long-term care or home health provider for the index stays whose first post-acute
stay (within a day of the hospital discharge) was with it — the SNFRM / DTC-PAC attribution. Review periods
are calendar months or quarters of the index discharge date.

Statuses (:func:`judge`):

* "not yet judgeable" when the period has fewer than ``min_cases`` cases, when there is no target (a
  market benchmark with no non-partner cases), or when the interval of the value contains the target;
* otherwise "met" when the whole interval is on the better side of the target, "not met" when it is on the
  worse side. A volume (a count of cases, not an estimate) has no interval: it meets its target or not;
* "not computed" when the metric's risk model (or, for spending, its mean) cannot be computed
  (:class:`carequal.errors.ModelError`: an episode's spending infinite or above
  :data:`carequal.cost.SPENDING_CEILING`, covariates that separate the outcome, a fit that overflows…). Every
  partner × period the failed model serves gets the status, its cases counted and no value, with a reason that
  names the metric, the facility set and the cause but no key or patient count; the other metrics are
  evaluated as if nothing had happened, and a :class:`carequal.errors.ModelWarning` gives the operator the
  full message (with up to 5 example keys).

Choices where the methods leave room (see ``../shared/docs/methodology.md`` for the measures themselves):

* A risk-adjusted rate is indirectly standardised: ``O / E × national rate``. One model per measure judges a
  partner everywhere (market report, packet, agreement): E sums the expected probabilities (the average
  facility's, expit(x'β)) of the national model of :mod:`carequal.national` when the metric is one it covers
  (:func:`national_model`: 30-day unplanned readmission of a hospital's or a provider's patients, 30-day
  mortality of a hospital's), read from the measured cohort :func:`carequal.inputs.prepare` built; any other
  rate (another window, planned readmissions included, DTC-PAC, a provider's mortality) gets a model of the same
  kind fitted once on every market's cases of that metric and role (a random-intercept logistic model,
  :class:`carequal.risk.HierarchicalLogit`, facility intercepts, covariates :data:`carequal.risk.RISK_COVARIATES`;
  every post-acute setting together, as the national post-acute model). Either model is fitted on the cases
  discharged in the reporting period (all cases up to the end of the evaluation when no cohort says which), and
  the national rate is those cases' crude rate. The interval is the O/E interval (exact Poisson below 10
  events, Byar from 10) times the national rate, its upper end capped at 1. The facility intercepts are not
  used for E: a partner's own period is judged on its own cases.
* A market benchmark pools the non-partner facilities of the partner's market and setting (acute hospitals
  for a hospital; providers of the same post-acute setting otherwise) — "non-partner" meaning not a partner
  in this agreement. It is treated as a fixed value: its own uncertainty is not added to the partner's.
* Length of stay: the mean (Medicare day count, minimum 1) with a t interval.
* Episode spending (:func:`carequal.cost.episode_spending`): the payments of the index hospitalisation (its
  transfer chain) and of the ``window_days`` after its discharge (readmissions in full, post-acute stays
  prorated by their days in the window), attributed like the other metrics. Crude: the mean per episode with
  a t interval. Risk-adjusted: ``O / E × national mean``, E from a gamma GLM with a log link
  (:func:`carequal.cost.expected_spending`, covariates :data:`carequal.risk.RISK_COVARIATES`) fitted on every
  market's episodes of that role (and, for providers, setting); the interval
  is :func:`carequal.cost.spending_ratio`'s (log-scale delta method, ratio-estimator variance plus the
  model's variance of E, conservative here since the partner's episodes are in the fit) times the national
  mean, which is those episodes' crude mean (column ``national_rate``).
* Episodes left out of spending are counted, never silently dropped: an episode is counted only once its
  window and :data:`SPENDING_ROOM_DAYS` more lie inside the data (an extract by discharge date lacks the
  post-acute stays still running at its end, which would understate the last episodes), and only when
  every stay of the index hospitalisation and of the window has a payment (a
  :class:`carequal.errors.DataQualityWarning` names those). :func:`agreement_cases` keeps such episodes as
  rows with ``value`` missing and the reason in ``excluded``; :func:`evaluate_agreement` counts them per
  partner and period in ``excluded`` and judges on the rest.
* Stays are counted in the period of their index discharge; a partner's periods before its start are
  evaluated too (the baseline) and marked ``phase = "before"``.

Why hand-written: the agreement file's structure is carequal's own; validation is pydantic's, the rate models are
the national reference's (:mod:`carequal.national`, :class:`carequal.risk.HierarchicalLogit`), the spending model
statsmodels', the intervals are :mod:`carequal.intervals`.

Size: about 1,000 lines, one module because the agreement file's models, their checks against the data and the
evaluation share the metric definitions (:data:`MEASURES`, ``Metric.window``, targets); a new kind of metric or
target touches all three.
"""

from __future__ import annotations

import tomllib
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import special

from carequal.cohorts import CONDITIONS, IndexRules
from carequal.cost import SPENDING_CEILING, episode_spending, expected_spending, spending_ratio, unusable_spending
from carequal.errors import AgreementError, ModelError, ModelWarning, ParameterError, describe_facilities
from carequal.intervals import count_interval, wilson
from carequal.measured import POST_ACUTE, dtc_outcome, measure_cohort, mortality_outcome, readmission_outcome
from carequal.measures import length_of_stay
from carequal.risk import RISK_COVARIATES, HierarchicalLogit

__all__ = ["AGREEMENT_MEASURES", "SPENDING_ROOM_DAYS", "Agreement", "AgreementMeasure", "Metric", "Partner",
           "agreement_cases", "check_agreement", "evaluate_agreement", "judge", "load_agreement", "read_agreement",
           "review_periods", "review_periods_in"]

NOT_COMPUTED = "not computed"
"""The status of a metric whose model (or mean) could not be computed: its ``status_reason`` says why."""
STATUSES = ("met", "not met", "not yet judgeable", NOT_COMPUTED)
_KINDS = {"acute": "hospitals", "snf": "SNFs", "irf": "IRFs", "ltch": "LTCHs", "hha": "home health agencies"}


@dataclass(frozen=True)
class AgreementMeasure:
    """One measure a partnership can agree on."""

    name: str
    label: str
    kind: str  # "rate", "mean" or "count"
    settings: tuple[str, ...]
    better: str  # "lower" or "higher"
    risk_adjustable: bool
    unit: str  # how its values read: "proportion", "days", "cases", "dollars"


AGREEMENT_MEASURES: dict[str, AgreementMeasure] = {
    "readmission": AgreementMeasure("readmission", "readmission", "rate", ("acute", *POST_ACUTE), "lower", True,
                                    "proportion"),
    "mortality": AgreementMeasure("mortality", "mortality", "rate", ("acute", *POST_ACUTE), "lower", True,
                                  "proportion"),
    "discharge_to_community": AgreementMeasure("discharge_to_community", "discharge to community", "rate",
                                               POST_ACUTE, "higher", True, "proportion"),
    "length_of_stay": AgreementMeasure("length_of_stay", "length of stay", "mean", ("acute", *POST_ACUTE),
                                       "lower", False, "days"),
    "episode_spending": AgreementMeasure("episode_spending", "episode spending", "mean", ("acute", *POST_ACUTE),
                                         "lower", True, "dollars"),
    "volume": AgreementMeasure("volume", "patients", "count", ("acute", *POST_ACUTE), "higher", False, "cases"),
}
"""The measures an agreement may name. ``readmission``: the first acute admission within ``window_days`` of
the index discharge (unplanned only, by the CMS Planned Readmission Algorithm, unless ``planned = "include"``);
``mortality``: death within ``window_days`` of the index admission; ``discharge_to_community``: the first
post-acute stay ends home or with home health and the patient is alive with no unplanned hospital or LTCH
admission for ``window_days`` (DTC-PAC, window 31 by default); ``length_of_stay``: days in the hospital stay
(hospitals) or in the post-acute stay (providers); ``episode_spending``: payments of the index hospitalisation
and of the ``window_days`` after its discharge (30 by default), in the data's currency; ``volume``: the number
of index stays (hospitals: discharged; providers: received)."""

SPENDING_ROOM_DAYS = 60
"""Days an episode's spending window must end before the end of the data. The stays of an extract by discharge
date end within it, so a post-acute stay still running at its end is missing: on the sample, episodes counted
right up to the end were understated by 4% in their last 60 days, by 0.04% with 60 days of room (99% of SNF
stays are shorter than 85 days, of home health stays 89)."""

_MIN_DOLLAR_TARGET = 100
"""A spending target of this many dollars per episode or less reads as a proportion, a ratio or a percentage."""


# ----------------------------------------------------------------------------------------- the file format


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Partner(_Strict):
    """A partner facility. ``start`` defaults to the facilities table's ``partner_since``."""

    facility_id: str = Field(min_length=1)
    start: date | None = None


class AbsoluteTarget(_Strict):
    """A fixed value: a proportion for rates (0.15 is 15%), days for length of stay, dollars per episode for
    spending, cases for volume."""

    kind: Literal["absolute"]
    value: float = Field(ge=0)


class MarketTarget(_Strict):
    """The market's non-partner facilities of the same setting, in the same period, changed by
    ``relative_change`` (−0.1: 10% below the benchmark)."""

    kind: Literal["market"]
    relative_change: float = Field(default=0.0, gt=-1, le=10)


class NationalTarget(_Strict):
    """A national value written in the file (e.g. a published CMS national rate), changed by ``relative_change``."""

    kind: Literal["national"]
    value: float = Field(ge=0)
    relative_change: float = Field(default=0.0, gt=-1, le=10)
    source: str = ""


Target = Annotated[AbsoluteTarget | MarketTarget | NationalTarget, Field(discriminator="kind")]


class Metric(_Strict):
    """One agreed metric: a measure of :data:`AGREEMENT_MEASURES` with its parameters and target."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    measure: Literal["readmission", "mortality", "discharge_to_community", "length_of_stay", "episode_spending",
                     "volume"]
    label: str = ""
    window_days: int | None = Field(default=None, ge=1, le=365)
    condition: str = "all"
    planned: Literal["exclude", "include"] = "exclude"
    risk_adjusted: bool = False
    direction: Literal["lower", "higher"] | None = None
    min_cases: int = Field(default=25, ge=1)
    target: Target

    @model_validator(mode="after")
    def _consistent(self) -> Metric:
        spec = AGREEMENT_MEASURES[self.measure]
        if self.risk_adjusted and not spec.risk_adjustable:
            raise ValueError(f"risk_adjusted = true is not available for {self.measure}; risk-adjustable measures: "
                             + ", ".join(m for m, s in AGREEMENT_MEASURES.items() if s.risk_adjustable))
        if self.planned == "include" and self.measure != "readmission":
            raise ValueError(f"planned applies to readmission only, not {self.measure}")
        if self.window_days is not None and self.measure in ("length_of_stay", "volume"):
            raise ValueError(f"window_days does not apply to {self.measure}")
        value = getattr(self.target, "value", None)
        if spec.unit == "proportion" and value is not None and value > 1:
            raise ValueError(f"target value {value:g} for {self.measure} is not a proportion between 0 and 1 "
                             f"(write {value / 100:g} for {value:g}%)")
        if spec.unit == "dollars" and value is not None and value <= _MIN_DOLLAR_TARGET:
            raise ValueError(f"target value {value:g} for {self.measure} is in dollars per episode (e.g. 25000), "
                             "not a proportion, a ratio or a percentage; for a target relative to the market "
                             "write kind = \"market\" with relative_change (-0.05: 5% below the market)")
        if spec.kind == "count" and self.target.kind != "absolute":
            raise ValueError(f"a volume target must be kind = \"absolute\" (a number of cases), not "
                             f"{self.target.kind!r}")
        if spec.kind == "count" and value is not None and value != int(value):
            raise ValueError(f"a volume target is a whole number of cases, not {value:g}")
        return self

    @property
    def spec(self) -> AgreementMeasure:
        return AGREEMENT_MEASURES[self.measure]

    @property
    def better(self) -> str:
        return self.direction or self.spec.better

    @property
    def window(self) -> int | None:
        if self.measure in ("length_of_stay", "volume"):
            return None
        return self.window_days or (31 if self.measure == "discharge_to_community" else 30)

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        parts = [f"{self.window}-day" if self.window else "", "unplanned" if self.measure == "readmission"
                 and self.planned == "exclude" else "", self.spec.label,
                 "(risk-adjusted)" if self.risk_adjusted else ""]
        text = " ".join(p for p in parts if p)
        return text[0].upper() + text[1:]


class Agreement(_Strict):
    """A partnership agreement (see the module docstring and ``data/sample/agreement.toml``)."""

    name: str = Field(min_length=1)
    review_period: Literal["month", "quarter"] = "quarter"
    show_facility_names: bool = False
    partners: list[Partner] = Field(min_length=1)
    metrics: list[Metric] = Field(min_length=1)

    @field_validator("partners", "metrics")
    @classmethod
    def _unique_keys(cls, items: list, info):
        """No partner listed twice, no metric id used twice."""
        ids = [p.facility_id for p in items] if info.field_name == "partners" else [m.id for m in items]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            what = "facility_id listed twice" if info.field_name == "partners" else "metric id used twice"
            raise ValueError(f"{what}: {', '.join(twice)}")
        return items

    def metric(self, metric_id: str) -> Metric:
        for m in self.metrics:
            if m.id == metric_id:
                return m
        raise ParameterError(f"agreement {self.name!r} has no metric {metric_id!r}; it has "
                             + ", ".join(m.id for m in self.metrics))


def _where(loc: tuple, raw: dict) -> str:
    """``metrics[1] (readmit_30d).target.value`` from a pydantic error location."""
    out, node = "", raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            key = node.get("id") or node.get("facility_id") if isinstance(node, dict) else None
            if key:
                out += f" ({key})"
        elif part in ("absolute", "market", "national") and out.endswith("target"):
            continue  # the union member pydantic tried: not a key of the file
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _parse(text: str, source: str) -> dict:
    suffix = Path(source).suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:
            raw = tomllib.loads(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:  # a syntax error of the file, and nothing else
        raise AgreementError(f"{source}: not valid {'YAML' if suffix in ('.yaml', '.yml') else 'TOML'}: {exc}") \
            from None
    if not isinstance(raw, dict):
        raise AgreementError(f"{source}: an agreement is a table of keys (name, review_period, partners, metrics), "
                             f"not {type(raw).__name__}")
    return raw


def read_agreement(path: str | Path | None = None, *, text: str | None = None, source: str = "agreement.toml"
                   ) -> Agreement:
    """Read and validate an agreement file (``.toml``, ``.yaml`` or ``.yml``).

    Every problem is reported at once, each line naming the key, what is wrong and the valid choices.

    Examples
    --------
    >>> ag = read_agreement(text='''
    ... name = "Northvale network"
    ... [[partners]]
    ... facility_id = "S001003"
    ... [[metrics]]
    ... id = "readmit"
    ... measure = "readmission"
    ... target = { kind = "absolute", value = 0.18 }
    ... ''')
    >>> ag.metrics[0].title, ag.metrics[0].better, ag.review_period
    ('30-day unplanned readmission', 'lower', 'quarter')
    >>> read_agreement(text='name = "x"\\n[[partners]]\\nfacility_id = "S1"\\n[[metrics]]\\nid = "r"\\n'
    ...                     'measure = "readmit"\\ntarget = { kind = "absolute", value = 0.2 }')
    Traceback (most recent call last):
    ...
    carequal.errors.AgreementError: agreement.toml is not a valid agreement (1 problem):
      metrics[0] (r).measure: Input should be 'readmission', ... or 'volume' (given 'readmit')
    """
    if text is None:
        if path is None:
            raise ParameterError("read_agreement: give a path or text")
        path = Path(path)
        if not path.is_file():
            raise AgreementError(f"agreement file {path} does not exist")
        source, text = str(path), path.read_text(encoding="utf-8")
    raw = _parse(text, source)
    try:
        return Agreement.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            shown = "" if err["type"] in ("missing", "model_type") or isinstance(given, dict | list) \
                else f" (given {given!r})"
            lines.append(f"  {_where(err['loc'], raw)}: {msg}{shown}")
        raise AgreementError(f"{source} is not a valid agreement ({len(lines)} problem"
                             f"{'s' if len(lines) > 1 else ''}):\n" + "\n".join(lines)) from None


def check_agreement(agreement: Agreement, facilities: pd.DataFrame, *, source: str = "agreement") -> None:
    """Check an agreement against the data: partners exist, metrics apply to each partner's setting,
    conditions exist, and every partner has a start date. Raises :class:`AgreementError` listing every problem.
    """
    fac = facilities.set_index("facility_id")
    problems = []
    for i, p in enumerate(agreement.partners):
        where = f"partners[{i}] ({p.facility_id}).facility_id"
        if p.facility_id not in fac.index:
            near = [f for f in fac.index if f[:3] == p.facility_id[:3]][:8] or list(fac.index[:8])
            problems.append(f"{where}: facility {p.facility_id!r} is not in the facilities table; "
                            f"facilities include {', '.join(near)}")
            continue
        since = fac.at[p.facility_id, "partner_since"] if "partner_since" in fac.columns else pd.NaT
        if p.start is None and pd.isna(since):
            problems.append(f"partners[{i}] ({p.facility_id}).start: no start date in the file and no partner_since "
                            "in the facilities table; write start = YYYY-MM-DD")
    for j, m in enumerate(agreement.metrics):
        if m.condition != "all" and m.condition not in (*CONDITIONS, "other"):
            problems.append(f"metrics[{j}] ({m.id}).condition: unknown condition {m.condition!r}; choose from all, "
                            + ", ".join((*CONDITIONS, "other")))
        settings = {fac.at[p.facility_id, "setting"] for p in agreement.partners if p.facility_id in fac.index}
        if settings and not settings & set(m.spec.settings):
            problems.append(f"metrics[{j}] ({m.id}).measure: {m.measure} applies to {', '.join(m.spec.settings)} "
                            f"facilities; the partners are {', '.join(sorted(settings))}")
    if problems:
        raise AgreementError(f"{source} does not fit the data ({len(problems)} problem"
                             f"{'s' if len(problems) > 1 else ''}):\n" + "\n".join(f"  {p}" for p in problems))


def load_agreement(path: str | Path, facilities: pd.DataFrame) -> Agreement:
    """:func:`read_agreement` then :func:`check_agreement`."""
    agreement = read_agreement(path)
    check_agreement(agreement, facilities, source=str(path))
    return agreement


def partner_table(agreement: Agreement, facilities: pd.DataFrame) -> pd.DataFrame:
    """One row per partner: ``facility_id``, ``name``, ``setting``, ``market``, ``start`` (the file's, else the
    facilities table's ``partner_since``)."""
    fac = facilities.set_index("facility_id")
    rows = []
    for p in agreement.partners:
        since = fac.at[p.facility_id, "partner_since"] if "partner_since" in fac.columns else pd.NaT
        rows.append({"facility_id": p.facility_id, "name": fac.at[p.facility_id, "name"],
                     "setting": fac.at[p.facility_id, "setting"], "market": fac.at[p.facility_id, "market"],
                     "start": pd.Timestamp(p.start) if p.start is not None else pd.Timestamp(since)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- the cases


def national_model(metric: Metric, role: str) -> str | None:
    """The national model (a :data:`carequal.national.MEASURES` key) whose expected values judge a risk-adjusted
    ``metric`` in ``role`` ("hospital" or "post_acute"), or None when no national model covers it (a variant: a
    hierarchical model of its own is fitted once, on every market's cases).

    Examples
    --------
    >>> m = Metric(id="r", measure="readmission", risk_adjusted=True, target={"kind": "absolute", "value": 0.2})
    >>> national_model(m, "hospital"), national_model(m, "post_acute")
    ('readmission', 'pac_readmission')
    >>> national_model(m.model_copy(update={"window_days": 7}), "hospital") is None
    True
    """
    if metric.measure == "readmission" and metric.window == 30 and metric.planned == "exclude":
        return "readmission" if role == "hospital" else "pac_readmission"
    if metric.measure == "mortality" and metric.window == 30 and role == "hospital":
        return "mortality"
    return None


def agreement_cases(tables: dict[str, pd.DataFrame], agreement: Agreement, *, rules=None,
                    room_days: int = SPENDING_ROOM_DAYS, cohort: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every case of every agreed metric, for every facility (partners and the rest, all markets).

    Parameters
    ----------
    tables : dict of DataFrame
        Validated contract tables; ``stays`` needs its optional ``payment`` column for ``episode_spending``.
        With ``cohort``, only ``facilities`` and (for spending) ``stays`` are read.
    agreement : Agreement
    rules : carequal.cohorts.IndexRules, optional
        Index-stay rules (the CMS-style defaults otherwise). With ``cohort``, only spending's transfer rule and
        data end are taken from them: the cases are the cohort's CMS rows.
    room_days : int
        Episode spending: days its window must end before the end of the data (:data:`SPENDING_ROOM_DAYS`).
    cohort : DataFrame, optional
        The rows of the measured cohort (:mod:`carequal.measured`; :func:`carequal.national.read_cohort`), built
        once per run: nothing is recomputed, every window derives from its columns, and each case of a metric a
        national model covers (:func:`national_model`) carries that model's expected value. Without it the
        cohort of ``tables`` is built here (with ``rules``), with no national expected values.

    Returns
    -------
    DataFrame
        One row per metric × role × index stay: ``metric``, ``role`` ("hospital" or "post_acute"), ``unit_id``
        (the facility that answers for the case), ``stay_id``, ``patient_id``, ``discharge_date``,
        ``condition``, ``value`` (0/1 for rates, days for length of stay, dollars for spending, 1 for volume),
        ``excluded`` (missing for a case of the metric; for an episode left out of spending the reason,
        ``"incomplete_followup"`` or ``"missing_payment"``, with ``value`` missing), the risk covariates,
        ``in_period`` (discharged in the national models' period; missing without a cohort) and
        ``national_expected`` (the national model's expected value; missing where none applies).
        Post-acute cases whose stay ended in a way DTC-PAC excludes (AMA, hospice, …) are left out of
        ``discharge_to_community`` only.
    """
    stays, fac = tables["stays"], tables["facilities"]
    for j, m in enumerate(agreement.metrics):
        if m.measure == "episode_spending" and "payment" not in stays.columns:
            raise AgreementError(f"metrics[{j}] ({m.id}).measure: episode_spending needs the payment of every stay, "
                                 "and the stays table has no payment column (optional in the data contract); load "
                                 "a source with payments or remove the metric")
    if cohort is None:
        index = measure_cohort(tables, rules=rules or IndexRules(), record=None).rows
    else:
        index = cohort[cohort["cms"].to_numpy(dtype=bool)]
    index = index.reset_index(drop=True)
    n = len(index)
    base = pd.DataFrame({"stay_id": index["stay_id"].to_numpy(), "patient_id": index["patient_id"].to_numpy(),
                         "discharge_date": pd.to_datetime(index["discharge_date"]).to_numpy(),
                         "condition": index["condition"].to_numpy()})
    for c in RISK_COVARIATES:
        base[c] = index[c].to_numpy(dtype=float)
    base["in_period"] = index["in_period"].astype("boolean").array if "in_period" in index.columns \
        else pd.array([pd.NA] * n, dtype="boolean")
    hospital_unit = index["facility_id"].astype("str").to_numpy()
    pac = index["pac_setting"].isin(POST_ACUTE).to_numpy()
    pac_unit = index["pac_facility_id"].astype("str").to_numpy()
    everyone = np.ones(n, bool)
    spend: dict[int, pd.DataFrame] = {}
    parts = []
    for m in agreement.metrics:
        excluded = None
        if m.measure == "readmission":
            value = readmission_outcome(index, m.window, planned=m.planned).astype(float)
            roles = {"hospital": (everyone, value), "post_acute": (pac, value)}
        elif m.measure == "mortality":
            died = mortality_outcome(index, m.window, anchor="admission").astype(float)
            roles = {"hospital": (everyone, died), "post_acute": (pac, died)}
        elif m.measure == "discharge_to_community":
            counted, dtc = dtc_outcome(index, m.window)
            roles = {"post_acute": (counted, dtc.astype(float))}
        elif m.measure == "length_of_stay":
            roles = {"hospital": (everyone, length_of_stay(index).to_numpy(float)),
                     "post_acute": (pac, index["pac_los_days"].to_numpy(float))}
        elif m.measure == "episode_spending":
            if m.window not in spend:
                spend[m.window] = _episode_costs(index, stays, fac, window=m.window, rules=rules,
                                                 room_days=room_days)
            table = spend[m.window]
            value = table[f"spend_total_{m.window}d"].to_numpy(float)
            excluded = table[f"exclusion_reason_{m.window}d"].to_numpy(object)
            roles = {"hospital": (everyone, value), "post_acute": (pac, value)}
        else:  # volume
            roles = {"hospital": (everyone, np.ones(n)), "post_acute": (pac, np.ones(n))}
        for role, (mask, value) in roles.items():
            if m.condition != "all":
                mask = mask & (base["condition"] == m.condition).to_numpy()
            unit = hospital_unit if role == "hospital" else pac_unit
            national = national_model(m, role) if m.risk_adjusted else None
            column = f"expected_{national}"
            expected = index[column].to_numpy(float) if national and column in index.columns else np.full(n, np.nan)
            part = base[mask].assign(metric=m.id, role=role, unit_id=unit[mask], value=value[mask],
                                     excluded=None if excluded is None else excluded[mask],
                                     national_expected=expected[mask])
            parts.append(part)
    cols = ["metric", "role", "unit_id", "stay_id", "patient_id", "discharge_date", "condition", "value",
            "excluded", *RISK_COVARIATES, "in_period", "national_expected"]
    out = pd.concat(parts, ignore_index=True)[cols]
    out["excluded"] = out["excluded"].astype("string")
    return out


def _episode_costs(index: pd.DataFrame, stays: pd.DataFrame, facilities: pd.DataFrame, *, window: int, rules,
                   room_days: int) -> pd.DataFrame:
    """:func:`carequal.cost.episode_spending` of the index stays, with the cohort's transfer rule and the data's
    end moved ``room_days`` earlier."""
    if room_days < 0:
        raise ParameterError(f"room_days must be 0 or more days, not {room_days}")
    rules = rules or IndexRules()
    end = pd.Timestamp(rules.data_end) if rules.data_end is not None else pd.to_datetime(stays["discharge_date"]).max()
    return episode_spending(index, stays, facilities, windows=(window,),
                            transfer_gap_days=rules.transfer_gap_days if rules.chain_transfers else None,
                            data_end=end - pd.Timedelta(days=room_days))


# ------------------------------------------------------------------------------------------- evaluation


def review_periods(dates: pd.Series, freq: str) -> pd.Series:
    """The first day of the calendar month or quarter of each date.

    Examples
    --------
    >>> review_periods(pd.Series(pd.to_datetime(["2024-05-17", "2024-12-31"])), "quarter").dt.date.tolist()
    [datetime.date(2024, 4, 1), datetime.date(2024, 10, 1)]
    """
    if freq not in ("month", "quarter"):
        raise ParameterError(f"review period must be 'month' or 'quarter', not {freq!r}")
    return pd.to_datetime(dates).dt.to_period({"month": "M", "quarter": "Q"}[freq]).dt.start_time


def review_periods_in(start: pd.Series, end: pd.Series, freq: str) -> np.ndarray:
    """How many review periods (months or quarters) each period ``[start, end]`` spans: whole calendar months
    are counted as months, other spans by days (a month being 365.25 / 12 days).

    Examples
    --------
    >>> start = pd.Series(pd.to_datetime(["2024-01-01", "2024-04-01", "2024-01-01"]))
    >>> end = pd.Series(pd.to_datetime(["2024-12-31", "2024-06-30", "2024-01-16"]))
    >>> review_periods_in(start, end, "quarter").round(3).tolist()
    [4.0, 1.0, 0.175]
    """
    start, end = pd.to_datetime(start).reset_index(drop=True), pd.to_datetime(end).reset_index(drop=True)
    months = ((end.dt.year - start.dt.year) * 12 + end.dt.month - start.dt.month + 1).to_numpy(float)
    whole = ((start.dt.day == 1) & ((end + pd.Timedelta(days=1)).dt.day == 1)).to_numpy()
    days = ((end - start).dt.days + 1).to_numpy(float)
    months = np.where(whole, months, days / (365.25 / 12))
    return months / {"month": 1.0, "quarter": 3.0}[freq]


def judge(value, lower, upper, target, *, better, n, min_cases: int) -> tuple[np.ndarray, np.ndarray]:
    """Status and its reason, element-wise (see the module docstring).

    Examples
    --------
    >>> status, reason = judge([0.12, 0.20, 0.15, 0.10], [0.10, 0.18, 0.12, 0.05], [0.14, 0.22, 0.18, 0.20],
    ...                        [0.16, 0.16, 0.16, 0.16], better="lower", n=[400, 400, 400, 10], min_cases=25)
    >>> status.tolist()
    ['met', 'not met', 'not yet judgeable', 'not yet judgeable']
    >>> reason.tolist()[2:]
    ['the interval includes the target', 'too few cases (10, fewer than 25)']
    """
    value, lower, upper, target = (np.asarray(a, dtype=float) for a in (value, lower, upper, target))
    n = np.asarray(n, dtype=float)
    if better not in ("lower", "higher"):
        raise ParameterError(f"better must be 'lower' or 'higher', not {better!r}")
    below, above = upper < target, lower > target
    good, bad = (below, above) if better == "lower" else (above, below)
    # a value exactly on its target (no interval: volume) meets it
    exact = (lower == upper) & (value == target)
    good = good | exact
    status = np.where(good, "met", np.where(bad, "not met", "not yet judgeable")).astype(object)
    reason = np.where(good | bad, "", "the interval includes the target").astype(object)
    no_target = np.isnan(target)
    status[no_target] = "not yet judgeable"
    reason[no_target] = "no target (no benchmark cases)"
    few = n < min_cases
    status[few] = "not yet judgeable"
    reason[few] = [f"too few cases ({int(k)}, fewer than {min_cases})" for k in n[few]]
    return status, reason


def _summaries(cases: pd.DataFrame, keys: list[str], kind: str, level: float) -> pd.DataFrame:
    """n, events/mean, value and interval per group of cases (``expected`` used when present)."""
    g = cases.groupby(keys, observed=True, sort=True)
    summed = ["value", "expected"] if "expected" in cases.columns else ["value"]
    sums = g[summed].sum()  # pandas' (compensated) group sums, every column in one pass
    out = sums.index.to_frame(index=False)
    out["n"] = g.size().to_numpy()
    out["total"] = sums["value"].to_numpy()
    out["sq"] = _sums_of_squares(cases["value"].to_numpy(float), g.ngroup().to_numpy(), out["n"].to_numpy()) \
        if kind == "mean" else np.nan  # for the t interval: only where it is used
    if "expected" in cases.columns:
        out["expected"] = sums["expected"].to_numpy()
    n, total = out["n"].to_numpy(float), out["total"].to_numpy(float)
    if kind == "rate" and "expected" in out.columns:
        lo, hi, method = count_interval(total, level=level)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = total / out["expected"].to_numpy(float)
            out["ratio"] = ratio
            out["value"] = ratio * out["national_rate"] if "national_rate" in out.columns else ratio
            scale = out["value"].to_numpy(float) / np.where(total > 0, total, np.nan)
            out["lower"] = np.where(total > 0, lo * scale, 0.0)
            # with no events the upper limit is the exact one: O_upper / E × rate
            out["upper"] = np.where(total > 0, hi * scale, hi / out["expected"].to_numpy(float)
                                    * (out["national_rate"].to_numpy(float) if "national_rate" in out.columns else 1))
        out["method"] = [f"O/E × national rate ({m})" for m in method]
        out["events"] = total
    elif kind == "rate":
        lo, hi = wilson(total, n, level=level)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["value"] = total / n
        out["lower"], out["upper"], out["method"], out["events"] = lo, hi, "Wilson", total
    elif kind == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = total / n
            var = (out["sq"].to_numpy(float) - n * mean ** 2) / (n - 1)
            half = special.stdtrit(np.maximum(n - 1, 1), 0.5 + level / 2) * np.sqrt(np.maximum(var, 0) / n)
        out["value"], out["lower"], out["upper"] = mean, np.where(n > 1, mean - half, np.nan), \
            np.where(n > 1, mean + half, np.nan)
        out["method"], out["events"] = "mean, t interval", np.nan
    else:
        out["value"] = out["lower"] = out["upper"] = n
        out["method"], out["events"] = "count", np.nan
    return out.drop(columns=["total", "sq"])


def _sums_of_squares(values: np.ndarray, group: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The sum of the squared ``values`` of each group (``group``: each value's group number, 0 to ``len(n) - 1``;
    ``n``: each group's size), missing values left out. Each group's sum is numpy's (pairwise) sum of its values
    in their order, as ``np.sum`` of the group's values gives it.

    Examples
    --------
    >>> _sums_of_squares(np.array([1.0, 2.0, 3.0, np.nan]), np.array([1, 0, 1, 0]), np.array([2, 2]))
    array([ 4., 10.])
    """
    squares = (values * values)[np.argsort(group, kind="stable")]
    ends = np.cumsum(n)
    return np.array([np.nansum(squares[end - k:end]) for k, end in zip(n, ends, strict=True)], dtype=float)


def _expected_rates(cases: pd.DataFrame, *, measure: str = "outcome", facilities: str = "the cases given"
                    ) -> tuple[np.ndarray, float, None]:
    """Expected probability per case and the national rate: the national model's expected values when every case
    carries one (``national_expected``), else a random-intercept logistic model
    (:class:`carequal.risk.HierarchicalLogit`, facility intercepts on ``unit_id``) fitted on the cases, as the
    national models are. Either way the model is fitted on the cases discharged in the reporting period
    (``in_period``) when the cases say which, else on all of them, and the national rate is those cases' crude
    rate."""
    y = cases["value"].to_numpy(float)
    fit = cases["in_period"].fillna(False).to_numpy(dtype=bool) if "in_period" in cases.columns \
        else np.zeros(len(cases), bool)
    if not fit.any():
        fit = np.ones(len(cases), bool)
    national = float(y[fit].mean()) if fit.any() else float("nan")
    given = cases["national_expected"].to_numpy(float) if "national_expected" in cases.columns \
        else np.full(len(cases), np.nan)
    if len(cases) and not np.isnan(given).any():
        return given, national, None
    if y[fit].min() == y[fit].max():
        return np.full(len(cases), national), national, None
    rows = cases.assign(outcome=y)
    usable = [c for c in RISK_COVARIATES if rows.loc[fit, c].nunique() > 1]
    model = HierarchicalLogit(usable).fit(rows[fit], outcome="outcome", group="unit_id", measure=measure,
                                          facilities=facilities)
    return 1 / (1 + np.exp(-model.linear_predictor(rows))), national, None


def _check_spending(cases: pd.DataFrame, *, measure: str, facilities: str, model: str, action: str) -> None:
    """A :class:`ModelError` when an episode's spending is infinite or above :data:`carequal.cost.SPENDING_CEILING`:
    one such value (a payment keyed as 1e300) would dominate every mean and overflow the gamma model."""
    bad, cause = unusable_spending(cases["value"].to_numpy(float))
    if bad.any():
        k = int(bad.sum())
        examples = ", ".join(map(str, cases["stay_id"].to_numpy()[bad][:5]))
        raise ModelError(measure=measure, facilities=facilities, cause=cause, model=model, action=action,
                         detail=f"a payment (stays.payment) makes episode spending non-finite or extreme, over "
                                f"${SPENDING_CEILING:,.0f} per episode", n=len(cases), cases="episodes",
                         specifics=f"{k:,d} episode{'' if k == 1 else 's'}, e.g. index stay {examples}",
                         advice="correct or remove the payments of the stays in those episodes and run again")


def _expected_spending(cases: pd.DataFrame, *, measure: str = "value", facilities: str = "the episodes given"):
    """Expected spending per episode from a gamma GLM (log link) fitted on all of them, their crude mean, and
    the model (its variance goes into the interval). Episodes with no spending at all (payments of 0) are
    predicted but not fitted: a gamma model needs spending above 0."""
    _check_spending(cases, measure=measure, facilities=facilities, model="gamma spending model", action="fitted")
    y = cases["value"].to_numpy(float)
    positive = y > 0
    usable = [c for c in RISK_COVARIATES if cases.loc[positive, c].nunique() > 1]
    if not usable or positive.sum() <= len(usable) + 1:
        return np.full(len(cases), y.mean()), float(y.mean()), None
    model = expected_spending(cases, outcome="value", covariates=usable, fit_mask=positive, measure=measure,
                              facilities=facilities)
    return model.expected.to_numpy(float), float(y.mean()), model


def _risk_fit(metric: Metric, cases: pd.DataFrame, facilities: str):
    """The metric's risk model on ``cases`` (``(expected, national, model)``), or the :class:`ModelError` that
    stopped it, announced once as a :class:`carequal.errors.ModelWarning` (the message may quote up to 5 keys:
    for the operator, not for a packet)."""
    try:
        if metric.spec.unit == "dollars":
            return _expected_spending(cases, measure=metric.id, facilities=facilities)
        return _expected_rates(cases, measure=metric.id, facilities=facilities)
    except ModelError as exc:
        warnings.warn(f"{exc}; the metric is shown as {NOT_COMPUTED}", ModelWarning, stacklevel=3)
        return exc


def _spending_summaries(cases: pd.DataFrame, keys: list[str], level: float, model,
                        design: pd.DataFrame | None = None) -> pd.DataFrame:
    """Risk-adjusted spending per group: :func:`carequal.cost.spending_ratio` times the national mean.
    ``design``: the model's design matrix of the cases and others, by the cases' index (built once per model)."""
    cols = [*keys, "n", "expected", "ratio", "value", "lower", "upper", "method", "events"]
    if cases.empty:
        return pd.DataFrame(columns=cols)
    out = spending_ratio(cases, by=keys, observed="value", expected="expected", level=level, model=model,
                         design=None if design is None else design.loc[cases.index].to_numpy(dtype=float))
    national = out["national_rate"].to_numpy(float)
    out["value"] = out["ratio"] * national
    out["lower"], out["upper"] = out["lower"] * national, out["upper"] * national
    out["method"] = "O/E × national mean (" + out["method"].str.removeprefix("O/E; ") + ")"
    out["events"] = np.nan
    return out[cols]


def evaluate_agreement(agreement: Agreement, tables: dict[str, pd.DataFrame], *, start=None, end=None,
                       level: float = 0.95, cases: pd.DataFrame | None = None, rules=None,
                       review_period: str | None = None, periods: list[tuple] | None = None,
                       views: dict[str, dict] | None = None) -> pd.DataFrame:
    """Each partner's agreed metrics against their targets, per review period.

    Parameters
    ----------
    agreement : Agreement
    tables : dict of DataFrame
        Validated contract tables of **every** market (risk models and national rates use them all).
    start, end : date-like, optional
        Evaluation span by index discharge date (default: all index stays); whole review periods are formed
        from it.
    level : float
        Level of the intervals.
    cases : DataFrame, optional
        :func:`agreement_cases` output, if already computed.
    review_period : {"month", "quarter", "year"}, optional
        Another cadence than the agreement's (e.g. years, for a partner too small to show by quarter).
    periods : list of (start, end), optional
        Explicit, non-overlapping periods instead of calendar ones (e.g. the reporting period and the one
        before it); cases outside them are left out.
    views : dict, optional
        Several sets of periods evaluated at once (a packet's views): name → ``{"review_period": ...}`` or
        ``{"periods": [...]}`` (either may be empty: the agreement's cadence). The cases are selected and every
        risk model fitted once, for all views; the result has a ``view`` column, the views' rows in the dict's
        order, each view's rows as a call with its own ``review_period`` or ``periods`` would give them.

    Returns
    -------
    DataFrame
        One row per metric × partner × review period (every period of the span, ``n = 0`` kept):
        ``metric``, ``metric_label``, ``measure``, ``facility_id``, ``name``, ``setting``, ``market``,
        ``start`` (partnership), ``period``, ``period_end``, ``phase`` (before / starting / after),
        ``n``, ``excluded`` (the partner's episodes left out of the metric: see ``agreement_cases``; 0 for
        measures that leave none out), ``events``, ``expected``, ``ratio``, ``value``, ``lower``, ``upper``,
        ``level``, ``method``, ``national_rate`` (risk-adjusted metrics: the national rate, or for spending the
        national mean per episode), ``benchmark``, ``benchmark_n``, ``benchmark_events``, ``target``,
        ``target_basis``, ``better``, ``status``, ``status_reason``, ``previous_value``, ``change`` (and
        ``view`` with ``views``).
    """
    fac = tables["facilities"]
    check_agreement(agreement, fac)
    partners = partner_table(agreement, fac)
    if cases is None:
        cases = agreement_cases(tables, agreement, rules=rules)
    cases = cases.copy()
    if "excluded" not in cases.columns:  # cases made before the column existed: every row is a case
        cases["excluded"] = pd.array([pd.NA] * len(cases), dtype="string")
    when = pd.to_datetime(cases["discharge_date"])
    lo = pd.Timestamp(start) if start is not None else when.min()
    hi = pd.Timestamp(end) if end is not None else when.max()
    cases = cases[(when <= hi)]  # risk models: every case up to the end, whatever the periods shown
    if views is not None and (review_period is not None or periods is not None):
        raise ParameterError("evaluate_agreement: give views, or review_period / periods, not both")
    schemes = views if views is not None else {"": {"review_period": review_period, "periods": periods}}
    grids: dict[str, pd.DataFrame] = {}
    columns: dict[str, str] = {}
    day = pd.to_datetime(cases["discharge_date"])
    for k, (name, scheme) in enumerate(schemes.items()):
        unknown = set(scheme) - {"review_period", "periods"}
        if unknown:
            raise ParameterError(f"evaluate_agreement: view {name!r} has {', '.join(sorted(unknown))}; a view takes "
                                 "review_period or periods")
        columns[name] = f"_period_{k}"
        cases[columns[name]], grids[name] = _assign_periods(
            day, lo, hi, scheme.get("review_period") or agreement.review_period, scheme.get("periods"))
    setting = fac.set_index("facility_id")["setting"]
    market = fac.set_index("facility_id")["market"]
    partner_ids = set(partners["facility_id"])
    # one risk model per metric × role (spending: × setting), shared by partners and views; every partner of a
    # model is evaluated at once, per view (its own cases grouped by partner, the benchmark by market and setting)
    fits: dict[tuple, tuple | ModelError] = {}
    out: dict[str, list[pd.DataFrame]] = {name: [] for name in schemes}
    for m in agreement.metrics:
        spec = m.spec
        metric_cases = cases[(cases["metric"] == m.id).to_numpy()]
        eligible = partners[partners["setting"].isin(spec.settings).to_numpy()].reset_index(drop=True)
        if eligible.empty:
            continue
        dollars = spec.unit == "dollars"
        role = np.where(eligible["setting"] == "acute", "hospital", "post_acute")
        # rates: one model per metric and role (the national model's, or a variant's), every setting of a role
        # together as in the national post-acute model; spending: a gamma model per setting
        own_setting = m.risk_adjusted & dollars & (role == "post_acute")
        eligible["_key"] = list(zip(role, np.where(own_setting, eligible["setting"], ""), strict=True))
        groups = []
        for key in dict.fromkeys(eligible["_key"]):
            group = eligible[(eligible["_key"] == key).to_numpy()]
            data = metric_cases[(metric_cases["role"] == key[0]).to_numpy()]
            # episodes left out (spending: incomplete follow-up, missing payment) are counted, not judged
            left_out = data["excluded"].notna().to_numpy()
            mine_out = data[left_out & data["unit_id"].isin(group["facility_id"]).to_numpy()]
            data = data[~left_out]
            national, model, design, failure = np.nan, None, None, None
            if m.risk_adjusted:
                if key[1]:
                    data = data[(data["unit_id"].map(setting) == key[1]).to_numpy()]
                fit_key = (m.id, *key)
                if fit_key not in fits:
                    kind = _KINDS["acute"] if key[0] == "hospital" else (_KINDS[key[1]] if key[1] else
                                                                          "post-acute providers")
                    fitted = _risk_fit(m, data, describe_facilities(int(data["unit_id"].nunique()), kind,
                                                                    "all markets"))
                    if not isinstance(fitted, ModelError):
                        fitted = (pd.Series(fitted[0], index=data.index), *fitted[1:])
                    fits[fit_key] = fitted
                if isinstance(fits[fit_key], ModelError):
                    failure = fits[fit_key]
                else:
                    expected, national, model = fits[fit_key]
                    data = data.assign(expected=expected.reindex(data.index).to_numpy(), national_rate=national)
                    if dollars and model is not None:  # spending's interval needs the design: built once
                        design = pd.DataFrame(model.design(data), index=data.index)
            unit = data["unit_id"]
            mine_all = data[unit.isin(group["facility_id"]).to_numpy()]
            peers_all = data[~unit.isin(partner_ids).to_numpy()].assign(market=unit.map(market),
                                                                          setting=unit.map(setting))
            peers_all = peers_all[_pairs_in(peers_all, group)]
            failed = {fid: failure for fid in group["facility_id"]} if failure is not None else {}
            groups.append((group, mine_all, peers_all, mine_out, national, (model, design), failed))
        for name, column in columns.items():
            parts = []
            for group, mine_all, peers_all, mine_out, national, fitted, failed in groups:
                if dollars and not m.risk_adjusted:  # a crude mean is as spoilt by a wrong payment
                    failed = {**failed, **_spending_checks(m, group, mine_all, peers_all, column)}
                parts.append(_evaluate_view(m, group, mine_all, peers_all, mine_out, column, grids[name],
                                            national, fitted, failed, level=level,
                                            review_period=agreement.review_period))
            order = {fid: k for k, fid in enumerate(eligible["facility_id"])}
            rows = pd.concat(parts, ignore_index=True)
            rows = rows.iloc[np.argsort(rows["facility_id"].map(order).to_numpy(), kind="stable")]
            out[name].append(rows.reset_index(drop=True) if views is None else rows.assign(view=name))
    cols = ["metric", "metric_label", "measure", "facility_id", "name", "setting", "market", "start", "period",
            "period_end", "phase", "n", "excluded", "events", "expected", "ratio", "value", "lower", "upper",
            "level", "method", "national_rate", "benchmark", "benchmark_n", "benchmark_events", "target",
            "target_basis", "better", "status", "status_reason", "previous_value", "change"]
    results = []
    for parts in out.values():
        result = pd.concat(parts, ignore_index=True)
        for c in cols:
            if c not in result.columns:
                result[c] = np.nan
        results.append(result[cols] if views is None else result[[*cols, "view"]])
    return results[0] if views is None else pd.concat(results, ignore_index=True)


def _assign_periods(day: pd.Series, lo: pd.Timestamp, hi: pd.Timestamp, freq: str, periods: list[tuple] | None
                    ) -> tuple[np.ndarray, pd.DataFrame]:
    """Each case's review period (its first day; missing outside the periods) and the grid of periods: explicit
    ``periods``, or the calendar periods of ``freq`` from ``lo`` to ``hi``."""
    if periods is not None:
        bounds = sorted((pd.Timestamp(a), pd.Timestamp(b)) for a, b in periods)
        grid = pd.DataFrame({"period": [a for a, _ in bounds], "period_end": [b for _, b in bounds]})
        assigned = pd.Series(pd.NaT, index=day.index, dtype="datetime64[ns]")
        for a, b in bounds:
            assigned[(day >= a) & (day <= b)] = a
        return assigned.to_numpy(), grid
    if freq not in ("month", "quarter", "year"):
        raise ParameterError(f"review_period must be 'month', 'quarter' or 'year', not {freq!r}")
    code = {"month": "M", "quarter": "Q", "year": "Y"}[freq]
    period = day.dt.to_period(code).dt.start_time
    period[day < lo] = pd.NaT
    span = pd.period_range(lo, hi, freq=code)
    return period.to_numpy(), pd.DataFrame({"period": span.start_time, "period_end": span.end_time.normalize()})


def _pairs_in(cases: pd.DataFrame, partners: pd.DataFrame) -> np.ndarray:
    """Which cases (with their unit's ``market`` and ``setting``) share a market and setting with a partner."""
    market, setting = cases["market"].to_numpy(object), cases["setting"].to_numpy(object)
    inside = np.zeros(len(cases), bool)
    for pair in dict.fromkeys(zip(partners["market"], partners["setting"], strict=True)):
        inside |= (market == pair[0]) & (setting == pair[1])
    return inside


def _spending_checks(m: Metric, group: pd.DataFrame, mine_all: pd.DataFrame, peers_all: pd.DataFrame,
                     column: str) -> dict[str, ModelError]:
    """A crude spending metric's partners whose cases or benchmark cases in a view's periods hold an unusable
    payment (:func:`_check_spending`), with the error, announced once per partner and view as a
    :class:`carequal.errors.ModelWarning`."""
    failed = {}
    mine = mine_all[mine_all[column].notna().to_numpy()]
    peers = peers_all[peers_all[column].notna().to_numpy()]
    if not (unusable_spending(mine["value"])[0].any() or unusable_spending(peers["value"])[0].any()):
        return failed
    for _, p in group.iterrows():
        both = pd.concat([mine[(mine["unit_id"] == p["facility_id"]).to_numpy()],
                          peers[((peers["market"] == p["market"]) & (peers["setting"] == p["setting"])).to_numpy()]])
        try:
            _check_spending(both, measure=m.id, model="mean spending", action="computed",
                            facilities=describe_facilities(int(both["unit_id"].nunique()), _KINDS[p["setting"]],
                                                           p["market"]))
        except ModelError as exc:
            warnings.warn(f"{exc}; the metric is shown as {NOT_COMPUTED}", ModelWarning, stacklevel=3)
            failed[p["facility_id"]] = exc
    return failed


def _evaluate_view(m: Metric, group: pd.DataFrame, mine_all: pd.DataFrame, peers_all: pd.DataFrame,
                   mine_out: pd.DataFrame, column: str, grid_periods: pd.DataFrame, national, fitted: tuple,
                   failed: dict[str, ModelError], *, level: float, review_period: str) -> pd.DataFrame:
    """One metric × the partners of ``group`` (rows of :func:`partner_table` judged by one risk model) in one view:
    each partner's periods' values, benchmark, target and status (see :func:`evaluate_agreement`), partner by
    partner in ``group``'s order. ``column`` holds the cases' periods of the view; ``mine_all`` are the partners'
    cases (``unit_id``), ``peers_all`` the benchmark's (with the unit's ``market`` and ``setting``); ``failed``
    the partners whose metric could not be computed, with the error; ``fitted`` the risk model (or None) and, for
    spending, its design matrix of the cases (by their index)."""
    mine = mine_all[mine_all[column].notna().to_numpy()].rename(columns={column: "period"})
    peers = peers_all[peers_all[column].notna().to_numpy()].rename(columns={column: "period"})
    mine_out = mine_out[mine_out[column].notna().to_numpy()]
    parts = []
    for _, p in group[group["facility_id"].isin(failed).to_numpy()].iterrows():
        fid = p["facility_id"]
        parts.append(_not_computed(
            m, p, failed[fid], grid_periods, mine[(mine["unit_id"] == fid).to_numpy()],
            peers[((peers["market"] == p["market"]) & (peers["setting"] == p["setting"])).to_numpy()],
            mine_out[(mine_out["unit_id"] == fid).to_numpy()].groupby(column).size(), level=level,
            review_period=review_period))
    ok = group[~group["facility_id"].isin(failed).to_numpy()]
    if len(ok):
        parts.append(_evaluated(m, ok, mine[mine["unit_id"].isin(ok["facility_id"]).to_numpy()],
                                peers[_pairs_in(peers, ok)], mine_out, column, grid_periods, national, fitted,
                                level=level, review_period=review_period))
    rows = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    order = {fid: k for k, fid in enumerate(group["facility_id"])}
    return rows.iloc[np.argsort(rows["facility_id"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)


def _evaluated(m: Metric, partners: pd.DataFrame, mine: pd.DataFrame, peers: pd.DataFrame, mine_out: pd.DataFrame,
               column: str, grid_periods: pd.DataFrame, national, fitted: tuple, *, level: float,
               review_period: str) -> pd.DataFrame:
    """:func:`_evaluate_view` for the partners whose metric could be computed: the grid of partners × periods,
    their own summaries (by partner and period) and the benchmark's (by market, setting and period)."""
    spec = m.spec
    keys = ["period", "national_rate"] if m.risk_adjusted else ["period"]
    own_keys, bench_keys = ["unit_id", *keys], ["market", "setting", *keys]
    if m.risk_adjusted and spec.unit == "dollars":
        model, design = fitted
        own = _spending_summaries(mine, own_keys, level, model, design)
        bench = _spending_summaries(peers, bench_keys, level, model, design)
    else:
        own = _summaries(mine, own_keys, spec.kind, level)
        bench = _summaries(peers, bench_keys, spec.kind, level)
    # the grid: each partner's periods, partner by partner; each row's own summary and the benchmark of its
    # market, setting and period looked up by position (missing where there is none, as a left join)
    who = ["facility_id", "name", "setting", "market", "start"]
    when = grid_periods["period"].dtype  # the grid's resolution (a view's explicit periods are in ns)
    k, p = len(partners), len(grid_periods)
    rows = pd.concat([partners[who].iloc[np.repeat(np.arange(k), p)].reset_index(drop=True),
                      grid_periods.iloc[np.tile(np.arange(p), k)].reset_index(drop=True)], axis=1)
    cells = pd.Index(partners["facility_id"]), pd.Index(grid_periods["period"])
    own_at = np.full(len(rows), -1)
    at = _cells(own["unit_id"], own["period"].astype(when), *cells)
    own_at[at[at >= 0]] = np.flatnonzero(at >= 0)
    bench_row = {key: i for i, key in enumerate(zip(bench["market"], bench["setting"],
                                                    _ticks(bench["period"].astype(when)), strict=True))}
    bench_at = np.array([bench_row.get(key, -1) for key in zip(rows["market"], rows["setting"],
                                                                _ticks(rows["period"]), strict=True)], dtype=int)
    shown = {"n": "benchmark_n", "events": "benchmark_events", "value": "benchmark"}
    rows = pd.concat([rows, own.drop(columns=own_keys).reset_index(drop=True).reindex(own_at).reset_index(drop=True),
                      bench[list(shown)].rename(columns=shown).reset_index(drop=True).reindex(bench_at).reset_index(
                          drop=True)], axis=1)
    rows["n"] = rows["n"].fillna(0).astype(int)
    left_out = _cells(mine_out["unit_id"], mine_out[column].astype(when), *cells)
    rows["excluded"] = np.bincount(left_out[left_out >= 0], minlength=len(rows))
    rows["benchmark_n"] = rows["benchmark_n"].fillna(0).astype(int)
    rows["events"] = np.where(rows["n"] == 0, 0.0, rows["events"]) if spec.kind == "rate" else np.nan
    if spec.kind == "count":  # a volume has no interval and no pooled benchmark
        rows["value"] = rows["lower"] = rows["upper"] = rows["n"].astype(float)
        rows["method"], rows["benchmark"] = "count", np.nan
    elif spec.kind == "rate":  # a standardised rate's interval can pass 1: a rate cannot
        rows["upper"] = np.minimum(rows["upper"], 1.0)
    target, basis = _targets(m, rows["benchmark"].to_numpy(float))
    if spec.kind == "count":  # a volume is agreed per review period: longer periods need more cases
        scale = review_periods_in(rows["period"], rows["period_end"], review_period)
        target = target * scale
        if not np.allclose(scale, 1.0):
            basis = f"{basis}, {m.target.value:g} per {review_period} × the period's length"
    rows["target"], rows["target_basis"] = target, basis
    status, reason = judge(rows["value"], rows["lower"], rows["upper"], target, better=m.better,
                           n=rows["n"], min_cases=0 if spec.kind == "count" else m.min_cases)
    rows["status"], rows["status_reason"] = status, reason
    rows["previous_value"] = rows.groupby("facility_id", sort=False)["value"].shift(1)
    rows["change"] = rows["value"] - rows["previous_value"]
    begins = rows["start"]
    rows["phase"] = np.where(rows["period_end"] < begins, "before",
                             np.where(rows["period"] >= begins, "after", "starting"))
    return rows.assign(metric=m.id, metric_label=m.title, measure=m.measure, better=m.better, level=level,
                       national_rate=national)


def _cells(facility: pd.Series, period: pd.Series, facilities: pd.Index, periods: pd.Index) -> np.ndarray:
    """The row of each (``facility``, ``period``) in the grid of ``facilities`` × ``periods`` (facility by
    facility, each with every period), -1 where the facility or the period is not in the grid."""
    f, t = facilities.get_indexer(facility), periods.get_indexer(period)
    return np.where((f >= 0) & (t >= 0), f * len(periods) + t, -1)


def _ticks(when: pd.Series) -> np.ndarray:
    """Dates as integers in their resolution (to compare or hash them quickly; only dates of one resolution)."""
    return when.to_numpy().view("i8")


def _not_computed(m: Metric, p: pd.Series, failure: ModelError, grid_periods: pd.DataFrame, mine: pd.DataFrame,
                  peers: pd.DataFrame, excluded: pd.Series, *, level: float, review_period: str) -> pd.DataFrame:
    """The rows of a metric that could not be computed: its cases counted, no value, no interval, no market
    benchmark (a target that is an agreed or national value stays), status :data:`NOT_COMPUTED` and the
    failure's shareable reason (:attr:`carequal.errors.ModelError.reason`: no keys, no patient counts)."""
    rows = grid_periods.merge(mine.groupby("period").size().rename("n").reset_index(), on="period", how="left")
    rows = rows.merge(peers.groupby("period").size().rename("benchmark_n").reset_index(), on="period", how="left")
    rows["n"] = rows["n"].fillna(0).astype(int)
    rows["excluded"] = rows["period"].map(excluded).fillna(0).astype(int)
    rows["benchmark_n"] = rows["benchmark_n"].fillna(0).astype(int)
    for c in ("events", "expected", "ratio", "value", "lower", "upper", "benchmark", "benchmark_events",
              "previous_value", "change"):
        rows[c] = np.nan
    target, basis = _targets(m, rows["benchmark"].to_numpy(float))
    if m.spec.kind == "count":
        target = target * review_periods_in(rows["period"], rows["period_end"], review_period)
    rows["target"], rows["target_basis"] = target, basis
    rows["method"] = NOT_COMPUTED
    rows["status"], rows["status_reason"] = NOT_COMPUTED, f"{NOT_COMPUTED}: {failure.reason}"
    begins = p["start"]
    rows["phase"] = np.where(rows["period_end"] < begins, "before",
                             np.where(rows["period"] >= begins, "after", "starting"))
    return rows.assign(metric=m.id, metric_label=m.title, measure=m.measure, facility_id=p["facility_id"],
                       name=p["name"], setting=p["setting"], market=p["market"], start=begins, better=m.better,
                       level=level, national_rate=np.nan)


def _targets(metric: Metric, benchmark: np.ndarray) -> tuple[np.ndarray, str]:
    t = metric.target
    if t.kind == "absolute":
        return np.full(len(benchmark), float(t.value)), "agreed value"
    change = f" {'+' if t.relative_change >= 0 else '−'}{abs(100 * t.relative_change):g}%" \
        if t.relative_change else ""
    if t.kind == "market":
        return benchmark * (1 + t.relative_change), f"market non-partners{change}"
    source = f" ({t.source})" if t.source else ""
    return np.full(len(benchmark), float(t.value) * (1 + t.relative_change)), f"national value{source}{change}"
