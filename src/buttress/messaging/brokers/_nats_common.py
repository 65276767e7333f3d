"""What the NATS publisher, source and dead-letter queues share: names, connecting, errors.

Private: the public names are re-exported by :mod:`buttress.messaging.brokers.nats`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Final
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from buttress._validate import check_seconds
from buttress.errors import ConfigError, is_transient
from buttress.messaging.brokers import BrokerUnavailable, PublishError, PublishRefused

__all__ = [
    "DEAD_AT",
    "DEAD_DELIVERIES",
    "DEAD_KIND",
    "DEAD_MSG_ID",
    "DEAD_REASON",
    "DEAD_SEQ",
    "DEAD_STREAM",
    "DEAD_SUBJECT",
    "MSG_ID",
    "SCHEMES",
    "check_stream_name",
    "check_subject",
    "check_url",
    "connect",
    "failure_kind",
    "header_text",
    "text_headers",
    "timeout_option",
]

SCHEMES: Final = ("nats", "tls", "ws", "wss")
MSG_ID: Final = "Nats-Msg-Id"

# Headers a dead letter carries on top of the original message's own.
DEAD_REASON: Final = "Buttress-Dead-Reason"
DEAD_KIND: Final = "Buttress-Dead-Kind"  # "dead" or "poison"
DEAD_SUBJECT: Final = "Buttress-Dead-Subject"  # where it was published: replay goes there
DEAD_STREAM: Final = "Buttress-Dead-Stream"
DEAD_SEQ: Final = "Buttress-Dead-Seq"
DEAD_DELIVERIES: Final = "Buttress-Dead-Deliveries"
DEAD_AT: Final = "Buttress-Dead-At"
DEAD_MSG_ID: Final = "Buttress-Dead-Msg-Id"  # the original Nats-Msg-Id

_STREAM_NAME = re.compile(r"[^\s.*>/\\]{1,255}")
_MAX_HEADER_TEXT = 2000


def check_url(url: object, path: str = "url") -> str:
    """A ``nats://`` (``tls://``, ``ws://``, ``wss://``) URL, checked without connecting."""
    if not isinstance(url, str):
        raise ConfigError(f"must be a nats:// URL, got {url!r}", path=path)
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"must be a URL like nats://127.0.0.1:4222 (schemes: {', '.join(SCHEMES)}), "
            f"got {url!r}",
            path=path,
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ConfigError(
            f"the port must be a number from 1 to 65535, got {url!r} ({exc})", path=path
        ) from None
    if not parts.hostname:
        raise ConfigError(f"names no host, got {url!r}", path=path)
    return url


def check_subject(value: object, path: str, *, wildcards: bool = False) -> str:
    """A NATS subject: dot-separated non-empty tokens without whitespace.

    ``wildcards`` allows ``*`` tokens and a final ``>`` (stream and consumer filters);
    a subject published to has none.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty subject string, got {value!r}", path=path)
    tokens = value.split(".")
    for index, token in enumerate(tokens):
        bad = not token or any(c.isspace() for c in token)
        if token in ("*", ">"):
            bad = bad or not wildcards or (token == ">" and index != len(tokens) - 1)
        elif "*" in token or ">" in token:
            bad = True
        if bad:
            what = "tokens, '*' and a final '>'" if wildcards else "tokens, no wildcards"
            raise ConfigError(
                f"must be a NATS subject (dot-separated non-empty {what}, no spaces), "
                f"got {value!r}",
                path=path,
            )
    return value


def check_stream_name(value: object, path: str) -> str:
    """A stream or consumer name: no spaces, dots, wildcards or path separators."""
    if not isinstance(value, str) or not _STREAM_NAME.fullmatch(value):
        raise ConfigError(
            f"must be a non-empty name without spaces, '.', '*', '>', '/' or '\\', got {value!r}",
            path=path,
        )
    return value


def timeout_option(value: object, path: str = "timeout") -> float:
    """A positive, finite number of seconds."""
    return check_seconds(value, path, positive=True)


def header_text(value: str) -> str:
    """``value`` made fit for a NATS header: one line, trimmed, at most 2,000 characters."""
    text = " ".join(value.split())
    if len(text) > _MAX_HEADER_TEXT:
        text = text[: _MAX_HEADER_TEXT - 1] + "…"
    return text


async def connect(
    url: str,
    *,
    name: str,
    timeout: float,  # noqa: ASYNC109 - bounds connecting, and sizes the connect timeout
    reconnect_interval: float,
    disconnected: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect to ``url`` within ``timeout``; failing at the first error.

    Once connected, the client reconnects by itself, forever, every
    ``reconnect_interval`` seconds; what it publishes meanwhile is buffered (up to
    its pending size) and sent after the reconnection.

    Raises:
        BrokerUnavailable: the server could not be reached or refused the connection.
    """
    connecting = True
    last: list[BaseException] = []

    async def on_error(error: Exception) -> None:
        # While connecting, the client reports an error here and would then try the
        # server again and again; raising ends the attempt with that error. Later,
        # errors while reconnecting only reach this callback: keep the last one.
        last[:] = [error]
        if connecting:
            raise error

    async def on_disconnect() -> None:
        if disconnected is not None:
            await disconnected()

    client = Client()
    try:
        async with asyncio.timeout(timeout):
            await client.connect(
                url,
                name=name,
                connect_timeout=max(1, math.ceil(timeout)),
                reconnect_time_wait=reconnect_interval,  # type: ignore[arg-type]  # a float works
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
            )
    except TimeoutError:
        await _abandon(client)
        raise BrokerUnavailable(f"NATS not reachable within {timeout:g}s", ()) from None
    except Exception as exc:
        await _abandon(client)
        raise BrokerUnavailable(f"cannot connect to NATS ({exc!r})", ()) from exc
    finally:
        connecting = False
    return client


async def _abandon(client: Client) -> None:
    try:
        await client.close()
    except Exception:  # a half-open client: best effort
        pass


def failure_kind(exc: BaseException) -> type[PublishError]:
    """:class:`BrokerUnavailable` or :class:`PublishRefused`, for a driver error."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return PublishRefused
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.code or 0
        return BrokerUnavailable if code >= 500 or code == 408 else PublishRefused
    if isinstance(exc, nats.errors.MaxPayloadError | nats.errors.BadSubjectError):
        return PublishRefused
    if isinstance(exc, asyncio.TimeoutError | OSError) or is_transient(exc):
        return BrokerUnavailable
    if isinstance(exc, nats.errors.Error):
        return BrokerUnavailable
    return PublishRefused


def text_headers(headers: Mapping[str, object] | None) -> dict[str, str]:
    """A message's headers as a plain ``str`` to ``str`` dict (``{}`` for none)."""
    if not headers:
        return {}
    return {str(k): _text(v) for k, v in headers.items()}


def _text(value: object) -> str:
    text = str(value)
    # The driver parses stored headers with the email parser, which keeps bytes that
    # are not ASCII as surrogates: turn them back into the UTF-8 text they were.
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return text
