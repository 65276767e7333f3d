"""The envelope: validation, and lossless round trips through every wire form."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress.errors import ButtressError
from buttress.messaging import Envelope, EnvelopeError
from buttress.messaging.envelope import Binding, parse_time

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WHEN = dt.datetime(2026, 11, 27, 12, 30, 45, 123456, tzinfo=dt.UTC)


def full() -> Envelope:
    return Envelope(
        source="/orders",
        type="com.example.order.placed",
        subject="order-42",
        data={"total": 12.5, "items": ["a", "b"], "note": 'naïve ☃ "q" 100%'},
        time=WHEN,
        dataschema="https://example.com/schemas/order.json",
        schemaversion="3",
        traceparent=TRACEPARENT,
        tracestate="congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        extensions={"tenant": "acme corp", "partitionkey": "p1"},
    )


def test_defaults() -> None:
    before = dt.datetime.now(dt.UTC)
    event = Envelope(source="/orders", type="placed")
    assert uuid.UUID(event.id).version == 7
    assert event.specversion == "1.0"
    assert event.datacontenttype == "application/json"
    assert before <= event.time <= dt.datetime.now(dt.UTC)
    assert event.data is None
    assert event.subject is None
    assert Envelope(source="/o", type="t").id != event.id


def test_time_is_normalised_to_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    event = Envelope(source="/o", type="t", time=dt.datetime(2026, 1, 1, 13, tzinfo=paris))
    assert event.time == dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert event.time.utcoffset() == dt.timedelta(0)


def test_frozen_and_hashable() -> None:
    event = full()
    with pytest.raises(AttributeError):
        event.source = "/x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.extensions["x"] = "y"  # type: ignore[index]
    assert hash(event) == hash(event.id)
    assert not hasattr(event, "__dict__")


@pytest.mark.parametrize(
    ("kwargs", "attribute"),
    [
        ({"source": ""}, "source"),
        ({"type": ""}, "type"),
        ({"type": 3}, "type"),
        ({"id": ""}, "id"),
        ({"subject": ""}, "subject"),
        ({"time": dt.datetime(2026, 1, 1)}, "time"),  # naive
        ({"time": "2026-01-01T00:00:00Z"}, "time"),
        ({"datacontenttype": ""}, "datacontenttype"),
        ({"data": {"x": object()}}, "data"),
        ({"data": float("nan")}, "data"),
        ({"data": "text", "datacontenttype": "text/plain"}, "data"),
        ({"traceparent": "not-a-traceparent"}, "traceparent"),
        ({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}, "traceparent"),
        ({"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "traceparent"),
        ({"tracestate": "a=b"}, "tracestate"),
        ({"extensions": {"Tenant": "x"}}, "extensions"),
        ({"extensions": {"a" * 21: "x"}}, "extensions"),
        ({"extensions": {"ten_ant": "x"}}, "extensions"),
        ({"extensions": {"subject": "x"}}, "extensions"),
        ({"extensions": {"count": 3}}, "extensions"),
    ],
)
def test_invalid_attributes_are_named(kwargs: dict[str, Any], attribute: str) -> None:
    args: dict[str, Any] = {"source": "/o", "type": "t", **kwargs}
    with pytest.raises(EnvelopeError) as caught:
        Envelope(**args)
    assert caught.value.attribute == attribute
    assert str(caught.value).startswith(f"{attribute}: ")
    assert isinstance(caught.value, ValueError | ButtressError)


def test_structured_json() -> None:
    event = full()
    doc = json.loads(event.to_json())
    assert doc == {
        "specversion": "1.0",
        "id": event.id,
        "source": "/orders",
        "type": "com.example.order.placed",
        "subject": "order-42",
        "time": "2026-11-27T12:30:45.123456Z",
        "datacontenttype": "application/json",
        "dataschema": "https://example.com/schemas/order.json",
        "schemaversion": "3",
        "traceparent": TRACEPARENT,
        "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "tenant": "acme corp",
        "partitionkey": "p1",
        "data": event.data,
    }
    assert Envelope.from_json(event.to_json()) == event
    assert Envelope.from_json(event.to_json().encode()) == event


def test_binary_data_uses_data_base64() -> None:
    event = Envelope(
        source="/o", type="t", data=b"\x00\xffraw", datacontenttype="application/octet-stream"
    )
    doc = json.loads(event.to_json())
    assert "data" not in doc
    assert doc["data_base64"] == "AP9yYXc="
    assert Envelope.from_json(event.to_json()) == event


def test_amqp_binary_mode() -> None:
    event = full()
    props, content_type, body = event.to_amqp()
    assert content_type == "application/json"
    assert props["cloudEvents_id"] == event.id
    assert props["cloudEvents_specversion"] == "1.0"
    assert props["cloudEvents_time"] == "2026-11-27T12:30:45.123456Z"
    assert props["cloudEvents_traceparent"] == TRACEPARENT
    assert props["cloudEvents_tenant"] == "acme corp"
    assert not any(k.endswith("datacontenttype") for k in props)
    assert json.loads(body) == event.data
    assert Envelope.from_amqp(props, content_type, body) == event


def test_amqp_reads_colon_prefix_and_native_timestamp() -> None:
    props = {
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": "1",
        "cloudEvents:source": "/o",
        "cloudEvents:type": "t",
        "cloudEvents:time": 1_700_000_000_123,
        "cloudEvents:count": 7,
        "cloudEvents:flag": True,
        "x-other": "ignored",
    }
    event = Envelope.from_amqp(props, None, b"")
    assert event.time == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC)
    assert event.extensions == {"count": "7", "flag": "true"}
    assert event.data is None


@pytest.mark.parametrize(
    ("binding", "prefix"), [("http", "ce-"), ("nats", "ce-"), ("kafka", "ce_")]
)
def test_headers_binary_mode(binding: Binding, prefix: str) -> None:
    event = full()
    headers, body = event.to_headers(binding=binding)
    assert headers["content-type"] == "application/json"
    assert headers[f"{prefix}id"] == event.id
    assert headers[f"{prefix}time"] == "2026-11-27T12:30:45.123456Z"
    assert headers[f"{prefix}traceparent"] == TRACEPARENT
    assert Envelope.from_headers(headers, body, binding=binding) == event
    shouted = {k.upper(): v.encode() for k, v in headers.items()}
    assert Envelope.from_headers(shouted, body, binding=binding) == event


def test_http_headers_are_percent_encoded() -> None:
    event = Envelope(source="/o", type="t", extensions={"note": 'a b"c%d\u00e9\r\n'})
    headers, _ = event.to_headers()
    assert headers["ce-note"] == "a%20b%22c%25d%C3%A9%0D%0A"
    assert Envelope.from_headers(*event.to_headers()).extensions["note"] == 'a b"c%d\u00e9\r\n'
    raw, _ = event.to_headers(binding="kafka")
    assert raw["ce_note"] == 'a b"c%d\u00e9\r\n'


def test_nats_refuses_line_breaks() -> None:
    event = Envelope(source="/o", type="t", subject="a\nb")
    with pytest.raises(EnvelopeError) as caught:
        event.to_headers(binding="nats")
    assert caught.value.attribute == "subject"


def test_headers_refuse_unknown_binding() -> None:
    with pytest.raises(EnvelopeError, match="binding"):
        full().to_headers(binding="smtp")  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="binding"):
        Envelope.from_headers({}, b"", binding="smtp")  # type: ignore[arg-type]


def test_redis_fields() -> None:
    event = full()
    fields = event.to_redis_fields()
    assert fields["ce_id"] == event.id
    assert fields["ce_datacontenttype"] == "application/json"
    assert json.loads(fields["data"]) == event.data
    assert Envelope.from_redis_fields(fields) == event
    as_redis_returns = {
        k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in fields.items()
    }
    assert Envelope.from_redis_fields(as_redis_returns) == event
    bare = Envelope(source="/o", type="t")
    assert "data" not in bare.to_redis_fields()
    assert Envelope.from_redis_fields(bare.to_redis_fields()) == bare


BASE = {"specversion": "1.0", "id": "1", "source": "/o", "type": "t"}
WITH_TIME = {**BASE, "time": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", None),
        ("[1]", None),
        (json.dumps({**WITH_TIME, "specversion": "0.3"}), "specversion"),
        (json.dumps({k: v for k, v in WITH_TIME.items() if k != "id"}), "id"),
        (json.dumps(BASE), "time"),
        (json.dumps({**BASE, "time": "yesterday"}), "time"),
        (json.dumps({**BASE, "time": "2026-02-30T00:00:00Z"}), "time"),
        (json.dumps({**WITH_TIME, "id": 1}), "id"),
        (json.dumps({**WITH_TIME, "source": None}), "source"),
        (
            json.dumps(
                {**WITH_TIME, "datacontenttype": "application/octet-stream", "data_base64": "!!"}
            ),
            "data_base64",
        ),
    ],
)
def test_unreadable_messages(text: str, problem: str | None) -> None:
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_json(text)
    assert caught.value.attribute == problem


def test_binary_body_that_is_not_json() -> None:
    headers, _ = full().to_headers()
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(headers, b"{not json")
    assert caught.value.attribute == "data"


def test_parse_time_forms() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_time("2026-01-01t01:30:00.5+01:30") == dt.datetime(
        2026, 1, 1, 0, 0, 0, 500000, tzinfo=dt.UTC
    )
    # nanoseconds from another producer: cut to microseconds
    assert parse_time("2026-01-01T00:00:00.123456789Z").microsecond == 123456


# -- properties -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
text = st.text(min_size=1, max_size=30)
envelopes = st.builds(
    Envelope,
    source=text,
    type=text,
    data=json_values,
    subject=st.none() | text,
    id=text,
    time=st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.just(dt.UTC),
    ),
    schemaversion=st.none() | text,
    traceparent=st.none() | st.just(TRACEPARENT),
    extensions=st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(
            lambda n: (
                n
                not in {
                    "id",
                    "source",
                    "type",
                    "subject",
                    "time",
                    "data",
                    "dataschema",
                    "specversion",
                    "traceparent",
                    "tracestate",
                    "schemaversion",
                    "datacontenttype",
                }
            )
        ),
        text,
        max_size=3,
    ),
)


@given(envelopes)
def test_round_trips_are_lossless(event: Envelope) -> None:
    assert Envelope.from_json(event.to_json()) == event
    assert Envelope.from_amqp(*event.to_amqp()) == event
    assert Envelope.from_headers(*event.to_headers()) == event
    headers, body = event.to_headers(binding="kafka")
    assert Envelope.from_headers(headers, body, binding="kafka") == event
    assert Envelope.from_redis_fields(event.to_redis_fields()) == event


@given(st.binary())
def test_binary_data_round_trips(data: bytes) -> None:
    event = Envelope(source="/o", type="t", data=data, datacontenttype="application/octet-stream")
    assert Envelope.from_json(event.to_json()) == event
    assert Envelope.from_headers(*event.to_headers()) == event
    assert Envelope.from_amqp(*event.to_amqp()) == event
    assert Envelope.from_redis_fields(event.to_redis_fields()) == event


# -- rows the outbox wrote: read without re-checking -----------------------------------

_stored_cases = [
    Envelope(source="/shop", type="order.paid", subject="o-1", data={"n": 1, "x": [1.5, None]}),
    Envelope(
        source="/s",
        type="t",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="a=b",
        extensions={"tenant": "x1"},
        schemaversion="2",
        dataschema="https://example.com/s.json",
    ),
    Envelope(source="/s", type="t", data=b"\x00\x01", datacontenttype="application/octet-stream"),
    Envelope(
        source="/s",
        type="t",
        data="text",
        time=dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=3))),
    ),
    Envelope(source="/s", type="t", data=0, datacontenttype="application/cloudevents+json"),
]


@pytest.mark.parametrize("event", _stored_cases, ids=range(len(_stored_cases)))
def test_a_stored_row_reads_as_from_json_does(event: Envelope) -> None:
    text = event.to_json()
    fast, checked = Envelope._from_stored(text), Envelope.from_json(text)
    assert fast == checked == event
    assert repr(fast) == repr(checked)
    assert fast.attributes() == checked.attributes()
    assert fast.body() == checked.body()
    assert fast.to_json() == text
    assert dict(fast.extensions) == dict(event.extensions)


@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    subject=st.none() | st.text(min_size=1, max_size=10),
)
def test_any_stored_event_round_trips(data: Any, subject: str | None) -> None:
    event = Envelope(source="/s", type="t", data=data, subject=subject)
    assert Envelope._from_stored(event.to_json()).to_json() == event.to_json()


@pytest.mark.parametrize(
    "edit",
    [
        lambda v: v.update(specversion="0.3"),
        lambda v: v.pop("id"),
        lambda v: v.update(id=""),
        lambda v: v.update(type=7),
        lambda v: v.update(time="2020-01-01T00:00:00+02:00"),
        lambda v: v.update(time="yesterday Z"),
        lambda v: v.update(time="2020-01-01T00:00:00+02:00Z"),
        lambda v: v.update(time="2020-01-01T00:00:00.000Z"),
        lambda v: v.update(Tenant="x"),
        lambda v: v.update(tenant=1.5),
        lambda v: v.update(extensions="x"),
        lambda v: v.update(subject=""),
    ],
)
def test_a_row_edited_by_hand_gets_from_jsons_checks(edit: Any) -> None:
    value = _stored_cases[0].to_dict()
    edit(value)
    text = json.dumps(value)
    try:
        expected: object = Envelope.from_json(text)
    except EnvelopeError as exc:
        with pytest.raises(EnvelopeError, match=str(exc.attribute or "")):
            Envelope._from_stored(text)
    else:
        assert Envelope._from_stored(text) == expected


def test_a_row_that_is_not_json_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="not JSON"):
        Envelope._from_stored("{oops")
    with pytest.raises(EnvelopeError):
        Envelope._from_stored("[1, 2]")
