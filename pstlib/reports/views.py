"""Report-shaped tables: the few computations the reports need on top of the analytics.

Pure functions (DataFrames in, DataFrames out, inputs never mutated), each with a unit test in
``tests/unit/test_reports_views.py``. The metric definitions themselves live in
:mod:`pstlib.analytics`; these only arrange them for a figure or the operations report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pstlib.analytics.imports import (  # re-exported: the metric definitions live in analytics
    OUTCOMES,
    SUCCESS_OUTCOMES,
    SessionSummary,
    daily_operations,
    require_columns,
    resolve_errors,
    success_rate,
    system_health,
    throughput_per_minute,
)

__all__ = [
    "OUTCOMES", "SUCCESS_OUTCOMES", "calendar_days", "daily_operations", "filter_dates",
    "key_figures", "message_dates", "resolve_errors", "success_rate", "system_health",
    "throughput_per_minute",
]  # fmt: skip


def key_figures(summary: SessionSummary, completeness: pd.DataFrame | None = None) -> pd.DataFrame:
    """The headline numbers of a session: ``metric, value`` rows (numbers as floats)."""
    rows: list[tuple[str, float]] = [
        ("messages_read", float(summary.messages_read)),
        ("messages_successful", float(sum(summary.outcomes.get(o, 0) for o in SUCCESS_OUTCOMES))),
        ("messages_failed", float(summary.outcomes.get("failed", 0))),
        ("errors", float(summary.errors_total)),
        ("success_rate", success_rate(summary)),
        ("sources", float(summary.sources)),
        ("sources_failed", float(summary.sources_failed)),
        ("size_bytes", float(summary.size_bytes)),
        ("contacts_created", float(summary.contacts.get("created", 0))),
    ]
    if completeness is not None and len(completeness):
        mailbox = completeness.loc[
            completeness["contact_address"].astype("string") == "*", "completeness_score"
        ]
        if len(mailbox):
            rows.append(("mailbox_completeness_score", float(mailbox.iloc[0])))
    return pd.DataFrame(rows, columns=["metric", "value"])


def message_dates(messages: pd.DataFrame) -> pd.Series:
    """When each message was sent, else received (UTC)."""
    require_columns("message_dates", messages, ["sent_at_utc", "received_at_utc"])
    return messages["sent_at_utc"].fillna(messages["received_at_utc"])


def filter_dates(messages: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """Messages dated (sent, else received) from ``start`` to ``end`` (inclusive ISO dates)."""
    if start is None and end is None:
        return messages
    when = message_dates(messages)
    keep = pd.Series(True, index=messages.index)
    if start is not None:
        keep &= when >= pd.Timestamp(start, tz="UTC")
    if end is not None:
        keep &= when < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    return messages[keep.fillna(False).to_numpy(bool)]


def calendar_days(messages: pd.DataFrame, gaps: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per day from the first to the last message, for the gap calendar.

    Returns ``date, week`` (0 = the first message's week, weeks start on Monday), ``weekday``
    (0 = Monday), ``month_start`` (first day of the date's month), ``message_count`` and ``in_gap``
    (the day lies in a gap of the mailbox, ``contact_address == "*"``, of ``gaps``).
    """
    when = message_dates(messages).dropna()
    columns = ["date", "week", "weekday", "month_start", "message_count", "in_gap"]
    if when.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    days = when.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    counts = days.value_counts()
    index = pd.date_range(days.min(), days.max(), freq="D")
    first_monday = index[0] - pd.Timedelta(days=index[0].day_of_week)
    in_gap = np.zeros(len(index), dtype=bool)
    if gaps is not None and len(gaps):
        mailbox = gaps[gaps["contact_address"].astype("string") == "*"]
        starts = pd.to_datetime(mailbox["start"]).to_numpy("datetime64[ns]")
        ends = pd.to_datetime(mailbox["end"]).to_numpy("datetime64[ns]")
        stamps = index.to_numpy("datetime64[ns]")
        # a day is in a gap when some gap starts on or before it and ends on or after it
        if len(starts):
            inside = (stamps[:, None] >= starts[None, :]) & (stamps[:, None] <= ends[None, :])
            in_gap = np.asarray(inside.any(axis=1), dtype=bool)
    return pd.DataFrame(
        {
            "date": index,
            "week": ((index - first_monday).days // 7).astype(np.int64),
            "weekday": index.day_of_week.astype(np.int64),
            "month_start": index.to_period("M").to_timestamp(),
            "message_count": counts.reindex(index, fill_value=0).to_numpy(np.int64),
            "in_gap": in_gap,
        }
    )
