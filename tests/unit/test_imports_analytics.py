"""Operational import analytics on tiny inline frames whose answers are worked out in comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from pstlib.analytics import estimate as est
from pstlib.analytics import operations as ops
from pstlib.errors import MissingColumnsError, PstlibError

T0 = pd.Timestamp("2025-01-01T00:00:00Z")


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def batches_frame() -> pd.DataFrame:
    """Four $batch attempts of session s1: two executed sizes of 10, a 429, one size 40."""
    return pd.DataFrame(
        {
            "session_id": ["s1"] * 4,
            "started_at_utc": [at(0), at(10), at(130), at(131)],
            "duration_s": [1.0, 0.1, 2.0, 4.0],
            "operations": [10, 10, 10, 40],
            "succeeded": [10, 0, 10, 40],
            "failed": [0, 10, 0, 0],
            "attempt": [1, 1, 2, 1],
            "http_status": pd.array([200, 429, 200, 200], dtype="Int64"),
            "limit_code": pd.Categorical([None, "0x80072322", None, "0x80072321"]),
            "retry_after_s": [np.nan, 3.0, np.nan, np.nan],
        }
    )


def throttled_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": ["s1", "s1"],
            "at_utc": [at(10.2), at(50)],
            "name": pd.Categorical(["throttled", "throttled"]),
            "value": [3.0, 5.0],
            "labels_json": pd.array(
                ['{"limit_code": "0x80072322"}', '{"limit_code": "0x80072326"}'], dtype="string"
            ),
        }
    )


# --- batches ---------------------------------------------------------------------------------------


def test_measure_batches_per_attempt() -> None:
    batches = batches_frame()
    before = batches.copy()
    measured = ops.measure_batches(batches)
    assert_frame_equal(batches, before)  # the input is untouched
    assert measured["size_bin"].astype(str).tolist() == ["10-19", "10-19", "10-19", "20-49"]
    assert measured["executed"].tolist() == [True, False, True, True]
    # 1 s / 10 ops = 100 ms; the 429 ran nothing; 2 s / 10 = 200 ms; 4 s / 40 = 100 ms
    assert measured["ms_per_operation"].tolist()[0] == 100.0
    assert np.isnan(measured["ms_per_operation"].iloc[1])
    assert measured["ms_per_operation"].tolist()[2:] == [200.0, 100.0]
    assert measured["retried"].tolist() == [False, False, True, False]
    # a 429 answer, or an answered batch whose inner operations were throttled (limit code)
    assert measured["throttled"].tolist() == [False, True, False, True]
    assert measured["throttle_wait_s"].tolist() == [0.0, 3.0, 0.0, 0.0]


def test_summarize_batch_sizes_bins_latency_over_executed_attempts() -> None:
    table = ops.summarize_batch_sizes(batches_frame())
    expected = pd.DataFrame(
        {
            "size_bin": pd.Categorical(["10-19", "20-49"]),
            "batches": np.array([3, 1], dtype=np.int64),
            "executed_batches": np.array([2, 1], dtype=np.int64),  # the 429 is not executed
            "operations": np.array([20, 40], dtype=np.int64),
            "mean_operations": [10.0, 40.0],
            "mean_duration_s": [1.5, 4.0],  # (1 + 2) / 2
            "p95_duration_s": [1.95, 4.0],  # 1 + 0.95 * (2 - 1)
            "ms_per_operation": [150.0, 100.0],  # 3000 ms / 20 ops; 4000 / 40
            "retried_batches": np.array([1, 0], dtype=np.int64),
            "retried_share": [1 / 3, 0.0],
            "throttled_batches": np.array([1, 1], dtype=np.int64),
            "throttle_wait_s": [3.0, 0.0],
        }
    )
    assert_frame_equal(table, expected, check_categorical=False)


def test_summarize_batch_sizes_of_no_batches_is_empty() -> None:
    assert ops.summarize_batch_sizes(batches_frame().iloc[:0]).empty


def test_missing_columns_are_named() -> None:
    with pytest.raises(MissingColumnsError, match="retry_after_s"):
        ops.measure_batches(batches_frame().drop(columns=["retry_after_s"]))


# --- throttling ------------------------------------------------------------------------------------


def test_summarize_throttling_by_limit_code() -> None:
    table = ops.summarize_throttling(batches_frame(), throttled_metrics())
    # 0x80072321: one answered batch with throttled inner operations, no event recorded
    # 0x80072322: one 429 answer (Retry-After 3) and its throttled event (3 s)
    # 0x80072326: a 429 to a plain request (a look-up): an event only (5 s)
    expected = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s1"],
            "limit_code": ["0x80072321", "0x80072322", "0x80072326"],
            "limit": ["combined execution time", "number of requests", "concurrent requests"],
            "throttled_requests": np.array([0, 1, 0], dtype=np.int64),
            "throttled_inner": np.array([1, 0, 0], dtype=np.int64),
            "throttle_events": np.array([0, 1, 1], dtype=np.int64),
            "retry_after_total_s": [0.0, 3.0, 5.0],
            "retry_after_mean_s": [np.nan, 3.0, 5.0],
            "batch_retry_after_total_s": [0.0, 3.0, 0.0],
            "first_at_utc": [pd.NaT, at(10.2), at(50)],
            "last_at_utc": [pd.NaT, at(10.2), at(50)],
        }
    )
    assert_frame_equal(table, expected, check_dtype=False)


def test_rate_requests_per_minute_fills_idle_minutes() -> None:
    table = ops.rate_requests(batches_frame())
    # minute 0: two requests (one 429), 10 ops succeeded; minute 1: none; minute 2: two, 50 ops
    assert table["period_utc"].tolist() == [at(0), at(60), at(120)]
    assert table["requests"].tolist() == [2, 0, 2]
    assert table["throttled_requests"].tolist() == [1, 0, 0]
    assert table["operations_per_minute"].tolist() == [10.0, 0.0, 50.0]
    assert table["throttle_wait_s"].tolist() == [3.0, 0.0, 0.0]
    half = ops.rate_requests(batches_frame(), freq="30s")
    assert half["requests_per_minute"].iloc[0] == 4.0  # two requests in half a minute


# --- time and resources ----------------------------------------------------------------------------


def test_attribute_session_time_unions_concurrent_requests_and_waits() -> None:
    sessions = pd.DataFrame(
        {
            "session_id": ["a", "b"],
            "started_at_utc": [at(0), at(0)],
            "ended_at_utc": [at(100), pd.NaT],  # b still running: ends at its last sample
        }
    )
    batches = pd.DataFrame(
        {
            "session_id": ["a"] * 4,
            "started_at_utc": [at(10), at(15), at(40), at(60)],
            "duration_s": [10.0, 10.0, 1.0, 5.0],
            "http_status": pd.array([200, 200, 429, 200], dtype="Int64"),
            "retry_after_s": [np.nan, np.nan, 9.0, np.nan],
        }
    )
    metrics = pd.DataFrame(
        {
            "session_id": ["a", "b"],
            "at_utc": [at(41.05), at(20)],
            "name": ["throttled", "messages_processed"],
            "value": [9.0, 10.0],
        }
    )
    table = ops.attribute_session_time(sessions, batches, metrics)
    # requests in flight: [10, 25] (two overlapping), [40, 41], [60, 65] = 15 + 1 + 5 = 21 s
    # waits: [41, 50] from the 429 answer and [41.05, 50.05] from its event: 9.05 s outside requests
    # local work: 100 - 21 - 9.05 = 69.95 s
    assert table["wall_s"].tolist() == [100.0, 20.0]
    assert table["request_s"].tolist() == [21.0, 0.0]
    assert table["throttle_wait_s"].round(6).tolist() == [9.05, 0.0]
    assert table["local_s"].round(6).tolist() == [69.95, 20.0]
    assert table["request_time_total_s"].tolist() == [26.0, 0.0]
    assert table["mean_requests_in_flight"].iloc[0] == pytest.approx(26 / 21)
    assert table["bottleneck"].tolist() == ["local work", "local work"]


def test_track_resources_is_tidy_with_an_interval_rate() -> None:
    metrics = pd.DataFrame(
        {
            "session_id": ["s"] * 5,
            "at_utc": [at(0), at(0), at(5), at(10), at(10)],
            "name": ["worker_pid", "messages_processed", "messages_processed",
                     "messages_processed", "collector_backlog"],
            "value": [123.0, 0.0, 50.0, 20.0, 7.0],
        }
    )
    tidy = ops.track_resources(metrics)
    expected = pd.DataFrame(
        {
            "session_id": pd.array(["s"] * 7, dtype="string"),
            "at_utc": [at(0), at(0), at(5), at(5), at(10), at(10), at(10)],
            "elapsed_s": [0.0, 0.0, 5.0, 5.0, 10.0, 10.0, 10.0],
            "name": pd.array(
                ["messages_per_s_interval", "messages_processed", "messages_per_s_interval",
                 "messages_processed", "collector_backlog", "messages_per_s_interval",
                 "messages_processed"],
                dtype="string",
            ),
            # 50 messages in 5 s = 10/s; then the counter restarted (a resume): no rate
            "value": [np.nan, 0.0, 10.0, 50.0, 7.0, np.nan, 20.0],
        }
    )
    assert_frame_equal(tidy, expected, check_dtype=False)
    assert "worker_pid" not in set(tidy["name"])


# --- errors ----------------------------------------------------------------------------------------


def test_normalise_error_signature_replaces_variable_parts() -> None:
    texts = pd.Series(
        [
            "HTTP 503 0x80040216: An unexpected error occurred.",
            "contact bob@x.com: id 1f0e4b1c-1111-4222-8333-444455556666 took 1.5s",
            '/tmp/a b/box.mbox item 12: cannot parse "Subject" at line 4',
            "see https://x.org/a?b=1 for 42 ms",
            None,
        ]
    )
    assert ops.normalise_error_signature(texts).tolist() == [
        "HTTP 503 0x80040216: An unexpected error occurred.",  # codes name the cause: kept
        "contact <address>: id <guid> took <n>s",
        "<path> item <n>: cannot parse <value> at line <n>",
        "see <url> for <n> ms",
        pd.NA,
    ]


def test_rank_error_causes_counts_an_item_error_and_its_failed_message_once() -> None:
    errors = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s2"],
            "source_id": pd.array([1, pd.NA, 2], dtype="Int64"),
            "item": pd.array(["7", pd.NA, "3"], dtype="string"),
            "stage": ["send", "send", "read"],
            "code": ["DataverseError", "DataverseError", "unreadable_item"],
            "cause": [
                "HTTP 400 0x80040203: bad value 'x'",
                "HTTP 503 0x80040216: unavailable",
                "unreadable message: offset 99",
            ],
            "at_utc": [at(5), at(6), at(100)],
        }
    )
    messages = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s1", "s1"],
            "source_id": [1, 1, 1, 1],
            "item_id": ["7", "8", "9", "10"],
            "outcome": ["failed", "failed", "failed", "imported"],
            "outcome_detail": [
                "send: HTTP 400 0x80040203: bad value 'y'",  # the message of error row 1
                "send: HTTP 503 0x80040216: unavailable",  # a batch failed as a whole
                "send: HTTP 503 0x80040216: unavailable",
                "created",
            ],
            "processed_at_utc": [at(5), at(6), at(6), at(7)],
        }
    )
    table = ops.rank_error_causes(errors, messages)
    expected = pd.DataFrame(
        {
            "stage": ["send", "read", "send"],
            "signature": [
                "HTTP 503 0x80040216: unavailable",
                "unreadable message: offset <n>",
                "HTTP 400 0x80040203: bad value <value>",
            ],
            # 503: the batch's error row + two failed messages without rows of their own
            # 400: one error row; its failed message is the same event
            "occurrences": [3, 1, 1],
            "error_count": [1, 1, 1],
            "failed_message_count": [2, 0, 1],
            "sessions": [1, 1, 1],
            "code": ["DataverseError", "unreadable_item", "DataverseError"],
            "first_seen_utc": [at(6), at(100), at(5)],
            "last_seen_utc": [at(6), at(100), at(5)],
            "example": [
                "HTTP 503 0x80040216: unavailable",
                "unreadable message: offset 99",
                "HTTP 400 0x80040203: bad value 'x'",
            ],
        }
    )
    assert_frame_equal(table, expected, check_dtype=False)
    assert len(ops.rank_error_causes(errors, messages, top=1)) == 1


# --- duplicates ------------------------------------------------------------------------------------


def duplicate_messages() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s1", "s2", "s2", "s2"],
            "source_id": [1, 1, 1, 2, 2, 3],
            "item_id": ["0", "1", "2", "0", "1", "0"],
            "outcome": ["imported", "imported", "duplicate", "duplicate", "duplicate", "duplicate"],
            "outcome_detail": ["created", "created", "within_session", "earlier_session",
                               "earlier_session", "dataverse"],
            "duplicate_of": [None, None, "within_session:s1/1/0", "earlier_session:s1/1/0",
                             "earlier_session:s1/1/1", "dataverse:abc"],
        }
    )


def test_summarize_duplicates_by_source_and_method() -> None:
    sources = pd.DataFrame({"source_id": [1, 2, 3], "path": ["a.mbox", "a.mbox", "b.mbox"]})
    table = ops.summarize_duplicates(duplicate_messages(), sources)
    expected = pd.DataFrame(
        {
            "session_id": ["s1", "s2", "s2"],
            "source_id": [1, 2, 3],
            "path": pd.array(["a.mbox", "a.mbox", "b.mbox"], dtype="string"),
            "message_count": [3, 2, 1],
            "duplicate_count": [1, 2, 1],
            "within_session": [1, 0, 0],
            "earlier_session": [0, 2, 0],
            "dataverse": [0, 0, 1],
            "other_method": [0, 0, 0],
            "duplicate_share": [1 / 3, 1.0, 1.0],
        }
    )
    assert_frame_equal(table, expected, check_dtype=False)
    # by the session the first copy is in: s1's own and s2's copies of s1, and one of Dataverse
    matched = ops.summarize_duplicates(
        duplicate_messages(), by=["session_id", "matched_session_id"]
    )
    # s1: its within-session copy matched s1, its two originals match nothing (NA);
    # s2: two copies of s1's messages, one of a row in Dataverse (NA: no session)
    assert matched["session_id"].tolist() == ["s1", "s1", "s2", "s2"]
    assert matched["matched_session_id"].fillna("-").tolist() == ["s1", "-", "s1", "-"]
    assert matched["duplicate_count"].tolist() == [1, 0, 2, 1]


def test_duplicate_accuracy_against_known_copies() -> None:
    truth = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s1", "s2", "s2", "s2", "s9"],
            "source_id": [1, 1, 1, 2, 2, 3, 9],
            "item_id": ["0", "1", "2", "0", "1", "0", "0"],
            # s1/1/1 is a copy the import missed; s2/3/0 was called a duplicate but is not one
            "is_duplicate": [False, True, True, True, True, False, True],
        }
    )
    result = ops.duplicate_accuracy(duplicate_messages(), truth)
    # called: s1/1/2, s2/2/0, s2/2/1, s2/3/0 -> TP 3 (three copies), FP 1 (s2/3/0)
    # not called: s1/1/0 (TN), s1/1/1 (FN); s9/9/0 has no message row (missing)
    assert result == ops.DuplicateAccuracy(
        items=6, true_positives=3, false_positives=1, false_negatives=1, true_negatives=1,
        missing=1, precision=0.75, recall=0.75, f1=0.75, accuracy=4 / 6,
    )


# --- contacts --------------------------------------------------------------------------------------


def test_summarize_contacts_counts_and_rates() -> None:
    contacts = pd.DataFrame(
        {
            "session_id": ["s1"] * 5 + ["s2"] * 2,
            "action": pd.Categorical(
                ["matched", "created", "created", "failed", "skipped", "skipped", "skipped"],
                categories=["matched", "created", "failed", "skipped"],
            ),
            "detail": [None, None, None, "HTTP 400 ...", "policy: internal domain x",
                       "assess: would be created if missing (policy: create external)",
                       "assess: would not be created if missing (the mailbox owner)"],
        }
    )
    table = ops.summarize_contacts(contacts)
    expected = pd.DataFrame(
        {
            "session_id": ["s1", "s2"],
            "contacts": [5, 2],
            "matched": [1, 0],
            "created": [2, 0],
            "failed": [1, 0],
            "skipped": [1, 2],
            "would_create": [0, 1],
            "matched_rate": [0.2, 0.0],
            "created_rate": [0.4, 0.0],
            "failed_rate": [0.2, 0.0],
            "skipped_rate": [0.2, 1.0],
            "create_failure_rate": [1 / 3, np.nan],  # 1 failed of 3 creates; none tried in s2
        }
    )
    assert_frame_equal(table, expected, check_dtype=False)


def test_rank_unresolved_addresses_by_message_volume() -> None:
    sessions = pd.DataFrame({"session_id": ["s1"], "mailbox_owner": ["Me@Contoso.com"]})
    messages = pd.DataFrame(
        {
            "message_row_id": [1, 2, 3, 4],
            "session_id": ["s1"] * 4,
            "outcome": ["imported", "imported", "imported", "failed"],
            "sender_address": ["ann@fabrikam.com", "me@contoso.com", "bob@fabrikam.com",
                               "zed@fabrikam.com"],
            "sender_name": ["Ann", "Me", "Bob", "Zed"],
        }
    )
    recipients = pd.DataFrame(
        {
            "message_row_id": [1, 1, 2, 2, 3, 4],
            "address": ["me@contoso.com", "Cat@contoso.com", "ANN@fabrikam.com",
                        "cat@contoso.com", "me@contoso.com", "me@contoso.com"],
            "name": ["Me", "Cat", None, "Cat", "Me", "Me"],
        }
    )
    contacts = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s1"],
            "address": ["ann@fabrikam.com", "bob@fabrikam.com", "cat@contoso.com"],
            "action": ["skipped", "created", "skipped"],
            "detail": ["policy: domain fabrikam.com denied", None, "policy: internal domain"],
            "at_utc": [at(1), at(1), at(1)],
        }
    )
    table = ops.rank_unresolved_addresses(sessions, messages, recipients, contacts)
    # ann: sender of 1, recipient of 2; cat: recipient of 1 and 2; bob has a contact;
    # me is the owner; zed's only message failed (never sent)
    expected = pd.DataFrame(
        {
            "address": ["ann@fabrikam.com", "cat@contoso.com"],
            "name": ["Ann", "Cat"],
            "message_count": [2, 2],
            "as_sender": [1, 0],
            "as_recipient": [1, 2],
            "sessions": [1, 1],
            "last_action": ["skipped", "skipped"],
            "last_detail": ["policy: domain fabrikam.com denied", "policy: internal domain"],
        }
    )
    assert_frame_equal(table, expected, check_dtype=False)


# --- duration estimates ----------------------------------------------------------------------------


def test_estimate_duration_from_a_constant_rate() -> None:
    # three sessions at exactly 0.1 s per message: the estimate is exact and the interval closed
    past = pd.DataFrame(
        {"duration_s": [10.0, 20.0, 40.0], "message_count": [100, 200, 400],
         "size_bytes": [1e6, 2e6, 4e6]}
    )
    estimate = est.estimate_duration(past, 1000, 10_000_000)
    assert estimate.seconds == pytest.approx(100.0)
    assert estimate.low_s == pytest.approx(100.0) and estimate.high_s == pytest.approx(100.0)
    assert estimate.basis.startswith("mean log rate")


def test_estimate_duration_log_linear_fit_recovers_the_law() -> None:
    # duration = 0.5 * messages^0.8 * MB^0.3 exactly: the fit on 6 sessions predicts it exactly
    messages = np.array([100.0, 400, 900, 2000, 5000, 300])
    mb = np.array([5.0, 10, 80, 40, 300, 30])
    past = pd.DataFrame(
        {"duration_s": 0.5 * messages**0.8 * mb**0.3, "message_count": messages,
         "size_bytes": mb * 1e6}
    )
    estimate = est.estimate_duration(past, 3000, 100_000_000)
    assert estimate.seconds == pytest.approx(0.5 * 3000**0.8 * 100**0.3)
    assert estimate.basis.startswith("log-linear fit of duration on messages and bytes")


def test_estimate_duration_interval_widens_with_noise_and_needs_a_session() -> None:
    past = pd.DataFrame(
        {"duration_s": [9.0, 22.0, 40.0, 0.0], "message_count": [100, 200, 400, 50],
         "size_bytes": [1e6, 2e6, 4e6, 1e5]}
    )  # the last session has no duration: left out
    estimate = est.estimate_duration(past, 1000, 10_000_000, level=0.9)
    assert estimate.low_s < estimate.seconds < estimate.high_s
    assert "3 session(s)" in estimate.basis
    single = est.estimate_duration(past.head(1), 200, 0)
    assert single.seconds == pytest.approx(18.0) and np.isnan(single.low_s)
    with pytest.raises(PstlibError):
        est.estimate_duration(past.iloc[3:], 10, 10)


def test_estimate_error_leave_one_out_matches_refitting() -> None:
    rng = np.random.default_rng(0)
    messages = rng.integers(100, 5000, 8).astype(float)
    past = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(8)],
            "duration_s": 0.02 * messages * np.exp(rng.normal(0, 0.1, 8)),
            "message_count": messages,
            "size_bytes": messages * rng.uniform(2e4, 6e4, 8),
        }
    )
    error = est.estimate_error(past)
    # the closed form agrees with estimating each session from the seven others
    refits = [
        est.estimate_duration(past.drop(index=i), int(past.loc[i, "message_count"]),
                              int(past.loc[i, "size_bytes"]))
        for i in range(8)
    ]
    predictions = error.predictions
    assert predictions["predicted_s"].tolist() == pytest.approx([r.seconds for r in refits])
    assert predictions["low_s"].tolist() == pytest.approx([r.low_s for r in refits])
    ape = (predictions["predicted_s"] - past["duration_s"]).abs() / past["duration_s"]
    assert error.median_absolute_percentage_error == pytest.approx(float(ape.median()))
    assert error.coverage == pytest.approx(float(predictions["covered"].astype(float).mean()))
    assert error.sessions == 8 and error.basis.startswith("leave-one-out")
