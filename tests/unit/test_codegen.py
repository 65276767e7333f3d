"""Generated drivers: one template, every shape, flags, cached factories, readable tracebacks."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import pytest

from buttress._codegen import (
    ASYNC_AROUND,
    ASYNC_DECORATOR,
    ASYNC_DIRECT,
    ASYNC_RUNNER,
    SHAPES,
    SYNC_AROUND,
    SYNC_DECORATOR,
    SYNC_DIRECT,
    SYNC_RUNNER,
    factory,
)
from buttress._strategy import invoke

TEMPLATE = """
{DEF} counted{SIG}:
    @loud log.append("before")
    try:
        result = {AWAIT}{CALL}
        {CHECK}
    except ValueError:
        @!loud return "caught quietly"
        @loud return "caught loudly"
    log.append(result)
    return result
"""


def double(x: int) -> int:
    if x < 0:
        raise ValueError(x)
    return 2 * x


async def adouble(x: int) -> int:
    return double(x)


def test_every_shape_runs_the_same_template() -> None:
    log: list[Any] = []
    runner = factory(TEMPLATE, SYNC_RUNNER, ("log",), {"loud": True})(log, invoke)
    assert runner(double, (2,), {}) == 4
    direct = factory(TEMPLATE, SYNC_DIRECT, ("log",), {"loud": True})(log)
    assert direct(double, (3,), {}) == 6
    decorated = factory(TEMPLATE, SYNC_DECORATOR, ("log",), {"loud": True})(log, double)
    assert decorated(4) == 8
    assert decorated(-1) == "caught loudly"
    assert log == ["before", 4, "before", 6, "before", 8, "before"]


def test_async_shapes() -> None:
    log: list[Any] = []

    async def inner(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await fn(*args, **kwargs)

    async def main() -> list[Any]:
        runner = factory(TEMPLATE, ASYNC_RUNNER, ("log",), {"loud": False})(log, inner)
        direct = factory(TEMPLATE, ASYNC_DIRECT, ("log",), {"loud": False})(log)
        decorated = factory(TEMPLATE, ASYNC_DECORATOR, ("log",), {"loud": False})(log, adouble)
        return [
            await runner(adouble, (1,), {}),
            await direct(adouble, (2,), {}),
            await decorated(-5),
        ]

    assert asyncio.run(main()) == [2, 4, "caught quietly"]
    assert log == [2, 4]


def test_around_shapes_wrap_a_function_around_the_next_runner() -> None:
    log: list[Any] = []
    calls: list[Any] = []

    def inner(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        calls.append(fn)
        return invoke(fn, args, kwargs)

    async def ainner(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        calls.append(fn)
        return await fn(*args, **kwargs)

    wrapper = factory(TEMPLATE, SYNC_AROUND, ("log",), {"loud": False})(log, double, inner)
    assert wrapper(5) == 10
    assert wrapper(-1) == "caught quietly"
    awrapper = factory(TEMPLATE, ASYNC_AROUND, ("log",), {"loud": True})(log, adouble, ainner)
    assert asyncio.run(awrapper(x=6)) == 12
    assert calls == [double, double, adouble]
    assert log == [10, "before", 12]


def test_direct_sync_shapes_refuse_a_coroutine() -> None:
    direct = factory(TEMPLATE, SYNC_DIRECT, ("log",), {"loud": False})([])
    with pytest.raises(TypeError, match="acall"):
        direct(adouble, (1,), {})
    decorated = factory(TEMPLATE, SYNC_DECORATOR, ("log",), {"loud": False})([], adouble)
    with pytest.raises(TypeError, match=r"adouble returned a coroutine"):
        decorated(1)


def test_factories_are_cached() -> None:
    first = factory(TEMPLATE, SYNC_RUNNER, ("log",), {"loud": True})
    assert factory(TEMPLATE, SYNC_RUNNER, ("log",), {"loud": True}) is first
    assert factory(TEMPLATE, SYNC_RUNNER, ("log",), {"loud": False}) is not first
    made = {factory(TEMPLATE, shape, ("log",), {"loud": True}) for shape in SHAPES}
    assert len(made) == len(SHAPES)


def test_a_missing_flag_is_a_bug_caught_at_build_time() -> None:
    with pytest.raises(KeyError, match="loud"):
        factory(TEMPLATE, SYNC_RUNNER, ("log",), {})


def test_tracebacks_show_the_generated_lines() -> None:
    template = """
{DEF} failing{SIG}:
    result = {CALL}
    raise RuntimeError("from the driver")
"""
    driver = factory(template, SYNC_DIRECT, (), {}, label="test")()
    with pytest.raises(RuntimeError) as caught:
        driver(double, (1,), {})
    text = "".join(traceback.format_exception(caught.value))
    assert 'raise RuntimeError("from the driver")' in text
    assert "<buttress test sync_direct" in text
