"""RateLimitMiddleware through real ASGI apps: headers, 429s, rules, failures, WebSockets."""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import (
    QUOTA_EXCEEDED,
    RateLimitMiddleware,
    Rule,
    api_key,
    client_ip,
)
from buttress.ratelimit import FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from buttress.stores import MemoryStore, StoreUnavailable

from tests.unit.integrations.asgi.helpers import (
    PEER,
    ROUTES,
    TestClient,
    WebSocketDenialResponse,
    calls,
    client_of,
    limiter,
    make_app,
    refused_connection,
    rule_for,
)

# ---------------------------------------------------------------- headers on responses


async def test_allowed_responses_carry_the_legacy_and_ietf_headers(clock: FakeClock) -> None:
    rule = rule_for(
        clock, TokenBucket(10, 1.0), FixedWindow(1000, 86400), policies=("burst", "daily")
    )
    async with client_of(make_app(rule)) as client:
        responses = [await client.get("/items") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    headers = responses[-1].headers
    assert headers["x-ratelimit-limit"] == "10"
    assert headers["x-ratelimit-remaining"] == "7"
    # The daily window is the last to come back full.
    assert headers["x-ratelimit-reset"] == "86400"
    assert headers["ratelimit-policy"] == '"burst";q=10;w=1, "daily";q=1000;w=86400'
    assert headers["ratelimit"] == '"burst";r=7;t=1, "daily";r=997;t=86400'
    assert calls == ["GET /items"] * 3


async def test_policy_windows_for_each_algorithm(clock: FakeClock) -> None:
    rule = rule_for(
        clock,
        TokenBucket(100, 60.0),
        TokenBucket(2, 1.0, burst=3),
        SlidingWindow(50, 0.5),
        policies=("a", "b", "c"),
    )
    async with client_of(make_app(rule)) as client:
        response = await client.get("/items")
    # w is whole seconds, rounded up: 3 tokens at 2/s refill in 1.5 s; 0.5 s is 1.
    assert response.headers["ratelimit-policy"] == '"a";q=100;w=60, "b";q=3;w=2, "c";q=50;w=1'


async def test_default_policy_names_come_from_the_limiter(clock: FakeClock) -> None:
    one = rule_for(clock, TokenBucket(5, 1.0), name="search", path="/items")
    two = rule_for(clock, TokenBucket(5, 1.0), FixedWindow(9, 60), name="bulk", path="/other")
    async with client_of(make_app(one, two)) as client:
        first = await client.get("/items")
        second = await client.get("/other")
    assert first.headers["ratelimit"] == '"search";r=4;t=1'
    assert second.headers["ratelimit"] == '"bulk-1";r=4;t=1, "bulk-2";r=8;t=60'


async def test_headers_false_leaves_allowed_responses_alone(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(1, 10.0))
    async with client_of(make_app(rule, headers=False)) as client:
        allowed = await client.get("/items")
        refused = await client.get("/items")
    assert not any(name.startswith(("x-ratelimit", "ratelimit")) for name in allowed.headers)
    assert refused.status_code == 429
    assert refused.headers["ratelimit"] == '"api";r=0;t=10'


async def test_app_headers_are_kept(clock: FakeClock) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"made"})

    middleware = RateLimitMiddleware(app, [rule_for(clock, TokenBucket(3, 1.0))])
    async with client_of(middleware) as client:
        response = await client.get("/anything")
    assert response.status_code == 201
    assert response.text == "made"
    assert response.headers["x-app"] == "1"
    assert response.headers["x-ratelimit-remaining"] == "2"


# ------------------------------------------------------------------------------ refusal


