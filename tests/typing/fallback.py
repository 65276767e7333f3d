"""The Fallback policy's typed API: ``mypy --strict`` must accept this file."""

from __future__ import annotations

from typing import assert_type

from buttress import Matcher, is_transient
from buttress.policies.fallback import (
    ErrorHandler,
    Fallback,
    FallbackOptions,
    FallbackUsed,
    UnacceptableResult,
)


def from_cache(user_id: int) -> str:
    return str(user_id)


def degraded(error: Exception, user_id: int) -> str:
    return f"{user_id}: {error}"


async def from_replica(user_id: int) -> str:
    return str(user_id)


handler: ErrorHandler[[int], str] = Fallback.handler(degraded)
assert_type(handler(ValueError(), 1), str)

fallback = Fallback(
    from_cache,
    from_replica,
    handler,
    value=None,
    on=is_transient,
    on_result=lambda result: result is None,
    name="users",
)
by_type = Fallback(value="", on=ConnectionError)
by_types = Fallback(value="", on=(ConnectionError, TimeoutError))
by_default = Fallback(value="")
by_matcher = Fallback(value="", on=Matcher() | Matcher(KeyError), on_result=lambda r: r == "")

options: FallbackOptions = by_default.options
assert_type(Fallback.Options, type[FallbackOptions])
from_options: Fallback = Fallback.from_options(options.replace(on=KeyError), name="users")
from_file = Fallback.from_options(
    FallbackOptions.from_mapping({"on": ["KeyError"]}).replace(value=0)
)


@fallback
def load(user_id: int) -> str:
    return str(user_id)


@by_type
async def aload(user_id: int) -> str:
    return str(user_id)


async def usage() -> None:
    assert_type(load(1), str)
    assert_type(await aload(1), str)
    assert_type(fallback.call(load, 2), str)
    assert_type(await by_types.acall(aload, 3), str)


def on_used(event: FallbackUsed) -> None:
    index: int = event.alternative_index
    error: Exception = event.error
    call: str = event.call
    if isinstance(error, UnacceptableResult):
        print(error.result)
    del index, call


unsubscribe = fallback.subscribe(on_used, FallbackUsed)
