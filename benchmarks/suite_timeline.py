"""Where the test suite's time goes, test by test: a pytest plugin that records each test's wall time, the CPU of
its process and the CPU of the children it waited for (batches' workers, kernels, ``carequal`` commands), and a
report of them by file and by xdist worker.

Run from the repository root::

    PYTHONPATH=benchmarks python -m pytest -p suite_timeline      # records to /tmp/carequal-suite-timeline.jsonl
    python benchmarks/suite_timeline.py [/tmp/carequal-suite-timeline.jsonl]

``CAREQUAL_SUITE_TIMELINE`` names another file (the plugin appends to it: remove it between runs). Children killed
outright (``kill -9`` in the fault tests) are never waited for, so their CPU is missing; the rest of a test's wall
time beyond its CPU is waiting (kernel handshakes, sleeps) or sharing the cores. Nothing here asserts a time.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import sys
import time

LOG = os.environ.get("CAREQUAL_SUITE_TIMELINE", "/tmp/carequal-suite-timeline.jsonl")
_started: dict[str, tuple[float, float, float]] = {}
_recording = [True]


def pytest_configure(config):
    # under xdist the controller reports every test too (it runs none): only the workers, or a plain run, record
    _recording[0] = hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pytest_runtest_logstart(nodeid, location):
    if _recording[0]:
        _started[nodeid] = (time.time(), time.process_time(), _children_cpu())


def pytest_runtest_logfinish(nodeid, location):
    if not _recording[0]:
        return
    wall0, cpu0, children0 = _started.pop(nodeid)
    with open(LOG, "a") as log:
        log.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": nodeid,
                              "start": wall0, "end": time.time(), "cpu": time.process_time() - cpu0,
                              "children": _children_cpu() - children0}) + "\n")


def report(path: str) -> str:
    rows = [json.loads(line) for line in open(path)]
    start = min(r["start"] for r in rows)
    lines = []
    for worker in sorted({r["worker"] for r in rows}):
        mine = sorted((r for r in rows if r["worker"] == worker), key=lambda r: r["start"])
        cpu = sum(r["cpu"] + r["children"] for r in mine)
        lines.append(f"{worker}: {mine[0]['start'] - start:.1f}-{mine[-1]['end'] - start:.1f} s, "
                     f"{sum(r['end'] - r['start'] for r in mine):.1f} s in tests, {cpu:.1f} CPU-s")
    by_file = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        entry = by_file[r["test"].split("::")[0]]
        entry[0] += r["end"] - r["start"]
        entry[1] += r["cpu"]
        entry[2] += r["children"]
    total = sum(c + k for _, c, k in by_file.values())
    lines += ["", f"{'wall s':>8} {'CPU s':>7} {'children':>9}  file  ({total:.0f} CPU-s in all)"]
    for name, (wall, cpu, children) in sorted(by_file.items(), key=lambda kv: -(kv[1][1] + kv[1][2])):
        lines.append(f"{wall:8.1f} {cpu:7.1f} {children:9.1f}  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1] if len(sys.argv) > 1 else LOG))
