"""Stores check their configuration when built: URLs, durations, clients, schemes.

No server is needed: a URL is checked without connecting.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.policies.circuit import BreakerSync, RedisBreakerStore
from buttress.ratelimit import RateLimiter, TokenBucket
from buttress.stores import (
    FallbackStore,
    MemoryStore,
    RedisStore,
    Store,
    _schemes,
    register_store_scheme,
    store_from_url,
    store_schemes,
)
from buttress.stores.redis import check_url

BAD_URLS = [
    ("redis://h:notaport/0", "port"),
    ("redis://h:99999/0", "port"),
    ("redis://h:0/0", "port"),
    ("redis://h:-1/0", "port"),
    ("redis://h/notadb", "database number"),
    ("redis://h/0/1", "database number"),
    ("rediss://h:6379/x", "database number"),
    ("valkey://h:port/0", "port"),
    ("unix://", "socket path"),
    ("redis://h/0?junk=1", "unknown option 'junk'"),
    ("redis://h/0?socket_timeout=abc", "socket_timeout"),
    ("redis://h/0?socket_timeout=-1", "socket_timeout"),
    ("redis://h/0?socket_timeout=nan", "socket_timeout"),
    ("redis://h/0?db=x", "'db'"),
    ("redis://h/0?max_connections=many", "max_connections"),
    ("redis://h/0?&&", "name=value"),
    ("http://h:6379/0", "redis://"),
    ("redis:/h:6379/0", "redis://"),
    ("h:6379", "redis://"),
]

GOOD_URLS = [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://", "redis://"),
    ("redis://:secret@h/3", "redis://:secret@h/3"),
    ("REDIS://h/", "redis://h/"),
    ("rediss://h:6380/1?ssl_cert_reqs=none", "rediss://h:6380/1?ssl_cert_reqs=none"),
    ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
    ("valkey://h:6379/0", "redis://h:6379/0"),
    ("valkeys://h:6380/0", "rediss://h:6380/0"),
    (
        "redis://h/0?socket_timeout=0.5&client_name=api",
        "redis://h/0?socket_timeout=0.5&client_name=api",
    ),
]

URL_TAKERS: list[Callable[[str], Any]] = [
    RedisStore.from_url,
    store_from_url,
    lambda url: store_from_url(url, fallback=True),
    RedisBreakerStore.from_url,
    lambda url: BreakerSync(url, background=False),
]


@pytest.mark.parametrize(("url", "why"), BAD_URLS)
@pytest.mark.parametrize("build", URL_TAKERS)
def test_a_malformed_url_fails_at_construction(
    build: Callable[[str], Any], url: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        build(url)
    assert info.value.path == "url"
    assert (
        url.split("?", maxsplit=1)[0].rsplit("//", maxsplit=1)[-1].split("/", maxsplit=1)[0]
        in str(info.value)
        or "//" not in url
    )


@pytest.mark.parametrize(("url", "translated"), GOOD_URLS)
def test_a_good_url_passes_translated_for_redis_py(url: str, translated: str) -> None:
    assert check_url(url) == translated
    store = RedisStore.from_url(url)  # nothing connects yet
    store.close()


def test_an_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        check_url("redis://h/0?socket_timout=1")
    assert "socket_timeout" in str(info.value)  # what the typo meant is listed
    assert "client_name" in str(info.value)


def test_an_unknown_scheme_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as info:
        store_from_url("postgres://h/0")
    message = str(info.value)
    for scheme in ("memory://", "redis://", "rediss://", "unix://", "valkey://", "valkeys://"):
        assert scheme in message
    assert "register_store_scheme" in message
    with pytest.raises(ConfigError, match="url"):
        store_from_url(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="memory:// takes no host"):
        store_from_url("memory://somewhere")


NOT_SECONDS = [-1, -0.5, math.nan, math.inf, -math.inf, "1", True, None]


@pytest.mark.parametrize("value", [*NOT_SECONDS[:-1], 0])
def test_timeouts_are_checked(value: Any) -> None:
    for build in (
        lambda: RedisStore.from_url("redis://h/0", timeout=value),
        lambda: store_from_url("redis://h/0", timeout=value),
        lambda: store_from_url("memory://", timeout=value),
        lambda: RedisBreakerStore.from_url("redis://h/0", timeout=value),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.path == "timeout"


@pytest.mark.parametrize("value", NOT_SECONDS)
def test_durations_are_checked(value: Any) -> None:
    client = redis.Redis()
    for build, path in (
        (lambda: RedisStore(client, ttl_slack=value), "ttl_slack"),
        (lambda: RedisStore.from_url("redis://h/0", ttl_slack=value), "ttl_slack"),
        (lambda: RedisBreakerStore(client, ttl=value), "ttl"),
        (lambda: RedisBreakerStore.from_url("redis://h/0", ttl=value), "ttl"),
        (lambda: FallbackStore(MemoryStore(), probe_interval=value), "probe_interval"),
        (
            lambda: store_from_url("redis://h/0", fallback=True, probe_interval=value),
            "probe_interval",
        ),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.path == path
    client.close()


def test_a_zero_ttl_is_refused_and_timedelta_is_taken() -> None:
    with pytest.raises(ConfigError, match="ttl"):
        RedisBreakerStore(redis.Redis(), ttl=0)
    store = RedisStore.from_url(
        "redis://h/0", timeout=timedelta(milliseconds=100), ttl_slack=timedelta(seconds=2)
    )
    assert store.ttl_slack == 2.0
    assert store._clients.timeout == 0.1
    assert RedisBreakerStore(redis.Redis(), ttl=timedelta(hours=1)).ttl == 3600.0
    fallback = store_from_url("redis://h/0", fallback=True, probe_interval=timedelta(seconds=3))
    assert isinstance(fallback, FallbackStore)
    assert fallback.probe_interval == 3.0
    assert RedisStore.from_url("redis://h/0", timeout=None)._clients.timeout is None


def test_other_options_are_checked() -> None:
    client = redis.Redis()
    for build, path in (
        (lambda: RedisStore(client, time_source="local"), "time_source"),
        (lambda: RedisStore(client, prefix="a{b}"), "prefix"),
        (lambda: RedisStore(client, prefix=3), "prefix"),
        (lambda: RedisStore(client, clock="x"), "clock"),
        (lambda: RedisStore(client, name=""), "name"),
        (lambda: RedisBreakerStore(client, time_source="local"), "time_source"),
        (lambda: RedisBreakerStore(None), "client"),
        (lambda: store_from_url("redis://h/0", time_source="local"), "time_source"),
        (lambda: store_from_url("redis://h/0", fallback="yes"), "fallback"),
        (lambda: store_from_url("memory://", clock=object()), "clock"),
        (lambda: FallbackStore(MemoryStore(), clock="x"), "clock"),
        (lambda: FallbackStore("redis://h/0"), "primary"),
        (lambda: FallbackStore(MemoryStore(), fallback=3), "fallback"),
        (lambda: FallbackStore(MemoryStore(), name=" x"), "name"),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.path == path
    client.close()


def test_clients_are_checked() -> None:
    sync, aio = redis.Redis(), redis.asyncio.Redis()
    with pytest.raises(ConfigError, match=r"RedisStore\.from_url") as info:
        RedisStore()
    assert info.value.path == "client"
    with pytest.raises(ConfigError, match="async_client=") as info:
        RedisStore(aio)  # the asyncio client in the sync slot
    assert info.value.path == "client"
    with pytest.raises(ConfigError, match="client=") as info:
        RedisStore(async_client=sync)
    assert info.value.path == "async_client"
    with pytest.raises(ConfigError) as info:
        RedisStore("redis://h/0")
    assert info.value.path == "client"
    sync_only = RedisStore(sync)
    with pytest.raises(ConfigError, match="no asyncio client") as info:
        asyncio.run(sync_only.adecide("k", TokenBucket(1)))
    assert info.value.path == "async_client"
    sync.close()


# ------------------------------------------------------------------- the registry


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are forgotten after it."""
    monkeypatch.setattr(_schemes, "_factories", dict(_schemes._factories))


