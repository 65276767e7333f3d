"""Bulkhead: bound how many calls run at once, and how many may wait for a turn.

``Bulkhead(10, max_queue=20, max_wait=0.5)`` lets ten calls run concurrently; up to
twenty more wait, first come first served, at most half a second each; everyone
else is turned away at once with :class:`~buttress.errors.BulkheadFull`. One
bulkhead can be shared by threads and asyncio tasks (on any number of loops) at the
same time: a slot freed by a thread goes to the next waiter whether that is a thread
or a task.

The core is a handful of operations on two structures — free slots as tokens in a
:class:`collections.deque` and a FIFO of waiters — and knows nothing of threads or
event loops. Taking and returning a slot when nobody waits is a lock-free
``deque.pop()``/``deque.append()`` (each atomic); the lock is only taken when a
caller has to queue or a slot has to be handed to a queued one. The sync and async
drivers differ only in how a waiter sleeps: a :class:`threading.Event` or an asyncio
future.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn

from buttress._strategy import AsyncRunner, Strategy, SyncRunner
from buttress.clock import MONOTONIC, Clock, TimerHandle
from buttress.errors import BulkheadFull, ConfigError
from buttress.events import CallRejected

__all__ = ["Bulkhead"]

_get_ident = threading.get_ident


# ------------------------------------------------------------------------------ waiters


class _Waiter:
    """A caller queued for a slot. ``granted`` only changes under the bulkhead's lock."""

    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False

    def wake(self) -> bool:
        """Tell the waiter it holds a slot now; False if it can never hear it."""
        raise NotImplementedError


