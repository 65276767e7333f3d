"""RateLimiter on a real Redis: shared limits, several limits in one script, batches,
fallback, and no over-admission from many processes and threads at once."""

from __future__ import annotations

import math
import multiprocessing
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from buttress.clock import FakeClock
from buttress.errors import RateLimited
from buttress.events import Event
from buttress.ratelimit import GCRA, FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from buttress.stores import (
    FallbackStore,
    RedisStore,
    StoreFellBack,
    StoreRecovered,
    store_from_url,
)

from tests.conftest import require_service
from tests.integration._ratelimit_worker import hammer
from tests.integration.test_stores_redis import PrivateRedis, private_redis  # noqa: F401

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    require_service("redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    name = f"buttress-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def store(client: redis.Redis, prefix: str) -> RedisStore:
    return RedisStore(client, prefix=prefix)


def test_two_limiters_with_one_name_share_one_redis_limit(store: RedisStore) -> None:
    other = RedisStore(redis.Redis(host="127.0.0.1", port=6379), prefix=store.prefix)
    first = RateLimiter(FixedWindow(3, 60.0), store=store, name="api")
    second = RateLimiter(FixedWindow(3, 60.0), store=other, name="api")
    stranger = RateLimiter(FixedWindow(3, 60.0), store=store, name="web")
    allowed = [first.hit("u").allowed, second.hit("u").allowed, first.hit("u").allowed]
    assert allowed == [True, True, True]
    assert not second.hit("u").allowed
    assert stranger.hit("u").allowed  # another name, another state
    with pytest.raises(RateLimited) as info:
        first.acquire("u")
    assert 0 < info.value.retry_after <= 60.0  # measured on the server's clock
    assert (info.value.limit, info.value.remaining, info.value.key) == (3, 0, "u")
    second.reset("u")
    assert first.hit("u").remaining == 2
    other.close()


def test_several_limits_are_one_atomic_script(store: RedisStore, client: redis.Redis) -> None:
    per_second = TokenBucket(rate=5, period=1.0)
    per_hour = FixedWindow(7, 3600.0)
    limiter = RateLimiter(per_second, per_hour, GCRA(100, 60.0), store=store, name="api")
    results = [limiter.hit("u") for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    refused = results[-1]
    assert [d.allowed for d in refused.decisions] == [False, True, True]
    assert refused.decisions[1].remaining == 2  # the hour was not charged for it
    assert refused.limit == 5
    keys = store.keys_of("api:u", limiter.limits)
    assert all(client.exists(key) for key in keys)
    limiter.reset("u")
    assert not any(client.exists(key) for key in keys)


def test_wait_mode_on_redis_time(store: RedisStore) -> None:
    limiter = RateLimiter(
        GCRA(rate=50, period=1.0, burst=1), store=store, mode="wait", max_wait=1.0, name="w"
    )
    results = [limiter.acquire() for _ in range(3)]  # about 20 ms of real waiting
    assert all(r.allowed for r in results)
    slow = RateLimiter(FixedWindow(1, 3600.0), store=store, mode="wait", max_wait=0.5, name="slow")
    slow.acquire()
    with pytest.raises(RateLimited) as info:
        slow.acquire()
    assert info.value.retry_after > 0.5


async def test_async_twins_on_redis(client: redis.Redis, prefix: str) -> None:
    aclient = redis.asyncio.Redis(host="127.0.0.1", port=6379)
    store = RedisStore(client, async_client=aclient, prefix=prefix)
    limiter = RateLimiter(
        SlidingWindow(2, 60.0), FixedWindow(10, 60.0), store=store, name="a", key=lambda x: x
    )

    @limiter
    async def handle(user: str) -> str:
        return user

    assert await handle("u") == "u"
    assert (await limiter.ahit("u")).remaining == 0
    with pytest.raises(RateLimited):
        await handle("u")
    many = await limiter.ahit_many(["u", "v", "v"])
    assert [r.allowed for r in many] == [False, True, True]
    await limiter.areset("u")
    assert (await limiter.aacquire("u")).remaining == 1
    single = RateLimiter(TokenBucket(1), store=store, name="s")
    assert (await single.ahit()).allowed
    assert not (await single.ahit()).allowed
    await single.areset()
    assert (await single.ahit()).allowed
    await aclient.aclose()


def test_a_batch_of_100_keys_is_one_round_trip(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = redis.connection.Connection.send_packed_command
    for limits in ((TokenBucket(10),), (TokenBucket(10), FixedWindow(100, 60.0))):
        limiter = RateLimiter(*limits, store=store, name=f"batch{len(limits)}")
        limiter.hit("warm")
        sends = 0

        def counting(self: Any, command: Any, check_health: bool = True) -> None:
            nonlocal sends
            sends += 1
            original(self, command, check_health)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
        results = limiter.hit_many([f"user:{i}" for i in range(100)])
        monkeypatch.undo()
        assert sends == 1
        assert len(results) == 100
        assert all(r.allowed and r.remaining == 9 for r in results)


def test_a_limiter_closes_the_store_it_built() -> None:
    require_service("redis")
    limiter = RateLimiter(FixedWindow(5, 60.0), store=URL, name=f"url-{uuid.uuid4().hex}")
    store = limiter.store
    assert isinstance(store, RedisStore)
    assert limiter.hit("k").allowed
    limiter.reset("k")
    limiter.close()
    assert store._clients._sync is None  # closed: the next call would build a new client


def test_limiter_rides_out_a_dead_redis(private_redis: PrivateRedis) -> None:  # noqa: F811
    clock = FakeClock()
    store = store_from_url(private_redis.url, fallback=True, probe_interval=5.0, clock=clock)
    assert isinstance(store, FallbackStore)
    events: list[Event] = []
    store.subscribe(events.append)
    limiter = RateLimiter(
        FixedWindow(2, 3600.0), TokenBucket(10), store=store, clock=clock, name="outage"
    )
    assert limiter.hit("k").allowed
    private_redis.stop()
    # No Redis error reaches the caller; memory enforces the limits meanwhile.
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    with pytest.raises(RateLimited):
        limiter.acquire("k")
    private_redis.start()
    clock.advance(5.0)
    back = limiter.hit("k")
    assert back.allowed
    assert back.decisions[0].remaining == 1  # Redis's own count: the restarted server's
    assert [type(e) for e in events] == [StoreFellBack, StoreRecovered]
    store.close()


# ------------------------------------------------------- no over-admission, ever

PROCESSES = 4
THREADS = 8
LIMIT = 200
PERIOD = 2.0
SECONDS = 5.0


@pytest.mark.stress
def test_processes_and_threads_never_over_admit(prefix: str) -> None:
    """4 processes x 8 threads on one key: exactly LIMIT admissions in every window."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=hammer,
            kwargs={
                "url": URL,
                "prefix": prefix,
                "limit": LIMIT,
                "period": PERIOD,
                "threads": THREADS,
                "seconds": SECONDS,
                "start": start,
                "results": results,
            },
        )
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(timeout=60)
        outcomes = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    began = max(outcome[0] for outcome in outcomes)
    stopped = min(outcome[1] for outcome in outcomes)
    # Each admission's window, from when that window ends (server time, which on
    # this host is the same clock as time.time()).
    windows = Counter(round(ends / PERIOD) - 1 for outcome in outcomes for ends in outcome[2])
    assert max(windows.values()) <= LIMIT  # never more, in any window
    hammered = range(math.ceil(began / PERIOD), math.floor(stopped / PERIOD))
    assert len(hammered) >= 1
    # Every window hammered from start to end by everyone admitted exactly LIMIT.
    assert [windows[index] for index in hammered] == [LIMIT] * len(hammered)
