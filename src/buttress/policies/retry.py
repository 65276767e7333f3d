"""Retry: run a call again when it fails transiently, waiting longer each time.

The module has the roles every policy module has:

- options — :class:`Retry`'s keyword arguments, validated when it is built;
- the sans-I/O engine — :class:`_Engine` decides, after a failed attempt, whether
  to try again and after how long (attempt cap, backoff, ``max_delay``, jitter,
  ``Retry-After``, the elapsed cap); it never sleeps, never reads a clock;
- the events — :class:`RetryScheduled`, :class:`RetryRecovered`, :class:`RetryGaveUp`;
- the drivers — a sync and an async loop that execute the engine's answers with
  ``clock.sleep`` / ``await clock.asleep``.

The happy path is a bare ``try: return fn(...)``: no clock read (unless
``max_elapsed`` is set), no state, no event. Per-call state exists only from the
first failure on.
"""

from __future__ import annotations

import functools
import math
import random as _random
import types
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeAlias, TypeVar, cast

from buttress._codegen import use_acall
from buttress._outcome import DEFAULT
from buttress._strategy import AsyncRunner, Strategy, SyncRunner, invoke
from buttress._switches import SWITCHES
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, RateLimited, Rejected, RetryExhausted, retry_after_of
from buttress.events import Event
from buttress.policies.backoff import Backoff, backoff_from_name

_Coroutine = types.CoroutineType

__all__ = [
    "Jitter",
    "Retry",
    "RetryGaveUp",
    "RetryOn",
    "RetryRecovered",
    "RetryScheduled",
]

P = ParamSpec("P")
R = TypeVar("R")

Jitter: TypeAlias = Literal["none", "full", "equal"]
"""How a computed delay is randomised: not at all, uniformly in [0, d], or in [d/2, d]."""

RetryOn: TypeAlias = type[Exception] | tuple[type[Exception], ...] | Callable[[BaseException], bool]
"""What ``on=`` accepts: an exception type, a tuple of them, or a predicate."""

_JITTERS = ("none", "full", "equal")
_DEFAULT_DELAY = 0.1


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """Attempt number ``attempt`` (1 for the first) failed; the next starts in ``delay`` s.

    ``error`` is what the attempt raised, or ``None`` when it returned ``result``
    and ``on_result`` rejected it.
    """

    attempt: int
    delay: float
    error: BaseException | None
    result: Any


@dataclass(frozen=True, slots=True)
class RetryRecovered(Event):
    """A call that had failed succeeded on attempt number ``attempts``."""

    attempts: int


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """Retry gave up on a call after ``attempts`` attempts; the call failed.

    ``reason`` is short and stable, fit for a metric label: ``"max_attempts"``,
    ``"max_elapsed"``, ``"retry_after"`` (the server asked for a wait longer than
    ``max_delay``) or ``"not_retryable"`` (a later attempt raised an error that is
    not retried; it propagates unchanged). ``error``/``result`` is the last outcome.
    A call that fails on its first attempt with an error that is not retried emits
    nothing: the policy did not act on it.
    """

    attempts: int
    reason: str
    error: BaseException | None
    result: Any


# ------------------------------------------------------------------------------ engine


class _Attempts:
    """One call's retry state; created at its first failure, never on the happy path."""

    __slots__ = ("attempt", "deadline", "previous", "reason")

    def __init__(self, deadline: float) -> None:
        self.attempt = 1
        self.deadline = deadline
        self.previous = 0.0
        self.reason = ""


