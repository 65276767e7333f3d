"""SQLInbox against the real PostgreSQL (database ``test``): the id is recorded in the
handler's transaction, never aborts it, and concurrent deliveries apply once.

Every test works on tables of its own (unique names), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from buttress.messaging import migrate
from buttress.messaging.inbox import InboxError, SQLInbox

from tests.conftest import require_service

URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """``(inbox table, effects table)``, created here and dropped after the test."""
    require_service("postgres")
    suffix = uuid.uuid4().hex[:12]
    inbox, effects = f"inbox_{suffix}", f"effects_{suffix}"
    with psycopg.connect(URL) as setup:
        assert migrate(setup, inbox, what="inbox") == ["0002_inbox"]
        setup.execute(f'CREATE TABLE "{effects}" (message_id text, amount int)')
        setup.commit()
    yield inbox, effects
    with psycopg.connect(URL, autocommit=True) as admin:
        admin.execute(f'DROP TABLE IF EXISTS "{inbox}", "{inbox}_migrations", "{effects}"')


def handle(
    conn: psycopg.Connection[Any], inbox: SQLInbox, effects: str, message_id: str, *, fail: bool
) -> bool:
    """A handler: inbox record and effect in one transaction; True if it applied."""
    with conn.transaction():
        if inbox.seen(conn, message_id):
            return False
        conn.execute(f'INSERT INTO "{effects}" VALUES (%s, 10)', (message_id,))
        if fail:
            raise RuntimeError("handler failed after its effect")
    return True


def applied(effects: str) -> list[str]:
    with psycopg.connect(URL) as reader:
        rows = reader.execute(f'SELECT message_id FROM "{effects}" ORDER BY message_id')
        return [r[0] for r in rows.fetchall()]


def test_migration_is_recorded_once(names: tuple[str, str]) -> None:
    inbox, _ = names
    with psycopg.connect(URL) as conn:
        assert migrate(conn, inbox, what="inbox") == []
        versions = conn.execute(f'SELECT version, name FROM "{inbox}_migrations"').fetchall()
    assert versions == [(2, "inbox")]


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_redelivered_message_has_no_second_effect(
    names: tuple[str, str], autocommit: bool
) -> None:
    table, effects = names
    inbox = SQLInbox("billing", table)
    with psycopg.connect(URL, autocommit=autocommit) as conn:
        assert handle(conn, inbox, effects, "m-1", fail=False) is True
        assert handle(conn, inbox, effects, "m-1", fail=False) is False
        # The duplicate did not abort the transaction: work after it still commits.
        with conn.transaction():
            assert inbox.seen(conn, "m-1") is True
            conn.execute(f'INSERT INTO "{effects}" VALUES (%s, 1)', ("after",))
    assert applied(effects) == ["after", "m-1"]


def test_a_rolled_back_handler_is_run_again_by_the_redelivery(names: tuple[str, str]) -> None:
    table, effects = names
    inbox = SQLInbox("billing", table)
    with psycopg.connect(URL) as conn:
        with pytest.raises(RuntimeError):
            handle(conn, inbox, effects, "m-1", fail=True)
        assert applied(effects) == []
        assert handle(conn, inbox, effects, "m-1", fail=False) is True
    assert applied(effects) == ["m-1"]


def test_autocommit_without_a_transaction_is_refused(names: tuple[str, str]) -> None:
    table, _ = names
    with psycopg.connect(URL, autocommit=True) as conn:
        with pytest.raises(InboxError, match="autocommit mode with no transaction open"):
            SQLInbox("c", table).seen(conn, "m")
        count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert count == (0,)


def test_concurrent_deliveries_apply_once(names: tuple[str, str]) -> None:
    """Two deliveries at once: the second waits for the first transaction and skips."""
    table, effects = names
    inbox = SQLInbox("billing", table)
    first_recorded = threading.Event()
    release_first = threading.Event()
    results: dict[str, bool] = {}

    def first() -> None:
        with psycopg.connect(URL) as conn, conn.transaction():
            results["first"] = not inbox.seen(conn, "m-1")
            conn.execute(f'INSERT INTO "{effects}" VALUES (%s, 10)', ("m-1",))
            first_recorded.set()
            release_first.wait(10)

    def second() -> None:
        first_recorded.wait(10)
        with psycopg.connect(URL) as conn:
            results["second"] = handle(conn, inbox, effects, "m-1", fail=False)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_recorded.wait(10)
    # The second delivery is blocked on the first one's row lock until it commits.
    # Autocommit: pg_stat_activity is a snapshot held for the reading transaction.
    with psycopg.connect(URL, autocommit=True) as watcher:
        for _ in range(2000):  # up to 20 s on a busy machine
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                (f"%{table}%",),
            ).fetchone()
            if waiting and waiting[0] >= 1:
                break
            threading.Event().wait(0.01)
    assert waiting == (1,)
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert results == {"first": True, "second": False}
    assert applied(effects) == ["m-1"]


async def test_async_connection(names: tuple[str, str]) -> None:
    table, effects = names
    inbox = SQLInbox("billing", table)
    async with await psycopg.AsyncConnection.connect(URL) as conn:
        for attempt in range(3):
            try:
                async with conn.transaction():
                    if await inbox.aseen(conn, "m-1"):
                        continue
                    await conn.execute(f'INSERT INTO "{effects}" VALUES (%s, 10)', ("m-1",))
                    if attempt == 0:
                        raise RuntimeError("first attempt fails")
            except RuntimeError:
                pass
        with psycopg.connect(URL) as sync, pytest.raises(InboxError, match=r"use inbox\.seen"):
            await inbox.aseen(sync, "m")  # type: ignore[arg-type]
    assert applied(effects) == ["m-1"]


async def test_prune_in_batches_async_and_sync(names: tuple[str, str]) -> None:
    table, _ = names
    billing, shipping = SQLInbox("billing", table), SQLInbox("shipping", table)
    with psycopg.connect(URL) as conn:
        with conn.transaction():
            for i in range(5):
                billing.seen(conn, f"old-{i}")
                shipping.seen(conn, f"old-{i}")
            billing.seen(conn, "new")
            conn.execute(
                f"UPDATE \"{table}\" SET seen_at = now() - interval '2 hours' "
                "WHERE message_id != 'new'"
            )
        assert billing.prune(conn, 3600, batch_size=2) == 5
        assert billing.prune(conn, 3600) == 0
        conn.execute("SELECT 1")  # a transaction is open now (autocommit off)
        with pytest.raises(InboxError, match="commit the open transaction first"):
            billing.prune(conn, 3600)
        conn.rollback()
    async with await psycopg.AsyncConnection.connect(URL) as aconn:
        assert await shipping.aprune(aconn, 3600, batch_size=4) == 5
        rows = await (await aconn.execute(f'SELECT consumer, message_id FROM "{table}"')).fetchall()
    assert rows == [("billing", "new")]


async def test_a_pruned_id_does_not_block_concurrent_writers(names: tuple[str, str]) -> None:
    """prune skips rows locked by a handler's open transaction instead of waiting."""
    table, _ = names
    inbox = SQLInbox("billing", table)
    with psycopg.connect(URL) as conn:
        with conn.transaction():
            inbox.seen(conn, "locked")
            inbox.seen(conn, "free")
            conn.execute(f"UPDATE \"{table}\" SET seen_at = now() - interval '2 hours'")
        async with await psycopg.AsyncConnection.connect(URL) as holder:
            await holder.execute(
                f"SELECT 1 FROM \"{table}\" WHERE message_id = 'locked' FOR UPDATE"
            )
            async with await psycopg.AsyncConnection.connect(URL) as pruner:
                pruned = await asyncio.wait_for(inbox.aprune(pruner, 3600), 10)
            await holder.rollback()
    assert pruned == 1


def test_sqlalchemy_session_over_psycopg(names: tuple[str, str]) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    table, effects = names
    inbox = SQLInbox("billing", table)
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        for attempt in range(3):
            with Session(engine) as session:
                if inbox.seen(session, "m-1"):
                    session.commit()
                    continue
                session.execute(text(f'INSERT INTO "{effects}" VALUES (:m, 10)'), {"m": "m-1"})
                if attempt == 0:
                    session.rollback()  # failed: the id goes with the effect
                else:
                    session.commit()
    finally:
        engine.dispose()
    assert applied(effects) == ["m-1"]
