"""The ASGI middleware and route decorator on a real Redis: stacked rules, sync and async
endpoints, and a Redis outage logged once, not once per request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from buttress.integrations.asgi import RateLimitMiddleware, RouteLimiter, Rule, api_key
from buttress.ratelimit import FixedWindow, RateLimiter, TokenBucket
from buttress.stores import Store, store_from_url

from tests.conftest import require_service
from tests.integration.test_stores_redis import PrivateRedis, private_redis  # noqa: F401

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("redis")
    name = f"buttress-test-asgi-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[Store]:
    store = store_from_url(URL, prefix=prefix)
    yield store
    await store.aclose()
    store.close()


def client_of(app: object, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 4711))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def test_stacked_rules_on_redis(store: Store) -> None:
    per_ip = RateLimiter(TokenBucket(2, 60.0), store=store, name="per-ip")
    per_key = RateLimiter(FixedWindow(10, 3600), store=store, name="per-key")
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", ok)]),
        [Rule(per_ip), Rule(per_key, key=api_key())],
    )
    key = {"X-API-Key": "sk_live_0123"}
    async with client_of(app) as client:
        statuses = [(await client.get("/", headers=key)).status_code for _ in range(4)]
    async with client_of(app, peer="198.51.100.1") as other:
        last = await other.get("/", headers=key)
    assert statuses == [200, 200, 429, 429]
    # Two refusals per IP took nothing from the key: two requests, then this one.
    assert '"per-key";r=7;' in last.headers["ratelimit"]


async def test_route_limits_on_redis_sync_and_async(store: Store) -> None:
    routes = RouteLimiter(store=store)
    app = FastAPI()

    @app.get("/async")
    @routes.limit(TokenBucket(2, 60.0), name="async-route")
    async def async_route(incoming: Request) -> PlainTextResponse:
        return PlainTextResponse("async")

    @app.get("/sync")
    @routes.limit(TokenBucket(2, 60.0), name="sync-route")
    def sync_route(incoming: Request) -> PlainTextResponse:
        return PlainTextResponse("sync")

    async with client_of(app) as client:
        for path in ("/async", "/sync"):
            statuses = [(await client.get(path)).status_code for _ in range(3)]
            assert statuses == [200, 200, 429], path


async def test_a_redis_outage_is_logged_once_each_way(
    private_redis: PrivateRedis,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = store_from_url(private_redis.url, prefix="asgi-outage", timeout=0.5)
    limiter = RateLimiter(TokenBucket(1000, 1.0), store=store, name="shared")
    app = RateLimitMiddleware(Starlette(routes=[Route("/", ok)]), [Rule(limiter)])
    caplog.set_level(logging.INFO, logger="buttress.integrations.asgi")
    try:
        async with client_of(app) as client:
            assert (await client.get("/")).headers["ratelimit"].startswith('"shared"')
            private_redis.stop()
            down = [await client.get("/") for _ in range(30)]
            private_redis.start()
            up = [await client.get("/") for _ in range(5)]
    finally:
        await store.aclose()
        store.close()
    assert all(r.status_code == 200 for r in down)
    assert "ratelimit" not in down[-1].headers
    assert up[-1].headers["ratelimit"].startswith('"shared"')
    records = [r for r in caplog.records if r.name == "buttress.integrations.asgi"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "rate limiter 'shared' cannot decide" in records[0].getMessage()
    assert all(r.exc_info is None for r in records)
