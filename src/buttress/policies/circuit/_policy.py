"""The circuit breaker policy: its drivers, generated from one template, and its blocks.

Every decision lives in :class:`~._engine.CircuitEngine`; a driver only runs the
call between ``acquire`` and the report of its outcome. One template
(:data:`_DRIVER`) is generated (:mod:`buttress._codegen`) in every shape — pipeline
runner, direct runner, decorator, each sync and async — and for every combination
of what the breaker needs, so that no variant pays for what it does not use:

- ``timed``: slow-call detection is on, so the clock is read before and after the
  call (never otherwise); in sync shapes a slow success is also checked against
  the deadline of an enclosing ``Timeout`` (which refuses a late result): late, it
  is a timeout;
- ``shared``: the breaker is shared through a :class:`~._hub.BreakerHub`, and a
  success on the lock-free path is tallied for the shared window;
- the result rule: ``plain`` (the default rule; a value whose class is the last one
  found plain — ``None``, a number, a string, a container — is a success after one
  identity test, anything else is asked whether it is an HTTP response with a
  transient status), ``custom`` (the user's ``on_result``), or neither (a matcher
  for which no result fails).

On the closed-and-clean path a call costs one attribute read before and one
identity test after: ``fast`` is non-zero, nothing is recorded, no lock is taken.
``with breaker:`` / ``async with breaker:`` blocks are not generated: they run the
same engine calls from ``__enter__`` and ``__exit__``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from buttress._codegen import Shape, Target, factory, targets
from buttress._options import built_from
from buttress._outcome import _PLAIN, OnErrors
from buttress._strategy import GeneratedDrivers
from buttress._validate import check_clock
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError

from ._engine import CircuitEngine, past_deadline
from ._events import CircuitState
from ._options import CircuitOptions, ExceptionFilter
from ._shared import SharedCircuitEngine
from ._window import CircuitMetrics

if TYPE_CHECKING:
    from ._hub import BreakerHub

__all__ = ["CircuitBreaker"]

# What one ``with breaker:`` block remembers between enter and exit:
# (the lock-free ticket or 0, the ticket, the start time or 0.0).
_Entry = tuple[int, int, float]

_DRIVER = """
{DEF} circuit_breaker{SIG}:
    @plain nonlocal seen
    fast = engine.fast
    ticket = fast or acquire(fn)
    @timed start = now()
    try:
        result = {AWAIT}{CALL}
        @plain if result.__class__ is not seen:
        @plain     {CHECK}
        @plain     kind = type(result)
        @plain     if kind in plain:
        @plain         seen = kind
        @plain     elif judge(ticket, result, {ELAPSED_NOW}, fn):
        @plain         return result
        @!plain {CHECK}
    except BaseException as exc:
        on_error(ticket, exc, {ELAPSED_NOW}, fn)
        raise
    @timed elapsed = now() - start
    @custom if judge(ticket, result, {ELAPSED}, fn):
    @custom     return result
    @shared if {CLEAN}:
    @shared     tally()
    @shared else:
    @shared     on_success(ticket, {ELAPSED}, fn)
    @!shared if not ({CLEAN}):
    @!shared     on_success(ticket, {ELAPSED}, fn)
    return result
"""
"""The one driver of every shape and flag.

``plain``, the default result rule: a value of the class last found plain (kept in
``seen``) is a success at the cost of one identity test — ``__class__`` is read
rather than ``type()`` called, which costs less; an object passing itself off as a
plain class is taken for one. Plain classes are never coroutines, so the shape's
``{CHECK}`` of a sync call only needs to run for other classes. A value of another
class is looked up in the set of plain types, and one of a type not in it is judged
(``judge`` records a failure and says so; it never raises for the default rule, so
it may run inside the ``try``). ``custom``: the user's ``on_result``, judged after
the ``try``, so that a rule that raises is not taken for the call's error.
"""

_PARAMS = (
    "engine",
    "acquire",
    "on_error",
    "on_success",
    "judge",
    "plain",
    "seen",
    "tally",
    "now",
    "slow_after",
)


@cache
def _template(timed: bool) -> str:
    """The driver's template with the times it reads, or without any."""
    if timed:
        return (
            _DRIVER.replace("{ELAPSED_NOW}", "now() - start")
            .replace("{ELAPSED}", "elapsed")
            .replace("{CLEAN}", "fast and elapsed < slow_after")
        )
    return (
        _DRIVER.replace("{ELAPSED_NOW}", "0.0")
        .replace("{ELAPSED}", "0.0")
        .replace("{CLEAN}", "fast")
    )


