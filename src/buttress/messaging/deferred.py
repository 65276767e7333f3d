"""Deferring work through the outbox when every provider of an operation is down.

A :class:`Deferral` turns "the email provider and its backup are both down" from an
error into a promise: the operation (its name and its JSON arguments) is written to
the outbox in a short transaction of its own, the caller gets a
:class:`DeferredResult` naming the event, and the relay publishes the event like any
other. A consumer runs it later through an :class:`Operations` registry, which maps
operation names to the functions that do the work.

Which failures are deferred is the one outcome model's decision, as for every
:class:`~buttress.policies.fallback.Fallback` (a deferral *is* one, answering last):
transient errors, timeouts and buttress's rejections (an open circuit, a full
bulkhead) are; a permanent error (an HTTP 4xx, a ``ValueError``) or a programming
error propagates.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import sqlite3
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, overload

from buttress._outcome import OnErrors
from buttress._strategy import is_async_callable
from buttress.errors import ButtressError, ConfigError
from buttress.messaging import _outbox_aiosqlite as _aiosqlite
from buttress.messaging import _outbox_sqlalchemy as _sa
from buttress.messaging._schema import OutboxError, _module_type
from buttress.messaging.envelope import Envelope
from buttress.messaging.outbox import AsyncConnection, Outbox, SyncConnection
from buttress.policies.fallback import Fallback

__all__ = ["Deferrable", "Deferral", "DeferredError", "DeferredResult", "Operations"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("buttress.messaging.deferred")

_REASON_MAX: Final = 1000
# Set while an Operations registry runs a deferred operation: a deferrable function
# called then raises its failure (the consumer retries) instead of deferring again.
_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "buttress_deferred_replaying", default=False
)


class DeferredError(ButtressError, ValueError):
    """An operation that cannot be deferred, or a deferred event that cannot be run.

    Raised for arguments that are not JSON-serialisable (at call time, before the
    call runs), and by :class:`Operations` for an event whose type no operation is
    registered under or whose data is not a deferred call. Permanent (``transient`` is
    ``False``): running the same event again fails the same way, so a consumer
    dead-letters it at once.
    """

    transient = False


@dataclass(frozen=True, slots=True)
class DeferredResult:
    """What the caller gets when the operation was deferred instead of run.

    Attributes:
        id: The id of the outbox event that carries the operation (the envelope's
            ``id``): the consumer sees it as the message id.
        operation: The operation's name (the event's ``type``).
        reason: The failure that was deferred, as ``"ExceptionType: message"``;
            ``None`` for :meth:`Deferral.defer` called directly.
    """

    id: str
    operation: str
    reason: str | None = None


def _check_operation(operation: object) -> str:
    if not isinstance(operation, str) or not operation.strip() or operation != operation.strip():
        raise ConfigError(
            f"must be a non-empty string without surrounding spaces (it is the event "
            f"type, e.g. 'com.example.send-email'), got {operation!r}",
            path="operation",
        )
    return operation


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def _arguments(operation: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments that do not serialise to JSON, naming the first one at fault."""
    try:
        json.dumps([list(args), dict(kwargs)], allow_nan=False)
        return
    except (TypeError, ValueError):
        pass
    named = [(f"#{index}", value) for index, value in enumerate(args)]
    named += [(repr(key), value) for key, value in kwargs.items()]
    for label, value in named:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DeferredError(
                f"{operation}: argument {label} is not JSON-serialisable ({exc}); a "
                "deferred operation's arguments are stored as JSON"
            ) from None
    raise DeferredError(f"{operation}: the arguments are not JSON-serialisable")  # pragma: no cover


