"""RateLimitMiddleware through real ASGI apps: headers, 429s, rules, keys, WebSockets."""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import (
    QUOTA_EXCEEDED,
    RateLimitMiddleware,
    Rule,
    api_key,
    client_ip,
    user_key,
)
from buttress.ratelimit import FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from buttress.stores import MemoryStore, StoreUnavailable

with warnings.catch_warnings():
    # Starlette's test client warns that it prefers httpx2 to the httpx installed here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketDenialResponse

PEER = "203.0.113.7"


def refused_connection(
    client: TestClient, path: str = "/ws", **options: Any
) -> WebSocketDisconnect:
    """Open a WebSocket that the middleware must refuse; its refusal."""
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(path, **options):
        pass  # pragma: no cover - refused before accept
    return info.value


# ----------------------------------------------------------------------------- helpers


def limiter(clock: FakeClock, *limits: Any, name: str = "api") -> RateLimiter:
    return RateLimiter(*limits, store=MemoryStore(clock=clock), name=name, clock=clock)


def rule_for(clock: FakeClock, *limits: Any, name: str = "api", **options: Any) -> Rule:
    return Rule(limiter(clock, *limits, name=name), **options)


calls: list[str] = []


async def echo(request: Request) -> PlainTextResponse:
    calls.append(f"{request.method} {request.url.path}")
    return PlainTextResponse("ok")


async def whoami(request: Request) -> PlainTextResponse:
    user = request.scope.get("user")
    return PlainTextResponse(user.display_name if user is not None else "")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "boom":
                raise RuntimeError("the endpoint failed")
            await websocket.send_text(text)
    except WebSocketDisconnect:
        pass


ROUTES = [
    Route("/items", echo, methods=["GET", "POST"]),
    Route("/items/{id}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
    Route("/items/{id}/parts", echo, methods=["GET"]),
    Route("/health", echo),
    Route("/other", echo),
    Route("/whoami", whoami),
    WebSocketRoute("/ws", ws_echo),
]


def make_app(*rules: Rule, outer: Sequence[Middleware] = (), **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES,
        middleware=[*outer, Middleware(RateLimitMiddleware, rules=list(rules), **options)],
    )


@asynccontextmanager
async def client_of(app: Any, peer: str = PEER) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(peer, 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


def http_scope(
    peer: str | None = PEER, headers: Sequence[tuple[str, str]] = (), path: str = "/"
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "client": (peer, 50123) if peer is not None else None,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }


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
    two = rule_for(clock, TokenBucket(5, 1.0), FixedWindow(9, 60), name="bulk")
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


async def test_rules_match_by_method_and_path_first_match_wins(clock: FakeClock) -> None:
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
    assert post.headers["ratelimit"] == '"writes";r=4;t=1'
    assert put.headers["ratelimit"] == '"writes";r=3;t=1'
    assert get.headers["ratelimit"] == '"reads";r=8;t=1'
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


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/items", "/items", True),
        ("/items", "/items/", False),
        ("/items/*", "/items/42", True),
        ("/items/*", "/items/", True),
        ("/items/*", "/items/42/parts", False),
        ("/items/**", "/items/42/parts", True),
        ("/items/**", "/items", False),
        ("/items/{id}", "/items/42", True),
        ("/items/{id}", "/items/", False),
        ("/items/{id}/parts", "/items/42/parts", True),
        ("/files/{rest:path}", "/files/a/b.txt", True),
        ("/files/{rest:path}", "/files/", False),
        ("/v1.0/*", "/v1x0/a", False),  # the dot is literal
        ("/*.json", "/data.json", True),
        # A decoded %0A cannot slip past a pattern.
        ("/items/**", "/items/a\nb", True),
        ("/files/{rest:path}", "/files/a\nb", True),
        ("/items/{id}", "/items/a\nb", True),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    rule = Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), path=pattern)
    assert rule.matches("GET", path) is expected


def test_a_regex_path_is_full_matched() -> None:
    rule = Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), path=re.compile(r"/v\d+/.*"))
    assert rule.matches("GET", "/v2/users")
    assert not rule.matches("GET", "/api/v2/users")


