"""Rate-limit decisions: buttress's RateLimiter vs limits, pyrate-limiter, aiolimiter,
and one raw redis-py EVALSHA round trip.

Every case measures one decision on a key whose limit is high enough to always
allow. In memory: ``limiter.allow()`` (the boolean decision that policies use) and
``limiter.hit()`` (the full result, for headers) — token bucket, GCRA, the windows,
two limits at once — against limits' ``MemoryStorage`` with its moving window,
fixed window and sliding window counter strategies, pyrate-limiter's in-memory
buckets, and (async) aiolimiter. On Redis: the same against limits' Redis storage, and against the
floor of any Redis-backed limiter, one EVALSHA round trip of a trivial script from
the same client, and of buttress's own script. Last, a batch of 100 keys in one
round trip, against redis-py pipelining 100 EVALSHA of a trivial script and of
buttress's own (the same scripts with the same arguments: what is left is
buttress's Python side).

The Redis groups need a server on 127.0.0.1:6379; without one they are skipped.
Keys are written under ``bench-ratelimit:*`` and expire on their own.
"""

from __future__ import annotations

import itertools
import socket
import sys
from collections.abc import Callable
from typing import Any

from buttress.ratelimit import GCRA, FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from buttress.stores import RedisStore

from _common import awork, baseline, work
from _harness import Case, check_works, main

MEM = "rate limit decision, in memory (sync)"
AMEM = "rate limit decision, in memory (async)"
RED = "rate limit decision, Redis (sync)"
ARED = "rate limit decision, Redis (async)"
BATCH = "rate limit decisions for 100 keys, Redis, one round trip (sync)"

REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = "bench-ratelimit"
HUGE = 10**9  # per second: no benchmark loop comes near it
KEYS_100 = [f"user:{i}" for i in range(100)]

# --------------------------------------------------------------------- buttress


def allow(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, name="bench").allow


def aallow(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, name="bench").aallow


def hit(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, name="bench").hit


def policy(*limits: Any) -> Callable[[], Any]:
    """The limiter as a decorator around the group's function: what a policy adds."""
    return RateLimiter(*limits, name="bench")(work)


def apolicy(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, name="bench")(awork)


def ahit(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, name="bench").ahit


def redis_store() -> RedisStore:
    # As users build it: clients made from the URL (an asyncio one per event loop).
    return RedisStore.from_url(REDIS_URL, prefix=PREFIX)


def redis_hit(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, store=redis_store(), name="bench").hit


def redis_ahit(*limits: Any) -> Callable[[], Any]:
    return RateLimiter(*limits, store=redis_store(), name="bench").ahit


def redis_hit_many() -> Callable[[], Any]:
    limiter = RateLimiter(GCRA(HUGE), store=redis_store(), name="bench")

    def call() -> Any:
        return limiter.hit_many(KEYS_100)

    return call


# ------------------------------------------------------------ raw redis-py floor

TRIVIAL = "return 1"


def raw_evalsha() -> Callable[[], Any]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    sha = client.script_load(TRIVIAL)

    def call() -> Any:
        return client.evalsha(sha, 0)

    return call


def raw_evalsha_ours() -> Callable[[], Any]:
    """buttress's own GCRA script, called with redis-py directly: the Redis-side cost."""
    import redis

    store = redis_store()
    client = redis.Redis.from_url(REDIS_URL)
    ((sha, source, args),) = store._calls([("bench:raw", GCRA(HUGE), 1)], None)
    client.script_load(source)

    def call() -> Any:
        return client.evalsha(sha, *args)

    return call


def raw_aevalsha() -> Callable[[], Any]:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    sha = redis.Redis.from_url(REDIS_URL).script_load(TRIVIAL)

    async def call() -> Any:
        return await client.evalsha(sha, 0)

    return call


