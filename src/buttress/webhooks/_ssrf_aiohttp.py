"""The SSRF guard for aiohttp: a vetting resolver and the connector that uses it.

aiohttp connects to exactly the addresses its connector's resolver returns (and
caches them, per connector, for ``ttl_dns_cache`` seconds), while the request keeps
the URL's host for the ``Host`` header and the TLS server name. So a resolver that
vets every answer is what pins a delivery to vetted addresses: a name cannot resolve
to a public address when checked and to an internal one when connected.

aiohttp does not ask the resolver about a URL whose host is already an IP address,
and resolves a proxy's name instead of the target's: :class:`GuardedConnector`
covers both, checking every request's URL (the first one and each redirect) before
it connects, and refusing proxies.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from buttress.webhooks._ssrf_policy import (
    AddressPolicy,
    AsyncResolve,
    UnsafeURL,
    check_answers,
    check_url,
    host_for_vetting,
)

if TYPE_CHECKING:
    from aiohttp import ClientTimeout
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = ["GuardedConnector", "GuardedResolver", "guarded_connector"]

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns a host's addresses only if all are allowed.

    Args:
        policy: The address policy every answer is vetted against.
        resolver: What resolves names: an aiohttp resolver (``AsyncResolver`` for
            aiodns, ...) or an async callable ``(host, port) -> addresses``;
            by default aiohttp's ``DefaultResolver``.

    ``resolve`` raises :class:`~buttress.webhooks.ssrf.UnsafeAddress` (which aiohttp
    lets through to the caller of ``session.request``) when the host is malformed or
    any of its addresses is refused.
    """

    def __init__(
        self, policy: AddressPolicy, resolver: AbstractResolver | AsyncResolve | None = None
    ) -> None:
        self.policy = policy
        self._inner = resolver
        self._owned: AbstractResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` with the wrapped resolver and vet every address."""
        ascii_host, address = host_for_vetting(host, self.policy)
        if address is not None:
            check_answers(host, [str(address)], self.policy)
            return [_result(host, str(address), port)]
        inner = self._inner
        if inner is None:
            if self._owned is None:
                self._owned = aiohttp.DefaultResolver()
            inner = self._owned
        if isinstance(inner, AbstractResolver):
            results = await inner.resolve(ascii_host, port, family)
            check_answers(host, [r["host"] for r in results], self.policy)
            return results
        vetted = check_answers(host, await inner(ascii_host, port), self.policy)
        return [_result(host, address_text, port) for address_text in vetted]

    async def close(self) -> None:
        """Close the default resolver this one made (a resolver given is the giver's)."""
        if self._owned is not None:
            await self._owned.close()
            self._owned = None


def _result(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return ResolveResult(
        hostname=host, host=address, port=port, family=family, proto=0, flags=_NUMERIC
    )


class GuardedConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that connects only to destinations the policy allows.

    Every request it connects for — the first and each redirect aiohttp follows —
    has its URL checked (:func:`~buttress.webhooks.ssrf.check_url`: scheme, port,
    userinfo, literal addresses); names are resolved and vetted by a
    :class:`GuardedResolver`, and the connection goes to the vetted addresses only.
    A request through a proxy is refused with
    :class:`~buttress.webhooks.ssrf.UnsafeURL`: the proxy would resolve the name
    itself, out of the guard's sight.

    Args:
        policy: The address policy.
        resolver: Resolves names for the :class:`GuardedResolver` (see there).
        **kwargs: Passed to ``aiohttp.TCPConnector`` (``limit``, ``ssl``, ...).
    """

    max_checked_urls = 4096
    """How many URLs that passed the check are remembered (then forgotten at once)."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: AbstractResolver | AsyncResolve | None = None,
        **kwargs: Any,
    ) -> None:
        self.policy = policy
        self._guard = GuardedResolver(policy, resolver)
        # URLs that passed check_url: the answer depends on the URL and the policy
        # only (no DNS), and a dispatcher posts to the same few URLs thousands of
        # times a second; a hit costs 0.4 µs where a check costs about 15.
        self._passed: dict[str, None] = {}
        super().__init__(resolver=self._guard, **kwargs)

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> Connection:
        """Check the request's URL, then connect through the vetting resolver."""
        if req.proxy is not None:
            raise UnsafeURL(
                str(req.url), "requests through a proxy cannot be vetted (the proxy resolves)"
            )
        url = str(req.url)
        if url not in self._passed:
            check_url(url, self.policy)
            if len(self._passed) >= self.max_checked_urls:
                self._passed.clear()
            self._passed[url] = None
        return await super().connect(req, traces, timeout)

    async def close(self, *, abort_ssl: bool = False) -> None:
        """Close the connections, then the resolver the connector made."""
        try:
            await super().close(abort_ssl=abort_ssl)
        finally:
            await self._guard.close()


def guarded_connector(policy: AddressPolicy, **kwargs: Any) -> aiohttp.TCPConnector:
    """An aiohttp connector that vets and pins every connection (a :class:`GuardedConnector`).

    ``aiohttp.ClientSession(connector=guarded_connector(policy))``. Keyword arguments
    go to the connector (``resolver=`` to the :class:`GuardedResolver`).
    """
    return GuardedConnector(policy, **kwargs)
