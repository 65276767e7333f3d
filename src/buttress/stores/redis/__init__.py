"""Redis-backed state: the rate-limit store, and the building blocks it shares.

- :class:`RedisStore`: rate-limit decisions, one Lua script and one round trip each.
- :func:`script`, :func:`run_scripts` / :func:`arun_scripts`: Lua scripts (after
  a small prelude of helpers, :data:`PRELUDE`) called in one round trip, reloaded
  after ``NOSCRIPT``, driver errors mapped to :class:`~buttress.stores.StoreError`.
  Every Redis-backed state in buttress (rate limits, shared circuit breakers) goes
  through them.
- :class:`Clients`: a store's redis-py clients — one sync client, and one asyncio
  client per event loop when built from a URL.
- :func:`check_url`: a Redis URL checked without connecting
  (:class:`~buttress.errors.ConfigError` naming what is wrong).

Only this package (and the modules that build on it) imports ``redis``: it needs
``pip install 'buttress[redis]'``.
"""

from __future__ import annotations

try:
    import redis  # noqa: F401 - the availability check itself
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the Redis store needs the 'redis' package: pip install 'buttress[redis]'"
    ) from exc

from ._clients import (
    DEFAULT_TIMEOUT,
    SCHEMES,
    Clients,
    Options,
    check_prefix,
    check_timeout,
    check_url,
    map_error,
)
from ._scripts import PRELUDE, Call, arun_scripts, run_scripts, script
from ._store import RedisStore

__all__ = [
    "DEFAULT_TIMEOUT",
    "PRELUDE",
    "SCHEMES",
    "Call",
    "Clients",
    "Options",
    "RedisStore",
    "arun_scripts",
    "check_prefix",
    "check_timeout",
    "check_url",
    "map_error",
    "run_scripts",
    "script",
]
