"""Many threads and many tasks hammering one breaker: exact counts and invariants.

Two kinds of run each for threads and tasks. With a window too big to fill (so it
never trips and every outcome takes the locked path) the totals must come out
exact: no lost update. With a small window, failure bursts and a clock that ticks
on every read, the breaker trips, probes and closes over and over while most
successes take the lock-free path; then every call must be accounted for (it ran
or was rejected, and each rejection emitted one event), the transitions must form
one valid chain, no more trials than permitted may ever run, and none may leak.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import CircuitOpen
from buttress.events import CallRejected, Event
from buttress.policies.circuit import CircuitBreaker, CircuitState, CircuitStateChanged

from tests.helpers import tick

pytestmark = pytest.mark.stress

THREADS = 16
CALLS = 10_000
TASKS = 1_000
TASK_CALLS = 20

ALLOWED = {
    (CircuitState.CLOSED, CircuitState.OPEN),
    (CircuitState.OPEN, CircuitState.HALF_OPEN),
    (CircuitState.HALF_OPEN, CircuitState.OPEN),
    (CircuitState.HALF_OPEN, CircuitState.CLOSED),
}


class Down(ConnectionError):
    pass


class Interrupt(BaseException):
    """Stands for an interrupt or cancellation delivered into a running call."""


class ThreadClock(FakeClock):
    """Each thread has its own time, which only its own calls move."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def monotonic(self) -> float:
        return getattr(self._local, "now", 0.0)

    def spend(self, seconds: float) -> None:
        self._local.now = self.monotonic() + seconds


