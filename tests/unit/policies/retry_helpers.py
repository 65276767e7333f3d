"""What the Retry test modules share: scripted calls, a runner per mode, a hanging call."""

from __future__ import annotations

import asyncio
from typing import Any

from buttress._strategy import Strategy

MODES = ["sync", "async"]


class Script:
    """Plays ``outcomes`` in order (exceptions raised, values returned), then "ok"."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def sync(self) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def async_(self) -> Any:
        return self.sync()


async def run(policy: Strategy, script: Script, mode: str) -> Any:
    """Run ``script`` once through ``policy``, with ``call`` or ``acall``."""
    if mode == "sync":
        return policy.call(script.sync)
    return await policy.acall(script.async_)


class Hang:
    """An async call that raises ``failures`` in order, then hangs until cancelled."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0
        self._never = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        await self._never.wait()
