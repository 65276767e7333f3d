"""The RateLimiter's and the stores' typed API: ``mypy --strict`` must accept this file."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from buttress import Pipeline
from buttress.clock import FakeClock
from buttress.errors import RateLimited
from buttress.ratelimit import (
    GCRA,
    Algorithm,
    Decision,
    FixedWindow,
    RateLimiter,
    RateLimitResult,
    SlidingWindow,
    TokenBucket,
)
from buttress.stores import LocalStore, MemoryStore, Store, store_from_url
from buttress.stores.memory import Decider, MultiDecider

limiter = RateLimiter(
    TokenBucket(10, 1.0),
    GCRA(100, 60.0),
    SlidingWindow(1000, 3600),
    FixedWindow(10_000, 86_400),
    store="memory://",
    key=lambda user, **_: f"user:{user}",
    cost=1,
    mode="wait",
    max_wait=0.5,
    name="api",
    clock=FakeClock(),
)
on_store: RateLimiter = RateLimiter(TokenBucket(1), store=MemoryStore())

assert_type(limiter.allow("user:1"), bool)
assert_type(limiter.allow(), bool)
assert_type(limiter.allow(cost=2), bool)
result = limiter.hit("user:1")
assert_type(result, RateLimitResult)
assert_type(limiter.hit(), RateLimitResult)
assert_type(limiter.acquire("user:1", cost=2), RateLimitResult)
assert_type(result.allowed, bool)
assert_type(result.limit, int)
assert_type(result.remaining, int)
assert_type(result.reset_after, float)
assert_type(result.retry_after, float)
assert_type(result.decisions, tuple[Decision, ...])
assert_type(result.limits, tuple[Algorithm, ...])
assert_type(limiter.hit_many(["a", "b"]), list[RateLimitResult])
assert_type(limiter.limits, tuple[Algorithm, ...])
assert_type(limiter.store, Store)
limiter.reset("user:1")
limiter.close()


async def use_async() -> None:
    assert_type(await limiter.aallow("k", 2), bool)
    assert_type(await limiter.ahit("k"), RateLimitResult)
    assert_type(await limiter.aacquire(), RateLimitResult)
    assert_type(await limiter.ahit_many(["k"], 2), list[RateLimitResult])
    await limiter.areset("k")
    await limiter.aclose()


@limiter
def fetch(user: str, page: int = 1) -> bytes:
    return user.encode() * page


@limiter
async def afetch(user: str) -> str:
    return user


assert_type(fetch("a", page=2), bytes)
pending: Coroutine[Any, Any, str] = afetch("a")
pending.close()
assert_type(Pipeline(limiter).call(fetch, "a"), bytes)

try:
    limiter.acquire()
except RateLimited as error:
    assert_type(error.retry_after, float | None)
    assert_type(error.key, str | None)

store = MemoryStore()
local: LocalStore = store
assert_type(local.bind_allow([TokenBucket(1)], prefix="p:")("k"), bool)
decider: Decider = store.bind(TokenBucket(1))
several: MultiDecider = store.bind_all((TokenBucket(1), FixedWindow(1)))
assert_type(decider("k", 1, None), Decision)
assert_type(several("k", 1, 0.0), tuple[Decision, ...])
assert_type(store.decide_all("k", [TokenBucket(1), FixedWindow(1)]), tuple[Decision, ...])
assert_type(store.decide_all_many([("k", (TokenBucket(1),), 1)]), list[tuple[Decision, ...]])
shared: Store = store_from_url("memory://")
assert_type(shared.decide_all("k", (GCRA(1),), 1, now=1.0), tuple[Decision, ...])
shared.reset_all("k", (GCRA(1),))
