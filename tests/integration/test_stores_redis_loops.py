"""One Redis store used from many event loops: one asyncio client per loop.

A store built from a URL gives every event loop a client of its own, closed when
that loop shuts down; so one store serves ``asyncio.run()`` after ``asyncio.run()``,
loops in several threads, Starlette's ``TestClient`` (a loop per request), and a
fallback store over it never falls back while Redis is up. A client passed in is
used as given, and a loop mismatch is a :class:`StoreError`, not a raw
``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from buttress.events import Event
from buttress.integrations.asgi import RateLimitMiddleware, Rule
from buttress.ratelimit import FixedWindow, RateLimiter, TokenBucket
from buttress.stores import FallbackStore, RedisStore, StoreError, store_from_url

from tests.conftest import require_service

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"
FOREVER = FixedWindow(1000, 1e9)  # a window of 31 years: no test crosses its end


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("redis")
    name = f"buttress-loops-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def exercise(store: RedisStore | FallbackStore, key: str) -> list[int]:
    """Every async method once; the remaining quota after each decision."""
    bucket = TokenBucket(100, 60.0)
    limits = (bucket, FixedWindow(1000, 3600.0))
    one = await store.adecide(key, bucket)
    many = await store.adecide_many([(key, bucket, 1), (key, bucket, 1)])
    both = await store.adecide_all(key + ":all", limits)
    batch = await store.adecide_all_many([(key + ":all", limits, 1)])
    await store.areset(key + ":gone", bucket)
    await store.areset_all(key + ":gone", limits)
    return [one.remaining, *(d.remaining for d in many), both[1].remaining, batch[0][1].remaining]


def test_one_store_serves_asyncio_run_after_asyncio_run(prefix: str) -> None:
    store = RedisStore.from_url(URL, prefix=prefix)
    seen = [asyncio.run(exercise(store, "k")) for _ in range(4)]
    assert seen == [
        [99, 98, 97, 999, 998],
        [96, 95, 94, 997, 996],
        [93, 92, 91, 995, 994],
        [90, 89, 88, 993, 992],
    ]
    # Each loop's client was closed as its loop shut down, and forgotten.
    assert store.loops == 0
    assert store.decide("k", TokenBucket(100, 60.0)).remaining == 87  # sync still works
    store.close()


def test_one_store_serves_loops_in_two_threads_at_once(prefix: str) -> None:
    store = RedisStore.from_url(URL, prefix=prefix)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    decided: list[int] = []

    async def work(name: str) -> None:
        await asyncio.to_thread(barrier.wait, 10)  # both threads' loops run at once
        for _ in range(20):
            decided.append((await store.adecide(name, FOREVER)).remaining)
            await asyncio.sleep(0)

    def thread(name: str) -> None:
        try:
            for _ in range(3):
                asyncio.run(work(name))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(f"t{i}",)) for i in range(2)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(30)
    assert errors == []
    assert sorted(decided) == sorted([1000 - n for n in range(1, 61)] * 2)
    assert store.loops == 0
    store.close()


def test_a_fallback_store_never_falls_back_while_redis_is_up(prefix: str) -> None:
    store = store_from_url(URL, fallback=True, prefix=prefix)
    assert isinstance(store, FallbackStore)
    events: list[Event] = []
    store.subscribe(events.append)
    for run in range(5):
        remaining = asyncio.run(exercise(store, "k"))
        assert remaining[0] == 99 - 3 * run  # from Redis: the count carries over
        assert not store.degraded
    assert events == []
    store.close()


async def test_a_given_client_in_another_loop_is_a_store_error(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(URL)
    store = RedisStore(async_client=client, prefix=prefix)
    assert (await store.adecide("k", TokenBucket(5))).allowed  # this loop: fine

    def elsewhere() -> BaseException:
        async def main() -> None:
            await store.adecide("k", TokenBucket(5))

        try:
            asyncio.run(main())
        except BaseException as exc:
            return exc
        raise AssertionError("a client of another loop should not have worked")

    error = await asyncio.to_thread(elsewhere)
    assert isinstance(error, StoreError)
    assert "event loop" in str(error)
    assert "async_client=" in str(error)
    assert not error.outage
    assert (await store.adecide("k", TokenBucket(5))).allowed  # its own loop still works
    # A fallback store does not hide the misuse behind memory.
    fallback = FallbackStore(store)
    assert isinstance(await asyncio.to_thread(lambda: elsewhere_with(fallback)), StoreError)
    assert not fallback.degraded
    await client.aclose()


def elsewhere_with(store: FallbackStore) -> BaseException | None:
    async def main() -> None:
        await store.adecide("k", TokenBucket(5))

    try:
        asyncio.run(main())
    except BaseException as exc:
        return exc
    return None


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_loop_closed_without_shutdown_is_forgotten(prefix: str) -> None:
    store = RedisStore.from_url(URL, prefix=prefix)
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(store.adecide("k", TokenBucket(5))).remaining == 4
    loop.close()  # no shutdown_asyncgens: the store learns of it at its next use
    assert store.loops == 1
    assert asyncio.run(store.adecide("k", TokenBucket(5))).remaining == 3
    assert store.loops == 0
    store.close()
    del loop
    gc.collect()  # its sockets close now (with the warnings asyncio gives for a dead loop)


def test_close_reaches_the_clients_of_live_loops(prefix: str) -> None:
    store = RedisStore.from_url(URL, prefix=prefix)
    ready, done = threading.Event(), threading.Event()

    async def hold() -> None:
        await store.adecide("k", TokenBucket(5))
        ready.set()
        await asyncio.to_thread(done.wait, 10)
        await asyncio.sleep(0)  # the close scheduled on this loop runs

    worker = threading.Thread(target=asyncio.run, args=(hold(),))
    worker.start()
    assert ready.wait(10)
    assert store.loops == 1
    store.close()
    done.set()
    worker.join(10)
    assert store.loops == 0


async def test_aclose_closes_this_loops_client(prefix: str) -> None:
    store = RedisStore.from_url(URL, prefix=prefix)
    await store.adecide("k", TokenBucket(5))
    assert store.loops == 1
    await store.aclose()
    assert store.loops == 0
    assert (await store.adecide("k", TokenBucket(5))).remaining == 3  # a new client
    await store.aclose()


def middleware_app(store: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    limiter = RateLimiter(FixedWindow(10, 3600.0), store=store, name="api")
    app = Starlette(routes=[Route("/", hello)])
    return RateLimitMiddleware(app, [Rule(limiter, key=lambda scope: "everyone")])


@pytest.mark.parametrize("fallback", [False, True])
def test_middleware_under_the_test_client(prefix: str, fallback: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test client prefers httpx2 to httpx
        from starlette.testclient import TestClient

    store = store_from_url(URL, prefix=prefix, fallback=fallback)
    client = TestClient(middleware_app(store))  # no `with`: a new event loop per request
    statuses = [client.get("/").status_code for _ in range(20)]
    assert statuses == [200] * 10 + [429] * 10
    store.close()


def test_middleware_under_the_test_client_in_one_loop(prefix: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    store = store_from_url(URL, prefix=prefix)
    with TestClient(middleware_app(store)) as client:
        statuses = [client.get("/").status_code for _ in range(20)]
    assert statuses == [200] * 10 + [429] * 10
    store.close()
