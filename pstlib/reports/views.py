"""Report-shaped tables: the few computations the reports need on top of the analytics.

Pure functions (DataFrames in, DataFrames out, inputs never mutated), each with a unit test in
``tests/unit/test_reports_views.py``. The metric definitions themselves live in
:mod:`pstlib.analytics`; these only arrange them for a figure or the operations report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pstlib.analytics.imports import SessionSummary, require_columns

SUCCESS_OUTCOMES = ("imported", "read", "duplicate")
"""Outcomes that mean a message is where it should be (a duplicate is imported already)."""
OUTCOMES = ("imported", "read", "duplicate", "skipped", "failed", "pending")


def success_rate(summary: SessionSummary) -> float:
    """Share of a session's messages imported (or read, for an assess session) or duplicates.

    ``(imported + read + duplicate) / messages read``; errors that lost a whole item count as
    failures too (they are in ``errors_total`` but have no message row). 1.0 for an empty session.
    """
    done = sum(summary.outcomes.get(o, 0) for o in SUCCESS_OUTCOMES)
    item_errors = max(summary.errors_total - summary.outcomes.get("failed", 0), 0)
    total = summary.messages_read + item_errors
    return done / total if total else 1.0


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
        mailbox = completeness.loc[completeness["contact_address"].astype("string") == "*",
                                   "completeness_score"]
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


def throughput_per_minute(messages: pd.DataFrame, *, max_points: int = 120) -> pd.DataFrame:
    """Messages processed per minute over a session, from ``processed_at_utc``.

    The bin width is the smallest of 1 s, 10 s, 1 min, 5 min, 15 min, 1 h that gives at most
    ``max_points`` bins. Returns ``minute_utc`` (bin start), ``message_count`` (in the bin) and
    ``messages_per_minute``.
    """
    require_columns("throughput_per_minute", messages, ["processed_at_utc"])
    when = messages["processed_at_utc"].dropna()
    if when.empty:
        return pd.DataFrame({"minute_utc": pd.Series(dtype="datetime64[us, UTC]"),
                             "message_count": pd.Series(dtype=np.int64),
                             "messages_per_minute": pd.Series(dtype=float)})
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
        pd.DataFrame({"outcome": outcome.to_numpy(),
                      "at": messages["processed_at_utc"].dt.tz_convert("UTC")
                      .dt.tz_localize(None).to_numpy()})
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
        return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in
                             ["date", "sessions_started", "messages", "errors",
                              "contacts_created"]})
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
    require_columns("resolve_errors", errors,
                    ["error_id", "session_id", "source_id", "file", "item", "at_utc"])
    require_columns("resolve_errors", messages,
                    ["source_id", "item_id", "outcome", "processed_at_utc", "session_id"])
    require_columns("resolve_errors", sources,
                    ["source_id", "path", "status", "started_at_utc", "session_id"])
    paths = sources.set_index("source_id")["path"].astype("string")
    # the file an error is about: its own field, else its source's path
    base = errors.assign(
        path=errors["file"].astype("string").fillna(errors["source_id"].map(paths).astype("string"))
    )
    good = messages[messages["outcome"].astype("string").isin(SUCCESS_OUTCOMES).fillna(False)]
    later_items = (
        good.assign(path=good["source_id"].map(paths).astype("string"),
                    item=good["item_id"].astype("string"))
        [["path", "item", "processed_at_utc", "session_id"]]
        .rename(columns={"processed_at_utc": "fixed_at", "session_id": "fixed_in"})
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
        errors.merge(fixes[["fixed_at", "fixed_in"]], left_on="error_id", right_index=True,
                     how="left")
        .assign(resolved=lambda f: f["fixed_at"].notna(),
                resolved_in_session=lambda f: f["fixed_in"].astype("string"))
        .rename(columns={"fixed_at": "resolved_at_utc"})
        .drop(columns=["fixed_in"])
        .reset_index(drop=True)
    )


def system_health(
    sessions: pd.DataFrame, batches: pd.DataFrame, metrics: pd.DataFrame,
    message_counts: pd.DataFrame,
) -> pd.DataFrame:
    """One row per session: how the machine and the target held up.

    Needs ``sessions``: ``session_id, status, started_at_utc, ended_at_utc``; ``batches``:
    ``session_id, duration_s, http_status``; ``metrics``: ``session_id, name, value``;
    ``message_counts``: ``session_id, message_count``. Returns ``session_id, status,
    duration_s, message_count, messages_per_s, batches, batch_p95_s, throttled`` (429 answers),
    ``max_rss_mb`` and ``mean_cpu_percent`` (NaN without those metric samples).
    """
    require_columns("system_health", sessions,
                    ["session_id", "status", "started_at_utc", "ended_at_utc"])
    require_columns("system_health", batches, ["session_id", "duration_s", "http_status"])
    require_columns("system_health", metrics, ["session_id", "name", "value"])
    require_columns("system_health", message_counts, ["session_id", "message_count"])
    duration = (sessions["ended_at_utc"] - sessions["started_at_utc"]).dt.total_seconds()
    per_batch = (
        batches.assign(throttled=batches["http_status"].eq(429).fillna(False))
        .groupby("session_id", observed=True)
        .agg(batches=("duration_s", "size"), batch_p95_s=("duration_s", lambda s: s.quantile(0.95)),
             throttled=("throttled", "sum"))
    )
    name = metrics["name"].astype("string")
    rss = metrics[name.eq("rss_bytes").fillna(False)].groupby("session_id")["value"].max() / 2**20
    cpu = metrics[name.eq("cpu_percent").fillna(False)].groupby("session_id")["value"].mean()
    counts = message_counts.set_index("session_id")["message_count"]
    table = sessions[["session_id", "status"]].assign(
        duration_s=duration.to_numpy(),
        message_count=sessions["session_id"].map(counts).fillna(0).astype(np.int64).to_numpy(),
    )
    return (
        table.assign(
            messages_per_s=(table["message_count"] / table["duration_s"]).where(
                table["duration_s"] > 0),
            batches=table["session_id"].map(per_batch["batches"]).fillna(0).astype(np.int64),
            batch_p95_s=table["session_id"].map(per_batch["batch_p95_s"]).astype(float),
            throttled=table["session_id"].map(per_batch["throttled"]).fillna(0).astype(np.int64),
            max_rss_mb=table["session_id"].map(rss).astype(float),
            mean_cpu_percent=table["session_id"].map(cpu).astype(float),
        )
        .reset_index(drop=True)
    )
