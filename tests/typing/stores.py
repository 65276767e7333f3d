"""Type checks: a StoreBase subclass is a Store; the registry takes factories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from buttress.ratelimit import RateLimiter, TokenBucket
from buttress.stores import (
    FallbackStore,
    MemoryStore,
    Store,
    StoreBase,
    register_store_scheme,
    store_from_url,
)
from buttress.stores.base import Algorithm, Decision


class Mine(StoreBase):
    name = "mine"

    def decide_all(
        self, key: str, algorithms: Sequence[Algorithm], cost: int = 1, now: float | None = None
    ) -> tuple[Decision, ...]:
        return tuple(algorithm.decide(None, 0.0, cost)[1] for algorithm in algorithms)

    def reset_all(self, key: str, algorithms: Sequence[Algorithm]) -> None:
        pass


def factory(url: str, **options: Any) -> Store:
    return Mine()


def check() -> None:
    store: Store = Mine()
    decision: Decision = store.decide("k", TokenBucket(1))
    assert decision.allowed
    RateLimiter(TokenBucket(1), store=Mine(), name="typed")
    FallbackStore(Mine(), MemoryStore())
    register_store_scheme("mine", factory)
    also: Store = store_from_url("memory://")
    assert also is not store
