"""The execution model shared by every policy and by :class:`~buttress.Pipeline`.

A strategy contributes *runners*: a sync runner is a plain function
``run(fn, args, kwargs) -> result`` and an async runner is
``run(fn, args, kwargs) -> awaitable``. A strategy builds its runner around the
runner of the strategy inside it (``_sync_runner(inner)``), once, the first time it
is needed — so a call allocates no closures, contexts or attempt records; it only
passes ``fn``, the argument tuple and the keyword dict down the chain.

The innermost runner is :func:`invoke` (sync) or :func:`invoke_async`. The sync one
also refuses an async function: a coroutine returned to a sync caller means no
protection was applied (the call has not even started), so it is closed and a
``TypeError`` names ``acall``. Policies whose drivers are generated
(:mod:`buttress._codegen`) call the function directly when nothing is inside them,
with the same check inlined.

Two bases:

- :class:`Strategy`, internal: subclasses implement ``_sync_runner`` /
  ``_async_runner`` (and may specialise ``_decorate_sync`` / ``_decorate_async``).
- :class:`Policy`, public: subclasses implement :meth:`Policy.execute` and
  :meth:`Policy.aexecute` and get everything else — decorator, ``call``/``acall``,
  pipelines, events, the registry.
"""

from __future__ import annotations

import functools
import itertools
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar, cast, final, overload

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
    use_acall,
)
from buttress._events import Emitter, Event, Listener, call_name
from buttress._validate import check_name

__all__ = [
    "AsyncRunner",
    "Call",
    "GeneratedDrivers",
    "Policy",
    "Strategy",
    "SyncRunner",
    "UseAcall",
    "default_name",
    "invoke",
    "invoke_async",
    "is_async_callable",
]

P = ParamSpec("P")
R = TypeVar("R")

