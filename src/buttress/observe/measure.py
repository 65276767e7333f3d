"""``Measure``: count calls by outcome and time them, where you place it in a pipeline.

The other policies count only their rare events (a rejection, a retry, a trip), so
a call that succeeds costs them nothing. ``Measure`` is the opt-in exception: it
reads the clock twice and updates a histogram on every call it sees, which is what
a latency histogram needs. Place it once per pipeline, where the time you want to
see is spent: outermost for what the caller waits (retries and waits included),
innermost for one attempt of the dependency.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from itertools import pairwise
from typing import TypeVar

from buttress._deadline import cancelled_by_timeout
from buttress._outcome import as_matcher
from buttress._strategy import Call, Policy
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, Rejected
from buttress.observe.metrics import Family, Sample

__all__ = ["DEFAULT_BUCKETS", "OUTCOMES", "Measure"]

R = TypeVar("R")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""Upper bounds in seconds (Prometheus's defaults); ``+Inf`` is always added."""

OUTCOMES = ("success", "failure", "rejected", "error")
"""``success``: returned, and not a failure. ``failure``: a dependency failure by the
outcome model (a transient error, a timeout — a cancellation by a buttress
``Timeout`` included — or a failing result such as a 503 response). ``rejected``: a
buttress policy inside refused the call (open circuit, full bulkhead, rate
limited). ``error``: any other exception — a bug, or a permanent answer such as
a raised 404. A cancellation by the caller is not counted."""


def _bounds(buckets: Sequence[float | timedelta]) -> tuple[float, ...]:
    bounds: list[float] = []
    for index, bucket in enumerate(buckets):
        value = bucket.total_seconds() if isinstance(bucket, timedelta) else bucket
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(
                f"expected positive seconds, got {bucket!r}", path=f"buckets[{index}]"
            )
        bounds.append(float(value))
    if not bounds:
        raise ConfigError("at least one bucket is needed", path="buckets")
    if any(b <= a for a, b in pairwise(bounds)):
        raise ConfigError("bucket bounds must increase", path="buckets")
    if bounds[-1] != float("inf"):
        bounds.append(float("inf"))
    return tuple(bounds)


class Measure(Policy):
    """Count the calls passing through by outcome, and time them into a histogram.

    ``on=`` / ``on_result=`` decide what a failure is, as for every policy (the
    default: transient errors, timeouts and failing responses). ``buckets`` are the
    histogram's upper bounds in seconds (or ``timedelta``). The figures are exported
    as ``buttress_calls_total{policy,kind="measure",outcome}`` and
    ``buttress_call_duration_seconds{policy,outcome}`` by every exporter of
    :mod:`buttress.observe`, and readable directly with :meth:`count`.
    """

    __slots__ = ("_bounds", "_counts", "_lock", "_matcher", "_now", "_sums")

    def __init__(
        self,
        *,
        name: str | None = None,
        buckets: Sequence[float | timedelta] = DEFAULT_BUCKETS,
        on: object = None,
        on_result: object = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        super().__init__(name=name)
        if not callable(getattr(clock, "monotonic", None)):
            raise ConfigError(f"expected a Clock, got {clock!r}", path="clock")
        self._bounds = _bounds(buckets)
        self._matcher = as_matcher(on, on_result)
        self._now = clock.monotonic
        self._lock = threading.Lock()
        size = len(self._bounds)
        self._counts: dict[str, list[int]] = {outcome: [0] * size for outcome in OUTCOMES}
        self._sums: dict[str, float] = dict.fromkeys(OUTCOMES, 0.0)

    # ------------------------------------------------------------------ the hooks

    def execute(self, call: Call[R]) -> R:
        start = self._now()
        try:
            result = call()
        except BaseException as exc:
            self._record(self._error_outcome(exc), start)
            raise
        self._record("failure" if self._matcher.result_rule(result) else "success", start)
        return result

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        start = self._now()
        try:
            result = await call()
        except BaseException as exc:
            self._record(self._error_outcome(exc), start)
            raise
        self._record("failure" if self._matcher.result_rule(result) else "success", start)
        return result

    def _error_outcome(self, exc: BaseException) -> str | None:
        if isinstance(exc, Rejected):
            return "rejected"
        if not isinstance(exc, Exception):
            # A cancellation: a timeout's is a failure, the caller's is nothing.
            return "failure" if cancelled_by_timeout(exc) else None
        return "failure" if self._matcher.error_rule(exc) else "error"

    def _record(self, outcome: str | None, start: float) -> None:
        if outcome is None:
            return
        elapsed = self._now() - start
        at = bisect_left(self._bounds, elapsed)
        with self._lock:
            self._counts[outcome][at] += 1
            self._sums[outcome] += elapsed

    # ------------------------------------------------------------------- reading

    def count(self, outcome: str | None = None) -> int:
        """Calls seen with ``outcome`` (one of :data:`OUTCOMES`), or all of them."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        with self._lock:
            if outcome is None:
                return sum(sum(c) for c in self._counts.values())
            return sum(self._counts[outcome])

    def metric_families(self) -> list[Family]:
        """This policy's figures as :class:`~buttress.observe.metrics.Family` objects."""
        with self._lock:
            counts = {outcome: list(c) for outcome, c in self._counts.items()}
            sums = dict(self._sums)
        calls = Family("buttress_calls_total", "counter", "Calls by outcome (counted by Measure).")
        durations = Family(
            "buttress_call_duration_seconds",
            "histogram",
            "How long calls took, by outcome (measured by Measure).",
        )
        for outcome in OUTCOMES:
            row = counts[outcome]
            total = sum(row)
            calls.samples.append(
                Sample({"policy": self.name, "kind": "measure", "outcome": outcome}, float(total))
            )
            cumulative = 0
            buckets: list[tuple[float, float]] = []
            for bound, n in zip(self._bounds, row, strict=True):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            durations.samples.append(
                Sample(
                    {"policy": self.name, "outcome": outcome},
                    float(total),
                    tuple(buckets),
                    sums[outcome],
                )
            )
        return [calls, durations]

    def __repr__(self) -> str:
        return f"Measure(name={self.name!r})"
