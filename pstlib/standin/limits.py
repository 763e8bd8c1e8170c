"""Service protection API limits, per user, as "Service protection API limits" documents them.

Three facets, evaluated per user (here: the client id of the bearer token):

- Number of requests, ``0x80072322``: "Number of requests exceeded the limit of 6000 over time
  window of 300 seconds."
- Execution time, ``0x80072321``: "Combined execution time of incoming requests exceeded limit of
  1,200,000  milliseconds over time window of 300 seconds. Decrease number of concurrent requests
  or reduce the duration of requests and try again later."
- Concurrent requests, ``0x80072326``: "Number of concurrent requests exceeded the limit of 52."

The first two are evaluated over a 300-second sliding window; "you can expect to exceed the
number of requests and execution time limits ... before the service protection API limits will
take effect",
so a request is refused once the window already holds the limit. Exceeding the concurrent requests
"will immediately return an error". A 429 carries ``Retry-After`` in seconds. ``time_scale`` shrinks
every duration (window, execution time, the waits asked) so a test can rehearse the limits in seconds.

Retry-After under a time scale: Dataverse asks for whole seconds (HTTP's delay-seconds is an
integer), at least 1. Rounding the *scaled* wait up to a whole real second would be no rehearsal
of that: at ``time_scale=0.02`` one real second is 50 Dataverse seconds, a sixth of the window,
where Dataverse would have asked for one or two. So the wait is rounded up to whole *Dataverse*
seconds and then scaled like every other duration; at ``time_scale=1`` that is exactly the
integer Dataverse sends, and under a time scale it is a decimal ("0.06" for 3 Dataverse seconds
at 0.02). The decimal is outside HTTP's grammar; it exists only in a time-scaled rehearsal,
which no client could follow with whole seconds anyway (pstlib reads it as a number of seconds).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

REQUESTS_CODE = "0x80072322"
EXECUTION_CODE = "0x80072321"
CONCURRENT_CODE = "0x80072326"


@dataclass(frozen=True)
class Limits:
    """Service protection limits in Dataverse time; ``time_scale`` turns them into real time."""

    max_requests: int = 6000
    window_s: float = 300.0
    max_execution_s: float = 1200.0
    max_concurrent: int = 52
    time_scale: float = 1.0


class Throttled(Exception):
    """A request refused by a service protection limit: 429 with ``Retry-After``."""

    def __init__(
        self, code: str, message: str, retry_after_s: float, time_scale: float = 1.0
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # real seconds
        self.time_scale = time_scale

    @property
    def retry_after(self) -> str:
        """The ``Retry-After`` header value: whole Dataverse seconds, at least 1, scaled by
        ``time_scale`` (a decimal when time-scaled; see the module's docstring)."""
        whole = max(1, math.ceil(self.retry_after_s / self.time_scale - 1e-9))
        if self.time_scale == 1.0:
            return str(whole)
        return f"{whole * self.time_scale:.6f}".rstrip("0").rstrip(".")


def requests_message(limits: Limits) -> str:
    return (
        f"Number of requests exceeded the limit of {limits.max_requests} "
        f"over time window of {limits.window_s:g} seconds."
    )


def execution_message(limits: Limits) -> str:
    milliseconds = f"{round(limits.max_execution_s * 1000):,}"
    return (
        f"Combined execution time of incoming requests exceeded limit of {milliseconds}  "
        f"milliseconds over time window of {limits.window_s:g} seconds. Decrease number of "
        "concurrent requests or reduce the duration of requests and try again later."
    )


def concurrent_message(limits: Limits) -> str:
    return f"Number of concurrent requests exceeded the limit of {limits.max_concurrent}."


@dataclass
class _User:
    requests: deque[float] = field(default_factory=deque)  # arrival times
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (end time, seconds)
    execution_total: float = 0.0
    in_flight: int = 0


class ServiceProtection:
    """Counts each user's requests, execution time and concurrency; refuses what exceeds them."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}
        self._window = limits.window_s * limits.time_scale
        self._max_execution = limits.max_execution_s * limits.time_scale

    def admit(self, user: str) -> None:
        """Count one incoming request, or raise :class:`Throttled` (the request is not counted)."""
        scale = self.limits.time_scale
        with self._lock:
            now = self._clock()
            state = self._users.setdefault(user, _User())
            self._expire(state, now)
            if len(state.requests) >= self.limits.max_requests:
                index = len(state.requests) - self.limits.max_requests
                wait = state.requests[index] + self._window - now
                raise Throttled(REQUESTS_CODE, requests_message(self.limits), wait, scale)
            if state.execution_total >= self._max_execution:
                wait = self._execution_wait(state, now)
                raise Throttled(EXECUTION_CODE, execution_message(self.limits), wait, scale)
            if state.in_flight >= self.limits.max_concurrent:  # a Dataverse second
                raise Throttled(CONCURRENT_CODE, concurrent_message(self.limits), scale, scale)
            state.requests.append(now)
            state.in_flight += 1

    def release(self, user: str, execution_s: float) -> None:
        """A request admitted for ``user`` finished after ``execution_s`` real seconds."""
        with self._lock:
            state = self._users.setdefault(user, _User())
            state.in_flight = max(0, state.in_flight - 1)
            state.executions.append((self._clock(), execution_s))
            state.execution_total += execution_s

    def execution_total(self, user: str) -> float:
        """Real seconds of execution charged to ``user`` since the server started."""
        with self._lock:
            return self._users.setdefault(user, _User()).execution_total

    def remaining_requests(self, user: str) -> int:
        """``x-ms-ratelimit-burst-remaining-xrm-requests`` for ``user``."""
        with self._lock:
            state = self._users.setdefault(user, _User())
            self._expire(state, self._clock())
            return max(0, self.limits.max_requests - len(state.requests))

    def _expire(self, state: _User, now: float) -> None:
        horizon = now - self._window
        while state.requests and state.requests[0] <= horizon:
            state.requests.popleft()
        while state.executions and state.executions[0][0] <= horizon:
            state.execution_total -= state.executions.popleft()[1]
        if not state.executions:
            state.execution_total = 0.0

    def _execution_wait(self, state: _User, now: float) -> float:
        total = state.execution_total
        for ended, seconds in state.executions:
            total -= seconds
            if total < self._max_execution:
                return ended + self._window - now
        return self._window
