"""Hierarchical logistic model: carequal's Laplace fit against R's lme4::glmer (nAGQ = 1), in one run.

    python benchmarks/bench_hierarchical.py [--stays 100000] [--facilities 200] [--statsmodels]
    python benchmarks/bench_hierarchical.py --write-test-reference   # refresh tests/data/ (needs R + lme4)

Both fit ``y ~ age10 + male + dual + comorbidities + condition dummies + (1 | facility)`` to the same simulated
stays (known truth: facility intercepts ~ N(0, 0.3²)). Printed: wall time of each, the ratio glmer / carequal,
and the agreement (largest absolute difference of fixed effects, of σ, and of the facility P/E ratios).
Optionally statsmodels' BinomialBayesMixedGLM (variational Bayes) as a second peer.

R and lme4 come from Debian packages (``apt-get install r-base-core r-cran-lme4``); the script stops with a
clear message if ``Rscript`` is missing. The glmer time includes R start-up and reading the CSV (about 1 s;
printed separately). OPENBLAS_CORETYPE may be set on this machine; it is left as it is (carequal's fit is
dominated by element-wise numpy and sparse products, not BLAS).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from carequal.risk import HierarchicalLogit

ROOT = Path(__file__).resolve().parents[1]
COVARIATES = ["age10", "male", "dual", "comorbidities", "cond_hf", "cond_copd", "cond_pn"]

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
t0 <- Sys.time()
d <- read.csv(args[1])
d$facility <- factor(d$facility)
t1 <- Sys.time()
m <- glmer(y ~ age10 + male + dual + comorbidities + cond_hf + cond_copd + cond_pn + (1 | facility),
           data = d, family = binomial, nAGQ = 1)
t2 <- Sys.time()
fe <- fixef(m)
re <- ranef(m)$facility
eta0 <- as.vector(model.matrix(m) %*% fe)
u <- re[as.character(d$facility), 1]
pe <- aggregate(data.frame(p = plogis(eta0 + u), e = plogis(eta0)), list(facility = d$facility), sum)
se <- sqrt(diag(as.matrix(vcov(m))))
names(se) <- names(fe)
out <- list(fixef = as.list(fe), se = as.list(se), sigma = as.numeric(attr(VarCorr(m)$facility, "stddev")),
            loglik = as.numeric(logLik(m)), ranef = setNames(as.list(re[, 1]), rownames(re)),
            pe = setNames(as.list(pe$p / pe$e), as.character(pe$facility)),
            seconds_fit = as.numeric(difftime(t2, t1, units = "secs")),
            seconds_read = as.numeric(difftime(t1, t0, units = "secs")),
            lme4 = as.character(packageVersion("lme4")), r = R.version.string)
writeLines(paste0("{", paste0(sapply(names(out), function(k) {
  v <- out[[k]]
  if (is.list(v)) paste0('"', k, '": {',
                         paste0('"', names(v), '": ', sprintf("%.12g", unlist(v)), collapse = ", "), "}")
  else if (is.character(v)) paste0('"', k, '": "', v, '"')
  else paste0('"', k, '": ', sprintf("%.12g", v))
}), collapse = ", "), "}"), args[2])
"""


def simulate(n_stays: int, n_facilities: int, seed: int = 20261127) -> pd.DataFrame:
    """Stays with a readmission-like outcome and a known facility random intercept (SD 0.3)."""
    rng = np.random.default_rng(seed)
    size = rng.gamma(2.0, 1.0, n_facilities)
    facility = rng.choice(n_facilities, size=n_stays, p=size / size.sum())
    age10 = rng.uniform(0, 3.5, n_stays)
    male = rng.random(n_stays) < 0.45
    dual = rng.random(n_stays) < 0.18
    comorbidities = rng.poisson(2.2, n_stays)
    condition = rng.choice(4, size=n_stays, p=[0.55, 0.2, 0.12, 0.13])
    effect = rng.normal(0, 0.3, n_facilities)
    eta = (-2.3 + 0.08 * age10 + 0.06 * male + 0.2 * dual + 0.13 * comorbidities + 0.4 * (condition == 1)
           + 0.3 * (condition == 2) + 0.1 * (condition == 3) + effect[facility])
    y = rng.random(n_stays) < 1 / (1 + np.exp(-eta))
    return pd.DataFrame({"y": y.astype(int), "age10": age10.round(6), "male": male.astype(int),
                         "dual": dual.astype(int), "comorbidities": comorbidities,
                         "cond_hf": (condition == 1).astype(int), "cond_copd": (condition == 2).astype(int),
                         "cond_pn": (condition == 3).astype(int), "facility": [f"F{i:04d}" for i in facility]})


