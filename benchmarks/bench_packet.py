"""Packet benchmark: the partner batch (``carequal report --by partner`` on ``data/sample``) at an old commit
against a new one, in the same run.

Run from the repository root (on a quiet machine: nothing else running)::

    python benchmarks/bench_packet.py [--old COMMIT] [--new HEAD] [--repeats 3] [--workers 2]
                                      [--workdir /tmp/carequal-bench-packet] [--keep]

One run measures, prints and writes ``benchmarks/results/packet.md`` (with the machine it ran on):

1. **Snapshots.** ``git archive <commit> carequal`` of ``--old`` and of ``--new`` (default: the commit a branch
   started from, ``git merge-base main HEAD``, and ``HEAD``; a branch is measured against the code it changed,
   not against what was merged into main meanwhile), each unpacked under ``--workdir`` (and byte-compiled, as
   an installed package is) with a ``SNAPSHOT`` file
   naming the commit, and imported through ``PYTHONPATH`` by the measured child (the notebooks and the
   templates ship inside the package, so each snapshot runs its own). Both read the work tree's
   ``data/sample`` and its ``agreement.toml``.
2. **Runs.** Each of ``--repeats`` rounds runs both commits (old first in odd rounds, new first in even ones, so
   a drift in the machine's load falls on both), each as ``python -m carequal.cli report --by partner --period
   2024 --workers N --force --quiet`` into fresh output and work folders: every run pays the prepare step
   (ingest, the measured cohort, the national reference) as a first monthly run does. A run is a child process
   timed from outside (:func:`report.measure`: wall time, its CPU and its descendants', the load average and
   the cores other processes used meanwhile, flagged when contended); its manifest gives ``prepare`` and the
   partners phase.
3. **Summary.** Minimum and median wall time per commit and the ratio new / old of each (the issue's target:
   the new commit at most 0.5 × the old one). For reading the figures on a host whose speed drifts, each run
   also records the host's speed just before it (:func:`host_speed`, a fixed CPU workload) and each round's
   own new / old ratio is listed; neither changes the verdict.

The last round's output folders stay in ``--workdir`` (``outputs/old``, ``outputs/new``) for comparing the
packets and extracts (``benchmarks/compare_outputs.py``); ``--keep`` keeps every round's.

Nothing here asserts a time: it is a script, not a test. Defaults take about 3 minutes on the reference
machine (2 cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import (  # benchmarks/report.py: shared report helpers and the measured-child runner
    OTHER_CORES_LIMIT,
    ChildFailed,
    host_speed,
    idle_check,
    machine_info,
    markdown_table,
    measure,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "packet.md"
SAMPLE = REPO / "data" / "sample"
PACKAGES = ("pandas", "numpy", "scipy", "statsmodels", "papermill", "nbconvert", "ipykernel", "matplotlib")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=None,
                        help="the commit measured as before (default: git merge-base main NEW)")
    parser.add_argument("--new", default="HEAD", help="the commit measured as after (default HEAD)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-bench-packet"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is killed")
    parser.add_argument("--keep", action="store_true", help="keep every round's output and work folders")
    parser.add_argument("--render", type=Path, help="only write the report again from a results.json of a run")
    return parser.parse_args(argv)


def snapshot(ref: str, folder: Path) -> str:
    """``git archive`` of ``ref``'s carequal into ``folder``, byte-compiled as pip compiles an installed package
    (otherwise, where ``PYTHONDONTWRITEBYTECODE`` is set, every process of every run would compile it again);
    returns the short commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "carequal"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "carequal")], check=True)
    (folder / "SNAPSHOT").write_text(commit + "\n")
    return commit


