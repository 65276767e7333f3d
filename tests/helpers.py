"""Small helpers for tests."""

from __future__ import annotations

import asyncio
import os
import threading

from buttress.clock import FakeClock


async def tick(times: int = 1) -> None:
    """Let every ready task run ``times`` loop iterations, without any timed wait."""
    loop = asyncio.get_running_loop()
    for _ in range(times):
        future: asyncio.Future[None] = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future


def yield_gil() -> None:
    """Give the GIL to another thread now, without any timed wait."""
    os.sched_yield()


class WatchedClock(FakeClock):
    """A FakeClock moved by hand that counts the threads blocked in ``wait()``.

    A waiter's deadline is fixed when it enters ``wait()``; a test that has seen it
    counted in :attr:`waiting` can ``advance()`` knowing the wait will end, however
    late the machine scheduled the waiting thread.
    """

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(start, auto_advance=False)
        self.waiting = 0

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._cond:
            if event.is_set():
                return True
            deadline = self._now + timeout
            self.waiting += 1
        try:
            while not event.is_set():
                with self._cond:
                    if self._now >= deadline:
                        return event.is_set()
                event.wait(0.001)  # a setter on another thread is seen promptly
            return True
        finally:
            with self._cond:
                self.waiting -= 1
