"""Shared bits of the scenarios: the function under test and the floor wrappers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _harness import Case


def work(x: int = 1) -> int:
    return x


async def awork(x: int = 1) -> int:
    return x


def floor_sync(f: Callable[..., Any]) -> Callable[..., Any]:
    def w(*a: Any, **k: Any) -> Any:
        return f(*a, **k)

    return w


def floor_async(f: Callable[..., Any]) -> Callable[..., Any]:
    async def w(*a: Any, **k: Any) -> Any:
        return await f(*a, **k)

    return w


def baseline(group: str, *, is_async: bool = False) -> list[Case]:
    """The bare call and the empty pass-through decorator, measured in every group."""
    if is_async:
        return [
            Case(group, "bare", lambda: awork, is_async=True),
            Case(group, "floor: empty async wrapper", lambda: floor_async(awork), is_async=True),
        ]
    return [
        Case(group, "bare", lambda: work),
        Case(group, "floor: empty wrapper", lambda: floor_sync(work)),
    ]


def fail_twice() -> Callable[[], int]:
    """A function that raises ConnectionError twice in every three calls, then returns."""
    count = 0

    def flaky() -> int:
        nonlocal count
        count += 1
        if count % 3:
            raise ConnectionError("flaky")
        return 1

    return flaky


def afail_twice() -> Callable[[], Any]:
    """The async twin of :func:`fail_twice`."""
    count = 0

    async def flaky() -> int:
        nonlocal count
        count += 1
        if count % 3:
            raise ConnectionError("flaky")
        return 1

    return flaky
