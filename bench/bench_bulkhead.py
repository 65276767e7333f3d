"""Bulkhead acquire/release around a call, uncontended: buttress vs the standard
library's semaphores (what a hand-rolled bulkhead uses) and pyresilience."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

from buttress.policies.bulkhead import Bulkhead

from _common import awork, baseline, work
from _harness import Case, check_works, main

SYNC = "bulkhead acquire/release (sync)"
ASYNC = "bulkhead acquire/release (async)"


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


CASES = [
    *baseline(SYNC),
    Case(SYNC, "buttress", lambda: Bulkhead(10)(work), target_ns=250),
    Case(SYNC, "threading.BoundedSemaphore", bounded_semaphore, peer=True),
    Case(SYNC, "pyresilience", lambda: pyresilience_bulkhead(work), peer=True),
    *baseline(ASYNC, is_async=True),
    Case(ASYNC, "buttress", lambda: Bulkhead(10)(awork), is_async=True, target_ns=400),
    Case(ASYNC, "asyncio.Semaphore", asyncio_semaphore, is_async=True, peer=True),
    Case(ASYNC, "pyresilience", lambda: pyresilience_bulkhead(awork), is_async=True, peer=True),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)
