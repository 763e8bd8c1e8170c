"""Warm kernels: one IPython kernel runs several notebooks of a report run, one after the other.

Starting a kernel and importing pandas, seaborn, SciPy and pstlib into it costs about 4 s, more
than most reports' own cells. So each worker of :func:`~pstlib.reports.execute.run_reports` keeps
one :class:`WarmKernel` for the whole run: started once, its imports done before its first
notebook, and its namespace reset between notebooks (``%reset -f``: every name dropped, the
imported modules kept; cells counted from 1 again; warning registries cleared, so a warning shows
in every report that raises it), so each notebook starts as in a new kernel. A report sets its own state (the theme, its
``ReportData``) in its first cell, and its figures use no global ``pyplot`` state, so the outputs
are the same as from a new kernel (``tests/notebooks`` checks it).

papermill still executes each notebook (parameters, the executed copy, the error naming the cell)
through the ``pstlib-warm`` engine, which gives nbclient the running kernel instead of starting
one. A kernel is driven from the one thread that started it (its asyncio loop); a kernel that
died, or whose notebook failed, is replaced before the next notebook.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines

from pstlib.reports.errors import ReportError

log = logging.getLogger(__name__)
ENGINE = "pstlib-warm"
KERNEL = "python3"
STARTUP_TIMEOUT_S = 120.0
WARM_UP = """\
import matplotlib_inline.backend_inline, networkx, pandas, seaborn, scipy.stats, sqlalchemy
import pyarrow.parquet
import pstlib.analytics.network, pstlib.analytics.senders, pstlib.analytics.threading
import pstlib.analytics.timeline, pstlib.analytics.imports
import pstlib.reports, pstlib.reports.dashboard, pstlib.reports.plots
import pstlib.store.load
pstlib.reports.theme.apply_theme()
"""
"""What a kernel imports before its first notebook (run silently, so it leaves no output)."""
RESET = """\
get_ipython().run_line_magic("reset", "-f")
get_ipython().execution_count = 1
__import__("warnings").onceregistry.clear()
[vars(m).get("__warningregistry__", {}).clear() for m in list(__import__("sys").modules.values())
 if hasattr(m, "__dict__")]
__import__("gc").collect()
"""
"""Between two notebooks: drop every name, count cells from 1 again, forget which warnings were
shown, free the memory."""


class WarmKernel:
    """A kernel kept for several notebooks; use from one thread, as a context manager."""

    def __init__(self, kernel_name: str = KERNEL, *, warm_up: str = WARM_UP) -> None:
        self.kernel_name = kernel_name
        self.warm_up = warm_up
        self.notebooks = 0  # notebooks run in the current kernel process
        self._failed = False  # the last notebook failed: start a new kernel for the next
        self._manager: AsyncKernelManager | None = None
        self._client: Any = None
        self._sockets: str | None = None
        self._start()

    # -------------------------------------------------------------------------------- lifecycle
    def _start(self) -> None:
        # Unix sockets in a private directory rather than TCP on 127.0.0.1: no port another user
        # of the machine could connect to (and no "running over TCP without encryption" warning).
        self._sockets = tempfile.mkdtemp(prefix="pstlib-kernel-")
        manager = AsyncKernelManager(
            kernel_name=self.kernel_name, transport="ipc", ip=str(Path(self._sockets) / "kernel"))
        run_sync(manager.start_kernel)()
        client = manager.client()
        client.start_channels()
        try:
            run_sync(client.wait_for_ready)(timeout=STARTUP_TIMEOUT_S)
        except Exception:
            client.stop_channels()
            run_sync(manager.shutdown_kernel)(now=True)
            shutil.rmtree(self._sockets, ignore_errors=True)
            raise
        client.allow_stdin = False
        self._manager, self._client = manager, client
        self.notebooks, self._failed = 0, False
        self._run(self.warm_up, "warming up")

    def _run(self, code: str, what: str) -> None:
        reply = run_sync(self._client.execute_interactive)(
            code, silent=True, store_history=False, timeout=STARTUP_TIMEOUT_S,
            output_hook=lambda _msg: None)
        content = reply.get("content", {})
        if content.get("status") != "ok":
            raise ReportError(f"kernel {what}: {content.get('ename')}: {content.get('evalue')}")

    def alive(self) -> bool:
        return self._manager is not None and bool(run_sync(self._manager.is_alive)())

    def shutdown(self) -> None:
        """Stop the kernel (and its client's channels); safe to call twice."""
        client, manager, self._client, self._manager = self._client, self._manager, None, None
        if client is not None:
            client.stop_channels()
        if manager is not None:
            try:
                run_sync(manager.shutdown_kernel)(now=False)
            except Exception:  # an already dead kernel: nothing left to stop
                log.debug("kernel shutdown failed", exc_info=True)
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)
            self._sockets = None

    def __enter__(self) -> WarmKernel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    # ---------------------------------------------------------------------------------- running
    def prepare(self) -> None:
        """Make the kernel ready for a new notebook: replace it if it died or its last notebook
        failed (which may have left it in any state), else reset it."""
        if self._failed or not self.alive():
            log.info("kernel died or its notebook failed: starting a new one")
            self.shutdown()
            self._start()
        elif self.notebooks:
            self._run(RESET, "resetting")

    def execute(self, source: nbformat.NotebookNode, output: str,
                parameters: dict[str, Any]) -> nbformat.NotebookNode:
        """papermill on ``source`` with ``parameters`` in this kernel; the executed notebook is
        also written to ``output``. Raises papermill's PapermillExecutionError for a failed cell."""
        self.prepare()
        self.notebooks += 1
        papermill_engines.register(ENGINE, WarmEngine)
        self._failed = True
        executed: nbformat.NotebookNode = papermill.execute_notebook(
            source, output, parameters=parameters, engine_name=ENGINE, kernel_name=self.kernel_name,
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            warm_kernel=self)
        self._failed = False
        return executed

    def client_for(self, nb_man: Any, **options: Any) -> PapermillNotebookClient:
        """An nbclient (papermill's) that runs ``nb_man``'s notebook in this kernel."""
        client = PapermillNotebookClient(nb_man, km=self._manager, **options)
        client.kc = self._client
        return client


class WarmEngine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine, but in the :class:`WarmKernel` given as ``warm_kernel``."""

    @classmethod
    def execute_managed_notebook(  # type: ignore[override]
        cls, nb_man: Any, kernel_name: str, *, warm_kernel: WarmKernel,
        input_path: str | None = None, log_output: bool = False, stdout_file: Any = None,
        stderr_file: Any = None, start_timeout: float = STARTUP_TIMEOUT_S,
        execution_timeout: float | None = None,
    ) -> Any:
        del input_path  # (papermill passes it to every engine; the notebook is already read)
        client = warm_kernel.client_for(
            nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
            kernel_name=kernel_name, log=log, log_output=log_output, stdout_file=stdout_file,
            stderr_file=stderr_file)
        return client.execute()
