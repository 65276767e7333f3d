"""Health endpoints for ASGI applications: liveness, readiness, the IETF health document
and the circuit-breaker view.

Pure ASGI, no framework: :class:`HealthEndpoints` serves the routes itself, either
as a whole application or as a middleware in front of one (Starlette's and
FastAPI's ``add_middleware`` included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from buttress._strategy import live
from buttress.errors import ConfigError
from buttress.integrations.asgi._types import ASGIApp, Receive, Scope, Send
from buttress.observe.health import CheckResult, HealthMonitor, HealthReport, HealthStatus

if TYPE_CHECKING:
    from buttress.policies.circuit import CircuitBreaker

__all__ = ["HealthEndpoints", "breaker_view", "health_document"]

HEALTH_JSON = b"application/health+json"
_JSON = b"application/json"
_NOT_PASS = (HealthStatus.WARN, HealthStatus.FAIL)


def _timestamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(result: CheckResult, component_id: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if component_id is not None:
        entry["componentId"] = component_id
    entry["componentType"] = result.component_type
    if result.observed_value is not None:
        entry["observedValue"] = result.observed_value
        if result.observed_unit is not None:
            entry["observedUnit"] = result.observed_unit
    else:
        entry["observedValue"] = round(result.duration * 1000, 3)
        entry["observedUnit"] = "ms"
    entry["status"] = result.status.value
    entry["time"] = _timestamp(result.checked_at)
    if result.output:
        entry["output"] = result.output
    return entry


def health_document(
    report: HealthReport,
    *,
    details: bool = True,
    only_failing: bool = False,
    info: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The IETF health-check draft's document (``application/health+json``) for ``report``.

    ``checks`` are keyed ``"component:measurement"`` (``"postgres:responseTime"``),
    each a list of one entry per component — a composite's members appear under
    its name, with their own ``componentId``. Without ``details`` only the status
    (and ``info``) is given; with ``only_failing`` only checks not passing are.
    ``info`` adds top-level members such as ``serviceId`` or ``version``.
    """
    document: dict[str, Any] = {"status": report.status.value, **(info or {})}
    if not details:
        return document
    failing = [result.name for result in report.checks if result.status in _NOT_PASS]
    if failing:
        document["output"] = "not passing: " + ", ".join(failing)
    checks: dict[str, list[dict[str, Any]]] = {}
    for result in report.checks:
        if only_failing and result.status is HealthStatus.PASS:
            continue
        if result.members:
            for member in result.members:
                key = f"{result.name}:{member.measurement}"
                checks.setdefault(key, []).append(_entry(member, member.name))
        else:
            key = f"{result.name}:{result.measurement}"
            checks.setdefault(key, []).append(_entry(result, None))
    document["checks"] = checks
    return document


def breaker_view(breaker: CircuitBreaker, now: float | None = None) -> dict[str, Any]:
    """One circuit breaker as ``/health/circuit-breakers`` shows it.

    ``next_trial_in`` is the seconds until an open breaker lets a trial call
    through (``0`` once due; ``null`` while closed, half-open or isolated) and
    ``next_trial_at`` the same moment in wall-clock time; ``now`` is the wall time
    to count from (default: the current time).
    """
    state = breaker.state
    until = breaker.until
    metrics = breaker.metrics
    options = breaker.options
    if options.window_seconds is not None:
        window: dict[str, Any] = {"kind": "time", "seconds": options.window_seconds}
    else:
        window = {"kind": "count", "size": options.window}
    window.update(
        calls=metrics.calls,
        failures=metrics.failures,
        slow_calls=metrics.slow_calls,
        failure_ratio=round(metrics.failure_ratio, 6),
        slow_call_ratio=round(metrics.slow_call_ratio, 6),
        consecutive_failures=metrics.consecutive_failures,
    )
    next_in: float | None = None
    next_at: str | None = None
    if until is not None and math.isfinite(until):
        # ``until`` is on the breaker's own monotonic clock; ``_now`` reads that clock.
        next_in = max(0.0, until - breaker._now())
        wall = datetime.now(UTC).timestamp() if now is None else now
        next_at = _timestamp(wall + next_in)
        next_in = round(next_in, 3)
    return {
        "name": breaker.name,
        "state": state.value,
        "shared": breaker.hub is not None,
        "window": window,
        "next_trial_in": next_in,
        "next_trial_at": next_at,
    }


