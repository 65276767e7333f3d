"""The memory store: atomic decisions, the injected clock, bounded memory."""

from __future__ import annotations

import asyncio
import threading

import pytest

from buttress.clock import FakeClock
from buttress.ratelimit import GCRA, Decision, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores import MemoryStore, Store, store_from_url


def test_decides_like_the_algorithm_and_uses_the_clock(manual_clock: FakeClock) -> None:
    store = MemoryStore(clock=manual_clock)
    bucket = TokenBucket(rate=1, burst=2)
    assert store.decide("a", bucket) == Decision(True, 2, 1, 1.0, 0.0)
    assert store.decide("a", bucket) == Decision(True, 2, 0, 2.0, 0.0)
    assert store.decide("a", bucket) == Decision(False, 2, 0, 2.0, 1.0)
    assert store.decide("b", bucket).allowed  # keys are independent
    manual_clock.advance(1.0)
    assert store.decide("a", bucket) == Decision(True, 2, 0, 2.0, 0.0)


def test_algorithms_do_not_share_state_under_one_key() -> None:
    store = MemoryStore()
    assert store.decide("k", FixedWindow(1, 60), now=0.0).allowed
    assert not store.decide("k", FixedWindow(1, 60), now=1.0).allowed
    assert store.decide("k", SlidingWindow(1, 60), now=1.0).allowed
    assert len(store) == 2


def test_explicit_now_wins_over_the_clock() -> None:
    store = MemoryStore(clock=FakeClock(start=500.0))
    store.decide("k", GCRA(1, burst=1), now=10.0)
    assert store.peek_state("k", GCRA(1, burst=1)) == (11.0,)


def test_fresh_states_are_not_stored() -> None:
    store = MemoryStore()
    assert store.decide("k", TokenBucket(5), cost=0) == Decision(True, 5, 5, 0.0, 0.0)
    assert store.decide("k", TokenBucket(5), cost=6).retry_after == float("inf")
    assert len(store) == 0


def test_a_state_that_turns_fresh_is_deleted() -> None:
    store = MemoryStore()
    bucket = TokenBucket(rate=1, burst=1)
    store.decide("k", bucket, now=0.0)
    assert len(store) == 1
    store.decide("k", bucket, cost=0, now=5.0)
    assert len(store) == 0


def test_reset_and_clear() -> None:
    store = MemoryStore()
    window = FixedWindow(1, 60)
    store.decide("a", window, now=0.0)
    store.decide("b", window, now=0.0)
    store.reset("a", window)
    assert store.decide("a", window, now=1.0).allowed
    assert not store.decide("b", window, now=1.0).allowed
    store.clear()
    assert len(store) == 0


@pytest.mark.parametrize(("cost", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_cost_is_validated(cost: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        MemoryStore().decide("k", TokenBucket(1), cost)  # type: ignore[arg-type]


def test_decide_many_is_ordered_at_one_instant() -> None:
    store = MemoryStore(clock=FakeClock(start=3.0))
    window = FixedWindow(2, 10)
    decisions = store.decide_many([("a", window, 1), ("a", window, 1), ("a", window, 1)])
    assert [d.allowed for d in decisions] == [True, True, False]
    assert [d.remaining for d in decisions] == [1, 0, 0]
    assert decisions[2].retry_after == 7.0


async def test_async_twins() -> None:
    store = MemoryStore(clock=FakeClock())
    window = FixedWindow(2, 10)
    assert (await store.adecide("a", window)).remaining == 1
    many = await store.adecide_many([("a", window, 1), ("a", window, 1)])
    assert [d.allowed for d in many] == [True, False]
    await store.areset("a", window)
    assert (await store.adecide("a", window)).remaining == 1
    await store.aclose()
    store.close()


def test_is_a_store() -> None:
    assert isinstance(MemoryStore(), Store)
    store = store_from_url("memory://", clock=FakeClock())
    assert isinstance(store, MemoryStore)


@pytest.mark.stress
def test_threads_never_oversubscribe() -> None:
    store = MemoryStore()
    bucket = TokenBucket(rate=0.001, burst=500)
    threads_n, per_thread = 8, 200
    barrier = threading.Barrier(threads_n)
    allowed = [0] * threads_n

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            if store.decide("shared", bucket, now=1.0).allowed:
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 500


async def test_tasks_never_oversubscribe() -> None:
    store = MemoryStore()
    window = SlidingWindow(limit=50, period=60)
    results = await asyncio.gather(*(store.adecide("k", window, now=1.0) for _ in range(200)))
    assert sum(d.allowed for d in results) == 50
    assert sorted(d.remaining for d in results if d.allowed) == list(range(50))


# ------------------------------------------------------------------- eviction


@pytest.mark.parametrize(
    ("algorithm", "keys"),
    [
        (FixedWindow(1, 1.0), 200_000),
        (SlidingWindow(1, 0.5), 50_000),
        (TokenBucket(1, 1.0), 50_000),
        (GCRA(1, 1.0), 50_000),
    ],
    ids=["fixed", "sliding", "bucket", "gcra"],
)
def test_memory_stays_bounded_under_many_distinct_keys(algorithm: object, keys: int) -> None:
    store = MemoryStore()
    per_second = 1_000
    peak = 0
    for i in range(keys):
        # 1,000 new keys per second; each is back to fresh within a second or so.
        store.decide(f"user:{i}", algorithm, now=i / per_second)  # type: ignore[arg-type]
        if i % 1_000 == 0:
            peak = max(peak, len(store))
    # The live keys at any moment are at most ~1,000-2,000; expired ones are swept.
    assert len(store) <= 4 * per_second
    assert peak <= 4 * per_second
    assert len(store) >= per_second // 2  # the recent keys are still there


def test_expired_keys_go_as_new_keys_arrive() -> None:
    store = MemoryStore()
    window = FixedWindow(1, 10.0)
    for i in range(5_000):
        store.decide(f"old:{i}", window, now=1.0)
    assert len(store) == 5_000
    # Long after those windows ended, each new key sweeps two old entries.
    for i in range(2_600):
        store.decide(f"new:{i}", window, now=100.0)
    assert len(store) == 2_600
