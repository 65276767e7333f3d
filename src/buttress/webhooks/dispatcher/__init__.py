"""Durable webhook delivery: endpoints, fan-out, retries, dead letters.

:class:`Dispatcher` is an asyncio service. :meth:`~Dispatcher.send` stores a message
and one delivery per matching :class:`Endpoint`; the dispatcher claims deliveries
with a lease from its storage (:class:`SQLiteDeliveryStore`,
:class:`PostgresDeliveryStore`; create the tables with :func:`migrate`), posts them
signed, through the SSRF guard and each endpoint's breaker, rate limiter and
bulkhead, records every attempt, and retries on a :class:`RetrySchedule` until the
delivery succeeds or is dead-lettered. A sans-I/O :class:`Engine` makes every
decision.

:class:`PostgresDeliveryStore` needs ``buttress[postgres]``; the dispatcher's HTTP
needs ``buttress[aiohttp]``. Both are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buttress.webhooks.dispatcher._driver import (
    Dispatcher,
    DispatcherDeadLetters,
    Message,
    MessageError,
    default_breaker,
)
from buttress.webhooks.dispatcher._engine import (
    Claimed,
    Decision,
    Deferred,
    EndpointDisabled,
    Engine,
    Exhausted,
    Refused,
    Response,
)
from buttress.webhooks.dispatcher._options import DEFAULT_DELAYS, Endpoint, Ordering, RetrySchedule
from buttress.webhooks.dispatcher._store import (
    AttemptRecord,
    DeliveryInfo,
    DeliveryStore,
    migrate,
    store_from_url,
)
from buttress.webhooks.dispatcher._store_sqlite import SQLiteDeliveryStore

if TYPE_CHECKING:
    from buttress.webhooks.dispatcher._store_postgres import PostgresDeliveryStore

__all__ = [
    "DEFAULT_DELAYS",
    "AttemptRecord",
    "Claimed",
    "Decision",
    "Deferred",
    "DeliveryInfo",
    "DeliveryStore",
    "Dispatcher",
    "DispatcherDeadLetters",
    "Endpoint",
    "EndpointDisabled",
    "Engine",
    "Exhausted",
    "Message",
    "MessageError",
    "Ordering",
    "PostgresDeliveryStore",
    "Refused",
    "Response",
    "RetrySchedule",
    "SQLiteDeliveryStore",
    "default_breaker",
    "migrate",
    "store_from_url",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresDeliveryStore":
        from buttress.webhooks.dispatcher._store_postgres import (  # noqa: PLC0415 - psycopg
            PostgresDeliveryStore,
        )

        return PostgresDeliveryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
