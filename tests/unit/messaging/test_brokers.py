"""The Publisher protocol, its errors, and RabbitMQPublisher's options and messages."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import aio_pika
import pytest

from buttress.errors import ButtressError, ConfigError, is_transient
from buttress.messaging import Envelope
from buttress.messaging.brokers import (
    BrokerUnavailable,
    Publisher,
    PublishError,
    PublishRefused,
)
from buttress.messaging.brokers.rabbitmq import RabbitMQPublisher

URL = "amqp://guest:guest@127.0.0.1:5672/"


def test_errors_name_the_unconfirmed_ids_and_say_whether_transient() -> None:
    ids = [f"id-{i}" for i in range(7)]
    outage = BrokerUnavailable("lost", ids, causes={"id-0": ConnectionResetError()})
    assert isinstance(outage, PublishError)
    assert isinstance(outage, ButtressError)
    assert outage.unconfirmed == tuple(ids)
    assert isinstance(outage.causes["id-0"], ConnectionResetError)
    assert "7 event(s) not confirmed (id-0, id-1, id-2, id-3, id-4 and 2 more)" in str(outage)
    assert is_transient(outage)
    refused = PublishRefused("unroutable", ["a"])
    assert not is_transient(refused)
    assert str(PublishRefused("closed", [])) == "closed"


def test_rabbitmq_publisher_is_a_publisher() -> None:
    assert isinstance(RabbitMQPublisher(URL, exchange="x"), Publisher)

    class Fake:
        async def publish(self, envelopes: Sequence[Envelope]) -> None: ...
        async def close(self) -> None: ...
        async def __aenter__(self) -> Fake:
            return self

        async def __aexit__(self, *exc: object) -> None: ...

    assert isinstance(Fake(), Publisher)
    assert not isinstance(object(), Publisher)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"url": "http://localhost"}, "url"),
        ({"exchange": ""}, "exchange"),
        ({"exchange_type": "x-delayed"}, "exchange_type"),
        ({"routing_key": 3}, "routing_key"),
        ({"queue": ""}, "queue"),
        ({"queue": "q", "binding_keys": "#"}, "binding_keys"),
        ({"queue": "q", "priority": 0}, "priority"),
        ({"queue": "q", "priority": 256}, "priority"),
        ({"queue": "q", "priority": True}, "priority"),
        ({"priority": 5}, "priority"),
        ({"message_priority": 5}, "message_priority"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"reconnect_interval": -1}, "reconnect_interval"),
        ({"max_in_flight": 0}, "max_in_flight"),
    ],
)
def test_bad_options_raise_config_error_naming_them(kwargs: dict[str, Any], path: str) -> None:
    options: dict[str, Any] = {"url": URL, "exchange": "events", **kwargs}
    with pytest.raises(ConfigError) as info:
        RabbitMQPublisher(**options)
    assert info.value.path == path


def test_a_message_is_persistent_binary_mode_with_the_event_id() -> None:
    publisher = RabbitMQPublisher(
        URL, exchange="events", queue="q", priority=5, message_priority=lambda e: 3
    )
    event = Envelope(source="/orders", type="order.placed", subject="o-1", data={"n": 1})
    message, key = publisher._message(event)
    assert key == "order.placed"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == event.id
    assert message.priority == 3
    properties, content_type, body = event.to_amqp()
    assert message.headers == properties
    assert message.content_type == content_type
    assert message.body == body
    assert publisher.dead_letter_queue == "q.dlq"
    assert (
        RabbitMQPublisher(URL, exchange="e", queue="q", dead_letter=False).dead_letter_queue is None
    )


def test_routing_key_may_be_fixed_or_a_function() -> None:
    event = Envelope(source="/orders", type="order.placed", subject="o-1")
    fixed = RabbitMQPublisher(URL, exchange="events", routing_key="all")
    assert fixed._message(event)[1] == "all"
    by_subject = RabbitMQPublisher(URL, exchange="events", routing_key=lambda e: f"o.{e.subject}")
    assert by_subject._message(event)[1] == "o.o-1"


@pytest.mark.parametrize("bad", [-1, 256, "high", True])
async def test_bad_message_priority_is_refused_before_sending(bad: object) -> None:
    publisher = RabbitMQPublisher(URL, exchange="events", message_priority=lambda e: bad)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError) as info:
        await publisher.publish([Envelope(source="/s", type="t")])
    assert info.value.path == "message_priority"
    assert publisher._connection is None  # nothing was sent, not even a connection


async def test_bad_routing_key_is_refused_before_sending() -> None:
    publisher = RabbitMQPublisher(URL, exchange="events", routing_key=lambda e: "k" * 256)
    with pytest.raises(ConfigError) as info:
        await publisher.publish([Envelope(source="/s", type="t")])
    assert info.value.path == "routing_key"


async def test_an_empty_batch_needs_no_broker() -> None:
    publisher = RabbitMQPublisher("amqp://guest:guest@127.0.0.1:1/", exchange="events")
    await publisher.publish([])
    assert publisher._connection is None


async def test_a_closed_publisher_refuses() -> None:
    publisher = RabbitMQPublisher(URL, exchange="events")
    await publisher.close()
    with pytest.raises(PublishRefused) as info:
        await publisher.publish([Envelope(source="/s", type="t")])
    assert not is_transient(info.value)


def test_errors_survive_pickling() -> None:
    error = BrokerUnavailable("lost", ["a"], causes={"a": ConnectionResetError("rst")})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BrokerUnavailable
    assert str(copy) == str(error)
    assert copy.unconfirmed == ("a",)
    assert copy.reason == "lost"
    assert isinstance(copy.causes["a"], ConnectionResetError)
