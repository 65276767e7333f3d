"""The breaker's events: they name the call, and are delivered after the lock, in order."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import CircuitOpen
from buttress.events import CallRejected, Event, call_name
from buttress.policies.circuit import CircuitBreaker, CircuitState, CircuitStateChanged
from buttress.policies.circuit import _engine as engine_module

from tests.unit.policies.test_circuit import ASYNC_WAYS, SYNC_WAYS, SyncWay

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN


def fetch_user() -> str:
    raise ConnectionError("down")


async def afetch_user() -> str:
    raise ConnectionError("down")


def recorder(breaker: CircuitBreaker) -> list[Event]:
    events: list[Event] = []
    breaker.subscribe(events.append)
    return events


# ------------------------------------------------------------------- call names


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_events_a_call_caused_name_it(way: SyncWay, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock, name="users")
    events = recorder(breaker)
    with pytest.raises(ConnectionError):
        way(breaker, fetch_user)
    with pytest.raises(CircuitOpen):
        way(breaker, fetch_user)
    name = {"via_with": "", "via_dunder_call": events[0].call}.get(
        way.__name__, call_name(fetch_user)
    )
    assert events == [
        CircuitStateChanged("users", CLOSED, OPEN, "failure_ratio", call=name),
        CallRejected("users", "circuit_open", call=name),
    ]


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_async_events_name_the_call(way: Any, clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock, name="users")
    events = recorder(breaker)
    with pytest.raises(ConnectionError):
        await way(breaker, afetch_user)
    with pytest.raises(CircuitOpen):
        await way(breaker, afetch_user)
    name = "" if way.__name__ == "avia_with" else call_name(afetch_user)
    assert [getattr(e, "call", None) for e in events] == [name, name]
    assert name in ("", "tests.unit.policies.test_circuit_events.afetch_user")


def test_manual_transitions_name_no_call(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock, name="users")
    events = recorder(breaker)
    breaker.isolate()
    breaker.reset()
    assert [e.call for e in events] == ["", ""]


def test_the_half_open_move_names_the_call_that_found_it(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, open_duration=1.0, clock=clock, name="u")
    with pytest.raises(ConnectionError):
        breaker.call(fetch_user)
    events = recorder(breaker)
    clock.advance(1.0)

    def probe() -> str:
        return "ok"

    breaker.call(probe)
    assert events == [
        CircuitStateChanged("u", OPEN, HALF_OPEN, "open_duration_elapsed", call=call_name(probe)),
        CircuitStateChanged("u", HALF_OPEN, CLOSED, "trials_succeeded", call=call_name(probe)),
    ]


def test_no_name_is_worked_out_without_listeners(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(fn: object) -> str:
        raise AssertionError("call_name with nobody listening")

    monkeypatch.setattr(engine_module, "call_name", forbidden)
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(fetch_user)
    with pytest.raises(CircuitOpen):
        breaker.call(fetch_user)
    assert breaker._engine._pending == type(breaker._engine._pending)()


# ------------------------------------------------------- delivered after the lock


def test_listeners_run_without_the_breakers_lock(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    lock = breaker._engine._lock
    free: list[bool] = []

    def listener(event: Event) -> None:
        # Another thread can take the lock while the listener runs: it is not held.
        def take() -> None:
            if lock.acquire(timeout=5):
                free.append(True)
                lock.release()

        thread = threading.Thread(target=take)
        thread.start()
        thread.join()

    breaker.subscribe(listener)
    with pytest.raises(ConnectionError):
        breaker.call(fetch_user)
    assert free == [True]


def test_a_slow_listener_holds_up_no_other_call() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(window=1, min_calls=1, open_duration=0.0, clock=clock, name="b")
    inside, release = threading.Event(), threading.Event()
    seen: list[tuple[str, str]] = []

    def slow_listener(event: Event) -> None:
        if isinstance(event, CircuitStateChanged):
            seen.append((event.new.value, event.reason))
            if len(seen) == 1:
                inside.set()
                assert release.wait(5)

    breaker.subscribe(slow_listener)

    def failing() -> None:
        with pytest.raises(ConnectionError):
            breaker.call(fetch_user)

    first = threading.Thread(target=failing)
    first.start()
    assert inside.wait(5)  # the first thread is in the listener, with the trip's event
    # Meanwhile another thread is admitted and recorded at once (the lock is free),
    # and makes two transitions of its own: their events wait their turn.
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is CLOSED
    assert seen == [("open", "failure_ratio")]
    release.set()
    first.join(5)
    assert seen == [
        ("open", "failure_ratio"),
        ("half_open", "open_duration_elapsed"),
        ("closed", "trials_succeeded"),
    ]


def test_events_arrive_in_transition_order_from_many_threads(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, open_duration=0.0, clock=clock)
    seen: list[CircuitState] = []
    breaker.subscribe(lambda e: seen.append(e.new), CircuitStateChanged)
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for index in range(200):
            try:
                breaker.call(fetch_user if index % 2 else (lambda: "ok"))
            except (ConnectionError, CircuitOpen):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Each event's old state is the previous event's new state: no two swapped.
    previous = CLOSED
    allowed = {CLOSED: {OPEN}, OPEN: {HALF_OPEN}, HALF_OPEN: {OPEN, CLOSED}}
    for state in seen:
        assert state in allowed[previous], (previous, state)
        previous = state
    assert seen  # the run did make transitions
    assert not breaker._engine._pending


def test_a_listeners_own_action_is_delivered_after_it_returns(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    order: list[str] = []

    def listener(event: Event) -> None:
        if isinstance(event, CircuitStateChanged):
            order.append(f"start {event.new.value}")
            if event.new is OPEN:
                breaker.reset()
                assert breaker.state is CLOSED  # applied at once
            order.append(f"end {event.new.value}")

    breaker.subscribe(listener)
    with pytest.raises(ConnectionError):
        breaker.call(fetch_user)
    assert order == ["start open", "end open", "start closed", "end closed"]


def test_a_failing_listener_leaves_no_event_behind(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(window=1, min_calls=1, clock=clock)
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    breaker.subscribe(broken)
    breaker.subscribe(seen.append)
    with pytest.raises(ConnectionError):
        breaker.call(fetch_user)
    breaker.reset()
    assert [type(e).__name__ for e in seen] == ["CircuitStateChanged"] * 2
    assert "listener bug" in caplog.text
