"""The fallback's drivers: generated from two templates, in every shape.

``_DRIVER`` is the happy path — call, and on a failure the plan says to answer for,
hand over to the chain — generated as runner, direct runner and decorator, sync and
async (:class:`~buttress._strategy.GeneratedDrivers`). ``_CHAIN`` walks the answers,
generated sync and async. Neither holds a decision of its own: they ask the
:class:`~._plan.Plan`.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable as _Awaitable
from collections.abc import Callable
from typing import Any, ClassVar, Concatenate, NoReturn, ParamSpec, TypeVar

from buttress._codegen import (
    ASYNC_DIRECT,
    SYNC_AROUND,
    SYNC_DECORATOR,
    SYNC_DIRECT,
    Shape,
    Target,
    factory,
    targets,
)
from buttress._options import built_from
from buttress._outcome import OnErrors
from buttress._strategy import GeneratedDrivers
from buttress.errors import ConfigError
from buttress.events import call_name

from . import _events
from ._events import UnacceptableResult
from ._options import UNSET, Alternative, ErrorHandler, FallbackOptions
from ._plan import Plan

_CoroutineType = types.CoroutineType


def _is_awaitable(value: object) -> bool:
    """``inspect.isawaitable`` without importing :mod:`inspect` (an alternative's result)."""
    return type(value) is _CoroutineType or isinstance(value, _Awaitable)


__all__ = ["Fallback"]

P = ParamSpec("P")
R = TypeVar("R")


# Results that cannot be HTTP responses, answered by one set lookup. Not the outcome
# model's own cache of types seen (which grows): a coroutine type must never be in
# here, since a plain result skips the sync drivers' check for coroutines.
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)
_PLAIN_TYPES = frozenset((*_SCALARS, list, tuple, dict, set, frozenset))


def _async_in_sync_call(index: int) -> TypeError:
    return TypeError(
        f"fallback alternative {index} is async but the call is sync; "
        "decorate an async function or use acall()"
    )


def _refuse_coroutine(index: int, coroutine: Any) -> NoReturn:
    coroutine.close()  # it never ran; closing it spares a "never awaited" warning
    raise _async_in_sync_call(index)


# The happy path, in every shape. Whatever the call raises is tested once against the
# plan's rule for errors; a result, against its rule for results (see Plan.flags) —
# with the default rule, a value of a plain built-in type returns at once: it cannot
# be an HTTP response, and the set lookup spares a call per success.
_DRIVER = """
{DEF} fallback{SIG}:
    try:
        result = {AWAIT}{CALL}
    except Exception as error:
        if answers(error):
            return {AWAIT}answer(fn, 0, error, args, kwargs)
        raise
    @plain if type(result) in plain:
        @plain return result
    {CHECK}
    @checked if rejects(result):
        @checked try:
            @checked raise unacceptable(name, result)
        @checked except unacceptable as rejected:
            @checked return {AWAIT}answer(fn, 0, rejected, args, kwargs)
    return result
"""
_DRIVER_PARAMS = ("answer", "answers", "rejects", "plain", "unacceptable", "name")

# The answers, from step `index` on. It runs inside the `except` that caught `error`
# (or, recursing, inside the next one), so whatever an answer raises gets `error` as
# its __context__: the chain reads like the nested try/except one would write, and
# the last error propagates with every earlier one reachable. A rejected result is
# raised and caught for the same reason. It uses no placeholder but {DEF}/{AWAIT}, so
# it is generated in the direct shapes.
_CHAIN = """
{DEF} answer(fn, index, error, args, kwargs):
    step = steps[index]
    if events.enabled:
        events.emit(used(name, index, error, call=call_name(fn)))
    alternative = step.fn
    if alternative is None:
        return step.value
    @sync if step.is_async:
        @sync raise async_in_sync_call(index)
    try:
        if step.pass_error:
            result = alternative(error, *args, **kwargs)
        else:
            result = alternative(*args, **kwargs)
        @async if isawaitable(result):
            @async result = await result
    except Exception as exc:
        if goes_on(index, exc):
            return {AWAIT}answer(fn, index + 1, exc, args, kwargs)
        raise
    @plain if type(result) in plain:
        @plain return result
    @sync if type(result) is _coroutine:
        @sync refuse_coroutine(index, result)
    @checked if rejects(result):
        @checked try:
            @checked raise unacceptable(name, result)
        @checked except unacceptable as rejected:
            @checked if has_step(index + 1):
                @checked return {AWAIT}answer(fn, index + 1, rejected, args, kwargs)
            @checked raise
    return result
"""
_CHAIN_PARAMS = (
    "steps",
    "events",
    "used",
    "call_name",
    "name",
    "goes_on",
    "has_step",
    "rejects",
    "plain",
    "unacceptable",
    "async_in_sync_call",
    "refuse_coroutine",
    "isawaitable",
)


