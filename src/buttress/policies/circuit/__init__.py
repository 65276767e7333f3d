"""The circuit breaker: stop calling a failing dependency, then probe it back to health.

A folder in the same roles as every policy: ``_options`` (validated settings),
``_window`` (count and time sliding windows), ``_engine`` (the sans-I/O state
machine shared by sync and async calls), ``_events`` (states and events) and
``_policy`` (the drivers: decorator, ``call``/``acall``, pipeline runners,
``with``/``async with``). Sharing a breaker across processes adds ``_shared`` (the
engine's sync bookkeeping, still sans-I/O), ``_shared_policy`` (its drivers) and
``_sync`` (:class:`BreakerSync`, the background thread that talks to Redis).
"""

from __future__ import annotations

from ._events import CircuitState, CircuitStateChanged
from ._options import CircuitOptions, ExceptionFilter
from ._policy import CircuitBreaker
from ._sync import BreakerSync
from ._window import CircuitMetrics

__all__ = [
    "BreakerSync",
    "CircuitBreaker",
    "CircuitMetrics",
    "CircuitOptions",
    "CircuitState",
    "CircuitStateChanged",
    "ExceptionFilter",
]
