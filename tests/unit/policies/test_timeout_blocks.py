"""``async with Timeout(...)`` and ``with Timeout(...)``: blocks with a time limit."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import TimeoutExceeded
from buttress.events import Event
from buttress.policies.timeout import Timeout, TimeoutOccurred, remaining

from tests.helpers import tick


def recorder(timeout: Timeout) -> list[Event]:
    seen: list[Event] = []
    timeout.subscribe(seen.append)
    return seen


async def hang() -> None:
    await asyncio.Event().wait()


# ----------------------------------------------------------------------------- async


async def test_async_block_in_time(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    async with timeout as entered:
        assert entered is timeout
        assert remaining() == 1.0
        manual_clock.advance(0.25)
        await tick()
        assert remaining() == 0.75
    assert remaining() is None
    assert manual_clock.pending_timers == 0  # the block's timer went with it
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_async_block_cancelled_at_the_deadline(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="block", clock=manual_clock)
    seen = recorder(timeout)
    reached: list[str] = []

    async def body() -> None:
        async with timeout:
            try:
                await hang()
            finally:
                reached.append("cleanup ran")
        reached.append("after the block")  # never: the block raised

    task = asyncio.create_task(body())
    await tick()
    manual_clock.advance(0.999)
    await tick()
    assert not task.done()
    manual_clock.advance(0.001)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert (info.value.name, info.value.timeout) == ("block", 1.0)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert reached == ["cleanup ran"]
    assert seen == [TimeoutOccurred("block", 1.0)]  # a block names no call
    assert task.cancelling() == 0


async def test_async_block_outside_cancel_stays_a_cancellation(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    seen = recorder(timeout)

    async def body() -> None:
        async with timeout:
            await hang()

    task = asyncio.create_task(body())
    await tick()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == []
    assert manual_clock.pending_timers == 0


async def test_async_block_outside_cancel_racing_with_the_deadline(
    manual_clock: FakeClock,
) -> None:
    timeout = Timeout(1.0, clock=manual_clock)

    async def body() -> None:
        async with timeout:
            await hang()

    task = asyncio.create_task(body())
    await tick()
    task.cancel()
    manual_clock.advance(1.0)  # the timer cancels too, before the task runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1  # the outside request is still on record


async def test_async_block_that_swallows_the_cancel_goes_on(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)

    async def body() -> tuple[str, int]:
        async with timeout:
            try:
                await hang()
            except asyncio.CancelledError:
                pass
        return "went on", asyncio.current_task().cancelling()  # type: ignore[union-attr]

    task = asyncio.create_task(body())
    await tick()
    manual_clock.advance(1.0)
    assert await task == ("went on", 0)


async def test_async_blocks_nest(manual_clock: FakeClock) -> None:
    outer = Timeout(5.0, name="outer", clock=manual_clock)
    inner = Timeout(1.0, name="inner", clock=manual_clock)
    outer_seen = recorder(outer)

    async def body() -> list[float | None]:
        seen: list[float | None] = []
        async with outer:
            seen.append(remaining())
            with pytest.raises(TimeoutExceeded) as info:
                await _look_then_hang(inner, seen)
            assert info.value.name == "inner"
            seen.append(remaining())
            await hang()
        return seen

    task = asyncio.create_task(body())
    await tick()
    manual_clock.advance(1.0)
    await tick()
    assert not task.done()  # the inner block timed out; the outer goes on
    manual_clock.advance(4.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == "outer"
    assert len(outer_seen) == 1


async def _look_then_hang(limit: Timeout, seen: list[float | None]) -> None:
    async with limit:
        seen.append(remaining())
        await hang()


async def test_async_outer_block_expiring_first_reports_the_outer(
    manual_clock: FakeClock,
) -> None:
    outer = Timeout(1.0, name="outer", clock=manual_clock)
    inner = Timeout(5.0, name="inner", clock=manual_clock)
    inner_seen = recorder(inner)

    async def body() -> None:
        async with outer, inner:
            assert remaining() == 1.0  # the earliest deadline wins
            await hang()

    task = asyncio.create_task(body())
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == "outer"
    assert inner_seen == []
    assert task.cancelling() == 0


async def test_blocks_and_calls_mix(manual_clock: FakeClock) -> None:
    block = Timeout(5.0, name="block", clock=manual_clock)
    call = Timeout(1.0, name="call", clock=manual_clock)

    async def body() -> str:
        async with block:
            with pytest.raises(TimeoutExceeded) as info:
                await call.acall(hang)
            assert info.value.name == "call"
            return "block went on"

    task = asyncio.create_task(body())
    await tick()
    manual_clock.advance(1.0)
    assert await task == "block went on"

    task = asyncio.create_task(block.acall(_in_block, call))
    await tick()
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == "call"


async def _in_block(limit: Timeout) -> None:
    async with limit:
        await hang()


async def test_the_same_timeout_reentered_by_a_block(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="same", clock=manual_clock)
    seen = recorder(timeout)

    async def body() -> None:
        async with timeout:
            manual_clock.advance(0.5)
            async with timeout:  # the enclosing deadline comes first and binds
                assert remaining() == 0.5
                await hang()

    task = asyncio.create_task(body())
    await tick()
    manual_clock.advance(0.5)
    with pytest.raises(TimeoutExceeded):
        await task
    assert len(seen) == 1  # the outer block reports; the inner one stands aside
    assert manual_clock.pending_timers == 0


async def test_one_timeout_object_serves_concurrent_blocks(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    finished: list[int] = []

    async def body(index: int, gate: asyncio.Event) -> None:
        async with timeout:
            await gate.wait()
            finished.append(index)

    fast, slow = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(body(0, fast)), asyncio.create_task(body(1, slow))]
    await tick()
    fast.set()
    await tick(2)
    manual_clock.advance(1.0)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], TimeoutExceeded)
    assert finished == [0]


def timeouts_alive() -> int:
    gc.collect()
    return sum(isinstance(thing, Timeout) for thing in gc.get_objects())


async def test_a_timeout_made_for_one_block_leaves_nothing_behind() -> None:
    loop = asyncio.get_running_loop()
    armed_before = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
    alive = timeouts_alive()
    async with Timeout(60.0):
        await tick()
    assert timeouts_alive() == alive  # no timer, context or registry keeps it
    assert [h for h in loop._scheduled if not h.cancelled()] == armed_before  # type: ignore[attr-defined]


async def test_a_timeout_made_for_one_call_is_not_kept_alive_by_its_timer() -> None:
    alive = timeouts_alive()
    assert await Timeout(60.0).acall(_echo, "done") == "done"
    assert timeouts_alive() == alive


async def _echo(value: str) -> str:
    return value


async def test_blocks_left_out_of_order_are_refused(manual_clock: FakeClock) -> None:
    first = Timeout(1.0, clock=manual_clock)
    second = Timeout(1.0, clock=manual_clock)
    await first.__aenter__()
    await second.__aenter__()
    with pytest.raises(RuntimeError, match="innermost"):
        await first.__aexit__(None, None, None)
    await second.__aexit__(None, None, None)
    await first.__aexit__(None, None, None)
    assert remaining() is None


# ------------------------------------------------------------------------------ sync


def test_sync_block_in_time(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    with timeout as entered:
        assert entered is timeout
        clock.sleep(0.25)
        assert remaining() == 0.75
    assert remaining() is None


def test_sync_block_late_raises_on_exit(clock: FakeClock) -> None:
    timeout = Timeout(1.0, name="late", clock=clock)
    seen = recorder(timeout)
    done: list[str] = []

    def block() -> None:
        with timeout:
            clock.sleep(1.0)
            done.append("the block ran to its end")

    with pytest.raises(TimeoutExceeded) as info:
        block()
    assert info.value.name == "late"
    assert done == ["the block ran to its end"]  # optimistic: nothing is interrupted
    assert seen == [TimeoutOccurred("late", 1.0)]
    assert remaining() is None


def test_sync_block_error_passes_through_even_when_late(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    def block() -> None:
        with timeout:
            clock.sleep(2.0)
            raise KeyError("its own error")

    with pytest.raises(KeyError):
        block()
    assert remaining() is None


def test_sync_blocks_nest_with_each_other_and_calls(clock: FakeClock) -> None:
    outer = Timeout(2.0, name="outer", clock=clock)
    inner = Timeout(0.5, name="inner", clock=clock)
    seen: list[Any] = []
    with outer:
        with inner:
            seen.append(remaining())
        seen.append(remaining())
        seen.append(inner.call(remaining))
        with pytest.raises(TimeoutExceeded) as info, inner:
            clock.sleep(0.5)
        seen.append(info.value.name)
    assert seen == [0.5, 2.0, 0.5, "inner"]


def test_a_pessimistic_timeout_refuses_a_block() -> None:
    timeout = Timeout(1.0, mode="pessimistic")
    with pytest.raises(TypeError, match="optimistic"), timeout:
        pass
    assert remaining() is None


async def test_a_sync_block_in_async_code_is_optimistic(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)

    async def block() -> None:
        with timeout:
            await tick()
            clock.sleep(1.5)

    with pytest.raises(TimeoutExceeded):
        await block()
