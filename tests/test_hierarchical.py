"""The hierarchical logistic model against saved lme4::glmer (nAGQ = 1) results, and against simulated truth.

The reference numbers were produced by ``python benchmarks/bench_hierarchical.py --write-test-reference``
with R and lme4 (versions recorded in the JSON); this test does not need R.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.errors import ParameterError
from carequal.risk import HierarchicalLogit

DATA = Path(__file__).resolve().parent / "data"
COVARIATES = ["age10", "male", "dual", "comorbidities", "cond_hf", "cond_copd", "cond_pn"]


@pytest.fixture(scope="module")
def reference():
    data = pd.read_csv(DATA / "hierarchical_reference.csv.gz")
    lme4 = json.loads((DATA / "hierarchical_reference_lme4.json").read_text())
    model = HierarchicalLogit(COVARIATES).fit(data, outcome="y", group="facility")
    return data, lme4, model


def test_fixed_effects_and_sigma_match_glmer(reference):
    _, lme4, model = reference
    ours = model.params_.rename(index={"Intercept": "(Intercept)"})
    for term, value in lme4["fixef"].items():
        assert ours[term] == pytest.approx(value, abs=1e-3), term  # issue target: 0.01
    assert model.sigma_ == pytest.approx(lme4["sigma"], abs=1e-3)
    assert model.loglik_ == pytest.approx(lme4["loglik"], abs=1e-2)


def test_standard_errors_match_glmer(reference):
    _, lme4, model = reference
    se = model.bse_.rename(index={"Intercept": "(Intercept)"})
    for term, value in lme4["se"].items():
        assert se[term] == pytest.approx(value, rel=0.02), term


def test_facility_effects_and_pe_match_glmer(reference):
    data, lme4, model = reference
    effects = model.facility_effects().set_index("group")["effect"]
    for facility, value in lme4["ranef"].items():
        assert effects[facility] == pytest.approx(value, abs=2e-3), facility
    pe = model.predicted_expected(data, outcome="y", group="facility").set_index("group")
    worst = max(abs(pe.loc[f, "ratio"] - v) for f, v in lme4["pe"].items())
    assert worst < 0.005  # issue target
    assert len(pe) == len(lme4["pe"]) == 80


def test_predicted_expected_definitions(reference):
    data, _, model = reference
    pe = model.predicted_expected(data, outcome="y", group="facility")
    overall = data["y"].mean()
    assert np.allclose(pe["risk_standardised_rate"], pe["predicted"] / pe["expected"] * overall)
    assert np.allclose(pe["observed_to_expected"], pe["observed"] / pe["expected"])
    assert pe["n"].sum() == len(data) and pe["observed"].sum() == data["y"].sum()


def test_recovers_simulated_truth():
    """Simulated data with known β and σ: estimates within 3 standard errors; effects track the truth."""
    rng = np.random.default_rng(11)
    n_fac = 150
    g = rng.integers(0, n_fac, 60_000)
    x1, x2 = rng.normal(size=g.size), rng.random(g.size) < 0.3
    true_u = rng.normal(0, 0.35, n_fac)
    y = rng.random(g.size) < 1 / (1 + np.exp(-(-1.8 + 0.3 * x1 - 0.4 * x2 + true_u[g])))
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2.astype(int), "facility": g})
    m = HierarchicalLogit(["x1", "x2"]).fit(df, outcome="y", group="facility")
    for term, truth in (("Intercept", -1.8), ("x1", 0.3), ("x2", -0.4)):
        assert abs(m.params_[term] - truth) < 3 * m.bse_[term] + 0.02, term
    assert m.sigma_ == pytest.approx(0.35, abs=0.07)
    est = m.facility_effects().set_index("group")["effect"].sort_index().to_numpy()
    assert np.corrcoef(est, true_u)[0, 1] > 0.8


def test_formula_interface_and_errors():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"y": rng.random(3000) < 0.2, "cond": rng.choice(["hf", "pn", "ami"], 3000),
                       "facility": rng.integers(0, 20, 3000)})
    m = HierarchicalLogit(formula="C(cond)").fit(df, outcome="y", group="facility")
    assert any(name.startswith("C(cond)") for name in m.params_.index)
    with pytest.raises(ParameterError, match="either covariates"):
        HierarchicalLogit().fit(df, outcome="y", group="facility")


def test_bootstrap_intervals_cover_the_true_pe():
    """Simulated from the model itself: the facility-bootstrap 95% intervals cover the true P/E (computed with
    the true β and true facility effects) for at least 90% of facilities; effects rank like the truth."""
    from scipy import stats

    rng = np.random.default_rng(21)
    n_fac = 50
    size = rng.integers(120, 500, n_fac)
    g = np.repeat(np.arange(n_fac), size)
    x = rng.normal(size=g.size)
    true_u = rng.normal(0, 0.35, n_fac)
    beta0, beta1 = -1.6, 0.4
    y = rng.random(g.size) < 1 / (1 + np.exp(-(beta0 + beta1 * x + true_u[g])))
    df = pd.DataFrame({"y": y, "x": x, "facility": g})
    model = HierarchicalLogit(["x"]).fit(df, outcome="y", group="facility")
    boot = model.bootstrap_pe(df, outcome="y", group="facility", n_boot=80, seed=3).set_index("group")
    lin = beta0 + beta1 * x
    true_pe = (pd.Series(1 / (1 + np.exp(-(lin + true_u[g])))).groupby(g).sum()
               / pd.Series(1 / (1 + np.exp(-lin))).groupby(g).sum())
    covered = (boot["lower"] <= true_pe) & (true_pe <= boot["upper"])
    assert covered.mean() >= 0.9, covered.mean()
    assert (boot["lower"] <= boot["ratio"]).mean() > 0.95 and (boot["ratio"] <= boot["upper"]).mean() > 0.95
    rho = stats.spearmanr(model.facility_effects().set_index("group")["effect"], true_u).statistic
    assert rho >= 0.8


@pytest.fixture(scope="module")
def generator_fit():
    """carequal.synth data with 48 hospitals; index stays with risk covariates; the fitted model."""
    from carequal.cohorts import IndexRules, index_stays
    from carequal.measures import readmissions
    from carequal.schema import validate_tables
    from carequal.synth import SynthConfig, generate

    cfg = SynthConfig(seed=5, n_markets=4, patients_per_market=12000, hospitals_per_market=12, snf_per_market=6,
                      irf_per_market=2, ltch_per_market=1, hha_per_market=3)
    data = generate(cfg)
    tables = validate_tables({k: data[k] for k in ("facilities", "patients", "stays", "enrollment")}).tables
    cohort = index_stays(tables["stays"], tables["facilities"], tables["patients"], rules=IndexRules(min_age=None))
    d = cohort.index.merge(readmissions(cohort.index, tables["stays"], tables["facilities"]), on="stay_id")
    d = d.merge(data["truth_stays"][["stay_id", "p_readmit"]], on="stay_id", how="left")
    d["age10"] = (d["age"] - 75) / 10
    d["male"] = (d["sex"] == "M").astype(float)
    d["dual"] = d["dual_eligible"].astype(float)
    secondary = tables["stays"].set_index("stay_id")["secondary_dx"].reindex(d["stay_id"])
    d["n_secondary"] = secondary.str.count(";").add(1).fillna(0).to_numpy()
    covariates = ["age10", "male", "dual", "n_secondary"]
    for name in ("heart_failure", "ami", "pneumonia", "copd", "sepsis", "stroke", "hip_knee_replacement"):
        d[f"c_{name}"] = (d["condition"] == name).astype(float)
        covariates.append(f"c_{name}")
    for name, code in (("snf", "03"), ("hha", "06"), ("irf", "62"), ("ltch", "63")):
        d[f"d_{name}"] = (d["discharge_status"] == code).astype(float)
        covariates.append(f"d_{name}")
    d = d[d["p_readmit"].notna()].reset_index(drop=True)  # stays the generator drew an outcome for
    model = HierarchicalLogit(covariates).fit(d, outcome="unplanned_readmit_30d", group="facility_id")
    return data, d, model


def test_recovers_the_generator_hospital_effects(generator_fit):
    """The fitted hospital effects rank like the generator's truth (Spearman ≥ 0.8, hospitals with ≥ 100 stays)."""
    from scipy import stats

    data, _, model = generator_fit
    effects = model.facility_effects().merge(data["truth_facility_effects"], left_on="group",
                                             right_on="facility_id", suffixes=("", "_true"))
    big = effects[effects["n"] >= 100]
    assert len(big) >= 40
    assert stats.spearmanr(big["effect"], big["effect_true"]).statistic >= 0.8


