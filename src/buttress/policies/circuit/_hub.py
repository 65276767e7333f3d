"""What shares circuit breakers between processes: :class:`BreakerHub`.

Breakers built with ``CircuitBreaker(name=..., hub=hub)`` decide every call
locally; a :class:`BreakerHub` exchanges the state of all of them with a
:class:`~._store.BreakerStore` (Redis) from one daemon thread: one
pipelined round trip per ``interval``, plus one at once whenever a breaker of this
process trips, closes, is isolated or reset. The thread serves sync and async
programs alike, since no call ever waits for it.

(It was called ``BreakerSync``, with ``sync=``: "sync" also means *synchronous*
everywhere else in buttress, so the sharing side took another name before 1.0.
The old names still work, deprecated.)

When the store fails, every breaker of the hub goes on alone (a plain local
breaker), :class:`~buttress.stores.StoreFellBack` is emitted and a warning logged
once (on the ``buttress.circuit`` logger, with the cause, no traceback), and the
next exchange that gets through re-joins them, emits
:class:`~buttress.stores.StoreRecovered` and logs how long the store was away. The
caller never sees a store error.

Tests drive it by hand: ``background=False`` starts no thread, and
:meth:`BreakerHub.exchange` runs one exchange now.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal

from buttress._events import logger
from buttress._validate import check_clock, check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.events import Emitter, Event, Listener
from buttress.stores.fallback import StoreFellBack, StoreRecovered, cause

from ._options import CircuitOptions
from ._shared import SharedCircuitEngine
from ._store import BreakerStore

__all__ = ["BreakerHub", "BreakerSync", "warn_deprecated"]


DEFAULT_INTERVAL = 0.1

# Every hub, so a forked child can give each its own thread, lock and identity.
_instances: weakref.WeakSet[BreakerHub] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for hub in list(_instances):
        hub._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_after_fork_in_child)


class BreakerHub:
    """Share circuit breakers' state and window counts between processes, through Redis.

    ``store`` is a ``redis://`` URL (``rediss://``, ``unix://``, ``valkey://``), a
    ``redis.Redis`` client, or any :class:`~._store.BreakerStore`. Give it to
    breakers as ``CircuitBreaker(name="payments", hub=hub)``; every process that
    builds a breaker of the same name with the same options on the same Redis shares
    it. :meth:`close` it at shutdown. A process that forks gives each child a fresh
    hub of its own (thread, identity), which joins at its first exchange.

    - ``interval``: seconds between exchanges; the consistency bound in the docs is
      stated in terms of it. Each exchange is one pipelined round trip for all
      breakers.
    - ``idle_interval``: seconds between exchanges for a breaker that has had
      nothing to tell (no call, no transition) since its last one; its next call
      wakes the hub for an exchange at once. Default ``max(10 * interval, 1.0)``;
      give ``interval`` to exchange every breaker every interval (a process that
      only watches a breaker's events, never calling through it).
    - ``lease``: seconds the right to run half-open trials stays with a process that
      stops renewing it (it renews while its trials run); default
      ``max(5 * interval, 0.5)``.
    - ``prefix``, ``timeout``, ``ttl``, ``time_source``: for a store built from a URL
      or a client (see :class:`~._redis_store.RedisBreakerStore`):
      key prefix, socket timeout (URL only), seconds an idle breaker's keys are
      kept, and whose clock (``"server"``: Redis ``TIME``; ``"client"``:
      ``clock.time()``).
    - ``background``: start the hub's thread with the first breaker (default);
      ``False`` for tests that call :meth:`exchange` themselves.
    - ``clock``: waits between exchanges, outage durations, and client time.
    - ``name``: the hub's name in its events, logs and thread (``"breaker-hub"``).

    ``degraded`` tells whether the last exchange failed. Events: :class:`StoreFellBack`
    when an exchange fails after one that worked (or the first one fails) and
    :class:`StoreRecovered` when one works again, with this hub's ``name`` as
    ``policy``; each is logged once too (a warning, then an info, on the
    ``buttress.circuit`` logger). Listeners run on the hub's thread.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_closed",
        "_down_since",
        "_engines",
        "_events",
        "_lock",
        "_owned",
        "_stop",
        "_store",
        "_thread",
        "_wake",
        "background",
        "degraded",
        "idle_interval",
        "interval",
        "lease",
        "name",
        "owner",
    )

    def __init__(
        self,
        store: str | BreakerStore | Any,
        *,
        interval: float | timedelta = DEFAULT_INTERVAL,
        idle_interval: float | timedelta | None = None,
        lease: float | timedelta | None = None,
        prefix: str = "buttress",
        timeout: float | timedelta | None = 0.25,
        ttl: float | timedelta = 86_400.0,
        time_source: Literal["server", "client"] = "server",
        background: bool = True,
        clock: Clock = MONOTONIC,
        name: str = "breaker-hub",
    ) -> None:
        self.interval = check_seconds(interval, "interval", positive=True)
        self.idle_interval = (
            max(10 * self.interval, 1.0)
            if idle_interval is None
            else check_seconds(idle_interval, "idle_interval", positive=True)
        )
        if self.idle_interval < self.interval:
            raise ConfigError(
                f"must be at least interval ({self.interval:g}s), got {idle_interval!r}",
                path="idle_interval",
            )
        self.lease = (
            max(5 * self.interval, 0.5)
            if lease is None
            else check_seconds(lease, "lease", positive=True)
        )
        if self.lease <= self.interval:
            raise ConfigError(
                f"must be longer than interval ({self.interval:g}s), or a lease lapses "
                "between two renewals",
                path="lease",
            )
        self._clock: Clock = check_clock(clock)
        self._owned = False
        if isinstance(store, str):
            from ._redis_store import RedisBreakerStore  # noqa: PLC0415 - imports redis

            store = RedisBreakerStore.from_url(
                store, timeout=timeout, prefix=prefix, ttl=ttl, time_source=time_source, clock=clock
            )
            self._owned = True
        elif callable(getattr(store, "evalsha", None)) and callable(
            getattr(store, "pipeline", None)
        ):
            from ._redis_store import RedisBreakerStore  # noqa: PLC0415 - imports redis

            store = RedisBreakerStore(
                store, prefix=prefix, ttl=ttl, time_source=time_source, clock=clock
            )
        elif not isinstance(store, BreakerStore):
            raise ConfigError(
                f"expected a redis:// URL, a redis.Redis client or a BreakerStore, got {store!r}",
                path="store",
            )
        self._store: BreakerStore = store
        self.name = name
        self.background = bool(background)
        self.owner = os.urandom(16).hex()
        """This hub's identity in the store (who holds a trial lease)."""
        self.degraded = False
        self._down_since = 0.0
        self._engines: dict[str, weakref.ref[SharedCircuitEngine]] = {}
        self._events = Emitter()
        # Re-entrant: listeners run under it (on the hub's thread) and may close().
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        _instances.add(self)

    # ------------------------------------------------------------- registration

    def attach(
        self, options: CircuitOptions, clock: Clock, name: str, events: Emitter
    ) -> SharedCircuitEngine:
        """Build the engine of a shared breaker called ``name`` (the breaker calls this)."""
        with self._lock:
            if self._closed:
                raise ConfigError("this BreakerHub is closed", path="hub")
            ref = self._engines.get(name)
            if ref is not None and ref() is not None:
                raise ConfigError(f"a breaker named {name!r} already uses this hub", path="name")
            engine = SharedCircuitEngine(options, clock, name, events, self._wake.set)
            self._engines[name] = weakref.ref(engine)
            if self.background and self._thread is None:
                self._start()
        self._wake.set()  # join the shared state now rather than after one interval
        return engine

    def subscribe(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Send this hub's events to ``listener``; returns the unsubscribe function."""
        return self._events.subscribe(listener, *types)

    # --------------------------------------------------------------- exchanging

    def _live(self) -> list[SharedCircuitEngine]:
        engines = []
        for name, ref in list(self._engines.items()):
            engine = ref()
            if engine is None:
                del self._engines[name]
            else:
                engines.append(engine)
        return engines

    def exchange(self) -> bool:
        """Exchange every breaker's state with the store now, in one round trip;
        whether the store answered.

        Never raises for a store failure: the breakers go on alone and
        :class:`StoreFellBack` is emitted (once per outage).
        """
        return self._exchange(everyone=True)

    def _exchange(self, *, everyone: bool) -> bool:
        """One exchange: of every breaker, or (the thread's) of those with something
        to tell and those whose ``idle_interval`` is up."""
        with self._lock:
            if self._closed:
                return False
            engines = self._live()
            now = self._clock.monotonic()
            if not everyone:
                idle = self.idle_interval
                engines = [e for e in engines if now - e.exchanged_at >= idle or not e.doze()]
            if not engines:
                return not self.degraded
            reports = [engine.report() for engine in engines]
            try:
                replies = self._store.exchange(self.owner, reports, self.lease)
                if len(replies) != len(reports):
                    raise RuntimeError(
                        f"the store answered {len(replies)} of {len(reports)} breakers"
                    )
            except Exception as exc:
                for engine in engines:
                    engine.go_local()
                self._fell_back(exc)
                return False
            for engine, reply in zip(engines, replies, strict=True):
                engine.adopt(reply)
                engine.exchanged_at = now
            if self.closed:  # a listener closed the hub meanwhile
                for engine in engines:
                    engine.go_local()
                return False
            self._recovered()
            return True

    def _fell_back(self, error: Exception) -> None:
        if self.degraded:
            return
        self.degraded = True
        self._down_since = self._clock.monotonic()
        logger("buttress.circuit").warning(
            "breaker hub %r: store %r failed, the breakers decide alone until it is back: %s",
            self.name,
            getattr(self._store, "name", "?"),
            cause(error),
        )
        if self._events.enabled:
            self._events.emit(StoreFellBack(self.name, error))

    def _recovered(self) -> None:
        if not self.degraded:
            return
        self.degraded = False
        down_for = self._clock.monotonic() - self._down_since
        logger("buttress.circuit").info(
            "breaker hub %r: store %r is back after %.3g s, the breakers share again",
            self.name,
            getattr(self._store, "name", "?"),
            down_for,
        )
        if self._events.enabled:
            self._events.emit(StoreRecovered(self.name, down_for))

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"buttress-{self.name}", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The child has no hub thread, and a lock the parent's thread held would
        # stay held: start afresh, as a new process with its own identity (a trial
        # lease of the parent is not the child's). The breakers decide alone until
        # the child's first exchange.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self.owner = os.urandom(16).hex()
        self.degraded = False
        engines = self._live()
        for engine in engines:
            engine.after_fork(self._wake.set)
        if engines and self.background and not self._closed:
            self._start()

    def _run(self) -> None:
        wake, stop, wait, interval = self._wake, self._stop, self._clock.wait, self.interval
        while not stop.is_set():
            wake.clear()  # a transition from now on asks for another exchange
            try:
                self._exchange(everyone=False)
            except Exception:  # a bug must not silently end the sharing
                logger("buttress.circuit").exception("buttress breaker hub %r failed", self.name)
            wait(wake, interval)

    # ---------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop sharing; the breakers go on as local breakers. Idempotent.

        A transition the others have not heard of yet (a trip just before shutdown)
        is pushed first, in one last exchange, unless the store is already known down.
        """
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            if self._closed:
                return
            if not self.degraded and any(engine.unsent for engine in self._live()):
                self.exchange()
            self._closed = True
            for engine in self._live():
                engine.go_local()
            if self._owned:
                self._store.close()

    def __enter__(self) -> BreakerHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, interval={self.interval!r}, "
            f"breakers={len(self._engines)}, degraded={self.degraded!r})"
        )

    # ------------------------------------------------------------- former names

    def sync_once(self) -> bool:
        """Deprecated: the former name of :meth:`exchange`."""
        warn_deprecated("BreakerHub.sync_once()", "BreakerHub.exchange()")
        return self.exchange()


def warn_deprecated(old: str, new: str) -> None:
    """Say that ``old`` is a former name, to be replaced by ``new`` (once per call site)."""
    warnings.warn(
        f"{old} is deprecated: use {new}. 'sync' also means 'synchronous' in buttress, so "
        "the side that shares breakers between processes is called a hub now.",
        DeprecationWarning,
        stacklevel=3,
    )


class BreakerSync(BreakerHub):
    """Deprecated: the former name of :class:`BreakerHub` (same parameters).

    Importing it warns of nothing; building one emits a ``DeprecationWarning``.
    """

    __slots__ = ()

    def __init__(self, store: str | BreakerStore | Any, **options: Any) -> None:
        warn_deprecated("BreakerSync", "BreakerHub")
        options.setdefault("name", "breaker-sync")
        super().__init__(store, **options)
