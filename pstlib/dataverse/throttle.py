"""Obey Dataverse's service protection limits, and adapt batch size and parallelism to them.

What Microsoft documents ("Service protection API limits", learn.microsoft.com, Dataverse developer
guide) and what this module does about it:

* A throttled Web API request answers ``429 Too Many Requests`` with a ``Retry-After`` header
  holding a number of seconds; no new request from the user is processed before it has passed.
  The wait is therefore *global*: :meth:`Throttle.record_throttled` pauses every worker of this
  client until ``Retry-After`` has passed, exactly (no jitter, no guess), and
  :meth:`Throttle.admit` holds each request until then.
* The error code says which limit was hit: ``0x80072322`` number of requests (6000 per 5 minutes),
  ``0x80072321`` combined execution time (20 minutes per 5 minutes), ``0x80072326`` concurrent
  requests (52). :class:`AdaptiveLimits` reacts to each differently (multiplicative decrease):
  execution time → smaller batches (and a slower pacer, below), concurrency → fewer workers,
  requests → a slower rate.
* "Let the server tell you how much it can handle": start low and increase gradually until limits
  are hit. After ``grow_after`` clean batches the limits grow additively, preferring parallelism
  over batch size, because the page advises "Avoid large batches ... start with a small batch size
  of 10 and increase concurrency". They do not grow while the execution budget is what holds
  requests back: more parallelism or larger batches would not spend it faster.
* Pace by the budget rather than probe for 429s (:class:`ExecutionPacer`). The execution-time
  limit, 1200 s per 300-second window, is a *rate*: 4 seconds of server execution per second,
  whatever the window's length, i.e. on average four requests in flight. The client measures
  what each of its requests took (Dataverse counts a request's server time; the client's own
  measure of it is a little longer, so it errs on the safe side) and spends that rate through a
  token bucket, a little below the documented ratio, so that the sliding window never fills and
  no 429 comes. A 429 is then a correction, not the signal: the pacer slows down and creeps back.
  A probe that meets the limit costs a ``Retry-After`` pause of the whole client, longer than
  anything pacing saves; and the limit counts a request's execution when it ends while it
  refuses new ones at their arrival, so a client that fills the window overdraws it by everything
  in flight, and waits for that too. The page says not to steer by the
  ``x-ms-ratelimit-*-remaining-xrm-requests`` headers ("intended for debugging"), so the pacer
  uses only the client's own measurements and the 429s. Single requests (lookups) go before the
  batches, but are paced as well (:meth:`Throttle.admit`).
* Transient failures that are not service protection (5xx, a dropped or broken connection:
  ``httpx.TransportError`` and its subclass ``RemoteProtocolError``) are retried after an
  exponential backoff with jitter (:meth:`RetryPolicy.backoff_s`).

Time is read through a :class:`Clock`, so tests drive the whole policy with a fake clock and no
sleeping.
"""

from __future__ import annotations