def test_methods_are_case_insensitive_and_a_single_string_is_one_method() -> None:
    rule = Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), methods="post")
    assert rule.methods == frozenset({"POST"})
    assert rule.matches("POST", "/x")
    assert not rule.matches("GET", "/x")


# ------------------------------------------------------------------------ key functions


def test_client_ip_uses_the_peer_when_no_proxy_is_trusted() -> None:
    key = client_ip()
    spoofed = http_scope(headers=[("X-Forwarded-For", "198.51.100.1")])
    assert key(spoofed) == f"ip:{PEER}"


def test_client_ip_walks_x_forwarded_for_from_the_right() -> None:
    key = client_ip(["10.0.0.0/8", "192.0.2.1"])
    scope = http_scope(
        "10.0.0.1", [("X-Forwarded-For", "6.6.6.6, 198.51.100.1, 192.0.2.1, 10.1.2.3")]
    )
    # 10.1.2.3 and 192.0.2.1 are ours; 198.51.100.1 is the client; 6.6.6.6 is its claim.
    assert key(scope) == "ip:198.51.100.1"


def test_client_ip_ignores_x_forwarded_for_from_an_untrusted_peer() -> None:
    key = client_ip(["10.0.0.0/8"])
    scope = http_scope("203.0.113.9", [("X-Forwarded-For", "198.51.100.1")])
    assert key(scope) == "ip:203.0.113.9"


trusted_hop = st.integers(0, 255).map(lambda n: f"10.0.0.{n}")
untrusted_hop = st.integers(0, 255).map(lambda n: f"198.51.100.{n}")


@given(hops=st.lists(st.one_of(trusted_hop, untrusted_hop), max_size=8), peer_trusted=st.booleans())
def test_client_ip_picks_the_rightmost_untrusted_hop(hops: list[str], peer_trusted: bool) -> None:
    key = client_ip(["10.0.0.0/8"])
    peer = "10.9.9.9" if peer_trusted else "203.0.113.9"
    scope = http_scope(peer, [("X-Forwarded-For", ", ".join(hops))] if hops else [])
    untrusted = [hop for hop in hops if not hop.startswith("10.")]
    if not peer_trusted:
        expected = peer  # whatever the header says
    elif untrusted:
        expected = untrusted[-1]
    else:
        expected = hops[0] if hops else peer
    assert key(scope) == f"ip:{expected}"


def test_client_ip_joins_repeated_headers_in_order() -> None:
    key = client_ip(["10.0.0.0/8"])
    scope = http_scope(
        "10.0.0.1",
        [("X-Forwarded-For", "198.51.100.1, 10.0.0.7"), ("X-Forwarded-For", "10.0.0.8")],
    )
    assert key(scope) == "ip:198.51.100.1"


def test_client_ip_all_trusted_gives_the_leftmost_and_no_header_the_peer() -> None:
    key = client_ip(["10.0.0.0/8"])
    assert key(http_scope("10.0.0.1", [("X-Forwarded-For", "10.9.9.9, 10.0.0.2")])) == (
        "ip:10.9.9.9"
    )
    assert key(http_scope("10.0.0.1")) == "ip:10.0.0.1"


def test_client_ip_stops_at_an_unparseable_hop() -> None:
    key = client_ip(["10.0.0.0/8"])
    scope = http_scope("10.0.0.1", [("X-Forwarded-For", "198.51.100.1, unknown, 10.0.0.2")])
    # Nothing left of "unknown" can be vouched for: the last trusted hop stands in.
    assert key(scope) == "ip:10.0.0.2"


def test_client_ip_strips_ports_and_brackets_and_unmaps_ipv4() -> None:
    key = client_ip(["10.0.0.0/8"], ipv6_prefix=128)
    assert key(http_scope("10.0.0.1", [("X-Forwarded-For", "198.51.100.1:4711")])) == (
        "ip:198.51.100.1"
    )
    assert key(http_scope("10.0.0.1", [("X-Forwarded-For", "[2001:db8::1]:4711")])) == (
        "ip:2001:db8::1"
    )
    assert key(http_scope("::ffff:198.51.100.2")) == "ip:198.51.100.2"
    assert key(http_scope("::ffff:10.0.0.1", [("X-Forwarded-For", "198.51.100.3")])) == (
        "ip:198.51.100.3"
    )


