"""Interoperability with the ``cloudevents`` SDK, both ways, structured and binary mode."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cloudevents.core.bindings import amqp, http, kafka
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.conversion import to_binary as v1_to_binary
from cloudevents.v1.conversion import to_structured as v1_to_structured
from cloudevents.v1.http import CloudEvent as V1CloudEvent
from cloudevents.v1.http import from_http

from buttress.messaging import Envelope

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WHEN = dt.datetime(2026, 11, 27, 12, 30, 45, 123456, tzinfo=dt.UTC)


def event() -> Envelope:
    return Envelope(
        source="/orders",
        type="com.example.order.placed",
        subject="order-42",
        data={"total": 12.5, "note": 'naïve "q" 100%'},
        time=WHEN,
        dataschema="https://example.com/schemas/order.json",
        schemaversion="3",
        traceparent=TRACEPARENT,
        tracestate="rojo=00f067aa0ba902b7",
        extensions={"tenant": "acme corp"},
    )


def check_core(sdk: Any, ours: Envelope) -> None:
    assert sdk.get_id() == ours.id
    assert sdk.get_source() == ours.source
    assert sdk.get_type() == ours.type
    assert sdk.get_subject() == ours.subject
    assert sdk.get_time() == ours.time
    assert sdk.get_datacontenttype() == "application/json"
    assert sdk.get_dataschema() == ours.dataschema
    assert sdk.get_data() == ours.data
    for name in ("schemaversion", "traceparent", "tracestate", "tenant"):
        assert sdk.get_extension(name) == ours.attributes()[name]


def test_sdk_reads_structured_json() -> None:
    ours = event()
    message = http.HTTPMessage(
        headers={"content-type": "application/cloudevents+json"},
        body=ours.to_json().encode(),
    )
    check_core(http.from_http_event(message), ours)


def test_sdk_reads_http_binary_headers() -> None:
    ours = event()
    headers, body = ours.to_headers()
    check_core(http.from_http_event(http.HTTPMessage(headers=headers, body=body)), ours)


def test_sdk_reads_kafka_binary_headers() -> None:
    ours = event()
    headers, body = ours.to_headers(binding="kafka")
    message = kafka.KafkaMessage(
        headers={k: v.encode() for k, v in headers.items()}, key=ours.subject, value=body
    )
    check_core(kafka.from_binary_event(message), ours)


def test_sdk_reads_amqp_binary() -> None:
    ours = event()
    props, content_type, body = ours.to_amqp()
    message = amqp.AMQPMessage(
        properties={"content-type": content_type},
        application_properties=props,
        application_data=body,
    )
    check_core(amqp.from_binary_event(message), ours)


def test_legacy_from_http_reads_both_modes() -> None:
    ours = event()
    for headers, body in (
        ({"content-type": "application/cloudevents+json"}, ours.to_json().encode()),
        ours.to_headers(),
    ):
        sdk = from_http(headers, body)
        assert sdk["id"] == ours.id
        assert sdk["type"] == ours.type
        assert sdk["subject"] == ours.subject
        assert sdk["time"] == "2026-11-27T12:30:45.123456Z"
        assert sdk["traceparent"] == TRACEPARENT
        assert sdk.data == ours.data


def sdk_event() -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": "evt-1",
            "source": "/billing",
            "type": "com.example.invoice.sent",
            "subject": "invoice-7",
            "time": WHEN,
            "datacontenttype": "application/json",
            "schemaversion": "2",
            "traceparent": TRACEPARENT,
        },
        data={"amount": 3},
    )


def check_ours(ours: Envelope) -> None:
    assert ours.id == "evt-1"
    assert ours.source == "/billing"
    assert ours.type == "com.example.invoice.sent"
    assert ours.subject == "invoice-7"
    assert ours.time == WHEN
    assert ours.schemaversion == "2"
    assert ours.traceparent == TRACEPARENT
    assert ours.data == {"amount": 3}
    assert dict(ours.extensions) == {}


def test_we_read_sdk_structured() -> None:
    message = http.to_structured_event(sdk_event())
    check_ours(Envelope.from_json(message.body))


def test_we_read_sdk_http_binary() -> None:
    message = http.to_binary_event(sdk_event())
    check_ours(Envelope.from_headers(message.headers, message.body))


def test_we_read_sdk_kafka_binary() -> None:
    message = kafka.to_binary_event(sdk_event())
    check_ours(Envelope.from_headers(message.headers, message.value, binding="kafka"))


def test_we_read_sdk_amqp_binary() -> None:
    # The SDK sends time as an AMQP timestamp: milliseconds, so the microseconds go.
    message = amqp.to_binary_event(sdk_event())
    ours = Envelope.from_amqp(
        message.application_properties,
        message.properties["content-type"],
        message.application_data,
    )
    assert ours.time == WHEN.replace(microsecond=123000)
    assert ours.id == "evt-1"
    assert ours.data == {"amount": 3}


def test_we_read_legacy_sdk() -> None:
    legacy = V1CloudEvent(
        {
            "id": "evt-1",
            "source": "/billing",
            "type": "com.example.invoice.sent",
            "subject": "invoice-7",
            "time": "2026-11-27T12:30:45.123456Z",
            "schemaversion": "2",
            "traceparent": TRACEPARENT,
        },
        {"amount": 3},
    )
    headers, body = v1_to_structured(legacy)
    check_ours(Envelope.from_json(body))
    headers, body = v1_to_binary(legacy)
    check_ours(Envelope.from_headers(headers, body))
