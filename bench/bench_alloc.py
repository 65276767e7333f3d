"""With no listener registered, the happy path allocates nothing that outlives a call.

Runs a million calls through each policy and the full pipeline, sync and async,
under tracemalloc, and reports the memory still held by allocations made in
buttress's own source files afterwards (must be 0 growth), plus the peak.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import buttress
from buttress import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout

CALLS = 1_000_000
SLACK = 1024
SRC = str(Path(buttress.__file__).resolve().parent)


def work() -> int:
    return 1


async def awork() -> int:
    return 1


def ours(snapshot: tracemalloc.Snapshot) -> int:
    filtered = snapshot.filter_traces([tracemalloc.Filter(True, SRC + "/*")])
    return sum(stat.size for stat in filtered.statistics("filename"))


def measure_sync(fn: Callable[[], Any]) -> tuple[int, int]:
    for _ in range(1000):
        fn()
    gc.collect()
    tracemalloc.start()
    before = ours(tracemalloc.take_snapshot())
    for _ in range(CALLS):
        fn()
    gc.collect()
    after = ours(tracemalloc.take_snapshot())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return after - before, peak


def measure_async(fn: Callable[[], Any]) -> tuple[int, int]:
    async def main() -> tuple[int, int]:
        for _ in range(1000):
            await fn()
        gc.collect()
        tracemalloc.start()
        before = ours(tracemalloc.take_snapshot())
        for _ in range(CALLS):
            await fn()
        gc.collect()
        after = ours(tracemalloc.take_snapshot())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return after - before, peak

    return asyncio.run(main())


def cases() -> list[tuple[str, Callable[[], tuple[int, int]]]]:
    return [
        ("Retry (sync)", lambda: measure_sync(Retry()(work))),
        ("CircuitBreaker (sync)", lambda: measure_sync(CircuitBreaker()(work))),
        ("Bulkhead (sync)", lambda: measure_sync(Bulkhead(10)(work))),
        ("Timeout optimistic (sync)", lambda: measure_sync(Timeout(2.0)(work))),
        (
            "Timeout+Retry+CircuitBreaker+Bulkhead (sync)",
            lambda: measure_sync(
                Pipeline(Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10))(work)
            ),
        ),
        ("Retry (async)", lambda: measure_async(Retry()(awork))),
        ("CircuitBreaker (async)", lambda: measure_async(CircuitBreaker()(awork))),
        ("Bulkhead (async)", lambda: measure_async(Bulkhead(10)(awork))),
        ("Timeout (async)", lambda: measure_async(Timeout(2.0)(awork))),
        (
            "Timeout+Retry+CircuitBreaker+Bulkhead (async)",
            lambda: measure_async(
                Pipeline(Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10))(awork)
            ),
        ),
    ]


def main() -> None:
    global CALLS
    if "--quick" in sys.argv:
        CALLS = 100_000
    lines = [
        "## Allocations on the happy path (no listener registered)",
        "",
        f"{CALLS:,} calls each under tracemalloc; *growth* is memory still held by "
        "allocations made in buttress's source files after the run; *peak* is "
        "tracemalloc's peak during the run, for all code. A per-call leak would show as "
        f"at least {CALLS:,} B; the verdict allows {SLACK} B of one-time growth (a dict "
        "table resized once by insert/delete churn, as the async timeout registry's is).",
        "",
        "| case | growth | peak | verdict |",
        "|---|---:|---:|---|",
    ]
    failed = False
    for name, run in cases():
        growth, peak = run()
        ok = growth <= SLACK
        failed |= not ok
        lines.append(f"| {name} | {growth:+,} B | {peak:,} B | {'ok' if ok else 'GROWS'} |")
    print("\n".join(lines) + "\n")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
