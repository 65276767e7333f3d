"""Time, injected.

Every policy takes a ``clock=``. Durations use :meth:`Clock.monotonic`; persisted
timestamps use :meth:`Clock.time`. Policies sleep and arm timers only through the
clock, so :class:`FakeClock` can run a retry with a 30-second backoff, a breaker's
open period or a bulkhead's queue timeout in microseconds, deterministically.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time as _time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio

__all__ = ["MONOTONIC", "Clock", "FakeClock", "MonotonicClock", "TimerHandle"]


class TimerHandle(Protocol):
    """What :meth:`Clock.call_later` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """The source of time for policies.

    ``call_later`` is only called from inside a running asyncio event loop, and the
    callback runs on that loop.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; for durations."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch; for persisted timestamps."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` on the running event loop after ``delay`` seconds."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until ``event`` is set (True) or ``timeout`` seconds pass (False)."""
        ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic`, :func:`time.sleep`, the event loop's timers.

    The methods are the C functions themselves, so reading the clock in a hot path
    costs one builtin call.
    """

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # noqa: PLC0415 - asyncio is loaded once a coroutine runs

        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        import asyncio  # noqa: PLC0415 - only inside a running event loop

        return asyncio.get_running_loop().call_later(delay, callback)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)

    def __repr__(self) -> str:
        return "MonotonicClock()"


MONOTONIC = MonotonicClock()
"""The shared real clock, the default of every policy."""


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "loop", "when")

    def __init__(
        self, when: float, callback: Callable[[], object], loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self.when = when
        self.callback = callback
        self.loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to: for tests, never sleeping for real.

    With ``auto_advance=True`` (the default), every ``sleep``/``asleep`` moves the
    clock forward by the requested amount at once and records it in
    :attr:`sleeps`, so code under test runs straight through its waits. With
    ``auto_advance=False`` sleepers and timers wait until the test calls
    :meth:`advance`, which lets a test hold a call in mid-wait and look at it.

    Timers armed with :meth:`call_later` fire from :meth:`advance`, on the event loop
    that armed them.
    """

    def __init__(
        self, start: float = 0.0, *, wall: float = 1_767_225_600.0, auto_advance: bool = True
    ) -> None:
        self._now = float(start)
        self._start = float(start)
        self._wall = float(wall)
        self.auto_advance = auto_advance
        self.sleeps: list[float] = []
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall + (self._now - self._start)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing every timer that falls due."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._cond:
            target = self._now + seconds
        while True:
            with self._cond:
                if not self._timers or self._timers[0][0] > target:
                    self._now = max(self._now, target)
                    self._cond.notify_all()
                    return
                when, _, timer = heapq.heappop(self._timers)
                self._now = max(self._now, when)
                self._cond.notify_all()
            if not timer.cancelled:
                self._fire(timer)

    @staticmethod
    def _fire(timer: _FakeTimer) -> None:
        loop = timer.loop
        if loop is None:
            timer.callback()
            return
        import asyncio  # noqa: PLC0415 - a timer with a loop: asyncio is loaded

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            timer.callback()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(timer.callback)

    def sleep(self, seconds: float) -> None:
        if self.auto_advance:
            self.sleeps.append(seconds)
            self.advance(max(0.0, seconds))
            return
        with self._cond:
            # Recorded together with the deadline: a test that sees this sleep in
            # `sleeps` can advance() knowing the deadline is already fixed.
            self.sleeps.append(seconds)
            deadline = self._now + seconds
            while self._now < deadline:
                self._cond.wait(0.05)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # noqa: PLC0415 - asyncio is loaded once a coroutine runs

        self.sleeps.append(seconds)
        if self.auto_advance:
            self.advance(max(0.0, seconds))
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        handle = self.call_later(seconds, wake)
        try:
            await future
        finally:
            handle.cancel()

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        import asyncio  # noqa: PLC0415 - cheap once loaded; a sync caller never loads it

        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._cond:
            timer = _FakeTimer(self._now + max(0.0, delay), callback, loop)
            if delay <= 0 and loop is not None:
                return loop.call_soon(callback)
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if self.auto_advance:
            self.advance(max(0.0, timeout))
            return event.is_set()
        with self._cond:
            deadline = self._now + timeout
        while not event.is_set():
            with self._cond:
                if self._now >= deadline:
                    return event.is_set()
            # Short real waits so a setter on another thread is seen promptly; time
            # itself only moves when the test calls advance().
            event.wait(0.001)
        return True

    @property
    def pending_timers(self) -> int:
        """How many armed, uncancelled timers are waiting to fire."""
        with self._cond:
            return sum(1 for _, _, t in self._timers if not t.cancelled)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, auto_advance={self.auto_advance!r})"