def test_a_scheme_of_ones_own(registry: None) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def make(url: str, **options: Any) -> Store:
        seen.append((url, options))
        return MemoryStore(clock=options["clock"], name="mine")

    register_store_scheme("mine", make)
    assert "mine" in store_schemes()
    clock = FakeClock()
    store = store_from_url("mine://bucket", prefix="p", clock=clock)
    assert isinstance(store, MemoryStore)
    assert seen == [
        (
            "mine://bucket",
            {"timeout": 0.25, "prefix": "p", "time_source": "server", "clock": clock},
        )
    ]
    limiter = RateLimiter(TokenBucket(1), store="MINE://x", name="api")
    assert limiter.store.name == "mine"
    wrapped = store_from_url("mine://", fallback=True)
    assert isinstance(wrapped, FallbackStore)
    with pytest.raises(ConfigError, match="mine://"):
        store_from_url("nope://")
    register_store_scheme("mine", lambda url, **options: MemoryStore(name="again"))
    assert store_from_url("mine://").name == "again"  # registering again replaces


def test_registering_checks_its_arguments(registry: None) -> None:
    for scheme in ("", "My", "1ab", "a b", "x://", 3):
        with pytest.raises(ConfigError) as info:
            register_store_scheme(scheme, MemoryStore)  # type: ignore[arg-type]
        assert info.value.path == "scheme"
    with pytest.raises(ConfigError) as info:
        register_store_scheme("ok", "not callable")  # type: ignore[arg-type]
    assert info.value.path == "factory"
    register_store_scheme("odd", lambda url, **options: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="not a Store") as info:
        store_from_url("odd://")
    assert info.value.path == "url"
