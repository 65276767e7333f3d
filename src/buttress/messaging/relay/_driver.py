"""The relay service: claims outbox rows, publishes them through a pipeline, marks them.

The decisions are the engine's (:class:`~buttress.messaging.relay._engine.Engine`);
this module only does the I/O, in this order per batch: claim (storage), publish
(the pipeline around the publisher), apply the decision (storage).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Final

from buttress._events import Emitter, Listener
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.messaging.brokers import Publisher
from buttress.messaging.envelope import Envelope
from buttress.messaging.relay._engine import ClaimedRow, Decision, Engine
from buttress.messaging.relay._events import RelayDeadLettered
from buttress.messaging.relay._metrics import RelayStats, track
from buttress.messaging.relay._store import ClaimStore
from buttress.pipeline import Pipeline
from buttress.policies.backoff import Backoff
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout

__all__ = ["Relay", "default_pipeline"]

log = logging.getLogger("buttress.messaging.relay")

_RETENTION_BATCH: Final = 500
_LISTEN_RETRY_MAX: Final = 30.0
_LAG_INTERVAL: Final = 1.0  # seconds between two lag measurements of a running relay


def default_pipeline(publish_timeout: float = 30.0, *, clock: Clock = MONOTONIC) -> Pipeline:
    """The pipeline a :class:`Relay` publishes through by default.

    ``Timeout(publish_timeout)`` around ``Retry(3)`` (transient errors only: a
    :class:`~buttress.messaging.brokers.PublishRefused` is not retried; the last
    error is re-raised) around a ``CircuitBreaker`` that opens after 5 consecutive
    failures for 10 s. While it is open the relay's rows wait without using up
    their attempts.
    """
    return Pipeline(
        Timeout(publish_timeout, clock=clock),
        Retry(3, delay=0.2, max_delay=2.0, reraise=True, clock=clock),
        CircuitBreaker(consecutive_failures=5, open_duration=10.0, clock=clock),
        name="buttress.relay",
    )


def _seconds(value: object, path: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds or a timedelta, got {value!r}", path=path)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"must be > 0 and finite, got {value!r}", path=path)
    return float(value)


class Relay:
    """Publishes the outbox's committed events to a broker, in per-key order.

    Args:
        storage: Where the rows are claimed and marked: a
            :class:`~buttress.messaging.relay.SQLiteRelayStore` or
            :class:`~buttress.messaging.relay.PostgresRelayStore`.
        publisher: The broker (any :class:`~buttress.messaging.brokers.Publisher`),
            already connected (``async with publisher:`` around the relay).
        batch_size: The most rows claimed and published at once.
        concurrency: Batches in flight at once (>= 1): while one batch waits for
            the broker's confirmations the next is claimed and sent. Per-key order
            holds whatever the value: a row is claimable only once every earlier
            row of its key is done, so two batches never hold rows of one key. On
            PostgreSQL give the store a pool of at least this many connections.
        poll_interval: Seconds between claims when nothing wakes the relay (on
            PostgreSQL a ``NOTIFY`` wakes it at once; this is then only a safety net).
        lease: Seconds a claim is held; a relay that dies leaves its rows to others
            after this long. Keep it well above the pipeline's publish timeout.
        max_attempts: Failed publishes after which an event is dead-lettered
            (``status = 'dead'`` with its ``last_error``).
        retention: How long published rows are kept (seconds or a ``timedelta``);
            ``None`` keeps them for ever. Deleted in small batches, at most once per
            ``poll_interval``.
        pipeline: The buttress pipeline around ``publisher.publish``; default:
            :func:`default_pipeline`.
        backoff: The delays between attempts of one event (default: exponential
            from 1 s, doubling, equal jitter), capped at ``max_retry_delay``.
        max_retry_delay: The longest wait between two attempts of one event.
        name: This relay's identity in ``claimed_by`` (default: host, pid, random).
        clock: Time source for ``next_attempt_at``, leases and retention (its
            :meth:`~buttress.clock.Clock.time`); a ``FakeClock`` in tests.
        random: Floats in [0, 1) for the jitter.

    Raises:
        ConfigError: an option out of range, named.

    Run it with ``await relay.run()`` (until :meth:`stop`), or publish what is
    pending now with ``await relay.drain()``. Its figures (:attr:`stats`) are
    exported by ``buttress.observe.instrument()`` as ``buttress_relay_*`` metrics,
    and every dead-lettered event is reported as a
    :class:`~buttress.messaging.relay.RelayDeadLettered` event (see
    :meth:`subscribe` and :func:`buttress.events.subscribe`).
    """

    def __init__(
        self,
        storage: ClaimStore,
        publisher: Publisher,
        *,
        batch_size: int = 100,
        concurrency: int = 2,
        poll_interval: float | timedelta = 5.0,
        lease: float | timedelta = 60.0,
        max_attempts: int = 10,
        retention: float | timedelta | None = timedelta(days=7),
        pipeline: Pipeline | None = None,
        backoff: Backoff | None = None,
        max_retry_delay: float = 300.0,
        name: str | None = None,
        clock: Clock = MONOTONIC,
        random: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"must be an integer >= 1, got {batch_size!r}", path="batch_size")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"must be an integer >= 1, got {concurrency!r}", path="concurrency")
        if not isinstance(publisher, Publisher):
            raise ConfigError(
                f"expected a Publisher, got {type(publisher).__name__}", path="publisher"
            )
        if pipeline is not None and not isinstance(pipeline, Pipeline):
            raise ConfigError(f"expected a Pipeline, got {pipeline!r}", path="pipeline")
        self.storage = storage
        self.publisher = publisher
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.lease = _seconds(lease, "lease")
        self.retention = None if retention is None else _seconds(retention, "retention")
        self.engine = Engine(
            max_attempts=max_attempts, backoff=backoff, max_delay=max_retry_delay, random=random
        )
        self.pipeline = pipeline if pipeline is not None else default_pipeline()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.outbox: str = getattr(getattr(storage, "table", None), "channel", repr(storage))
        """The ``outbox`` label of this relay's metrics (its table)."""
        self.stats = RelayStats()
        """What this relay counted since it was made (read by the metrics)."""
        self._events = Emitter()
        self._last_lag: float | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._listening: asyncio.Event | None = None
        self._last_retention: float | None = None
        self._due: list[float] = []  # a heap: when the retries this relay scheduled fall due
        track(self)

    def __repr__(self) -> str:
        return f"Relay({self.storage!r}, name={self.name!r})"

    @property
    def published(self) -> int:
        """Events confirmed by the broker and marked published since start."""
        return self.stats.published

    @property
    def dead_lettered(self) -> int:
        """Events dead-lettered since start."""
        return self.stats.dead_lettered

    @property
    def listen_losses(self) -> int:
        """Times the ``LISTEN`` connection was lost (or could not be opened)."""
        return self.stats.listen_losses

    def subscribe(self, listener: Listener, *types: type[RelayDeadLettered]) -> Callable[[], None]:
        """Send this relay's events (:class:`RelayDeadLettered`) to ``listener``;
        returns the function that unsubscribes it."""
        return self._events.subscribe(listener, *types)

    # -- one batch ----------------------------------------------------------------

    async def _batch(self) -> tuple[int, int]:
        """Claim, publish and mark one batch; return how many rows were claimed and
        how many of them are done (published or dead-lettered).

        A failed row is due again only after its backoff, so a caller that goes on
        while rows get done does not spin on a failing broker.
        """
        now = self.clock.time()
        rows = await self.storage.claim(self.name, self.batch_size, now, self.lease)
        if not rows:
            return 0, 0
        stats = self.stats
        stats.batch_size.observe(len(rows))
        envelopes: list[Envelope] = []
        readable: list[ClaimedRow] = []
        unpublishable = Decision()
        for row in rows:
            abandoned = self.engine.abandoned(row)
            if abandoned is not None:
                unpublishable.dead.append(abandoned)
                continue
            try:
                envelopes.append(Envelope._from_stored(row.envelope))
                readable.append(row)
            except Exception as exc:  # a row no broker can take: dead at once
                unpublishable.dead.append(Engine.unreadable(row, exc))
        error: BaseException | None = None
        if envelopes:
            started = self.clock.monotonic()
            try:
                await self.pipeline.acall(self.publisher.publish, envelopes)
            except Exception as exc:
                error = exc
            stats.publish_seconds.observe(self.clock.monotonic() - started)
        decision = self.engine.decide(readable, error, self.clock.time())
        for due in {at for _, at, _ in decision.retry} | {at for _, at in decision.released}:
            heapq.heappush(self._due, due)
        decision.dead.extend(unpublishable.dead)
        await self.storage.apply(self.name, decision, self.clock.time())
        stats.published += len(decision.published)
        stats.retried += len(decision.retry)
        if decision.dead:
            stats.dead_lettered += len(decision.dead)
            self._report_dead(rows, decision.dead)
        if error is not None:
            log.warning(
                "relay %s: publishing %d event(s) failed: %r", self.name, len(envelopes), error
            )
        return len(rows), len(decision.published) + len(decision.dead)

    def _report_dead(self, rows: list[ClaimedRow], dead: list[tuple[int, str]]) -> None:
        by_seq = {row.seq: row for row in rows}
        for seq, reason in dead:
            row = by_seq[seq]
            log.error(
                "relay %s: event %s dead-lettered after %d attempt(s): %s",
                self.name,
                row.event_id,
                row.attempts + 1,
                reason,
            )
            if self._events.enabled:
                self._events.emit(
                    RelayDeadLettered(
                        self.name,
                        outbox=self.outbox,
                        event_id=row.event_id,
                        subject=row.subject or "",
                        attempts=row.attempts + 1,
                        reason=reason,
                    )
                )

    async def _work(self) -> None:
        """Claim and publish batches while rows get done: ``concurrency`` loops at
        once. A key's next row is claimable only once its previous one is done, so
        a batch can be short and still leave work behind; a loop stops on an empty
        claim or a failed batch. The first error is raised once every loop ended
        (none is cancelled mid-batch: its claimed rows would wait for the lease)."""

        async def loop() -> None:
            while not self._stopping and (await self._batch())[1]:
                pass

        if self.concurrency == 1:
            await loop()
            return
        outcomes = await asyncio.gather(
            *(loop() for _ in range(self.concurrency)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def drain(self) -> int:
        """Publish every row claimable now (not those waiting for a retry or leased
        to another relay); return how many were published."""
        before = self.published
        await self._work()
        return self.published - before

    async def lag(self) -> float:
        """The outbox lag: seconds since the oldest unpublished (pending) event was
        written, 0.0 when none is pending. A growing lag means the relay falls behind
        or the broker refuses events; alert on it."""
        oldest = await self.storage.oldest_pending()
        lag = 0.0 if oldest is None else max(0.0, self.clock.time() - oldest)
        self.stats.lag = lag
        return lag

    async def _measure_lag(self) -> None:
        """Refresh :attr:`stats`'s lag for the metrics, at most once a second."""
        now = self.clock.monotonic()
        if self._last_lag is not None and now - self._last_lag < _LAG_INTERVAL:
            return
        self._last_lag = now
        await self.lag()

    # -- the service --------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in flight (graceful shutdown)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    @property
    def listening(self) -> asyncio.Event:
        """Set while the ``LISTEN`` connection is up (PostgreSQL); for tests and health."""
        if self._listening is None:
            self._listening = asyncio.Event()
        return self._listening

    async def _listen(self) -> None:
        assert self._wake is not None
        failures = 0
        while not self._stopping:
            try:
                async for _ in self.storage.listen():
                    failures = 0
                    self.stats.listening = True
                    self.listening.set()
                    self._wake.set()  # listening (again): catch up; or a NOTIFY
            except Exception as exc:
                self.listening.clear()
                self.stats.listening = False
                self.stats.listen_losses += 1
                failures += 1
                delay = min(_LISTEN_RETRY_MAX, 0.5 * 2 ** min(failures, 10))
                log.warning("relay %s: LISTEN lost (%r); again in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
            self._wake.set()

    async def _retain(self) -> None:
        if self.retention is None:
            return
        now = self.clock.time()
        if self._last_retention is not None and now - self._last_retention < self.poll_interval:
            return
        self._last_retention = now
        await self.storage.delete_published(now - self.retention, _RETENTION_BATCH)

    def _wait(self) -> float:
        """Seconds until the next poll, or sooner until a retry this relay scheduled."""
        now = self.clock.time()
        while self._due and self._due[0] <= now:  # due now: the claim just made saw them
            heapq.heappop(self._due)
        if not self._due:
            return self.poll_interval
        return min(self.poll_interval, self._due[0] - now)

    async def run(self) -> None:
        """Relay until :meth:`stop`: catch up at once, then on every notification
        (PostgreSQL) and every ``poll_interval``.

        A failing database or broker is logged and retried at the next poll; the
        service does not end on errors. Cancelling the task stops it at once, mid
        batch: its claimed rows return to other relays after the lease. A
        :meth:`stop` before the task starts makes it return at once.

        Raises:
            RuntimeError: this relay is already running.
        """
        if self._wake is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._wake = wake = asyncio.Event()
        wake.set()  # the catch-up on start
        listener = (
            asyncio.create_task(self._listen(), name=f"{self.name} listen")
            if self.storage.channel is not None
            else None
        )
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._wait())
                wake.clear()
                try:
                    await self._work()
                    await self._retain()
                    await self._measure_lag()
                except Exception as exc:
                    log.warning("relay %s: cycle failed: %r", self.name, exc)
        finally:
            self._wake = None
            self._stopping = False  # a stopped relay can run again
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            self.listening.clear()
            self.stats.listening = False
