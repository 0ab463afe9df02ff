"""Count the calls of carequal functions in every process of a batch run: the test's own process, the batch's
spawned workers and their report kernels.

A ``sitecustomize`` put first on ``PYTHONPATH`` (which the workers and kernels inherit) runs :func:`install` in
every new process, which wraps each function as its module is imported; in the test's process, where carequal
is already imported, the function is replaced in every carequal module that holds it. Each call appends its
process id and the function to a log file.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from pathlib import Path

__all__ = ["count_calls", "install"]

TARGET_ENV, LOG_ENV = "CAREQUAL_TEST_CALL_TARGET", "CAREQUAL_TEST_CALL_LOG"
SITECUSTOMIZE = "import call_log\n\ncall_log.install()\n"


def _counted(original, target: str, log: str | Path):
    def counted(*args, **kwargs):
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {target}\n")
        return original(*args, **kwargs)

    counted.__wrapped__ = original
    return counted


class _Finder:
    """Finds the target's module as Python would, and wraps the function once the module has run."""

    def __init__(self, target: str, log: str):
        (self.module, self.name), self.target, self.log = target.split(":"), target, log

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            setattr(module, self.name, _counted(getattr(module, self.name), self.target, self.log))

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Count the calls of the targets this process's environment names (run by the sitecustomize)."""
    targets, log = os.environ.get(TARGET_ENV, "").split(), os.environ.get(LOG_ENV)
    if log:
        for target in targets:
            sys.meta_path.insert(0, _Finder(target, log))


def count_calls(target: str, folder: Path, mp, *others: str):
    """Start counting the calls of ``target`` (``"module:function"``), and of any ``others``, with ``mp``'s
    patches (a ``pytest.MonkeyPatch``, undone with it); returns a function giving the process ids of the calls so
    far, one per call, of ``target`` or of the target it is given."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    log.write_text("")
    site = folder / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(site), str(Path(__file__).resolve().parent),
             *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    mp.setenv("PYTHONPATH", os.pathsep.join(paths))
    mp.setenv(TARGET_ENV, " ".join((target, *others)))
    mp.setenv(LOG_ENV, str(log))
    for each in (target, *others):
        module_name, name = each.split(":")
        original = getattr(importlib.import_module(module_name), name)
        counted = _counted(original, each, log)
        for mod in list(sys.modules.values()):
            if (getattr(mod, "__name__", "") or "").startswith("carequal") and getattr(mod, name, None) is original:
                mp.setattr(mod, name, counted)

    def calls(of: str = target) -> list[int]:
        return [int(pid) for pid, called in (line.split() for line in log.read_text().splitlines()) if called == of]

    return calls
