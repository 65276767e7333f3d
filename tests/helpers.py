"""Small helpers for tests."""

from __future__ import annotations

import asyncio


async def tick(times: int = 1) -> None:
    """Let every ready task run ``times`` loop iterations, without any timed wait."""
    loop = asyncio.get_running_loop()
    for _ in range(times):
        future: asyncio.Future[None] = loop.create_future()
        loop.call_soon(future.set_result, None)
        await future
