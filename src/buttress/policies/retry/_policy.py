"""Retry's drivers: generated call drivers in every shape, and the loop form.

Two templates (:mod:`buttress._codegen`) make every driver a call can take — a
pipeline runner, a direct runner, a decorator's wrapper, each sync and async:

- :data:`_FIRST`, the first attempt: a bare ``try`` around the call, a type check of
  the result and, only on failure, a hand-over to
- :data:`_AGAIN`, the retry loop: decide whether the first error is retried at all,
  ask the engine how long to wait, check that the wait fits the enclosing time
  budget, wait, try again.

Everything the loop decides goes through :class:`Retry`'s helpers (``_plan``,
``_give_up`` ...) and the sans-I/O :class:`~._engine.Engine`, which the loop form
(:meth:`Retry.attempts`) shares: one set of rules, whatever the shape.

The happy path reads no clock (unless ``max_elapsed`` is set), builds no state and
emits no event. Judging its result costs one identity test: ``seen`` holds the type
of the last plain value (``int``, ``dict``, ...) the driver returned — a type the
outcome model never calls a failure, and never a coroutine, since the sync check
(``{CHECK}``) runs before a type is remembered — and only another type goes on to
``judge`` (the set lookup and the result rule).

The first attempt's driver closes over as few names as it can (``fn``, ``seen``,
``judge``, ``again``): CPython copies every free variable into the frame on each
call, ~23 instructions apiece, so even the first error's "is it retried at all?"
is asked by the loop. A first error that is not retried therefore shows the loop's
frame in its traceback; the error itself is raised unchanged, with no
``__context__`` added. The loop is entered after the first attempt's ``except``
block has ended, so later errors do not chain to the first as ``__context__`` (an
unbounded retry would otherwise grow that chain).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn, TypeVar, cast

from buttress._codegen import (
    ASYNC_AROUND,
    ASYNC_DECORATOR,
    ASYNC_DIRECT,
    ASYNC_RUNNER,
    SYNC_AROUND,
    SYNC_DECORATOR,
    SYNC_DIRECT,
    SYNC_RUNNER,
    Shape,
    Target,
    factory,
    targets,
)
from buttress._deadline import DEADLINE, cancelled_by_timeout, fit
from buttress._events import call_name
from buttress._options import built_from
from buttress._outcome import _PLAIN, result_is_failure
from buttress._strategy import GeneratedDrivers
from buttress._validate import check_callable, check_clock
from buttress.clock import MONOTONIC, Clock
from buttress.errors import RetryExhausted, TimeoutExceeded
from buttress.policies.backoff import Backoff
from buttress.policies.retry._engine import Attempts, Engine, retryable
from buttress.policies.retry._events import RetryGaveUp, RetryRecovered, RetryScheduled
from buttress.policies.retry._options import (
    Jitter,
    RetryAfter,
    RetryOn,
    RetryOptions,
    Seconds,
)

__all__ = ["Attempt", "AttemptLoop", "Retry"]

T = TypeVar("T")

# ---------------------------------------------------------------------------- templates

_FIRST = """
{DEF} retry_first{SIG}:
    @timed started = monotonic()
    try:
        result = {AWAIT}{CALL}
    except Exception as exc:
        error = exc
    @aio except CancelledError as exc:
    @aio     cancelled(fn, exc, 1)
    @aio     raise
    else:
        @plain if result.__class__ is seen:
        @plain     return result
        @results if not judge(fn, result):
        @results     return result
        @!results {CHECK}
        @!results return result
        @timed return {AWAIT}again(fn, args, kwargs, None, result, started)
        @!timed return {AWAIT}again(fn, args, kwargs, None, result, 0.0)
    @timed return {AWAIT}again(fn, args, kwargs, error, None, started)
    @!timed return {AWAIT}again(fn, args, kwargs, error, None, 0.0)

def judge(fn, result):
    nonlocal seen
    {CHECK}
    @plain if type(result) in plain:
    @plain     seen = type(result)
    @plain     return False
    return result_rule(result)
