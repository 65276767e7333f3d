"""Deferring work through the outbox, on real SQLite files (sqlite3, aiosqlite, SQLAlchemy).

Providers down: the operation is an event in the outbox and the caller gets a
DeferredResult; provider up: no event; the consumer side runs the operation.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

import aiosqlite
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from buttress import CircuitBreaker, Pipeline
from buttress.errors import ConfigError
from buttress.messaging import Envelope, Outbox, OutboxError, migrate
from buttress.messaging.deferred import Deferral, DeferredError, DeferredResult, Operations
from buttress.messaging.relay import Relay, SQLiteRelayStore
from buttress.policies.fallback import Fallback

from .relay_fakes import MemoryPublisher

OP = "com.example.send-email"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "app.db"
    db = sqlite3.connect(file)
    migrate(db)
    db.close()
    return file


def events(path: Path) -> list[Envelope]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT envelope FROM buttress_outbox ORDER BY seq").fetchall()
    finally:
        db.close()
    return [Envelope.from_json(text) for (text,) in rows]


async def relayed(path: Path) -> list[Envelope]:
    store = SQLiteRelayStore(path)
    publisher = MemoryPublisher()
    try:
        await Relay(store, publisher).drain()
    finally:
        await store.close()
    return publisher.published


class Provider:
    """A provider that is up or down, counting its calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[Any, ...]] = []
        self.threads: list[str] = []

    def send(self, to: str, body: str, *, urgent: bool = False) -> str:
        self.calls.append((to, body, urgent))
        self.threads.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        return f"sent to {to}"

    async def asend(self, to: str, body: str, *, urgent: bool = False) -> str:
        return self.send(to, body, urgent=urgent)


def sqlite_deferral(path: Path) -> Deferral:
    return Deferral(
        Outbox(),
        source="/mailer",
        connect=functools.partial(sqlite3.connect, path),
        aconnect=functools.partial(aiosqlite.connect, path),
    )


# -- sync ------------------------------------------------------------------------------


async def test_every_provider_down_defers_the_call(path: Path) -> None:
    primary, backup = Provider(ConnectionError("smtp down")), Provider(TimeoutError("slow"))
    deferral = sqlite_deferral(path)

    @deferral.deferrable(OP)
    @Pipeline(Fallback(backup.send))
    def send(to: str, body: str, *, urgent: bool = False) -> str:
        return primary.send(to, body, urgent=urgent)

    result = send("ann@example.com", "hello", urgent=True)
    assert isinstance(result, DeferredResult)
    assert (result.operation, result.reason) == (OP, "TimeoutError: slow")
    assert len(primary.calls) == len(backup.calls) == 1
    [stored] = events(path)
    assert (stored.id, stored.type, stored.source) == (result.id, OP, "/mailer")
    assert stored.data == {
        "args": ["ann@example.com", "hello"],
        "kwargs": {"urgent": True},
        "reason": "TimeoutError: slow",
    }
    assert [e.id for e in await relayed(path)] == [result.id]


def test_provider_up_writes_nothing(path: Path) -> None:
    provider = Provider()
    send = sqlite_deferral(path).deferrable(OP)(provider.send)
    assert send("bob@example.com", "hi") == "sent to bob@example.com"
    assert events(path) == []


def test_a_permanent_error_propagates_and_writes_nothing(path: Path) -> None:
    send = sqlite_deferral(path).deferrable(OP)(Provider(ValueError("bad address")).send)
    with pytest.raises(ValueError, match="bad address"):
        send("not-an-address", "hi")
    assert events(path) == []


def test_an_open_circuit_is_deferred(path: Path) -> None:
    breaker = CircuitBreaker(consecutive_failures=1)
    provider = Provider(ConnectionError("down"))
    send = sqlite_deferral(path).deferrable(OP)(breaker(provider.send))
    first, second = send("a@x", "1"), send("a@x", "2")
    assert isinstance(first, DeferredResult)
    assert isinstance(second, DeferredResult)
    assert second.reason is not None
    assert second.reason.startswith("CircuitOpen")
    assert len(provider.calls) == 1  # the open breaker spared the provider
    assert [e.data["args"][1] for e in events(path)] == ["1", "2"]


def test_on_narrows_what_is_deferred(path: Path) -> None:
    deferral = sqlite_deferral(path)
    send = deferral.deferrable(OP, on=TimeoutError)(Provider(ConnectionError("down")).send)
    with pytest.raises(ConnectionError):
        send("a@x", "1")
    assert events(path) == []


