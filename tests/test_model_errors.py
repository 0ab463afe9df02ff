"""Numerical failures inside a model name the measure, the facility set and the cause (ModelError), and the
rest goes on: the other national measures, the other agreed metrics, every partner's packet."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.agreement import agreement_cases, evaluate_agreement, read_agreement
from carequal.cli import main as cli_main
from carequal.convergence import guarded_fit
from carequal.cost import expected_spending
from carequal.errors import CarequalError, ModelError, ModelWarning
from carequal.loaders import load_tables
from carequal.national import MEASURED_COLUMNS, reference_from_measured
from carequal.risk import RISK_COVARIATES, HierarchicalLogit, LogisticRiskModel
from conftest import agreement_with

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def _spending(rng, n=300):
    df = pd.DataFrame({"stay_id": [f"S{i}" for i in range(n)], "facility_id": rng.choice(list("ABCDE"), n),
                       "x": rng.normal(0, 1, n)})
    df["y"] = rng.gamma(2.0, np.exp(9 + 0.2 * df["x"]) / 2.0)
    return df


def _stays(rng, n=600, facilities=20):
    df = pd.DataFrame({"stay_id": [f"S{i}" for i in range(n)], "x1": rng.normal(size=n), "x2": rng.normal(size=n),
                       "g": np.repeat([f"H{i}" for i in range(facilities)], n // facilities)})
    df["y"] = (rng.random(n) < 0.2).astype(float)
    return df


# ------------------------------------------------------------------------------------------ the error itself


def test_model_error_names_measure_facilities_and_cause_and_shares_no_keys():
    err = ModelError(measure="episode_spending", facilities="14 facilities (all markets)", cause="extreme values",
                     detail="payment has non-finite or extreme values", model="gamma spending model", n=1234,
                     cases="episodes", specifics="1 episode, e.g. stay S0001234", advice="correct the payment")
    assert isinstance(err, CarequalError) and err.exit_code == 2
    assert str(err) == ("episode_spending: the gamma spending model could not be fitted on 1,234 episodes at 14 "
                        "facilities (all markets): payment has non-finite or extreme values (1 episode, e.g. stay "
                        "S0001234); correct the payment")
    assert "S0001234" not in err.reason and "1,234" not in err.reason and "episode_spending" in err.reason
    back = pickle.loads(pickle.dumps(err))  # worker processes pass it on
    assert str(back) == str(err) and back.cause == err.cause
    renamed = err.within(measure="episode_spending_30d", facilities="12 hospitals (all markets)")
    assert renamed.reason.startswith("episode_spending_30d: the gamma spending model could not be fitted at 12 "
                                     "hospitals (all markets)")
    with pytest.raises(ValueError, match="cause must be one of"):
        ModelError(measure="m", facilities="f", cause="bad luck", detail="d")


# ------------------------------------------------------------------------------- each cause, by hand-built data


def test_an_overflowing_payment_is_named_before_the_gamma_fit():
    df = _spending(np.random.default_rng(3))
    with pytest.raises(ModelError) as caught:
        expected_spending(df.assign(y=df["y"].where(df.index != 3, 1e300)), outcome="y", covariates=["x"],
                          measure="episode_spending", facilities="5 facilities (all markets)")
    err = caught.value
    assert (err.measure, err.facilities, err.cause) == ("episode_spending", "5 facilities (all markets)",
                                                       "extreme values")
    assert "over $10,000,000 per episode (1 episode, e.g. stay S3)" in str(err) and "S3" not in err.reason
    assert "1e+300" not in str(err)  # the value is not dumped
    with pytest.raises(ModelError) as caught:
        expected_spending(df.assign(y=df["y"].where(df.index != 4, np.inf)), outcome="y", covariates=["x"])
    assert caught.value.cause == "non-finite values" and caught.value.measure == "y"
    assert caught.value.facilities == "5 facilities"  # counted from facility_id when not named


def test_statsmodels_failures_are_translated():
    df = _spending(np.random.default_rng(3))
    # without the ceiling the gamma fit itself fails: a NaN deviance after an overflow, a singular matrix
    with pytest.raises(ModelError, match="could not be fitted on 300 episodes at 5 facilities") as caught:
        expected_spending(df.assign(y=df["y"].where(df.index != 3, 1e300)), outcome="y", covariates=["x"],
                          ceiling=None)
    assert caught.value.cause == "overflow" and isinstance(caught.value.__cause__, ValueError)

    def singular():
        raise np.linalg.LinAlgError("Singular matrix")

    def fail(cause, detail):
        return ModelError(measure="m", facilities="3 facilities", cause=cause, detail=detail)

    with pytest.raises(ModelError, match="singular matrix") as caught:
        guarded_fit(singular, fail)
    assert caught.value.cause == "non-convergence" and isinstance(caught.value.__cause__, np.linalg.LinAlgError)
    with pytest.raises(ModelError) as caught:
        expected_spending(df.assign(y=5000.0), outcome="y", covariates=["x"])
    assert caught.value.cause == "no variation"
    with pytest.raises(ModelError) as caught:
        expected_spending(df.head(2), outcome="y", covariates=["x"])
    assert caught.value.cause == "too few cases"


@pytest.mark.parametrize("cls", [HierarchicalLogit, LogisticRiskModel], ids=lambda c: c.__name__)
def test_an_outcome_with_no_events_is_named(cls):
    df = _stays(np.random.default_rng(5)).assign(y=0.0)
    with pytest.raises(ModelError) as caught:
        if cls is HierarchicalLogit:
            cls(["x1", "x2"]).fit(df, outcome="y", group="g", measure="mortality")
        else:
            cls(["x1", "x2"]).fit(df, outcome="y", measure="mortality", facilities="20 hospitals (all markets)")
    err = caught.value
    assert err.measure == "mortality" and err.cause == "no variation" and "no events" in str(err)
    assert err.facilities == ("20 facilities" if cls is HierarchicalLogit else "20 hospitals (all markets)")
    assert str(err).startswith("mortality: the ") and "could not be fitted on 600 " in str(err)


@pytest.mark.parametrize("cls", [HierarchicalLogit, LogisticRiskModel], ids=lambda c: c.__name__)
def test_perfect_separation_is_named(cls):
    rng = np.random.default_rng(5)
    df = _stays(rng)

    def fit(frame, covariates):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no numpy or statsmodels warning trail on the way
            if cls is HierarchicalLogit:
                return cls(covariates).fit(frame, outcome="y", group="g", measure="readmission",
                                           facilities="20 hospitals (all markets)")
            return cls(covariates).fit(frame, outcome="y", measure="readmission",
                                       facilities="20 hospitals (all markets)")

    # one covariate: every stay with the outcome has chemotherapy, none without it has
    with pytest.raises(ModelError, match="covariate chemotherapy separates") as caught:
        fit(df.assign(chemotherapy=df["y"]), ["x1", "chemotherapy"])
    assert caught.value.cause == "separation" and caught.value.facilities == "20 hospitals (all markets)"
    # two covariates together, neither alone
    with pytest.raises(ModelError, match="covariates together separate") as caught:
        fit(df.assign(y=(df["x1"] + df["x2"] > 0).astype(float)), ["x1", "x2"])
    assert caught.value.cause == "separation" and caught.value.measure == "readmission"
    # a level with no events (quasi-complete separation) is not a failure: the rest of the model is estimated
    rare = np.zeros(len(df))
    rare[np.flatnonzero(df["y"] == 0)[:5]] = 1.0
    model = fit(df.assign(rare=rare), ["x1", "rare"])
    params = model.params_ if cls is HierarchicalLogit else model.result_.params
    assert np.isfinite(params).all() and params["rare"] < -5


@pytest.mark.parametrize("cls", [HierarchicalLogit, LogisticRiskModel], ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_non_finite_covariate_is_named_with_at_most_five_keys(cls, value):
    df = _stays(np.random.default_rng(5))
    df.loc[[3, 9, 11, 20, 30, 41, 50], "x1"] = value
    with pytest.raises(ModelError) as caught:
        if cls is HierarchicalLogit:
            cls(["x1", "x2"]).fit(df, outcome="y", group="g", measure="readmission")
        else:
            cls(["x1", "x2"]).fit(df, outcome="y", measure="readmission")
    err = caught.value
    assert err.cause == "non-finite values" and "covariate x1 has missing or infinite values" in str(err)
    assert "(7 rows, e.g. stay_id S3, S9, S11, S20, S30);" in str(err) and "S41" not in str(err)
    assert "S3" not in err.reason


# ----------------------------------------------------------------------------------------- national reference


def _measured(rng, n=1500):
    """Index stays of 10 hospitals in two markets and 4 SNFs, over 2023–2024, in the reference's columns."""
    hospitals = [f"H{i}" for i in range(10)]
    snfs = [f"S{i}" for i in range(4)]
    facilities = pd.DataFrame({"facility_id": hospitals + snfs, "market": ["A", "B"] * 7,
                               "setting": ["acute"] * 10 + ["snf"] * 4, "is_partner": [True, False] * 7})
    m = pd.DataFrame({"stay_id": [f"X{i:05d}" for i in range(n)], "patient_id": [f"P{i:05d}" for i in range(n)],
                      "facility_id": rng.choice(hospitals, n), "condition": "other",
                      "discharge_date": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 730, n), "D")})
    for c in RISK_COVARIATES:
        m[c] = 0.0
    m["age10"] = rng.normal(0, 1, n)
    m["male"] = (rng.random(n) < 0.45).astype(float)
    m["dual"] = (rng.random(n) < 0.2).astype(float)
    m["n_secondary"] = rng.poisson(4, n).astype(float)
    m["chemotherapy"] = (rng.random(n) < 0.05).astype(float)
    to_snf = rng.random(n) < 0.4
    m["pac_setting"] = np.where(to_snf, "snf", "none")
    m["pac_facility_id"] = pd.Series(np.where(to_snf, rng.choice(snfs, n), None), dtype="object")
    m["unplanned_readmit_30d"] = rng.random(n) < 1 / (1 + np.exp(-(-1.8 + 0.3 * m["age10"])))
    m["died_30d"] = rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 0.4 * m["age10"])))
    return m[list(MEASURED_COLUMNS)], facilities


