"""The drivers of a shared breaker: the local drivers, plus one tally per fast success.

``CircuitBreaker(sync=...)`` builds a :class:`SharedCircuitBreaker`. A local
breaker records nothing for a success on its lock-free path (the window would not
change), but the *shared* window must hear of it, or the failures other processes
report would be weighed against too few successes. So where the local drivers do
``if not fast: on_success(...)``, these do::

    if fast:
        tally()            # itertools.count().__next__: atomic, no lock, no clock
    else:
        on_success(ticket, elapsed)

Everything else — admission, failures, slow calls, transitions — is the engine's,
exactly as for a local breaker. The drivers are spelled out per entry point for the
same reason as the local ones: every Python frame on the success path costs.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from buttress._codegen import use_acall
from buttress._strategy import AsyncRunner, SyncRunner

from ._policy import CircuitBreaker
from ._shared import SharedCircuitEngine
from ._window import CircuitMetrics

_Coroutine = types.CoroutineType

__all__ = ["SharedCircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")


class SharedCircuitBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` shared with other processes (built with ``sync=``)."""

    __slots__ = ()

    _engine: SharedCircuitEngine

    @property
    def shared_metrics(self) -> CircuitMetrics | None:
        shared = self._engine.shared_metrics
        return None if shared is None else CircuitMetrics(*shared)

    # --------------------------------------------------------------------- drivers

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        tally = engine.tally
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
                if fast:
                    tally()
                else:
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
            if fast and elapsed < slow_after:
                tally()
            else:
                on_success(ticket, elapsed)
            return result

        return timed_run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        tally = engine.tally
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
                if fast:
                    tally()
                else:
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
            if fast and elapsed < slow_after:
                tally()
            else:
                on_success(ticket, elapsed)
            return result

        return timed_run

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        tally = engine.tally
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
                if fast:
                    tally()
                else:
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
            if fast and elapsed < slow_after:
                tally()
            else:
                on_success(ticket, elapsed)
            return result

        return timed_wrapper

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        engine = self._engine
        acquire, on_success, on_error = engine.acquire, engine.on_success, engine.on_error
        tally = engine.tally
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
                if fast:
                    tally()
                else:
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
            if fast and elapsed < slow_after:
                tally()
            else:
                on_success(ticket, elapsed)
            return result

        return timed_wrapper

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
        elif fast and elapsed < engine.slow_after:
            engine.tally()
        else:
            engine.on_success(ticket, elapsed)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._engine._state.value!r}, shared=True)"
        )