def run_packets(side: str, source: Path, round_: int, args: argparse.Namespace, logs: Path) -> dict:
    """One partner batch of the snapshot in ``source``, into fresh folders; the measurement and its manifest."""
    base = args.workdir / "runs" / f"{side}-{round_}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    out, work = base / "packets", base / "packets.work"
    cmd = ["env", f"PYTHONPATH={source}", sys.executable, "-m", "carequal.cli", "report", "--data", str(SAMPLE),
           "--out", str(out), "--work", str(work), "--by", "partner", "--period", "2024",
           "--workers", str(args.workers), "--force", "--quiet"]
    speed = host_speed()
    result = measure(f"{side}-{round_}", cmd, logs, timeout=args.timeout, own_load=float(args.workers))
    result["host_speed"] = speed
    manifest = json.loads((out / "manifest.json").read_text())
    seconds = manifest["seconds"]
    units = manifest.get("partners") or manifest.get("markets") or {}
    result.update(side=side, round=round_, out=str(out), prepare=seconds["prepare"]["total"],
                  phase=next((v for k, v in seconds.items() if k not in ("prepare", "total")), float("nan")),
                  batch_total=seconds["total"],
                  ready=sum(1 for r in units.values() if r.get("status") == "ok"),
                  units=len(units))
    return result


