"""Shared circuit-breaker state in Redis: one Lua script per breaker, one round trip per sync.

Each breaker lives under one hash tag, ``{prefix}:{circuit:<name>}:state`` (a hash:
state, epoch, open-until time, open duration, trial-lease holder, window totals)
and ``{prefix}:{circuit:<name>}:window`` (the window's chunks or time buckets), so
both keys sit on one Cluster slot and one script updates them atomically. The
script, ``stores/lua/breaker_sync.lua``, is loaded with ``SCRIPT LOAD`` and called
with ``EVALSHA``; after a ``SCRIPT FLUSH`` or a failover (``NOSCRIPT``) it is loaded
again and the calls repeated. All breakers of one sync go in one pipeline.

Time is the Redis server's (``TIME`` inside the script) so every process agrees on
when an open breaker may be probed; ``time_source="client"`` sends ``clock.time()``
instead (tests drive it with a fake clock). Keys expire ``ttl`` seconds after the
last sync that touched them.

Only this module (and :mod:`buttress.stores.redis`) imports ``redis``; driver errors
are mapped to :class:`~buttress.stores.StoreUnavailable` /
:class:`~buttress.stores.StoreError`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Literal

try:
    import redis  # noqa: F401 - the availability check itself
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "sharing circuit breakers through Redis needs the 'redis' package: "
        "pip install 'buttress[redis]'"
    ) from exc

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores._redis import (
    check_url,
    map_error,
    sync_client_from_url,
)
from buttress.stores.base import StoreError
from buttress.stores.breaker import BreakerConfig, BreakerReply, BreakerReport

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_TTL", "RedisBreakerStore"]

DEFAULT_TIMEOUT = 0.25
"""Socket timeout (seconds) of the client a :class:`RedisBreakerStore` builds from a URL."""

DEFAULT_TTL = 86_400.0
"""Seconds a breaker's keys outlive the last sync that touched them."""

_INF = math.inf
# Key names cached per breaker name; bounded in case names are made per call.
_KEYS_MAX = 4096


def _load_script() -> tuple[str, str]:
    source = resources.files("buttress.stores").joinpath("lua/breaker_sync.lua").read_text("utf-8")
    return hashlib.sha1(source.encode("utf-8")).hexdigest(), source


# Read once, at import. Reading it lazily from the sync thread took the import
# lock there; a process forked while that lock was held gave its child a lock
# that nobody would ever release, and the child's sync thread hung on it.
_SCRIPT = _load_script()


def _script() -> tuple[str, str]:
    """``(sha1, source)`` of the sync script."""
    return _SCRIPT


@cache
def _rules(config: BreakerConfig) -> str:
    # repr() round-trips a float exactly, and Lua's tonumber reads it back.
    return " ".join(repr(value) for value in config)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(reply: Sequence[Any]) -> BreakerReply:
    state, epoch, remaining, open_for, mine, applied, reason, calls, failures, slow, consec = reply
    return BreakerReply(
        _text(state),
        int(epoch),
        _INF if remaining < 0 else remaining / 1e9,
        open_for / 1e9,
        mine == 1,
        applied == 1,
        _text(reason),
        int(calls),
        int(failures),
        int(slow),
        int(consec),
    )


