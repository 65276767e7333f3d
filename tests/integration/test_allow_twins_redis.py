"""The boolean twins against the shared suite: ``allow`` decides as ``decide``, on Redis too.

A memory store's bound boolean decider (``bind_allow``, what ``RateLimiter.allow``
and the policy run) must admit exactly what the memory store's ``decide`` and the
Redis store's Lua twin admit, and leave the state they leave: the same sequences and
random ones, side by side on the three.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttress.clock import FakeClock
from buttress.stores import MemoryStore, RedisStore
from buttress.stores.base import Algorithm, Decision

from tests.integration.test_stores_redis import (  # noqa: F401 - fixtures
    SEQUENCES,
    SEQUENCES_ALL,
    algorithms,
    client,
    prefix,
    same,
    sequences,
)

pytestmark = pytest.mark.integration


class Settable(FakeClock):
    """A clock the test sets: ``allow`` reads the time from its store's clock."""

    at = 0.0

    def monotonic(self) -> float:
        return self.at


@pytest.fixture
def remote(client: redis.Redis, prefix: str) -> RedisStore:  # noqa: F811
    return RedisStore(client, prefix=prefix)


@pytest.mark.parametrize(
    ("algorithm", "steps"), SEQUENCES, ids=["token_bucket", "gcra", "fixed", "sliding"]
)
def test_allow_admits_what_every_store_decides(
    remote: RedisStore, algorithm: Algorithm, steps: list[tuple[float, int, Decision]]
) -> None:
    clock = Settable()
    store = MemoryStore(clock=clock)
    allow = store.bind_allow((algorithm,))
    for now, cost, expected in steps:
        clock.at = now
        assert allow("k", cost) is expected.allowed, (now, cost)
        assert same(remote.decide("k", algorithm, cost, now=now), expected)
        # The state left behind decides the next request as decide's does.
        assert same(
            store.decide("k", algorithm, 0, now=now), remote.decide("k", algorithm, 0, now=now)
        )


@pytest.mark.parametrize(("limits", "steps"), SEQUENCES_ALL, ids=["tb+fw", "tb+tb+gcra", "sw"])
def test_allow_over_several_limits_admits_what_every_store_decides(
    remote: RedisStore,
    limits: tuple[Algorithm, ...],
    steps: list[tuple[float, int, tuple[Decision, ...]]],
) -> None:
    clock = Settable()
    store = MemoryStore(clock=clock)
    allow = store.bind_allow(limits)
    for now, cost, expected in steps:
        clock.at = now
        assert allow("k", cost) is all(d.allowed for d in expected), (now, cost)
        assert all(
            same(a, b)
            for a, b in zip(remote.decide_all("k", limits, cost, now=now), expected, strict=True)
        )


_examples = itertools.count()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limits=st.lists(algorithms, min_size=1, max_size=3), steps=sequences, start=st.floats(0.0, 2e9)
)
def test_allow_memory_and_redis_agree(
    remote: RedisStore, limits: list[Algorithm], steps: list[Any], start: float
) -> None:
    clock = Settable()
    allowing = MemoryStore(clock=clock)
    allow = allowing.bind_allow(limits)
    asked = MemoryStore()
    run = next(_examples)
    now = start
    for key, dt, cost in steps:
        now += dt
        clock.at = now
        answer = allow(key, cost)
        if len(limits) == 1:
            mine: tuple[Decision, ...] = (asked.decide(key, limits[0], cost, now=now),)
            theirs: tuple[Decision, ...] = (
                remote.decide(f"{run}:{key}", limits[0], cost, now=now),
            )
        else:
            mine = asked.decide_all(key, limits, cost, now=now)
            theirs = remote.decide_all(f"{run}:{key}", limits, cost, now=now)
        assert answer is all(d.allowed for d in mine) is all(d.allowed for d in theirs)
        assert all(same(m, t) for m, t in zip(mine, theirs, strict=True))
    for key in ("a", "b", "c"):
        # What allow left decides a cost-0 ask as what decide left, in memory and Redis.
        probe = allowing.decide_all(key, limits, 0, now=now)
        assert all(
            same(p, a)
            for p, a in zip(probe, asked.decide_all(key, limits, 0, now=now), strict=True)
        )
