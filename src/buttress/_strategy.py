"""The execution model shared by every policy and by :class:`~buttress.Pipeline`.

A strategy contributes *runners*: a sync runner is a plain function
``run(fn, args, kwargs) -> result`` and an async runner is
``run(fn, args, kwargs) -> awaitable``. A strategy builds its runner around the
runner of the strategy inside it (``_sync_runner(inner)``), once, when the pipeline
or policy is built — so a call allocates no closures, contexts or attempt records;
it only passes ``fn``, the argument tuple and the keyword dict down the chain.

The innermost runner is :func:`invoke`, which calls ``fn(*args, **kwargs)``. For
async execution the same :func:`invoke` returns ``fn``'s coroutine and the strategy
above awaits it, so the chain has no extra coroutine at the bottom.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar, overload

from buttress.events import Emitter, Event, Listener

P = ParamSpec("P")
R = TypeVar("R")

SyncRunner: TypeAlias = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
AsyncRunner: TypeAlias = Callable[
    [Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]

_counters: dict[str, itertools.count[int]] = {}


def invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The innermost runner: call the user's function."""
    return fn(*args, **kwargs)


def default_name(kind: str) -> str:
    """``kind-N``: a distinct name for a policy its user did not name."""
    counter = _counters.setdefault(kind, itertools.count(1))
    return f"{kind}-{next(counter)}"


_CO_COROUTINE = inspect.CO_COROUTINE
_FunctionType = types.FunctionType


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (functions, methods, partials, objects)."""
    # A plain function with an empty __dict__ carries no marker that could make it
    # count as async (3.12's markcoroutinefunction, functools.wraps): its code
    # flags answer, in a few dozen nanoseconds rather than inspect's hundreds.
    if type(fn) is _FunctionType and not fn.__dict__:
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


class Strategy:
    """Base of policies and pipelines: run a callable through this strategy.

    Subclasses implement :meth:`_sync_runner` and :meth:`_async_runner` and call
    :meth:`_build` at the end of ``__init__``. Everything else — ``call``, ``acall``,
    use as a decorator — comes from here. A subclass may override ``call``,
    ``acall`` or ``_decorate_sync`` with a specialised fast path, provided the
    decisions stay in its sans-I/O engine.
    """

    __slots__ = ("_async", "_events", "_sync", "name")

    name: str
    _events: Emitter
    _sync: SyncRunner
    _async: AsyncRunner

    def _init_strategy(self, name: str | None, kind: str) -> None:
        self.name = name if name is not None else default_name(kind)
        self._events = Emitter()

    def _build(self) -> None:
        self._sync = self._sync_runner(invoke)
        self._async = self._async_runner(invoke)

    # ---------------------------------------------------------------- for subclasses

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        """Return a runner that applies this strategy around ``inner``."""
        raise NotImplementedError

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        """Return an async runner that applies this strategy around ``inner``."""
        raise NotImplementedError

    # ---------------------------------------------------------------------- public

    def subscribe(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Send this policy's events to ``listener``; returns the unsubscribe function."""
        return self._events.subscribe(listener, *types)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` through this strategy."""
        result: R = self._sync(fn, args, kwargs)
        return result

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` through this strategy."""
        result: R = await self._async(fn, args, kwargs)
        return result

    def decorate(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Wrap ``fn`` (sync or async, function or method) so every call runs through this."""
        if isinstance(fn, staticmethod | classmethod):
            # Decorating above @staticmethod/@classmethod: wrap the function inside and
            # keep the descriptor, or the wrapper would bind like an instance method.
            return type(fn)(self.decorate(fn.__func__))
        if is_async_callable(fn):
            return self._decorate_async(fn)  # type: ignore[arg-type, return-value]
        return self._decorate_sync(fn)

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        run = self._sync

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            result: R = run(fn, args, kwargs)
            return result

        return wrapper

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        run = self._async

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            result: R = await run(fn, args, kwargs)
            return result

        return wrapper

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def __call__(self, fn: Callable[..., R], arg: Any, /, *args: Any, **kwargs: Any) -> R: ...

    @overload
    def __call__(self, fn: Callable[..., R], /, **kwargs: Any) -> R: ...

    def __call__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``strategy(fn)`` decorates; ``strategy(fn, *args, **kwargs)`` calls.

        With at least one argument, ``fn`` is run now: its result is returned, or for
        an async ``fn`` an awaitable of it. To run a function that takes no
        arguments, use :meth:`call` or :meth:`acall`.
        """
        if not args and not kwargs:
            return self.decorate(fn)
        if is_async_callable(fn):
            return self._async(fn, args, kwargs)
        return self._sync(fn, args, kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
