"""Who is asking: key functions that map a request to a rate-limit key.

A key function takes the ASGI scope and returns a string — the identity a limit
is counted against — or ``None``: "this rule does not apply to this request".
:func:`client_ip` reads the peer address through trusted proxies
(``X-Forwarded-For`` or RFC 7239 ``Forwarded``), :func:`user_key` the
authenticated user, :func:`api_key` an API key, hashed, optionally validated.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeAlias, overload

from buttress.errors import ConfigError
from buttress.integrations.asgi._types import Scope, header_value, header_values

__all__ = ["AsyncKeyFunc", "KeyFunc", "api_key", "client_ip", "is_async_key", "user_key"]

KeyFunc: TypeAlias = Callable[[Scope], str | None]
"""Maps a request's ASGI scope to a rate-limit key, or ``None``: "this rule does not apply"."""
AsyncKeyFunc: TypeAlias = Callable[[Scope], Awaitable[str | None]]
"""A :data:`KeyFunc` that must be awaited (an API key checked against a database, say)."""

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_async_key(key: Callable[..., Any]) -> bool:
    """Whether calling ``key`` gives an awaitable: an ``async def`` function or object."""
    if inspect.iscoroutinefunction(key):
        return True
    call = getattr(type(key), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


# ------------------------------------------------------------------------- client IP


def _parse_address(text: str) -> _Address | None:
    """An address from a forwarding hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        # IPv4 with a port; a bare IPv6 address has at least two colons.
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _unmap(address)


def _address_key(address: _Address, ipv6_prefix: int) -> str:
    if isinstance(address, ipaddress.IPv6Address) and ipv6_prefix < 128:
        # One host usually holds a whole /64: limit the prefix, not each address.
        shift = 128 - ipv6_prefix
        network = ipaddress.IPv6Address(int(address) >> shift << shift)
        return f"ip:{network}/{ipv6_prefix}"
    return f"ip:{address}"


@functools.lru_cache(maxsize=4096)
def _cached_hop(text: str, ipv6_prefix: int) -> tuple[_Address, str] | None:
    address = _parse_address(text)
    if address is None:
        return None
    return address, _address_key(address, ipv6_prefix)


def _hop(text: str, ipv6_prefix: int) -> tuple[_Address, str] | None:
    """``(address, key)`` of a peer or forwarding hop, or ``None`` if it is no address.

    Parsing an address costs microseconds and the same few clients come back again
    and again, so answers are cached. Only short texts are looked up: no address
    with a port is longer, and a flood of long junk must not fill the cache.
    """
    if len(text) > 64:
        return None
    return _cached_hop(text, ipv6_prefix)


def _unmap(address: _Address) -> _Address:
    # ::ffff:1.2.3.4 from a dual-stack socket is the IPv4 client 1.2.3.4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split_forwarded(value: str) -> list[str]:
    """Split a ``Forwarded`` value on the commas between elements, not those in quotes."""
    elements: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(value[start:index])
            start = index + 1
    elements.append(value[start:])
    return elements


def _forwarded_for(element: str) -> str:
    """The ``for=`` node of one ``Forwarded`` element (RFC 7239), or ``""``."""
    for pair in element.split(";"):
        name, sep, node = pair.partition("=")
        if sep and name.strip().lower() == "for":
            return node.strip()
    return ""


class _ClientIP:
    """Key function: the client's IP address, through a list of trusted proxies."""

    __slots__ = ("_header", "_ipv6_prefix", "_ranges", "_trusted")

    def __init__(
        self,
        trusted: tuple[_Network, ...],
        header: Literal["x-forwarded-for", "forwarded"],
        ipv6_prefix: int,
    ) -> None:
        self._trusted = trusted
        self._header = header
        self._ipv6_prefix = ipv6_prefix
        # (version, network, mask) as ints: `address in network` costs microseconds.
        self._ranges = tuple(
            (network.version, int(network.network_address), int(network.netmask))
            for network in trusted
        )

    def _is_trusted(self, address: _Address) -> bool:
        value = int(address)
        version = address.version
        for range_version, network, mask in self._ranges:
            if range_version == version and value & mask == network:
                return True
        return False

    def _hops(self, scope: Scope) -> list[str]:
        # Every occurrence of the header, in order, forms one list (RFC 9110 5.3).
        if self._header == "forwarded":
            return [
                _forwarded_for(element)
                for value in header_values(scope, b"forwarded")
                for element in _split_forwarded(value)
            ]
        return [
            hop for value in header_values(scope, b"x-forwarded-for") for hop in value.split(",")
        ]

    def __call__(self, scope: Scope) -> str | None:
        client = scope.get("client")
        if not client:
            return None
        host = str(client[0])
        prefix = self._ipv6_prefix
        peer = _hop(host, prefix)
        if peer is None:
            # Not an IP (a test client's "testclient"): the server's word, used as is.
            return f"ip:{host}"
        if not self._trusted or not self._is_trusted(peer[0]):
            # A header from an untrusted peer could say anything: ignore it.
            return peer[1]
        key = peer[1]
        for text in reversed(self._hops(scope)):
            hop = _hop(text, prefix)
            if hop is None:
                # "unknown", an obfuscated node or garbage: nothing to the left of it
                # can be vouched for, so the last trusted hop is the best we know.
                break
            key = hop[1]
            if not self._is_trusted(hop[0]):
                break
        return key

    def __repr__(self) -> str:
        trusted = [str(network) for network in self._trusted]
        return (
            f"client_ip(trusted_proxies={trusted!r}, header={self._header!r}, "
            f"ipv6_prefix={self._ipv6_prefix!r})"
        )


def client_ip(
    trusted_proxies: Iterable[str | _Network | _Address] = (),
    *,
    header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
    ipv6_prefix: int = 64,
) -> KeyFunc:
    """A key function limiting per client IP address: ``"ip:203.0.113.7"``.

    The peer address (``scope["client"]``) is the client unless it is one of
    ``trusted_proxies`` (addresses or CIDR networks). Only then is ``header``
    (``X-Forwarded-For``, or RFC 7239 ``Forwarded``) read, from the right: trusted
    hops are skipped and the first untrusted address is the client. A header sent
    by an untrusted peer is ignored, so it cannot be spoofed. IPv6 clients are
    grouped by their ``/ipv6_prefix`` network (128 for single addresses). No peer
    address (a Unix socket) gives ``None``: the rule does not apply.
    """
    networks: list[_Network] = []
    for index, item in enumerate(trusted_proxies):
        path = f"trusted_proxies[{index}]"
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        if isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
            networks.append(ipaddress.ip_network(item))
            continue
        if not isinstance(item, str):
            raise ConfigError(f"must be an address or CIDR, got {type(item).__name__}", path=path)
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"not an address or CIDR: {item!r}", path=path) from exc
    if header not in ("x-forwarded-for", "forwarded"):
        raise ConfigError(
            f"must be 'x-forwarded-for' or 'forwarded', got {header!r}", path="header"
        )
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
        raise ConfigError(f"must be an int, got {type(ipv6_prefix).__name__}", path="ipv6_prefix")
    if not 1 <= ipv6_prefix <= 128:
        raise ConfigError(f"must be between 1 and 128, got {ipv6_prefix}", path="ipv6_prefix")
    return _ClientIP(tuple(networks), header, ipv6_prefix)