import email.utils
import json
import math
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
_YIELD_S = 0.002  # how long others wait for a request that goes first (it is already admitted)


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


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """The service protection limits of one user (per web server), as documented: the defaults
    are Microsoft's ("These numbers represent default values"); a tenant with others sets them.
    """

    max_requests: int = 6000
    window_s: float = 300.0
    max_execution_s: float = 1200.0
    max_concurrent: int = 52

    @property
    def execution_per_s(self) -> float:
        """Seconds of execution the limit allows per second: 4 by default, and the same for any
        window length with the same ratio (which is why a time-scaled rehearsal keeps it)."""
        return self.max_execution_s / self.window_s


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request let through by :meth:`Throttle.admit`: the wait before it and what the pacer
    charged for it up front (its expected execution), settled by :meth:`Throttle.settle`."""

    waited_s: float
    charged_s: float
    operations: int
    kind: str = "batch"  # what executes alike: "batch", or "single" (admitted first)


class ExecutionPacer:
    """A token bucket of server execution time: spend at most ``rate`` seconds per second.

    Why a rate and not the window: the combined execution time limit is ``max_execution_s`` per
    sliding ``window_s``; a client that spends less than ``max_execution_s / window_s`` per
    second, with bursts no larger than the margin, never fills any window of that length, and it
    needs to know neither the window nor where it starts. The bucket holds at most ``burst_s``;
    a request may start when the bucket is not in debt and is charged its expected execution
    (``operations`` times the running mean per operation); when it ends, the difference between
    what it took and that charge is settled. Starting only out of debt keeps the overdraft to one
    request, and charging up front keeps concurrent starts from all passing at once.

    ``rate`` starts at ``utilisation`` of the documented ratio (the ceiling). An execution-time
    429 (a tenant with other limits, another application spending the same user's budget, or
    the client's own misjudgement) multiplies it by ``decrease``, once per ``Retry-After`` (every
    request in flight when the window filled is refused too, for the same cause), and remembers
    the rate that met the limit. Each clean request then adds ``recover`` of the ceiling back up
    to ``1 - near`` of that rate (what was fine before), and only ``probe`` above it, up to the
    ceiling: the rate settles just under a lower limit instead of hitting it again and again.
    Not thread-safe: :class:`Throttle` holds its lock around it.

    Why 97 %: the server counts a request's execution when it ends, so a window can hold
    requests that began before it, and the bucket's burst comes on top; the 3 % absorb that.
    Against the time-scaled stand-in (``benchmarks/import.py``), 98.5 % and 100 % met 429s whose
    cost (a pause, then a slower rate) was larger than the margin they saved.
    """

    def __init__(
        self,
        limits: ServiceLimits | None = None,
        *,
        utilisation: float = 0.97,
        burst_s: float = 0.25,
        decrease: float = 0.9,
        recover: float = 0.005,
        probe: float = 0.0002,
        near: float = 0.03,
        min_fraction: float = 0.05,
        smoothing: float = 0.2,
    ) -> None:
        self.limits = limits or ServiceLimits()
        self.ceiling = self.limits.execution_per_s * utilisation
        self.rate = self.ceiling
        self.burst_s = burst_s
        self.level = burst_s
        self.decrease = decrease
        self.recover = recover
        self.probe = probe
        self.near = near
        self.limited_at = math.inf  # the rate that last met the limit
        self.min_rate = self.ceiling * min_fraction
        self.smoothing = smoothing
        self.per_operation_s: dict[str, float] = {}  # by kind: the running estimate
        self._at: float | None = None
        self._cut_until = float("-inf")

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self.level = min(self.burst_s, self.level + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now

    def wait_s(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0: a request may start now)."""
        self._refill(now)
        return 0.0 if self.level >= -1e-9 else -self.level / self.rate  # (rounding: no debt)

    def charge(self, now: float, operations: int, kind: str = "batch") -> float:
        """Charge a starting request its expected execution; return the charge."""
        self._refill(now)
        expected = operations * self.per_operation_s.get(kind, 0.0)
        self.level -= expected
        return expected

    def settle(
        self,
        now: float,
        charged_s: float,
        execution_s: float,
        operations: int,
        kind: str = "batch",
    ) -> None:
        """A request charged ``charged_s`` took ``execution_s``: pay (or get back) the difference,
        and learn the execution per operation of its ``kind`` (a running mean).

        All of what the client measured counts, though it is more than the server's execution
        (by the time the answer takes to reach the waiting thread, a fifth more when the
        client's own process is busy): the server's execution grows at the same moments
        (same machine, or a loaded service), and counting less than measured met 429s.
        """
        self._refill(now)
        self.level = min(self.burst_s, self.level - (execution_s - charged_s))
        if operations > 0:
            sample = execution_s / operations
            usual = self.per_operation_s.get(kind)
            self.per_operation_s[kind] = (
                sample if usual is None else usual + self.smoothing * (sample - usual)
            )

    def on_throttled(self, now: float, retry_after_s: float) -> None:
        """An execution-time 429: spend less (once per pause), and nothing saved up."""
        self.level = min(self.level, 0.0)
        if now < self._cut_until:
            return
        self._cut_until = now + retry_after_s
        self.limited_at = self.rate
        self.rate = max(self.min_rate, self.rate * self.decrease)

    def on_clean(self) -> None:
        """A request went through: back to just under the rate that met the limit, then creep."""
        below = self.rate < self.limited_at * (1 - self.near)
        step = self.recover if below else self.probe
        self.rate = min(self.ceiling, self.rate + step * self.ceiling)


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
    spacing, the execution pacer (if any), adaptive limits, and the record of every 429
    (``on_throttle`` callback).

    Thread-safe: workers call :meth:`admit` right before sending and :meth:`settle` with what
    the request took.
    """

    def __init__(
        self,
        limits: AdaptiveLimits | None = None,
        *,
        clock: Clock | None = None,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        on_throttle: Callable[[ThrottleEvent], None] | None = None,
        pacer: ExecutionPacer | None = None,
    ) -> None:
        self.limits = limits or AdaptiveLimits()
        self.pacer = pacer
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        self.on_throttle = on_throttle
        self.events: list[ThrottleEvent] = []
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._next_slot = 0.0
        self._held_by_budget = False  # the pacer held a request back since the last clean one
        self._first_waiting = 0  # requests admitted first (admit(first=True)) waiting

    @property
    def batch_size(self) -> int:
        with self._lock:
            return self.limits.batch_size

    @property
    def concurrency(self) -> int:
        with self._lock:
            return self.limits.concurrency

    def before_request(self) -> float:
        """Wait until a request may go (pause over, spacing kept, budget there); return the
        seconds waited. A request admitted this way is charged nothing up front."""
        return self.admit(0).waited_s

    def admit(self, operations: int = 1, *, first: bool = False) -> Ticket:
        """Wait until a request of ``operations`` may go, charge the pacer its expected
        execution, and return the :class:`Ticket` to :meth:`settle` once it is answered.

        ``first``: go before any request that is not (the batches): it waits only for the
        budget there is, and while it waits no other request is let through. For the single
        requests that feed the batches (lookups, one at a time from the importer's thread):
        behind the batches they would wait for every batch the workers can start, and starve
        them of work; let through regardless of the budget, a series of them would overdraw it.
        """
        waited = 0.0
        if first:
            with self._lock:
                self._first_waiting += 1
        try:
            while True:
                ticket, delay = self._try_admit(operations, waited, first)
                if ticket is not None:
                    return ticket
                self.clock.sleep(delay)
                waited += delay
        finally:
            if first:
                with self._lock:
                    self._first_waiting -= 1

    def try_admit(self, operations: int = 1) -> Ticket | None:
        """:meth:`admit` without waiting: the ticket if the request may go now, else ``None``.

        Lets a worker hold on to no work while it waits (the work stays queued for whoever
        may go first)."""
        return self._try_admit(operations, 0.0, False)[0]

    def _try_admit(
        self, operations: int, waited: float, first: bool
    ) -> tuple[Ticket | None, float]:
        with self._lock:
            now = self.clock.monotonic()
            delay = self._delay(now, first)
            if delay > 0:
                return None, delay
            self._next_slot = now + self.limits.min_interval_s
            charged = 0.0
            kind = "single" if first else "batch"
            if self.pacer is not None and operations > 0:
                charged = self.pacer.charge(now, operations, kind)
            return Ticket(waited, charged, operations, kind), 0.0

    def ready_in(self) -> float:
        """Seconds until a request could go (0: now); for workers deciding whether to take work."""
        with self._lock:
            return max(0.0, self._delay(self.clock.monotonic(), False))

    def _delay(self, now: float, first: bool) -> float:
        delay = max(self._paused_until, self._next_slot) - now
        if self.pacer is not None:
            budget = self.pacer.wait_s(now)
            if not first and self._first_waiting:
                budget = max(budget, _YIELD_S)  # a request that goes first is waiting
            if budget > 0 and delay <= 0:
                self._held_by_budget = True  # the budget, and nothing else, holds a request
            delay = max(delay, budget)
        return delay

    def settle(self, ticket: Ticket, execution_s: float) -> None:
        """The request of ``ticket`` was answered after ``execution_s`` (as the client measured
        it: an upper bound of the server's execution time)."""
        if self.pacer is None:
            return
        with self._lock:
            self.pacer.settle(
                self.clock.monotonic(),
                ticket.charged_s,
                execution_s,
                ticket.operations,
                ticket.kind,
            )

    def record_throttled(
        self, limit_code: str | None, retry_after_s: float | None
    ) -> ThrottleEvent:
        """A 429 came: pause everyone for exactly ``Retry-After``, shrink the limits, record it."""
        wait = DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s
        event = ThrottleEvent(limit_code, wait, self.clock.now_utc())
        with self._lock:
            now = self.clock.monotonic()
            self._paused_until = max(self._paused_until, now + wait)
            self.limits.on_throttled(limit_code)
            if self.pacer is not None and limit_code in (EXECUTION_TIME_LIMIT, None):
                self.pacer.on_throttled(now, wait)
            self.events.append(event)
        if self.on_throttle is not None:
            self.on_throttle(event)
        return event

    def record_clean(self) -> None:
        """A batch went through without any throttling: let the limits grow slowly.

        Unless the pacer held requests back since the last clean batch: then the budget is what
        limits the client, not its parallelism or its batch size, and growing those would only
        make requests longer and their execution lumpier (what lands in the window at once).
        """
        with self._lock:
            if not self._held_by_budget:
                self.limits.on_clean()
            self._held_by_budget = False
            if self.pacer is not None:
                self.pacer.on_clean()

    def backoff(self, attempt: int) -> float:
        """Sleep the jittered exponential backoff after failed attempt ``attempt``; return it."""
        with self._lock:
            delay = self.policy.backoff_s(attempt, self.rng)
        self.clock.sleep(delay)
        return delay


def is_retryable_status(status: int) -> bool:
    """Statuses worth sending again: 429 (after Retry-After) and 5xx (after a backoff)."""
    return status == 429 or 500 <= status <= 599
