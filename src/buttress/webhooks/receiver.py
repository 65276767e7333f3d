"""The inbound side: an ASGI endpoint that verifies, deduplicates and acknowledges webhooks.

:func:`webhook_route` builds a :class:`WebhookReceiver`, a pure ASGI application to
mount as a route (``Route("/webhooks", webhook_route(...), methods=["POST"])`` in
Starlette or FastAPI, or as a whole application). For each ``POST`` (other
methods get 405), cheapest refusal first:

1. the sender's IP must be in ``allow_ips`` (when given) — else 403;
2. the sender must be within ``rate_limit`` (when given) — else 429 + ``Retry-After``;
3. the ``webhook-*`` headers must be present once each and well formed — else 400;
4. the timestamp must be within ``tolerance`` of the clock, either way — else 400;
5. the body is read in chunks and refused as soon as it passes ``max_body`` (or at
   once from ``Content-Length``) — 413;
6. a signature must match one of ``secrets`` — else 401;
7. the body must be JSON — else 400;
8. the ``webhook-id`` is claimed in the ``inbox``: a message already received is
   answered 200 and not handed on again (409 while its ``ack="after"`` handler
   still runs in this process);
9. the event goes to the handler (in the background, answered 202 at once; or
   awaited first with ``ack="after"``, answered 200) or into the queue (202).

Every refusal is an RFC 9457 ``application/problem+json`` document, and nothing is
handed on; no input is answered with a 500. When the event cannot be taken (queue
full, too many handlers running, the inbox unreachable) the answer is 503 with
``Retry-After`` and the claim is forgotten, so the sender's retry is accepted; an
``ack="after"`` handler that raises is a 500, its claim forgotten too.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError
from buttress.integrations.asgi._identity import KeyFunc, client_ip
from buttress.integrations.asgi._problems import Problem, send_problem_response
from buttress.integrations.asgi._types import Message, Receive, Scope, Send
from buttress.webhooks.signing import (
    DEFAULT_TOLERANCE,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HeaderError,
    SecretsLike,
    SignatureError,
    SignedHeaders,
    TimestampError,
    Verifier,
)

if TYPE_CHECKING:
    from buttress.ratelimit import RateLimiter

__all__ = [
    "DEFAULT_MAX_BODY",
    "Handler",
    "Inbox",
    "MemoryInbox",
    "WebhookEvent",
    "WebhookReceiver",
    "webhook_route",
]

_log = logging.getLogger("buttress.webhooks")

DEFAULT_MAX_BODY = 1024 * 1024
"""The default cap on a request body: 1 MiB."""

_WANTED = {
    ID_HEADER.encode("ascii"): ID_HEADER,
    TIMESTAMP_HEADER.encode("ascii"): TIMESTAMP_HEADER,
    SIGNATURE_HEADER.encode("ascii"): SIGNATURE_HEADER,
}
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified, first-seen inbound webhook.

    - ``id``: the ``webhook-id`` (the same on every retry of the message);
    - ``timestamp``: the ``webhook-timestamp``, Unix seconds;
    - ``payload``: the body parsed as JSON;
    - ``body``: the body's exact bytes;
    - ``headers``: the request headers (lower-case names; a repeated header's
      values joined with ``", "``);
    - ``sender``: who sent it, as the rate limiter keys senders (``"ip:1.2.3.4"``),
      or ``None``;
    - ``received_at``: the receiver's clock (Unix seconds) when it was accepted.
    """

    id: str
    timestamp: int
    payload: Any
    body: bytes
    headers: Mapping[str, str]
    sender: str | None
    received_at: float

    @property
    def type(self) -> str | None:
        """The payload's ``"type"`` member when it is a string (Standard Webhooks' event type)."""
        if isinstance(self.payload, dict):
            value = self.payload.get("type")
            if isinstance(value, str):
                return value
        return None


Handler: TypeAlias = Callable[[WebhookEvent], Awaitable[object]]
"""An async function given each accepted event."""


