"""Several rules on one request: all apply, the first refusal ends it; headers; outages."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import RateLimitMiddleware, Rule, api_key, client_ip
from buttress.ratelimit import FixedWindow, RateLimiter, TokenBucket
from buttress.stores import MemoryStore, StoreUnavailable

from tests.unit.integrations.asgi.helpers import ROUTES, calls, client_of, make_app, rule_for

KEY = {"X-API-Key": "sk_live_0123"}


async def test_per_ip_and_per_key_limits_stack(clock: FakeClock) -> None:
    per_ip = rule_for(clock, TokenBucket(3, 60.0), name="per-ip", key=client_ip())
    per_key = rule_for(clock, TokenBucket(10, 60.0), name="per-key", key=api_key())
    async with client_of(make_app(per_ip, per_key)) as client:
        responses = [await client.get("/items", headers=KEY) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    first = responses[0].headers
    assert first["ratelimit-policy"] == '"per-ip";q=3;w=60, "per-key";q=10;w=60'
    assert first["ratelimit"] == '"per-ip";r=2;t=20, "per-key";r=9;t=6'
    # The binding limit is the one with the fewest remaining.
    assert first["x-ratelimit-limit"] == "3"
    assert first["x-ratelimit-remaining"] == "2"
    # Reset: when every decided limit is full again (the per-IP bucket, 20 s).
    assert first["x-ratelimit-reset"] == "20"


async def test_a_request_refused_per_ip_takes_nothing_from_the_key(clock: FakeClock) -> None:
    per_ip = rule_for(clock, TokenBucket(1, 60.0), name="per-ip", key=client_ip())
    per_key = rule_for(clock, FixedWindow(5, 60), name="per-key", key=api_key())
    app = make_app(per_ip, per_key)
    async with client_of(app, peer="198.51.100.1") as attacker:
        stolen = [await attacker.get("/items", headers=KEY) for _ in range(10)]
    async with client_of(app, peer="203.0.113.7") as owner:
        own = await owner.get("/items", headers=KEY)
    assert [r.status_code for r in stolen] == [200] + [429] * 9
    refused = stolen[-1]
    assert refused.json()["violated-policies"] == ["per-ip"]
    # Only the rules decided up to the refusal are reported.
    assert refused.headers["ratelimit"] == '"per-ip";r=0;t=60'
    assert refused.headers["ratelimit-policy"] == '"per-ip";q=1;w=60'
    assert refused.headers["retry-after"] == "60"
    # Nine refusals per IP did not eat the key's quota: one request took one.
    assert own.headers["ratelimit"] == '"per-ip";r=0;t=60, "per-key";r=3;t=60'


async def test_rules_before_the_refusing_one_have_been_charged(clock: FakeClock) -> None:
    # The documented trade-off: per-key first, then per-IP. A request refused per
    # IP was already charged per key (undoing it would take a second round trip).
    per_key = rule_for(clock, FixedWindow(5, 3600), name="per-key", key=api_key())
    per_ip = rule_for(clock, TokenBucket(1, 60.0), name="per-ip", key=client_ip())
    async with client_of(make_app(per_key, per_ip)) as client:
        statuses = [(await client.get("/items", headers=KEY)).status_code for _ in range(3)]
        clock.advance(60)
        last = await client.get("/items", headers=KEY)
    assert statuses == [200, 429, 429]
    assert last.status_code == 200
    # Five per hour, three requests refused or not, then this one: one left.
    assert last.headers["ratelimit"].startswith('"per-key";r=1;')


async def test_the_429_reports_the_refusing_limits_and_their_longest_wait(
    clock: FakeClock,
) -> None:
    burst = rule_for(clock, TokenBucket(10, 1.0), name="burst")
    both = rule_for(
        clock, FixedWindow(1, 30), FixedWindow(1, 90), name="slow", policies=("half", "full")
    )
    async with client_of(make_app(burst, both)) as client:
        await client.get("/items")
        refused = await client.get("/items")
    assert refused.status_code == 429
    assert refused.json()["violated-policies"] == ["half", "full"]
    assert refused.headers["retry-after"] == "90"
    # The refusing limit binds, though the burst has more left.
    assert refused.headers["x-ratelimit-limit"] == "1"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit"] == ('"burst";r=8;t=1, "half";r=0;t=30, "full";r=0;t=90')
    assert calls == ["GET /items"]


async def test_a_rule_without_a_key_is_skipped_and_others_still_apply(clock: FakeClock) -> None:
    per_key = rule_for(clock, TokenBucket(5, 60.0), name="per-key", key=api_key())
    per_ip = rule_for(clock, TokenBucket(5, 60.0), name="per-ip")
    async with client_of(make_app(per_key, per_ip)) as client:
        anonymous = await client.get("/items")
    assert anonymous.headers["ratelimit"] == '"per-ip";r=4;t=12'


async def test_the_default_rule_applies_only_when_no_rule_did(clock: FakeClock) -> None:
    per_key = rule_for(clock, TokenBucket(5, 60.0), name="per-key", key=api_key())
    fallback = rule_for(clock, TokenBucket(5, 60.0), name="anonymous")
    async with client_of(make_app(per_key, default=fallback)) as client:
        keyed = await client.get("/items", headers=KEY)
        anonymous = await client.get("/items")
    assert keyed.headers["ratelimit"] == '"per-key";r=4;t=12'
    assert anonymous.headers["ratelimit"] == '"anonymous";r=4;t=12'


# ------------------------------------------------------------------ RateLimit-Policy


class Unquoted:
    """A user's algorithm that does not describe its quota: a bucket of 3 in disguise."""

    name = "unquoted"
    lua = ""
    lua_args = ()

    def __init__(self) -> None:
        self._bucket = TokenBucket(3, 1.0)

    def decide(self, state: Any, now: float, cost: int) -> Any:
        return self._bucket.decide(state, now, cost)


