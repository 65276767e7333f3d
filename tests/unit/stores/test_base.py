"""StoreBase: a store of one's own implements a small core and inherits the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from buttress.clock import FakeClock
from buttress.ratelimit import GCRA, Decision, FixedWindow, RateLimiter, TokenBucket
from buttress.stores import FallbackStore, MemoryStore, Store, StoreBase
from buttress.stores.base import Algorithm, State, slot_names, validate_cost


class DictStore(StoreBase):
    """The smallest store: a dict of states, no expiry, no lock (one thread)."""

    name = "dict"

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], State] = {}
        self.closed = 0

    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        cost = validate_cost(cost)
        when = 0.0 if now is None else now
        slots = [(key, slot) for slot in slot_names(algorithms)]
        outcomes = [
            algorithm.decide(self.states.get(slot), when, cost)
            for algorithm, slot in zip(algorithms, slots, strict=True)
        ]
        if all(decision.allowed for _, decision in outcomes):
            for slot, (state, _) in zip(slots, outcomes, strict=True):
                self.states[slot] = state
            return tuple(decision for _, decision in outcomes)
        return tuple(
            algorithm.decide(self.states.get(slot), when, 0)[1] if decision.allowed else decision
            for algorithm, slot, (_, decision) in zip(algorithms, slots, outcomes, strict=True)
        )

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        for slot in slot_names(algorithms):
            self.states.pop((key, slot), None)

    def close(self) -> None:
        self.closed += 1


BUCKET = TokenBucket(2, 1.0, burst=3)
LIMITS = (TokenBucket(2, 1.0, burst=3), FixedWindow(4, 10.0))


def test_the_core_is_enough_to_be_a_store() -> None:
    store = DictStore()
    assert isinstance(store, Store)
    assert isinstance(FallbackStore(store), Store)


def test_the_core_is_required() -> None:
    class Half(StoreBase):
        def decide_all(
            self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
        ) -> tuple[Decision, ...]:
            return ()

    with pytest.raises(TypeError, match="reset_all"):
        Half()  # type: ignore[abstract]


def test_the_defaults_decide_as_the_memory_store_does() -> None:
    ours, memory = DictStore(), MemoryStore(clock=FakeClock())
    for store in (ours, memory):
        store.decide("a", BUCKET, now=1.0)
        store.decide_many([("a", BUCKET, 1), ("b", BUCKET, 2)], now=1.0)
        store.decide_all("c", LIMITS, 2, now=1.0)
        store.decide_all_many([("c", LIMITS, 1), ("c", LIMITS, 1)], now=1.5)
    for key, when in (("a", 1.2), ("b", 1.2)):
        assert ours.decide(key, BUCKET, 0, when) == memory.decide(key, BUCKET, 0, when)
    assert ours.decide_all("c", LIMITS, 1, 2.0) == memory.decide_all("c", LIMITS, 1, 2.0)
    # A single limit lives in the same slot as the first limit of its kind.
    assert ours.decide("c", LIMITS[0], 0, 2.0) == memory.decide("c", LIMITS[0], 0, 2.0)
    ours.reset("a", BUCKET)
    ours.reset_all("c", LIMITS)
    assert set(ours.states) == {("b", "tb")}


def test_the_async_defaults_call_the_core() -> None:
    store = DictStore()

    async def main() -> list[object]:
        return [
            await store.adecide("k", BUCKET, now=0.0),
            await store.adecide_many([("k", BUCKET, 1)], now=0.0),
            await store.adecide_all("j", LIMITS, now=0.0),
            await store.adecide_all_many([("j", LIMITS, 1)], now=0.0),
            await store.areset("k", BUCKET),
            await store.areset_all("j", LIMITS),
            await store.aclose(),
        ]

    one, many, both, batch, *_ = asyncio.run(main())
    assert one == Decision(True, 3, 2, 0.5, 0.0)
    assert many == [Decision(True, 3, 1, 1.0, 0.0)]
    assert [d.remaining for d in both] == [2, 3]  # type: ignore[attr-defined]
    assert [d.remaining for d in batch[0]] == [1, 2]  # type: ignore[index]
    assert store.states == {}
    assert store.closed == 1  # aclose() calls close()


def test_a_limiter_and_a_fallback_take_a_store_of_ones_own() -> None:
    store = DictStore()
    limiter = RateLimiter(GCRA(1, 60.0, burst=2), store=store, name="mine")
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    assert asyncio.run(limiter.ahit("j")).allowed
    fallback = FallbackStore(store, probe_interval=1.0)
    assert not fallback.decide("mine:k", GCRA(1, 60.0, burst=2)).allowed  # the same state
    fallback.close()
    assert store.closed == 1
