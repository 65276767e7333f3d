"""Event delivery: global and per-policy listeners, filtering, the enabled flag."""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Iterator

import pytest

from buttress import _events as events
from buttress.events import CallRejected, Emitter, Event, subscribe


@dataclasses.dataclass(frozen=True, slots=True)
class Ping(Event):
    """A test event."""

    n: int


@pytest.fixture(autouse=True)
def no_global_listeners() -> Iterator[None]:
    # Each test starts and must end with no global listener left behind.
    assert events._global == ()
    yield
    assert events._global == ()


def test_global_listener_receives_every_emitter() -> None:
    first, second = Emitter(), Emitter()
    got: list[Event] = []
    unsubscribe = subscribe(got.append)
    try:
        first.emit(Ping("a", 1))
        second.emit(CallRejected("b", "bulkhead_full"))
    finally:
        unsubscribe()
    assert got == [Ping("a", 1), CallRejected("b", "bulkhead_full")]


def test_per_emitter_listener_receives_only_its_own() -> None:
    mine, other = Emitter(), Emitter()
    got: list[Event] = []
    unsubscribe = mine.subscribe(got.append)
    mine.emit(Ping("mine", 1))
    other.emit(Ping("other", 2))
    unsubscribe()
    mine.emit(Ping("mine", 3))
    assert got == [Ping("mine", 1)]


def test_local_listeners_hear_before_global_ones() -> None:
    emitter = Emitter()
    order: list[str] = []
    stop_global = subscribe(lambda e: order.append("global"))
    stop_local = emitter.subscribe(lambda e: order.append("local"))
    try:
        emitter.emit(Ping("p", 0))
    finally:
        stop_global()
        stop_local()
    assert order == ["local", "global"]


def test_type_filtering() -> None:
    emitter = Emitter()
    pings: list[Event] = []
    rejections: list[Event] = []
    both: list[Event] = []
    unsubscribers = [
        emitter.subscribe(pings.append, Ping),
        subscribe(rejections.append, CallRejected),
        subscribe(both.append, Ping, CallRejected),
    ]
    try:
        emitter.emit(Ping("p", 1))
        emitter.emit(CallRejected("p", "rate_limited"))
        emitter.emit(Event("p"))
    finally:
        for unsubscribe in unsubscribers:
            unsubscribe()
    assert pings == [Ping("p", 1)]
    assert rejections == [CallRejected("p", "rate_limited")]
    assert both == [Ping("p", 1), CallRejected("p", "rate_limited")]


def test_filtering_by_a_base_class_matches_subclasses() -> None:
    emitter = Emitter()
    got: list[Event] = []
    unsubscribe = emitter.subscribe(got.append, Event)
    emitter.emit(Ping("p", 1))
    unsubscribe()
    assert got == [Ping("p", 1)]


def test_unsubscribe_is_idempotent_and_precise() -> None:
    emitter = Emitter()
    got: list[Event] = []
    first = emitter.subscribe(got.append)
    second = emitter.subscribe(got.append)  # the same listener twice: two entries
    emitter.emit(Ping("p", 1))
    first()
    first()
    emitter.emit(Ping("p", 2))
    second()
    emitter.emit(Ping("p", 3))
    assert got == [Ping("p", 1), Ping("p", 1), Ping("p", 2)]
    assert emitter.enabled is False


def test_enabled_follows_local_listeners() -> None:
    emitter = Emitter()
    assert emitter.enabled is False
    unsubscribe = emitter.subscribe(lambda e: None)
    assert emitter.enabled is True
    unsubscribe()
    assert emitter.enabled is False


def test_enabled_flips_on_every_live_emitter_for_global_listeners() -> None:
    emitters = [Emitter() for _ in range(5)]
    assert [e.enabled for e in emitters] == [False] * 5
    first = subscribe(lambda e: None)
    second = subscribe(lambda e: None)
    assert [e.enabled for e in emitters] == [True] * 5
    born_while_listening = Emitter()
    assert born_while_listening.enabled is True
    first()
    assert all(e.enabled for e in [*emitters, born_while_listening])
    second()
    assert [e.enabled for e in [*emitters, born_while_listening]] == [False] * 6


def test_local_listener_keeps_an_emitter_enabled_when_globals_go() -> None:
    emitter, bystander = Emitter(), Emitter()
    stop_local = emitter.subscribe(lambda e: None)
    stop_global = subscribe(lambda e: None)
    stop_global()
    assert (emitter.enabled, bystander.enabled) == (True, False)
    stop_local()
    assert emitter.enabled is False


def test_dead_emitters_are_forgotten() -> None:
    emitter = Emitter()
    assert emitter in set(events._emitters)
    del emitter
    gc.collect()
    before = len(events._emitters)
    stop = subscribe(lambda e: None)
    stop()
    assert len(events._emitters) == before


def test_a_failing_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emitter = Emitter()
    got: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    stops = [
        emitter.subscribe(broken),
        emitter.subscribe(got.append),
        subscribe(broken),
        subscribe(got.append),
    ]
    try:
        with caplog.at_level(logging.ERROR, logger="buttress.events"):
            emitter.emit(Ping("p", 1))
    finally:
        for stop in stops:
            stop()
    assert got == [Ping("p", 1), Ping("p", 1)]
    failures = [r for r in caplog.records if r.name == "buttress.events"]
    assert len(failures) == 2
    assert all(r.levelno == logging.ERROR for r in failures)
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert "Ping(policy='p', call='', n=1)" in failures[0].getMessage()


def test_base_exceptions_from_listeners_propagate() -> None:
    emitter = Emitter()

    def interrupt(event: Event) -> None:
        raise KeyboardInterrupt

    stop = emitter.subscribe(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            emitter.emit(Ping("p", 1))
    finally:
        stop()


def test_events_are_frozen_and_slotted() -> None:
    event = CallRejected("breaker", "circuit_open")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.reason = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.policy = "other"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert event == CallRejected("breaker", "circuit_open")
    assert hash(event) == hash(CallRejected("breaker", "circuit_open"))
    ping = Ping("p", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ping.n = 2  # type: ignore[misc]