def test_bootstrap_covers_the_generator_true_pe(generator_fit):
    """The true P/E of a hospital, from the generator's per-stay probabilities: Σ p_i / Σ expit(logit p_i − u_j)
    (its own effect u_j removed). The 95% facility-bootstrap intervals cover it for ≥ 90% of hospitals with
    ≥ 100 stays (44 of 48 at the time of writing; deterministic for the seeds)."""
    data, d, model = generator_fit
    boot = model.bootstrap_pe(d, outcome="unplanned_readmit_30d", group="facility_id", n_boot=100, seed=1)
    boot = boot.set_index("group")
    u = d["facility_id"].map(data["truth_facility_effects"].set_index("facility_id")["effect"]).to_numpy()
    p = d["p_readmit"].to_numpy(dtype=float)
    without_own = 1 / (1 + np.exp(-(np.log(p / (1 - p)) - u)))
    true_pe = pd.Series(p).groupby(d["facility_id"]).sum() / pd.Series(without_own).groupby(d["facility_id"]).sum()
    big = boot.index[boot["n"] >= 100]
    covered = (boot.loc[big, "lower"] <= true_pe[big]) & (true_pe[big] <= boot.loc[big, "upper"])
    assert len(big) >= 40 and covered.mean() >= 0.9, covered.mean()