def _reference(measured, facilities, **kw):
    return reference_from_measured(measured, facilities, period_start="2024-01-01", period_end="2024-12-31", **kw)


def test_a_measure_whose_model_fails_is_left_out_of_the_reference_and_the_others_are_unchanged():
    measured, facilities = _measured(np.random.default_rng(11))
    clean = _reference(measured, facilities, measures=("readmission", "pac_readmission"))
    in_2024 = pd.to_datetime(measured["discharge_date"]) >= "2024-01-01"
    no_deaths = measured.assign(died_30d=measured["died_30d"] & ~in_2024)  # no event in the reporting period
    with pytest.warns(ModelWarning, match=r"mortality: the random-intercept logistic model could not be fitted on "
                                          r"[\d,]+ stays at 10 hospitals \(all markets\): the stays have no events"):
        ref = _reference(no_deaths, facilities)
    assert ref.meta["measures"] == ["readmission", "pac_readmission"] and list(ref.models["measure"]) == \
        ["readmission", "pac_readmission"]
    info = ref.meta["unavailable"]["mortality"]
    assert (info["cause"], info["facilities"], info["label"]) == ("no variation", "10 hospitals (all markets)",
                                                                 "30-day mortality")
    assert ref.unavailable == {"mortality": info["reason"]} and "X0" not in info["reason"]
    # the failed measure keeps its rows (who was judged, what was observed) without expected values
    mortality = ref.rows[ref.rows["measure"] == "mortality"]
    assert len(mortality) == len(measured) and mortality["expected"].isna().all()
    assert mortality["predicted"].isna().all()
    for name in ("readmission", "pac_readmission"):  # the other measures: exactly as without the fault
        pd.testing.assert_frame_equal(ref.rows[ref.rows["measure"] == name].reset_index(drop=True),
                                      clean.rows[clean.rows["measure"] == name].reset_index(drop=True))
    pd.testing.assert_frame_equal(ref.models, clean.models)
    assert json.loads(json.dumps(ref.meta)) == ref.meta  # written to reference.json as it is