@runtime_checkable
class Inbox(Protocol):
    """What the receiver deduplicates with: ``claim`` answers True for a first id.

    :class:`buttress.messaging.inbox.RedisInbox` is one (for several processes);
    :class:`MemoryInbox` another (one process). An inbox may also have
    ``async release(id)``, called when an accepted event could not be handed on, so
    the sender's retry is taken.
    """

    async def claim(self, message_id: str) -> bool: ...


class MemoryInbox:
    """An in-process :class:`Inbox`: ids remembered for ``ttl`` seconds, at most ``max_ids``.

    For a receiver running in one process. The oldest ids are forgotten first when
    it is full; keep ``ttl`` above twice the receiver's tolerance (a message outside
    the tolerance is refused by its timestamp anyway) and ``max_ids`` above the
    number of messages received in ``ttl``.

    Args:
        ttl: seconds an id is remembered (default one day).
        max_ids: the most ids kept (default 100,000).
        clock: the clock whose :meth:`~buttress.clock.Clock.monotonic` times the TTL.

    Raises:
        ConfigError: a bad ``ttl`` or ``max_ids``.
    """

    __slots__ = ("_clock", "_ids", "max_ids", "ttl")

    def __init__(
        self, ttl: float = 86_400.0, *, max_ids: int = 100_000, clock: Clock = MONOTONIC
    ) -> None:
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise ConfigError(f"must be a positive number of seconds, got {ttl!r}", path="ttl")
        if isinstance(max_ids, bool) or not isinstance(max_ids, int) or max_ids < 1:
            raise ConfigError(f"must be a positive int, got {max_ids!r}", path="max_ids")
        self.ttl = float(ttl)
        self.max_ids = max_ids
        self._clock = clock
        self._ids: collections.OrderedDict[str, float] = collections.OrderedDict()

    def _expire(self, now: float) -> None:
        ids = self._ids
        while ids:
            first, expires = next(iter(ids.items()))
            if expires > now:
                break
            del ids[first]

    async def claim(self, message_id: str) -> bool:
        """``True`` the first time ``message_id`` is claimed (within the TTL)."""
        now = self._clock.monotonic()
        self._expire(now)
        if message_id in self._ids:
            return False
        if len(self._ids) >= self.max_ids:
            self._ids.popitem(last=False)
        self._ids[message_id] = now + self.ttl
        return True

    async def release(self, message_id: str) -> bool:
        """Forget ``message_id``; ``True`` if it was claimed."""
        return self._ids.pop(message_id, None) is not None

    def __len__(self) -> int:
        self._expire(self._clock.monotonic())
        return len(self._ids)

    def __repr__(self) -> str:
        return f"MemoryInbox(ttl={self.ttl:g}, max_ids={self.max_ids})"


# ----------------------------------------------------------------------- refusals


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.detail)


def _refuse(
    status: int,
    detail: str,
    *,
    retry_after: float | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Refused:
    return _Refused(Problem(status, detail=detail, retry_after=retry_after, headers=headers))


_NOT_POST = Problem(405, detail="Webhooks are delivered with POST.", headers=(("Allow", "POST"),))
_FORBIDDEN = Problem(403, detail="This sender's address is not allowed to deliver webhooks.")
_BAD_SIGNATURE = Problem(
    401,
    detail="The webhook signature does not match.",
    headers=(("WWW-Authenticate", 'Signature realm="webhooks"'),),
)
_NOT_JSON = Problem(400, detail="The webhook body is not JSON.")


def _networks(allow_ips: Iterable[str | _Network | Any]) -> tuple[_Network, ...]:
    if isinstance(allow_ips, str | bytes):
        raise ConfigError(
            "must be a list of addresses or networks, not one string", path="allow_ips"
        )
    out: list[_Network] = []
    for index, item in enumerate(allow_ips):
        try:
            if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                out.append(item)
            else:
                out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"not an IP address or network: {exc}", path=f"allow_ips[{index}]"
            ) from None
    return tuple(out)


