"""Obey Dataverse's service protection limits, and adapt batch size and parallelism to them.

What Microsoft documents ("Service protection API limits", learn.microsoft.com, Dataverse developer
guide) and what this module does about it:

* A throttled Web API request answers ``429 Too Many Requests`` with a ``Retry-After`` header
  holding a number of seconds; no new request from the user is processed before it has passed.
  The wait is therefore *global*: :meth:`Throttle.record_throttled` pauses every worker of this
  client until ``Retry-After`` has passed, exactly (no jitter, no guess), and
  :meth:`Throttle.before_request` holds each request until then.
* The error code says which limit was hit: ``0x80072322`` number of requests (6000 per 5 minutes),
  ``0x80072321`` combined execution time (20 minutes per 5 minutes), ``0x80072326`` concurrent
  requests (52). :class:`AdaptiveLimits` reacts to each differently (multiplicative decrease):
  execution time → smaller batches, concurrency → fewer workers, requests → a slower rate.
* "Let the server tell you how much it can handle": start low and increase gradually until limits
  are hit. After ``grow_after`` clean batches the limits grow additively, preferring parallelism
  over batch size, because the page advises "Avoid large batches ... start with a small batch size
  of 10 and increase concurrency".
* Transient failures that are not service protection (5xx, a dropped or broken connection:
  ``httpx.TransportError`` and its subclass ``RemoteProtocolError``) are retried after an
  exponential backoff with jitter (:meth:`RetryPolicy.backoff_s`).

Time is read through a :class:`Clock`, so tests drive the whole policy with a fake clock and no
sleeping.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

REQUESTS_LIMIT = "0x80072322"  # Number of requests exceeded the limit of 6000 over 300 seconds
EXECUTION_TIME_LIMIT = "0x80072321"  # Combined execution time exceeded 1,200,000 ms over 300 s
CONCURRENCY_LIMIT = "0x80072326"  # Number of concurrent requests exceeded the limit of 52
SERVICE_PROTECTION_CODES = frozenset({REQUESTS_LIMIT, EXECUTION_TIME_LIMIT, CONCURRENCY_LIMIT})

DEFAULT_RETRY_AFTER_S = 5.0  # a 429 without a usable Retry-After (the docs promise one)


class Clock(Protocol):
    """Where the throttle reads time and sleeps (a fake one in tests)."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now_utc(self) -> datetime: ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.sleep`, the UTC wall clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def now_utc(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ThrottleEvent:
    """One 429 answer: which limit (hex code; ``None`` if the body named none), the wait asked."""

    limit_code: str | None
    retry_after_s: float
    at_utc: datetime


def parse_retry_after(value: str | None, *, now_utc: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (what Dataverse sends) or an
    HTTP-date. ``None`` when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now_utc or datetime.now(UTC))).total_seconds())


def parse_odata_error(body: bytes | str | None) -> tuple[str, str]:
    """``(code, message)`` of an OData error body ``{"error": {"code": ..., "message": ...}}``
    ("Compose HTTP requests and handle errors"); ``("", text)`` when the body is not one."""
    if not body:
        return "", ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        return "", text[:500]
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or ""), str(err.get("message") or "")
    return "", text[:500]