@pytest.mark.parametrize("up", [True, False], ids=["provider-up", "provider-down"])
def test_arguments_that_are_not_json_are_refused_before_the_call(path: Path, up: bool) -> None:
    provider = Provider(None if up else ConnectionError("down"))
    send = sqlite_deferral(path).deferrable(OP)(provider.send)
    with pytest.raises(DeferredError, match=r"argument #1 is not JSON-serialisable"):
        send("a@x", object())  # type: ignore[arg-type]
    with pytest.raises(DeferredError, match=r"argument 'urgent' is not JSON-serialisable"):
        send("a@x", "hi", urgent=float("nan"))  # type: ignore[arg-type]
    assert provider.calls == []
    assert events(path) == []


def test_the_database_down_too_raises_its_error(tmp_path: Path) -> None:
    deferral = Deferral(
        Outbox(),
        source="/mailer",
        connect=functools.partial(sqlite3.connect, tmp_path / "missing" / "app.db"),
    )
    send = deferral.deferrable(OP)(Provider(ConnectionError("smtp down")).send)
    with pytest.raises(sqlite3.OperationalError) as caught:
        send("a@x", "hi")
    assert isinstance(caught.value.__context__, ConnectionError)


def test_sqlalchemy_sessions_and_autocommit_sqlite(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    for connect in (
        sessionmaker(engine),
        engine.connect,
        functools.partial(sqlite3.connect, path, isolation_level=None),
    ):
        deferral = Deferral(Outbox(), source="/mailer", connect=connect)
        result = deferral.deferrable(OP)(Provider(ConnectionError("down")).send)("a@x", "hi")
        assert isinstance(result, DeferredResult)
    engine.dispose()
    assert len(events(path)) == 3


def test_defer_directly_and_the_fallback_in_a_pipeline(path: Path) -> None:
    deferral = sqlite_deferral(path)
    direct = deferral.defer(OP, "a@x", body="later")
    assert direct.reason is None
    pipeline = Pipeline(deferral.fallback(OP), CircuitBreaker(consecutive_failures=5))
    via = cast("object", pipeline.call(Provider(ConnectionResetError("reset")).send, "b@x", "hi"))
    assert isinstance(via, DeferredResult)
    assert [e.data for e in events(path)] == [
        {"args": ["a@x"], "kwargs": {"body": "later"}},
        {"args": ["b@x", "hi"], "kwargs": {}, "reason": "ConnectionResetError: reset"},
    ]


def test_a_rolled_back_write_leaves_nothing(path: Path) -> None:
    deferral = Deferral(
        Outbox(max_bytes=300), source="/mailer", connect=lambda: sqlite3.connect(path)
    )
    send = deferral.deferrable(OP)(Provider(ConnectionError("down")).send)
    with pytest.raises(OutboxError, match="over max_bytes"):
        send("a@x", "x" * 400)
    assert events(path) == []


def test_configuration_errors(path: Path) -> None:
    outbox = Outbox()
    with pytest.raises(ConfigError, match=r"^connect: give connect="):
        Deferral(outbox, source="/m")
    with pytest.raises(ConfigError, match=r"^source: "):
        Deferral(outbox, source=" ", connect=lambda: sqlite3.connect(path))
    with pytest.raises(ConfigError, match=r"^outbox: "):
        Deferral(object(), source="/m", connect=lambda: sqlite3.connect(path))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^aconnect: must be callable"):
        Deferral(outbox, source="/m", aconnect="sqlite:///x")  # type: ignore[arg-type]
    only_async = Deferral(outbox, source="/m", aconnect=lambda: aiosqlite.connect(path))
    with pytest.raises(ConfigError, match=r"^connect: .* is sync: the Deferral needs connect="):
        only_async.deferrable(OP)(Provider().send)
    for bad in ("", " op", None):
        with pytest.raises(ConfigError, match=r"^operation: "):
            only_async.deferrable(bad)  # type: ignore[arg-type]


def test_a_connect_of_the_wrong_kind(path: Path) -> None:
    deferral = Deferral(Outbox(), source="/m", connect=object)  # type: ignore[arg-type]
    with pytest.raises(OutboxError, match=r"connect\(\) returned builtins\.object"):
        deferral.defer(OP)


# -- async -----------------------------------------------------------------------------


async def test_async_every_provider_down_defers_through_aiosqlite(path: Path) -> None:
    provider = Provider(ConnectionError("down"))
    send = sqlite_deferral(path).deferrable(OP)(provider.asend)
    result = await send("a@x", "hi", urgent=False)
    assert isinstance(result, DeferredResult)
    assert [e.id for e in await relayed(path)] == [result.id]
    provider.error = None
    assert await send("a@x", "hi") == "sent to a@x"
    assert len(events(path)) == 1
    with pytest.raises(DeferredError, match="not JSON-serialisable"):
        await send("a@x", {1, 2})  # type: ignore[arg-type]


async def test_async_sqlalchemy_session(path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    for aconnect in (async_sessionmaker(engine), engine.connect):
        deferral = Deferral(Outbox(), source="/mailer", aconnect=aconnect)
        result = await deferral.deferrable(OP)(Provider(ConnectionError("down")).asend)("a", "b")
        assert isinstance(result, DeferredResult)
    assert isinstance(await deferral.adefer(OP, "c"), DeferredResult)
    await engine.dispose()
    assert len(events(path)) == 3


async def test_async_needs_aconnect(path: Path) -> None:
    only_sync = Deferral(Outbox(), source="/m", connect=lambda: sqlite3.connect(path))
    with pytest.raises(ConfigError, match=r"^aconnect: .* is async"):
        only_sync.deferrable(OP)(Provider().asend)
    with pytest.raises(ConfigError, match=r"^aconnect: this Deferral has no aconnect="):
        await only_sync.adefer(OP)
    wrong = Deferral(Outbox(), source="/m", aconnect=lambda: sqlite3.connect(path))  # type: ignore[arg-type,return-value]
    with pytest.raises(OutboxError, match=r"aconnect\(\) returned sqlite3\.Connection"):
        await wrong.adefer(OP)


# -- the consumer side -----------------------------------------------------------------


async def test_operations_run_what_was_deferred(path: Path) -> None:
    provider = Provider(ConnectionError("down"))
    deferral = sqlite_deferral(path)
    send = deferral.deferrable(OP)(provider.send)
    asend = deferral.deferrable("com.example.page")(provider.asend)
    deferred = [send("a@x", "one", urgent=True), await asend("b@x", "two")]
    assert all(isinstance(d, DeferredResult) for d in deferred)

    operations = Operations()
    operations.register(OP, send)  # the same deferrable function: it won't defer again
    operations.operation("com.example.page")(asend)
    assert operations.names == {OP, "com.example.page"}
    published = await relayed(path)

    with pytest.raises(ConnectionError):  # still down: the consumer retries later
        await operations(published[0])
    with pytest.raises(ConnectionError):
        await operations.arun(published[1])
    assert len(events(path)) == 2  # nothing deferred a second time

    provider.error = None
    provider.threads.clear()
    assert await operations.arun(published[0]) == "sent to a@x"
    assert operations.run(published[0]) == "sent to a@x"
    assert await operations.arun(published[1]) == "sent to b@x"
    here = threading.current_thread().name
    assert provider.threads[1:] == [here, here]
    assert provider.threads[0] != here  # a sync operation ran in a worker thread
    assert provider.calls[-3:] == [
        ("a@x", "one", True),
        ("a@x", "one", True),
        ("b@x", "two", False),
    ]


async def test_operations_refusals() -> None:
    operations = Operations()
    operations.register(OP, lambda to: to)

    async def apage(to: str) -> str:
        return to

    operations.register("page", apage)
    with pytest.raises(ConfigError, match="registered already"):
        operations.register(OP, print)
    with pytest.raises(ConfigError, match=r"^fn: must be callable"):
        operations.register("other", "print")  # type: ignore[arg-type]
    unknown = Envelope(source="/m", type="com.example.unknown", data={"args": [], "kwargs": {}})
    with pytest.raises(DeferredError, match="no operation is registered for type"):
        await operations.arun(unknown)
    malformed = Envelope(source="/m", type=OP, data=["to"])
    with pytest.raises(DeferredError, match="data is not a deferred call"):
        operations.run(malformed)
    with pytest.raises(DeferredError, match=r"is async: use 'await operations\.arun"):
        operations.run(Envelope(source="/m", type="page", data={"args": ["x"], "kwargs": {}}))
    with pytest.raises(DeferredError, match="expected an Envelope"):
        operations.run({"type": OP})  # type: ignore[arg-type]
    assert operations.run(Envelope(source="/m", type=OP, data={"args": ["x"], "kwargs": {}})) == "x"
