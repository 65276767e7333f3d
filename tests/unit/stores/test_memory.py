"""The memory store: atomic decisions, the injected clock, bounded memory."""

from __future__ import annotations

import asyncio
import threading

import pytest

from buttress.clock import FakeClock
from buttress.ratelimit import GCRA, Decision, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores import MemoryStore, Store, store_from_url
from buttress.stores.base import slot_names


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


# ---------------------------------------------------------------- several limits


def test_slot_names_keep_limits_of_one_kind_apart() -> None:
    limits = (TokenBucket(10), FixedWindow(5), TokenBucket(1, 60), GCRA(1), TokenBucket(2))
    assert slot_names(limits) == ("tb", "fw", "tb.2", "gcra", "tb.3")
    assert slot_names(()) == ()


def test_decide_all_takes_from_every_limit_when_all_allow() -> None:
    store = MemoryStore(clock=FakeClock())
    second, minute = TokenBucket(rate=2, burst=2), FixedWindow(3, 60.0)
    assert store.decide_all("k", (second, minute)) == (
        Decision(True, 2, 1, 0.5, 0.0),
        Decision(True, 3, 2, 60.0, 0.0),
    )
    assert store.peek_state("k", second) == (1.0, 0.0)
    assert store.peek_state("k", minute) == (0.0, 1.0)
    assert len(store) == 2
    # The same slots as single decisions: decide() and decide_all() see one state.
    assert store.decide("k", minute).remaining == 1


def test_decide_all_is_all_or_nothing() -> None:
    store = MemoryStore(clock=FakeClock())
    wide, narrow = FixedWindow(5, 60.0), TokenBucket(rate=1, period=10.0, burst=2)
    limits = (wide, narrow)
    assert [d.remaining for d in store.decide_all("k", limits)] == [4, 1]
    assert [d.remaining for d in store.decide_all("k", limits)] == [3, 0]
    refused = store.decide_all("k", limits)
    # The narrow bucket refuses; the wide window reports its standing as a cost-0
    # ask would (3 left), and keeps its count.
    assert refused == (Decision(True, 5, 3, 60.0, 0.0), Decision(False, 2, 0, 20.0, 10.0))
    assert store.peek_state("k", wide) == (0.0, 2.0)
    assert store.decide_all("k", limits, cost=3)[0] == Decision(True, 5, 3, 60.0, 0.0)
    assert store.peek_state("k", wide) == (0.0, 2.0)


def test_decide_all_with_two_limits_of_one_kind() -> None:
    store = MemoryStore()
    second, hour = TokenBucket(rate=10, period=1.0), TokenBucket(rate=100, period=3600.0)
    for _ in range(10):
        store.decide_all("k", (second, hour), now=0.0)
    refused = store.decide_all("k", (second, hour), now=0.0)
    assert [d.allowed for d in refused] == [False, True]
    assert refused[1].remaining == 90
    assert store.peek_state("k", hour, slot="tb.2") == (90.0, 0.0)
    store.reset_all("k", (second, hour))
    assert store.peek_state("k", second) is None
    assert store.peek_state("k", hour, slot="tb.2") is None
    assert len(store) == 0


def test_decide_all_drops_states_that_turn_fresh() -> None:
    store = MemoryStore()
    limits = (FixedWindow(2, 10.0), GCRA(1, 1.0, burst=2))
    store.decide_all("k", limits, now=1.0)
    assert len(store) == 2
    assert store.decide_all("k", limits, cost=0, now=100.0) == (
        Decision(True, 2, 2, 0.0, 0.0),
        Decision(True, 2, 2, 0.0, 0.0),
    )
    assert len(store) == 0
    store.decide_all("k", limits, cost=0, now=100.0)
    assert len(store) == 0


