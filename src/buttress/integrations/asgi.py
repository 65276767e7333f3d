"""Rate limiting for ASGI applications: a pure ASGI middleware, no framework needed.

:class:`RateLimitMiddleware` wraps any ASGI 3 application (Starlette, FastAPI,
Quart, a bare callable). It speaks the ASGI protocol directly — it imports no
Starlette, never runs the application in another task (so context variables flow
as usual), keeps all per-request state in local variables, and hands lifespan and
any other scope type to the application untouched.

For each HTTP request the first :class:`Rule` that matches the method and path
*and* yields a key decides: its :class:`~buttress.ratelimit.RateLimiter` takes one
atomic decision over all its limits for that key. A key function returning
``None`` passes the request on to the next rule, so "per user if signed in, else
per IP" is two rules. Allowed responses carry ``X-RateLimit-*`` and the IETF
``RateLimit-Policy``/``RateLimit`` fields; refused requests get a 429 with
``Retry-After`` and an RFC 9457 problem document. WebSocket connections can be
capped per key, in this process.

Key functions: :func:`client_ip` (with trusted proxies for ``X-Forwarded-For`` or
``Forwarded``), :func:`user_key` and :func:`api_key` (hashed: raw keys never reach
a store or a log).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from buttress.errors import ConfigError
from buttress.ratelimit import GCRA, FixedWindow, SlidingWindow, TokenBucket
from buttress.stores.base import Algorithm, StoreError

if TYPE_CHECKING:
    from buttress.ratelimit.limiter import RateLimiter, RateLimitResult

__all__ = [
    "QUOTA_EXCEEDED",
    "ASGIApp",
    "KeyFunc",
    "Message",
    "RateLimitMiddleware",
    "Receive",
    "Rule",
    "Scope",
    "Send",
    "api_key",
    "client_ip",
    "user_key",
]

_log = logging.getLogger("buttress.integrations.asgi")

Scope: TypeAlias = MutableMapping[str, Any]
"""The ASGI connection scope (``type``, ``path``, ``headers``, ``client``, ...)."""
Message: TypeAlias = MutableMapping[str, Any]
"""One ASGI event, received or sent (``{"type": "http.response.start", ...}``)."""
Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""

KeyFunc: TypeAlias = Callable[[Scope], str | None]
"""Maps a request's ASGI scope to a rate-limit key, or ``None``: "this rule does not apply"."""

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
"""The problem type of 429 bodies, as the RateLimit header fields draft defines it."""
_INF = math.inf


def _seconds(value: float) -> int:
    """Whole seconds, rounded up; float noise (2.0000000001 s) does not add a second."""
    if value <= 0:
        return 0
    return math.ceil(value - 1e-9)


