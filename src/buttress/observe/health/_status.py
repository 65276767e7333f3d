"""The status model and the frozen values a health check produces.

Statuses are those of the IETF health-check draft (``draft-inadvisable-health-check``):
``pass``, ``warn`` (healthy, with a concern) and ``fail``. A check's function may
return nothing (pass), a bool, a :class:`HealthStatus`, or an :class:`Observation`
carrying a measured value; it fails by raising or by running out of time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from buttress._events import Event

__all__ = [
    "CheckResult",
    "CheckSnapshot",
    "HealthReport",
    "HealthStatus",
    "HealthStatusChanged",
    "Observation",
]


class HealthStatus(enum.StrEnum):
    """A check's (or a whole service's) health, as the IETF draft spells it."""

    PASS = "pass"
    """Healthy."""
    WARN = "warn"
    """Healthy, with a concern: a non-critical check fails, or a check reported a warning."""
    FAIL = "fail"
    """Unhealthy."""

    @property
    def rank(self) -> int:
        """0, 1, 2 for pass, warn, fail: the worse of two statuses has the higher rank."""
        return _RANKS[self]


_RANKS = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}


def worst(statuses: list[HealthStatus]) -> HealthStatus:
    """The worst of ``statuses`` (``PASS`` for none)."""
    return max(statuses, key=_RANKS.__getitem__, default=HealthStatus.PASS)


@dataclass(frozen=True, slots=True)
class Observation:
    """What a check function may return to report more than pass or fail.

    ``value`` and ``unit`` become the IETF ``observedValue`` and ``observedUnit``
    (say ``Observation(value=42, unit="connections")``); without a value the check's
    duration in milliseconds is reported. ``output`` is a short human-readable note,
    shown when the status is not ``pass``.
    """

    status: HealthStatus = HealthStatus.PASS
    value: float | int | str | bool | None = None
    unit: str | None = None
    output: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One run of one check, and where the check stands after it.

    ``outcome`` is what this run found; ``status`` is the check's status once its
    thresholds have been applied (a single failure of a check with
    ``failure_threshold=3`` leaves ``status`` where it was). ``duration`` is in
    seconds on the monitor's clock; ``checked_at`` is wall-clock seconds since the
    epoch. ``output`` says why a run did not pass (the error's type and message, or
    the timeout). ``timed_out`` is true when the run was cut off by the check's
    timeout, or skipped because its previous run was still stuck.
    ``consecutive_failures`` and ``consecutive_successes`` count runs in a row.
    ``members`` holds the members' results when the check is a
    :class:`~buttress.observe.health.Composite`. ``component_type`` and
    ``measurement`` are the check's, for the IETF format.
    """

    name: str
    status: HealthStatus
    outcome: HealthStatus
    duration: float
    checked_at: float
    output: str = ""
    observed_value: float | int | str | bool | None = None
    observed_unit: str | None = None
    timed_out: bool = False
    critical: bool = True
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    members: tuple[CheckResult, ...] = ()
    component_type: str = "component"
    measurement: str = "responseTime"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The state of a whole monitor: its overall status and every check's latest result.

    ``status`` is ``fail`` when a critical check fails, ``warn`` when a non-critical
    check fails or any check warns, else ``pass``. ``ready`` is ``status`` is not
    ``fail``. ``checks`` are in the order the checks were added; a check that has
    never run is absent.
    """

    status: HealthStatus
    checks: tuple[CheckResult, ...]
    checked_at: float

    @property
    def ready(self) -> bool:
        """Whether the service can take traffic: no critical check fails."""
        return self.status is not HealthStatus.FAIL

    def __getitem__(self, name: str) -> CheckResult:
        """The result of the check called ``name`` (``KeyError`` if it has none)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """A check's latest state, for metrics exporters (see :meth:`HealthMonitor.snapshot`).

    ``check`` is the check's name; a member of a composite is named
    ``"composite.member"``. ``up`` is whether its status is not ``fail``.
    ``duration`` is the last run's duration in seconds, ``None`` before the first run.
    """

    monitor: str
    check: str
    status: HealthStatus | None
    up: bool
    duration: float | None
    checked_at: float | None
    critical: bool


@dataclass(frozen=True, slots=True)
class HealthStatusChanged(Event):
    """A check's status (after thresholds), or a monitor's overall status, changed.

    ``policy`` is the monitor's name; ``check`` the check's name, or ``None`` for
    the monitor's overall status. ``old`` is ``None`` for the first status ever
    found. ``result`` is the run that caused the change (``None`` for the overall
    status).
    """

    check: str | None
    old: HealthStatus | None
    new: HealthStatus
    result: CheckResult | None = None
