"""The breaker's engine against a plain reference model, driven by Hypothesis.

The machine starts and finishes calls in any interleaving (several in flight at
once), moves the fake clock, isolates and resets, exactly as the drivers do:
``fast = engine.fast; ticket = fast or engine.acquire()``, and a fast success of
a call admitted with a non-zero ``fast`` is not reported. The model keeps its
window as a plain list and decides with the rules as the docs state them; after
every step the breaker must agree with it, and no more than ``half_open_calls``
trials may ever be in flight.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from buttress.clock import FakeClock
from buttress.errors import BulkheadFull, CircuitOpen
from buttress.events import CallRejected, Event
from buttress.policies.circuit import CircuitBreaker, CircuitOptions, CircuitState
from buttress.policies.circuit._window import bucket_count

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
ISOLATED = CircuitState.ISOLATED

SLOW_AFTER = 2.0
ELAPSED = {"fast": 0.0, "slow": 3.0}


class Model:
    """The breaker's rules, written as plainly as possible."""

    def __init__(self, options: CircuitOptions) -> None:
        self.o = options
        self.state = CLOSED
        self.era = 1
        self.entries: list[tuple[int, bool, bool]] = []  # (bucket index, failed, slow)
        self.consecutive = 0
        self.until = 0.0
        self.open_for = options.open_duration
        self.trials = 0
        self.successes = 0
        if options.window_seconds is not None:
            self.buckets = bucket_count(options.window_seconds)
            self.width = options.window_seconds / self.buckets

    def index(self, now: float) -> int:
        if self.o.window_seconds is None:
            return 0
        return math.floor(now / self.width)

    def window(self, now: float) -> list[tuple[int, bool, bool]]:
        if self.o.window is not None:
            return self.entries[-self.o.window :]
        current = self.index(now)
        return [e for e in self.entries if e[0] > current - self.buckets]

    def counts(self, now: float) -> tuple[int, int, int]:
        window = self.window(now)
        return len(window), sum(e[1] for e in window), sum(e[2] for e in window)

    def clean(self) -> bool:
        window = self.window(0.0)
        return (
            self.o.window is not None
            and self.state is CLOSED
            and len(window) == self.o.window
            and not any(failed or slow for _, failed, slow in window)
        )

    def enter(self, new: CircuitState, now: float) -> None:
        old = self.state
        self.state = new
        self.era += 1
        if new is OPEN:
            if old is HALF_OPEN:
                self.open_for = min(
                    self.open_for * self.o.open_duration_factor, self.o.max_open_duration
                )
            else:
                self.open_for = self.o.open_duration
            self.until = now + self.open_for
        elif new is HALF_OPEN:
            self.trials = self.successes = 0
        elif new is CLOSED:
            self.entries = []
            self.consecutive = 0

    def poll(self, now: float) -> None:
        if self.state is OPEN and now >= self.until:
            self.enter(HALF_OPEN, now)

    def admit(self, now: float) -> tuple[str, float]:
        """("admit", 0) or ("circuit_open" | "half_open_full", until)."""
        self.poll(now)
        if self.state is CLOSED:
            return "admit", 0.0
        if self.state is HALF_OPEN:
            if self.trials < self.o.half_open_calls:
                self.trials += 1
                return "admit", 0.0
            return "half_open_full", now
        return "circuit_open", self.until if self.state is OPEN else math.inf

    def release(self, era: int) -> None:
        if era == self.era and self.state is HALF_OPEN:
            self.trials -= 1

    def record(self, era: int, failed: bool, slow: bool, now: float) -> None:
        if era != self.era:
            return
        if self.state is CLOSED:
            self.entries.append((self.index(now), failed, slow))
            self.consecutive = self.consecutive + 1 if failed else 0
            calls, failures, slows = self.counts(now)
            o = self.o
            if (
                (o.consecutive_failures is not None and self.consecutive >= o.consecutive_failures)
                or (calls >= o.min_calls and failures / calls >= o.failure_ratio)
                or (calls >= o.min_calls and slows / calls >= o.slow_call_ratio)
            ):
                self.enter(OPEN, now)
        elif self.state is HALF_OPEN:
            self.trials -= 1
            if failed or slow:
                self.enter(OPEN, now)
            else:
                self.successes += 1
                if self.successes >= self.o.half_open_successes:
                    self.enter(CLOSED, now)


@dataclass
class InFlight:
    fast: int
    ticket: int
    era: int


OUTCOMES = [
    "success",
    "failure",
    "ignored",
    "other_error",
    "cancelled",
    "programming_error",
    "inner_rejection",
    "timed_out",
    "failed_result",
]


