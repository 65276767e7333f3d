"""Resilient httpx clients: transports that apply a buttress pipeline per host.

``httpx.Client(transport=ResilientTransport())`` and
``httpx.AsyncClient(transport=AsyncResilientTransport())`` send every request
through the pipeline of its origin (``scheme://host:port``, see
:class:`~buttress.integrations.httpx.HostPolicies`): by default a total timeout, a
retry of transient errors and of 408/425/429/5xx responses honouring
``Retry-After``, a circuit breaker counting 5xx responses, network errors and
timeouts as failures (4xx are answers), a bulkhead and a per-attempt timeout.

- **What is retried**: requests with an idempotent method (GET, HEAD, OPTIONS, PUT,
  DELETE, TRACE), or carrying an ``Idempotency-Key`` header, or any method with
  ``retry_non_idempotent=True``; and only when their body can be sent again (bytes,
  form data, JSON — not a generator or a file stream: such a request is sent once,
  still through the breaker, bulkhead and timeouts). A request that is not retried
  goes through the same pipeline with its ``Retry`` left out.
- **Responses retried are drained**: a 408/425/429/5xx response is read to its end
  and its connection released before the next attempt; the response the caller
  finally gets still carries its body.
- **Errors**: when retries run out, the last response is returned (check it with
  ``raise_for_status()``) or the last httpx error raised, as without the
  transport. buttress's rejections pass through as they are:
  :class:`~buttress.errors.CircuitOpen`, :class:`~buttress.errors.BulkheadFull`,
  :class:`~buttress.errors.RateLimited`, :class:`~buttress.errors.TimeoutExceeded`.
- **Timeouts, sync**: a sync call cannot be interrupted, so each attempt lowers the
  request's own httpx timeouts to the time the enclosing buttress ``Timeout`` s
  leave (:func:`~buttress.remaining`); a hung server ends in ``httpx.ReadTimeout``
  at the attempt's deadline, which the retry and the breaker count as a timeout.
  Async attempts are cancelled at their deadline.

Needs the ``httpx`` extra: ``pip install 'buttress[httpx]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is missing
    if exc.name != "httpx":
        raise
    raise ImportError(
        "buttress.integrations.httpx needs httpx: pip install 'buttress[httpx]'"
    ) from exc

from buttress._deadline import remaining
from buttress.clock import MONOTONIC, Clock
from buttress.integrations._http import (
    DEFAULT_MAX_HOSTS,
    IDEMPOTENCY_KEY,
    IDEMPOTENT_METHODS,
    Host,
    HostFactory,
    HostOptions,
    HostPolicies,
    HostSpec,
    as_policies,
    drains,
)

if TYPE_CHECKING:
    from buttress.registry import Registry

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "IDEMPOTENCY_KEY",
    "IDEMPOTENT_METHODS",
    "AsyncResilientTransport",
    "Host",
    "HostFactory",
    "HostOptions",
    "HostPolicies",
    "HostSpec",
    "ResilientTransport",
]

_TIMEOUT_KEYS = ("connect", "read", "write", "pool")


def _replayable(request: httpx.Request) -> bool:
    """Whether the request's body can be sent again (bytes in memory)."""
    return isinstance(request.stream, httpx.ByteStream)


def _has_key(request: httpx.Request) -> bool:
    """Whether a request that is not idempotent by its method carries an
    ``Idempotency-Key`` (its headers are not searched for one that is)."""
    return request.method not in IDEMPOTENT_METHODS and IDEMPOTENCY_KEY in request.headers


def _host_of(policies: HostPolicies, request: httpx.Request) -> Host:
    url = request.url
    return policies.lookup(url.scheme, url.host, url.port)


def _capped(timeout: Any, left: float) -> dict[str, float] | None:
    """httpx's per-request timeouts, each lowered to ``left`` seconds (``None``: every
    one of them already ends within ``left``, the usual case: nothing to copy)."""
    given = timeout if isinstance(timeout, dict) else {}
    for key in _TIMEOUT_KEYS:
        value = given.get(key)
        if value is None or value > left:
            break
    else:
        return None
    capped: dict[str, float] = {}
    for key in _TIMEOUT_KEYS:
        value = given.get(key)
        capped[key] = left if value is None or value > left else value
    return capped


