"""A broad ``on=`` does not opt in to retrying fail-fast rejections: only their types do."""

from __future__ import annotations

import pytest

from buttress import (
    BulkheadFull,
    ButtressError,
    CircuitOpen,
    Rejected,
    Retry,
    RetryExhausted,
)
from buttress.clock import FakeClock

from tests.unit.policies.retry_helpers import MODES, Script, run


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "on",
    [Exception, ButtressError, (Exception, ValueError), lambda exc: True],
    ids=["Exception", "ButtressError", "tuple", "predicate"],
)
@pytest.mark.parametrize(
    "error",
    [
        CircuitOpen("b", 30.0, 30.0),
        BulkheadFull("b"),
        RetryExhausted("inner", 3, ConnectionError()),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_broad_on_does_not_retry_fail_fast_errors(
    mode: str, on: object, error: Exception
) -> None:
    clock = FakeClock()
    script = Script(error, "ok")
    with pytest.raises(type(error)):
        await run(Retry(3, on=on, clock=clock), script, mode)  # type: ignore[arg-type]
    assert script.calls == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("on", [CircuitOpen, Rejected, (ConnectionError, CircuitOpen)])
async def test_naming_the_rejection_opts_in(mode: str, on: object) -> None:
    clock = FakeClock()
    script = Script(CircuitOpen("b", 1.0, 1.0), "ok")
    assert await run(Retry(3, on=on, jitter="none", clock=clock), script, mode) == "ok"  # type: ignore[arg-type]
    assert script.calls == 2
    assert clock.sleeps == [1.0]  # the breaker's retry_after
