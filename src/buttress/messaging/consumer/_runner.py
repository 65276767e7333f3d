"""The consumer runner: pulls deliveries from a source, runs the handler, settles them.

The decisions are the engine's (:class:`~buttress.messaging.consumer._engine.Engine`);
this module only does the I/O: receive (the source), decode and handle (the handler,
through the user's pipeline), settle (ack, retry, dead-letter through the delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, runtime_checkable

from buttress.errors import ConfigError
from buttress.messaging.consumer._engine import DUPLICATE, Engine, Verdict
from buttress.messaging.consumer._metrics import track
from buttress.messaging.consumer._source import Received, Source
from buttress.messaging.envelope import Envelope
from buttress.pipeline import Pipeline
from buttress.policies.backoff import Backoff

__all__ = ["ClaimInbox", "Consumer", "Handler"]

log = logging.getLogger("buttress.messaging.consumer")

Handler = Callable[[Envelope], Awaitable[None]] | Callable[[Envelope], None]
"""``async def handler(envelope) -> None``, or a plain ``def`` (run in a thread)."""

_RECEIVE_RETRY_MAX: Final = 30.0
_RELEASE_TIMEOUT: Final = 5.0
_ROUNDING: Final = 5 / 3


@runtime_checkable
class ClaimInbox(Protocol):
    """What the runner's ``inbox=`` needs: :meth:`claim` (and, if it has one,
    ``release(message_id)``, called when the handler failed so that the redelivery
    runs it again). :class:`~buttress.messaging.inbox.RedisInbox` is one."""

    async def claim(self, message_id: str) -> bool:
        """``True`` the first time ``message_id`` is claimed, ``False`` afterwards."""
        ...


def _seconds(value: object, path: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds, got {value!r}", path=path)
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"must be {bound} and finite, got {value!r}", path=path)
    return float(value)


def _cancel_if_requested() -> None:
    """Raise the cancellation a library swallowed: some drivers (redis-py's asyncio
    client, for one) can drop a ``CancelledError`` that lands in a command at the
    wrong moment, which would leave a cancelled runner running for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _is_async(handler: object) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    return inspect.iscoroutinefunction(call)


