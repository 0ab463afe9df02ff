"""What every benchmark report shares: the machine it ran on, which carequal it measured, Markdown tables."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def carequal_source() -> str:
    """Which carequal was measured: the work tree's commit (and whether ``carequal/`` had uncommitted edits), or
    a snapshot imported through PYTHONPATH (its ``SNAPSHOT`` file, if any, names the commit).

    While others edit the work tree, measure a clean commit with::

        mkdir /tmp/snap && git archive HEAD carequal | tar -x -C /tmp/snap && git rev-parse --short HEAD \\
            > /tmp/snap/SNAPSHOT && PYTHONPATH=/tmp/snap python benchmarks/bench_measures.py
    """
    import carequal

    root = Path(carequal.__file__).resolve().parent.parent
    if root != REPO:
        note = root / "SNAPSHOT"
        named = f" (commit {note.read_text().strip()})" if note.exists() else ""
        return f"snapshot imported from {root}{named}"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "carequal"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {commit}" + (" with uncommitted changes in carequal/" if dirty else "")


def machine_info(packages: tuple[str, ...]) -> dict[str, str]:
    """Date, cores, memory, OS, Python, the carequal measured and the versions of ``packages``."""
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()} ({model})",
        "RAM": f"{mem_kib / 2**20:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "carequal": carequal_source(),
        **{pkg: package_version(pkg) for pkg in packages},
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "not set"),
    }


def gib(mib: float) -> str:
    return f"{mib / 1024:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]
