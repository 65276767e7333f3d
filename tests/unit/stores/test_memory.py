"""The memory store: atomic decisions, the injected clock, bounded memory."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.ratelimit import GCRA, Decision, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores import LocalStore, MemoryStore, Store, store_from_url
from buttress.stores._local import is_local
from buttress.stores.base import Algorithm, slot_names


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


# ------------------------------------------------- entries whose expiry rounds to now


@pytest.mark.parametrize(
    "algorithm",
    [TokenBucket(1e9, 1.0, burst=3), TokenBucket(1e12, 1.0, burst=1), TokenBucket(3e9, 2.0, 5)],
    ids=["burst-3", "burst-1", "period-2"],
)
@pytest.mark.parametrize("path", ["decide", "allow"])
def test_a_state_fresh_within_an_ulp_of_now_is_kept(algorithm: Algorithm, path: str) -> None:
    # At epoch times one ulp is ~2.4e-7 s: now + 1e-9 rounds to now. (GCRA keeps
    # its expiry as its state, exactly, so only the bucket meets this.) The entry must
    # survive its own insertion (the sweep once dropped it, then found the queue
    # empty: IndexError), and decide the next request at the same instant.
    store = MemoryStore()
    now = 1.7e9
    burst = store.decide("probe", algorithm, 0, now=now).limit
    if path == "decide":
        first = store.decide("k", algorithm, now=now)
        assert first.allowed
        assert first.remaining == burst - 1
        assert store.peek_state("k", algorithm) is not None
        for left in range(burst - 2, -1, -1):
            assert store.decide("k", algorithm, now=now).remaining == left
        assert not store.decide("k", algorithm, now=now).allowed
    else:
        clock = FakeClock(start=now, auto_advance=False)
        store = MemoryStore(clock=clock)
        allow = store.bind_allow((algorithm,))
        assert [allow() for _ in range(burst + 1)] == [True] * burst + [False]
    # A moment later (past the rounded expiry) the key is fresh again, and swept.
    later = now + 1.0
    assert store.decide("other", algorithm, now=later).allowed
    assert store.decide("k", algorithm, 0, now=later).remaining == burst


def test_the_sweep_handles_the_first_key_ever_one_key_and_costs_of_zero() -> None:
    bucket = TokenBucket(1e9, 1.0, burst=3)
    # The first key ever, alone in the queue.
    store = MemoryStore()
    assert store.decide("first", bucket, now=1.7e9).allowed
    assert len(store) == 1
    # One key, over and over, at one instant and later ones.
    for i in range(10):
        store.decide("first", bucket, 1, now=1.7e9 + i * 1e-7)
    assert len(store) <= 1
    # Costs of 0 store nothing and sweep nothing.
    empty = MemoryStore()
    for i in range(5):
        assert empty.decide(f"k{i}", bucket, 0, now=1.7e9).allowed
    assert len(empty) == 0
    # Many keys at one instant: each insertion sweeps two, none is lost.
    many = MemoryStore()
    for i in range(100):
        assert many.decide(f"k{i}", bucket, now=1.7e9).remaining == 2
    assert len(many) == 100
    assert all(many.decide(f"k{i}", bucket, now=1.7e9).remaining == 1 for i in range(100))


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"clock": "x"}, "clock"),
        ({"clock": None}, "clock"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": 5}, "name"),
        ({"name": " memory"}, "name"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        MemoryStore(**kwargs)
    assert info.value.path == path


# -------------------------------------------------------------------- forking


def test_a_child_forked_while_a_thread_holds_the_lock_does_not_hang() -> None:
    store = MemoryStore(clock=FakeClock(start=1.0, auto_advance=False))
    window = FixedWindow(3, 60)
    allow = store.bind_allow((window,))
    assert store.decide("k", window).allowed
    holding = threading.Event()
    done = threading.Event()

    def hold() -> None:
        store._acquire()
        try:
            holding.set()
            done.wait(30)
        finally:
            store._give(True)

    holder = threading.Thread(target=hold)
    holder.start()
    context = multiprocessing.get_context("fork")
    process = None
    try:
        assert holding.wait(5)

        def child() -> None:
            # The holder did not come along; its lock must not stay held here.
            assert store.decide("k", window).remaining == 1
            assert allow("k")
            assert store.decide("k", window, 0).remaining == 0

        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process that has threads: we mean it.
            warnings.simplefilter("ignore", DeprecationWarning)
            process = context.Process(target=child)
            process.start()
        process.join(30)
    finally:
        if process is not None and process.is_alive():
            process.kill()  # a stuck child must fail the test, not hang the run
            process.join(5)
        done.set()
        holder.join()
    assert process.exitcode == 0
    # The parent's own lock was held, then freed, by its own thread only.
    assert store._token == [True]


# ----------------------------------------------------------- boolean deciders

ALGORITHMS = st.one_of(
    st.builds(
        lambda cls, rate, period, burst: cls(rate, period, burst),
        st.sampled_from([TokenBucket, GCRA]),
        st.floats(0.1, 20.0),
        st.floats(0.5, 10.0),
        st.integers(1, 6),
    ),
    st.builds(
        lambda cls, limit, period: cls(limit, period),
        st.sampled_from([FixedWindow, SlidingWindow]),
        st.integers(1, 6),
        st.floats(0.5, 10.0),
    ),
)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.one_of(st.just(0.0), st.floats(0.0, 4.0), st.just(-1.0)),  # -1: time goes back
        st.one_of(st.none(), st.integers(0, 4)),
    ),
    min_size=1,
    max_size=40,
)


class Settable(FakeClock):
    """A clock that a test moves anywhere, backwards too (as clocks of processes disagree)."""

    at = 0.0

    def monotonic(self) -> float:
        return self.at


class Plain:
    """An algorithm of the caller's own, without a boolean twin: asked through decide."""

    def __init__(self, inner: Algorithm) -> None:
        self.inner = inner
        self.name = "plain"
        self.lua = inner.lua
        self.lua_args = inner.lua_args

    def decide(self, state: Any, now: float, cost: int) -> Any:
        assert type(cost) is int  # a twin may get a float cost; decide never does
        return self.inner.decide(state, now, cost)


