"""The outbox relay: publishes committed outbox rows to a broker, in per-key order.

:class:`Relay` is an asyncio service. It claims pending rows from its storage
(:class:`SQLiteRelayStore`, :class:`PostgresRelayStore`), publishes them through a
buttress :class:`~buttress.Pipeline` around a
:class:`~buttress.messaging.brokers.Publisher`, and marks them published only after
the broker confirmed; a sans-I/O :class:`Engine` decides what a failure means
(retry later with backoff, or dead-letter after ``max_attempts``).

:class:`PostgresRelayStore` needs ``buttress[postgres]``; it is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buttress.messaging.relay._driver import Relay, default_pipeline
from buttress.messaging.relay._engine import ClaimedRow, Decision, Engine
from buttress.messaging.relay._events import RelayDeadLettered
from buttress.messaging.relay._sqlite import SQLiteRelayStore
from buttress.messaging.relay._store import ClaimStore

if TYPE_CHECKING:
    from buttress.messaging.relay._postgres import PostgresRelayStore

__all__ = [
    "ClaimStore",
    "ClaimedRow",
    "Decision",
    "Engine",
    "PostgresRelayStore",
    "Relay",
    "RelayDeadLettered",
    "SQLiteRelayStore",
    "default_pipeline",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresRelayStore":
        from buttress.messaging.relay._postgres import PostgresRelayStore  # noqa: PLC0415 - psycopg

        return PostgresRelayStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
