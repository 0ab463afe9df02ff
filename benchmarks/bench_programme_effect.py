"""Replication study: does ``employers.programme_impact`` recover the generator's programme effect?

Run from the repository root::

    python benchmarks/bench_programme_effect.py [--replications 90] [--first-seed 1000]

Each replication generates the employer populations of ``tests/test_employers.py`` (6,000 employees of three
alliance members; the programme at member 2 from 1 July 2023: PQI rates x 0.6, ED visits x 0.85) with its own
seed, and estimates the programme's rate ratio on ED visits and on PQI admissions (PQI 90) as the notebook does
(quarterly cells, Poisson DiD with the age-sex expected events as offset). Beside each estimate: the observed
events and the events the generator's true rates give for the member-years of each group (the programme's
sponsor and the comparison, before and after the start), so a mismatch between the generated data and the
stated truth shows where it lies.

Writes ``benchmarks/results/programme_effect.md``: the mean log rate ratio over the replications (with its
standard error), the interval coverage, observed / expected per group. The unit tests use three replications
(about ±0.16 on the log scale for ED visits); this study bounds a bias far more tightly. It is a study, not a
test: nothing is asserted. About 2.5 s a replication.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from carequal import employers as em
from carequal.synth import SynthConfig, employer_rates, generate

RESULTS = Path(__file__).resolve().parent / "results" / "programme_effect.md"
MEASURES = {"ed_visits": ("ed_visits", "programme_ed_reduction"),
            "pqi_admissions": ("pqi_90", "programme_pqi_reduction")}


def config(seed: int) -> SynthConfig:
    """The configuration of ``tests/test_employers.py`` with another seed."""
    return SynthConfig(n_markets=1, patients_per_market=200, hospitals_per_market=2, snf_per_market=1,
                       irf_per_market=0, ltch_per_market=0, hha_per_market=1, employee_share=30, n_sponsors=3,
                       programme_sponsor=2, programme_pqi_reduction=0.4, seed=seed, truth_stays=False)


def replication(seed: int) -> list[dict]:
    """One generated data set: per measure the estimate and the observed / expected events per group."""
    cfg = config(seed)
    tables = generate(cfg)
    quarters = em.member_time(tables, start=cfg.start, end=cfg.end, freq="quarter", fine_bands=True)
    events = em.employer_events(tables, start=cfg.start, end=cfg.end)
    truth = employer_rates(cfg)
    sponsor = truth.loc[truth["programme"], "sponsor"].iloc[0]
    start = pd.Timestamp(cfg.programme_start)
    spans = truth[["period", "period_start"]].drop_duplicates().sort_values("period_start")
    at = np.searchsorted(spans["period_start"].to_numpy(), quarters["period_start"].to_numpy(), side="right") - 1
    q = quarters.assign(truth_period=spans["period"].to_numpy()[at])
    rows = []
    for measure, (true_measure, reduction) in MEASURES.items():
        strata = q.merge(truth[truth["measure"] == true_measure], left_on=["sponsor", "truth_period", "age_band",
                                                                           "sex"],
                         right_on=["sponsor", "period", "age_band", "sex"], suffixes=("", "_truth"))
        strata["expected"] = strata["rate"] * strata["member_years"]
        ev = events[events["measure"] == measure]
        out = em.programme_impact(tables, sponsor=sponsor, start=start, measure=measure, events=events, time=quarters)
        row = {"seed": seed, "measure": measure, "truth": 1 - getattr(cfg, reduction),
               "estimable": out["estimable"], "effect": out["effect"], "se": out["se"],
               "lower": out["rate_ratio_lower"], "upper": out["rate_ratio_upper"]}
        for arm, in_arm in (("programme", lambda s: s == sponsor), ("comparison", lambda s: s != sponsor)):
            for when, after in (("before", False), ("after", True)):
                row[f"O {arm} {when}"] = int((in_arm(ev["sponsor"]) & ((ev["date"] >= start) == after)).sum())
                row[f"E {arm} {when}"] = float(strata.loc[in_arm(strata["sponsor"]) & (
                    (strata["period_start"] >= start) == after), "expected"].sum())
        rows.append(row)
    return rows


def summary(frame: pd.DataFrame) -> str:
    lines = []
    for measure, grp in frame.groupby("measure", sort=False):
        ok = grp[grp["estimable"]]
        truth = float(grp["truth"].iloc[0])
        mean, se = ok["effect"].mean(), ok["effect"].std(ddof=1) / np.sqrt(len(ok))
        covered = ((ok["lower"] <= truth) & (truth <= ok["upper"])).mean()
        lines += [f"### {measure}", "",
                  f"- true rate ratio {truth:.3f}; {len(ok)} of {len(grp)} replications estimable",
                  f"- mean of the estimates (log scale, back-transformed): **{np.exp(mean):.3f}** (95% CI "
                  f"{np.exp(mean - 1.96 * se):.3f}–{np.exp(mean + 1.96 * se):.3f}); spread of one replication's "
                  f"log estimate {ok['effect'].std(ddof=1):.3f}, mean model standard error {ok['se'].mean():.3f}",
                  f"- 95% intervals holding the truth: {covered:.1%}", "",
                  "| group | observed | expected (true rates x member-years) | O/E | z |", "|---|---:|---:|---:|---:|"]
        for arm in ("programme", "comparison"):
            for when in ("before", "after"):
                o, e = grp[f"O {arm} {when}"].sum(), grp[f"E {arm} {when}"].sum()
                z = (o - e) / np.sqrt(e)
                lines.append(f"| {arm} {when} the start | {o:,d} | {e:,.0f} | {o / e:.3f} | {z:+.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=90)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for k in range(args.replications):
        rows += replication(args.first_seed + k)
        print(f"replication {k + 1} of {args.replications}: {time.perf_counter() - started:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    text = (f"# Programme effect: {args.replications} replications (seeds {args.first_seed}–"
            f"{args.first_seed + args.replications - 1})\n\n"
            f"`python benchmarks/bench_programme_effect.py --replications {args.replications} --first-seed "
            f"{args.first_seed}` on {platform.node()} ({platform.python_version()}), "
            f"{time.perf_counter() - started:.0f} s.\n\n" + summary(frame))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
