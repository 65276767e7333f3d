"""Fallback: answer for a failed call with something else.

When the protected call fails, a :class:`Fallback` answers instead: with an ordered
chain of alternatives (secondary provider, replica, cache, ...) tried one after the
other, then optionally with a constant ``value``. What counts as a failure is an
exception matched by ``on=`` or a result matched by ``on_result=``.

The chain behaves like the nested ``try``/``except`` one would write by hand: each
alternative runs while the failure that triggered it is being handled, so when
every answer fails, the *last* error propagates with the earlier ones reachable
through ``__context__`` (down to the primary's). Nothing is wrapped and no
exception of the user's is modified, so ``except`` clauses keep working.

Roles, as in every policy module: :class:`_Plan` is the sans-I/O engine (which
failures are answered, what answers next); :class:`FallbackUsed` the event;
:class:`Fallback` holds the sync and async drivers, which only execute the plan.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeAlias, TypeVar

from buttress._codegen import use_acall
from buttress._outcome import _PROGRAMMING
from buttress._strategy import AsyncRunner, Strategy, SyncRunner, is_async_callable
from buttress.errors import ButtressError, ConfigError
from buttress.events import Event

_Coroutine = types.CoroutineType

__all__ = [
    "Alternative",
    "ErrorHandler",
    "ExceptionMatcher",
    "Fallback",
    "FallbackUsed",
    "UnacceptableResult",
]

P = ParamSpec("P")
R = TypeVar("R")


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET

ExceptionMatcher: TypeAlias = (
    type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
)
"""What ``on=`` accepts: exception types, or a predicate on the exception."""


# ------------------------------------------------------------------------ errors, events


class UnacceptableResult(ButtressError):
    """A result that ``on_result`` declared a failure.

    An :class:`ErrorHandler` triggered by such a result receives this as its error,
    and it is raised when the chain ends on an unacceptable result.
    """

    def __init__(self, name: str, result: Any) -> None:
        self.name = name
        self.result = result
        super().__init__(f"fallback {name!r}: result {result!r} rejected by on_result")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.result))


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """The fallback is about to answer with alternative ``alternative_index``.

    ``alternative_index`` counts from 0 over the alternatives; it equals
    ``len(alternatives)`` when the answer is the constant ``value``. ``error`` is
    the failure being answered for (an :class:`UnacceptableResult` when a result
    was rejected).
    """

    alternative_index: int
    error: Exception


class ErrorHandler(Generic[P, R]):
    """An alternative that is also given the error it answers for.

    Made by :meth:`Fallback.handler`: ``fn(error, *args, **kwargs)`` where ``args``
    and ``kwargs`` are those of the protected call.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[Concatenate[Exception, P], R]) -> None:
        self.fn = fn

    def __call__(self, error: Exception, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the handler as the fallback would."""
        return self.fn(error, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Fallback.handler({self.fn!r})"


Alternative: TypeAlias = Callable[..., Any] | ErrorHandler[..., Any]
"""A callable taking the protected call's arguments, or an :class:`ErrorHandler`."""


# ------------------------------------------------------------------------ sans-I/O engine


class _Step:
    """One answer of the chain: an alternative to call, or the constant value."""

    __slots__ = ("fn", "is_async", "pass_error", "value")

    def __init__(self, alternative: Alternative | None, value: object = None) -> None:
        self.pass_error = isinstance(alternative, ErrorHandler)
        fn = alternative.fn if isinstance(alternative, ErrorHandler) else alternative
        self.fn: Callable[..., Any] | None = fn
        self.is_async = fn is not None and is_async_callable(fn)
        self.value = value


def _always(_: Exception) -> bool:
    return True


class _Plan:
    """The decisions of a fallback, free of I/O: shared by the sync and async drivers."""

    __slots__ = ("_catch", "_named", "_test", "rejects", "steps")

    def __init__(
        self,
        alternatives: tuple[Alternative, ...],
        value: object,
        on: ExceptionMatcher,
        on_result: Callable[[Any], bool] | None,
    ) -> None:
        steps = [_Step(alternative) for alternative in alternatives]
        if value is not _UNSET:
            steps.append(_Step(None, value))
        self.steps: tuple[_Step, ...] = tuple(steps)
        if isinstance(on, type):
            self._catch: tuple[type[Exception], ...] = (on,)
            self._test: Callable[[Exception], bool] = _always
        elif isinstance(on, tuple):
            self._catch, self._test = on, _always
        else:
            self._catch, self._test = (Exception,), on
        self._named = tuple(kind for kind in self._catch if issubclass(kind, _PROGRAMMING))
        self.rejects = on_result

    def answers(self, error: Exception) -> bool:
        """Whether ``error`` is a failure the fallback answers for.

        A programming error (``TypeError``, ``AttributeError``, ...) only if ``on``
        names its type: a bug must not quietly become the fallback value.
        """
        if isinstance(error, _PROGRAMMING) and not (self._named and isinstance(error, self._named)):
            return False
        return isinstance(error, self._catch) and self._test(error)

    def has_step(self, index: int) -> bool:
        """Whether there is an answer left at ``index``."""
        return index < len(self.steps)

    def goes_on(self, index: int, error: Exception) -> bool:
        """Whether the failure ``error`` of step ``index`` moves on to the next step."""
        return self.has_step(index + 1) and self.answers(error)


# ------------------------------------------------------------------------------ policy


def _async_in_sync_call(index: int) -> TypeError:
    return TypeError(
        f"fallback alternative {index} is async but the call is sync; "
        "decorate an async function or use acall()"
    )


class Fallback(Strategy):
    """Answer for a failed call with alternatives tried in order, then a constant.

    ``Fallback(*alternatives, value=..., on=Exception, on_result=None, name=None)``

    - ``alternatives``: callables invoked with the same arguments as the protected
      call (including ``self`` for a method). In async calls an alternative may be
      sync or async; in sync calls it must be sync. Wrap one with
      :meth:`Fallback.handler` to also receive the error being answered for.
    - ``value``: the final answer when every alternative failed (``None`` is a
      valid value). Leave it out to let the last failure propagate.
    - ``on``: which exceptions are failures: a type, a tuple of types, or a
      predicate on the exception. It applies to the alternatives too: an error it
      does not match propagates at once. ``BaseException``\\ s that are not
      ``Exception``\\ s (cancellation, ``KeyboardInterrupt``) always propagate.
    - ``on_result``: a predicate on a result that makes it a failure too (the
      constant ``value`` is not checked).

    The first answer that succeeds wins. When they all fail, the last error is
    raised, chained through ``__context__`` to the ones before it (as nested
    ``try``/``except`` blocks would); a rejected last result is raised as
    :class:`UnacceptableResult`. Each answer emits :class:`FallbackUsed`.
    """

    __slots__ = ("_plan", "alternatives")

    def __init__(
        self,
        *alternatives: Alternative,
        value: object = _UNSET,
        on: ExceptionMatcher = Exception,
        on_result: Callable[[Any], bool] | None = None,
        name: str | None = None,
    ) -> None:
        for index, alternative in enumerate(alternatives):
            if not callable(alternative):
                raise ConfigError(
                    f"an alternative must be callable, got {type(alternative).__name__}",
                    path=f"alternatives[{index}]",
                )
        if not alternatives and value is _UNSET:
            raise ConfigError("give at least one alternative or a value=", path="alternatives")
        _check_on(on)
        if on_result is not None and not callable(on_result):
            raise ConfigError(
                f"expected a predicate or None, got {type(on_result).__name__}", path="on_result"
            )
        self.alternatives: tuple[Alternative, ...] = alternatives
        self._plan = _Plan(alternatives, value, on, on_result)
        self._init_strategy(name, "fallback")
        self._build()

    @staticmethod
    def handler(fn: Callable[Concatenate[Exception, P], R], /) -> ErrorHandler[P, R]:
        """Make ``fn(error, *args, **kwargs)`` an alternative that sees the error.

        ``error`` is the failure being answered for: the primary's exception, the
        previous alternative's, or an :class:`UnacceptableResult`.
        """
        return ErrorHandler(fn)

    # ------------------------------------------------------------------ sync driver

    def _sync_from(self, index: int, error: Exception, args: Any, kwargs: Any) -> Any:
        # Runs inside the `except` that caught `error` (or the recursion below), so
        # whatever the alternative raises gets `error` as its __context__.
        plan = self._plan
        step = plan.steps[index]
        if self._events.enabled:
            self._events.emit(FallbackUsed(self.name, index, error))
        fn = step.fn
        if fn is None:
            return step.value
        if step.is_async:
            raise _async_in_sync_call(index)
        try:
            result = fn(error, *args, **kwargs) if step.pass_error else fn(*args, **kwargs)
        except Exception as exc:
            if plan.goes_on(index, exc):
                return self._sync_from(index + 1, exc, args, kwargs)
            raise
        if plan.rejects is not None and plan.rejects(result):
            return self._sync_rejected(index + 1, result, args, kwargs)
        return result

    def _sync_rejected(self, index: int, result: Any, args: Any, kwargs: Any) -> Any:
        # Raised and caught so that it chains like an exception: the next answer runs
        # while it is being handled, and it is what propagates if none is left.
        try:
            raise UnacceptableResult(self.name, result)
        except UnacceptableResult as exc:
            if self._plan.has_step(index):
                return self._sync_from(index, exc, args, kwargs)
            raise

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        plan = self._plan
        answer = self._sync_from
        rejected = self._sync_rejected
        rejects = plan.rejects

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                result = inner(fn, args, kwargs)
            except Exception as error:
                if plan.answers(error):
                    return answer(0, error, args, kwargs)
                raise
            if rejects is not None and rejects(result):
                return rejected(0, result, args, kwargs)
            return result

        return run

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        # The runner above, with the call inlined: one frame on the happy path.
        plan = self._plan
        for index, step in enumerate(plan.steps):
            if step.is_async:  # fail at decoration, not at the first failure in production
                raise ConfigError(
                    f"cannot fall back on an async alternative for the sync {fn!r}",
                    path=f"alternatives[{index}]",
                )
        answer: Callable[[int, Exception, Any, Any], R] = self._sync_from
        rejected: Callable[[int, Any, Any, Any], R] = self._sync_rejected
        rejects = plan.rejects

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = fn(*args, **kwargs)
                if type(result) is _Coroutine:
                    use_acall(fn, result)
            except Exception as error:
                if plan.answers(error):
                    return answer(0, error, args, kwargs)
                raise
            if rejects is not None and rejects(result):
                return rejected(0, result, args, kwargs)
            return result

        return wrapper

    # ----------------------------------------------------------------- async driver

    async def _async_from(self, index: int, error: Exception, args: Any, kwargs: Any) -> Any:
        # The twin of _sync_from; alternatives may be sync or async here.
        plan = self._plan
        step = plan.steps[index]
        if self._events.enabled:
            self._events.emit(FallbackUsed(self.name, index, error))
        fn = step.fn
        if fn is None:
            return step.value
        try:
            result = fn(error, *args, **kwargs) if step.pass_error else fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            if plan.goes_on(index, exc):
                return await self._async_from(index + 1, exc, args, kwargs)
            raise
        if plan.rejects is not None and plan.rejects(result):
            return await self._async_rejected(index + 1, result, args, kwargs)
        return result

    async def _async_rejected(self, index: int, result: Any, args: Any, kwargs: Any) -> Any:
        # Raised and caught so that it chains like an exception: the next answer runs
        # while it is being handled, and it is what propagates if none is left.
        try:
            raise UnacceptableResult(self.name, result)
        except UnacceptableResult as exc:
            if self._plan.has_step(index):
                return await self._async_from(index, exc, args, kwargs)
            raise

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        plan = self._plan
        answer = self._async_from
        rejected = self._async_rejected
        rejects = plan.rejects

        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                result = await inner(fn, args, kwargs)
            except Exception as error:
                if plan.answers(error):
                    return await answer(0, error, args, kwargs)
                raise
            if rejects is not None and rejects(result):
                return await rejected(0, result, args, kwargs)
            return result

        return run

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        plan = self._plan
        answer: Callable[[int, Exception, Any, Any], Awaitable[R]] = self._async_from
        rejected: Callable[[int, Any, Any, Any], Awaitable[R]] = self._async_rejected
        rejects = plan.rejects

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = await fn(*args, **kwargs)
            except Exception as error:
                if plan.answers(error):
                    return await answer(0, error, args, kwargs)
                raise
            if rejects is not None and rejects(result):
                return await rejected(0, result, args, kwargs)
            return result

        return wrapper

    def __repr__(self) -> str:
        return f"Fallback(name={self.name!r}, alternatives={len(self.alternatives)})"


def _check_on(on: object) -> None:
    types = on if isinstance(on, tuple) else (on,)
    if isinstance(on, tuple) and not on:
        raise ConfigError("expected at least one exception type", path="on")
    if not isinstance(on, type | tuple) and callable(on):
        return
    for kind in types:
        if not isinstance(kind, type) or not issubclass(kind, BaseException):
            raise ConfigError(f"expected exception types or a predicate, got {kind!r}", path="on")
        if not issubclass(kind, Exception):
            raise ConfigError(
                f"{kind.__name__} is not an Exception: BaseExceptions such as "
                "CancelledError and KeyboardInterrupt always propagate",
                path="on",
            )
