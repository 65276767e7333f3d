"""One SQLite connection used from worker threads, one write transaction at a time.

The relay's, the dead letters' and the webhook dispatcher's SQLite stores share it:
SQLite has one writer at a time, so every unit of work is a short ``BEGIN
IMMEDIATE`` transaction, run in a worker thread (never on the event loop) on a
connection of the store's own, under a lock (the connection is used by one thread
at a time).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

__all__ = ["SQLiteWorker"]

T = TypeVar("T")


class SQLiteWorker:
    """A connection to ``database`` and the transactions run on it.

    Args:
        database: The file (``":memory:"`` too).
        busy_timeout: Seconds to wait for another writer's lock before failing.
        must_exist: Open the file read-write only: a mistyped path fails instead of
            creating an empty database.
        wal: Switch the file to write-ahead logging (persistent: only for a file
            buttress owns, never the application's own database).
    """

    __slots__ = ("_conn", "_lock", "busy_timeout", "database", "must_exist", "wal")

    def __init__(
        self, database: str, *, busy_timeout: float, must_exist: bool = False, wal: bool = False
    ) -> None:
        self.database = database
        self.busy_timeout = busy_timeout
        self.must_exist = must_exist
        self.wal = wal
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            target, uri = self.database, False
            if self.must_exist:
                target, uri = "file:" + quote(os.path.abspath(self.database)) + "?mode=rw", True
            conn = sqlite3.connect(
                target,
                uri=uri,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            if self.wal and self.database != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a ``BEGIN IMMEDIATE`` transaction, in a worker
        thread; commit when it returns, roll back when it raises."""

        def work() -> T:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

        return await asyncio.to_thread(work)

    def close(self) -> None:
        """Close the connection (opened again on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
