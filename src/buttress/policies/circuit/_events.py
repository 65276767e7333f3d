"""The breaker's states and the event that reports a move between them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from buttress.events import Event

__all__ = ["CircuitState", "CircuitStateChanged"]


class CircuitState(enum.StrEnum):
    """Where a circuit breaker stands. The values are stable metric labels."""

    CLOSED = "closed"
    """Calls run; their outcomes are recorded in the window."""
    OPEN = "open"
    """Calls are rejected until the open duration has passed."""
    HALF_OPEN = "half_open"
    """A bounded number of trial calls run; their outcomes decide what comes next."""
    ISOLATED = "isolated"
    """Held open by :meth:`CircuitBreaker.isolate` until :meth:`CircuitBreaker.reset`."""


@dataclass(frozen=True, slots=True)
class CircuitStateChanged(Event):
    """The breaker moved from ``old`` to ``new``.

    ``reason`` is short and stable, fit for a metric label: ``"failure_ratio"``,
    ``"consecutive_failures"``, ``"slow_call_ratio"`` (closed to open),
    ``"open_duration_elapsed"`` (open to half-open), ``"trial_failed"``,
    ``"trial_slow"`` (half-open to open), ``"trials_succeeded"`` (half-open to
    closed), ``"isolate"`` and ``"reset"`` (manual).
    """

    old: CircuitState
    new: CircuitState
    reason: str
