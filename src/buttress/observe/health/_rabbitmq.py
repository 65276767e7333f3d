"""The RabbitMQ check: an AMQP connection, opened and closed (aio-pika, the ``rabbitmq`` extra)."""

from __future__ import annotations

from datetime import timedelta

import aio_pika

from ._check import Check, check_url, ready_made

__all__ = ["rabbitmq_check"]


def rabbitmq_check(
    url: str,
    *,
    name: str = "rabbitmq",
    timeout: float | timedelta = 5.0,
    critical: bool = True,
    failure_threshold: int = 1,
    success_threshold: int = 1,
) -> Check:
    """A check that the broker at ``url`` (``amqp://`` or ``amqps://``) accepts a connection.

    Each run completes the AMQP handshake — the broker answers, and accepts the
    credentials and virtual host — then closes the connection. The other options are
    :class:`~buttress.observe.health.Check`'s.
    """
    url = check_url(url, ("amqp", "amqps"))
    check: Check

    async def connect() -> None:
        connection = await aio_pika.connect(url, timeout=check.timeout)
        await connection.close()

    check = ready_made(
        name,
        connect,
        url,
        component_type="component",
        timeout=timeout,
        critical=critical,
        failure_threshold=failure_threshold,
        success_threshold=success_threshold,
    )
    return check
