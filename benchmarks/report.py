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


# ------------------------------------------------------------------------- measured child processes

OTHER_CORES_LIMIT = 0.25
"""Cores other processes may keep busy during a measurement before it is flagged as contended."""

LOAD_MARGIN = 1.0
"""How far the 1-minute load average may rise above the measurement's own load before it is flagged."""


def busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine since boot, all cores (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ChildFailed(RuntimeError):
    """A measured child process exited with an error or ran out of time."""


def idle_check(seconds: float = 5.0) -> tuple[float, float]:
    """Before the first measurement: the 1-minute load average and the cores other processes keep busy over
    ``seconds`` (nothing of the benchmark running); warns on stderr when that is above
    :data:`OTHER_CORES_LIMIT`."""
    import sys
    import time

    load = os.getloadavg()[0]
    busy0 = busy_cpu_seconds()
    time.sleep(seconds)
    others = (busy_cpu_seconds() - busy0) / seconds
    if others > OTHER_CORES_LIMIT:
        print(f"warning: other processes keep {others:.2f} cores busy before starting (load average "
              f"{load:.2f}): times will be inflated", file=sys.stderr)
    return load, others


def host_speed() -> float:
    """CPU seconds of a fixed pure-Python workload (3 million integer steps, best of 3), timed just before a run:
    the host's speed at that moment. On the reference machine it varied by up to 60% from minute to minute with
    nothing else running; the benchmarks list it beside each run, so a ratio can be read against the speed each
    side ran at. It changes no verdict."""
    import time

    def once() -> float:
        started, total = time.process_time(), 0
        for i in range(3_000_000):
            total += i * i % 7
        return time.process_time() - started
    return min(once() for _ in range(3))


def measure(label: str, cmd: list[str], logs: Path, *, timeout: float, own_load: float,
            ok_codes: tuple[int, ...] = (0,)) -> dict:
    """Run ``cmd`` in its own process group; its wall time, rusage, exit code, output, the load average around
    it and the CPU other processes used meanwhile (flagged ``contended`` past the limits above).

    The child runs in the scratch folder (the parent of ``logs``), not the repository: ``python -c`` puts its
    working folder first on ``sys.path``, which would import the work tree's carequal ahead of a snapshot
    given on PYTHONPATH."""
    import signal
    import sys
    import threading
    import time

    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{label}.log"
    print(f"  {label} ...", end="", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    loads: list[float] = []
    done = threading.Event()

    def sample_load() -> None:  # the 1-minute load average every 5 s
        while not done.wait(5.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    t0, busy0 = time.perf_counter(), busy_cpu_seconds()
    with open(log_path, "w") as log:
        # a new session: on a timeout the child and whatever it started (workers, kernels) are ended together
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=logs.parent, start_new_session=True)

        def kill() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            # wait4: this child's own rusage, descendants it waited for (workers, kernels) included
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    child_cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, busy_cpu_seconds() - busy0 - child_cpu) / wall
    output = log_path.read_text(errors="replace")
    if proc.returncode not in ok_codes:
        tail = "".join(output.splitlines(keepends=True)[-30:])
        print(f" failed (exit {proc.returncode}, {wall:.0f} s)", file=sys.stderr)
        raise ChildFailed(f"{label}: exit {proc.returncode} after {wall:.0f} s (timeout {timeout:.0f} s); "
                          f"log {log_path}:\n{tail}")
    result = {"label": label, "wall_seconds": wall, "returncode": proc.returncode, "child_cpu_seconds": child_cpu,
              "maxrss_mib": usage.ru_maxrss / 1024, "other_cores": others, "load_before": load_before,
              "load_max": max(loads, default=load_before), "load_after": os.getloadavg()[0],
              "own_load": own_load, "output": output}
    result["contended"] = others > OTHER_CORES_LIMIT or result["load_max"] > own_load + LOAD_MARGIN
    print(f" {wall:.1f} s (other processes {others:.2f} cores, load {load_before:.2f} / "
          f"{result['load_max']:.2f} / {result['load_after']:.2f})"
          + ("  ** CONTENDED **" if result["contended"] else ""), file=sys.stderr)
    return result


def measurements_table(measurements: list[dict], about: str) -> list[str]:
    """The "Measurements" section of a results file: each measured child with its wall and CPU time, the cores
    other processes used meanwhile, the load average before / highest / after and whether it was contended.
    ``about`` says how the script measures (a paragraph under the heading)."""
    def num(x) -> str:
        return "n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.1f}"

    return ["## Measurements", "", about, "",
            *markdown_table(["measurement", "wall s", "child CPU s", "other cores", "load before / max / after",
                             "own", "flag"],
                            [[m["label"], num(m["wall_seconds"]), num(m["child_cpu_seconds"]),
                              f"{m['other_cores']:.2f}",
                              f"{m['load_before']:.2f} / {m['load_max']:.2f} / {m['load_after']:.2f}",
                              f"{m['own_load']:.0f}", "**contended**" if m["contended"] else ""]
                             for m in measurements])]
