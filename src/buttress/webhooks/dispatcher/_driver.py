"""The dispatcher service: fans messages out, claims deliveries, posts them, records.

Decisions are the engine's (:class:`~buttress.webhooks.dispatcher._engine.Engine`);
this module does the I/O: storage (claim, write back in batches), HTTP (aiohttp,
through the SSRF guard's connector), and each endpoint's kernel policies — a
:class:`~buttress.ratelimit.RateLimiter`, a :class:`~buttress.policies.bulkhead.Bulkhead`
and a :class:`~buttress.policies.circuit.CircuitBreaker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from buttress.clock import MONOTONIC, Clock
from buttress.errors import (
    BulkheadFull,
    ButtressError,
    CircuitOpen,
    ConfigError,
    Rejected,
    _parse_retry_after,
)
from buttress.messaging._uuid7 import uuid7
from buttress.messaging.deadletters import DeadLetter
from buttress.messaging.envelope import Envelope
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.ratelimit import RateLimiter, TokenBucket
from buttress.webhooks.dispatcher._engine import (
    Claimed,
    Decision,
    Deferred,
    EndpointDisabled,
    Engine,
    Exhausted,
    Outcome,
    Refused,
    Response,
    describe,
)
from buttress.webhooks.dispatcher._options import Endpoint, RetrySchedule, _seconds
from buttress.webhooks.dispatcher._store import (
    AttemptRecord,
    DeadRow,
    DeliveryInfo,
    DeliveryStore,
)
from buttress.webhooks.signing import _ID_RE, Signer
from buttress.webhooks.ssrf import SSRFError

if TYPE_CHECKING:
    import aiohttp

    from buttress.webhooks.ssrf import AddressPolicy

__all__ = ["Dispatcher", "DispatcherDeadLetters", "Message", "MessageError", "default_breaker"]

log = logging.getLogger("buttress.webhooks.dispatcher")

_UNKNOWN_ENDPOINT_DELAY: Final = 60.0
_BUSY_DELAY: Final = 1.0
_PRUNE_EVERY: Final = 30.0
_PRUNE_BATCH: Final = 500
_MAX_HEADERS: Final = 32
_MAX_HEADER_CHARS: Final = 256


class MessageError(ButtressError, ValueError):
    """A message the dispatcher refuses (bad type, id or payload); nothing was stored."""


@dataclass(frozen=True, slots=True)
class Message:
    """One webhook message to fan out to the endpoints that subscribe to its type.

    Args:
        event_type: Its type, e.g. ``"invoice.paid"`` (what endpoint filters match).
        payload: The request body: ``bytes`` as they are, anything else as compact
            JSON.
        id: Its ``webhook-id``, the same for every endpoint and every retry (the
            receivers' deduplication key); a new ``msg_<uuid7>`` by default. Sending
            an id again adds nothing (idempotent).
        key: The ordering key, for endpoints with ``ordering="key"``.
    """

    event_type: str
    payload: Any
    id: str | None = None
    key: str | None = None


def default_breaker(endpoint: Endpoint, clock: Clock) -> CircuitBreaker:
    """The breaker each endpoint gets by default.

    It opens when half of at least 20 attempts in the last minute failed, or after 10
    failures in a row, for 30 s, doubling on every failed probe up to 10 min. Only
    failures count: no answer, timeouts, 408/425/429 and 5xx (a 404 is an answer).
    """
    return CircuitBreaker(
        failure_ratio=0.5,
        min_calls=20,
        window_seconds=60.0,
        consecutive_failures=10,
        open_duration=30.0,
        open_duration_factor=2.0,
        max_open_duration=600.0,
        name=f"webhook:{endpoint.id}",
        clock=clock,
    )


class _Lane:
    """One endpoint's runtime: its signer, policies and fixed headers."""

    __slots__ = (
        "breaker", "bulkhead", "endpoint", "headers", "limiter", "next_slot", "signer",
        "spacing", "timeout",
    )  # fmt: skip

    def __init__(  # noqa: PLR0917 - private, one call site
        self,
        endpoint: Endpoint,
        breaker: CircuitBreaker,
        lease: float,
        max_in_flight: int,
        clock: Clock,
        user_agent: str,
    ) -> None:
        self.endpoint = endpoint
        self.signer = Signer(endpoint.secrets, clock=clock)
        self.breaker = breaker
        # Deliveries beyond the endpoint's concurrency wait in line, for at most a
        # quarter of the lease; after that they are released, due again shortly.
        self.bulkhead = Bulkhead(
            endpoint.max_concurrency,
            max_queue=max_in_flight,
            max_wait=lease / 4,
            name=f"webhook:{endpoint.id}",
            clock=clock,
        )
        self.limiter = (
            RateLimiter(
                TokenBucket(endpoint.rate_limit, 1.0, max(1, math.floor(endpoint.rate_limit))),
                name=f"webhook:{endpoint.id}",
                clock=clock,
            )
            if endpoint.rate_limit is not None
            else None
        )
        self.headers = {
            "content-type": "application/json",
            "user-agent": user_agent,
            **endpoint.headers,
        }
        self.timeout = cast(float, endpoint.timeout)  # seconds once validated
        self.spacing = 1.0 / endpoint.rate_limit if endpoint.rate_limit else 0.0
        self.next_slot = 0.0


def _capped_headers(headers: Mapping[str, str]) -> str:
    kept = {}
    for index, (name, value) in enumerate(headers.items()):
        if index >= _MAX_HEADERS:
            break
        kept[name] = value[:_MAX_HEADER_CHARS]
    return json.dumps(kept, ensure_ascii=False)


class Dispatcher:
    """Delivers webhooks durably: fan-out, retries on a schedule, per-endpoint policies.

    :meth:`send` stores a message and one delivery per matching endpoint (in one
    transaction); :meth:`run` delivers them until :meth:`stop`. Each delivery is
    claimed with a lease (a dispatcher that dies leaves its deliveries to others
    when the lease runs out), posted signed (Standard Webhooks) through the SSRF
    guard, its attempt recorded, and retried on the schedule until it succeeds or
    is dead-lettered. State writes are batched: the results of all attempts that
    ended while the previous write ran are written in one transaction.

    Args:
        storage: Where deliveries live: a
            :class:`~buttress.webhooks.dispatcher.SQLiteDeliveryStore` or
            :class:`~buttress.webhooks.dispatcher.PostgresDeliveryStore`.
        endpoints: The subscribers (ids must be unique).
        schedule: The waits between attempts (default: :class:`RetrySchedule`).
        policy: The SSRF guard's :class:`~buttress.webhooks.ssrf.AddressPolicy`
            (default: refuse every private, loopback, link-local... address).
        session: An ``aiohttp.ClientSession`` to post with (tests, custom TLS); by
            default one of the dispatcher's own, on a guarded connector. A session
            you give is not guarded unless you built it so, and not closed here.
        max_in_flight: The most deliveries being attempted at once (the worker pool).
        batch_size: The most deliveries claimed at once.
        poll_interval: Seconds between claims when nothing wakes the dispatcher
            (another process's sends are seen this late at worst).
        lease: Seconds a claim is held; keep it well above the endpoints' timeouts.
        disable_after: An endpoint that failed every attempt for this long (seconds
            or a ``timedelta``) is disabled and an :class:`EndpointDisabled` event
            emitted; ``None``: never. Default: 5 days.
        retention: How long delivered deliveries, attempt logs and their messages are
            kept; ``None``: for ever. Dead letters stay until purged. Default: 7 days.
        breaker: Builds an endpoint's circuit breaker (default:
            :func:`default_breaker`). While it is open, deliveries wait, unattempted.
        listeners: Called with every :class:`EndpointDisabled`.
        max_response_bytes: The response body excerpt kept per attempt.
        user_agent: The ``User-Agent`` header.
        name: This dispatcher's identity in the leases (default: host, pid, random).
        clock: Time source for schedules, leases and policies (a ``FakeClock`` in
            tests).
        random: Floats in [0, 1) for the jitter.

    Raises:
        ConfigError: an option is invalid, an endpoint id repeats, or an endpoint's
            URL is refused by the SSRF policy.

    Use it as ``async with Dispatcher(...) as dispatcher:`` (or call :meth:`close`).
    """

    def __init__(
        self,
        storage: DeliveryStore,
        endpoints: Iterable[Endpoint],
        *,
        schedule: RetrySchedule | None = None,
        policy: AddressPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        max_in_flight: int = 256,
        batch_size: int = 100,
        poll_interval: float | timedelta = 1.0,
        lease: float | timedelta = 60.0,
        disable_after: float | timedelta | None = timedelta(days=5),
        retention: float | timedelta | None = timedelta(days=7),
        breaker: Callable[[Endpoint, Clock], CircuitBreaker] = default_breaker,
        listeners: Sequence[Callable[[EndpointDisabled], object]] = (),
        max_response_bytes: int = 1024,
        user_agent: str = "buttress-webhooks",
        name: str | None = None,
        clock: Clock = MONOTONIC,
        random: Callable[[], float] | None = None,
    ) -> None:
        from buttress.webhooks.ssrf import AddressPolicy, UnsafeURL, check_url  # noqa: PLC0415

        if not isinstance(storage, DeliveryStore):
            raise ConfigError(f"expected a DeliveryStore, got {storage!r}", path="storage")
        for value, path in ((max_in_flight, "max_in_flight"), (batch_size, "batch_size"),
                            (max_response_bytes, "max_response_bytes")):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an integer >= 1, got {value!r}", path=path)
        self.policy = policy if policy is not None else AddressPolicy()
        if not isinstance(self.policy, AddressPolicy):
            raise ConfigError(f"expected an AddressPolicy, got {policy!r}", path="policy")
        self.storage = storage
        self.schedule = schedule if schedule is not None else RetrySchedule()
        if not isinstance(self.schedule, RetrySchedule):
            raise ConfigError(f"expected a RetrySchedule, got {schedule!r}", path="schedule")
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.lease = _seconds(lease, "lease")
        self.retention = None if retention is None else _seconds(retention, "retention")
        self.max_response_bytes = max_response_bytes
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.listeners = tuple(listeners)
        self.endpoints: dict[str, Endpoint] = {}
        self._lanes: dict[str, _Lane] = {}
        for index, endpoint in enumerate(endpoints):
            if not isinstance(endpoint, Endpoint):
                raise ConfigError(f"expected an Endpoint, got {endpoint!r}", path="endpoints")
            if endpoint.id in self.endpoints:
                raise ConfigError(f"endpoint id {endpoint.id!r} repeats", path="endpoints")
            try:
                check_url(endpoint.url, self.policy)
            except UnsafeURL as exc:
                raise ConfigError(str(exc), path=f"endpoints[{index}].url") from None
            self.endpoints[endpoint.id] = endpoint
            self._lanes[endpoint.id] = _Lane(
                endpoint, breaker(endpoint, clock), self.lease, max_in_flight, clock, user_agent
            )
        self.engine = Engine(
            self.endpoints,
            self.schedule,
            disable_after=(
                None if disable_after is None else _seconds(disable_after, "disable_after")
            ),
            random=random,
        )
        self._session = session
        self._own_session = session is None
        self._loaded = False
        self._stopping = False
        self._closing = False
        self._wake: asyncio.Event | None = None
        self._due: list[float] = []
        self._results: list[tuple[Claimed, Outcome]] = []
        self._results_ready: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._last_prune: float | None = None
        self.delivered = 0
        """Deliveries that succeeded since start."""
        self.failed_attempts = 0
        """Attempts that failed since start (retried or not)."""
        self.dead_lettered = 0
        """Deliveries dead-lettered since start."""

    def __repr__(self) -> str:
        return f"Dispatcher({self.storage!r}, {len(self.endpoints)} endpoints, name={self.name!r})"

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the dispatcher's own HTTP session (not the storage)."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- sending ----------------------------------------------------------------

    async def _load(self) -> None:
        if self._loaded:
            return
        failing, disabled = await self.storage.health()
        self.engine.failing_since.update(failing)
        self.engine.stored.update(failing)
        self.engine.disabled.update(disabled)
        self._loaded = True

    def _row(self, message: Message, now: float) -> tuple[str, str, str | None, bytes, float]:
        if not isinstance(message, Message):
            raise MessageError(f"expected a Message, got {message!r}")
        kind = message.event_type
        if not isinstance(kind, str) or not 0 < len(kind) <= 256:
            raise MessageError(f"event_type must be 1 to 256 characters, got {kind!r}")
        msg_id = message.id if message.id is not None else f"msg_{uuid7().hex}"
        if not isinstance(msg_id, str) or _ID_RE.fullmatch(msg_id) is None:
            raise MessageError(
                f"id must be 1 to 256 visible ASCII characters without spaces, got {msg_id!r}"
            )
        if message.key is not None and not isinstance(message.key, str):
            raise MessageError(f"key must be a string, got {message.key!r}")
        payload = message.payload
        if isinstance(payload, bytes | bytearray | memoryview):
            body = bytes(payload)
        else:
            try:
                body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                raise MessageError(f"payload is not bytes nor JSON-serialisable: {exc}") from None
        return msg_id, kind, message.key, body, now

    async def send_many(self, messages: Iterable[Message]) -> list[tuple[str, list[str]]]:
        """Store messages and their deliveries in one transaction.

        Returns:
            ``(message_id, endpoint_ids)`` per message: its id and the endpoints it
            fans out to (the enabled ones whose filters match its type).

        Raises:
            MessageError: a message is invalid (nothing is stored).
        """
        await self._load()
        now = self.clock.time()
        rows, deliveries, out = [], [], []
        disabled = self.engine.disabled
        for message in messages:
            row = self._row(message, now)
            rows.append(row)
            targets = [
                e.id
                for e in self.endpoints.values()
                if e.enabled and e.id not in disabled and e.matches(row[1])
            ]
            for endpoint_id in targets:
                order = self.endpoints[endpoint_id].order_key(row[2])
                deliveries.append((row[0], endpoint_id, order, now, now))
            out.append((row[0], targets))
        if rows:
            await self.storage.enqueue(rows, deliveries)
            if deliveries and self._wake is not None:
                self._wake.set()
        return out

    async def send(
        self, event_type: str, payload: Any, *, id: str | None = None, key: str | None = None
    ) -> tuple[str, list[str]]:
        """Send one message (see :class:`Message`); returns ``(message_id, endpoint_ids)``."""
        return (await self.send_many([Message(event_type, payload, id, key)]))[0]

    # -- one attempt -------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # noqa: PLC0415 - the aiohttp extra

            from buttress.webhooks.ssrf import guarded_connector  # noqa: PLC0415

            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self.policy, limit=self.max_in_flight),
                auto_decompress=False,
            )
        return self._session

    async def _post(self, lane: _Lane, row: Claimed, at: float, start: float) -> Response:
        import aiohttp  # noqa: PLC0415 - loaded by _http() already

        headers = lane.signer.headers(row.message_id, row.body, timestamp=math.floor(at))
        headers.update(lane.headers)
        async with self._http().post(
            lane.endpoint.url,
            data=row.body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=lane.timeout),
            allow_redirects=False,
        ) as answer:
            status = answer.status
            excerpt = await answer.content.read(self.max_response_bytes)
            got = answer.headers
        retry_after = None
        if status >= 300:
            retry_after = _parse_retry_after(got.get("Retry-After"), self.clock.time())
        return Response(
            at,
            self.clock.monotonic() - start,
            status,
            None,
            _capped_headers(got),
            excerpt.decode("utf-8", "replace"),
            retry_after,
        )

    async def _attempt(self, row: Claimed) -> Outcome:
        try:
            return await self._try(row)
        except Exception as exc:  # a bug of ours or a hook's: a failed attempt, logged
            log.exception("delivery %s to %s failed unexpectedly", row.message_id, row.endpoint_id)
            return Response(self.clock.time(), 0.0, error=describe(exc))

    async def _try(self, row: Claimed) -> Outcome:
        clock = self.clock
        lane = self._lanes.get(row.endpoint_id)
        if lane is None:
            return Deferred(clock.time() + _UNKNOWN_ENDPOINT_DELAY, "unknown endpoint")
        reason = self.engine.disabled.get(row.endpoint_id)
        if reason is not None or not lane.endpoint.enabled:
            return Refused(f"endpoint {row.endpoint_id!r} is disabled: {reason or 'enabled=False'}")
        if lane.limiter is not None:
            allowed = lane.limiter.hit()
            if not allowed.allowed:
                # Space the refused ones out, one token apart, so each comes back
                # when a token is there for it instead of all at the next one.
                now = clock.time()
                slot = max(lane.next_slot, now + allowed.retry_after)
                lane.next_slot = slot + lane.spacing
                return Deferred(slot, "rate limited")
        try:
            async with lane.bulkhead:
                at, start = clock.time(), clock.monotonic()
                try:
                    return await lane.breaker.acall(self._post, lane, row, at, start)
                except Rejected:
                    raise
                except SSRFError as exc:  # the address is refused: no retry changes that
                    return Response(at, clock.monotonic() - start, error=describe(exc),
                                    permanent=True)  # fmt: skip
                except Exception as exc:
                    return Response(at, clock.monotonic() - start, error=describe(exc))
        except CircuitOpen as exc:
            return Deferred(clock.time() + (exc.retry_after or 1.0), "circuit open")
        except BulkheadFull:
            return Deferred(clock.time() + _BUSY_DELAY, "endpoint busy")

    # -- writing results ---------------------------------------------------------

    async def _write(self, results: Sequence[tuple[Claimed, Outcome]]) -> Decision:
        now = self.clock.time()
        decision = self.engine.decide(results, now)
        await self.storage.apply(self.name, decision, now)
        self.delivered += len(decision.delivered)
        self.failed_attempts += len(decision.retry) + sum(1 for d in decision.dead if d[1])
        self.dead_lettered += len(decision.dead)
        # Wake-ups for the retries scheduled here, 50 ms apart at most: thousands of
        # deliveries deferred together cost a few claims, not one each.
        dues = {at for _, at, _, _ in decision.retry} | {at for _, at in decision.released}
        for due in {math.ceil(at * 20) / 20 for at in dues}:
            heapq.heappush(self._due, due)
        for event in decision.disabled:
            log.warning("webhook endpoint %s disabled: %s", event.endpoint_id, event.reason)
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("endpoint-disabled listener %r failed", listener)
        return decision

    async def _hooks(self, exhausted: Sequence[Exhausted]) -> None:
        done = []
        for item in exhausted:
            endpoint = self.endpoints.get(item.endpoint_id)
            hook = endpoint.on_exhausted if endpoint is not None else None
            if hook is not None:
                try:
                    result = hook(item)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("on_exhausted hook of endpoint %s failed", item.endpoint_id)
            done.append(int(item.delivery_id))
        if done:
            try:
                await self.storage.apply(self.name, Decision(hooks_done=done), self.clock.time())
            except Exception as exc:  # they ran; the next start may run them again
                log.warning("dispatcher %s: recording %d hooks as run failed: %r",
                            self.name, len(done), exc)  # fmt: skip

    def _spawn_hooks(self, exhausted: Sequence[Exhausted]) -> None:
        if exhausted:
            task = asyncio.create_task(self._hooks(exhausted))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    # -- draining (tests, scripts) -------------------------------------------------

    async def drain(self) -> int:
        """Attempt every delivery due now, round after round, until none is claimable;
        return how many were delivered.

        Raises:
            RuntimeError: :meth:`run` is running (it would double the claims' work).
        """
        if self._wake is not None:
            raise RuntimeError(f"{self!r} is running: drain() is for when it is not")
        await self._load()
        before = self.delivered
        while True:
            rows = await self.storage.claim(self.name, self.batch_size, self.clock.time(),
                                            self.lease)  # fmt: skip
            if not rows:
                break
            outcomes = await asyncio.gather(*(self._attempt(row) for row in rows))
            decision = await self._write(list(zip(rows, outcomes, strict=True)))
            await self._hooks(decision.exhausted)
        return self.delivered - before

    # -- the service ---------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return: no new claims; deliveries in flight finish and
        are written first (graceful shutdown)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _deliver_task(self, row: Claimed) -> None:
        async def deliver() -> None:
            try:
                outcome = await self._attempt(row)
            except asyncio.CancelledError:  # stopped at once: release it for later
                self._results.append((row, Deferred(self.clock.time(), "interrupted")))
                raise
            self._results.append((row, outcome))
            if self._results_ready is not None:
                self._results_ready.set()

        task = asyncio.create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._wake is not None and len(self._tasks) <= self.max_in_flight // 2:
            self._wake.set()

    async def _flusher(self) -> None:
        ready = self._results_ready
        assert ready is not None
        while True:
            await ready.wait()
            ready.clear()
            while self._results:
                results, self._results = self._results, []
                try:
                    decision = await self._write(results)
                except Exception as exc:
                    # Not written: their leases run out and they are tried again.
                    log.warning("dispatcher %s: writing %d results failed: %r",
                                self.name, len(results), exc)  # fmt: skip
                    if self._closing:
                        return
                    await asyncio.sleep(0.5)
                    continue
                self._spawn_hooks(decision.exhausted)
                if self._wake is not None:
                    self._wake.set()  # ordered successors may be claimable now
            if self._closing:
                return

    def _wait(self) -> float:
        now = self.clock.time()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        if not self._due:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, self._due[0] - now))

    async def prune(self) -> int:
        """Delete what the retention period lets go (in small batches); return how
        many rows were deleted. :meth:`run` calls it every 30 seconds."""
        if self.retention is None:
            return 0
        return await self.storage.prune(self.clock.time() - self.retention, _PRUNE_BATCH)

    async def _maybe_prune(self) -> None:
        now = self.clock.monotonic()
        if self._last_prune is not None and now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        # Also see what other dispatchers disabled or enabled meanwhile.
        failing, disabled = await self.storage.health()
        self.engine.disabled.clear()
        self.engine.disabled.update(disabled)
        for endpoint_id, since in failing.items():
            self.engine.failing_since.setdefault(endpoint_id, since)
        # Streaks stored by others are ours to clear on our next success too. One
        # of ours missing here (its write still on the way) stays marked, so our
        # next success clears it: never a stale start left behind to be read back.
        self.engine.stored.update(failing)
        await self.prune()

    async def run(self) -> None:
        """Deliver until :meth:`stop`: at once, then whenever a send, a finished
        attempt or a due retry wakes it, and every ``poll_interval``.

        Runs the ``on_exhausted`` hooks left pending by a crashed dispatcher first.
        Storage and network errors are logged and retried; the service does not end
        on them.

        Raises:
            RuntimeError: it is already running.
        """
        if self._wake is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._wake = wake = asyncio.Event()
        self._results_ready = asyncio.Event()
        flusher = asyncio.create_task(self._flusher())
        wake.set()
        hooks_checked = False
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._wait())
                wake.clear()
                try:
                    await self._load()
                    if not hooks_checked:  # left pending by a dispatcher that died
                        self._spawn_hooks(await self.storage.pending_hooks(1000))
                        hooks_checked = True
                    while not self._stopping:
                        free = self.max_in_flight - len(self._tasks)
                        if free < min(self.batch_size, self.max_in_flight) // 2 or free <= 0:
                            break
                        rows = await self.storage.claim(
                            self.name, min(free, self.batch_size), self.clock.time(), self.lease
                        )
                        for row in rows:
                            self._deliver_task(row)
                        if len(rows) < min(free, self.batch_size):
                            break
                    await self._maybe_prune()
                except Exception as exc:
                    log.warning("dispatcher %s: cycle failed: %r", self.name, exc)
        except asyncio.CancelledError:
            # Stop at once: what is in flight comes back when its lease runs out.
            for task in (*self._tasks, flusher):
                task.cancel()
            raise
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._closing = True
            self._results_ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher  # writes what is left, then returns
            if self._hook_tasks:
                await asyncio.gather(*self._hook_tasks, return_exceptions=True)
            self._wake = None
            self._results_ready = None
            self._stopping = self._closing = False

    # -- operations ----------------------------------------------------------------

    async def enable(self, endpoint_id: str) -> None:
        """Enable an endpoint disabled by a 410, continuous failure or :meth:`disable`."""
        await self.storage.set_disabled(endpoint_id, None, self.clock.time())
        self.engine.disabled.pop(endpoint_id, None)
        self.engine.failing_since.pop(endpoint_id, None)
        self.engine.stored.discard(endpoint_id)

    async def disable(self, endpoint_id: str, reason: str = "disabled by an operator") -> None:
        """Disable an endpoint: no new deliveries; its pending ones are dead-lettered."""
        await self.storage.set_disabled(endpoint_id, reason, self.clock.time())
        self.engine.disabled[endpoint_id] = reason

    async def lag(self) -> float:
        """How late delivery runs: seconds since the most overdue delivery fell due
        (0.0 when none is waiting). Deliveries waiting for a retry are not late until
        their time comes. A growing lag means the dispatchers fall behind; alert on it."""
        now = self.clock.time()
        due = await self.storage.oldest_due(now)
        return 0.0 if due is None else max(0.0, now - due)

    async def counts(self) -> dict[str, int]:
        """Deliveries by status: ``{"pending": ..., "delivered": ..., "dead": ...}``."""
        return await self.storage.counts()

    async def delivery(self, message_id: str, endpoint_id: str) -> DeliveryInfo | None:
        """The state of a message's delivery to an endpoint, or ``None``."""
        return await self.storage.delivery(message_id, endpoint_id)

    async def attempts(self, message_id: str, endpoint_id: str) -> list[AttemptRecord]:
        """Every recorded attempt of a message's delivery to an endpoint, oldest first."""
        return await self.storage.attempts(message_id, endpoint_id)

    def dead_letters(self, endpoint_id: str | None = None) -> DispatcherDeadLetters:
        """The dead-lettered deliveries (of one endpoint, or all): list, replay, purge."""
        return DispatcherDeadLetters(self, endpoint_id)


