"""Kernels for the report notebooks: IPC transport (no TCP ports to collide on) and kernels reused across reports.

Why hand-written: papermill starts a kernel per notebook; nbclient can run a notebook on a kernel that is already
running, and :class:`KernelSession` is the few lines of glue around it (parameters are injected with papermill's
own ``parameterize_notebook``, so a notebook sees exactly what papermill would give it).
"""

from __future__ import annotations

import atexit
import gc
import os
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty

__all__ = ["COLLECTOR_THRESHOLDS", "FOLDER_PREFIX", "KERNEL", "REPLY_SLICE", "KernelSession", "close_sessions",
           "execute_in_session", "ipc_kernel_manager", "kernel_folder", "session", "setup_imports", "tune_collector",
           "wait_in_slices", "warm_session"]

KERNEL = "python3"
"""The kernel the batch runs every notebook on: the interpreter running the batch (jupyter's native ``python3``
spec), whatever kernel a notebook names (``carequal``, the one ``tasks.py lab`` registers for JupyterLab)."""


KERNEL_ENVIRONMENT = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}
"""Set (unless already set) in a worker before it starts report kernels, which inherit it: ipykernel's debugger
otherwise prints a frozen-modules warning to stderr at every start."""


def kernel_environment() -> None:
    """Apply :data:`KERNEL_ENVIRONMENT` to this process (kernels started from it inherit it)."""
    for name, value in KERNEL_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


COLLECTOR_THRESHOLDS = (10_000, 10, 10)
"""The cyclic garbage collector's thresholds (``gc.set_threshold``) in the batch's own processes: the command
(:func:`carequal.cli.run`), its workers and its report kernels. Python's default first threshold, 700, runs the
collector after every 700 new container objects, which pandas and matplotlib create by the thousand per
operation: a packet batch on the sample ran it about 2,800 times, most collections scanning objects that were
about to be freed anyway. Timed by ``gc.callbacks`` over its processes, the batch spent 1.4-2.4 CPU-s collecting
with 700 and 1.1-1.3 with 10,000 (of 15-20 CPU-s in all); the test processes 1.2-1.4 against 0.5 s over the same
tests. Cycles are still collected, a little later; the explicit collections (a kernel's reset between reports)
are unchanged. Code that calls the library or runs a notebook in its own kernel keeps Python's defaults."""