class Deferral:
    """Defers operations through an outbox when every provider of them is down.

    Args:
        outbox: The outbox the deferred operations are written to.
        source: The events' CloudEvents ``source``, e.g. ``"/billing"``.
        connect: Makes a **new** connection or session for a synchronous deferral: a
            :class:`sqlite3.Connection`, a psycopg 3 ``Connection``, a SQLAlchemy
            ``Session`` or ``Connection`` (``sessionmaker(engine)``,
            ``engine.connect``). The deferral writes the event in a transaction of
            its own on it, commits, and closes it.
        aconnect: The same for asynchronous deferrals; it may return an awaitable (a
            psycopg ``AsyncConnection.connect(...)``, ``aiosqlite.connect(...)``), an
            ``AsyncSession`` or an ``AsyncConnection``.

    Raises:
        ConfigError: ``source`` is not a non-empty string, or neither ``connect`` nor
            ``aconnect`` is given (or one is not callable).

    Use :meth:`deferrable` on the function that calls the providers (through its
    pipeline); :meth:`defer`/:meth:`adefer` write a deferral directly.
    """

    __slots__ = ("aconnect", "connect", "outbox", "source")

    def __init__(
        self,
        outbox: Outbox,
        *,
        source: str,
        connect: Callable[[], SyncConnection] | None = None,
        aconnect: Callable[[], AsyncConnection | Awaitable[AsyncConnection]] | None = None,
    ) -> None:
        if not isinstance(outbox, Outbox):
            raise ConfigError(f"expected an Outbox, got {type(outbox).__name__}", path="outbox")
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"must be a non-empty string, got {source!r}", path="source")
        if connect is None and aconnect is None:
            raise ConfigError(
                "give connect= (sync calls) or aconnect= (async calls): a factory of new "
                "connections or sessions the deferral writes its event through",
                path="connect",
            )
        for path, value in (("connect", connect), ("aconnect", aconnect)):
            if value is not None and not callable(value):
                raise ConfigError(f"must be callable, got {value!r}", path=path)
        self.outbox = outbox
        self.source = source
        self.connect = connect
        self.aconnect = aconnect

    def __repr__(self) -> str:
        return f"Deferral({self.outbox!r}, source={self.source!r})"

    # -- writing --------------------------------------------------------------------

    def envelope(
        self,
        operation: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
    ) -> Envelope:
        """The event describing one call of ``operation`` (not written).

        Raises:
            ConfigError: ``operation`` is not a non-empty string.
            DeferredError: an argument is not JSON-serialisable.
        """
        _check_operation(operation)
        kwargs = dict(kwargs or {})
        _arguments(operation, args, kwargs)
        data: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
        if reason is not None:
            data["reason"] = reason
        return Envelope(source=self.source, type=operation, data=data)

    def _connect(self) -> Any:
        if self.connect is None:
            raise ConfigError(
                "this Deferral has no connect=: a synchronous call cannot be deferred",
                path="connect",
            )
        return self.connect()

    async def _aconnect(self) -> Any:
        if self.aconnect is None:
            raise ConfigError(
                "this Deferral has no aconnect=: an asynchronous call cannot be deferred",
                path="aconnect",
            )
        connection: Any = self.aconnect()
        if isinstance(connection, Awaitable):  # a coroutine; aiosqlite's starts its thread
            connection = await connection
        return connection

    def _write(self, envelope: Envelope, reason: str | None) -> DeferredResult:
        with _owned(self._connect()) as tx:
            self.outbox.add(tx, envelope)
        return self._deferred(envelope, reason)

    async def _awrite(self, envelope: Envelope, reason: str | None) -> DeferredResult:
        async with _aowned(await self._aconnect()) as tx:
            await self.outbox.aadd(tx, envelope)
        return self._deferred(envelope, reason)

    @staticmethod
    def _deferred(envelope: Envelope, reason: str | None) -> DeferredResult:
        if reason is not None:
            log.warning("deferred %s as event %s: %s", envelope.type, envelope.id, reason)
        return DeferredResult(envelope.id, envelope.type, reason)

    def defer(self, operation: str, /, *args: Any, **kwargs: Any) -> DeferredResult:
        """Write ``operation(*args, **kwargs)`` to the outbox now, committed; don't run it.

        Raises:
            DeferredError: an argument is not JSON-serialisable (nothing written).
            OutboxError: ``connect`` made a connection the outbox does not support.
        """
        return self._write(self.envelope(operation, args, kwargs), None)

    async def adefer(self, operation: str, /, *args: Any, **kwargs: Any) -> DeferredResult:
        """:meth:`defer` through a connection from ``aconnect``."""
        return await self._awrite(self.envelope(operation, args, kwargs), None)

    # -- as a fallback --------------------------------------------------------------

    def fallback(self, operation: str, *, on: OnErrors | None = None) -> Fallback:
        """A :class:`~buttress.policies.fallback.Fallback` that defers sync calls.

        Put it outermost in a pipeline. Its arguments are checked only when it
        defers: prefer :meth:`deferrable`, which checks them on every call.
        """
        _check_operation(operation)

        def defer(error: Exception, *args: Any, **kwargs: Any) -> DeferredResult:
            envelope = self.envelope(operation, args, kwargs, reason=_reason(error))
            return self._write(envelope, envelope.data["reason"])

        return Fallback(Fallback.handler(defer), on=on, name=f"deferral {operation}")

    def afallback(self, operation: str, *, on: OnErrors | None = None) -> Fallback:
        """:meth:`fallback` for async calls: it writes through ``aconnect``."""
        _check_operation(operation)

        async def defer(error: Exception, *args: Any, **kwargs: Any) -> DeferredResult:
            envelope = self.envelope(operation, args, kwargs, reason=_reason(error))
            return await self._awrite(envelope, envelope.data["reason"])

        return Fallback(Fallback.handler(defer), on=on, name=f"deferral {operation}")

    def deferrable(self, operation: str, *, on: OnErrors | None = None) -> Deferrable:
        """Decorate a function so that its failure defers it instead of raising.

        The decorated function (sync or async; usually already protected by a
        pipeline of retries, breakers and alternative providers) is called as
        usual. First its arguments are checked: one that is not JSON-serialisable
        raises :class:`DeferredError` before the call runs, whether or not the
        providers are up. When the call then fails with a dependency failure
        (``on``, by default the outcome model's), the operation is written to the
        outbox and the caller gets a :class:`DeferredResult` instead of the result.
        If the outbox cannot be written either, that error propagates (with the
        provider's failure as its ``__context__``).

        Called by :class:`Operations` (a consumer running the deferred operation),
        the function never defers again: its failure propagates, for the consumer
        to retry or dead-letter.

        Raises:
            ConfigError: ``operation`` is not a non-empty string; at decoration, the
                deferral lacks ``connect`` (sync function) or ``aconnect`` (async).
        """
        _check_operation(operation)
        return Deferrable(self, operation, on)


