"""The report registry: report name → notebook, title, default parameters, formats, tables.

Adding a report is adding a notebook under ``notebooks/`` and an entry here. A custom report comes
from a small TOML spec (:func:`load_spec`)::

    name = "finance-q1"                       # the report's name (folder and file names)
    title = "Finance: first quarter"
    notebook = "50-executive-summary"         # which notebook renders it (default: that one)
    formats = ["html", "pdf", "xlsx"]         # default: every format
    sections = ["Key figures", "What to do next"]   # keep only these headings' sections

    [filters]                                 # notebook parameters
    start_date = "2024-01-01"
    end_date = "2024-03-31"
    contacts = ["cfo@example.com"]
    pseudonymise = true
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pstlib.reports.errors import ReportError

FORMATS = ("html", "pdf", "xlsx", "json", "csv")
PARAMETERS = ("store", "session_id", "start_date", "end_date", "contacts", "pseudonymise",
              "pseudonymise_domains", "timezone", "country", "top_n", "interactive")


@dataclass(frozen=True)
class Report:
    """One registered report."""

    name: str
    notebook: str  # file name under the notebooks directory, without ".ipynb"
    title: str
    description: str
    tables: tuple[str, ...]  # the tables it records (and exports)
    parameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    formats: tuple[str, ...] = FORMATS
    sections: tuple[str, ...] = ()  # custom reports: only these headings' sections
    analyses: tuple[str, ...] = ()  # the slow analyses it shares with others (run order)


GAPS = ("gaps",)
"""The gap model: seconds on a large mailbox, computed once per run and shared (see
:func:`pstlib.reports.execute.schedule`)."""


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report("import-sessions", "10-import-sessions", "Import sessions",
               "What each session read, imported, skipped and failed, and why.",
               ("sessions", "key_figures", "outcomes", "breakdown", "sources", "errors",
                "contacts")),
        Report("timeline", "20-timeline", "Timeline completeness",
               "Gaps in each contact's timeline, completeness scores and where to look.",
               ("completeness", "gaps", "recommendations", "contact_timelines"),
               analyses=GAPS),
        Report("senders", "30-senders", "Senders",
               "Who writes to the mailbox: profiles, classes, reply times and volume.",
               ("sender_profiles", "sender_classes", "monthly_volume")),
        Report("network", "40-network", "Correspondence network",
               "Who writes to whom: hubs, communities and relationship strength.",
               ("hubs", "communities", "relationships")),
        Report("executive-summary", "50-executive-summary", "Executive summary",
               "The migration on one page: success, completeness, who matters, next steps.",
               ("key_figures", "top_gaps", "next_steps"), analyses=GAPS),
        Report("detailed-analytics", "60-detailed-analytics", "Detailed analytics",
               "Every analysis in full, for the analyst.",
               ("key_figures", "breakdown", "coverage", "completeness", "gaps",
                "sender_profiles", "reply_pairs", "hubs", "relationships", "weekly_volume"),
               analyses=GAPS),
        Report("operations", "70-operations", "Operations",
               "Daily and weekly operations: imports, errors and their resolution, contacts "
               "created, system health.",
               ("daily_operations", "weekly_operations", "error_resolution", "system_health")),
        Report("dashboard", "dashboard", "Dashboard",
               "Self-service view of a session and a contact.",
               ("key_figures",), MappingProxyType({"interactive": False}),
               ("html", "pdf", "xlsx", "json", "csv"), analyses=GAPS),
    )
}


def notebooks_dir(override: str | Path | None = None) -> Path:
    """Where the report notebooks are: ``override``, ``$PSTLIB_NOTEBOOKS``, else the checkout's
    ``notebooks/``."""
    configured = override or os.environ.get("PSTLIB_NOTEBOOKS")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "notebooks"
    if not path.is_dir():
        raise ReportError(f"report notebooks not found in {path} (set PSTLIB_NOTEBOOKS)")
    return path


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise ReportError(f"unknown report {name!r} (known: {', '.join(REPORTS)})") from None


def select_reports(names: list[str] | str) -> list[Report]:
    """The reports named (``"all"``: every registered one), in registry order for ``all``."""
    if names == "all" or names == ["all"]:
        return list(REPORTS.values())
    if isinstance(names, str):
        names = [names]
    return [get_report(n) for n in names]


def load_spec(spec: str | Path | Mapping[str, Any]) -> Report:
    """A custom report from a TOML file (or its parsed mapping); see the module docstring."""
    if isinstance(spec, Mapping):
        data = dict(spec)
    else:
        try:
            data = tomllib.loads(Path(spec).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ReportError(f"cannot read report spec {spec}: {err}") from err
    known = {"name", "title", "notebook", "formats", "sections", "filters", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ReportError(f"report spec: unknown key(s) {', '.join(unknown)}")
    base = REPORTS.get(str(data.get("notebook", "executive-summary")))
    notebook = base.notebook if base else str(data.get("notebook", "50-executive-summary"))
    template = base or next((r for r in REPORTS.values() if r.notebook == notebook), None)
    if template is None:
        raise ReportError(f"report spec: unknown notebook {data.get('notebook')!r}")
    formats = tuple(data.get("formats", FORMATS))
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        raise ReportError(f"report spec: unknown format(s) {', '.join(bad)} (known: "
                          f"{', '.join(FORMATS)})")
    filters = dict(data.get("filters", {}))
    wrong = sorted(set(filters) - set(PARAMETERS))
    if wrong:
        raise ReportError(f"report spec: unknown filter(s) {', '.join(wrong)} (known: "
                          f"{', '.join(PARAMETERS)})")
    name = str(data.get("name", "custom"))
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ReportError(f"report spec: name {name!r} must be letters, digits, - and _")
    return Report(name=name, notebook=notebook, title=str(data.get("title", template.title)),
                  description=str(data.get("description", template.description)),
                  tables=() if data.get("sections") else template.tables,
                  parameters=MappingProxyType({**template.parameters, **filters}),
                  formats=formats, sections=tuple(str(s) for s in data.get("sections", ())),
                  analyses=template.analyses)
