"""Shared circuit-breaker state in Redis: one Lua script per breaker, one round trip per sync.

Each breaker lives under one hash tag, ``{prefix}:{circuit:<name>}:state`` (a hash:
state, epoch, open-until time, open duration, trial-lease holder, window totals)
and ``{prefix}:{circuit:<name>}:window`` (the window's chunks or time buckets), so
both keys sit on one Cluster slot and one script updates them atomically. The
script, ``policies/circuit/lua/breaker_exchange.lua``, runs through
:func:`buttress.stores.redis.run_scripts`, as the rate-limit store's do: all
breakers of one sync in one round trip, reloaded after a ``NOSCRIPT``.

Time is the Redis server's (``TIME`` inside the script) so every process agrees on
when an open breaker may be probed; ``time_source="client"`` sends ``clock.time()``
instead (tests drive it with a fake clock). Keys expire ``ttl`` seconds after the
last sync that touched them.

Only this module (and :mod:`buttress.stores.redis`) imports ``redis``; driver errors
are mapped to :class:`~buttress.stores.StoreUnavailable` /
:class:`~buttress.stores.StoreError`. The client is used from the syncing thread
only, so there is no asyncio side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal

try:
    import redis  # noqa: F401 - the availability check itself
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "sharing circuit breakers through Redis needs the 'redis' package: "
        "pip install 'buttress[redis]'"
    ) from exc

from buttress._validate import check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.stores.redis import Clients, Options, run_scripts, script

from ._store import BreakerConfig, BreakerReply, BreakerReport

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_TTL", "RedisBreakerStore"]

DEFAULT_TIMEOUT = 0.25
"""Socket timeout (seconds) of the client a :class:`RedisBreakerStore` builds from a URL."""

DEFAULT_TTL = 86_400.0
"""Seconds a breaker's keys outlive the last sync that touched them."""

_INF = math.inf
# Key names cached per breaker name; bounded in case names are made per call.
_KEYS_MAX = 4096


# Read once, at import. Reading it lazily from the sync thread took the import
# lock there; a process forked while that lock was held gave its child a lock
# that nobody would ever release, and the child's sync thread hung on it.
_SHA, _SOURCE = script(
    resources.files("buttress.policies.circuit")
    .joinpath("lua/breaker_exchange.lua")
    .read_text("utf-8")
)


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
    - ``ttl``: seconds (or a ``timedelta``) the keys of a breaker no process syncs
      any more are kept.
    """

    __slots__ = ("_clients", "_keys", "clock", "name", "prefix", "time_source", "ttl")

    def __init__(
        self,
        client: Any = None,
        *,
        prefix: str = "buttress",
        time_source: Literal["server", "client"] = "server",
        ttl: float | timedelta = DEFAULT_TTL,
        clock: Clock = MONOTONIC,
        name: str = "redis",
    ) -> None:
        if client is None or not callable(getattr(client, "pipeline", None)):
            raise ConfigError(
                f"expected a redis.Redis (or use RedisBreakerStore.from_url), got {client!r}",
                path="client",
            )
        options = Options.check(prefix, time_source, clock, name)
        self._setup(Clients(client=client), options, ttl)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: float | timedelta = DEFAULT_TTL,
        prefix: str = "buttress",
        timeout: float | timedelta | None = DEFAULT_TIMEOUT,
        time_source: Literal["server", "client"] = "server",
        clock: Clock = MONOTONIC,
        name: str = "redis",
    ) -> RedisBreakerStore:
        """A store whose client is built (lazily, on first use) from a Redis URL.

        The URL is checked now, without connecting (see
        :func:`buttress.stores.redis.check_url`). ``timeout`` is the client's socket
        and connect timeout; it does not retry, so a slow or dead server fails the
        sync fast. :meth:`close` closes it.
        """
        options = Options.check(prefix, time_source, clock, name)
        store = cls.__new__(cls)
        store._setup(Clients.from_url(url, timeout), options, ttl)
        return store

    def _setup(self, clients: Clients, options: Options, ttl: object) -> None:
        self._clients = clients
        self._keys: dict[str, tuple[str, str]] = {}
        self.prefix, self.time_source, self.clock, self.name = options
        self.ttl = check_seconds(ttl, "ttl", positive=True)

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

    def exchange(
        self, owner: str, reports: Sequence[BreakerReport], lease: float, now: float | None = None
    ) -> list[BreakerReply]:
        """Run the exchange script for every report in one round trip."""
        if not reports:
            return []
        if now is None and self.time_source == "client":
            now = self.clock.time()
        when = "" if now is None else repr(float(now))
        tail = f"{float(lease)!r} {max(1, round(self.ttl * 1000))}"
        calls = [(_SHA, _SOURCE, self._args(owner, report, tail, when)) for report in reports]
        return [_parse(reply) for reply in run_scripts(self._clients.sync(), calls, self.name)]

    def close(self) -> None:
        """Close the client if this store built it (see :meth:`from_url`)."""
        self._clients.close()

    def __repr__(self) -> str:
        return f"RedisBreakerStore(name={self.name!r}, prefix={self.prefix!r})"
