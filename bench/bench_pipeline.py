"""A full pipeline, Timeout + Retry + CircuitBreaker + Bulkhead, on the happy path:
buttress vs pyresilience's all-in-one decorator, sync and async."""

from __future__ import annotations

import sys
from typing import Any

from buttress import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout

from _common import awork, baseline, work
from _harness import Case, check_works, main

SYNC = "Timeout+Retry+CircuitBreaker+Bulkhead (sync, optimistic timeout)"
ASYNC = "Timeout+Retry+CircuitBreaker+Bulkhead (async, cancelling timeout)"
ASYNC_NT = "Retry+CircuitBreaker+Bulkhead (async, no timeout)"


def full() -> Pipeline:
    return Pipeline(Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10))


def no_timeout() -> Pipeline:
    return Pipeline(Retry(), CircuitBreaker(), Bulkhead(10))


def pyresilience_full(fn: Any, *, timeout: bool = True) -> Any:
    from pyresilience import (
        BulkheadConfig,
        CircuitBreakerConfig,
        RetryConfig,
        TimeoutConfig,
        resilient,
    )

    return resilient(
        retry=RetryConfig(max_attempts=3),
        timeout=TimeoutConfig(seconds=2.0) if timeout else None,
        circuit_breaker=CircuitBreakerConfig(),
        bulkhead=BulkheadConfig(max_concurrent=10),
    )(fn)


CASES = [
    *baseline(SYNC),
    Case(SYNC, "buttress", lambda: full()(work), target_ns=1000),
    Case(
        SYNC,
        "pyresilience",
        lambda: pyresilience_full(work),
        peer=True,
        note="timeout runs the call on a thread pool",
    ),
    *baseline(ASYNC, is_async=True),
    Case(ASYNC, "buttress", lambda: full()(awork), is_async=True, target_ns=3000),
    Case(ASYNC, "pyresilience", lambda: pyresilience_full(awork), is_async=True, peer=True),
    *baseline(ASYNC_NT, is_async=True),
    Case(ASYNC_NT, "buttress", lambda: no_timeout()(awork), is_async=True, target_ns=1200),
    Case(
        ASYNC_NT,
        "pyresilience",
        lambda: pyresilience_full(awork, timeout=False),
        is_async=True,
        peer=True,
    ),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)
