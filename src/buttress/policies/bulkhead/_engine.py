"""The bulkhead's core: free slots, a line of waiters, and handing one to the other.

Free slots are tokens in a :class:`collections.deque`; waiters are an
:class:`~collections.OrderedDict` (a FIFO with O(1) removal of one that gives up).
:class:`Slots`, the core, knows nothing of threads or event loops: a waiter is told
it holds a slot through its own ``wake()`` — a :class:`threading.Event` for a
thread, an asyncio future for a task.

Taking and returning a slot when nobody waits is a lock-free ``deque.pop()`` /
``deque.append()`` (each atomic); the lock is only taken when a caller has to queue
or a slot has to be handed to a queued one.
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

__all__ = ["Slots", "TaskWaiter", "ThreadWaiter", "Waiter", "resolve"]

_get_ident = threading.get_ident
_home = threading.local()  # (loop, thread id) this thread's last task waited on


# ------------------------------------------------------------------------------ waiters


class Waiter:
    """A caller queued for a slot. ``granted`` only changes under the core's lock."""

    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False

    def wake(self) -> bool:
        """Tell the waiter it holds a slot now; False if it can never hear it."""
        raise NotImplementedError


class ThreadWaiter(Waiter):
    """A thread waiting on an event."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.granted = False
        self.event = threading.Event()

    def wake(self) -> bool:
        self.event.set()
        return True


def resolve(future: asyncio.Future[None]) -> None:
    """Wake the task awaiting ``future`` (unless it stopped waiting: cancelled)."""
    if not future.done():
        future.set_result(None)


class TaskWaiter(Waiter):
    """The current task, awaiting a future of its loop, which runs in thread ``thread``."""

    __slots__ = ("future", "loop", "thread")

    def __init__(self) -> None:
        self.granted = False
        # asyncio.get_running_loop() makes a getpid() system call on Python 3.11, a
        # good part of a contended call. So this thread's loop is kept, and checked:
        # asyncio's loops note the thread they run in; another loop is taken to run
        # here while it runs a task (one loop at a time per thread).
        # (asyncio itself is loaded by then — a task is waiting — but not imported by
        # this module, so that importing buttress does not import asyncio.)
        try:
            loop, thread = _home.last
        except AttributeError:
            aio = sys.modules["asyncio"]
            loop, thread = _home.last = (aio.get_running_loop(), _get_ident())
        else:
            runs_in = getattr(loop, "_thread_id", None)
            if runs_in != thread:
                aio = sys.modules["asyncio"]
                if runs_in is not None or aio.current_task(loop) is None:
                    loop, thread = _home.last = (aio.get_running_loop(), _get_ident())
        self.loop = loop
        self.thread = thread
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        future = self.future
        try:
            # From the loop's own thread the future may be resolved directly; from
            # any other only through the loop.
            if _get_ident() == self.thread:
                if not future.done():
                    future.set_result(None)
            else:
                self.loop.call_soon_threadsafe(resolve, future)
        except RuntimeError:  # its loop is closed: the task will never run again
            return False
        return True


# --------------------------------------------------------------------------------- core


class Slots:
    """``max_concurrent`` slots and a line of at most ``max_queue`` waiters.

    No lost wake-ups. Tokens and waiters are never both non-empty once every
    operation in flight has finished:

    - A waiter is added only under the lock, followed (same lock hold) by a pump,
      which hands it any token present.
    - :meth:`release` appends a token without the lock and only then looks at the
      waiters. A waiter queued before that look is seen, and the releaser pumps. A
      waiter queued after it was queued after the append, so its own pump finds the
      token (unless a newcomer's pop took it, in which case there is nothing to
      hand over).
    - With waiters present, :meth:`release` hands its slot over under the lock
      instead of appending, so a newcomer's lock-free pop cannot overtake the line.

    Every step is one atomic deque/dict operation (the GIL, or the objects' own
    locks on free-threaded builds), so "before"/"after" above is well defined.
    """

    __slots__ = ("_lock", "max_concurrent", "max_queue", "tokens", "waiters")

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.tokens: collections.deque[None] = collections.deque([None] * max_concurrent)
        # FIFO with O(1) removal of a waiter that gives up. Not a dict: taking the
        # first key of a dict whose front keeps being deleted scans the deleted
        # slots, hundreds of them in a long line.
        self.waiters: collections.OrderedDict[Waiter, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a free slot without waiting."""
        try:
            self.tokens.pop()
        except IndexError:
            return False
        return True

    def release(self) -> None:
        """Give a slot back: to the first waiter if there is one, else to the pool."""
        if not self.waiters:
            self.tokens.append(None)
            if self.waiters:
                self._pump()
            return
        lock = self._lock
        lock.acquire()
        try:
            waiters = self.waiters
            if not waiters:
                self.tokens.append(None)
                return
            waiter, _ = waiters.popitem(last=False)
            waiter.granted = True
            more = self._pump_locked() if self.tokens else None
        finally:
            lock.release()
        if not waiter.wake() and self.settle(waiter):
            self.release()  # see _wake
        if more:
            self._wake(more)

    def enqueue(self, waiter: Waiter) -> bool:
        """Queue ``waiter``; False if the line is full. It may be granted at once."""
        # acquire/release rather than `with`: a third cheaper, on a path every
        # contended call takes.
        lock = self._lock
        lock.acquire()
        try:
            waiters = self.waiters
            if len(waiters) >= self.max_queue:
                return False
            waiters[waiter] = None
            woken = self._pump_locked() if self.tokens else None
        finally:
            lock.release()
        if woken:
            self._wake(woken)
        return True

    def settle(self, waiter: Waiter) -> bool:
        """End ``waiter``'s wait: True if a slot was handed to it, else it leaves the line.

        A slot handed over at the very moment the waiter gives up is never lost:
        the waiter sees the grant and either runs or passes the slot on. The grant
        is consumed: of several settles of one waiter, at most one answers True,
        and that caller owns the slot.
        """
        granted = waiter.granted
        if granted:
            # Granted waiters have left the line and nobody but their owner looks
            # at them again: no lock needed to claim the grant.
            waiter.granted = False
            return True
        with self._lock:
            # Under the lock: a hand-over racing with this settle either happened
            # (granted) or will not find the waiter.
            if waiter.granted:
                waiter.granted = False
                return True
            self.waiters.pop(waiter, None)
            return False

    def leave(self, waiter: Waiter) -> bool:
        """Take ``waiter`` out of the line (its time is up); False if it was just granted."""
        with self._lock:
            if waiter.granted:
                return False
            self.waiters.pop(waiter, None)
            return True

    def _pump(self) -> None:
        with self._lock:
            woken = self._pump_locked()
        self._wake(woken)

    def _pump_locked(self) -> list[Waiter]:
        """Hand free tokens to waiters, first come first served."""
        woken: list[Waiter] = []
        waiters = self.waiters
        tokens = self.tokens
        while waiters and tokens:
            try:
                tokens.pop()
            except IndexError:  # taken by a lock-free acquirer meanwhile
                break
            waiter, _ = waiters.popitem(last=False)
            waiter.granted = True
            woken.append(waiter)
        return woken

    def _wake(self, woken: list[Waiter]) -> None:
        for waiter in woken:
            # A waiter that cannot hear it (its loop is closed) will never run: take
            # the slot back and pass it on, unless it has claimed the slot itself.
            if not waiter.wake() and self.settle(waiter):
                self.release()
