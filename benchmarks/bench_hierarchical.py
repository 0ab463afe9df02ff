"""Hierarchical logistic model: carequal's Laplace fit + P/E against R's lme4::glmer (nAGQ = 1) fit, in one run.

    python benchmarks/bench_hierarchical.py [--sizes 100000:200 1000000:3000] [--repeats 3] [--warm 3]
                                            [--glmer-repeats 3] [--reuse-glmer] [--statsmodels]
    python benchmarks/bench_hierarchical.py --write-test-reference   # refresh tests/data/ (needs R + lme4)

Both fit ``y ~ age10 + male + dual + comorbidities + condition dummies + (1 | facility)`` to the same simulated
stays (known truth: facility intercepts ~ N(0, 0.3²)), read from the same CSV file.

What is timed:

* **carequal: the fit and the CMS predicted/expected table** — ``HierarchicalLogit(...).fit(data)`` followed by
  ``predicted_expected(data)``, the two calls a risk-adjusted comparison makes (standard errors are not part of
  it: they are computed when first read, and timed separately as "SEs on demand"). Each of ``--repeats`` fresh
  child processes imports carequal and reads the data (not timed), then times its **first** fit + P/E (the
  fit's lazy imports included, ``scipy.optimize`` the largest: "first fit in a fresh process") and ``--warm``
  more in the same process ("warm"). Each child also times ``import scipy.optimize`` alone, in a separate
  fresh interpreter after its fits, to show how much of the first fit it is.
* **glmer: the fit alone** (``glmer(...)`` between two ``Sys.time()`` calls, inside R: R's start-up, loading lme4
  and reading the CSV are not counted, and neither are ``ranef``, the P/E or ``vcov``), in ``--glmer-repeats``
  fresh ``Rscript`` processes. R and lme4 come from Debian packages (``apt-get install r-base-core r-cran-lme4``);
  glmer is skipped with a note when ``Rscript`` is missing.
* optionally (``--statsmodels``) statsmodels' ``BinomialBayesMixedGLM`` (variational Bayes: another estimator),
  fit alone, once.

Reported per size: minimum and median of each, the ratios glmer / carequal (median against median, minimum
against minimum, and glmer's median against carequal's first fit in a fresh process), and the agreement with
glmer (largest absolute difference of the fixed effects, of σ, of the facility P/E ratios, of the Laplace
log-likelihood; largest relative difference of the standard errors against ``vcov``). Targets (issue 18): fit +
P/E at least 200x faster than glmer's fit (median against median) and at least 150x against carequal's first fit
in a fresh process, at 100k stays / 200 facilities and at 1M stays / 3,000 facilities; fixed effects and P/E
within 2e-5 of glmer.

The machine is shared: before the first measurement the busy CPU of the machine is read over 5 s, and every
child's wall time comes with the cores other processes kept busy meanwhile and the 1-minute load average
(before / highest / after), flagged ``contended`` past :mod:`benchmarks.report`'s limits.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine (older OpenBLAS builds need them; they slow a
current numpy). The fit's passes run through numpy's BLAS (``X β`` and ``X' r`` each evaluation), so the carequal
children run with both unset, together, and record the BLAS kernel and threads threadpoolctl reports; the R
children keep the environment as it is (R's BLAS is recorded too). glmer's results are kept in the work folder
(``--workdir``) with the data they were measured on; ``--reuse-glmer`` times carequal again against them (the
report says when the glmer figures were measured).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (benchmarks/report.py)

ROOT = Path(__file__).resolve().parents[1]
COVARIATES = ["age10", "male", "dual", "comorbidities", "cond_hf", "cond_copd", "cond_pn"]
PACKAGES = ("numpy", "scipy", "pandas", "threadpoolctl", "statsmodels")
TARGET_MEDIAN, TARGET_FIRST, TARGET_ACCURACY = 200.0, 150.0, 2e-5

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
            lme4 = as.character(packageVersion("lme4")), r = R.version.string,
            blas = basename(extSoftVersion()[["BLAS"]]))
writeLines(paste0("{", paste0(sapply(names(out), function(k) {
  v <- out[[k]]
  if (is.list(v)) paste0('"', k, '": {',
                         paste0('"', names(v), '": ', sprintf("%.12g", unlist(v)), collapse = ", "), "}")
  else if (is.character(v)) paste0('"', k, '": "', v, '"')
  else paste0('"', k, '": ', sprintf("%.12g", v))
}), collapse = ", "), "}"), args[2])
"""

