"""Operational import analytics: batches, throttling, time, resources, errors, duplicates, contacts.

Every function takes DataFrames as the store's loaders return them (see :mod:`pstlib.store.load`) and
returns a new DataFrame or a small frozen dataclass; inputs are never modified. What the importer
records, and therefore what these figures can say (see :mod:`pstlib.importer.run`):

* ``batches``: one row per ``$batch`` HTTP *attempt* (``attempt`` > 1 is a resend), with its
  duration, answer (``http_status``; NULL when no answer came), the limit code of a 429 (on a 429
  answer, or on a 200 answer whose inner operations were throttled) and the ``Retry-After`` of a
  429 answer. Plain requests (contact and ``messageid`` look-ups, contact creates) are not here.
* ``metrics``: samples written by the import loop every few seconds (``messages_processed``,
  ``messages_per_s`` since the run started, ``collector_backlog``, ``worker_pid``), every second
  by the collector (resources: ``rss_bytes``, ``cpu_s``, ``cpu_percent`` and the writer
  process's ``collector_*``; the import thread's seconds per stage: ``stage_s``) and one
  ``throttled`` sample per 429 the client obeyed (any request; value = the wait in seconds, label
  ``limit_code``), stamped when the collector wrote it (a few tens of ms late).
* ``messages.outcome_detail``: a duplicate's detection method (``within_session``,
  ``earlier_session``, ``dataverse``); a failure's ``<stage>: <error>``. ``duplicate_of`` is
  ``<method>:<session_id>/<source_id>/<item_id>`` or ``dataverse:<activityid>``.
* ``contacts``: one row per address per session: ``matched``, ``created``, ``failed`` or
  ``skipped`` (an assess session skips every address, ``detail`` says what a real import would do).

Reconciliation (found = read = sent = acknowledged = verified) is
:func:`pstlib.importer.reconcile.reconcile_session`, already a pure function of the loaded tables;
it is not repeated here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from pstlib.analytics.imports import require_columns

LIMIT_NAMES = {
    "0x80072322": "number of requests",
    "0x80072321": "combined execution time",
    "0x80072326": "concurrent requests",
}
"""Dataverse service protection limit codes and what they limit."""

SIZE_EDGES: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Default lower edges of the batch-size bins (operations per request): 1, 2-4, 5-9, ... 1000+."""

DUPLICATE_METHODS = ("within_session", "earlier_session", "dataverse")
CONTACT_ACTIONS = ("matched", "created", "failed", "skipped")
EVENT_METRICS = ("worker_pid", "collector_pid", "throttled")
"""Metric names that are events or identities, not resource samples."""
LABELLED_METRICS = ("stage_s",)
"""Samples that mean something only with their labels (see :func:`find_bottleneck`)."""
STAGES = ("open", "read", "warning", "source", "dedupe", "contacts", "map", "send", "verify")


def _text(series: pd.Series) -> pd.Series:
    """Any column (categorical, object, string) as the nullable string dtype."""
    return series.astype("string")


def _seconds(stamps: pd.Series) -> pd.Series:
    """UTC timestamps as float seconds since the epoch (NaN where missing)."""
    epoch = pd.Timestamp(0, tz="UTC")
    return (pd.to_datetime(stamps, utc=True) - epoch).dt.total_seconds()


# --- batches ---------------------------------------------------------------------------------------


def _size_bins(operations: pd.Series, edges: Sequence[int]) -> pd.Series:
    """Each batch's size bin (an ordered categorical labelled ``1``, ``2-4``, ..., ``1000+``)."""
    lows = list(edges)
    labels = [(f"{lo}" if hi - 1 == lo else f"{lo}-{hi - 1}") for lo, hi in pairwise(lows)] + [
        f"{lows[-1]}+"
    ]
    binned = pd.cut(
        operations.astype(float), bins=[*lows, np.inf], right=False, labels=labels, ordered=True
    )
    return pd.Series(binned, index=operations.index, name="size_bin")


BATCH_COLUMNS = [
    "session_id",
    "started_at_utc",
    "duration_s",
    "operations",
    "succeeded",
    "failed",
    "attempt",
    "http_status",
    "limit_code",
    "retry_after_s",
]


def measure_batches(batches: pd.DataFrame, *, edges: Sequence[int] = SIZE_EDGES) -> pd.DataFrame:
    """One row per ``$batch`` attempt with its size, latency, retry and throttling figures.

    Needs ``batches``: ``session_id, started_at_utc, duration_s, operations, succeeded, failed,
    attempt, http_status, limit_code, retry_after_s`` (``batch_row_id`` and ``request_bytes`` are
    kept when present). Returns those columns and ``size_bin`` (see :data:`SIZE_EDGES`),
    ``executed`` (a 2xx answer: the server ran the operations), ``ms_per_operation`` (duration per
    operation of an executed attempt, else NaN), ``retried`` (``attempt`` > 1), ``throttled`` (a
    429 answer, or a limit code for throttled inner operations), ``throttle_wait_s`` (the
    ``Retry-After`` of a 429 answer, else 0) and, with ``request_bytes``, ``bytes_per_operation``.
    """
    require_columns("measure_batches", batches, BATCH_COLUMNS)
    keep = [c for c in ("batch_row_id", *BATCH_COLUMNS, "request_bytes") if c in batches.columns]
    status = batches["http_status"].astype("Float64")
    operations = batches["operations"].astype(float)
    executed = status.between(200, 299).fillna(False).astype(bool)
    table = batches[keep].assign(
        size_bin=_size_bins(batches["operations"], edges),
        executed=executed,
        # latency per operation only where the server ran them (a 429 answers at once)
        ms_per_operation=(batches["duration_s"].astype(float) * 1000.0 / operations).where(
            executed & (operations > 0)
        ),
        retried=batches["attempt"].astype(float).gt(1),
        throttled=status.eq(429).fillna(False).astype(bool) | batches["limit_code"].notna(),
        throttle_wait_s=batches["retry_after_s"].astype(float).fillna(0.0),
    )
    if "request_bytes" in keep:
        table = table.assign(
            bytes_per_operation=(batches["request_bytes"].astype(float) / operations).where(
                operations > 0
            )
        )
    return table.reset_index(drop=True)


