"""The execution pacer on hand-made timelines: a deterministic clock, and the stand-in's own
service protection accounting (``pstlib.standin.limits``) as the server that judges it.

Dataverse's execution-time limit is 1200 s of execution per sliding 300 s per user: a rate of 4
seconds of execution per second. The pacer spends that rate (a little below it) from what each
request took, so that no window ever fills; a 429 is a correction, not how it finds the limit.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from pstlib.dataverse.throttle import (
    CONCURRENCY_LIMIT,
    EXECUTION_TIME_LIMIT,
    REQUESTS_LIMIT,
    AdaptiveLimits,
    ExecutionPacer,
    ServiceLimits,
    Throttle,
    Ticket,
    parse_retry_after,
)
from pstlib.standin.limits import Limits, ServiceProtection, Throttled

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    """Time moves only when the timeline (or a sleep) moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    def now_utc(self) -> datetime:
        return T0 + timedelta(seconds=self.now)


@dataclass
class Timeline:
    """What the server saw: executions as ``(end time, seconds)`` and the times of its 429s."""

    spent: list[tuple[float, float]] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)

    def execution_between(self, start: float, end: float) -> float:
        return sum(seconds for ended, seconds in self.spent if start <= ended < end)

    def refusals_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.refused if start <= at < end)


def run_timeline(
    throttle: Throttle,
    server: ServiceProtection,
    clock: FakeClock,
    *,
    until: float,
    workers: int = 8,
    operations: int = 10,
    operation_s: float = 0.5,
) -> Timeline:
    """``workers`` clients sending requests of ``operations`` back to back, each executing
    ``operations * operation_s`` seconds, through ``throttle`` to ``server`` until ``until``.

    A request starts when the throttle lets it (``try_admit``); the server admits it or answers
    429 (whose Retry-After header, as the stand-in writes it, goes back to the throttle); it ends
    after its execution, which the server counts and the throttle settles.
    """
    timeline = Timeline()
    in_flight: list[tuple[float, int, Ticket]] = []
    execution = operations * operation_s
    number = 0
    while clock.now < until:
        while len(in_flight) < workers:
            ticket = throttle.try_admit(operations)
            if ticket is None:
                break
            try:
                server.admit("app")
            except Throttled as refused:
                throttle.settle(replace(ticket, operations=0), 0.0)
                throttle.record_throttled(refused.code, parse_retry_after(refused.retry_after))
                timeline.refused.append(clock.now)
                break
            number += 1
            heapq.heappush(in_flight, (clock.now + execution, number, ticket))
        next_end = in_flight[0][0] if in_flight else math.inf
        ready = clock.now + throttle.ready_in() if len(in_flight) < workers else math.inf
        clock.now = min(next_end, ready, until)
        while in_flight and in_flight[0][0] <= clock.now:
            ended, _, ticket = heapq.heappop(in_flight)
            server.release("app", execution)
            throttle.settle(ticket, execution)
            throttle.record_clean()
            timeline.spent.append((ended, execution))
    return timeline


def _paced(clock: FakeClock, **pacer: float) -> Throttle:
    limits = AdaptiveLimits(concurrency=8, max_concurrency=8)
    return Throttle(limits, clock=clock, pacer=ExecutionPacer(ServiceLimits(), **pacer))


def test_pacing_uses_the_execution_budget_without_a_single_429() -> None:
    # The documented limits; 8 workers could keep 8 s of execution per second going, twice the
    # 4 s per second the limit allows: unpaced they would fill the window and meet 429s.
    clock = FakeClock()
    throttle = _paced(clock)
    server = ServiceProtection(Limits(), clock.monotonic)
    timeline = run_timeline(throttle, server, clock, until=1500.0)
    assert timeline.refused == []
    # After the first window, every 300 s holds 97 % of the 1200 s allowed (the pacer's margin)
    # give or take one 5-second request at each edge.
    for start in (300.0, 600.0, 900.0, 1200.0):
        used = timeline.execution_between(start, start + 300.0)
        assert 0.97 * 1200 - 2 * 5.0 <= used <= 1200.0