class BadQuota(Unquoted):
    quota = ("many", 1.0)


async def test_an_algorithm_without_quota_is_left_out_of_the_policy(clock: FakeClock) -> None:
    rule = rule_for(clock, Unquoted(), TokenBucket(10, 1.0), policies=("mine", "burst"))
    async with client_of(make_app(rule)) as client:
        response = await client.get("/items")
    assert response.headers["ratelimit-policy"] == '"burst";q=10;w=1'
    assert response.headers["ratelimit"] == '"mine";r=2;t=1, "burst";r=9;t=1'


def test_a_malformed_quota_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ConfigError) as info:
        rule_for(clock, BadQuota())
    assert info.value.path == "limiter.limits[0].quota"


async def test_no_policy_header_when_no_limit_states_a_quota(clock: FakeClock) -> None:
    rule = rule_for(clock, Unquoted())
    async with client_of(make_app(rule)) as client:
        response = await client.get("/items")
    assert "ratelimit-policy" not in response.headers
    assert response.headers["ratelimit"] == '"api";r=2;t=1'


# -------------------------------------------------------------------- store outages


class SwitchableStore:
    """A memory store whose backend can be taken down and brought back."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.name = "redis://cache:6379/0"
        self.down = False

    async def adecide(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except ConnectionRefusedError as exc:
                raise StoreUnavailable(self.name, "cannot connect") from exc
        return await self.inner.adecide(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SwitchableStore(clock)
    shared = RateLimiter(TokenBucket(1000, 1.0), store=store, name="shared", clock=clock)
    local = rule_for(clock, TokenBucket(1000, 1.0), name="local")
    app = make_app(Rule(shared, key=api_key()), local)
    caplog.set_level(logging.DEBUG, logger="buttress.integrations.asgi")
    async with client_of(app) as client:
        await client.get("/items", headers=KEY)
        store.down = True
        during = [await client.get("/items", headers=KEY) for _ in range(50)]
        store.down = False
        after = [await client.get("/items", headers=KEY) for _ in range(20)]
        store.down = True
        again = await client.get("/items", headers=KEY)
    # Let through, and still limited by the rule whose store works.
    assert all(r.status_code == 200 for r in during)
    assert during[0].headers["ratelimit"] == '"local";r=998;t=1'
    assert after[0].headers["ratelimit"].startswith('"shared";')
    assert again.status_code == 200
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    warning = (
        "WARNING",
        "rate limiter 'shared' cannot decide: store 'redis://cache:6379/0' failed "
        "(StoreUnavailable: store 'redis://cache:6379/0': cannot connect; caused by "
        "ConnectionRefusedError: [Errno 111] Connection refused); requests it limits are "
        "let through until the store answers again",
    )
    assert records == [
        warning,
        (
            "INFO",
            "rate limiter 'shared' decides again: its store answers (50 requests let "
            "through unlimited meanwhile)",
        ),
        warning,
    ]
    assert all(r.exc_info is None for r in caplog.records)
    assert "sk_live" not in caplog.text


async def test_fail_open_false_propagates_and_logs_nothing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SwitchableStore(clock)
    store.down = True
    limiter = RateLimiter(TokenBucket(5, 1.0), store=store, name="shared", clock=clock)
    middleware = RateLimitMiddleware(make_app().router, [Rule(limiter)], fail_open=False)
    assert not middleware.fail_open
    async with client_of(middleware) as client:
        with pytest.raises(StoreUnavailable):
            await client.get("/items")
    assert caplog.records == []
    assert ROUTES  # the app's routes were never reached
    assert calls == []
