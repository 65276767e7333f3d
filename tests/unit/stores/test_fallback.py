"""The fallback store against a primary that fails on demand (Redis itself: integration)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from buttress.clock import FakeClock
from buttress.errors import ConfigError, is_transient
from buttress.events import Event
from buttress.ratelimit import Decision, FixedWindow
from buttress.stores import (
    FallbackStore,
    MemoryStore,
    Store,
    StoreError,
    StoreFellBack,
    StoreRecovered,
    StoreUnavailable,
)
from buttress.stores.base import Algorithm, MultiRequest, Request
from buttress.stores.fallback import is_outage


class Flaky:
    """A memory store that raises ``error`` while ``down`` is set, counting its calls."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock, name="flaky")
        self.name = "flaky"
        self.down = False
        self.error: Exception = StoreUnavailable("flaky", "connection refused")
        self.calls = 0
        self.entered: threading.Event | None = None
        self.release: threading.Event | None = None

    def _check(self) -> None:
        self.calls += 1
        entered, release = self.entered, self.release
        if entered is not None and release is not None:
            entered.set()
            release.wait(5)
        if self.down:
            raise self.error

    def decide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        self._check()
        return self.inner.decide(key, algorithm, cost, now)

    async def adecide(
        self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
    ) -> Decision:
        self._check()
        return self.inner.decide(key, algorithm, cost, now)

    def decide_many(self, requests: Sequence[Request], now: float | None = None) -> list[Decision]:
        self._check()
        return self.inner.decide_many(requests, now)

    async def adecide_many(
        self, requests: Sequence[Request], now: float | None = None
    ) -> list[Decision]:
        self._check()
        return self.inner.decide_many(requests, now)

    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        self._check()
        return self.inner.decide_all(key, algorithms, cost, now)

    async def adecide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        self._check()
        return self.inner.decide_all(key, algorithms, cost, now)

    def decide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        self._check()
        return self.inner.decide_all_many(requests, now)

    async def adecide_all_many(
        self, requests: Sequence[MultiRequest], now: float | None = None
    ) -> list[tuple[Decision, ...]]:
        self._check()
        return self.inner.decide_all_many(requests, now)

    def reset(self, key: str, algorithm: Algorithm) -> None:
        self._check()
        self.inner.reset(key, algorithm)

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        self._check()
        self.inner.reset_all(key, algorithms)

    async def areset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        self._check()
        self.inner.reset_all(key, algorithms)

    async def areset(self, key: str, algorithm: Algorithm) -> None:
        self._check()
        self.inner.reset(key, algorithm)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


WINDOW = FixedWindow(2, 1000.0)


@pytest.fixture
def flaky(manual_clock: FakeClock) -> Flaky:
    return Flaky(manual_clock)


@pytest.fixture
def store(flaky: Flaky, manual_clock: FakeClock) -> FallbackStore:
    return FallbackStore(flaky, probe_interval=5.0, clock=manual_clock)  # type: ignore[arg-type]


def collect(store: FallbackStore) -> list[Event]:
    events: list[Event] = []
    store.subscribe(events.append)
    return events


def test_switches_to_memory_and_back(
    store: FallbackStore, flaky: Flaky, manual_clock: FakeClock
) -> None:
    events = collect(store)
    assert isinstance(store, Store)
    assert store.name == "flaky+memory"
    assert store.decide("k", WINDOW).remaining == 1
    assert flaky.calls == 1

    flaky.down = True
    # The failure is absorbed: the answer comes from memory, limits still enforced.
    assert [store.decide("k", WINDOW).allowed for _ in range(3)] == [True, True, False]
    assert store.degraded
    assert flaky.calls == 2  # only the first call tried the primary
    assert events == [StoreFellBack("flaky+memory", flaky.error)]

    manual_clock.advance(4.9)
    assert not store.decide("k", WINDOW).allowed
    assert flaky.calls == 2
    manual_clock.advance(0.1)
    # A probe fails: still degraded, no new event, next probe 5 s later.
    assert not store.decide("k", WINDOW).allowed
    assert flaky.calls == 3
    assert len(events) == 1

    flaky.down = False
    manual_clock.advance(4.0)
    store.decide("other", WINDOW)
    assert flaky.calls == 3
    manual_clock.advance(1.0)
    # The probe succeeds: the primary's answer (its own count for "k": 1 used).
    assert store.decide("k", WINDOW) == Decision(True, 2, 0, 990.0, 0.0)
    assert not store.degraded
    assert flaky.calls == 4
    assert events[1:] == [StoreRecovered("flaky+memory", pytest.approx(10.0))]
    store.decide("k", WINDOW)
    assert flaky.calls == 5


async def test_async_twin(store: FallbackStore, flaky: Flaky, manual_clock: FakeClock) -> None:
    events = collect(store)
    flaky.down = True
    flaky.error = ConnectionError("connection reset")  # a transient error counts too
    assert [(await store.adecide("k", WINDOW)).allowed for _ in range(3)] == [True, True, False]
    assert [type(e) for e in events] == [StoreFellBack]
    assert events[0].error is flaky.error  # type: ignore[attr-defined]
    flaky.down = False
    manual_clock.advance(5.0)
    many = await store.adecide_many([("k", WINDOW, 1), ("k", WINDOW, 1)])
    assert [d.allowed for d in many] == [True, True]
    assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
    await store.areset("k", WINDOW)
    await store.aclose()