def run_glmer(data: pd.DataFrame, workdir: Path) -> tuple[dict, float]:
    if shutil.which("Rscript") is None:
        sys.exit("Rscript not found: install R and lme4 (apt-get install r-base-core r-cran-lme4)")
    csv, script, out = workdir / "data.csv", workdir / "fit.R", workdir / "glmer.json"
    data.to_csv(csv, index=False)
    script.write_text(R_SCRIPT)
    started = time.perf_counter()
    subprocess.run(["Rscript", str(script), str(csv), str(out)], check=True)
    wall = time.perf_counter() - started
    return json.loads(out.read_text()), wall


def run_carequal(data: pd.DataFrame) -> tuple[HierarchicalLogit, float]:
    started = time.perf_counter()
    model = HierarchicalLogit(COVARIATES).fit(data, outcome="y", group="facility")
    return model, time.perf_counter() - started


def compare(model: HierarchicalLogit, data: pd.DataFrame, ref: dict) -> dict:
    ours = model.params_.rename(index={"Intercept": "(Intercept)"})
    fe_diff = max(abs(ours[k] - v) for k, v in ref["fixef"].items())
    pe = model.predicted_expected(data, outcome="y", group="facility").set_index("group")["ratio"]
    pe_diff = max(abs(pe[k] - v) for k, v in ref["pe"].items())
    return {"max_abs_fixef_diff": fe_diff, "sigma_diff": abs(model.sigma_ - ref["sigma"]),
            "max_abs_pe_diff": pe_diff, "loglik_diff": model.loglik_ - ref["loglik"]}


def write_test_reference() -> None:
    """Small dataset + glmer results for tests/test_hierarchical.py (the test itself does not need R)."""
    data = simulate(20_000, 80, seed=42)
    target = ROOT / "tests" / "data"
    target.mkdir(parents=True, exist_ok=True)
    data.to_csv(target / "hierarchical_reference.csv.gz", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        ref, _ = run_glmer(data, Path(tmp))
    ref = {k: v for k, v in ref.items() if k not in ("seconds_fit", "seconds_read")}
    (target / "hierarchical_reference_lme4.json").write_text(json.dumps(ref, indent=1, sort_keys=True))
    print(f"wrote {target / 'hierarchical_reference.csv.gz'} and the lme4 results beside it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stays", type=int, default=100_000)
    parser.add_argument("--facilities", type=int, default=200)
    parser.add_argument("--statsmodels", action="store_true", help="also time BinomialBayesMixedGLM")
    parser.add_argument("--write-test-reference", action="store_true")
    args = parser.parse_args()
    if args.write_test_reference:
        write_test_reference()
        return
    data = simulate(args.stays, args.facilities)
    with tempfile.TemporaryDirectory() as tmp:
        ref, glmer_wall = run_glmer(data, Path(tmp))
    model, ours = run_carequal(data)
    agreement = compare(model, data, ref)
    rows = [("carequal HierarchicalLogit (Laplace)", ours, ""),
            ("lme4::glmer nAGQ=1 (fit only)", ref["seconds_fit"], f"{ref['seconds_fit'] / ours:.0f}x slower"),
            ("lme4::glmer incl. R start + CSV read", glmer_wall, f"{glmer_wall / ours:.0f}x slower")]
    if args.statsmodels:
        from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

        started = time.perf_counter()
        BinomialBayesMixedGLM.from_formula("y ~ " + " + ".join(COVARIATES), {"facility": "0 + C(facility)"},
                                           data).fit_vb()
        sm_time = time.perf_counter() - started
        rows.append(("statsmodels BinomialBayesMixedGLM.fit_vb", sm_time, f"{sm_time / ours:.0f}x slower"))
    print(f"\n{args.stays:,} stays, {args.facilities} facilities; {platform.processor() or platform.machine()}, "
          f"R {ref['r']}, lme4 {ref['lme4']}")
    print(f"{'fit':<42} {'seconds':>8}  vs carequal")
    for name, seconds, ratio in rows:
        print(f"{name:<42} {seconds:>8.2f}  {ratio}")
    ratio = ref["seconds_fit"] / ours
    print(f"\nspeed-up over glmer (fit only): {ratio:.0f}x  (target >= 20x: {'PASS' if ratio >= 20 else 'FAIL'})")
    print(f"fixed effects max |diff| {agreement['max_abs_fixef_diff']:.2e} (target < 0.01: "
          f"{'PASS' if agreement['max_abs_fixef_diff'] < 0.01 else 'FAIL'})")
    print(f"P/E max |diff| {agreement['max_abs_pe_diff']:.2e} (target < 0.005: "
          f"{'PASS' if agreement['max_abs_pe_diff'] < 0.005 else 'FAIL'})")
    print(f"sigma: carequal {model.sigma_:.5f}, glmer {ref['sigma']:.5f}; "
          f"Laplace log-likelihood difference {agreement['loglik_diff']:+.2e}")


if __name__ == "__main__":
    main()