def _rebuilt(response: httpx.Response, raw: bytes) -> httpx.Response:
    """A response like ``response`` whose (still encoded) body is ``raw``, in memory."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions={k: v for k, v in response.extensions.items() if k != "network_stream"},
    )


class ResilientTransport(httpx.BaseTransport):
    """An httpx transport applying a buttress pipeline per origin (sync clients).

    ``transport`` is the transport that sends (default: ``httpx.HTTPTransport()``;
    its connection pool settings are yours to choose). The per-host policies come
    from ``policies`` (a :class:`HostPolicies`, which several transports may
    share), or else from ``hosts``, ``default``, ``registry``, ``max_hosts``,
    ``retry_non_idempotent`` and ``clock`` as :class:`HostPolicies` takes them.
    Closing the transport closes ``transport``.
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        policies: HostPolicies | None = None,
        hosts: Mapping[str, HostSpec] | None = None,
        default: HostOptions | HostFactory | None = None,
        registry: Registry | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_non_idempotent: bool = False,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.policies = as_policies(
            policies,
            hosts=hosts,
            default=default,
            registry=registry,
            max_hosts=max_hosts,
            retry_non_idempotent=retry_non_idempotent,
            clock=clock,
        )
        """The per-host policies."""
        self.transport = httpx.HTTPTransport() if transport is None else transport
        """The transport that sends each attempt."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its origin's pipeline."""
        host = _host_of(self.policies, request)
        strategy = host.strategy(request.method, _has_key(request), _replayable(request))
        if strategy is None:
            return self.transport.handle_request(request)
        timeout = request.extensions.get("timeout")
        try:
            return strategy.call(self._attempt, request, timeout)
        finally:
            if timeout is None:
                request.extensions.pop("timeout", None)
            else:
                request.extensions["timeout"] = timeout

    def _attempt(self, request: httpx.Request, timeout: Any) -> httpx.Response:
        left = remaining()
        if left is not None:
            capped = _capped(timeout, left)
            if capped is not None:
                request.extensions["timeout"] = capped
        response = self.transport.handle_request(request)
        if left is not None and remaining() == 0.0:
            # Too late: the Timeout will refuse this response, so nobody else closes it.
            response.close()
            return response
        if not drains(response.status_code) or isinstance(response.stream, httpx.ByteStream):
            return response  # kept, or already in memory
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        return _rebuilt(response, raw)

    def close(self) -> None:
        """Close the inner transport."""
        self.transport.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """An httpx transport applying a buttress pipeline per origin (async clients).

    The twin of :class:`ResilientTransport`, with the same arguments;
    ``transport`` defaults to ``httpx.AsyncHTTPTransport()``. Attempts are
    cancelled at their deadline.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        policies: HostPolicies | None = None,
        hosts: Mapping[str, HostSpec] | None = None,
        default: HostOptions | HostFactory | None = None,
        registry: Registry | None = None,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        retry_non_idempotent: bool = False,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.policies = as_policies(
            policies,
            hosts=hosts,
            default=default,
            registry=registry,
            max_hosts=max_hosts,
            retry_non_idempotent=retry_non_idempotent,
            clock=clock,
        )
        """The per-host policies."""
        self.transport = httpx.AsyncHTTPTransport() if transport is None else transport
        """The transport that sends each attempt."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its origin's pipeline."""
        host = _host_of(self.policies, request)
        strategy = host.strategy(request.method, _has_key(request), _replayable(request))
        if strategy is None:
            return await self.transport.handle_async_request(request)
        return await strategy.acall(self._attempt, request)

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        response = await self.transport.handle_async_request(request)
        if not drains(response.status_code) or isinstance(response.stream, httpx.ByteStream):
            return response  # kept, or already in memory
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return _rebuilt(response, raw)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.transport.aclose()