def summarize_batch_sizes(
    batches: pd.DataFrame, *, edges: Sequence[int] = SIZE_EDGES
) -> pd.DataFrame:
    """Batch size against latency: one row per size bin holding any batch.

    Needs the columns of :func:`measure_batches`. Latency figures are over *executed* attempts
    (2xx answers; a 429 or a 503 answers without running anything). Returns ``size_bin``,
    ``batches`` (attempts), ``executed_batches``, ``operations`` (sent in executed attempts),
    ``mean_operations``, ``mean_duration_s``, ``p95_duration_s``, ``ms_per_operation`` (total
    executed time over total executed operations), ``retried_batches`` (``attempt`` > 1),
    ``retried_share``, ``throttled_batches`` and ``throttle_wait_s`` (sum of ``Retry-After``).
    """
    require_columns("summarize_batch_sizes", batches, BATCH_COLUMNS)
    measured = measure_batches(batches, edges=edges)
    executed = measured[measured["executed"]]
    latency = executed.groupby("size_bin", observed=True).agg(
        executed_batches=("duration_s", "size"),
        operations=("operations", "sum"),
        mean_operations=("operations", "mean"),
        mean_duration_s=("duration_s", "mean"),
        p95_duration_s=("duration_s", lambda s: s.quantile(0.95)),
        executed_s=("duration_s", "sum"),
    )
    counts = measured.groupby("size_bin", observed=True).agg(
        batches=("duration_s", "size"),
        retried_batches=("retried", "sum"),
        throttled_batches=("throttled", "sum"),
        throttle_wait_s=("throttle_wait_s", "sum"),
    )
    table = counts.join(latency, how="left")
    return table.assign(
        executed_batches=table["executed_batches"].fillna(0).astype(np.int64),
        operations=table["operations"].fillna(0).astype(np.int64),
        mean_operations=table["mean_operations"].astype(float),
        ms_per_operation=(table["executed_s"] * 1000.0 / table["operations"]).where(
            table["operations"] > 0
        ),
        retried_batches=table["retried_batches"].astype(np.int64),
        retried_share=table["retried_batches"] / table["batches"],
        throttled_batches=table["throttled_batches"].astype(np.int64),
        batches=table["batches"].astype(np.int64),
    ).reset_index()[
        [
            "size_bin",
            "batches",
            "executed_batches",
            "operations",
            "mean_operations",
            "mean_duration_s",
            "p95_duration_s",
            "ms_per_operation",
            "retried_batches",
            "retried_share",
            "throttled_batches",
            "throttle_wait_s",
        ]
    ]


# --- throttling ------------------------------------------------------------------------------------


def _samples(metrics: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.Series]:
    """The samples of metric ``name``, and their labels' JSON text ("" where none)."""
    rows = metrics[_text(metrics["name"]).eq(name).fillna(False).to_numpy(bool)]
    return rows, _text(rows["labels_json"]).fillna("")


def _throttle_events(metrics: pd.DataFrame) -> pd.DataFrame:
    """The ``throttled`` metric samples: ``session_id, at_utc, limit_code, wait_s``."""
    events, labels = _samples(metrics, "throttled")
    code = labels.str.extract(r'"limit_code"\s*:\s*"([^"]*)"', expand=False)
    return pd.DataFrame(
        {
            "session_id": _text(events["session_id"]).to_numpy(),
            "at_utc": events["at_utc"].to_numpy(),
            "limit_code": code.where(code.str.len() > 0).fillna("unknown").to_numpy(),
            "wait_s": events["value"].astype(float).to_numpy(),
        }
    )


