"""The package's shape: imports flow one way through the layers, private names stay in their module, every
module declares ``__all__``, and ``import carequal`` is cheap yet exposes the public face."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "carequal"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("carequal", "carequal.errors", "carequal.lazy", "carequal.periods", "carequal.intervals",
                    "carequal.convergence", "carequal.packaged")),
    ("contract", ("carequal.schema", "carequal.loaders", "carequal.synth", "carequal.adapters",
                  "carequal.adapters.desynpuf", "carequal.warehouse", "carequal.warehouse.mapping",
                  "carequal.warehouse.connect", "carequal.warehouse.source")),
    ("cohorts", ("carequal.cohorts",)),
    ("measures", ("carequal.measures",)),
    ("risk", ("carequal.risk", "carequal.hsr")),
    ("comparison", ("carequal.measured", "carequal.compare", "carequal.impact", "carequal.cost", "carequal.agreement",
                    "carequal.pqi")),
    ("disclosure", ("carequal.disclosure", "carequal.warehouse.writeback")),
    ("national reference", ("carequal.national", "carequal.scale", "carequal.inputs")),
    ("presentation", ("carequal.presentation",)),
    ("report content", ("carequal.report", "carequal.screening", "carequal.packet", "carequal.population",
                        "carequal.employers", "carequal.explore", "carequal.sample")),
    ("plots", ("carequal.plots",)),
    ("batch", ("carequal.batch", "carequal.batch.parameters", "carequal.batch.state", "carequal.batch.kernels",
               "carequal.batch.pdf", "carequal.batch.jobs", "carequal.batch.dashboard", "carequal.batch.index",
               "carequal.batch.run")),
    ("command line", ("carequal.cli",)),
)
"""The stack, lowest first. A module may import (at its top level) modules of its own layer or a lower one.
``carequal`` itself is the foundation: its top-level imports are :mod:`carequal.errors` and
:mod:`carequal.lazy` only, the rest of the public face loads on first use."""

LAYER = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
           if "notebooks" not in p.relative_to(PACKAGE).parts}  # jupytext sources of notebooks, not modules


class _Trees(dict):
    """Each module's syntax tree, parsed when a test first asks for it (not when pytest collects this file, in
    every xdist worker: about 0.4 s each)."""

    def __missing__(self, name: str) -> ast.Module:
        tree = self[name] = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
        return tree


TREES = _Trees()


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _target(module: str, name: str | None = None) -> str:
    """The carequal module an import statement loads (``from carequal import x``: the submodule x if there is
    one, else the package)."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def top_level_imports(name: str) -> set[str]:
    """The carequal modules ``name`` imports when it is imported (statements at module level, including inside
    ``try``/``if`` blocks, but not ``if TYPE_CHECKING:``; imports inside functions run later, on their path)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if _is_type_checking(node) or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "carequal")
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "carequal":
                found.update(_target(node.module, a.name) for a in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit([n for n in inner if isinstance(n, ast.stmt)] + [
                        s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body])

    visit(TREES[name].body)
    found.discard(name)
    return found


GRAPH = {name: top_level_imports(name) for name in MODULES}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYER)) == [], "place each new module in LAYERS"
    assert sorted(set(LAYER) - set(MODULES)) == [], "LAYERS names a module that does not exist"


def test_no_module_imports_a_higher_layer():
    upward = [f"{name} ({LAYERS[LAYER[name]][0]}) imports {target} ({LAYERS[LAYER[target]][0]})"
              for name, targets in GRAPH.items() for target in sorted(targets) if LAYER[target] > LAYER[name]]
    assert upward == []


LAZY_UPWARD: dict[tuple[str, str], str] = {
    ("carequal.packet", "carequal.plots"): "leakage_plot draws the packet's chart (the notebook calls pk.leakage_plot)",
}
"""Imports inside functions that reach a higher layer, each with its reason (the rest must go down as well)."""


def function_imports(name: str) -> set[str]:
    """The carequal modules ``name`` imports inside its functions."""
    found = set()
    for fn in ast.walk(TREES[name]):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "carequal":
                    found.update(_target(node.module, a.name) for a in node.names)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names if a.name.split(".")[0] == "carequal")
    return found


def test_imports_inside_functions_go_down_too_or_say_why():
    upward = sorted((name, target) for name in MODULES for target in function_imports(name)
                    if LAYER[target] > LAYER[name])
    assert upward == sorted(LAZY_UPWARD)


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(" → ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} → {nxt}")
            elif nxt not in state:
                walk(nxt, path + [node])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            walk(name, [])
    assert cycles == []


def test_the_graph_sees_imports():
    # the scan itself: a module known to import others is seen doing so
    assert {"carequal.cohorts", "carequal.schema"} <= GRAPH["carequal.measures"]
    assert GRAPH["carequal"] == {"carequal.errors", "carequal.lazy"}


def _private_uses(name: str) -> list[str]:
    tree = TREES[name]
    aliases: dict[str, str] = {}  # local name → carequal module
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "carequal":
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{name}:{node.lineno} from {node.module} import {a.name}")
                target = _target(node.module, a.name)
                if target != node.module or target in MODULES and f"{node.module}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "carequal":
                    aliases[a.asname or a.name] = a.name if a.asname else "carequal"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = ast.unparse(node.value)
            if base in aliases or base.split(".")[0] == "carequal" and base in MODULES:
                out.append(f"{name}:{node.lineno} {base}.{node.attr}")
    return out


def test_no_private_name_is_used_across_modules():
    assert [use for name in MODULES for use in _private_uses(name)] == []


def test_the_private_name_scan_finds_both_forms():
    tree = ast.parse("from carequal.cohorts import _days\nfrom carequal import cohorts\nimport carequal.measures\n"
                     "cohorts._time_order(x)\ncarequal.measures._NAT\n")
    TREES["carequal._probe"] = tree
    try:
        assert len(_private_uses("carequal._probe")) == 3
    finally:
        del TREES["carequal._probe"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_declares_all(name):
    declared = [node for node in TREES[name].body if isinstance(node, (ast.Assign, ast.AnnAssign))
                and any(isinstance(t, ast.Name) and t.id == "__all__"
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert declared, f"{name} declares no __all__"
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"


HEAVY = ("pandas", "numpy", "scipy", "statsmodels", "matplotlib", "seaborn", "papermill", "nbconvert", "dask",
         "distributed", "pandera", "pyarrow")


def _loaded_by(statement: str) -> tuple[list[str], list[str]]:
    """The heavy packages and the carequal modules a fresh interpreter has loaded after ``statement``."""
    code = (f"import json, sys; {statement}; print(json.dumps([sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{HEAVY!r}), sorted(m for m in sys.modules if m.startswith('carequal'))]))")
    return tuple(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                           cwd=ROOT).stdout))


def test_import_carequal_is_cheap_and_lazy():
    heavy, ours = _loaded_by("import carequal")
    assert heavy == [] and ours == ["carequal", "carequal.errors", "carequal.lazy"]


def test_a_batch_worker_does_not_load_the_report_stack():
    # a worker process unpickling run_market imports carequal.batch.jobs: the kernels and the state, no more
    heavy, ours = _loaded_by("import carequal.batch.jobs")
    assert ours == ["carequal", "carequal.batch", "carequal.batch.jobs", "carequal.batch.kernels",
                    "carequal.batch.state", "carequal.errors", "carequal.lazy"]
    assert heavy == []


def test_a_report_kernel_does_not_load_scipy_stats_or_optimize():
    # a packet's or market report's kernel imports its notebook's modules and fits nothing: scipy.stats (~0.7 s of
    # distribution docstrings) and scipy.optimize (0.2-0.3 s) are for the processes that fit (carequal.intervals)
    heavy, ours = _loaded_by("import carequal.packet, carequal.plots, carequal.presentation, carequal.report")
    assert {"carequal.agreement", "carequal.compare", "carequal.cost", "carequal.risk"} <= set(ours)
    assert [m for m in heavy if m.startswith(("scipy.stats", "scipy.optimize", "statsmodels"))] == []


def test_the_command_loads_pandera_only_to_validate():
    # pandera (and what it loads: typeguard, pydantic's schema machinery) is for checking tables: the `carequal`
    # command's modules and a batch worker's load it when a run validates, not to start (about 0.35 s of each
    # command and worker); the rules still come from pandera where tables are checked
    heavy, ours = _loaded_by("import carequal.cli, carequal.batch.run, carequal.batch.jobs")
    assert {"carequal.schema", "carequal.cohorts", "carequal.agreement"} <= set(ours)
    assert [m for m in heavy if m.startswith("pandera")] == []
    heavy, _ = _loaded_by("from carequal.schema import table_schema\ntable_schema('stays')")
    assert "pandera" in heavy


def test_no_module_imports_statsmodels_api():
    """The models carequal fits come from their own statsmodels modules (``statsmodels.genmod...``,
    ``statsmodels.regression...``): ``statsmodels.api`` loads every model besides (time series, plots), 0.25-0.3 s
    more in each process that fits one (the batch, each market report's kernel). Docstring examples may use it."""
    found = []
    for name in MODULES:
        tree = TREES[name]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(name, a.name) for a in node.names if a.name == "statsmodels.api"]
            elif isinstance(node, ast.ImportFrom) and node.module in ("statsmodels", "statsmodels.api"):
                found += [(name, f"from {node.module} import {a.name}") for a in node.names
                          if node.module == "statsmodels.api" or a.name == "api"]
    assert found == []