def test_client_ip_reads_the_forwarded_header() -> None:
    key = client_ip(["10.0.0.0/8"], header="forwarded", ipv6_prefix=128)
    scope = http_scope(
        "10.0.0.1",
        [
            ("Forwarded", 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https'),
            ("Forwarded", "For=10.0.0.5;by=10.0.0.1"),
        ],
    )
    assert key(scope) == "ip:2001:db8:cafe::17"
    # X-Forwarded-For is not consulted in this mode.
    other = http_scope("10.0.0.1", [("X-Forwarded-For", "198.51.100.1")])
    assert key(other) == "ip:10.0.0.1"
    # An obfuscated node ends the walk at the last trusted hop.
    hidden = http_scope("10.0.0.1", [("Forwarded", 'for=_hidden, for="10.0.0.4"')])
    assert key(hidden) == "ip:10.0.0.4"
    quoted_comma = http_scope("10.0.0.1", [("Forwarded", 'for=198.51.100.9;x="a,b"')])
    assert key(quoted_comma) == "ip:198.51.100.9"


def test_client_ip_groups_ipv6_by_prefix() -> None:
    assert client_ip()(http_scope("2001:db8:1:2:aaaa::1")) == "ip:2001:db8:1:2::/64"
    assert client_ip(ipv6_prefix=48)(http_scope("2001:db8:1:2::1")) == "ip:2001:db8:1::/48"
    assert client_ip(ipv6_prefix=128)(http_scope("2001:db8::5")) == "ip:2001:db8::5"


def test_client_ip_without_a_peer_does_not_apply() -> None:
    assert client_ip()(http_scope(None)) is None
    assert client_ip()(http_scope("testclient")) == "ip:testclient"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies[0]"),
        ({"trusted_proxies": ["10.0.0.1", 7]}, "trusted_proxies[1]"),
        ({"header": "x-real-ip"}, "header"),
        ({"ipv6_prefix": 0}, "ipv6_prefix"),
        ({"ipv6_prefix": True}, "ipv6_prefix"),
    ],
)
def test_client_ip_rejects_bad_options(options: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        client_ip(**options)
    assert info.value.path == path


async def test_trusted_proxy_honoured_and_spoofing_ignored_end_to_end(clock: FakeClock) -> None:
    rule = rule_for(clock, TokenBucket(1, 60.0), key=client_ip(["10.0.0.0/8"]))
    app = make_app(rule)
    async with client_of(app, peer="10.0.0.1") as proxy:
        a = await proxy.get("/items", headers={"X-Forwarded-For": "198.51.100.1"})
        b = await proxy.get("/items", headers={"X-Forwarded-For": "198.51.100.2"})
        a_again = await proxy.get("/items", headers={"X-Forwarded-For": "198.51.100.1"})
    async with client_of(app, peer="203.0.113.9") as attacker:
        first = await attacker.get("/items", headers={"X-Forwarded-For": "198.51.100.3"})
        spoofed = await attacker.get("/items", headers={"X-Forwarded-For": "198.51.100.4"})
    # Behind the trusted proxy, each forwarded client has its own quota.
    assert [a.status_code, b.status_code, a_again.status_code] == [200, 200, 429]
    # From an untrusted peer the header is ignored: one quota, whatever it claims.
    assert [first.status_code, spoofed.status_code] == [200, 429]


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


AUTH = [Middleware(AuthenticationMiddleware, backend=HeaderAuth())]


async def test_user_key_limits_per_user_and_falls_through_for_anonymous(clock: FakeClock) -> None:
    per_user = rule_for(clock, TokenBucket(2, 60.0), name="per-user", key=user_key())
    per_ip = rule_for(clock, TokenBucket(1, 60.0), name="per-ip")
    app = make_app(per_user, per_ip, outer=AUTH)
    async with client_of(app) as client:
        alice = [await client.get("/whoami", headers={"x-user": "alice"}) for _ in range(3)]
        bob = await client.get("/whoami", headers={"x-user": "bob"})
        anonymous = [await client.get("/whoami") for _ in range(2)]
    assert [r.status_code for r in alice] == [200, 200, 429]
    assert alice[0].text == "alice"
    assert alice[0].headers["ratelimit"] == '"per-user";r=1;t=30'
    assert bob.status_code == 200
    assert bob.headers["ratelimit"] == '"per-user";r=1;t=30'
    assert [r.status_code for r in anonymous] == [200, 429]
    assert anonymous[0].headers["ratelimit"] == '"per-ip";r=0;t=60'


def test_user_key_reads_identity_then_display_name() -> None:
    class WithIdentity:
        is_authenticated = True
        identity = 42
        display_name = "Alice"

    class NameOnly:
        is_authenticated = True

        @property
        def identity(self) -> str:
            raise NotImplementedError

        display_name = "alice"

    class Anonymous:
        is_authenticated = False
        identity = "nobody"

    key = user_key()
    assert key({"type": "http", "user": WithIdentity()}) == "user:42"
    assert key({"type": "http", "user": NameOnly()}) == "user:alice"
    assert key({"type": "http", "user": Anonymous()}) is None
    assert key({"type": "http"}) is None


def test_user_key_with_a_callable() -> None:
    key = user_key(lambda scope: scope.get("state", {}).get("tenant"))
    assert key({"type": "http", "state": {"tenant": "acme"}}) == "user:acme"
    assert key({"type": "http", "state": {}}) is None
    with pytest.raises(ConfigError):
        user_key("tenant")  # type: ignore[arg-type]


def test_api_key_is_hashed() -> None:
    key = api_key()
    digest = hashlib.sha256(b"sk_live_abc123").hexdigest()[:32]
    assert key(http_scope(headers=[("X-API-Key", "sk_live_abc123")])) == f"apikey:{digest}"
    assert key(http_scope()) is None
    assert key(http_scope(headers=[("X-API-Key", "  ")])) is None
    assert "sk_live" not in repr(key)


def test_api_key_with_a_scheme() -> None:
    key = api_key("authorization", scheme="Bearer")
    digest = hashlib.sha256(b"tok-1").hexdigest()[:32]
    assert key(http_scope(headers=[("Authorization", "bearer tok-1")])) == f"apikey:{digest}"
    assert key(http_scope(headers=[("Authorization", "Basic dTpw")])) is None


class RecordingStore:
    """A store that answers from memory and records every key it is asked about."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.name = "recording"
        self.keys: list[str] = []

    async def adecide(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.keys.append(key)
        return await self.inner.adecide(key, *args, **kwargs)

    async def adecide_all(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.keys.append(key)
        return await self.inner.adecide_all(key, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_raw_api_keys_never_reach_the_store_or_the_response(clock: FakeClock) -> None:
    store = RecordingStore(clock)
    limit = TokenBucket(1, 60.0)
    rule = Rule(RateLimiter(limit, store=store, name="keys", clock=clock), key=api_key())
    async with client_of(make_app(rule)) as client:
        ok = await client.get("/items", headers={"X-API-Key": "sk_live_abc123"})
        refused = await client.get("/items", headers={"X-API-Key": "sk_live_abc123"})
        other = await client.get("/items", headers={"X-API-Key": "sk_live_other"})
    assert [ok.status_code, refused.status_code, other.status_code] == [200, 429, 200]
    assert "sk_live" not in refused.text
    assert not any("sk_live" in value for value in refused.headers.values())
    digest = hashlib.sha256(b"sk_live_abc123").hexdigest()[:32]
    other_digest = hashlib.sha256(b"sk_live_other").hexdigest()[:32]
    assert store.keys == [f"keys:apikey:{digest}"] * 2 + [f"keys:apikey:{other_digest}"]


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
        "rate limiter 'broken' could not decide; request let through"
    ]
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
