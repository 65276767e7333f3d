"""A bulkhead's queue inside a Timeout: the wait is part of the time budget.

The deadline ends the wait when it comes before ``max_wait`` (the caller gets the
timeout's ``TimeoutExceeded``, naming the bulkhead), ``max_wait`` ends it when it
comes first (``BulkheadFull("queue_timeout")`` as ever), and a caller with no time
left fails at once — sync (threads) and async (tasks).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from buttress.clock import FakeClock, TimerHandle
from buttress.errors import BulkheadFull, TimeoutExceeded
from buttress.events import CallRejected, Event, call_name
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.timeout import Timeout, TimeoutOccurred

from tests.helpers import WatchedClock, tick


@pytest.fixture
def watched() -> WatchedClock:
    """A clock moved by hand that tells when a thread waits on it."""
    return WatchedClock()


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (for real, briefly) until another thread has made ``predicate`` true."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if predicate():
            return
        pause.wait(0.001)
    raise AssertionError("condition not reached")


def start(target: Callable[[], object]) -> tuple[threading.Thread, list[Any]]:
    """Run ``target`` in a thread; the list receives its result or exception."""
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def recorder(*policies: Any) -> list[Event]:
    seen: list[Event] = []
    for policy in policies:
        policy.subscribe(seen.append)
    return seen


def work() -> str:
    return "ran"


async def awork() -> str:
    return "ran"


class NoWait(FakeClock):
    """A clock a bulkhead must not wait on: the test expects it to fail at once."""

    def wait(self, event: threading.Event, timeout: float) -> bool:
        raise AssertionError(f"waited {timeout}s")

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        raise AssertionError(f"armed a timer for {delay}s")


class Silent(FakeClock):
    """A Timeout's clock whose timer never fires: only the budget it publishes acts."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        return super().call_later(1e9, callback)


# ------------------------------------------------------------------------------ sync


@pytest.mark.parametrize("max_wait", [5.0, None])
def test_sync_the_deadline_ends_the_wait(watched: WatchedClock, max_wait: float | None) -> None:
    timeout = Timeout(1.0, name="total", clock=watched)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=max_wait, name="db", clock=watched)
    seen = recorder(timeout, bulkhead)
    pipeline = Pipeline(timeout, bulkhead)
    with bulkhead:
        thread, outcome = start(lambda: pipeline.call(work))
        eventually(lambda: watched.waiting == 1)
        watched.advance(0.999)
        assert bulkhead.queued == 1
        watched.advance(0.001)
        thread.join(5)
    [error] = outcome
    assert isinstance(error, TimeoutExceeded)
    assert (error.name, error.timeout) == ("total", 1.0)
    assert error.detail == "bulkhead 'db' waited 1.000s for a slot until the deadline"
    assert "bulkhead 'db'" in str(error)
    # The timeout's event, naming the call; no rejection by the bulkhead.
    assert seen == [TimeoutOccurred("total", 1.0, call=call_name(work))]
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


def test_sync_max_wait_before_the_deadline_is_a_queue_timeout(watched: WatchedClock) -> None:
    timeout = Timeout(5.0, clock=watched)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=1.0, clock=watched)
    seen = recorder(timeout, bulkhead)
    with bulkhead:
        thread, outcome = start(lambda: timeout.call(bulkhead.call, work))
        eventually(lambda: watched.waiting == 1)
        watched.advance(1.0)
        thread.join(5)
    [error] = outcome
    assert isinstance(error, BulkheadFull)
    assert error.reason == "queue_timeout"
    assert seen == [CallRejected(bulkhead.name, "queue_timeout", call=call_name(work))]


def test_sync_served_before_the_deadline_runs(watched: WatchedClock) -> None:
    timeout = Timeout(1.0, clock=watched)
    bulkhead = Bulkhead(1, max_queue=1, clock=watched)
    with bulkhead:
        thread, outcome = start(lambda: timeout.call(bulkhead.call, work))
        eventually(lambda: watched.waiting == 1)
        watched.advance(0.5)
    thread.join(5)
    assert outcome == ["ran"]


def test_sync_no_time_left_fails_at_once(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="total", clock=manual_clock)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=5.0, name="db", clock=NoWait())
    seen = recorder(timeout, bulkhead)

    def late() -> str:
        manual_clock.advance(1.0)  # the budget is spent before the bulkhead is reached
        return bulkhead.call(work)

    with bulkhead, pytest.raises(TimeoutExceeded) as info:
        timeout.call(late)
    assert info.value.name == "total"
    assert info.value.detail == "bulkhead 'db' had no time left to wait for a slot"
    assert bulkhead.queued == 0
    assert seen == [TimeoutOccurred("total", 1.0, call=call_name(late))]


