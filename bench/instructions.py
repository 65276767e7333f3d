"""Instructions per call, counted by valgrind: a measure that does not move with load.

Usage::

    python bench/instructions.py                      # every case, this checkout
    python bench/instructions.py retry pipeline       # some cases
    python bench/instructions.py --src ../old/src     # another checkout's buttress

Each case runs in a fresh interpreter under ``valgrind --tool=callgrind`` twice, with
``--calls`` and three times as many calls; the difference over the extra calls is
the instructions of one call (the call itself included, start-up excluded). Wall
time on a shared machine moves 1.3–2× with its load; these counts move by a few
per cent at most, so a question such as "is this within 10 % of last week" is
settled here (see ``bench/NOTES.md``). Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def _cases() -> dict[str, tuple[Callable[[], Any], bool]]:
    from buttress import Bulkhead, CircuitBreaker, Pipeline, Retry
    from buttress.policies.timeout import Timeout

    def work() -> None:
        return None

    async def awork() -> None:
        return None

    def floor(*args: Any, **kwargs: Any) -> None:
        return work(*args, **kwargs)

    async def afloor(*args: Any, **kwargs: Any) -> None:
        return await awork(*args, **kwargs)

    def fail_twice() -> Callable[[], int]:
        count = [0]

        def flaky() -> int:
            count[0] += 1
            if count[0] % 3:
                raise ConnectionError("flaky")
            return 1

        return flaky

    def afail_twice() -> Callable[[], Any]:
        flaky = fail_twice()

        async def aflaky() -> int:
            return flaky()

        return aflaky

    def zero() -> Retry:
        return Retry(3, backoff="constant", delay=0)

    def full() -> Pipeline:
        return Pipeline(Timeout(2.0), Retry(), CircuitBreaker(), Bulkhead(10))

    return {
        "bare": (work, False),
        "floor": (floor, False),
        "retry": (Retry()(work), False),
        "retry_fail": (zero()(fail_twice()), False),
        "breaker": (CircuitBreaker()(work), False),
        "bulkhead": (Bulkhead(10)(work), False),
        "pipeline": (full()(work), False),
        "abare": (awork, True),
        "afloor": (afloor, True),
        "aretry": (Retry()(awork), True),
        "aretry_fail": (zero()(afail_twice()), True),
        "abreaker": (CircuitBreaker()(awork), True),
        "abulkhead": (Bulkhead(10)(awork), True),
        "apipeline": (full()(awork), True),
        "apipeline_no_timeout": (
            Pipeline(Retry(), CircuitBreaker(), Bulkhead(10))(awork),
            True,
        ),
        "atimeout": (Timeout(2.0)(awork), True),
    }


CASE_NAMES = (
    "bare",
    "floor",
    "retry",
    "retry_fail",
    "breaker",
    "bulkhead",
    "pipeline",
    "abare",
    "afloor",
    "aretry",
    "aretry_fail",
    "abreaker",
    "abulkhead",
    "apipeline",
    "apipeline_no_timeout",
    "atimeout",
)


def _run_case(name: str, calls: int) -> None:
    fn, is_async = _cases()[name]
    if is_async:

        async def main() -> None:
            for _ in range(calls):
                await fn()

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
    else:
        for _ in range(calls):
            fn()


def callgrind(arguments: list[str], env: dict[str, str] | None = None) -> int:
    """Instructions valgrind's callgrind counts for ``python <arguments>``.

    A fixed hash seed lays dictionaries out alike in every run: counts then repeat
    to the instruction instead of moving by ±60.
    """
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONHASHSEED", "0")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        *arguments,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr}")
    return int(found.group(1))


def _count(name: str, calls: int, src: str | None) -> int:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.path.abspath(src)
    return callgrind([__file__, "--run", name, "--calls", str(calls)], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"some of: {', '.join(CASE_NAMES)}")
    parser.add_argument("--src", help="the src/ folder of the buttress to measure")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _run_case(args.run, args.calls)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt install valgrind")
    for name in args.cases or CASE_NAMES:
        if name not in CASE_NAMES:
            sys.exit(f"unknown case {name!r}; cases: {', '.join(CASE_NAMES)}")
        few = _count(name, args.calls, args.src)
        many = _count(name, 3 * args.calls, args.src)
        print(f"{name:24} {(many - few) / (2 * args.calls):10,.0f} instructions per call")


if __name__ == "__main__":
    main()