class Consumer:
    """Runs a handler on every message of a :class:`Source`, at most ``concurrency`` at once.

    A message is acknowledged only after its handler returned. A handler that raises
    never stops the runner: the message is redelivered after a backoff delay, and
    dead-lettered with the error after ``max_deliveries`` deliveries. A message that
    cannot be decoded goes to the poison queue at once. A message whose handler was
    interrupted (the runner stopped past its drain timeout, was cancelled, or the
    process died) is not acknowledged: the broker delivers it again (RabbitMQ when
    the source's channel closes, Redis Streams after the source's ``claim_idle``).

    Args:
        source: Where messages come from: a
            :class:`~buttress.messaging.brokers.rabbitmq_consumer.RabbitMQSource`,
            :class:`~buttress.messaging.brokers.redis_streams_consumer.RedisStreamsSource`
            or any :class:`Source`, already connected (``async with source:`` around
            the runner).
        handler: ``async def handler(envelope: Envelope) -> None``; a plain ``def``
            runs in a worker thread (:func:`asyncio.to_thread`).
        concurrency: The most handlers running at once (and the most messages
            received and not yet settled). Give the source a prefetch at least this
            large.
        max_deliveries: Deliveries after which a failing message is dead-lettered.
        backoff: The delays before redelivering a failed message (default:
            exponential from 1 s, doubling, equal jitter), capped at
            ``max_retry_delay``.
        max_retry_delay: The longest delay before a redelivery, in seconds.
        pipeline: A buttress :class:`~buttress.Pipeline` around each handler call,
            e.g. ``Pipeline(Timeout(30))``. A :class:`~buttress.errors.Rejected`
            from it (an open breaker, a full bulkhead) redelivers the message
            without ever dead-lettering it.
        inbox: An idempotency hook (e.g. a
            :class:`~buttress.messaging.inbox.RedisInbox`): its ``claim(event_id)``
            is awaited before the handler, and a message claimed before is acked
            without running the handler; its ``release(event_id)``, if any, is
            awaited when the handler failed. For an effect in a SQL database, use a
            :class:`~buttress.messaging.inbox.SQLInbox` inside the handler's own
            transaction instead.
        drain_timeout: On :meth:`stop`, seconds the handlers in flight get to
            finish; those still running then are cancelled and their messages left
            to the broker to redeliver.
        receive_timeout: Seconds each ``receive`` waits for messages; :meth:`stop`
            takes effect within about this long.
        name: For the logs.
        random: Floats in [0, 1) for the backoff jitter.

    Raises:
        ConfigError: an option is invalid, named.
    """

    def __init__(
        self,
        source: Source,
        handler: Handler,
        *,
        concurrency: int = 10,
        max_deliveries: int = 5,
        backoff: Backoff | None = None,
        max_retry_delay: float = 300.0,
        pipeline: Pipeline | None = None,
        inbox: ClaimInbox | None = None,
        drain_timeout: float = 30.0,
        receive_timeout: float = 1.0,
        name: str = "consumer",
        random: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(source, Source):
            raise ConfigError(
                f"expected a Source (receive() and close()), got {type(source).__name__}",
                path="source",
            )
        if not callable(handler):
            raise ConfigError(f"must be callable, got {handler!r}", path="handler")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"must be an integer >= 1, got {concurrency!r}", path="concurrency")
        if pipeline is not None and not isinstance(pipeline, Pipeline):
            raise ConfigError(f"expected a Pipeline, got {pipeline!r}", path="pipeline")
        if inbox is not None and not isinstance(inbox, ClaimInbox):
            raise ConfigError(
                f"must have an async claim(message_id) method, got {inbox!r}", path="inbox"
            )
        self.source = source
        self.handler = handler
        self.concurrency = concurrency
        self.engine = Engine(
            max_deliveries=max_deliveries, backoff=backoff, max_delay=max_retry_delay, random=random
        )
        self.pipeline = pipeline
        self.inbox = inbox
        self.drain_timeout = _seconds(drain_timeout, "drain_timeout", zero=True)
        self.receive_timeout = _seconds(receive_timeout, "receive_timeout")
        self.name = name
        self._is_async = _is_async(handler)
        self._release = getattr(inbox, "release", None) if inbox is not None else None
        self.handled = 0
        """Messages acknowledged after their handler returned."""
        self.duplicates = 0
        """Messages acknowledged without running the handler (the inbox had them)."""
        self.retried = 0
        """Deliveries handed back to the broker for a later redelivery."""
        self.dead_lettered = 0
        """Messages moved to the dead-letter queue."""
        self.poisoned = 0
        """Messages moved to the poison queue (they could not be decoded)."""
        self.failures = 0
        """Handler calls that raised."""
        self.settle_errors = 0
        """Acks, retries or dead-letterings the broker did not take (the message is
        then redelivered)."""
        self.released = 0
        """Messages left unacknowledged because their handler was interrupted."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Task[None]] = set()
        self._room: asyncio.Event | None = None
        self._running = False
        self._stopping = False
        self._retry_due = 0.0  # loop time by which the retries scheduled are back
        track(self)

    def __repr__(self) -> str:
        return f"Consumer({self.source!r}, name={self.name!r}, concurrency={self.concurrency})"

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled."""
        return len(self._tasks)

    # -- one message --------------------------------------------------------------

    async def _call(self, envelope: Envelope) -> None:
        handler: Any = self.handler
        if self._is_async:
            fn = handler
        else:

            async def fn(value: Envelope) -> None:
                await asyncio.to_thread(handler, value)

        if self.pipeline is None:
            await fn(envelope)
        else:
            await self.pipeline.acall(fn, envelope)

    async def _release_claim(self, event_id: str) -> None:
        if self._release is None:
            return
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                await self._release(event_id)
        except Exception as exc:
            log.error(
                "consumer %s: could not release the inbox claim of %s (%r): its "
                "redelivery will be skipped as a duplicate until the claim expires",
                self.name,
                event_id,
                exc,
            )

    async def _hand_back(self, message: Received) -> None:
        """Give an interrupted message back to its source now, if the source can
        (an optional ``release()``), rather than when the broker notices."""
        release = getattr(message, "release", None)
        if release is None:
            return
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT):
                await release()
        except Exception as exc:
            log.warning(
                "consumer %s: could not hand message %s back (%r): the broker will redeliver it",
                self.name,
                message.message_id,
                exc,
            )

    async def _verdict(self, message: Received) -> Verdict:
        try:
            envelope = message.envelope()
        except Exception as exc:  # EnvelopeError, or whatever a broken body raises
            return self.engine.undecodable(exc)
        claimed = False
        if self.inbox is not None:
            try:
                first = await self.inbox.claim(envelope.id)
            except asyncio.CancelledError:
                # The claim may have been made: undo it, or the redelivery would be
                # acknowledged as a duplicate without ever being handled.
                await self._release_claim(envelope.id)
                raise
            except Exception as exc:  # the inbox is down: not handled, try later
                log.warning(
                    "consumer %s: inbox claim of %s failed: %r", self.name, envelope.id, exc
                )
                return self.engine.handled(message.deliveries, exc)
            if not first:
                self.duplicates += 1
                return self.engine.duplicate()
            claimed = True
        error: BaseException
        try:
            await self._call(envelope)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Interrupted by us (stop, drain timeout, run() cancelled): leave the
                # message unacknowledged for the broker to redeliver.
                if claimed:
                    await self._release_claim(envelope.id)
                raise
            error = exc  # the handler's own cancelled await: a failure like any other
        except Exception as exc:
            error = exc
        except BaseException:  # KeyboardInterrupt, SystemExit: no verdict, no ack
            raise
        else:
            return self.engine.handled(message.deliveries, None)
        self.failures += 1
        if claimed:
            await self._release_claim(envelope.id)
        verdict = self.engine.handled(message.deliveries, error)
        log.warning(
            "consumer %s: handler failed on message %s (delivery %d): %s; %s",
            self.name,
            message.message_id,
            message.deliveries,
            verdict.reason,
            "dead-lettered"
            if verdict.action == "dead_letter"
            else f"redelivered in {verdict.delay:.3g}s",
            exc_info=error,
        )
        return verdict

    async def _settle(self, message: Received, verdict: Verdict) -> None:
        try:
            if verdict.action == "ack":
                await message.ack()
                if verdict is not DUPLICATE:
                    self.handled += 1
            elif verdict.action == "retry":
                await message.retry(verdict.delay)
                self.retried += 1
                # A broker may round a delay up (RabbitMQ's delay steps, by up to
                # 5/3): drain() waits that long for the message to come back.
                back = asyncio.get_running_loop().time() + verdict.delay * _ROUNDING
                self._retry_due = max(self._retry_due, back)
            elif verdict.action == "dead_letter":
                await message.dead_letter(verdict.reason)
                self.dead_lettered += 1
            else:
                await message.dead_letter(verdict.reason, poison=True)
                self.poisoned += 1
                log.error(
                    "consumer %s: message %s could not be decoded (%s): moved to the poison queue",
                    self.name,
                    message.message_id,
                    verdict.reason,
                )
        except Exception as exc:
            self.settle_errors += 1
            log.warning(
                "consumer %s: could not %s message %s (%r): the broker will redeliver it",
                self.name,
                verdict.action.replace("_", "-"),
                message.message_id,
                exc,
            )

    async def _process(self, message: Received) -> None:
        try:
            verdict = await self._verdict(message)
        except asyncio.CancelledError:
            self.released += 1
            await self._hand_back(message)
            raise
        except Exception as exc:  # a bug around the handler must not strand the message
            log.error("consumer %s: deciding failed: %r", self.name, exc, exc_info=exc)
            verdict = self.engine.handled(message.deliveries, exc)
        task = asyncio.current_task()
        if task is not None:  # from here on, let it finish: a cut settle only duplicates
            self._settling.add(task)
        await self._settle(message, verdict)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._settling.discard(task)
        if self._room is not None:
            self._room.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("consumer %s: a message's task failed: %r", self.name, exc, exc_info=exc)

    def _spawn(self, message: Received) -> None:
        task = asyncio.create_task(self._process(message), name=f"{self.name} {message.message_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    # -- the service --------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to stop receiving and return once the handlers in flight
        finished (or ``drain_timeout`` ran out). A :meth:`stop` before the task starts
        makes it return at once."""
        self._stopping = True
        if self._room is not None:
            self._room.set()

    async def _pause(self, seconds: float) -> None:
        assert self._room is not None
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), left)

    async def _receive(self, room: int, wait: float) -> list[Received]:
        # A source that hangs past its own timeout is treated as a failed receive.
        async with asyncio.timeout(wait * 2 + 10.0):
            return list(await self.source.receive(room, wait))

    def _go_on(self) -> bool:
        return not self._stopping

    async def _loop(self, *, until_idle: bool) -> None:
        assert self._room is not None
        failures = 0
        while self._go_on():
            while len(self._tasks) >= self.concurrency and not self._stopping:
                self._room.clear()
                await self._room.wait()
            if self._stopping:
                break
            started = asyncio.get_running_loop().time()
            try:
                batch = await self._receive(
                    self.concurrency - len(self._tasks), self.receive_timeout
                )
            except Exception as exc:
                _cancel_if_requested()
                failures += 1
                delay = min(_RECEIVE_RETRY_MAX, 0.1 * 2 ** min(failures, 10))
                log.warning(
                    "consumer %s: receiving failed (%r); again in %.1fs", self.name, exc, delay
                )
                await self._pause(delay)
                continue
            failures = 0
            for message in batch:
                self._spawn(message)  # even when cancelled: the tasks are interrupted
            _cancel_if_requested()
            if until_idle and not batch and not self._tasks and started >= self._retry_due:
                break  # a whole receive found nothing, after every retry came due

    async def _finish(self, grace: float) -> None:
        """Wait up to ``grace`` s for the tasks in flight, then cancel the handlers
        still running (their messages stay unacknowledged) and wait for the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        late = [t for t in self._tasks if t not in self._settling]
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "consumer %s: %d handler(s) still running after %.3gs: cancelled, their "
                "messages left for the broker to redeliver",
                self.name,
                len(late),
                grace,
            )
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _serve(self, *, until_idle: bool) -> None:
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self._running = True
        self._room = asyncio.Event()
        try:
            try:
                await self._loop(until_idle=until_idle)
            finally:
                # Graceful on stop() or an error; on cancellation, interrupt at once.
                current = asyncio.current_task()
                cancelled = current is not None and current.cancelling() > 0
                await asyncio.shield(self._finish(0.0 if cancelled else self.drain_timeout))
        finally:
            self._room = None
            self._running = False
            self._stopping = False  # a stopped runner can run again

    async def run(self) -> None:
        """Consume until :meth:`stop`, then drain gracefully.

        Receiving errors (the broker is down) are logged and retried with backoff;
        handler errors are the engine's to decide: the runner never ends on them.
        Cancelling the task interrupts the handlers in flight at once: their
        messages are left unacknowledged, for the broker to redeliver.

        Raises:
            RuntimeError: this runner is already running.
        """
        await self._serve(until_idle=False)

    async def drain(self) -> int:
        """Handle messages until a ``receive`` returns none, none is in flight and the
        retries this runner scheduled have come due (waiting for them to come back);
        return how many deliveries were settled (acked, retried or dead-lettered).

        Raises:
            RuntimeError: this runner is already running.
        """
        before = self._settled()
        await self._serve(until_idle=True)
        return self._settled() - before

    def _settled(self) -> int:
        return self.handled + self.duplicates + self.retried + self.dead_lettered + self.poisoned
