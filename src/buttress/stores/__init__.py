"""Stores: where rate-limit state lives, one atomic decision per call.

- :class:`MemoryStore`: this process only; the default.
- :class:`RedisStore`: shared by every process using the server; one Lua script and
  one round trip per decision (needs the ``redis`` extra).
- :class:`FallbackStore`: Redis first, memory while Redis is down, back when it
  recovers; the caller never sees a Redis error.

Build one from a URL with :func:`store_from_url`. Stores know no algorithm: they
keep an opaque state per key and run the algorithm given to each call (see
:mod:`buttress.stores.base` for the contract). Several limits on one key are
decided together, all or nothing, by ``decide_all``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores._local import AllowTwin, LocalStore
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    State,
    Store,
    StoreError,
    StoreUnavailable,
)
from buttress.stores.breaker import BreakerConfig, BreakerReply, BreakerReport, BreakerStore
from buttress.stores.fallback import FallbackStore, StoreFellBack, StoreRecovered
from buttress.stores.memory import MemoryStore

if TYPE_CHECKING:
    from buttress.stores.breaker_redis import RedisBreakerStore
    from buttress.stores.redis import RedisStore

__all__ = [
    "Algorithm",
    "AllowTwin",
    "BreakerConfig",
    "BreakerReply",
    "BreakerReport",
    "BreakerStore",
    "Decision",
    "FallbackStore",
    "LocalStore",
    "MemoryStore",
    "MultiRequest",
    "RedisBreakerStore",
    "RedisStore",
    "Request",
    "State",
    "Store",
    "StoreError",
    "StoreFellBack",
    "StoreRecovered",
    "StoreUnavailable",
    "store_from_url",
]


def __getattr__(name: str) -> Any:
    # The Redis store imports redis; only load it when asked for.
    if name == "RedisStore":
        from buttress.stores.redis import RedisStore  # noqa: PLC0415 - imports redis

        return RedisStore
    if name == "RedisBreakerStore":
        from buttress.stores.breaker_redis import RedisBreakerStore  # noqa: PLC0415

        return RedisBreakerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def store_from_url(
    url: str,
    *,
    fallback: bool = False,
    probe_interval: float = 5.0,
    timeout: float | None = 0.25,
    prefix: str = "buttress",
    time_source: Literal["server", "client"] = "server",
    clock: Clock = MONOTONIC,
) -> Store:
    """A store from a URL: ``memory://`` or ``redis://host:port/db`` (``rediss://``, ``unix://``).

    With ``fallback=True`` a Redis store is wrapped in a :class:`FallbackStore` that
    answers from memory while Redis is down and probes it every ``probe_interval``
    seconds. ``timeout`` is the Redis clients' socket timeout: how long a slow
    Redis may take before the fallback takes over. The other options go to
    :class:`RedisStore`.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"expected a URL like memory:// or redis://host, got {url!r}", path="url")
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryStore(clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        from buttress.stores.redis import RedisStore  # noqa: PLC0415 - imports redis

        store: Store = RedisStore.from_url(
            url, timeout=timeout, prefix=prefix, time_source=time_source, clock=clock
        )
        if fallback:
            store = FallbackStore(store, probe_interval=probe_interval, clock=clock)
        return store
    raise ConfigError(f"unknown store scheme {scheme!r} (use memory:// or redis://)", path="url")
