"""Client-side instructions per HTTP request, bare and through buttress, in valgrind.

Wall time cannot settle a 5 % question on a shared machine when one request takes
0.3-1 ms and varies by ±20-40 % (bench/NOTES.md). This counts the instructions the
*client* process executes per request, with valgrind's callgrind, for the contenders
of ``bench_http.py`` against the same local server (a separate process, not
counted): each case runs ``n`` and ``3 n`` requests and the difference is divided
by ``2 n``, so start-up cancels out. The server's own work is not counted, so the
ratio is an upper bound on the wall-time overhead.

    python bench/http_instructions.py            # every case, 300 requests
    python bench/http_instructions.py bare_sync buttress_sync
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CASES = {
    "bare_sync": ("bare_sync", False),
    "buttress_sync": ("buttress_sync", False),
    "tenacity_sync": ("tenacity_sync", False),
    "bare_async": ("bare_async", True),
    "buttress_async": ("buttress_async", True),
    "tenacity_async": ("tenacity_async", True),
    "bare_aiohttp": ("bare_aiohttp", True),
    "buttress_aiohttp": ("buttress_aiohttp", True),
    "tenacity_aiohttp": ("tenacity_aiohttp", True),
}
GROUPS = (
    ("httpx, sync", "bare_sync", "buttress_sync", "tenacity_sync"),
    ("httpx, async", "bare_async", "buttress_async", "tenacity_async"),
    ("aiohttp", "bare_aiohttp", "buttress_aiohttp", "tenacity_aiohttp"),
)


def _run(name: str, requests: int, url: str) -> None:
    import bench_http

    bench_http._server["url"] = url
    maker, is_async = CASES[name]
    get: Any = getattr(bench_http, maker)()
    if is_async:

        async def main() -> None:
            for _ in range(requests):
                await get()

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
    else:
        for _ in range(requests):
            get()


def _count(name: str, requests: int, url: str) -> int:
    from instructions import callgrind

    return callgrind([__file__, "--run", name, "--requests", str(requests), "--url", url])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"some of: {', '.join(CASES)}")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _run(args.run, args.requests, args.url)
        return
    import bench_http

    url = bench_http.url()  # one server for every case, outside valgrind
    names = args.cases or list(CASES)
    counts: dict[str, float] = {}
    for name in names:
        low = _count(name, args.requests, url)
        high = _count(name, 3 * args.requests, url)
        counts[name] = (high - low) / (2 * args.requests)
        print(f"{name:20} {counts[name]:>12,.0f} instructions per request", flush=True)
    for title, bare, ours, peer in GROUPS:
        if bare in counts and ours in counts:
            line = f"{title}: buttress {counts[ours] / counts[bare] - 1:+.1%} over bare"
            if peer in counts:
                line += f", tenacity stack {counts[peer] / counts[bare] - 1:+.1%}"
            print(line)


if __name__ == "__main__":
    main()
