"""Standard Webhooks signatures: secrets, signing and verification.

A signed webhook carries three headers:

- ``webhook-id``: the message id, the same on every retry of one message;
- ``webhook-timestamp``: when it was sent, integer Unix seconds;
- ``webhook-signature``: one or more space-separated ``v1,<base64>`` entries, each
  the HMAC-SHA256 of ``"<id>.<timestamp>.<body>"`` under one secret.

A secret is written ``whsec_<base64 of the key>``. Several secrets at once make
rotation possible: the sender signs with the old and the new secret for a while, and
a receiver that knows either accepts the message. The receiver refuses a timestamp
more than ``tolerance`` seconds away from its clock *in either direction*, which
bounds how long a captured message can be replayed, and compares signatures in
constant time.

The scheme is the one of the ``standardwebhooks`` reference libraries: what
:class:`Signer` signs, they verify, and the reverse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets as _secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from buttress.clock import MONOTONIC, Clock
from buttress.errors import ButtressError, ConfigError

__all__ = [
    "DEFAULT_TOLERANCE",
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "HeaderError",
    "Secret",
    "SecretsLike",
    "SignatureError",
    "SignedHeaders",
    "Signer",
    "TimestampError",
    "Verifier",
    "WebhookVerificationError",
    "sign",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
DEFAULT_TOLERANCE = 300.0
"""Seconds a timestamp may be away from the receiver's clock (5 minutes)."""

_PREFIX = "whsec_"
_MIN_KEY = 16
_MAX_KEY = 1024
_MAX_ID = 256
_MAX_SIGNATURES = 32
_MAX_SIGNATURE_HEADER = 8192
_DIGEST_SIZE = 32
# Header-safe: visible ASCII, no spaces (a webhook-id is a header value).
_ID_RE = re.compile(r"[\x21-\x7e]{1,256}")
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")


class WebhookVerificationError(ButtressError):
    """An inbound webhook failed verification; nothing in it may be trusted."""


class HeaderError(WebhookVerificationError):
    """A signature header is missing, repeated or malformed (answer 400)."""


class SignatureError(WebhookVerificationError):
    """No signature in the message matches any known secret (answer 401)."""


class TimestampError(WebhookVerificationError):
    """The message's timestamp is too old or too far in the future (answer 400).

    ``timestamp`` is the message's, ``now`` the receiver's clock, both in Unix
    seconds.
    """

    def __init__(self, message: str, *, timestamp: int, now: float) -> None:
        self.timestamp = timestamp
        self.now = now
        super().__init__(message)


