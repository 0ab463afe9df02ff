#!/usr/bin/env python3
"""The git clean filter of the notebooks (``carequal/notebooks/*.ipynb`` and their jupytext ``.py`` sources):
what JupyterLab and jupytext add when a notebook is opened, run or saved is left out of what git compares and
stores, so opening and saving a notebook leaves ``git status`` clean.

``python3 tasks.py lab`` configures it (``git config filter.carequal-notebook.clean ...``; ``.gitattributes``
names the files). It reads a file on standard input and writes the normalised file on standard output:

* a notebook (``.ipynb``, JSON): outputs and execution counts emptied, each cell's metadata reduced to
  :data:`CELL_METADATA` (its tags, and the blank lines jupytext keeps after it), the notebook's metadata
  reduced to ``jupytext`` (without ``text_representation``) and ``kernelspec`` (pinned to :data:`KERNELSPEC`,
  the kernel ``tasks.py lab`` registers), written as nbformat writes it;
* a jupytext source (``.py``): the ``jupytext_version`` line of its header left out and the kernelspec pinned.

Only the standard library: git runs it with whichever Python ``tasks.py lab`` names. A saved notebook whose
size changed is listed by ``git status`` until the index is refreshed (``git add`` then stages nothing): git
compares sizes before it runs a filter. The ``.py`` sources need no filter to stay unchanged: ``jupytext.toml``
pins what jupytext writes into their header.
"""

from __future__ import annotations

import json
import re
import sys

KERNELSPEC = {"display_name": "Python 3 (carequal)", "language": "python", "name": "carequal"}
"""The kernel every notebook names: the one ``python3 tasks.py lab`` registers."""

CELL_METADATA = ("tags", "lines_to_next_cell")
"""The cell metadata a notebook keeps: the papermill tags, and the blank lines jupytext keeps after a cell."""


def clean_notebook(text: str) -> str:
    """The notebook in ``text`` (nbformat 4 JSON) without what opening, running or saving it adds."""
    nb = json.loads(text)
    metadata = {"kernelspec": dict(KERNELSPEC)}
    jupytext = {k: v for k, v in nb.get("metadata", {}).get("jupytext", {}).items() if k != "text_representation"}
    if jupytext:
        metadata["jupytext"] = jupytext
    nb["metadata"] = metadata
    for cell in nb.get("cells", []):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA and v}
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    # nbformat.writes: one-space indent, sorted keys, non-ASCII kept; files end with a newline
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def clean_source(text: str) -> str:
    """The jupytext source in ``text`` without the jupytext version in its header, the kernelspec pinned."""
    head, sep, body = text.partition("\n# ---\n\n")
    if not sep or not head.startswith("# ---\n"):
        return text
    head = re.sub(r"(?m)^#\s+jupytext_version: .*\n", "", head + "\n")[:-1]
    kernel = "\n".join(f"#     {k}: {v}" for k, v in KERNELSPEC.items())
    head = re.sub(r"(?m)^#   kernelspec:\n(?:#     .*\n?)*", f"#   kernelspec:\n{kernel}\n", head + "\n")[:-1]
    return head + sep + body


def clean(text: str) -> str:
    """:func:`clean_notebook` for JSON, :func:`clean_source` for anything else."""
    return clean_notebook(text) if text.lstrip().startswith("{") else clean_source(text)


if __name__ == "__main__":
    sys.stdout.write(clean(sys.stdin.read()))
