"""The worker threads of pessimistic timeouts: few, reused, and never in the way of exit.

A pessimistic ``Timeout`` runs a sync call on a worker and stops waiting for it at
the deadline. A call abandoned there may never return (that is why it was given a
timeout), so the workers are *daemon* threads: an interpreter whose last
non-daemon thread ends exits even while an abandoned call hangs. (The standard
library's ``ThreadPoolExecutor`` joins its workers at exit, which would hang there
for ever.)

The pool is bounded and keeps its threads: a worker that finishes a call takes the
next one waiting, or waits for one; after :data:`IDLE_SECONDS` without work it ends.
A call still waiting for a worker at its deadline is withdrawn and never starts.
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

from buttress._validate import check_count

__all__ = ["IDLE_SECONDS", "Work", "WorkerPool", "pool", "set_pessimistic_workers"]

IDLE_SECONDS = 30.0
"""How long a worker without work stays before it ends."""

_names = itertools.count(1)


class Work:
    """One call handed to the pool: run in the caller's context, outcome kept for it.

    ``done`` is set once the call has returned or raised.
    """

    __slots__ = ("args", "context", "done", "error", "fn", "result", "started")

    def __init__(
        self, context: contextvars.Context, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.context = context
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.started = False
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.context.run(self.fn, *self.args)
        except BaseException as exc:  # handed to the caller, whatever it is
            self.error = exc

    def outcome(self) -> Any:
        """The call's result, or its error raised."""
        error = self.error
        if error is not None:
            self.error = None  # no cycle through the traceback
            raise error
        return self.result


class WorkerPool:
    """At most ``max_workers`` daemon threads running :class:`Work`, first come first served."""

    __slots__ = ("_busy", "_closed", "_queue", "_ready", "_threads", "max_workers")

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._ready = threading.Condition(threading.Lock())
        self._queue: collections.deque[Work] = collections.deque()
        self._threads = 0
        self._busy = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Worker threads alive (or starting)."""
        return self._threads

    def submit(self, work: Work) -> None:
        """Queue ``work``; start a worker if no idle one will take it and the bound allows."""
        with self._ready:
            self._queue.append(work)
            idle = self._threads - self._busy
            spawn = idle < len(self._queue) and self._threads < self.max_workers
            if spawn:
                self._threads += 1
            self._ready.notify()
        if spawn:
            name = f"buttress-timeout-{next(_names)}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def withdraw(self, work: Work) -> bool:
        """Take ``work`` back if no worker has started it; True if it will never run."""
        with self._ready:
            if work.started:
                return False
            try:
                self._queue.remove(work)
            except ValueError:
                return False
            return True

    def close(self) -> None:
        """Let the workers end once the work already queued is done."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _work(self) -> None:
        ready = self._ready
        queue = self._queue
        while True:
            with ready:
                while not queue:
                    if self._closed or (not ready.wait(IDLE_SECONDS) and not queue):
                        self._threads -= 1
                        return
                work = queue.popleft()
                work.started = True
                self._busy += 1
            work.run()
            with ready:
                # Idle again before the caller hears of it: a caller that submits
                # its next call at once finds this worker instead of starting one.
                self._busy -= 1
            work.done.set()
            del work


_lock = threading.Lock()
_pool: WorkerPool | None = None
_max_workers = min(32, (os.cpu_count() or 1) + 4)


def set_pessimistic_workers(max_workers: int) -> None:
    """Size the worker threads shared by every ``Timeout(mode="pessimistic")``.

    The default is ``min(32, cpu_count + 4)``. Calls already running keep their
    threads; new calls go to a new pool of the new size. An abandoned call holds a
    worker until it returns, so size the pool for the hung calls you are willing
    to carry. Workers are daemon threads: they never keep the interpreter from
    exiting.
    """
    global _pool, _max_workers
    checked = check_count(max_workers, "max_workers", minimum=1)
    with _lock:
        _max_workers = checked
        old, _pool = _pool, None
    if old is not None:
        old.close()


def pool() -> WorkerPool:
    """The shared pool, made on first use."""
    global _pool
    current = _pool
    if current is None:
        with _lock:
            if _pool is None:
                _pool = WorkerPool(_max_workers)
            current = _pool
    return current


def _after_fork_in_child() -> None:
    # The parent's workers do not exist in a child, and a lock held by one of them
    # at the fork would stay held: start afresh.
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
