"""Bulkhead acquire/release around a call: buttress vs the standard library's
semaphores (what a hand-rolled bulkhead uses) and pyresilience.

Two loads. *Uncontended*: one caller, a slot always free. *Contended*: 1,000 tasks
share 100 slots, each making calls that yield to the loop once, so 900 tasks are
always queued and every call waits its turn; the time is per call, with the cost of
the tasks themselves (the ``bare`` row) subtracted. A contended run is a second of
pure CPU work, timed in the CPU time of its thread (wall time on a busy machine
mostly measured the neighbours: ±25 % from run to run).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from buttress.policies.bulkhead import Bulkhead

from _common import awork, baseline, floor_async, work
from _harness import Case, check_works, main

SYNC = "bulkhead acquire/release (sync)"
ASYNC = "bulkhead acquire/release (async)"
TASKS, CALLS, SLOTS = 1_000, 100, 100
CONTENDED = f"bulkhead contended (async, {TASKS:,} tasks x {CALLS} calls, {SLOTS} slots)"


def bounded_semaphore() -> Any:
    sem = threading.BoundedSemaphore(10)

    def call() -> Any:
        with sem:
            return work()

    return call


def asyncio_semaphore() -> Any:
    sem = asyncio.Semaphore(10)

    async def call() -> Any:
        async with sem:
            return await awork()

    return call


def pyresilience_bulkhead(fn: Any) -> Any:
    from pyresilience import BulkheadConfig, resilient

    return resilient(bulkhead=BulkheadConfig(max_concurrent=10))(fn)


# ---------------------------------------------------------------------------- contended


async def ayield(x: int = 1) -> int:
    """A call that lets other tasks run once, as any real I/O call does."""
    await asyncio.sleep(0)
    return x


def crowd(call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    """One run: TASKS tasks making CALLS calls each through ``call``."""

    async def caller() -> None:
        for _ in range(CALLS):
            await call()

    async def run() -> None:
        await asyncio.gather(*(caller() for _ in range(TASKS)))

    return run


def contended_semaphore() -> Callable[[], Awaitable[Any]]:
    sem = asyncio.Semaphore(SLOTS)

    async def call() -> Any:
        async with sem:
            return await ayield()

    return call


def contended(name: str, make: Callable[[], Callable[[], Awaitable[Any]]], **kw: Any) -> Case:
    return Case(
        CONTENDED,
        name,
        lambda: crowd(make()),
        is_async=True,
        inner_loops=TASKS * CALLS,
        cpu_time=True,
        **kw,
    )


CASES = [
    *baseline(SYNC),
    Case(SYNC, "buttress", lambda: Bulkhead(10)(work), target_ns=250),
    Case(SYNC, "threading.BoundedSemaphore", bounded_semaphore, peer=True),
    Case(SYNC, "pyresilience", lambda: pyresilience_bulkhead(work), peer=True),
    *baseline(ASYNC, is_async=True),
    Case(ASYNC, "buttress", lambda: Bulkhead(10)(awork), is_async=True, target_ns=400),
    Case(ASYNC, "asyncio.Semaphore", asyncio_semaphore, is_async=True, peer=True),
    Case(ASYNC, "pyresilience", lambda: pyresilience_bulkhead(awork), is_async=True, peer=True),
    contended("bare", lambda: ayield),
    contended("floor: empty async wrapper", lambda: floor_async(ayield)),
    contended("buttress", lambda: Bulkhead(SLOTS, max_queue=TASKS)(ayield)),
    contended("asyncio.Semaphore", contended_semaphore, peer=True),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)
