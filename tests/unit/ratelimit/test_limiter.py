"""RateLimiter: hit/acquire, reject and wait modes, several limits, keys, events, pipelines.

Every test runs on the fake clock; the memory store reads the same clock, so a wait
in wait mode moves time and refills the limits exactly as a real wait would.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from buttress.clock import FakeClock
from buttress.errors import ConfigError, RateLimited, RetryExhausted, is_transient
from buttress.events import CallRejected, Event
from buttress.pipeline import Pipeline
from buttress.policies.retry import Retry
from buttress.ratelimit import (
    GCRA,
    Decision,
    FixedWindow,
    RateLimiter,
    RateLimitResult,
    SlidingWindow,
    TokenBucket,
)
from buttress.ratelimit.limiter import _combine, _plan
from buttress.stores import FallbackStore, MemoryStore, Store
from buttress.stores.base import Algorithm

INF = math.inf


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run a test through the sync API and through its async twin."""
    return str(request.param)


async def hit(
    limiter: RateLimiter, mode: str, key: str | None = None, cost: int | None = None
) -> RateLimitResult:
    if mode == "sync":
        return limiter.hit(key, cost)
    return await limiter.ahit(key, cost)


async def acquire(
    limiter: RateLimiter, mode: str, key: str | None = None, cost: int | None = None
) -> RateLimitResult:
    if mode == "sync":
        return limiter.acquire(key, cost)
    return await limiter.aacquire(key, cost)


async def reset(limiter: RateLimiter, mode: str, key: str | None = None) -> None:
    if mode == "sync":
        limiter.reset(key)
    else:
        await limiter.areset(key)


def recorder(limiter: RateLimiter) -> list[Event]:
    seen: list[Event] = []
    limiter.subscribe(seen.append)
    return seen


REJECTED = CallRejected("api", "rate_limited")


# ------------------------------------------------------------------------------- hit


