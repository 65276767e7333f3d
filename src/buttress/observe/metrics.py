"""What buttress measures, in one neutral form that every exporter reads.

Nothing here costs a protected call anything. Two sources feed the figures:

- **Events, for the rare things** — rejections, retries and give-ups, breaker
  transitions, timeouts, fallbacks, store fall-backs. A :class:`Tally` subscribed
  to every policy (``buttress.events.subscribe``) counts them; policies build
  events only while someone listens, and only on these paths, never on a call that
  simply succeeds.
- **State, read at scrape time** — each live breaker's state and window, each
  bulkhead's in-flight and queued calls, each :class:`~buttress.observe.Measure`'s
  calls by outcome and latency histogram. :func:`collect` walks the policies alive
  in the process (``buttress._strategy.live()``) when an exporter asks.

:func:`collect` returns :class:`Family` objects: a metric name (always prefixed
``buttress_``), its type, help text and samples. The Prometheus collector
(:mod:`buttress.observe.prometheus`) and the OpenTelemetry instruments
(:mod:`buttress.observe.otel`) both translate these, so the two never disagree.

Labels are bounded: a policy's name, its kind, an outcome, a reason, a state —
never a key, a URL or a user id. Two live policies with the same name add up.
"""

from __future__ import annotations

import operator
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from buttress._events import CallRejected, Event
from buttress._events import subscribe as subscribe_all
from buttress._strategy import live

__all__ = ["KNOWN", "Family", "Sample", "Tally", "collect", "register_source", "tally"]

Labels = tuple[tuple[str, str], ...]
"""Label pairs, sorted by name."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a family: its labels and its value.

    For a histogram, ``value`` is the count of observations and ``buckets`` holds
    ``(upper bound, cumulative count)`` pairs (the last bound is ``inf``), ``sum``
    the sum of the observations.
    """

    labels: dict[str, str]
    value: float
    buckets: tuple[tuple[float, float], ...] = ()
    sum: float = 0.0


