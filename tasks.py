#!/usr/bin/env python3
"""Set up carequal's environment and run its jobs, needing nothing but Python 3.11+.

    python3 tasks.py report   # create .venv from the lock file, run the report batch on data/sample
    python3 tasks.py test     # create .venv from the lock file, lint and test
    python3 tasks.py lab      # install JupyterLab too (locked), register the "carequal" kernel, open carequal/notebooks
    python3 tasks.py packets  # one packet and extract per partner of data/sample/agreement.toml in packets/
    python3 tasks.py lock     # re-resolve the lock files and environment.yml from pyproject.toml (needs network)
    python3 tasks.py pg       # a throw-away PostgreSQL server (prints its URL; --sample loads data/sample as in
                              # data/sample/warehouse.toml), stopped and removed on Ctrl-C

    python3 tasks.py test --deps newest    # the suite against the newest versions pyproject.toml allows
    python3 tasks.py test --deps minimum   # the suite against the declared minimum versions (locks/minimum.txt)

Installs come from the lock files in ``locks/`` (every package pinned, with its hashes, for Python 3.11-3.13
on Linux, macOS and Windows), so a fresh machine gets the versions that were tested. ``--deps`` may also be
given as the environment variable ``CAREQUAL_DEPS`` (the CI switch); ``newest`` and ``minimum`` use their own
virtual environments (``.venv-newest``, ``.venv-minimum``). A virtual environment is reinstalled only when
its lock file changes (a hash is kept in it).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCKS = ROOT / "locks"
UV_VERSION = "0.13.9"  # the resolver behind `tasks.py lock`; only lock needs it
DEPS_MODES = ("locked", "newest", "minimum")
LINTED = ("carequal", "tests", "benchmarks", "scripts", "tasks.py", "conftest.py")  # carequal/notebooks too
NOTEBOOKS = ROOT / "carequal" / "notebooks"  # shipped in the package; `lab` opens the checkout's copies


def venv_paths(name: str) -> tuple[Path, Path, Path]:
    """The folder, the scripts folder and the interpreter of the virtual environment ``name``."""
    folder = ROOT / name
    bin_dir = folder / ("Scripts" if os.name == "nt" else "bin")
    return folder, bin_dir, bin_dir / ("python.exe" if os.name == "nt" else "python")


VENV, BIN, PY = venv_paths(".venv")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if result.returncode:
        sys.exit(result.returncode)


def dependency_digest() -> str:
    """A hash of what the lock files are resolved from: pyproject's dependency tables and ``locks/build.in``."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    source = repr((project.get("requires-python"), project.get("dependencies"),
                   project.get("optional-dependencies"))) + (LOCKS / "build.in").read_text()
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def lock_digest(lock: Path) -> str | None:
    """The dependency digest a lock file was resolved from (its ``# dependency-digest:`` line)."""
    found = re.search(r"^# dependency-digest: (\w+)$", lock.read_text(), flags=re.M)
    return found.group(1) if found else None


def check_lock(lock: Path) -> None:
    if not lock.is_file():
        sys.exit(f"tasks.py: {lock.relative_to(ROOT)} is missing: run `python3 tasks.py lock`")
    if lock_digest(lock) != dependency_digest():
        sys.exit(f"tasks.py: {lock.relative_to(ROOT)} was resolved from other dependencies than pyproject.toml "
                 "now declares: run `python3 tasks.py lock` and commit the lock files")


