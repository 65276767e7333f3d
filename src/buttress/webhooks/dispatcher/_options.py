"""What the dispatcher delivers to: endpoints, and the retry schedule between attempts.

Both are frozen and validated on construction: a bad URL, secret, filter or delay
fails with a :class:`~buttress.errors.ConfigError` naming the option, at start-up
rather than at the first delivery.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal, cast
from urllib.parse import urlsplit

from buttress.errors import ConfigError
from buttress.webhooks.signing import Secret, SecretsLike, _secrets_of

if TYPE_CHECKING:
    from buttress.webhooks.dispatcher._engine import Exhausted

__all__ = ["DEFAULT_DELAYS", "Endpoint", "Ordering", "RetrySchedule"]

Ordering = Literal["none", "endpoint", "key"]
"""Delivery order to one endpoint: ``"none"`` (in parallel), ``"endpoint"`` (one message
at a time, in send order) or ``"key"`` (in send order per message ``key``)."""

DEFAULT_DELAYS: Final = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over ~27.6 h."""

_ENDPOINT_ID: Final = re.compile(r"[A-Za-z0-9._:~-]{1,128}")
_EVENT_FILTER: Final = re.compile(r"[A-Za-z0-9._:/*-]{1,256}")
# Headers the dispatcher sets itself: an endpoint's custom headers may not replace them.
_RESERVED_HEADERS: Final = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
     "host", "transfer-encoding", "connection"}
)  # fmt: skip
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")


def _seconds(value: object, path: str, *, zero: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number of seconds or a timedelta, got {value!r}", path=path)
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"must be {bound} and finite, got {value!r}", path=path)
    return float(value)


