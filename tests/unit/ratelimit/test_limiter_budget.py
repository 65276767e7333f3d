"""A waiting rate limiter inside a Timeout: every wait ends before the deadline, or none starts."""

from __future__ import annotations

import asyncio
import time

import pytest

from buttress import (
    Pipeline,
    RateLimited,
    RateLimiter,
    Timeout,
    TimeoutExceeded,
)
from buttress.clock import FakeClock
from buttress.events import Event


def limiter(clock: FakeClock, **options: object) -> RateLimiter:
    # One request a second; a refused caller may wait up to 5 s for the next.
    return RateLimiter("1/second", mode="wait", max_wait=5.0, clock=clock, **options)  # type: ignore[arg-type]


def test_a_wait_that_fits_the_budget_is_made() -> None:
    clock = FakeClock()
    limited = limiter(clock)
    pipeline = Pipeline(Timeout(2.0, clock=clock), limited)
    assert pipeline.call(lambda: "first") == "first"
    assert pipeline.call(lambda: "second") == "second"  # waited for the next window
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_wait_past_the_deadline_fails_at_once(mode: str) -> None:
    clock = FakeClock()
    limited = limiter(clock)
    timeout = Timeout(0.5, name="total", clock=clock)
    events: list[Event] = []
    limited.subscribe(events.append)
    timeout.subscribe(events.append)
    pipeline = Pipeline(timeout, limited)
    assert pipeline.call(lambda: 1) == 1

    async def two() -> int:
        return 2

    with pytest.raises(TimeoutExceeded) as caught:
        pipeline.call(lambda: 2) if mode == "sync" else asyncio.run(pipeline.acall(two))
    assert clock.sleeps == []  # no wait was begun
    assert caught.value.name == "total"
    assert caught.value.detail is not None
    assert "rate limiter" in caught.value.detail
    assert isinstance(caught.value.__cause__, RateLimited)
    assert sorted(type(e).__name__ for e in events) == ["CallRejected", "TimeoutOccurred"]


def test_the_limiters_own_max_wait_still_rejects_first() -> None:
    clock = FakeClock()
    limited = RateLimiter("1/minute", mode="wait", max_wait=1.0, clock=clock)
    pipeline = Pipeline(Timeout(120.0, clock=clock), limited)
    pipeline.call(lambda: None)
    with pytest.raises(RateLimited):
        pipeline.call(lambda: None)  # 60 s needed, 1 s allowed: the limiter's own answer


def test_on_the_real_clock_nothing_blocks() -> None:
    limited = RateLimiter("1/minute", mode="wait", max_wait=30.0)
    pipeline = Pipeline(Timeout(0.2), limited)
    pipeline.call(lambda: None)
    started = time.monotonic()
    with pytest.raises(TimeoutExceeded):
        pipeline.call(lambda: None)
    assert time.monotonic() - started < 0.5
