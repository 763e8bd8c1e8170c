"""The self-service dashboard: pick a session and a contact, see their figures.

In JupyterLab (``interactive=True``) :func:`dashboard` returns ipywidgets dropdowns over an output
area that redraws on every choice. In a rendered report (``interactive=False``, what the pipeline
runs) widgets would need JavaScript from the internet, so it shows the same view for the chosen
session and contact as plain escaped HTML with the figures embedded.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from pstlib.analytics import senders
from pstlib.reports import plots
from pstlib.reports.context import Html, ReportContext, frame_html
from pstlib.reports.data import ReportData
from pstlib.reports.theme import describe


def figure_png(fig: Figure) -> str:
    """A figure as an ``<img>`` with its PNG embedded (no file, no fetch)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = html.escape(describe(fig), quote=True)
    return f'<img class="pstlib-figure" alt="{alt}" src="data:image/png;base64,{data}"/>'


def contact_messages(data: ReportData, contact: str) -> pd.DataFrame:
    """The messages (of the report's range) to or from ``contact``."""
    events = data.raw_events()
    rows = events.loc[events["contact_address"] == contact.strip().lower(), "message_row_id"]
    messages = data.raw_messages()
    return messages[messages["message_row_id"].isin(rows)]


def contact_choices(data: ReportData, limit: int = 200) -> list[tuple[str, str]]:
    """(label, address) of the ``limit`` contacts with the most messages, most first; the label is
    pseudonymised when the report is."""
    counts = data.raw_events()["contact_address"].value_counts().head(limit)
    p = data.pseudonymiser
    return [(p.address(str(a)) if p else str(a), str(a)) for a in counts.index]


def dashboard_view(data: ReportData, contact: str | None = None) -> Html:
    """The dashboard's view of one session (and one contact, when given) as escaped HTML."""
    parts = [f"<h3>Session {html.escape(data.session_id)}</h3>",
             figure_png(plots.success_gauge(data.success_rate())),
             figure_png(plots.outcome_bars(data.summary().outcomes)),
             figure_png(plots.volume_series(data.trends("MS"), title="Mail volume per month"))]
    if contact:
        shown = data.pseudonymiser.address(contact) if data.pseudonymiser else contact
        timeline = data.contact_timeline([contact])
        gaps = data.gaps()
        own = gaps[gaps["contact_address"].astype("string") == shown]
        parts += [
            f"<h3>Contact {html.escape(shown)}</h3>",
            frame_html(timeline, caption="Coverage and completeness"),
            figure_png(plots.volume_series(senders.volume_trends(contact_messages(data, contact)),
                                           title=f"Mail with {shown} per month")),
            frame_html(own[["start", "end", "kind", "severity", "missed_messages",
                            "suggested_action"]], caption="Gaps in this contact's timeline"),
        ]
    return Html('<div class="pstlib-dashboard">' + "".join(parts) + "</div>")


def dashboard(report: ReportContext, *, interactive: bool = True,
              contact: str | None = None) -> Any:
    """Widgets to pick a session and a contact (``interactive``), else the static view.

    The contact shown first is ``contact``, else the report's first ``contacts`` parameter, else
    the contact with the most messages."""
    data = report.data
    top = contact_choices(data, 1)
    named = contact or (report.contacts[0] if report.contacts else None)
    choice = named or (top[0][1] if top else None)
    if not interactive:
        return dashboard_view(data, choice)
    import ipywidgets as widgets
    from IPython.display import display

    sessions = data.sessions()["session_id"].astype(str).tolist()
    pick_session = widgets.Dropdown(options=sessions, value=data.session_id, description="Session")
    pick_contact = widgets.Dropdown(options=[("(none)", ""), *contact_choices(data)],
                                    value=choice or "", description="Contact")
    output = widgets.Output()
    views: dict[str, ReportData] = {data.session_id: data}

    def redraw(_change: object = None) -> None:
        session = str(pick_session.value)
        if session not in views:
            views[session] = ReportData(data.store, session, start_date=data.start_date,
                                        end_date=data.end_date, timezone=data.timezone,
                                        country=data.country, pseudonymiser=data.pseudonymiser)
        output.clear_output(wait=True)
        with output:
            view = dashboard_view(views[session], str(pick_contact.value) or None)
            display(view)  # type: ignore[no-untyped-call]

    pick_session.observe(redraw, names="value")
    pick_contact.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([pick_session, pick_contact]), output])