def test_sweeping_never_drops_a_state_that_decide_all_is_updating() -> None:
    # Found by the memory/Redis equivalence suite: at t=4 the buckets are re-inserted
    # (each insertion sweeps two old entries) while the window's entry, due exactly
    # at t=4, is about to be updated by the same decision.
    store = MemoryStore()
    bucket = TokenBucket(rate=1, period=1.0, burst=1)
    window = FixedWindow(1, 4.0)
    limits = (bucket, bucket, window, bucket)
    store.decide_all("a", limits, 1, now=0.0)
    store.decide_all("a", limits, 0, now=3.0)  # the buckets are full again: dropped
    assert [d.allowed for d in store.decide_all("a", limits, 1, now=4.0)] == [True] * 4
    assert store.peek_state("a", window) == (1.0, 1.0)
    assert store.decide_all("a", limits, 0, now=4.0)[2] == Decision(True, 1, 0, 4.0, 0.0)


def test_decide_all_cost_is_validated() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="cost"):
        store.decide_all("k", (FixedWindow(1),), -1)
    with pytest.raises(TypeError):
        store.decide_all("k", (FixedWindow(1),), 1.5)  # type: ignore[arg-type]


async def test_decide_all_twins_and_batches() -> None:
    store = MemoryStore(clock=FakeClock(start=5.0))
    limits = (FixedWindow(2, 10.0), FixedWindow(3, 100.0))
    batch = store.decide_all_many([("a", limits, 1), ("a", limits, 1), ("a", limits, 1)])
    assert [[d.allowed for d in decisions] for decisions in batch] == [
        [True, True],
        [True, True],
        [False, True],
    ]
    assert batch[2][1] == Decision(True, 3, 1, 95.0, 0.0)
    assert (await store.adecide_all("b", limits)) == store.decide_all("c", limits)
    many = await store.adecide_all_many([("b", limits, 2), ("b", limits, 1)])
    assert [decisions[0].allowed for decisions in many] == [False, True]  # 1 + 2 > 2
    assert [decisions[1].remaining for decisions in many] == [2, 1]
    assert many[1][0].remaining == 0
    await store.areset_all("b", limits)
    assert store.decide_all("b", limits, 2)[0].allowed
    assert store.decide_all_many([]) == []


def test_bound_deciders_match_decide() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    bucket = TokenBucket(rate=1, burst=2)
    bound = store.bind(bucket)
    assert bound("k", 1, None) == Decision(True, 2, 1, 1.0, 0.0)
    assert store.decide("k", bucket) == Decision(True, 2, 0, 2.0, 0.0)  # one state
    assert bound("k", 1, 0.5) == Decision(False, 2, 0, 1.5, 0.5)
    limits = (FixedWindow(1, 60), bucket)
    bound_all = store.bind_all(limits)
    assert [d.allowed for d in bound_all("j", 1, None)] == [True, True]
    assert [d.allowed for d in store.decide_all("j", limits)] == [False, True]
    clock.advance(60.0)
    assert [d.allowed for d in bound_all("j", 1, None)] == [True, True]


def test_clear_keeps_bound_deciders_working() -> None:
    store = MemoryStore()
    window = FixedWindow(1, 60)
    bound = store.bind(window)
    assert bound("k", 1, 0.0).allowed
    store.clear()
    assert len(store) == 0
    assert bound("k", 1, 0.0).allowed
    assert store.decide("k", window, now=0.0).allowed is False


def test_memory_stays_bounded_with_several_limits() -> None:
    store = MemoryStore()
    limits = (FixedWindow(1, 1.0), TokenBucket(1, 1.0), TokenBucket(2, 1.0))
    peak = 0
    for i in range(30_000):
        store.decide_all(f"user:{i}", limits, now=i / 1_000)
        if i % 1_000 == 0:
            peak = max(peak, len(store))
    assert len(store) <= 3 * 4 * 1_000
    assert peak <= 3 * 4 * 1_000


@pytest.mark.stress
def test_threads_never_oversubscribe_several_limits() -> None:
    store = MemoryStore()
    limits = (FixedWindow(1_000, 3600), TokenBucket(rate=0.001, burst=300), FixedWindow(400, 60))
    threads_n, per_thread = 8, 100
    barrier = threading.Barrier(threads_n)
    allowed = [0] * threads_n

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            if all(d.allowed for d in store.decide_all("shared", limits, now=1.0)):
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 300
    final = store.decide_all("shared", limits, 0, now=1.0)
    assert [d.remaining for d in final] == [700, 0, 100]
