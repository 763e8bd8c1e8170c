"""Reports: notebooks run with parameters and rendered to HTML, PDF, Excel, JSON and CSV.

The pipeline (``run_reports``, ``ReportRun``, ``ReportOutput``) is imported on first use, so a
report notebook's kernel, which needs only ``open_report`` and the plots, does not load papermill
and nbconvert.
"""

from typing import TYPE_CHECKING, Any

from pstlib.reports.context import ReportContext, open_report
from pstlib.reports.data import ReportData
from pstlib.reports.errors import NotebookFailedError, ReportError, ReportsFailedError
from pstlib.reports.pseudonymise import Pseudonymiser
from pstlib.reports.registry import REPORTS, Report, load_spec

if TYPE_CHECKING:
    from pstlib.reports.execute import ReportOutput, ReportRun, run_reports

__all__ = [
    "REPORTS",
    "NotebookFailedError",
    "Pseudonymiser",
    "Report",
    "ReportContext",
    "ReportData",
    "ReportError",
    "ReportOutput",
    "ReportRun",
    "ReportsFailedError",
    "load_spec",
    "open_report",
    "run_reports",
]


def __getattr__(name: str) -> Any:
    if name in ("run_reports", "ReportRun", "ReportOutput"):
        from pstlib.reports import execute

        return getattr(execute, name)
    raise AttributeError(f"module 'pstlib.reports' has no attribute {name!r}")