"""

_AGAIN = """
{DEF} retry_again(fn, args, kwargs, error, result, started):
    if error is not None and not retryable(error):
        raise error
    state = begin(started)
    while True:
        delay = plan(state, fn, error, result)
        if delay is None:
            return give_up(state, fn, error, result)
        try:
            if delay:
                {AWAIT}sleep(delay)
            state.attempt += 1
            result = {AWAIT}{CALL}
        except Exception as exc:
            if not retryable(exc):
                not_retryable(state, fn, exc)
                raise
            error = exc
            result = None
            continue
        @aio except CancelledError as exc:
        @aio     cancelled(fn, exc, state.attempt)
        @aio     raise
        {CHECK}
        @plain if type(result) not in plain and result_rule(result):
        @plain     error = None
        @plain     continue
        @other if result_rule(result):
        @other     error = None
        @other     continue
        if events.enabled:
            recovered(state, fn)
        return result
"""

_FIRST_PARAMS = (
    "retryable",
    "result_rule",
    "plain",
    "seen",
    "monotonic",
    "cancelled",
    "CancelledError",
)
_AGAIN_PARAMS = (
    "begin",
    "plan",
    "give_up",
    "retryable",
    "not_retryable",
    "result_rule",
    "events",
    "recovered",
    "plain",
    "sleep",
    "cancelled",
    "CancelledError",
)

# The retry loop calls the function directly wherever the first attempt does.
_LOOP_SHAPE: dict[Shape, Shape] = {
    SYNC_RUNNER: SYNC_RUNNER,
    ASYNC_RUNNER: ASYNC_RUNNER,
    SYNC_DIRECT: SYNC_DIRECT,
    ASYNC_DIRECT: ASYNC_DIRECT,
    SYNC_DECORATOR: SYNC_DIRECT,
    ASYNC_DECORATOR: ASYNC_DIRECT,
    SYNC_AROUND: SYNC_RUNNER,
    ASYNC_AROUND: ASYNC_RUNNER,
}


def _label(fn: object) -> str:
    """The ``call`` of an event: the function's name, or the loop form's label."""
    return fn if isinstance(fn, str) else call_name(fn)


# ------------------------------------------------------------------------------- policy


class Retry(GeneratedDrivers):
    """Run a call again when it fails transiently, with backoff, jitter and bounds.

    ``max_attempts`` counts every attempt, the first included; ``None`` means
    unbounded and is only allowed together with ``max_elapsed``.

    **What is retried** is decided by the one outcome model
    (:class:`~buttress.Matcher`): by default, errors
    :func:`~buttress.errors.is_transient` calls transient and timeouts, and
    *returned* HTTP responses with a transient status (a 503 response); permanent
    answers (HTTP 4xx but 408/425/429) and programming errors (``TypeError``, ...)
    never. ``on=`` (a matcher, an exception type, a tuple of them, or a predicate)
    replaces the rule for errors, ``on_result=`` (a predicate; true means retry)
    the rule for results. Buttress's rejections from policies inside the retry (an
    open circuit, a full bulkhead) and an inner retry's ``RetryExhausted`` exist to
    fail fast: they are retried only when ``on=`` *names* their type. A
    ``RateLimited`` is retried when its ``retry_after`` fits ``max_delay`` and the
    time budget.

    **How long it waits**: ``backoff`` (a schedule, or one of the names
    ``"constant"``, ``"linear"``, ``"exponential"``, ``"fibonacci"``,
    ``"decorrelated_jitter"`` with ``delay`` as its initial delay, default 0.1 s)
    for the attempt that failed, capped at ``max_delay``, randomised by ``jitter``
    (``"full"``: uniform in [0, d]; ``"equal"``: in [d/2, d]; ``"none"``), then
    raised to the ``Retry-After`` the outcome asked for: with ``retry_after=True``
    read from the error or the returned response (seconds or an HTTP date), with a
    function ``retry_after(outcome) -> seconds | None`` your own reading, with
    ``False`` ignored. A ``Retry-After`` beyond ``max_delay`` gives up at once.

    **Bounds**: ``max_elapsed`` bounds the time from the start of the first attempt
    (a wait that would end past it is not begun); inside a
    :class:`~buttress.Timeout`, a wait that cannot end before its deadline is not
    begun either: the call fails at once with that timeout's ``TimeoutExceeded``,
    chained from the last error.

    When retries run out it raises :class:`~buttress.errors.RetryExhausted`
    (``reason``, ``attempts``, the last error as ``last_error`` and ``__cause__``,
    or the last rejected value as ``last_result``); with ``reraise=True`` it raises
    the last error itself, or returns the last value. An error that is not retried
    propagates unchanged, at once; so does every cancellation.

    Use it as a decorator, with ``call``/``acall``, in a pipeline, or as a loop
    around a block (:meth:`attempts`).
    """

    __slots__ = ("_clock", "_engine", "_plan", "_random", "_retryable", "_what", "options")

    Options: ClassVar[type[RetryOptions]] = RetryOptions
    """The options class (``Retry.Options(max_attempts=5)``, see :meth:`from_options`)."""

    options: RetryOptions
    """The validated settings."""

    def __init__(
        self,
        max_attempts: int | None = 3,
        *,
        backoff: Backoff | str = "exponential",
        delay: Seconds | None = None,
        max_delay: Seconds = 30.0,
        jitter: Jitter = "full",
        max_elapsed: Seconds | None = None,
        on: RetryOn | None = None,
        on_result: Callable[[Any], object] | None = None,
        retry_after: RetryAfter = True,
        reraise: bool = False,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        random: Callable[[], float] | None = None,
    ) -> None:
        options = RetryOptions(
            max_attempts=max_attempts,
            backoff=backoff,
            delay=delay,
            max_delay=max_delay,
            jitter=jitter,
            max_elapsed=max_elapsed,
            on=on,
            on_result=on_result,
            retry_after=retry_after,
            reraise=reraise,
        )
        self._setup(options, name, clock, random)

    @classmethod
    def from_options(
        cls,
        options: RetryOptions,
        *,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        random: Callable[[], float] | None = None,
    ) -> Retry:
        """A retry with these options (from code, or :meth:`RetryOptions.from_mapping`)."""
        return built_from(cls, options, name, clock, random)

    def _setup(
        self,
        options: RetryOptions,
        name: str | None,
        clock: Clock,
        random: Callable[[], float] | None,
    ) -> None:
        if random is not None:
            check_callable(random, "random", "a function returning floats in [0, 1)")
        self.options = options
        self._clock = check_clock(clock)
        self._random = _random.random if random is None else random
        self._retryable = retryable(options.matcher)
        self._engine = Engine(
            max_attempts=options.max_attempts,
            backoff=options.schedule,
            max_delay=cast(float, options.max_delay),  # normalised to seconds
            jitter=options.jitter,
            max_elapsed=cast("float | None", options.max_elapsed),
            retry_after=options.retry_after,
            random=self._random,
        )
        self._init_strategy(name, "retry")
        self._what = f"retry {self.name!r}"
        self._plan = self._planner()
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

    # -------------------------------------------------------------------- drivers

    def _driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        matcher = self.options.matcher
        is_async = shape.is_async
        cancelled_error: object = None
        if is_async:
            import asyncio  # noqa: PLC0415 - async drivers exist only where asyncio does

            cancelled_error = asyncio.CancelledError
        results = matcher.checks_results
        values: dict[str, object] = {
            "retryable": self._retryable,
            "result_rule": matcher.result_rule,
            "plain": _PLAIN,
            "seen": type(None),
            "monotonic": self._clock.monotonic,
            "cancelled": self._cancelled,
            "CancelledError": cancelled_error,
            "begin": self._engine.begin,
            "plan": self._plan,
            "give_up": self._give_up,
            "not_retryable": self._not_retryable,
            "events": self._events,
            "recovered": self._recovered,
            "sleep": self._clock.asleep if is_async else self._clock.sleep,
        }
        plain = results and matcher.result_rule is result_is_failure
        flags = {
            "aio": is_async,
            "timed": self._engine.timed,
            "results": results,
            "plain": plain,
            "other": results and not plain,
        }
        loop_shape = _LOOP_SHAPE[shape]
        loop_flags = {key: flags[key] for key in ("aio", "plain", "other")}
        given = targets(target)
        inner = given[-1:] if loop_shape.takes == "inner" else ()
        again = factory(_AGAIN, loop_shape, _AGAIN_PARAMS, loop_flags, label="retry")(
            *(values[p] for p in _AGAIN_PARAMS), *inner
        )
        first_flags = {key: flags[key] for key in ("aio", "timed", "results", "plain")}
        first = factory(_FIRST, shape, (*_FIRST_PARAMS, "again"), first_flags, label="retry")
        return first(*(values[p] for p in _FIRST_PARAMS), again, *given)

    # --------------------------------------------------- the failure path's helpers

    def _planner(self) -> Callable[[Attempts, object, BaseException | None, Any], float | None]:
        """``plan(state, fn, error, result)``: after a failed attempt, the wait before the
        next one, or ``None`` to give up.

        It reads the clocks the engine needs, refuses a wait the enclosing time budget
        cannot hold (raising that timeout's error, chained from the last error), and
        emits :class:`RetryScheduled`. Built once, bound to what it uses: it runs
        after every failed attempt.
        """
        engine = self._engine
        decide = engine.decide
        monotonic = self._clock.monotonic if engine.timed else None
        wall = self._clock.time if engine.reads_wall else None
        deadline = DEADLINE.get
        events = self._events
        out_of_time = self._out_of_time
        name = self.name

        def plan(state: Attempts, fn: object, error: BaseException | None, result: Any) -> Any:
            delay = decide(
                state,
                error,
                result,
                0.0 if monotonic is None else monotonic(),
                0.0 if wall is None else wall(),
            )
            if delay is None:
                return None
            if deadline() is not None:
                out_of_time(state, fn, error, result, delay)
            if events.enabled:
                events.emit(
                    RetryScheduled(name, state.attempt, delay, error, result, call=_label(fn))
                )
            return delay

        return plan

    def _out_of_time(
        self, state: Attempts, fn: object, error: BaseException | None, result: Any, delay: float
    ) -> None:
        """Refuse a wait that cannot end before the enclosing ``Timeout``'s deadline."""
        try:
            fit(delay, self._what)
        except TimeoutExceeded as exceeded:
            if self._events.enabled:
                self._events.emit(
                    RetryGaveUp(
                        self.name, state.attempt, "deadline", error, result, call=_label(fn)
                    )
                )
            raise exceeded from error

    def _give_up(
        self, state: Attempts, fn: object, error: BaseException | None, result: Any
    ) -> Any:
        """Retries ran out: raise ``RetryExhausted`` (or, with ``reraise``, the last outcome)."""
        if self._events.enabled:
            self._events.emit(
                RetryGaveUp(self.name, state.attempt, state.reason, error, result, call=_label(fn))
            )
        reraise = self.options.reraise
        if error is None:
            if reraise:
                return result
            raise RetryExhausted(
                self.name,
                state.attempt,
                last_result=result,
                reason=state.reason,
                detail=state.detail,
            )
        if reraise:
            raise error
        raise RetryExhausted(
            self.name, state.attempt, error, reason=state.reason, detail=state.detail
        ) from error

    def _not_retryable(self, state: Attempts, fn: object, error: BaseException) -> None:
        if self._events.enabled:
            self._events.emit(
                RetryGaveUp(self.name, state.attempt, "not_retryable", error, None, call=_label(fn))
            )

    def _recovered(self, state: Attempts, fn: object) -> None:
        self._events.emit(RetryRecovered(self.name, state.attempt, call=_label(fn)))

    def _cancelled(self, fn: object, exc: BaseException, attempts: int) -> None:
        """A cancellation passes through; one by a buttress ``Timeout`` ends the retry."""
        if self._events.enabled and cancelled_by_timeout(exc):
            self._events.emit(
                RetryGaveUp(self.name, attempts, "timeout", exc, None, call=_label(fn))
            )

    # ------------------------------------------------------------------- loop form

    def attempts(self, *, call: str = "") -> AttemptLoop:
        """Retry a block of code: ``for attempt in retry.attempts(): with attempt: ...``.

        Works with ``async for`` too (the waits are then awaited). Each ``with
        attempt:`` block is one attempt: an error the policy retries is swallowed and
        the loop goes round again after the wait; anything else propagates out of the
        loop at once. When retries run out, the loop raises ``RetryExhausted`` (or,
        with ``reraise=True``, the last error). To retry on a *value*, pass it to
        :meth:`Attempt.retry_on` (judged by the policy's result rule) or call
        :meth:`Attempt.retry`. ``call`` names the block in events.
        """
        return AttemptLoop(self, call)


# ----------------------------------------------------------------------------- loop form


class _RetryResult(BaseException):
    """Leaves a ``with attempt:`` block whose value is to be retried.

    A ``BaseException`` so that an ``except Exception`` in the block lets it pass.
    """

    def __init__(self, result: Any) -> None:
        super().__init__("retry on this result")
        self.result = result


class Attempt:
    """One attempt of a block run by :meth:`Retry.attempts`; use it as ``with attempt:``.

    ``number`` counts attempts from 1. ``result`` is the last value given to
    :meth:`retry_on` or :meth:`retry` (read it after a loop that ``reraise=True``
    ended on a rejected value).
    """

    __slots__ = ("_failed", "_loop", "number", "result")

    def __init__(self, loop: AttemptLoop, number: int) -> None:
        self._loop = loop
        self._failed = False
        self.number = number
        self.result: Any = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> bool:
        if exc is None:
            return False
        return self._loop._ended(self, exc)

    def retry_on(self, result: T) -> T:
        """``result`` if the policy's result rule accepts it; otherwise retry.

        The rule is ``on_result=`` or, by default, "an HTTP response with a transient
        status" (a returned 503 is retried, honouring its ``Retry-After``). A rejected
        value ends the ``with`` block at once, and the loop goes round again.
        """
        self.result = result
        if self._loop._policy.options.matcher.result_rule(result):
            raise _RetryResult(result)
        return result

    def retry(self, result: Any = None) -> NoReturn:
        """End the ``with`` block and retry, ``result`` being this attempt's outcome."""
        self.result = result
        raise _RetryResult(result)

    def __repr__(self) -> str:
        return f"Attempt(number={self.number})"


class AttemptLoop:
    """The attempts of one block: iterate with ``for`` or ``async for``.

    Made by :meth:`Retry.attempts`; one loop per run of the block. It keeps the
    same rules as a decorated call — what is retried, the waits, the bounds, the
    time budget, the events — through the same engine.
    """

    __slots__ = ("_call", "_current", "_done", "_error", "_policy", "_result", "_started", "_state")

    def __init__(self, policy: Retry, call: str) -> None:
        self._policy = policy
        self._call = call
        self._current: Attempt | None = None
        self._state: Attempts | None = None
        self._done = False
        self._error: BaseException | None = None
        self._result: Any = None
        self._started = 0.0

    def __iter__(self) -> AttemptLoop:
        return self

    def __next__(self) -> Attempt:
        delay = self._advance()
        if delay is None:
            raise StopIteration
        if delay:
            self._policy._clock.sleep(delay)
        return self._start()

    def __aiter__(self) -> AttemptLoop:
        return self

    async def __anext__(self) -> Attempt:
        delay = self._advance()
        if delay is None:
            raise StopAsyncIteration
        if delay:
            try:
                await self._policy._clock.asleep(delay)
            except BaseException as exc:
                self._policy._cancelled(self._call, exc, self._state.attempt if self._state else 1)
                raise
        return self._start()

    def _advance(self) -> float | None:
        """The wait before the next attempt (0.0 for the first), or ``None`` to stop."""
        if self._done:
            return None
        policy = self._policy
        current = self._current
        if current is None:
            if policy._engine.timed:
                self._started = policy._clock.monotonic()
            return 0.0
        if not current._failed:
            self._done = True
            if self._state is not None and policy._events.enabled:
                policy._recovered(self._state, self._call)
            return None
        state = self._state
        if state is None:
            state = self._state = policy._engine.begin(self._started)
        state.attempt = current.number
        try:
            delay = policy._plan(state, self._call, self._error, self._result)
        except BaseException:
            self._done = True
            raise
        if delay is None:
            self._done = True
            policy._give_up(state, self._call, self._error, self._result)
            return None
        return delay

    def _start(self) -> Attempt:
        current = self._current
        attempt = Attempt(self, 1 if current is None else current.number + 1)
        self._current = attempt
        if self._state is not None:
            self._state.attempt = attempt.number
        return attempt

    def _ended(self, attempt: Attempt, exc: BaseException) -> bool:
        """A ``with attempt:`` block raised ``exc``: swallow it to retry, or let it go."""
        policy = self._policy
        if attempt is not self._current or self._done:
            return False
        if isinstance(exc, _RetryResult):
            attempt._failed = True
            self._error, self._result = None, exc.result
            return True
        if isinstance(exc, Exception) and policy._retryable(exc):
            attempt._failed = True
            self._error, self._result = exc, None
            return True
        self._done = True
        if isinstance(exc, Exception):
            if attempt.number > 1 and self._state is not None:
                policy._not_retryable(self._state, self._call, exc)
        else:
            policy._cancelled(self._call, exc, attempt.number)
        return False

    def __repr__(self) -> str:
        number = 0 if self._current is None else self._current.number
        return f"AttemptLoop({self._policy.name!r}, attempt={number})"