def limit_code_of(body: bytes | str | None) -> str | None:
    """The service protection limit code of a 429 body, normalised to lower-case ``0x...``."""
    code, _ = parse_odata_error(body)
    code = code.strip().lower()
    if not code:
        return None
    if not code.startswith("0x"):  # the SDK's decimal form, e.g. -2147015902
        try:
            code = f"0x{int(code) & 0xFFFFFFFF:08x}"
        except ValueError:
            return code
    return code


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry what is not a 429: 5xx answers and broken connections."""

    max_attempts: int = 6
    base_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_throttle_retries: int = 50  # 429s are retried this many times per request before giving up

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter" after failed attempt ``attempt`` (1-based):
        a uniform draw in ``[d/2, d]`` where ``d = min(max, base * 2**(attempt-1))``."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(slots=True)
class AdaptiveLimits:
    """Batch size, parallelism and request spacing, adjusted AIMD-style from what the server says.

    Decrease (on a 429, by limit code): execution time halves ``batch_size``; concurrency halves
    ``concurrency``; number of requests doubles ``min_interval_s`` (at least ``interval_step_s``).
    An unknown code halves both batch size and concurrency. Increase (after ``grow_after``
    consecutive clean batches): first shrink the interval by ``interval_step_s``, then add one
    worker up to ``max_concurrency``, then add ``batch_step`` operations up to ``max_batch_size``.
    """

    batch_size: int = 10
    concurrency: int = 4
    min_interval_s: float = 0.0
    min_batch_size: int = 1
    max_batch_size: int = 100
    max_concurrency: int = 16
    batch_step: int = 5
    interval_step_s: float = 0.05
    grow_after: int = 5
    clean_streak: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.max_batch_size = min(self.max_batch_size, 1000)  # the documented $batch maximum
        self.batch_size = max(self.min_batch_size, min(self.batch_size, self.max_batch_size))
        self.concurrency = max(1, min(self.concurrency, self.max_concurrency))

    def on_throttled(self, limit_code: str | None) -> None:
        self.clean_streak = 0
        if limit_code == EXECUTION_TIME_LIMIT:
            self.batch_size = max(self.min_batch_size, self.batch_size // 2)
        elif limit_code == CONCURRENCY_LIMIT:
            self.concurrency = max(1, self.concurrency // 2)
        elif limit_code == REQUESTS_LIMIT:
            self.min_interval_s = max(self.interval_step_s, self.min_interval_s * 2)
        else:
            self.batch_size = max(self.min_batch_size, self.batch_size // 2)
            self.concurrency = max(1, self.concurrency // 2)

    def on_clean(self) -> None:
        self.clean_streak += 1
        if self.clean_streak < self.grow_after:
            return
        self.clean_streak = 0
        if self.min_interval_s > 0:
            self.min_interval_s = max(0.0, round(self.min_interval_s - self.interval_step_s, 6))
        elif self.concurrency < self.max_concurrency:
            self.concurrency += 1
        elif self.batch_size < self.max_batch_size:
            self.batch_size = min(self.max_batch_size, self.batch_size + self.batch_step)


class Throttle:
    """The shared gate every request of one client passes: global pause after a 429, request
    spacing, adaptive limits, and the record of every 429 (``on_throttle`` callback).

    Thread-safe: workers call :meth:`before_request` right before sending.
    """

    def __init__(
        self,
        limits: AdaptiveLimits | None = None,
        *,
        clock: Clock | None = None,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_throttle: Callable[[ThrottleEvent], None] | None = None,
    ) -> None:
        self.limits = limits or AdaptiveLimits()
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        self.on_throttle = on_throttle
        self.events: list[ThrottleEvent] = []
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._next_slot = 0.0

    @property
    def batch_size(self) -> int:
        with self._lock:
            return self.limits.batch_size

    @property
    def concurrency(self) -> int:
        with self._lock:
            return self.limits.concurrency

    def before_request(self) -> float:
        """Wait until a request may go (pause over, spacing kept); return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock.monotonic()
                ready_at = max(self._paused_until, self._next_slot)
                if now >= ready_at:
                    self._next_slot = now + self.limits.min_interval_s
                    return waited
                delay = ready_at - now
            self.clock.sleep(delay)
            waited += delay

    def record_throttled(
        self, limit_code: str | None, retry_after_s: float | None
    ) -> ThrottleEvent:
        """A 429 came: pause everyone for exactly ``Retry-After``, shrink the limits, record it."""
        wait = DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s
        event = ThrottleEvent(limit_code, wait, self.clock.now_utc())
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock.monotonic() + wait)
            self.limits.on_throttled(limit_code)
            self.events.append(event)
        if self.on_throttle is not None:
            self.on_throttle(event)
        return event

    def record_clean(self) -> None:
        """A batch went through without any throttling: let the limits grow slowly."""
        with self._lock:
            self.limits.on_clean()

    def backoff(self, attempt: int) -> float:
        """Sleep the jittered exponential backoff after failed attempt ``attempt``; return it."""
        with self._lock:
            delay = self.policy.backoff_s(attempt, self.rng)
        self.clock.sleep(delay)
        return delay


def is_retryable_status(status: int) -> bool:
    """Statuses worth sending again: 429 (after Retry-After) and 5xx (after a backoff)."""
    return status == 429 or 500 <= status <= 599
