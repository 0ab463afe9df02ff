"""The state of an output folder: one run at a time, a manifest committed after every report, an index from it.

An output folder (``--out``) holds one **report set**: the reports of one kind (per market or per partner), one
reporting period, one set of measures and conditions, one disclosure threshold (and, for packets, one agreement).
Its state lives in three places, kept in step:

* ``manifest.json`` — the source of truth: the set's parameters, every unit's record (``ok`` with its report's
  SHA-256, and its PDF's with ``--pdf``; ``failed`` with the error; ``pending`` when not yet produced) and a
  ``revision`` that grows by one at every commit;
* ``index.html`` — rendered from the manifest at every commit, stamped with the same revision;
* the reports themselves, moved into place (an atomic rename) before the commit that records them.

A commit writes the new manifest and index in full to temporary files flushed to disk, then renames both into
place back to back, manifest first. So whenever a run stops — finished, failed, killed at any instant — every
report the manifest records as ready is complete and carries the recorded hash; a report not yet recorded is not
linked from the index and is redone by the next run; and the index is the manifest's rendering. (Two files
cannot be replaced in one step: a stop that falls in the microseconds between the two renames leaves the index
one commit behind the manifest — showing one report fewer, never one more — and the next run re-renders it
first.)

One run at a time: :func:`hold` takes an exclusive lock (``.carequal/lock`` in the folder, an OS file lock via
the ``filelock`` package) for the whole run. The operating system releases it when the holder exits or dies, so
a lock is never stale; a second run fails at once (or waits ``--wait`` seconds) with the holder's pid, host,
start time and command from ``.carequal/holder.json``. Reports being written live in ``.carequal/staging/``
until they are moved into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from carequal.errors import FolderBusyError, ParameterError

__all__ = ["STATE_DIR", "MANIFEST_FORMAT", "hold", "write_atomic", "write_atomic_together",
           "file_sha256",
           "load_manifest", "commit", "set_key", "staging_dir", "verify_folder", "describe_os_error"]

STATE_DIR = ".carequal"
"""Folder inside ``--out`` with the lock, the holder's description and the staging area (no patient data)."""

MANIFEST_FORMAT = 2
"""Version of the manifest's layout; a folder written by another format is a different report set."""


# -------------------------------------------------------------------------------------------------- the lock


def _holder_text(folder: Path) -> str:
    try:
        holder = json.loads((folder / STATE_DIR / "holder.json").read_text())
    except (OSError, ValueError):
        return "another carequal run (its details are not readable)"
    return (f"carequal run pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started', '?')[:19]}"
            f" UTC ({holder.get('command', '')})")


