#!/usr/bin/env python3
"""Set up carequal's environment and run its jobs, needing nothing but Python 3.11+.

    python3 tasks.py report   # create .venv if needed, install carequal, run the report batch on data/sample
    python3 tasks.py test     # create .venv if needed, install carequal with test extras, lint and test
    python3 tasks.py lab      # install JupyterLab too, register the "carequal" kernel, open the notebooks
    python3 tasks.py packets  # one packet and extract per partner of data/sample/agreement.toml in packets/

The virtual environment is reinstalled only when pyproject.toml changes (a hash is kept in .venv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if result.returncode:
        sys.exit(result.returncode)


def setup(extras: str = "test") -> None:
    """Create .venv and install carequal (editable, with ``extras``) unless already current."""
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py may be started by an older python3
        sys.exit(f"carequal needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / ".carequal-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]")
    stamp.write_text(want)


def main(argv: list[str]) -> None:
    task = argv[0] if argv else "help"
    if task == "report":
        setup()
        # the main job: every sample market's report, the index and the manifest in reports/
        run(BIN / "carequal", "report", "--data", "data/sample", "--out", "reports", "--workers", "2", *argv[1:])
    elif task == "packets":
        setup()
        # the partnership's packets: one per partner of the sample agreement, with CSV/Excel extracts
        run(BIN / "carequal", "report", "--data", "data/sample", "--out", "packets", "--by", "partner",
            "--workers", "2", *argv[1:])
    elif task == "lab":
        setup("test,lab")
        # a named kernel, so JupyterLab started from anywhere runs the notebooks in this environment
        run(PY, "-m", "ipykernel", "install", "--user", "--name", "carequal",
            "--display-name", "Python 3 (carequal)")
        run(BIN / "jupyter", "lab", "--notebook-dir", "notebooks", *argv[1:])
    elif task == "test":
        setup()
        run(PY, "-m", "ruff", "check", "--no-cache", "carequal", "tests", "benchmarks", "notebooks", "scripts",
            "tasks.py", "conftest.py")
        run(PY, "-m", "pytest", *argv[1:])
    else:
        print(__doc__)
        sys.exit(0 if task == "help" else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
