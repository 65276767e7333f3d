"""The circuit breaker policy: the sync and async drivers over the engine.

Every decision lives in :class:`~._engine.CircuitEngine`; this module only runs
the call between ``acquire`` and ``on_success``/``on_error``. The drivers are
spelled out per entry point (pipeline runner, decorator, ``call``, and their async
twins) instead of sharing one helper, because on the closed-and-clean path the
breaker must cost about as much as one attribute read, and each extra Python frame
would add some 40 ns. They all follow one shape::

    fast = engine.fast                 # lock-free: non-zero while closed and clean
    ticket = fast or engine.acquire()  # the lock only when something may change
    ... run the call; on an exception: engine.on_error(ticket, exc, elapsed) ...
    if not fast (or the call was slow): engine.on_success(ticket, elapsed)

and each comes in two flavours, built once: without slow-call detection the clock
is never read; with it, twice per call.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from buttress._codegen import use_acall
from buttress._strategy import AsyncRunner, Strategy, SyncRunner
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError

from ._engine import CircuitEngine
from ._events import CircuitState
from ._options import CircuitOptions, ExceptionFilter
from ._sync import BreakerSync
from ._window import CircuitMetrics

_Coroutine = types.CoroutineType

__all__ = ["CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

# What one ``with breaker:`` block remembers between enter and exit:
# (the lock-free ticket or 0, the ticket, the start time or 0.0).
_Entry = tuple[int, int, float]


class CircuitBreaker(Strategy):
    """Stop calling a dependency that keeps failing, and probe it before trusting it again.

    **Closed**, calls run and their outcomes fill a sliding window — the last
    ``window`` calls, or with ``window_seconds`` the calls of the last that many
    seconds. Once the window holds at least ``min_calls`` outcomes, the breaker
    trips **open** when the share of failures reaches ``failure_ratio``, or the
    share of slow calls (those taking ``slow_call_duration`` seconds or more)
    reaches ``slow_call_ratio``; with ``consecutive_failures`` it also trips on
    that many failures in a row. Open, every call is rejected with
    :class:`~buttress.errors.CircuitOpen` for ``open_duration`` seconds. Then the
    breaker turns **half-open** and lets up to ``half_open_calls`` trial calls run
    at once: ``half_open_successes`` successful trials (default:
    ``half_open_calls``) close it, and any failed or slow trial opens it again, each
    time for ``open_duration_factor`` times longer, up to ``max_open_duration``
    (back to ``open_duration`` once it closes).

    Which outcomes count: an exception matching ``failure_on`` (types, a tuple or
    a predicate; default every :class:`Exception` except buttress's own
    :class:`~buttress.errors.Rejected` raised by an inner policy, since then the
    dependency was never called) is a failure; one matching
    ``ignore`` counts as nothing; any other exception counts as a success (the
    dependency answered). ``CancelledError``, ``KeyboardInterrupt`` and other
    BaseExceptions never count; a trial they interrupt gives its permit back.

    :meth:`isolate` holds the breaker open until :meth:`reset`; :meth:`reset`
    closes it and clears the window. ``state``, ``until`` and ``metrics`` read it.

    Use it as a decorator, with :meth:`call`/:meth:`acall`, in a
    :class:`~buttress.Pipeline`, or as ``with breaker:`` / ``async with breaker:``
    around a block whose outcome it records. It is thread- and task-safe; one
    breaker may guard several call sites. Events: :class:`CircuitStateChanged` on
    every transition and :class:`~buttress.events.CallRejected` (reason
    ``"circuit_open"`` or ``"half_open_full"``) on every rejection.

    With ``sync=`` (a :class:`~buttress.policies.circuit.BreakerSync`) and a
    ``name``, the breaker is *shared*: every process whose breaker has that name
    and the same options on the same Redis trips, probes and recovers together.
    Calls are still decided locally, without a round trip; the state and window
    counts are synchronised in the background (see the docs for the consistency
    bound), and a Redis outage leaves the breaker working alone.
    """

    __slots__ = ("_engine", "_entries", "_now", "_options", "_shared_by")

    def __init__(
        self,
        *,
        failure_ratio: float = 0.5,
        min_calls: int = 10,
        window: int | None = None,
        window_seconds: float | None = None,
        consecutive_failures: int | None = None,
        slow_call_duration: float | None = None,
        slow_call_ratio: float = 1.0,
        open_duration: float = 30.0,
        open_duration_factor: float = 1.0,
        max_open_duration: float = 300.0,
        half_open_calls: int = 1,
        half_open_successes: int | None = None,
        failure_on: ExceptionFilter | None = None,
        ignore: ExceptionFilter | None = None,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        sync: BreakerSync | None = None,
    ) -> None:
        """Build a breaker; every option is checked here (:class:`ConfigError` names it).

        ``window`` defaults to 100 calls unless ``window_seconds`` is given; the two
        are exclusive. With a count window, ``min_calls`` is capped at ``window``.
        A shared breaker (``sync=``) needs a ``name``: it is the shared key.
        """
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"expected a string, got {name!r}", path="name")
        if sync is not None and not isinstance(sync, BreakerSync):
            raise ConfigError(f"expected a BreakerSync, got {sync!r}", path="sync")
        if sync is not None and name is None:
            raise ConfigError(
                "a shared breaker needs a name: processes find each other by it", path="name"
            )
        if not callable(getattr(clock, "monotonic", None)):
            raise ConfigError(f"expected a Clock, got {clock!r}", path="clock")
        self._options = CircuitOptions.build(
            failure_ratio=failure_ratio,
            min_calls=min_calls,
            window=window,
            window_seconds=window_seconds,
            consecutive_failures=consecutive_failures,
            slow_call_duration=slow_call_duration,
            slow_call_ratio=slow_call_ratio,
            open_duration=open_duration,
            open_duration_factor=open_duration_factor,
            max_open_duration=max_open_duration,
            half_open_calls=half_open_calls,
            half_open_successes=half_open_successes,
            failure_on=failure_on,
            ignore=ignore,
        )
        self._init_strategy(name, "circuit")
        self._now = clock.monotonic
        self._shared_by = sync
        if sync is not None and type(self) is CircuitBreaker:
            # A shared breaker needs drivers that count for the sync. The subclass adds
            # no slots, so the instance can become one before its drivers are built;
            # unlike a __new__ override, this keeps the constructor's signature.
            from ._shared_policy import SharedCircuitBreaker  # noqa: PLC0415 - import cycle

            self.__class__ = SharedCircuitBreaker
        self._engine: CircuitEngine = (
            CircuitEngine(self._options, clock, self.name, self._events)
            if sync is None
            else sync.attach(self._options, clock, self.name, self._events)
        )
        self._entries: ContextVar[tuple[_Entry, ...]] = ContextVar(
            f"buttress.circuit.{self.name}", default=()
        )
        self._build()

    # --------------------------------------------------------------- introspection

    @property
    def options(self) -> CircuitOptions:
        """The validated settings this breaker was built with."""
        return self._options

    @property
    def state(self) -> CircuitState:
        """The current state. An open breaker whose open duration is over reads (and
        becomes) half-open, exactly as the next call would find it."""
        return self._engine.state

    @property
    def until(self) -> float | None:
        """While open, the monotonic time (on the breaker's clock) of the next trial;
        ``inf`` while isolated; ``None`` while closed or half-open."""
        return self._engine.until

    @property
    def metrics(self) -> CircuitMetrics:
        """A snapshot of the window: calls, failures, slow calls and their ratios.

        While open it still shows the window that tripped the breaker; it is cleared
        when the breaker closes.
        """
        return self._engine.metrics()

    @property
    def sync(self) -> BreakerSync | None:
        """The :class:`~buttress.policies.circuit.BreakerSync` sharing this breaker, if any."""
        return self._shared_by

    @property
    def shared_metrics(self) -> CircuitMetrics | None:
        """The window of every process sharing this breaker, as of the last sync.

        ``None`` for a local breaker, and for a shared one until its first sync or
        while Redis is unreachable. ``metrics`` stays this process's own window.
        """
        return None

    def isolate(self) -> None:
        """Open the breaker by hand and keep it open (state ``ISOLATED``) until :meth:`reset`.

        A shared breaker is isolated in every process, within one sync."""
        self._engine.isolate()

    def reset(self) -> None:
        """Close the breaker by hand and clear its window; outcomes of calls still
        running are then not counted. A shared breaker is reset in every process."""
        self._engine.reset()

    # --------------------------------------------------------------------- drivers

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        slow_after = engine.slow_after
        if not engine.timed:

            def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                fast = engine.fast
                ticket = fast or acquire()
                try:
                    result = inner(fn, args, kwargs)
                except BaseException as exc:
                    on_error(ticket, exc, 0.0)
                    raise
                if not fast:
                    on_success(ticket, 0.0)
                return result

            return run

        now = self._now

        def timed_run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            fast = engine.fast
            ticket = fast or acquire()
            start = now()
            try:
                result = inner(fn, args, kwargs)
            except BaseException as exc:
                on_error(ticket, exc, now() - start)
                raise
            elapsed = now() - start
            if not fast or elapsed >= slow_after:
                on_success(ticket, elapsed)
            return result

        return timed_run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        slow_after = engine.slow_after
        if not engine.timed:

            async def run(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                fast = engine.fast
                ticket = fast or acquire()
                try:
                    result = await inner(fn, args, kwargs)
                except BaseException as exc:
                    on_error(ticket, exc, 0.0)
                    raise
                if not fast:
                    on_success(ticket, 0.0)
                return result

            return run

        now = self._now

        async def timed_run(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            fast = engine.fast
            ticket = fast or acquire()
            start = now()
            try:
                result = await inner(fn, args, kwargs)
            except BaseException as exc:
                on_error(ticket, exc, now() - start)
                raise
            elapsed = now() - start
            if not fast or elapsed >= slow_after:
                on_success(ticket, elapsed)
            return result

        return timed_run

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        slow_after = engine.slow_after
        if not engine.timed:

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                fast = engine.fast
                ticket = fast or acquire()
                try:
                    result = fn(*args, **kwargs)
                    if type(result) is _Coroutine:
                        use_acall(fn, result)
                except BaseException as exc:
                    on_error(ticket, exc, 0.0)
                    raise
                if not fast:
                    on_success(ticket, 0.0)
                return result

            return wrapper

        now = self._now

        @functools.wraps(fn)
        def timed_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            fast = engine.fast
            ticket = fast or acquire()
            start = now()
            try:
                result = fn(*args, **kwargs)
                if type(result) is _Coroutine:
                    use_acall(fn, result)
            except BaseException as exc:
                on_error(ticket, exc, now() - start)
                raise
            elapsed = now() - start
            if not fast or elapsed >= slow_after:
                on_success(ticket, elapsed)
            return result

        return timed_wrapper

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        slow_after = engine.slow_after
        if not engine.timed:

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                fast = engine.fast
                ticket = fast or acquire()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    on_error(ticket, exc, 0.0)
                    raise
                if not fast:
                    on_success(ticket, 0.0)
                return result

            return wrapper

        now = self._now

        @functools.wraps(fn)
        async def timed_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            fast = engine.fast
            ticket = fast or acquire()
            start = now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                on_error(ticket, exc, now() - start)
                raise
            elapsed = now() - start
            if not fast or elapsed >= slow_after:
                on_success(ticket, elapsed)
            return result

        return timed_wrapper

    # ------------------------------------------------------------ context manager

    def __enter__(self) -> CircuitBreaker:
        """Admit the block (or raise :class:`CircuitOpen`); its outcome is recorded on exit."""
        engine = self._engine
        fast = engine.fast
        ticket = fast or engine.acquire()
        start = self._now() if engine.timed else 0.0
        # A context variable, not an attribute: each thread and each task has its
        # own stack of open blocks, so concurrent ``with breaker:`` never mix tickets.
        self._entries.set((*self._entries.get(), (fast, ticket, start)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = self._entries.get()
        if not entries:
            raise RuntimeError(f"{self!r}: __exit__ without a matching __enter__")
        fast, ticket, start = entries[-1]
        self._entries.set(entries[:-1])
        engine = self._engine
        elapsed = self._now() - start if engine.timed else 0.0
        if exc is not None:
            engine.on_error(ticket, exc, elapsed)
        elif not fast or elapsed >= engine.slow_after:
            engine.on_success(ticket, elapsed)

    async def __aenter__(self) -> CircuitBreaker:
        """``async with breaker:`` — the same as ``with breaker:``; nothing is awaited."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        # The stored state, without the due open-to-half-open move: a repr has no effects.
        return f"CircuitBreaker(name={self.name!r}, state={self._engine._state.value!r})"
