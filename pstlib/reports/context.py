"""The notebook side of a report: open it, state its parameters, show (and export) its tables.

A report notebook starts with ``report = open_report(title, store=store, ...)`` and then shows
``report.header()``, ``report.table(frame, "name")``, ``report.key_figures(...)``. Each returns an
object that renders as escaped HTML, so mail text never becomes markup. Every table shown is also
recorded (in full, not only the rows shown) in ``tables_dir`` when the pipeline gives one; the
pipeline turns those into the Excel, JSON and CSV outputs.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pstlib.reports import theme
from pstlib.reports.data import ReportData
from pstlib.reports.pseudonymise import Pseudonymiser
from pstlib.store import Store

MANIFEST = "tables.json"
DEFAULT_ROWS = 20


@dataclass(frozen=True)
class Html:
    """Already-escaped HTML that a notebook shows (``_repr_html_``) and tests can read."""

    markup: str

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup


def frame_html(frame: pd.DataFrame, *, max_rows: int = DEFAULT_ROWS, caption: str = "") -> str:
    """``frame`` as an HTML table: every value and label escaped, numbers formatted, the first
    ``max_rows`` rows (and a note of how many more)."""
    shown = frame.head(max_rows)
    styler = (
        shown.style.format(precision=2, thousands=",", na_rep="", escape="html")
        .format_index(escape="html", axis=0)
        .format_index(escape="html", axis=1)
        .hide(axis="index")
        .set_table_attributes('class="pstlib-table"')
    )
    if caption:
        styler = styler.set_caption(html.escape(caption))
    markup = styler.to_html()
    if len(frame) > max_rows:
        markup += (f'<p class="pstlib-more">{max_rows:,} of {len(frame):,} rows shown; '
                   "the Excel, CSV and JSON outputs hold them all.</p>")
    return markup


@dataclass
class ReportContext:
    """One report being computed in a notebook (see the module docstring)."""

    title: str
    data: ReportData
    parameters: dict[str, Any]
    tables_dir: Path | None = None
    contacts: list[str] = field(default_factory=list)
    generated_at_utc: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    # ------------------------------------------------------------------------------------ showing
    def header(self) -> Html:
        """The report's title, its parameters and how fresh its data is."""
        rows = [(k, _value(self._shown_parameter(k, v))) for k, v in self.parameters.items()]
        params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                         for k, v in rows)
        fresh = self.data.freshness()
        freshness = "".join(
            f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{html.escape(v)}</td></tr>"
            for k, v in fresh.items())
        note = (" People's names and addresses are pseudonymised."
                if self.data.pseudonymiser else "")
        markup = (
            f'<div class="pstlib-header"><p class="pstlib-generated">Generated '
            f"{html.escape(self.generated_at_utc)}.{html.escape(note)}</p>"
            '<div class="pstlib-meta"><table class="pstlib-params"><caption>Parameters</caption>'
            f'{params}</table><table class="pstlib-params"><caption>Data freshness</caption>'
            f"{freshness}</table></div></div>"
        )
        self._record_meta()
        return Html(markup)

    def table(self, frame: pd.DataFrame, name: str, *, title: str = "",
              max_rows: int = DEFAULT_ROWS, columns: Sequence[str] | None = None) -> Html:
        """Show ``frame`` (its first ``max_rows`` rows; only ``columns`` where given) and record it
        in full as the table ``name`` of the report's exports."""
        chosen = frame[list(columns)] if columns is not None else frame
        self._record(name, chosen, title)
        return Html(frame_html(chosen, max_rows=max_rows, caption=title))

    def key_figures(self, figures: pd.DataFrame, *, name: str = "key_figures",
                    labels: Mapping[str, str] | None = None) -> Html:
        """Headline numbers (``metric, value``) as cards, recorded as the table ``name``."""
        self._record(name, figures, "Key figures")
        names = labels or {}
        cards = "".join(
            f'<div class="pstlib-card"><div class="pstlib-card-value">'
            f"{html.escape(_figure(str(m), float(v)))}</div>"
            f'<div class="pstlib-card-label">{html.escape(names.get(str(m), str(m)).replace("_", " "))}'
            "</div></div>"
            for m, v in zip(figures["metric"], figures["value"], strict=True)
        )
        return Html(f'<div class="pstlib-cards">{cards}</div>')

    # ---------------------------------------------------------------------------------- recording
    def _shown_parameter(self, name: str, value: Any) -> Any:
        p = self.data.pseudonymiser
        if p is None or name != "contacts":
            return value
        return [p.address(str(v)) for v in value or []]

    def _record_meta(self) -> None:
        if self.tables_dir is None:
            return
        meta = {"title": self.title, "generated_at_utc": self.generated_at_utc,
                "parameters": {k: self._shown_parameter(k, v) for k, v in self.parameters.items()},
                "data_freshness": self.data.freshness(), "session_id": self.data.session_id}
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        (self.tables_dir / "meta.json").write_text(json.dumps(meta, default=str, indent=1),
                                                    encoding="utf-8")

    def _record(self, name: str, frame: pd.DataFrame, title: str) -> None:
        if self.tables_dir is None:
            return
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        frame.reset_index(drop=True).to_pickle(self.tables_dir / f"{name}.pkl")
        manifest = self.tables_dir / MANIFEST
        entries = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else []
        entries = [e for e in entries if e["name"] != name]
        entries.append({"name": name, "title": title or name.replace("_", " ").capitalize(),
                        "rows": len(frame)})
        manifest.write_text(json.dumps(entries, indent=1), encoding="utf-8")


def open_report(
    title: str,
    *,
    store: str | Path | Store,
    session_id: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    contacts: Sequence[str] | None = None,
    pseudonymise: bool = False,
    pseudonymise_domains: bool = False,
    timezone: str = "UTC",
    country: str | None = None,
    tables_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> ReportContext:
    """Open the store, pick the session (the latest when None) and set the figures' theme.

    ``parameters`` (the notebook's, as shown in the header) defaults to the arguments here.
    The pseudonymisation key comes from ``PSTLIB_PSEUDONYM_KEY`` (never from a parameter).
    """
    theme.apply_theme()
    opened = store if isinstance(store, Store) else Store.open(store)
    pseudonymiser = (
        Pseudonymiser.from_environment(keep_domains=not pseudonymise_domains)
        if pseudonymise else None
    )
    data = ReportData(opened, session_id, start_date=start_date, end_date=end_date,
                      timezone=timezone, country=country, pseudonymiser=pseudonymiser,
                      cache_dir=cache_dir)
    shown = dict(parameters) if parameters is not None else {
        "session_id": session_id, "start_date": start_date, "end_date": end_date,
        "contacts": list(contacts or []), "pseudonymise": pseudonymise, "timezone": timezone,
        "country": country,
    }
    for internal in ("tables_dir", "cache_dir", "store"):
        shown.pop(internal, None)
    shown["session_id"] = data.session_id
    return ReportContext(title=title, data=data, parameters=shown,
                         tables_dir=Path(tables_dir) if tables_dir else None,
                         contacts=list(contacts or []))


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)


def _figure(metric: str, value: float) -> str:
    if metric.endswith("_rate") or metric.endswith("_share"):
        return f"{value:.1%}"
    if metric.endswith("_score"):
        return f"{value:.1f}"
    if metric.endswith("_bytes"):
        return f"{value / 2**20:,.1f} MB"
    return f"{value:,.0f}"
