"""Storage of the relay's claims: the protocol and the SQL both backends share.

The claim rule that keeps per-key order lives in :func:`claim_sql`: a row is
claimable when it is pending, due (``next_attempt_at``), not leased to a live
relay (``claimed_until`` in the past or unset), and **no row of the same key
(``subject``) with a smaller ``seq`` is still pending** — whether that earlier row
is leased, waiting for a retry, or simply not claimed yet. So at most one row per
key is ever in flight, and event n+1 of a key is published only after event n was
confirmed (or dead-lettered). Rows without a subject have no order constraint.

The claim never reads "rows after the last seq seen": transactions commit out of
``seq`` order, and such a cursor would skip the rows committed late.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from buttress.messaging._schema import TableName
from buttress.messaging.relay._engine import ClaimedRow, Decision

__all__ = ["ClaimStore", "claim_sql", "retention_sql"]


def claim_sql(table: TableName, mark: str, *, skip_locked: bool) -> str:
    """The claim query; parameters: ``now``, ``now``, ``limit`` (in that order).

    Args:
        table: The outbox table.
        mark: The driver's placeholder (``?`` or ``%s``).
        skip_locked: Append ``FOR UPDATE SKIP LOCKED`` (PostgreSQL).
    """
    t = table.qualified()
    now = "to_timestamp(%s)" if mark == "%s" else "?"
    sql = (
        f"SELECT o.seq, o.event_id, o.subject, o.envelope, o.attempts FROM {t} AS o "
        f"WHERE o.status = 'pending' AND o.next_attempt_at <= {now} "
        f"AND (o.claimed_until IS NULL OR o.claimed_until <= {now}) "
        "AND (o.subject IS NULL OR NOT EXISTS ("
        f"SELECT 1 FROM {t} AS e WHERE e.subject = o.subject "
        "AND e.status = 'pending' AND e.seq < o.seq)) "
        f"ORDER BY o.seq LIMIT {mark}"
    )
    return sql + (" FOR UPDATE OF o SKIP LOCKED" if skip_locked else "")


def retention_sql(table: TableName, mark: str, *, skip_locked: bool) -> str:
    """Delete up to ``limit`` published rows older than ``before``; params: before, limit."""
    t = table.qualified()
    before = "to_timestamp(%s)" if mark == "%s" else "?"
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    return (
        f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} WHERE status = 'published' "
        f"AND published_at < {before} ORDER BY published_at LIMIT {mark}{lock})"
    )


class ClaimStore(Protocol):
    """Where a :class:`~buttress.messaging.relay.Relay` claims and marks outbox rows.

    Implementations: :class:`~buttress.messaging.relay.SQLiteRelayStore` and
    :class:`~buttress.messaging.relay.PostgresRelayStore`. Times are Unix seconds.
    """

    @property
    def channel(self) -> str | None:
        """The ``LISTEN`` channel that announces new rows, or ``None`` (poll only)."""
        ...

    async def claim(self, owner: str, limit: int, now: float, lease: float) -> list[ClaimedRow]:
        """Claim up to ``limit`` claimable rows for ``owner`` until ``now + lease``."""
        ...

    async def apply(self, owner: str, decision: Decision, now: float) -> None:
        """Write a :class:`Decision` back, in one transaction.

        Failures, releases and dead letters touch only rows still leased to
        ``owner``; a confirmed publish is recorded whoever holds the lease.
        """
        ...

    async def delete_published(self, before: float, batch: int) -> int:
        """Delete published rows older than ``before``, ``batch`` rows per
        transaction; return how many were deleted."""
        ...

    async def oldest_pending(self) -> float | None:
        """``created_at`` (Unix time) of the oldest pending row, or ``None``."""
        ...

    def listen(self) -> AsyncIterator[None]:
        """Yield once when listening (catch up then), then once per notification.

        Only called when :attr:`channel` is set. Raises when the listening
        connection is lost; the caller calls it again to re-establish it.
        """
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...
