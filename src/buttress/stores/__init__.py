"""Stores: where rate-limit state lives, one atomic decision per call.

- :class:`MemoryStore`: this process only; the default.
- :class:`RedisStore`: shared by every process using the server; one Lua script and
  one round trip per decision (needs the ``redis`` extra).
- :class:`FallbackStore`: Redis first, memory while Redis is down, back when it
  recovers; the caller never sees a Redis error.

Build one from a URL with :func:`store_from_url`; add a scheme of your own with
:func:`register_store_scheme`. Stores know no algorithm: they keep an opaque state
per key and run the algorithm given to each call (see :mod:`buttress.stores.base`
for the contract). Several limits on one key are decided together, all or nothing,
by ``decide_all``. A store of your own subclasses :class:`StoreBase`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buttress.stores._local import AllowTwin, LocalStore
from buttress.stores._schemes import (
    StoreFactory,
    register_store_scheme,
    store_from_url,
    store_schemes,
)
from buttress.stores.base import (
    Algorithm,
    Decision,
    MultiRequest,
    Request,
    State,
    Store,
    StoreBase,
    StoreError,
    StoreUnavailable,
)
from buttress.stores.fallback import FallbackStore, StoreFellBack, StoreRecovered
from buttress.stores.memory import MemoryStore

if TYPE_CHECKING:
    from buttress.stores.redis import RedisStore

__all__ = [
    "Algorithm",
    "AllowTwin",
    "Decision",
    "FallbackStore",
    "LocalStore",
    "MemoryStore",
    "MultiRequest",
    "RedisStore",
    "Request",
    "State",
    "Store",
    "StoreBase",
    "StoreError",
    "StoreFactory",
    "StoreFellBack",
    "StoreRecovered",
    "StoreUnavailable",
    "register_store_scheme",
    "store_from_url",
    "store_schemes",
]


def __getattr__(name: str) -> Any:
    # The Redis store imports redis; only load it when asked for.
    if name == "RedisStore":
        from buttress.stores.redis import RedisStore  # noqa: PLC0415 - imports redis

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