@settings(max_examples=300, deadline=None)
@given(
    limits=st.lists(ALGORITHMS, min_size=1, max_size=3),
    steps=STEPS,
    start=st.floats(0.0, 2e9),
    plain=st.booleans(),
)
def test_bound_allow_decides_and_keeps_state_exactly_as_decide(
    limits: list[Algorithm], steps: list[Any], start: float, plain: bool
) -> None:
    if plain:
        limits = [Plain(limits[0]), *limits[1:]]  # type: ignore[list-item]
    clock = Settable()
    clock.at = start
    asked = MemoryStore(clock=clock)
    allowing = MemoryStore(clock=clock)
    allow = allowing.bind_allow(limits, prefix="p:", default_key="p:const", default_cost=2)
    slots = slot_names(limits)
    for key, dt, cost in steps:
        clock.at = max(0.0, clock.at + dt)
        stored = "p:const" if key == "a" else "p:" + key
        # One limit decides as decide (which keeps a refused request's refreshed
        # state); several as decide_all (which keeps nothing of a refusal).
        if len(limits) == 1:
            decisions = (asked.decide(stored, limits[0], 2 if cost is None else cost),)
        else:
            decisions = asked.decide_all(stored, limits, 2 if cost is None else cost)
        answer = allow(None if key == "a" else key, cost)
        assert answer is all(d.allowed for d in decisions)
        for limit, slot in zip(limits, slots, strict=True):
            mine = allowing.peek_state(stored, limit, slot)
            theirs = asked.peek_state(stored, limit, slot)
            assert mine == theirs
            assert [type(x) for x in mine or ()] == [type(x) for x in theirs or ()]
    assert len(allowing) == len(asked)


async def test_bound_async_allow_is_the_twin_of_bind_allow() -> None:
    clock = FakeClock(start=5.0, auto_advance=False)
    store = MemoryStore(clock=clock)
    refused: list[str] = []
    for limits in [(FixedWindow(2, 60),), (FixedWindow(2, 60), TokenBucket(5))]:
        store.clear()
        aallow = store.bind_async_allow(limits, on_refused=lambda: refused.append("no"))
        allow = store.bind_allow(limits)
        assert await aallow("k")
        assert allow("k")
        assert not await aallow("k")
        assert not allow("k")  # no hook: nothing recorded
        assert await aallow("other", 2)
    assert refused == ["no", "no"]