def render(info: dict, args: argparse.Namespace, commits: dict, runs: list[dict], initial: tuple) -> str:
    lines = ["# Packet benchmark: `carequal report --by partner` on the sample, old commit against new", "",
             f"`python benchmarks/bench_packet.py --old {args.old} --new {args.new} --repeats {args.repeats} "
             f"--workers {args.workers}` (see the script's docstring for what is measured).", ""]
    lines += markdown_table(["", ""], [[k, v] for k, v in info.items()])
    lines += [f"Old: {args.old} = commit {commits['old']}; new: {args.new} = commit {commits['new']}. Before the "
              f"first run: load average {initial[0]:.2f}, other processes {initial[1]:.2f} cores.", ""]
    summary, stats, cpu = [], {}, {}
    for side in ("old", "new"):
        mine = [r for r in runs if r["side"] == side]
        walls = [r["wall_seconds"] for r in mine]
        between = [r["batch_total"] - r["prepare"] - r["phase"] for r in mine]
        stats[side] = (min(walls), statistics.median(walls))
        cpu[side] = statistics.median(r["child_cpu_seconds"] for r in mine)
        summary.append([side, commits[side], len(walls), f"{min(walls):.1f}", f"{statistics.median(walls):.1f}",
                        f"{cpu[side]:.1f}", f"{statistics.median(r['prepare'] for r in mine):.1f}",
                        f"{statistics.median(between):.1f}", f"{statistics.median(r['phase'] for r in mine):.1f}"])
    lines += ["## Summary", ""]
    lines += markdown_table(["commit", "", "runs", "wall min (s)", "wall median (s)", "CPU median (s)",
                             "prepare median (s)", "packet inputs median (s)", "partners phase median (s)"], summary)
    ratio_min = stats["new"][0] / stats["old"][0]
    ratio_median = stats["new"][1] / stats["old"][1]
    verdict = "meets" if ratio_median <= 0.5 and ratio_min <= 0.5 else "does not meet"
    paired = [r["wall_seconds"] / o["wall_seconds"] for r in runs if r["side"] == "new"
              for o in runs if o["side"] == "old" and o["round"] == r["round"]]
    lines += [f"**Ratio new / old: {ratio_min:.2f} (minimum), {ratio_median:.2f} (median)** — {verdict} the "
              f"target of 0.5. CPU time (the batch and every process it waited for), median: "
              f"{cpu['new'] / cpu['old']:.2f}. Each round's own ratio (its new run over its old run, minutes "
              f"apart): {', '.join(f'{x:.2f}' for x in paired)}, median {statistics.median(paired):.2f} "
              "(for reading only: the verdict is the minimum and median above).", "",
              "*Packet inputs* is the batch's time between the prepare step and the first packet (agreement cases, "
              "their evaluation, flows, leakage, patient lists: `carequal.packet.packet_inputs` and its writing); "
              "the *partners phase* runs the packets' notebooks. What the packets and extracts show, old against "
              "new, is listed in `packet_outputs.md`.", ""]
    lines += ["## Runs", ""]
    lines += markdown_table(
        ["run", "wall (s)", "prepare (s)", "partners phase (s)", "CPU (s)", "packets ready", "host speed (s)",
         "other cores", "load before / max / after", "contended"],
        [[r["label"], f"{r['wall_seconds']:.1f}", f"{r['prepare']:.1f}", f"{r['phase']:.1f}",
          f"{r['child_cpu_seconds']:.1f}", f"{r['ready']} of {r['units']}",
          f"{r['host_speed']:.3f}" if "host_speed" in r else "n/a", f"{r['other_cores']:.2f}",
          f"{r['load_before']:.2f} / {r['load_max']:.2f} / {r['load_after']:.2f}",
          "yes" if r["contended"] else "no"] for r in runs])
    lines += ["*Host speed*: CPU seconds of a fixed pure-Python workload timed just before the run "
              "(`host_speed`; lower is faster).", ""]
    if any(r["contended"] for r in runs) or initial[1] > OTHER_CORES_LIMIT:
        lines += ["Some runs shared the machine with other work (column *contended*): their times are inflated, "
                  "and the ratio is the more telling number.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:  # the report of a finished run, written again (e.g. after the report's layout changed)
        saved = json.loads(args.render.read_text())
        args.old, args.new, args.repeats = saved["args"]["old"], saved["args"]["new"], saved["args"]["repeats"]
        text = render(saved["machine"], args, saved["commits"], saved["runs"], tuple(saved["initial"]))
        args.results.write_text(text + f"\nWhole benchmark: {saved['seconds']:.0f} s.\n")
        print(f"wrote {args.results}", file=sys.stderr)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    logs = args.workdir / "logs"
    initial = idle_check()
    info = machine_info(PACKAGES)
    info["carequal"] = "the two snapshots below (imported by the measured children through PYTHONPATH)"
    if args.old is None:
        args.old = subprocess.run(["git", "merge-base", "main", args.new], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout.strip()[:12]
    sources = {side: args.workdir / "snapshots" / side for side in ("old", "new")}
    commits = {"old": snapshot(args.old, sources["old"]), "new": snapshot(args.new, sources["new"])}
    print(f"carequal packet benchmark: old {commits['old']}, new {commits['new']}, {args.repeats} rounds",
          file=sys.stderr)
    runs: list[dict] = []
    start = time.perf_counter()
    try:
        for round_ in range(1, args.repeats + 1):
            order = ("old", "new") if round_ % 2 else ("new", "old")
            for side in order:
                runs.append(run_packets(side, sources[side], round_, args, logs))
    except ChildFailed as exc:
        print(f"\ncarequal packet benchmark stopped: {exc}", file=sys.stderr)
        return 1
    outputs = args.workdir / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir()
    for side in ("old", "new"):  # the last round's packets, for benchmarks/compare_outputs.py
        last = max((r for r in runs if r["side"] == side), key=lambda r: r["round"])
        shutil.copytree(last["out"], outputs / side)
    if not args.keep:
        shutil.rmtree(args.workdir / "runs", ignore_errors=True)
    text = render(info, args, commits, runs, initial)
    seconds = time.perf_counter() - start
    text += f"\nWhole benchmark: {seconds:.0f} s.\n"
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    (args.workdir / "results.json").write_text(json.dumps(
        {"machine": info, "commits": commits, "initial": initial, "seconds": seconds,
         "args": {"old": args.old, "new": args.new, "repeats": args.repeats, "workers": args.workers},
         "runs": [{k: v for k, v in r.items() if k != "output"} for r in runs]},
        indent=1, default=str))
    print(f"wrote {args.results}; outputs of the last round in {outputs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