class Fallback(GeneratedDrivers):
    """Answer for a failed call with alternatives tried in order, then a constant.

    ``Fallback(*alternatives, value=..., on=None, on_result=None, name=None)``

    - ``alternatives``: callables invoked with the same arguments as the protected
      call (including ``self`` for a method). In async calls an alternative may be
      sync or async; in sync calls it must be sync. Wrap one with
      :meth:`Fallback.handler` to also receive the error being answered for.
    - ``value``: the final answer when every alternative failed (``None`` is a
      valid value). Leave it out to let the last failure propagate.
    - ``on``: which errors are failures, as for every policy: a
      :class:`~buttress.Matcher`, an exception type, a tuple of types, or a
      predicate on the exception. By default: transient errors
      (:func:`~buttress.errors.is_transient`), timeouts, and buttress's rejections
      (an open circuit, a full bulkhead, a rate limit, an exhausted retry — the
      dependency is known to be down, and answering is the point). A permanent
      error (an HTTP 4xx, a ``ValueError``) propagates, and so does a programming
      error (``TypeError``, ``AttributeError``, ...) unless ``on`` names its type. It
      applies to the alternatives too: an error it does not match propagates at
      once. A ``CancelledError`` (even one caused by a ``Timeout``) is never answered
      for, nor any ``BaseException`` that is not an ``Exception``.
    - ``on_result``: a predicate on a result that makes it a failure; by default, an
      HTTP response with a transient status (a 503 returned rather than raised) is
      one. The constant ``value`` is never checked.

    The first answer that succeeds wins. When they all fail, the last error is
    raised, chained through ``__context__`` to the ones before it (as nested
    ``try``/``except`` blocks would); a rejected last result is raised as
    :class:`UnacceptableResult`. Each answer emits :class:`FallbackUsed`.

    The settings are kept, validated, as ``fallback.options`` (a
    :class:`FallbackOptions`); :meth:`from_options` builds a fallback from one.
    """

    __slots__ = ("_plan", "options")

    Options: ClassVar[type[FallbackOptions]] = FallbackOptions
    """The options class of this policy."""

    def __init__(
        self,
        *alternatives: Alternative,
        value: object = UNSET,
        on: OnErrors | None = None,
        on_result: Callable[[Any], object] | None = None,
        name: str | None = None,
    ) -> None:
        options = FallbackOptions(
            alternatives=alternatives, value=value, on=on, on_result=on_result
        )
        self._setup(options, name)

    @classmethod
    def from_options(cls, options: FallbackOptions, *, name: str | None = None) -> Fallback:
        """A fallback with these options (from code, or a configuration file)."""
        return built_from(cls, options, name)

    def _setup(self, options: FallbackOptions, name: str | None) -> None:
        if not options.alternatives and options.value is UNSET:
            raise ConfigError(
                "give at least one alternative or a value (in a configuration table, "
                "value = ...; alternatives are code: FallbackOptions.replace(alternatives=...))",
                path="alternatives",
            )
        self.options = options
        self._plan = Plan(options)
        self._init_strategy(name, "fallback")
        self._build()

    @property
    def alternatives(self) -> tuple[Alternative, ...]:
        """The alternatives, in the order they are tried."""
        return self.options.alternatives

    @staticmethod
    def handler(fn: Callable[Concatenate[Exception, P], R], /) -> ErrorHandler[P, R]:
        """Make ``fn(error, *args, **kwargs)`` an alternative that sees the error.

        ``error`` is the failure being answered for: the primary's exception, the
        previous alternative's, or an :class:`UnacceptableResult`.
        """
        return ErrorHandler(fn)

    # ------------------------------------------------------------------ drivers

    def _chain(self, is_async: bool) -> Callable[..., Any]:
        plan = self._plan
        flags = {**plan.flags, "sync": not is_async, "async": is_async}
        make = factory(
            _CHAIN, ASYNC_DIRECT if is_async else SYNC_DIRECT, _CHAIN_PARAMS, flags,
            label="fallback chain",
        )  # fmt: skip
        return make(
            plan.steps,
            self._events,
            _events.FallbackUsed,  # looked up now, so a test may replace it
            call_name,
            self.name,
            plan.goes_on,
            plan.has_step,
            plan.rejects,
            _PLAIN_TYPES,
            UnacceptableResult,
            _async_in_sync_call,
            _refuse_coroutine,
            _is_awaitable,
        )

    def _driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        plan = self._plan
        if shape is SYNC_DECORATOR:
            plan.check_sync(target)  # at decoration, not at the first failure in production
        elif shape is SYNC_AROUND:
            plan.check_sync(targets(target)[0])
        make = factory(_DRIVER, shape, _DRIVER_PARAMS, plan.flags, label="fallback")
        values = (
            self._chain(shape.is_async),
            plan.answers,
            plan.rejects,
            _PLAIN_TYPES,
            UnacceptableResult,
            self.name,
        )
        return make(*values, *targets(target))

    def __repr__(self) -> str:
        return f"Fallback(name={self.name!r}, alternatives={len(self.alternatives)})"
