"""The PostgreSQL check: connect, ``SELECT 1``, close (psycopg 3, the ``postgres`` extra)."""

from __future__ import annotations

import math
from datetime import timedelta

import psycopg

from ._check import Check, check_url, ready_made

__all__ = ["postgres_check"]


def postgres_check(
    url: str,
    *,
    name: str = "postgres",
    timeout: float | timedelta = 5.0,
    critical: bool = True,
    failure_threshold: int = 1,
    success_threshold: int = 1,
) -> Check:
    """A check that PostgreSQL at ``url`` (``postgresql://...``) answers ``SELECT 1``.

    Each run opens a connection of its own and closes it, so it tests what a new
    request would meet: the network, authentication and the server. The other
    options are :class:`~buttress.observe.health.Check`'s.
    """
    url = check_url(url, ("postgresql", "postgres"))
    check: Check

    async def ping() -> None:
        # libpq's own connect timeout is whole seconds, at least 2; the check's
        # timeout cuts the run off sooner when it is shorter.
        wait = max(2, math.ceil(check.timeout))
        connection = await psycopg.AsyncConnection.connect(
            url, connect_timeout=wait, autocommit=True
        )
        try:
            await connection.execute("SELECT 1")
        finally:
            await connection.close()

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
