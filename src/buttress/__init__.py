"""buttress: resilience and reliable delivery for Python services.

Policies (retry, circuit breaker, timeout, bulkhead, fallback) composed into
pipelines, for sync and asyncio code alike. This module only re-exports; the
logic lives in the submodules.
"""

from __future__ import annotations

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

__version__ = "0.1.0.dev0"

__all__ = [
    "MONOTONIC",
    "BulkheadFull",
    "ButtressError",
    "CallRejected",
    "CircuitOpen",
    "Clock",
    "ConfigError",
    "Event",
    "FakeClock",
    "MonotonicClock",
    "Pipeline",
    "RateLimited",
    "Rejected",
    "RetryExhausted",
    "TimeoutExceeded",
    "is_transient",
    "retry_after_of",
    "subscribe",
]