def _envelope(row: DeadRow) -> Envelope | None:
    try:
        try:
            data: Any = json.loads(row.body)
            kind = "application/json"
        except ValueError:
            data, kind = row.body, "application/octet-stream"
        return Envelope(
            source=f"/webhooks/endpoints/{row.endpoint_id}",
            type=row.event_type,
            id=row.message_id,
            time=datetime.fromtimestamp(row.created_at, UTC),
            data=data,
            datacontenttype=kind,
        )
    except Exception:
        return None


def _seq(id: str) -> int:
    try:
        return int(id)
    except (TypeError, ValueError):
        raise ValueError(f"not a dead letter id of this dispatcher: {id!r}") from None


class DispatcherDeadLetters:
    """The dispatcher's dead letters, as a :class:`~buttress.messaging.deadletters.DeadLetters`.

    A dead letter's ``id`` is its delivery's; its ``envelope`` the message as a
    CloudEvent (``source`` ``/webhooks/endpoints/<endpoint id>``, the message's type
    and id, its payload as data). :meth:`replay` resends: the delivery is pending
    again, due now, with a fresh schedule and the same ``webhook-id``.
    """

    def __init__(self, dispatcher: Dispatcher, endpoint_id: str | None = None) -> None:
        self.dispatcher = dispatcher
        self.endpoint_id = endpoint_id

    def _letter(self, row: DeadRow) -> DeadLetter:
        dead_at = None if row.dead_at is None else datetime.fromtimestamp(row.dead_at, UTC)
        return DeadLetter(str(row.seq), _envelope(row), row.body, row.reason, row.attempts,
                          dead_at)  # fmt: skip

    async def list(self, limit: int = 100, after: str | None = None) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first, after id ``after``."""
        rows = await self.dispatcher.storage.dead(
            limit, None if after is None else _seq(after), self.endpoint_id
        )
        return [self._letter(r) for r in rows]

    async def get(self, id: str) -> DeadLetter | None:
        """The dead letter ``id``, or ``None``."""
        row = await self.dispatcher.storage.dead_one(_seq(id))
        if row is None or (self.endpoint_id is not None and row.endpoint_id != self.endpoint_id):
            return None
        return self._letter(row)

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Resend these dead letters (all when ``None``); return how many."""
        seqs = None if ids is None else [_seq(i) for i in ids]
        dispatcher = self.dispatcher
        count = await dispatcher.storage.replay(seqs, dispatcher.clock.time(), self.endpoint_id)
        if count and dispatcher._wake is not None:
            dispatcher._wake.set()
        return count

    async def purge(self, ids: Sequence[str] | None = None) -> int:
        """Delete these dead letters (all when ``None``) and their attempt logs."""
        seqs = None if ids is None else [_seq(i) for i in ids]
        return await self.dispatcher.storage.purge(seqs, self.endpoint_id)
