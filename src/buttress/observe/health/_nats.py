"""The NATS check: connect and flush (a PING/PONG round trip; the ``nats`` extra)."""

from __future__ import annotations

import math
from datetime import timedelta

from nats.aio.client import Client as NATS

from ._check import Check, check_url, ready_made

__all__ = ["nats_check"]


def nats_check(
    url: str,
    *,
    name: str = "nats",
    timeout: float | timedelta = 5.0,
    critical: bool = True,
    failure_threshold: int = 1,
    success_threshold: int = 1,
) -> Check:
    """A check that the NATS server at ``url`` (``nats://`` or ``tls://``) answers a flush.

    Each run connects (without reconnecting), flushes — a PING answered by a PONG —
    and closes. The other options are :class:`~buttress.observe.health.Check`'s.
    """
    url = check_url(url, ("nats", "tls", "ws", "wss"))
    check: Check

    async def flush() -> None:
        connecting = True

        async def stop_at_first_error(error: Exception) -> None:
            # While connecting, the client reports an error here and then tries the
            # server again (and again); raising ends the attempt with that error.
            # Once connected, errors also reach flush() or close(): ignored here.
            if connecting:
                raise error

        client = NATS()
        try:
            await client.connect(
                url,
                connect_timeout=max(1, math.ceil(check.timeout)),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                error_cb=stop_at_first_error,
            )
            connecting = False
            await client.flush(timeout=max(1, math.ceil(check.timeout)))
        finally:
            # Also when the connect failed or was cut off by the timeout: the client
            # would leave its socket open otherwise.
            connecting = False
            await client.close()

    check = ready_made(
        name,
        flush,
        url,
        component_type="component",
        timeout=timeout,
        critical=critical,
        failure_threshold=failure_threshold,
        success_threshold=success_threshold,
    )
    return check
