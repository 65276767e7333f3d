"""What a policy inside a Timeout sees when its call is cancelled: a buttress timeout
(``cancelled_by_timeout`` true: a timeout failure) or the caller's cancellation
(false: nothing happened) — through calls, blocks, nesting and races."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from buttress._deadline import cancelled_by_timeout
from buttress._strategy import Call, Policy
from buttress.clock import FakeClock
from buttress.errors import TimeoutExceeded
from buttress.pipeline import Pipeline
from buttress.policies.timeout import Timeout

from tests.helpers import tick

R = TypeVar("R")


class Judge(Policy):
    """Records, for each cancellation passing through, whether it was a timeout."""

    def __init__(self) -> None:
        super().__init__(name="judge")
        self.verdicts: list[bool] = []

    def execute(self, call: Call[R]) -> R:
        return call()

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        try:
            return await call()
        except asyncio.CancelledError as exc:
            self.verdicts.append(cancelled_by_timeout(exc))
            raise


async def hang() -> None:
    await asyncio.Event().wait()


async def start(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coro)
    await tick()
    return task


async def test_a_timeout_is_a_timeout(manual_clock: FakeClock) -> None:
    judge = Judge()
    task = await start(Pipeline(Timeout(1.0, clock=manual_clock), judge).acall(hang))
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert judge.verdicts == [True]


async def test_a_callers_cancellation_is_nothing(manual_clock: FakeClock) -> None:
    judge = Judge()
    task = await start(Pipeline(Timeout(1.0, clock=manual_clock), judge).acall(hang))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert judge.verdicts == [False]


async def test_a_block_timeout_is_a_timeout(manual_clock: FakeClock) -> None:
    judge = Judge()

    async def body() -> None:
        async with Timeout(1.0, clock=manual_clock):
            await judge.acall(hang)

    task = await start(body())
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert judge.verdicts == [True]


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [(1.0, 5.0, "outer"), (5.0, 1.0, "inner"), (1.0, 1.0, "outer")],
)
async def test_nested_timeouts_every_layer_sees_a_timeout(
    manual_clock: FakeClock, outer: float, inner: float, expected: str
) -> None:
    outside, between, inside = Judge(), Judge(), Judge()
    pipeline = Pipeline(
        outside,
        Timeout(outer, name="outer", clock=manual_clock),
        between,
        Timeout(inner, name="inner", clock=manual_clock),
        inside,
    )
    task = await start(pipeline.acall(hang))
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded) as info:
        await task
    assert info.value.name == expected
    assert inside.verdicts == [True]
    # Between the two, the cancellation is still a timeout's when the outer one
    # fired; when only the inner one did, it arrives as TimeoutExceeded instead.
    assert between.verdicts == ([True] if expected == "outer" else [])
    assert outside.verdicts == []  # a TimeoutExceeded, not a cancellation, gets out


async def test_nested_timeouts_and_a_callers_cancellation(manual_clock: FakeClock) -> None:
    inside = Judge()
    pipeline = Pipeline(Timeout(1.0, clock=manual_clock), Timeout(2.0, clock=manual_clock), inside)
    task = await start(pipeline.acall(hang))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inside.verdicts == [False]


@pytest.mark.parametrize("timer_first", [False, True], ids=["caller-first", "timer-first"])
async def test_a_callers_cancellation_racing_with_the_timer_is_the_callers(
    manual_clock: FakeClock, timer_first: bool
) -> None:
    inside = Judge()
    task = await start(Pipeline(Timeout(1.0, clock=manual_clock), inside).acall(hang))
    # Both ask before the task runs again: the caller's request wins (the Timeout
    # lets CancelledError through), and the policy inside agrees.
    if timer_first:
        manual_clock.advance(1.0)
        task.cancel()
    else:
        task.cancel()
        manual_clock.advance(1.0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inside.verdicts == [False]
    assert task.cancelling() == 1


async def test_the_mark_does_not_outlive_the_cancellation(manual_clock: FakeClock) -> None:
    inside = Judge()
    pipeline = Pipeline(Timeout(1.0, clock=manual_clock), inside)

    async def twice() -> list[Any]:
        outcomes: list[Any] = []
        for _ in range(2):
            try:
                await pipeline.acall(hang)
            except TimeoutExceeded as exc:
                outcomes.append(exc)
        # The same task, cancelled by its caller now: nothing left over says timeout.
        await hang()
        return outcomes

    task = await start(twice())
    manual_clock.advance(1.0)
    await tick(3)
    manual_clock.advance(1.0)
    await tick(3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inside.verdicts == [True, True]


def test_sync_cancellation_is_not_a_thing() -> None:
    assert not cancelled_by_timeout(asyncio.CancelledError())