CHILD = r"""
import json, os, sys, time
import numpy as np, pandas as pd
from threadpoolctl import threadpool_info
from carequal.risk import HierarchicalLogit

csv, out, warm = sys.argv[1], sys.argv[2], int(sys.argv[3])
covariates = json.loads(sys.argv[4])
data = pd.read_csv(csv)
times = []
for _ in range(1 + warm):
    t0 = time.perf_counter()
    model = HierarchicalLogit(covariates).fit(data, outcome="y", group="facility")
    pe = model.predicted_expected(data, outcome="y", group="facility")
    times.append(time.perf_counter() - t0)
t0 = time.perf_counter()
bse = model.bse_
se_seconds = time.perf_counter() - t0
import subprocess
probe = "import time; t = time.perf_counter(); import scipy.optimize; print(time.perf_counter() - t)"
scipy_import = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
blas = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')}, {i['num_threads']} threads ({i['prefix']})"
        for i in threadpool_info() if i["user_api"] == "blas"]
json.dump({"first": times[0], "warm": times[1:], "se_seconds": se_seconds, "scipy_import": scipy_import,
           "params": model.params_.to_dict(), "se": bse.to_dict(), "sigma": model.sigma_, "loglik": model.loglik_,
           "pe": dict(zip(pe["group"].astype(str), pe["ratio"])), "iterations": model.convergence_.iterations,
           "evaluations": model.convergence_.evaluations, "convergence": model.convergence_.describe(),
           "blas": blas, "openblas_env": {k: os.environ.get(k, "not set")
                                          for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}}, open(out, "w"))
"""