def test_unpaced_the_same_workers_meet_the_limit() -> None:
    # The same timeline without the pacer: what the pacer is for.
    clock = FakeClock()
    throttle = Throttle(AdaptiveLimits(concurrency=8, max_concurrency=8), clock=clock)
    server = ServiceProtection(Limits(), clock.monotonic)
    timeline = run_timeline(throttle, server, clock, until=900.0)
    assert timeline.refusals_between(0.0, 900.0) > 0


def test_a_tenant_with_less_budget_is_learned_from_its_429s() -> None:
    # This tenant allows half the documented execution time (600 s per 300 s): the pacer starts
    # at the documented rate, meets 429s, slows down at each (once per Retry-After), and settles
    # under the tenant's rate: the 429s become fewer while the budget stays mostly used.
    clock = FakeClock()
    throttle = _paced(clock)
    server = ServiceProtection(Limits(max_execution_s=600.0), clock.monotonic)
    timeline = run_timeline(throttle, server, clock, until=3000.0)
    early, late = timeline.refusals_between(0, 1500.0), timeline.refusals_between(1500.0, 3000.0)
    assert early > 0 and late < early
    assert throttle.pacer is not None and throttle.pacer.rate < 2.0  # the tenant's 600 / 300
    for start in (1500.0, 1800.0, 2100.0, 2400.0, 2700.0):
        assert timeline.execution_between(start, start + 300.0) >= 0.8 * 600


def test_charges_settle_and_waits_on_a_hand_made_timeline() -> None:
    pacer = ExecutionPacer(ServiceLimits(), utilisation=1.0, burst_s=0.25)  # 4 s per second
    assert pacer.wait_s(0.0) == 0.0
    assert pacer.charge(0.0, 10) == 0.0  # nothing known yet: charged when it ends
    pacer.settle(1.0, 0.0, 2.0, 10)  # it took 2 s: 0.2 s per operation from now on
    assert pacer.per_operation_s == {"batch": pytest.approx(0.2)}
    # the bucket (full at 0.25 s) paid 2 s: 1.75 s in debt, repaid at 4 s per second
    assert pacer.wait_s(1.0) == pytest.approx(1.75 / 4)
    assert pacer.wait_s(1.4375) == 0.0
    assert pacer.charge(1.4375, 5) == pytest.approx(1.0)  # 5 operations x 0.2 s, up front
    assert pacer.wait_s(1.4375) == pytest.approx(0.25)
    pacer.settle(1.6875, 1.0, 0.5, 5)  # it took less than charged: the rest comes back
    assert pacer.wait_s(1.6875) == 0.0 and pacer.level == pytest.approx(0.25)  # never above
    assert pacer.per_operation_s["batch"] == pytest.approx(0.18)  # 0.2 + 0.2 x (0.1 - 0.2)
    # A request that took longer than expected (4 s for 10 operations of 0.18 s) counts whole.
    assert pacer.charge(1.6875, 10) == pytest.approx(1.8)
    pacer.settle(1.6875, 1.8, 4.0, 10)
    assert pacer.level == pytest.approx(0.25 - 4.0)
    assert pacer.per_operation_s["batch"] == pytest.approx(0.18 + 0.2 * (0.4 - 0.18))
    # Single requests (lookups) execute differently: their usual is learnt apart.
    assert pacer.charge(1.6875, 1, "single") == 0.0
    pacer.settle(1.6875, 0.0, 0.03, 1, "single")
    assert pacer.per_operation_s["single"] == pytest.approx(0.03)


def test_an_execution_429_slows_the_pacer_once_per_pause_and_it_creeps_back() -> None:
    pacer = ExecutionPacer(
        ServiceLimits(), utilisation=1.0, decrease=0.9, recover=0.01, probe=0.001, near=0.05
    )
    pacer.on_throttled(10.0, 2.0)
    assert pacer.rate == pytest.approx(3.6) and pacer.limited_at == 4.0
    pacer.on_throttled(11.0, 2.0)  # in flight when the window filled: the same cause
    assert pacer.rate == pytest.approx(3.6) and pacer.level <= 0.0
    pacer.on_throttled(12.5, 2.0)  # after the pause: a new one, met at 3.6 s per second
    assert pacer.rate == pytest.approx(3.24) and pacer.limited_at == pytest.approx(3.6)
    for _ in range(5):
        pacer.on_clean()  # quickly back (1 % of the 4 s ceiling each) past 95 % of 3.6 ...
    assert pacer.rate == pytest.approx(3.44)  # 3.24 + 5 x 0.04, the last step past 3.42
    pacer.on_clean()
    pacer.on_clean()
    assert pacer.rate == pytest.approx(3.448)  # ... then slowly (0.1 %, 0.004 s) on
    for _ in range(1000):
        pacer.on_clean()
    assert pacer.rate == pytest.approx(4.0)  # never above the documented ratio


