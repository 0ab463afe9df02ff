"""Tests of carequal.cost: episode windows worked by hand, leakage by hand, the GLM against statsmodels, the
coverage of the spending-ratio interval by simulation, and recovery of the generator's payment effect."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM

from carequal.cohorts import IndexRules, index_stays, post_acute_episodes
from carequal.cost import (
    episode_spending,
    expected_spending,
    network_leakage,
    provider_spending_ratios,
    spending_ratio,
)
from carequal.errors import CarequalWarning, DataQualityWarning, ParameterError
from carequal.intervals import wilson
from carequal.risk import RISK_COVARIATES, risk_covariates
from carequal.synth import SynthConfig, generate

D = pd.Timestamp


# ------------------------------------------------------------------------------------- episode spending

FACILITIES = pd.DataFrame({
    "facility_id": ["H1", "H2", "S1", "S2", "R1", "L1", "A1"],
    "setting": ["acute", "acute", "snf", "snf", "irf", "ltch", "hha"],
    "market": "M",
    "is_partner": [True, False, True, False, False, False, True],
    "partner_since": pd.to_datetime(["2023-01-01", None, "2024-01-01", None, None, None, "2024-06-01"]),
})

# (stay_id, patient, facility, admit, discharge, payment)
_ROWS = [
    # p1: index discharged 10 Jan. SNF from day 0, 40 days (days 0-39): 31 days in the 30-day window (0-30).
    # Home health from day 41 (outside 30, inside 90). Readmission on day 90 (just inside), another on day 91.
    ("i1", "p1", "H1", "2024-01-01", "2024-01-10", 10000.0),
    ("s1", "p1", "S1", "2024-01-10", "2024-02-19", 21200.0),
    ("a1", "p1", "A1", "2024-02-20", "2024-03-20", 2000.0),
    ("r1", "p1", "H2", "2024-04-09", "2024-04-12", 9000.0),
    ("r1b", "p1", "H2", "2024-04-10", "2024-04-11", 5000.0),
    # p2: readmission on day 30 (just inside 30), then an IRF stay from day 31 (just outside 30, inside 90).
    ("i2", "p2", "H1", "2024-01-05", "2024-01-10", 8000.0),
    ("r2", "p2", "H1", "2024-02-09", "2024-02-10", 7000.0),
    ("q2", "p2", "R1", "2024-02-10", "2024-02-24", 20000.0),
    # p3: LTCH stay from day 30, 10 days (days 30-39): 1 of its 10 days is in the 30-day window.
    ("i3", "p3", "H2", "2024-02-25", "2024-03-01", 12000.0),
    ("l3", "p3", "L1", "2024-03-31", "2024-04-10", 40000.0),
    # p4: a transfer chain H1 -> H2 (the index is the final stay), then a SNF stay at a non-partner.
    ("t4a", "p4", "H1", "2024-05-01", "2024-05-05", 6000.0),
    ("t4b", "p4", "H2", "2024-05-05", "2024-05-12", 11000.0),
    ("s4", "p4", "S2", "2024-05-12", "2024-05-22", 5300.0),
    # p5: a SNF stay without payment in the window.
    ("i5", "p5", "H1", "2024-03-01", "2024-03-04", 9000.0),
    ("s5", "p5", "S1", "2024-03-05", "2024-03-15", np.nan),
    # p6: the index stay itself has no payment.
    ("i6", "p6", "H1", "2024-03-01", "2024-03-04", np.nan),
    # p7: discharged 1 December: the 30-day window ends on 31 December (complete), the 90-day one does not.
    ("i7", "p7", "H1", "2024-11-25", "2024-12-01", 9500.0),
    # p8: a same-day stay (admitted and discharged on 1 June) is not its own readmission; home health from
    # day 0 at a partner whose partnership starts on 1 June (partner on the admission day).
    ("i8", "p8", "H1", "2024-06-01", "2024-06-01", 3000.0),
    ("a8", "p8", "A1", "2024-06-01", "2024-06-21", 2000.0),
]
STAYS = pd.DataFrame(_ROWS, columns=["stay_id", "patient_id", "facility_id", "admit_date", "discharge_date",
                                     "payment"]).assign(
    admit_date=lambda d: pd.to_datetime(d["admit_date"]), discharge_date=lambda d: pd.to_datetime(d["discharge_date"]))
INDEX_IDS = ["i1", "i2", "i3", "t4b", "i5", "i6", "i7", "i8"]


def _index(ids=INDEX_IDS) -> pd.DataFrame:
    return STAYS.set_index("stay_id").loc[ids].reset_index()[["stay_id", "patient_id", "facility_id", "admit_date",
                                                               "discharge_date"]]


@pytest.fixture(scope="module")
def spent() -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        return episode_spending(_index(), STAYS, FACILITIES, data_end="2024-12-31").set_index("stay_id")


def test_post_acute_stay_running_past_the_window_is_prorated_by_days(spent):
    # s1: 21,200 over days 0-39; days 0-30 are 31 of its 40 days.
    assert spent.loc["i1", "spend_snf_30d"] == pytest.approx(21200 * 31 / 40)
    assert spent.loc["i1", "spend_snf_90d"] == pytest.approx(21200)
    # l3 starts on day 30: one day of ten inside the 30-day window.
    assert spent.loc["i3", "spend_ltch_30d"] == pytest.approx(4000)
    assert spent.loc["i3", "spend_ltch_90d"] == pytest.approx(40000)


def test_stays_just_inside_and_just_outside_the_windows(spent):
    # home health from day 41: only in the 90-day window
    assert spent.loc["i1", "spend_hha_30d"] == 0 and spent.loc["i1", "spend_hha_90d"] == 2000
    # r1 starts on day 90 (counts in full), r1b on day 91 (does not)
    assert spent.loc["i1", "spend_readmit_30d"] == 0 and spent.loc["i1", "spend_readmit_90d"] == 9000
    # r2 on day 30 counts in the 30-day window; the IRF stay from day 31 only in the 90-day one
    assert spent.loc["i2", "spend_readmit_30d"] == 7000
    assert spent.loc["i2", "spend_irf_30d"] == 0 and spent.loc["i2", "spend_irf_90d"] == 20000


def test_readmissions_and_post_acute_stays_are_attributed_to_their_setting(spent):
    row = spent.loc["i1"]
    assert row["spend_pac_90d"] == pytest.approx(21200 + 2000)
    assert row["spend_total_90d"] == pytest.approx(10000 + 9000 + 21200 + 2000)
    assert row["spend_total_30d"] == pytest.approx(10000 + 21200 * 31 / 40)
    assert row["spend_irf_90d"] == 0 and row["spend_ltch_90d"] == 0
    assert (row["pac_setting"], row["pac_facility_id"], bool(row["pac_is_partner"])) == ("snf", "S1", True)
    # readmissions are paid per admission: never prorated, even when they run past the window's end
    assert spent.loc["i2", "spend_total_30d"] == pytest.approx(8000 + 7000)


def test_a_transfer_chain_is_one_index_hospitalisation(spent):
    row = spent.loc["t4b"]
    assert row["index_chain_stays"] == 2
    assert row["spend_index"] == 6000 + 11000  # both hospitals of the chain
    assert row["spend_readmit_30d"] == 0  # the first stay of the chain is not a readmission
    assert row["spend_snf_30d"] == 5300
    assert (row["pac_setting"], bool(row["pac_is_partner"])) == ("snf", False)


def test_a_same_day_stay_is_not_its_own_readmission(spent):
    row = spent.loc["i8"]
    assert row["spend_readmit_30d"] == 0 and row["spend_hha_30d"] == 2000
    assert bool(row["pac_is_partner"])  # partner from 1 June, the admission day


def test_missing_payments_exclude_the_window_and_are_counted_not_zeroed(spent):
    for w in (30, 90):
        assert spent.loc["i5", f"missing_payments_{w}d"] == 1
        assert spent.loc["i5", f"exclusion_reason_{w}d"] == "missing_payment"
        assert np.isnan(spent.loc["i5", f"spend_total_{w}d"]) and np.isnan(spent.loc["i5", f"spend_snf_{w}d"])
        assert spent.loc["i6", f"exclusion_reason_{w}d"] == "missing_payment"
    assert spent.loc["i5", "spend_index"] == 9000 and np.isnan(spent.loc["i6", "spend_index"])
    assert pd.isna(spent.loc["i1", "exclusion_reason_90d"]) and spent.loc["i1", "missing_payments_90d"] == 0
    with pytest.warns(DataQualityWarning, match=r"2 episode\(s\) \(2 stay\(s\)\) in the 30-day window.*i5"):
        episode_spending(_index(), STAYS, FACILITIES, data_end="2024-12-31")


def test_windows_past_the_end_of_the_data_are_incomplete(spent):
    assert pd.isna(spent.loc["i7", "exclusion_reason_30d"]) and spent.loc["i7", "spend_total_30d"] == 9500
    assert spent.loc["i7", "exclusion_reason_90d"] == "incomplete_followup"
    assert np.isnan(spent.loc["i7", "spend_total_90d"])
    # by default the data end at the last discharge, 12 April 2024 without p4-p8: the 90-day windows of
    # 10 January end on 9 April (complete), that of 1 March on 30 May (not)
    ids = ["i1", "i2", "i3"]
    default = episode_spending(_index(ids), STAYS[STAYS.patient_id.isin(["p1", "p2", "p3"])], FACILITIES)
    assert default["exclusion_reason_90d"].isna().tolist() == [True, True, False]
    assert default["exclusion_reason_90d"].iloc[2] == "incomplete_followup"
    assert default["exclusion_reason_30d"].isna().all()


def test_episode_spending_does_not_mutate_and_keeps_the_index_order():
    index, stays = _index()[::-1].reset_index(drop=True), STAYS.sample(frac=1, random_state=1)
    before_index, before_stays = index.copy(), stays.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        out = episode_spending(index, stays, FACILITIES, data_end="2024-12-31")
    pd.testing.assert_frame_equal(index, before_index)
    pd.testing.assert_frame_equal(stays, before_stays)
    assert out["stay_id"].tolist() == index["stay_id"].tolist()


def test_no_payment_column_and_bad_input_are_clear_errors():
    with pytest.raises(ParameterError, match=r"stays\.payment: no such column.*optional in the data contract"):
        episode_spending(_index(), STAYS.drop(columns="payment"), FACILITIES)
    negative = STAYS.assign(payment=STAYS["payment"].where(STAYS["stay_id"] != "s1", -5.0))
    with pytest.raises(ParameterError, match=r"stays\.payment: 1 negative payment.*s1"):
        episode_spending(_index(), negative, FACILITIES)
    with pytest.raises(ParameterError, match="windows"):
        episode_spending(_index(), STAYS, FACILITIES, windows=(30, 30))
    with pytest.raises(ParameterError, match="same transfer chain.*t4b"):
        episode_spending(_index(["t4a", "t4b"]), STAYS, FACILITIES)


def test_episode_spending_on_a_cohort_accounts_for_every_payment():
    # On generated data: with one window long enough to hold everything after each index stay, every stay's
    # payment is counted exactly once per episode whose window it falls in (checked against a merge).
    cfg = SynthConfig(n_markets=1, patients_per_market=600, hospitals_per_market=3, snf_per_market=3,
                      irf_per_market=1, ltch_per_market=1, hha_per_market=2, seed=11, truth_stays=False)
    tab = generate(cfg)
    cohort = index_stays(tab["stays"], tab["facilities"], tab["patients"], tab["enrollment"])
    out = episode_spending(cohort.index, tab["stays"], tab["facilities"], windows=(30,), data_end="2030-01-01")
    st = tab["stays"].merge(tab["facilities"][["facility_id", "setting"]], on="facility_id")
    pairs = cohort.index[["stay_id", "patient_id", "discharge_date", "episode_id"]].merge(
        st[["patient_id", "stay_id", "admit_date", "discharge_date", "setting", "payment"]], on="patient_id",
        suffixes=("", "_w"))
    day = (pairs["admit_date"] - pairs["discharge_date"]).dt.days
    los = (pairs["discharge_date_w"] - pairs["admit_date"]).dt.days.clip(lower=1)
    chain = tab["stays"].set_index("stay_id")  # stays of the index's chain start on/before its admission
    in_chain = (pairs["setting"] == "acute") & (pairs["admit_date"] <= pairs["stay_id"].map(chain["admit_date"]))
    keep = day.between(0, 30) & ~in_chain & (pairs["stay_id_w"] != pairs["stay_id"])
    share = np.where(pairs["setting"] == "acute", 1.0, np.clip((31 - day) / los, 0, 1))
    expected = (pairs["payment"] * share)[keep].groupby(pairs.loc[keep, "stay_id"]).sum()
    got = (out.set_index("stay_id")["spend_total_30d"] - out.set_index("stay_id")["spend_index"])
    assert len(cohort.index) > 300
    np.testing.assert_allclose(got.reindex(cohort.index["stay_id"]).to_numpy(),
                               expected.reindex(cohort.index["stay_id"]).fillna(0).to_numpy(), rtol=1e-9)


# ------------------------------------------------------------------------------------------ network leakage


def _leakage_episodes() -> pd.DataFrame:
    # H1: January 3 post-acute discharges (one to a non-partner) and one home; February nothing; March 2 to
    # post-acute care, both to non-partners. H2: one discharge home in January only.
    return pd.DataFrame({
        "hospital_id": ["H1"] * 6 + ["H2"],
        "hospital_discharge_date": pd.to_datetime(["2024-01-03", "2024-01-09", "2024-01-20", "2024-01-31",
                                                   "2024-03-02", "2024-03-30", "2024-01-15"]),
        "pac_setting": ["snf", "hha", "irf", "none", "snf", "snf", "none"],
        "pac_is_partner": [True, True, False, False, False, False, False],
    })


def test_network_leakage_by_hand():
    out = network_leakage(_leakage_episodes(), chart=False)
    h1 = out[out["hospital_id"] == "H1"].set_index("period")
    assert h1["n"].tolist() == [3, 0, 2] and h1["events"].tolist() == [1, 0, 2]
    assert h1.loc[D("2024-01-01"), "rate"] == pytest.approx(1 / 3) and np.isnan(h1.loc[D("2024-02-01"), "rate"])
    lo, hi = wilson([1, 2], [3, 2])
    np.testing.assert_allclose(h1.loc[[D("2024-01-01"), D("2024-03-01")], "lower"], lo)
    np.testing.assert_allclose(h1.loc[[D("2024-01-01"), D("2024-03-01")], "upper"], hi)
    h2 = out[out["hospital_id"] == "H2"]
    assert len(h2) == 3 and (h2["n"] == 0).all()  # a hospital without post-acute discharges keeps its months
    assert set(out["method"]) == {"Wilson"}


def test_network_leakage_chart_and_network_total():
    out = network_leakage(_leakage_episodes())
    h1 = out[out["hospital_id"] == "H1"]
    assert h1["centre"].iloc[0] == pytest.approx(3 / 5)  # 3 leaked of 5 post-acute discharges
    assert set(h1["chart"]) == {"p-chart"} and pd.isna(h1["signal"].iloc[1])  # no rate in February
    assert out.loc[out["hospital_id"] == "H2", "centre"].isna().all()
    total = network_leakage(_leakage_episodes(), by=[], chart=False)
    assert total["n"].tolist() == [3, 0, 2] and total["events"].tolist() == [1, 0, 2]
    quarterly = network_leakage(_leakage_episodes(), by=[], freq="quarter", chart=False)
    assert quarterly["n"].tolist() == [5]


def test_network_leakage_counts_a_partner_only_from_its_partner_since():
    # A1 is a partner from 1 June 2024: home health before that date leaks, after it does not.
    st = pd.DataFrame({"stay_id": ["h1", "a1", "h2", "a2"], "patient_id": ["p", "p", "q", "q"],
                       "facility_id": ["H1", "A1", "H1", "A1"],
                       "admit_date": pd.to_datetime(["2024-05-01", "2024-05-06", "2024-06-01", "2024-06-05"]),
                       "discharge_date": pd.to_datetime(["2024-05-05", "2024-06-01", "2024-06-04", "2024-07-01"]),
                       "discharge_status": ["06", "01", "06", "01"]})
    out = network_leakage(post_acute_episodes(st, FACILITIES), chart=False)
    assert out["n"].tolist() == [1, 1] and out["events"].tolist() == [1, 0]


# --------------------------------------------------------------------------------------- expected spending


def _gamma_frame(rng, n, ratio=1.0, shape=1.5):
    x = rng.normal(0, 1, n)
    kind = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    mu = np.exp(8.0 + 0.3 * x + np.select([kind == "b", kind == "c"], [0.4, -0.2], 0.0))
    y = rng.gamma(shape, ratio * mu / shape)
    return pd.DataFrame({"x": x, "kind": kind, "mu": mu, "y": y})


def test_gamma_glm_coefficients_equal_a_direct_statsmodels_fit():
    rng = np.random.default_rng(5)
    df = _gamma_frame(rng, 1500)
    df["partner"] = rng.random(len(df)) < 0.3
    model = expected_spending(df, outcome="y", covariates=["x", "kind"], fit_mask=~df["partner"])
    fit = df[~df["partner"]]
    X = np.column_stack([np.ones(len(fit)), fit["kind"] == "b", fit["kind"] == "c", fit["x"]]).astype(float)
    direct = GLM(fit["y"].to_numpy(), X, family=families.Gamma(families.links.Log())).fit(cov_type="HC0")
    coef = model.coefficients.set_index("term")
    names = ["Intercept", "kind[T.b]", "kind[T.c]", "x"]
    np.testing.assert_allclose(coef.loc[names, "estimate"], direct.params, rtol=1e-8)
    np.testing.assert_allclose(coef.loc[names, "se"], direct.bse, rtol=1e-6)
    X_all = np.column_stack([np.ones(len(df)), df["kind"] == "b", df["kind"] == "c", df["x"]]).astype(float)
    np.testing.assert_allclose(model.expected, direct.predict(X_all), rtol=1e-8)
    assert model.n_fit == int((~df["partner"]).sum())
    assert model.dispersion == pytest.approx(direct.scale)
    assert abs(coef.loc["x", "estimate"] - 0.3) < 0.1



def test_text_covariates_give_patsys_own_design_and_an_unknown_value_is_named():
    # the model reads text covariates as Categoricals of their sorted values (carequal.cost._text_as_categories):
    # the design must be patsy's for the text itself, whatever the letters' case, accents or storage
    import patsy

    rng = np.random.default_rng(11)
    df = _gamma_frame(rng, 600)
    df["kind"] = np.array(["b", "B", "é", "a b", "ä"], dtype=object)[rng.integers(0, 5, len(df))]
    for kinds in (df["kind"].astype(object), df["kind"].astype("string"), df["kind"].astype("str")):
        model = expected_spending(df.assign(kind=kinds), outcome="y", covariates=["x", "kind"])
        direct = patsy.dmatrix("Q('x') + Q('kind')", df[["x", "kind"]].astype({"kind": object}),
                               return_type="dataframe")
        assert list(model.columns) == [c.replace("Q('", "").replace("')", "") for c in direct.columns]
        np.testing.assert_array_equal(model.design(df.assign(kind=kinds)), direct.to_numpy())
    with pytest.raises(ParameterError, match=r"a covariate has a value the fitted rows do not have.*'z'"):
        model.predict(df.assign(kind=df["kind"].where(df.index != 4, "z")))

def test_expected_spending_refuses_missing_and_zero_outcomes_and_drops_constant_columns():
    rng = np.random.default_rng(2)
    df = _gamma_frame(rng, 300).assign(stay_id=lambda d: [f"S{i}" for i in range(len(d))], employees=0.0)
    with pytest.raises(ParameterError, match=r"y is missing or not positive in 1 of the 300 rows.*S3"):
        expected_spending(df.assign(y=df["y"].where(df.index != 3)), outcome="y", covariates=["x"])
    with pytest.raises(ParameterError, match="not positive"):
        expected_spending(df.assign(y=df["y"].where(df.index != 3, 0.0)), outcome="y", covariates=["x"])
    with pytest.raises(ParameterError, match="covariate x is missing in 1 row"):
        expected_spending(df.assign(x=df["x"].where(df.index != 7)), outcome="y", covariates=["x"])
    with pytest.warns(CarequalWarning, match="employees constant"):
        model = expected_spending(df, outcome="y", covariates=["x", "employees"])
    assert model.dropped == ("employees",) and "employees" not in set(model.coefficients["term"])


# ---------------------------------------------------------------------------------------- spending ratios


def test_spending_ratio_by_hand():
    df = pd.DataFrame({"g": ["a", "a", "a", "b", "b"], "y": [100.0, 300.0, 200.0, 50.0, 150.0],
                       "mu": [200.0, 200.0, 200.0, 100.0, 100.0]})
    out = spending_ratio(df, by=["g"], observed="y", expected="mu").set_index("g")
    # group a: R = 600 / 600 = 1; residuals -100, 100, 0; V = 3/2 * 20,000; se(log R) = sqrt(V) / 600
    se = np.sqrt(1.5 * 20000) / 600
    z = stats.norm.ppf(0.975)
    assert out.loc["a", "ratio"] == 1.0
    assert out.loc["a", "lower"] == pytest.approx(np.exp(-z * se))
    assert out.loc["a", "upper"] == pytest.approx(np.exp(z * se))
    # group b: R = 1; residuals -50, 50 -> V = 2 * 5,000, se = sqrt(10,000) / 200
    assert out.loc["b", "upper"] == pytest.approx(np.exp(z * 0.5))
    assert out["method"].str.contains("delta method").all() and (out["level"] == 0.95).all()
    empty = spending_ratio(df, by=["g"], observed="y", expected="mu",
                           include_empty=pd.DataFrame({"g": ["a", "b", "c"]})).set_index("g")
    assert empty.loc["c", "n"] == 0 and np.isnan(empty.loc["c", "ratio"])
    with pytest.raises(ParameterError, match="y is missing in 1 row"):
        spending_ratio(df.assign(y=df["y"].where(df.index != 0)), by=["g"], observed="y", expected="mu")


def test_spending_ratio_refuses_expected_values_that_are_not_the_models():
    rng = np.random.default_rng(4)
    df = _gamma_frame(rng, 400)
    model = expected_spending(df, outcome="y", covariates=["x", "kind"])
    with pytest.raises(ParameterError, match="not the prediction of the model"):
        spending_ratio(df.assign(g="all"), by=["g"], observed="y", expected="mu", model=model)


def test_spending_ratio_interval_coverage_by_simulation():
    # 200 replicates: a reference group of 1,500 episodes fits the gamma GLM, a group of 400 episodes spends
    # 0.85 times its expected level. Coverage of the 95% interval with the model's error included, and with
    # the true expected values known (expected fixed), must both lie in [0.90, 0.99].
    rng = np.random.default_rng(2024)
    truth = 0.85
    hits_model = hits_known = 0
    reps = 200
    for _ in range(reps):
        ref = _gamma_frame(rng, 1500).assign(group=False)
        grp = _gamma_frame(rng, 400, ratio=truth).assign(group=True)
        df = pd.concat([ref, grp], ignore_index=True)
        model = expected_spending(df, outcome="y", covariates=["x", "kind"], fit_mask=~df["group"])
        df["expected"] = model.expected
        part = df[df["group"]]
        fitted = spending_ratio(part, by=["group"], observed="y", expected="expected", model=model).iloc[0]
        known = spending_ratio(part, by=["group"], observed="y", expected="mu").iloc[0]
        hits_model += fitted["lower"] <= truth <= fitted["upper"]
        hits_known += known["lower"] <= truth <= known["upper"]
    assert 0.90 <= hits_model / reps <= 0.99, hits_model / reps
    assert 0.90 <= hits_known / reps <= 0.99, hits_known / reps


def test_provider_spending_ratios_cover_hospitals_providers_and_partner_status():
    df = pd.DataFrame({"facility_id": ["H1", "H1", "H2", "H2"], "pac_facility_id": ["S1", None, "S1", "S2"],
                       "pac_setting": ["snf", "none", "snf", "snf"], "pac_is_partner": [True, False, True, False],
                       "y": [10.0, 5.0, 30.0, 20.0], "mu": [20.0, 5.0, 20.0, 10.0]})
    out = provider_spending_ratios(df, observed="y", expected="mu")
    assert out["unit_type"].value_counts().to_dict() == {"hospital": 2, "post_acute_provider": 2, "partner_status": 3}
    status = out[out["unit_type"] == "partner_status"].set_index("unit")
    assert status.loc["partner", "ratio"] == pytest.approx(40 / 40) and status.loc["non-partner", "ratio"] == 2.0
    prov = out[out["unit_type"] == "post_acute_provider"].set_index("unit")
    assert prov.loc["S1", "n"] == 2 and prov.loc["S1", "setting"] == "snf"


# ------------------------------------------------------------------------------------------------ recovery


RECOVERY_SEEDS = tuple(range(1, 15))


def _partner_pac_ratio(effect: float, seed: int) -> pd.Series:
    """30-day post-acute spending ratio of episodes that went to a partner provider after its start, expected
    from a gamma GLM fitted on the other post-acute episodes (risk covariates and the post-acute setting)."""
    cfg = SynthConfig(n_markets=2, patients_per_market=3000, payment_partnership_effect=effect, seed=seed,
                      truth_stays=False)
    tab = generate(cfg)
    # every coverage type counts: the generator pays Medicare Advantage and FFS stays alike, and the twenty
    # seeds below were sized for the cohort of both (the FFS-only default keeps about 70% of it)
    cohort = index_stays(tab["stays"], tab["facilities"], tab["patients"], tab["enrollment"],
                         rules=IndexRules(coverage=None))
    # leave 150 days after the window for post-acute stays still running at the end of the data
    end = tab["stays"]["discharge_date"].max() - pd.Timedelta(days=150)
    ep = episode_spending(cohort.index, tab["stays"], tab["facilities"], windows=(30,), data_end=end)
    ep = ep.merge(risk_covariates(cohort.index, tab["stays"])[["stay_id", *RISK_COVARIATES]], on="stay_id")
    d = ep[(ep["pac_setting"] != "none") & ep["exclusion_reason_30d"].isna()].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CarequalWarning)  # employees: none aged 65+ in the cohort
        model = expected_spending(d, outcome="spend_pac_30d", covariates=[*RISK_COVARIATES, "pac_setting"],
                                  fit_mask=~d["pac_is_partner"])
    d["expected"] = model.expected
    out = spending_ratio(d, by=["pac_is_partner"], observed="spend_pac_30d", expected="expected", model=model)
    return out.set_index("pac_is_partner").loc[True]


@pytest.fixture(scope="module")
def recovery() -> pd.DataFrame:
    rows = [{"effect": effect, "seed": seed, **_partner_pac_ratio(effect, seed)[["n", "ratio", "lower", "upper"]]}
            for effect in (-0.15, 0.0) for seed in RECOVERY_SEEDS]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("effect", [-0.15, 0.0])
def test_partner_spending_ratio_recovers_the_generators_payment_effect(recovery, effect):
    # The generator multiplies the payment of every post-acute stay at a partner (after partner_since) by
    # exp(effect); the model of the non-partner episodes says what the partner episodes would have cost
    # elsewhere. Fourteen seeds (2 markets x 3,000 patients each, everything else the default configuration):
    # the 95% interval must contain exp(effect) in at least 12 of them (it does in 13 for the effect, 12 for no
    # effect; with 20 seeds 18 of 20 each). With a true coverage of 95%, fewer than 12 of 14 happen with
    # probability 3.0% (1.6% for the 17 of 20 asked before, which took 40% longer); an interval covering 75% passes
    # with probability 28% (23% before). The estimates must centre on it (geometric mean 0.873 for
    # exp(-0.15) = 0.861 and 1.008 for 1 over 20 seeds; the 14 here are within 0.015 of the truth). A few of these
    # episodes' post-acute stays are at other providers (a second stay, or one after a readmission), which
    # pulls the ratio slightly towards 1. One seed alone is a 95% event, not a test: the default seed
    # 20240601, for one, puts the effect-0 ratio at 0.948 (upper limit 0.991), the lowest of the 60 seeds from
    # it (coverage 0.95, mean 1.001 over those 60).
    rows = recovery[recovery["effect"] == effect]
    truth = np.exp(effect)
    covered = (rows["lower"] <= truth) & (truth <= rows["upper"])
    assert (rows["n"] > 300).all()
    assert covered.sum() >= 12, rows
    assert abs(np.log(rows["ratio"]).mean() - effect) < 0.03, rows
    if effect < 0:
        assert (rows["upper"] < 1).sum() >= 12, rows  # the effect is detected (in all 14)