# ------------------------------------------------------------------------ key functions


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


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [
        value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name
    ]


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
                for value in _header_values(scope, b"forwarded")
                for element in _split_forwarded(value)
            ]
        return [
            hop for value in _header_values(scope, b"x-forwarded-for") for hop in value.split(",")
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
    Anonymous requests give ``None``, so the next rule (say, per IP) applies. Pass
    ``identity`` to read the user from the scope your own way.
    """
    if identity is not None and not callable(identity):
        raise ConfigError(f"must be callable, got {type(identity).__name__}", path="identity")
    return _UserKey(identity)


class _APIKey:
    """Key function: a hash of the API key in a request header."""

    __slots__ = ("_header", "_name", "_scheme")

    def __init__(self, header: str, scheme: str | None) -> None:
        self._name = header
        self._header = header.lower().encode("latin-1")
        self._scheme = scheme.lower() if scheme is not None else None

    def __call__(self, scope: Scope) -> str | None:
        wanted = self._header
        for name, value in scope.get("headers", ()):
            if name.lower() == wanted:
                raw: bytes = value
                break
        else:
            return None
        if self._scheme is not None:
            scheme, _, raw = raw.strip().partition(b" ")
            if scheme.decode("latin-1").lower() != self._scheme:
                return None
        raw = raw.strip()
        if not raw:
            return None
        # 128 bits of SHA-256: the key identifies the caller in storage and logs
        # without revealing the credential.
        return "apikey:" + hashlib.sha256(raw).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"api_key(header={self._name!r}, scheme={self._scheme!r})"


def api_key(header: str = "x-api-key", *, scheme: str | None = None) -> KeyFunc:
    """A key function limiting per API key, hashed: ``"apikey:<32 hex digits>"``.

    The key is read from ``header``; with ``scheme`` (``"Bearer"``) the header
    must read ``<scheme> <key>``, as in ``Authorization: Bearer <key>``. The raw key
    never reaches a store, a log or a response: only its SHA-256 digest does. No
    such header gives ``None``, so the next rule applies.
    """
    if not isinstance(header, str) or not header or not header.isascii():
        raise ConfigError(f"must be a header name, got {header!r}", path="header")
    if scheme is not None and (not isinstance(scheme, str) or not scheme or " " in scheme):
        raise ConfigError(f"must be an authentication scheme, got {scheme!r}", path="scheme")
    return _APIKey(header, scheme)


# -------------------------------------------------------------------------------- rules

_PATH_TOKEN = re.compile(r"\*\*|\*|\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
_SF_STRING = re.compile(r"[\x20-\x7e]+")


def _compile_path(pattern: str) -> re.Pattern[str]:
    """``/users/{id}/*`` to a regex: ``*`` one segment's worth of characters, ``**``
    anything including ``/``, ``{name}`` one non-empty segment, ``{name:path}`` the rest.
    """
    parts: list[str] = []
    position = 0
    for match in _PATH_TOKEN.finditer(pattern):
        parts.append(re.escape(pattern[position : match.start()]))
        token = match.group(0)
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        elif match.group(2):
            parts.append(".+")
        else:
            parts.append("[^/]+")
        position = match.end()
    parts.append(re.escape(pattern[position:]))
    # DOTALL: a decoded %0A in a path must not slip past "**".
    return re.compile("".join(parts), re.DOTALL)


def _sf_string(text: str) -> str:
    """``text`` as a structured-field String (RFC 9651): quoted, ``\\`` and ``"`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quota(limit: Algorithm) -> tuple[int, int] | None:
    """``(q, w)`` of a RateLimit-Policy item: quota and window in whole seconds."""
    if isinstance(limit, TokenBucket | GCRA):
        # A full bucket of `burst`, refilled in burst * period / rate seconds.
        return limit.burst, max(1, _seconds(limit.burst * limit.period / limit.rate))
    if isinstance(limit, FixedWindow | SlidingWindow):
        return limit.limit, max(1, _seconds(limit.period))
    return None


class Rule:
    """Which requests a :class:`~buttress.ratelimit.RateLimiter` limits, and per what key.

    - ``path``: a pattern over ``scope["path"]`` — ``*`` matches within one segment,
      ``**`` across segments, ``{name}`` one non-empty segment, ``{name:path}`` the
      rest — or a compiled regex (full match); ``None`` matches every path.
    - ``methods``: HTTP methods (``"GET"`` or ``("POST", "PUT")``); ``None``: all.
    - ``key``: a :data:`KeyFunc`; default :func:`client_ip` with no trusted proxy.
      ``None`` from it means the rule does not apply to this request.
    - ``cost``: what one request takes from the limits.
    - ``policies``: the names the limits get in the ``RateLimit-Policy`` and
      ``RateLimit`` fields, one per limit; default the limiter's name, suffixed
      ``-1``, ``-2``, ... when it has several limits.
    """

    __slots__ = (
        "_items",
        "_methods",
        "_path",
        "_policy_header",
        "cost",
        "key",
        "limiter",
        "methods",
        "path",
        "policies",
    )

    limiter: RateLimiter
    path: str | re.Pattern[str] | None
    methods: frozenset[str] | None
    key: KeyFunc
    cost: int
    policies: tuple[str, ...]
    _path: re.Pattern[str] | None
    _methods: frozenset[str] | None
    _items: tuple[bytes, ...]
    _policy_header: bytes | None

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        path: str | re.Pattern[str] | None = None,
        methods: str | Iterable[str] | None = None,
        key: KeyFunc | None = None,
        cost: int = 1,
        policies: Sequence[str] | None = None,
    ) -> None:
        if not callable(getattr(limiter, "ahit", None)):
            raise ConfigError(
                f"must be a RateLimiter, got {type(limiter).__name__}", path="limiter"
            )
        limits: tuple[Algorithm, ...] = tuple(limiter.limits)
        if path is None or isinstance(path, re.Pattern):
            compiled = path
        elif isinstance(path, str) and path.startswith("/"):
            compiled = _compile_path(path)
        else:
            raise ConfigError(f"must be a pattern starting with '/', got {path!r}", path="path")
        if methods is None:
            method_set = None
        else:
            names = [methods] if isinstance(methods, str) else list(methods)
            if not names or not all(isinstance(m, str) and m for m in names):
                raise ConfigError(f"must be HTTP method names, got {methods!r}", path="methods")
            method_set = frozenset(m.upper() for m in names)
        if key is None:
            key = client_ip()
        elif not callable(key):
            raise ConfigError(f"must be callable, got {type(key).__name__}", path="key")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigError(f"must be an int >= 1, got {cost!r}", path="cost")
        if policies is None:
            base = str(limiter.name)
            names = (
                [base] if len(limits) == 1 else [f"{base}-{i}" for i in range(1, len(limits) + 1)]
            )
        else:
            names = [policies] if isinstance(policies, str) else list(policies)
            if len(names) != len(limits):
                raise ConfigError(
                    f"needs one name per limit ({len(limits)}), got {len(names)}", path="policies"
                )
        for index, name in enumerate(names):
            if not isinstance(name, str) or not _SF_STRING.fullmatch(name):
                raise ConfigError(
                    f"must be printable ASCII, got {name!r}", path=f"policies[{index}]"
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"names must be distinct, got {names!r}", path="policies")

        items = tuple(_sf_string(name) for name in names)
        policy_items = []
        for item, limit in zip(items, limits, strict=True):
            quota = _quota(limit)
            if quota is not None:
                policy_items.append(f"{item};q={quota[0]};w={quota[1]}")
        self.limiter = limiter
        self.path = path
        self.methods = method_set
        self.key = key
        self.cost = cost
        self.policies = tuple(names)
        self._path = compiled
        self._methods = method_set
        self._items = tuple(item.encode("ascii") for item in items)
        self._policy_header = ", ".join(policy_items).encode("ascii") if policy_items else None

    def matches(self, method: str, path: str) -> bool:
        """Whether a request of ``method`` to ``path`` falls under this rule."""
        if self._methods is not None and method not in self._methods:
            return False
        return self._path is None or self._path.fullmatch(path) is not None

    def headers(self, result: RateLimitResult) -> list[tuple[bytes, bytes]]:
        """The response headers that report ``result`` (see the module docs)."""
        items = self._items
        parts = []
        # Indexing, not zip(strict=...): keyword parsing costs more than the loop.
        for index, decision in enumerate(result.decisions):
            # A refused limit's window is its wait: within it, nothing more fits.
            window = decision[3]
            if not decision[0] and decision[4] != _INF:
                window = decision[4]
            parts.append(b"%s;r=%d;t=%d" % (items[index], decision[2], _seconds(window)))
        headers = [
            (b"x-ratelimit-limit", str(result[1]).encode()),
            (b"x-ratelimit-remaining", str(result[2]).encode()),
            (b"x-ratelimit-reset", str(_seconds(result[3])).encode()),
        ]
        if self._policy_header is not None:
            headers.append((b"ratelimit-policy", self._policy_header))
        headers.append((b"ratelimit", b", ".join(parts)))
        return headers

    def violated(self, result: RateLimitResult) -> list[str]:
        """The names of the limits that refused ``result``."""
        return [
            name
            for name, decision in zip(self.policies, result.decisions, strict=False)
            if not decision.allowed
        ]

    def __repr__(self) -> str:
        methods = sorted(self.methods) if self.methods is not None else None
        return (
            f"Rule({self.limiter!r}, path={self.path!r}, methods={methods!r}, "
            f"key={self.key!r}, cost={self.cost!r})"
        )


# --------------------------------------------------------------------------- middleware


def _problem(
    status: int, title: str, detail: str, instance: str, type_: str, **extra: Any
) -> bytes:
    document = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


class RateLimitMiddleware:
    """Pure ASGI middleware that applies rate-limit :class:`Rule` s to HTTP requests.

    - ``rules``: tried in order; the first that matches the request and whose key
      function returns a key decides (later rules are not consulted).
    - ``default``: a rule without ``path`` or ``methods``, tried after all others.
    - ``exempt``: ``exempt(scope) -> bool``; exempt requests and WebSockets pass
      without limit or headers (health checks, internal callers).
    - ``headers``: add the rate-limit headers to allowed responses (429 responses
      always carry them).
    - ``max_websockets``: at most this many open WebSocket connections per
      ``websocket_key`` (default :func:`client_ip`), counted in this process. One
      over the cap is refused before it is accepted.
    - ``fail_open``: when the limiter's store fails (:class:`~buttress.stores.StoreError`),
      let the request through and log a warning; ``False`` lets the error propagate.

    Lifespan and every other non-HTTP, non-WebSocket scope go straight to ``app``.
    """

    __slots__ = (
        "_exempt",
        "_headers",
        "_rules",
        "_ws_key",
        "_ws_limit",
        "_ws_lock",
        "_ws_open",
        "app",
        "fail_open",
    )

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[Rule] = (),
        *,
        default: Rule | None = None,
        exempt: Callable[[Scope], bool] | None = None,
        headers: bool = True,
        max_websockets: int | None = None,
        websocket_key: KeyFunc | None = None,
        fail_open: bool = True,
    ) -> None:
        if isinstance(rules, Rule):
            rules = (rules,)
        checked = list(rules)
        for index, rule in enumerate(checked):
            if not isinstance(rule, Rule):
                raise ConfigError(
                    f"must be a Rule, got {type(rule).__name__}", path=f"rules[{index}]"
                )
        if default is not None:
            if not isinstance(default, Rule):
                raise ConfigError(f"must be a Rule, got {type(default).__name__}", path="default")
            if default.path is not None or default.methods is not None:
                raise ConfigError(
                    "the default rule applies to every request: give it no path or methods",
                    path="default",
                )
            checked.append(default)
        if exempt is not None and not callable(exempt):
            raise ConfigError(f"must be callable, got {type(exempt).__name__}", path="exempt")
        if max_websockets is not None and (
            isinstance(max_websockets, bool)
            or not isinstance(max_websockets, int)
            or max_websockets < 1
        ):
            raise ConfigError(
                f"must be an int >= 1 or None, got {max_websockets!r}", path="max_websockets"
            )
        if websocket_key is None:
            websocket_key = client_ip()
        elif not callable(websocket_key):
            raise ConfigError(
                f"must be callable, got {type(websocket_key).__name__}", path="websocket_key"
            )
        self.app = app
        self.fail_open = fail_open
        self._rules = tuple(checked)
        self._exempt = exempt
        self._headers = headers
        self._ws_limit = max_websockets
        self._ws_key = websocket_key
        # The one piece of shared state: open WebSockets per key. Guarded by a lock
        # because a process may serve several event loops (threads, test clients).
        self._ws_open: dict[str, int] = {}
        self._ws_lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self._rules:
            await self._http(scope, receive, send)
        elif kind == "websocket" and self._ws_limit is not None:
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --------------------------------------------------------------------------- HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = self._exempt
        if exempt is not None and exempt(scope):
            await self.app(scope, receive, send)
            return
        decided = await self._decide(scope)
        if decided is None:
            await self.app(scope, receive, send)
            return
        rule, result = decided
        if not result.allowed:
            await self._refuse(scope, send, rule, result)
            return
        if not self._headers:
            await self.app(scope, receive, send)
            return
        extra = rule.headers(result)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A copy: the application may reuse its message.
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _decide(self, scope: Scope) -> tuple[Rule, RateLimitResult] | None:
        """The first applicable rule and its limiter's decision; ``None``: not limited."""
        method = scope["method"]
        path = scope["path"]
        for rule in self._rules:
            if not rule.matches(method, path):
                continue
            key = rule.key(scope)
            if key is None:
                continue
            try:
                result = await rule.limiter.ahit(key, rule.cost)
            except StoreError:
                if not self.fail_open:
                    raise
                # The key stays out of the log: it may identify a person.
                _log.warning(
                    "rate limiter %r could not decide; request let through",
                    rule.limiter.name,
                    exc_info=True,
                )
                return None
            return rule, result
        return None

    @staticmethod
    async def _refuse(scope: Scope, send: Send, rule: Rule, result: RateLimitResult) -> None:
        retry_after = result.retry_after
        headers = [(b"content-type", b"application/problem+json")]
        if retry_after == _INF:
            detail = "This request costs more than the rate limit allows; it cannot succeed."
        else:
            wait = max(1, _seconds(retry_after))
            headers.append((b"retry-after", str(wait).encode("ascii")))
            detail = f"Rate limit exceeded; retry in {wait} second{'s' if wait != 1 else ''}."
        body = _problem(
            429,
            "Quota exceeded",
            detail,
            scope.get("path", ""),
            QUOTA_EXCEEDED,
            **{"violated-policies": rule.violated(result)},
        )
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        headers.extend(rule.headers(result))
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # ---------------------------------------------------------------------- WebSocket

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = self._exempt
        key = None if exempt is not None and exempt(scope) else self._ws_key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        limit = self._ws_limit
        with self._ws_lock:
            count = self._ws_open.get(key, 0)
            admitted = limit is None or count < limit
            if admitted:
                self._ws_open[key] = count + 1
        if not admitted:
            await self._refuse_websocket(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            # However the connection ended — closed, dropped, failed, cancelled.
            with self._ws_lock:
                count = self._ws_open[key] - 1
                if count:
                    self._ws_open[key] = count
                else:
                    del self._ws_open[key]

    @staticmethod
    async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
        # The server expects the connect event to be answered, accept or refusal.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            # The denial-response extension: a real 429 instead of the bare 403.
            body = _problem(
                429,
                "Too Many Requests",
                "Too many open WebSocket connections; close one and try again.",
                scope.get("path", ""),
                "about:blank",
            )
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode("ascii")),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
            return
        # 1008: policy violation. Before accept, servers answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": "too many connections"})

    def open_websockets(self, key: str) -> int:
        """How many WebSocket connections are open under ``key`` now (for tests and metrics)."""
        with self._ws_lock:
            return self._ws_open.get(key, 0)

    def __repr__(self) -> str:
        return (
            f"RateLimitMiddleware(app={self.app!r}, rules={list(self._rules)!r}, "
            f"max_websockets={self._ws_limit!r})"
        )
