"""The throttle policy, driven by a fake clock: which waits and which sizes follow which answers."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from pstlib.dataverse.throttle import (
    CONCURRENCY_LIMIT,
    EXECUTION_TIME_LIMIT,
    REQUESTS_LIMIT,
    AdaptiveLimits,
    RetryPolicy,
    Throttle,
    ThrottleEvent,
    limit_code_of,
    parse_retry_after,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    """Time moves only when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds

    def now_utc(self) -> datetime:
        return T0 + timedelta(seconds=self.now)


def _error(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "limit"}}).encode()


def test_a_429_pauses_every_request_for_exactly_retry_after() -> None:
    clock = FakeClock()
    events: list[ThrottleEvent] = []
    throttle = Throttle(AdaptiveLimits(), clock=clock, on_throttle=events.append)
    assert throttle.before_request() == 0.0
    throttle.record_throttled(REQUESTS_LIMIT, parse_retry_after("7"))
    assert throttle.before_request() == 7.0  # exactly Retry-After, no jitter
    assert clock.sleeps == [7.0]
    assert events == [ThrottleEvent(REQUESTS_LIMIT, 7.0, T0)]


def test_a_sequence_of_answers_gives_these_waits_and_sizes() -> None:
    # (status, Retry-After, body) as the server answered them, one request after the other.
    answers = [
        (200, None, b""),
        (429, "2", _error(EXECUTION_TIME_LIMIT)),  # execution time → half the batch size
        (429, "3", _error(CONCURRENCY_LIMIT)),  # concurrency → half the workers
        (429, "1", _error(REQUESTS_LIMIT)),  # number of requests → space requests out
        (200, None, b""),
    ]
    clock = FakeClock()
    limits = AdaptiveLimits(batch_size=40, concurrency=8, max_concurrency=8, interval_step_s=0.25)
    throttle = Throttle(limits, clock=clock)
    sizes = []
    for status, retry_after, body in answers:
        throttle.before_request()
        if status == 429:
            throttle.record_throttled(limit_code_of(body), parse_retry_after(retry_after))
        sizes.append((throttle.batch_size, throttle.concurrency, limits.min_interval_s))
    assert clock.sleeps == [2.0, 3.0, 1.0]  # each request waited out the previous Retry-After
    assert sizes == [(40, 8, 0.0), (20, 8, 0.0), (20, 4, 0.0), (20, 4, 0.25), (20, 4, 0.25)]
    # The interval now spaces requests: the next one waits 0.25 s after the last.
    throttle.before_request()
    assert clock.sleeps[-1] == 0.25
    assert [e.limit_code for e in throttle.events] == [
        EXECUTION_TIME_LIMIT,
        CONCURRENCY_LIMIT,
        REQUESTS_LIMIT,
    ]


def test_limits_grow_slowly_when_clean_preferring_parallelism() -> None:
    limits = AdaptiveLimits(
        batch_size=10,
        concurrency=2,
        max_concurrency=3,
        max_batch_size=20,
        batch_step=5,
        grow_after=2,
        min_interval_s=0.1,
        interval_step_s=0.1,
    )
    history = []
    for _ in range(10):
        limits.on_clean()
        history.append((limits.min_interval_s, limits.concurrency, limits.batch_size))
    # Every 2 clean batches: first the spacing goes, then a worker is added, then the batch grows.
    assert history[1] == (0.0, 2, 10)
    assert history[3] == (0.0, 3, 10)
    assert history[5] == (0.0, 3, 15)
    assert history[7] == (0.0, 3, 20)
    assert history[9] == (0.0, 3, 20)  # capped
    limits.on_throttled(None)  # an unnamed limit halves both
    assert (limits.concurrency, limits.batch_size) == (1, 10)


def test_limits_never_fall_below_one_or_exceed_the_batch_maximum() -> None:
    limits = AdaptiveLimits(batch_size=2000, concurrency=1, max_batch_size=5000)
    assert limits.batch_size == 1000  # the documented $batch maximum
    for _ in range(20):
        limits.on_throttled(EXECUTION_TIME_LIMIT)
        limits.on_throttled(CONCURRENCY_LIMIT)
    assert (limits.batch_size, limits.concurrency) == (1, 1)


def test_backoff_is_exponential_with_jitter() -> None:
    clock = FakeClock()
    throttle = Throttle(
        clock=clock, policy=RetryPolicy(base_backoff_s=1.0, max_backoff_s=8.0), rng=random.Random(7)
    )
    delays = [throttle.backoff(attempt) for attempt in range(1, 7)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling  # equal jitter: [d/2, d]
    assert clock.sleeps == [round(d, 6) for d in delays]
    assert len(set(delays[3:])) == 3  # jittered, not identical


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("soon", None),
        ("Mon, 01 Jan 2024 00:00:30 GMT", 30.0),
    ],
)
def test_retry_after_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now_utc=T0) == seconds


def test_limit_codes_read_from_error_bodies() -> None:
    assert limit_code_of(_error("0x80072322")) == REQUESTS_LIMIT
    assert limit_code_of(_error("0x80072321".upper().replace("X", "x"))) == EXECUTION_TIME_LIMIT
    assert limit_code_of(_error("-2147015898")) == CONCURRENCY_LIMIT  # the SDK's decimal form
    assert limit_code_of(b"not json") is None
    assert limit_code_of(None) is None
