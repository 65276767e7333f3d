"""The real clock's plumbing and the fake clock tests rely on."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from buttress.clock import MONOTONIC, Clock, FakeClock, MonotonicClock

from tests.helpers import tick

WALL = 1_767_225_600.0

# ----------------------------------------------------------------------- MonotonicClock


def test_monotonic_clock_reads_the_real_clocks() -> None:
    first = MONOTONIC.monotonic()
    second = MONOTONIC.monotonic()
    assert second >= first
    assert abs(MONOTONIC.time() - time.time()) < 5.0
    assert isinstance(MONOTONIC, MonotonicClock)
    assert isinstance(MONOTONIC, Clock)
    assert repr(MONOTONIC) == "MonotonicClock()"


def test_monotonic_clock_sleep_zero_returns() -> None:
    MONOTONIC.sleep(0)


def test_monotonic_clock_wait() -> None:
    event = threading.Event()
    assert MONOTONIC.wait(event, 0) is False
    event.set()
    assert MONOTONIC.wait(event, 30) is True  # set: returns at once


def test_monotonic_clock_call_later_needs_a_loop() -> None:
    with pytest.raises(RuntimeError):
        MONOTONIC.call_later(0, lambda: None)


async def test_monotonic_clock_asleep_and_timers() -> None:
    await MONOTONIC.asleep(0)
    fired: list[str] = []
    MONOTONIC.call_later(0, lambda: fired.append("kept"))
    MONOTONIC.call_later(0, lambda: fired.append("cancelled")).cancel()
    assert fired == []  # never synchronously
    await tick(2)
    assert fired == ["kept"]


# --------------------------------------------------------------------- FakeClock: basics


def test_fake_clock_starts_where_told() -> None:
    clock = FakeClock()
    assert (clock.monotonic(), clock.time(), clock.auto_advance) == (0.0, WALL, True)
    late = FakeClock(100.0, wall=50.0, auto_advance=False)
    assert (late.monotonic(), late.time(), late.auto_advance) == (100.0, 50.0, False)
    assert isinstance(clock, Clock)
    assert repr(late) == "FakeClock(now=100.0, auto_advance=False)"


def test_advance_moves_both_clocks() -> None:
    clock = FakeClock(10.0)
    clock.advance(2.5)
    clock.advance(0)
    assert clock.monotonic() == 12.5
    assert clock.time() == WALL + 2.5


def test_negative_advance_is_rejected() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.001)
    assert clock.monotonic() == 0.0


def test_auto_sleep_jumps_and_records() -> None:
    clock = FakeClock()
    clock.sleep(5)
    clock.sleep(0.25)
    clock.sleep(-1)  # recorded, but time does not go back
    assert clock.sleeps == [5, 0.25, -1]
    assert clock.monotonic() == 5.25


def test_auto_wait_times_out_at_once_or_sees_the_event() -> None:
    clock = FakeClock()
    event = threading.Event()
    assert clock.wait(event, 3.0) is False
    assert clock.monotonic() == 3.0
    event.set()
    assert clock.wait(event, 3.0) is True
    assert clock.monotonic() == 3.0  # no time passes for an event already set


async def test_auto_asleep_jumps_records_and_yields() -> None:
    clock = FakeClock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.ensure_future(other())
    await clock.asleep(7)
    assert ran == ["other"]  # asleep let the loop run other tasks
    assert clock.sleeps == [7]
    assert clock.monotonic() == 7.0
    await task


# ---------------------------------------------------------------------- FakeClock: timers


async def test_timers_fire_in_due_order_at_their_time() -> None:
    clock = FakeClock(auto_advance=False)
    fired: list[tuple[str, float]] = []

    def at(label: str) -> None:
        fired.append((label, clock.monotonic()))

    clock.call_later(3, lambda: at("c"))
    clock.call_later(1, lambda: at("a"))
    clock.call_later(2, lambda: at("b1"))
    clock.call_later(2, lambda: at("b2"))  # same due time: armed order
    clock.call_later(10, lambda: at("late"))
    assert clock.pending_timers == 5
    clock.advance(0.5)
    assert fired == []
    clock.advance(2.5)
    assert fired == [("a", 1.0), ("b1", 2.0), ("b2", 2.0), ("c", 3.0)]
    assert clock.monotonic() == 3.0
    assert clock.pending_timers == 1
    clock.advance(7)
    assert fired[-1] == ("late", 10.0)
    assert clock.pending_timers == 0


async def test_cancelled_timers_do_not_fire() -> None:
    clock = FakeClock(auto_advance=False)
    fired: list[str] = []
    handle = clock.call_later(1, lambda: fired.append("cancelled"))
    clock.call_later(1, lambda: fired.append("kept"))
    handle.cancel()
    assert clock.pending_timers == 1
    clock.advance(5)
    assert fired == ["kept"]


async def test_timer_armed_by_a_timer_fires_in_the_same_advance() -> None:
    clock = FakeClock(auto_advance=False)
    fired: list[float] = []

    def first() -> None:
        fired.append(clock.monotonic())
        clock.call_later(1, lambda: fired.append(clock.monotonic()))

    clock.call_later(1, first)
    clock.advance(3)
    assert fired == [1.0, 2.0]
    assert clock.monotonic() == 3.0


async def test_zero_delay_timer_runs_on_the_loop_without_advance() -> None:
    clock = FakeClock(auto_advance=False)
    fired: list[str] = []
    clock.call_later(0, lambda: fired.append("soon"))
    assert fired == []
    await tick()
    assert fired == ["soon"]
    assert clock.monotonic() == 0.0


async def test_timers_fire_on_their_loop_when_advanced_from_another_thread() -> None:
    clock = FakeClock(auto_advance=False)
    loop = asyncio.get_running_loop()
    fired_on: list[tuple[int, asyncio.AbstractEventLoop]] = []
    clock.call_later(
        1, lambda: fired_on.append((threading.get_ident(), asyncio.get_running_loop()))
    )
    await asyncio.to_thread(clock.advance, 1)
    await tick(2)
    assert fired_on == [(threading.get_ident(), loop)]


def test_timer_armed_outside_a_loop_fires_in_advance() -> None:
    clock = FakeClock(auto_advance=False)
    fired: list[int] = []
    clock.call_later(2, lambda: fired.append(threading.get_ident()))
    clock.advance(2)
    assert fired == [threading.get_ident()]


# --------------------------------------------------------------- FakeClock: manual waits


async def test_manual_asleep_resumes_on_advance() -> None:
    clock = FakeClock(auto_advance=False)
    task = asyncio.ensure_future(clock.asleep(5))
    await tick()
    assert clock.sleeps == [5]
    assert clock.pending_timers == 1
    clock.advance(4.9)
    await tick(2)
    assert not task.done()
    clock.advance(0.1)
    await tick(2)
    assert task.done()
    await task
    assert clock.pending_timers == 0


async def test_manual_asleep_cancelled_disarms_its_timer() -> None:
    clock = FakeClock(auto_advance=False)
    task = asyncio.ensure_future(clock.asleep(5))
    await tick()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending_timers == 0


def test_manual_sleep_blocks_until_advanced() -> None:
    clock = FakeClock(auto_advance=False)
    done = threading.Event()

    def sleeper() -> None:
        clock.sleep(3)
        done.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        while not clock.sleeps:  # the sleep is recorded once its deadline is fixed
            done.wait(0.001)
        clock.advance(2.9)
        assert not done.wait(0.05)
        clock.advance(0.1)
        assert done.wait(5)
    finally:
        clock.advance(100)
        thread.join(5)
    assert clock.sleeps == [3]


def test_manual_wait_returns_when_another_thread_sets_the_event() -> None:
    clock = FakeClock(auto_advance=False)
    event = threading.Event()
    setter = threading.Thread(target=event.set)
    setter.start()
    assert clock.wait(event, 60.0) is True
    setter.join(5)
    assert clock.monotonic() == 0.0


def test_manual_wait_times_out_when_time_is_advanced() -> None:
    clock = FakeClock(auto_advance=False)
    stop = threading.Event()

    def advancer() -> None:
        while not stop.is_set():
            clock.advance(1.0)
            stop.wait(0.001)

    thread = threading.Thread(target=advancer)
    thread.start()
    try:
        assert clock.wait(threading.Event(), 5.0) is False
    finally:
        stop.set()
        thread.join(5)
    assert clock.monotonic() >= 5.0