class Deferrable:
    """The decorator made by :meth:`Deferral.deferrable`."""

    __slots__ = ("deferral", "on", "operation")

    def __init__(self, deferral: Deferral, operation: str, on: OnErrors | None) -> None:
        self.deferral = deferral
        self.operation = operation
        self.on = on

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R | DeferredResult]]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R | DeferredResult]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Callable[..., Any]:
        """Wrap ``fn``."""
        deferral, operation = self.deferral, self.operation
        if is_async_callable(fn):
            if deferral.aconnect is None:
                raise ConfigError(f"{fn!r} is async: the Deferral needs aconnect=", path="aconnect")
            protected = deferral.afallback(operation, on=self.on)(fn)

            @functools.wraps(fn)
            async def adeferrable(*args: Any, **kwargs: Any) -> Any:
                if _replaying.get():
                    return await fn(*args, **kwargs)
                _arguments(operation, args, kwargs)
                return await protected(*args, **kwargs)

            return adeferrable
        if deferral.connect is None:
            raise ConfigError(f"{fn!r} is sync: the Deferral needs connect=", path="connect")
        protected_sync = deferral.fallback(operation, on=self.on)(fn)

        @functools.wraps(fn)
        def deferrable(*args: Any, **kwargs: Any) -> Any:
            if _replaying.get():
                return fn(*args, **kwargs)
            _arguments(operation, args, kwargs)
            return protected_sync(*args, **kwargs)

        return deferrable

    def __repr__(self) -> str:
        return f"Deferral.deferrable({self.operation!r})"


# -- a transaction of its own, per kind of connection ----------------------------------


def _unsupported(connection: object, method: str) -> OutboxError:
    kind = type(connection)
    return OutboxError(
        f"{method} returned {kind.__module__}.{kind.__qualname__}, which the deferral "
        "cannot write through"
    )


@contextmanager
def _owned(connection: Any) -> Iterator[Any]:
    """Open a transaction on a fresh connection, commit it on success, close it."""
    if isinstance(connection, sqlite3.Connection):
        with _sqlite_owned(connection) as tx:
            yield tx
    elif _module_type(connection, "psycopg", "Connection"):
        with connection, connection.transaction():
            yield connection
    elif _sa.sync_kind(connection) is not None:
        with _sa.owned(connection) as tx:
            yield tx
    else:
        raise _unsupported(connection, "connect()")


