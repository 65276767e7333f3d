"""Stores built from URLs: a registry of schemes, each with the factory of its store.

``memory://`` and the Redis family (``redis://``, ``rediss://``, ``unix://``,
``valkey://``, ``valkeys://``) are registered here; :func:`register_store_scheme`
adds a backend of your own. A factory imports its driver only when called, so
registering costs nothing and ``import buttress`` imports no driver.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, TypeAlias

from buttress._validate import (
    check_callable,
    check_choice,
    check_clock,
    check_seconds,
    optional_seconds,
)
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores.base import Store
from buttress.stores.fallback import FallbackStore
from buttress.stores.memory import MemoryStore

__all__ = ["StoreFactory", "register_store_scheme", "store_from_url"]

StoreFactory: TypeAlias = Callable[..., Store]
"""``factory(url, *, timeout, prefix, time_source, clock) -> Store``.

Called with the whole URL and the options of :func:`store_from_url`; a factory
takes the ones it needs and ignores the rest (``**options``). It checks the URL
without connecting and raises :class:`~buttress.errors.ConfigError` for a bad one.
"""

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_factories: dict[str, StoreFactory] = {}
_lock = threading.Lock()


def register_store_scheme(scheme: str, factory: StoreFactory) -> None:
    """Build the stores of ``<scheme>://...`` URLs with ``factory`` (see :data:`StoreFactory`).

    :func:`store_from_url` (and so ``RateLimiter(store="<scheme>://...")``) then
    accepts them. Registering a scheme again replaces its factory.
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise ConfigError(
            f"must be a URL scheme: a lower-case letter, then letters, digits, '+', '-' or "
            f"'.', got {scheme!r}",
            path="scheme",
        )
    check_callable(factory, "factory", "a callable returning a Store")
    with _lock:
        _factories[scheme] = factory


def store_schemes() -> list[str]:
    """The schemes :func:`store_from_url` accepts, sorted."""
    return sorted(_factories)


def store_from_url(
    url: str,
    *,
    fallback: bool = False,
    probe_interval: float | timedelta = 5.0,
    timeout: float | timedelta | None = 0.25,
    prefix: str = "buttress",
    time_source: Literal["server", "client"] = "server",
    clock: Clock = MONOTONIC,
) -> Store:
    """A store from a URL: ``memory://``, ``redis://host:6379/0``, or a registered scheme.

    Built in: ``memory://``; ``redis://``, ``rediss://`` (TLS), ``unix://`` and
    ``valkey://`` / ``valkeys://`` for :class:`~buttress.stores.RedisStore`. A URL
    is checked now, without connecting: a malformed one raises
    :class:`~buttress.errors.ConfigError` at ``url``.

    With ``fallback=True`` a shared store is wrapped in a
    :class:`~buttress.stores.FallbackStore` that answers from memory while it is
    down and probes it every ``probe_interval`` seconds (``memory://`` needs no
    fallback and is returned as it is). ``timeout`` is the Redis clients' socket
    timeout: how long a slow Redis may take before the fallback takes over. The
    other options go to the store's factory.
    """
    if not isinstance(url, str):
        raise ConfigError(
            f"expected a URL such as memory:// or redis://host, got {url!r}", path="url"
        )
    scheme, sep, _ = url.partition("://")
    factory = _factories.get(scheme.lower()) if sep else None
    if factory is None:
        raise ConfigError(
            f"unknown store URL {url!r}: registered schemes are "
            f"{', '.join(f'{name}://' for name in store_schemes())} "
            "(add one with register_store_scheme)",
            path="url",
        )
    if not isinstance(fallback, bool):
        raise ConfigError(f"must be True or False, got {fallback!r}", path="fallback")
    probe = check_seconds(probe_interval, "probe_interval")
    clock = check_clock(clock)
    store = factory(
        url,
        timeout=optional_seconds(timeout, "timeout", positive=True),
        prefix=prefix,
        time_source=check_choice(time_source, "time_source", ("server", "client")),
        clock=clock,
    )
    if not isinstance(store, Store):
        raise ConfigError(
            f"the factory of {scheme}:// returned {store!r}, which is not a Store", path="url"
        )
    if fallback and scheme.lower() != "memory":
        return FallbackStore(store, probe_interval=probe, clock=clock)
    return store


def _memory(url: str, *, clock: Clock = MONOTONIC, **_: Any) -> Store:
    if url.partition("://")[2]:
        raise ConfigError(f"memory:// takes no host, path or options, got {url!r}", path="url")
    return MemoryStore(clock=clock)


def _redis(url: str, **options: Any) -> Store:
    from buttress.stores.redis import RedisStore  # noqa: PLC0415 - imports redis

    return RedisStore.from_url(url, **options)


register_store_scheme("memory", _memory)
for _scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
    register_store_scheme(_scheme, _redis)
