"""buttress: resilience and reliable delivery for Python services.

Policies (retry, circuit breaker, timeout, bulkhead, fallback, rate limiter)
composed into pipelines, for sync and asyncio code alike. This module only
re-exports; the logic lives in the submodules.
"""

from __future__ import annotations

from buttress._outcome import PROGRAMMING_ERRORS, Matcher, Outcome
from buttress._strategy import Call, Policy, UseAcall
from buttress.clock import MONOTONIC, Clock, FakeClock, MonotonicClock
from buttress.errors import (
    BulkheadFull,
    ButtressError,
    CircuitOpen,
    ConfigError,
    RateLimited,
    Rejected,
    RetryExhausted,
    TimeoutExceeded,
    is_transient,
    retry_after_of,
)
from buttress.events import CallRejected, Event, subscribe
from buttress.pipeline import Pipeline
from buttress.policies.backoff import (
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Fibonacci,
    Linear,
)
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import (
    BreakerSync,
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
)
from buttress.policies.fallback import Fallback, FallbackUsed
from buttress.policies.retry import Retry, RetryGaveUp, RetryRecovered, RetryScheduled
from buttress.policies.timeout import Timeout, TimeoutOccurred, remaining
from buttress.ratelimit import (
    GCRA,
    Decision,
    FixedWindow,
    RateLimiter,
    RateLimitResult,
    SlidingWindow,
    TokenBucket,
)
from buttress.registry import Registry
from buttress.stores import (
    FallbackStore,
    MemoryStore,
    StoreError,
    StoreFellBack,
    StoreRecovered,
    StoreUnavailable,
    store_from_url,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "GCRA",
    "MONOTONIC",
    "PROGRAMMING_ERRORS",
    "Backoff",
    "BreakerSync",
    "Bulkhead",
    "BulkheadFull",
    "ButtressError",
    "Call",
    "CallRejected",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "CircuitStateChanged",
    "Clock",
    "ConfigError",
    "Constant",
    "Decision",
    "DecorrelatedJitter",
    "Event",
    "Exponential",
    "FakeClock",
    "Fallback",
    "FallbackStore",
    "FallbackUsed",
    "Fibonacci",
    "FixedWindow",
    "Linear",
    "Matcher",
    "MemoryStore",
    "MonotonicClock",
    "Outcome",
    "Pipeline",
    "Policy",
    "RateLimitResult",
    "RateLimited",
    "RateLimiter",
    "Registry",
    "Rejected",
    "Retry",
    "RetryExhausted",
    "RetryGaveUp",
    "RetryRecovered",
    "RetryScheduled",
    "SlidingWindow",
    "StoreError",
    "StoreFellBack",
    "StoreRecovered",
    "StoreUnavailable",
    "Timeout",
    "TimeoutExceeded",
    "TimeoutOccurred",
    "TokenBucket",
    "UseAcall",
    "is_transient",
    "remaining",
    "retry_after_of",
    "store_from_url",
    "subscribe",
]
