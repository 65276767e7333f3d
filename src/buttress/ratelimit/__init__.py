"""Rate limiting: sans-I/O algorithms and the decisions they make.

The algorithms — :class:`TokenBucket`, :class:`GCRA`, :class:`SlidingWindow`,
:class:`FixedWindow` — are frozen configurations with a pure
``decide(state, now, cost) -> (new_state, Decision)``. A store
(:mod:`buttress.stores`) keeps each key's state and makes one decision atomic::

    from buttress.ratelimit import TokenBucket
    from buttress.stores import MemoryStore

    store = MemoryStore()
    decision = store.decide("user:42", TokenBucket(rate=10, period=1.0))
    if not decision.allowed:
        print(f"retry in {decision.retry_after:.2f}s")
"""

from __future__ import annotations

from buttress.ratelimit._algorithms import GCRA, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores.base import Algorithm, Decision, State

__all__ = [
    "GCRA",
    "Algorithm",
    "Decision",
    "FixedWindow",
    "SlidingWindow",
    "State",
    "TokenBucket",
]