def test_sync_a_free_slot_needs_no_time(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    bulkhead = Bulkhead(1, max_queue=1, clock=NoWait())

    def late() -> str:
        manual_clock.advance(0.5)
        return bulkhead.call(work)

    assert timeout.call(late) == "ran"


def test_sync_a_bulkhead_block_waits_inside_the_budget(watched: WatchedClock) -> None:
    timeout = Timeout(1.0, name="total", clock=watched)
    bulkhead = Bulkhead(1, max_queue=1, name="db", clock=watched)

    def block() -> str:
        with timeout, bulkhead:
            return "inside"

    with bulkhead:
        thread, outcome = start(block)
        eventually(lambda: watched.waiting == 1)
        watched.advance(1.0)
        thread.join(5)
    [error] = outcome
    assert isinstance(error, TimeoutExceeded)
    assert error.detail == "bulkhead 'db' waited 1.000s for a slot until the deadline"


def test_sync_without_a_queue_a_full_bulkhead_still_rejects(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    bulkhead = Bulkhead(1, clock=NoWait())
    with bulkhead, pytest.raises(BulkheadFull) as info:
        timeout.call(bulkhead.call, work)
    assert info.value.reason == "bulkhead_full"


# ----------------------------------------------------------------------------- async


@pytest.mark.parametrize("max_wait", [5.0, None])
async def test_async_the_deadline_ends_the_wait(
    manual_clock: FakeClock, max_wait: float | None
) -> None:
    # The Timeout's clock never fires its timer, so only the published budget ends
    # the bulkhead's wait: its error is the one the bulkhead raises.
    budget = Silent(auto_advance=False)
    timeout = Timeout(1.0, name="total", clock=budget)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=max_wait, name="db", clock=manual_clock)
    seen = recorder(timeout, bulkhead)
    async with bulkhead:
        task = asyncio.create_task(Pipeline(timeout, bulkhead).acall(awork))
        await tick()
        assert bulkhead.queued == 1
        manual_clock.advance(0.999)
        await tick()
        assert not task.done()
        manual_clock.advance(0.001)
        with pytest.raises(TimeoutExceeded) as info:
            await task
    assert (info.value.name, info.value.timeout) == ("total", 1.0)
    assert info.value.detail == "bulkhead 'db' waited 1.000s for a slot until the deadline"
    assert seen == [TimeoutOccurred("total", 1.0, call=call_name(awork))]
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)
    assert manual_clock.pending_timers == 0


async def test_async_with_one_clock_the_timeout_wins_either_way(manual_clock: FakeClock) -> None:
    # One clock: the timeout's own timer and the capped wait fall due together; the
    # caller gets the timeout's error and the queue is left clean.
    timeout = Timeout(1.0, name="total", clock=manual_clock)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=5.0, clock=manual_clock)
    seen = recorder(bulkhead)
    async with bulkhead:
        task = asyncio.create_task(timeout.acall(bulkhead.acall, awork))
        await tick()
        manual_clock.advance(1.0)
        with pytest.raises(TimeoutExceeded) as info:
            await task
    assert info.value.name == "total"
    assert seen == []  # not a queue_timeout
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)
    assert manual_clock.pending_timers == 0


async def test_async_max_wait_before_the_deadline_is_a_queue_timeout(
    manual_clock: FakeClock,
) -> None:
    timeout = Timeout(5.0, clock=manual_clock)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=1.0, clock=manual_clock)
    async with bulkhead:
        task = asyncio.create_task(timeout.acall(bulkhead.acall, awork))
        await tick()
        manual_clock.advance(1.0)
        with pytest.raises(BulkheadFull) as info:
            await task
    assert info.value.reason == "queue_timeout"


async def test_async_served_before_the_deadline_runs(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    queue_clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead(1, max_queue=1, clock=queue_clock)
    async with bulkhead:
        task = asyncio.create_task(timeout.acall(bulkhead.acall, awork))
        await tick()
        assert queue_clock.pending_timers == 1  # the wait, capped at the deadline
        manual_clock.advance(0.5)
    assert await task == "ran"
    assert queue_clock.pending_timers == 0


async def test_async_no_time_left_fails_at_once() -> None:
    budget = Silent(auto_advance=False)
    timeout = Timeout(1.0, name="total", clock=budget)
    bulkhead = Bulkhead(1, max_queue=1, max_wait=5.0, name="db", clock=NoWait())

    async def late() -> str:
        budget.advance(1.0)
        return await bulkhead.acall(awork)

    async with bulkhead:
        with pytest.raises(TimeoutExceeded) as info:
            await timeout.acall(late)
    assert info.value.detail == "bulkhead 'db' had no time left to wait for a slot"
    assert bulkhead.queued == 0


async def test_async_a_bulkhead_block_inside_a_timeout_block(manual_clock: FakeClock) -> None:
    budget = Silent(auto_advance=False)
    bulkhead = Bulkhead(1, max_queue=1, name="db", clock=manual_clock)

    async def block() -> str:
        async with Timeout(1.0, clock=budget), bulkhead:
            return "inside"

    async with bulkhead:
        task = asyncio.create_task(block())
        await tick()
        manual_clock.advance(1.0)
        with pytest.raises(TimeoutExceeded) as info:
            await task
    assert info.value.detail == "bulkhead 'db' waited 1.000s for a slot until the deadline"