def _filter_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # "*" matches any run of characters (dots included): "invoice.*" matches
    # "invoice.paid" and "invoice.line.added"; "*" matches everything.
    parts = ("".join(".*" if c == "*" else re.escape(c) for c in p) for p in patterns)
    return re.compile("|".join(f"(?:{p})" for p in parts))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One subscriber: where its webhooks go and how hard the dispatcher may push it.

    Args:
        id: Its stable id (1 to 128 letters, digits or ``._:~-``): deliveries are
            stored under it, so keep it when the URL changes.
        url: An ``http://`` or ``https://`` URL. The SSRF guard vets the address it
            resolves to at every connection.
        secrets: The signing secret(s) (``whsec_...``); several during a rotation.
        event_types: Filters on the message type; ``*`` matches any characters
            (``"invoice.*"``, ``"*"``). A message goes to every enabled endpoint with a
            matching filter.
        enabled: ``False`` stops new messages from fanning out to it, and its
            pending deliveries are dead-lettered when they fall due (replay them
            once it is enabled again).
        headers: Extra request headers (not the ``webhook-*`` ones, ``Host`` or
            ``Content-*``).
        rate_limit: The most requests per second sent to it (a token bucket, with a
            burst of one second's worth); ``None``: no limit.
        max_concurrency: The most requests in flight to it at once (a bulkhead).
        timeout: Seconds allowed for one request, from connecting to the end of the
            response headers.
        ordering: ``"none"``, ``"endpoint"`` or ``"key"`` (see :data:`Ordering`).
            Ordered: message n+1 is sent only once n was delivered or dead-lettered.
        on_exhausted: Called once with an :class:`Exhausted` when a delivery to this
            endpoint is dead-lettered (the compensation step of a saga); may be a
            coroutine function. Its errors are logged, not retried.

    Raises:
        ConfigError: an option is invalid; ``path`` names it.
    """

    id: str
    url: str
    secrets: SecretsLike
    event_types: Sequence[str] = ("*",)
    enabled: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit: float | None = None
    max_concurrency: int = 16
    timeout: float | timedelta = 15.0
    ordering: Ordering = "none"
    on_exhausted: Callable[[Exhausted], Awaitable[None] | None] | None = None
    _filter: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ENDPOINT_ID.fullmatch(self.id):
            raise ConfigError(
                f"must be 1 to 128 letters, digits or '._:~-', got {self.id!r}", path="id"
            )
        self._check_url()
        secrets: tuple[Secret, ...] = _secrets_of(self.secrets)
        object.__setattr__(self, "secrets", secrets)
        types = (self.event_types,) if isinstance(self.event_types, str) else self.event_types
        if not isinstance(types, Sequence) or not types:
            raise ConfigError("must be a non-empty sequence of filters", path="event_types")
        for pattern in types:
            if not isinstance(pattern, str) or not _EVENT_FILTER.fullmatch(pattern):
                raise ConfigError(
                    f"a filter is 1 to 256 of letters, digits, '._:/-' and '*', got {pattern!r}",
                    path="event_types",
                )
        object.__setattr__(self, "event_types", tuple(types))
        object.__setattr__(self, "_filter", _filter_regex(tuple(types)))
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"must be a bool, got {self.enabled!r}", path="enabled")
        self._check_headers()
        if self.rate_limit is not None:
            object.__setattr__(self, "rate_limit", _seconds(self.rate_limit, "rate_limit"))
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ConfigError(
                f"must be an integer >= 1, got {self.max_concurrency!r}", path="max_concurrency"
            )
        object.__setattr__(self, "timeout", _seconds(self.timeout, "timeout"))
        if self.ordering not in ("none", "endpoint", "key"):
            raise ConfigError(
                f"must be 'none', 'endpoint' or 'key', got {self.ordering!r}", path="ordering"
            )
        if self.on_exhausted is not None and not callable(self.on_exhausted):
            raise ConfigError(f"must be callable, got {self.on_exhausted!r}", path="on_exhausted")

    def _check_url(self) -> None:
        if not isinstance(self.url, str):
            raise ConfigError(f"must be a string, got {self.url!r}", path="url")
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"not a valid URL: {exc}", path="url") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"must be an http(s) URL with a host, got {self.url!r}", path="url")
        if parts.username is not None or parts.password is not None:
            raise ConfigError("must not carry credentials (user:password@)", path="url")
        if port == 0:
            raise ConfigError("port 0 is not a port", path="url")

    def _check_headers(self) -> None:
        if not isinstance(self.headers, Mapping):
            raise ConfigError(f"must be a mapping, got {self.headers!r}", path="headers")
        for name, value in self.headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ConfigError(f"not a valid header name: {name!r}", path="headers")
            if name.lower() in _RESERVED_HEADERS:
                raise ConfigError(f"{name!r} is set by the dispatcher", path="headers")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ConfigError(f"bad value for header {name!r}: {value!r}", path="headers")
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def matches(self, event_type: str) -> bool:
        """Whether a message of ``event_type`` goes to this endpoint (if enabled)."""
        return self._filter.fullmatch(event_type) is not None

    def order_key(self, key: str | None) -> str | None:
        """The ordering key stored with a delivery of a message with ``key``."""
        if self.ordering == "endpoint":
            return self.id
        if self.ordering == "key" and key is not None:
            return f"{self.id}\x1f{key}"
        return None


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """When the attempts of one delivery are made.

    Args:
        delays: Seconds to wait before each attempt: ``delays[0]`` before the first
            (after the message is sent), ``delays[n]`` between the n-th failure and
            attempt n+1. Its length is the number of attempts. Default:
            :data:`DEFAULT_DELAYS`.
        jitter: Each wait is spread uniformly over ``±jitter`` of itself (0 to < 1),
            so deliveries that failed together do not retry together.
        max_retry_after: The longest ``Retry-After`` honoured, in seconds; a
            receiver asking for more waits this long.

    A ``Retry-After`` answer delays the next attempt to at least that many seconds.
    """

    delays: Sequence[float | timedelta] = DEFAULT_DELAYS
    jitter: float = 0.2
    max_retry_after: float | timedelta = 86400.0

    def __post_init__(self) -> None:
        delays_in: object = self.delays
        if isinstance(delays_in, str) or not isinstance(delays_in, Sequence) or not delays_in:
            raise ConfigError("must be a non-empty sequence of seconds", path="delays")
        delays = tuple(_seconds(d, f"delays[{i}]", zero=True) for i, d in enumerate(self.delays))
        object.__setattr__(self, "delays", delays)
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter < 1
        ):
            raise ConfigError(f"must be in [0, 1), got {self.jitter!r}", path="jitter")
        object.__setattr__(
            self, "max_retry_after", _seconds(self.max_retry_after, "max_retry_after")
        )

    @property
    def retry_after_cap(self) -> float:
        """``max_retry_after`` in seconds."""
        return cast(float, self.max_retry_after)

    @property
    def max_attempts(self) -> int:
        """How many attempts a delivery gets before it is dead-lettered."""
        return len(self.delays)

    def wait(self, failures: int, random: Callable[[], float]) -> float | None:
        """Seconds to wait after the ``failures``-th failed attempt; ``None``: no more."""
        if failures >= len(self.delays):
            return None
        base: float = self.delays[failures]  # type: ignore[assignment]
        return base * (1.0 - self.jitter + 2.0 * self.jitter * random())
