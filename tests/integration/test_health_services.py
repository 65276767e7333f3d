"""The ready-made health checks and the health endpoints against the real services,
and with each service cut off through the fault proxy (refuse, stall, reset)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from buttress.integrations.asgi import HealthEndpoints
from buttress.observe import health
from buttress.observe.health import Check, HealthMonitor, HealthStatus

from tests.conftest import SERVICES, require_service
from tests.faults import FaultProxy, Mode
from tests.integration._http_server import ScriptedServer

# service -> (ready-made check, URL with {port})
TARGETS: dict[str, tuple[str, str]] = {
    "postgres": ("postgres_check", "postgresql://127.0.0.1:{port}/test"),
    "redis": ("redis_check", "redis://127.0.0.1:{port}/0"),
    "rabbitmq": ("rabbitmq_check", "amqp://guest:guest@127.0.0.1:{port}/"),
    "nats": ("nats_check", "nats://127.0.0.1:{port}"),
}
TIMEOUT = 1.0
GENEROUS = 30.0  # an upper bound only a stalled endpoint would reach, not a timing


def ready_made(service: str, port: int, **options: Any) -> Check:
    factory_name, url = TARGETS[service]
    factory: Callable[..., Check] = getattr(health, factory_name)
    return factory(url.format(port=port), **options)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("service", list(TARGETS))
async def test_the_check_passes_against_the_real_service(service: str) -> None:
    require_service(service)
    check = ready_made(service, SERVICES[service], timeout=5)
    monitor = HealthMonitor([check])
    for _ in range(2):  # a second run opens a fresh connection as well
        result = (await monitor.run())[service]
        assert (result.status, result.output, result.timed_out) == (HealthStatus.PASS, "", False)
    assert check.success_rate == 1.0
    assert result.component_type in {"datastore", "component"}


@pytest.mark.parametrize("mode", ["refuse", "reset", "stall"])
@pytest.mark.parametrize("service", list(TARGETS))
async def test_a_cut_off_service_fails_the_endpoints_within_its_timeout(
    service: str, mode: Mode
) -> None:
    require_service(service)
    async with FaultProxy(SERVICES[service]) as proxy:
        monitor = HealthMonitor([ready_made(service, proxy.port, timeout=TIMEOUT)])
        async with client(HealthEndpoints(monitor=monitor)) as http:
            assert (await http.get("/health")).status_code == 200
            await proxy.set_mode(mode)
            started = time.monotonic()
            response = await http.get("/health")
            assert time.monotonic() - started < GENEROUS
            ready = await http.get("/health/ready")
            live = await http.get("/health/live")
            await proxy.set_mode("pass")
            recovered = await http.get("/health")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/health+json"
    document = response.json()
    assert document["status"] == "fail"
    [entry] = document["checks"][f"{service}:responseTime"]
    assert entry["status"] == "fail"
    assert entry["observedUnit"] == "ms"
    if mode == "stall":
        assert entry["output"] == f"timed out after {TIMEOUT:g} s"
        assert monitor[service].last is not None
    else:
        assert "timed out" not in entry["output"]
    assert entry["output"]
    assert ready.status_code == 503
    assert (live.status_code, live.json()) == (200, {"status": "pass"})
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["status"] == "pass"


async def test_a_reset_of_open_connections_is_a_failure_too() -> None:
    require_service("redis")
    async with FaultProxy(SERVICES["redis"]) as proxy:
        import redis.asyncio as aioredis

        client_ = aioredis.from_url(f"redis://127.0.0.1:{proxy.port}/0")
        try:
            assert await client_.ping()
            await proxy.set_mode("reset")
            with pytest.raises(Exception, match=r"(?i)connection|reset|closed"):
                await client_.ping()
        finally:
            await client_.aclose()


async def test_a_password_never_shows_in_an_output() -> None:
    async with FaultProxy(SERVICES["postgres"], mode="refuse") as proxy:
        check = health.postgres_check(
            f"postgresql://app:s3cr%40t@127.0.0.1:{proxy.port}/test", timeout=TIMEOUT
        )
        check._secrets = (*check._secrets, str(proxy.port))  # the port is in the message
        result = (await HealthMonitor([check]).run())["postgres"]
    assert result.status is HealthStatus.FAIL
    assert "***" in result.output
    assert "s3cr" not in result.output


class Served:
    """An ASGI app under uvicorn on 127.0.0.1 and an ephemeral port, in a thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        pause = threading.Event()  # never set: a bounded wait between looks
        while not self.server.started:
            pause.wait(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)