def test_a_separating_covariate_fails_its_measures_only_and_all_failing_refuses_the_run():
    measured, facilities = _measured(np.random.default_rng(11))
    separated = measured.assign(chemotherapy=measured["unplanned_readmit_30d"].astype(float))
    with pytest.warns(ModelWarning, match="covariate chemotherapy separates"):
        ref = _reference(separated, facilities)
    assert ref.meta["measures"] == ["mortality"]
    assert {k: v["cause"] for k, v in ref.meta["unavailable"].items()} == {"readmission": "separation",
                                                                          "pac_readmission": "separation"}
    assert ref.meta["unavailable"]["pac_readmission"]["facilities"] == "4 post-acute providers (all markets)"
    nothing = separated.assign(died_30d=False)
    with pytest.raises(ModelError, match=r"^readmission: .*covariate chemotherapy separates.*no other measure "
                                         r"could be fitted either: mortality: .*no events") as caught:
        _reference(nothing, facilities)
    assert caught.value.exit_code == 2


# ------------------------------------------------------------------------------------------------- agreements


AGREEMENT = """
name = "model faults"
[[partners]]
facility_id = "H001001"
[[partners]]
facility_id = "S001003"
[[partners]]
facility_id = "A001001"
[[metrics]]
id = "readmission_30d"
measure = "readmission"
risk_adjusted = true
target = { kind = "market", relative_change = -0.05 }
[[metrics]]
id = "los"
measure = "length_of_stay"
target = { kind = "market" }
[[metrics]]
id = "spending"
measure = "episode_spending"
risk_adjusted = true
target = { kind = "market" }
[[metrics]]
id = "spending_crude"
measure = "episode_spending"
target = { kind = "absolute", value = 30000 }
"""