def _identity_of(user: Any) -> str | None:
    # Starlette's BaseUser.identity raises NotImplementedError unless overridden;
    # display_name (the username of SimpleUser) is then the best identity there is.
    try:
        identity = user.identity
    except (AttributeError, NotImplementedError):
        identity = None
    if identity is None or identity == "":
        try:
            identity = user.display_name
        except (AttributeError, NotImplementedError):
            return None
    if identity is None or identity == "":
        return None
    return str(identity)


class _UserKey:
    """Key function: the authenticated user."""

    __slots__ = ("_identity",)

    def __init__(self, identity: Callable[[Scope], str | None] | None) -> None:
        self._identity = identity

    def __call__(self, scope: Scope) -> str | None:
        if self._identity is not None:
            found = self._identity(scope)
        else:
            user = scope.get("user")
            if user is None or not getattr(user, "is_authenticated", False):
                return None
            found = _identity_of(user)
        if found is None or found == "":
            return None
        return f"user:{found}"

    def __repr__(self) -> str:
        return f"user_key({self._identity!r})" if self._identity is not None else "user_key()"


def user_key(identity: Callable[[Scope], str | None] | None = None) -> KeyFunc:
    """A key function limiting per authenticated user: ``"user:alice"``.

    By default it reads ``scope["user"]`` as set by Starlette's
    ``AuthenticationMiddleware`` (which must wrap this middleware): a user whose
    ``is_authenticated`` is true is keyed by ``identity``, else ``display_name``.
    Anonymous requests give ``None``: the rule does not apply to them (a ``default``
    rule per IP can take them). Pass ``identity`` to read the user from the scope
    your own way.
    """
    if identity is not None and not callable(identity):
        raise ConfigError(f"must be callable, got {type(identity).__name__}", path="identity")
    return _UserKey(identity)


