"""The NATS broker's options are checked when it is built, without connecting."""

from __future__ import annotations

from typing import Any

import pytest

from buttress.errors import ConfigError
from buttress.messaging import Envelope
from buttress.messaging.brokers.nats import NatsPublisher

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
