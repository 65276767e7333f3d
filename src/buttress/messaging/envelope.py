"""The event envelope: CloudEvents 1.0 attributes, and their wire forms.

:class:`Envelope` holds one event. It serialises to the CloudEvents JSON format
(structured content mode, :meth:`Envelope.to_json`) and to the binary content mode of
each protocol binding buttress publishes to: AMQP application properties
(:meth:`Envelope.to_amqp`), ``ce-`` headers for HTTP and NATS, ``ce_`` headers for
Kafka (:meth:`Envelope.to_headers` with its ``binding``), and a flat field map for
Redis Streams, which has no official binding (:meth:`Envelope.to_redis_fields`). Every
form reads back into an equal envelope; a consumer using the ``cloudevents`` SDK reads
the standard ones.

Bad attributes raise :class:`EnvelopeError`, a :class:`ValueError` naming the
attribute. It is not a :class:`~buttress.errors.ConfigError`: an envelope is data, built
and parsed while the program runs (a message off the wire that does not parse is a
poison message, not a misconfiguration), so it gets its own type to catch.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import quote, unquote

from buttress.errors import ButtressError
from buttress.messaging._uuid7 import uuid7

__all__ = ["Binding", "Envelope", "EnvelopeError", "uuid7"]

Binding = Literal["http", "nats", "kafka"]
"""A header-based CloudEvents protocol binding (see :meth:`Envelope.to_headers`)."""

SPECVERSION: Final = "1.0"
JSON: Final = "application/json"

_CORE = ("id", "source", "type", "specversion")
_OPTIONAL = (
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "schemaversion",
    "traceparent",
    "tracestate",
)
_KNOWN = frozenset((*_CORE, *_OPTIONAL, "data", "data_base64"))
_NAME = re.compile(r"[a-z0-9]{1,20}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)
# HTTP binding, 3.1.3.2: printable ASCII except space, '"' and '%' stays as it is.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_AMQP_PREFIXES = ("cloudEvents_", "cloudEvents:")


class EnvelopeError(ButtressError, ValueError):
    """An envelope attribute is missing or invalid, or a message is not an event.

    ``attribute`` names the CloudEvents attribute at fault (``None`` when the message
    as a whole does not parse).
    """

    def __init__(self, message: str, *, attribute: str | None = None) -> None:
        self.attribute = attribute
        super().__init__(f"{attribute}: {message}" if attribute else message)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_id() -> str:
    return str(uuid7())


def is_json(content_type: str) -> bool:
    """Whether a media type is JSON (``application/json``, ``text/json``, ``*+json``)."""
    media = content_type.partition(";")[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, microseconds only when there are any."""
    text = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Digits beyond microseconds (another producer's nanoseconds) are dropped:
    :class:`datetime.datetime` cannot hold them.
    """
    match = _TIME.fullmatch(text)
    if match is None:
        raise EnvelopeError(f"{text!r} is not an RFC 3339 timestamp", attribute="time")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = dt.UTC
    else:
        sign = -1 if zone[0] == "-" else 1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        value = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
    except ValueError as exc:
        raise EnvelopeError(f"{text!r}: {exc}", attribute="time") from None
    return value.astimezone(dt.UTC)


def _text(value: object, attribute: str) -> str:
    if not isinstance(value, str) or not value:
        raise EnvelopeError(f"must be a non-empty string, got {value!r}", attribute=attribute)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One event, with its CloudEvents 1.0 context attributes.

    Args:
        source: URI-reference of the producer, e.g. ``"/orders"`` or
            ``"urn:shop:orders"``. Required.
        type: The event type, e.g. ``"com.example.order.placed"``. Required.
        data: The payload. With a JSON ``datacontenttype`` (the default): any value
            :func:`json.dumps` accepts (no NaN or infinity); ``None`` means "no data".
            With another content type: ``bytes`` or ``None`` (empty ``bytes`` are
            stored as ``None``: a binary-mode message cannot tell them apart).
        subject: The aggregate id, which is the ordering key: events with the same
            subject are published in order.
        id: Unique per ``source``; a new UUIDv7 string (time-ordered) by default.
        time: When the event happened: a timezone-aware datetime, stored in UTC;
            now by default.
        datacontenttype: The media type of ``data``; ``application/json`` by default.
        dataschema: URI of the schema ``data`` adheres to.
        schemaversion: The version of the event's schema (an extension attribute).
        traceparent: W3C trace context of the operation that produced the event (the
            CloudEvents distributed-tracing extension).
        tracestate: W3C ``tracestate`` that goes with ``traceparent``.
        extensions: Further extension attributes: names of 1 to 20 lowercase letters
            or digits, string values.

    Raises:
        EnvelopeError: an attribute is missing or invalid; ``attribute`` names it.
    """

    source: str
    type: str
    data: Any = None
    subject: str | None = None
    id: str = field(default_factory=_new_id)
    time: dt.datetime = field(default_factory=_now)
    datacontenttype: str = JSON
    dataschema: str | None = None
    schemaversion: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    specversion: str = field(default=SPECVERSION, init=False)
    # ``time`` as RFC 3339, once :meth:`attributes` or a stored row gave it.
    _time_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("source", "type", "id", "datacontenttype"):
            _text(getattr(self, name), name)
        for name in ("subject", "dataschema", "schemaversion", "tracestate"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), name)
        if not isinstance(self.time, dt.datetime) or self.time.utcoffset() is None:
            raise EnvelopeError(
                f"must be a timezone-aware datetime, got {self.time!r}", attribute="time"
            )
        object.__setattr__(self, "time", self.time.astimezone(dt.UTC))
        if self.traceparent is not None:
            _check_traceparent(self.traceparent)
        if self.tracestate is not None and self.traceparent is None:
            raise EnvelopeError("given without traceparent", attribute="tracestate")
        self._check_data()
        if not isinstance(self.extensions, Mapping):
            raise EnvelopeError(
                f"must be a mapping, got {self.extensions!r}", attribute="extensions"
            )
        for name, value in self.extensions.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise EnvelopeError(
                    f"extension name {name!r} must be 1 to 20 lowercase letters or digits",
                    attribute="extensions",
                )
            if name in _KNOWN or name == "extensions":
                raise EnvelopeError(
                    f"{name!r} is a standard attribute: pass it as Envelope({name}=...)",
                    attribute="extensions",
                )
            if not isinstance(value, str):
                raise EnvelopeError(
                    f"value of {name!r} must be a string, got {value!r}",
                    attribute="extensions",
                )
        object.__setattr__(self, "extensions", MappingProxyType(dict(self.extensions)))

    def _check_data(self) -> None:
        if self.data == b"":  # binary content mode cannot tell it from "no data"
            object.__setattr__(self, "data", None)
        if self.data is None:
            return
        if is_json(self.datacontenttype):
            try:
                json.dumps(self.data, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise EnvelopeError(f"is not JSON-serialisable ({exc})", attribute="data") from None
        elif not isinstance(self.data, bytes):
            raise EnvelopeError(
                f"must be bytes for datacontenttype {self.datacontenttype!r}, "
                f"got {type(self.data).__name__}",
                attribute="data",
            )

    def __hash__(self) -> int:
        return hash(self.id)

    # -- attributes ---------------------------------------------------------------

    def attributes(self) -> dict[str, str]:
        """Every context attribute that is set, by CloudEvents name, as a string.

        ``time`` is RFC 3339 in UTC; extensions are included.
        """
        out = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                if name == "time":
                    value = self._time_text
                    if value is None:
                        value = format_time(self.time)
                        object.__setattr__(self, "_time_text", value)
                out[name] = value
        out.update(self.extensions)
        return out

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str], data: Any = None) -> Envelope:
        """Build an envelope from CloudEvents attributes as :meth:`attributes` gives them.

        Raises:
            EnvelopeError: ``specversion`` is not ``1.0``, or an attribute is invalid.
        """
        attrs = dict(attributes)
        version = attrs.pop("specversion", None)
        if version != SPECVERSION:
            raise EnvelopeError(f"must be '1.0', got {version!r}", attribute="specversion")
        for name in ("id", "source", "type"):
            if name not in attrs:
                raise EnvelopeError("is required", attribute=name)
        kwargs: dict[str, Any] = {}
        for name in (*_CORE, *_OPTIONAL):
            if name in attrs:
                kwargs[name] = attrs.pop(name)
        if "time" in kwargs:
            kwargs["time"] = (
                _text(kwargs["time"], "time")
                if not isinstance(kwargs["time"], dt.datetime)
                else kwargs["time"]
            )
            if isinstance(kwargs["time"], str):
                kwargs["time"] = parse_time(kwargs["time"])
        else:
            raise EnvelopeError("is required by buttress (the event's time)", attribute="time")
        return cls(**kwargs, data=data, extensions=attrs)

    # -- body ---------------------------------------------------------------------

    def body(self) -> bytes:
        """``data`` as the bytes of a binary-mode message body (empty for no data)."""
        if self.data is None:
            return b""
        if is_json(self.datacontenttype):
            return json.dumps(
                self.data, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode()
        return bytes(self.data)

    @staticmethod
    def _data_of(body: bytes, content_type: str) -> Any:
        if not body:
            return None
        if is_json(content_type):
            try:
                return json.loads(body)
            except ValueError as exc:
                raise EnvelopeError(f"body is not JSON ({exc})", attribute="data") from None
        return bytes(body)

    # -- structured mode ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The event in the CloudEvents JSON format, as a dict ready for ``json.dumps``."""
        out: dict[str, Any] = self.attributes()
        if self.data is not None:
            if is_json(self.datacontenttype):
                out["data"] = self.data
            else:
                out["data_base64"] = base64.b64encode(self.data).decode("ascii")
        return out

    def to_json(self) -> str:
        """The event in the CloudEvents JSON format (structured content mode).

        Send it with the media type ``application/cloudevents+json``.
        """
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Envelope:
        """Read an event in the CloudEvents JSON format, already decoded.

        Extension values that are JSON numbers or booleans are kept in their
        CloudEvents canonical string form (``1``, ``true``).
        """
        if not isinstance(value, Mapping):
            raise EnvelopeError(f"a structured event is a JSON object, got {value!r}")
        attrs: dict[str, str] = {}
        for name, item in value.items():
            if name not in ("data", "data_base64"):
                attrs[name] = item if name in _KNOWN else _canonical(item)
        attrs.setdefault("datacontenttype", JSON)
        if "data_base64" in value:
            try:
                data: Any = base64.b64decode(value["data_base64"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise EnvelopeError(f"not base64 ({exc})", attribute="data_base64") from None
        else:
            data = value.get("data")
            if isinstance(data, str) and not is_json(attrs["datacontenttype"]):
                data = data.encode()
        return cls.from_attributes(attrs, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Read an event in the CloudEvents JSON format (structured content mode).

        Raises:
            EnvelopeError: the text is not JSON, or not a valid CloudEvent.
        """
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise EnvelopeError(f"not JSON ({exc})") from None
        return cls.from_dict(value)

    @classmethod
    def _from_stored(cls, text: str | bytes) -> Envelope:
        """Read an event that buttress serialised itself with :meth:`to_json`.

        For the relay, which reads the outbox's rows: each was a valid envelope
        when :meth:`Outbox.add <buttress.messaging.Outbox.add>` wrote it, so it is
        parsed without checking every attribute again (about a third of the cost of
        :meth:`from_json`). Anything unexpected — a row edited by hand, another
        writer's JSON — goes through :meth:`from_json`, and its checks.
        """
        try:
            value = json.loads(text)
            if value.get("specversion") != SPECVERSION or "data_base64" in value:
                return cls.from_json(text)
            event = object.__new__(cls)
            put = object.__setattr__
            put(event, "specversion", SPECVERSION)
            for name in ("id", "source", "type"):
                item = value[name]
                if type(item) is not str or not item:
                    return cls.from_json(text)
                put(event, name, item)
            extensions: dict[str, str] = {}
            for name, item in value.items():
                if name not in _KNOWN:
                    if type(item) is not str or name == "extensions" or not _NAME.fullmatch(name):
                        return cls.from_json(text)
                    extensions[name] = item
            stamp = value["time"]
            # format_time's shape only: "YYYY-MM-DDTHH:MM:SS[.ffffff]Z", in UTC.
            if type(stamp) is not str or len(stamp) not in (20, 27) or stamp[-1] != "Z":
                return cls.from_json(text)
            time = dt.datetime.fromisoformat(stamp[:-1])
            if time.tzinfo is not None:
                return cls.from_json(text)
            put(event, "time", time.replace(tzinfo=dt.UTC))
            put(event, "_time_text", stamp)
            content_type = value.get("datacontenttype", JSON)
            if type(content_type) is not str or not is_json(content_type):
                return cls.from_json(text)
            put(event, "datacontenttype", content_type)
            for name in ("subject", "dataschema", "schemaversion", "traceparent", "tracestate"):
                item = value.get(name)
                if item is not None and (type(item) is not str or not item):
                    return cls.from_json(text)
                put(event, name, item)
            put(event, "data", value.get("data"))
            put(event, "extensions", MappingProxyType(extensions))
        except (AttributeError, KeyError, TypeError, ValueError):
            return cls.from_json(text)
        return event

    # -- binary mode: AMQP --------------------------------------------------------

    def to_amqp(self) -> tuple[dict[str, str], str, bytes]:
        """Binary content mode for AMQP (the CloudEvents AMQP binding, 3.1).

        Returns:
            ``(application_properties, content_type, body)``: every attribute but
            ``datacontenttype`` as an application property named ``cloudEvents_`` +
            the attribute name; ``datacontenttype`` as the message's content type;
            ``data`` as the body. ``time`` travels as its RFC 3339 string (which the
            binding allows), keeping microseconds an AMQP timestamp would lose.
        """
        attrs = self.attributes()
        content_type = attrs.pop("datacontenttype")
        props = {f"cloudEvents_{name}": value for name, value in attrs.items()}
        return props, content_type, self.body()

    @classmethod
    def from_amqp(
        cls, properties: Mapping[str, Any], content_type: str | None, body: bytes
    ) -> Envelope:
        """Read an AMQP binary-mode message (``cloudEvents_`` or ``cloudEvents:`` names).

        ``time`` may be an RFC 3339 string, a datetime, or an AMQP timestamp (an
        ``int`` of milliseconds since the epoch). Other application properties are
        ignored.
        """
        attrs: dict[str, Any] = {}
        for key, value in properties.items():
            for prefix in _AMQP_PREFIXES:
                if isinstance(key, str) and key.startswith(prefix):
                    name = key[len(prefix) :]
                    if name == "time" and type(value) is int:  # an AMQP timestamp
                        attrs[name] = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
                    else:
                        attrs[name] = value if name in _KNOWN else _canonical(value)
        attrs["datacontenttype"] = content_type or JSON
        return cls.from_attributes(attrs, cls._data_of(body, attrs["datacontenttype"]))

    # -- binary mode: HTTP, NATS, Kafka headers -----------------------------------

    def to_headers(self, *, binding: Binding = "http") -> tuple[dict[str, str], bytes]:
        """Binary content mode as headers, for the HTTP, NATS or Kafka binding.

        Args:
            binding: ``"http"`` (the default): ``ce-`` names, values percent-encoded
                as the HTTP binding requires (space, ``"``, ``%`` and anything outside
                printable ASCII). ``"nats"``: ``ce-`` names, values as they are (a
                value with a line break cannot travel in a NATS header and raises
                :class:`EnvelopeError`). ``"kafka"``: ``ce_`` names, values as they
                are (encode them to UTF-8 bytes for the Kafka client).

        Returns:
            ``(headers, body)``: ``content-type`` carries ``datacontenttype``; each
            other attribute is a header named by the prefix + the attribute name.
        """
        prefix = _prefix(binding)
        attrs = self.attributes()
        headers = {"content-type": attrs.pop("datacontenttype")}
        for name, value in attrs.items():
            if binding == "http":
                value = quote(value, safe=_SAFE)  # noqa: PLW2901
            elif binding == "nats" and ("\r" in value or "\n" in value):
                raise EnvelopeError(
                    "contains a line break: not a NATS header value", attribute=name
                )
            headers[prefix + name] = value
        return headers, self.body()

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str | bytes], body: bytes, *, binding: Binding = "http"
    ) -> Envelope:
        """Read a binary-mode message from its headers and body (names case-insensitive).

        ``binding`` is as for :meth:`to_headers`; with ``"http"`` values are
        percent-decoded.
        """
        prefix = _prefix(binding)
        attrs: dict[str, str] = {}
        content_type = JSON
        for key, raw in headers.items():
            value = raw.decode() if isinstance(raw, bytes) else raw
            name = key.lower()
            if name.startswith(prefix):
                attrs[name[len(prefix) :]] = unquote(value) if binding == "http" else value
            elif name == "content-type":
                content_type = value
        attrs["datacontenttype"] = content_type
        return cls.from_attributes(attrs, cls._data_of(body, content_type))

    # -- Redis Streams ------------------------------------------------------------

    def to_redis_fields(self) -> dict[str, str | bytes]:
        """A flat field map for ``XADD``: ``ce_`` + each attribute name, and ``data``.

        Redis Streams has no CloudEvents binding; this follows the Kafka binding's
        ``ce_`` naming, with ``datacontenttype`` as ``ce_datacontenttype`` and the
        body under ``data`` (absent when there is no data).
        """
        fields: dict[str, str | bytes] = {f"ce_{k}": v for k, v in self.attributes().items()}
        if self.data is not None:
            fields["data"] = self.body()
        return fields

    @classmethod
    def from_redis_fields(cls, fields: Mapping[str | bytes, str | bytes]) -> Envelope:
        """Read a stream entry written by :meth:`to_redis_fields` (str or bytes keys)."""
        attrs: dict[str, str] = {}
        body = b""
        for raw_key, raw in fields.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if key == "data":
                body = raw if isinstance(raw, bytes) else raw.encode()
            elif key.startswith("ce_"):
                attrs[key[3:]] = raw.decode() if isinstance(raw, bytes) else raw
        attrs.setdefault("datacontenttype", JSON)
        return cls.from_attributes(attrs, cls._data_of(body, attrs["datacontenttype"]))


def _prefix(binding: str) -> str:
    if binding in ("http", "nats"):
        return "ce-"
    if binding == "kafka":
        return "ce_"
    raise EnvelopeError(f"binding must be 'http', 'nats' or 'kafka', got {binding!r}")


def _canonical(value: Any) -> Any:
    """A boolean or integer attribute in its CloudEvents canonical string form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


def _check_traceparent(value: str) -> None:
    match = _TRACEPARENT.fullmatch(value)
    bad = match is None
    if match is not None:
        version, trace_id, span_id, _flags, rest = match.groups()
        bad = (
            version == "ff"
            or (version == "00" and rest is not None)
            or trace_id == "0" * 32
            or span_id == "0" * 16
        )
    if bad:
        raise EnvelopeError(
            f"{value!r} is not a W3C traceparent ('00-<32 hex>-<16 hex>-<2 hex>')",
            attribute="traceparent",
        )
