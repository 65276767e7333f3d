"""The Fallback policy's typed API: ``mypy --strict`` must accept this file."""

from __future__ import annotations

from typing import assert_type

from buttress import is_transient
from buttress.policies.fallback import (
    ErrorHandler,
    Fallback,
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
    if isinstance(error, UnacceptableResult):
        print(error.result)
    del index


unsubscribe = fallback.subscribe(on_used, FallbackUsed)
