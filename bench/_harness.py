"""A small harness over pyperf for side-by-side overhead benchmarks.

A scenario script lists :class:`Case` objects: a group (what is measured), a name
(who), and a factory that returns the callable to time. Every case of a group is
timed in the same pyperf run, and :mod:`bench.run` subtracts the group's ``bare``
case to report *added* nanoseconds per call, and the ratio to each peer.

Async cases return a coroutine function; the harness awaits it ``loops`` times inside
one coroutine on one event loop per worker process, so loop start-up is not measured.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyperf


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    make: Callable[[], Callable[[], Any]]
    is_async: bool = False
    peer: bool = False
    target_ns: float | None = None
    note: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    inner_loops: int = 1
    """How many calls one run of ``make()``'s callable makes (a batch of tasks)."""
    cpu_time: bool = False
    """Time the run in the CPU time of its thread, not wall time: for long runs of pure
    CPU work (a crowd of tasks), where wall time on a shared machine measures the
    neighbours. Every case of a group should agree."""

    @property
    def bench_name(self) -> str:
        return f"{self.group} :: {self.name}"


def _sync_timer(fn: Callable[[], Any]) -> Callable[[int], float]:
    def timer(loops: int) -> float:
        it = range(loops)
        clock = time.perf_counter
        start = clock()
        for _ in it:
            fn()
        return clock() - start

    return timer


def _async_timer(fn: Callable[[], Any], *, cpu_time: bool = False) -> Callable[[int], float]:
    loop = asyncio.new_event_loop()
    atexit.register(loop.close)

    async def run(loops: int) -> float:
        it = range(loops)
        clock = time.thread_time if cpu_time else time.perf_counter
        start = clock()
        for _ in it:
            await fn()
        return clock() - start

    def timer(loops: int) -> float:
        return loop.run_until_complete(run(loops))

    return timer


def metadata(case: Case) -> dict[str, str]:
    meta = {
        "group": case.group,
        "contender": case.name,
        "peer": "1" if case.peer else "0",
        "async": "1" if case.is_async else "0",
    }
    if case.target_ns is not None:
        meta["target_ns"] = repr(case.target_ns)
    if case.note:
        meta["note"] = case.note
    if case.cpu_time:
        meta["clock"] = "thread CPU time"
    return meta


def main(cases: list[Case]) -> None:
    """Run ``cases`` under pyperf (accepts pyperf's command line: -o, --fast, ...)."""

    def forward(cmd: list[str], args: Any) -> None:
        if args.only:
            cmd.extend(["--only", args.only])

    runner = pyperf.Runner(add_cmdline_args=forward)
    runner.argparser.add_argument("--only", default="", help="substring filter on names")
    args = runner.parse_args()
    for case in cases:
        if args.only and args.only not in case.bench_name:
            continue
        fn = case.make()
        timer = _async_timer(fn, cpu_time=case.cpu_time) if case.is_async else _sync_timer(fn)
        runner.bench_time_func(
            case.bench_name, timer, metadata=metadata(case), inner_loops=case.inner_loops
        )


def check_works(cases: list[Case]) -> None:
    """Call every case once, so a broken contender fails fast instead of in a worker."""
    for case in cases:
        fn = case.make()
        if case.is_async:
            asyncio.run(fn())
        else:
            fn()
    print(f"{len(cases)} cases ok", file=sys.stderr)
