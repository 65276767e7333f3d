"""The circuit breaker: stop calling a failing dependency, then probe it back to health.

A folder in the same roles as every policy: ``_options`` (validated settings),
``_window`` (count and time sliding windows), ``_engine`` (the sans-I/O state
machine shared by sync and async calls), ``_events`` (states and events) and
``_policy`` (the drivers: decorator, ``call``/``acall``, pipeline runners,
``with``/``async with``). Sharing a breaker across processes adds ``_shared`` (the
engine's sync bookkeeping, still sans-I/O), ``_shared_policy`` (its drivers),
``_sync`` (:class:`BreakerSync`, the background thread that talks to the store),
``_store`` (the contract with that store: :class:`BreakerStore` and the report and
reply it trades) and ``_redis_store`` with ``lua/breaker_sync.lua`` (the Redis
implementation, :class:`RedisBreakerStore`, the only module here importing redis).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._events import CircuitState, CircuitStateChanged
from ._options import CircuitOptions, ExceptionFilter
from ._policy import CircuitBreaker
from ._store import BreakerConfig, BreakerReply, BreakerReport, BreakerStore
from ._sync import BreakerSync
from ._window import CircuitMetrics

if TYPE_CHECKING:
    from ._redis_store import RedisBreakerStore

__all__ = [
    "BreakerConfig",
    "BreakerReply",
    "BreakerReport",
    "BreakerStore",
    "BreakerSync",
    "CircuitBreaker",
    "CircuitMetrics",
    "CircuitOptions",
    "CircuitState",
    "CircuitStateChanged",
    "ExceptionFilter",
    "RedisBreakerStore",
]


def __getattr__(name: str) -> Any:
    if name == "RedisBreakerStore":  # it imports redis: loaded only when asked for
        return import_module("._redis_store", __name__).RedisBreakerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
