"""Health checks: a monitor of your dependencies, and the ready-made checks for them.

::

    from buttress.observe.health import HealthMonitor, postgres_check

    monitor = HealthMonitor(interval=10)
    monitor.include(postgres_check("postgresql://localhost/app", timeout=2))
    monitor.add("disk", disk_has_room, critical=False)

:class:`HealthMonitor` runs its checks — sync or async callables, each with its own
timeout — on demand (``await monitor.run()``) or in the background
(``monitor.start()`` / ``async with monitor:``), applies each check's thresholds,
keeps a history with the success rate, and calls back (and emits
:class:`HealthStatusChanged`) when a status changes. :class:`Composite` groups
checks into one component. Statuses are the IETF health-check draft's ``pass``,
``warn`` and ``fail``. ``buttress.integrations.asgi.HealthEndpoints`` serves it as
``/health``, ``/health/live``, ``/health/ready`` and ``/health/circuit-breakers``.

Ready-made checks, each needing its extra and imported only when asked for:
:func:`postgres_check` (``postgres``), :func:`redis_check` (``redis``),
:func:`rabbitmq_check` (``rabbitmq``), :func:`nats_check` (``nats``) and
:func:`http_check` (``httpx``).

Metrics: every live monitor's checks are in each Prometheus scrape and
OpenTelemetry collection as ``buttress_health_check_up{check}`` and
``buttress_health_check_duration_seconds{check}``; other exporters read them with
:func:`live_monitors` and ``HealthMonitor.snapshot()``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from buttress.observe.metrics import register_source

from ._check import Check, CheckFunction, Composite
from ._metrics import families as _families
from ._monitor import ChangeCallback, HealthMonitor, live_monitors
from ._status import (
    CheckResult,
    CheckSnapshot,
    HealthReport,
    HealthStatus,
    HealthStatusChanged,
    Observation,
)

if TYPE_CHECKING:
    from ._httpx import http_check
    from ._nats import nats_check
    from ._postgres import postgres_check
    from ._rabbitmq import rabbitmq_check
    from ._redis import redis_check

__all__ = [
    "ChangeCallback",
    "Check",
    "CheckFunction",
    "CheckResult",
    "CheckSnapshot",
    "Composite",
    "HealthMonitor",
    "HealthReport",
    "HealthStatus",
    "HealthStatusChanged",
    "Observation",
    "http_check",
    "live_monitors",
    "nats_check",
    "postgres_check",
    "rabbitmq_check",
    "redis_check",
]

# Scrapes read every live monitor (buttress_health_check_up, ..._duration_seconds).
_unregister_metrics = register_source("health", _families)

# name -> (module, the package it needs, the extra that installs it)
_READY_MADE = {
    "postgres_check": ("._postgres", "psycopg", "postgres"),
    "redis_check": ("._redis", "redis", "redis"),
    "rabbitmq_check": ("._rabbitmq", "aio_pika", "rabbitmq"),
    "nats_check": ("._nats", "nats", "nats"),
    "http_check": ("._httpx", "httpx", "httpx"),
}


def __getattr__(name: str) -> Any:
    found = _READY_MADE.get(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, package, extra = found
    try:
        value = getattr(import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != package:
            raise
        raise ImportError(
            f"{name} needs the {package!r} package: pip install 'buttress[{extra}]'"
        ) from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
