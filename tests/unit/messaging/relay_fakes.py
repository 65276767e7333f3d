"""Shared by the relay tests: an in-memory Publisher and event helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType

from buttress.messaging import Envelope
from buttress.messaging.brokers import Publisher, PublishError


class MemoryPublisher:
    """A Publisher that keeps what it was given; ``fail`` decides per batch.

    ``fail(batch)`` returns an exception to raise or ``None``; with a
    ``PublishError`` the events it does not name were confirmed.
    ``published`` holds every confirmed event in order; ``wait_for(n)`` waits until
    ``n`` events were confirmed.
    """

    def __init__(self, fail: Callable[[Sequence[Envelope]], BaseException | None] | None = None):
        self.fail = fail
        self.published: list[Envelope] = []
        self.batches = 0
        self._changed = asyncio.Condition()

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.batches += 1
        error = self.fail(envelopes) if self.fail is not None else None
        confirmed = list(envelopes)
        if isinstance(error, PublishError):  # the others of the batch were confirmed
            confirmed = [e for e in envelopes if e.id not in error.unconfirmed]
        elif error is not None:
            confirmed = []
        async with self._changed:
            self.published.extend(confirmed)
            self._changed.notify_all()
        if error is not None:
            raise error

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.published) >= count)

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.published]

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


def event(subject: str | None, n: int = 0) -> Envelope:
    return Envelope(source="/orders", type="order.changed", subject=subject, data={"n": n})


def assert_key_order(published: Sequence[Envelope], written: Sequence[Envelope]) -> None:
    """Per subject, the first delivery of each event comes in written order."""
    first: dict[str, int] = {}
    for index, item in enumerate(published):
        first.setdefault(item.id, index)
    by_key: dict[str | None, list[str]] = {}
    for item in written:
        if item.subject is not None:
            by_key.setdefault(item.subject, []).append(item.id)
    for key, ids in by_key.items():
        positions = [first[i] for i in ids]
        assert positions == sorted(positions), f"key {key}: out of order"
