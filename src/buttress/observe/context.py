"""The ids of the request being served, carried in context variables.

The ASGI request-id middleware sets them for each request; every log line buttress
writes (:mod:`buttress.observe.logging`) reads them, and so can your own code::

    from buttress.observe.context import current_ids

    current_ids()  # {"request_id": "...", "correlation_id": "..."} or {}

Context variables follow a request into the tasks it starts (``asyncio`` copies the
context into every task) and into ``asyncio.to_thread``; a thread you start
yourself starts empty unless you run it in :func:`contextvars.copy_context`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["bind_ids", "correlation_id", "current_ids", "request_id"]

request_id: ContextVar[str | None] = ContextVar("buttress_request_id", default=None)
"""The id of the request being served (``X-Request-ID``), or ``None``."""

correlation_id: ContextVar[str | None] = ContextVar("buttress_correlation_id", default=None)
"""The id shared by every request of one piece of work (``X-Correlation-ID``), or ``None``."""


def current_ids() -> dict[str, str]:
    """The ids set in this context, by field name; empty outside a request."""
    ids: dict[str, str] = {}
    value = request_id.get()
    if value is not None:
        ids["request_id"] = value
    value = correlation_id.get()
    if value is not None:
        ids["correlation_id"] = value
    return ids


@contextmanager
def bind_ids(*, request: str | None = None, correlation: str | None = None) -> Iterator[None]:
    """Set the ids for the block (a worker handling a message, a test), then restore them."""
    request_token = request_id.set(request) if request is not None else None
    correlation_token = correlation_id.set(correlation) if correlation is not None else None
    try:
        yield
    finally:
        if correlation_token is not None:
            correlation_id.reset(correlation_token)
        if request_token is not None:
            request_id.reset(request_token)