def test_batches_fall_back_too(store: FallbackStore, flaky: Flaky) -> None:
    flaky.down = True
    decisions = store.decide_many([("a", WINDOW, 2), ("a", WINDOW, 1)])
    assert [d.allowed for d in decisions] == [True, False]
    assert store.degraded


def test_reset_clears_both_and_tolerates_a_dead_primary(store: FallbackStore, flaky: Flaky) -> None:
    store.decide("k", WINDOW, cost=2)
    flaky.down = True
    store.decide("k", WINDOW, cost=2)
    store.reset("k", WINDOW)  # no exception although the primary is down
    assert store.decide("k", WINDOW, cost=2).allowed
    store.close()


def test_bad_cost_is_the_callers_error_not_an_outage(store: FallbackStore, flaky: Flaky) -> None:
    with pytest.raises(ValueError, match="cost"):
        store.decide("k", WINDOW, cost=-1)
    with pytest.raises(TypeError):
        store.decide_many([("k", WINDOW, 1.5)])  # type: ignore[list-item]
    assert not store.degraded
    assert flaky.calls == 0


def test_only_one_caller_probes_at_a_time(
    store: FallbackStore, flaky: Flaky, manual_clock: FakeClock
) -> None:
    flaky.down = True
    store.decide("k", WINDOW)
    flaky.down = False
    manual_clock.advance(5.0)
    entered, release = threading.Event(), threading.Event()
    flaky.entered, flaky.release = entered, release
    prober = threading.Thread(target=store.decide, args=("k", WINDOW))
    prober.start()
    assert entered.wait(5)
    # While the probe is in flight, other callers are served from memory.
    flaky.entered = flaky.release = None
    store.decide("k", WINDOW)
    assert flaky.calls == 2
    release.set()
    prober.join(5)
    assert not store.degraded
    store.decide("k", WINDOW)
    assert flaky.calls == 3


def test_several_limits_fall_back_and_come_back(
    store: FallbackStore, flaky: Flaky, manual_clock: FakeClock
) -> None:
    events = collect(store)
    limits = (WINDOW, FixedWindow(1, 60.0))
    assert [d.allowed for d in store.decide_all("k", limits)] == [True, True]
    assert flaky.calls == 1
    flaky.down = True
    # Memory starts afresh, all or nothing, like the primary.
    assert [d.allowed for d in store.decide_all("k", limits)] == [True, True]
    refused = store.decide_all("k", limits)
    assert [d.allowed for d in refused] == [True, False]
    assert refused[0].remaining == 1  # not taken
    batch = store.decide_all_many([("j", limits, 1), ("j", limits, 1)])
    assert [[d.allowed for d in decisions] for decisions in batch] == [[True, True], [True, False]]
    assert [type(e) for e in events] == [StoreFellBack]
    store.reset_all("k", limits)  # a dead primary is skipped
    assert store.decide_all("k", limits)[1].allowed
    flaky.down = False
    manual_clock.advance(5.0)
    back = store.decide_all("k", limits)  # the primary's own count: the window is used
    assert [d.allowed for d in back] == [True, False]
    assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
    with pytest.raises(ValueError, match="cost"):
        store.decide_all("k", limits, -1)
    with pytest.raises(TypeError):
        store.decide_all_many([("k", limits, 1.5)])  # type: ignore[list-item]


async def test_several_limits_async(
    store: FallbackStore, flaky: Flaky, manual_clock: FakeClock
) -> None:
    limits = (WINDOW, FixedWindow(1, 60.0))
    flaky.down = True
    assert [d.allowed for d in await store.adecide_all("k", limits)] == [True, True]
    many = await store.adecide_all_many([("k", limits, 1)])
    assert [d.allowed for d in many[0]] == [True, False]
    await store.areset_all("k", limits)
    assert store.degraded
    flaky.down = False
    manual_clock.advance(5.0)
    assert [d.allowed for d in await store.adecide_all("k", limits)] == [True, True]
    assert not store.degraded
    with pytest.raises(ValueError, match="cost"):
        await store.adecide_all("k", limits, -1)
    with pytest.raises(TypeError):
        await store.adecide_all_many([("k", limits, 1.5)])  # type: ignore[list-item]
    await store.areset_all("k", limits)
    assert flaky.calls == 4  # resets always try the primary


def test_unavailable_is_transient_and_pickles() -> None:
    import pickle

    error = StoreUnavailable("redis", "down")
    assert is_transient(error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.store, str(again)) == ("redis", "store 'redis': down")


def outage_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "buttress.stores"]


