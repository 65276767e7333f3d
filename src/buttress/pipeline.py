"""Pipelines: strategies composed outermost first.

``Pipeline(Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10))`` runs a call
inside a bulkhead, inside a breaker, retried, the whole under a two-second limit.
The chain of runners is built once, here; a call walks it without allocating.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

from buttress._events import Event, Listener
from buttress._strategy import AsyncRunner, Strategy, SyncRunner, invoke, invoke_async
from buttress.errors import ConfigError

__all__ = ["Pipeline"]

P = ParamSpec("P")
R = TypeVar("R")


class Pipeline(Strategy):
    """An ordered list of strategies, outermost first, run as one.

    Use it like any policy: ``pipeline.call(fn, *args)``,
    ``await pipeline.acall(afn, *args)``, ``pipeline(fn, *args)``, or ``@pipeline``
    on a function, method, async function or async method. A pipeline is itself a
    strategy, so pipelines nest. The same policy object may appear in several
    pipelines and then shares its state (one breaker guarding several call sites).
    """

    __slots__ = ("strategies",)

    def __init__(self, *strategies: Strategy, name: str | None = None) -> None:
        if not strategies:
            raise ConfigError(
                "a pipeline needs at least one policy, e.g. Pipeline(Timeout(2.0), Retry())",
                path="strategies",
            )
        for index, strategy in enumerate(strategies):
            if not isinstance(strategy, Strategy):
                raise ConfigError(
                    f"expected a policy or pipeline, got {type(strategy).__name__}",
                    path=f"strategies[{index}]",
                )
        self.strategies: tuple[Strategy, ...] = strategies
        self._init_strategy(name, "pipeline")
        self._build()

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        for strategy in reversed(self.strategies):
            inner = strategy._sync_runner(inner)
        return inner

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        for strategy in reversed(self.strategies):
            inner = strategy._async_runner(inner)
        return inner

    # A decorated function's wrapper is the outermost policy's own, around the runners
    # of the rest: one frame (an async one: one coroutine) less per call.

    def _decorate_sync(self, fn: Callable[P, R]) -> Callable[P, R]:
        wrapper = self._wrap(fn, is_async=False)
        return super()._decorate_sync(fn) if wrapper is None else wrapper

    def _decorate_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        wrapper = self._wrap(fn, is_async=True)
        return super()._decorate_async(fn) if wrapper is None else wrapper

    def _wrap(self, fn: Callable[..., Any], *, is_async: bool) -> Any:
        first, rest = self.strategies[0], self.strategies[1:]
        if not rest:
            return first._decorate_async(fn) if is_async else first._decorate_sync(fn)
        inner: Any = invoke_async if is_async else invoke
        for strategy in reversed(rest):
            inner = strategy._async_runner(inner) if is_async else strategy._sync_runner(inner)
        wrapper = first._around(fn, inner, is_async)
        return None if wrapper is None else functools.wraps(fn)(wrapper)

    def _policies(self) -> Iterator[Strategy]:
        """Every policy in this pipeline, nested pipelines walked into, each once."""
        seen: set[int] = set()
        for strategy in self.strategies:
            found = strategy._policies() if isinstance(strategy, Pipeline) else (strategy,)
            for policy in found:
                if id(policy) not in seen:
                    seen.add(id(policy))
                    yield policy

    def subscribe(self, listener: Listener, *types: type[Event]) -> Callable[[], None]:
        """Send the events of every policy in this pipeline to ``listener``.

        Nested pipelines included; a policy that appears twice sends each event once.
        With ``types``, only events that are instances of one of them are delivered.
        Returns the function that unsubscribes from all of them.
        """
        undo = [policy.subscribe(listener, *types) for policy in self._policies()]

        def unsubscribe() -> None:
            for step in undo:
                step()

        return unsubscribe

    def __iter__(self) -> Iterator[Strategy]:
        return iter(self.strategies)

    def __len__(self) -> int:
        return len(self.strategies)

    def __getitem__(self, index: int) -> Strategy:
        return self.strategies[index]

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.strategies)
        return f"Pipeline({inner}, name={self.name!r})"