def tune_collector() -> None:
    """Set :data:`COLLECTOR_THRESHOLDS` in this process (the batch's own processes only)."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


REPLY_SLICE = 1.0
"""Seconds a kernel client waits on its shell socket before it looks again (:func:`wait_in_slices`)."""


async def wait_in_slices(get, timeout: float | None, *, slice_seconds: float = REPLY_SLICE, clock=time.monotonic):
    """``await get(t)`` (a socket read that raises ``queue.Empty`` after ``t`` seconds without a message) in
    slices of at most ``slice_seconds`` until ``timeout`` seconds have passed (``None``: no limit); the first
    message read is returned, and ``Empty`` is raised when the time is up without one.

    Why: nbclient waits for each cell's shell reply with one read as long as the cell's timeout, and the event
    loop can miss the socket's wake-up (jupyter/nbclient#312): the reply is then read only when the timeout ends
    (an hour for a report: :data:`carequal.batch.jobs.EXECUTION_TIMEOUT`). Each slice ends in a fresh poll of
    the socket, so a reply whose wake-up was missed is read within a slice. A reply is read as soon as it is
    seen, as before.

    >>> import asyncio, queue
    >>> waits = []
    >>> async def get(t):  # a read that misses the reply once, then finds it
    ...     waits.append(t)
    ...     if len(waits) == 1:
    ...         raise queue.Empty
    ...     return "reply"
    >>> asyncio.run(wait_in_slices(get, 3600))
    'reply'
    >>> waits
    [1.0, 1.0]
    """
    deadline = None if timeout is None else clock() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - clock())
        try:
            return await get(slice_seconds if left is None else min(slice_seconds, left))
        except Empty:
            if left is not None and left <= slice_seconds:
                raise


FOLDER_PREFIX = "carequal-kernel-"
"""Kernel socket folders (:func:`kernel_folder`) are ``<temp>/carequal-kernel-<pid>-<random>``."""


def kernel_folder() -> tempfile.TemporaryDirectory:
    """A new temporary folder for one kernel's IPC sockets, named after this process
    (``carequal-kernel-<pid>-...``). Its owner removes it when the kernel stops; a process killed outright
    (``kill -9``) cannot, so folders left by processes that no longer exist are removed first (they hold only
    the dead kernels' socket files). A folder another user owns, or one in use, is left alone."""
    import shutil

    base = Path(tempfile.gettempdir())
    for left in base.glob(f"{FOLDER_PREFIX}*-*"):
        pid = left.name[len(FOLDER_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its process is gone: nobody will remove it
            shutil.rmtree(left, ignore_errors=True)
        except OSError:  # alive, another user's: not ours to remove
            continue
    return tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")


def ipc_kernel_manager(folder: str):
    """A kernel manager class whose kernels talk over IPC sockets in ``folder``: no TCP ports, so parallel
    kernels cannot collide on a port, and nothing listens on the network (ipykernel warns about
    unencrypted TCP otherwise). Its clients wait for shell replies in slices (:func:`wait_in_slices`), so a
    reply the event loop missed does not hold a report until the cell's timeout."""
    # the Jupyter stack is loaded only where a notebook runs (worker processes), never by the planning parent
    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Type

    class SlicedShellChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout=None):
            read = super().get_msg
            return await wait_in_slices(lambda t: read(timeout=t), timeout)

    class SlicedKernelClient(AsyncKernelClient):
        shell_channel_class = Type(SlicedShellChannel)

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(Path(folder) / "kernel")
            self.client_factory = SlicedKernelClient

    return IPCKernelManager


class KernelSession:
    """One kernel that executes several report notebooks in turn (``MarketJob.reuse_kernel``).

    A market report's imports and first-call caches cost more than its computation for a small market, and a
    fresh kernel pays them every time. A session keeps the kernel: between notebooks it clears the user
    namespace (``%reset -f``) and closes every figure, so no variable, figure or data frame of one market
    reaches the next; imported modules and their caches (code lists, value sets) stay, which is the point.
    After ``max_runs`` notebooks, after any failure (of a notebook, or of clearing the namespace before one), or
    if the kernel died, the kernel is replaced.
    """

    def __init__(self, cwd: str, *, max_runs: int = 25):
        self.cwd, self.max_runs = cwd, max_runs
        self.km = self.kc = self._folder = None
        self.runs = 0

    def _alive(self) -> bool:
        from nbclient.util import run_sync  # Jupyter stack: see ipc_kernel_manager

        return bool(run_sync(self.km.is_alive)())

    RESET = ("%reset -f\nimport sys\nif 'matplotlib.pyplot' in sys.modules:\n"
             "    sys.modules['matplotlib.pyplot'].close('all')\ndel sys")
    """What runs on the kernel before every notebook but its first: clears the user namespace, closes every
    figure (where pyplot was loaded: a notebook that draws nothing does not pay for importing it, about 0.5 s)."""

    def _reset(self, timeout: float = 120) -> None:
        """Run :attr:`RESET` on the kernel through the session's own client and wait until the kernel is idle
        again (a request and its reply: no notebook client is built for it). Raises ``RuntimeError`` if the
        code failed, ``TimeoutError`` if the kernel did not answer within ``timeout`` seconds."""
        from nbclient.util import run_sync  # Jupyter stack: see ipc_kernel_manager

        reply = run_sync(self.kc.execute_interactive)(self.RESET, allow_stdin=False, timeout=timeout,
                                                      output_hook=lambda msg: None)
        if reply["content"].get("status") != "ok":
            content = reply["content"]
            raise RuntimeError(f"resetting the kernel failed: {content.get('ename')}: {content.get('evalue')}")

    def execute(self, nb, *, timeout: int) -> None:
        """Execute ``nb`` (parameters already injected) in place; raises what nbclient raises.

        On a kernel that has run a notebook, :attr:`RESET` runs first; if it fails (or the kernel does not
        answer), that kernel is stopped and ``nb`` runs on a new one."""
        from nbclient import NotebookClient  # Jupyter stack: see ipc_kernel_manager

        if self.km is not None and (self.runs >= self.max_runs or self.kc is None or not self._alive()):
            self.close()
        if self.km is not None:
            try:
                self._reset()
            except Exception:  # noqa: BLE001 - a kernel that cannot be cleared is replaced, never reused
                self.close()
        if self.km is None:
            self._folder = kernel_folder()
            self.km = ipc_kernel_manager(self._folder.name)(kernel_name=KERNEL)
        client = NotebookClient(nb, km=self.km, timeout=timeout, kernel_name=KERNEL,
                                resources={"metadata": {"path": self.cwd}})
        client.kc = self.kc
        try:
            client.execute()
        except BaseException:
            # whatever state the failure left (a half-run cell, a dead or hung kernel) must not reach the next
            # notebook: the kernel is replaced before the next one
            self.kc = client.kc
            self.close()
            raise
        self.kc = client.kc
        self.runs += 1

    def warm(self, code: str, *, timeout: int = 600) -> bool:
        """Start the kernel and run ``code`` on it (a notebook's imports: :func:`setup_imports`), so that the
        first report finds its modules loaded; the namespace is cleared before that report as before any other.
        Not counted as a report. A failure only stops the kernel (the first report starts another); returns
        whether the kernel is warm.

        What the warm-up leaves (the modules and everything they hold) is then frozen for the garbage collector
        (:func:`gc.freeze`): it stays loaded for the kernel's life anyway, and :attr:`RESET` (``%reset -f``
        runs two full collections) and the reports' own full collections no longer scan it each time (a reset
        on a kernel with a packet's imports: about 0.3 s before, 0.02 s after). Objects the reports create are
        collected as before, with the batch's thresholds (:data:`COLLECTOR_THRESHOLDS`)."""
        import nbformat  # Jupyter stack: see ipc_kernel_manager

        freeze = f"import gc\ngc.collect()\ngc.freeze()\ngc.set_threshold(*{COLLECTOR_THRESHOLDS!r})\ndel gc"
        try:
            self.execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code),
                                                         nbformat.v4.new_code_cell(freeze)]), timeout=timeout)
        except Exception:  # noqa: BLE001 - execute() has stopped the kernel; the first report starts its own
            return False
        self.runs -= 1
        return True

    def close(self) -> None:
        """Stop the kernel (if any) and remove its socket folder."""
        from nbclient.util import run_sync  # Jupyter stack: see ipc_kernel_manager

        try:
            if self.kc is not None:
                self.kc.stop_channels()
            if self.km is not None and self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - a kernel that is already gone is closed
            pass
        finally:
            if self._folder is not None:
                self._folder.cleanup()
            self.km = self.kc = self._folder = None
            self.runs = 0


