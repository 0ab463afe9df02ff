"""Count the calls of one carequal function in every process of a batch run: the test's own process, the
batch's spawned workers and their report kernels.

A ``sitecustomize`` put first on ``PYTHONPATH`` (which the workers and kernels inherit) wraps the function as
its module is imported in each new process; in the test's process, where carequal is already imported, the
function is replaced in every carequal module that holds it. Each call appends its process id to a log file.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

__all__ = ["count_calls"]

SITECUSTOMIZE = '''
import importlib.machinery
import os
import sys

_TARGET, _LOG = os.environ.get("CAREQUAL_TEST_CALL_TARGET"), os.environ.get("CAREQUAL_TEST_CALL_LOG")


def _counted(original):
    def counted(*args, **kwargs):
        with open(_LOG, "a") as out:
            out.write(f"{os.getpid()}\\n")
        return original(*args, **kwargs)

    counted.__wrapped__ = original
    return counted


class _Finder:
    def find_spec(self, fullname, path=None, target=None):
        module_name, name = _TARGET.split(":")
        if fullname != module_name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            setattr(module, name, _counted(getattr(module, name)))

        spec.loader.exec_module = exec_module
        return spec


if _TARGET and _LOG:
    sys.meta_path.insert(0, _Finder())
'''


def _counted(original, log: Path):
    def counted(*args, **kwargs):
        with open(log, "a") as out:
            out.write(f"{os.getpid()}\n")
        return original(*args, **kwargs)

    counted.__wrapped__ = original
    return counted


def count_calls(target: str, folder: Path, mp: pytest.MonkeyPatch):
    """Start counting the calls of ``target`` (``"module:function"``) with ``mp``'s patches (undone with it);
    returns a function giving the process ids of the calls so far, one per call."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    log.write_text("")
    site = folder / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(site), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    mp.setenv("PYTHONPATH", os.pathsep.join(paths))
    mp.setenv("CAREQUAL_TEST_CALL_TARGET", target)
    mp.setenv("CAREQUAL_TEST_CALL_LOG", str(log))
    module_name, name = target.split(":")
    original = getattr(importlib.import_module(module_name), name)
    counted = _counted(original, log)
    for mod in list(sys.modules.values()):
        if (getattr(mod, "__name__", "") or "").startswith("carequal") and getattr(mod, name, None) is original:
            mp.setattr(mod, name, counted)
    return lambda: [int(x) for x in log.read_text().split()]