async def test_refusal_is_a_problem_document_with_retry_after(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(2, 1.0), policies=("burst",))
    async with client_of(make_app(rule)) as client:
        ok = [await client.get("/items?token=s3cret") for _ in range(2)]
        refused = await client.get("/items?token=s3cret")
        seen_by_app = list(calls)
        clock.advance(0.5)
        again = await client.get("/items")
    assert [r.status_code for r in ok] == [200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"  # 0.5 s, rounded up
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["x-ratelimit-reset"] == "1"
    assert refused.headers["ratelimit-policy"] == '"burst";q=2;w=1'
    assert refused.headers["ratelimit"] == '"burst";r=0;t=1'
    assert refused.json() == {
        "type": QUOTA_EXCEEDED,
        "title": "Quota exceeded",
        "status": 429,
        "detail": "Rate limit exceeded; retry in 1 second.",
        "instance": "/items",
        "violated-policies": ["burst"],
    }
    # Neither the key (the client's address) nor the query string leaks.
    assert PEER not in refused.text
    assert "s3cret" not in refused.text
    assert int(refused.headers["content-length"]) == len(refused.content)
    # The application never saw the refused request.
    assert seen_by_app == ["GET /items"] * 2
    assert again.status_code == 200


async def test_retry_after_is_rounded_up_to_whole_seconds(clock: FakeClock) -> None:
    clock.advance(10.25)
    rule = rule_for(clock, FixedWindow(1, 60), policies=("minute",))
    async with client_of(make_app(rule)) as client:
        await client.get("/items")
        refused = await client.get("/items")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "50"  # 49.75 s left in the window
    assert refused.json()["detail"] == "Rate limit exceeded; retry in 50 seconds."


async def test_a_refused_limit_reports_its_wait_as_the_window(clock: FakeClock) -> None:
    # 5 at once, then 1 per second: refused, the next token is 1 s away while
    # the bucket is full again only in 5 s.
    rule = rule_for(clock, TokenBucket(1, 1.0, burst=5), policies=("trickle",))
    async with client_of(make_app(rule)) as client:
        for _ in range(5):
            await client.get("/items")
        refused = await client.get("/items")
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit"] == '"trickle";r=0;t=1'
    assert refused.headers["x-ratelimit-reset"] == "5"


async def test_only_the_violated_policies_are_named(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(10, 1.0), FixedWindow(2, 3600), policies=("burst", "hourly"))
    async with client_of(make_app(rule)) as client:
        await client.get("/items")
        await client.get("/items")
        refused = await client.get("/items")
    assert refused.status_code == 429
    assert refused.json()["violated-policies"] == ["hourly"]
    assert refused.headers["retry-after"] == "3600"


async def test_a_cost_above_the_limit_is_refused_without_retry_after(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(2, 1.0), cost=3)
    async with client_of(make_app(rule)) as client:
        refused = await client.get("/items")
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    assert refused.json()["detail"].endswith("it cannot succeed.")
    assert calls == []


async def test_cost_is_taken_per_request(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(10, 1.0), cost=4)
    async with client_of(make_app(rule)) as client:
        statuses = [(await client.get("/items")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# ---------------------------------------------------------------------------- matching


async def test_rules_match_by_method_and_path_and_every_match_applies(clock: FakeClock) -> None:
    writes = rule_for(
        clock, TokenBucket(5, 1.0), name="writes", methods=("POST", "put"), path="/items/**"
    )
    reads = rule_for(clock, TokenBucket(9, 1.0), name="reads", path="/items/{id}")
    async with client_of(make_app(writes, reads)) as client:
        post = await client.post("/items/1")
        put = await client.put("/items/1")
        get = await client.get("/items/1")
        nested = await client.get("/items/1/parts")
        post_top = await client.post("/items")
        other = await client.get("/other")
    # Both rules match a write to one item: both are charged, both are reported.
    assert post.headers["ratelimit"] == '"writes";r=4;t=1, "reads";r=8;t=1'
    assert put.headers["ratelimit"] == '"writes";r=3;t=1, "reads";r=7;t=1'
    assert get.headers["ratelimit"] == '"reads";r=6;t=1'
    # {id} is one segment; "/items/**" needs the slash after "items".
    assert "ratelimit" not in nested.headers
    assert "ratelimit" not in post_top.headers
    assert "ratelimit" not in other.headers
    assert calls == [
        "POST /items/1",
        "PUT /items/1",
        "GET /items/1",
        "GET /items/1/parts",
        "POST /items",
        "GET /other",
    ]


async def test_default_rule_catches_what_no_rule_matched(clock: FakeClock) -> None:
    items = rule_for(clock, TokenBucket(5, 1.0), name="items", path="/items")
    fallback = rule_for(clock, TokenBucket(50, 1.0), name="everything")
    async with client_of(make_app(items, default=fallback)) as client:
        first = await client.get("/items")
        second = await client.get("/other")
    assert first.headers["ratelimit"] == '"items";r=4;t=1'
    assert second.headers["ratelimit"] == '"everything";r=49;t=1'


def test_methods_are_case_insensitive_and_a_single_string_is_one_method() -> None:
    rule = Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), methods="post")
    assert rule.methods == frozenset({"POST"})
    assert rule.matches("POST", "/x")
    assert not rule.matches("GET", "/x")


# -------------------------------------------------------------------- exemption, errors


async def test_exempt_requests_pass_without_limit_or_headers(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(1, 60.0))
    app = make_app(rule, exempt=lambda scope: scope["path"] == "/health")
    async with client_of(app) as client:
        health = [await client.get("/health") for _ in range(5)]
        first = await client.get("/items")
        second = await client.get("/items")
    assert [r.status_code for r in health] == [200] * 5
    assert not any("ratelimit" in name for r in health for name in r.headers)
    assert [first.status_code, second.status_code] == [200, 429]


class BrokenStore:
    """A store whose backend is down: every decision fails."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.name = "broken"

    async def adecide(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("broken", "connection refused")

    async def adecide_all(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("broken", "connection refused")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_failing_store_lets_requests_through_by_default(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = RateLimiter(TokenBucket(1, 1.0), store=BrokenStore(clock), name="broken")
    rule = Rule(broken, key=api_key())
    with caplog.at_level(logging.WARNING, logger="buttress.integrations.asgi"):
        async with client_of(make_app(rule)) as client:
            response = await client.get("/items", headers={"X-API-Key": "sk_live_abc123"})
    assert response.status_code == 200
    assert "ratelimit" not in response.headers
    assert [r.getMessage() for r in caplog.records] == [
        "rate limiter 'broken' cannot decide: store 'broken' failed (StoreUnavailable: store "
        "'broken': connection refused); requests it limits are let through until the store "
        "answers again"
    ]
    assert caplog.records[0].exc_info is None
    assert "sk_live" not in caplog.text
    assert calls == ["GET /items"]


async def test_a_failing_store_propagates_when_not_fail_open(clock: FakeClock) -> None:
    broken = RateLimiter(TokenBucket(1, 1.0), store=BrokenStore(clock), name="broken")
    middleware = RateLimitMiddleware(Starlette(routes=ROUTES), [Rule(broken)], fail_open=False)
    async with client_of(middleware) as client:
        with pytest.raises(StoreUnavailable):
            await client.get("/items")
    assert calls == []


# --------------------------------------------------------- pass-through and contextvars


async def test_lifespan_and_unknown_scopes_pass_through_untouched(clock: FakeClock) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    middleware = RateLimitMiddleware(
        inner, [rule_for(clock, TokenBucket(1, 1.0))], max_websockets=1
    )

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        pass

    for kind in ("lifespan", "webtransport"):
        scope = {"type": kind, "asgi": {"version": "3.0"}}
        await middleware(scope, receive, send)
        assert seen[-1][0] is scope
        assert seen[-1][1] is receive
        assert seen[-1][2] is send
        assert scope == {"type": kind, "asgi": {"version": "3.0"}}


def test_starlette_lifespan_runs_through_the_middleware(clock: FakeClock) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(RateLimitMiddleware, rules=[rule_for(clock, TokenBucket(1, 1))])],
    )
    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/items").status_code == 200
    assert events == ["startup", "shutdown"]


async def test_context_variables_flow_both_ways(clock: FakeClock) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    handled_by: contextvars.ContextVar[str] = contextvars.ContextVar("handled_by")
    seen_outside: list[str] = []

    async def endpoint(request: Request) -> JSONResponse:
        handled_by.set("endpoint")
        return JSONResponse({"request_id": request_id.get("missing")})

    inner = Starlette(routes=[Route("/ctx", endpoint)])
    limited = RateLimitMiddleware(inner, [rule_for(clock, TokenBucket(5, 1.0))])

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request_id.set("req-7")
        await limited(scope, receive, send)
        if scope["type"] == "http":
            # The app ran in this task, so what it set is visible here.
            seen_outside.append(handled_by.get("missing"))

    async with client_of(outer) as client:
        response = await client.get("/ctx")
    assert response.json() == {"request_id": "req-7"}
    assert seen_outside == ["endpoint"]


async def test_no_rules_means_no_limit(clock: FakeClock) -> None:
    async with client_of(make_app()) as client:
        responses = [await client.get("/items") for _ in range(3)]
    assert [r.status_code for r in responses] == [200] * 3
    assert "ratelimit" not in responses[0].headers


# --------------------------------------------------------------------------- WebSockets


def ws_app(max_websockets: int = 2, **options: Any) -> tuple[Starlette, RateLimitMiddleware]:
    app = Starlette(routes=ROUTES)
    middleware = RateLimitMiddleware(app, max_websockets=max_websockets, **options)
    return app, middleware


def test_websocket_cap_refuses_one_over_and_frees_a_slot_on_close() -> None:
    _, middleware = ws_app(2)
    client = TestClient(middleware)
    with client.websocket_connect("/ws") as one, client.websocket_connect("/ws") as two:
        one.send_text("a")
        assert one.receive_text() == "a"
        two.send_text("b")
        assert two.receive_text() == "b"
        assert middleware.open_websockets("ip:testclient") == 2
        denial = refused_connection(client)
        assert isinstance(denial, WebSocketDenialResponse)
        assert denial.status_code == 429
        assert denial.headers["content-type"] == "application/problem+json"
        assert json.loads(denial.content) == {
            "type": "about:blank",
            "title": "Too Many Requests",
            "status": 429,
            "detail": "Too many open WebSocket connections; close one and try again.",
            "instance": "/ws",
        }
        assert "testclient" not in denial.text
        two.close()
        # The app sees the disconnect and ends; the session then is torn down.
    assert middleware.open_websockets("ip:testclient") == 0
    with client.websocket_connect("/ws") as three, client.websocket_connect("/ws") as four:
        three.send_text("c")
        assert three.receive_text() == "c"
        four.send_text("d")
        assert four.receive_text() == "d"
    assert middleware.open_websockets("ip:testclient") == 0


def test_closing_one_websocket_lets_another_in_while_others_stay_open() -> None:
    _, middleware = ws_app(1)
    client = TestClient(middleware)
    with client.websocket_connect("/ws") as first:
        first.send_text("x")
        assert first.receive_text() == "x"
        assert isinstance(refused_connection(client), WebSocketDenialResponse)
    with client.websocket_connect("/ws") as second:
        second.send_text("y")
        assert second.receive_text() == "y"


def test_websocket_refusal_without_the_denial_extension_closes_with_1008() -> None:
    _, middleware = ws_app(1)

    async def no_extensions(scope: Any, receive: Any, send: Any) -> None:
        scope = {**scope, "extensions": {}}
        await middleware(scope, receive, send)

    client = TestClient(no_extensions)
    with client.websocket_connect("/ws") as first:
        first.send_text("x")
        assert first.receive_text() == "x"
        refusal = refused_connection(client)
        assert refusal.code == 1008
        assert not isinstance(refusal, WebSocketDenialResponse)


def test_websocket_slot_is_released_when_the_endpoint_fails() -> None:
    _, middleware = ws_app(1)
    client = TestClient(middleware)

    def fail() -> None:
        with client.websocket_connect("/ws") as ws:
            ws.send_text("boom")
            ws.receive_text()

    with pytest.raises(RuntimeError, match="the endpoint failed"):
        fail()
    assert middleware.open_websockets("ip:testclient") == 0
    with client.websocket_connect("/ws") as ws:
        ws.send_text("ok")
        assert ws.receive_text() == "ok"


def test_websocket_cap_is_per_key_and_exemptions_are_not_counted() -> None:
    _, middleware = ws_app(
        1,
        websocket_key=api_key(),
        exempt=lambda scope: scope.get("query_string") == b"internal=1",
    )
    client = TestClient(middleware)
    alice = {"X-API-Key": "alice-key"}
    bob = {"X-API-Key": "bob-key"}
    with (
        client.websocket_connect("/ws", headers=alice) as a,
        client.websocket_connect("/ws", headers=bob) as b,
        client.websocket_connect("/ws?internal=1", headers=alice) as internal,
        client.websocket_connect("/ws") as no_key,
    ):
        for ws in (a, b, internal, no_key):
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
        refusal = refused_connection(client, headers=alice)
        assert isinstance(refusal, WebSocketDenialResponse)
        alice_key = "apikey:" + hashlib.sha256(b"alice-key").hexdigest()[:32]
        assert middleware.open_websockets(alice_key) == 1


def test_websockets_are_not_counted_without_a_cap(clock: FakeClock) -> None:
    middleware = RateLimitMiddleware(
        Starlette(routes=ROUTES), [rule_for(clock, TokenBucket(1, 60.0))]
    )
    client = TestClient(middleware)
    with client.websocket_connect("/ws") as one, client.websocket_connect("/ws") as two:
        one.send_text("a")
        assert one.receive_text() == "a"
        two.send_text("b")
        assert two.receive_text() == "b"
    assert middleware.open_websockets("ip:testclient") == 0


# ------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"path": "items"}, "path"),
        ({"methods": ()}, "methods"),
        ({"methods": ["GET", 3]}, "methods"),
        ({"key": "ip"}, "key"),
        ({"cost": 0}, "cost"),
        ({"cost": True}, "cost"),
        ({"policies": ("a", "b")}, "policies"),
        ({"policies": ("bad\nname",)}, "policies[0]"),
    ],
)
def test_rule_rejects_bad_options(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), **options)
    assert info.value.path == path


def test_rule_rejects_duplicate_policy_names_and_non_limiters() -> None:
    two = limiter(FakeClock(), TokenBucket(1, 1.0), FixedWindow(5, 60))
    with pytest.raises(ConfigError) as info:
        Rule(two, policies=("same", "same"))
    assert info.value.path == "policies"
    with pytest.raises(ConfigError) as info:
        Rule(object())  # type: ignore[arg-type]
    assert info.value.path == "limiter"


def test_policy_names_are_structured_field_strings(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(1, 1.0), policies=('say "hi" \\o/',))
    assert rule.policies == ('say "hi" \\o/',)
    assert rule._policy_header == b'"say \\"hi\\" \\\\o/";q=1;w=1'


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"rules": [object()]}, "rules[0]"),
        ({"default": object()}, "default"),
        ({"exempt": "yes"}, "exempt"),
        ({"max_websockets": 0}, "max_websockets"),
        ({"max_websockets": 1.5}, "max_websockets"),
        ({"websocket_key": "ip"}, "websocket_key"),
    ],
)
def test_middleware_rejects_bad_options(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimitMiddleware(Starlette(), **options)
    assert info.value.path == path


def test_the_default_rule_must_match_everything(clock: FakeClock) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimitMiddleware(
            Starlette(), default=rule_for(clock, TokenBucket(1, 1.0), path="/items")
        )
    assert info.value.path == "default"


def test_reprs_name_the_configuration(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(1, 1.0), methods="GET", path="/items/*")
    text = repr(RateLimitMiddleware(Starlette(), [rule], max_websockets=3))
    assert "path='/items/*'" in text
    assert "methods=['GET']" in text
    assert "max_websockets=3" in text
    assert repr(client_ip(["10.0.0.0/8"])) == (
        "client_ip(trusted_proxies=['10.0.0.0/8'], header='x-forwarded-for', ipv6_prefix=64)"
    )
