"""The SSRF guard's decisions: URL policy, address policy, and vetting a host.

Everything here is sans-I/O except the two drivers, :func:`vet` (async) and
:func:`vet_sync`, which only ask a resolver for addresses and hand them to the same
decision (:func:`check_answers`). The client adapters (aiohttp, httpx) live in
their own modules and call these.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from buttress._options import Options, option
from buttress.errors import ButtressError, ConfigError

__all__ = [
    "DEFAULT_PORTS",
    "DEFAULT_SCHEMES",
    "AddressPolicy",
    "AsyncResolve",
    "CheckedURL",
    "Resolve",
    "SSRFError",
    "UnsafeAddress",
    "UnsafeURL",
    "address_refusal",
    "check_address",
    "check_answers",
    "check_url",
    "host_for_vetting",
    "parse_host",
    "vet",
    "vet_sync",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolve: TypeAlias = Callable[[str, int], Sequence[str]]
"""A blocking resolver: ``(host, port) -> addresses`` (textual IPs)."""

AsyncResolve: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]
"""An async resolver: ``await resolve(host, port) -> addresses`` (textual IPs)."""

DEFAULT_SCHEMES = ("https", "http")
DEFAULT_PORTS = (80, 443)
_DEFAULT_PORT = {"http": 80, "https": 443}


# --------------------------------------------------------------------------- errors


class SSRFError(ButtressError):
    """A delivery was refused because its destination may be internal.

    Permanent (``transient = False``): the same URL or address is refused again on
    every attempt, so no retry policy should try it again.
    """

    transient = False


class UnsafeURL(SSRFError):
    """The URL breaks the URL policy (scheme, port, userinfo, host syntax or address).

    ``url`` is the URL as given; the message names only its scheme, host and port,
    since webhook URLs often carry a token in their path or query.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"unsafe URL {_origin_of(url)}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.reason))


class UnsafeAddress(SSRFError):
    """The host is, or resolves to, an address the address policy refuses.

    ``host`` is the name (or literal) that was vetted, ``address`` the refused
    address (``""`` when the host itself was malformed), ``reason`` why.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        where = host if not address or address == host else f"{host} ({address})"
        super().__init__(f"unsafe address {where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.address, self.reason))


def _origin_of(url: str) -> str:
    """``scheme://netloc`` of ``url`` without userinfo, path or query, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed>"
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}"[:300] if parts.scheme or netloc else "<malformed>"


# --------------------------------------------------------------------------- addresses


def _nets(*specs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in specs)


# IANA's IPv4 special-purpose registry (the blocks not globally reachable), multicast,
# the reserved 240/4 and the cloud metadata addresses outside those. First match wins,
# so the more specific entries come first.
_V4_REFUSED = _nets(
    ("169.254.169.254/32", "link-local (cloud metadata service)"),
    ("168.63.129.16/32", "cloud platform address (Azure WireServer)"),
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (reserved)"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (incl. broadcast)"),
)

