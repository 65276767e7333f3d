"""One time budget: remaining(), fit(), cap(), and telling a timeout from a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from buttress import Timeout, TimeoutExceeded, TimeoutOccurred, remaining
from buttress._deadline import cancelled_by_timeout, cap, fit
from buttress._events import call_name
from buttress.clock import FakeClock

from tests.helpers import tick


def test_outside_any_timeout_nothing_is_capped() -> None:
    assert remaining() is None
    fit(1e9, "anything")  # no budget, no refusal
    assert cap(5.0) == (5.0, None)
    assert cap(None) == (None, None)


def test_fit_refuses_a_wait_that_would_end_past_the_deadline(manual_clock: FakeClock) -> None:
    timeout = Timeout(0.2, name="total", clock=manual_clock)
    seen: list[TimeoutOccurred] = []
    timeout.subscribe(seen.append)

    def body() -> None:
        fit(0.1, "retry 'api'")  # fits
        fit(1.0, "retry 'api'")  # does not

    with pytest.raises(TimeoutExceeded) as caught:
        timeout.call(body)
    assert caught.value.name == "total"
    assert caught.value.timeout == 0.2
    assert caught.value.detail == "retry 'api' would wait 1.000s with 0.200s left"
    assert len(seen) == 1


def test_cap_shortens_waits_to_what_is_left(manual_clock: FakeClock) -> None:
    timeout = Timeout(0.5, name="total", clock=manual_clock)

    def body() -> tuple[object, ...]:
        short = cap(0.1)
        long = cap(2.0)
        forever = cap(None)
        return short, long, forever

    short, long, forever = timeout.call(body)
    assert short == (0.1, None)
    assert long[0] == forever[0] == 0.5
    # The expiry names the timeout, and the call it runs in its event.
    seen: list[object] = []
    timeout.subscribe(seen.append)
    for _, expiry in (long, forever):
        assert expiry is not None
        error = expiry.expired("waited")
        assert (error.name, error.detail) == ("total", "waited")
    assert [event.call for event in seen] == [call_name(body)] * 2  # type: ignore[attr-defined]
    with timeout:
        assert cap(2.0) == (0.5, timeout)  # a block runs no call: the timeout itself


def test_nested_timeouts_the_earliest_deadline_wins(manual_clock: FakeClock) -> None:
    outer = Timeout(1.0, name="outer", clock=manual_clock)
    inner = Timeout(5.0, name="inner", clock=manual_clock)

    def body() -> float | None:
        return remaining()

    assert outer.call(inner.call, body) == 1.0


async def test_a_timeout_cancellation_is_told_from_a_callers(manual_clock: FakeClock) -> None:
    seen: list[bool] = []

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            seen.append(cancelled_by_timeout(exc))
            raise

    timeout = Timeout(1.0, clock=manual_clock)
    task = asyncio.ensure_future(timeout.acall(hang))
    await tick(2)
    manual_clock.advance(1.0)
    with pytest.raises(TimeoutExceeded):
        await task
    assert seen == [True]

    task = asyncio.ensure_future(timeout.acall(hang))
    await tick(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [True, False]


def test_cancelled_by_timeout_outside_a_task() -> None:
    assert not cancelled_by_timeout(asyncio.CancelledError())
    assert not cancelled_by_timeout(ValueError())