def test_bound_allow_checks_its_arguments() -> None:
    store = MemoryStore()
    allow = store.bind_allow((FixedWindow(5, 60),))
    assert allow("k", 0)
    with pytest.raises(ValueError, match="cost"):
        allow("k", -1)
    with pytest.raises(TypeError, match="cost"):
        allow("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        allow(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        store.bind_allow(())
    with pytest.raises(TypeError):
        store.bind_allow((FixedWindow(1),), prefix=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        store.bind_allow((FixedWindow(1),), default_cost=-1)


@pytest.mark.stress
@pytest.mark.parametrize("several", [False, True], ids=["one-limit", "two-limits"])
def test_threads_never_over_admit_through_bound_allow(several: bool) -> None:
    store = MemoryStore()
    limits: tuple[Algorithm, ...] = (TokenBucket(rate=0.001, burst=500),)
    if several:
        limits = (FixedWindow(10_000, 3600), *limits)
    allow = store.bind_allow(limits)
    threads_n, per_thread = 8, 300
    barrier = threading.Barrier(threads_n)
    allowed = [0] * threads_n

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            if allow("shared"):
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 500
    if several:
        assert store.decide_all("shared", limits, 0)[0].remaining == 10_000 - 500


# ------------------------------------------------------------ the LocalStore protocol


def test_a_memory_store_is_a_local_store() -> None:
    assert isinstance(MemoryStore(), LocalStore)
    assert is_local(MemoryStore())
    assert not isinstance(object(), LocalStore)


class Proxy:
    """A wrapper that forwards what it does not define: not local, whatever it forwards."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_forwarding_wrapper_is_not_local() -> None:
    assert not is_local(Proxy())


async def test_a_subclass_overriding_decide_is_asked_by_every_binder() -> None:
    asked: list[str] = []

    class Audited(MemoryStore):
        def decide(
            self, key: str, algorithm: Algorithm, cost: int = 1, now: float | None = None
        ) -> Decision:
            asked.append(f"decide {key}")
            return super().decide(key, algorithm, cost, now)

        def decide_all(
            self,
            key: str,
            algorithms: Sequence[Algorithm],
            cost: int = 1,
            now: float | None = None,
        ) -> tuple[Decision, ...]:
            asked.append(f"decide_all {key}")
            return super().decide_all(key, algorithms, cost, now)

    store = Audited(clock=FakeClock(auto_advance=False))
    one = (FixedWindow(1, 60),)
    two = (FixedWindow(1, 60), TokenBucket(5))
    assert store.bind(one[0])("a", 1, None).allowed
    assert store.bind_all(two)("b", 1, None)[0].allowed
    assert store.bind_allow(one, prefix="x:")("c")
    refused: list[int] = []
    assert not store.bind_allow(one, default_key="x:c", on_refused=lambda: refused.append(1))()
    assert store.bind_allow(two)("d")
    assert await store.bind_async_allow(one)("e")  # adecide calls the overridden decide
    assert await store.bind_async_allow(two)("f")
    assert asked == [
        "decide a",
        "decide_all b",
        "decide x:c",
        "decide x:c",
        "decide_all d",
        "decide e",
        "decide_all f",
    ]
    assert refused == [1]
    # The store's own decide path is not the subclass's business: no recursion.
    assert store.decide("g", one[0]).allowed


@pytest.mark.parametrize(
    "algorithm",
    [TokenBucket(1, 1.0, burst=1), GCRA(1, 1.0, burst=1), SlidingWindow(1, 1.0)],
    ids=["bucket", "gcra", "sliding"],
)
def test_bound_allow_forgives_float_rounding_as_decide_does(algorithm: Algorithm) -> None:
    # One unit short by the last bit: decide admits it (a tolerance of 1e-9 cost),
    # and so must the twin.
    clock = Settable()
    store = MemoryStore(clock=clock)
    allow = store.bind_allow((algorithm,))
    for now in (0.0, 0.9999999999999999, 1.9999999999999998):
        clock.at = now
        assert algorithm.decide(None, now, 1)[1].allowed
        expected = store.decide("asked", algorithm, now=now).allowed
        assert allow("allowed") is expected
    assert expected  # the last one was admitted


@pytest.mark.stress
def test_a_decision_waits_for_the_thread_that_holds_the_lock() -> None:
    store = MemoryStore(clock=FakeClock(auto_advance=False))
    window = FixedWindow(1, 60)
    allow = store.bind_allow((window,))
    answers: list[bool] = []
    store._acquire()  # as a thread preempted mid-decision would
    waiter = threading.Thread(target=lambda: answers.append(allow("k")))
    waiter.start()
    # Past its first yields, into the back-off: it must still be waiting.
    waiter.join(0.2)
    assert waiter.is_alive()
    assert answers == []
    store._give(True)
    waiter.join(5)
    assert answers == [True]
    assert store.decide("k", window, 0).remaining == 0
