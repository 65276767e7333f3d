"""RouteLimiter: ``@routes.limit(...)`` on Starlette and FastAPI endpoints, sync and async."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from fastapi import Request as FastAPIRequest
from fastapi import Response as FastAPIResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import QUOTA_EXCEEDED, RouteLimiter, api_key
from buttress.ratelimit import RateLimiter, TokenBucket
from buttress.stores import MemoryStore, StoreUnavailable

from tests.unit.integrations.asgi.helpers import client_of


@pytest.fixture
def routes(clock: FakeClock) -> RouteLimiter:
    return RouteLimiter(store=MemoryStore(clock=clock), clock=clock)


def refusal_ok(response: httpx.Response, wait: str, policies: list[str]) -> None:
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == wait
    body = response.json()
    assert body["type"] == QUOTA_EXCEEDED
    assert body["violated-policies"] == policies
    assert int(response.headers["content-length"]) == len(response.content)


# ----------------------------------------------------------------------------- Starlette


async def test_a_starlette_endpoint_async_and_sync(routes: RouteLimiter) -> None:
    @routes.limit("2/minute", name="hello")
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.url.path}")

    @routes.limit("1/second", name="sync")
    def plain(request):  # type: ignore[no-untyped-def]  # Starlette style, unannotated
        return PlainTextResponse("sync")

    app = Starlette(routes=[Route("/hello", hello), Route("/sync", plain)])
    async with client_of(app) as client:
        ok = [await client.get("/hello") for _ in range(2)]
        refused = await client.get("/hello")
        sync_ok = await client.get("/sync")
        sync_refused = await client.get("/sync")
    assert [r.text for r in ok] == ["hello /hello"] * 2
    assert ok[0].headers["ratelimit-policy"] == '"hello";q=2;w=60'
    # Rate strings are fixed windows, as in limits and slowapi: full again when the
    # clock's window ends (the fake clock starts at a window boundary).
    assert ok[0].headers["ratelimit"] == '"hello";r=1;t=60'
    assert ok[0].headers["x-ratelimit-remaining"] == "1"
    refusal_ok(refused, "60", ["hello"])
    assert refused.json()["instance"] == "/hello"
    assert refused.headers["ratelimit"] == '"hello";r=0;t=60'
    assert sync_ok.text == "sync"
    assert sync_ok.headers["ratelimit"] == '"sync";r=0;t=1'
    refusal_ok(sync_refused, "1", ["sync"])


async def test_the_default_name_is_the_endpoint_qualified_name(routes: RouteLimiter) -> None:
    @routes.limit("5/minute")
    async def named(request: Request) -> Response:
        return PlainTextResponse("ok")

    async with client_of(Starlette(routes=[Route("/", named)])) as client:
        response = await client.get("/")
    assert response.headers["ratelimit"] == (
        f'"{__name__}.test_the_default_name_is_the_endpoint_qualified_name.<locals>.named";r=4;t=60'
    )


async def test_methods_limit_only_those_methods(routes: RouteLimiter) -> None:
    @routes.limit("1/minute", name="writes", methods="POST")
    async def items(request: Request) -> Response:
        return PlainTextResponse(request.method)

    app = Starlette(routes=[Route("/items", items, methods=["GET", "POST"])])
    async with client_of(app) as client:
        reads = [await client.get("/items") for _ in range(3)]
        writes = [await client.post("/items") for _ in range(2)]
    assert [r.status_code for r in reads] == [200] * 3
    assert "ratelimit" not in reads[0].headers
    assert [r.status_code for r in writes] == [200, 429]


async def test_stacked_limits_act_as_one_and_stop_at_the_first_refusal(
    routes: RouteLimiter, clock: FakeClock
) -> None:
    @routes.limit("1/second", name="per-ip")
    @routes.limit("100/hour", name="per-key", key=api_key())
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    # One wrapper over the endpoint, not two.
    assert inspect.unwrap(endpoint).__name__ == "endpoint"
    assert endpoint.__wrapped__ is inspect.unwrap(endpoint)  # type: ignore[attr-defined]
    key = {"X-API-Key": "sk_live_1"}
    async with client_of(Starlette(routes=[Route("/", endpoint)])) as client:
        first = await client.get("/", headers=key)
        refused = [await client.get("/", headers=key) for _ in range(5)]
        clock.advance(2)
        later = await client.get("/", headers=key)
    assert first.headers["ratelimit"] == '"per-ip";r=0;t=1, "per-key";r=99;t=3600'
    assert all(r.status_code == 429 for r in refused)
    assert refused[0].json()["violated-policies"] == ["per-ip"]
    # Refused per IP, the five took nothing from the key.
    assert later.status_code == 200
    assert '"per-key";r=98;' in later.headers["ratelimit"]


async def test_a_ready_limiter_shares_one_budget_between_routes(
    routes: RouteLimiter, clock: FakeClock
) -> None:
    search = RateLimiter(
        TokenBucket(2, 60.0), store=MemoryStore(clock=clock), name="search", clock=clock
    )

    @routes.limit(search)
    async def one(request: Request) -> Response:
        return PlainTextResponse("one")

    @routes.limit(search)
    async def two(request: Request) -> Response:
        return PlainTextResponse("two")

    app = Starlette(routes=[Route("/one", one), Route("/two", two)])
    async with client_of(app) as client:
        statuses = [(await client.get(path)).status_code for path in ("/one", "/two", "/one")]
    assert statuses == [200, 200, 429]


# ------------------------------------------------------------------------------ FastAPI


class Item(BaseModel):
    name: str
    price: float


def fastapi_app(routes: RouteLimiter) -> FastAPI:
    app = FastAPI()

    @app.post("/items/{item_id}")
    @routes.limit("2/minute", name="create")
    async def create(
        item_id: int,
        item: Item,
        incoming: FastAPIRequest,
        response: FastAPIResponse,
        verbose: Annotated[bool, Query()] = False,
    ) -> dict[str, Any]:
        return {"id": item_id, "name": item.name, "verbose": verbose, "path": incoming.url.path}

    @app.get("/plain")
    @routes.limit("1/minute", name="plain")
    def plain(req: FastAPIRequest) -> dict[str, str]:  # sync: FastAPI runs it in a thread
        return {"client": "seen"}

    @app.get("/model")
    @routes.limit("1/minute", name="model")
    async def model(request: FastAPIRequest) -> JSONResponse:
        return JSONResponse({"ok": True})

    return app


async def test_a_fastapi_endpoint_keeps_its_signature_and_dependencies(
    routes: RouteLimiter,
) -> None:
    app = fastapi_app(routes)
    body = {"name": "lamp", "price": 9.5}
    async with client_of(app) as client:
        ok = await client.post("/items/7?verbose=true", json=body)
        second = await client.post("/items/8", json=body)
        refused = await client.post("/items/9", json=body)
        invalid = await client.post("/items/x", json=body)
        schema = (await client.get("/openapi.json")).json()
    assert ok.status_code == 200
    assert ok.json() == {"id": 7, "name": "lamp", "verbose": True, "path": "/items/7"}
    # The headers went through FastAPI's injected Response.
    assert ok.headers["ratelimit"] == '"create";r=1;t=60'
    assert ok.headers["ratelimit-policy"] == '"create";q=2;w=60'
    assert second.json()["id"] == 8
    refusal_ok(refused, "60", ["create"])
    assert refused.headers["ratelimit"] == '"create";r=0;t=60'
    # FastAPI validates before it calls the endpoint: an invalid request is a 422, not a
    # 429, and takes nothing from the limit.
    assert invalid.status_code == 422
    # OpenAPI sees the endpoint's own parameters, not the wrapper's.
    operation = schema["paths"]["/items/{item_id}"]["post"]
    assert sorted(p["name"] for p in operation["parameters"]) == ["item_id", "verbose"]
    assert "requestBody" in operation


async def test_a_fastapi_sync_endpoint_and_a_returned_response(routes: RouteLimiter) -> None:
    app = fastapi_app(routes)
    async with client_of(app) as client:
        plain = await client.get("/plain")
        plain_refused = await client.get("/plain")
        model = await client.get("/model")
        model_refused = await client.get("/model")
    assert plain.json() == {"client": "seen"}
    # A dict without a Response parameter: nowhere to put the headers.
    assert "ratelimit" not in plain.headers
    refusal_ok(plain_refused, "60", ["plain"])
    assert plain_refused.headers["ratelimit"] == '"plain";r=0;t=60'
    assert model.headers["ratelimit"] == '"model";r=0;t=60'
    refusal_ok(model_refused, "60", ["model"])


def test_the_wrapper_shows_the_endpoint_signature(routes: RouteLimiter) -> None:
    async def endpoint(item_id: int, request: FastAPIRequest, q: str | None = None) -> None:
        return None

    limited = routes.limit("1/second", name="x")(endpoint)
    assert inspect.signature(limited) == inspect.signature(endpoint)
    assert inspect.iscoroutinefunction(limited)
    assert limited.__name__ == "endpoint"


# ------------------------------------------------------------------------ configuration


def test_an_endpoint_without_a_request_is_refused_when_decorated(routes: RouteLimiter) -> None:
    async def no_request(item_id: int, q: str | None = None) -> dict[str, int]:
        return {"id": item_id}

    with pytest.raises(ConfigError, match="takes no request") as info:
        routes.limit("1/second", name="x")(no_request)
    assert info.value.path == "endpoint"
    assert "no_request" in str(info.value)


def test_a_sync_endpoint_cannot_await_an_async_key(routes: RouteLimiter) -> None:
    async def known(key: str) -> bool:
        return True

    def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    with pytest.raises(ConfigError, match="async def") as info:
        routes.limit("1/second", name="x", key=api_key(validate=known))(endpoint)
    assert info.value.path == "key"


async def test_an_async_endpoint_awaits_an_async_key(routes: RouteLimiter) -> None:
    async def known(key: str) -> bool:
        return key == "good"

    @routes.limit("1/minute", name="keyed", key=api_key(validate=known))
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    async with client_of(Starlette(routes=[Route("/", endpoint)])) as client:
        good = [await client.get("/", headers={"X-API-Key": "good"}) for _ in range(2)]
        bad = [await client.get("/", headers={"X-API-Key": "bad"}) for _ in range(2)]
    assert [r.status_code for r in good] == [200, 429]
    # A key that fails validation is no key: this limit does not apply.
    assert [r.status_code for r in bad] == [200, 200]
    assert "ratelimit" not in bad[0].headers


@pytest.mark.parametrize(
    ("limits", "options", "path"),
    [
        ((), {}, "limits"),
        (("nonsense",), {}, "limits[0]"),
        (("1/second",), {"name": ""}, "name"),
        (("1/second",), {"cost": 0}, "cost"),
    ],
)
def test_limit_rejects_bad_options(
    routes: RouteLimiter, limits: tuple[Any, ...], options: dict[str, Any], path: str
) -> None:
    async def endpoint(request: Request) -> None:
        return None

    with pytest.raises(ConfigError) as info:
        routes.limit(*limits, **options)(endpoint)
    assert info.value.path == path


def test_a_ready_limiter_comes_alone_and_with_its_own_name(
    routes: RouteLimiter, clock: FakeClock
) -> None:
    ready = RateLimiter(TokenBucket(1, 1.0), name="ready", clock=clock)
    with pytest.raises(ConfigError) as info:
        routes.limit(ready, name="other")
    assert info.value.path == "name"
    with pytest.raises(ConfigError) as info:
        routes.limit(ready, "1/second")
    assert info.value.path == "limits"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"key": "ip"}, "key"),
        ({"store": 42}, "store"),
        ({"headers": "yes"}, "headers"),
        ({"fail_open": 1}, "fail_open"),
    ],
)
def test_route_limiter_rejects_bad_options(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RouteLimiter(**options)
    assert info.value.path == path


def test_calling_the_endpoint_without_a_request_is_a_type_error(routes: RouteLimiter) -> None:
    @routes.limit("1/second", name="x")
    def endpoint(request: Request) -> str:
        return "ok"

    with pytest.raises(TypeError, match="without its request"):
        endpoint("not a request")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- outages


class DownStore:
    """A store whose backend is down."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.name = "down"

    async def adecide(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down", "connection refused")

    def decide(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down", "connection refused")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_store_outage_lets_requests_through_logged_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    routes = RouteLimiter(store=DownStore(clock), clock=clock)  # type: ignore[arg-type]

    @routes.limit("1/minute", name="async")
    async def one(request: Request) -> Response:
        return PlainTextResponse("ok")

    @routes.limit("1/minute", name="sync")
    def two(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/one", one), Route("/two", two)])
    with caplog.at_level(logging.WARNING, logger="buttress.integrations.asgi"):
        async with client_of(app) as client:
            statuses = [(await client.get(p)).status_code for p in ["/one", "/two"] * 10]
    assert statuses == [200] * 20
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "rate limiter 'async' cannot decide",
        "rate limiter 'sync' cannot decide",
    ]


async def test_fail_open_false_propagates(clock: FakeClock) -> None:
    routes = RouteLimiter(store=DownStore(clock), clock=clock, fail_open=False)  # type: ignore[arg-type]

    @routes.limit("1/minute", name="strict")
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    async with client_of(Starlette(routes=[Route("/", endpoint)])) as client:
        with pytest.raises(StoreUnavailable):
            await client.get("/")


# ------------------------------------------------------------------------------ imports


def test_the_middleware_imports_no_starlette_and_the_decorator_does() -> None:
    code = (
        "import json, sys\n"
        "from buttress.integrations.asgi import RateLimitMiddleware, Rule, client_ip\n"
        "before = [m for m in sys.modules if m.split('.')[0] == 'starlette']\n"
        "from buttress.integrations.asgi import RouteLimiter\n"
        "after = [m for m in sys.modules if m.split('.')[0] == 'starlette']\n"
        "print(json.dumps([before, bool(after)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == [[], True]
