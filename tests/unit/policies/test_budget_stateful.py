"""The budgets' rolling windows against a plain model, driven by Hypothesis.

The model keeps every outcome with its time in a list and counts a window as the
docs state it: a window of ``length`` seconds in ``size`` buckets of ``width`` holds
what happened in the current bucket and the ``size - 1`` before it (bucket ``k`` is
the time ``t`` with ``int(t // width) == k``). After every step each window of an
``ErrorBudget`` and a ``LatencyBudget`` must agree with it exactly, and the latency
percentile must be within 1 % of the model's nearest-rank percentile.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from buttress.clock import FakeClock
from buttress.policies.budget import (
    MAX_SECONDS,
    MIN_SECONDS,
    RELATIVE_ERROR,
    BurnAlert,
    ErrorBudget,
    LatencyBudget,
)
from buttress.policies.budget._window import Histogram

WINDOW = 60.0
ALERT = BurnAlert(long=30.0, short=5.0, factor=2.0)


def in_window(t: float, now: float, length: float, size: int) -> bool:
    width = length / size
    return int(t // width) > int(now // width) - size


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[rank - 1]


class Windows(RuleBasedStateMachine):
    @initialize(
        buckets=st.integers(1, 12),
        alert_buckets=st.integers(1, 7),
        start=st.floats(0, 1000, allow_nan=False),
    )
    def build(self, buckets: int, alert_buckets: int, start: float) -> None:
        self.clock = FakeClock(start)
        self.buckets = buckets
        self.alert_buckets = alert_buckets
        self.errors = ErrorBudget(
            0.9,
            window=WINDOW,
            buckets=buckets,
            alerts=[ALERT],
            alert_buckets=alert_buckets,
            clock=self.clock,
        )
        self.latency = LatencyBudget(
            0.25, percentile=0.9, window=WINDOW, buckets=buckets, clock=self.clock
        )
        self.outcomes: list[tuple[float, bool]] = []
        self.durations: list[tuple[float, float]] = []

    @rule(ok=st.booleans(), count=st.integers(1, 3))
    def record(self, ok: bool, count: int) -> None:
        self.errors.record(ok, count)
        self.outcomes.extend([(self.clock.monotonic(), ok)] * count)

    @rule(seconds=st.floats(0, 2.0, allow_nan=False))
    def measure(self, seconds: float) -> None:
        self.latency.record(seconds)
        self.durations.append((self.clock.monotonic(), seconds))

    @rule(
        dt=st.one_of(
            st.floats(0, 20, allow_nan=False),
            st.sampled_from([WINDOW / 12, WINDOW / 7, 5.0, 30.0, WINDOW, 2 * WINDOW]),
        )
    )
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule()
    def reset(self) -> None:
        self.errors.reset()
        self.latency.reset()
        self.outcomes.clear()
        self.durations.clear()

    # A rule, not an invariant: the budget takes calls into its windows lazily (at
    # the next bucket boundary or read), so the machine must be able to record and
    # move the clock several times between two reads.
    @rule()
    def error_windows_agree(self) -> None:
        now = self.clock.monotonic()
        for length, size in (
            (WINDOW, self.buckets),
            (30.0, self.alert_buckets),
            (5.0, self.alert_buckets),
        ):
            seen = [ok for t, ok in self.outcomes if in_window(t, now, length, size)]
            good = sum(seen)
            assert self.errors.counts(length) == (good, len(seen) - good), length
        good, bad = self.errors.counts()
        total = good + bad
        expected = 1.0 - (bad / total if total else 0.0) / 0.1
        assert math.isclose(self.errors.remaining(), expected, abs_tol=1e-9)
        snapshot = self.errors.snapshot()
        rates = dict(snapshot.burn_rates)
        long, short = self.errors.counts(30.0), self.errors.counts(5.0)
        firing = all(
            sum(pair) > 0 and pair[1] / sum(pair) / 0.1 > ALERT.factor for pair in (long, short)
        )
        assert snapshot.firing is firing is self.errors.alerting()
        assert math.isclose(rates[30.0], self.errors.burn_rate(30.0))

    @invariant()
    def latency_window_agrees(self) -> None:
        now = self.clock.monotonic()
        seen = [d for t, d in self.durations if in_window(t, now, WINDOW, self.buckets)]
        slow = sum(1 for d in seen if d > 0.25)
        assert self.latency.counts() == (len(seen), slow)
        estimate = self.latency.estimate()
        if not seen:
            assert estimate is None
            return
        true = max(nearest_rank(seen, 0.9), MIN_SECONDS)
        assert estimate is not None
        assert abs(estimate - true) <= RELATIVE_ERROR * true + 1e-12


TestWindows = Windows.TestCase
TestWindows.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats(MIN_SECONDS, MAX_SECONDS, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=200,
    ),
    q=st.floats(0.01, 0.999),
)
def test_percentile_is_within_the_relative_error(values: list[float], q: float) -> None:
    histogram = Histogram(60.0, 1)
    for value in values:
        histogram.add(0.0, value)
    estimate = histogram.percentile(0.0, q)
    true = nearest_rank(values, q)
    assert estimate is not None
    assert abs(estimate - true) <= RELATIVE_ERROR * true * (1 + 1e-9)


def test_durations_outside_the_range_read_as_its_ends() -> None:
    histogram = Histogram(60.0, 1)
    histogram.add(0.0, 0.0)
    assert histogram.percentile(0.0, 0.5) == MIN_SECONDS
    histogram.clear()
    histogram.add(0.0, 10 * MAX_SECONDS)
    assert histogram.percentile(0.0, 0.5) == MAX_SECONDS