async def test_the_endpoints_under_uvicorn_with_every_service() -> None:
    for service in TARGETS:
        require_service(service)
    async with FaultProxy(SERVICES["redis"]) as proxy:
        monitor = HealthMonitor(
            [ready_made(service, SERVICES[service], timeout=5) for service in TARGETS]
        )
        monitor.include(
            health.redis_check(
                f"redis://127.0.0.1:{proxy.port}/0", name="cache", timeout=TIMEOUT, critical=False
            )
        )
        with Served(HealthEndpoints(monitor=monitor, service_id="orders")) as base:
            async with httpx.AsyncClient(base_url=base, timeout=GENEROUS) as http:
                healthy = await http.get("/health")
                await proxy.set_mode("stall")
                degraded = await http.get("/health")
                ready = await http.get("/health/ready")
                breakers = await http.get("/health/circuit-breakers")
    assert healthy.status_code == 200
    document = healthy.json()
    assert (document["status"], document["serviceId"]) == ("pass", "orders")
    assert set(document["checks"]) == {f"{name}:responseTime" for name in [*TARGETS, "cache"]}
    assert degraded.status_code == 200
    assert degraded.json()["status"] == "warn"
    [cache] = degraded.json()["checks"]["cache:responseTime"]
    assert (cache["status"], cache["output"]) == ("fail", f"timed out after {TIMEOUT:g} s")
    assert (ready.status_code, ready.json()["status"]) == (200, "warn")
    assert breakers.status_code == 200
    assert isinstance(breakers.json()["circuit_breakers"], list)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer().start()
    yield running
    running.stop()


async def test_the_http_check_passes_on_an_expected_status(server: ScriptedServer) -> None:
    monitor = HealthMonitor([health.http_check(server.script(200), timeout=5)])
    monitor.include(health.http_check(server.script(204), name="exact", expect=204, timeout=5))
    report = await monitor.run()
    assert report.status is HealthStatus.PASS
    assert report["http"].component_type == "http"


async def test_the_http_check_fails_on_another_status(server: ScriptedServer) -> None:
    monitor = HealthMonitor([health.http_check(server.script(503), timeout=5)])
    monitor.include(health.http_check(server.script(200), name="strict", expect={204}, timeout=5))
    report = await monitor.run()
    assert (report["http"].status, report["http"].output) == (
        HealthStatus.FAIL,
        "GET answered 503, expected 200-399",
    )
    assert report["strict"].output == "GET answered 200, expected 204"


async def test_the_http_check_times_out_on_a_hanging_server(server: ScriptedServer) -> None:
    url = server.script("hang")
    monitor = HealthMonitor([health.http_check(url, timeout=TIMEOUT)])
    async with client(HealthEndpoints(monitor=monitor)) as http:
        response = await asyncio.wait_for(http.get("/health"), GENEROUS)
    assert response.status_code == 503
    [entry] = response.json()["checks"]["http:responseTime"]
    assert entry["output"] == f"timed out after {TIMEOUT:g} s"
    assert server.seen(url) == 1


async def test_the_http_check_through_the_fault_proxy(server: ScriptedServer) -> None:
    async with FaultProxy(server.port) as proxy:
        check = health.http_check(f"http://127.0.0.1:{proxy.port}/", timeout=TIMEOUT)
        monitor = HealthMonitor([check])
        outcomes = {}
        modes: tuple[Mode, ...] = ("pass", "refuse", "reset", "stall", "pass")
        for mode in modes:
            await proxy.set_mode(mode)
            result = (await monitor.run())["http"]
            outcomes[mode] = (result.outcome, result.timed_out)
    assert outcomes == {
        "pass": (HealthStatus.PASS, False),
        "refuse": (HealthStatus.FAIL, False),
        "reset": (HealthStatus.FAIL, False),
        "stall": (HealthStatus.FAIL, True),
    }