@pytest.fixture(scope="module")
def evaluated():
    tables = load_tables(SAMPLE, mode="quarantine").tables
    agreement = read_agreement(text=AGREEMENT)
    cases = agreement_cases(tables, agreement)
    clean = evaluate_agreement(agreement, tables, cases=cases, end="2024-12-31")
    # one episode of a Northvale hospital partner's SNF (S001003) with a payment read as 1e300
    spend = cases[(cases["metric"] == "spending") & cases["excluded"].isna() & (cases["role"] == "post_acute")
                  & (cases["unit_id"] == "S001003")]
    bad_stay = spend["stay_id"].iloc[0]
    faulty = cases.copy()
    faulty.loc[faulty["metric"].str.startswith("spending") & (faulty["stay_id"] == bad_stay), "value"] = 1e300
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_agreement(agreement, tables, cases=faulty, end="2024-12-31")
    return {"clean": clean, "faulty": result, "bad_stay": bad_stay,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, ModelWarning)]}


def test_a_failed_metric_is_not_computed_and_the_others_are_identical(evaluated):
    clean, faulty, bad = evaluated["clean"], evaluated["faulty"], evaluated["bad_stay"]
    assert list(faulty.columns) == list(clean.columns) and len(faulty) == len(clean)
    keys = ["metric", "facility_id", "period"]
    clean, faulty = clean.sort_values(keys, ignore_index=True), faulty.sort_values(keys, ignore_index=True)
    # the bad episode (discharged by H001003, a Northvale hospital, to the SNF partner S001003) is in the hospitals'
    # and the SNFs' spending models, in the SNF's crude mean and in the Northvale hospital partner's benchmark
    failed = faulty["metric"].str.startswith("spending") & faulty["facility_id"].isin(["H001001", "S001003"])
    assert (faulty.loc[failed, "status"] == "not computed").all()
    assert (faulty.loc[~failed, "status"] != "not computed").all()
    reasons = set(faulty.loc[failed, "status_reason"])
    assert reasons == {
        "not computed: spending: the gamma spending model could not be fitted at 12 hospitals (all markets): a "
        "payment (stays.payment) makes episode spending non-finite or extreme, over $10,000,000 per episode",
        "not computed: spending: the gamma spending model could not be fitted at 18 SNFs (all markets): a payment "
        "(stays.payment) makes episode spending non-finite or extreme, over $10,000,000 per episode",
        "not computed: spending_crude: the mean spending could not be computed at 6 SNFs (Northvale): a payment "
        "(stays.payment) makes episode spending non-finite or extreme, over $10,000,000 per episode",
        "not computed: spending_crude: the mean spending could not be computed at 4 hospitals (Northvale): a "
        "payment (stays.payment) makes episode spending non-finite or extreme, over $10,000,000 per episode"}
    assert not any(bad in r for r in reasons)
    gone = faulty.loc[failed]
    assert gone[["value", "lower", "upper", "benchmark", "change", "expected", "ratio"]].isna().all().all()
    np.testing.assert_array_equal(gone["n"], clean.loc[failed, "n"])  # the cases are still counted
    market = gone["target_basis"].str.startswith("market")
    assert gone.loc[market, "target"].isna().all() and (gone.loc[~market, "target"] == 30000).all()
    # every other row, every column: identical to the evaluation without the fault
    pd.testing.assert_frame_equal(faulty[~failed], clean[~failed])
    # the operator is told once per model, with at most 5 example keys
    assert len(evaluated["warnings"]) == 4 and all(f"e.g. index stay {bad}" in w for w in evaluated["warnings"])


