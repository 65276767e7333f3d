"""Bulkhead: bounded concurrency, a bounded FIFO queue, max wait, cancellation safety."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
from collections.abc import Callable
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import BulkheadFull, ConfigError
from buttress.events import CallRejected, Event, call_name
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead, BulkheadOptions
from buttress.policies.bulkhead._engine import Waiter as _Waiter

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


def recorder(bulkhead: Bulkhead) -> list[Event]:
    seen: list[Event] = []
    bulkhead.subscribe(seen.append)
    return seen


# ------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2", None])
def test_max_concurrent_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Bulkhead(value)
    assert info.value.path == "max_concurrent"


@pytest.mark.parametrize("value", [-1, True, 1.0, None])
def test_max_queue_must_be_a_non_negative_int(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Bulkhead(1, max_queue=value)
    assert info.value.path == "max_queue"


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), True, "1"])
def test_max_wait_must_be_positive_and_finite(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Bulkhead(1, max_queue=1, max_wait=value)
    assert info.value.path == "max_wait"


def test_max_wait_without_a_queue_is_a_mistake() -> None:
    with pytest.raises(ConfigError, match="max_queue") as info:
        Bulkhead(1, max_wait=1.0)
    assert info.value.path == "max_wait"


@pytest.mark.parametrize(
    "value", [float("-inf"), datetime.timedelta(0), datetime.timedelta(seconds=-2), False]
)
def test_max_wait_message_says_what_is_valid(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"max_wait: must be .*seconds") as info:
        Bulkhead(1, max_queue=1, max_wait=value)
    assert info.value.path == "max_wait"


@pytest.mark.parametrize(("option", "value"), [("max_concurrent", True), ("max_queue", False)])
def test_counts_are_not_bools(option: str, value: bool) -> None:
    options: dict[str, Any] = {"max_concurrent": 1, "max_queue": 0, option: value}
    with pytest.raises(ConfigError, match="must be an integer") as info:
        Bulkhead(**options)
    assert info.value.path == option


def test_max_wait_accepts_a_timedelta() -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=datetime.timedelta(milliseconds=500))
    assert bulkhead.max_wait == 0.5


def test_options_object() -> None:
    bulkhead = Bulkhead(3, max_queue=2, max_wait=1, name="db")
    assert Bulkhead.Options is BulkheadOptions
    assert bulkhead.options == BulkheadOptions(max_concurrent=3, max_queue=2, max_wait=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bulkhead.options.max_queue = 5  # type: ignore[misc]
    clock = FakeClock()
    built = Bulkhead.from_options(bulkhead.options.replace(max_concurrent=5), clock=clock)
    assert (built.max_concurrent, built.max_queue, built.max_wait) == (5, 2, 1.0)
    assert (built.available, built.clock) == (5, clock)
    assert built.name.startswith("bulkhead-")
    with pytest.raises(ConfigError) as info:
        Bulkhead.from_options(None)  # type: ignore[arg-type]
    assert info.value.path == "options"


def test_options_from_a_configuration_table() -> None:
    options = BulkheadOptions.from_mapping(
        {"max-concurrent": 4, "max_queue": 8, "max_wait": 0.5}, path="p.b"
    )
    assert options == BulkheadOptions(max_concurrent=4, max_queue=8, max_wait=0.5)
    with pytest.raises(ConfigError, match="max_queue") as info:
        BulkheadOptions.from_mapping({"max_concurrent": 4, "max_wait": 0.5}, path="p.b")
    assert info.value.path == "p.b.max_wait"
    with pytest.raises(ConfigError) as info:
        BulkheadOptions.from_mapping({}, path="p.b")
    assert info.value.path == "p.b"


def test_options_names_and_repr() -> None:
    bulkhead = Bulkhead(3, max_queue=2, max_wait=1, name="db")
    assert (bulkhead.max_concurrent, bulkhead.max_queue, bulkhead.max_wait) == (3, 2, 1.0)
    assert bulkhead.name == "db"
    assert repr(bulkhead) == "Bulkhead(3, max_queue=2, max_wait=1.0, name='db')"
    assert Bulkhead(1).name.startswith("bulkhead-")
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 3)


# ------------------------------------------------------------------------------ sync


def test_sync_call_returns_and_frees_the_slot() -> None:
    bulkhead = Bulkhead(2)
    assert bulkhead.call(lambda x, y: x + y, 1, y=2) == 3
    assert (bulkhead.active, bulkhead.available) == (0, 2)


def test_sync_call_holds_a_slot_while_running() -> None:
    bulkhead = Bulkhead(2)
    seen: list[tuple[int, int]] = []
    bulkhead.call(lambda: seen.append((bulkhead.active, bulkhead.available)))
    assert seen == [(1, 1)]


def test_sync_error_frees_the_slot() -> None:
    bulkhead = Bulkhead(1)

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        bulkhead.call(boom)
    assert bulkhead.available == 1


def test_rejects_when_full_without_a_queue() -> None:
    bulkhead = Bulkhead(2, name="api")
    seen = recorder(bulkhead)
    ran: list[int] = []
    with bulkhead, bulkhead:
        assert (bulkhead.active, bulkhead.available) == (2, 0)
        with pytest.raises(BulkheadFull) as info:
            bulkhead.call(ran.append, 1)
    assert ran == []
    assert info.value.reason == "bulkhead_full"
    assert info.value.name == "api"
    assert seen == [CallRejected("api", "bulkhead_full", call="list.append")]
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 2)


def test_no_event_object_without_listeners() -> None:
    bulkhead = Bulkhead(1)
    assert not bulkhead._events.enabled
    with bulkhead, pytest.raises(BulkheadFull):
        bulkhead.call(int)


def test_context_manager_returns_the_bulkhead_and_releases_on_error() -> None:
    bulkhead = Bulkhead(1)
    entered: list[Bulkhead] = []

    def fail_inside() -> None:
        with bulkhead as inside:
            entered.append(inside)
            raise ValueError

    with pytest.raises(ValueError):
        fail_inside()
    assert entered == [bulkhead]
    assert bulkhead.available == 1


def test_decorator_on_function_and_method() -> None:
    bulkhead = Bulkhead(1)

    @bulkhead
    def double(x: int) -> int:
        return 2 * x

    class Service:
        @bulkhead
        def triple(self, x: int) -> int:
            return 3 * x

    assert double(4) == 8
    assert Service().triple(4) == 12
    assert double.__name__ == "double"


def test_queued_thread_gets_the_next_free_slot() -> None:
    bulkhead = Bulkhead(1, max_queue=1)
    with bulkhead:
        thread, outcome = start(lambda: bulkhead.call(lambda: bulkhead.active))
        eventually(lambda: bulkhead.queued == 1)
        assert (bulkhead.active, bulkhead.available) == (1, 0)
    thread.join(5)
    assert outcome == [1]
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


def test_queue_full_rejects_at_once() -> None:
    bulkhead = Bulkhead(1, max_queue=1)
    seen = recorder(bulkhead)
    with bulkhead:
        thread, outcome = start(lambda: bulkhead.call(lambda: "queued"))
        eventually(lambda: bulkhead.queued == 1)
        with pytest.raises(BulkheadFull) as info:
            bulkhead.call(third)
        assert info.value.reason == "bulkhead_full"
        assert bulkhead.queued == 1
    thread.join(5)
    assert outcome == ["queued"]
    assert seen == [CallRejected(bulkhead.name, "bulkhead_full", call=call_name(third))]


def third() -> str:
    return "third"


def test_sync_waiters_are_served_in_arrival_order() -> None:
    bulkhead = Bulkhead(1, max_queue=5)
    order: list[int] = []
    threads = []
    with bulkhead:
        for index in range(5):
            thread, _ = start(lambda index=index: bulkhead.call(order.append, index))  # type: ignore[misc]
            threads.append(thread)
            eventually(lambda index=index: bulkhead.queued == index + 1)  # type: ignore[misc]
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert bulkhead.available == 1


def test_sync_max_wait_expires(watched: WatchedClock) -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=2.0, clock=watched)
    seen = recorder(bulkhead)
    ran: list[int] = []
    with bulkhead:
        thread, outcome = start(lambda: bulkhead.call(ran.append, 1))
        eventually(lambda: watched.waiting == 1)
        watched.advance(1.999)
        assert bulkhead.queued == 1
        watched.advance(0.001)
        thread.join(5)
        assert bulkhead.queued == 0
    assert ran == []
    assert len(outcome) == 1
    assert isinstance(outcome[0], BulkheadFull)
    assert outcome[0].reason == "queue_timeout"
    assert seen == [CallRejected(bulkhead.name, "queue_timeout", call="list.append")]
    assert (bulkhead.active, bulkhead.available) == (0, 1)


def test_sync_waiter_served_before_max_wait(watched: WatchedClock) -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=2.0, clock=watched)
    with bulkhead:
        thread, outcome = start(lambda: bulkhead.call(lambda: "ran"))
        eventually(lambda: watched.waiting == 1)
        watched.advance(1.0)
    thread.join(5)
    assert outcome == ["ran"]
    assert bulkhead.available == 1


class _GrantThenClock(FakeClock):
    """A clock whose ``wait`` hands the slot over just as the wait gives up."""

    def __init__(self, bulkhead_ref: list[Bulkhead], then: BaseException | None) -> None:
        super().__init__(auto_advance=False)
        self.bulkhead_ref = bulkhead_ref
        self.then = then

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.bulkhead_ref[0]._slots.release()
        if self.then is not None:
            raise self.then
        return False  # timed out, although the slot arrived


def test_sync_wait_timing_out_as_the_slot_arrives_runs_the_call() -> None:
    ref: list[Bulkhead] = []
    bulkhead = Bulkhead(1, max_queue=1, max_wait=1.0, clock=_GrantThenClock(ref, None))
    ref.append(bulkhead)
    assert bulkhead._slots.try_acquire()
    assert bulkhead.call(lambda: "ran") == "ran"
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


def test_sync_wait_interrupted_as_the_slot_arrives_passes_it_on() -> None:
    ref: list[Bulkhead] = []
    bulkhead = Bulkhead(
        1, max_queue=2, max_wait=1.0, clock=_GrantThenClock(ref, KeyboardInterrupt())
    )
    ref.append(bulkhead)
    assert bulkhead._slots.try_acquire()
    ran: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        bulkhead.call(ran.append, 1)
    assert ran == []
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


def test_sync_wait_interrupted_while_queued_leaves_the_queue() -> None:
    class Interrupting(FakeClock):
        def wait(self, event: threading.Event, timeout: float) -> bool:
            raise KeyboardInterrupt

    bulkhead = Bulkhead(1, max_queue=1, max_wait=1.0, clock=Interrupting())
    with bulkhead:
        with pytest.raises(KeyboardInterrupt):
            bulkhead.call(int)
        assert (bulkhead.active, bulkhead.queued) == (1, 0)
    assert bulkhead.available == 1


def test_a_waiter_that_cannot_be_woken_passes_the_slot_on() -> None:
    class Deaf(_Waiter):
        __slots__ = ()

        def wake(self) -> bool:
            return False

    class Listening(_Waiter):
        __slots__ = ("woken",)

        def wake(self) -> bool:
            self.woken = True
            return True

    bulkhead = Bulkhead(1, max_queue=2)
    assert bulkhead._slots.try_acquire()
    deaf, listening = Deaf(), Listening()
    assert bulkhead._slots.enqueue(deaf)
    assert bulkhead._slots.enqueue(listening)
    bulkhead._slots.release()
    assert listening.woken
    assert bulkhead._slots.settle(listening)
    assert not bulkhead._slots.settle(deaf)
    assert (bulkhead.active, bulkhead.queued) == (1, 0)


# ----------------------------------------------------------------------------- async


async def test_async_call_returns_and_frees_the_slot() -> None:
    bulkhead = Bulkhead(2)

    async def add(x: int, y: int) -> int:
        return x + y

    assert await bulkhead.acall(add, 1, y=2) == 3
    assert await bulkhead(add, 2, 3) == 5
    assert (bulkhead.active, bulkhead.available) == (0, 2)


async def test_async_decorator_and_context_manager() -> None:
    bulkhead = Bulkhead(1)

    @bulkhead
    async def active() -> int:
        return bulkhead.active

    assert await active() == 1
    async with bulkhead as entered:
        assert entered is bulkhead
        assert bulkhead.available == 0
        with pytest.raises(BulkheadFull):
            await active()
    assert bulkhead.available == 1


async def test_async_rejects_when_full() -> None:
    bulkhead = Bulkhead(1, name="q")
    seen = recorder(bulkhead)
    async with bulkhead:
        with pytest.raises(BulkheadFull) as info:
            await bulkhead.acall(tick)
    assert info.value.reason == "bulkhead_full"
    assert seen == [CallRejected("q", "bulkhead_full", call="tests.helpers.tick")]


async def test_async_waiters_are_served_in_arrival_order() -> None:
    bulkhead = Bulkhead(2, max_queue=10)
    order: list[int] = []

    async def work(index: int) -> None:
        order.append(index)
        await tick()

    async with bulkhead, bulkhead:
        tasks = [asyncio.create_task(bulkhead.acall(work, i)) for i in range(10)]
        await tick()
        assert bulkhead.queued == 10
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 2)


async def test_async_queue_full() -> None:
    bulkhead = Bulkhead(1, max_queue=2)
    async with bulkhead:
        waiting = [asyncio.create_task(bulkhead.acall(tick)) for _ in range(2)]
        await tick()
        with pytest.raises(BulkheadFull) as info:
            await bulkhead.acall(tick)
        assert info.value.reason == "bulkhead_full"
    await asyncio.gather(*waiting)
    assert bulkhead.available == 1


async def test_async_max_wait_expires(manual_clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=0.5, clock=manual_clock)
    seen = recorder(bulkhead)
    async with bulkhead:
        task = asyncio.create_task(bulkhead.acall(tick))
        await tick()
        assert bulkhead.queued == 1
        manual_clock.advance(0.499)
        await tick()
        assert not task.done()
        manual_clock.advance(0.001)
        with pytest.raises(BulkheadFull) as info:
            await task
        assert bulkhead.queued == 0
    assert info.value.reason == "queue_timeout"
    assert seen == [CallRejected(bulkhead.name, "queue_timeout", call="tests.helpers.tick")]
    assert (bulkhead.active, bulkhead.available) == (0, 1)


async def test_async_served_before_max_wait_cancels_its_timer(manual_clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=0.5, clock=manual_clock)

    async def value() -> str:
        return "ran"

    async with bulkhead:
        task = asyncio.create_task(bulkhead.acall(value))
        await tick()
        assert manual_clock.pending_timers == 1
    assert await task == "ran"
    assert manual_clock.pending_timers == 0
    assert bulkhead.available == 1


async def test_async_cancelled_while_holding_frees_the_slot() -> None:
    bulkhead = Bulkhead(1)
    gate = asyncio.Event()
    task = asyncio.create_task(bulkhead.acall(gate.wait))
    await tick()
    assert bulkhead.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (bulkhead.active, bulkhead.available) == (0, 1)


async def test_async_cancelled_while_queued_leaves_the_queue(manual_clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, max_queue=2, max_wait=5.0, clock=manual_clock)
    ran: list[str] = []

    async def mark(label: str) -> None:
        ran.append(label)

    async with bulkhead:
        first = asyncio.create_task(bulkhead.acall(mark, "first"))
        second = asyncio.create_task(bulkhead.acall(mark, "second"))
        await tick()
        assert bulkhead.queued == 2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert (bulkhead.queued, bulkhead.active) == (1, 1)
    await second
    assert ran == ["second"]
    assert manual_clock.pending_timers == 0
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


async def test_async_cancelled_as_the_slot_is_handed_over_passes_it_on() -> None:
    bulkhead = Bulkhead(1, max_queue=2)
    ran: list[str] = []

    async def mark(label: str) -> None:
        ran.append(label)

    async with bulkhead:
        unlucky = asyncio.create_task(bulkhead.acall(mark, "unlucky"))
        next_in_line = asyncio.create_task(bulkhead.acall(mark, "next"))
        await tick()
        assert bulkhead.queued == 2
    # The slot was handed to `unlucky` (its future is resolved) but it has not run.
    assert (bulkhead.queued, bulkhead.active) == (1, 1)
    unlucky.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    await next_in_line
    assert ran == ["next"]
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


async def test_async_cancelled_as_the_last_slot_is_handed_over_returns_it() -> None:
    bulkhead = Bulkhead(1, max_queue=1)
    async with bulkhead:
        unlucky = asyncio.create_task(bulkhead.acall(tick))
        await tick()
    unlucky.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


async def test_async_max_wait_firing_as_the_slot_arrives_runs_the_call(
    manual_clock: FakeClock,
) -> None:
    bulkhead = Bulkhead(1, max_queue=1, max_wait=1.0, clock=manual_clock)

    async def value() -> str:
        return "ran"

    async with bulkhead:
        task = asyncio.create_task(bulkhead.acall(value))
        await tick()
    manual_clock.advance(1.0)  # the timer fires after the hand-over, before the task runs
    assert await task == "ran"
    assert bulkhead.available == 1


# ------------------------------------------------------------------ threads and loops


async def test_slot_freed_by_a_thread_wakes_a_task() -> None:
    bulkhead = Bulkhead(1, max_queue=1)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with bulkhead:
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert await asyncio.to_thread(holding.wait, 5)

    async def active() -> int:
        return bulkhead.active

    task = asyncio.create_task(bulkhead.acall(active))
    await tick()
    assert bulkhead.queued == 1
    release.set()
    assert await asyncio.wait_for(task, 5) == 1
    await asyncio.to_thread(thread.join, 5)
    assert bulkhead.available == 1


async def test_slot_freed_by_a_task_wakes_a_thread() -> None:
    bulkhead = Bulkhead(1, max_queue=1)
    async with bulkhead:
        thread, outcome = start(lambda: bulkhead.call(lambda: bulkhead.active))
        await asyncio.to_thread(eventually, lambda: bulkhead.queued == 1)
    await asyncio.to_thread(thread.join, 5)
    assert outcome == [1]
    assert bulkhead.available == 1


def test_one_bulkhead_shared_by_two_event_loops() -> None:
    bulkhead = Bulkhead(1, max_queue=4)
    order: list[str] = []
    second_loop_queued = threading.Event()

    async def first() -> None:
        async with bulkhead:
            await asyncio.to_thread(second_loop_queued.wait, 5)
            order.append("first")

    async def second() -> None:
        task = asyncio.create_task(bulkhead.acall(_append, order, "second"))
        await tick()
        assert bulkhead.queued == 1
        second_loop_queued.set()
        await task

    holder = threading.Thread(target=asyncio.run, args=(first(),))
    holder.start()
    eventually(lambda: bulkhead.active == 1)
    asyncio.run(second())
    holder.join(5)
    assert order == ["first", "second"]
    assert bulkhead.available == 1


async def _append(target: list[str], value: str) -> None:
    target.append(value)


def test_tasks_queue_on_successive_loops_of_one_thread() -> None:
    bulkhead = Bulkhead(1, max_queue=1)
    order: list[str] = []

    async def main(label: str) -> None:
        async with bulkhead:
            task = asyncio.create_task(bulkhead.acall(_append, order, label))
            await tick()
            assert bulkhead.queued == 1
        await task

    asyncio.run(main("first loop"))
    asyncio.run(main("second loop"))  # the thread's loop changed: its waiter knows
    assert order == ["first loop", "second loop"]


def test_a_loop_this_thread_ran_before_and_another_thread_runs_now() -> None:
    # The waiter's loop is remembered per thread; a loop that ran here before and
    # is now running a task in another thread must not be taken for this one's.
    bulkhead = Bulkhead(1, max_queue=2)

    async def queue_one() -> list[str]:
        order: list[str] = []
        async with bulkhead:
            task = asyncio.create_task(bulkhead.acall(_append, order, "queued"))
            await tick()
            assert bulkhead.queued == 1
        await task
        return order

    moved = asyncio.new_event_loop()
    assert moved.run_until_complete(queue_one()) == ["queued"]  # remembered here
    in_step, release = threading.Event(), threading.Event()

    async def hold_a_step() -> None:
        in_step.set()
        release.wait(5)  # blocks its loop mid-step: it has a current task

    other = threading.Thread(target=moved.run_until_complete, args=(hold_a_step(),))
    other.start()
    assert in_step.wait(5)
    try:
        assert asyncio.run(queue_one()) == ["queued"]  # on a loop of its own
    finally:
        release.set()
        other.join(5)
        moved.close()


def test_slot_handed_to_a_task_on_a_closed_loop_is_passed_on() -> None:
    bulkhead = Bulkhead(1, max_queue=2)
    assert bulkhead._slots.try_acquire()
    loop = asyncio.new_event_loop()

    async def queue_and_abandon() -> None:
        asyncio.get_running_loop().create_task(bulkhead.acall(_append, [], "lost"))
        await tick()

    loop.run_until_complete(queue_and_abandon())
    assert bulkhead.queued == 1
    loop.close()  # under its pending task, as a crashed thread would leave it
    thread, outcome = start(lambda: bulkhead.call(lambda: "runs"))
    eventually(lambda: bulkhead.queued == 2)
    bulkhead._slots.release()
    thread.join(5)
    assert outcome == ["runs"]
    assert (bulkhead.active, bulkhead.queued, bulkhead.available) == (0, 0, 1)


# --------------------------------------------------------------------------- pipeline


async def test_inside_a_pipeline() -> None:
    bulkhead = Bulkhead(1, name="inner")
    pipeline = Pipeline(bulkhead)

    async def active() -> int:
        return bulkhead.active

    assert await pipeline.acall(active) == 1
    assert pipeline.call(lambda: bulkhead.active) == 1
    async with bulkhead:
        with pytest.raises(BulkheadFull):
            await pipeline.acall(active)
    assert bulkhead.available == 1