SyncRunner: TypeAlias = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
AsyncRunner: TypeAlias = Callable[
    [Callable[..., Any], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]

_counters: dict[str, itertools.count[int]] = {}
_Coroutine = types.CoroutineType


def invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The innermost sync runner: call the user's function; refuse a coroutine."""
    result = fn(*args, **kwargs)
    if type(result) is _Coroutine:
        use_acall(fn, result)
    return result


def invoke_async(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The innermost async runner: the user's coroutine, for the strategy above to await."""
    return fn(*args, **kwargs)


def default_name(kind: str) -> str:
    """``kind-N``: a distinct name for a policy its user did not name."""
    counter = _counters.setdefault(kind, itertools.count(1))
    return f"{kind}-{next(counter)}"


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
_FunctionType = types.FunctionType


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (functions, methods, partials, objects)."""
    # A plain function with an empty __dict__ carries no marker that could make it
    # count as async (3.12's markcoroutinefunction, functools.wraps): its code
    # flags answer, in a few dozen nanoseconds rather than inspect's hundreds.
    if type(fn) is _FunctionType and not fn.__dict__:
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    import inspect  # noqa: PLC0415 - decided once per decorated function, off the hot path

    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


@final
class UseAcall:
    """What the type checker sees a sync entry point return for an async function.

    ``policy.call(async_fn)`` raises ``TypeError`` at run time (the coroutine would
    run unprotected); typed as returning this, it is also refused by ``mypy``
    wherever its result is used — awaited, assigned to a typed name, returned.
    Use ``await policy.acall(async_fn)``.
    """

    __slots__ = ()

    def __init__(self) -> None:  # pragma: no cover - never built
        raise TypeError("UseAcall only exists for the type checker")


_live: weakref.WeakSet[Strategy] = weakref.WeakSet()


def live() -> list[Strategy]:
    """Every policy and pipeline alive in this process (for metrics and health views).

    Held weakly: a policy nobody references any more drops out.
    """
    while True:
        try:
            return list(_live)
        except RuntimeError:  # pragma: no cover - the set changed while being copied
            continue


class Strategy:
    """Base of policies and pipelines: run a callable through this strategy.

    Subclasses implement :meth:`_sync_runner` and :meth:`_async_runner` and call
    :meth:`_build` at the end of ``__init__``. (No ``__getattr__`` here: on CPython
    3.11 a class with one loses the specialised attribute reads every driver
    relies on.) Everything else — ``call``, ``acall``,
    use as a decorator — comes from here. A subclass may override
    ``_decorate_sync``/``_decorate_async`` with a specialised wrapper, provided the
    decisions stay in its sans-I/O engine.
    """

    __slots__ = ("__weakref__", "_async", "_events", "_sync", "name")

    name: str
    _events: Emitter
    _sync: SyncRunner
    _async: AsyncRunner

    def _init_strategy(self, name: str | None, kind: str) -> None:
        checked = check_name(name)
        self.name = checked if checked is not None else default_name(kind)
        self._events = Emitter()
        _live.add(self)

    def _build(self) -> None:
        """Build both runners now (they are otherwise built on first use)."""
        self._sync = self._sync_runner(invoke)
        self._async = self._async_runner(invoke_async)

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

    @overload
    def call(  # async functions are refused on purpose: see UseAcall
        self, fn: Callable[P, Coroutine[Any, Any, Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> UseAcall: ...

    @overload
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` through this strategy.

        ``fn`` must be synchronous: given an async function (or anything returning a
        coroutine) it raises ``TypeError`` before anything runs; use :meth:`acall`.
        """
        return self._sync(fn, args, kwargs)

    def acall(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """Run ``await fn(*args, **kwargs)`` through this strategy.

        Returns the strategy's own coroutine (await it, or make a task of it): no
        coroutine of its own around it, one frame less per call.
        """
        # Every async runner is an ``async def`` (generated, or the Policy base's).
        return cast("Coroutine[Any, Any, R]", self._async(fn, args, kwargs))

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

    def _around(self, fn: Callable[..., Any], inner: Callable[..., Any], is_async: bool) -> Any:
        """A decorator's wrapper of ``fn`` applying this strategy around the runner
        ``inner`` (a pipeline's outermost policy around the rest), or ``None`` when this
        strategy has no such shape: the pipeline then wraps its runners itself."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class GeneratedDrivers(Strategy):
    """A strategy whose drivers are generated from one template (:mod:`buttress._codegen`).

    Subclasses implement :meth:`_driver`; the runners and decorators of every shape
    come from it: a runner around the next strategy, a runner that calls the
    function directly when nothing is inside, and a decorator's wrapper, each sync
    and async.
    """

    __slots__ = ()

    def _driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        """The driver in ``shape``; ``target`` is the next runner, the decorated
        function, ``(fn, inner)`` for a wrapper around runners, or ``None`` (a direct
        runner, which gets ``fn`` per call)."""
        raise NotImplementedError

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        if inner is invoke:
            return self._driver(SYNC_DIRECT, None)
        return self._driver(SYNC_RUNNER, inner)

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        if inner is invoke_async:
            return self._driver(ASYNC_DIRECT, None)
        return self._driver(ASYNC_RUNNER, inner)

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        return functools.wraps(fn)(self._driver(SYNC_DECORATOR, fn))

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        return functools.wraps(fn)(self._driver(ASYNC_DECORATOR, fn))

    def _around(self, fn: Callable[..., Any], inner: Callable[..., Any], is_async: bool) -> Any:
        return self._driver(ASYNC_AROUND if is_async else SYNC_AROUND, (fn, inner))


# ------------------------------------------------------------------------ public base


class Call(Generic[R]):
    """One call passing through a :class:`Policy`: run it with ``call()``.

    ``fn``, ``args`` and ``kwargs`` are the function and its arguments; ``name`` is
    the function's qualified name (``"app.client.fetch"``), for events and logs.
    Calling it runs the rest of the pipeline — the policies inside this one, then
    the function — and may be done more than once (a retry) or not at all (a
    rejection).
    """

    __slots__ = ("_run", "args", "fn", "kwargs")

    def __init__(
        self,
        run: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._run = run
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    @property
    def name(self) -> str:
        """``module.qualname`` of the function being called."""
        return call_name(self.fn)

    def __call__(self) -> R:
        result: R = self._run(self.fn, self.args, self.kwargs)
        return result

    def __repr__(self) -> str:
        return f"Call({self.name})"


class Policy(Strategy):
    """The base class of your own policies.

    Implement the pair of hooks — :meth:`execute` for sync calls and
    :meth:`aexecute` for async ones — each given the :class:`Call` to run; run it
    (``call()`` / ``await call()``) zero, one or more times, and return or raise
    what the caller should see. Everything else comes with the base: use as a
    decorator on ``def`` and ``async def``, ``call``/``acall``, a place in any
    :class:`~buttress.Pipeline`, ``subscribe`` and :meth:`emit` for events, and
    ``register_kind`` to build it from TOML. Call ``super().__init__(name=name)``
    from your ``__init__``; nothing needs building after it::

        class Counting(Policy):
            def __init__(self, *, name: str | None = None) -> None:
                super().__init__(name=name)
                self.calls = 0

            def execute(self, call: Call[R]) -> R:
                self.calls += 1
                return call()

            async def aexecute(self, call: Call[Awaitable[R]]) -> R:
                self.calls += 1
                return await call()

    See ``docs/extending.md`` for a whole policy, with options, events and tests.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def __init__(self: Policy, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if type(self).__init__ is __init__:  # the outermost __init__ has run
                self._finish()

        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self, *, name: str | None = None) -> None:
        self._init_strategy(name, type(self).__name__.lower())
        if type(self).__init__ is Policy.__init__:
            self._finish()

    def _finish(self) -> None:
        # After the user's __init__: what super().__init__ would have set, then the
        # runners (built once, now that the policy's own attributes exist).
        try:
            self.name  # noqa: B018 - is it set?
        except AttributeError:
            self._init_strategy(None, type(self).__name__.lower())
        self._build()

    def execute(self, call: Call[R]) -> R:
        """Run a sync call through this policy; the default just runs it."""
        return call()

    async def aexecute(self, call: Call[Awaitable[R]]) -> R:
        """Run an async call through this policy; the default just runs it."""
        return await call()

    @property
    def listening(self) -> bool:
        """Whether anybody listens to this policy's events (build them only then)."""
        return self._events.enabled

    def emit(self, event: Event) -> None:
        """Send ``event`` to this policy's listeners and the global ones."""
        if self._events.enabled:
            self._events.emit(event)

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        execute = self.execute

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return execute(Call(inner, fn, args, kwargs))

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        aexecute = self.aexecute

        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return await aexecute(Call(inner, fn, args, kwargs))

        return run
