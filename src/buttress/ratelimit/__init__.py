"""Rate limiting: the :class:`RateLimiter` policy, sans-I/O algorithms, their decisions.

:class:`RateLimiter` applies one or more limits per key, atomically, from memory or
Redis (see ``docs/rate-limiting.md``)::

    from buttress.ratelimit import RateLimiter, TokenBucket

    limiter = RateLimiter(TokenBucket(10, 1.0), name="api")
    if not limiter.hit("user:42").allowed:
        ...

Underneath, the algorithms — :class:`TokenBucket`, :class:`GCRA`, :class:`SlidingWindow`,
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
from buttress.ratelimit._options import RateLimiterOptions
from buttress.ratelimit._rates import RATE_ALGORITHMS, parse_rates
from buttress.ratelimit.limiter import RateLimiter, RateLimitResult
from buttress.stores.base import Algorithm, Decision, State

__all__ = [
    "GCRA",
    "RATE_ALGORITHMS",
    "Algorithm",
    "Decision",
    "FixedWindow",
    "RateLimitResult",
    "RateLimiter",
    "RateLimiterOptions",
    "SlidingWindow",
    "State",
    "TokenBucket",
    "parse_rates",
]
