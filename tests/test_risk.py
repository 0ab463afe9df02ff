"""Comorbidity indices: map-driven checks, hand-worked scores, and agreement with pycomorb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carequal.errors import ParameterError
from carequal.risk import HIERARCHIES, apply_hierarchy, code_flags, comorbidities, comorbidity_map

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.mark.parametrize("scheme", ["charlson", "elixhauser"])
def test_every_prefix_flags_exactly_its_categories(scheme):
    """Map-driven: a patient with one code equal to a prefix (plus a trailing character) flags exactly the
    categories that list a prefix of that code, before and after the hierarchy."""
    table = comorbidity_map(scheme)
    prefixes = {key: p.split("|") for key, p in zip(table["key"], table["prefixes"], strict=True)}
    every = sorted({p for ps in prefixes.values() for p in ps})
    codes = pd.Series([p + "9" if len(p) < 7 else p for p in every])
    flags = code_flags(codes, scheme=scheme)
    for code, (_, row) in zip(codes, flags.iterrows(), strict=True):
        expected = {key for key, ps in prefixes.items() if any(code.startswith(p) for p in ps)}
        assert set(row.index[row.to_numpy()]) == expected, code
    # after the hierarchy a severe category removes its mild one
    stays = pd.DataFrame({"stay_id": [f"s{i}" for i in range(len(codes))], "principal_dx": "Z000",
                          "secondary_dx": codes.to_numpy()})
    scored = comorbidities(stays, scheme=scheme).set_index("stay_id")
    for severe, mild in HIERARCHIES[scheme]:
        assert not (scored[severe] & scored[mild]).any()


def test_charlson_hand_worked_scores():
    stays = pd.DataFrame({
        "stay_id": ["a", "b", "c", "d"],
        "principal_dx": ["I509", "J189", "J189", "J189"],
        # a: CHF + diabetes with complications + moderate/severe and mild liver (hierarchy keeps severe)
        # b: solid cancer + metastases (hierarchy keeps metastatic); c: nothing; d: AIDS + dementia
        "secondary_dx": ["E1122;K766;K7030", "C3490;C787", np.nan, "B20;F0390"],
    })
    quan = comorbidities(stays, include_principal=True).set_index("stay_id")["score"]
    assert quan.to_dict() == {"a": 2 + 1 + 4, "b": 6, "c": 0, "d": 4 + 2}
    orig = comorbidities(stays, include_principal=True, weights="charlson1987").set_index("stay_id")["score"]
    assert orig.to_dict() == {"a": 1 + 2 + 3, "b": 6, "c": 0, "d": 6 + 1}
    # the principal diagnosis is not a comorbidity unless asked
    assert comorbidities(stays).set_index("stay_id").loc["a", "score"] == 1 + 4  # CHF is only the principal


def test_elixhauser_van_walraven_hand_worked():
    stays = pd.DataFrame({"stay_id": ["a"], "principal_dx": ["J189"],
                          # CHF 7, arrhythmia 5, obesity −4, solid tumour 4 but metastatic 12 wins, depression −3
                          "secondary_dx": ["I5022;I4891;E669;C3490;C787;F329"]})
    out = comorbidities(stays, scheme="elixhauser").iloc[0]
    assert out["score"] == 7 + 5 - 4 + 12 - 3 and not out["solidtum"]


def test_poa_and_lookback():
    stays = pd.DataFrame({
        "stay_id": ["old", "older", "idx"], "patient_id": "p",
        "admit_date": pd.to_datetime(["2024-01-01", "2022-01-01", "2024-06-01"]),
        "discharge_date": pd.to_datetime(["2024-01-05", "2022-01-05", "2024-06-05"]),
        "principal_dx": ["I219", "F0390", "J189"],
        "secondary_dx": ["E119", np.nan, "N184;K7030"], "secondary_poa": ["Y", np.nan, "Y;N"],
    })
    idx = stays[stays["stay_id"] == "idx"]
    base = comorbidities(stays, index=idx).iloc[0]
    assert base["rend"] and base["mld"] and not base["mi"]
    poa = comorbidities(stays, index=idx, poa_only=True).iloc[0]
    assert poa["rend"] and not poa["mld"]  # K70.30 arose in hospital
    hist = comorbidities(stays, index=idx, lookback_days=365).iloc[0]
    # the stay 5 months earlier adds MI (its principal) and diabetes; the one 2.5 years earlier is too old
    assert hist["mi"] and hist["diab"] and not hist["dementia"]
    assert hist["score"] == 1 + 2 + 0 + 0  # rend 1, mld 2, MI 0, diabetes 0 (Quan 2011)


def test_unknown_scheme_and_weights():
    with pytest.raises(ParameterError, match="unknown comorbidity scheme"):
        comorbidity_map("deyo")
    st = pd.DataFrame({"stay_id": ["a"], "principal_dx": ["I509"], "secondary_dx": [np.nan]})
    with pytest.raises(ParameterError, match="unknown weights"):
        comorbidities(st, scheme="elixhauser", weights="quan2011")


def test_apply_hierarchy_does_not_mutate():
    f = pd.DataFrame({"hypc": [True], "hypunc": [True], "diabc": [False], "diabunc": [True],
                      "metacanc": [False], "solidtum": [True]})
    before = f.copy()
    out = apply_hierarchy(f, scheme="elixhauser")
    assert not out["hypunc"].iloc[0] and out["diabunc"].iloc[0]
    pd.testing.assert_frame_equal(f, before)


@pytest.mark.parametrize(("scheme", "weights", "implementation", "their_weights", "score_col"), [
    ("charlson", "charlson1987", "quan", None, "Charlson Comorbidity Index"),
    ("elixhauser", "van_walraven", "quan", "van_walraven", "Elixhauser Comorbidity Index"),
])
def test_agrees_with_pycomorb_on_the_sample(scheme, weights, implementation, their_weights, score_col):
    """Independent implementation (pycomorb, MIT): same flags and scores for every acute stay of the sample.
    pycomorb's Charlson "quan" uses the Quan 2005 codes with the Charlson 1987 weights."""
    pycomorb = pytest.importorskip("pycomorb")
    stays = pd.read_csv(SAMPLE / "stays.csv", dtype=str, nrows=6000)
    ours = comorbidities(stays, scheme=scheme, weights=weights, include_principal=True).set_index("stay_id")
    codes = stays.assign(code=stays["principal_dx"] + ";" + stays["secondary_dx"].fillna(""))
    codes = codes.assign(code=codes["code"].str.split(";")).explode("code")
    codes = codes[codes["code"] != ""][["stay_id", "code"]].rename(columns={"stay_id": "id"}).assign(age=70)
    kwargs = {"weights": their_weights} if their_weights else {}
    theirs = pycomorb.comorbidity(scheme, codes, implementation=implementation, return_categories=True, **kwargs)
    theirs = pd.DataFrame(theirs).set_index("id").reindex(ours.index)
    assert np.array_equal(ours["score"].to_numpy(), theirs[score_col].fillna(0).to_numpy(dtype=int))
    american = {"tumour": "tumor", "anaemia": "anemia", "leukaemia": "leukemia", "rheumatic": "rheumatic"}
    names = {}
    for key, name in zip(comorbidity_map(scheme)["key"], comorbidity_map(scheme)["category"], strict=True):
        for british, us in american.items():
            name = name.replace(british, us)
        names[key] = name
    matched = 0
    for key in names:
        col = next((c for c in theirs.columns if c.lower().startswith(names[key].lower()[:18])), None)
        if col is None:
            continue
        matched += 1
        assert np.array_equal(ours[key].to_numpy(), theirs[col].fillna(0).astype(bool).to_numpy()), key
    assert matched >= len(names) - 1
    assert ours["score"].gt(0).mean() > 0.3  # the comparison is not vacuous