class RedisBreakerStore:
    """Shared circuit-breaker state in Redis (see the module docstring).

    Pass a ``redis.Redis`` client, or build one lazily from a URL with
    :meth:`from_url`. Timeouts and retries of a client you pass in are yours: pick
    a small ``socket_timeout`` so a hung server is noticed quickly (a store built
    from a URL uses :data:`DEFAULT_TIMEOUT` and no client-side retries). The
    client is only used from the thread that syncs.

    - ``prefix``: start of every key (``"buttress"`` gives
      ``buttress:{circuit:payments}:state``).
    - ``time_source``: ``"server"`` (Redis ``TIME``, the default) or ``"client"``
      (``clock.time()``); a ``now`` passed to :meth:`sync` always wins.
    - ``ttl``: seconds the keys of a breaker no process syncs any more are kept.
    """

    __slots__ = (
        "_client",
        "_keys",
        "_owned",
        "_timeout",
        "_url",
        "clock",
        "name",
        "prefix",
        "time_source",
        "ttl",
    )

    def __init__(
        self,
        client: Any = None,
        *,
        prefix: str = "buttress",
        time_source: Literal["server", "client"] = "server",
        ttl: float = DEFAULT_TTL,
        clock: Clock = MONOTONIC,
        name: str = "redis",
    ) -> None:
        if time_source not in ("server", "client"):
            raise ConfigError(
                f"must be 'server' or 'client', got {time_source!r}", path="time_source"
            )
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ConfigError(f"must be a number > 0, got {ttl!r}", path="ttl")
        self._client = client
        self._keys: dict[str, tuple[str, str]] = {}
        self._url: str | None = None
        self._timeout: float | None = None
        self._owned = False
        self.prefix = prefix
        self.time_source = time_source
        self.ttl = float(ttl)
        self.clock = clock
        self.name = name

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        prefix: str = "buttress",
        time_source: Literal["server", "client"] = "server",
        ttl: float = DEFAULT_TTL,
        clock: Clock = MONOTONIC,
        name: str = "redis",
    ) -> RedisBreakerStore:
        """A store whose client is built (lazily, on first use) from a ``redis://`` URL.

        ``timeout`` is the client's socket and connect timeout; it does not retry,
        so a slow or dead server fails the sync fast. :meth:`close` closes it.
        """
        check_url(url)
        store = cls(prefix=prefix, time_source=time_source, ttl=ttl, clock=clock, name=name)
        store._url = url
        store._timeout = timeout
        store._owned = True
        return store

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            if self._url is None:
                raise ConfigError(
                    "this RedisBreakerStore has no client: pass client= or use from_url()",
                    path="client",
                )
            client = self._client = sync_client_from_url(self._url, self._timeout)
        return client

    def keys(self, name: str) -> tuple[str, str]:
        """The Redis keys (state hash, window) of the breaker called ``name``."""
        keys = self._keys.get(name)
        if keys is None:
            tag = f"{self.prefix}:{{circuit:{name}}}"
            keys = (f"{tag}:state", f"{tag}:window")
            if len(self._keys) >= _KEYS_MAX:
                self._keys.clear()
            self._keys[name] = keys
        return keys

    def _args(self, owner: str, report: BreakerReport, tail: str, when: str) -> tuple[Any, ...]:
        state, window = self.keys(report.name)
        numbers = (
            f"{report.epoch} {report.calls} {report.failures} {report.slow} "
            f"{1 if report.had_success else 0} {report.trailing} {1 if report.forced else 0} "
            f"{1 if report.want_trial else 0} {tail}"
        )
        return (
            2,
            state,
            window,
            when,
            owner,
            numbers,
            report.proposal_from,
            report.proposal,
            report.reason,
            _rules(report.config),
        )

    def _error(self, exc: BaseException) -> StoreError:
        return map_error(self.name, exc)

    def sync(
        self,
        owner: str,
        reports: Sequence[BreakerReport],
        lease: float,
        now: float | None = None,
    ) -> list[BreakerReply]:
        """Run the sync script for every report in one pipelined round trip."""
        if not reports:
            return []
        if now is None and self.time_source == "client":
            now = self.clock.time()
        when = "" if now is None else repr(float(now))
        tail = f"{float(lease)!r} {max(1, round(self.ttl * 1000))}"
        calls = [self._args(owner, report, tail, when) for report in reports]
        sha, source = _script()
        client = self._sync_client()
        try:
            pipe = client.pipeline(transaction=False)
            for args in calls:
                pipe.evalsha(sha, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                client.script_load(source)
                pipe = client.pipeline(transaction=False)
                for i in missing:
                    pipe.evalsha(sha, *calls[i])
                for i, reply in zip(missing, pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        except (RedisError, OSError) as exc:
            raise self._error(exc) from exc
        for reply in replies:
            if isinstance(reply, BaseException):
                raise self._error(reply) from reply
        return [_parse(reply) for reply in replies]

    def close(self) -> None:
        """Close the client if this store built it (see :meth:`from_url`)."""
        if self._owned and self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        return f"RedisBreakerStore(name={self.name!r}, prefix={self.prefix!r})"
