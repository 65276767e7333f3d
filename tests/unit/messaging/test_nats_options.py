"""The NATS broker's options are checked when it is built, without connecting."""

from __future__ import annotations

from typing import Any

import pytest

from buttress.errors import ConfigError
from buttress.messaging import Envelope
from buttress.messaging.brokers.nats import NatsDeadLetters, NatsPublisher, NatsSource

URL = "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"url": "redis://127.0.0.1:6379"}, "url"),
        ({"url": "127.0.0.1:4222"}, "url"),
        ({"url": "nats://127.0.0.1:notaport"}, "url"),
        ({"url": 4222}, "url"),
        ({"subject": "has space"}, "subject"),
        ({"subject": "a..b"}, "subject"),
        ({"subject": "orders.*"}, "subject"),
        ({"subject": 42}, "subject"),
        ({"subject_prefix": ""}, "subject_prefix"),
        ({"subject_prefix": "events.>"}, "subject_prefix"),
        ({"stream": "has.dot"}, "stream"),
        ({"stream": ""}, "stream"),
        ({"stream": "a b"}, "stream"),
        ({"stream_subjects": "events.>"}, "stream_subjects"),
        ({"stream_subjects": []}, "stream_subjects"),
        ({"stream_subjects": ["events.>.x"]}, "stream_subjects"),
        ({"duplicate_window": 0}, "duplicate_window"),
        ({"max_age": -1}, "max_age"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 6}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"reconnect_interval": -1}, "reconnect_interval"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_publisher_options_name_their_path(options: dict[str, Any], path: str) -> None:
    options.setdefault("url", URL)
    with pytest.raises(ConfigError) as info:
        NatsPublisher(**options)
    assert info.value.path == path


def test_good_options_are_kept() -> None:
    publisher = NatsPublisher(
        "tls://nats.example:4222",
        stream="ORDERS",
        subject_prefix="shop.events",
        duplicate_window=30,
        max_age=86400,
        replicas=3,
        timeout=2.5,
    )
    assert publisher.stream_subjects == ("shop.events.>",)
    assert publisher.duplicate_window == 30.0
    assert publisher.max_age == 86400.0
    assert publisher.replicas == 3
    assert publisher.timeout == 2.5
    assert "ORDERS" in repr(publisher)


def test_default_subject_is_prefix_and_type() -> None:
    publisher = NatsPublisher(URL, subject_prefix="shop")
    event = Envelope(source="/s", type="com.example.order.placed")
    assert publisher._subject_of(event) == "shop.com.example.order.placed"
    bad = Envelope(source="/s", type="order placed")
    with pytest.raises(ConfigError) as info:
        publisher._subject_of(bad)
    assert info.value.path == "subject"


def test_a_computed_subject_is_checked() -> None:
    publisher = NatsPublisher(URL, subject=lambda e: f"orders.{e.subject}")
    assert publisher._subject_of(Envelope(source="/s", type="t", subject="k1")) == "orders.k1"
    with pytest.raises(ConfigError):
        publisher._subject_of(Envelope(source="/s", type="t", subject="k 1"))
    odd = NatsPublisher(URL, subject=lambda e: ["not", "a", "subject"])  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError) as info:
        odd._subject_of(Envelope(source="/s", type="t"))
    assert info.value.path == "subject"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"url": "amqp://127.0.0.1"}, "url"),
        ({"stream": "a.b"}, "stream"),
        ({"durable": "has space"}, "durable"),
        ({"durable": ""}, "durable"),
        ({"filter_subject": "a..b"}, "filter_subject"),
        ({"dead_letter_stream": "ORDERS"}, "dead_letter_stream"),
        ({"dead_letter_stream": "x>y"}, "dead_letter_stream"),
        ({"dead_letter_subject": "dlq.*"}, "dead_letter_subject"),
        ({"poison_subject": "dlq.ORDERS.dead"}, "poison_subject"),
        ({"ack_wait": 0}, "ack_wait"),
        ({"max_ack_pending": 0}, "max_ack_pending"),
        ({"timeout": -1}, "timeout"),
        ({"reconnect_interval": 0}, "reconnect_interval"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_source_options_name_their_path(options: dict[str, Any], path: str) -> None:
    options.setdefault("url", URL)
    options.setdefault("stream", "ORDERS")
    options.setdefault("durable", "workers")
    with pytest.raises(ConfigError) as info:
        NatsSource(**options)
    assert info.value.path == path


def test_source_defaults_name_the_dead_letter_stream_and_subjects() -> None:
    source = NatsSource(URL, stream="ORDERS", durable="workers", filter_subject="events.>")
    assert source.dead_letter_stream == "ORDERS_DLQ"
    assert source.dead_letter_subject == "dlq.ORDERS.dead"
    assert source.poison_subject == "dlq.ORDERS.poison"
    assert source.filter_subject == "events.>"
    dead, poison = source.dead_letters(), source.dead_letters(poison=True)
    assert (dead.stream, dead.subject) == ("ORDERS_DLQ", "dlq.ORDERS.dead")
    assert (poison.stream, poison.subject) == ("ORDERS_DLQ", "dlq.ORDERS.poison")
    assert "workers" in repr(source)
    assert "dlq.ORDERS.poison" in repr(poison)


async def test_bad_receive_arguments_are_refused_before_any_io() -> None:
    source = NatsSource(URL, stream="ORDERS", durable="workers")
    with pytest.raises(ConfigError) as info:
        await source.receive(0, 1.0)
    assert info.value.path == "max_messages"
    with pytest.raises(ConfigError) as info:
        await source.receive(1, -1)
    assert info.value.path == "timeout"


async def test_dead_letter_ids_that_cannot_exist_are_answered_without_io() -> None:
    queue = NatsDeadLetters(URL, stream="ORDERS_DLQ", subject="dlq.ORDERS.dead")
    assert await queue.get("not-a-number") is None
    assert await queue.get("0") is None
    with pytest.raises(ConfigError) as info:
        await queue.list(limit=0)
    assert info.value.path == "limit"
    with pytest.raises(ConfigError) as info:
        await queue.list(after="-3")
    assert info.value.path == "after"