@contextmanager
def _sqlite_owned(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # Python 3.12's autocommit=True ignores commit(): its transaction is explicit.
    explicit = getattr(connection, "autocommit", None) is True
    try:
        if explicit or connection.isolation_level is None:
            connection.execute("BEGIN")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK") if explicit else connection.rollback()
            raise
        connection.execute("COMMIT") if explicit else connection.commit()
    finally:
        connection.close()


@asynccontextmanager
async def _aowned(connection: Any) -> AsyncIterator[Any]:
    """:func:`_owned` for asynchronous connections."""
    if _module_type(connection, "psycopg", "AsyncConnection"):
        async with connection, connection.transaction():
            yield connection
    elif _aiosqlite.is_aiosqlite(connection):
        async with _aiosqlite.owned(connection) as tx:
            yield tx
    elif _sa.async_kind(connection) is not None:
        async with _sa.owned_async(connection) as tx:
            yield tx
    else:
        raise _unsupported(connection, "aconnect()")


# -- the consumer side ------------------------------------------------------------------


class Operations:
    """The registry a consumer runs deferred operations from.

    ``register(name, fn)`` (or ``@operations.operation(name)``) maps an operation
    name, the deferred event's ``type``, to the function that does the work. A
    consumer handler hands it each event: ``await operations.arun(envelope)``, or
    the registry itself, which is an ``async def handle(envelope)`` callable.
    Failures propagate, so the consumer retries the event and dead-letters it
    after its maximum deliveries. Register the same ``@deferrable`` function the
    caller uses: run from here, it does not defer itself again.
    """

    __slots__ = ("_functions",)

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    def register(self, operation: str, fn: Callable[..., Any]) -> None:
        """Run ``fn(*args, **kwargs)`` for deferred events of type ``operation``.

        Raises:
            ConfigError: a blank name, a name already registered, or ``fn`` not
                callable.
        """
        _check_operation(operation)
        if not callable(fn):
            raise ConfigError(f"must be callable, got {fn!r}", path="fn")
        if operation in self._functions:
            raise ConfigError(f"{operation!r} is registered already", path="operation")
        self._functions[operation] = fn

    def operation(self, operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator form of :meth:`register`; returns the function unchanged."""

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            self.register(operation, fn)
            return fn

        return register

    @property
    def names(self) -> frozenset[str]:
        """The operations registered."""
        return frozenset(self._functions)

    def __contains__(self, operation: object) -> bool:
        return operation in self._functions

    def _resolve(self, envelope: Envelope) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        if not isinstance(envelope, Envelope):
            raise DeferredError(f"expected an Envelope, got {type(envelope).__name__}")
        fn = self._functions.get(envelope.type)
        if fn is None:
            raise DeferredError(
                f"event {envelope.id}: no operation is registered for type {envelope.type!r}"
            )
        data = envelope.data
        args = data.get("args") if isinstance(data, dict) else None
        kwargs = data.get("kwargs") if isinstance(data, dict) else None
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise DeferredError(
                f"event {envelope.id} ({envelope.type}): data is not a deferred call "
                f'{{"args": [...], "kwargs": {{...}}}}: {data!r:.200}'
            )
        return fn, args, kwargs

    def run(self, envelope: Envelope) -> Any:
        """Run the deferred operation ``envelope`` describes; return its result.

        Raises:
            DeferredError: no operation is registered for the event's type, its data
                is not a deferred call, or the operation is async (use :meth:`arun`).
            Exception: whatever the operation raises.
        """
        fn, args, kwargs = self._resolve(envelope)
        if is_async_callable(fn):
            raise DeferredError(f"{envelope.type} is async: use 'await operations.arun(event)'")
        token = _replaying.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _replaying.reset(token)

    async def arun(self, envelope: Envelope) -> Any:
        """:meth:`run` from asyncio: awaits an async operation, runs a sync one in a thread.

        A sync operation blocks (it talks to a provider); in a worker thread it
        leaves the consumer's event loop free.
        """
        fn, args, kwargs = self._resolve(envelope)
        token = _replaying.set(True)
        try:
            if is_async_callable(fn):
                return await fn(*args, **kwargs)
            return await asyncio.to_thread(fn, *args, **kwargs)  # copies the context
        finally:
            _replaying.reset(token)

    async def __call__(self, envelope: Envelope) -> None:
        """The registry as a consumer handler: ``await operations(envelope)``."""
        await self.arun(envelope)

    def __repr__(self) -> str:
        return f"Operations({sorted(self._functions)})"