_SESSIONS: dict[tuple[int, str], KernelSession] = {}


def session(cwd: str, max_runs: int) -> KernelSession:
    """This thread's kernel session (a Dask worker may run tasks in several threads, one kernel each)."""
    key = (threading.get_ident(), cwd)
    if key not in _SESSIONS:
        if not _SESSIONS:
            atexit.register(close_sessions)
        _SESSIONS[key] = KernelSession(cwd, max_runs=max_runs)
    return _SESSIONS[key]


def close_sessions() -> None:
    """Stop every kernel session of this process."""
    while _SESSIONS:
        _, session = _SESSIONS.popitem()
        session.close()



def setup_imports(notebook: str | Path) -> str:
    """The imports (and line magics) of a notebook's cells tagged ``setup``, as code: what a kernel can load
    before the notebook's parameters are known. Empty when the notebook has no such cell."""
    import ast

    import nbformat  # Jupyter stack: see ipc_kernel_manager

    lines = []
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type != "code" or "setup" not in cell.metadata.get("tags", []):
            continue
        magics = [line for line in cell.source.splitlines() if line.lstrip().startswith("%")]
        code = "\n".join("" if line.lstrip().startswith("%") else line for line in cell.source.splitlines())
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        lines += magics + [ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    return "\n".join(lines)


def warm_session(notebook: str, cwd: str, markets_per_kernel: int) -> None:
    """Start this thread's kernel session for reports written to ``cwd`` and load ``notebook``'s imports on it
    (:meth:`KernelSession.warm`); never raises (a report starts its own kernel if this one failed)."""
    try:
        code = setup_imports(notebook)
    except Exception:  # noqa: BLE001 - an unreadable notebook fails in its report, with the error recorded there
        code = ""
    session(cwd, markets_per_kernel).warm(code)


def execute_in_session(notebook: str, parameters: dict, output: Path, *, timeout: int, markets_per_kernel: int) -> None:
    """Execute ``notebook`` with ``parameters`` on this thread's kernel session, writing the executed notebook
    (complete, or up to the failing cell) to ``output``. The kernel's working folder is ``output``'s folder (the
    run's work folder), never the notebook's: a shipped notebook lives in the installed package."""
    import nbformat  # Jupyter stack and papermill: see ipc_kernel_manager
    from papermill.execute import prepare_notebook_metadata
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    # as papermill.execute_notebook prepares a notebook, up to the point where it would start a kernel
    nb = load_notebook_node(notebook)
    nb = parameterize_notebook(nb, parameters, report_mode=True, kernel_name=KERNEL, language="python")
    nb = prepare_notebook_metadata(nb, notebook, str(output), report_mode=True)
    try:
        session(str(Path(output).parent), markets_per_kernel).execute(nb, timeout=timeout)
    finally:
        nbformat.write(nb, str(output))