class CircuitBreaker(GeneratedDrivers):
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

    What counts is buttress's one outcome model (:class:`~buttress.Matcher`), as for
    every policy. By default a **failure** is an error
    :func:`~buttress.errors.is_transient` calls transient (network errors, HTTP
    408/425/429/5xx, lost connections, ...) or a timeout — including a call a
    buttress :class:`~buttress.Timeout` cut off — and a returned HTTP response with
    one of those statuses; any other error (a 404, a ``ValueError``) is an answer
    and counts as a **success**. ``on=`` replaces the rule for errors (types, a
    tuple or a predicate; ``failure_on=`` is its former name), ``on_result=`` the
    rule for returned values. Counting as **nothing**: errors matching ``ignore``,
    programming errors (``TypeError``, ``AttributeError``, ...) and buttress
    :class:`~buttress.errors.Rejected` raised by an inner policy (the dependency was
    not called) unless ``on=`` names them, and a cancellation the caller asked for;
    a trial they interrupt gives its permit back.

    :meth:`isolate` holds the breaker open until :meth:`reset`; :meth:`reset`
    closes it and clears the window. ``state``, ``until`` and ``metrics`` read it.

    Use it as a decorator, with :meth:`call`/:meth:`acall`, in a
    :class:`~buttress.Pipeline`, or as ``with breaker:`` / ``async with breaker:``
    around a block whose outcome it records. It is thread- and task-safe; one
    breaker may guard several call sites. Events: :class:`CircuitStateChanged` on
    every transition and :class:`~buttress.events.CallRejected` (reason
    ``"circuit_open"`` or ``"half_open_full"``) on every rejection, delivered after
    the breaker's lock is released, in transition order.

    With ``hub=`` (a :class:`~buttress.policies.circuit.BreakerHub`) and a
    ``name``, the breaker is *shared*: every process whose breaker has that name
    and the same options on the same Redis trips, probes and recovers together.
    Calls are still decided locally, without a round trip; the state and window
    counts are exchanged in the background (see the docs for the consistency
    bound), and a Redis outage leaves the breaker working alone.
    """

    __slots__ = ("_engine", "_entries", "_hub", "_now", "options")

    Options: ClassVar[type[CircuitOptions]] = CircuitOptions

    options: CircuitOptions
    _engine: CircuitEngine

    def __init__(
        self,
        *,
        failure_ratio: float = 0.5,
        min_calls: int | None = None,
        window: int | None = None,
        window_seconds: float | timedelta | None = None,
        consecutive_failures: int | None = None,
        slow_call_duration: float | timedelta | None = None,
        slow_call_ratio: float = 1.0,
        open_duration: float | timedelta = 30.0,
        open_duration_factor: float = 1.0,
        max_open_duration: float | timedelta = 300.0,
        half_open_calls: int = 1,
        half_open_successes: int | None = None,
        on: OnErrors | None = None,
        on_result: Callable[[Any], object] | None = None,
        ignore: ExceptionFilter | None = None,
        failure_on: OnErrors | None = None,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        hub: BreakerHub | None = None,
        sync: BreakerHub | None = None,
    ) -> None:
        """Build a breaker; every option is checked here (:class:`ConfigError` names it).

        ``window`` defaults to 100 calls unless ``window_seconds`` is given; the two
        are exclusive. ``min_calls`` defaults to 10, or to a smaller count window's
        size, and may not exceed ``window``. A shared breaker (``hub=``) needs a
        ``name``: it is the shared key. ``sync=`` is the deprecated name of ``hub=``.
        """
        if sync is not None:
            from ._hub import warn_deprecated  # noqa: PLC0415 - sharing is loaded on use

            warn_deprecated("CircuitBreaker(sync=...)", "CircuitBreaker(hub=...)")
            if hub is not None:
                raise ConfigError("give hub (or its former name sync), not both", path="sync")
            hub = sync
        options = CircuitOptions(
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
            on=on,
            on_result=on_result,
            ignore=ignore,
            failure_on=failure_on,
        )
        self._setup(options, name, clock, hub)

    @classmethod
    def from_options(
        cls,
        options: CircuitOptions,
        *,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        hub: BreakerHub | None = None,
    ) -> CircuitBreaker:
        """A breaker from its options (as the registry builds one from TOML)."""
        return built_from(cls, options, name, clock, hub)

    def _setup(
        self, options: CircuitOptions, name: str | None, clock: Clock, hub: BreakerHub | None
    ) -> None:
        check_clock(clock)
        if hub is not None:
            from ._hub import BreakerHub  # noqa: PLC0415 - sharing is loaded on use

            if not isinstance(hub, BreakerHub):
                raise ConfigError(f"must be a BreakerHub, got {hub!r}", path="hub")
            if name is None:
                # Shared state is keyed by the name: a default like "circuit-3" depends
                # on construction order, and two processes could swap breakers.
                raise ConfigError(
                    "a shared breaker needs a name of your choosing: processes find "
                    "each other's breaker by it",
                    path="name",
                )
        self.options = options
        self._init_strategy(name, "circuit")
        self._now = clock.monotonic
        self._hub = hub
        self._engine = (
            CircuitEngine(options, clock, self.name, self._events)
            if hub is None
            else hub.attach(options, clock, self.name, self._events)
        )
        # A context variable, not an attribute: each thread and each task has its own
        # stack of open blocks, so concurrent ``with breaker:`` never mix tickets.
        self._entries: ContextVar[tuple[_Entry, ...]] = ContextVar(
            f"buttress.circuit.{self.name}", default=()
        )
        self._build()

    # --------------------------------------------------------------- introspection

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
    def hub(self) -> BreakerHub | None:
        """The :class:`~buttress.policies.circuit.BreakerHub` sharing this breaker, if any."""
        return self._hub

    @property
    def sync(self) -> BreakerHub | None:
        """Deprecated: the former name of :attr:`hub`."""
        from ._hub import warn_deprecated  # noqa: PLC0415

        warn_deprecated("CircuitBreaker.sync", "CircuitBreaker.hub")
        return self._hub

    @property
    def shared_metrics(self) -> CircuitMetrics | None:
        """The window of every process sharing this breaker, as of the last exchange.

        ``None`` for a local breaker, and for a shared one until its first exchange
        or while Redis is unreachable. ``metrics`` stays this process's own window.
        """
        engine = self._engine
        if not isinstance(engine, SharedCircuitEngine):
            return None
        shared = engine.shared_metrics
        return None if shared is None else CircuitMetrics(*shared)

    def isolate(self) -> None:
        """Open the breaker by hand and keep it open (state ``ISOLATED``) until :meth:`reset`.

        A shared breaker is isolated in every process, within one interval."""
        self._engine.isolate()

    def reset(self) -> None:
        """Close the breaker by hand and clear its window; outcomes of calls still
        running are then not counted. A shared breaker is reset in every process."""
        self._engine.reset()

    # --------------------------------------------------------------------- drivers

    def _driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        engine = self._engine
        timed = engine.timed
        shared = isinstance(engine, SharedCircuitEngine)
        checks = engine.checks_results
        flags = {
            "timed": timed,
            "shared": shared,
            "plain": checks and engine.default_results,
            "custom": checks and not engine.default_results,
        }
        # Only a sync call returns past a deadline: an async one is cancelled at it.
        # The deadline is read on the locked path only, for a slow call.
        late = timed and not shape.is_async
        make = factory(_template(timed), shape, _PARAMS, flags, label="circuit breaker")
        values = (
            engine,
            engine.acquire,
            engine.on_error,
            engine.on_late_success if late else engine.on_success,
            engine.judge,
            _PLAIN,
            type(None),
            engine.tally if isinstance(engine, SharedCircuitEngine) else None,
            self._now,
            engine.slow_after,
        )
        return make(*values, *targets(target))

    # ------------------------------------------------------------------- blocks

    def __enter__(self) -> CircuitBreaker:
        """``with breaker:`` — admit the block (or raise :class:`CircuitOpen`); its
        outcome is recorded on exit: an exception as a call's, a normal exit as a
        success (and, with slow-call detection on, a slow one that ends past the deadline of
        an enclosing ``Timeout`` as a timeout)."""
        engine = self._engine
        fast = engine.fast
        ticket = fast or engine.acquire()
        start = self._now() if engine.timed else 0.0
        self._entries.set((*self._entries.get(), (fast, ticket, start)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc, is_async=False)

    async def __aenter__(self) -> CircuitBreaker:
        """``async with breaker:`` — the same as ``with breaker:``; nothing is awaited.

        A block a buttress ``Timeout`` cancels counts as a timeout."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc, is_async=True)

    def _exit(self, exc: BaseException | None, *, is_async: bool) -> None:
        entries = self._entries.get()
        if not entries:
            raise RuntimeError(f"{self!r}: __exit__ without a matching __enter__")
        fast, ticket, start = entries[-1]
        self._entries.set(entries[:-1])
        engine = self._engine
        timed = engine.timed
        elapsed = self._now() - start if timed else 0.0
        if exc is not None:
            engine.on_error(ticket, exc, elapsed)
            return
        slow = elapsed >= engine.slow_after
        engine.finish(fast, ticket, elapsed, slow and not is_async and past_deadline())

    def __repr__(self) -> str:
        # The stored state, without the due open-to-half-open move: a repr has no effects.
        shared = ", shared=True" if self._hub is not None else ""
        return f"CircuitBreaker(name={self.name!r}, state={self._engine._state.value!r}{shared})"
