"""The Redis check: ``PING`` on a connection of its own (the ``redis`` extra)."""

from __future__ import annotations

from datetime import timedelta

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ._check import Check, check_url, ready_made

__all__ = ["redis_check"]


def redis_check(
    url: str,
    *,
    name: str = "redis",
    timeout: float | timedelta = 5.0,
    critical: bool = True,
    failure_threshold: int = 1,
    success_threshold: int = 1,
) -> Check:
    """A check that Redis at ``url`` (``redis://`` or ``rediss://``) answers ``PING``.

    Each run connects, pings once (no retries: the monitor's thresholds decide how
    many failures matter) and disconnects. The other options are
    :class:`~buttress.observe.health.Check`'s.
    """
    url = check_url(url, ("redis", "rediss", "unix"))
    check: Check

    async def ping() -> None:
        client = aioredis.from_url(
            url,
            socket_connect_timeout=check.timeout,
            socket_timeout=check.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await client.ping()
        finally:
            await client.aclose()

    check = ready_made(
        name,
        ping,
        url,
        component_type="datastore",
        timeout=timeout,
        critical=critical,
        failure_threshold=failure_threshold,
        success_threshold=success_threshold,
    )
    return check
