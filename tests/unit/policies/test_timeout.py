"""Timeout: async cancellation with one shared timer, optimistic and pessimistic sync."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from buttress.clock import MONOTONIC, FakeClock
from buttress.errors import BulkheadFull, ConfigError, TimeoutExceeded
from buttress.events import Event, call_name
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.timeout import (
    Timeout,
    TimeoutOccurred,
    TimeoutOptions,
    _workers,
    remaining,
    set_pessimistic_workers,
)

from tests.helpers import tick


def recorder(timeout: Timeout) -> list[Event]:
    seen: list[Event] = []
    timeout.subscribe(seen.append)
    return seen


class Hang:
    """An async callable that waits until released and remembers being cancelled."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.cancelled = 0
        self.started = 0

    async def __call__(self, value: Any = None) -> Any:
        self.started += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return value


# ------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), True, "1", None])
def test_seconds_must_be_positive_and_finite(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Timeout(value)
    assert info.value.path == "seconds"


def test_mode_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        Timeout(1, mode="hopeful")  # type: ignore[arg-type]
    assert info.value.path == "mode"


def test_options_names_and_repr() -> None:
    timeout = Timeout(2, mode="pessimistic", name="db")
    assert (timeout.seconds, timeout.mode, timeout.name) == (2.0, "pessimistic", "db")
    assert repr(timeout) == "Timeout(2.0, mode='pessimistic', name='db')"
    assert Timeout(1).name.startswith("timeout-")
    assert Timeout(1).mode == "optimistic"


@pytest.mark.parametrize(
    "value", [datetime.timedelta(0), datetime.timedelta(seconds=-1), -0.5, float("-inf")]
)
def test_seconds_message_says_what_is_valid(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"seconds: must be a finite number of seconds > 0"):
        Timeout(value)


def test_seconds_accepts_a_timedelta() -> None:
    timeout = Timeout(datetime.timedelta(milliseconds=250))
    assert timeout.seconds == 0.25
    assert timeout.options.seconds == 0.25


def test_options_object() -> None:
    timeout = Timeout(2, mode="pessimistic", name="db")
    assert Timeout.Options is TimeoutOptions
    assert timeout.options == TimeoutOptions(seconds=2.0, mode="pessimistic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        timeout.options.seconds = 3.0  # type: ignore[misc]
    clock = FakeClock()
    built = Timeout.from_options(timeout.options.replace(seconds=5), name="again", clock=clock)
    assert (built.seconds, built.mode, built.name) == (5.0, "pessimistic", "again")
    assert built.clock is clock
    assert Timeout.from_options(TimeoutOptions(seconds=1)).name.startswith("timeout-")
    with pytest.raises(ConfigError) as info:
        Timeout.from_options({"seconds": 1})  # type: ignore[arg-type]
    assert info.value.path == "options"


def test_options_from_a_configuration_table() -> None:
    options = TimeoutOptions.from_mapping({"seconds": 2, "mode": "pessimistic"}, path="p.t")
    assert options == TimeoutOptions(seconds=2.0, mode="pessimistic")
    with pytest.raises(ConfigError) as info:
        TimeoutOptions.from_mapping({"seconds": -1}, path="p.t")
    assert info.value.path == "p.t.seconds"
    with pytest.raises(ConfigError, match="valid keys: seconds, mode") as info:
        TimeoutOptions.from_mapping({"second": 1}, path="p.t")
    assert info.value.path == "p.t.second"


def test_clock_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        Timeout(1, clock="monotonic")  # type: ignore[arg-type]
    assert info.value.path == "clock"


def test_remaining_is_none_outside_any_timeout() -> None:
    assert remaining() is None


# ----------------------------------------------------------------------------- async


async def test_async_returns_the_result_and_leaves_no_entry(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)

    async def add(x: int, y: int) -> int:
        return x + y

    assert await timeout.acall(add, 1, y=2) == 3
    assert await timeout(add, 2, 3) == 5
    registry = timeout._local.registry
    assert registry.entries == {}
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_async_cancels_the_call_at_the_deadline(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="slow", clock=manual_clock)
    seen = recorder(timeout)
    hang = Hang()
    task = asyncio.create_task(timeout.acall(hang))
    await tick()
    manual_clock.advance(0.999)
    await tick()
    assert not task.done()
    manual_clock.advance(0.001)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert isinstance(info.value, TimeoutError)
    assert (info.value.name, info.value.timeout) == ("slow", 1.0)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert hang.cancelled == 1
    assert seen == [TimeoutOccurred("slow", 1.0, call=call_name(hang))]
    assert task.cancelling() == 0


async def test_no_event_object_without_listeners(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    assert not timeout._events.enabled
    task = asyncio.create_task(timeout.acall(Hang()))
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task


async def test_outside_cancel_stays_a_cancellation(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    seen = recorder(timeout)
    hang = Hang()
    task = asyncio.create_task(timeout.acall(hang))
    await tick()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hang.cancelled == 1
    assert seen == []
    assert timeout._local.registry.entries == {}
    manual_clock.advance(5.0)  # the timer finds nothing to do
    assert timeout._local.registry.handle is None


async def test_outside_cancel_at_the_deadline_wins(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    task = asyncio.create_task(timeout.acall(Hang()))
    await tick()
    task.cancel()
    manual_clock.advance(1.0)  # our timer cancels too, before the task runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1  # the outside request is still on record


async def test_call_that_swallows_the_cancel_keeps_its_result(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    gate = asyncio.Event()

    async def stubborn() -> str:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            return "kept"
        return "finished"

    async def run() -> tuple[str, int]:
        result = await timeout.acall(stubborn)
        return result, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    task = asyncio.create_task(run())
    await tick()
    manual_clock.advance(1.0)
    assert await task == ("kept", 0)


async def test_inner_timeout_shorter_than_outer(manual_clock: FakeClock) -> None:
    outer = Timeout(5.0, name="outer", clock=manual_clock)
    inner = Timeout(1.0, name="inner", clock=manual_clock)
    task = asyncio.create_task(outer.acall(inner.acall, Hang()))
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == "inner"


async def test_outer_timeout_shorter_than_inner(manual_clock: FakeClock) -> None:
    outer = Timeout(1.0, name="outer", clock=manual_clock)
    inner = Timeout(5.0, name="inner", clock=manual_clock)
    inner_seen = recorder(inner)
    task = asyncio.create_task(outer.acall(inner.acall, Hang()))
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == "outer"
    assert inner_seen == []
    assert inner._local.registry.entries == {}


async def test_two_timeouts_expiring_together_report_the_outer(manual_clock: FakeClock) -> None:
    outer = Timeout(1.0, name="outer", clock=manual_clock)
    inner = Timeout(1.0, name="inner", clock=manual_clock)
    task = asyncio.create_task(outer.acall(inner.acall, Hang()))
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    # Both asked for a cancel; the inner one sees a second request and stands
    # aside, as asyncio.timeout does.
    assert info.value.name == "outer"
    assert task.cancelling() == 0


async def test_same_timeout_reentered_by_one_task(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="rec", clock=manual_clock)
    seen = recorder(timeout)
    hang = Hang()
    depths: list[float | None] = []

    async def recurse(depth: int) -> None:
        depths.append(remaining())
        if depth:
            manual_clock.advance(0.25)
            await timeout.acall(recurse, depth - 1)
        else:
            await hang()

    task = asyncio.create_task(timeout.acall(recurse, 3))
    await tick()
    assert depths == [1.0, 0.75, 0.5, 0.25]  # the outermost deadline governs
    assert len(timeout._local.registry.entries) == 1
    manual_clock.advance(0.25)
    with pytest.raises(TimeoutExceeded):
        await task
    assert hang.cancelled == 1
    assert seen == [TimeoutOccurred("rec", 1.0, call=call_name(recurse))]
    assert timeout._local.registry.entries == {}


async def test_same_timeout_reentered_after_it_fired(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    again: list[str] = []
    cleanup_hang = Hang()

    async def cleanup_under_the_same_timeout() -> None:
        try:
            await Hang()()
        except asyncio.CancelledError:
            again.append(await timeout.acall(_echo, "cleaned"))
            await timeout.acall(cleanup_hang)  # a limit of its own, from now
            raise

    task = asyncio.create_task(timeout.acall(cleanup_under_the_same_timeout))
    await tick()
    manual_clock.advance(1.0)
    await tick()
    assert again == ["cleaned"]
    assert not task.done()
    manual_clock.advance(0.999)
    await tick()
    assert not task.done()
    manual_clock.advance(0.001)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert isinstance(info.value.__context__, asyncio.CancelledError)
    assert cleanup_hang.cancelled == 1
    assert task.cancelling() == 0


async def _echo(value: str) -> str:
    return value


async def test_one_timer_serves_staggered_calls(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    first = asyncio.create_task(timeout.acall(Hang()))
    await tick()
    manual_clock.advance(0.5)
    second = asyncio.create_task(timeout.acall(Hang()))
    third = asyncio.create_task(timeout.acall(_echo, "quick"))
    await tick()
    assert await third == "quick"
    assert manual_clock.pending_timers == 1
    manual_clock.advance(0.5)
    await tick()
    assert first.done()
    assert not second.done()
    assert manual_clock.pending_timers == 1  # re-armed for the second deadline
    manual_clock.advance(0.5)
    await tick()
    for task in (first, second):
        with pytest.raises(TimeoutExceeded):
            await task
    assert manual_clock.pending_timers == 0


async def test_many_concurrent_calls_time_out_together(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    hangs = [Hang() for _ in range(100)]
    tasks = [asyncio.create_task(timeout.acall(h)) for h in hangs]
    await tick()
    assert manual_clock.pending_timers == 1
    manual_clock.advance(1.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, TimeoutExceeded) for r in results)
    assert sum(h.cancelled for h in hangs) == 100


async def test_async_remaining(manual_clock: FakeClock) -> None:
    outer = Timeout(2.0, clock=manual_clock)
    inner = Timeout(5.0, clock=manual_clock)
    tighter = Timeout(0.5, clock=manual_clock)
    seen: list[float | None] = []

    async def look() -> None:
        seen.append(remaining())
        manual_clock.advance(0.25)
        seen.append(remaining())

    await outer.acall(look)
    await outer.acall(inner.acall, look)
    await outer.acall(tighter.acall, look)
    assert seen == [2.0, 1.75, 2.0, 1.75, 0.5, 0.25]
    assert remaining() is None


async def test_real_loop_timer_cancels_the_call() -> None:
    timeout = Timeout(0.001, clock=MONOTONIC)
    hang = Hang()
    with pytest.raises(TimeoutExceeded):
        await timeout.acall(hang)
    assert hang.cancelled == 1
    assert await timeout.acall(_echo, "fast") == "fast"


async def test_async_decorator(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)

    @timeout
    async def double(x: int) -> int:
        return 2 * x

    assert await double(4) == 8
    assert double.__name__ == "double"


def test_one_timeout_used_by_successive_and_parallel_loops() -> None:
    timeout = Timeout(60.0)

    async def main() -> str:
        return await timeout.acall(_echo, "ok")

    assert asyncio.run(main()) == "ok"
    first = timeout._local.registry
    assert asyncio.run(main()) == "ok"
    assert timeout._local.registry is not first  # a new loop gets its own registry
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(asyncio.run(main()))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == ["ok"] * 4


def test_a_loop_this_thread_ran_before_and_another_thread_runs_now(
    manual_clock: FakeClock,
) -> None:
    # The registry is remembered per thread; a loop that ran here before and is now
    # running a task in another thread must not be taken for this thread's loop
    # (its task would be watched, and cancelled, instead of ours).
    timeout = Timeout(1.0, clock=manual_clock)
    moved = asyncio.new_event_loop()
    assert moved.run_until_complete(timeout.acall(_echo, "remembered here")) == "remembered here"
    in_step, release = threading.Event(), threading.Event()
    survived: list[bool] = []

    async def hold_a_step() -> None:
        in_step.set()
        release.wait(5)  # blocks its loop mid-step: it has a current task
        await tick()  # a cancellation meant for another task would land here
        survived.append(True)

    other = threading.Thread(target=moved.run_until_complete, args=(hold_a_step(),))
    other.start()
    assert in_step.wait(5)

    async def here() -> bool:
        task = asyncio.create_task(timeout.acall(Hang()))
        await tick()
        manual_clock.advance(1.0)
        await tick()
        done = task.done()
        task.cancel()
        return done and isinstance(task.exception(), TimeoutExceeded)

    try:
        assert asyncio.run(here())  # our call timed out
    finally:
        release.set()
        other.join(5)
        moved.close()
    assert survived == [True]  # and the other thread's task was left alone


# ------------------------------------------------------------------------ optimistic


def test_sync_returns_in_time(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    assert timeout.call(lambda x, y: x + y, 1, y=2) == 3
    assert timeout(lambda x: x, 7) == 7


def test_sync_late_return_raises_and_discards_the_result(clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="late", clock=clock)
    seen = recorder(timeout)
    effects: list[str] = []

    def slow() -> str:
        clock.sleep(1.5)
        effects.append("written")
        return "result"

    with pytest.raises(TimeoutExceeded) as info:
        timeout.call(slow)
    assert (info.value.name, info.value.timeout) == ("late", 1.0)
    assert effects == ["written"]  # the side effect happened all the same
    assert seen == [TimeoutOccurred("late", 1.0, call=call_name(slow))]


def test_sync_exactly_at_the_deadline_is_too_late(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    assert timeout.call(clock.sleep, 0.999) is None
    with pytest.raises(TimeoutExceeded):
        timeout.call(clock.sleep, 0.001 + 0.999)


def test_sync_error_passes_through_even_when_late(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    def fail_late() -> None:
        clock.sleep(2.0)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        timeout.call(fail_late)
    assert remaining() is None


def test_sync_remaining(clock: FakeClock) -> None:
    outer = Timeout(2.0, clock=clock)
    looser = Timeout(5.0, clock=clock)
    tighter = Timeout(0.5, clock=clock)
    seen: list[float | None] = []

    def look() -> None:
        seen.append(remaining())
        clock.sleep(0.25)
        seen.append(remaining())

    outer.call(look)
    outer.call(looser.call, look)
    outer.call(tighter.call, look)
    assert seen == [2.0, 1.75, 2.0, 1.75, 0.5, 0.25]
    assert remaining() is None


def test_remaining_never_goes_negative(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    seen: list[float | None] = []

    def overrun() -> None:
        clock.sleep(3.0)
        seen.append(remaining())

    with pytest.raises(TimeoutExceeded):
        timeout.call(overrun)
    assert seen == [0.0]


def test_remaining_across_clocks() -> None:
    fast, slow = FakeClock(), FakeClock(start=100.0)
    outer = Timeout(2.0, clock=fast)
    seen: list[float | None] = []
    outer.call(Timeout(1.0, clock=slow).call, lambda: seen.append(remaining()))
    outer.call(Timeout(3.0, clock=slow).call, lambda: seen.append(remaining()))
    assert seen == [1.0, 2.0]


def test_sync_decorator_and_method(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    class Service:
        @timeout
        def left(self) -> float | None:
            return remaining()

    assert Service().left() == 1.0


# ----------------------------------------------------------------------- pessimistic


@pytest.fixture
def small_pool() -> Iterator[None]:
    previous = _workers._max_workers
    set_pessimistic_workers(2)
    yield
    set_pessimistic_workers(previous)


@contextlib.contextmanager
def ticking(clock: FakeClock, step: float = 0.05) -> Iterator[None]:
    """Let fake time flow while the block runs: ``step`` seconds per real millisecond."""
    stop = threading.Event()

    def body() -> None:
        while not stop.wait(0.001):
            clock.advance(step)

    thread = threading.Thread(target=body)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.usefixtures("small_pool")
def test_pessimistic_returns_the_result(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, mode="pessimistic", clock=manual_clock)
    result, thread_name = timeout.call(
        lambda x, y: (x + y, threading.current_thread().name), 1, y=2
    )
    assert result == 3
    assert thread_name.startswith("buttress-timeout")


@pytest.mark.usefixtures("small_pool")
def test_pessimistic_abandons_a_hung_call(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, mode="pessimistic", name="hung", clock=manual_clock)
    seen = recorder(timeout)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hung() -> str:
        started.set()
        release.wait(5)
        finished.set()
        return "late"

    with ticking(manual_clock), pytest.raises(TimeoutExceeded) as info:
        timeout.call(hung)
    assert info.value.name == "hung"
    assert seen == [TimeoutOccurred("hung", 1.0, call=call_name(hung))]
    assert started.is_set()
    assert not finished.is_set()  # abandoned, still running in the background
    release.set()
    assert finished.wait(5)


@pytest.mark.usefixtures("small_pool")
def test_pessimistic_call_still_queued_at_the_deadline_never_runs(
    manual_clock: FakeClock,
) -> None:
    set_pessimistic_workers(1)
    timeout = Timeout(1.0, mode="pessimistic", clock=manual_clock)
    release = threading.Event()
    ran: list[str] = []
    with ticking(manual_clock):
        with pytest.raises(TimeoutExceeded):
            timeout.call(release.wait, 5)  # holds the only worker
        with pytest.raises(TimeoutExceeded):
            timeout.call(ran.append, "queued")
    release.set()
    assert Timeout(60.0, mode="pessimistic").call(lambda: "after") == "after"
    assert ran == []  # dropped from the pool's queue, never started


@pytest.mark.usefixtures("small_pool")
def test_pessimistic_error_and_context_reach_the_caller(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, mode="pessimistic", clock=manual_clock)
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("r-42")
    assert timeout.call(lambda: (request_id.get(), remaining())) == ("r-42", 1.0)

    def fail() -> None:
        raise KeyError("from worker")

    with pytest.raises(KeyError, match="from worker"):
        timeout.call(fail)
    assert remaining() is None


def test_pessimistic_pool_size_is_checked_and_replaced() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError) as info:
            set_pessimistic_workers(bad)  # type: ignore[arg-type]
        assert info.value.path == "max_workers"
    set_pessimistic_workers(3)
    pool = _workers.pool()
    assert pool.max_workers == 3
    assert _workers.pool() is pool
    set_pessimistic_workers(4)
    assert _workers.pool() is not pool
    assert _workers.pool().max_workers == 4


async def test_pessimistic_mode_cancels_async_calls(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, mode="pessimistic", clock=manual_clock)
    task = asyncio.create_task(timeout.acall(Hang()))
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task


# -------------------------------------------------------------------------- pipeline


async def test_in_a_pipeline_the_timeout_frees_the_bulkhead_slot(manual_clock: FakeClock) -> None:
    bulkhead = Bulkhead(1)
    pipeline = Pipeline(Timeout(1.0, clock=manual_clock), bulkhead)
    hang = Hang()
    task = asyncio.create_task(pipeline.acall(hang))
    await tick()
    assert bulkhead.active == 1
    with pytest.raises(BulkheadFull):
        await pipeline.acall(_echo, "refused")
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert hang.cancelled == 1
    assert bulkhead.available == 1
    assert await pipeline.acall(_echo, "ok") == "ok"


def test_in_a_sync_pipeline_remaining_reaches_the_call(clock: FakeClock) -> None:
    pipeline = Pipeline(Timeout(3.0, clock=clock), Bulkhead(2), Timeout(1.0, clock=clock))
    assert pipeline.call(remaining) == 1.0

    def slow() -> None:
        clock.sleep(2.0)

    with pytest.raises(TimeoutExceeded):
        pipeline.call(slow)


def test_the_task_lookup_skips_a_python_current_task_only() -> None:
    import asyncio
    import types

    from buttress.policies.timeout._policy import _task_of

    tasks: dict[object, object] = {"loop": "task"}

    def python_current_task(loop: object = None) -> object:
        return tasks.get(loop)

    on_311 = types.SimpleNamespace(
        current_task=python_current_task, tasks=types.SimpleNamespace(_current_tasks=tasks)
    )
    assert _task_of(on_311)("loop") == "task"
    assert _task_of(on_311) == tasks.get  # the dict's own lookup: no Python frame
    in_c = types.SimpleNamespace(current_task=len, tasks=types.SimpleNamespace())
    assert _task_of(in_c) is len  # a C current_task is used as it is
    no_dict = types.SimpleNamespace(
        current_task=python_current_task, tasks=types.SimpleNamespace(_current_tasks=None)
    )
    assert _task_of(no_dict) is python_current_task
    assert _task_of(asyncio) is not None