class _Engine:
    """Sans-I/O retry decisions, shared by the sync and async drivers.

    :meth:`decide` takes the failed attempt's state and error and the times the
    driver read, and returns the delay before the next attempt, or ``None`` to give
    up with ``state.reason`` set.
    """

    __slots__ = (
        "backoff",
        "jitter",
        "max_attempts",
        "max_delay",
        "max_elapsed",
        "random",
        "retry_after",
    )

    def __init__(
        self,
        *,
        max_attempts: int | None,
        backoff: Backoff,
        max_delay: float,
        jitter: Jitter,
        max_elapsed: float | None,
        retry_after: bool,
        random: Callable[[], float],
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_delay = max_delay
        # A schedule that is random by itself (decorrelated jitter) gets no extra jitter:
        # full jitter on top would pull its delays back towards zero.
        self.jitter: Jitter = "none" if backoff.randomized else jitter
        self.max_elapsed = max_elapsed
        self.retry_after = retry_after
        self.random = random

    def begin(self, started: float) -> _Attempts:
        """State for a call whose first attempt started at ``started`` and just failed."""
        max_elapsed = self.max_elapsed
        return _Attempts(math.inf if max_elapsed is None else started + max_elapsed)

    def decide(
        self, state: _Attempts, error: BaseException | None, now: float, wall: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        ``now`` is the monotonic time (read only when ``max_elapsed`` is set), ``wall``
        the wall-clock time an HTTP-date ``Retry-After`` is measured from (read only
        when ``retry_after`` is honoured).
        """
        attempt = state.attempt
        max_attempts = self.max_attempts
        if max_attempts is not None and attempt >= max_attempts:
            state.reason = "max_attempts"
            return None
        delay = self.backoff.compute(attempt, state.previous, self.random)
        if not delay > 0.0:  # also catches NaN from a custom schedule
            delay = 0.0
        elif delay > self.max_delay:
            delay = self.max_delay
        state.previous = delay
        jitter = self.jitter
        if delay and jitter != "none":
            draw = self.random()
            delay *= draw if jitter == "full" else 0.5 * (1.0 + draw)
        if self.retry_after and error is not None:
            asked = retry_after_of(error, now=wall)
            if asked is not None:
                if asked > self.max_delay:
                    # Waiting less would disobey the server; waiting more would break
                    # the cap the user set. Neither is ours to choose: stop.
                    state.reason = "retry_after"
                    return None
                delay = max(delay, asked)
        if SWITCHES.zero_backoff:
            delay = 0.0
        if now + delay > state.deadline:
            # Sleeping only to find the time budget spent would waste the wait.
            state.reason = "max_elapsed"
            return None
        return delay


# ------------------------------------------------------------------------------ policy


def _seconds(value: object, path: str, *, minimum: float = 0.0, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds, got {value!r}", path=path)
    if math.isnan(value) or value < minimum or (finite and math.isinf(value)):
        bound = "a finite number" if finite else "a number"
        raise ConfigError(f"must be {bound} >= {minimum:g}, got {value!r}", path=path)
    return float(value)


def _default_retryable(exc: BaseException) -> bool:
    # Rejections by inner policies exist to fail fast, and an inner retry already
    # spent its attempts: neither is retried unless named. A rate limiter's refusal
    # is, when its Retry-After fits (the engine checks the wait).
    if isinstance(exc, _NOT_RETRIED) and not isinstance(exc, RateLimited):
        return False
    return DEFAULT.error_rule(exc)


_NOT_RETRIED = (Rejected, RetryExhausted)


def _error_predicate(on: RetryOn | None) -> Callable[[BaseException], bool]:
    if on is None:
        return _default_retryable
    types: tuple[object, ...]
    if isinstance(on, tuple):
        types = on
    elif isinstance(on, type):
        types = (on,)
    elif callable(on):
        return on
    else:
        raise ConfigError(
            f"expected an exception type, a tuple of them or a predicate, got {on!r}", path="on"
        )
    if not types:
        raise ConfigError("an empty tuple would retry nothing", path="on")
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            # CancelledError, KeyboardInterrupt and friends must always propagate.
            raise ConfigError(f"only Exception subclasses can be retried, got {kind!r}", path="on")
    matched = cast(tuple[type[Exception], ...], types)

    def matches(exc: BaseException) -> bool:
        return isinstance(exc, matched)

    return matches


class Retry(Strategy):
    """Run a call again when it fails transiently, with backoff, jitter and caps.

    ``max_attempts`` counts every attempt, the first included; ``None`` means
    unbounded and is only allowed together with ``max_elapsed``. Which failures are
    retried: by default (``on=None``) exactly the errors
    :func:`~buttress.errors.is_transient` calls transient; ``on=`` an exception
    type, a tuple of them or a predicate replaces that rule. Only ``Exception``
    subclasses are ever retried, never ``CancelledError`` or ``KeyboardInterrupt``.
    ``on_result`` is a predicate on a returned value; True means "retry".

    The wait before attempt *n + 1* is ``backoff`` (a schedule, or one of the names
    ``"constant"``, ``"linear"``, ``"exponential"``, ``"fibonacci"``,
    ``"decorrelated_jitter"`` with ``delay`` as its initial delay, default 0.1 s)
    evaluated for attempt *n*, capped at ``max_delay``, then randomised by
    ``jitter`` (``"full"``: uniform in [0, d]; ``"equal"``: in [d/2, d];
    ``"none"``). With ``retry_after=True`` a ``Retry-After`` carried by the error
    (:func:`~buttress.errors.retry_after_of`) raises the wait to at least that; if
    it exceeds ``max_delay`` the policy gives up rather than wait too little or too
    long. ``max_elapsed`` bounds the time from the start of the first attempt: a
    wait that would end past it is not begun.

    When retries run out it raises :class:`~buttress.errors.RetryExhausted` (the
    last error as ``__cause__``, or the last rejected value as ``last_result``);
    with ``reraise=True`` it raises the last error itself, or returns the last
    value. An error that is not retried propagates unchanged, at once.
    """

    __slots__ = ("_clock", "_engine", "_on_result", "_plain", "_reraise", "_retryable")

    def __init__(
        self,
        max_attempts: int | None = 3,
        *,
        backoff: Backoff | str = "exponential",
        delay: float | None = None,
        max_delay: float = 30.0,
        jitter: Jitter = "full",
        max_elapsed: float | None = None,
        on: RetryOn | None = None,
        on_result: Callable[[Any], bool] | None = None,
        retry_after: bool = True,
        reraise: bool = False,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        random: Callable[[], float] | None = None,
    ) -> None:
        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
        ):
            raise ConfigError(
                f"must be an integer >= 1 or None, got {max_attempts!r}", path="max_attempts"
            )
        if max_elapsed is not None:
            max_elapsed = _seconds(max_elapsed, "max_elapsed")
            if max_elapsed <= 0:
                raise ConfigError(f"must be > 0, got {max_elapsed!r}", path="max_elapsed")
        if max_attempts is None and max_elapsed is None:
            raise ConfigError(
                "retry must be bounded: set max_attempts, max_elapsed or both",
                path="max_attempts",
            )
        if isinstance(backoff, str):
            initial = _DEFAULT_DELAY if delay is None else _seconds(delay, "delay")
            schedule = backoff_from_name(backoff, initial)
        elif isinstance(backoff, Backoff):
            if delay is not None:
                raise ConfigError(
                    "give the initial delay to the backoff schedule itself, not to Retry",
                    path="delay",
                )
            schedule = backoff
        else:
            raise ConfigError(
                f"expected a backoff schedule or its name, got {backoff!r}", path="backoff"
            )
        max_delay = _seconds(max_delay, "max_delay", finite=False)
        if jitter not in _JITTERS:
            raise ConfigError(
                f"expected one of {', '.join(map(repr, _JITTERS))}, got {jitter!r}", path="jitter"
            )
        if on_result is not None and not callable(on_result):
            raise ConfigError(f"expected a predicate, got {on_result!r}", path="on_result")
        if random is not None and not callable(random):
            raise ConfigError(f"expected a function, got {random!r}", path="random")

        self._retryable = _error_predicate(on)
        self._on_result = on_result
        self._reraise = bool(reraise)
        self._clock = clock
        self._engine = _Engine(
            max_attempts=max_attempts,
            backoff=schedule,
            max_delay=max_delay,
            jitter=jitter,
            max_elapsed=max_elapsed,
            retry_after=bool(retry_after),
            random=_random.random if random is None else random,
        )
        # Without an elapsed cap or a result predicate, the fast paths are a bare
        # try/except: nothing to read before the call, nothing to test after it.
        self._plain = max_elapsed is None and on_result is None
        self._init_strategy(name, "retry")
        self._build()

    # ---------------------------------------------------------------- introspection

    @property
    def max_attempts(self) -> int | None:
        """Attempts allowed in all, the first included (``None``: bounded by time only)."""
        return self._engine.max_attempts

    @property
    def backoff(self) -> Backoff:
        """The backoff schedule."""
        return self._engine.backoff

    @property
    def max_delay(self) -> float:
        """The longest single wait, in seconds."""
        return self._engine.max_delay

    @property
    def max_elapsed(self) -> float | None:
        """The time budget from the start of the first attempt, in seconds."""
        return self._engine.max_elapsed

    @property
    def jitter(self) -> Jitter:
        """The jitter applied to the schedule (``"none"`` for a self-randomised one)."""
        return self._engine.jitter

    def __repr__(self) -> str:
        e = self._engine
        return (
            f"Retry(max_attempts={e.max_attempts!r}, backoff={e.backoff!r}, "
            f"max_delay={e.max_delay!r}, jitter={e.jitter!r}, max_elapsed={e.max_elapsed!r}, "
            f"name={self.name!r})"
        )

    # ------------------------------------------------------------------- fast paths
    # Each is one frame: try the call; only on failure hand over to the driver loop.
    # The driver is called after the except block, so later errors do not chain to
    # the first as __context__ (an unbounded retry would otherwise grow that chain).

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        retryable = self._retryable
        retry = self._retry_sync
        if self._plain:

            def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                try:
                    return inner(fn, args, kwargs)
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    error = exc
                return retry(inner, fn, args, kwargs, error, None, 0.0)

            return run

        monotonic = self._clock.monotonic
        timed = self._engine.max_elapsed is not None
        on_result = self._on_result

        def run_checked(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            started = monotonic() if timed else 0.0
            try:
                result = inner(fn, args, kwargs)
            except Exception as exc:
                if not retryable(exc):
                    raise
                error = exc
            else:
                if on_result is None or not on_result(result):
                    return result
                return retry(inner, fn, args, kwargs, None, result, started)
            return retry(inner, fn, args, kwargs, error, None, started)

        return run_checked

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        retryable = self._retryable
        retry = self._retry_async
        if self._plain:

            async def run(
                fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                try:
                    return await inner(fn, args, kwargs)
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    error = exc
                return await retry(inner, fn, args, kwargs, error, None, 0.0)

            return run

        monotonic = self._clock.monotonic
        timed = self._engine.max_elapsed is not None
        on_result = self._on_result

        async def run_checked(
            fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            started = monotonic() if timed else 0.0
            try:
                result = await inner(fn, args, kwargs)
            except Exception as exc:
                if not retryable(exc):
                    raise
                error = exc
            else:
                if on_result is None or not on_result(result):
                    return result
                return await retry(inner, fn, args, kwargs, None, result, started)
            return await retry(inner, fn, args, kwargs, error, None, started)

        return run_checked

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        if not self._plain:
            return super()._decorate_sync(fn)
        retryable = self._retryable
        retry = self._retry_sync

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = fn(*args, **kwargs)
                if type(result) is _Coroutine:
                    use_acall(fn, result)
                return result
            except Exception as exc:
                if not retryable(exc):
                    raise
                error = exc
            retried: R = retry(invoke, fn, args, kwargs, error, None, 0.0)
            return retried

        return wrapper

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not self._plain:
            return super()._decorate_async(fn)
        retryable = self._retryable
        retry = self._retry_async

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    raise
                error = exc
            retried: R = await retry(invoke, fn, args, kwargs, error, None, 0.0)
            return retried

        return wrapper

    # ---------------------------------------------------------------------- drivers

    def _retry_sync(  # noqa: PLR0917 - positional: the fast paths hand over cheaply
        self,
        inner: SyncRunner,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: BaseException | None,
        result: Any,
        started: float,
    ) -> Any:
        """Drive the engine after a first failure: wait, try again, until done."""
        engine = self._engine
        clock = self._clock
        timed = engine.max_elapsed is not None
        honour = engine.retry_after
        direct = inner is invoke
        retryable = self._retryable
        on_result = self._on_result
        events = self._events
        state = engine.begin(started)
        while True:
            delay = engine.decide(
                state,
                error,
                clock.monotonic() if timed else 0.0,
                clock.time() if honour else 0.0,
            )
            if delay is None:
                return self._give_up(state, error, result)
            if events.enabled:
                events.emit(RetryScheduled(self.name, state.attempt, delay, error, result))
            if delay > 0.0:
                clock.sleep(delay)
            state.attempt += 1
            try:
                # Straight to fn when nothing is inside us: one frame less per attempt.
                result = fn(*args, **kwargs) if direct else inner(fn, args, kwargs)
            except Exception as exc:
                if not retryable(exc):
                    self._not_retryable(state, exc)
                    raise
                error, result = exc, None
                continue
            if on_result is not None and on_result(result):
                error = None
                continue
            if events.enabled:
                events.emit(RetryRecovered(self.name, state.attempt))
            return result

    async def _retry_async(  # noqa: PLR0917 - twin of _retry_sync
        self,
        inner: AsyncRunner,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: BaseException | None,
        result: Any,
        started: float,
    ) -> Any:
        """The async twin of :meth:`_retry_sync`; cancellation during a wait propagates."""
        engine = self._engine
        clock = self._clock
        timed = engine.max_elapsed is not None
        honour = engine.retry_after
        direct = inner is invoke
        retryable = self._retryable
        on_result = self._on_result
        events = self._events
        state = engine.begin(started)
        while True:
            delay = engine.decide(
                state,
                error,
                clock.monotonic() if timed else 0.0,
                clock.time() if honour else 0.0,
            )
            if delay is None:
                return self._give_up(state, error, result)
            if events.enabled:
                events.emit(RetryScheduled(self.name, state.attempt, delay, error, result))
            if delay > 0.0:
                await clock.asleep(delay)
            state.attempt += 1
            try:
                result = await (fn(*args, **kwargs) if direct else inner(fn, args, kwargs))
            except Exception as exc:
                if not retryable(exc):
                    self._not_retryable(state, exc)
                    raise
                error, result = exc, None
                continue
            if on_result is not None and on_result(result):
                error = None
                continue
            if events.enabled:
                events.emit(RetryRecovered(self.name, state.attempt))
            return result

    def _not_retryable(self, state: _Attempts, error: BaseException) -> None:
        if self._events.enabled:
            self._events.emit(RetryGaveUp(self.name, state.attempt, "not_retryable", error, None))

    def _give_up(self, state: _Attempts, error: BaseException | None, result: Any) -> Any:
        if self._events.enabled:
            self._events.emit(RetryGaveUp(self.name, state.attempt, state.reason, error, result))
        if error is None:
            if self._reraise:
                return result
            raise RetryExhausted(self.name, state.attempt, last_result=result)
        if self._reraise:
            raise error
        raise RetryExhausted(self.name, state.attempt, error) from error
