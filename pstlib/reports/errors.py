"""The reports' errors (subclasses of :class:`pstlib.errors.PstlibError`)."""

from __future__ import annotations

from pstlib.errors import PstlibError


class ReportError(PstlibError):
    """A report cannot be produced: unknown name, bad spec, missing browser..."""


class NotebookFailedError(ReportError):
    """A report's notebook raised: names the report, the notebook and the failing cell.

    ``cell_index`` is the cell's position in the executed notebook, ``ename``/``evalue`` the
    exception, ``output`` the executed notebook kept for inspection.
    """

    def __init__(self, report: str, notebook: str, cell_index: int | None, ename: str,
                 evalue: str, output: str | None = None) -> None:
        self.report = report
        self.notebook = notebook
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.output = output
        cell = f" cell {cell_index}" if cell_index is not None else ""
        kept = f" (executed notebook kept at {output})" if output else ""
        super().__init__(f"report {report}: {notebook}{cell} raised {ename}: {evalue}{kept}")


class ReportsFailedError(ReportError):
    """Some reports of a run failed; ``run`` holds what was written, ``failures`` why."""

    def __init__(self, run: object, failures: list[NotebookFailedError | ReportError]) -> None:
        self.run = run
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))
