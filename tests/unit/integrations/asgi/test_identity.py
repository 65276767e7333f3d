"""Key functions: client IP through trusted proxies, users, API keys (hashed, validated)."""

from __future__ import annotations

import hashlib
import inspect
import secrets
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import Rule, api_key, client_ip, user_key
from buttress.ratelimit import RateLimiter, TokenBucket
from buttress.stores import MemoryStore

from tests.unit.integrations.asgi.helpers import PEER, client_of, http_scope, make_app, rule_for


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


async def test_user_key_limits_per_user_and_the_default_rule_the_anonymous(
    clock: FakeClock,
) -> None:
    per_user = rule_for(clock, TokenBucket(2, 60.0), name="per-user", key=user_key())
    per_ip = rule_for(clock, TokenBucket(1, 60.0), name="per-ip")
    app = make_app(per_user, default=per_ip, outer=AUTH)
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


# ------------------------------------------------------------------ validated API keys

VALID = {"sk_live_alice", "sk_live_bob"}


def test_api_key_validate_turns_an_unknown_key_into_no_key() -> None:
    seen: list[str] = []

    def known(key: str) -> bool:
        seen.append(key)
        return key in VALID

    key = api_key(validate=known)
    digest = hashlib.sha256(b"sk_live_alice").hexdigest()[:32]
    assert key(http_scope(headers=[("X-API-Key", "sk_live_alice")])) == f"apikey:{digest}"
    assert key(http_scope(headers=[("X-API-Key", "made-up")])) is None
    assert key(http_scope()) is None
    # The validator sees the raw key, and only when there is one.
    assert seen == ["sk_live_alice", "made-up"]
    assert "validate=" in repr(key)


async def test_api_key_validate_may_be_async() -> None:
    async def known(key: str) -> bool:
        return key in VALID

    key = api_key("authorization", scheme="Bearer", validate=known)
    assert inspect.iscoroutinefunction(type(key).__call__)
    valid = await key(http_scope(headers=[("Authorization", "Bearer sk_live_bob")]))
    assert valid is not None
    assert valid.startswith("apikey:")
    assert await key(http_scope(headers=[("Authorization", "Bearer nope")])) is None
    assert await key(http_scope(headers=[("Authorization", "Basic sk_live_bob")])) is None


def test_a_sync_validator_that_returns_an_awaitable_is_an_error() -> None:
    async def check(key: str) -> bool:
        return True

    def looks_sync(key: str) -> Any:  # a plain function handing back a coroutine
        return check(key)

    key = api_key(validate=looks_sync)
    with pytest.raises(TypeError, match="async def"):
        key(http_scope(headers=[("X-API-Key", "k")]))


def test_api_key_validate_must_be_callable() -> None:
    with pytest.raises(ConfigError) as info:
        api_key(validate="yes")  # type: ignore[call-overload]
    assert info.value.path == "validate"


def ten_random_keys() -> list[dict[str, str]]:
    return [{"X-API-Key": secrets.token_hex(8)} for _ in range(10)]


async def test_ten_random_keys_pass_a_key_only_limit(clock: FakeClock) -> None:
    # The attack the docs show: a per-key limit alone, and a key per request.
    per_key = rule_for(clock, TokenBucket(3, 1.0), name="per-key", key=api_key())
    async with client_of(make_app(per_key)) as client:
        statuses = [(await client.get("/items", headers=h)).status_code for h in ten_random_keys()]
    assert statuses == [200] * 10


async def test_a_per_ip_rule_stops_ten_random_keys(clock: FakeClock) -> None:
    per_ip = rule_for(clock, TokenBucket(3, 1.0), name="per-ip", key=client_ip())
    per_key = rule_for(clock, TokenBucket(3, 1.0), name="per-key", key=api_key())
    async with client_of(make_app(per_ip, per_key)) as client:
        statuses = [(await client.get("/items", headers=h)).status_code for h in ten_random_keys()]
    assert statuses == [200] * 3 + [429] * 7


async def test_validated_keys_leave_made_up_ones_to_the_ip_rule(clock: FakeClock) -> None:
    checked: list[str] = []

    async def known(key: str) -> bool:
        checked.append(key)
        return key in VALID

    per_ip = rule_for(clock, TokenBucket(3, 1.0), name="per-ip", key=client_ip())
    per_key = rule_for(clock, TokenBucket(100, 1.0), name="per-key", key=api_key(validate=known))
    async with client_of(make_app(per_ip, per_key)) as client:
        random = [await client.get("/items", headers=h) for h in ten_random_keys()]
    assert [r.status_code for r in random] == [200] * 3 + [429] * 7
    # A made-up key is no limit key: only the per-IP limit is reported.
    assert random[0].headers["ratelimit"] == '"per-ip";r=2;t=1'
    # Refused per IP first, the seven others were never even looked up.
    assert len(checked) == 3
    async with client_of(make_app(per_ip, per_key), peer="198.51.100.8") as client:
        alice = await client.get("/items", headers={"X-API-Key": "sk_live_alice"})
    assert alice.headers["ratelimit"] == '"per-ip";r=2;t=1, "per-key";r=99;t=1'
