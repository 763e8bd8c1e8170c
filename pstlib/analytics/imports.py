"""Import-session analytics: the session document and the figures about how an import went.

Every function takes DataFrames as the store's loaders return them (see :mod:`pstlib.store.load`) and
returns a DataFrame or a small frozen dataclass. Nothing here reads the store itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pstlib.errors import MissingColumnsError

SUCCESS_OUTCOMES = ("imported", "read", "duplicate")
"""Outcomes that mean a message is where it should be (a duplicate is imported already)."""
OUTCOMES = ("imported", "read", "duplicate", "skipped", "failed", "pending")


MESSAGE_COUNT_COLUMNS = (
    "outcome",
    "message_class",
    "item_kind",
    "folder_role",
    "message_count",
    "size_bytes",
    "earliest_at_utc",
    "latest_at_utc",
)
"""Columns of messages counted by kind (see :func:`summarize_session`)."""


def require_columns(function: str, frame: pd.DataFrame, columns: list[str]) -> None:
    """Raise :class:`MissingColumnsError` naming every column of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnsError(function, missing)


def _iso(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).tz_convert("UTC").isoformat().replace("+00:00", "Z")


def _counts(series: pd.Series, weights: pd.Series | None = None) -> dict[str, int]:
    """Rows per value (``(none)`` for missing), or the sum of ``weights`` per value."""
    keys = series.astype("string").fillna("(none)")
    if weights is None:
        counts = keys.value_counts()
    else:
        counts = weights.groupby(keys.to_numpy()).sum()
        counts = counts[counts > 0]
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

    ``messages`` may also come counted (see :data:`MESSAGE_COUNT_COLUMNS`): one row per
    ``outcome``, ``message_class``, ``item_kind`` and ``folder_role`` with its
    ``message_count``, total ``size_bytes`` and the ``earliest_at_utc``/``latest_at_utc`` of its
    messages (each message's date: sent, else received). The importer counts in SQL at the end
    of every session, since loading 20k message rows into pandas costs more than the 2 % of
    import time that all analytics may take; the summary is the same either way.
    """
    require_columns("summarize_session", sources, ["status", "items_found"])
    counted = "message_count" in messages.columns
    require_columns(
        "summarize_session",
        messages,
        list(MESSAGE_COUNT_COLUMNS)
        if counted
        else [
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
    if counted:
        weights = messages["message_count"].astype("int64")
        first = pd.to_datetime(messages["earliest_at_utc"], utc=True)
        last = pd.to_datetime(messages["latest_at_utc"], utc=True)
    else:
        weights = None
        first = last = messages["sent_at_utc"].fillna(messages["received_at_utc"])
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
        messages_read=int(weights.sum()) if weights is not None else len(messages),
        outcomes=_counts(messages["outcome"], weights),
        by_message_class=_counts(messages["message_class"], weights),
        by_item_kind=_counts(messages["item_kind"], weights),
        by_folder_role=_counts(messages["folder_role"], weights),
        earliest_sent_at_utc=_iso(first.min()) if len(first.dropna()) else None,
        latest_sent_at_utc=_iso(last.max()) if len(last.dropna()) else None,
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


def success_rate(summary: SessionSummary) -> float:
    """Share of a session's messages imported (or read, for an assess session) or duplicates.

    ``(imported + read + duplicate) / messages read``; errors that lost a whole item count as
    failures too (they are in ``errors_total`` but have no message row). 1.0 for an empty session.
    """
    done = sum(summary.outcomes.get(o, 0) for o in SUCCESS_OUTCOMES)
    item_errors = max(summary.errors_total - summary.outcomes.get("failed", 0), 0)
    total = summary.messages_read + item_errors
    return done / total if total else 1.0


def throughput_per_minute(messages: pd.DataFrame, *, max_points: int = 120) -> pd.DataFrame:
    """Messages processed per minute over a session, from ``processed_at_utc``.

    The bin width is the smallest of 1 s, 10 s, 1 min, 5 min, 15 min, 1 h that gives at most
    ``max_points`` bins. Returns ``minute_utc`` (bin start), ``message_count`` (in the bin) and
    ``messages_per_minute``.
    """
    require_columns("throughput_per_minute", messages, ["processed_at_utc"])
    when = messages["processed_at_utc"].dropna()
    if when.empty:
        return pd.DataFrame(
            {
                "minute_utc": pd.Series(dtype="datetime64[us, UTC]"),
                "message_count": pd.Series(dtype=np.int64),
                "messages_per_minute": pd.Series(dtype=float),
            }
        )
    span_s = (when.max() - when.min()).total_seconds()
    width_s = next((w for w in (1, 10, 60, 300, 900, 3600) if span_s / w <= max_points), 3600)
    counts = pd.Series(1, index=pd.DatetimeIndex(when)).resample(f"{width_s}s").size()
    return pd.DataFrame(
        {
            "minute_utc": counts.index,
            "message_count": counts.to_numpy(np.int64),
            "messages_per_minute": counts.to_numpy(float) * 60.0 / width_s,
        }
    )


def daily_operations(
    sessions: pd.DataFrame,
    messages: pd.DataFrame,
    errors: pd.DataFrame,
    contacts: pd.DataFrame,
    *,
    freq: str = "D",
) -> pd.DataFrame:
    """Operations per day (``freq="D"``) or week (``"W-MON"``): what every session did.

    Needs ``sessions``: ``session_id, started_at_utc``; ``messages``: ``outcome,
    processed_at_utc``; ``errors``: ``at_utc``; ``contacts``: ``action, at_utc``. Returns one row
    per period from the first to the last activity: ``date`` (period start), ``sessions_started``,
    one column per outcome (messages by when they were processed), ``messages``, ``errors``,
    ``contacts_created``.
    """
    require_columns("daily_operations", sessions, ["session_id", "started_at_utc"])
    require_columns("daily_operations", messages, ["outcome", "processed_at_utc"])
    require_columns("daily_operations", errors, ["at_utc"])
    require_columns("daily_operations", contacts, ["action", "at_utc"])

    def per_period(when: pd.Series, name: str) -> pd.Series:
        stamps = pd.DatetimeIndex(when.dropna()).tz_convert("UTC").tz_localize(None)
        return pd.Series(1, index=stamps).resample(freq).size().rename(name)

    outcome = messages["outcome"].astype("string")
    by_outcome = (
        pd.DataFrame(
            {
                "outcome": outcome.to_numpy(),
                "at": messages["processed_at_utc"]
                .dt.tz_convert("UTC")
                .dt.tz_localize(None)
                .to_numpy(),
            }
        )
        .dropna()
        .pipe(lambda f: pd.crosstab(f["at"], f["outcome"]))
    )
    by_outcome = by_outcome.resample(freq).sum() if len(by_outcome) else by_outcome
    created = contacts["action"].astype("string").eq("created").fillna(False).to_numpy(bool)
    parts: list[pd.Series | pd.DataFrame] = [
        per_period(sessions["started_at_utc"], "sessions_started"),
        by_outcome,
        per_period(errors["at_utc"], "errors"),
        per_period(contacts.loc[created, "at_utc"], "contacts_created"),
    ]
    table = pd.concat([p for p in parts if len(p)], axis=1).fillna(0)
    if table.empty:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=np.int64)
                for c in ["date", "sessions_started", "messages", "errors", "contacts_created"]
            }
        )
    table = table.resample(freq).sum() if len(table) else table
    present = [o for o in OUTCOMES if o in table.columns]
    for column in ("sessions_started", "errors", "contacts_created"):
        if column not in table.columns:
            table[column] = 0
    table = table.assign(messages=table[present].sum(axis=1) if present else 0)
    order = ["sessions_started", *present, "messages", "errors", "contacts_created"]
    result: pd.DataFrame = table[order].astype(np.int64).rename_axis("date").reset_index()
    return result


def resolve_errors(
    errors: pd.DataFrame, messages: pd.DataFrame, sources: pd.DataFrame
) -> pd.DataFrame:
    """Each error with whether a later session got the item (or file) through after all.

    An item error (``item`` set) is resolved when a later message row of a source with the same
    path and ``item_id`` has a successful outcome (:data:`SUCCESS_OUTCOMES`); a file error (no
    ``item``) when a later source with the same path was read. Needs ``errors``: ``error_id,
    session_id, source_id, stage, code, file, item, cause, at_utc``; ``messages``: ``source_id,
    item_id, outcome, processed_at_utc, session_id``; ``sources``: ``source_id, path, status,
    started_at_utc, session_id``. Returns the errors with ``resolved`` (bool),
    ``resolved_at_utc`` and ``resolved_in_session``.
    """
    require_columns(
        "resolve_errors", errors, ["error_id", "session_id", "source_id", "file", "item", "at_utc"]
    )
    require_columns(
        "resolve_errors",
        messages,
        ["source_id", "item_id", "outcome", "processed_at_utc", "session_id"],
    )
    require_columns(
        "resolve_errors", sources, ["source_id", "path", "status", "started_at_utc", "session_id"]
    )
    paths = sources.set_index("source_id")["path"].astype("string")
    # the file an error is about: its own field, else its source's path
    base = errors.assign(
        path=errors["file"].astype("string").fillna(errors["source_id"].map(paths).astype("string"))
    )
    good = messages[messages["outcome"].astype("string").isin(SUCCESS_OUTCOMES).fillna(False)]
    later_items = good.assign(
        path=good["source_id"].map(paths).astype("string"), item=good["item_id"].astype("string")
    )[["path", "item", "processed_at_utc", "session_id"]].rename(
        columns={"processed_at_utc": "fixed_at", "session_id": "fixed_in"}
    )
    items = (
        base[base["item"].notna()][["error_id", "path", "item", "at_utc"]]
        .astype({"item": "string"})
        .merge(later_items, on=["path", "item"])
    )
    read = sources[sources["status"].astype("string").eq("read").fillna(False)]
    later_files = read.assign(path=read["path"].astype("string"))[
        ["path", "started_at_utc", "session_id"]
    ].rename(columns={"started_at_utc": "fixed_at", "session_id": "fixed_in"})
    files = base[base["item"].isna()][["error_id", "path", "at_utc"]].merge(later_files, on="path")
    fixes = (
        pd.concat([items.drop(columns=["item"]), files], ignore_index=True)
        .pipe(lambda f: f[f["fixed_at"] > f["at_utc"]])
        .sort_values(["error_id", "fixed_at"], kind="stable")
        .drop_duplicates("error_id")
        .set_index("error_id")
    )
    return (
        errors.merge(
            fixes[["fixed_at", "fixed_in"]], left_on="error_id", right_index=True, how="left"
        )
        .assign(
            resolved=lambda f: f["fixed_at"].notna(),
            resolved_in_session=lambda f: f["fixed_in"].astype("string"),
        )
        .rename(columns={"fixed_at": "resolved_at_utc"})
        .drop(columns=["fixed_in"])
        .reset_index(drop=True)
    )


def system_health(
    sessions: pd.DataFrame,
    batches: pd.DataFrame,
    metrics: pd.DataFrame,
    message_counts: pd.DataFrame,
) -> pd.DataFrame:
    """One row per session: how the machine and the target held up.

    Needs ``sessions``: ``session_id, status, started_at_utc, ended_at_utc``; ``batches``:
    ``session_id, duration_s, http_status``; ``metrics``: ``session_id, name, value``;
    ``message_counts``: ``session_id, message_count``. Returns ``session_id, status,
    duration_s, message_count, messages_per_s, batches, batch_p95_s, throttled`` (429 answers),
    ``max_rss_mb`` and ``mean_cpu_percent`` (NaN without those metric samples).
    """
    require_columns(
        "system_health", sessions, ["session_id", "status", "started_at_utc", "ended_at_utc"]
    )
    require_columns("system_health", batches, ["session_id", "duration_s", "http_status"])
    require_columns("system_health", metrics, ["session_id", "name", "value"])
    require_columns("system_health", message_counts, ["session_id", "message_count"])
    duration = (sessions["ended_at_utc"] - sessions["started_at_utc"]).dt.total_seconds()
    per_batch = (
        batches.assign(throttled=batches["http_status"].eq(429).fillna(False))
        .groupby("session_id", observed=True)
        .agg(
            batches=("duration_s", "size"),
            batch_p95_s=("duration_s", lambda s: s.quantile(0.95)),
            throttled=("throttled", "sum"),
        )
    )
    name = metrics["name"].astype("string")
    rss = metrics[name.eq("rss_bytes").fillna(False)].groupby("session_id")["value"].max() / 2**20
    cpu = metrics[name.eq("cpu_percent").fillna(False)].groupby("session_id")["value"].mean()
    counts = message_counts.set_index("session_id")["message_count"]
    table = sessions[["session_id", "status"]].assign(
        duration_s=duration.to_numpy(),
        message_count=sessions["session_id"].map(counts).fillna(0).astype(np.int64).to_numpy(),
    )
    return table.assign(
        messages_per_s=(table["message_count"] / table["duration_s"]).where(
            table["duration_s"] > 0
        ),
        batches=table["session_id"].map(per_batch["batches"]).fillna(0).astype(np.int64),
        batch_p95_s=table["session_id"].map(per_batch["batch_p95_s"]).astype(float),
        throttled=table["session_id"].map(per_batch["throttled"]).fillna(0).astype(np.int64),
        max_rss_mb=table["session_id"].map(rss).astype(float),
        mean_cpu_percent=table["session_id"].map(cpu).astype(float),
    ).reset_index(drop=True)