def summarize_throttling(batches: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """429s per session and service protection limit, and the waits they imposed.

    Needs ``batches``: ``session_id, http_status, limit_code, retry_after_s``; ``metrics``:
    ``session_id, at_utc, name, value, labels_json`` (only ``throttled`` samples are used; an
    empty frame is fine). Returns one row per ``session_id`` and ``limit_code`` (``unknown`` for
    a 429 that named none) seen in either: ``limit`` (what it limits), ``throttled_requests``
    ($batch requests answered 429), ``throttled_inner`` ($batch requests answered but with inner
    operations throttled), ``throttle_events`` (every 429 the client obeyed, look-ups and contact
    creates included: the ``throttled`` metric), ``retry_after_total_s`` and
    ``retry_after_mean_s`` (the waits of those events), ``batch_retry_after_total_s`` (the
    ``Retry-After`` of the 429 batch answers), ``first_at_utc`` and ``last_at_utc`` (events).
    """
    require_columns(
        "summarize_throttling",
        batches,
        ["session_id", "http_status", "limit_code", "retry_after_s"],
    )
    require_columns(
        "summarize_throttling", metrics, ["session_id", "at_utc", "name", "value", "labels_json"]
    )
    status = batches["http_status"].astype("Float64")
    answered_429 = status.eq(429).fillna(False).to_numpy(bool)
    flagged = answered_429 | batches["limit_code"].notna().to_numpy(bool)
    throttled = pd.DataFrame(
        {
            "session_id": _text(batches["session_id"]).to_numpy()[flagged],
            "limit_code": _text(batches["limit_code"]).fillna("unknown").to_numpy()[flagged],
            "request": answered_429[flagged].astype(np.int64),
            "inner": (~answered_429[flagged]).astype(np.int64),
            "wait_s": batches["retry_after_s"].astype(float).to_numpy()[flagged],
        }
    )
    keys = ["session_id", "limit_code"]
    from_batches = throttled.groupby(keys).agg(
        throttled_requests=("request", "sum"),
        throttled_inner=("inner", "sum"),
        batch_retry_after_total_s=("wait_s", "sum"),
    )
    from_events = (
        _throttle_events(metrics)
        .groupby(keys)
        .agg(
            throttle_events=("wait_s", "size"),
            retry_after_total_s=("wait_s", "sum"),
            retry_after_mean_s=("wait_s", "mean"),
            first_at_utc=("at_utc", "min"),
            last_at_utc=("at_utc", "max"),
        )
    )
    table = from_batches.join(from_events, how="outer").reset_index()
    counts = ["throttled_requests", "throttled_inner", "throttle_events"]
    return (
        table.assign(
            limit=table["limit_code"].map(LIMIT_NAMES).fillna("unknown"),
            **{c: table[c].fillna(0).astype(np.int64) for c in counts},
            retry_after_total_s=table["retry_after_total_s"].fillna(0.0),
            batch_retry_after_total_s=table["batch_retry_after_total_s"].fillna(0.0),
        )
        .sort_values(keys, kind="stable")
        .reset_index(drop=True)[
            [
                "session_id",
                "limit_code",
                "limit",
                "throttled_requests",
                "throttled_inner",
                "throttle_events",
                "retry_after_total_s",
                "retry_after_mean_s",
                "batch_retry_after_total_s",
                "first_at_utc",
                "last_at_utc",
            ]
        ]
    )


def rate_requests(batches: pd.DataFrame, *, freq: str = "1min") -> pd.DataFrame:
    """Effective request rate over time: ``$batch`` attempts and operations per period.

    Needs ``batches``: ``session_id, started_at_utc, operations, succeeded, http_status,
    retry_after_s``. Periods (``freq``, a pandas frequency) run from each session's first to its
    last request, empty periods included. Returns ``session_id``, ``period_utc`` (start),
    ``requests``, ``throttled_requests`` (429), ``failed_requests`` (5xx or no answer),
    ``operations_succeeded``, ``requests_per_minute``, ``operations_per_minute`` (succeeded) and
    ``throttle_wait_s`` (``Retry-After`` asked in the period).
    """
    require_columns(
        "rate_requests",
        batches,
        ["session_id", "started_at_utc", "operations", "succeeded", "http_status", "retry_after_s"],
    )
    status = batches["http_status"].astype("Float64")
    rows = pd.DataFrame(
        {
            "session_id": _text(batches["session_id"]).to_numpy(),
            "period_utc": pd.to_datetime(batches["started_at_utc"], utc=True).to_numpy(),
            "requests": np.ones(len(batches), dtype=np.int64),
            "throttled_requests": status.eq(429).fillna(False).to_numpy(np.int64),
            "failed_requests": (status.isna() | status.ge(500).fillna(False)).to_numpy(np.int64),
            "operations_succeeded": batches["succeeded"].to_numpy(np.int64),
            "throttle_wait_s": batches["retry_after_s"].astype(float).fillna(0.0).to_numpy(),
        }
    )
    rows = rows.assign(period_utc=pd.to_datetime(rows["period_utc"], utc=True))
    minutes = pd.Timedelta(freq).total_seconds() / 60.0
    summed = (
        rows.set_index("period_utc")
        .groupby("session_id")
        .resample(freq)
        .sum(numeric_only=True)
        .reset_index()
    )
    return summed.assign(
        requests_per_minute=summed["requests"] / minutes,
        operations_per_minute=summed["operations_succeeded"] / minutes,
    )[
        [
            "session_id",
            "period_utc",
            "requests",
            "throttled_requests",
            "failed_requests",
            "operations_succeeded",
            "requests_per_minute",
            "operations_per_minute",
            "throttle_wait_s",
        ]
    ]


# --- time and resources ----------------------------------------------------------------------------


def _union_s(intervals: pd.DataFrame) -> pd.Series:
    """Seconds covered by the union of ``[start_s, end_s]`` intervals, per ``session_id``."""
    spans = intervals.dropna(subset=["start_s", "end_s"]).sort_values(
        ["session_id", "start_s"], kind="stable"
    )
    # an interval opens a new segment when it starts after everything before it has ended
    reach = spans.groupby("session_id")["end_s"].cummax()
    before = reach.groupby(spans["session_id"]).shift()
    segment = (before.isna() | (spans["start_s"] > before)).cumsum()
    return (
        spans.assign(reach=reach, segment=segment)
        .groupby(["session_id", "segment"])
        .agg(start_s=("start_s", "min"), end_s=("reach", "max"))
        .pipe(lambda f: (f["end_s"] - f["start_s"]).groupby(level="session_id").sum())
        .astype(float)
    )


def attribute_session_time(
    sessions: pd.DataFrame, batches: pd.DataFrame, metrics: pd.DataFrame
) -> pd.DataFrame:
    """Where each session's wall-clock time went: requests in flight, throttle waits, local work.

    Method: the importer times no stage of its own; it records each ``$batch`` attempt (start,
    duration), each 429's ``Retry-After`` and the ``throttled`` metric. So the session's wall time
    (``started_at_utc`` to ``ended_at_utc``, or to its last recorded activity while running) is
    split, by priority, into ``request_s`` (time at least one ``$batch`` request was in flight:
    the union of their intervals, so concurrent requests count once), ``throttle_wait_s`` (time
    inside a ``Retry-After`` pause and no request in flight: 429 batch answers end at their
    answer, ``throttled`` events at their (slightly late) sample time) and ``local_s`` (the rest:
    reading and parsing the sources, deduplication, contact and ``messageid`` look-ups and
    contact creates, which are plain requests the store does not time, mapping, store writes).

    Limits: reading, dedupe, contacts and store writes cannot be told apart (no per-stage
    timings are recorded); local work that overlaps requests in flight (the pipeline keeps
    requests going while the next batch is read) counts as ``request_s``.

    Needs ``sessions``: ``session_id, started_at_utc, ended_at_utc``; ``batches``: ``session_id,
    started_at_utc, duration_s, http_status, retry_after_s``; ``metrics``: ``session_id, at_utc,
    name, value`` (empty frames are fine). Returns ``session_id, wall_s, request_s,
    throttle_wait_s, local_s`` (the last three add up to ``wall_s``), their shares
    ``request_share, throttle_wait_share, local_share``, ``request_time_total_s`` (sum of attempt
    durations), ``mean_requests_in_flight`` (total over ``request_s``) and ``bottleneck`` (the
    largest of ``requests``, ``throttle waits``, ``local work``; NA for a session of no time).
    """
    require_columns(
        "attribute_session_time", sessions, ["session_id", "started_at_utc", "ended_at_utc"]
    )
    require_columns(
        "attribute_session_time",
        batches,
        ["session_id", "started_at_utc", "duration_s", "http_status", "retry_after_s"],
    )
    require_columns("attribute_session_time", metrics, ["session_id", "at_utc", "name", "value"])
    ids = _text(sessions["session_id"])
    start_s = _seconds(batches["started_at_utc"])
    end_s = start_s + batches["duration_s"].astype(float)
    requests = pd.DataFrame(
        {"session_id": _text(batches["session_id"]), "start_s": start_s, "end_s": end_s}
    )
    answered_429 = batches["http_status"].astype("Float64").eq(429).fillna(False).to_numpy(bool)
    wait = batches["retry_after_s"].astype(float)
    waits_of_batches = requests[answered_429].assign(end_s=(end_s + wait)[answered_429])
    waits_of_batches = waits_of_batches.assign(start_s=end_s[answered_429])
    event_rows = metrics[_text(metrics["name"]).eq("throttled").fillna(False).to_numpy(bool)]
    event_start = _seconds(event_rows["at_utc"])
    waits_of_events = pd.DataFrame(
        {
            "session_id": _text(event_rows["session_id"]),
            "start_s": event_start,
            "end_s": event_start + event_rows["value"].astype(float),
        }
    )
    busy = pd.concat([requests, waits_of_batches, waits_of_events], ignore_index=True)
    # the end of a session still running: its last recorded request, wait or sample
    last_s = (
        pd.concat(
            [
                busy[["session_id", "end_s"]],
                pd.DataFrame(
                    {
                        "session_id": _text(metrics["session_id"]),
                        "end_s": _seconds(metrics["at_utc"]),
                    }
                ),
            ]
        )
        .groupby("session_id")["end_s"]
        .max()
    )
    begin = _seconds(sessions["started_at_utc"]).to_numpy()
    finish = _seconds(sessions["ended_at_utc"]).fillna(ids.map(last_s).astype(float)).to_numpy()
    wall = pd.Series(np.maximum(finish - begin, 0.0), index=ids.to_numpy()).fillna(0.0)
    request_s = ids.map(_union_s(requests)).astype(float).fillna(0.0).to_numpy()
    target_s = ids.map(_union_s(busy)).astype(float).fillna(0.0).to_numpy()
    table = pd.DataFrame(
        {
            "session_id": ids.to_numpy(),
            "wall_s": wall.to_numpy(),
            # never more than the wall time (samples may land just after the recorded end)
            "request_s": np.minimum(request_s, wall.to_numpy()),
            "throttle_wait_s": np.clip(target_s - request_s, 0.0, None),
        }
    )
    table = table.assign(
        throttle_wait_s=np.minimum(table["throttle_wait_s"], table["wall_s"] - table["request_s"])
    )
    table = table.assign(local_s=table["wall_s"] - table["request_s"] - table["throttle_wait_s"])
    total = (
        requests.assign(duration_s=batches["duration_s"].astype(float).to_numpy())
        .groupby("session_id")["duration_s"]
        .sum()
    )
    parts = table[["request_s", "throttle_wait_s", "local_s"]]
    labels = np.array(["requests", "throttle waits", "local work"], dtype=object)
    bottleneck = pd.Series(labels[parts.to_numpy().argmax(axis=1)], dtype="string").where(
        table["wall_s"].to_numpy() > 0
    )
    request_total = table["session_id"].map(total).astype(float).fillna(0.0)
    return table.assign(
        request_share=(table["request_s"] / table["wall_s"]).where(table["wall_s"] > 0),
        throttle_wait_share=(table["throttle_wait_s"] / table["wall_s"]).where(table["wall_s"] > 0),
        local_share=(table["local_s"] / table["wall_s"]).where(table["wall_s"] > 0),
        request_time_total_s=request_total,
        mean_requests_in_flight=(request_total / table["request_s"]).where(table["request_s"] > 0),
        bottleneck=bottleneck.to_numpy(),
    )


def track_resources(metrics: pd.DataFrame, *, names: Sequence[str] | None = None) -> pd.DataFrame:
    """The sampled metrics of sessions as a tidy time series, with an interval message rate.

    Needs ``metrics``: ``session_id, at_utc, name, value``. ``names`` picks the metrics (default:
    every sampled one, i.e. all but the events and identities of :data:`EVENT_METRICS` and the
    labelled samples of :data:`LABELLED_METRICS`); where
    ``messages_processed`` is among them, ``messages_per_s_interval`` is derived: the messages
    processed since the session's previous sample over the seconds between (NaN for the first
    sample and where the counter restarted: a resumed run counts again from zero). The importer
    itself samples ``messages_processed``, ``messages_per_s`` (since the run started) and
    ``collector_backlog``, and every second ``rss_bytes``, ``cpu_s``, ``cpu_percent`` and the
    writer process's ``collector_*`` (see :func:`resource_use` for them side by side).
    Returns ``session_id, at_utc, elapsed_s`` (since the session's first sample), ``name``,
    ``value``, sorted by session, time and name.
    """
    require_columns("track_resources", metrics, ["session_id", "at_utc", "name", "value"])
    name = _text(metrics["name"])
    wanted = (
        name.isin(list(names))
        if names is not None
        else ~name.isin([*EVENT_METRICS, *LABELLED_METRICS])
    )
    samples = pd.DataFrame(
        {
            "session_id": _text(metrics["session_id"]),
            "at_utc": pd.to_datetime(metrics["at_utc"], utc=True),
            "name": name,
            "value": metrics["value"].astype(float),
        }
    )[wanted.fillna(False).to_numpy(bool)]
    processed = samples[samples["name"].eq("messages_processed").fillna(False).to_numpy(bool)]
    processed = processed.sort_values(["session_id", "at_utc"], kind="stable")
    by_session = processed.groupby("session_id")
    gained = by_session["value"].diff()
    seconds = by_session["at_utc"].diff().dt.total_seconds()
    interval = processed.assign(
        name="messages_per_s_interval",
        value=(gained / seconds).where((gained >= 0) & (seconds > 0)),
    )
    tidy = pd.concat([samples, interval], ignore_index=True)
    first = tidy.groupby("session_id")["at_utc"].transform("min")
    return (
        tidy.assign(
            elapsed_s=(tidy["at_utc"] - first).dt.total_seconds(),
            name=tidy["name"].astype("string"),
        )
        .sort_values(["session_id", "at_utc", "name"], kind="stable")
        .reset_index(drop=True)[["session_id", "at_utc", "elapsed_s", "name", "value"]]
    )


RESOURCE_METRICS = {
    "rss_bytes": "rss_mb",
    "cpu_s": "cpu_s",
    "cpu_percent": "cpu_percent",
    "collector_rss_bytes": "collector_rss_mb",
    "collector_cpu_s": "collector_cpu_s",
    "collector_cpu_percent": "collector_cpu_percent",
}
"""Resource metrics the importer samples (every second) and their columns in :func:`resource_use`."""


def resource_use(metrics: pd.DataFrame) -> pd.DataFrame:
    """Memory and CPU of each session's importer and of its writer process, second by second.

    The importer samples, every second, its own resident memory (``rss_bytes``), CPU seconds
    since its process started (``cpu_s``: user + system) and CPU percent since the previous
    sample (``cpu_percent``: 100 = one core busy), and its collector's writer process samples the
    same for itself (``collector_*``). Samples are put in one-second bins (the last sample of a
    bin wins). Needs ``metrics``: ``session_id, at_utc, name, value``. Returns ``session_id,
    at_utc`` (the bin's start), ``elapsed_s`` (since the session's first bin), ``rss_mb, cpu_s,
    cpu_percent, collector_rss_mb, collector_cpu_s, collector_cpu_percent`` (NaN where not
    sampled: a session imported before these samples existed has no rows), sorted by session
    and time. ``cpu_s`` starts again at each resumed run (a new process).
    """
    require_columns("resource_use", metrics, ["session_id", "at_utc", "name", "value"])
    columns = list(RESOURCE_METRICS.values())
    name = _text(metrics["name"])
    wanted = name.isin(list(RESOURCE_METRICS)).fillna(False).to_numpy(bool)
    samples = pd.DataFrame(
        {
            "session_id": _text(metrics["session_id"]),
            "at_utc": pd.to_datetime(metrics["at_utc"], utc=True).dt.floor("s"),
            "column": name.map(RESOURCE_METRICS),
            "value": metrics["value"].astype(float),
        }
    )[wanted]
    if samples.empty:
        return pd.DataFrame(
            {
                "session_id": pd.Series(dtype="string"),
                "at_utc": pd.Series(dtype="datetime64[ns, UTC]"),
                "elapsed_s": pd.Series(dtype=float),
                **{c: pd.Series(dtype=float) for c in columns},
            }
        )
    wide = (
        # the last sample of each metric in each second
        samples.sort_values("at_utc", kind="stable")
        .pivot_table(
            index=["session_id", "at_utc"], columns="column", values="value", aggfunc="last"
        )
        .reindex(columns=columns)
        .reset_index()
    )
    first = wide.groupby("session_id")["at_utc"].transform("min")
    mb = 2.0**20
    return (
        wide.assign(
            session_id=wide["session_id"].astype("string"),
            elapsed_s=(wide["at_utc"] - first).dt.total_seconds(),
            rss_mb=wide["rss_mb"] / mb,
            collector_rss_mb=wide["collector_rss_mb"] / mb,
        )
        .sort_values(["session_id", "at_utc"], kind="stable")
        .reset_index(drop=True)[["session_id", "at_utc", "elapsed_s", *columns]]
        .rename_axis(columns=None)
    )


BOTTLENECK_STAGES = (
    "read",
    "dedupe",
    "contacts",
    "map",
    "network",
    "throttle_waits",
    "store",
    "other",
)
"""Where an import thread's time can go (see :func:`find_bottleneck`)."""


def _stage_seconds(metrics: pd.DataFrame) -> pd.DataFrame:
    """Seconds per session and stage from ``stage_s`` samples: each run's last, summed over runs."""
    rows, labels = _samples(metrics, "stage_s")
    stamps = pd.DataFrame(
        {
            "session_id": _text(rows["session_id"]).to_numpy(),
            "stage": labels.str.extract(r'"stage":\s*"([^"]*)"', expand=False).to_numpy(),
            "run": labels.str.extract(r'"run":\s*"([^"]*)"', expand=False).fillna("").to_numpy(),
            "value": rows["value"].astype(float).to_numpy(),
        }
    ).dropna(subset=["stage"])
    return (
        # cumulative within a run: its largest sample is where it ended
        stamps.groupby(["session_id", "run", "stage"])["value"]
        .max()
        .groupby(level=["session_id", "stage"])
        .sum()
        .unstack("stage")
    )


def find_bottleneck(
    sessions: pd.DataFrame, batches: pd.DataFrame, metrics: pd.DataFrame
) -> pd.DataFrame:
    """Which stage each session's import thread spent its time in: the bottleneck.

    Method, for sessions whose importer sampled its stage timings (metric ``stage_s``: the import
    thread's cumulative ``time.perf_counter`` seconds per stage, every second, labelled with the
    ``stage`` and the ``run``; a resumed session sums its runs): ``read_s`` (parsing the
    sources), ``dedupe_s`` (the ledger and Dataverse's ``messageid`` look-ups), ``contacts_s``
    (resolving, looking up and creating contacts), ``map_s`` (building the payloads),
    ``network_s`` (waiting for Dataverse to acknowledge the emails, less the throttle waits),
    ``throttle_waits_s`` (time in ``Retry-After`` pauses with no request in flight, as
    :func:`attribute_session_time` finds it, at most the time waited on the network),
    ``store_s`` (waiting for the analytics collector), ``other_s`` (the rest of the runs' time:
    handing rows over, progress, bookkeeping). ``method`` is ``"stage timings"``.

    Sessions without stage timings (imported by an older pstlib) fall back to
    :func:`attribute_session_time`: ``network_s`` = its ``request_s``, ``throttle_waits_s`` =
    its ``throttle_wait_s``, ``other_s`` = its ``local_s`` (reading, dedupe, contacts and mapping
    together: they cannot be told apart); the per-stage columns are NaN and ``method`` is
    ``"request attribution"``.

    Needs what :func:`attribute_session_time` needs, and ``metrics.labels_json``. Returns one row
    per session: ``session_id, method, total_s`` (the stages' sum: the runs' time, which for a
    resumed session excludes the time between runs), the eight ``<stage>_s`` columns,
    ``bottleneck`` (the stage of most seconds; NA for a session of no time) and
    ``bottleneck_share`` (its share of ``total_s``).
    """
    require_columns(
        "find_bottleneck", metrics, ["session_id", "at_utc", "name", "value", "labels_json"]
    )
    attributed = attribute_session_time(sessions, batches, metrics).set_index("session_id")
    timed = _stage_seconds(metrics).reindex(
        columns=["read", "dedupe", "contacts", "map", "network", "store", "run"]
    )
    ids = attributed.index
    timed = timed.reindex(ids)
    has_timings = timed["run"].notna().to_numpy()
    network = timed["network"].fillna(0.0)
    # throttle pauses happen while the import thread waits on the network
    waits = np.minimum(attributed["throttle_wait_s"].to_numpy(), network.to_numpy())
    staged = pd.DataFrame(
        {
            "read_s": timed["read"].fillna(0.0),
            "dedupe_s": timed["dedupe"].fillna(0.0),
            "contacts_s": timed["contacts"].fillna(0.0),
            "map_s": timed["map"].fillna(0.0),
            "network_s": network - waits,
            "throttle_waits_s": waits,
            "store_s": timed["store"].fillna(0.0),
        },
        index=ids,
    )
    staged = staged.assign(other_s=(timed["run"] - staged.sum(axis=1)).clip(lower=0.0))
    fallback = pd.DataFrame(
        {
            "read_s": np.nan,
            "dedupe_s": np.nan,
            "contacts_s": np.nan,
            "map_s": np.nan,
            "network_s": attributed["request_s"],
            "throttle_waits_s": attributed["throttle_wait_s"],
            "store_s": np.nan,
            "other_s": attributed["local_s"],
        },
        index=ids,
    )
    columns = [f"{stage}_s" for stage in BOTTLENECK_STAGES]
    table = staged[columns].where(pd.Series(has_timings, index=ids), fallback[columns], axis=0)
    total = table.sum(axis=1, min_count=1).fillna(0.0)
    values = table.fillna(-1.0).to_numpy()
    bottleneck = pd.Series(
        np.array(BOTTLENECK_STAGES, dtype=object)[values.argmax(axis=1)],
        index=ids,
        dtype="string",
    ).where(total.to_numpy() > 0)
    return (
        table.assign(
            method=np.where(has_timings, "stage timings", "request attribution"),
            total_s=total,
            bottleneck=bottleneck,
            bottleneck_share=(values.max(axis=1) / total).where(total > 0),
        )
        .rename_axis("session_id")
        .reset_index()
        .astype({"session_id": "string", "method": "string"})[
            ["session_id", "method", "total_s", *columns, "bottleneck", "bottleneck_share"]
        ]
    )


# --- errors ----------------------------------------------------------------------------------------

# (pattern, placeholder) in the order applied: the specific shapes before the numbers in them
_SIGNATURE_RULES: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<guid>"),
    (r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", "<url>"),
    (r"<?[^\s<>@'\"(),;:]+@[^\s<>@'\"(),;:]+>?", "<address>"),
    (r"'[^']*'|\"[^\"]*\"", "<value>"),
    # a path runs to the next blank, or on over a blank when the next word has a separator
    (
        r"(?<![\w/.\\<])(?:[A-Za-z]:[\\/]|\\\\|~?/)"
        r"(?:[^\s'\"<>]|\s(?=[^\s'\"<>:]*[\\/]))*",
        "<path>",
    ),
    (r"(?<![\w.])(?<!HTTP )(?!0[xX][0-9a-fA-F])\d+(?:[.,:]\d+)*", "<n>"),
    (r"\s+", " "),
)


def normalise_error_signature(text: pd.Series) -> pd.Series:
    """Error texts with their variable parts replaced, so that one cause reads one way.

    GUIDs become ``<guid>``, URLs ``<url>``, e-mail addresses and Message-IDs ``<address>``,
    quoted values ``<value>``, file paths ``<path>``, numbers ``<n>``; whitespace is collapsed.
    Kept as they are: hexadecimal error codes (``0x80072322``) and the status of ``HTTP 503``,
    which name the cause rather than vary with it. Missing texts stay missing.
    """
    signature = _text(text)
    for pattern, placeholder in _SIGNATURE_RULES:
        signature = signature.str.replace(pattern, placeholder, regex=True)
    return signature.str.strip()


def rank_error_causes(
    errors: pd.DataFrame, messages: pd.DataFrame, *, top: int | None = None
) -> pd.DataFrame:
    """The causes of errors and failed messages, grouped by stage and normalised signature.

    Two records of trouble: ``errors`` rows (stage, cause) and failed messages, whose
    ``outcome_detail`` reads ``<stage>: <error>``. A failed message with an ``errors`` row of its
    own (same session, source and item) is that error, counted once; the others (all messages of
    a batch that failed as a whole, with one ``errors`` row for the batch) count as occurrences
    of their own. Needs ``errors``: ``session_id, source_id, item, stage, code, cause, at_utc``;
    ``messages``: ``session_id, source_id, item_id, outcome, outcome_detail, processed_at_utc``.
    Returns one row per ``stage`` and ``signature`` (see :func:`normalise_error_signature`):
    ``occurrences`` (error rows plus failed messages without one), ``error_count``,
    ``failed_message_count``, ``sessions`` (how many had it), ``code`` (the most frequent error
    code, NA for message-only causes), ``first_seen_utc``, ``last_seen_utc`` and ``example``
    (the first raw text), most frequent first; the first ``top`` rows where given.
    """
    require_columns(
        "rank_error_causes",
        errors,
        ["session_id", "source_id", "item", "stage", "code", "cause", "at_utc"],
    )
    require_columns(
        "rank_error_causes",
        messages,
        ["session_id", "source_id", "item_id", "outcome", "outcome_detail", "processed_at_utc"],
    )
    failed = messages[_text(messages["outcome"]).eq("failed").fillna(False).to_numpy(bool)]
    detail = _text(failed["outcome_detail"]).fillna("")
    # "<stage>: <error>": the stage that failed, then the error text
    parts = detail.str.extract(r"^(?P<stage>[a-z_]+): (?P<text>.*)$")
    item_keys = pd.DataFrame(
        {
            "session_id": _text(errors["session_id"]),
            "source_id": errors["source_id"].astype("Int64"),
            "item_id": _text(errors["item"]),
        }
    ).dropna()
    message_keys = pd.DataFrame(
        {
            "session_id": _text(failed["session_id"]),
            "source_id": failed["source_id"].astype("Int64"),
            "item_id": _text(failed["item_id"]),
        }
    )
    has_error_row = (
        message_keys.merge(item_keys.drop_duplicates().assign(_row=True), how="left")["_row"]
        .fillna(False)
        .to_numpy(bool)
    )
    events = pd.concat(
        [
            pd.DataFrame(
                {
                    "stage": _text(errors["stage"]).to_numpy(),
                    "raw": _text(errors["cause"]).to_numpy(),
                    "code": _text(errors["code"]).to_numpy(),
                    "session_id": _text(errors["session_id"]).to_numpy(),
                    "at_utc": pd.to_datetime(errors["at_utc"], utc=True).to_numpy(),
                    "error": np.ones(len(errors), dtype=np.int64),
                    "failed": np.zeros(len(errors), dtype=np.int64),
                    "counted": np.ones(len(errors), dtype=np.int64),
                }
            ),
            pd.DataFrame(
                {
                    "stage": parts["stage"].fillna("unknown").to_numpy(),
                    "raw": parts["text"].fillna(detail).to_numpy(),
                    "code": pd.array([pd.NA] * len(failed), dtype="string"),
                    "session_id": _text(failed["session_id"]).to_numpy(),
                    "at_utc": pd.to_datetime(failed["processed_at_utc"], utc=True).to_numpy(),
                    "error": np.zeros(len(failed), dtype=np.int64),
                    "failed": np.ones(len(failed), dtype=np.int64),
                    "counted": (~has_error_row).astype(np.int64),
                }
            ),
        ],
        ignore_index=True,
    )
    events = events.assign(
        stage=events["stage"].astype("string"),
        raw=events["raw"].astype("string"),
        code=events["code"].astype("string"),
        at_utc=pd.to_datetime(events["at_utc"], utc=True),
    )
    events = events.assign(signature=normalise_error_signature(events["raw"]).fillna(""))
    keys = ["stage", "signature"]
    codes = (
        events.dropna(subset=["code"])
        .groupby([*keys, "code"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values([*keys, "n", "code"], ascending=[True, True, False, True], kind="stable")
        .drop_duplicates(keys)
        .set_index(keys)["code"]
    )
    ranked = (
        events.sort_values("at_utc", kind="stable")
        .groupby(keys)
        .agg(
            occurrences=("counted", "sum"),
            error_count=("error", "sum"),
            failed_message_count=("failed", "sum"),
            sessions=("session_id", "nunique"),
            first_seen_utc=("at_utc", "min"),
            last_seen_utc=("at_utc", "max"),
            example=("raw", "first"),
        )
        .join(codes)
        .reset_index()
        .sort_values(["occurrences", "stage", "signature"], ascending=[False, True, True])
        .reset_index(drop=True)
    )
    columns = [
        "stage",
        "signature",
        "occurrences",
        "error_count",
        "failed_message_count",
        "sessions",
        "code",
        "first_seen_utc",
        "last_seen_utc",
        "example",
    ]
    ranked = ranked.reindex(columns=columns)
    return ranked.head(top) if top is not None else ranked


# --- duplicates ------------------------------------------------------------------------------------


def summarize_duplicates(
    messages: pd.DataFrame,
    sources: pd.DataFrame | None = None,
    *,
    by: Sequence[str] = ("session_id", "source_id"),
) -> pd.DataFrame:
    """Duplicates by detection method, per session and source (or any grouping in ``by``).

    Needs ``messages``: ``outcome``, ``outcome_detail`` and the ``by`` columns; where
    ``matched_session_id`` is in ``by``, ``duplicate_of`` (it is parsed from there: the session
    of the first copy; NA for a Dataverse match). ``sources`` (``source_id, path``), when given
    and ``source_id`` is in ``by``, adds the source's ``path``. Returns the ``by`` columns,
    [``path``], ``message_count``, ``duplicate_count``, one count per method
    (``within_session``, ``earlier_session``, ``dataverse``, and ``other_method`` for a detail
    none of those), ``duplicate_share`` (duplicates over messages).
    """
    keys = list(by)
    needed = ["outcome", "outcome_detail"] + [k for k in keys if k != "matched_session_id"]
    if "matched_session_id" in keys:
        needed.append("duplicate_of")
    require_columns("summarize_duplicates", messages, needed)
    if sources is not None and "source_id" in keys:
        require_columns("summarize_duplicates", sources, ["source_id", "path"])
    duplicate = _text(messages["outcome"]).eq("duplicate").fillna(False).to_numpy(bool)
    method = _text(messages["outcome_detail"]).where(duplicate)
    method = method.where(method.isin(DUPLICATE_METHODS) | method.isna(), "other_method")
    frame = messages[[k for k in keys if k != "matched_session_id"]].assign(
        duplicate=duplicate.astype(np.int64),
        method=method,
    )
    if "matched_session_id" in keys:
        matched = _text(messages["duplicate_of"]).str.extract(
            r"^(?:within_session|earlier_session):([^/]+)/", expand=False
        )
        frame = frame.assign(matched_session_id=matched.where(duplicate))
    grouped = frame.groupby(keys, observed=True, dropna=False)
    counts = grouped.agg(message_count=("duplicate", "size"), duplicate_count=("duplicate", "sum"))
    per_method = (
        frame.dropna(subset=["method"])
        .groupby([*keys, "method"], observed=True, dropna=False)
        .size()
        .unstack("method")
        .reindex(columns=[*DUPLICATE_METHODS, "other_method"])
    )
    table = counts.join(per_method).fillna(dict.fromkeys([*DUPLICATE_METHODS, "other_method"], 0))
    table = table.astype(dict.fromkeys([*DUPLICATE_METHODS, "other_method"], np.int64)).assign(
        duplicate_share=lambda f: f["duplicate_count"] / f["message_count"]
    )
    table = table.reset_index()
    if sources is not None and "source_id" in keys:
        paths = sources.drop_duplicates("source_id").set_index("source_id")["path"]
        table.insert(len(keys), "path", table["source_id"].map(paths).astype("string"))
    return table


@dataclass(frozen=True, slots=True)
class DuplicateAccuracy:
    """How the recorded ``duplicate`` outcomes compare with the known copies.

    A *positive* is a message the import called a duplicate; it is *true* when the ground truth
    says the item is a copy. ``missing`` counts truth items with no message row.
    """

    items: int
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    missing: int
    precision: float
    recall: float
    f1: float
    accuracy: float


def duplicate_accuracy(
    messages: pd.DataFrame,
    truth_duplicates: pd.DataFrame,
    *,
    on: Sequence[str] = ("session_id", "source_id", "item_id"),
) -> DuplicateAccuracy:
    """Precision, recall and accuracy of duplicate detection against a ground truth.

    Needs ``messages``: ``outcome`` and the ``on`` columns; ``truth_duplicates``: the ``on``
    columns and ``is_duplicate`` (bool: the item is a copy of one imported before it, in the
    same or an earlier session). Items are matched on ``on``; messages without a truth row are
    ignored. Precision (recall, F1) is NaN when nothing was called (is) a duplicate.
    """
    keys = list(on)
    require_columns("duplicate_accuracy", messages, ["outcome", *keys])
    require_columns("duplicate_accuracy", truth_duplicates, [*keys, "is_duplicate"])

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[keys].astype("string")

    called = keyed(messages).assign(
        called=_text(messages["outcome"]).eq("duplicate").fillna(False).to_numpy(bool)
    )
    truth = keyed(truth_duplicates).assign(
        is_copy=truth_duplicates["is_duplicate"].astype("boolean").fillna(False).to_numpy(bool)
    )
    joined = truth.merge(called.drop_duplicates(keys), on=keys, how="left")
    found = joined["called"].notna().to_numpy(bool)
    predicted = joined["called"].astype("boolean").fillna(False).to_numpy(bool)[found]
    actual = joined["is_copy"].to_numpy(bool)[found]
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    tn = int((~predicted & ~actual).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = (
        2 * precision * recall / (precision + recall)
        if tp and not np.isnan(precision + recall)
        else (0.0 if tp + fp + fn else float("nan"))
    )
    items = int(found.sum())
    return DuplicateAccuracy(
        items=items,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        missing=int((~found).sum()),
        precision=precision,
        recall=recall,
        f1=f1,
        accuracy=(tp + tn) / items if items else float("nan"),
    )


# --- contacts --------------------------------------------------------------------------------------


def summarize_contacts(contacts: pd.DataFrame) -> pd.DataFrame:
    """What each session did about its correspondents' contacts: counts and rates.

    Needs ``contacts``: ``session_id, action, detail``. Returns one row per session:
    ``contacts`` (addresses decided), ``matched`` (found in Dataverse), ``created``, ``failed``
    (a create the target refused, e.g. validation), ``skipped`` (not created on purpose: policy,
    not an SMTP address, an assess session), ``would_create`` (assess sessions: skipped addresses
    a real import would create), each action's share (``matched_rate``, ``created_rate``,
    ``failed_rate``, ``skipped_rate``) and ``create_failure_rate`` (failed over creates
    attempted, NaN when none was).
    """
    require_columns("summarize_contacts", contacts, ["session_id", "action", "detail"])
    action = _text(contacts["action"])
    would = _text(contacts["detail"]).str.startswith("assess: would be created").fillna(False)
    frame = pd.DataFrame(
        {
            "session_id": _text(contacts["session_id"]).to_numpy(),
            "action": pd.Categorical(action.to_numpy(), categories=list(CONTACT_ACTIONS)),
            "would_create": would.to_numpy(np.int64),
        }
    )
    counts = pd.crosstab(frame["session_id"], frame["action"], dropna=False).reindex(
        columns=list(CONTACT_ACTIONS), fill_value=0
    )
    counts.columns = counts.columns.astype(str)
    table = counts.astype(np.int64).assign(
        contacts=counts.sum(axis=1).astype(np.int64),
        would_create=frame.groupby("session_id")["would_create"].sum(),
    )
    share = table[list(CONTACT_ACTIONS)].div(table["contacts"].where(table["contacts"] > 0), axis=0)
    attempted = table["created"] + table["failed"]
    result: pd.DataFrame = (
        table.assign(
            **{f"{a}_rate": share[a] for a in CONTACT_ACTIONS},
            create_failure_rate=(table["failed"] / attempted).where(attempted > 0),
        )
        .rename_axis(None, axis=1)
        .reset_index()[
            [
                "session_id",
                "contacts",
                *CONTACT_ACTIONS,
                "would_create",
                *(f"{a}_rate" for a in CONTACT_ACTIONS),
                "create_failure_rate",
            ]
        ]
    )
    return result


def rank_unresolved_addresses(
    sessions: pd.DataFrame,
    messages: pd.DataFrame,
    recipients: pd.DataFrame,
    contacts: pd.DataFrame,
    *,
    outcomes: Sequence[str] = ("imported",),
) -> pd.DataFrame:
    """Correspondents that reached Dataverse without a contact, by message volume.

    A message's parties are its sender and recipients; the import binds a party to a contact
    when the session ``matched`` or ``created`` one for that address, and otherwise sends it
    with ``addressused`` only (no timeline entry on any contact). Those addresses, over the
    messages with an outcome in ``outcomes`` (default: imported), are candidates for creating
    contacts. The mailbox owner (``sessions.mailbox_owner``) is never a candidate.

    Needs ``sessions``: ``session_id, mailbox_owner``; ``messages``: ``message_row_id,
    session_id, outcome, sender_address, sender_name``; ``recipients``: ``message_row_id,
    address, name``; ``contacts``: ``session_id, address, action, detail, at_utc``. Addresses
    are compared lower-case. Returns ``address``, ``name`` (a display name seen), ``message_count``
    (messages with the address as a party), ``as_sender``, ``as_recipient``, ``sessions``,
    ``last_action`` and ``last_detail`` (the latest contact decision on the address: why it was
    not created; NA when none was recorded), most messages first.
    """
    require_columns("rank_unresolved_addresses", sessions, ["session_id", "mailbox_owner"])
    require_columns(
        "rank_unresolved_addresses",
        messages,
        ["message_row_id", "session_id", "outcome", "sender_address", "sender_name"],
    )
    require_columns("rank_unresolved_addresses", recipients, ["message_row_id", "address", "name"])
    require_columns(
        "rank_unresolved_addresses",
        contacts,
        ["session_id", "address", "action", "detail", "at_utc"],
    )
    sent = messages[_text(messages["outcome"]).isin(list(outcomes)).fillna(False).to_numpy(bool)]
    session_of = sent.set_index("message_row_id")["session_id"]
    as_recipient = recipients[recipients["message_row_id"].isin(sent["message_row_id"])]
    parties = pd.concat(
        [
            pd.DataFrame(
                {
                    "message_row_id": sent["message_row_id"].to_numpy(),
                    "session_id": _text(sent["session_id"]).to_numpy(),
                    "address": _text(sent["sender_address"]).to_numpy(),
                    "name": _text(sent["sender_name"]).to_numpy(),
                    "sender": np.ones(len(sent), dtype=np.int64),
                }
            ),
            pd.DataFrame(
                {
                    "message_row_id": as_recipient["message_row_id"].to_numpy(),
                    "session_id": _text(as_recipient["message_row_id"].map(session_of)).to_numpy(),
                    "address": _text(as_recipient["address"]).to_numpy(),
                    "name": _text(as_recipient["name"]).to_numpy(),
                    "sender": np.zeros(len(as_recipient), dtype=np.int64),
                }
            ),
        ],
        ignore_index=True,
    )
    parties = parties.assign(
        address=parties["address"].astype("string").str.strip().str.lower(),
        session_id=parties["session_id"].astype("string"),
    )
    owners = pd.DataFrame(
        {
            "session_id": _text(sessions["session_id"]),
            "owner": _text(sessions["mailbox_owner"]).str.strip().str.lower(),
        }
    )
    decided = pd.DataFrame(
        {
            "session_id": _text(contacts["session_id"]),
            "address": _text(contacts["address"]).str.strip().str.lower(),
            "action": _text(contacts["action"]),
            "detail": _text(contacts["detail"]),
            "at_utc": pd.to_datetime(contacts["at_utc"], utc=True),
        }
    )
    bound = decided[decided["action"].isin(["matched", "created"]).fillna(False).to_numpy(bool)]
    unresolved = (
        parties[parties["address"].fillna("").str.len().gt(0).to_numpy(bool)]
        .merge(owners, on="session_id", how="left")
        # never the mailbox owner
        .pipe(lambda f: f[~f["address"].eq(f["owner"]).fillna(False).to_numpy(bool)])
        # no contact bound to the address in that session
        .merge(
            bound[["session_id", "address"]].drop_duplicates().assign(bound=True),
            on=["session_id", "address"],
            how="left",
        )
        .pipe(lambda f: f[f["bound"].isna().to_numpy(bool)])
    )
    per_message = unresolved.groupby(["address", "message_row_id"]).agg(
        sender=("sender", "max"), session_id=("session_id", "first"), name=("name", "first")
    )
    ranked = (
        per_message.reset_index()
        .groupby("address")
        .agg(
            name=("name", "first"),
            message_count=("message_row_id", "size"),
            as_sender=("sender", "sum"),
            sessions=("session_id", "nunique"),
        )
    )
    ranked = ranked.assign(as_recipient=ranked["message_count"] - ranked["as_sender"])
    latest = (
        decided.sort_values("at_utc", kind="stable")
        .drop_duplicates("address", keep="last")
        .set_index("address")
    )
    result: pd.DataFrame = (
        ranked.assign(
            last_action=ranked.index.to_series().map(latest["action"]).astype("string"),
            last_detail=ranked.index.to_series().map(latest["detail"]).astype("string"),
        )
        .reset_index()
        .sort_values(["message_count", "address"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)[
            [
                "address",
                "name",
                "message_count",
                "as_sender",
                "as_recipient",
                "sessions",
                "last_action",
                "last_detail",
            ]
        ]
    )
    return result