async def test_hit_takes_and_refuses_without_raising(mode: str, clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2, period=1.0, burst=3)
    limiter = RateLimiter(bucket, clock=clock, name="api")
    results = [await hit(limiter, mode, "user:1") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    first, refused = results[0], results[3]
    assert first == RateLimitResult(
        True, 3, 2, 0.5, 0.0, (Decision(True, 3, 2, 0.5, 0.0),), (bucket,)
    )
    assert refused == RateLimitResult(
        False, 3, 0, 1.5, 0.5, (Decision(False, 3, 0, 1.5, 0.5),), (bucket,)
    )
    assert clock.sleeps == []
    clock.advance(0.5)
    assert (await hit(limiter, mode, "user:1")).allowed


async def test_keys_are_isolated(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(2, 60), clock=clock, name="api")
    assert [(await hit(limiter, mode, "a")).allowed for _ in range(3)] == [True, True, False]
    assert [(await hit(limiter, mode, "b")).allowed for _ in range(3)] == [True, True, False]
    # The constant key is a key of its own.
    assert (await hit(limiter, mode)).remaining == 1


async def test_cost_above_one(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(10, 60), cost=3, clock=clock, name="api")
    assert [(await hit(limiter, mode)).remaining for _ in range(3)] == [7, 4, 1]
    refused = await hit(limiter, mode)
    assert (refused.allowed, refused.remaining) == (False, 1)
    assert (await hit(limiter, mode, cost=1)).remaining == 0
    # A cost of 0 takes nothing and reports where the key stands.
    assert (await hit(limiter, mode, cost=0))[:3] == (True, 10, 0)
    # A cost above the limit never fits.
    assert (await hit(limiter, mode, "other", cost=11)).retry_after == INF


@pytest.mark.parametrize(("cost", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
async def test_per_call_cost_is_validated(
    mode: str, cost: Any, error: type[Exception], clock: FakeClock
) -> None:
    limiter = RateLimiter(FixedWindow(10, 60), clock=clock)
    with pytest.raises(error):
        await hit(limiter, mode, cost=cost)
    with pytest.raises(error):
        await acquire(limiter, mode, cost=cost)


async def test_gcra_sliding_and_fixed_windows(mode: str, clock: FakeClock) -> None:
    for algorithm in (GCRA(2, 1.0), SlidingWindow(2, 1.0), FixedWindow(2, 1.0)):
        limiter = RateLimiter(algorithm, clock=clock)
        assert [(await hit(limiter, mode)).allowed for _ in range(3)] == [True, True, False]


# ---------------------------------------------------------------------- reject mode


async def test_reject_mode_raises_rate_limited(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(TokenBucket(rate=1, period=2.0, burst=2), clock=clock, name="api")
    events = recorder(limiter)
    assert (await acquire(limiter, mode, "user:1")).remaining == 1
    assert (await acquire(limiter, mode, "user:1")).remaining == 0
    assert events == []
    with pytest.raises(RateLimited) as info:
        await acquire(limiter, mode, "user:1")
    error = info.value
    assert (error.name, error.retry_after, error.key, error.limit, error.remaining) == (
        "api",
        2.0,
        "user:1",
        2,
        0,
    )
    assert is_transient(error)
    assert events == [REJECTED]
    assert clock.sleeps == []


async def test_rate_limited_names_the_constant_key(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 60), key="tenant-7", clock=clock, name="api")
    await acquire(limiter, mode)
    with pytest.raises(RateLimited) as info:
        await acquire(limiter, mode)
    assert info.value.key == "tenant-7"
    assert "for key 'tenant-7'" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.retry_after, again.key, again.limit) == (60.0, "tenant-7", 1)


async def test_a_cost_that_never_fits_is_rejected_at_once_and_is_permanent(
    mode: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(FixedWindow(5, 60), mode="wait", max_wait=1000, clock=clock)
    with pytest.raises(RateLimited) as info:
        await acquire(limiter, mode, cost=6)
    assert info.value.retry_after == INF
    assert not is_transient(info.value)
    assert clock.sleeps == []


# ------------------------------------------------------------------------ wait mode


async def test_wait_mode_sleeps_until_the_request_fits(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(
        TokenBucket(rate=4, period=1.0, burst=2), mode="wait", max_wait=1.0, clock=clock
    )
    events = recorder(limiter)
    results = [await acquire(limiter, mode) for _ in range(5)]
    assert all(r.allowed for r in results)
    assert clock.sleeps == [0.25, 0.25, 0.25]
    assert clock.monotonic() == 0.75
    assert events == []


async def test_wait_mode_waits_for_a_bigger_cost(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(3, 10.0), mode="wait", max_wait=10.0, clock=clock)
    clock.advance(4.0)
    await acquire(limiter, mode, cost=2)
    assert (await acquire(limiter, mode, cost=2)).remaining == 1
    assert clock.sleeps == [6.0]  # until the next window


async def test_max_wait_exceeded_rejects_without_waiting(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(
        TokenBucket(rate=1, period=1.0, burst=1),
        mode="wait",
        max_wait=0.5,
        clock=clock,
        name="api",
    )
    events = recorder(limiter)
    await acquire(limiter, mode)
    with pytest.raises(RateLimited) as info:
        await acquire(limiter, mode)
    assert info.value.retry_after == 1.0
    assert clock.sleeps == []  # a wait that cannot end in time is not begun
    assert events == [CallRejected("api", "rate_limited")]


async def test_max_wait_zero_behaves_like_reject(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 1.0), mode="wait", max_wait=0, clock=clock)
    await acquire(limiter, mode)
    with pytest.raises(RateLimited):
        await acquire(limiter, mode)
    assert clock.sleeps == []


class Contended(FakeClock):
    """A fake clock whose sleeps let a competitor take the request's slot first."""

    def __init__(self) -> None:
        super().__init__()
        self.competitor: Callable[[], object] = lambda: None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.competitor()

    async def asleep(self, seconds: float) -> None:
        await super().asleep(seconds)
        self.competitor()


async def test_waits_add_up_to_at_most_max_wait(mode: str) -> None:
    clock = Contended()
    limiter = RateLimiter(
        TokenBucket(rate=1, period=1.0, burst=1),
        mode="wait",
        max_wait=1.5,
        clock=clock,
        name="api",
    )
    events = recorder(limiter)
    await acquire(limiter, mode)
    # Each time the waiter wakes, someone else has just taken the new token.
    clock.competitor = limiter.hit
    with pytest.raises(RateLimited) as info:
        await acquire(limiter, mode)
    assert clock.sleeps == [1.0]  # a second wait of 1 s would end past 1.5 s
    assert info.value.retry_after == 1.0
    assert events == [CallRejected("api", "rate_limited")]  # the competitor was served
    clock.competitor = lambda: None
    events.clear()
    clock.sleeps.clear()
    assert (await acquire(limiter, mode)).allowed
    assert clock.sleeps == [1.0]
    assert events == []


def test_plan_is_the_whole_waiting_policy() -> None:
    assert _plan(False, 0.5, 10.0) is None
    assert _plan(True, 0.5, 10.0) == 0.5
    assert _plan(True, 0.5, 0.5) == 0.5
    assert _plan(True, 0.5, 0.49) is None
    assert _plan(True, INF, INF) is None or _plan(True, INF, 1e300) is None
    assert _plan(True, 0.5, -1.0) is None


# -------------------------------------------------------------------- several limits


async def test_several_limits_per_key(mode: str, clock: FakeClock) -> None:
    per_second = TokenBucket(rate=2, period=1.0)
    per_minute = FixedWindow(5, 60.0)
    limiter = RateLimiter(per_second, per_minute, clock=clock, name="api")
    assert limiter.limits == (per_second, per_minute)
    first = await hit(limiter, mode, "k")
    assert first.decisions == (Decision(True, 2, 1, 0.5, 0.0), Decision(True, 5, 4, 60.0, 0.0))
    assert first.limits == (per_second, per_minute)
    assert first[:5] == (True, 2, 1, 60.0, 0.0)  # the per-second limit binds
    second = await hit(limiter, mode, "k")
    assert second[:5] == (True, 2, 0, 60.0, 0.0)
    third = await hit(limiter, mode, "k")
    assert third[:5] == (False, 2, 0, 60.0, 0.5)
    # Per second it keeps going; per minute it stops at five.
    admitted = 2
    for _ in range(20):
        clock.advance(0.5)
        admitted += (await hit(limiter, mode, "k")).allowed
    assert admitted == 5
    refused = await hit(limiter, mode, "k")
    assert refused[:5] == (False, 5, 0, 50.0, 50.0)  # now the minute binds
    assert refused.decisions[0].allowed  # the bucket would have allowed: untouched


async def test_several_limits_are_all_or_nothing(mode: str, clock: FakeClock) -> None:
    big = FixedWindow(5, 60.0)
    small = SlidingWindow(3, 60.0)
    limiter = RateLimiter(big, small, clock=clock)
    assert [(await hit(limiter, mode)).allowed for _ in range(4)] == [True] * 3 + [False]
    refused = await hit(limiter, mode)
    # The big window was not charged for the refused requests.
    assert refused.decisions[0] == Decision(True, 5, 2, 60.0, 0.0)
    assert not refused.decisions[1].allowed
    store = limiter.store
    assert isinstance(store, MemoryStore)
    assert store.peek_state(f"{limiter.name}:global", big) == (0.0, 3.0)
    # With the small window out of the way, the big one has exactly two left.
    if mode == "sync":
        store.reset(f"{limiter.name}:global", small)
    else:
        await store.areset(f"{limiter.name}:global", small)
    assert [(await hit(limiter, mode)).allowed for _ in range(3)] == [True, True, False]
    last = await hit(limiter, mode)
    assert [d.allowed for d in last.decisions] == [False, True]
    assert last.limit == 5
    assert store.peek_state(f"{limiter.name}:global", small) == (0.0, 0.0, 2.0)


async def test_two_limits_of_one_kind_keep_separate_states(mode: str, clock: FakeClock) -> None:
    per_second = TokenBucket(rate=10, period=1.0)
    per_hour = TokenBucket(rate=30, period=3600.0)
    limiter = RateLimiter(per_second, per_hour, clock=clock, name="api")
    for _ in range(10):
        assert (await hit(limiter, mode)).allowed
    assert not (await hit(limiter, mode)).allowed
    clock.advance(1.0)
    result = await hit(limiter, mode)
    assert result.allowed
    assert [d.remaining for d in result.decisions] == [9, 19]
    store = limiter.store
    assert isinstance(store, MemoryStore)
    assert store.peek_state("api:global", per_second) is not None
    assert store.peek_state("api:global", per_hour, slot="tb.2") is not None
    await reset(limiter, mode)
    assert store.peek_state("api:global", per_second) is None
    assert store.peek_state("api:global", per_hour, slot="tb.2") is None
    assert [d.remaining for d in (await hit(limiter, mode)).decisions] == [9, 29]


async def test_wait_mode_over_several_limits(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(
        FixedWindow(1, 1.0), FixedWindow(2, 10.0), mode="wait", max_wait=5.0, clock=clock
    )
    await acquire(limiter, mode)
    await acquire(limiter, mode)  # waits for the next second
    assert clock.sleeps == [1.0]
    with pytest.raises(RateLimited) as info:
        await acquire(limiter, mode)  # the ten-second window is full: 9 s > 5 s
    assert info.value.retry_after == 9.0
    assert info.value.limit == 2
    assert clock.sleeps == [1.0]


def test_combine_picks_the_binding_limit() -> None:
    a, b, c = FixedWindow(10), FixedWindow(5), FixedWindow(3)
    limits = (a, b, c)
    allowed = (
        Decision(True, 10, 7, 1.0, 0.0),
        Decision(True, 5, 2, 4.0, 0.0),
        Decision(True, 3, 2, 2.0, 0.0),
    )
    # The fewest remaining binds; the first of equals wins.
    assert _combine(allowed, limits)[:5] == (True, 5, 2, 4.0, 0.0)
    refused = (
        Decision(False, 10, 0, 1.0, 1.0),
        Decision(True, 5, 2, 4.0, 0.0),
        Decision(False, 3, 1, 9.0, 3.0),
    )
    # The refusal with the longest wait binds; remaining is the least of all.
    result = _combine(refused, limits)
    assert result[:5] == (False, 3, 0, 9.0, 3.0)
    assert result.decisions is refused
    assert result.limits is limits
    never = (Decision(True, 10, 9, 1.0, 0.0), Decision(False, 5, 5, 0.0, INF))
    assert _combine(never, (a, b))[:5] == (False, 5, 5, 1.0, INF)


# ----------------------------------------------------------------- keys and names


async def test_storage_keys_are_namespaced_by_limiter_name(mode: str, clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    window = FixedWindow(1, 60)
    first = RateLimiter(window, store=store, name="login")
    second = RateLimiter(window, store=store, name="signup")
    twin = RateLimiter(window, store=store, name="login")
    assert (await hit(first, mode, "alice")).allowed
    assert (await hit(second, mode, "alice")).allowed  # another name, another state
    assert not (await hit(twin, mode, "alice")).allowed  # the same name shares it
    assert store.peek_state("login:alice", window) == (0.0, 1.0)
    assert store.peek_state("signup:alice", window) == (0.0, 1.0)
    assert store.peek_state("alice", window) is None
    await reset(first, mode, "alice")
    assert (await hit(twin, mode, "alice")).allowed


def test_default_names_differ() -> None:
    one, two = RateLimiter(FixedWindow(1)), RateLimiter(FixedWindow(1))
    assert one.name.startswith("ratelimiter-")
    assert one.name != two.name


def test_key_callable_for_decorated_functions(clock: FakeClock) -> None:
    limiter = RateLimiter(
        FixedWindow(2, 60), key=lambda user, **_: f"user:{user}", clock=clock, name="api"
    )

    @limiter
    def fetch(user: str, *, page: int = 1) -> str:
        return f"{user}/{page}"

    assert fetch("alice") == "alice/1"
    assert fetch("alice", page=2) == "alice/2"
    with pytest.raises(RateLimited) as info:
        fetch("alice", page=3)
    assert info.value.key == "user:alice"
    assert fetch("bob") == "bob/1"

    def plain(user: str, *, page: int = 1) -> str:
        return f"{user}:{page}"

    assert limiter.call(plain, "carol") == "carol:1"
    assert limiter(plain, "carol", page=5) == "carol:5"
    with pytest.raises(RateLimited):
        limiter(plain, "carol", page=6)


def test_key_callable_on_methods(clock: FakeClock) -> None:
    seen: list[tuple[Any, ...]] = []

    def key(*args: Any, **kwargs: Any) -> str:
        seen.append(args)
        return f"tenant:{args[1]}"

    limiter = RateLimiter(FixedWindow(1, 60), key=key, clock=clock)

    class Client:
        @limiter
        def send(self, tenant: str) -> str:
            return tenant

    client = Client()
    assert client.send("t1") == "t1"
    assert client.send("t2") == "t2"
    with pytest.raises(RateLimited):
        client.send("t1")
    assert [args[1:] for args in seen] == [("t1",), ("t2",), ("t1",)]
    assert seen[0][0] is client


async def test_key_callable_for_async_functions(clock: FakeClock) -> None:
    limiter = RateLimiter(
        FixedWindow(1, 60), key=lambda user: user, mode="wait", max_wait=60, clock=clock
    )

    @limiter
    async def fetch(user: str) -> str:
        return user.upper()

    assert await fetch("a") == "A"
    assert await fetch("b") == "B"
    assert clock.sleeps == []
    assert await fetch("a") == "A"  # waits for the next window
    assert clock.sleeps == [60.0]
    assert await limiter.acall(fetch, "c") == "C"


async def test_policy_paths_reject_before_running(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 60), clock=clock, name="api")
    events = recorder(limiter)
    calls: list[int] = []

    def work(x: int) -> int:
        calls.append(x)
        return x * 2

    async def awork(x: int) -> int:
        calls.append(x)
        return x * 2

    async def run(x: int) -> int:
        if mode == "sync":
            return limiter.call(work, x)
        return await limiter.acall(awork, x)

    assert await run(1) == 2
    with pytest.raises(RateLimited):
        await run(2)
    assert calls == [1]
    assert events == [REJECTED]


# ------------------------------------------------------------------ stores and URLs


async def test_store_given_as_a_url(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 10.0), store="memory://", clock=clock)
    assert isinstance(limiter.store, MemoryStore)
    assert limiter.store.clock is clock  # the limiter's clock drives the store it built
    await acquire(limiter, mode)
    clock.advance(10.0)
    await acquire(limiter, mode)
    if mode == "sync":
        limiter.close()
    else:
        await limiter.aclose()


class Recording:
    """A store that records which methods were called and delegates to memory."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.name = "recording"
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def record(*args: Any) -> Any:
            self.calls.append(name)
            return method(*args)

        return record


async def test_other_stores_are_asked_through_the_protocol(mode: str, clock: FakeClock) -> None:
    store = Recording(clock)
    assert isinstance(store, Store)
    single = RateLimiter(FixedWindow(1, 60), store=store, clock=clock, name="one")  # type: ignore[arg-type]
    multi = RateLimiter(FixedWindow(2, 60), GCRA(1), store=store, clock=clock, name="two")  # type: ignore[arg-type]
    assert (await hit(single, mode)).allowed
    assert not (await hit(single, mode)).allowed
    with pytest.raises(RateLimited):
        await acquire(single, mode)
    assert (await hit(multi, mode)).allowed
    await reset(single, mode)
    await reset(multi, mode)
    prefix = "" if mode == "sync" else "a"
    assert store.calls == [
        f"{prefix}decide",
        f"{prefix}decide",
        f"{prefix}decide",
        f"{prefix}decide_all",
        f"{prefix}reset",
        f"{prefix}reset_all",
    ]
    single.close()  # not built by the limiter: left open
    assert store.calls[-1] == f"{prefix}reset_all"


async def test_a_fallback_store_works_too(mode: str, clock: FakeClock) -> None:
    store = FallbackStore(MemoryStore(clock=clock, name="primary"), clock=clock)
    limiter = RateLimiter(
        FixedWindow(1, 60), TokenBucket(5), store=store, clock=clock, name="fallback"
    )
    assert (await hit(limiter, mode)).allowed
    assert not (await hit(limiter, mode)).allowed
    assert len(store.primary) == 2  # type: ignore[arg-type]
    assert len(store.fallback) == 0  # type: ignore[arg-type]


def test_a_store_passed_in_is_left_open() -> None:
    closed: list[str] = []

    class Closing(MemoryStore):
        def close(self) -> None:
            closed.append("close")

        async def aclose(self) -> None:
            closed.append("aclose")

    mine = RateLimiter(FixedWindow(1), store="memory://")
    mine.close()
    theirs = RateLimiter(FixedWindow(1), store=Closing())
    theirs.close()
    asyncio.run(theirs.aclose())
    assert closed == []


# ---------------------------------------------------------------------- batches


async def test_hit_many(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 60), clock=clock, name="api")
    events = recorder(limiter)
    keys = ["a", "b", "a", "c"]
    results = limiter.hit_many(keys) if mode == "sync" else await limiter.ahit_many(keys)
    assert [r.allowed for r in results] == [True, True, False, True]
    assert results[2].retry_after == 60.0
    assert events == [REJECTED]
    multi = RateLimiter(FixedWindow(3, 60), FixedWindow(1, 1), clock=clock)
    results = multi.hit_many(keys, 1) if mode == "sync" else await multi.ahit_many(keys, 1)
    assert [r.allowed for r in results] == [True, True, False, True]
    assert [len(r.decisions) for r in results] == [2, 2, 2, 2]
    assert results[2].decisions[0] == Decision(True, 3, 2, 60.0, 0.0)  # untouched


# ----------------------------------------------------------- pipeline and retry


async def test_retry_honours_retry_after_in_a_pipeline(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(2, 10.0), clock=clock, name="api")
    retry = Retry(3, backoff="constant", delay=0.01, jitter="none", max_delay=60, clock=clock)
    pipeline = Pipeline(retry, limiter)
    clock.advance(3.0)

    def work() -> str:
        return "done"

    async def awork() -> str:
        return "done"

    async def run() -> str:
        if mode == "sync":
            return pipeline.call(work)
        return await pipeline.acall(awork)

    assert [await run() for _ in range(3)] == ["done"] * 3
    # The third call was refused, and retried exactly when the next window opened.
    assert clock.sleeps == [7.0]


async def test_retry_gives_up_when_retry_after_exceeds_its_cap(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 10.0), clock=clock)
    retry = Retry(3, max_delay=5.0, clock=clock)
    pipeline = Pipeline(retry, limiter)

    async def awork() -> int:
        return 1

    async def run() -> int:
        if mode == "sync":
            return pipeline.call(lambda: 1)
        return await pipeline.acall(awork)

    await run()
    with pytest.raises(RetryExhausted) as info:
        await run()
    assert isinstance(info.value.__cause__, RateLimited)
    assert clock.sleeps == []


# ------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"cost": 0}, "cost"),
        ({"cost": True}, "cost"),
        ({"cost": 1.5}, "cost"),
        ({"mode": "block"}, "mode"),
        ({"max_wait": -1}, "max_wait"),
        ({"max_wait": INF}, "max_wait"),
        ({"max_wait": math.nan}, "max_wait"),
        ({"max_wait": True}, "max_wait"),
        ({"key": 42}, "key"),
        ({"store": "postgres://x"}, "store"),
        ({"store": "nothing"}, "store"),
        ({"store": object()}, "store"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiter(FixedWindow(1), **kwargs)
    assert info.value.path == path


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiter()
    assert info.value.path == "limits"
    with pytest.raises(ConfigError) as info:
        RateLimiter(FixedWindow(1), "10/s")  # type: ignore[arg-type]
    assert info.value.path == "limits[1]"


def test_introspection_and_repr() -> None:
    limiter = RateLimiter(TokenBucket(10), FixedWindow(100, 60), mode="wait", name="api")
    assert (limiter.mode, limiter.max_wait, limiter.cost, limiter.key) == ("wait", 1.0, 1, "global")
    assert repr(limiter) == (
        "RateLimiter(TokenBucket(rate=10.0, period=1.0, burst=10), "
        "FixedWindow(limit=100, period=60.0), store=MemoryStore(name='memory', keys=0), "
        "mode='wait', name='api')"
    )


# ---------------------------------------------------------------------- events


def test_events_cost_nothing_without_listeners(clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 60), clock=clock)
    assert not limiter._events.enabled
    limiter.hit()
    limiter.hit()
    events = recorder(limiter)
    assert limiter._events.enabled
    limiter.hit()
    assert events == [CallRejected(limiter.name, "rate_limited")]


# ---------------------------------------------------------------------- threads


@pytest.mark.stress
@pytest.mark.parametrize("several", [False, True], ids=["one-limit", "two-limits"])
def test_threads_never_oversubscribe(several: bool) -> None:
    limits: tuple[Algorithm, ...] = (FixedWindow(500, 3600),)
    if several:
        limits = (FixedWindow(10_000, 3600), TokenBucket(rate=0.001, burst=500))
    limiter = RateLimiter(*limits, name="api")
    threads_n, per_thread = 8, 200
    barrier = threading.Barrier(threads_n)
    allowed = [0] * threads_n

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            if limiter.hit("shared").allowed:
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 500
    if several:
        # The big window was charged only for the admitted requests.
        final = limiter.hit("shared", cost=0)
        assert final.decisions[0].remaining == 10_000 - 500


async def test_tasks_never_oversubscribe() -> None:
    limiter = RateLimiter(SlidingWindow(limit=50, period=60), FixedWindow(1000, 60))
    results = await asyncio.gather(*(limiter.ahit("k") for _ in range(200)))
    assert sum(r.allowed for r in results) == 50


# ------------------------------------------------------- a model of all-or-nothing


class LimiterMachine(RuleBasedStateMachine):
    """Random hits, resets and clock steps against a model that runs the algorithms."""

    LIMITS: tuple[Algorithm, ...] = (
        TokenBucket(rate=2, period=1.0, burst=3),
        FixedWindow(4, 5.0),
        TokenBucket(rate=1, period=4.0, burst=5),
        SlidingWindow(6, 3.0),
    )

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(auto_advance=False)
        self.limiter = RateLimiter(*self.LIMITS, clock=self.clock, name="m")
        self.states: dict[tuple[str, int], Any] = {}

    @rule(key=st.sampled_from(["a", "b"]), cost=st.integers(0, 4))
    def hit(self, key: str, cost: int) -> None:
        self.step(key, cost)

    def step(self, key: str, cost: int) -> RateLimitResult:
        now = self.clock.monotonic()
        outcomes = [
            algorithm.decide(self.states.get((key, i)), now, cost)
            for i, algorithm in enumerate(self.LIMITS)
        ]
        result = self.limiter.hit(key, cost)
        if all(d.allowed for _, d in outcomes):
            for i, (state, _) in enumerate(outcomes):
                self.states[(key, i)] = state
            expected = tuple(d for _, d in outcomes)
        else:
            expected = tuple(
                d if not d.allowed else algorithm.decide(self.states.get((key, i)), now, 0)[1]
                for i, (algorithm, (_, d)) in enumerate(zip(self.LIMITS, outcomes, strict=True))
            )
        assert result.decisions == expected
        assert result == _combine(expected, self.LIMITS)
        assert result.allowed == all(d.allowed for d in expected)
        return result

    @rule(key=st.sampled_from(["a", "b"]))
    def reset(self, key: str) -> None:
        self.limiter.reset(key)
        for i in range(len(self.LIMITS)):
            self.states.pop((key, i), None)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def never_more_than_each_limit_allows(self) -> None:
        for key in ("a", "b"):
            standing = self.step(key, 0)
            assert standing.allowed
            assert all(0 <= d.remaining <= d.limit for d in standing.decisions)


TestLimiterMachine = LimiterMachine.TestCase
TestLimiterMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


def test_a_memory_store_subclass_is_asked_through_its_own_methods() -> None:
    from buttress.ratelimit import RateLimiter, TokenBucket
    from buttress.stores import MemoryStore

    asked: list[str] = []

    class Audited(MemoryStore):
        def decide(self, key, algorithm, cost=1, now=None):  # type: ignore[no-untyped-def]
            asked.append(key)
            return super().decide(key, algorithm, cost, now)

    limiter = RateLimiter(TokenBucket(5), store=Audited(), name="audited")
    assert limiter.hit("k").allowed
    assert asked == ["audited:k"]
    assert limiter.allow("k")
    limiter.call(lambda: None)
    assert asked == ["audited:k", "audited:k", "audited:global"]


# ------------------------------------------------------------------ allow and aallow


async def allow(
    limiter: RateLimiter, mode: str, key: str | None = None, cost: int | None = None
) -> bool:
    if mode == "sync":
        return limiter.allow(key, cost)
    return await limiter.aallow(key, cost)


async def test_allow_answers_as_hit_and_shares_its_state(mode: str, clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2, period=1.0, burst=3)
    limiter = RateLimiter(bucket, clock=clock, name="api")
    events = recorder(limiter)
    assert [await allow(limiter, mode, "user:1") for _ in range(2)] == [True, True]
    assert (await hit(limiter, mode, "user:1")).remaining == 0  # one state for both
    assert await allow(limiter, mode, "user:1") is False
    assert events == [REJECTED]
    assert await allow(limiter, mode, "user:2", cost=3)  # keys apart; cost per call
    assert await allow(limiter, mode, "user:2", cost=0)  # cost 0 asks, takes nothing
    assert await allow(limiter, mode)  # the constant key
    assert await allow(limiter, mode)
    assert limiter.hit(None, 0).remaining == 1
    clock.advance(0.5)
    assert await allow(limiter, mode, "user:1")
    assert clock.sleeps == []  # allow never waits, whatever the mode


@pytest.mark.parametrize(
    "limits",
    [
        (FixedWindow(2, 60),),
        (TokenBucket(2, 60.0),),
        (GCRA(2, 60.0),),
        (SlidingWindow(2, 60),),
        (FixedWindow(2, 60), TokenBucket(5)),
    ],
    ids=["fixed", "bucket", "gcra", "sliding", "two"],
)
async def test_allow_on_every_algorithm(
    mode: str, clock: FakeClock, limits: tuple[Algorithm, ...]
) -> None:
    limiter = RateLimiter(*limits, clock=clock, name="api")
    assert [await allow(limiter, mode, "k") for _ in range(3)] == [True, True, False]
    limiter.reset("k")
    assert await allow(limiter, mode, "k", 2)
    assert not await allow(limiter, mode, "k")


async def test_allow_checks_the_cost(mode: str, clock: FakeClock) -> None:
    limiter = RateLimiter(FixedWindow(5, 60), clock=clock, name="api")
    with pytest.raises(ValueError, match="cost"):
        await allow(limiter, mode, "k", -1)
    with pytest.raises(TypeError, match="cost"):
        await allow(limiter, mode, "k", True)


async def test_allow_on_a_store_that_is_not_local(mode: str, clock: FakeClock) -> None:
    store = Recording(clock)
    limiter = RateLimiter(FixedWindow(1, 60), store=store, clock=clock, name="api")  # type: ignore[arg-type]
    events = recorder(limiter)
    assert await allow(limiter, mode, "k")
    assert not await allow(limiter, mode, "k")
    assert events == [REJECTED]
    prefix = "" if mode == "sync" else "a"
    assert store.calls == [f"{prefix}decide"] * 2


# ------------------------------------------------------- the policy admits through allow


@pytest.mark.parametrize("keyed", [False, True], ids=["constant-key", "key-callable"])
async def test_the_policy_admits_without_a_result_and_refuses_with_one(
    mode: str, clock: FakeClock, keyed: bool
) -> None:
    built: list[str] = []

    class Counting(MemoryStore):
        def bind(self, algorithm: Algorithm) -> Any:
            built.append("bind")
            return super().bind(algorithm)

        def bind_allow(self, algorithms: Any, **options: Any) -> Any:
            built.append("bind_allow")
            return super().bind_allow(algorithms, **options)

        def bind_async_allow(self, algorithms: Any, **options: Any) -> Any:
            built.append("bind_async_allow")
            return super().bind_async_allow(algorithms, **options)

    store = Counting(clock=clock)
    key: Any = (lambda user: f"u:{user}") if keyed else "global"
    limiter = RateLimiter(TokenBucket(1, 10.0, burst=2), store=store, key=key, name="api")
    assert built == ["bind", "bind_allow", "bind_async_allow", "bind_allow", "bind_async_allow"]
    events = recorder(limiter)

    def work(user: str) -> str:
        return user

    async def awork(user: str) -> str:
        return user

    async def run(user: str) -> str:
        if mode == "sync":
            return limiter.call(work, user)
        return await limiter.acall(awork, user)

    assert [await run("a"), await run("a")] == ["a", "a"]
    with pytest.raises(RateLimited) as info:
        await run("a")
    assert info.value.retry_after == pytest.approx(10.0)
    assert info.value.key == ("u:a" if keyed else "global")
    assert events == [REJECTED]  # one refusal, one event
    if keyed:
        assert await run("b") == "b"


async def test_the_policy_waits_through_acquire_after_a_refusal(
    mode: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(FixedWindow(1, 1.0), mode="wait", max_wait=2.0, clock=clock, name="api")
    events = recorder(limiter)

    async def run() -> int:
        if mode == "sync":
            return limiter.call(lambda: 7)
        return await limiter.acall(_seven)

    assert await run() == 7
    assert await run() == 7  # waited for the next window
    assert clock.sleeps != []
    assert events == []


async def _seven() -> int:
    return 7


@pytest.mark.stress
def test_threads_never_over_admit_through_allow_or_the_policy() -> None:
    limiter = RateLimiter(
        TokenBucket(rate=0.001, burst=300), FixedWindow(10_000, 3600), key=lambda: "k", name="t"
    )
    threads_n, per_thread = 8, 200
    barrier = threading.Barrier(threads_n)
    allowed = [0] * threads_n

    def worker(i: int) -> None:
        barrier.wait()
        for n in range(per_thread):
            if n % 2:
                allowed[i] += limiter.allow("k")
                continue
            try:
                limiter.call(lambda: None)
            except RateLimited:
                continue
            allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 300
    # The window was charged for the admitted requests only.
    assert limiter.hit("k", 0).decisions[1].remaining == 10_000 - 300


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("kind", ["recording", "fallback"])
def test_a_limiter_on_a_shared_store_needs_a_name(kind: str, clock: FakeClock) -> None:
    store: Any = Recording(clock) if kind == "recording" else FallbackStore(MemoryStore())
    with pytest.raises(ConfigError) as info:
        RateLimiter(FixedWindow(1), store=store)
    assert info.value.path == "name"
    assert "explicit name" in str(info.value)
    assert RateLimiter(FixedWindow(1), store=store, name="api").name == "api"


def test_a_limiter_in_memory_may_go_unnamed() -> None:
    assert RateLimiter(FixedWindow(1)).name.startswith("ratelimiter")
    assert RateLimiter(FixedWindow(1), store=MemoryStore()).name.startswith("ratelimiter")


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"clock": "x"}, "clock"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"cost": -1}, "cost"),
        ({"mode": None}, "mode"),
        ({"max_wait": "1s"}, "max_wait"),
        ({"key": None}, "key"),
    ],
)
def test_more_options_are_validated(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiter(FixedWindow(1), **kwargs)
    assert info.value.path == path


def test_max_wait_takes_a_timedelta(clock: FakeClock) -> None:
    limiter = RateLimiter(
        FixedWindow(1, 1.0), mode="wait", max_wait=timedelta(seconds=2), clock=clock
    )
    assert limiter.max_wait == 2.0
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps == [pytest.approx(1.0)]