STATSMODELS_CHILD = r"""
import json, sys, time
import pandas as pd
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

data = pd.read_csv(sys.argv[1])
covariates = json.loads(sys.argv[3])
t0 = time.perf_counter()
BinomialBayesMixedGLM.from_formula("y ~ " + " + ".join(covariates), {"facility": "0 + C(facility)"}, data).fit_vb()
json.dump({"seconds": time.perf_counter() - t0}, open(sys.argv[2], "w"))
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
    """glmer on ``data`` in one Rscript process (for the test reference; the benchmark uses :func:`glmer_child`)."""
    if shutil.which("Rscript") is None:
        sys.exit("Rscript not found: install R and lme4 (apt-get install r-base-core r-cran-lme4)")
    csv, script, out = workdir / "data.csv", workdir / "fit.R", workdir / "glmer.json"
    data.to_csv(csv, index=False)
    script.write_text(R_SCRIPT)
    started = time.perf_counter()
    subprocess.run(["Rscript", str(script), str(csv), str(out)], check=True)
    wall = time.perf_counter() - started
    return json.loads(out.read_text()), wall


def write_test_reference() -> None:
    """Small dataset + glmer results for tests/test_hierarchical.py (the test itself does not need R)."""
    data = simulate(20_000, 80, seed=42)
    target = ROOT / "tests" / "data"
    target.mkdir(parents=True, exist_ok=True)
    data.to_csv(target / "hierarchical_reference.csv.gz", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        ref, _ = run_glmer(data, Path(tmp))
    ref = {k: v for k, v in ref.items() if k not in ("seconds_fit", "seconds_read", "blas")}
    (target / "hierarchical_reference_lme4.json").write_text(json.dumps(ref, indent=1, sort_keys=True))
    print(f"wrote {target / 'hierarchical_reference.csv.gz'} and the lme4 results beside it")


# ------------------------------------------------------------------------------------------------ children


def numpy_env_command() -> list[str]:
    """``env`` with the OpenBLAS variables unset (both together) and carequal importable from the scratch folder."""
    import carequal

    path = str(Path(carequal.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH", "")) if p)
    return ["env", "-u", "OPENBLAS_CORETYPE", "-u", "OPENBLAS_L2_SIZE", f"PYTHONPATH={pythonpath}"]


def carequal_child(csv: Path, logs: Path, label: str, warm: int, own_load: float) -> dict:
    script, out = logs / "carequal_child.py", logs / f"{label}.json"
    script.write_text(CHILD)
    cmd = [*numpy_env_command(), sys.executable, str(script), str(csv), str(out), str(warm), json.dumps(COVARIATES)]
    res = report.measure(label, cmd, logs, timeout=3600, own_load=own_load)
    return {**_strip(res), **json.loads(out.read_text())}


def glmer_child(csv: Path, logs: Path, label: str) -> dict:
    script, out = logs / "fit.R", logs / f"{label}.json"
    script.write_text(R_SCRIPT)
    res = report.measure(label, ["Rscript", str(script), str(csv), str(out)], logs, timeout=7200, own_load=1.0)
    return {**_strip(res), **json.loads(out.read_text()), "measured": time.strftime("%Y-%m-%d %H:%M %Z")}


def statsmodels_child(csv: Path, logs: Path, label: str) -> dict:
    script, out = logs / "statsmodels_child.py", logs / f"{label}.json"
    script.write_text(STATSMODELS_CHILD)
    cmd = [*numpy_env_command(), sys.executable, str(script), str(csv), str(out), json.dumps(COVARIATES)]
    res = report.measure(label, cmd, logs, timeout=3600, own_load=1.0)
    return {**_strip(res), **json.loads(out.read_text())}


def _strip(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "output"}


# ------------------------------------------------------------------------------------------------ one size


def data_file(n_stays: int, n_facilities: int, workdir: Path) -> tuple[Path, str]:
    """The simulated stays as CSV (made once per size in the work folder) and a digest of the file."""
    csv = workdir / f"stays_{n_stays}_{n_facilities}.csv"
    if not csv.exists():
        simulate(n_stays, n_facilities).to_csv(csv, index=False)
    return csv, hashlib.sha1(csv.read_bytes()).hexdigest()[:12]


def bench_one(n_stays: int, n_facilities: int, args, own_load: float) -> dict:
    tag = f"{n_stays}_{n_facilities}"
    csv, digest = data_file(n_stays, n_facilities, args.workdir)
    logs = args.workdir / "logs"
    row: dict = {"stays": n_stays, "facilities": n_facilities, "data": digest, "runs": []}
    carequal = [carequal_child(csv, logs, f"carequal_{tag}_{i}", args.warm, own_load) for i in range(args.repeats)]
    row["runs"] += [{"what": "carequal fit + P/E", **_run(r)} for r in carequal]
    firsts = [r["first"] for r in carequal]
    warms = [t for r in carequal for t in r["warm"]] or firsts
    row.update(first_min=min(firsts), first_median=statistics.median(firsts), warm_min=min(warms),
               warm_median=statistics.median(warms), se_seconds=statistics.median(r["se_seconds"] for r in carequal),
               scipy_import=statistics.median(r["scipy_import"] for r in carequal),
               iterations=carequal[0]["iterations"], evaluations=carequal[0]["evaluations"],
               convergence=carequal[0]["convergence"], blas=carequal[0]["blas"],
               openblas_env=carequal[0]["openblas_env"])
    ours = carequal[0]
    cache = args.workdir / f"glmer_{tag}_{digest}.json"
    glmer: list[dict] = json.loads(cache.read_text()) if args.reuse_glmer and cache.exists() else []
    row["glmer_reused"] = bool(glmer)
    if not glmer and shutil.which("Rscript") is not None and n_stays <= args.glmer_max_stays:
        for i in range(args.glmer_repeats):  # each run kept as soon as it ends (a 1M run takes 10 to 45 minutes)
            glmer.append(glmer_child(csv, logs, f"glmer_{tag}_{i}"))
            cache.write_text(json.dumps(glmer))
    if glmer:
        fits = [g["seconds_fit"] for g in glmer]
        ref = glmer[0]
        row["runs"] += [{"what": "glmer fit (wall: R start-up + read + fit + outputs)", **_run(g),
                         "seconds": g["seconds_fit"], "when": g["measured"]} for g in glmer]
        row.update(glmer_min=min(fits), glmer_median=statistics.median(fits), glmer_n=len(fits),
                   glmer_when=glmer[-1]["measured"], versions=f"{ref['r']}, lme4 {ref['lme4']}, BLAS {ref['blas']}")
        row.update(ratio_median=row["glmer_median"] / row["warm_median"], ratio_min=row["glmer_min"] / row["warm_min"],
                   ratio_first=row["glmer_median"] / row["first_median"])
        fixef = {("(Intercept)" if k == "Intercept" else k): v for k, v in ours["params"].items()}
        se = {("(Intercept)" if k == "Intercept" else k): v for k, v in ours["se"].items()}
        row.update(fixef_diff=max(abs(fixef[k] - v) for k, v in ref["fixef"].items()),
                   sigma_diff=abs(ours["sigma"] - ref["sigma"]), loglik_diff=ours["loglik"] - ref["loglik"],
                   pe_diff=max(abs(ours["pe"][k] - v) for k, v in ref["pe"].items()),
                   se_rel_diff=max(abs(se[k] / v - 1) for k, v in ref["se"].items()))
    if args.statsmodels and n_stays <= args.statsmodels_max_stays:
        sm = statsmodels_child(csv, logs, f"statsmodels_{tag}")
        row["runs"].append({"what": "statsmodels VB fit", **_run(sm), "seconds": sm["seconds"]})
        row.update(statsmodels_s=sm["seconds"], ratio_statsmodels=sm["seconds"] / row["warm_median"])
    return row


def _run(res: dict) -> dict:
    keys = ("label", "wall_seconds", "other_cores", "load_before", "load_max", "load_after", "contended")
    return {k: res[k] for k in keys}


# ------------------------------------------------------------------------------------------------ report


def write_report(rows: list[dict], args, idle: tuple[float, float], command: str) -> list[str]:
    info = report.machine_info(PACKAGES)
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE", "not set")
    if rows:
        env = rows[0]["openblas_env"]
        info["carequal children: OpenBLAS variables"] = ", ".join(f"{k} {v}" for k, v in env.items())
        info["carequal children: BLAS (threadpoolctl)"] = "; ".join(rows[0]["blas"])
    glmer_rows = [r for r in rows if "versions" in r]
    if glmer_rows:
        info["peer"] = glmer_rows[0]["versions"]
    info["before the first measurement"] = f"load average {idle[0]:.2f}, other processes {idle[1]:.2f} cores"
    lines = ["# Hierarchical logistic model: carequal fit + P/E against lme4::glmer (nAGQ=1) fit", "",
             f"Command: `{command}`. Produced by the script; what is timed is in its docstring.", ""]
    lines += report.markdown_table(["what", "value"], [[k, v] for k, v in info.items()])

    def f(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "not run"

    lines += ["## Times (seconds) and ratios", ""]
    lines += report.markdown_table(
        ["stays", "facilities", "carequal fit + P/E, warm: min / median", "first fit + P/E in a fresh process: "
         "min / median", "import scipy.optimize alone (median)", "SEs on demand", "glmer fit: min / median (runs)",
         "glmer / carequal: median / min / first", "statsmodels VB s (x)", "L-BFGS iterations / evaluations"],
        [[f"{r['stays']:,}", f"{r['facilities']:,}", f"{r['warm_min']:.3f} / {r['warm_median']:.3f}",
          f"{r['first_min']:.3f} / {r['first_median']:.3f}", f"{r['scipy_import']:.3f}", f"{r['se_seconds']:.3f}",
          (f"{r['glmer_min']:.1f} / {r['glmer_median']:.1f} ({r['glmer_n']})" if "glmer_min" in r else "not run"),
          (f"**{r['ratio_median']:.0f}x** / {r['ratio_min']:.0f}x / **{r['ratio_first']:.0f}x**"
           if "ratio_median" in r else "not run"),
          (f"{r['statsmodels_s']:.1f} ({r['ratio_statsmodels']:.0f}x)" if "statsmodels_s" in r else "not run"),
          f"{r['iterations']} / {r['evaluations']}"] for r in rows])
    lines += ["## Agreement with glmer", ""]
    lines += report.markdown_table(
        ["stays", "facilities", "max abs fixed-effect diff", "max abs P/E diff", "sigma diff",
         "Laplace log-likelihood, carequal − glmer", "max relative SE diff (vcov)", "carequal's convergence"],
        [[f"{r['stays']:,}", f"{r['facilities']:,}", f(r, "fixef_diff", ".1e"), f(r, "pe_diff", ".1e"),
          f(r, "sigma_diff", ".1e"), f(r, "loglik_diff", ".2g"), f(r, "se_rel_diff", ".1e"), r["convergence"]]
         for r in rows])
    lines += ["## Every measurement", "",
              "Wall time of each child process (carequal: imports, reading the CSV and all its fits; glmer: R "
              "start-up, reading, fit and outputs), the cores other processes kept busy meanwhile and the 1-minute "
              "load average before / highest / after.", ""]
    lines += report.markdown_table(
        ["what", "child", "timed s", "wall s", "other cores", "load before / max / after", "contended"],
        [[run["what"], run["label"], f"{run.get('seconds', float('nan')):.2f}" if "seconds" in run else "",
          f"{run['wall_seconds']:.1f}", f"{run['other_cores']:.2f}",
          f"{run['load_before']:.2f} / {run['load_max']:.2f} / {run['load_after']:.2f}",
          "**yes**" if run["contended"] else "no"] for r in rows for run in r["runs"]])
    reused = [r for r in rows if r.get("glmer_reused")]
    lines += [f"Targets (issue 18): carequal's fit + P/E at least {TARGET_MEDIAN:.0f}x faster than glmer's fit "
              f"(median against median) and at least {TARGET_FIRST:.0f}x against the first fit in a fresh process, "
              f"at 100k / 200 and 1M / 3,000; fixed effects and P/E within {TARGET_ACCURACY:g} of glmer.", "",
              "A measurement is contended when other processes kept more than "
              f"{report.OTHER_CORES_LIMIT} of a core busy or the load rose more than {report.LOAD_MARGIN:g} above "
              "its own: its times are inflated (the machine is shared with other developers' test runs)."]
    if reused:
        lines += ["", "glmer figures reused from earlier runs on the same data (" + ", ".join(
            f"{r['stays']:,} stays: {r['glmer_n']} run(s), the last ended {r['glmer_when']}" for r in reused) + ")."]
    lines += ["", f"Not run: glmer above {args.glmer_max_stays:,} stays; statsmodels above "
              f"{args.statsmodels_max_stays:,} stays (its dense random-effects design needs about 24 GB at 1M stays x "
              "3,000 facilities)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["100000:200", "1000000:3000"],
                        help="stays:facilities pairs")
    parser.add_argument("--repeats", type=int, default=3, help="fresh carequal processes per size")
    parser.add_argument("--warm", type=int, default=3, help="further fits + P/E in each carequal process")
    parser.add_argument("--glmer-repeats", type=int, default=3, help="glmer runs (fresh Rscript processes) per size")
    parser.add_argument("--glmer-max-stays", type=int, default=1_000_000, help="skip glmer above this size")
    parser.add_argument("--reuse-glmer", action="store_true",
                        help="reuse the glmer runs kept in the work folder for the same data (however many there are)")
    parser.add_argument("--statsmodels", action="store_true", help="also time BinomialBayesMixedGLM (once)")
    parser.add_argument("--statsmodels-max-stays", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "carequal-bench-hierarchical")
    parser.add_argument("--write-test-reference", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "hierarchical.md")
    args = parser.parse_args()
    if args.write_test_reference:
        write_test_reference()
        return
    if shutil.which("Rscript") is None:
        print("Rscript not found: glmer is skipped (install r-base-core r-cran-lme4 to compare)", file=sys.stderr)
    (args.workdir / "logs").mkdir(parents=True, exist_ok=True)
    for size in args.sizes:  # data first, so that writing it is not measured beside anything
        data_file(*(int(x) for x in size.split(":")), args.workdir)
    idle = report.idle_check()
    own_load = 1.0
    rows = []
    for size in args.sizes:
        n_stays, n_fac = (int(x) for x in size.split(":"))
        row = bench_one(n_stays, n_fac, args, own_load)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}, default=str), file=sys.stderr)
    command = "python benchmarks/bench_hierarchical.py " + " ".join(sys.argv[1:])
    lines = write_report(rows, args, idle, command.strip())
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
