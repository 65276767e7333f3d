"""Shared breakers as a Hypothesis state machine: three simulated processes, one real Redis.

Each process is a shared breaker with its own :class:`BreakerHub`, all on one fake
clock. The machine starts and finishes calls in any interleaving (several in flight
at once, through the engine exactly as the drivers call it), syncs processes in any
order, isolates and resets anywhere, and moves time — syncing every process as the
background thread would, at least once per lease. After every step:

- across all processes, no more than ``half_open_calls`` trials are in flight;
- no caller ever saw anything but its own result or :class:`CircuitOpen`;

and whenever every process has synced twice with nothing happening in between,
they all agree on the state and the epoch. Any process may lose Redis for a while
(its store fails), run alone, and re-join; the cross-process trial bound is checked
in examples without an outage (a process re-joining with its own trials running is
the documented exception), the per-process bound always.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from buttress.clock import FakeClock
from buttress.errors import CircuitOpen
from buttress.policies.circuit import (
    BreakerHub,
    BreakerReply,
    BreakerReport,
    CircuitBreaker,
    CircuitState,
    RedisBreakerStore,
)
from buttress.policies.circuit._shared import SharedCircuitEngine
from buttress.stores import StoreUnavailable

from tests.conftest import require_service

pytestmark = pytest.mark.integration

PROCESSES = 3
HALF_OPEN_CALLS = 2
OPEN_DURATION = 2.0
INTERVAL = 0.1
LEASE = 0.5


class Down(ConnectionError):
    """The protected dependency failed."""


class Flaky:
    """A Redis breaker store that fails while ``down``."""

    def __init__(self, store: RedisBreakerStore) -> None:
        self.store = store
        self.name = store.name
        self.down = False

    def exchange(
        self,
        owner: str,
        reports: Sequence[BreakerReport],
        lease: float,
        now: float | None = None,
    ) -> list[BreakerReply]:
        if self.down:
            raise StoreUnavailable(self.name, "cut off")
        return self.store.exchange(owner, reports, lease, now)

    def close(self) -> None:
        self.store.close()


@dataclass
class InFlight:
    process: int
    fast: int
    ticket: int


class SharedBreakers(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client: redis.Redis | None = None
        self.prefix = ""
        self.clock = FakeClock()
        self.syncs: list[BreakerHub] = []
        self.breakers: list[CircuitBreaker] = []
        self.engines: list[SharedCircuitEngine] = []
        self.inflight: list[InFlight] = []
        self.stores: list[Flaky] = []
        self.had_outage = False

    @initialize(
        window=st.sampled_from([None, 4, 10]),
        consecutive=st.sampled_from([None, 3]),
        factor=st.sampled_from([1.0, 2.0]),
    )
    def start(self, window: int | None, consecutive: int | None, factor: float) -> None:
        require_service("redis")
        self.client = redis.Redis(host="127.0.0.1", port=6379)
        self.prefix = f"buttress-test-{uuid.uuid4().hex[:12]}"
        options: dict[str, object] = {
            "min_calls": 4,
            "failure_ratio": 0.5,
            "consecutive_failures": consecutive,
            "open_duration": OPEN_DURATION,
            "open_duration_factor": factor,
            "max_open_duration": 8.0,
            "half_open_calls": HALF_OPEN_CALLS,
            "clock": self.clock,
        }
        if window is None:
            options["window_seconds"] = 10.0
        else:
            options["window"] = window
        for _ in range(PROCESSES):
            store = Flaky(
                RedisBreakerStore(
                    self.client, prefix=self.prefix, time_source="client", clock=self.clock
                )
            )
            hub = BreakerHub(
                store, interval=INTERVAL, lease=LEASE, background=False, clock=self.clock
            )
            self.stores.append(store)
            breaker = CircuitBreaker(name="shared", hub=hub, **options)  # type: ignore[arg-type]
            engine = breaker._engine
            assert isinstance(engine, SharedCircuitEngine)
            self.syncs.append(hub)
            self.breakers.append(breaker)
            self.engines.append(engine)
        for hub in self.syncs:
            assert hub.exchange()

    def teardown(self) -> None:
        for hub in self.syncs:
            hub.close()
        if self.client is not None:
            keys = list(self.client.scan_iter(f"{self.prefix}:*"))
            if keys:
                self.client.delete(*keys)
            self.client.close()

    # ------------------------------------------------------------------ calls

    @rule(process=st.integers(0, PROCESSES - 1))
    def begin(self, process: int) -> None:
        engine = self.engines[process]
        fast = engine.fast
        try:
            ticket = fast or engine.acquire()
        except CircuitOpen:
            return
        if engine.trials()[0]:
            event("a trial started")
        self.inflight.append(InFlight(process, fast, ticket))

    @rule(data=st.data(), failed=st.booleans())
    def end(self, data: st.DataObject, failed: bool) -> None:
        if not self.inflight:
            return
        call = self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))
        engine = self.engines[call.process]
        if failed:
            engine.on_error(call.ticket, Down("down"), 0.0)
        elif call.fast:
            engine.tally()
        else:
            engine.on_success(call.ticket, 0.0)

    @rule(process=st.integers(0, PROCESSES - 1), failed=st.booleans(), times=st.integers(1, 5))
    def calls(self, process: int, failed: bool, times: int) -> None:
        breaker = self.breakers[process]

        def run() -> str:
            if failed:
                raise Down("down")
            return "ok"

        for _ in range(times):
            try:
                breaker.call(run)
            except (Down, CircuitOpen):
                pass

    # ---------------------------------------------------------------- control

    def _sync(self, process: int) -> None:
        down = self.stores[process].down
        assert self.syncs[process].exchange() is not down
        assert self.syncs[process].degraded is down

    @rule(process=st.integers(0, PROCESSES - 1))
    def sync(self, process: int) -> None:
        self._sync(process)

    @rule(process=st.integers(0, PROCESSES - 1))
    def cut_off(self, process: int) -> None:
        self.stores[process].down = True
        self.had_outage = True

    @rule(process=st.integers(0, PROCESSES - 1))
    def reconnect(self, process: int) -> None:
        self.stores[process].down = False

    @rule(
        process=st.integers(0, PROCESSES - 1),
        action=st.sampled_from(["isolate", "reset", "reset", "reset"]),
    )
    def manual(self, process: int, action: str) -> None:
        getattr(self.breakers[process], action)()

    @rule(process=st.integers(0, PROCESSES - 1), order=st.permutations(range(PROCESSES)))
    def probe(self, process: int, order: list[int]) -> None:
        # A caller asks (a half-open breaker then wants the lease), everyone syncs,
        # and the caller asks again: the shortest way to a trial in flight.
        self.begin(process)
        for other in order:
            self._sync(other)
        self.begin(process)

    @rule(seconds=st.sampled_from([0.1, 0.2, LEASE / 2]), order=st.permutations(range(PROCESSES)))
    def advance(self, seconds: float, order: list[int]) -> None:
        # As the background threads would: every process syncs between two moves of
        # at most half a lease, so a holder with trials running keeps its lease.
        self.clock.advance(seconds)
        for process in order:
            self._sync(process)

    @rule()
    def open_time_passes(self) -> None:
        for _ in range(math.ceil(OPEN_DURATION * 4 / (LEASE / 2))):
            self.advance(LEASE / 2, list(range(PROCESSES)))

    @rule(order=st.permutations(range(PROCESSES)))
    def settle(self, order: list[int]) -> None:
        for store in self.stores:
            store.down = False
        for _ in range(2):
            for process in order:
                assert self.syncs[process].exchange()
        states = {engine._state for engine in self.engines}
        epochs = {engine._epoch for engine in self.engines}
        assert len(states) == 1, states
        assert len(epochs) == 1, epochs
        state = states.pop()
        event(f"settled {state.value}")
        if state is CircuitState.OPEN:
            untils = {engine._until for engine in self.engines}
            assert len(untils) == 1, untils

    # -------------------------------------------------------------- invariants

    @invariant()
    def trials_are_bounded(self) -> None:
        running = [engine.trials()[0] for engine in self.engines]
        assert max(running, default=0) <= HALF_OPEN_CALLS
        if not self.had_outage:
            assert sum(running) <= HALF_OPEN_CALLS


SharedBreakers.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSharedBreakers = SharedBreakers.TestCase
