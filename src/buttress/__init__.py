"""buttress: resilience and reliable delivery for Python services.

Policies (retry, circuit breaker, timeout, bulkhead, fallback, rate limiter)
composed into pipelines, for sync and asyncio code alike. This module only
re-exports; the logic lives in the submodules.

The names are imported on first use (PEP 562), so ``import buttress`` costs almost
nothing and a program pays only for the parts it uses: a sync program never
imports asyncio, one without rate limits never loads the limiter.
"""

from __future__ import annotations

# Not "from typing import TYPE_CHECKING": importing typing would cost more than the
# whole façade; type checkers know the name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
        StoreError,
        StoreUnavailable,
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
    from buttress.policies.budget import (
        BurnAlert,
        Condition,
        Degradation,
        DegradationChanged,
        ErrorBudget,
        LatencyBudget,
    )
    from buttress.policies.bulkhead import Bulkhead
    from buttress.policies.circuit import (
        BreakerHub,
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
        StoreFellBack,
        StoreRecovered,
        store_from_url,
    )

__version__ = "0.1.0.dev0"

__all__ = [
    "GCRA",
    "MONOTONIC",
    "PROGRAMMING_ERRORS",
    "Backoff",
    "BreakerHub",
    "BreakerSync",
    "Bulkhead",
    "BulkheadFull",
    "BurnAlert",
    "ButtressError",
    "Call",
    "CallRejected",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "CircuitStateChanged",
    "Clock",
    "Condition",
    "ConfigError",
    "Constant",
    "Decision",
    "DecorrelatedJitter",
    "Degradation",
    "DegradationChanged",
    "ErrorBudget",
    "Event",
    "Exponential",
    "FakeClock",
    "Fallback",
    "FallbackStore",
    "FallbackUsed",
    "Fibonacci",
    "FixedWindow",
    "LatencyBudget",
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


# Where each public name lives; imported on first access.
_HOMES: dict[str, str] = {
    "Backoff": "buttress.policies.backoff",
    "BreakerHub": "buttress.policies.circuit",
    "BreakerSync": "buttress.policies.circuit",
    "Bulkhead": "buttress.policies.bulkhead",
    "BulkheadFull": "buttress.errors",
    "BurnAlert": "buttress.policies.budget",
    "ButtressError": "buttress.errors",
    "Call": "buttress._strategy",
    "CallRejected": "buttress.events",
    "CircuitBreaker": "buttress.policies.circuit",
    "CircuitOpen": "buttress.errors",
    "CircuitState": "buttress.policies.circuit",
    "CircuitStateChanged": "buttress.policies.circuit",
    "Clock": "buttress.clock",
    "Condition": "buttress.policies.budget",
    "ConfigError": "buttress.errors",
    "Constant": "buttress.policies.backoff",
    "Decision": "buttress.ratelimit",
    "DecorrelatedJitter": "buttress.policies.backoff",
    "Degradation": "buttress.policies.budget",
    "DegradationChanged": "buttress.policies.budget",
    "ErrorBudget": "buttress.policies.budget",
    "Event": "buttress.events",
    "Exponential": "buttress.policies.backoff",
    "FakeClock": "buttress.clock",
    "Fallback": "buttress.policies.fallback",
    "FallbackStore": "buttress.stores",
    "FallbackUsed": "buttress.policies.fallback",
    "Fibonacci": "buttress.policies.backoff",
    "FixedWindow": "buttress.ratelimit",
    "GCRA": "buttress.ratelimit",
    "LatencyBudget": "buttress.policies.budget",
    "Linear": "buttress.policies.backoff",
    "MONOTONIC": "buttress.clock",
    "Matcher": "buttress._outcome",
    "MemoryStore": "buttress.stores",
    "MonotonicClock": "buttress.clock",
    "Outcome": "buttress._outcome",
    "PROGRAMMING_ERRORS": "buttress._outcome",
    "Pipeline": "buttress.pipeline",
    "Policy": "buttress._strategy",
    "RateLimitResult": "buttress.ratelimit",
    "RateLimited": "buttress.errors",
    "RateLimiter": "buttress.ratelimit",
    "Registry": "buttress.registry",
    "Rejected": "buttress.errors",
    "Retry": "buttress.policies.retry",
    "RetryExhausted": "buttress.errors",
    "RetryGaveUp": "buttress.policies.retry",
    "RetryRecovered": "buttress.policies.retry",
    "RetryScheduled": "buttress.policies.retry",
    "SlidingWindow": "buttress.ratelimit",
    "StoreError": "buttress.errors",
    "StoreFellBack": "buttress.stores",
    "StoreRecovered": "buttress.stores",
    "StoreUnavailable": "buttress.errors",
    "Timeout": "buttress.policies.timeout",
    "TimeoutExceeded": "buttress.errors",
    "TimeoutOccurred": "buttress.policies.timeout",
    "TokenBucket": "buttress.ratelimit",
    "UseAcall": "buttress._strategy",
    "is_transient": "buttress.errors",
    "remaining": "buttress.policies.timeout",
    "retry_after_of": "buttress.errors",
    "store_from_url": "buttress.stores",
    "subscribe": "buttress.events",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - the façade stays import-free

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