class _ThreadWaiter(_Waiter):
    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def wake(self) -> bool:
        self.event.set()
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TaskWaiter(_Waiter):
    __slots__ = ("future", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        # The loop runs in the thread that queued the waiter; from that thread the
        # future may be resolved directly, from any other only via the loop.
        self.thread = _get_ident()

    def wake(self) -> bool:
        try:
            if _get_ident() == self.thread:
                _resolve(self.future)
            else:
                self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # its loop is closed: the task will never run again
            return False
        return True


# ------------------------------------------------------------------------------ policy


class Bulkhead(Strategy):
    """At most ``max_concurrent`` calls at once; up to ``max_queue`` more wait in line.

    A caller finding every slot taken joins the queue if it has room, waits up to
    ``max_wait`` seconds (``None``: until a slot frees) and otherwise is rejected
    with :class:`~buttress.errors.BulkheadFull` — ``reason`` ``"bulkhead_full"``
    (no slot, queue full) or ``"queue_timeout"`` (waited ``max_wait`` in vain) — and
    a :class:`~buttress.events.CallRejected` event with the same reason. Waiters are
    served first come, first served.

    Works for sync and async calls on the same object, as a decorator, through
    ``call``/``acall``, and as ``with bulkhead:`` / ``async with bulkhead:``. A call
    cancelled or interrupted while running or while queued gives its slot (or its
    place) back, even if a slot was being handed to it at that very moment.
    """

    __slots__ = (
        "_lock",
        "_tokens",
        "_waiters",
        "clock",
        "max_concurrent",
        "max_queue",
        "max_wait",
    )

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_queue: int = 0,
        max_wait: float | None = None,
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise ConfigError(f"must be an int >= 1, got {max_concurrent!r}", path="max_concurrent")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ConfigError(f"must be an int >= 0, got {max_queue!r}", path="max_queue")
        if max_wait is not None:
            if (
                isinstance(max_wait, bool)
                or not isinstance(max_wait, int | float)
                or not math.isfinite(max_wait)
                or max_wait <= 0
            ):
                raise ConfigError(
                    f"must be a finite number > 0 or None, got {max_wait!r}", path="max_wait"
                )
            if max_queue == 0:
                raise ConfigError("has no effect without a queue; set max_queue", path="max_wait")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_wait = None if max_wait is None else float(max_wait)
        self.clock = clock
        self._tokens: collections.deque[None] = collections.deque([None] * max_concurrent)
        # Insertion-ordered: FIFO with O(1) removal of a waiter that gives up.
        self._waiters: dict[_Waiter, None] = {}
        self._lock = threading.Lock()
        self._init_strategy(name, "bulkhead")
        self._build()

    # ------------------------------------------------------------------ introspection

    @property
    def active(self) -> int:
        """Slots taken: calls running, plus slots just handed to a waiter."""
        return self.max_concurrent - len(self._tokens)

    @property
    def available(self) -> int:
        """Free slots."""
        return len(self._tokens)

    @property
    def queued(self) -> int:
        """Callers waiting for a slot."""
        return len(self._waiters)

    # ----------------------------------------------------------------- sans-I/O core
    #
    # No lost wake-ups. Tokens and waiters are never both non-empty once every
    # operation in flight has finished:
    # - A waiter is added only under the lock, followed (same lock hold) by _pump,
    #   which hands it any token present.
    # - _release appends a token without the lock and only then looks at the
    #   waiters. A waiter queued before that look is seen, and the releaser pumps.
    #   A waiter queued after it was queued after the append, so its own pump finds
    #   the token (unless a newcomer's pop took it, in which case there is nothing
    #   to hand over).
    # - With waiters present, _release hands its slot over under the lock instead
    #   of appending, so a newcomer's lock-free pop cannot overtake the queue.
    # Every step is one atomic deque/dict operation (the GIL, or the objects' own
    # locks on free-threaded builds), so "before"/"after" above is well defined.

    def _try_acquire(self) -> bool:
        """Take a free slot without waiting."""
        try:
            self._tokens.pop()
        except IndexError:
            return False
        return True

    def _release(self) -> None:
        """Give a slot back: to the first waiter if there is one, else to the pool."""
        if self._waiters:
            self._hand_over()
        else:
            self._tokens.append(None)
            if self._waiters:
                self._pump()

    def _hand_over(self) -> None:
        with self._lock:
            waiters = self._waiters
            if waiters:
                waiter = next(iter(waiters))
                del waiters[waiter]
                waiter.granted = True
                woken = [waiter]
            else:
                self._tokens.append(None)
                woken = []
            woken += self._pump_locked()
        self._wake(woken)

    def _pump(self) -> None:
        with self._lock:
            woken = self._pump_locked()
        self._wake(woken)

    def _pump_locked(self) -> list[_Waiter]:
        """Hand free tokens to waiters, first come first served."""
        woken: list[_Waiter] = []
        waiters = self._waiters
        tokens = self._tokens
        while waiters and tokens:
            try:
                tokens.pop()
            except IndexError:  # taken by a lock-free acquirer meanwhile
                break
            waiter = next(iter(waiters))
            del waiters[waiter]
            waiter.granted = True
            woken.append(waiter)
        return woken

    def _wake(self, woken: list[_Waiter]) -> None:
        for waiter in woken:
            # A waiter that cannot hear it (its loop is closed) will never run: take
            # the slot back and pass it on, unless it has claimed the slot itself.
            if not waiter.wake() and self._settle(waiter):
                self._release()

    def _enqueue(self, waiter: _Waiter) -> bool:
        """Queue ``waiter``; False if the queue is full. It may be granted at once."""
        with self._lock:
            if len(self._waiters) >= self.max_queue:
                return False
            self._waiters[waiter] = None
            woken = self._pump_locked()
        self._wake(woken)
        return True

    def _settle(self, waiter: _Waiter) -> bool:
        """End ``waiter``'s wait: True if a slot was handed to it, else it leaves the queue.

        Decided under the lock, so a slot handed over at the very moment the waiter
        gives up is never lost: the waiter sees the grant and either runs or passes
        the slot on. The grant is consumed: of several settles of one waiter, at
        most one answers True, and that caller owns the slot.
        """
        with self._lock:
            if waiter.granted:
                waiter.granted = False
                return True
            self._waiters.pop(waiter, None)
            return False

    def _reject(self, reason: str) -> NoReturn:
        if self._events.enabled:
            self._events.emit(CallRejected(self.name, reason))
        raise BulkheadFull(self.name, reason)

    # ----------------------------------------------------------------------- drivers

    def _acquire_wait(self) -> None:
        """No free slot: queue this thread, or reject."""
        if self.max_queue == 0:
            self._reject("bulkhead_full")
        waiter = _ThreadWaiter()
        if not self._enqueue(waiter):
            self._reject("bulkhead_full")
        try:
            if self.max_wait is None:
                waiter.event.wait()
            else:
                self.clock.wait(waiter.event, self.max_wait)
        except BaseException:
            if self._settle(waiter):
                self._release()
            raise
        if not self._settle(waiter):
            self._reject("queue_timeout")

    async def _acquire_wait_async(self) -> None:
        """No free slot: queue this task, or reject."""
        if self.max_queue == 0:
            self._reject("bulkhead_full")
        waiter = _TaskWaiter(asyncio.get_running_loop())
        if not self._enqueue(waiter):
            self._reject("bulkhead_full")
        timer: TimerHandle | None = None
        if self.max_wait is not None:
            timer = self.clock.call_later(self.max_wait, functools.partial(self._expire, waiter))
        try:
            await waiter.future
        except BaseException:
            if timer is not None:
                timer.cancel()
            if self._settle(waiter):
                self._release()  # cancelled as the slot arrived: pass it on
            raise
        if timer is not None:
            timer.cancel()
        if not self._settle(waiter):
            self._reject("queue_timeout")

    def _expire(self, waiter: _TaskWaiter) -> None:
        with self._lock:
            if waiter.granted:
                return  # the hand-over won the race; the task will claim the slot
            self._waiters.pop(waiter, None)
        _resolve(waiter.future)

    def _sync_runner(self, inner: SyncRunner) -> SyncRunner:
        pop = self._tokens.pop
        wait = self._acquire_wait
        release = self._release

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                pop()  # _try_acquire, inlined
            except IndexError:
                wait()
            try:
                return inner(fn, args, kwargs)
            finally:
                release()

        return run

    def _async_runner(self, inner: AsyncRunner) -> AsyncRunner:
        pop = self._tokens.pop
        wait = self._acquire_wait_async
        release = self._release

        async def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                pop()
            except IndexError:
                await wait()
            try:
                return await inner(fn, args, kwargs)
            finally:
                release()

        return run

    # ------------------------------------------------------------- context managers

    def __enter__(self) -> Bulkhead:
        if not self._try_acquire():
            self._acquire_wait()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    async def __aenter__(self) -> Bulkhead:
        if not self._try_acquire():
            await self._acquire_wait_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.max_concurrent}, max_queue={self.max_queue}, "
            f"max_wait={self.max_wait!r}, name={self.name!r})"
        )
