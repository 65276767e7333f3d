"""Timeout: give a call a time limit and stop waiting for it when the limit passes.

``Timeout(2.0)`` raises :class:`~buttress.errors.TimeoutExceeded` (also a
:class:`TimeoutError`) when the call has not finished within two seconds.

*Async calls* are cancelled when their time is up, the way :func:`asyncio.timeout`
does it (``Task.cancel`` at the deadline, ``Task.uncancel`` when the cancellation
turns out to be ours), so a cancellation from outside still arrives as
:class:`asyncio.CancelledError`. It is cheaper than :func:`asyncio.timeout`: every
call of one ``Timeout`` has the same duration, so their deadlines arrive in the order
the calls started, and one loop timer per event loop serves them all from an
insertion-ordered ``task -> deadline`` dict. A call adds its entry and deletes it
when done; the timer only wakes when the oldest entry falls due.

*Sync calls* cannot be interrupted from outside in Python, and buttress never starts a
thread per call. Two modes are offered:

- ``"optimistic"`` (default): the deadline is published in a context variable, read
  with :func:`remaining`, so cooperative code (and buttress's own clients) can give
  their sockets and queries the time that is left. A call that returns after its
  deadline raises ``TimeoutExceeded``; its result is discarded, but whatever it did
  (rows written, requests sent) has happened.
- ``"pessimistic"``: the call runs on one shared, bounded thread pool and the caller
  waits at most ``seconds`` for it. On timeout the caller gets ``TimeoutExceeded`` at
  once and the call is abandoned: it keeps running to its end in the pool, occupying
  a worker (see :func:`set_pessimistic_workers`).

:func:`remaining` also works inside async calls and nested timeouts: the earliest
deadline wins.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from buttress._deadline import (
    DEADLINE,
    Expiry,
    mark_timeout_cancel,
    remaining,
    unmark_timeout_cancel,
)
from buttress._strategy import AsyncRunner, Strategy, SyncRunner
from buttress.clock import MONOTONIC, Clock, TimerHandle
from buttress.errors import ConfigError, TimeoutExceeded
from buttress.events import Emitter, Event

__all__ = [
    "Timeout",
    "TimeoutMode",
    "TimeoutOccurred",
    "remaining",
    "set_pessimistic_workers",
]

TimeoutMode = Literal["optimistic", "pessimistic"]
"""How a *sync* call is timed out; async calls are always cancelled."""

_MODES = ("optimistic", "pessimistic")

_current_task = asyncio.current_task
_CancelledError = asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class TimeoutOccurred(Event):
    """A call ran out of time; ``timeout`` is the limit it had, in seconds."""

    timeout: float


# ----------------------------------------------------------------------------- deadline

# (deadline, clock, timeout) of the innermost active Timeout: see buttress._deadline.
_DEADLINE = DEADLINE


def _publish_nested(
    deadline: float, clock: Clock, seconds: float, current: tuple[float, Clock, Expiry], me: Expiry
) -> contextvars.Token[tuple[float, Clock, Expiry] | None] | None:
    """Publish ``deadline`` under an enclosing one only if it is earlier."""
    outer, outer_clock, _ = current
    if outer_clock is clock:
        earlier = deadline < outer
    else:
        earlier = seconds < outer - outer_clock.monotonic()
    return _DEADLINE.set((deadline, clock, me)) if earlier else None


# ----------------------------------------------------------------- the pessimistic pool

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = min(32, (os.cpu_count() or 1) + 4)


def set_pessimistic_workers(max_workers: int) -> None:
    """Size the thread pool shared by every ``Timeout(mode="pessimistic")``.

    The default is ``min(32, cpu_count + 4)``. Calls already running keep their
    threads; new calls go to a new pool of the new size. Abandoned calls hold a
    worker until they return, so size the pool for the hung calls you are willing
    to carry.
    """
    global _pool, _pool_workers
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ConfigError(f"must be an int >= 1, got {max_workers!r}", path="max_workers")
    with _pool_lock:
        _pool_workers = max_workers
        # Not shut down: a caller may hold it between lookup and submit. Its idle
        # workers exit once it is garbage collected.
        _pool = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(_pool_workers, thread_name_prefix="buttress-timeout")
            pool = _pool
    return pool


def _run_in_worker(
    done: threading.Event,
    inner: SyncRunner,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    try:
        return inner(fn, args, kwargs)
    finally:
        done.set()


# -------------------------------------------------------------------- async registry


class _Registry:
    """The calls of one Timeout running on one event loop, and their shared timer.

    Only touched from the loop's thread: by calls entering and leaving, and by the
    timer callback. ``entries`` is ordered by deadline because every entry was added
    with the same duration on a clock that never goes backwards.
    """

    __slots__ = ("clock", "entries", "handle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.clock = clock
        self.entries: dict[asyncio.Task[Any], float] = {}
        self.handle: TimerHandle | None = None

    def fire(self) -> None:
        """Cancel every call past its deadline; re-arm for the next one."""
        self.handle = None
        entries = self.entries
        if not entries:
            return
        now = self.clock.monotonic()
        while entries:
            task = next(iter(entries))
            deadline = entries[task]
            if deadline > now:
                self.handle = self.clock.call_later(deadline - now, self.fire)
                return
            # Its call sees the entry gone and knows the cancellation is ours; the
            # policies inside see the mark and count a timeout, not a cancellation.
            del entries[task]
            mark_timeout_cancel(task)
            task.cancel()


# ----------------------------------------------------------------------------- policy


class Timeout(Strategy):
    """Limit a call to ``seconds``; raise :class:`~buttress.errors.TimeoutExceeded` past it.

    Async calls are cancelled at the deadline; a cancellation from outside still
    propagates as :class:`asyncio.CancelledError`. Sync calls follow ``mode``:

    ``"optimistic"`` (default)
        No thread, ~0.3 µs per call. The deadline is published for :func:`remaining`;
        code that honours it stops in time. A call that returns late raises
        ``TimeoutExceeded`` and its result is discarded — its side effects are not
        undone. A call that never returns is never interrupted.
    ``"pessimistic"``
        The call runs on a shared, bounded thread pool (see
        :func:`set_pessimistic_workers`) with the caller's context variables, and
        the caller waits at most ``seconds``. On timeout the caller is released at
        once and the call is abandoned: it runs to its end in the background,
        holding a pool worker meanwhile (and delaying interpreter exit until it
        returns). Costs a thread hand-off per call (tens of µs); thread-local state
        of the caller is not visible to the call.

    Emits :class:`TimeoutOccurred` whenever it raises ``TimeoutExceeded``.
    """

    __slots__ = ("_local", "clock", "mode", "seconds")

    def __init__(
        self,
        seconds: float,
        *,
        mode: TimeoutMode = "optimistic",
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ConfigError(f"must be a finite number > 0, got {seconds!r}", path="seconds")
        if mode not in _MODES:
            raise ConfigError(f"must be one of {_MODES}, got {mode!r}", path="mode")
        self.seconds = float(seconds)
        self.mode: TimeoutMode = mode
        self.clock = clock
        # Each thread runs at most one event loop at a time, so a per-thread cache
        # of the last registry finds the right one without asking for the running
        # loop (asyncio.get_running_loop() costs a getpid() system call on 3.11).
        # It keeps the thread's last loop referenced until the thread uses another.
        self._local = threading.local()
        self._init_strategy(name, "timeout")
        self._build()

    def _registry(self) -> _Registry:
        registry = _Registry(asyncio.get_running_loop(), self.clock)
        self._local.registry = registry
        return registry

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        if self.mode == "pessimistic":
            return self._pessimistic_runner(inner)
        seconds = self.seconds
        clock = self.clock
        monotonic = clock.monotonic
        name = self.name
        events = self._events
        get = _DEADLINE.get
        publish = _DEADLINE.set
        unpublish = _DEADLINE.reset
        me: Expiry = self

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            deadline = monotonic() + seconds
            current = get()
            token = (
                publish((deadline, clock, me))
                if current is None
                else _publish_nested(deadline, clock, seconds, current, me)
            )
            try:
                result = inner(fn, args, kwargs)
            finally:
                if token is not None:
                    unpublish(token)
            if monotonic() >= deadline:
                _timed_out(events, name, seconds)
            return result

        return run

    def _pessimistic_runner(self, inner: SyncRunner) -> SyncRunner:
        seconds = self.seconds
        clock = self.clock
        name = self.name
        events = self._events
        me: Expiry = self

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            deadline = clock.monotonic() + seconds
            current = _DEADLINE.get()
            token = (
                _DEADLINE.set((deadline, clock, me))
                if current is None
                else _publish_nested(deadline, clock, seconds, current, me)
            )
            try:
                context = contextvars.copy_context()
            finally:
                if token is not None:
                    _DEADLINE.reset(token)
            done = threading.Event()
            future = _executor().submit(context.run, _run_in_worker, done, inner, fn, args, kwargs)
            if not clock.wait(done, seconds):
                # Not started yet (pool saturated): it never will. Started: abandoned.
                future.cancel()
                _timed_out(events, name, seconds)
            return future.result()

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        seconds = self.seconds
        clock = self.clock
        monotonic = clock.monotonic
        name = self.name
        events = self._events
        local = self._local
        new_registry = self._registry
        get = _DEADLINE.get
        publish = _DEADLINE.set
        unpublish = _DEADLINE.reset
        me: Expiry = self

        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                registry: _Registry = local.registry
            except AttributeError:
                registry = new_registry()
            # A registry's loop is running in this thread exactly when it has a
            # current task here; otherwise this thread has moved to another loop.
            task = _current_task(registry.loop)
            if task is None:
                registry = new_registry()
                task = _current_task(registry.loop)
                if task is None:
                    raise RuntimeError("Timeout must be awaited inside an asyncio task")
            entries = registry.entries
            if task in entries:
                # Re-entered by the same task: the enclosing call of this Timeout
                # started earlier with the same duration, so its deadline comes
                # first and already covers this call. (Once the enclosing call has
                # timed out, a call made while it unwinds gets a limit of its own.)
                return await inner(fn, args, kwargs)
            deadline = monotonic() + seconds
            current = get()
            token = (
                publish((deadline, clock, me))
                if current is None
                else _publish_nested(deadline, clock, seconds, current, me)
            )
            entries[task] = deadline
            if registry.handle is None:
                registry.handle = clock.call_later(seconds, registry.fire)
            cancelling = task.cancelling()
            try:
                result = await inner(fn, args, kwargs)
            except BaseException as exc:
                if token is not None:
                    unpublish(token)
                # No entry left: the timer cancelled this task. The cancellation is
                # ours only if nobody else asked for one meanwhile (asyncio.timeout's
                # rule).
                if entries.pop(task, None) is None:
                    unmark_timeout_cancel(task)
                    if task.uncancel() <= cancelling and isinstance(exc, _CancelledError):
                        _timed_out(events, name, seconds, exc)
                raise
            if token is not None:
                unpublish(token)
            if entries.pop(task, None) is None:
                # The call swallowed our cancellation and returned: keep its result,
                # like asyncio.timeout, but take the cancel request back.
                unmark_timeout_cancel(task)
                task.uncancel()
            return result

        return run

    def expired(self, detail: str) -> TimeoutExceeded:
        """The error of a wait inside this timeout that cannot fit in what is left.

        Emits :class:`TimeoutOccurred` like any timeout of this policy.
        """
        if self._events.enabled:
            self._events.emit(TimeoutOccurred(self.name, self.seconds))
        return TimeoutExceeded(self.name, self.seconds, detail)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r}, mode={self.mode!r}, name={self.name!r})"


def _timed_out(
    events: Emitter, name: str, seconds: float, cause: BaseException | None = None
) -> NoReturn:
    if events.enabled:
        events.emit(TimeoutOccurred(name, seconds))
    raise TimeoutExceeded(name, seconds) from cause
