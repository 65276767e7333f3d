"""Error and latency budgets, and graceful degradation switched by them.

- :class:`ErrorBudget`: an SLO target (``0.999`` good) over a rolling window (30
  days), fed by the outcomes of the calls through it (the one outcome model) or by
  hand; it answers the budget remaining, the error rate and burn rate over each
  window, and multi-window burn-rate alerts (:class:`BurnAlert`).
- :class:`LatencyBudget`: a percentile target (p99 ≤ 300 ms) over a window, fed by
  call durations; it answers the percentile's estimate and the budget of slow calls
  remaining.
- :class:`Degradation`: named feature levels switched by :class:`Condition`\\ s —
  health checks, burn alerts, budgets running low — asked with
  ``degradation.allows("recommendations")``, emitting :class:`DegradationChanged`
  on every change.

Files, in the roles of every policy: ``_options`` (validated settings),
``_window`` (the bucketed rolling counts and the latency histogram, sans-I/O),
``_policy`` (the two budgets), ``_degradation``, ``_events``, and ``_snapshot``
(the frozen snapshots exporters read, and :func:`live`, every budget and
degradation alive in the process).
"""

from __future__ import annotations

from ._degradation import HEALTHY_STATUSES, Condition, Degradation, is_healthy
from ._events import DegradationChanged
from ._options import (
    DEFAULT_ALERTS,
    BurnAlert,
    DegradationOptions,
    ErrorBudgetOptions,
    LatencyBudgetOptions,
)
from ._policy import ErrorBudget, LatencyBudget
from ._snapshot import (
    AlertStatus,
    DegradationSnapshot,
    ErrorBudgetSnapshot,
    LatencyBudgetSnapshot,
    live,
)
from ._window import MAX_SECONDS, MIN_SECONDS, RELATIVE_ERROR

__all__ = [
    "DEFAULT_ALERTS",
    "HEALTHY_STATUSES",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "RELATIVE_ERROR",
    "AlertStatus",
    "BurnAlert",
    "Condition",
    "Degradation",
    "DegradationChanged",
    "DegradationOptions",
    "DegradationSnapshot",
    "ErrorBudget",
    "ErrorBudgetOptions",
    "ErrorBudgetSnapshot",
    "LatencyBudget",
    "LatencyBudgetOptions",
    "LatencyBudgetSnapshot",
    "is_healthy",
    "live",
]