def _ip_of(key: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if key is None or not key.startswith("ip:"):
        return None
    try:
        return ipaddress.ip_address(key[3:])
    except ValueError:
        return None


class WebhookReceiver:
    """The ASGI application :func:`webhook_route` returns; see there for the options.

    :meth:`drain` waits for the handlers running in the background (call it on
    shutdown); :attr:`pending` counts them.
    """

    __slots__ = (
        "_ack",
        "_address",
        "_allow",
        "_clock",
        "_handler",
        "_inbox",
        "_inflight",
        "_limiter",
        "_max_body",
        "_max_pending",
        "_queue",
        "_sender",
        "_tasks",
        "_verifier",
    )

    def __init__(
        self,
        handler_or_queue: Handler | asyncio.Queue[WebhookEvent],
        *,
        secrets: SecretsLike,
        inbox: Inbox | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        tolerance: float = DEFAULT_TOLERANCE,
        allow_ips: Iterable[str | _Network] | None = None,
        rate_limit: RateLimiter | str | None = None,
        ack: Literal["before", "after"] = "before",
        trusted_proxies: Iterable[str] = (),
        sender: KeyFunc | None = None,
        max_pending: int = 1000,
        clock: Clock = MONOTONIC,
    ) -> None:
        if isinstance(handler_or_queue, asyncio.Queue):
            self._queue: asyncio.Queue[WebhookEvent] | None = handler_or_queue
            self._handler: Handler | None = None
        elif callable(handler_or_queue):
            self._queue = None
            self._handler = handler_or_queue
        else:
            raise ConfigError(
                f"must be an async function or an asyncio.Queue, got {handler_or_queue!r}",
                path="handler_or_queue",
            )
        self._verifier = Verifier(secrets, tolerance, clock=clock)
        if inbox is None:
            inbox = MemoryInbox(clock=clock)
        elif not callable(getattr(inbox, "claim", None)):
            raise ConfigError(
                f"must have an async claim(message_id) -> bool method, got {inbox!r}",
                path="inbox",
            )
        self._inbox = inbox
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise ConfigError(
                f"must be a positive number of bytes, got {max_body!r}", path="max_body"
            )
        self._max_body = max_body
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"must be a positive int, got {max_pending!r}", path="max_pending")
        self._max_pending = max_pending
        if ack not in ("before", "after"):
            raise ConfigError(f"must be 'before' or 'after', got {ack!r}", path="ack")
        if ack == "after" and self._queue is not None:
            raise ConfigError("ack='after' needs a handler, not a queue", path="ack")
        self._ack = ack
        self._allow = None if allow_ips is None else _networks(allow_ips)
        # The exact address (no IPv6 grouping) for the allowlist; the sender's key for
        # the rate limit and the event.
        self._address: KeyFunc = client_ip(trusted_proxies, ipv6_prefix=128)
        self._sender: KeyFunc = sender if sender is not None else client_ip(trusted_proxies)
        self._limiter = _limiter_of(rate_limit, clock)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()

    @property
    def pending(self) -> int:
        """How many handlers run in the background now."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every handler running in the background has finished.

        Bound the wait with :func:`asyncio.timeout`; the handlers are not cancelled
        when it runs out.
        """
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            status, document = await self._receive(scope, receive)
        except _Refused as refusal:
            _log.debug(
                "webhook refused on %r: %d %s",
                scope.get("path", ""),
                refusal.problem.status,
                refusal.problem.detail,
            )
            await send_problem_response(send, scope, refusal.problem)
            return
        body = json.dumps(document, separators=(",", ":")).encode("ascii")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _receive(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, str]]:
        if scope.get("method") != "POST":
            raise _Refused(_NOT_POST)
        if self._allow is not None:
            address = _ip_of(self._address(scope))
            if address is None or not any(address in network for network in self._allow):
                raise _Refused(_FORBIDDEN)
        sender = self._sender(scope)
        if self._limiter is not None:
            try:
                result = await self._limiter.ahit(sender or "unknown")
            except Exception:
                # The limiter's store is down: let the request through rather than
                # turn senders away for our outage (as RateLimitMiddleware does).
                _log.warning("the webhook rate limiter failed; request let through", exc_info=True)
                result = None
            if result is not None and not result.allowed:
                raise _refuse(
                    429,
                    "Too many webhooks from this sender; try again later.",
                    retry_after=result.retry_after if math.isfinite(result.retry_after) else None,
                )
        headers = _headers(scope)
        try:
            signed = SignedHeaders.parse(headers)
        except HeaderError as exc:
            raise _refuse(400, f"Bad webhook headers: {exc}") from None
        try:
            self._verifier.check_timestamp(signed.timestamp)
        except TimestampError as exc:
            raise _refuse(400, f"Stale or future webhook: {exc}") from None
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise _refuse(413, f"The webhook body is larger than {self._max_body} bytes.")
        body = await self._body(receive)
        try:
            self._verifier.verify_parsed(signed, body)
        except TimestampError as exc:
            raise _refuse(400, f"Stale or future webhook: {exc}") from None
        except SignatureError:
            raise _Refused(_BAD_SIGNATURE) from None
        try:
            payload = json.loads(body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
            raise _Refused(_NOT_JSON) from None
        try:
            first = await self._inbox.claim(signed.msg_id)
        except Exception:
            _log.warning("the webhook inbox failed to claim %r", signed.msg_id, exc_info=True)
            raise _refuse(
                503, "The webhook cannot be recorded now; try again later.", retry_after=5
            ) from None
        if not first:
            if signed.msg_id in self._inflight:
                # A retry (the sender timed out) while the first delivery's handler still
                # runs: "received" would be a lie if that handler then fails.
                raise _refuse(
                    409, "This webhook is still being handled; try again later.", retry_after=5
                )
            return 200, {"id": signed.msg_id, "status": "duplicate"}
        event = WebhookEvent(
            signed.msg_id,
            signed.timestamp,
            payload,
            body,
            headers,
            sender,
            self._clock.time(),
        )
        return await self._hand_on(event)

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            kind = message["type"]
            if kind == "http.disconnect":
                raise _refuse(400, "The client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max_body:
                    raise _refuse(413, f"The webhook body is larger than {self._max_body} bytes.")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _hand_on(self, event: WebhookEvent) -> tuple[int, dict[str, str]]:
        if self._queue is not None:
            try:
                self._queue.put_nowait(event)
            except asyncio.QueueFull:
                await self._release(event.id)
                raise _refuse(
                    503, "Too many webhooks waiting to be handled; try again later.", retry_after=1
                ) from None
            return 202, {"id": event.id, "status": "accepted"}
        handler = self._handler
        assert handler is not None
        if self._ack == "after":
            self._inflight.add(event.id)
            try:
                await handler(event)
            except Exception:
                _log.exception("the webhook handler failed on %r", event.id)
                await self._release(event.id)
                raise _refuse(
                    500, "The webhook could not be handled; it will be taken again on retry."
                ) from None
            finally:
                self._inflight.discard(event.id)
            return 200, {"id": event.id, "status": "handled"}
        if len(self._tasks) >= self._max_pending:
            await self._release(event.id)
            raise _refuse(503, "Too many webhooks being handled; try again later.", retry_after=1)
        task = asyncio.get_running_loop().create_task(self._run(handler, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return 202, {"id": event.id, "status": "accepted"}

    async def _run(self, handler: Handler, event: WebhookEvent) -> None:
        try:
            await handler(event)
        except Exception:
            _log.exception("the webhook handler failed on %r (acknowledged already)", event.id)
            await self._release(event.id)

    async def _release(self, msg_id: str) -> None:
        release = getattr(self._inbox, "release", None)
        if release is None:
            return
        try:
            await release(msg_id)
        except Exception:
            _log.warning("the webhook inbox failed to release %r", msg_id, exc_info=True)

    def __repr__(self) -> str:
        target = "queue" if self._queue is not None else "handler"
        return f"WebhookReceiver({target}, {self._verifier!r}, inbox={self._inbox!r})"


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers by lower-case name; a repeated ``webhook-*`` header is refused."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.lower()
        text = raw_value.decode("latin-1")
        wanted = _WANTED.get(name)
        if wanted is not None:
            if wanted in out:
                raise _refuse(400, f"Bad webhook headers: header {wanted} is given twice")
            out[wanted] = text
            continue
        key = name.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _limiter_of(rate_limit: object, clock: Clock) -> RateLimiter | None:
    if rate_limit is None:
        return None
    from buttress.ratelimit import RateLimiter  # noqa: PLC0415 - only when asked for

    if isinstance(rate_limit, RateLimiter):
        return rate_limit
    if isinstance(rate_limit, str):
        return RateLimiter(rate_limit, name="webhooks", clock=clock)
    raise ConfigError(
        f"must be a RateLimiter or a rate such as '100/second', got {rate_limit!r}",
        path="rate_limit",
    )


def webhook_route(
    handler_or_queue: Handler | asyncio.Queue[WebhookEvent],
    *,
    secrets: SecretsLike,
    inbox: Inbox | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_ips: Sequence[str | _Network] | None = None,
    rate_limit: RateLimiter | str | None = None,
    ack: Literal["before", "after"] = "before",
    trusted_proxies: Sequence[str] = (),
    sender: KeyFunc | None = None,
    max_pending: int = 1000,
    clock: Clock = MONOTONIC,
) -> WebhookReceiver:
    """An ASGI endpoint receiving Standard Webhooks: verified, deduplicated, acknowledged.

    Mount it as a route: ``Route("/webhooks/billing", webhook_route(on_event,
    secrets="whsec_..."), methods=["POST"])``.

    Args:
        handler_or_queue: an async function given each accepted
            :class:`WebhookEvent`, or an :class:`asyncio.Queue` the events are put
            into (a full queue answers 503).
        secrets: the secret(s) a sender may sign with; several during a rotation.
        inbox: remembers the ids already received (anything with ``async
            claim(id) -> bool``: :class:`~buttress.messaging.inbox.RedisInbox` for
            several processes); default a :class:`MemoryInbox`, for one process.
        max_body: the largest body accepted, in bytes (default 1 MiB).
        tolerance: seconds the ``webhook-timestamp`` may be away from the clock,
            either way (default 300).
        allow_ips: when given, only senders from these addresses or networks
            (``"203.0.113.0/24"``) are heard; the others get 403.
        rate_limit: a :class:`~buttress.ratelimit.RateLimiter` or a rate
            (``"100/second"``), applied per sender. When its store fails the
            request is let through (and the failure logged).
        ack: ``"before"`` (default): answer 202 once the event is accepted and run
            the handler in the background; ``"after"``: answer only once the
            handler returned (200), or 500 if it raised (the claim is released, so
            the sender's retry runs it again). A retry arriving while the handler
            still runs in this process gets 409 with ``Retry-After``.
        trusted_proxies: proxies whose ``X-Forwarded-For`` names the real sender
            (for ``allow_ips`` and the rate limit); see
            :func:`~buttress.integrations.asgi.client_ip`.
        sender: a key function naming the sender for the rate limit and the event
            (default: the client IP).
        max_pending: the most handlers running in the background at once; beyond,
            503 with ``Retry-After``.
        clock: the clock for timestamps, TTLs and the rate limit.

    Raises:
        ConfigError: a bad option (a secret without its ``whsec_`` prefix, a
            non-positive cap, an address that is not one, ...).
    """
    return WebhookReceiver(
        handler_or_queue,
        secrets=secrets,
        inbox=inbox,
        max_body=max_body,
        tolerance=tolerance,
        allow_ips=allow_ips,
        rate_limit=rate_limit,
        ack=ack,
        trusted_proxies=trusted_proxies,
        sender=sender,
        max_pending=max_pending,
        clock=clock,
    )
