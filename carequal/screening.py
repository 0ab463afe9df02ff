"""Candidate partner screening: which post-acute providers that are not yet partners would make good ones.

For a hospital, or all the hospitals of a market, every skilled nursing facility, inpatient rehabilitation
facility, long-term care hospital and home health agency of the market that is not a partner is screened on
five criteria, each against a stated benchmark, each with a plain verdict:

* **volume** — the hospital's (or the market's hospitals') index discharges in the period whose first
  post-acute provider it was. Not judged: it breaks ties, since an existing referral stream makes a partnership
  easier to start.
* **30-day readmission** — of every patient referred to the provider in the period, from any hospital (the
  national reference rows of measure ``pac_readmission``), against the national expectation for the same
  patients: "better than benchmark" when the interval of O/E lies wholly below 1, "worse" when wholly above.
* **discharge to community** — CMS DTC-PAC success of the provider's stays discharged in the period
  (:func:`carequal.measures.discharge_to_community`), against the rate expected for patients of the same
  setting, age band, sex and dual status (indirect standardisation): "better" when O/E lies wholly above 1.
* **length of stay** — median and mean days of the same stays against the setting's median ("shorter" or
  "longer" by a sign test). Described, not scored.
* **nurse staffing** — ``facilities.nurse_hours_ppd`` against the median of the market's providers of the
  same setting: "better" or "worse" when more than ``staffing_margin`` (10%) away.

Every judged criterion reads "too few cases to judge" below ``min_cases`` (25, as CMS HRRP and SNF VBP);
staffing reads "not reported" when the provider has no figure (home health has none) and "no benchmark" when
fewer than two providers of its setting in the market report one.

The ranking rule (:func:`rank_candidates`), with no weights to tune:

1. score = +1 for each of readmission, discharge to community and nurse staffing that is better than its
   benchmark, −1 for each that is worse, 0 otherwise (length of stay is context, not quality: a short stay can
   be efficient care or a premature discharge; volume is not quality either);
2. providers judged on at least one outcome (readmission or discharge to community with ``min_cases`` or
   more) come first, the rest after them ("too few cases to judge" is not a good score of 0);
3. within each group: higher score first, then more discharges from the hospital(s), then name.

Who is a partner. A provider is a partner when ``is_partner`` is true and its ``partner_since`` is on or before
the end of the period, or missing (a partner of unknown start, as in
:func:`carequal.cohorts.post_acute_episodes`). A provider whose partnership starts after the period is still a
candidate for that period (its ``partner_since`` is kept in the result, so a reader can see it is signed).

Sharing. :func:`candidate_shortlist` suppresses the counts 1–10 of each criterion with
:func:`carequal.disclosure.suppress_counts` (and every ratio, rate, interval and verdict they determine, as
:func:`carequal.report.facility_scorecard` does) and re-ranks on what it shows, so the shared rank never rests
on a hidden value. Volumes are suppressed within setting × partner flag, the groups whose totals the market
report shows (:func:`carequal.report.destination_table`); values that another published table hides (a
hospital-level flow, a scorecard row) can be hidden too with ``hide``.

In a market report (:func:`candidate_table`, :func:`candidate_display`, :func:`market_candidate_findings`) the
reference rows are those of the market's facilities (every referral to its providers, from any market) and the
tables are the market's residents', so discharge to community, length of stay and their benchmarks cover
residents' stays.

Why one module of about 900 lines: the criteria, the ranking, the shortlist's suppression and the report's
section share the verdicts, the shortlist's columns and the rule that the rank never rests on a hidden value;
split, each part would import the others' constants and a reader would follow one idea across three files.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from carequal.cohorts import age_band, age_in_years
from carequal.compare import indirect_standardisation
from carequal.disclosure import REASONS, suppress_counts
from carequal.errors import DisclosureWarning, ParameterError
from carequal.intervals import wilson
from carequal.measures import discharge_to_community, length_of_stay
from carequal.periods import reporting_period
from carequal.presentation import COUNT_LABELS, fmt_ci, fmt_pct, shown_text

if TYPE_CHECKING:  # the market report's inputs, for annotations only (carequal.report imports this module)
    from carequal.report import MarketReport

__all__ = ["CANDIDATE_SETTINGS", "HIDDEN", "NOT_JUDGED", "SCORED", "SHORTLIST_COLUMNS", "VERDICTS",
           "candidate_display", "candidate_findings", "candidate_partners", "candidate_shortlist", "candidate_table",
           "market_candidate_findings", "partner_status", "rank_candidates", "referral_volume", "staffing_benchmark"]

CANDIDATE_SETTINGS: tuple[str, ...] = ("snf", "irf", "ltch", "hha")
"""Settings screened: skilled nursing, inpatient rehabilitation, long-term care hospital, home health."""

BETTER, WORSE, SAME = "better than benchmark", "worse than benchmark", "no different"
TOO_FEW = "too few cases to judge"
SHORTER, LONGER = "shorter than benchmark", "longer than benchmark"
NOT_REPORTED, NO_BENCHMARK = "not reported", "no benchmark"
HIDDEN = "not shown (small numbers)"
"""The verdict of a criterion whose numbers the shortlist suppresses."""

VERDICTS: tuple[str, ...] = (BETTER, SAME, WORSE, TOO_FEW, SHORTER, LONGER, NOT_REPORTED, NO_BENCHMARK, HIDDEN)
"""Every verdict a criterion can carry."""

SCORED: tuple[str, ...] = ("readmit_label", "dtc_label", "staffing_label")
"""The criteria that count in the score (+1 better, −1 worse)."""

NOT_JUDGED: tuple[str, ...] = (TOO_FEW, NOT_REPORTED, NO_BENCHMARK, HIDDEN)
"""Verdicts that say the criterion could not be judged (or may not be shown)."""

_POINTS = {BETTER: 1, WORSE: -1}

DTC_AGE_BANDS = pd.DataFrame({"age_lo": [0, 65, 75, 85], "age_band": ["<65", "65-74", "75-84", "85+"]})
"""Age bands of the discharge-to-community standardisation (age on the post-acute admission day)."""

_ROW_COLUMNS = ("measure", "stay_id", "unit_id", "discharge_date", "observed", "expected")


# ------------------------------------------------------------------------------------------------- checks


def _check_columns(frame: pd.DataFrame, columns: Iterable[str], what: str, hint: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ParameterError(f"{what}: column(s) {', '.join(missing)} missing (it has "
                             f"{', '.join(map(str, frame.columns))}); {hint}")


def _period(period) -> tuple[pd.Timestamp, pd.Timestamp]:
    try:
        start, end = period
    except (TypeError, ValueError):
        raise ParameterError(f"period must be a pair (start, end) of dates, not {period!r}") from None
    return reporting_period(start, end)


def _in(dates: pd.Series, period: tuple[pd.Timestamp, pd.Timestamp]) -> pd.Series:
    when = pd.to_datetime(dates)
    return (when >= period[0]) & (when <= period[1])


def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < minimum:
        raise ParameterError(f"{name} must be a whole number ≥ {minimum}, not {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------ criteria


def partner_status(facilities: pd.DataFrame, *, period_end) -> pd.Series:
    """Whether each facility is a partner at the end of the period (one bool per row, the frame's index).

    A facility is a partner when ``is_partner`` is true and ``partner_since`` is on or before ``period_end``
    or missing (a partner whose start is unknown). A missing ``is_partner`` is not a partnership.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["S1", "S2", "S3", "S4"], "is_partner": [True, True, True, False],
    ...                     "partner_since": pd.to_datetime(["2023-05-01", "2025-02-01", None, None])})
    >>> partner_status(fac, period_end="2024-12-31").tolist()
    [True, False, True, False]
    """
    _check_columns(facilities, ["is_partner"], "facilities", "the contract's facilities table has it")
    flag = facilities["is_partner"].fillna(False).astype(bool)
    if "partner_since" not in facilities.columns:
        return flag.rename("partner")
    since = pd.to_datetime(facilities["partner_since"])
    return (flag & (since.isna() | (since <= pd.Timestamp(period_end)))).rename("partner")


def referral_volume(rows: pd.DataFrame, stays: pd.DataFrame, *, hospitals: Iterable[str], period,
                    providers: Iterable[str] | None = None) -> pd.DataFrame:
    """Index discharges of ``hospitals`` in the period to each post-acute provider (the first one after discharge).

    Parameters
    ----------
    rows : DataFrame
        National reference rows (:class:`carequal.national.Reference`): the ``pac_readmission`` rows are the
        index stays followed by post-acute care, ``unit_id`` the first post-acute provider.
    stays : DataFrame
        Contract stays: the discharging hospital of an index stay is its ``facility_id`` (as in
        :func:`carequal.report.flow_table`; an index stay not among ``stays`` is not counted).
    hospitals : list of str
        The discharging hospitals counted.
    period : (start, end)
        Inclusive, by hospital discharge date.
    providers : list of str, optional
        Providers that must appear (with 0 when no discharge went to them); default: those with discharges.

    Returns
    -------
    DataFrame
        ``facility_id`` (the provider), ``discharges``, sorted by ``facility_id``.

    Examples
    --------
    >>> rows = pd.DataFrame({"measure": "pac_readmission", "stay_id": ["a", "b", "c"],
    ...                      "unit_id": ["S1", "S1", "S2"], "discharge_date": pd.to_datetime(["2024-03-01"] * 3)})
    >>> stays = pd.DataFrame({"stay_id": ["a", "b", "c"], "facility_id": ["H1", "H2", "H1"]})
    >>> referral_volume(rows, stays, hospitals=["H1"], period=("2024-01-01", "2024-12-31"),
    ...                 providers=["S1", "S2", "S3"])
      facility_id  discharges
    0          S1           1
    1          S2           1
    2          S3           0
    """
    _check_columns(rows, ["measure", "stay_id", "unit_id", "discharge_date"], "rows",
                   "pass the national reference rows (carequal.national)")
    _check_columns(stays, ["stay_id", "facility_id"], "stays", "pass the contract's stays table")
    period = _period(period)
    pac = rows[(rows["measure"] == "pac_readmission").to_numpy() & _in(rows["discharge_date"], period).to_numpy()]
    _check_unique(pac, "stay_id", "rows (pac_readmission, in the period)")
    hospital = pac["stay_id"].astype("str").map(stays.drop_duplicates("stay_id").set_index("stay_id")["facility_id"])
    sent = pac.loc[hospital.isin(list(hospitals)).to_numpy(), "unit_id"].astype("str")
    counts = sent.value_counts().rename("discharges")
    ids = sorted(set(counts.index) if providers is None else {str(p) for p in providers})
    out = pd.DataFrame({"facility_id": pd.array(ids, dtype="str")})
    out["discharges"] = out["facility_id"].map(counts).fillna(0).astype("int64").to_numpy()
    return out


def _check_unique(frame: pd.DataFrame, column: str, what: str) -> None:
    dup = frame[column].duplicated(keep=False)
    if dup.any():
        examples = ", ".join(map(str, frame.loc[dup, column].drop_duplicates().head(5)))
        raise ParameterError(f"{what}: {int(dup.sum())} rows repeat a {column} (rule: one row per index stay and "
                             f"measure); examples {column} = {examples}. Pass the reference rows as built, once.")


def staffing_benchmark(facilities: pd.DataFrame, *, market: str, hours: str = "nurse_hours_ppd",
                       margin: float = 0.10, min_peers: int = 2) -> pd.DataFrame:
    """Each post-acute provider's nurse staffing against the median of the market's providers of its setting.

    Parameters
    ----------
    facilities : DataFrame
        Contract facilities; ``hours`` is optional in the contract (every provider is then "not reported").
    market : str
    hours : str
        Nurse staffing hours per patient day.
    margin : float
        Relative distance from the benchmark within which staffing is "no different" (0.10: ±10%).
    min_peers : int
        Providers of the setting with a figure needed for a benchmark (the provider itself included).

    Returns
    -------
    DataFrame
        One row per post-acute provider of the market: ``facility_id``, ``nurse_hours_ppd``,
        ``staffing_benchmark`` (the setting's median), ``staffing_peers`` (providers with a figure),
        ``staffing_label``: "better than benchmark" above ``benchmark × (1 + margin)``, "worse than
        benchmark" below ``benchmark × (1 − margin)``, "no different", "not reported" or "no benchmark".

    Notes
    -----
    A reported staffing level has no sampling error to test, so the verdict is a fixed margin around the
    median. Every provider of the setting counts in the median, partners included: the benchmark is the
    market as it is.

    Examples
    --------
    >>> fac = pd.DataFrame({"facility_id": ["S1", "S2", "S3", "A1"], "setting": ["snf", "snf", "snf", "hha"],
    ...                     "market": "M", "nurse_hours_ppd": [4.0, 3.0, 3.3, None]})
    >>> staffing_benchmark(fac, market="M")
      facility_id  nurse_hours_ppd  staffing_benchmark  staffing_peers         staffing_label
    0          S1              4.0                 3.3               3  better than benchmark
    1          S2              3.0                 3.3               3           no different
    2          S3              3.3                 3.3               3           no different
    3          A1              NaN                 NaN               0           not reported
    """
    _check_columns(facilities, ["facility_id", "setting", "market"], "facilities",
                   "pass the contract's facilities table")
    if not 0 <= margin < 1:
        raise ParameterError(f"margin must be a fraction between 0 and 1 (e.g. 0.10 for ±10%), not {margin!r}")
    min_peers = _whole(min_peers, "min_peers", 1)
    fac = facilities[(facilities["market"] == market).to_numpy()
                     & facilities["setting"].isin(CANDIDATE_SETTINGS).to_numpy()]
    value = (pd.to_numeric(fac[hours], errors="coerce") if hours in fac.columns
             else pd.Series(np.nan, index=fac.index)).astype("float64")
    setting = fac["setting"].astype("str")
    benchmark = value.groupby(setting).transform("median")
    peers = value.notna().groupby(setting).transform("sum").astype("int64")
    label = np.select([value.isna(), peers < min_peers, value > benchmark * (1 + margin),
                       value < benchmark * (1 - margin)], [NOT_REPORTED, NO_BENCHMARK, BETTER, WORSE], default=SAME)
    return pd.DataFrame({"facility_id": fac["facility_id"].astype("str").to_numpy(),
                         "nurse_hours_ppd": value.to_numpy(),
                         "staffing_benchmark": np.where(peers >= min_peers, benchmark, np.nan),
                         "staffing_peers": peers.to_numpy(), "staffing_label": label})


def _interval_label(n: pd.Series, expected: pd.Series, lower: pd.Series, upper: pd.Series, *, min_cases: int,
                    higher_is_better: bool) -> np.ndarray:
    too_few = (n < min_cases).to_numpy() | ~(expected > 0).to_numpy()
    above, below = (lower > 1).to_numpy(), (upper < 1).to_numpy()
    good, bad = (above, below) if higher_is_better else (below, above)
    return np.select([too_few, good, bad], [TOO_FEW, BETTER, WORSE], default=SAME)


def _readmission(rows: pd.DataFrame, providers: list[str], *, period, national_rate: float | None,
                 min_cases: int, level: float) -> pd.DataFrame:
    """Risk-adjusted 30-day readmission of every referral to each provider in the period (any hospital)."""
    pac = rows[(rows["measure"] == "pac_readmission").to_numpy() & _in(rows["discharge_date"], period).to_numpy()]
    if national_rate is None:
        # the rate of the rows given: national when they are the whole reference, as in build_reference
        national_rate = float(pac["observed"].mean()) if len(pac) else np.nan
    mine = pac[pac["unit_id"].astype("str").isin(providers).to_numpy()]
    mine = mine.assign(unit_id=mine["unit_id"].astype("str"))
    std = indirect_standardisation(mine, by="unit_id", level=level).set_index("unit_id")
    n = mine["unit_id"].value_counts()
    out = pd.DataFrame({"facility_id": pd.array(providers, dtype="str")})
    key = out["facility_id"]
    out["readmit_n"] = key.map(n).fillna(0).astype("int64").to_numpy()
    out["readmit_events"] = key.map(std["observed"]).fillna(0).round().astype("int64").to_numpy()
    out["readmit_expected"] = key.map(std["expected"]).fillna(0.0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        n_safe = out["readmit_n"].where(out["readmit_n"] > 0)
        out["readmit_rate"] = out["readmit_events"] / n_safe
        out["readmit_expected_rate"] = out["readmit_expected"] / n_safe
    for col, src in (("readmit_ratio", "ratio"), ("readmit_lower", "lower"), ("readmit_upper", "upper")):
        out[col] = key.map(std[src]).astype("float64").to_numpy()
    out["readmit_rs_rate"] = out["readmit_ratio"] * national_rate
    out["readmit_rs_lower"] = out["readmit_lower"] * national_rate
    out["readmit_rs_upper"] = out["readmit_upper"] * national_rate
    out["readmit_method"] = key.map(std["method"]).astype("object").fillna("").astype("str").to_numpy()
    out["readmit_label"] = _interval_label(out["readmit_n"], out["readmit_expected"], out["readmit_lower"],
                                           out["readmit_upper"], min_cases=min_cases, higher_is_better=False)
    return out


def _community(tables: Mapping[str, pd.DataFrame], providers: list[str], *, period, min_cases: int,
               level: float) -> pd.DataFrame:
    """Discharge to community (crude with Wilson interval; O/E against age–sex–dual strata of the setting) and
    length of stay of each provider's stays discharged in the period."""
    stays, fac, pats = tables["stays"], tables["facilities"], tables["patients"]
    dtc = discharge_to_community(stays, fac, pats, settings=CANDIDATE_SETTINGS)
    by_id = stays.drop_duplicates("stay_id").set_index("stay_id")
    ids = dtc["stay_id"].astype("str")
    dtc = dtc.assign(patient_id=ids.map(by_id["patient_id"]).to_numpy(),
                     admit_date=pd.to_datetime(ids.map(by_id["admit_date"])).to_numpy(),
                     discharge_date=pd.to_datetime(ids.map(by_id["discharge_date"])).to_numpy())
    # the DTC-PAC denominator: stays discharged in the period and not excluded (hospice, AMA, ...)
    dtc = dtc[_in(dtc["discharge_date"], period).to_numpy() & dtc["dtc_excluded"].isna().to_numpy()]
    pat = pats.drop_duplicates("patient_id").set_index("patient_id")
    birth = pd.to_datetime(dtc["patient_id"].map(pat["birth_date"]))
    known = birth.notna().to_numpy()
    age = np.full(len(dtc), -1, dtype=np.int64)
    if known.any():
        age[known] = age_in_years(birth[known].to_numpy(dtype="datetime64[D]"),
                                  dtc.loc[known, "admit_date"].to_numpy(dtype="datetime64[D]"))
    dual = (dtc["patient_id"].map(pat["dual_eligible"]) if "dual_eligible" in pat.columns
            else pd.Series(pd.NA, index=dtc.index))
    sex = dtc["patient_id"].map(pat["sex"]) if "sex" in pat.columns else pd.Series(pd.NA, index=dtc.index)
    band = age_band(pd.Series(age, index=dtc.index), bands=DTC_AGE_BANDS).where(known, "unknown")
    # the standard: every such stay of the setting in ``tables`` (missing sex or dual status form their own
    # strata, so no stay is dropped)
    strata = pd.DataFrame({"setting": dtc["setting"].astype("str"), "band": band.astype("str"),
                           "sex": sex.astype("string").fillna("unknown").astype("str"),
                           "dual": dual.astype("string").fillna("unknown").astype("str")}, index=dtc.index)
    success = dtc["dtc"].astype(float)
    dtc = dtc.assign(expected=success.groupby([strata[c] for c in strata]).transform("mean").to_numpy(),
                     observed=success.to_numpy(), los=length_of_stay(dtc).to_numpy(),
                     facility_id=dtc["facility_id"].astype("str"))
    setting_rate = success.groupby(strata["setting"]).mean()
    setting_los = dtc.groupby(strata["setting"])["los"].median()

    mine = dtc[dtc["facility_id"].isin(providers).to_numpy()]
    std = indirect_standardisation(mine, by="facility_id", level=level).set_index("facility_id")
    grouped = mine.groupby("facility_id")
    out = pd.DataFrame({"facility_id": pd.array(providers, dtype="str")})
    key = out["facility_id"]
    setting = key.map(fac.drop_duplicates("facility_id").set_index("facility_id")["setting"]).astype("str")
    out["dtc_n"] = key.map(grouped.size()).fillna(0).astype("int64").to_numpy()
    out["dtc_events"] = key.map(std["observed"]).fillna(0).round().astype("int64").to_numpy()
    lo, hi = wilson(out["dtc_events"], out["dtc_n"], level=level)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_safe = out["dtc_n"].where(out["dtc_n"] > 0)
        out["dtc_rate"] = out["dtc_events"] / n_safe
        out["dtc_lower"], out["dtc_upper"] = lo, hi
        out["dtc_expected"] = key.map(std["expected"]).fillna(0.0).to_numpy()
        out["dtc_expected_rate"] = out["dtc_expected"] / n_safe
    for col, src in (("dtc_ratio", "ratio"), ("dtc_ratio_lower", "lower"), ("dtc_ratio_upper", "upper")):
        out[col] = key.map(std[src]).astype("float64").to_numpy()
    base = setting.map(setting_rate).astype("float64").to_numpy()
    out["dtc_rs_rate"] = out["dtc_ratio"] * base
    out["dtc_rs_lower"] = out["dtc_ratio_lower"] * base
    out["dtc_rs_upper"] = out["dtc_ratio_upper"] * base
    method = key.map(std["method"]).astype("object").fillna("").astype("str")
    out["dtc_method"] = np.where(out["dtc_n"] > 0, "Wilson; O/E " + method, "")
    out["dtc_label"] = _interval_label(out["dtc_n"], out["dtc_expected"], out["dtc_ratio_lower"],
                                       out["dtc_ratio_upper"], min_cases=min_cases, higher_is_better=True)

    # length of stay: a sign test of the provider's stays against the setting's median (ties dropped)
    out["los_median"] = key.map(grouped["los"].median()).astype("float64").to_numpy()
    out["los_mean"] = key.map(grouped["los"].mean()).astype("float64").to_numpy()
    out["los_benchmark"] = setting.map(setting_los).astype("float64").to_numpy()
    diff = mine["los"].to_numpy() - mine["setting"].astype("str").map(setting_los).to_numpy(dtype=float)
    longer = pd.Series(diff > 0, index=mine.index).groupby(mine["facility_id"]).sum()
    untied = pd.Series(diff != 0, index=mine.index).groupby(mine["facility_id"]).sum()
    k, m = key.map(longer).fillna(0).to_numpy(dtype=float), key.map(untied).fillna(0).to_numpy(dtype=float)
    slo, shi = wilson(k, m, level=level)
    too_few = out["dtc_n"].to_numpy() < min_cases
    out["los_label"] = np.select([too_few, slo > 0.5, shi < 0.5], [TOO_FEW, LONGER, SHORTER], default=SAME)
    return out


# ------------------------------------------------------------------------------------------------- ranking


def rank_candidates(frame: pd.DataFrame, *, scored: tuple[str, ...] = SCORED,
                    outcomes: tuple[str, ...] = ("readmit_label", "dtc_label"), volume: str = "discharges",
                    name: str = "name") -> pd.DataFrame:
    """Score and rank candidates (the rule of the module docstring); a new frame in rank order.

    Parameters
    ----------
    frame : DataFrame
        One row per candidate with verdict columns.
    scored : tuple of str
        Verdict columns that count: +1 "better than benchmark", −1 "worse than benchmark", else 0.
    outcomes : tuple of str
        Verdict columns of the outcomes: a candidate is ``judged`` when one of them is judged (not "too few
        cases to judge", "not reported", "no benchmark" or "not shown (small numbers)").
    volume, name : str
        Tie-breakers: more discharges first (a hidden volume last), then name.

    Returns
    -------
    DataFrame
        ``frame`` with ``score``, ``judged`` and ``rank`` (1 = strongest candidate), sorted by rank.

    Examples
    --------
    >>> t = pd.DataFrame({"name": ["Oak", "Elm", "Ash", "Fir"], "discharges": [40, 90, 15, 200],
    ...     "readmit_label": ["better than benchmark", "no different", "no different", "too few cases to judge"],
    ...     "dtc_label": ["no different", "no different", "no different", "too few cases to judge"],
    ...     "staffing_label": ["no different", "better than benchmark", "no different", "better than benchmark"]})
    >>> rank_candidates(t)[["rank", "name", "score", "judged", "discharges"]]
       rank name  score  judged  discharges
    0     1  Elm      1    True          90
    1     2  Oak      1    True          40
    2     3  Ash      0    True          15
    3     4  Fir      1   False         200
    """
    _check_columns(frame, [*scored, *outcomes, volume, name], "rank_candidates",
                   "pass the verdict, volume and name columns by keyword")
    unknown = sorted({str(v) for c in (*scored, *outcomes) for v in frame[c].unique()} - set(VERDICTS))
    if unknown:
        raise ParameterError(f"rank_candidates: unknown verdict(s) {', '.join(map(repr, unknown))}; verdicts are "
                             f"{', '.join(VERDICTS)}")
    score = sum((frame[c].map(_POINTS).fillna(0).astype("int64") for c in scored),
                start=pd.Series(0, index=frame.index, dtype="int64"))
    judged = np.zeros(len(frame), dtype=bool)
    for c in outcomes:
        judged |= ~frame[c].isin(NOT_JUDGED).to_numpy()
    order = pd.DataFrame({"judged": judged, "score": score.to_numpy(),
                          "volume": pd.to_numeric(frame[volume], errors="coerce").astype("float64").fillna(-1)
                          .to_numpy(),
                          "name": frame[name].astype("str").to_numpy()}, index=frame.index)
    order = order.sort_values(["judged", "score", "volume", "name"], ascending=[False, False, False, True],
                              kind="stable")
    out = frame.assign(score=score.to_numpy(), judged=judged).loc[order.index].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


# --------------------------------------------------------------------------------------------- the screen


def candidate_partners(rows: pd.DataFrame, tables: Mapping[str, pd.DataFrame], *, market: str, period,
                       hospital: str | None = None, min_cases: int = 25, national_rate: float | None = None,
                       staffing_margin: float = 0.10, level: float = 0.95) -> pd.DataFrame:
    """Screen and rank the market's post-acute providers that are not partners (not for sharing as it is).

    Parameters
    ----------
    rows : DataFrame
        National reference rows (``measure``, ``stay_id``, ``unit_id``, ``discharge_date``, ``observed``,
        ``expected``): every ``pac_readmission`` row of the providers judged (a market report's rows are those
        of its facilities, referrals from every market included).
    tables : dict of DataFrame
        Contract tables ``facilities``, ``stays``, ``patients``. Discharge to community and length of stay use
        the stays in ``tables`` (in a market report, the market's residents), and the benchmark is built from
        the same stays.
    market : str
        The market whose post-acute providers are screened.
    period : (start, end)
        Reporting period, inclusive (hospital discharge date for volume and readmission, post-acute discharge
        date for discharge to community and length of stay).
    hospital : str, optional
        Count volume from this acute hospital of the market only; default all the market's acute hospitals.
    min_cases : int
        Fewer cases than this: "too few cases to judge" (25, as CMS HRRP and SNF VBP).
    national_rate : float, optional
        The national 30-day readmission rate after post-acute referral, for the risk-standardised rate
        (``Reference.models``); default the rate of the ``pac_readmission`` rows in the period.
    staffing_margin : float
        See :func:`staffing_benchmark`.
    level : float
        Confidence level of every interval.

    Returns
    -------
    DataFrame
        One row per candidate, in rank order (:func:`rank_candidates`): ``rank``, ``facility_id``, ``name``,
        ``setting``, ``is_partner`` and ``partner_since`` (as in ``facilities``: a candidate with
        ``is_partner`` true starts after the period), ``discharges``; readmission ``readmit_n`` (referrals
        from any hospital), ``readmit_events``, ``readmit_expected``, ``readmit_rate``,
        ``readmit_expected_rate``, ``readmit_ratio`` (O/E) with ``readmit_lower``/``readmit_upper``,
        ``readmit_rs_rate`` (risk-standardised: O/E × national rate) with ``readmit_rs_lower``/``_upper``,
        ``readmit_method``, ``readmit_label``; discharge to community ``dtc_n`` (stays), ``dtc_events``,
        ``dtc_rate`` with Wilson ``dtc_lower``/``dtc_upper``, ``dtc_expected``, ``dtc_expected_rate``,
        ``dtc_ratio`` (O/E) with ``dtc_ratio_lower``/``dtc_ratio_upper``, ``dtc_rs_rate`` (adjusted: O/E ×
        the setting's rate) with ``dtc_rs_lower``/``dtc_rs_upper``, ``dtc_method``, ``dtc_label``; length of
        stay ``los_median``, ``los_mean``, ``los_benchmark``, ``los_label``; staffing ``nurse_hours_ppd``,
        ``staffing_benchmark``, ``staffing_peers``, ``staffing_label``; ``score``, ``judged``, ``level``.
        A provider with no referrals or stays is a row with counts 0, not a missing row.

    Notes
    -----
    Readmission is judged on all the provider's referrals in the period, from any hospital (the provider's
    quality, not this hospital's share of it); volume alone is this hospital's (or market's). O/E limits are
    exact Poisson below 10 events and Byar's from 10 (:func:`carequal.compare.indirect_standardisation`).

    Discharge to community is adjusted for age band, sex and dual eligibility only: the expected count is the
    sum, over the provider's stays, of the success rate of stays of the same setting, age band (<65, 65–74,
    75–84, 85+), sex and dual status among all the stays in ``tables`` discharged in the period. Clinical case
    mix (diagnosis, function) is not removed, so a verdict is a reason to look closer, not a finding; and a
    large provider weighs on its own benchmark, which makes its verdict conservative. The O/E interval treats
    the count of successes as Poisson, which is conservative for a common outcome.

    Length of stay (Medicare day counting) covers the same stays. The benchmark is the median of the
    setting's stays; the verdict is a sign test: the Wilson interval of the share of the provider's stays
    longer than the benchmark (ties dropped) lies wholly above 0.5 ("longer") or below ("shorter").

    Examples
    --------
    Two SNFs of market M: S1 a partner, S2 not; H1 discharged two patients to S2 in 2024.

    >>> fac = pd.DataFrame({"facility_id": ["H1", "S1", "S2"], "name": ["General", "Oak SNF", "Elm SNF"],
    ...     "setting": ["acute", "snf", "snf"], "market": "M", "is_partner": [False, True, False],
    ...     "partner_since": pd.to_datetime([None, "2023-01-01", None]), "nurse_hours_ppd": [None, 4.0, 4.2]})
    >>> pats = pd.DataFrame({"patient_id": ["p", "q"], "birth_date": pd.to_datetime(["1940-01-01", "1945-06-01"]),
    ...     "sex": ["F", "M"], "dual_eligible": [False, True], "death_date": pd.NaT})
    >>> stays = pd.DataFrame({"stay_id": ["h1", "s1", "h2", "s2"], "patient_id": ["p", "p", "q", "q"],
    ...     "facility_id": ["H1", "S2", "H1", "S2"],
    ...     "admit_date": pd.to_datetime(["2024-03-01", "2024-03-05", "2024-05-01", "2024-05-06"]),
    ...     "discharge_date": pd.to_datetime(["2024-03-05", "2024-03-25", "2024-05-06", "2024-05-20"]),
    ...     "discharge_status": ["03", "01", "03", "06"], "principal_dx": ["I509", "Z471", "J189", "Z471"],
    ...     "procedures": None})
    >>> rows = pd.DataFrame({"measure": "pac_readmission", "stay_id": ["h1", "h2"], "unit_id": "S2",
    ...     "discharge_date": pd.to_datetime(["2024-03-05", "2024-05-06"]), "observed": [0.0, 1.0],
    ...     "expected": [0.2, 0.3]})
    >>> screen = candidate_partners(rows, {"facilities": fac, "stays": stays, "patients": pats}, market="M",
    ...                             period=("2024-01-01", "2024-12-31"))
    >>> screen[["rank", "name", "discharges", "readmit_n", "readmit_ratio", "dtc_n", "dtc_rate", "readmit_label"]]
       rank     name  discharges  readmit_n  readmit_ratio  dtc_n  dtc_rate           readmit_label
    0     1  Elm SNF           2          2            2.0      2       1.0  too few cases to judge
    """
    _check_columns(rows, _ROW_COLUMNS, "rows", "pass the national reference rows (carequal.national)")
    missing = [t for t in ("facilities", "stays", "patients") if t not in tables]
    if missing:
        raise ParameterError(f"tables: {', '.join(missing)} missing; pass the contract tables (loaders.load_tables)")
    fac = tables["facilities"]
    _check_columns(fac, ["facility_id", "name", "setting", "market", "is_partner"], "facilities",
                   "pass the contract's facilities table")
    period = _period(period)
    min_cases = _whole(min_cases, "min_cases", 0)
    if not 0 < level < 1:
        raise ParameterError(f"level must be between 0 and 1 (e.g. 0.95), not {level!r}")
    if national_rate is not None and not 0 <= national_rate <= 1:
        raise ParameterError(f"national_rate must be a proportion between 0 and 1, not {national_rate!r}")
    markets = fac["market"].dropna().astype("str").unique()
    if market not in set(markets):
        raise ParameterError(f"market {market!r} has no facilities; markets are {', '.join(sorted(markets))}")
    in_market = fac[(fac["market"] == market).to_numpy()]
    acute = in_market.loc[(in_market["setting"] == "acute").to_numpy(), "facility_id"].astype("str").tolist()
    if hospital is not None and hospital not in acute:
        raise ParameterError(f"hospital {hospital!r} is not an acute hospital of {market}; its hospitals are "
                             f"{', '.join(sorted(acute)) or 'none'}")
    pac_in_period = rows[(rows["measure"] == "pac_readmission").to_numpy()
                         & _in(rows["discharge_date"], period).to_numpy()]
    _check_unique(pac_in_period, "stay_id", "rows (pac_readmission, in the period)")

    pac = in_market[in_market["setting"].isin(CANDIDATE_SETTINGS).to_numpy()]
    candidates = pac[~partner_status(pac, period_end=period[1]).to_numpy()].copy()
    candidates["facility_id"] = candidates["facility_id"].astype("str")
    ids = candidates["facility_id"].tolist()
    out = candidates[["facility_id", "name", "setting", "is_partner"]].reset_index(drop=True)
    out["is_partner"] = out["is_partner"].fillna(False).astype(bool)
    out["partner_since"] = (pd.to_datetime(candidates["partner_since"]).to_numpy() if "partner_since" in candidates
                            else pd.NaT)
    volume = referral_volume(rows, tables["stays"], hospitals=[hospital] if hospital else acute, period=period,
                             providers=ids)
    parts = [volume,
             _readmission(rows, ids, period=period, national_rate=national_rate, min_cases=min_cases, level=level),
             _community(tables, ids, period=period, min_cases=min_cases, level=level),
             staffing_benchmark(fac, market=market, margin=staffing_margin).drop_duplicates("facility_id")]
    for part in parts:
        out = out.merge(part, on="facility_id", how="left", validate="one_to_one")
    out["level"] = level
    return rank_candidates(out)


# --------------------------------------------------------------------------------------------- for sharing


SHORTLIST_COLUMNS = ("rank", "facility_id", "name", "setting", "is_partner", "partner_since", "discharges",
                     "readmit_n", "readmit_events", "readmit_rate", "readmit_ratio", "readmit_lower",
                     "readmit_upper", "readmit_rs_rate", "readmit_rs_lower", "readmit_rs_upper", "readmit_label",
                     "dtc_n", "dtc_events", "dtc_rate", "dtc_lower", "dtc_upper", "dtc_ratio", "dtc_ratio_lower",
                     "dtc_ratio_upper", "dtc_rs_rate", "dtc_label", "los_median", "los_mean", "los_benchmark",
                     "los_label",
                     "nurse_hours_ppd", "staffing_benchmark", "staffing_label", "score", "judged")
"""The columns of :func:`candidate_shortlist`, before ``suppressed`` and ``suppression_reason``."""

_READMIT_DERIVED = ["readmit_rate", "readmit_ratio", "readmit_lower", "readmit_upper", "readmit_rs_rate",
                    "readmit_rs_lower", "readmit_rs_upper"]
_DTC_DERIVED = ["dtc_rate", "dtc_lower", "dtc_upper", "dtc_ratio", "dtc_ratio_lower", "dtc_ratio_upper",
                "dtc_rs_rate"]
_HIDE_KEYS = {"discharges": ["discharges"], "readmission": ["readmit_n", "readmit_events"],
              "dtc": ["dtc_n", "dtc_events"]}


def candidate_shortlist(screen: pd.DataFrame, *, min_cell: int = 11,
                        hide: Mapping[str, Iterable[str]] | None = None) -> pd.DataFrame:
    """The screen as a table safe to share: counts 1 to ``min_cell − 1`` hidden, with what they determine.

    Parameters
    ----------
    screen : DataFrame
        :func:`candidate_partners` output.
    min_cell : int
        Smallest count that may be shown (11 under the CMS cell-size policy; 1 shows everything).
    hide : dict, optional
        ``"discharges"``, ``"readmission"`` or ``"dtc"`` → provider ids whose values of that criterion another
        published table hides (e.g. a provider with a hidden hospital-level flow in
        :func:`carequal.report.flow_table`, or a suppressed ``pac_readmission`` row of
        :func:`carequal.report.facility_scorecard`). What the shortlist shows of those criteria is then also
        shown by (or computable from) that table, so it adds nothing to it.

    Returns
    -------
    DataFrame
        :data:`SHORTLIST_COLUMNS` plus ``suppressed`` and ``suppression_reason``, in rank order. Hidden values
        are missing: volumes (``discharges``) suppressed within setting × ``is_partner`` (the groups whose
        totals the market report shows); readmission counts (``readmit_n``, ``readmit_events``) with the
        rate, O/E and intervals; discharge-to-community counts (``dtc_n``, ``dtc_events``) with its rates,
        O/E, intervals and — when ``dtc_n`` is hidden — the length of stay. A hidden criterion's verdict reads
        "not shown (small numbers)" (unless "too few cases to judge"); ``score``, ``judged`` and ``rank`` are
        recomputed from the verdicts shown, so nothing hidden moves a provider up or down.

    Examples
    --------
    >>> screen = pd.DataFrame({"rank": [1, 2], "facility_id": ["S1", "S2"], "name": ["Oak", "Elm"],
    ...     "setting": "snf", "is_partner": False, "partner_since": pd.NaT, "discharges": [60, 7],
    ...     "readmit_n": [80, 40], "readmit_events": [6, 12], "readmit_expected": [12.0, 6.0],
    ...     "readmit_rate": [0.075, 0.3], "readmit_ratio": [0.5, 2.0], "readmit_lower": [0.18, 1.03],
    ...     "readmit_upper": [1.09, 3.49], "readmit_rs_rate": [0.07, 0.28], "readmit_rs_lower": [0.02, 0.14],
    ...     "readmit_rs_upper": [0.15, 0.49], "readmit_label": ["no different", "worse than benchmark"],
    ...     "dtc_n": 50, "dtc_events": 30, "dtc_rate": 0.6, "dtc_lower": 0.46, "dtc_upper": 0.72,
    ...     "dtc_ratio": 1.0, "dtc_ratio_lower": 0.67, "dtc_ratio_upper": 1.43, "dtc_rs_rate": 0.6,
    ...     "dtc_label": "no different", "los_median": 20.0, "los_mean": 22.0, "los_benchmark": 20.0,
    ...     "los_label": "no different",
    ...     "nurse_hours_ppd": [4.0, 3.0], "staffing_benchmark": 3.5,
    ...     "staffing_label": ["better than benchmark", "worse than benchmark"], "score": [1, -2],
    ...     "judged": True})
    >>> candidate_shortlist(screen)[["rank", "name", "discharges", "readmit_n", "readmit_events",
    ...                              "readmit_ratio", "readmit_label", "score"]]
       rank name  discharges  readmit_n  readmit_events  readmit_ratio              readmit_label  score
    0     1  Oak        <NA>         80            <NA>            NaN  not shown (small numbers)      1
    1     2  Elm        <NA>         40            <NA>            NaN  not shown (small numbers)     -1

    Oak's 6 readmissions are hidden with its O/E, and Elm's 12 with them (the total would give 6 away), so
    Elm's "worse" no longer counts in its score; Elm's 7 discharges are hidden, and Oak's 60 with them.
    """
    _check_columns(screen, [c for c in SHORTLIST_COLUMNS if c not in ("rank", "score", "judged")], "screen",
                   "pass the output of candidate_partners")
    min_cell = _whole(min_cell, "min_cell", 1)
    threshold = (1, min_cell - 1) if min_cell > 1 else (0.5, 0.9)  # whole counts never fall in (0.5, 0.9)
    extra = dict(hide or {})
    unknown = sorted(set(extra) - set(_HIDE_KEYS))
    if unknown:
        raise ParameterError(f"hide: unknown key(s) {', '.join(map(repr, unknown))}; use "
                             f"{', '.join(map(repr, _HIDE_KEYS))}")
    table = screen.reset_index(drop=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DisclosureWarning)
        volume = suppress_counts(table[["setting", "is_partner", "discharges"]], count_cols="discharges",
                                 group_cols=["setting", "is_partner"], threshold=threshold, denominator=None)
        readmit = suppress_counts(table[["readmit_n", "readmit_events", *_READMIT_DERIVED]],
                                  count_cols=["readmit_n", "readmit_events"], threshold=threshold,
                                  derived_cols=_READMIT_DERIVED, denominator="readmit_n")
        dtc = suppress_counts(table[["dtc_n", "dtc_events", *_DTC_DERIVED]], count_cols=["dtc_n", "dtc_events"],
                              threshold=threshold, derived_cols=_DTC_DERIVED, denominator="dtc_n")
    out = table[list(SHORTLIST_COLUMNS)].copy()
    reasons = []
    for part, counts, derived, key in ((volume, ["discharges"], [], "discharges"),
                                       (readmit, ["readmit_n", "readmit_events"], _READMIT_DERIVED, "readmission"),
                                       (dtc, ["dtc_n", "dtc_events"], _DTC_DERIVED, "dtc")):
        forced = out["facility_id"].isin([str(v) for v in extra.get(key, ())]).to_numpy()
        for col in counts:
            out[col] = part[col].astype("Int64").mask(forced)
        for col in derived:
            out[col] = part[col].mask(forced)
        reason = part["suppression_reason"].to_numpy(dtype=object)
        reason[forced & (reason == "")] = "complementary"  # hidden to protect a cell of another table
        reasons.append(reason)
    readmit_hidden = out[["readmit_n", "readmit_events"]].isna().any(axis=1).to_numpy()
    dtc_hidden = out[["dtc_n", "dtc_events"]].isna().any(axis=1).to_numpy()
    # a median of a few stays is close to one patient's stay: shown only with the number of stays
    for col in ("los_median", "los_mean"):
        out[col] = out[col].mask(out["dtc_n"].isna())
    for col, hidden in (("readmit_label", readmit_hidden), ("dtc_label", dtc_hidden),
                        ("los_label", out["dtc_n"].isna().to_numpy())):
        out.loc[hidden & (out[col] != TOO_FEW).to_numpy(), col] = HIDDEN
    out = out.drop(columns=["rank", "score", "judged"])
    out["suppressed"] = out[["discharges", "readmit_n", "readmit_events", "dtc_n", "dtc_events"]].isna().any(
        axis=1).to_numpy()
    strongest = np.full(len(out), "", dtype=object)
    for r in reversed(REASONS):
        for reason in reasons:
            strongest[reason == r] = r
    out["suppression_reason"] = pd.array(strongest, dtype="str")
    out = rank_candidates(out)
    # as in the facility scorecard: a group that cannot be protected inside the table is a note for the
    # methods appendix (its total must not be published), not a failure of the report
    out.attrs["notes"] = [str(w.message) for w in caught if issubclass(w.category, DisclosureWarning)]
    return out


def candidate_findings(shortlist: pd.DataFrame, *, market: str, source: str = "the market's hospitals",
                       top: int = 3) -> list[str]:
    """Plain-language sentences on a :func:`candidate_shortlist` for leaders (quoting shown values only).

    Parameters
    ----------
    shortlist : DataFrame
        :func:`candidate_shortlist` output (already suppressed).
    market : str
    source : str
        Whose discharges the volume counts ("the market's hospitals" or a hospital's name).
    top : int
        How many of the strongest candidates to describe.

    Examples
    --------
    >>> short = pd.DataFrame({"rank": [1, 2], "name": ["Oak SNF", "Elm SNF"], "setting": "snf",
    ...     "partner_since": pd.NaT, "discharges": pd.array([45, None], dtype="Int64"),
    ...     "readmit_label": ["better than benchmark", "too few cases to judge"],
    ...     "dtc_label": ["no different", "too few cases to judge"],
    ...     "staffing_label": ["better than benchmark", "worse than benchmark"],
    ...     "los_label": ["no different", "too few cases to judge"], "score": [2, -1], "judged": [True, False]})
    >>> for s in candidate_findings(short, market="Northvale"): print(s)
    2 post-acute providers in Northvale are not partners; 1 has enough cases to be judged on readmission or
    discharge to community.
    Strongest candidate: Oak SNF (SNF, score +2): readmission better than benchmark; discharge to community no
    different; nurse staffing better than benchmark; 45 discharges from the market's hospitals in the period.
    Worse than benchmark on a criterion: Elm SNF (nurse staffing).
    Not judged on readmission or discharge to community (too few cases, or small numbers not shown): Elm SNF;
    staffing and volume alone order them.
    """
    if shortlist.empty:
        return [f"Every post-acute provider in {market} is already a partner: there are no candidates to screen."]
    k, judged = len(shortlist), int(shortlist["judged"].sum())
    sentences = [f"{k} post-acute provider{'s' if k != 1 else ''} in {market} {'are' if k != 1 else 'is'} not "
                 f"partners; {judged} {'has' if judged == 1 else 'have'} enough cases to be judged on readmission "
                 "or discharge to community."]
    names = {"readmit_label": "readmission", "dtc_label": "discharge to community", "staffing_label":
             "nurse staffing"}
    best = shortlist[shortlist["judged"] & (shortlist["score"] > 0)].head(top)
    for i, row in enumerate(best.itertuples(index=False)):
        verdicts = "; ".join(f"{names[c]} {getattr(row, c)}" for c in names)
        lead = "Strongest candidate" if i == 0 else "Next"
        sentences.append(f"{lead}: {row.name} ({str(row.setting).upper()}, score {row.score:+d}): {verdicts}"
                         f"{_volume_text(row.discharges, source, sep='; ')}.")
    if best.empty and judged:
        first = shortlist[shortlist["judged"]].iloc[0]
        sentences.append("No candidate with enough cases is better than its benchmarks on balance (score above 0); "
                         "as the criteria do not separate them, discharges (where shown) order the list and "
                         f"{first['name']} ({str(first['setting']).upper()}) comes first"
                         f"{_volume_text(first['discharges'], source)}.")
    worse = []
    for row in shortlist.itertuples(index=False):
        hits = [names[c] for c in names if getattr(row, c) == WORSE]
        if hits:
            worse.append(f"{row.name} ({', '.join(hits)})")
    if worse:
        sentences.append(f"Worse than benchmark on a criterion: {'; '.join(worse)}.")
    few = shortlist.loc[~shortlist["judged"], "name"].tolist()
    if few:
        sentences.append("Not judged on readmission or discharge to community (too few cases, or small numbers not "
                         f"shown): {', '.join(map(str, few))}; staffing and volume alone order them.")
    signed = shortlist[pd.to_datetime(shortlist["partner_since"]).notna()]
    for row in signed.itertuples(index=False):
        sentences.append(f"{row.name} is to become a partner on {pd.Timestamp(row.partner_since).date()} (after "
                         "the period), so it is screened as a candidate here.")
    return sentences


def _volume_text(volume, source: str, *, sep: str = ", with ") -> str:
    """The volume for a sentence ("" when hidden or none: a sentence never quotes a hidden count)."""
    if pd.isna(volume) or volume <= 0:
        return ""
    return f"{sep}{int(volume):,d} discharges from {source} in the period"


# --------------------------------------------------------------------------------- in the market report


def candidate_table(mr: MarketReport, card: pd.DataFrame, flows: pd.DataFrame, *, hospital: str | None = None,
                    min_cases: int = 25) -> pd.DataFrame:
    """The market's post-acute providers that are not partners, screened and ranked as candidates
    (:func:`candidate_partners`), suppressed for sharing.

    Readmission is judged against the national model (its rate from ``mr.reference.models`` gives the
    risk-standardised rate); discharge to community and length of stay cover the stays of the market's
    residents, the benchmark being the residents' stays of the same setting. A readmission result is shown only
    where the scorecard (``card``, :func:`carequal.report.facility_scorecard`) shows the provider's
    ``pac_readmission`` row, and a volume only where every hospital's flow to the provider is shown in ``flows``
    (:func:`carequal.report.flow_table`): what the section shows of them can then be read from those tables
    already, so it reveals nothing they hide.

    Returns
    -------
    DataFrame
        :func:`candidate_shortlist` output, in rank order.
    """
    models = mr.reference.models
    rate = models.loc[models["measure"] == "pac_readmission", "rate"] if len(models) else pd.Series(dtype=float)
    no_model = "pac_readmission" in mr.unavailable  # no expected readmissions: referrals are counted, not judged
    rows = mr.rows.assign(expected=mr.rows["expected"].fillna(0.0)) if no_model else mr.rows
    screen = candidate_partners(rows, mr.tables, market=mr.market, period=mr.period, hospital=hospital,
                                min_cases=min_cases, national_rate=float(rate.iloc[0]) if len(rate) else None)
    if no_model:
        judged = [c for c in screen.columns if c.startswith("readmit_")
                  and c not in ("readmit_n", "readmit_events", "readmit_rate")]
        screen = screen.assign(**{c: np.nan for c in judged if c not in ("readmit_label", "readmit_method")},
                               readmit_label=NOT_REPORTED, readmit_method="")
        screen = rank_candidates(screen.drop(columns=["rank", "score", "judged"]))
    pac_card = card[card["measure"] == "pac_readmission"] if len(card) else card
    shown_flows = flows if hospital is None else flows[flows["hospital_id"] == hospital]
    hide = {"readmission": pac_card.loc[pac_card["suppressed"].astype(bool), "facility_id"] if len(pac_card) else [],
            "discharges": shown_flows.loc[shown_flows["n"].isna(), "pac_facility_id"]}
    return candidate_shortlist(screen, min_cell=mr.min_cell, hide=hide)


def market_candidate_findings(short: pd.DataFrame, mr: MarketReport) -> list[str]:
    """Sentences for leaders on :func:`candidate_table` (:func:`candidate_findings`) and a sentence on the
    providers whose discharges are hidden."""
    sentences = candidate_findings(short, market=mr.market)
    hidden = int(short["discharges"].isna().sum()) if len(short) else 0
    if hidden:
        sentences.append(f"Discharges to {hidden} of these providers are not shown: at some hospital they are small "
                         "numbers (see where patients go, above), and a total would give them away.")
    return sentences  # the table's technical notes go to the methods appendix (report.report_notes)


def candidate_display(short: pd.DataFrame) -> pd.DataFrame:
    """The evidence behind :func:`candidate_table`'s verdicts as text for the report: volume, readmission O/E,
    discharge to community (rate and adjusted O/E), median stay and nurse staffing against their benchmarks.

    Examples
    --------
    >>> short = pd.DataFrame({"rank": [1], "name": ["Oak SNF"], "setting": ["snf"],
    ...     "discharges": pd.array([40], dtype="Int64"), "readmit_n": pd.array([52], dtype="Int64"),
    ...     "readmit_events": pd.array([None], dtype="Int64"), "readmit_ratio": [None], "readmit_lower": [None],
    ...     "readmit_upper": [None], "dtc_n": pd.array([61], dtype="Int64"),
    ...     "dtc_events": pd.array([30], dtype="Int64"), "dtc_rate": [0.492], "dtc_lower": [0.37],
    ...     "dtc_upper": [0.61], "dtc_ratio": [1.1], "dtc_ratio_lower": [0.74], "dtc_ratio_upper": [1.57],
    ...     "los_median": [21.0], "los_benchmark": [22.0], "nurse_hours_ppd": [None],
    ...     "staffing_benchmark": [None]})
    >>> print(" | ".join(candidate_display(short).iloc[0]).replace("\\xa0", " "))  # no-break spaces as spaces
    1 | Oak SNF | SNF | 40 | suppressed | 61 | 49.2% (37.0–61.0%) | 1.10 (0.74–1.57) | 21 (22) | –
    """
    readmit_hidden = short[["readmit_n", "readmit_events"]].isna().any(axis=1).to_numpy()
    dtc_hidden = short[["dtc_n", "dtc_events"]].isna().any(axis=1).to_numpy()
    stays_hidden = short["dtc_n"].isna().to_numpy()

    def estimate(est, lo, hi, *, percent: bool):
        values = [np.nan if pd.isna(e) or pd.isna(a) or pd.isna(b) else (e, a, b)
                  for e, a, b in zip(short[est], short[lo], short[hi], strict=True)]
        # a no-break space keeps an estimate and its interval on one line in a narrow column
        fmt = ((lambda v: f"{fmt_pct(v[0])}\u00a0({fmt_ci(v[1], v[2])})") if percent
               else (lambda v: f"{v[0]:.2f}\u00a0({fmt_ci(v[1], v[2], percent=False)})"))
        return values, fmt

    readmit, readmit_fmt = estimate("readmit_ratio", "readmit_lower", "readmit_upper", percent=False)
    dtc_rate, dtc_rate_fmt = estimate("dtc_rate", "dtc_lower", "dtc_upper", percent=True)
    dtc_ratio, dtc_ratio_fmt = estimate("dtc_ratio", "dtc_ratio_lower", "dtc_ratio_upper", percent=False)
    los = [np.nan if pd.isna(m) else (m, b) for m, b in zip(short["los_median"], short["los_benchmark"], strict=True)]
    staff = [np.nan if pd.isna(h) else (h, b) for h, b in zip(short["nurse_hours_ppd"], short["staffing_benchmark"],
                                                               strict=True)]
    never = np.zeros(len(short), dtype=bool)
    return pd.DataFrame({
        "Rank": short["rank"].astype("str").to_numpy(),
        "Provider": short["name"].astype("str").to_numpy(),
        "Setting": short["setting"].astype("str").str.upper().to_numpy(),
        COUNT_LABELS["discharges"]: shown_text(short["discharges"], short["discharges"].isna().to_numpy(),
                                           lambda v: f"{int(v):,d}"),
        "Readmission O/E (95% CI)": shown_text(readmit, readmit_hidden, readmit_fmt),
        COUNT_LABELS["dtc_n"]: shown_text(short["dtc_n"], stays_hidden, lambda v: f"{int(v):,d}"),
        "Discharged to community (95% CI)": shown_text(dtc_rate, dtc_hidden, dtc_rate_fmt),
        "Adjusted O/E (95% CI)": shown_text(dtc_ratio, dtc_hidden, dtc_ratio_fmt),
        "Median stay, days (setting)": shown_text(los, stays_hidden, lambda v: f"{v[0]:.0f}\u00a0({v[1]:.0f})"),
        "Nurse hours per patient day (market median)": shown_text(
            staff, never, lambda v: f"{v[0]:.2f}" + ("" if pd.isna(v[1]) else f"\u00a0({v[1]:.2f})")),
    })
