"""Graceful shutdown: stop taking work, let what runs finish for a while, cancel the rest.

:class:`Drain` is the primitive, for any asyncio program: requests and worker
tasks register with it; :meth:`Drain.shutdown` closes intake, waits up to a grace
period for the registered work, then cancels what is left and reports.
:class:`GracefulShutdownMiddleware` puts an ASGI application's requests in a
``Drain``, refuses new ones with a 503 while it drains, and drains on the ASGI
lifespan ``shutdown`` event, before the application's own shutdown handlers run
(so they close the database pool after the last request used it, not before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from buttress._validate import check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError, Rejected
from buttress.integrations.asgi._problems import Problem, send_problem_response
from buttress.integrations.asgi._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Drain", "DrainReport", "GracefulShutdownMiddleware", "ShuttingDown"]

_log = logging.getLogger("buttress.integrations.asgi")

T = TypeVar("T")


class ShuttingDown(Rejected):
    """A :class:`Drain` is closed: no new work is taken. The work had no effect.

    ``retry_after`` is a hint for the caller (another instance will be up), or
    ``None``. As a :class:`~buttress.errors.Rejected` it maps to a 503.
    """

    def __init__(self, name: str, retry_after: float | None = None) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"{name!r} is shutting down: no new work is taken")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.retry_after))


@dataclass(frozen=True, slots=True)
class DrainReport:
    """How a :meth:`Drain.shutdown` went.

    ``finished``: work that ended by itself within the grace period;
    ``cancelled``: work cancelled when the grace period ran out;
    ``abandoned``: work still running ``cancel_timeout`` seconds after it was
    cancelled (it caught the cancellation); nothing waits for it any more.
    """

    finished: int
    cancelled: int
    abandoned: int


class _Tracked:
    """One ``async with drain.track():`` — the current task is in flight inside."""

    __slots__ = ("_drain", "_task")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Drain.track() must run inside an asyncio task")
        self._drain._enter(task)
        self._task = task

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._drain._leave(self._task)


class Drain:
    """In-flight work of one asyncio program, and its graceful end.

    Register work with :meth:`track` (``async with drain.track(): ...`` around a
    request or one message a worker handles) or start it with :meth:`spawn`.
    :meth:`shutdown` then:

    1. closes intake: :attr:`accepting` turns false, :meth:`track` and
       :meth:`spawn` raise :class:`ShuttingDown`, :meth:`wait_closed` returns
       (a worker's signal to stop taking messages);
    2. waits until the registered work is done, at most ``grace`` seconds;
    3. cancels what is left and waits for it at most ``cancel_timeout`` seconds;
    4. returns a :class:`DrainReport`.

    :meth:`close` does step 1 alone (a load balancer's readiness probe should
    start failing now). Use a ``Drain`` from the event loop it serves; ``clock``
    is a :class:`~buttress.clock.FakeClock` in tests.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_closed_waiters",
        "_idle_waiters",
        "_tasks",
        "cancel_timeout",
        "grace",
        "name",
    )

    def __init__(
        self,
        grace: float = 30.0,
        *,
        cancel_timeout: float = 5.0,
        name: str = "drain",
        clock: Clock = MONOTONIC,
    ) -> None:
        self.grace = check_seconds(grace, "grace")
        self.cancel_timeout = check_seconds(cancel_timeout, "cancel_timeout")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"must be a non-empty string, got {name!r}", path="name")
        self.name = name
        self._clock = clock
        self._closed = False
        # Task -> how many track() blocks it is in (a spawned task counts once more).
        self._tasks: dict[asyncio.Task[Any], int] = {}
        self._closed_waiters: list[asyncio.Future[None]] = []
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def accepting(self) -> bool:
        """Whether new work is taken (false from :meth:`close` on)."""
        return not self._closed

    @property
    def in_flight(self) -> int:
        """How many tasks hold registered work now."""
        return len(self._tasks)

    def close(self) -> None:
        """Stop taking new work; what runs goes on. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _wake(self._closed_waiters)

    async def wait_closed(self) -> None:
        """Return once :meth:`close` (or :meth:`shutdown`) was called."""
        if self._closed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed_waiters.append(future)
        try:
            await future
        finally:
            if future in self._closed_waiters:
                self._closed_waiters.remove(future)

    def track(self) -> _Tracked:
        """``async with drain.track():`` — the block is in-flight work of the current task.

        Raises :class:`ShuttingDown` on entry once the drain is closed. When the
        grace period runs out, the task running the block is cancelled.
        """
        return _Tracked(self)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` in a new task that the drain waits for (and keeps a reference to).

        Raises :class:`ShuttingDown` once the drain is closed (``coro`` is closed
        unstarted). A task that fails is logged at ERROR with its traceback.
        """
        if self._closed:
            coro.close()
            raise ShuttingDown(self.name)
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._enter(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._leave(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "task %r of drain %r failed", task.get_name(), self.name, exc_info=task.exception()
            )

    def _enter(self, task: asyncio.Task[Any]) -> None:
        if self._closed:
            raise ShuttingDown(self.name)
        self._tasks[task] = self._tasks.get(task, 0) + 1

    def _leave(self, task: asyncio.Task[Any]) -> None:
        count = self._tasks.get(task, 0) - 1
        if count > 0:
            self._tasks[task] = count
            return
        if self._tasks.pop(task, None) is not None:
            # Every waiter looks again: the one waiting in shutdown() may be in flight too.
            _wake(self._idle_waiters)

    async def _wait_until_idle(self, seconds: float, ignore: asyncio.Task[Any] | None) -> None:
        """Wait until no task but ``ignore`` holds work, or ``seconds`` passed."""
        if not self._tasks.keys() - {ignore}:
            return
        loop = asyncio.get_running_loop()
        expired: asyncio.Future[None] = loop.create_future()
        timer = self._clock.call_later(seconds, lambda: _wake([expired]))
        try:
            while self._tasks.keys() - {ignore} and not expired.done():
                left: asyncio.Future[None] = loop.create_future()
                self._idle_waiters.append(left)
                try:
                    await asyncio.wait((left, expired), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if left in self._idle_waiters:
                        self._idle_waiters.remove(left)
        finally:
            timer.cancel()

    async def shutdown(self, grace: float | None = None) -> DrainReport:
        """Close intake, wait up to ``grace`` seconds (default :attr:`grace`), cancel the rest.

        Work registered by the task calling ``shutdown`` itself is not waited for.
        """
        wait = self.grace if grace is None else check_seconds(grace, "grace")
        self.close()
        me = asyncio.current_task()
        started = self._tasks.keys() - {me}
        await self._wait_until_idle(wait, me)
        left = [task for task in self._tasks if task is not me]
        for task in left:
            task.cancel()
        if left:
            _log.warning(
                "drain %r: %d task(s) still running after %gs: cancelled",
                self.name,
                len(left),
                wait,
            )
            await self._wait_until_idle(self.cancel_timeout, me)
        abandoned = sum(1 for task in left if task in self._tasks)
        if abandoned:
            _log.error(
                "drain %r: %d task(s) ignored their cancellation: abandoned", self.name, abandoned
            )
        return DrainReport(
            finished=len(started) - len(left), cancelled=len(left) - abandoned, abandoned=abandoned
        )

    def __repr__(self) -> str:
        state = "accepting" if self.accepting else "closed"
        return (
            f"Drain(grace={self.grace!r}, name={self.name!r}, {state}, in_flight={self.in_flight})"
        )


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
    futures.clear()


class GracefulShutdownMiddleware:
    """Pure ASGI middleware: requests in a :class:`Drain`, refused while it drains.

    - ``drain``: the :class:`Drain` to use (share it with your workers and your
      readiness check); by default one of its own, with ``grace`` seconds.
    - ``retry_after``: seconds sent as ``Retry-After`` on refusals.

    Every HTTP request and WebSocket connection is tracked while the application
    serves it. Once the drain is closed, new HTTP requests get a 503 problem
    document with ``Connection: close`` and ``Retry-After`` (a WebSocket is
    refused with close code 1013, "try again later"), and responses of the
    requests still in flight carry ``Connection: close``, so keep-alive clients
    reconnect to another instance.

    On the lifespan ``shutdown`` event the drain runs (:meth:`Drain.shutdown`)
    before the application sees the event. Uvicorn stops accepting connections and
    waits for open ones before it sends that event (bound the wait with its
    ``timeout_graceful_shutdown``); the drain then covers the work uvicorn does not
    know of — the tasks started with :meth:`Drain.spawn` — and any request it did
    not wait for. Call ``drain.close()`` yourself to start refusing earlier.
    """

    __slots__ = ("_refusal", "app", "drain")

    def __init__(
        self,
        app: ASGIApp,
        drain: Drain | None = None,
        *,
        grace: float = 30.0,
        retry_after: float = 5.0,
    ) -> None:
        if drain is None:
            drain = Drain(grace)
        elif not isinstance(drain, Drain):
            raise ConfigError(f"must be a Drain, got {type(drain).__name__}", path="drain")
        seconds = check_seconds(retry_after, "retry_after")
        self.drain = drain
        self._refusal = Problem(
            503,
            detail="The service is shutting down; try again.",
            retry_after=seconds,
            headers=(("Connection", "close"),),
        )
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        drain = self.drain
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if kind not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        if not drain.accepting:
            await self._refuse(kind, scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not drain.accepting:
                headers = [
                    item for item in message.get("headers", ()) if item[0].lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        async with drain.track():
            await self.app(scope, receive, send_closing if kind == "http" else send)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        drain = self.drain

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                report = await drain.shutdown()
                _log.info(
                    "drain %r: %d finished, %d cancelled, %d abandoned",
                    drain.name,
                    report.finished,
                    report.cancelled,
                    report.abandoned,
                )
            return message

        return lifespan_receive

    async def _refuse(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        if kind == "http":
            await send_problem_response(send, scope, self._refusal)
            return
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1013, "reason": "shutting down"})

    def __repr__(self) -> str:
        return f"GracefulShutdownMiddleware(app={self.app!r}, drain={self.drain!r})"