def test_packet_text_for_a_metric_not_computed(evaluated):
    from carequal import packet

    agreement = read_agreement(text=AGREEMENT)
    tables = load_tables(SAMPLE, mode="quarantine").tables
    results = evaluated["faulty"].assign(view="reporting")
    reporting = results[results["period"] >= "2024-01-01"]
    partner = pd.Series({"name": "Northvale Health Care Center", "setting": "snf", "market": "Northvale",
                         "start": pd.Timestamp("2023-01-01")}, name="S001003")
    pp = packet.PartnerPacket(agreement, partner, pd.concat([reporting, results.assign(view="review")])
                              .query("facility_id == 'S001003'"), pd.DataFrame(), tables["facilities"],
                              (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-03-31")), 11)
    table = packet.status_table(pp, period=pd.Timestamp("2024-01-01"))
    shown = packet.status_display(table).set_index("Metric")
    assert shown.loc["30-day episode spending (risk-adjusted)", "Value"] == "not computed"
    assert shown.loc["30-day episode spending (risk-adjusted)", "Why"].startswith("not computed: spending: the gamma")
    findings = packet.status_findings(table, pp)
    assert "2 could not be computed." in findings[0]
    assert ("30-day episode spending (risk-adjusted) could not be computed: the gamma spending model could not be "
            "fitted at 18 SNFs (all markets): a payment (stays.payment) makes episode spending non-finite or "
            "extreme, over $10,000,000 per episode.") in findings
    assert packet.metric_trend(pp, "spending").attrs["not_computed"].startswith(
        "30-day episode spending (risk-adjusted) could not be computed: the gamma spending model")
    assert "not_computed" not in packet.metric_trend(pp, "los").attrs
    assert packet.packet_record(table)["not_computed"] == 2
    assert set(packet.status_grid(pp).set_index("Metric").loc["30-day episode spending (risk-adjusted)"]) == \
        {"not computed"}


# ------------------------------------------------------------------------------------------------ end to end


def test_report_by_partner_with_an_overflowing_payment_produces_every_packet(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    # a partner of each setting (test_packet renders all seven): the data's agreement, which the batch reads
    agreement_with(["H001001", "S001003", "R001001", "A001001"], data)
    stays = pd.read_csv(data / "stays.csv", dtype=str, keep_default_na=False)
    stays.loc[0, "payment"] = "1e300"  # S00000000000: discharged by H001003, then a stay at SNF S001002
    stays.to_csv(data / "stays.csv", index=False)
    out, work = tmp_path / "out", tmp_path / "work"
    code = cli_main(["report", "--data", str(data), "--out", str(out), "--work", str(work), "--by", "partner",
                     "--period", "2024", "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Traceback" not in printed.out + printed.err
    assert "4 of 4 partner packets" in printed.out
    # the operator is told which model, where and why, with the example key
    assert ("carequal report: episode_spending_30d: the gamma spending model could not be fitted on" in printed.err
            and "at 12 hospitals (all markets)" in printed.err and "e.g. index stay S00000000000" in printed.err)
    manifest = json.loads((out / "manifest.json").read_text())
    partners = read_agreement(data / "agreement.toml").partners
    assert set(manifest["partners"]) == {p.facility_id for p in partners}
    assert all(r["status"] == "ok" and (out / r["html"]).is_file() for r in manifest["partners"].values())
    assert list(manifest["not_computed"]) == ["episode_spending_30d"]
    # the SNFs' and the hospitals' spending models hold the episode; the IRF's and home health's do not
    not_computed = {fid: r["kpis"]["not_computed"] for fid, r in manifest["partners"].items()}
    assert not_computed == {"H001001": 1, "S001003": 1, "R001001": 0, "A001001": 0}
    for fid, n in not_computed.items():
        html = (out / f"{fid}.html").read_text()
        metrics = pd.read_csv(out / f"{fid}_extract" / "metrics.csv")
        spend = metrics[metrics["metric"] == "episode_spending_30d"]
        if n:
            assert "30-day episode spending (risk-adjusted) could not be computed: the gamma spending model could " \
                   "not be fitted at" in html and "makes episode spending non-finite or extreme" in html
            assert (spend["status"] == "not computed").all() and spend["value"].isna().all()
        else:
            assert (spend["status"] != "not computed").all() and spend["value"].notna().any()
        assert metrics.loc[metrics["metric"] != "episode_spending_30d", "status"].ne("not computed").all()
    shared = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".csv", ".json")]
    assert not [p for p in shared if "S00000000000" in p.read_text()]  # no key of the episode is shared
    assert "not computed" in (out / "index.html").read_text().lower()  # the index marks it (symbol and words)