# Inside 2000::/3 (global unicast): the blocks that are not globally reachable.
_V6_REFUSED = _nets(
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001:10::/28", "ORCHID (deprecated)"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
)
# Outside 2000::/3 nothing is global unicast: these name the reason, the rest is
# "reserved". (::, ::1 and the IPv4-embedding prefixes are handled before.)
_V6_OUTSIDE = _nets(
    ("fc00::/7", "unique local (IPv6 private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
    ("100::/64", "discard-only"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _embedded_v4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, and the form's name, if any."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _V4_MAPPED:
        return "IPv4-mapped", [low32]
    if address in _V4_TRANSLATED:
        return "IPv4-translated (SIIT)", [low32]
    if address in _NAT64:
        return "NAT64", [low32]
    if address in _SIXTOFOUR:
        return "6to4", [ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)]
    if address in _TEREDO:
        teredo = address.teredo
        assert teredo is not None
        return "Teredo", [teredo[0], teredo[1]]
    return "", []


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be a webhook destination, or ``None`` if it may.

    Refused: loopback, private (RFC 1918, IPv6 unique local and site-local),
    link-local (the cloud metadata service at 169.254.169.254 among them), CGNAT,
    multicast, reserved, unspecified, benchmarking and documentation blocks, IPv4
    embedded in IPv6 (mapped, translated, NAT64, 6to4, Teredo) when the IPv4
    address is refused, the deprecated IPv4-compatible form and local-use NAT64.
    The allowlist is not consulted here (see :func:`check_address`).
    """
    if isinstance(address, ipaddress.IPv4Address):
        for network, reason in _V4_REFUSED:
            if address in network:
                return reason
        return None
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    form, embedded = _embedded_v4(address)
    if form:
        for inner in embedded:
            why = address_refusal(inner)
            if why is not None:
                return f"{form} form of {inner}: {why}"
        return None
    if address in _V4_COMPATIBLE:
        return "IPv4-compatible (deprecated)"
    if address in _NAT64_LOCAL:
        return "local-use NAT64"
    if address in _V6_GLOBAL_UNICAST:
        for network, reason in _V6_REFUSED:
            if address in network:
                return reason
        return None
    for network, reason in _V6_OUTSIDE:
        if address in network:
            return reason
    return "reserved (not global unicast)"


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class AddressPolicy(Options):
    """Where webhook deliveries may go: the URL rules and the address allowlist.

    Frozen and validated on construction (a bad value raises
    :class:`~buttress.errors.ConfigError` naming it); ``AddressPolicy.from_mapping``
    reads one from a configuration table.

    Args:
        allow: Networks or single addresses (``"127.0.0.0/8"``, ``"10.1.2.3"``,
            ``"::1"``) that are allowed although the address policy refuses them —
            the only way around it, e.g. loopback for local development and tests.
            An allowed IPv4 network also allows its IPv4-mapped IPv6 form.
        schemes: URL schemes allowed (lower case).
        ports: Ports allowed, or ``None`` for any. A URL whose host is an address
            inside ``allow`` may use any port.
        max_host_length: Longest host name, in ASCII (IDNA) characters.
    """

    allow: Sequence[str] = option(
        (), doc="Networks or addresses let through although refused, e.g. 127.0.0.0/8."
    )
    _: KW_ONLY
    schemes: Sequence[str] = option(DEFAULT_SCHEMES, doc="URL schemes allowed: https, http.")
    ports: Sequence[int] | None = option(
        DEFAULT_PORTS, doc="Ports allowed (any on an allowlisted address); None for any."
    )
    max_host_length: int = option(253, doc="Longest host name, in ASCII characters (<= 253).")
    networks: tuple[IPNetwork, ...] = field(
        default=(),
        init=False,
        repr=False,
        compare=False,
        metadata={"toml": False, "doc": "The parsed allow (derived)."},
    )
    """The parsed ``allow`` (derived from it, not a parameter)."""

    def __post_init__(self) -> None:
        if isinstance(self.allow, str):
            raise ConfigError("a sequence of networks, not one string", path="allow")
        networks: list[IPNetwork] = []
        for index, spec in enumerate(self.allow):
            if not isinstance(spec, str):
                raise ConfigError(f"{spec!r} is not a network string", path=f"allow[{index}]")
            try:
                networks.append(ipaddress.ip_network(spec.strip(), strict=True))
            except ValueError as exc:
                raise ConfigError(
                    f"{spec!r} is not a network or address ({exc})", path=f"allow[{index}]"
                ) from None
        object.__setattr__(self, "allow", tuple(self.allow))
        object.__setattr__(self, "networks", tuple(networks))
        if isinstance(self.schemes, str) or not self.schemes:
            raise ConfigError("a non-empty sequence of scheme names", path="schemes")
        schemes = tuple(str(s).lower() for s in self.schemes)
        for scheme in schemes:
            if scheme not in _DEFAULT_PORT:
                raise ConfigError(f"{scheme!r} is not http or https", path="schemes")
        object.__setattr__(self, "schemes", schemes)
        if self.ports is not None:
            if isinstance(self.ports, str | int):
                raise ConfigError("a sequence of port numbers, or None for any", path="ports")
            for port in self.ports:
                if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                    raise ConfigError(f"{port!r} is not a port number (1-65535)", path="ports")
            object.__setattr__(self, "ports", tuple(self.ports))
        if (
            isinstance(self.max_host_length, bool)
            or not isinstance(self.max_host_length, int)
            or not 0 < self.max_host_length <= 253
        ):
            raise ConfigError(
                f"{self.max_host_length!r} is not between 1 and 253", path="max_host_length"
            )

    def allows(self, address: IPAddress) -> bool:
        """Whether ``address`` (or the IPv4 address it maps) is in the allowlist."""
        if not self.networks:
            return False
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate in network
            for candidate in candidates
            for network in self.networks
            if candidate.version == network.version
        )


def check_address(address: IPAddress, policy: AddressPolicy) -> str | None:
    """Why ``policy`` refuses ``address``, or ``None`` when it may be connected to."""
    if policy.allows(address):
        return None
    return address_refusal(address)


# --------------------------------------------------------------------------- hosts

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
_MAX_RAW_HOST = 1024  # no real host is this long, in any script, before IDNA
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def _to_ascii(host: str) -> str:
    if host.isascii():
        return host.lower()
    try:
        import idna  # noqa: PLC0415 - only for internationalised names
    except ModuleNotFoundError as exc:  # pragma: no cover - comes with aiohttp and httpx
        raise ImportError(
            "checking an internationalised host name needs idna: pip install idna"
        ) from exc
    try:
        # UTS 46 mapping, as yarl (aiohttp) applies it: full-width digits and dots
        # become ASCII here, so "１２７．０．０．１" is seen as the address it is.
        return idna.encode(host, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"not a valid internationalised name ({exc})") from None


def parse_host(host: str, *, max_length: int = 253) -> tuple[str, IPAddress | None]:
    """``(ascii_host, address)``: the host as resolvers see it and, for a literal, its IP.

    Accepts a name (internationalised names are IDNA-encoded, UTS 46), a canonical
    dotted-quad IPv4 address or an IPv6 address (with or without brackets; a zone
    id is dropped). Raises :class:`ValueError` for anything else, in particular an
    IPv4 address written in decimal, octal, hex or shortened form (``2130706433``,
    ``0x7f.1``, ``017700000001``, ``127.1``): a name whose last label is a number is
    taken as such an address, as URL parsers and ``inet_aton`` take it.
    """
    if not host:
        raise ValueError("empty host")
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        literal = text.partition("%")[0]
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError("not a valid IPv6 address") from None
        return str(address), address
    if len(text) > _MAX_RAW_HOST:  # before IDNA, which would work through all of it
        raise ValueError(f"host longer than {max_length} characters")
    ascii_host = _to_ascii(text)
    bare = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    if not bare:
        raise ValueError("empty host")
    last = bare.rpartition(".")[2]
    if _NUMERIC_LABEL.fullmatch(last):
        if _CANONICAL_V4.fullmatch(bare):
            v4 = ipaddress.IPv4Address(bare)
            return str(v4), v4
        raise ValueError("an IPv4 address in decimal, octal, hex or shortened form")
    if len(bare) > max_length:
        raise ValueError(f"host longer than {max_length} characters")
    for label in bare.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(f"{label[:70]!r} is not a valid host name label")
    return ascii_host, None


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True, slots=True)
class CheckedURL:
    """A URL that passed :func:`check_url`, with its parts as a client will use them.

    ``url`` is the normalised URL (lower-case scheme, IDNA host, default port left
    out); ``host`` the ASCII host (an IPv6 address without brackets); ``port`` the
    effective port; ``address`` the host's IP when it is a literal, else ``None``
    (the name still has to be resolved and vetted: :func:`vet`).
    """

    url: str
    scheme: str
    host: str
    port: int
    address: str | None

    def __str__(self) -> str:
        return self.url


def _split_netloc(url: str, netloc: str) -> tuple[str, str]:
    """``(host, port_text)`` of an authority with no userinfo."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UnsafeURL(url, "unclosed '[' in the host")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UnsafeURL(url, "text after the IPv6 address")
        return host, rest[1:] if rest else ""
    host, colon, port = netloc.rpartition(":")
    if not colon:
        return netloc, ""
    if ":" in host:
        raise UnsafeURL(url, "an IPv6 address must be in brackets")
    return host, port


def check_url(url: str, policy: AddressPolicy) -> CheckedURL:
    """Check ``url`` against the URL policy and, for a literal host, the address policy.

    Refused with :class:`UnsafeURL`: a scheme not in ``policy.schemes``; userinfo
    (``user:pass@``); a port not in ``policy.ports`` (unless the host is an
    allowlisted address); a malformed or over-long host; an IPv4 address in
    decimal/octal/hex/short form; a literal address the address policy refuses;
    whitespace, control characters or backslashes anywhere (they make parsers
    disagree about the host). A host *name* is not resolved here: :func:`vet` (or a
    guarded client, which vets at connect time) does that.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if _BAD_URL_CHARS.search(url):
        raise UnsafeURL(url, "whitespace, control characters or backslashes in the URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeURL(url, f"malformed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        allowed = ", ".join(policy.schemes)
        raise UnsafeURL(url, f"scheme {scheme or '(none)'!r} is not allowed ({allowed})")
    netloc = parts.netloc
    if not netloc:
        raise UnsafeURL(url, "no host")
    if "@" in netloc:
        raise UnsafeURL(url, "userinfo (user:password@) is not allowed")
    raw_host, port_text = _split_netloc(url, netloc)
    if "%" in raw_host and not raw_host.startswith("["):
        raise UnsafeURL(url, "percent-encoding in the host")
    try:
        host, address = parse_host(raw_host, max_length=policy.max_host_length)
    except ValueError as exc:
        raise UnsafeURL(url, str(exc)) from None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
            raise UnsafeURL(url, f"{port_text[:10]!r} is not a port number")
        port = int(port_text)
    else:
        port = _DEFAULT_PORT[scheme]
    if address is not None:
        why = check_address(address, policy)
        if why is not None:
            raise UnsafeURL(url, f"address {address} is {why}")
    if (
        policy.ports is not None
        and port not in policy.ports
        and not (address is not None and policy.allows(address))
    ):
        allowed = ", ".join(map(str, policy.ports))
        raise UnsafeURL(url, f"port {port} is not allowed ({allowed})")
    shown = f"[{host}]" if isinstance(address, ipaddress.IPv6Address) else host
    if port != _DEFAULT_PORT[scheme]:
        shown = f"{shown}:{port}"
    normalised = f"{scheme}://{shown}{parts.path or '/'}"
    if parts.query:
        normalised += f"?{parts.query}"
    if parts.fragment:
        normalised += f"#{parts.fragment}"
    return CheckedURL(
        url=normalised,
        scheme=scheme,
        host=host,
        port=port,
        address=None if address is None else str(address),
    )


# --------------------------------------------------------------------------- vetting


def host_for_vetting(host: str, policy: AddressPolicy) -> tuple[str, IPAddress | None]:
    """:func:`parse_host`, raising :class:`UnsafeAddress` instead of ``ValueError``."""
    try:
        return parse_host(host, max_length=policy.max_host_length)
    except ValueError as exc:
        raise UnsafeAddress(host, "", str(exc)) from None


def check_answers(host: str, answers: Sequence[str], policy: AddressPolicy) -> list[str]:
    """The addresses ``host`` resolved to, all vetted, without duplicates, in order.

    Raises :class:`UnsafeAddress` if *any* of them is refused — a name that resolves
    to one public and one internal address is refused, so that no client's choice
    among them (happy eyeballs, retries) can land on the internal one — and
    :class:`OSError` when there is no address at all.
    """
    vetted: list[str] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(str(answer).partition("%")[0])
        except ValueError:
            raise UnsafeAddress(host, str(answer), "the resolver answered no IP address") from None
        why = check_address(address, policy)
        if why is not None:
            raise UnsafeAddress(host, str(address), why)
        text = str(address)
        if text not in vetted:
            vetted.append(text)
    if not vetted:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} resolved to no address")
    return vetted


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def _getaddrinfo_sync(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def vet(
    host: str, port: int, policy: AddressPolicy, resolver: AsyncResolve | None = None
) -> list[str]:
    """Resolve ``host`` and return its addresses if the policy allows every one.

    A literal address is checked without resolving. ``resolver`` (``await
    resolver(host, port)`` -> textual IPs) defaults to the event loop's
    ``getaddrinfo``. Raises :class:`UnsafeAddress` for a malformed host or if any
    address is refused; resolution errors (``socket.gaierror``) pass through.

    Connect only to the addresses returned: resolving the name again may give
    another answer (DNS rebinding).
    """
    ascii_host, address = host_for_vetting(host, policy)
    if address is not None:
        return check_answers(host, [str(address)], policy)
    answers = await (resolver or _getaddrinfo)(ascii_host, port)
    return check_answers(host, answers, policy)


def vet_sync(
    host: str, port: int, policy: AddressPolicy, resolver: Resolve | None = None
) -> list[str]:
    """:func:`vet` for blocking code (``resolver`` defaults to ``socket.getaddrinfo``)."""
    ascii_host, address = host_for_vetting(host, policy)
    if address is not None:
        return check_answers(host, [str(address)], policy)
    answers = (resolver or _getaddrinfo_sync)(ascii_host, port)
    return check_answers(host, answers, policy)