class HealthEndpoints:
    """``/health``, ``/health/live``, ``/health/ready`` and ``/health/circuit-breakers``.

    As a whole ASGI application::

        health = HealthEndpoints(monitor=monitor)        # uvicorn module:health

    in front of another (plain ASGI, or Starlette/FastAPI's ``add_middleware``)::

        app = HealthEndpoints(app, monitor=monitor)
        app.add_middleware(HealthEndpoints, monitor=monitor)  # Starlette / FastAPI

    Routes (under ``prefix``, ``"/health"`` by default; ``GET`` and ``HEAD``):

    - ``/live``: 200 ``{"status": "pass"}`` while the process serves requests;
      it runs no check (a dependency's outage must not get the process restarted).
    - ``/ready``: 200 when no critical check fails, else 503; the body lists the
      checks that do not pass.
    - the prefix itself: the IETF health document (``application/health+json``),
      200 for ``pass`` and ``warn``, 503 for ``fail``.
    - ``/circuit-breakers``: every circuit breaker alive in the process (JSON):
      its state, window counts and ratios, and when it next lets a trial through.

    While the monitor runs in the background (:meth:`HealthMonitor.start`) the
    routes answer from its latest run; otherwise each request runs the checks
    (concurrent requests share one run). Either way an answer comes within the
    longest check timeout, however stalled a dependency is.

    ``details=False`` leaves the checks and their outputs (which may name hosts)
    out of the bodies, for endpoints the public can reach. ``breakers=False``
    drops the breaker route. ``service_id``, ``version``, ``release_id`` and
    ``description`` are added to the health document as the draft names them.
    Other paths go to ``app``, or get a 404 without one.
    """

    __slots__ = ("_info", "_routes", "app", "breakers", "details", "monitor", "prefix")

    def __init__(
        self,
        app: ASGIApp | None = None,
        *,
        monitor: HealthMonitor | None = None,
        prefix: str = "/health",
        details: bool = True,
        breakers: bool = True,
        service_id: str | None = None,
        version: str | None = None,
        release_id: str | None = None,
        description: str | None = None,
    ) -> None:
        if isinstance(app, HealthMonitor):
            raise ConfigError(
                "the first argument is the application to wrap: pass the monitor as monitor=",
                path="app",
            )
        if app is not None and not callable(app):
            raise ConfigError(f"must be an ASGI application, got {app!r}", path="app")
        if monitor is None:
            monitor = HealthMonitor(name="health")
        elif not isinstance(monitor, HealthMonitor):
            raise ConfigError(f"must be a HealthMonitor, got {monitor!r}", path="monitor")
        if not isinstance(prefix, str) or (
            prefix and (not prefix.startswith("/") or prefix.endswith("/"))
        ):
            raise ConfigError(
                f"must be '' or a path such as '/health' (no trailing '/'), got {prefix!r}",
                path="prefix",
            )
        for option, flag in (("details", details), ("breakers", breakers)):
            if not isinstance(flag, bool):
                raise ConfigError(f"must be a bool, got {flag!r}", path=option)
        info: dict[str, str] = {}
        for option, key, value in (
            ("version", "version", version),
            ("release_id", "releaseId", release_id),
            ("service_id", "serviceId", service_id),
            ("description", "description", description),
        ):
            if value is not None:
                if not isinstance(value, str):
                    raise ConfigError(f"must be a string, got {value!r}", path=option)
                info[key] = value
        self.app = app
        self.monitor = monitor
        self.prefix = prefix
        self.details = details
        self.breakers = breakers
        self._info = info
        self._routes = {
            prefix or "/": self._health,
            prefix + "/": self._health,
            prefix + "/live": self._live,
            prefix + "/ready": self._ready,
        }
        if breakers:
            self._routes[prefix + "/circuit-breakers"] = self._breakers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get(_route_path(scope))
            if handler is not None:
                method = scope.get("method", "GET")
                if method not in ("GET", "HEAD"):
                    await _answer(
                        send,
                        405,
                        _JSON,
                        b'{"detail":"method not allowed"}',
                        method,
                        extra=[(b"allow", b"GET, HEAD")],
                    )
                    return
                status, content_type, body = await handler()
                await _answer(send, status, content_type, body, method)
                return
        if self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await _answer(send, 404, _JSON, b'{"detail":"not found"}', scope.get("method", "GET"))
        elif kind == "lifespan":
            await _lifespan(receive, send)
        # A websocket without an application behind us: closed by returning.

    async def _live(self) -> tuple[int, bytes, bytes]:
        return 200, HEALTH_JSON, _dump({"status": HealthStatus.PASS.value, **self._info})

    async def _ready(self) -> tuple[int, bytes, bytes]:
        report = await self.monitor.latest()
        document = health_document(report, details=self.details, only_failing=True, info=self._info)
        return (200 if report.ready else 503), HEALTH_JSON, _dump(document)

    async def _health(self) -> tuple[int, bytes, bytes]:
        report = await self.monitor.latest()
        document = health_document(report, details=self.details, info=self._info)
        return (200 if report.ready else 503), HEALTH_JSON, _dump(document)

    async def _breakers(self) -> tuple[int, bytes, bytes]:
        from buttress.policies.circuit import CircuitBreaker  # noqa: PLC0415 - on first use

        now = datetime.now(UTC).timestamp()
        found = sorted(
            (strategy for strategy in live() if isinstance(strategy, CircuitBreaker)),
            key=lambda breaker: breaker.name,
        )
        views = [breaker_view(breaker, now) for breaker in found]
        return 200, _JSON, _dump({"circuit_breakers": views})

    def __repr__(self) -> str:
        return f"HealthEndpoints(prefix={self.prefix!r}, monitor={self.monitor!r})"


def _route_path(scope: Scope) -> str:
    # Under a mount (Starlette's Mount, a server's --root-path) the path still starts
    # with the root path; routes are matched below it.
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def _answer(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    method: str,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        # A cached health answer is a wrong one.
        (b"cache-control", b"no-store"),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
