"""The typed API, as users write it: ``mypy --strict`` must accept this file.

Nothing here runs; it is checked by ``mypy`` (``files`` in pyproject.toml). Every
assignment or ``assert_type`` states a type the API promises, so a signature that
loses its ``ParamSpec`` or degrades to ``Any`` fails the type check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, assert_type

from buttress import (
    MONOTONIC,
    BulkheadFull,
    ButtressError,
    CallRejected,
    CircuitOpen,
    Clock,
    ConfigError,
    Event,
    FakeClock,
    MonotonicClock,
    Pipeline,
    RateLimited,
    Rejected,
    Retry,
    RetryExhausted,
    Timeout,
    TimeoutExceeded,
    is_transient,
    retry_after_of,
    subscribe,
)
from buttress._strategy import UseAcall
from buttress.clock import TimerHandle
from buttress.errors import http_status_of
from buttress.events import Emitter, Listener

pipeline = Pipeline(Retry(), name="typed")
nested = Pipeline(pipeline, Pipeline(Timeout(1.0)))

# --------------------------------------------------------------------- decorated callables


@pipeline
def add(x: int, y: int = 0) -> int:
    return x + y


@nested
async def fetch(url: str, *, retries: int = 1) -> bytes:
    return url.encode()


class Client:
    @pipeline
    def get(self, path: str) -> str:
        return path

    @pipeline
    async def aget(self, path: str) -> list[str]:
        return [path]

    @staticmethod
    @pipeline
    def version() -> int:
        return 1


def sync_calls() -> None:
    assert_type(add(1), int)
    total: int = add(1, y=2)
    keeps_parameters: Callable[[int, int], int] = add
    assert_type(pipeline.call(add, 1, 2), int)
    assert_type(pipeline.call(lambda: "x"), str)
    assert_type(pipeline(add, 1), int)
    assert_type(pipeline(add, x=1), int)
    redecorated: Callable[[int, int], int] = pipeline(add)
    client = Client()
    assert_type(client.get("/"), str)
    assert_type(Client.version(), int)
    del total, keeps_parameters, redecorated


def sync_call_of_an_async_function() -> None:
    # Refused at run time with TypeError; typed so that using the value fails to check
    # (see tests/unit/test_typing_refusals.py for the error mypy reports).
    assert_type(pipeline.call(fetch, "u"), UseAcall)
    assert_type(Retry().call(fetch, "u"), UseAcall)


async def async_calls() -> None:
    assert_type(await fetch("https://example.org"), bytes)
    body: bytes = await fetch("u", retries=2)
    keeps_coroutine: Callable[..., Coroutine[Any, Any, bytes]] = fetch
    assert_type(await pipeline.acall(fetch, "u", retries=0), bytes)
    assert_type(await nested.acall(Client().aget, "/"), list[str])
    assert_type(await Client().aget("/x"), list[str])
    del body, keeps_coroutine


def pipelines() -> None:
    first = pipeline[0]
    size: int = len(nested)
    members: list[Any] = list(nested)
    name: str = pipeline.name
    del first, size, members, name


# ---------------------------------------------------------------------------------- errors


def errors(exc: BaseException) -> None:
    assert_type(is_transient(exc), bool)
    assert_type(retry_after_of(exc), float | None)
    assert_type(retry_after_of(exc, now=1_700_000_000.0), float | None)
    assert_type(http_status_of(exc), int | None)
    try:
        add(1)
    except RateLimited as limited:
        assert_type(limited.retry_after, float | None)
        key: str | None = limited.key
        remaining: int | None = limited.remaining
        del key, remaining
    except CircuitOpen as circuit:
        until: float = circuit.until
        del until
    except BulkheadFull as full:
        reason: str = full.reason
        del reason
    except Rejected as rejected:
        after: float | None = rejected.retry_after
        del after
    except RetryExhausted as exhausted:
        attempts: int = exhausted.attempts
        last: BaseException | None = exhausted.last_error
        del attempts, last
    except ConfigError as bad:
        path: str | None = bad.path
        del path
    except ButtressError:
        pass
    builtin_timeout: TimeoutError = TimeoutExceeded("call", 2.0)
    value_error: ValueError = ConfigError("bad", path="retry.attempts")
    del builtin_timeout, value_error


# ----------------------------------------------------------------------------------- clock


real: Clock = MONOTONIC
also_real: Clock = MonotonicClock()
fake_clock = FakeClock(auto_advance=False)
fake: Clock = fake_clock


def clocks(clock: Clock) -> None:
    start: float = clock.monotonic()
    wall: float = clock.time()
    handle: TimerHandle = clock.call_later(1.0, lambda: None)
    handle.cancel()
    woke: bool = clock.wait(threading.Event(), 0.5)
    clock.sleep(0.0)
    fake_clock.advance(1.5)
    sleeps: list[float] = fake_clock.sleeps
    pending: int = fake_clock.pending_timers
    del start, wall, woke, sleeps, pending


async def async_clocks(clock: Clock) -> None:
    await clock.asleep(0.0)


# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Deployed(Event):
    """A user's own event type."""

    version: str


def on_event(event: Event) -> None:
    if isinstance(event, CallRejected):
        reason: str = event.reason
        del reason


def events() -> None:
    unsubscribe: Callable[[], None] = subscribe(on_event, CallRejected, Deployed)
    unsubscribe()
    stop: Callable[[], None] = pipeline.subscribe(on_event)
    stop()
    listener: Listener = print
    emitter = Emitter()
    if emitter.enabled:
        emitter.emit(Deployed(policy="deploys", version="1.2.3"))
    policy: str = CallRejected("breaker", "circuit_open").policy
    del listener, policy
