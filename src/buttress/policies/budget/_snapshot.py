"""What the budgets and degradations report, frozen, and the weak list of the live ones.

An exporter (Prometheus, OpenTelemetry, a health page) calls :func:`live` and each
object's ``snapshot()`` at scrape time; a snapshot is a frozen dataclass, read in one
go under the object's lock, so its figures agree with one another.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buttress.policies.budget._options import BurnAlert

if TYPE_CHECKING:
    from buttress.policies.budget._degradation import Degradation
    from buttress.policies.budget._policy import ErrorBudget, LatencyBudget

__all__ = [
    "AlertStatus",
    "DegradationSnapshot",
    "ErrorBudgetSnapshot",
    "LatencyBudgetSnapshot",
    "live",
]


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """One burn-rate alert now: the burn rates over its two windows, and whether it fires."""

    alert: BurnAlert
    """The alert (its windows and factor)."""
    long_rate: float
    """The burn rate over ``alert.long``."""
    short_rate: float
    """The burn rate over ``alert.short``."""

    @property
    def firing(self) -> bool:
        """Whether both windows burn faster than ``alert.factor``."""
        factor = self.alert.factor
        return self.long_rate > factor and self.short_rate > factor


@dataclass(frozen=True, slots=True)
class ErrorBudgetSnapshot:
    """An :class:`~buttress.policies.budget.ErrorBudget` at one moment.

    For the metrics: ``remaining`` is ``buttress_error_budget_remaining_ratio{budget=name}``;
    each ``(window, rate)`` of ``burn_rates`` is
    ``buttress_error_budget_burn_rate{budget=name, window=str(int(window))}``.
    """

    name: str
    """The budget's name."""
    target: float
    """The SLO target (the share of calls that must be good)."""
    window: float
    """The SLO window, in seconds."""
    good: int
    """Good calls in the SLO window."""
    bad: int
    """Bad calls in the SLO window."""
    error_rate: float
    """``bad / (good + bad)`` over the SLO window (0 with no calls)."""
    remaining: float
    """The share of the window's error budget left: 1 untouched, 0 spent, below 0 overspent."""
    burn_rates: tuple[tuple[float, float], ...]
    """``(window in seconds, burn rate)`` for every window counted, longest first."""
    alerts: tuple[AlertStatus, ...]
    """Each configured alert, in order."""

    @property
    def firing(self) -> bool:
        """Whether any alert fires."""
        return any(status.firing for status in self.alerts)


@dataclass(frozen=True, slots=True)
class LatencyBudgetSnapshot:
    """A :class:`~buttress.policies.budget.LatencyBudget` at one moment.

    For the metrics: ``remaining`` is ``buttress_latency_budget_remaining_ratio{budget=name}``.
    """

    name: str
    """The budget's name."""
    threshold: float
    """The duration the percentile must not exceed, in seconds."""
    percentile: float
    """Which percentile, as a share (0.99 for p99)."""
    window: float
    """The window, in seconds."""
    calls: int
    """Calls measured in the window."""
    slow: int
    """Of those, the calls slower than ``threshold``."""
    estimate: float | None
    """The percentile's estimate in seconds (within 1 %), ``None`` with no calls."""
    remaining: float
    """The share of the allowed slow calls left: 1 none slow, 0 spent, below 0 overspent."""

    @property
    def met(self) -> bool:
        """Whether the target holds: no more slow calls than the percentile allows."""
        return self.remaining >= 0.0


@dataclass(frozen=True, slots=True)
class DegradationSnapshot:
    """A :class:`~buttress.policies.budget.Degradation` at one moment.

    For the metrics: each ``(feature, allowed)`` of ``features`` is
    ``buttress_degradation_allowed{degradation=name, feature=feature}`` (1 or 0).
    """

    name: str
    """The degradation's name."""
    level: str
    """The current level."""
    levels: tuple[str, ...]
    """Every level, best first."""
    forced: bool
    """Whether the level is held by ``force()``."""
    features: tuple[tuple[str, bool], ...]
    """Every feature any level allows, sorted, with whether the current level allows it."""

    @property
    def allowed(self) -> frozenset[str]:
        """The features the current level allows."""
        return frozenset(feature for feature, on in self.features if on)


_live: weakref.WeakSet[ErrorBudget | LatencyBudget | Degradation] = weakref.WeakSet()


def register(item: ErrorBudget | LatencyBudget | Degradation) -> None:
    """Add ``item`` to :func:`live` (held weakly)."""
    _live.add(item)


def live() -> list[ErrorBudget | LatencyBudget | Degradation]:
    """Every error budget, latency budget and degradation alive in this process.

    Held weakly: one nobody references any more drops out. (The budgets are
    policies, so ``buttress._strategy.live()`` lists them too; degradations are not.)
    """
    while True:
        try:
            return list(_live)
        except RuntimeError:  # pragma: no cover - the set changed while being copied
            continue