def test_public_face_resolves_to_each_home():
    import carequal

    homes = carequal._HOMES
    assert 15 <= len(homes) <= 20
    for name in homes:
        value = getattr(carequal, name)
        assert value is getattr(importlib.import_module(homes[name]), name)
        assert name in importlib.import_module(homes[name]).__all__
    assert set(carequal.__all__) <= set(dir(carequal))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        carequal.nothing_here  # noqa: B018


def test_every_error_and_warning_class_is_public():
    import carequal
    from carequal import errors

    for name in MODULES:
        importlib.import_module(name)
    classes = set()
    for base in (errors.CarequalError, errors.CarequalWarning):
        todo = [base]
        while todo:
            cls = todo.pop()
            classes.add(cls)
            todo.extend(cls.__subclasses__())
    carequal_classes = {c for c in classes if c.__module__.split(".")[0] == "carequal"}
    assert {c.__module__ for c in carequal_classes} == {"carequal.errors"}
    assert sorted(c.__name__ for c in carequal_classes if getattr(carequal, c.__name__, None) is not c) == []


def test_the_notebooks_call_only_public_names_of_the_modules_they_import():
    # a notebook imports carequal modules (``from carequal import report as rpt``) and calls their public names
    # (each module's ``__all__``): nothing it uses is private, re-exported for it or missing
    sources = sorted(PACKAGE.glob("notebooks/*.py"))
    assert sources, "no notebook source found"
    for path in sources:
        tree = ast.parse(path.read_text())
        aliases = {(a.asname or a.name): f"carequal.{a.name}" for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module == "carequal" for a in node.names}
        assert aliases, path.name
        used = {(aliases[n.value.id], n.attr) for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases}
        missing = sorted(f"{m}.{name}" for m, name in used
                         if name not in getattr(importlib.import_module(m), "__all__", ()))
        assert missing == [], path.name