def raw_pipeline_100_ours() -> Callable[[], Any]:
    """buttress's GCRA script for the same 100 keys, pipelined with redis-py directly."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    calls = redis_store()._calls([(f"bench:{key}", GCRA(HUGE), 1) for key in KEYS_100], None)
    client.script_load(calls[0][1])

    def call() -> Any:
        pipe = client.pipeline(transaction=False)
        for sha, _, args in calls:
            pipe.evalsha(sha, *args)
        return pipe.execute()

    return call


def raw_pipeline_100() -> Callable[[], Any]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    sha = client.script_load(TRIVIAL)

    def call() -> Any:
        pipe = client.pipeline(transaction=False)
        for _ in KEYS_100:
            pipe.evalsha(sha, 0)
        return pipe.execute()

    return call


# ------------------------------------------------------------------------ limits


def limits_hit(strategy: str, storage: str, keys: int = 1) -> Callable[[], Any]:
    from limits import RateLimitItemPerSecond, strategies
    from limits import storage as storages

    store = (
        storages.MemoryStorage()
        if storage == "memory"
        else storages.RedisStorage(REDIS_URL, key_prefix=PREFIX)
    )
    limiter = getattr(strategies, strategy)(store)
    item = RateLimitItemPerSecond(HUGE)
    if keys == 1:
        return lambda: limiter.hit(item, "key")
    # A moving window keeps every hit of the window: rotate keys to keep each short.
    names = itertools.cycle([f"key{i}" for i in range(keys)])
    return lambda: limiter.hit(item, next(names))


def limits_ahit(strategy: str) -> Callable[[], Any]:
    from limits import RateLimitItemPerSecond
    from limits.aio import storage, strategies

    item = RateLimitItemPerSecond(HUGE)
    made: list[Any] = []

    async def call() -> Any:
        if not made:
            # Built on the loop that runs it: its storage binds to the running loop.
            made.append(getattr(strategies, strategy)(storage.MemoryStorage()))
        return await made[0].hit(item, "key")

    return call


# ------------------------------------------------------------------ pyrate-limiter


def pyrate(kind: str) -> Callable[[], Any]:
    from pyrate_limiter import Duration, limiter_factory

    if kind == "bucket":
        limiter = limiter_factory.create_inmemory_limiter(HUGE, Duration.SECOND)
    else:
        limiter = limiter_factory.create_token_bucket_limiter(HUGE, Duration.SECOND)
    return lambda: limiter.try_acquire("key", blocking=False)


# ---------------------------------------------------------------------- aiolimiter


def aiolimiter_acquire() -> Callable[[], Any]:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(HUGE, 1.0)
    return limiter.acquire


# -------------------------------------------------------------------------- cases


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


MOVING = "moving window, 1,000 keys rotated"

CASES = [
    *baseline(MEM),
    Case(MEM, "buttress: token bucket, allow", lambda: allow(TokenBucket(HUGE)), target_ns=300),
    Case(MEM, "buttress: GCRA, allow", lambda: allow(GCRA(HUGE)), target_ns=300),
    Case(MEM, "buttress: fixed window, allow", lambda: allow(FixedWindow(HUGE))),
    Case(MEM, "buttress: sliding window, allow", lambda: allow(SlidingWindow(HUGE))),
    Case(
        MEM,
        "buttress: two limits, 10^9/s and 10^12/h, allow",
        lambda: allow(TokenBucket(HUGE), FixedWindow(HUGE * 1000, 3600)),
    ),
    Case(
        MEM,
        "buttress: token bucket, as a policy (decorated call)",
        lambda: policy(TokenBucket(HUGE)),
    ),
    Case(MEM, "buttress: token bucket, hit (full result)", lambda: hit(TokenBucket(HUGE))),
    Case(MEM, "buttress: GCRA, hit (full result)", lambda: hit(GCRA(HUGE))),
    Case(MEM, "buttress: sliding window, hit (full result)", lambda: hit(SlidingWindow(HUGE))),
    Case(
        MEM,
        "buttress: two limits, hit (full result)",
        lambda: hit(TokenBucket(HUGE), FixedWindow(HUGE * 1000, 3600)),
    ),
    Case(
        MEM,
        "limits: moving window",
        lambda: limits_hit("MovingWindowRateLimiter", "memory", keys=1000),
        peer=True,
        note=MOVING,
    ),
    Case(
        MEM,
        "limits: fixed window",
        lambda: limits_hit("FixedWindowRateLimiter", "memory"),
        peer=True,
    ),
    Case(
        MEM,
        "limits: sliding window counter",
        lambda: limits_hit("SlidingWindowCounterRateLimiter", "memory"),
        peer=True,
    ),
    Case(MEM, "pyrate-limiter: InMemoryBucket", lambda: pyrate("bucket"), peer=True),
    Case(MEM, "pyrate-limiter: token bucket", lambda: pyrate("token"), peer=True),
    *baseline(AMEM, is_async=True),
    Case(
        AMEM,
        "buttress: token bucket, aallow",
        lambda: aallow(TokenBucket(HUGE)),
        is_async=True,
        target_ns=450,
    ),
    Case(AMEM, "buttress: GCRA, aallow", lambda: aallow(GCRA(HUGE)), is_async=True, target_ns=450),
    Case(
        AMEM,
        "buttress: token bucket, as a policy (decorated call)",
        lambda: apolicy(TokenBucket(HUGE)),
        is_async=True,
    ),
    Case(
        AMEM,
        "buttress: token bucket, ahit (full result)",
        lambda: ahit(TokenBucket(HUGE)),
        is_async=True,
    ),
    Case(AMEM, "aiolimiter", aiolimiter_acquire, is_async=True, peer=True),
    Case(
        AMEM,
        "limits (aio): fixed window",
        lambda: limits_ahit("FixedWindowRateLimiter"),
        is_async=True,
        peer=True,
    ),
]

REDIS_CASES = [
    *baseline(RED),
    Case(
        RED,
        "buttress: GCRA",
        lambda: redis_hit(GCRA(HUGE)),
        note="target: no slower than limits' fixed window",
    ),
    Case(RED, "buttress: token bucket", lambda: redis_hit(TokenBucket(HUGE))),
    Case(
        RED,
        "buttress: two limits in one script",
        lambda: redis_hit(TokenBucket(HUGE), FixedWindow(HUGE * 1000, 3600)),
    ),
    Case(RED, "redis-py: raw EVALSHA of 'return 1'", raw_evalsha, peer=True),
    Case(RED, "redis-py: raw EVALSHA of buttress's GCRA script", raw_evalsha_ours, peer=True),
    Case(
        RED,
        "limits: moving window",
        lambda: limits_hit("MovingWindowRateLimiter", "redis", keys=1000),
        peer=True,
        note=MOVING,
    ),
    Case(
        RED,
        "limits: fixed window",
        lambda: limits_hit("FixedWindowRateLimiter", "redis"),
        peer=True,
    ),
    Case(
        RED,
        "limits: sliding window counter",
        lambda: limits_hit("SlidingWindowCounterRateLimiter", "redis"),
        peer=True,
    ),
    *baseline(ARED, is_async=True),
    Case(ARED, "buttress: GCRA", lambda: redis_ahit(GCRA(HUGE)), is_async=True),
    Case(
        ARED,
        "redis-py (asyncio): raw EVALSHA of 'return 1'",
        raw_aevalsha,
        is_async=True,
        peer=True,
    ),
    *baseline(BATCH),
    Case(
        BATCH,
        "buttress: hit_many, GCRA",
        redis_hit_many,
        note="target: at most 1.1x the pipeline of the same script",
    ),
    Case(
        BATCH,
        "redis-py: pipelined EVALSHA x 100 of buttress's GCRA script",
        raw_pipeline_100_ours,
        peer=True,
    ),
    Case(
        BATCH,
        "redis-py: pipelined EVALSHA x 100 of 'return 1'",
        raw_pipeline_100,
        peer=True,
    ),
]


def cases() -> list[Case]:
    if redis_up():
        return CASES + REDIS_CASES
    print("Redis is not reachable on 127.0.0.1:6379: Redis groups skipped", file=sys.stderr)
    return CASES


if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(cases())
    else:
        main(cases())