class _APIKey:
    """Key function: a hash of the API key in a request header, if it is valid."""

    __slots__ = ("_header", "_name", "_scheme", "_validate")

    def __init__(self, header: str, scheme: str | None, validate: Callable[[str], Any] | None):
        self._name = header
        self._header = header.lower().encode("latin-1")
        self._scheme = scheme.lower() if scheme is not None else None
        self._validate = validate

    def _raw(self, scope: Scope) -> bytes | None:
        """The key as sent, or ``None`` when there is none (or another scheme)."""
        raw = header_value(scope, self._header)
        if raw is None:
            return None
        if self._scheme is not None:
            scheme, _, raw = raw.strip().partition(b" ")
            if scheme.decode("latin-1").lower() != self._scheme:
                return None
        raw = raw.strip()
        return raw or None

    def __call__(self, scope: Scope) -> str | None:
        raw = self._raw(scope)
        if raw is None:
            return None
        validate = self._validate
        if validate is not None:
            valid = validate(raw.decode("latin-1"))
            if type(valid) is not bool and inspect.isawaitable(valid):
                _discard(valid)
                raise TypeError(
                    f"api_key(validate={validate!r}) returned an awaitable: define it with "
                    f"'async def' so that it is awaited"
                )
            if not valid:
                return None
        return _digest(raw)

    def __repr__(self) -> str:
        validate = f", validate={self._validate!r}" if self._validate is not None else ""
        return f"api_key(header={self._name!r}, scheme={self._scheme!r}{validate})"


class _AsyncAPIKey(_APIKey):
    """:class:`_APIKey` whose ``validate`` is a coroutine function: awaited per request."""

    __slots__ = ()

    async def __call__(self, scope: Scope) -> str | None:  # type: ignore[override]
        raw = self._raw(scope)
        if raw is None:
            return None
        assert self._validate is not None
        if not await self._validate(raw.decode("latin-1")):
            return None
        return _digest(raw)


def _digest(raw: bytes) -> str:
    # 128 bits of SHA-256: the key identifies the caller in storage and logs
    # without revealing the credential.
    return "apikey:" + hashlib.sha256(raw).hexdigest()[:32]


def _discard(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never be awaited, so it warns of nothing."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


@overload
def api_key(
    header: str = ...,
    *,
    scheme: str | None = ...,
    validate: Callable[[str], Awaitable[bool]],
) -> AsyncKeyFunc: ...
@overload
def api_key(
    header: str = ...,
    *,
    scheme: str | None = ...,
    validate: Callable[[str], bool] | None = ...,
) -> KeyFunc: ...
def api_key(
    header: str = "x-api-key",
    *,
    scheme: str | None = None,
    validate: Callable[[str], bool] | Callable[[str], Awaitable[bool]] | None = None,
) -> KeyFunc | AsyncKeyFunc:
    """A key function limiting per API key, hashed: ``"apikey:<32 hex digits>"``.

    The key is read from ``header``; with ``scheme`` (``"Bearer"``) the header
    must read ``<scheme> <key>``, as in ``Authorization: Bearer <key>``. The raw key
    never reaches a store, a log or a response: only its SHA-256 digest does. No
    such header gives ``None``, so the rule does not apply.

    ``validate(key) -> bool`` is given the raw key; a key it rejects gives ``None``
    as well, so a made-up key is never a limit key of its own (the request is
    then limited by the other rules only, per IP say). It may be ``async def``
    (a database look-up): the key function is then awaited, which the middleware
    and async endpoints do. Exceptions from it propagate.
    """
    if not isinstance(header, str) or not header or not header.isascii():
        raise ConfigError(f"must be a header name, got {header!r}", path="header")
    if scheme is not None and (not isinstance(scheme, str) or not scheme or " " in scheme):
        raise ConfigError(f"must be an authentication scheme, got {scheme!r}", path="scheme")
    if validate is None:
        return _APIKey(header, scheme, None)
    if not callable(validate):
        raise ConfigError(
            f"must be a callable taking the key and returning a bool, got {validate!r}",
            path="validate",
        )
    if is_async_key(validate):
        return _AsyncAPIKey(header, scheme, validate)
    return _APIKey(header, scheme, validate)
