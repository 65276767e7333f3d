"""HealthEndpoints: the routes, their status codes and documents, on a fake clock."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import HealthEndpoints, Receive, Scope, Send
from buttress.observe.health import Check, Composite, HealthMonitor, HealthStatus, Observation
from buttress.policies.circuit import CircuitBreaker

from tests.helpers import tick

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Switch:
    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if not self.ok:
            raise ConnectionError("refused")


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def monitor(clock: FakeClock) -> HealthMonitor:
    monitor = HealthMonitor(clock=clock)
    monitor.add("postgres", Switch(), component_type="datastore")
    monitor.add("cache", Switch(), critical=False)
    return monitor


def switch(monitor: HealthMonitor, name: str) -> Switch:
    check = monitor[name]
    assert isinstance(check, Check)
    found = check._fn
    assert isinstance(found, Switch)
    return found


async def test_live_always_passes_and_runs_no_check(monitor: HealthMonitor) -> None:
    switch(monitor, "postgres").ok = False
    async with client(HealthEndpoints(monitor=monitor)) as http:
        response = await http.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/health+json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"status": "pass"}
    assert switch(monitor, "postgres").calls == 0


async def test_the_health_document(monitor: HealthMonitor, clock: FakeClock) -> None:
    monitor.add(
        "disk", lambda: Observation(HealthStatus.WARN, 91, "percent", "nearly full"), critical=False
    )
    app = HealthEndpoints(monitor=monitor, service_id="api", version="2")
    async with client(app) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/health+json"
    document = response.json()
    assert document["status"] == "warn"
    assert (document["serviceId"], document["version"]) == ("api", "2")
    assert document["output"] == "not passing: disk"
    assert set(document["checks"]) == {
        "postgres:responseTime",
        "cache:responseTime",
        "disk:responseTime",
    }
    [postgres] = document["checks"]["postgres:responseTime"]
    assert postgres == {
        "componentType": "datastore",
        "observedValue": 0.0,
        "observedUnit": "ms",
        "status": "pass",
        "time": postgres["time"],
    }
    assert ISO.match(postgres["time"])
    assert document["checks"]["disk:responseTime"] == [
        {
            "componentType": "component",
            "observedValue": 91,
            "observedUnit": "percent",
            "status": "warn",
            "time": postgres["time"],
            "output": "nearly full",
        }
    ]


async def test_a_failing_critical_check_is_503_on_health_and_ready(monitor: HealthMonitor) -> None:
    switch(monitor, "postgres").ok = False
    async with client(HealthEndpoints(monitor=monitor)) as http:
        health = await http.get("/health")
        ready = await http.get("/health/ready")
    assert (health.status_code, ready.status_code) == (503, 503)
    assert health.json()["status"] == "fail"
    [entry] = health.json()["checks"]["postgres:responseTime"]
    assert (entry["status"], entry["output"]) == ("fail", "ConnectionError: refused")
    assert ready.json()["status"] == "fail"
    assert list(ready.json()["checks"]) == ["postgres:responseTime"]  # only what fails


async def test_a_failing_non_critical_check_leaves_the_service_ready(
    monitor: HealthMonitor,
) -> None:
    switch(monitor, "cache").ok = False
    async with client(HealthEndpoints(monitor=monitor)) as http:
        ready = await http.get("/health/ready")
        health = await http.get("/health")
    assert (ready.status_code, ready.json()["status"]) == (200, "warn")
    assert (health.status_code, health.json()["status"]) == (200, "warn")


async def test_composite_members_are_listed_under_their_group(clock: FakeClock) -> None:
    group = Composite(
        "db", [Check("primary", Switch()), Check("replica", Switch(False))], mode="any"
    )
    monitor = HealthMonitor([group], clock=clock)
    async with client(HealthEndpoints(monitor=monitor)) as http:
        document = (await http.get("/health")).json()
    entries = document["checks"]["db:responseTime"]
    assert [(e["componentId"], e["status"]) for e in entries] == [
        ("primary", "pass"),
        ("replica", "fail"),
    ]
    assert document["status"] == "warn"


async def test_details_off_gives_the_status_only(monitor: HealthMonitor) -> None:
    switch(monitor, "postgres").ok = False
    async with client(HealthEndpoints(monitor=monitor, details=False, version="1")) as http:
        health = await http.get("/health")
        ready = await http.get("/health/ready")
    assert (health.status_code, health.json()) == (503, {"status": "fail", "version": "1"})
    assert (ready.status_code, ready.json()) == (503, {"status": "fail", "version": "1"})


async def test_head_and_other_methods(monitor: HealthMonitor) -> None:
    async with client(HealthEndpoints(monitor=monitor)) as http:
        head = await http.head("/health/ready")
        post = await http.post("/health")
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["content-length"]) > 0
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


async def test_other_paths_go_to_the_app_or_get_404(monitor: HealthMonitor) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    async with client(HealthEndpoints(app, monitor=monitor)) as http:
        assert (await http.get("/orders")).text == "app"
        assert (await http.get("/healthz")).text == "app"
        assert (await http.get("/health/")).status_code == 200
    async with client(HealthEndpoints(monitor=monitor)) as http:
        assert (await http.get("/orders")).status_code == 404


async def test_a_prefix_of_your_own(monitor: HealthMonitor) -> None:
    async with client(HealthEndpoints(monitor=monitor, prefix="/_status")) as http:
        assert (await http.get("/_status/live")).status_code == 200
        assert (await http.get("/_status")).status_code == 200
        assert (await http.get("/health")).status_code == 404


async def test_mounted_in_starlette(monitor: HealthMonitor) -> None:
    app = Starlette(routes=[Mount("/ops", app=HealthEndpoints(monitor=monitor))])
    async with client(app) as http:
        assert (await http.get("/ops/health/live")).json() == {"status": "pass"}
        assert (await http.get("/ops/health")).json()["status"] == "pass"


async def test_as_fastapi_middleware(monitor: HealthMonitor) -> None:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.add_middleware(HealthEndpoints, monitor=monitor)
    async with client(app) as http:
        assert (await http.get("/hello")).json() == {"hello": "world"}
        ready = await http.get("/health/ready")
    assert (ready.status_code, ready.json()["status"]) == (200, "pass")


async def test_starlette_app_behind_it(monitor: HealthMonitor) -> None:
    inner = Starlette(routes=[Route("/", lambda request: PlainTextResponse("home"))])
    async with client(HealthEndpoints(inner, monitor=monitor)) as http:
        assert (await http.get("/")).text == "home"
        assert (await http.get("/health/live")).status_code == 200


async def test_a_stalled_check_does_not_stall_the_endpoint(manual_clock: FakeClock) -> None:
    async def stall() -> None:
        await asyncio.Event().wait()

    monitor = HealthMonitor(clock=manual_clock)
    monitor.add("broker", stall, timeout=3)
    async with client(HealthEndpoints(monitor=monitor)) as http:
        request = asyncio.create_task(http.get("/health"))
        await tick(10)
        assert not request.done()
        manual_clock.advance(3)
        response = await request
    assert response.status_code == 503
    [entry] = response.json()["checks"]["broker:responseTime"]
    assert (entry["status"], entry["output"], entry["observedValue"]) == (
        "fail",
        "timed out after 3 s",
        3000.0,
    )


async def test_a_background_monitor_answers_from_its_latest_run(manual_clock: FakeClock) -> None:
    db = Switch()
    monitor = HealthMonitor(interval=30, clock=manual_clock)
    monitor.add("db", db)
    async with monitor, client(HealthEndpoints(monitor=monitor)) as http:
        await tick(5)
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
        assert db.calls == 1


async def test_lifespan_without_an_app() -> None:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await HealthEndpoints()({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_the_circuit_breaker_view(clock: FakeClock) -> None:
    closed = CircuitBreaker(name="health-view-closed", clock=clock, window=20, min_calls=5)
    tripped = CircuitBreaker(
        name="health-view-open",
        clock=clock,
        window_seconds=60,
        consecutive_failures=2,
        open_duration=30,
    )
    isolated = CircuitBreaker(name="health-view-isolated", clock=clock)
    closed.call(lambda: None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            tripped.call(Switch(False))
    clock.advance(10)
    isolated.isolate()
    async with client(HealthEndpoints()) as http:
        response = await http.get("/health/circuit-breakers")
    async with client(HealthEndpoints(breakers=False)) as http:
        off = await http.get("/health/circuit-breakers")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    views = {
        v["name"]: v
        for v in response.json()["circuit_breakers"]
        if v["name"].startswith("health-view-")
    }
    assert list(views) == sorted(views)
    assert views["health-view-closed"] == {
        "name": "health-view-closed",
        "state": "closed",
        "shared": False,
        "window": {
            "kind": "count",
            "size": 20,
            "calls": 1,
            "failures": 0,
            "slow_calls": 0,
            "failure_ratio": 0.0,
            "slow_call_ratio": 0.0,
            "consecutive_failures": 0,
        },
        "next_trial_in": None,
        "next_trial_at": None,
    }
    opened = views["health-view-open"]
    assert opened["state"] == "open"
    assert opened["window"]["kind"] == "time"
    assert opened["window"]["seconds"] == 60
    assert (opened["window"]["failures"], opened["window"]["consecutive_failures"]) == (2, 2)
    assert opened["next_trial_in"] == 20.0
    assert ISO.match(opened["next_trial_at"])
    assert views["health-view-isolated"]["state"] == "isolated"
    assert views["health-view-isolated"]["next_trial_in"] is None
    assert off.status_code == 404


@pytest.mark.parametrize(
    ("build", "path"),
    [
        (lambda: HealthEndpoints(HealthMonitor()), "app"),  # type: ignore[arg-type]
        (lambda: HealthEndpoints("app"), "app"),  # type: ignore[arg-type]
        (lambda: HealthEndpoints(monitor="m"), "monitor"),  # type: ignore[arg-type]
        (lambda: HealthEndpoints(prefix="health"), "prefix"),
        (lambda: HealthEndpoints(prefix="/health/"), "prefix"),
        (lambda: HealthEndpoints(details="yes"), "details"),  # type: ignore[arg-type]
        (lambda: HealthEndpoints(version=2), "version"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_name_themselves(build: Any, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.path == path
