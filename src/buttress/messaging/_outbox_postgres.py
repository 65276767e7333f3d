"""Opening a psycopg 3 connection for the outbox tools (``buttress outbox init``).

The only place the outbox imports psycopg (the ``postgres`` extra).
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["DatabaseError", "connect"]

DatabaseError = psycopg.Error
"""The base class of psycopg's errors (connection refused, SQL errors, ...)."""


def connect(url: str) -> psycopg.Connection[Any]:
    """A synchronous psycopg connection to ``url`` (a ``postgresql://`` URL)."""
    return psycopg.connect(url, connect_timeout=10)
