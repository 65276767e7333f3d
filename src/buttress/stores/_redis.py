"""What every Redis-backed store shares: URL checks, clients built from a URL, and
the mapping of redis-py's errors to buttress's.

Private, and imported only by modules that have already imported redis behind their
own ``ImportError`` guard (each names the feature that needs the extra).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as _AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import TimeoutError as _RedisTimeoutError
from redis.retry import Retry as _Retry

from buttress.errors import ConfigError
from buttress.stores.base import StoreError, StoreUnavailable

__all__ = ["UNAVAILABLE", "async_client_from_url", "check_url", "map_error", "sync_client_from_url"]

UNAVAILABLE = (_RedisConnectionError, _RedisTimeoutError, ConnectionError, TimeoutError, OSError)
"""Errors that mean the server could not be reached or did not answer in time."""

_SCHEMES = ("redis://", "rediss://", "unix://")


def check_url(url: object) -> str:
    """``url`` if it is a Redis URL, else :class:`ConfigError` at ``url``."""
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise ConfigError(f"expected a redis:// URL, got {url!r}", path="url")
    return url


def sync_client_from_url(url: str, timeout: float | None) -> Any:
    """A ``redis.Redis`` that fails fast: ``timeout`` for sockets, no client retries.

    redis-py would otherwise retry with backoff, stalling a fallback or a breaker
    sync for seconds while the server is away.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_Retry(NoBackoff(), 0),
    )


def async_client_from_url(url: str, timeout: float | None) -> Any:
    """The asyncio twin of :func:`sync_client_from_url`."""
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_AsyncRetry(NoBackoff(), 0),
    )


def map_error(store: str, exc: BaseException) -> StoreError:
    """The buttress error for a redis-py failure of ``store`` (raise it ``from exc``)."""
    if isinstance(exc, UNAVAILABLE):
        return StoreUnavailable(store, f"Redis is unavailable: {exc}")
    return StoreError(store, f"Redis failed: {exc}")