class Secret:
    """One HMAC key for webhook signatures.

    Build it from its text form with :meth:`parse` (``whsec_`` + base64), from raw
    key bytes with ``Secret(key)``, or make a new one with :meth:`generate`. The
    repr never shows the key; :meth:`export` returns the ``whsec_`` text to hand to
    a subscriber.

    Args:
        key: the raw key, 16 to 1024 bytes.

    Raises:
        ConfigError: the key is too short or too long.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise ConfigError(f"a secret key is bytes, not {type(key).__name__}")
        if not _MIN_KEY <= len(key) <= _MAX_KEY:
            raise ConfigError(
                f"a webhook secret key must be {_MIN_KEY} to {_MAX_KEY} bytes long, "
                f"got {len(key)} (Secret.generate() makes a 32-byte one)"
            )
        self._key = bytes(key)

    @classmethod
    def parse(cls, text: str) -> Secret:
        """Read a secret in its ``whsec_<base64>`` text form.

        Raises:
            ConfigError: the prefix is missing (for a bare base64 key use
                :meth:`from_base64`) or the rest is not base64.
        """
        if not isinstance(text, str):
            raise ConfigError(f"a webhook secret's text is a str, not {type(text).__name__}")
        if not text.startswith(_PREFIX):
            raise ConfigError(
                "a webhook secret's text starts with 'whsec_' (its base64 key follows); "
                "for a bare base64 key use Secret.from_base64(), for raw bytes Secret(key)"
            )
        return cls.from_base64(text[len(_PREFIX) :])

    @classmethod
    def from_base64(cls, text: str) -> Secret:
        """Read a secret from the base64 of its key, without the ``whsec_`` prefix.

        Raises:
            ConfigError: the text is not valid base64.
        """
        try:
            text = text.strip()
            # The reference libraries accept unpadded base64: so do we.
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"a webhook secret's key is not valid base64: {exc}") from None
        return cls(key)

    @classmethod
    def generate(cls, size: int = 32) -> Secret:
        """A new random secret of ``size`` bytes (24 to 64, as the scheme recommends)."""
        if not isinstance(size, int) or isinstance(size, bool) or not 24 <= size <= 64:
            raise ConfigError(f"a generated secret has 24 to 64 bytes, not {size!r}")
        return cls(_secrets.token_bytes(size))

    @property
    def key(self) -> bytes:
        """The raw HMAC key."""
        return self._key

    def export(self) -> str:
        """The secret's text form, ``whsec_<base64>``, to store or hand out."""
        return _PREFIX + base64.b64encode(self._key).decode("ascii")

    def fingerprint(self) -> str:
        """A short, non-secret name for the key (for logs): 8 hex digits of its hash."""
        return hashlib.sha256(b"buttress-webhook-secret:" + self._key).hexdigest()[:8]

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> bytes:
        """The raw HMAC-SHA256 of ``"<msg_id>.<timestamp>.<body>"`` under this key."""
        mac = hmac.new(self._key, f"{msg_id}.{timestamp}.".encode(), hashlib.sha256)
        mac.update(body)
        return mac.digest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return f"Secret(<{len(self._key)} bytes, fingerprint {self.fingerprint()}>)"


SecretsLike: TypeAlias = Secret | str | bytes | Sequence[Secret | str | bytes]
"""One secret or several: a :class:`Secret`, its ``whsec_`` text, or raw key bytes."""


def _secrets_of(value: SecretsLike, *, what: str = "secrets") -> tuple[Secret, ...]:
    items: Iterable[object]
    if isinstance(value, Secret | str | bytes | bytearray):
        items = (value,)
    elif isinstance(value, Sequence):
        items = value
    else:
        raise ConfigError(
            f"{what} is a Secret, a 'whsec_...' string, key bytes or a sequence of them, "
            f"not {type(value).__name__}"
        )
    out: list[Secret] = []
    for item in items:
        if isinstance(item, Secret):
            out.append(item)
        elif isinstance(item, str):
            out.append(Secret.parse(item))
        elif isinstance(item, bytes | bytearray):
            out.append(Secret(bytes(item)))
        else:
            raise ConfigError(
                f"each of {what} is a Secret, a 'whsec_...' string or key bytes, "
                f"not {type(item).__name__}"
            )
    if not out:
        raise ConfigError(f"{what} is empty: give at least one secret")
    return tuple(dict.fromkeys(out))


def _check_id(msg_id: object) -> str:
    if not isinstance(msg_id, str) or _ID_RE.fullmatch(msg_id) is None:
        raise ValueError(
            f"a webhook id is 1 to {_MAX_ID} visible ASCII characters without spaces, "
            f"got {msg_id!r}"
        )
    return msg_id


def _check_timestamp(timestamp: object) -> int:
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        raise ValueError(f"a webhook timestamp is a non-negative int, got {timestamp!r}")
    return timestamp


def _check_body(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"a webhook body is bytes, not {type(body).__name__} (encode it first)")


