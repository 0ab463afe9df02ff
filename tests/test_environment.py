"""The lock files, environment.yml and pyproject.toml describe one environment, and it is the one installed."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import tasks

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"


def locked(name: str) -> list[tuple[str, Version, Marker | None]]:
    """(package, version, marker) of every pin in ``locks/<name>``."""
    pins = []
    for line in (LOCKS / name).read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9][\w.\-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if found:
            marker = Marker(found.group(3)) if found.group(3) else None
            pins.append((canonicalize_name(found.group(1)), Version(found.group(2)), marker))
    return pins


def applicable(name: str, environment: dict | None = None) -> dict[str, Version]:
    """The pins of ``locks/<name>`` that apply on ``environment`` (default: this interpreter)."""
    return {pkg: ver for pkg, ver, marker in locked(name) if marker is None or marker.evaluate(environment)}


def declared(extras: tuple[str, ...] = ("test", "lab")) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


PYTHONS = [{"python_version": v, "python_full_version": f"{v}.0", "sys_platform": p, "platform_system": s,
            "os_name": "nt" if p == "win32" else "posix", "implementation_name": "cpython"}
           for v in ("3.11", "3.12", "3.13")
           for p, s in (("linux", "Linux"), ("darwin", "Darwin"), ("win32", "Windows"))]


def test_environment_yml_is_generated_from_the_lab_lock():
    expected = tasks.environment_yml((LOCKS / "lab.txt").read_text())
    assert (ROOT / "environment.yml").read_text() == expected, "environment.yml is stale: run python3 tasks.py lock"


@pytest.mark.parametrize("lock", ["test.txt", "lab.txt", "minimum.txt"])
def test_lock_is_resolved_from_the_current_pyproject(lock):
    assert tasks.lock_digest(LOCKS / lock) == tasks.dependency_digest(), f"{lock} is stale: python3 tasks.py lock"


@pytest.mark.parametrize("environment", PYTHONS, ids=lambda e: f"{e['python_version']}-{e['sys_platform']}")
def test_lock_satisfies_every_declared_dependency(environment):
    pins = applicable("lab.txt", environment)
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not locked for {environment}"
        assert req.specifier.contains(pins[name], prereleases=True), f"lab.txt pins {name}=={pins[name]}: {req}"


def test_test_and_lab_locks_agree_on_shared_packages():
    assert {pkg for pkg, _, _ in locked("test.txt")} <= {pkg for pkg, _, _ in locked("lab.txt")}
    for environment in PYTHONS:
        test_env, lab_env = applicable("test.txt", environment), applicable("lab.txt", environment)
        assert test_env == {p: lab_env[p] for p in test_env}, environment


def test_minimum_lock_holds_the_declared_minimums():
    pins = applicable("minimum.txt", {"python_version": "3.11", "python_full_version": "3.11.0",
                                      "sys_platform": "linux", "platform_system": "Linux"})
    for req in declared(("test",)):
        lowest = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        if lowest:  # the lowest release at the declared precision (scipy>=1.11 may lock 1.11.1: 1.11.0 is yanked)
            pin = pins[canonicalize_name(req.name)]
            assert pin.release[:len(lowest[0].release)] == lowest[0].release, f"{req}: minimum lock has {pin}"


def test_installed_versions_are_the_locked_ones():
    if os.environ.get("CAREQUAL_DEPS", "") != "locked":
        pytest.skip("not running in the locked environment (run through `python3 tasks.py test`)")
    pins = applicable("test.txt")
    wrong = {}
    for pkg, ver in pins.items():
        try:
            have = Version(metadata.version(pkg))
        except metadata.PackageNotFoundError:
            have = None
        if have != ver:
            wrong[pkg] = (str(ver), str(have))
    assert not wrong, f"installed versions differ from locks/test.txt (locked, installed): {wrong}"
