"""Wall time per HTTP request, bare and through buttress, in interleaved rounds.

pyperf runs each contender in its own processes one after the other, so on a
shared machine a load change between two contenders reads as a difference between
them (bench/NOTES.md). This runs the contenders of ``bench_http.py`` in one
process, against one local server, in alternating rounds of ``--batch`` requests,
and reports each one's median and minimum per request over ``--rounds`` rounds, and
its median against the first contender's.

    python bench/http_interleaved.py bare_sync buttress_sync tenacity_sync
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_http


def _runner(name: str, loop: asyncio.AbstractEventLoop) -> Callable[[int], None]:
    maker = getattr(bench_http, name)
    if "async" in name or "aiohttp" in name:

        async def build():  # type: ignore[no-untyped-def]
            return maker()  # aiohttp sessions must be made inside the loop

        get = loop.run_until_complete(build())

        async def batch(count: int) -> None:
            for _ in range(count):
                await get()

        return lambda count: loop.run_until_complete(batch(count))
    get = maker()

    def run(count: int) -> None:
        for _ in range(count):
            get()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="bench_http.py makers, the first the base")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    bench_http.url()
    loop = asyncio.new_event_loop()
    runners = {name: _runner(name, loop) for name in args.cases}
    per_request: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(50)  # warm up: connections open, drivers built
    for _ in range(args.rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(args.batch)
            per_request[name].append((time.perf_counter() - start) / args.batch * 1e6)
    base = statistics.median(per_request[args.cases[0]])
    for name, values in per_request.items():
        median = statistics.median(values)
        print(
            f"{name:20} median {median:8.1f} µs  min {min(values):8.1f} µs  "
            f"{median / base - 1:+6.1%} vs {args.cases[0]}"
        )


if __name__ == "__main__":
    main()
