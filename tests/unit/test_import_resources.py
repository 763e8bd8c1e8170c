"""Resource use, the bottleneck, the counted session document and the collector's wire format, on
tiny inline data whose answers are worked out in comments."""

from __future__ import annotations

import gc
import json
import marshal
from collections import deque
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from pstlib.analytics import operations as ops
from pstlib.analytics.imports import summarize_session
from pstlib.errors import MissingColumnsError, SourceError
from pstlib.importer.collector import (
    Collector,
    ResourceSampler,
    _error_of,
    _error_parts,
    pack_entries,
    unpack_chunk,
    unpack_entries,
)
from pstlib.models import Address, Attachment, FolderRole, Message, Recipient, RecipientKind
from pstlib.store.schema import Outcome
from pstlib.store.writer import message_values, shipped_time

T0 = pd.Timestamp("2025-01-01T00:00:00Z")


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def metrics_frame(rows: list[tuple[str, float, str, float, dict[str, str] | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": [r[0] for r in rows],
            "at_utc": [at(r[1]) for r in rows],
            "name": pd.Categorical([r[2] for r in rows]),
            "value": [r[3] for r in rows],
            "labels_json": pd.array(
                [json.dumps(r[4], sort_keys=True) if r[4] else None for r in rows],
                dtype="string",
            ),
        }
    )


# --- resource use ----------------------------------------------------------------------------------


def test_resource_use_bins_by_second_side_by_side() -> None:
    mb = 2.0**20
    metrics = metrics_frame(
        [
            ("s", 0.1, "rss_bytes", 100 * mb, None),
            ("s", 0.2, "cpu_s", 1.0, None),
            ("s", 0.7, "collector_rss_bytes", 40 * mb, None),
            ("s", 1.1, "rss_bytes", 120 * mb, None),
            ("s", 1.2, "cpu_s", 1.9, None),
            ("s", 1.2, "cpu_percent", 90.0, None),
            ("s", 1.8, "rss_bytes", 130 * mb, None),  # the same second: the last one wins
            ("s", 1.9, "messages_processed", 10.0, None),  # not a resource
            ("s", 1.9, "stage_s", 3.0, {"stage": "read"}),  # not a resource
        ]
    )
    use = ops.resource_use(metrics)
    expected = pd.DataFrame(
        {
            "session_id": pd.array(["s", "s"], dtype="string"),
            "at_utc": [at(0), at(1)],
            "elapsed_s": [0.0, 1.0],
            "rss_mb": [100.0, 130.0],
            "cpu_s": [1.0, 1.9],
            "cpu_percent": [np.nan, 90.0],
            "collector_rss_mb": [40.0, np.nan],
            "collector_cpu_s": [np.nan, np.nan],
            "collector_cpu_percent": [np.nan, np.nan],
        }
    )
    assert_frame_equal(use, expected, check_dtype=False)


def test_resource_use_of_a_session_without_samples_is_empty() -> None:
    use = ops.resource_use(metrics_frame([("old", 0.0, "messages_processed", 5.0, None)]))
    assert use.empty
    assert list(use.columns) == [
        "session_id",
        "at_utc",
        "elapsed_s",
        "rss_mb",
        "cpu_s",
        "cpu_percent",
        "collector_rss_mb",
        "collector_cpu_s",
        "collector_cpu_percent",
    ]
    with pytest.raises(MissingColumnsError, match="value"):
        ops.resource_use(pd.DataFrame({"session_id": [], "at_utc": [], "name": []}))


# --- the bottleneck --------------------------------------------------------------------------------


def test_find_bottleneck_from_stage_timings_summed_over_runs() -> None:
    sessions = pd.DataFrame(
        {
            "session_id": ["new", "old"],
            "started_at_utc": [at(0), at(0)],
            "ended_at_utc": [at(100), at(100)],
        }
    )
    # the old session (no stage timings) has one request in flight for 30 s of its 100
    batches = pd.DataFrame(
        {
            "session_id": ["old"],
            "started_at_utc": [at(10)],
            "duration_s": [30.0],
            "http_status": pd.array([200], dtype="Int64"),
            "retry_after_s": [np.nan],
        }
    )

    def stage(
        t: float, run: str, name: str, seconds: float
    ) -> tuple[str, float, str, float, dict[str, str]]:
        return ("new", t, "stage_s", seconds, {"run": run, "stage": name})

    metrics = metrics_frame(
        [
            # run 1 (killed): read 10 then 20 (cumulative), network 5, run 30 s long
            stage(1, "r1", "read", 10.0),
            stage(1, "r1", "network", 2.0),
            stage(2, "r1", "read", 20.0),
            stage(2, "r1", "network", 5.0),
            stage(2, "r1", "run", 30.0),
            # run 2 (the resume) counts from zero: read 15, dedupe 4, network 1, store 2, run 25
            stage(50, "r2", "read", 15.0),
            stage(50, "r2", "dedupe", 4.0),
            stage(50, "r2", "network", 1.0),
            stage(50, "r2", "store", 2.0),
            stage(50, "r2", "run", 25.0),
            ("old", 20, "messages_processed", 10.0, None),
        ]
    )
    table = ops.find_bottleneck(sessions, batches, metrics).set_index("session_id")
    new = table.loc["new"]
    # read 20 + 15 = 35, dedupe 4, network 5 + 1 = 6, store 2; runs 30 + 25 = 55, so 8 other
    assert new["method"] == "stage timings"
    assert (new["read_s"], new["dedupe_s"], new["contacts_s"]) == (35.0, 4.0, 0.0)
    assert (new["network_s"], new["throttle_waits_s"], new["store_s"]) == (6.0, 0.0, 2.0)
    assert new["other_s"] == 8.0
    assert new["total_s"] == 55.0
    assert new["bottleneck"] == "read"
    assert new["bottleneck_share"] == pytest.approx(35 / 55)
    old = table.loc["old"]
    # no stage timings: requests 30 s of 100, the other 70 s local work of no known stage
    assert old["method"] == "request attribution"
    assert np.isnan(old["read_s"]) and np.isnan(old["store_s"])
    assert (old["network_s"], old["other_s"], old["total_s"]) == (30.0, 70.0, 100.0)
    assert old["bottleneck"] == "other"


def test_find_bottleneck_counts_throttle_waits_out_of_the_network_time() -> None:
    sessions = pd.DataFrame(
        {"session_id": ["s"], "started_at_utc": [at(0)], "ended_at_utc": [at(60)]}
    )
    # one 429 answered at 11 s with Retry-After 20: [11, 31] waiting, no request in flight
    batches = pd.DataFrame(
        {
            "session_id": ["s", "s"],
            "started_at_utc": [at(10), at(31)],
            "duration_s": [1.0, 2.0],
            "http_status": pd.array([429, 200], dtype="Int64"),
            "retry_after_s": [20.0, np.nan],
        }
    )
    metrics = metrics_frame(
        [
            ("s", 59, "stage_s", 5.0, {"run": "1", "stage": "read"}),
            ("s", 59, "stage_s", 50.0, {"run": "1", "stage": "network"}),
            ("s", 59, "stage_s", 58.0, {"run": "1", "stage": "run"}),
        ]
    )
    row = ops.find_bottleneck(sessions, batches, metrics).iloc[0]
    # the import thread waited 50 s on the network, 20 s of it in the Retry-After pause
    assert (row["network_s"], row["throttle_waits_s"]) == (30.0, 20.0)
    assert (row["read_s"], row["other_s"], row["total_s"]) == (5.0, 3.0, 58.0)
    assert row["bottleneck"] == "network"


def test_track_resources_leaves_out_identities_and_labelled_samples() -> None:
    metrics = metrics_frame(
        [
            ("s", 0, "collector_pid", 4242.0, {"host": "h"}),
            ("s", 0, "stage_s", 1.0, {"stage": "read"}),
            ("s", 0, "rss_bytes", 1.0, None),
        ]
    )
    assert ops.track_resources(metrics)["name"].tolist() == ["rss_bytes"]


# --- the session document from counted messages ----------------------------------------------------


def test_summarize_session_from_counts_equals_from_rows() -> None:
    session = {
        "session_id": "s",
        "status": "completed",
        "target": "assess",
        "started_at_utc": at(0),
        "ended_at_utc": at(10),
    }
    sources = pd.DataFrame({"status": ["read"], "items_found": [4]})
    errors = pd.DataFrame({"code": ["truncated"]})
    rows = pd.DataFrame(
        {
            "outcome": ["read", "read", "duplicate", "failed"],
            "message_class": ["IPM.Note"] * 3 + [None],
            "item_kind": ["mail"] * 4,
            "folder_role": ["inbox", "inbox", "sent", "inbox"],
            "sent_at_utc": [at(5), pd.NaT, at(1), pd.NaT],
            "received_at_utc": [at(6), at(9), pd.NaT, pd.NaT],
            "size_bytes": [10, 20, 30, 40],
        }
    )
    # the same four messages counted per outcome/class/kind/folder; dates: sent, else received
    counted = pd.DataFrame(
        {
            "outcome": ["read", "duplicate", "failed"],
            "message_class": ["IPM.Note", "IPM.Note", None],
            "item_kind": ["mail"] * 3,
            "folder_role": ["inbox", "sent", "inbox"],
            "message_count": [2, 1, 1],
            "size_bytes": [30, 30, 40],
            "earliest_at_utc": ["2025-01-01 00:00:05.000000", "2025-01-01 00:00:01.000000", None],
            "latest_at_utc": ["2025-01-01 00:00:09.000000", "2025-01-01 00:00:01.000000", None],
        }
    )
    from_rows = summarize_session(session, sources, rows, errors).to_dict()
    from_counts = summarize_session(session, sources, counted, errors).to_dict()
    assert from_counts == from_rows
    assert from_rows["outcomes"] == {"duplicate": 1, "failed": 1, "read": 2}
    assert from_rows["date_range"] == {
        "earliest": "2025-01-01T00:00:01Z",
        "latest": "2025-01-01T00:00:09Z",
    }


# --- the collector's wire format -------------------------------------------------------------------


def sample_messages() -> list[Message]:
    sent = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return [
        Message(
            source_path="a.pst",
            item_id="1",
            folder_path="Top/Inbox",
            folder_role=FolderRole.INBOX,
            internet_message_id="<1@x>",
            references=("<0@x>",),
            subject="Hello",
            sender=Address("a@x.com", "A", "A <a@x.com>"),
            recipients=(
                Recipient(RecipientKind.TO, Address("b@y.com")),
                Recipient(RecipientKind.BCC, Address("c@y.com", "C")),
            ),
            sent_at_utc=sent,
            size_bytes=2048,
            attachments=(Attachment("f.pdf", 1000, "application/pdf", b"%PDF" * 10),),
            body="body",
            headers=(("list-id", "<news.x>"),),
        ),
        Message(source_path="a.pst", item_id="2", message_class="IPM.Contact"),  # no sender
    ]


def queued(msg: Message, outcome: Outcome, detail: str | None = None, **kw: str | None) -> object:
    """The entry Collector.message (the import thread's inlined packer) puts on its deque."""
    collector = Collector.__new__(Collector)  # just enough of one to call the hook
    collector.enabled, collector._error, collector._capacity = True, None, 1_000
    collector._entries = deque()
    collector.message(7, msg, outcome, detail, **kw)
    return collector._entries.popleft()


def hooked(msg: Message, outcome: Outcome, detail: str | None = None, **kw: str | None) -> tuple:
    """The row Collector.message queued, as the writer reads it."""
    entry = queued(msg, outcome, detail, **kw)
    return marshal.loads(entry) if isinstance(entry, bytes) else entry  # type: ignore[return-value]


def test_the_hook_packs_what_message_values_packs() -> None:
    first, second = sample_messages()
    _ = first.dedupe_key  # the importer's dedupe computed it: it travels, the body hash does not
    for msg, outcome, detail, kw in (
        (first, Outcome.READ, None, {"direction": "incoming"}),
        (second, Outcome.SKIPPED, "not mail", {"activity_id": "act", "dataverse_id": "dv"}),
    ):
        assert hooked(msg, outcome, detail, **kw) == message_values(7, msg, outcome, detail, **kw)
    values = message_values(7, first, Outcome.READ)
    assert values[14] == first.dedupe_key and values[15] is None and values[17] == "body"
    # attachment data stays behind: only the sizes cross
    assert values[13] == (1000,)
    assert values[11] == ("a@x.com", "A") and values[12] == (
        ("to", "b@y.com", ""),
        ("bcc", "c@y.com", "C"),
    )


def test_pack_and_unpack_keep_rows_and_the_order_of_operations() -> None:
    first, second = sample_messages()
    entries = [
        ("metric", "rss_bytes", 1.0, None),
        message_values(7, first, Outcome.READ, None, "incoming"),
        ("update", [{"source_id": 7, "item_id": "1", "outcome": "imported"}]),
        message_values(7, second, Outcome.SKIPPED, "not mail", None, None, "act", "dv"),
        ("finish_source", 7, "read", 2, None),
    ]
    chunk = pack_entries(entries)
    assert chunk[:1] == b"M"  # plain values: marshal
    assert unpack_entries(chunk) == entries
    rows, ops = unpack_chunk(chunk)
    assert rows == [entries[1], entries[3]]
    # each operation knows how many rows come before it
    assert [(at, op[0]) for at, op in ops] == [(0, "metric"), (1, "update"), (2, "finish_source")]


def test_the_hook_queues_rows_the_garbage_collector_does_not_track() -> None:
    # A row waits on the deque up to poll_s (a quarter second: thousands of rows) before it is
    # shipped. Queued as tuples, those survivors were promoted through the collector's
    # generations and set off full collections of the whole heap (60-90 ms of a 20k-message
    # import); queued as marshalled bytes they are invisible to it.
    first, second = sample_messages()
    for msg in (first, second):
        entry = queued(msg, Outcome.READ, None, direction="incoming")
        assert isinstance(entry, bytes) and not gc.is_tracked(entry)
        assert marshal.loads(entry) == message_values(7, msg, Outcome.READ, None, "incoming")


def test_rows_marshalled_one_by_one_make_the_same_chunk_as_rows_given_whole() -> None:
    # the hook marshals each row alone; the chunk joins them into the one list the writer loads
    first, second = sample_messages()
    rows = [
        message_values(7, first, Outcome.READ, None, "incoming"),
        message_values(7, second, Outcome.SKIPPED, "not mail", None, None, "act", "dv"),
    ]
    op = ("metric", "rss_bytes", 1.0, None)
    as_values = pack_entries([rows[0], op, rows[1]])
    as_bytes = pack_entries([marshal.dumps(rows[0], 2), op, marshal.dumps(rows[1], 2)])
    mixed = pack_entries([marshal.dumps(rows[0], 2), op, rows[1]])
    assert as_values == as_bytes == mixed
    assert unpack_entries(as_bytes) == [rows[0], op, rows[1]]
    assert unpack_chunk(pack_entries([])) == ([], [])


def test_errors_cross_the_pipe_as_the_errors_table_keeps_them() -> None:
    source = SourceError("a.pst", "truncated block", code="truncated", item="42")
    again = _error_of(_error_parts(source))
    assert isinstance(again, SourceError) and (again.code, again.item) == ("truncated", "42")
    other = _error_of(_error_parts(KeyError("x")))
    assert (type(other).__name__, str(other)) == ("KeyError", "'x'")


def test_resource_sampler_reports_cpu_and_memory() -> None:
    sampler = ResourceSampler("collector_")
    first = dict(sampler.sample())
    sum(i * i for i in range(200_000))  # some CPU between the samples
    second = dict(sampler.sample())
    assert "collector_cpu_percent" not in first  # no interval yet
    assert second["collector_cpu_s"] >= first["collector_cpu_s"] > 0
    assert second["collector_cpu_percent"] >= 0
    assert second.get("collector_rss_bytes", 1e9) > 1e6  # Linux: a Python process is > 1 MB


def test_dates_cross_exactly_and_odd_values_fall_back_to_pickle() -> None:
    from datetime import timedelta, timezone
    from pathlib import PurePosixPath

    plus_two = timezone(timedelta(hours=2))
    latest = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    # a UTC time crosses as its 10-byte pickle state, any other as its ISO text
    assert shipped_time(latest) == latest.__reduce__()[1][0]  # type: ignore[index]
    assert shipped_time(datetime(2024, 1, 1, 1, tzinfo=plus_two)) == "2024-01-01T01:00:00+02:00"
    assert shipped_time(datetime(1901, 2, 3, 4, 5, 6, 7)) == "1901-02-03T04:05:06.000007"
    assert shipped_time(None) is None
    # a source that puts something marshal cannot write into a record: pickled instead
    strange = Message(source_path="a", item_id="3", references=(PurePosixPath("x"),))  # type: ignore[arg-type]
    row = message_values(1, strange, Outcome.READ)
    chunk = pack_entries([row])
    assert chunk[:1] == b"P" and unpack_entries(chunk) == [row]
    # the hook queues it as a tuple, and a chunk mixing it with marshalled rows is pickled whole
    assert queued(strange, Outcome.READ) == message_values(7, strange, Outcome.READ)
    plain = message_values(1, Message(source_path="a", item_id="4"), Outcome.READ)
    chunk = pack_entries([marshal.dumps(plain, 2), row])
    assert chunk[:1] == b"P" and unpack_entries(chunk) == [plain, row]