@contextlib.contextmanager
def hold(folder: str | Path, *, wait: float = 0.0, what: str = "output") -> Iterator[Path]:
    """Hold ``folder``'s run lock for the duration of the ``with`` block.

    Parameters
    ----------
    folder : path
        The output (or work) folder; created if needed.
    wait : float
        Seconds to wait for a run that holds it (0: fail at once).
    what : str
        Which folder, for the message ("output", "work").

    Raises
    ------
    FolderBusyError
        Naming the holder (pid, host, start time, command).
    """
    folder = Path(folder)
    state = folder / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"{what} folder {folder}: {describe_os_error(exc)}") from None
    lock = FileLock(str(state / "lock"), timeout=max(float(wait), 0.0))
    try:
        lock.acquire()
    except Timeout:
        waited = f" (waited {wait:g} s)" if wait else ""
        raise FolderBusyError(f"{what} folder {folder} is in use by {_holder_text(folder)}{waited}; let it finish, "
                              "or give --wait SECONDS to wait for it") from None
    except OSError as exc:
        raise ParameterError(f"{what} folder {folder}: cannot take the run lock: {describe_os_error(exc)}") from None
    try:
        write_atomic(state / "holder.json", json.dumps({
            "pid": os.getpid(), "host": platform.node(), "started": datetime.now(UTC).isoformat(),
            "command": " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))[:500]}))
        yield folder
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------- atomic files


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: what failed on which path, and what to do about the common ones.

    Examples
    --------
    >>> describe_os_error(OSError(28, "No space left on device", "/r/index.html"))
    'no space left on the device holding /r/index.html (free some space and run again)'
    """
    where = exc.filename or ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device holding {where} (free some space and run again)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not allowed to write {where} (check the folder's permissions, or choose another folder)"
    if exc.errno == errno.ENOTDIR:
        return f"{where}: a file is in the way of a folder"
    return f"{exc.strerror or type(exc).__name__}: {where}".strip(": ")


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, flushed to disk, then renamed
    over ``path``: readers see the old file or the new one, never part of one. On failure (a full disk) the
    temporary file is removed and the old file is untouched."""
    write_atomic_together({Path(path): text})


def write_atomic_together(files: dict[Path, str | bytes]) -> None:
    """Write several files each as :func:`write_atomic` does, with every temporary file complete on disk before
    the first rename, and the renames back to back in the given order: a stop can fall between two renames only
    (microseconds), never inside a file. On failure nothing is renamed and the temporary files are removed."""
    staged = []
    try:
        for path, text in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            staged.append((tmp, path))
            with open(tmp, "wb") as handle:
                handle.write(text.encode("utf-8") if isinstance(text, str) else text)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in staged}:
        _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def staging_dir(out: Path, run_id: str) -> Path:
    """Where this run's workers write reports before they are moved into place."""
    return out / STATE_DIR / "staging" / run_id


# ------------------------------------------------------------------------------------------------ the manifest


def set_key(report_set: dict) -> str:
    """Identity of a report set (kind, period, measures, conditions, threshold, agreement)."""
    return hashlib.sha256(json.dumps(report_set, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_manifest(out: Path) -> dict | None:
    """The folder's manifest, or None when there is none. A manifest that cannot be read is an error."""
    path = out / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{path} cannot be read ({exc}); move the folder aside or give --force") from None


def commit(out: Path, manifest: dict, render_index) -> dict:
    """Record ``manifest`` as the folder's state: revision + 1; the manifest and its index written in full, then
    renamed into place back to back (manifest first: the index is never ahead of the record)."""
    manifest["revision"] = int(manifest.get("revision", 0)) + 1
    manifest["committed"] = datetime.now(UTC).isoformat()
    write_atomic_together({out / "manifest.json": json.dumps(manifest, indent=2, default=str),
                           out / "index.html": render_index(manifest)})
    return manifest


def units_of(manifest: dict) -> dict:
    """The unit records of a manifest (markets, partners or sponsors)."""
    return manifest.get({"partner": "partners", "sponsor": "sponsors"}.get(manifest.get("by"), "markets"), {})


def unit_files(out: Path, record: dict) -> list[Path]:
    """The files in ``out`` that belong to one unit's record (its report and, for packets, its extract)."""
    files = [out / record[k] for k in ("html", "pdf") if record.get(k)]
    extract = record.get("extract_dir") or str(record.get("extract") or "").split("/")[0]
    if extract:
        files.append(out / extract)
    return files


def remove_unit_files(out: Path, record: dict) -> None:
    for path in unit_files(out, record):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _linked(index_html: str) -> set[str]:
    """The report files an index page links to."""
    import re

    return {href for href in re.findall(r'href="([^"#?]+\.(?:html|pdf))"', index_html)}


def verify_folder(out: str | Path, *, interrupted: bool = False) -> list[str]:
    """Problems with an output folder's consistency (empty when consistent).

    Checks that every report the manifest records as ready exists with the recorded SHA-256, that no report in
    the folder is unrecorded, and that the index was rendered from this manifest (same revision).

    With ``interrupted`` (a folder whose run was stopped), two states that a stop between two renames can leave
    are accepted, because neither shows anything the manifest does not vouch for: a report moved into place but
    not yet recorded (not linked from the index; the next run removes and redoes it), and an index one revision
    behind the manifest, provided every report it links is recorded as ready (the next run re-renders it).
    """
    out = Path(out)
    manifest = load_manifest(out)
    if manifest is None:
        return ["no manifest.json"]
    problems = []
    records = units_of(manifest) or {}
    recorded = set()
    for unit, record in records.items():
        if record.get("status") == "ok":
            path = out / record["html"]
            recorded.add(record["html"])
            if not path.is_file():
                problems.append(f"{unit}: {record['html']} is recorded as ready but missing")
            elif record.get("html_sha256") and file_sha256(path) != record["html_sha256"]:
                problems.append(f"{unit}: {record['html']} differs from the recorded report")
            if record.get("pdf"):
                recorded.add(record["pdf"])
                pdf = out / record["pdf"]
                if not pdf.is_file():
                    problems.append(f"{unit}: {record['pdf']} is recorded as ready but missing")
                elif file_sha256(pdf) != record.get("pdf_sha256"):
                    problems.append(f"{unit}: {record['pdf']} differs from the recorded PDF")
    index = out / "index.html"
    text = index.read_text(encoding="utf-8") if index.is_file() else ""
    linked = _linked(text)
    for page in [*out.glob("*.html"), *out.glob("*.pdf")]:
        if page.name != "index.html" and page.name not in recorded and not (interrupted and page.name not in linked):
            problems.append(f"{page.name} is not recorded in the manifest")
    revision = int(manifest.get("revision", 0))
    stamps = [revision - 1, revision] if interrupted else [revision]
    if not index.is_file():
        problems.append("no index.html")
    elif not any(f'<meta name="carequal-revision" content="{r}">' in text for r in stamps):
        problems.append(f"index.html was not rendered from manifest revision {revision}")
    elif not linked <= recorded:
        problems.append(f"index.html links reports the manifest does not record: {sorted(linked - recorded)}")
    return problems