@dataclass(slots=True)
class Family:
    """A metric: its ``name`` (counters end in ``_total``), ``type``, help and samples."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    samples: list[Sample] = field(default_factory=list)


KNOWN: dict[str, Literal["counter", "gauge", "histogram"]] = {
    "buttress_calls_total": "counter",
    "buttress_call_duration_seconds": "histogram",
    "buttress_rejections_total": "counter",
    "buttress_retries_total": "counter",
    "buttress_retry_recovered_total": "counter",
    "buttress_retry_gave_up_total": "counter",
    "buttress_circuit_transitions_total": "counter",
    "buttress_timeouts_total": "counter",
    "buttress_fallbacks_total": "counter",
    "buttress_store_transitions_total": "counter",
    "buttress_events_total": "counter",
    "buttress_store_degraded": "gauge",
    "buttress_circuit_state": "gauge",
    "buttress_circuit_window_calls": "gauge",
    "buttress_circuit_failure_rate": "gauge",
    "buttress_bulkhead_in_flight": "gauge",
    "buttress_bulkhead_queued": "gauge",
    "buttress_bulkhead_limit": "gauge",
    "buttress_error_budget_remaining_ratio": "gauge",
    "buttress_error_budget_burn_rate": "gauge",
    "buttress_latency_budget_remaining_ratio": "gauge",
    "buttress_degradation_allowed": "gauge",
    "buttress_health_check_up": "gauge",
    "buttress_health_check_duration_seconds": "gauge",
    "buttress_relay_published_total": "counter",
    "buttress_relay_retried_total": "counter",
    "buttress_relay_dead_lettered_total": "counter",
    "buttress_relay_listen_losses_total": "counter",
    "buttress_relay_batch_size": "histogram",
    "buttress_relay_publish_duration_seconds": "histogram",
    "buttress_relay_lag_seconds": "gauge",
    "buttress_relay_listening": "gauge",
    "buttress_consumer_handled_total": "counter",
    "buttress_consumer_duplicates_total": "counter",
    "buttress_consumer_retried_total": "counter",
    "buttress_consumer_dead_lettered_total": "counter",
    "buttress_consumer_poisoned_total": "counter",
    "buttress_consumer_failures_total": "counter",
    "buttress_consumer_settle_errors_total": "counter",
    "buttress_consumer_in_flight": "gauge",
}
"""Every family buttress exports, by name, with its type (OpenTelemetry instruments
must exist before they are observed, so the exporter creates one per entry)."""

# ------------------------------------------------------------------------- the events

# CallRejected.reason -> the kind of policy that rejects for it.
_REJECTING_KIND = {
    "circuit_open": "circuit_breaker",
    "half_open_full": "circuit_breaker",
    "bulkhead_full": "bulkhead",
    "queue_timeout": "bulkhead",
    "rate_limited": "rate_limiter",
}

_HELP = {
    "buttress_rejections_total": "Calls a policy refused without running them.",
    "buttress_retries_total": "Retries scheduled after a failed attempt.",
    "buttress_retry_recovered_total": "Calls that succeeded after one or more retries.",
    "buttress_retry_gave_up_total": "Calls a retry stopped retrying, by reason.",
    "buttress_circuit_transitions_total": "Circuit breaker transitions, by the state entered.",
    "buttress_timeouts_total": "Calls (or waits inside them) that ran out of time.",
    "buttress_fallbacks_total": "Failed calls a fallback answered for.",
    "buttress_store_transitions_total": "Stores falling back to memory and recovering.",
    "buttress_events_total": "Other buttress events, by type.",
}


def _key(name: str, **labels: str) -> tuple[str, Labels]:
    return name, tuple(sorted(labels.items()))


def _counted(event: Event) -> tuple[str, Labels] | None:
    """The counter an event adds one to (``None``: it is only a state change)."""
    kind = type(event).__name__
    policy = event.policy
    if isinstance(event, CallRejected):
        return _key(
            "buttress_rejections_total",
            policy=policy,
            kind=_REJECTING_KIND.get(event.reason, "policy"),
            reason=event.reason,
        )
    if kind == "RetryScheduled":
        return _key("buttress_retries_total", policy=policy)
    if kind == "RetryRecovered":
        return _key("buttress_retry_recovered_total", policy=policy)
    if kind == "RetryGaveUp":
        return _key("buttress_retry_gave_up_total", policy=policy, reason=event.reason)  # type: ignore[attr-defined]
    if kind == "CircuitStateChanged":
        state = str(event.new)  # type: ignore[attr-defined]
        return _key("buttress_circuit_transitions_total", policy=policy, state=state)
    if kind == "TimeoutOccurred":
        return _key("buttress_timeouts_total", policy=policy)
    if kind == "FallbackUsed":
        return _key("buttress_fallbacks_total", policy=policy)
    if kind == "StoreFellBack":
        return _key("buttress_store_transitions_total", store=policy, state="degraded")
    if kind == "StoreRecovered":
        return _key("buttress_store_transitions_total", store=policy, state="recovered")
    return _key("buttress_events_total", policy=policy, event=kind)


class Tally:
    """Counts the rare things buttress's events report; read by :func:`collect`.

    Callable as an event listener. :func:`tally` returns the process's own, which
    :func:`buttress.observe.instrument` subscribes to every policy; build your own
    to count one policy's events (``policy.subscribe(Tally())``).
    """

    __slots__ = ("_counts", "_degraded", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, Labels], int] = {}
        self._degraded: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        key = _counted(event)
        if key is None:  # pragma: no cover - every event counts somewhere today
            return
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            kind = type(event).__name__
            if kind == "StoreFellBack":
                self._degraded[event.policy] = 1
            elif kind == "StoreRecovered":
                self._degraded[event.policy] = 0

    def count(self, name: str, **labels: str) -> int:
        """The count of one series, 0 if it never happened.

        ``tally().count("buttress_retries_total", policy="api")``
        """
        with self._lock:
            return self._counts.get(_key(name, **labels), 0)

    def families(self) -> list[Family]:
        """The counted series as families (and the stores' degraded gauge)."""
        with self._lock:
            counts = list(self._counts.items())
            degraded = list(self._degraded.items())
        families: dict[str, Family] = {}
        for (name, labels), value in sorted(counts):
            family = families.get(name)
            if family is None:
                family = families[name] = Family(name, "counter", _HELP[name])
            family.samples.append(Sample(dict(labels), float(value)))
        result = list(families.values())
        if degraded:
            result.append(
                Family(
                    "buttress_store_degraded",
                    "gauge",
                    "1 while a fallback store serves decisions from its fallback.",
                    [Sample({"store": store}, float(flag)) for store, flag in sorted(degraded)],
                )
            )
        return result

    def clear(self) -> None:
        """Forget every count (tests)."""
        with self._lock:
            self._counts.clear()
            self._degraded.clear()


_tally = Tally()
_subscribed: Callable[[], None] | None = None
_tally_lock = threading.Lock()


def tally(*, subscribe: bool = True) -> Tally:
    """The process's tally; with ``subscribe`` (the default), listening to every policy."""
    global _subscribed
    if subscribe:
        with _tally_lock:
            if _subscribed is None:
                _subscribed = subscribe_all(_tally)
    return _tally


def _unsubscribe_tally() -> None:
    global _subscribed
    with _tally_lock:
        if _subscribed is not None:
            _subscribed()
            _subscribed = None


# ---------------------------------------------------------------------- state sources

Source = Callable[[], Iterable[Family]]
"""A zero-argument callable yielding families, read at every scrape."""

_sources: dict[str, Source] = {}


def register_source(name: str, source: Source) -> Callable[[], None]:
    """Add ``source`` to what :func:`collect` reads; returns the function that removes it.

    For components with state of their own (health monitors, budgets): their
    families are read at scrape time like the policies' state. A later source with
    the same ``name`` replaces the earlier one.
    """
    _sources[name] = source

    def remove() -> None:
        if _sources.get(name) is source:
            del _sources[name]

    return remove


class _Families:
    """Families being assembled, merged by name and label set (same names add up)."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._index: dict[tuple[str, Labels], int] = {}

    def add(self, name: str, kind: Literal["counter", "gauge", "histogram"], help: str) -> Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = Family(name, kind, help)
        return family

    def sample(  # noqa: PLR0917 - called from one module, positionally, a dozen times
        self,
        name: str,
        kind: Literal["counter", "gauge"],
        help: str,
        value: float,
        labels: dict[str, str],
        merge: Callable[[float, float], float] = operator.add,
    ) -> None:
        """Add a sample; one with the same labels (a same-named policy) is merged with
        ``merge``: quantities add up, ratios keep the worst (``min`` or ``max``)."""
        family = self.add(name, kind, help)
        key = (name, tuple(sorted(labels.items())))
        at = self._index.get(key)
        if at is None:
            self._index[key] = len(family.samples)
            family.samples.append(Sample(labels, value))
        else:
            old = family.samples[at]
            family.samples[at] = Sample(old.labels, merge(old.value, value))

    def extend(self, families: Iterable[Family]) -> None:
        for family in families:
            if family.type == "histogram":
                self.add(family.name, family.type, family.help).samples.extend(family.samples)
                continue
            for sample in family.samples:
                self.sample(family.name, family.type, family.help, sample.value, sample.labels)

    def result(self) -> list[Family]:
        return list(self._families.values())


def _breaker(out: _Families, policy: Any) -> None:
    from buttress.policies.circuit import CircuitState  # noqa: PLC0415 - loaded with a breaker

    name = policy.name
    current = policy.state
    for state in CircuitState:
        out.sample(
            "buttress_circuit_state",
            "gauge",
            "1 for the state each circuit breaker is in, 0 for the others.",
            1.0 if state is current else 0.0,
            {"policy": name, "state": str(state)},
        )
    window = policy.metrics
    help_window = "Calls in the breaker's sliding window, by outcome."
    for outcome, value in (
        ("success", window.calls - window.failures),
        ("failure", window.failures),
        ("slow", window.slow_calls),
    ):
        labels = {"policy": name, "outcome": outcome}
        out.sample("buttress_circuit_window_calls", "gauge", help_window, value, labels)
    out.sample(
        "buttress_circuit_failure_rate",
        "gauge",
        "The failure ratio of the breaker's window (0 to 1).",
        window.failure_ratio,
        {"policy": name},
        max,
    )


def _bulkhead(out: _Families, policy: Any) -> None:
    labels = {"policy": policy.name}
    for name, help, value in (
        ("buttress_bulkhead_in_flight", "Calls running inside the bulkhead.", policy.active),
        ("buttress_bulkhead_queued", "Calls waiting for a slot of the bulkhead.", policy.queued),
        (
            "buttress_bulkhead_limit",
            "How many calls the bulkhead lets run at once.",
            policy.options.max_concurrent,
        ),
    ):
        out.sample(name, "gauge", help, value, labels)


def _budgets(out: _Families) -> None:
    """Error and latency budgets and degradations, if the budget package is in use."""
    budget = sys.modules.get("buttress.policies.budget")
    if budget is None:
        return
    for item in budget.live():
        snapshot = item.snapshot()
        kind = type(snapshot).__name__
        if kind == "ErrorBudgetSnapshot":
            labels = {"budget": snapshot.name}
            out.sample(
                "buttress_error_budget_remaining_ratio",
                "gauge",
                "The share of the error budget left over the SLO window (below 0: overspent).",
                snapshot.remaining,
                labels,
                min,
            )
            for window, rate in snapshot.burn_rates:
                out.sample(
                    "buttress_error_budget_burn_rate",
                    "gauge",
                    "How fast the error budget burns over a window (1: exactly on budget).",
                    rate,
                    {"budget": snapshot.name, "window": str(int(window))},
                    max,
                )
        elif kind == "LatencyBudgetSnapshot":
            out.sample(
                "buttress_latency_budget_remaining_ratio",
                "gauge",
                "The share of the allowed slow calls left over the window (below 0: overspent).",
                snapshot.remaining,
                {"budget": snapshot.name},
                min,
            )
        elif kind == "DegradationSnapshot":
            for feature, allowed in snapshot.features:
                out.sample(
                    "buttress_degradation_allowed",
                    "gauge",
                    "1 while the degradation's current level allows the feature.",
                    1.0 if allowed else 0.0,
                    {"degradation": snapshot.name, "feature": feature},
                    min,
                )


def collect() -> list[Family]:
    """Every family buttress can report now: counted events, live policies' state, sources.

    Counted events appear only while the process's :func:`tally` is subscribed
    (:func:`buttress.observe.instrument` does it).
    """
    out = _Families()
    out.extend(_tally.families())
    for policy in live():
        kind = type(policy).__name__
        if kind == "CircuitBreaker":
            _breaker(out, policy)
        elif kind == "Bulkhead":
            _bulkhead(out, policy)
        else:
            families = getattr(policy, "metric_families", None)
            if families is not None:
                out.extend(families())
    _budgets(out)
    for source in list(_sources.values()):
        out.extend(source())
    return out.result()