class TickingClock(FakeClock):
    """Moves one microsecond on every read, from any thread; never sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self._ticks = itertools.count()

    def monotonic(self) -> float:
        return next(self._ticks) * 1e-6


def outcome_of(j: int) -> tuple[str, bool]:
    """(kind, slow) of call number ``j`` of every worker in the exact-count runs."""
    kinds = ("ok", "ok", "down", "ignored", "other")
    return kinds[j % 5], j % 7 == 0


def expected_totals(workers: int, calls: int) -> tuple[int, int, int]:
    counted = failures = slow = 0
    for j in range(calls):
        kind, is_slow = outcome_of(j)
        if kind == "ignored":
            continue
        counted += 1
        failures += kind == "down"
        slow += is_slow
    return counted * workers, failures * workers, slow * workers


def raise_for(kind: str) -> None:
    if kind == "down":
        raise Down("down")
    if kind == "ignored":
        raise ValueError("ignored")
    if kind == "other":
        raise KeyError("counts as a success")


def check_transitions(events: list[Event]) -> list[CircuitStateChanged]:
    changes = [e for e in events if isinstance(e, CircuitStateChanged)]
    state = CircuitState.CLOSED
    for change in changes:
        assert change.old is state
        assert (change.old, change.new) in ALLOWED
        state = change.new
    return changes


def test_threads_exact_counts() -> None:
    clock = ThreadClock()
    size = THREADS * CALLS
    breaker = CircuitBreaker(
        window=size,
        min_calls=size,
        failure_on=Down,
        ignore=ValueError,
        slow_call_duration=2.0,
        clock=clock,
    )
    barrier = threading.Barrier(THREADS)
    ran = [0] * THREADS

    def body(worker: int, j: int) -> None:
        ran[worker] += 1
        kind, slow = outcome_of(j)
        if slow:
            clock.spend(3.0)
        raise_for(kind)

    decorated = breaker(body)

    def worker(index: int) -> None:
        barrier.wait(10)
        for j in range(CALLS):
            try:
                if j % 3 == 0:
                    decorated(index, j)
                elif j % 3 == 1:
                    breaker.call(body, index, j)
                else:
                    with breaker:
                        body(index, j)
            except (Down, ValueError, KeyError):
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert ran == [CALLS] * THREADS
    metrics = breaker.metrics
    assert (metrics.calls, metrics.failures, metrics.slow_calls) == expected_totals(THREADS, CALLS)
    assert breaker.state is CircuitState.CLOSED


def test_threads_tripping_and_recovering() -> None:
    breaker = CircuitBreaker(
        window=50,
        min_calls=20,
        failure_ratio=0.5,
        open_duration=0.002,
        half_open_calls=2,
        half_open_successes=3,
        ignore=ValueError,
        clock=TickingClock(),
    )
    engine = breaker._engine
    events: list[Event] = []
    breaker.subscribe(events.append)
    barrier = threading.Barrier(THREADS)
    ran = [0] * THREADS
    rejected = [0] * THREADS
    max_trials = [0] * THREADS
    saw_clean = [0] * THREADS

    def body(worker: int, j: int) -> None:
        ran[worker] += 1
        max_trials[worker] = max(max_trials[worker], engine._trials)
        saw_clean[worker] += engine.fast != 0
        if (j // 250) % 4 == 3 and j % 3:
            raise Down("burst")
        if j % 97 == 0:
            raise ValueError("ignored")
        if j % 101 == 0:
            raise Interrupt

    decorated = breaker(body)

    def worker(index: int) -> None:
        barrier.wait(10)
        for j in range(CALLS):
            try:
                if j % 2:
                    decorated(index, j)
                else:
                    breaker.call(body, index, j)
            except CircuitOpen:
                rejected[index] += 1
            except (Down, ValueError, Interrupt):
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [r + x for r, x in zip(ran, rejected, strict=True)] == [CALLS] * THREADS
    assert sum(isinstance(e, CallRejected) for e in events) == sum(rejected)
    changes = check_transitions(events)
    kinds = {(c.old, c.new) for c in changes}
    assert kinds == ALLOWED  # it tripped, probed, failed trials and closed again
    assert max(max_trials) <= 2
    assert sum(saw_clean) > 0
    assert engine.trials()[0] == 0  # nothing in flight, no permit leaked
    metrics = breaker.metrics
    assert 0 <= metrics.failures <= metrics.calls <= 50


async def test_tasks_exact_counts() -> None:
    clock = FakeClock()
    size = TASKS * TASK_CALLS
    breaker = CircuitBreaker(
        window=size, min_calls=size, failure_on=Down, ignore=ValueError, clock=clock
    )
    ran = 0

    async def body(j: int) -> None:
        nonlocal ran
        ran += 1
        if j % 2:
            await tick()
        raise_for(outcome_of(j)[0])

    decorated = breaker(body)
    ways: list[Callable[[int], Any]] = [decorated, lambda j: breaker.acall(body, j)]

    async def task() -> None:
        for j in range(TASK_CALLS):
            try:
                if j % 3 == 2:
                    async with breaker:
                        await body(j)
                else:
                    await ways[j % 3](j)
            except (Down, ValueError, KeyError):
                pass

    await asyncio.gather(*(task() for _ in range(TASKS)))
    assert ran == TASKS * TASK_CALLS
    counted, failures, _ = expected_totals(TASKS, TASK_CALLS)
    assert (breaker.metrics.calls, breaker.metrics.failures) == (counted, failures)


async def test_tasks_tripping_and_recovering() -> None:
    breaker = CircuitBreaker(
        window=30,
        min_calls=10,
        failure_ratio=0.5,
        open_duration=0.0005,
        half_open_calls=3,
        half_open_successes=4,
        clock=TickingClock(),
    )
    engine = breaker._engine
    events: list[Event] = []
    breaker.subscribe(events.append)
    ran = rejected = cancelled = max_trials = 0
    sequence = itertools.count()

    async def body(n: int, j: int, failing: bool) -> None:
        nonlocal ran, max_trials
        ran += 1
        max_trials = max(max_trials, engine._trials)
        await tick(j % 3)
        if failing and j % 2:
            raise Down("burst")
        if (n + j) % 53 == 0:
            raise asyncio.CancelledError

    async def task(n: int) -> None:
        nonlocal rejected, cancelled
        for j in range(TASK_CALLS):
            # Phases over the whole run: every third stretch of 1,500 attempts fails
            # half the time.
            failing = (next(sequence) // 1_500) % 3 == 2
            try:
                await breaker.acall(body, n, j, failing)
            except CircuitOpen:
                rejected += 1
            except asyncio.CancelledError:
                cancelled += 1
            except Down:
                pass

    await asyncio.gather(*(task(n) for n in range(TASKS)))
    assert ran + rejected == TASKS * TASK_CALLS
    assert cancelled > 0
    assert sum(isinstance(e, CallRejected) for e in events) == rejected
    changes = check_transitions(events)
    assert {(c.old, c.new) for c in changes} == ALLOWED
    assert max_trials <= 3
    assert engine.trials()[0] == 0
