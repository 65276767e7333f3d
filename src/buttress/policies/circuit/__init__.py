"""The circuit breaker: stop calling a failing dependency, then probe it back to health.

A folder in the same roles as every policy: ``_options`` (validated settings),
``_window`` (count and time sliding windows), ``_engine`` (the sans-I/O state
machine shared by sync and async calls), ``_events`` (states and events) and
``_policy`` (the drivers, generated from one template: decorator,
``call``/``acall``, pipeline runners; and ``with``/``async with``). Sharing a
breaker across processes adds ``_shared`` (the engine's bookkeeping for the
exchanges, still sans-I/O), ``_hub`` (:class:`BreakerHub`, the background thread
that exchanges state with the store), ``_store`` (the contract with that store:
:class:`BreakerStore` and the report and reply it trades) and ``_redis_store`` with
``lua/breaker_exchange.lua`` (the Redis implementation, :class:`RedisBreakerStore`, the
only module here importing redis).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._events import CircuitState, CircuitStateChanged
from ._options import CircuitOptions, ExceptionFilter
from ._policy import CircuitBreaker
from ._window import CircuitMetrics

if TYPE_CHECKING:
    from ._hub import BreakerHub, BreakerSync
    from ._redis_store import RedisBreakerStore
    from ._store import BreakerConfig, BreakerReply, BreakerReport, BreakerStore

# Sharing breakers across processes is loaded when first asked for: a local breaker
# never needs the hub's thread machinery, the stores or redis.
_LAZY = {
    "BreakerHub": "._hub",
    "BreakerSync": "._hub",
    "RedisBreakerStore": "._redis_store",
    "BreakerConfig": "._store",
    "BreakerReply": "._store",
    "BreakerReport": "._store",
    "BreakerStore": "._store",
}

__all__ = [
    "BreakerConfig",
    "BreakerHub",
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
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value
