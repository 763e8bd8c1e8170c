"""Import-session analytics: the session document and the figures about how an import went.

Every function takes DataFrames as the store's loaders return them (see :mod:`pstlib.store.load`) and
returns a DataFrame or a small frozen dataclass. Nothing here reads the store itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pstlib.errors import MissingColumnsError


def require_columns(function: str, frame: pd.DataFrame, columns: list[str]) -> None:
    """Raise :class:`MissingColumnsError` naming every column of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnsError(function, missing)


def _iso(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).tz_convert("UTC").isoformat().replace("+00:00", "Z")


def _counts(series: pd.Series) -> dict[str, int]:
    counts = series.astype("string").fillna("(none)").value_counts()
    return {str(k): int(v) for k, v in counts.sort_index().items()}


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """The session document: what one session read, sent, skipped and failed.

    ``to_dict()`` gives the JSON shape that ``pstlib scan --json`` prints and the store keeps in
    ``sessions.summary_json``.
    """

    session_id: str
    status: str
    target: str
    started_at_utc: str | None
    ended_at_utc: str | None
    duration_s: float | None
    software_version: str
    host: str
    sources: int
    sources_failed: int
    items_found: int
    messages_read: int
    outcomes: dict[str, int]
    by_message_class: dict[str, int]
    by_item_kind: dict[str, int]
    by_folder_role: dict[str, int]
    earliest_sent_at_utc: str | None
    latest_sent_at_utc: str | None
    size_bytes: int
    errors_total: int
    errors_by_code: dict[str, int]
    contacts: dict[str, int] = field(default_factory=dict)
    batches: dict[str, float] = field(default_factory=dict)

    @property
    def successful(self) -> int:
        return self.outcomes.get("imported", 0) + self.outcomes.get("read", 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "status": self.status,
            "target": self.target,
            "start_time": self.started_at_utc,
            "end_time": self.ended_at_utc,
            "duration_s": self.duration_s,
            "software_version": self.software_version,
            "host": self.host,
            "totals": {
                "sources": self.sources,
                "sources_failed": self.sources_failed,
                "items_found": self.items_found,
                "messages": self.messages_read,
                "successful": self.successful,
                "imported": self.outcomes.get("imported", 0),
                "duplicates": self.outcomes.get("duplicate", 0),
                "skipped": self.outcomes.get("skipped", 0),
                "failed": self.outcomes.get("failed", 0) + self.errors_total,
                "size_bytes": self.size_bytes,
            },
            "outcomes": self.outcomes,
            "by_message_class": self.by_message_class,
            "by_item_kind": self.by_item_kind,
            "by_folder_role": self.by_folder_role,
            "date_range": {
                "earliest": self.earliest_sent_at_utc,
                "latest": self.latest_sent_at_utc,
            },
            "contacts": self.contacts,
            "batch_performance": self.batches,
            "errors": {"total": self.errors_total, "by_code": self.errors_by_code},
        }


def summarize_session(
    session: Mapping[str, Any],
    sources: pd.DataFrame,
    messages: pd.DataFrame,
    errors: pd.DataFrame,
    contacts: pd.DataFrame | None = None,
    batches: pd.DataFrame | None = None,
) -> SessionSummary:
    """Summarise one session from its rows.

    ``session`` is the sessions-table row (a mapping). ``sources`` needs ``status`` and
    ``items_found``; ``messages`` needs ``outcome``, ``message_class``, ``item_kind``,
    ``folder_role``, ``sent_at_utc``, ``received_at_utc`` and ``size_bytes``; ``errors`` needs
    ``code``. ``contacts`` (``action``) and ``batches`` (``operations``, ``duration_s``,
    ``http_status``) are optional.
    """
    require_columns("summarize_session", sources, ["status", "items_found"])
    require_columns(
        "summarize_session",
        messages,
        [
            "outcome",
            "message_class",
            "item_kind",
            "folder_role",
            "sent_at_utc",
            "received_at_utc",
            "size_bytes",
        ],
    )
    require_columns("summarize_session", errors, ["code"])

    started = session.get("started_at_utc")
    ended = session.get("ended_at_utc")
    duration = (
        (pd.Timestamp(ended) - pd.Timestamp(started)).total_seconds()
        if ended is not None and started is not None and not pd.isna(ended)
        else None
    )
    # the date of a message is when it was sent, else when it arrived
    when = messages["sent_at_utc"].fillna(messages["received_at_utc"])
    contact_counts = _counts(contacts["action"]) if contacts is not None and len(contacts) else {}
    return SessionSummary(
        session_id=str(session["session_id"]),
        status=str(session["status"]),
        target=str(session["target"]),
        started_at_utc=_iso(started),
        ended_at_utc=_iso(ended),
        duration_s=duration,
        software_version=str(session.get("software_version", "")),
        host=str(session.get("host", "")),
        sources=len(sources),
        sources_failed=int((sources["status"] == "failed").sum()),
        items_found=int(sources["items_found"].fillna(0).sum()),
        messages_read=len(messages),
        outcomes=_counts(messages["outcome"]),
        by_message_class=_counts(messages["message_class"]),
        by_item_kind=_counts(messages["item_kind"]),
        by_folder_role=_counts(messages["folder_role"]),
        earliest_sent_at_utc=_iso(when.min()) if len(when.dropna()) else None,
        latest_sent_at_utc=_iso(when.max()) if len(when.dropna()) else None,
        size_bytes=int(messages["size_bytes"].sum()),
        errors_total=len(errors),
        errors_by_code=_counts(errors["code"]),
        contacts=contact_counts,
        batches=summarize_batches(batches) if batches is not None else {},
    )


def summarize_batches(batches: pd.DataFrame) -> dict[str, float]:
    """Batch performance: count, operations, mean size and latency, 429s and their total wait."""
    require_columns("summarize_batches", batches, ["operations", "duration_s", "http_status"])
    if batches.empty:
        return {}
    throttled = batches["http_status"] == 429
    waits = batches["retry_after_s"] if "retry_after_s" in batches else pd.Series(dtype=float)
    return {
        "batches": float(len(batches)),
        "operations": float(batches["operations"].sum()),
        "mean_operations": float(batches["operations"].mean()),
        "mean_duration_s": float(batches["duration_s"].mean()),
        "p95_duration_s": float(batches["duration_s"].quantile(0.95)),
        "throttled": float(throttled.sum()),
        "throttle_wait_s": float(waits.fillna(0).sum()),
    }