def sign(secret_or_secrets: SecretsLike, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message.

    One ``v1,<base64>`` entry per secret, separated by spaces.

    Args:
        secret_or_secrets: the secret(s) to sign with (several during a rotation).
        msg_id: the ``webhook-id``.
        timestamp: the ``webhook-timestamp``, Unix seconds.
        body: the exact bytes sent as the request body.

    Raises:
        ConfigError: a secret is invalid.
        ValueError: the id or the timestamp cannot be sent in a header.
    """
    keys = _secrets_of(secret_or_secrets)
    return _sign(keys, _check_id(msg_id), _check_timestamp(timestamp), _check_body(body))


def _sign(keys: Sequence[Secret], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(
        "v1," + base64.b64encode(key.signature(msg_id, timestamp, body)).decode("ascii")
        for key in keys
    )


class Signer:
    """Signs outgoing webhooks with one or more secrets.

    Args:
        secrets: the secret(s); during a rotation give the new and the old one.
        clock: where the timestamp comes from (:meth:`~buttress.clock.Clock.time`).

    Raises:
        ConfigError: a secret is invalid or none is given.
    """

    __slots__ = ("_clock", "_keys")

    def __init__(self, secrets: SecretsLike, *, clock: Clock = MONOTONIC) -> None:
        self._keys = _secrets_of(secrets)
        self._clock = clock

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """The secrets this signer signs with."""
        return self._keys

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value (see :func:`sign`)."""
        return _sign(self._keys, _check_id(msg_id), _check_timestamp(timestamp), _check_body(body))

    def headers(self, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """The three headers to send with ``body``.

        Args:
            msg_id: the ``webhook-id``: keep it the same across retries of a message.
            body: the exact request body.
            timestamp: Unix seconds; the clock's current time when ``None``. Sign
                each attempt anew, so a retry carries a fresh timestamp.
        """
        ts = math.floor(self._clock.time()) if timestamp is None else timestamp
        return {
            ID_HEADER: msg_id,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: self.signature(msg_id, ts, body),
        }

    def __repr__(self) -> str:
        return f"Signer({len(self._keys)} secret(s))"


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """The signature headers of one message, parsed (not yet verified).

    ``signatures`` holds the decoded ``v1`` signatures; entries of other versions
    (``v1a``, future ones) are skipped, as the scheme asks.
    """

    msg_id: str
    timestamp: int
    signatures: tuple[bytes, ...]

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> SignedHeaders:
        """Read the three headers from a mapping (names in any case).

        Raises:
            HeaderError: a header is missing, empty or malformed, or there is no
                ``v1`` signature.
        """
        lowered = _lowered(headers)
        msg_id = _header(lowered, ID_HEADER)
        if _ID_RE.fullmatch(msg_id) is None:
            raise HeaderError(
                f"{ID_HEADER} must be 1 to {_MAX_ID} visible ASCII characters without spaces"
            )
        raw_ts = _header(lowered, TIMESTAMP_HEADER)
        if _TIMESTAMP_RE.fullmatch(raw_ts) is None:
            raise HeaderError(
                f"{TIMESTAMP_HEADER} must be integer Unix seconds (digits only), "
                f"got {raw_ts[:40]!r}"
            )
        timestamp = int(raw_ts)
        return cls(msg_id, timestamp, _parse_signatures(_header(lowered, SIGNATURE_HEADER)))


_NAMES = frozenset({ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER})


def _lowered(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` readable by lower-case name; one of ours given twice is refused.

    A mapping may hold a name twice (Starlette's ``Headers`` does, for a header
    sent twice) or in two letter cases: for the signature headers either is an
    ambiguity an attacker could play on.
    """
    seen: set[str] = set()
    lower = True
    for name in headers.keys():  # noqa: SIM118 - keys() lists repeated names
        low = name.lower()
        if low != name:
            lower = False
        if low in _NAMES:
            if low in seen:
                raise HeaderError(f"header {low} is given twice")
            seen.add(low)
    if lower:
        return headers
    return {name.lower(): value for name, value in headers.items()}


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise HeaderError(f"header {name} is missing")
    if not isinstance(value, str):
        raise HeaderError(f"header {name} must be a str, not {type(value).__name__}")
    value = value.strip()
    if not value:
        raise HeaderError(f"header {name} is empty")
    return value


def _parse_signatures(value: str) -> tuple[bytes, ...]:
    if len(value) > _MAX_SIGNATURE_HEADER:
        raise HeaderError(f"{SIGNATURE_HEADER} is longer than {_MAX_SIGNATURE_HEADER} characters")
    entries = value.split()
    if len(entries) > _MAX_SIGNATURES:
        raise HeaderError(f"{SIGNATURE_HEADER} has more than {_MAX_SIGNATURES} entries")
    found: list[bytes] = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma or not version or not encoded:
            raise HeaderError(
                f"{SIGNATURE_HEADER} entries are '<version>,<signature>', got {entry[:40]!r}"
            )
        if version != "v1":
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise HeaderError(f"a v1 signature is not valid base64: {encoded[:40]!r}") from None
        if len(raw) != _DIGEST_SIZE:
            raise HeaderError(
                f"a v1 signature is {_DIGEST_SIZE} bytes (HMAC-SHA256), got {len(raw)}"
            )
        found.append(raw)
    if not found:
        raise HeaderError(f"{SIGNATURE_HEADER} has no v1 signature")
    return tuple(found)


class Verifier:
    """Verifies inbound webhooks against one or more secrets.

    Args:
        secrets: every secret a valid message may be signed with (several during a
            rotation).
        tolerance: seconds the message's timestamp may differ from ``clock.time()``,
            in either direction (default 5 minutes).
        clock: the receiver's clock.

    Raises:
        ConfigError: a secret is invalid or the tolerance is not a positive number.
    """

    __slots__ = ("_clock", "_keys", "_tolerance")

    def __init__(
        self,
        secrets: SecretsLike,
        tolerance: float = DEFAULT_TOLERANCE,
        *,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._keys = _secrets_of(secrets)
        if (
            not isinstance(tolerance, int | float)
            or isinstance(tolerance, bool)
            or not math.isfinite(tolerance)
            or tolerance <= 0
        ):
            raise ConfigError(f"tolerance is a positive number of seconds, not {tolerance!r}")
        self._tolerance = float(tolerance)
        self._clock = clock

    @property
    def tolerance(self) -> float:
        """Seconds a timestamp may be away from the clock, either way."""
        return self._tolerance

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check the message's headers and signature; return only if it is authentic.

        Args:
            headers: the request headers (at least the three ``webhook-*`` ones;
                names in any case).
            body: the exact request body as received.

        Raises:
            HeaderError: a header is missing or malformed.
            TimestampError: the timestamp is outside the tolerance.
            SignatureError: no signature matches any secret.
        """
        self.verify_parsed(SignedHeaders.parse(headers), _check_body(body))

    def verify_parsed(self, signed: SignedHeaders, body: bytes) -> None:
        """:meth:`verify` for headers already parsed with :meth:`SignedHeaders.parse`."""
        self.check_timestamp(signed.timestamp)
        matched = False
        for key in self._keys:
            expected = key.signature(signed.msg_id, signed.timestamp, body)
            for candidate in signed.signatures:
                # No early exit: the time taken does not depend on which one matched.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureError("no webhook signature matches a known secret")

    def check_timestamp(self, timestamp: int) -> None:
        """Check only the timestamp (Unix seconds) against the clock and the tolerance.

        Raises:
            TimestampError: it is more than the tolerance away, either way.
        """
        now = self._clock.time()
        skew = timestamp - now
        if skew < -self._tolerance:
            raise TimestampError(
                f"{TIMESTAMP_HEADER} is {-skew:.0f}s old, more than the "
                f"{self._tolerance:g}s tolerated",
                timestamp=timestamp,
                now=now,
            )
        if skew > self._tolerance:
            raise TimestampError(
                f"{TIMESTAMP_HEADER} is {skew:.0f}s in the future, more than the "
                f"{self._tolerance:g}s tolerated",
                timestamp=timestamp,
                now=now,
            )

    def __repr__(self) -> str:
        return f"Verifier({len(self._keys)} secret(s), tolerance={self._tolerance:g}s)"