class BreakerMachine(RuleBasedStateMachine):
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.events: list[Event] = []

    @initialize(
        window=st.one_of(
            st.tuples(st.just("count"), st.integers(1, 6)),
            st.tuples(st.just("time"), st.sampled_from([2.0, 5.0, 12.5])),
        ),
        min_calls=st.integers(1, 6),
        failure_ratio=st.sampled_from([0.25, 0.5, 1.0]),
        consecutive=st.sampled_from([None, 2, 3]),
        slow=st.booleans(),
        slow_ratio=st.sampled_from([0.5, 1.0]),
        open_duration=st.sampled_from([0.0, 5.0, 10.0]),
        factor=st.sampled_from([1.0, 2.0]),
        half_open_calls=st.integers(1, 3),
        half_open_successes=st.sampled_from([None, 1, 2, 4]),
        failure_on=st.sampled_from([None, OSError]),
    )
    def build(
        self,
        *,
        window: tuple[str, float],
        min_calls: int,
        failure_ratio: float,
        consecutive: int | None,
        slow: bool,
        slow_ratio: float,
        open_duration: float,
        factor: float,
        half_open_calls: int,
        half_open_successes: int | None,
        failure_on: type[Exception] | None,
    ) -> None:
        kind, size = window
        if kind == "count":
            min_calls = min(min_calls, int(size))
        self.breaker = CircuitBreaker(
            window=int(size) if kind == "count" else None,
            window_seconds=size if kind == "time" else None,
            min_calls=min_calls,
            failure_ratio=failure_ratio,
            consecutive_failures=consecutive,
            slow_call_duration=SLOW_AFTER if slow else None,
            slow_call_ratio=slow_ratio,
            open_duration=open_duration,
            open_duration_factor=factor,
            max_open_duration=25.0,
            half_open_calls=half_open_calls,
            half_open_successes=half_open_successes,
            failure_on=failure_on,
            ignore=ValueError,
            clock=self.clock,
        )
        self.breaker.subscribe(self.events.append)
        self.engine = self.breaker._engine
        self.model = Model(self.breaker.options)
        self.in_flight: list[InFlight] = []

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    @rule(target=calls)
    def start(self) -> InFlight | None:
        fast = self.engine.fast
        expected, until = self.model.admit(self.now)
        if fast:
            assert expected == "admit"
            call = InFlight(fast, fast, self.model.era)
        else:
            rejected: CircuitOpen | None = None
            try:
                ticket = self.engine.acquire()
            except CircuitOpen as exc:
                rejected = exc
            if rejected is not None:
                assert expected != "admit"
                assert rejected.until == until
                assert rejected.retry_after == max(0.0, until - self.now)
                last = self.events[-1]
                assert isinstance(last, CallRejected)
                assert last.reason == expected
                return None
            assert expected == "admit"
            call = InFlight(0, ticket, self.model.era)
        self.in_flight.append(call)
        return call

    @rule(
        call=consumes(calls),
        outcome=st.sampled_from(OUTCOMES),
        speed=st.sampled_from(["fast", "slow"]),
    )
    def finish(self, call: InFlight | None, outcome: str, speed: str) -> None:
        if call is None:
            return
        self.in_flight.remove(call)
        engine, model = self.engine, self.model
        elapsed = ELAPSED[speed]
        slow = self.breaker.options.slow_call_duration is not None and elapsed >= SLOW_AFTER
        if outcome == "success":
            # What every driver does: a fast success admitted lock-free is not reported.
            if not call.fast or elapsed >= engine.slow_after:
                engine.on_success(call.ticket, elapsed)
            if not call.fast or slow:
                model.record(call.era, False, slow, self.now)
            return
        if outcome == "failed_result":  # a returned 503, say
            engine.on_failure(call.ticket, elapsed)
            model.record(call.era, True, slow, self.now)
            return
        if outcome == "timed_out":  # cut off by a buttress Timeout: a failure, and slow
            engine.on_timeout(call.ticket)
            timed = self.breaker.options.slow_call_duration is not None
            model.record(call.era, True, timed, self.now)
            return
        nothing = {
            "cancelled": asyncio.CancelledError(),  # by the caller
            "ignored": ValueError("ignored"),
            "programming_error": TypeError("a bug"),
            "inner_rejection": BulkheadFull("inner"),
        }
        if outcome in nothing:
            engine.on_error(call.ticket, nothing[outcome], elapsed)
            model.release(call.era)
            return
        # A transient error is a failure; a KeyError is an answer (a success).
        error: Exception = ConnectionError("down") if outcome == "failure" else KeyError("other")
        engine.on_error(call.ticket, error, elapsed)
        model.record(call.era, outcome == "failure", slow, self.now)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 5.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def look(self) -> None:
        self.model.poll(self.now)
        assert self.breaker.state is self.model.state

    @rule()
    def isolate(self) -> None:
        self.breaker.isolate()
        self.model.enter(ISOLATED, self.now)

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.enter(CLOSED, self.now)

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "model"):
            assert self.engine._state is self.model.state

    @invariant()
    def same_window(self) -> None:
        if hasattr(self, "model"):
            metrics = self.breaker.metrics
            calls, failures, slows = self.model.counts(self.now)
            assert (metrics.calls, metrics.failures, metrics.slow_calls) == (calls, failures, slows)
            assert metrics.consecutive_failures == self.model.consecutive

    @invariant()
    def lock_free_only_when_clean(self) -> None:
        if hasattr(self, "model"):
            assert bool(self.engine.fast) == self.model.clean()

    @invariant()
    def trials_bounded(self) -> None:
        if hasattr(self, "model"):
            model = self.model
            permits = self.breaker.options.half_open_calls
            trials = sum(
                1 for c in self.in_flight if c.era == model.era and model.state is HALF_OPEN
            )
            assert trials <= permits
            assert self.engine.trials() == (
                (trials, model.successes) if model.state is HALF_OPEN else (0, 0)
            )


BreakerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerMachine = BreakerMachine.TestCase
