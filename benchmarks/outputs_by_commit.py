"""Which commits changed what the reports show: the sample's batch rendered with the code of a base commit and of
every first-parent commit on the current branch since then that touched ``carequal/``, each compared with the one
before it (:func:`compare_outputs.compare_folders`).

Run from the repository root::

    python benchmarks/outputs_by_commit.py --since d4ccb0b [--by partner|market] [--workdir /tmp/carequal-outputs]

Each commit's package is unpacked with ``git archive`` and byte-compiled (:func:`bench_packet.snapshot`), and runs
``carequal report --data data/sample --period 2024 --workers 2 --force --quiet`` (``--by partner`` uses the work
tree's agreement, as ``bench_packet.py`` does); a commit's output folder is kept in ``--workdir`` and reused by a
later run. Printed: each step whose outputs differ (the index's "Updated … UTC" line left out), with the number of
differences and the commit's subject; the differences themselves go to ``<workdir>/<by>-<old>-<new>.md``. Nothing is
judged: the author of the change says why (``benchmarks/results/packet_outputs.md``). About 15 s per commit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench_packet import snapshot  # benchmarks/bench_packet.py
from compare_outputs import compare_folders

REPO = Path(__file__).resolve().parent.parent


def commits_since(base: str) -> list[str]:
    """``base`` and the first-parent commits after it that touched ``carequal/``, oldest first (short hashes)."""
    out = subprocess.run(["git", "log", "--first-parent", "--format=%h", f"{base}..HEAD", "--", "carequal"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [subprocess.run(["git", "rev-parse", "--short", base], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.strip(), *reversed(out)]


def render(commit: str, by: str, workdir: Path) -> Path:
    """The sample's batch by ``by`` rendered with ``commit``'s code (reused when already rendered)."""
    out = workdir / f"{by}-{commit}"
    if (out / "manifest.json").is_file():
        return out
    code = workdir / f"code-{commit}"
    if not (code / "SNAPSHOT").is_file():
        snapshot(commit, code)
    extra = ["--by", "partner"] if by == "partner" else []
    run = subprocess.run([sys.executable, "-m", "carequal.cli", "report", "--data", str(REPO / "data" / "sample"),
                          "--out", str(out), "--work", str(workdir / f"work-{by}-{commit}"), "--period", "2024",
                          "--workers", "2", "--force", "--quiet", *extra],
                         cwd=workdir, env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise SystemExit(f"{commit}: carequal report exited {run.returncode}: {run.stderr.strip()[-300:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--since", required=True, help="the base commit")
    parser.add_argument("--by", choices=("partner", "market"), default="partner")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/carequal-outputs"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    commits = commits_since(args.since)
    previous = render(commits[0], args.by, args.workdir)
    for old, new in zip(commits, commits[1:], strict=False):
        current = render(new, args.by, args.workdir)
        found = [line for line in compare_folders(previous, current)
                 if not (line.startswith("index.html text only in") and ": Updated " in line)]
        if found:
            subject = subprocess.run(["git", "log", "-1", "--format=%s", new], cwd=REPO, capture_output=True,
                                     text=True, check=True).stdout.strip()
            (args.workdir / f"{args.by}-{old}-{new}.md").write_text("".join(f"- {line}\n" for line in found))
            print(f"{old} -> {new}: {len(found)} differences  {subject[:100]}")
        previous = current
    print(f"{len(commits) - 1} commits after {commits[0]} compared ({args.by} batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
