"""``buttress.testing``: the testing switch (zero backoff, timeouts off) restores what
it found, and does what it says — and nothing more."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import buttress.testing
from buttress import Bulkhead, BulkheadFull, Pipeline, Retry, Timeout, remaining
from buttress._switches import SWITCHES
from buttress.clock import FakeClock
from buttress.testing import is_testing, set_testing, set_zero_backoff, zero_backoff

from tests.helpers import WatchedClock, tick


@pytest.fixture(autouse=True)
def restore_switches() -> Iterator[None]:
    before = (SWITCHES.zero_backoff, SWITCHES.no_timeouts)
    yield
    SWITCHES.zero_backoff, SWITCHES.no_timeouts = before


def test_off_by_default() -> None:
    assert SWITCHES.zero_backoff is False
    assert SWITCHES.no_timeouts is False
    assert not is_testing()


# ------------------------------------------------------------------------- zero backoff


def test_set_zero_backoff() -> None:
    set_zero_backoff()
    assert SWITCHES.zero_backoff is True
    assert SWITCHES.no_timeouts is False  # only the retry half
    set_zero_backoff(False)
    assert SWITCHES.zero_backoff is False
    set_zero_backoff(enabled=True)
    assert SWITCHES.zero_backoff is True


def test_context_manager_restores_off() -> None:
    with zero_backoff():
        assert SWITCHES.zero_backoff is True
    assert SWITCHES.zero_backoff is False


def test_context_manager_restores_on() -> None:
    set_zero_backoff(True)
    with zero_backoff():
        assert SWITCHES.zero_backoff is True
    assert SWITCHES.zero_backoff is True


def test_nested_blocks_restore_in_order() -> None:
    with zero_backoff():
        set_zero_backoff(False)  # a test switching it off inside the block
        with zero_backoff():
            assert SWITCHES.zero_backoff is True
        assert SWITCHES.zero_backoff is False
    assert SWITCHES.zero_backoff is False


def test_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="inside"), zero_backoff():
        raise RuntimeError("inside")
    assert SWITCHES.zero_backoff is False


def test_fake_clock_is_offered_here() -> None:
    assert buttress.testing.FakeClock is FakeClock
    assert sorted(buttress.testing.__all__) == [
        "FakeClock",
        "is_testing",
        "set_testing",
        "set_zero_backoff",
        "zero_backoff",
    ]


# ------------------------------------------------------------------------ testing mode


def test_set_testing_flips_both_halves() -> None:
    set_testing(True)
    assert (SWITCHES.zero_backoff, SWITCHES.no_timeouts) == (True, True)
    assert is_testing()
    set_testing(False)
    assert (SWITCHES.zero_backoff, SWITCHES.no_timeouts) == (False, False)
    set_testing()
    assert is_testing()


def test_testing_block_restores_what_it_found() -> None:
    set_zero_backoff(True)
    with set_testing(False):
        assert (SWITCHES.zero_backoff, SWITCHES.no_timeouts) == (False, False)
    assert (SWITCHES.zero_backoff, SWITCHES.no_timeouts) == (True, False)
    with set_testing(True):
        assert is_testing()
    assert (SWITCHES.zero_backoff, SWITCHES.no_timeouts) == (True, False)
    with pytest.raises(KeyError), set_testing(True):
        raise KeyError("inside")
    assert (SWITCHES.zero_backoff, SWITCHES.no_timeouts) == (True, False)


def test_retry_waits_nothing(clock: FakeClock) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("down")
        return "ok"

    retry = Retry(3, delay=10.0, jitter="none", clock=clock)
    with set_testing(True):
        assert retry.call(flaky) == "ok"
    assert len(attempts) == 3  # attempt counts are unchanged
    assert clock.monotonic() == 0.0  # no time spent waiting


def test_sync_timeout_is_a_pass_through(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    seen: list[float | None] = []

    def slow() -> str:
        seen.append(remaining())
        clock.sleep(5.0)
        return "late but kept"

    with set_testing(True):
        assert timeout.call(slow) == "late but kept"
        with timeout:
            seen.append(remaining())
            clock.sleep(5.0)
    assert seen == [None, None]  # no deadline published
    with pytest.raises(TimeoutError):
        timeout.call(slow)  # switched back on: the same policy times out again


def test_the_switch_is_read_per_call_not_when_built(clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=clock)
    decorated = timeout(lambda: clock.sleep(2.0))
    pipeline = Pipeline(timeout, Bulkhead(1))
    with pytest.raises(TimeoutError):
        decorated()
    set_testing(True)
    decorated()
    pipeline.call(clock.sleep, 2.0)


def test_pessimistic_timeout_runs_in_the_callers_thread(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, mode="pessimistic", clock=manual_clock)
    with set_testing(True):
        assert timeout.call(threading.current_thread) is threading.current_thread()


async def test_async_timeout_never_cancels(manual_clock: FakeClock) -> None:
    timeout = Timeout(1.0, clock=manual_clock)
    gate = asyncio.Event()
    seen: list[float | None] = []

    async def slow() -> str:
        seen.append(remaining())
        await gate.wait()
        return "finished"

    async def in_a_block() -> str:
        async with timeout:
            seen.append(remaining())
            await gate.wait()
        return "block finished"

    with set_testing(True):
        call = asyncio.create_task(timeout.acall(slow))
        block = asyncio.create_task(in_a_block())
        await tick()
        manual_clock.advance(10.0)
        await tick()
        assert not call.done()
        assert not block.done()
        assert manual_clock.pending_timers == 0  # no timer armed at all
        gate.set()
        assert await call == "finished"
        assert await block == "block finished"
    assert seen == [None, None]


def test_bulkhead_queues_are_not_changed() -> None:
    # Documented: the switch turns timeouts off, so a bulkhead queue inside one waits
    # its own max_wait, not the (absent) deadline.
    manual_clock = WatchedClock()
    bulkhead = Bulkhead(1, max_queue=1, max_wait=2.0, clock=manual_clock)
    pipeline = Pipeline(Timeout(0.5, clock=manual_clock), bulkhead)
    outcome: list[BaseException] = []

    def queued() -> None:
        try:
            pipeline.call(int)
        except BaseException as exc:
            outcome.append(exc)

    with set_testing(True), bulkhead:
        thread = threading.Thread(target=queued)
        thread.start()
        while manual_clock.waiting == 0:
            threading.Event().wait(0.001)
        manual_clock.advance(0.5)
        assert bulkhead.queued == 1  # still waiting past the timeout's 0.5 s
        manual_clock.advance(1.5)
        thread.join(5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], BulkheadFull)
    assert outcome[0].reason == "queue_timeout"