# ------------------------------------------------------------------------------------ logistic risk model


def test_logistic_model_diagnostics_on_simulated_data():
    from scipy import stats

    from carequal.risk import LogisticRiskModel, brier_score, c_statistic, calibration_table, hosmer_lemeshow

    rng = np.random.default_rng(5)
    df = pd.DataFrame({"age10": rng.uniform(0, 3.5, 20_000), "score": rng.poisson(2, 20_000),
                       "condition": rng.choice(["hf", "pn", "other"], 20_000)})
    eta = -2 + 0.1 * df["age10"] + 0.15 * df["score"] + np.where(df["condition"] == "hf", 0.4, 0)
    df["y"] = rng.random(len(df)) < 1 / (1 + np.exp(-eta))
    model = LogisticRiskModel(formula="age10 + score + C(condition)").fit(df, outcome="y")
    params = model.result_.params
    assert abs(params["score"] - 0.15) < 3 * model.result_.bse["score"]
    p = model.predict(df)
    c = c_statistic(df["y"], p)
    # the c-statistic is the Mann-Whitney U divided by n1·n0
    u = stats.mannwhitneyu(p[df["y"]], p[~df["y"]]).statistic
    assert c["c"] == pytest.approx(u / (df["y"].sum() * (~df["y"]).sum()))
    assert c["lower"] < c["c"] < c["upper"] and 0.55 < c["c"] < 0.75
    assert brier_score(df["y"], p) == pytest.approx(np.mean((p - df["y"]) ** 2))
    cal = calibration_table(df["y"], p)
    assert len(cal) == 10 and cal["n"].sum() == len(df)
    assert cal["observed"].sum() == pytest.approx(cal["expected"].sum(), rel=1e-6)  # GLM with intercept
    assert hosmer_lemeshow(df["y"], p)["p_value"] > 0.001  # well specified
    ors = model.odds_ratios_.set_index("term")
    assert ors.loc["score", "odds_ratio"] == pytest.approx(np.exp(params["score"]))
    assert ors.loc["score", "lower"] < ors.loc["score", "odds_ratio"] < ors.loc["score", "upper"]


def test_c_statistic_hand_worked():
    from carequal.risk import c_statistic

    # pairs (positive, negative): (0.35, 0.1) ✓, (0.35, 0.4) ✗, (0.8, 0.1) ✓, (0.8, 0.4) ✓ → 3/4
    assert c_statistic([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["c"] == 0.75
    with pytest.raises(ParameterError, match="both outcomes"):
        c_statistic([1, 1], [0.2, 0.3])
