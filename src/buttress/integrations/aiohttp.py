"""Resilient aiohttp clients: a client middleware applying a buttress pipeline per host.

``aiohttp.ClientSession(middlewares=[ResilientMiddleware()])`` (aiohttp ≥ 3.12)
sends every request through the pipeline of its origin (``scheme://host:port``,
see :class:`~buttress.integrations.aiohttp.HostPolicies`), with the same rules as
the httpx transports (:mod:`buttress.integrations.httpx`):

- requests with an idempotent method, an ``Idempotency-Key`` header, or any method
  with ``retry_non_idempotent=True`` are retried — when their body can be sent
  again (bytes, text, JSON, url-encoded forms; not a stream, a file or multipart,
  which are sent once, still through the breaker, bulkhead and timeouts);
- a 408/425/429/5xx response is read to its end (its connection released) before
  the next attempt; the response the caller gets still has its body;
- when retries run out, the last response is returned or the last aiohttp error
  raised; buttress's rejections (:class:`~buttress.errors.CircuitOpen`, ...) pass
  through as they are; attempts are cancelled at their deadline.

Place it first in ``middlewares`` so that the others run once per attempt. It
needs aiohttp ≥ 3.12 (the ``aiohttp`` extra: ``pip install 'buttress[aiohttp]'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

try:
    import aiohttp
    from aiohttp.payload import BytesPayload
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is missing
    if exc.name is None or exc.name.partition(".")[0] != "aiohttp":
        raise
    raise ImportError(
        "buttress.integrations.aiohttp needs aiohttp: pip install 'buttress[aiohttp]'"
    ) from exc

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
    from aiohttp.client_middlewares import ClientHandlerType

    from buttress.registry import Registry

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "IDEMPOTENCY_KEY",
    "IDEMPOTENT_METHODS",
    "Host",
    "HostFactory",
    "HostOptions",
    "HostPolicies",
    "HostSpec",
    "ResilientMiddleware",
]


def _replayable(request: aiohttp.ClientRequest) -> bool:
    """Whether the request's body can be sent again (bytes in memory, or none)."""
    body = request.body
    return body == b"" or isinstance(body, BytesPayload)


async def _attempt(
    handler: ClientHandlerType, request: aiohttp.ClientRequest
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if drains(response.status):
        try:
            await response.read()  # the body is kept; the connection goes back
        finally:
            response.release()
    return response


class ResilientMiddleware:
    """An aiohttp client middleware applying a buttress pipeline per origin.

    The per-host policies come from ``policies`` (a :class:`HostPolicies`, which
    several sessions — or an httpx transport — may share), or else from
    ``hosts``, ``default``, ``registry``, ``max_hosts``, ``retry_non_idempotent``
    and ``clock`` as :class:`HostPolicies` takes them. Keeps no per-request state.
    """

    __slots__ = ("policies",)

    def __init__(
        self,
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

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Send ``request`` through its origin's pipeline (aiohttp calls this)."""
        url = request.url
        host: Host = self.policies.lookup(url.scheme, url.host or "", url.port)
        strategy = host.strategy(
            request.method,
            request.method not in IDEMPOTENT_METHODS and IDEMPOTENCY_KEY in request.headers,
            _replayable(request),
        )
        if strategy is None:
            return await handler(request)
        return await strategy.acall(_attempt, handler, request)