def create_venv(name: str) -> tuple[Path, Path, Path]:
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py may be started by an older python3
        sys.exit(f"carequal needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    folder, bin_dir, py = venv_paths(name)
    if not py.exists():
        print(f"+ creating {folder}", flush=True)
        venv.create(folder, with_pip=True)
    return folder, bin_dir, py


def setup(lock_name: str = "test", deps: str = "locked") -> tuple[Path, Path]:
    """Create the virtual environment for ``deps`` and install carequal into it unless already current, then
    byte-compile carequal's modules that changed.

    ``locked`` and ``minimum`` install exactly the lock file's versions (hash-checked, no resolution), then
    carequal itself without dependencies; ``newest`` lets pip resolve the newest versions pyproject allows.
    pip byte-compiles what it installs, but an editable install leaves carequal's own modules to be compiled
    on import: where ``PYTHONDONTWRITEBYTECODE`` is set, every kernel and command a batch or the tests start
    would compile them again (about 0.7 s of CPU each). Returns the scripts folder and the interpreter.
    """
    bin_dir, py = _install(lock_name, deps)
    run(py, "-m", "compileall", "-q", "carequal")
    return bin_dir, py


def _install(lock_name: str, deps: str) -> tuple[Path, Path]:
    if deps == "newest":
        _, bin_dir, py = create_venv(".venv-newest")
        run(py, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        # the build requirements too (newest allowed): the wheel test builds carequal without build isolation
        run(py, "-m", "pip", "install", "--quiet", "--upgrade", "-r", LOCKS / "build.in")
        run(py, "-m", "pip", "install", "--quiet", "--upgrade", "--upgrade-strategy", "eager", "-e", ".[test]")
        run(py, "-m", "pip", "list", "--format", "freeze")
        return bin_dir, py
    lock = LOCKS / ("minimum.txt" if deps == "minimum" else f"{lock_name}.txt")
    check_lock(lock)
    folder, bin_dir, py = create_venv(".venv-minimum" if deps == "minimum" else ".venv")
    stamp = folder / ".carequal-installed"
    want = hashlib.sha256(lock.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want:
        return bin_dir, py
    run(py, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", lock)
    run(py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", ".")
    run(py, "-m", "pip", "check")
    stamp.write_text(want)
    return bin_dir, py


def environment_yml(lock_text: str) -> str:
    """The conda ``environment.yml``: conda-forge's Python and pip, then every pin of ``lock_text`` for pip.

    Conda resolves only Python and pip; the packages come from PyPI at exactly the locked versions (the same
    wheels the lock's hashes name), so a conda user tests what ``tasks.py`` tests.
    """
    pins = [line.rstrip(" \\") for line in lock_text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    lines = [
        "# Generated by `python3 tasks.py lock` from locks/lab.txt: edit pyproject.toml and re-lock, not this file.",
        "# conda env create -f environment.yml  (then: conda activate carequal)",
        "name: carequal",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python>=3.11,<3.14",
        "  - pip",
        "  - pip:",
    ]
    lines += [f'      - "{pin}"' for pin in pins]
    lines.append("      - -e .")
    return "\n".join(lines) + "\n"


def lock() -> None:
    """Re-resolve ``locks/*.txt`` with uv and regenerate ``environment.yml`` from ``locks/lab.txt``."""
    _, tools_bin, tools_py = create_venv(".venv-tools")
    uv = tools_bin / ("uv.exe" if os.name == "nt" else "uv")
    if not uv.exists():
        run(tools_py, "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}")
    digest = dependency_digest()
    common = ["pip", "compile", "pyproject.toml", "locks/build.in", "--generate-hashes", "--quiet",
              "--no-header", "--python-version", "3.11"]
    header = ("# carequal's locked dependencies: generated by `python3 tasks.py lock` (uv {uv}) from pyproject.toml\n"
              "# and locks/build.in; install with `pip install --require-hashes --no-deps -r {name}`.\n"
              "# {what}\n# dependency-digest: {digest}\n")
    # lab is the superset (test + JupyterLab); test is resolved with lab's versions as constraints, so the two
    # environments agree on every package they share
    targets = [
        ("lab.txt", ["--universal", "--extra", "test", "--extra", "lab"],
         "Python 3.11-3.13 on Linux, macOS and Windows: runtime, test and JupyterLab dependencies."),
        ("test.txt", ["--universal", "--extra", "test", "--constraint", "locks/lab.txt"],
         "Python 3.11-3.13 on Linux, macOS and Windows: runtime and test dependencies."),
        ("minimum.txt", ["--extra", "test", "--resolution", "lowest-direct", "--python-platform", "linux"],
         "The lowest versions pyproject.toml allows (Python 3.11, Linux): `python3 tasks.py test --deps minimum`."),
    ]
    for name, options, what in targets:
        out = LOCKS / name
        tmp = out.with_suffix(".tmp")
        run(uv, *common, *options, "-o", tmp)
        out.write_text(header.format(uv=UV_VERSION, name=f"locks/{name}", what=what, digest=digest)
                       + tmp.read_text())
        tmp.unlink()
    (ROOT / "environment.yml").write_text(environment_yml((LOCKS / "lab.txt").read_text()))
    print("locks/*.txt and environment.yml rewritten: commit them with pyproject.toml", flush=True)


def pop_deps(args: list[str]) -> tuple[str, list[str]]:
    """``--deps MODE`` (or ``CAREQUAL_DEPS``) out of the task's arguments."""
    deps = os.environ.get("CAREQUAL_DEPS") or "locked"
    rest = list(args)
    if "--deps" in rest:
        at = rest.index("--deps")
        if at + 1 >= len(rest):
            sys.exit(f"tasks.py: --deps needs one of {', '.join(DEPS_MODES)}")
        deps = rest[at + 1]
        del rest[at:at + 2]
    if deps not in DEPS_MODES:
        sys.exit(f"tasks.py: --deps {deps!r} is not one of {', '.join(DEPS_MODES)}")
    return deps, rest


def main(argv: list[str]) -> None:
    task = argv[0] if argv else "help"
    if task == "report":
        bin_dir, _ = setup()
        # the main job: every sample market's report, the index and the manifest in reports/
        run(bin_dir / "carequal", "report", "--data", "data/sample", "--out", "reports", "--workers", "2",
            *argv[1:])
    elif task == "packets":
        bin_dir, _ = setup()
        # the partnership's packets: one per partner of the sample agreement, with CSV/Excel extracts
        run(bin_dir / "carequal", "report", "--data", "data/sample", "--out", "packets", "--by", "partner",
            "--workers", "2", *argv[1:])
    elif task == "lab":
        bin_dir, py = setup("lab")
        # a named kernel, so JupyterLab started from anywhere runs the notebooks in this environment
        run(py, "-m", "ipykernel", "install", "--user", "--name", "carequal",
            "--display-name", "Python 3 (carequal)")
        # opening and saving a notebook adds metadata (language_info, outputs, the jupytext version): the git
        # filter of .gitattributes leaves it out, so git status stays clean (scripts/notebook_filter.py)
        if (ROOT / ".git").exists():
            run("git", "config", "filter.carequal-notebook.clean", f'"{py}" scripts/notebook_filter.py')
        run(bin_dir / "jupyter", "lab", "--notebook-dir", NOTEBOOKS, *argv[1:])
    elif task == "test":
        deps, args = pop_deps(argv[1:])
        _, py = setup("test", deps)
        if deps == "locked":  # the linter's rules change between ruff versions: lint with the locked one only
            run(py, "-m", "ruff", "check", "--no-cache", *LINTED)
        os.environ["CAREQUAL_DEPS"] = deps  # tests/test_environment.py checks the installed versions against it
        run(py, "-m", "pytest", *args)
    elif task == "pg":
        _, py = setup()
        # the server binaries of the machine (apt-get install postgresql), run as an unprivileged user when root
        # (exec, not a child: Ctrl-C must reach the server's own handler, which stops it and removes its data)
        os.chdir(ROOT)
        os.execv(py, [str(py), "tests/pg_server.py", *argv[1:]])
    elif task == "lock":
        lock()
    else:
        print(__doc__)
        sys.exit(0 if task == "help" else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
