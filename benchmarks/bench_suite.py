"""Test-suite benchmark: the README's test command (``python3 tasks.py test``) in clean clones of an old commit and
a new one, in the same run.

Run from the repository root (on a quiet machine: nothing else running)::

    python benchmarks/bench_suite.py --old COMMIT [--new HEAD] [--repeats 2]
                                     [--workdir /tmp/carequal-bench-suite]

One run measures, prints and writes ``benchmarks/results/suite.md`` (with the machine it ran on):

1. **Clones.** ``git clone`` of this repository into ``--workdir``, checked out at ``--old`` and at ``--new``;
   each builds its own ``.venv`` from its lock file once (``python3 tasks.py test --collect-only -q``, not
   timed), as a fresh machine does.
2. **Runs.** Each of ``--repeats`` rounds runs both clones (old first in odd rounds, new first in even ones, so
   a drift in the machine's speed falls on both). Before each run ``git clean -xfdq -e .venv`` puts the clone
   back to the state of a fresh clone (no byte-code, no pytest cache) with its environment kept; the run is
   ``python3 tasks.py test`` (``tasks.py`` finds its environment current, byte-compiles carequal, runs ruff and
   then pytest on two xdist workers), a child process timed from outside (:func:`report.measure`: wall time,
   CPU of it and every process it waited for, the load and the cores other processes used). The pytest time
   is the one pytest prints (``passed ... in N s``). The host's speed is timed just before each run
   (:func:`host_speed`, a fixed CPU workload; lower is faster).
3. **Summary.** Minimum and median pytest time per commit, the ratio new / old of each, and the new commit's
   against the issue's target (3 minutes of pytest on 2 cores). The host this project is measured on changes
   speed by up to a third from minute to minute: the ratio, measured in the same run, is the figure that
   survives it; each round's own ratio is listed too.

Nothing here asserts a time: it is a script, not a test. Two rounds take about 20 minutes on the reference
machine (2 cores), most of it the four suites.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import OTHER_CORES_LIMIT, ChildFailed, host_speed, idle_check, machine_info, markdown_table, measure

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "suite.md"
PACKAGES = ("pytest", "pytest-xdist", "pandas", "numpy", "ipykernel", "matplotlib")
TARGET_SECONDS = 180.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the commit measured as before")
    parser.add_argument("--new", default="HEAD", help="the commit measured as after (default HEAD)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-bench-suite"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is killed")
    return parser.parse_args(argv)


def clone(ref: str, folder: Path) -> str:
    """A clone of this repository at ``ref`` in ``folder`` with its environment built; returns the short commit."""
    full = subprocess.run(["git", "rev-parse", ref], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    commit = full[:7]
    if not (folder / ".git").is_dir():
        subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)
    subprocess.run(["git", "fetch", "-q", str(REPO), full], cwd=folder, check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", full], cwd=folder, check=True)
    print(f"  building the environment of {commit} (not timed) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "tasks.py", "test", "--collect-only", "-q"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    return commit


def pytest_seconds(output: str) -> tuple[float, str]:
    """The seconds and the summary of pytest's last line (``1168 passed, 1 skipped in 186.20s (0:03:06)``)."""
    found = re.findall(r"^=*\s*(\d+ passed.*?) in ([\d.]+)s", output, flags=re.M)
    if not found:
        raise ChildFailed("no pytest summary line in the run's output")
    summary, seconds = found[-1]
    return float(seconds), summary.strip()


def run_suite(side: str, folder: Path, round_: int, args: argparse.Namespace) -> dict:
    subprocess.run(["git", "clean", "-xfdq", "-e", ".venv"], cwd=folder, check=True)
    speed = host_speed()
    # measure() runs the child in the parent of the logs folder: the clone itself
    result = measure(f"{side}-{round_}", [sys.executable, "tasks.py", "test"], folder / ".bench-logs",
                     timeout=args.timeout, own_load=2.0)
    seconds, summary = pytest_seconds(result.pop("output"))
    # the suite runs more than two processes at times (a batch's workers and kernels beside the other xdist
    # worker), so its load average passes 3 on its own: only CPU that other processes used marks a run contended
    result["contended"] = result["other_cores"] > OTHER_CORES_LIMIT
    result.update(side=side, round=round_, host_speed=speed, pytest_seconds=seconds, summary=summary)
    return result