def test_throttle_holds_batches_lets_lookups_go_first_and_reacts_by_limit() -> None:
    clock = FakeClock()
    limits = AdaptiveLimits(batch_size=20, concurrency=2, max_concurrency=4, grow_after=1)
    pacer = ExecutionPacer(ServiceLimits(), utilisation=1.0, burst_s=0.0)
    throttle = Throttle(limits, clock=clock, pacer=pacer)
    first = throttle.try_admit(10)
    assert first is not None
    throttle.settle(first, 4.0)  # 4 s: one second of the budget in debt
    assert throttle.try_admit(10) is None and throttle.ready_in() == pytest.approx(1.0)
    # held by the budget: the next clean batch does not grow parallelism or batch size
    throttle.record_clean()
    assert (limits.concurrency, limits.batch_size) == (2, 20)
    # a lookup goes first: it waits for the debt only (paced as well) and takes 0.4 s
    lookup = throttle.admit(1, first=True)
    assert lookup.waited_s == pytest.approx(1.0) and lookup.kind == "single"
    throttle.settle(lookup, 0.4)
    # a batch then waits for the lookup's execution
    batch = throttle.admit(10)
    assert batch.waited_s == pytest.approx(0.4 / 4)
    throttle.record_clean()  # held too: still no growth
    assert limits.concurrency == 2
    clock.now += 10.0
    throttle.settle(batch, batch.charged_s)
    assert throttle.try_admit(10) is not None  # the budget is there: not held
    throttle.record_clean()
    assert limits.concurrency == 3  # clean and not held by the budget: the limits grow again
    # only execution-time (or unnamed) 429s slow the pacer
    throttle.record_throttled(REQUESTS_LIMIT, 1.0)
    throttle.record_throttled(CONCURRENCY_LIMIT, 1.0)
    assert pacer.rate == pytest.approx(4.0)
    throttle.record_throttled(EXECUTION_TIME_LIMIT, 1.0)
    assert pacer.rate < 4.0


def test_while_a_lookup_waits_no_batch_is_let_through() -> None:
    # The lookup waits in one thread, a worker tries in another: here, whenever the lookup
    # sleeps, the worker has its turn.
    clock = FakeClock()
    pacer = ExecutionPacer(ServiceLimits(), utilisation=1.0, burst_s=0.0)
    throttle = Throttle(AdaptiveLimits(), clock=clock, pacer=pacer)
    ticket = throttle.try_admit(10)
    assert ticket is not None
    throttle.settle(ticket, 2.0)  # half a second of debt
    tries: list[Ticket | None] = []
    sleep = clock.sleep

    def worker_turn(seconds: float) -> None:
        tries.append(throttle.try_admit(10))
        sleep(seconds)

    clock.sleep = worker_turn  # type: ignore[method-assign]
    lookup = throttle.admit(1, first=True)
    assert lookup.waited_s == pytest.approx(0.5)
    assert tries == [None]  # the batch did not take the budget the lookup waited for
    throttle.settle(lookup, 0.2)
    assert throttle.try_admit(10) is None  # now it waits for the lookup's 0.2 s ...
    clock.now += 0.2 / 4
    assert throttle.try_admit(10) is not None  # ... and goes


def test_time_scaled_limits_keep_the_ratio() -> None:
    # A rehearsal at time_scale 0.02: a 6-second window, 24 s of execution, operations of
    # 0.01 s. The pacer, which knows only the ratio, needs no scale to stay within it.
    clock = FakeClock()
    throttle = _paced(clock)
    server = ServiceProtection(Limits(time_scale=0.02), clock.monotonic)
    timeline = run_timeline(throttle, server, clock, until=30.0, operations=20, operation_s=0.01)
    assert timeline.refused == []
    for start in (6.0, 12.0, 18.0, 24.0):
        assert 0.97 * 24 - 2 * 0.2 <= timeline.execution_between(start, start + 6.0) <= 24.0
