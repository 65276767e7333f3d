"""The SSRF guard for httpx: transports whose connections go to vetted addresses only.

httpx resolves names in its connection layer (httpcore), whose *network backend*
opens the TCP connections. The guarded transports give their connection pool a
backend that resolves the host, vets every address and connects to a vetted one.
Everything above the socket keeps the URL's host: the pool's key, the ``Host``
header, the TLS server name (SNI) and certificate check. Each new connection is
vetted again, so a name that rebinds to an internal address is refused, never
connected to.

Every request's URL (the first and each redirect httpx follows) is checked by
:func:`~buttress.webhooks.ssrf.check_url` before it is sent. A transport passed to
``httpx.Client(transport=...)`` also turns off httpx's proxies from the environment,
which would resolve names out of the guard's sight; the guarded transports take no
``proxy`` argument for the same reason.
"""

from __future__ import annotations

import socket
import ssl
import typing
from collections.abc import Iterable, Sequence

import anyio
import httpcore
import httpx

from buttress.webhooks._ssrf_policy import (
    AddressPolicy,
    AsyncResolve,
    Resolve,
    UnsafeURL,
    check_url,
    vet,
    vet_sync,
)

__all__ = ["AsyncGuardedTransport", "GuardedTransport"]

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects to ``host`` only through addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, resolver: Resolve | None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = vet_sync(host, port, self._policy, self._resolver)
        except OSError as exc:  # a DNS failure is a connect error, as httpx reports it
            raise httpcore.ConnectError(str(exc)) from exc
        options = list(socket_options) if socket_options is not None else None
        error: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # vet_sync returns at least one address
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        raise UnsafeURL(f"unix:{path}", "Unix sockets bypass the address policy")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncGuardedBackend(httpcore.AsyncNetworkBackend):
    """The async twin of :class:`_GuardedBackend` (asyncio or trio, through anyio)."""

    def __init__(self, policy: AddressPolicy, resolver: AsyncResolve | None) -> None:
        self._policy = policy
        self._resolver = resolver or _anyio_getaddrinfo
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):  # resolving counts in the connect timeout
                addresses = await vet(host, port, self._policy, self._resolver)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
        except OSError as exc:  # a DNS failure is a connect error, as httpx reports it
            raise httpcore.ConnectError(str(exc)) from exc
        options = list(socket_options) if socket_options is not None else None
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # vet returns at least one address
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURL(f"unix:{path}", "Unix sockets bypass the address policy")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _anyio_getaddrinfo(host: str, port: int) -> Sequence[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# httpx's own default (httpx.Client's ``limits``).
_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def _ssl_context(verify: ssl.SSLContext | str | bool, trust_env: bool) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify, trust_env=trust_env)


class GuardedTransport(httpx.HTTPTransport):
    """An ``httpx.HTTPTransport`` that connects only to addresses the policy allows.

    ``httpx.Client(transport=GuardedTransport(policy))``. Each request's URL is
    checked (:func:`~buttress.webhooks.ssrf.check_url`), then each new connection
    resolves the host, vets every address and connects to a vetted one, keeping the
    host name for ``Host`` and TLS. Raises
    :class:`~buttress.webhooks.ssrf.UnsafeURL` /
    :class:`~buttress.webhooks.ssrf.UnsafeAddress` from ``client.send``.

    Args:
        policy: The address policy.
        resolver: ``(host, port) -> addresses``, by default ``socket.getaddrinfo``.
        verify: As for ``httpx.HTTPTransport`` (a CA bundle path, an ``SSLContext``, or
            ``False``), like ``trust_env``, ``http1``, ``http2``, ``limits``,
            ``local_address``, ``retries`` and ``socket_options``.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolve | None = None,
        verify: ssl.SSLContext | str | bool = True,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: typing.Iterable[_SocketOption] | None = None,
    ) -> None:
        context = _ssl_context(verify, trust_env)
        limits = limits if limits is not None else _DEFAULT_LIMITS
        super().__init__(verify=context, http1=http1, http2=http2, limits=limits)
        self.policy = policy
        # httpx builds its pool with httpcore's default backend and takes no other;
        # the same pool, built with the public httpcore constructor and the guarded
        # backend, replaces it.
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            local_address=local_address,
            retries=retries,
            socket_options=socket_options,
            network_backend=_GuardedBackend(policy, resolver),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Check the request's URL, then send it over a vetted connection."""
        check_url(str(request.url), self.policy)
        return super().handle_request(request)


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """The async twin of :class:`GuardedTransport`, for ``httpx.AsyncClient``.

    ``resolver`` is an async callable ``(host, port) -> addresses`` (by default
    ``anyio.getaddrinfo``, so it runs under asyncio and trio).
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: AsyncResolve | None = None,
        verify: ssl.SSLContext | str | bool = True,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: typing.Iterable[_SocketOption] | None = None,
    ) -> None:
        context = _ssl_context(verify, trust_env)
        limits = limits if limits is not None else _DEFAULT_LIMITS
        super().__init__(verify=context, http1=http1, http2=http2, limits=limits)
        self.policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            local_address=local_address,
            retries=retries,
            socket_options=socket_options,
            network_backend=_AsyncGuardedBackend(policy, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check the request's URL, then send it over a vetted connection."""
        check_url(str(request.url), self.policy)
        return await super().handle_async_request(request)