def test_an_outage_logs_one_warning_and_one_recovery(
    store: FallbackStore, flaky: Flaky, manual_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.stores")
    flaky.down = True
    for _ in range(20):
        store.decide("k", WINDOW)
        store.decide_many([("k", WINDOW, 1)])
        manual_clock.advance(1.0)  # probes fail every 5 s: no new line for them
    records = outage_records(caplog)
    assert len(records) == 1
    level, message = records[0]
    assert level == logging.WARNING
    assert "'flaky+memory'" in message
    assert "StoreUnavailable: store 'flaky': connection refused" in message
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    flaky.down = False
    for _ in range(20):
        store.decide("k", WINDOW)
        manual_clock.advance(1.0)
    records = outage_records(caplog)
    assert [level for level, _ in records] == [logging.WARNING, logging.INFO]
    assert "recovered after 20 s" in records[1][1]


async def test_an_async_outage_logs_one_warning_and_one_recovery(
    store: FallbackStore, flaky: Flaky, manual_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buttress.stores")
    flaky.down = True
    for _ in range(20):
        await store.adecide("k", WINDOW)
        await store.adecide_all("k", (WINDOW,))
        manual_clock.advance(1.0)
    assert [level for level, _ in outage_records(caplog)] == [logging.WARNING]
    flaky.down = False
    manual_clock.advance(5.0)
    for _ in range(20):
        await store.adecide("k", WINDOW)
    assert [level for level, _ in outage_records(caplog)] == [logging.WARNING, logging.INFO]


@pytest.mark.parametrize(
    "error", [RuntimeError("a bug"), ConfigError("no client", path="client"), KeyError("x")]
)
async def test_errors_that_are_no_outage_reach_the_caller(
    store: FallbackStore, flaky: Flaky, error: Exception
) -> None:
    flaky.down = True
    flaky.error = error
    with pytest.raises(type(error)):
        store.decide("k", WINDOW)
    with pytest.raises(type(error)):
        await store.adecide_many([("k", WINDOW, 1)])
    with pytest.raises(type(error)):
        store.reset("k", WINDOW)
    with pytest.raises(type(error)):
        await store.areset_all("k", (WINDOW,))
    assert not store.degraded  # never falls back for them, so never for ever


def test_what_counts_as_an_outage() -> None:
    assert is_outage(StoreUnavailable("redis", "down"))
    assert is_outage(StoreError("redis", "WRONGTYPE"))
    misuse = StoreError("redis", "wrong event loop")
    misuse.outage = False
    assert not is_outage(misuse)
    assert is_outage(ConnectionRefusedError())
    assert is_outage(TimeoutError())
    assert not is_outage(RuntimeError("bug"))
    assert not is_outage(ConfigError("bad", path="url"))
    assert not is_outage(ValueError("cost"))


def test_probe_interval_is_validated(flaky: Flaky) -> None:
    for bad in (-1, math.nan, math.inf, "5", True):
        with pytest.raises(ConfigError) as info:
            FallbackStore(flaky, probe_interval=bad)  # type: ignore[arg-type]
        assert info.value.path == "probe_interval"
    store = FallbackStore(flaky, probe_interval=timedelta(seconds=2))  # type: ignore[arg-type]
    assert store.probe_interval == 2.0


def test_custom_fallback_and_name(flaky: Flaky, manual_clock: FakeClock) -> None:
    backup = MemoryStore(clock=manual_clock, name="backup")
    store = FallbackStore(flaky, backup, clock=manual_clock, name="limits")  # type: ignore[arg-type]
    flaky.down = True
    seen: list[Any] = []
    store.subscribe(seen.append, StoreRecovered)
    store.decide("k", WINDOW)
    assert len(backup) == 1
    assert seen == []
    assert "FallbackStore(" in repr(store)


class FallbackMachine(RuleBasedStateMachine):
    """Random outages, recoveries and clock steps: never an error, events alternate."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(auto_advance=False)
        self.primary = Flaky(self.clock)
        self.store = FallbackStore(self.primary, probe_interval=3.0, clock=self.clock)  # type: ignore[arg-type]
        self.events: list[Event] = []
        self.store.subscribe(self.events.append)
        # Model: whether the last attempt on the primary failed, and when to probe.
        self.degraded = False
        self.probe_at = 0.0

    @rule(down=st.booleans())
    def set_primary(self, down: bool) -> None:
        self.primary.down = down

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.9, 3.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(cost=st.integers(0, 3))
    def decide(self, cost: int) -> None:
        now = self.clock.monotonic()
        calls = self.primary.calls
        decision = self.store.decide("k", WINDOW, cost)
        tried = not self.degraded or now >= self.probe_at
        assert (self.primary.calls == calls + 1) == tried
        if tried:
            if self.primary.down:
                self.degraded = True
                self.probe_at = now + 3.0
            else:
                self.degraded = False
        assert decision.limit == 2

    @invariant()
    def matches_the_model(self) -> None:
        assert self.store.degraded == self.degraded
        kinds = [type(e) for e in self.events]
        assert kinds == [StoreFellBack, StoreRecovered] * (len(kinds) // 2) + (
            [StoreFellBack] if len(kinds) % 2 else []
        )
        assert (len(kinds) % 2 == 1) == self.degraded


TestFallbackMachine = FallbackMachine.TestCase
TestFallbackMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