def render(info: dict, args: argparse.Namespace, commits: dict, runs: list[dict], initial: tuple) -> str:
    lines = ["# Test-suite benchmark: `python3 tasks.py test` in clean clones, old commit against new", "",
             f"`python benchmarks/bench_suite.py --old {args.old} --new {args.new} --repeats {args.repeats}` "
             "(see the script's docstring for what is measured).", ""]
    lines += markdown_table(["", ""], [[k, v] for k, v in info.items()])
    lines += [f"Old: {args.old} = commit {commits['old']}; new: {args.new} = commit {commits['new']}. Before the "
              f"first run: load average {initial[0]:.2f}, other processes {initial[1]:.2f} cores.", ""]
    stats, summary = {}, []
    for side in ("old", "new"):
        mine = [r for r in runs if r["side"] == side]
        secs = [r["pytest_seconds"] for r in mine]
        stats[side] = (min(secs), statistics.median(secs))
        summary.append([side, commits[side], str(len(secs)), f"{min(secs):.1f}", f"{statistics.median(secs):.1f}",
                        f"{statistics.median(r['wall_seconds'] for r in mine):.1f}",
                        f"{statistics.median(r['child_cpu_seconds'] for r in mine):.1f}", mine[-1]["summary"]])
    lines += ["## Summary", ""]
    lines += markdown_table(["commit", "", "runs", "pytest min (s)", "pytest median (s)",
                             "whole command median (s)", "CPU median (s)", "tests"], summary)
    paired = [n["pytest_seconds"] / o["pytest_seconds"] for n in runs if n["side"] == "new"
              for o in runs if o["side"] == "old" and o["round"] == n["round"]]
    new_min, new_median = stats["new"]
    verdict = "meets" if new_min <= TARGET_SECONDS and new_median <= TARGET_SECONDS else "does not meet"
    lines += [f"**New: {new_min:.1f} s (minimum), {new_median:.1f} s (median) of pytest** — {verdict} the target "
              f"of {TARGET_SECONDS:.0f} s. Ratio new / old: {stats['new'][0] / stats['old'][0]:.2f} (minimum), "
              f"{stats['new'][1] / stats['old'][1]:.2f} (median); each round's own ratio: "
              f"{', '.join(f'{x:.2f}' for x in paired)}.", "",
              "The whole command adds the environment check, byte-compiling carequal and ruff to pytest's time. "
              "CPU is the command's and every process it waited for (pytest's workers, the batches' workers, "
              "kernels and `carequal` commands).", ""]
    lines += ["## Runs", ""]
    lines += markdown_table(
        ["run", "pytest (s)", "whole command (s)", "CPU (s)", "host speed (s)", "other cores",
         "load before / max / after", "contended"],
        [[r["label"], f"{r['pytest_seconds']:.1f}", f"{r['wall_seconds']:.1f}", f"{r['child_cpu_seconds']:.1f}",
          f"{r['host_speed']:.3f}", f"{r['other_cores']:.2f}",
          f"{r['load_before']:.2f} / {r['load_max']:.2f} / {r['load_after']:.2f}",
          "yes" if r["contended"] else "no"] for r in runs])
    lines += ["*Host speed*: CPU seconds of a fixed pure-Python workload timed just before the run (lower is "
              "faster). A suite keeps both cores busy, so the load average (1 minute) near 2 is its own.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    initial = idle_check()
    info = machine_info(PACKAGES)
    info["carequal"] = "the two clones below"
    folders = {side: args.workdir / side for side in ("old", "new")}
    commits = {side: clone(getattr(args, side), folders[side]) for side in ("old", "new")}
    print(f"carequal suite benchmark: old {commits['old']}, new {commits['new']}, {args.repeats} rounds",
          file=sys.stderr)
    runs = []
    for round_ in range(1, args.repeats + 1):
        order = ("old", "new") if round_ % 2 else ("new", "old")
        for side in order:
            runs.append(run_suite(side, folders[side], round_, args))
    seconds = time.perf_counter() - started
    args.results.write_text(render(info, args, commits, runs, initial) + f"\nWhole benchmark: {seconds:.0f} s.\n")
    (args.workdir / "results.json").write_text(json.dumps(
        {"args": {"old": args.old, "new": args.new, "repeats": args.repeats}, "machine": info, "commits": commits,
         "runs": runs, "initial": initial, "seconds": seconds}, indent=1, default=str))
    print(args.results.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
