"""RedisStreamsPublisher's options (no server needed: nothing connects)."""

from __future__ import annotations

from typing import Any

import pytest

from buttress.errors import ConfigError
from buttress.messaging import Envelope
from buttress.messaging.brokers import Publisher, PublishRefused
from buttress.messaging.brokers.redis_streams import RedisStreamsPublisher

URL = "redis://127.0.0.1:6379/0"


def test_is_a_publisher() -> None:
    assert isinstance(RedisStreamsPublisher(URL, stream="events"), Publisher)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"url": "http://localhost"}, "url"),
        ({"url": "redis://127.0.0.1:6379/x"}, "url"),
        ({"url": "redis://127.0.0.1:6379/0?nonsense=1"}, "url"),
        ({"stream": ""}, "stream"),
        ({"stream": 3}, "stream"),
        ({"maxlen": 0}, "maxlen"),
        ({"maxlen": True}, "maxlen"),
        ({"maxlen": 1.5}, "maxlen"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "5"}, "timeout"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(kwargs: dict[str, Any], path: str) -> None:
    options: dict[str, Any] = {"url": URL, "stream": "events", **kwargs}
    with pytest.raises(ConfigError) as info:
        RedisStreamsPublisher(**options)
    assert info.value.path == path


def test_valkey_urls_and_no_trimming_are_accepted() -> None:
    publisher = RedisStreamsPublisher("valkey://127.0.0.1:6379/1", stream="s", maxlen=None)
    assert publisher.url == "redis://127.0.0.1:6379/1"
    assert publisher.maxlen is None


async def test_a_stream_function_returning_a_bad_name_fails_before_sending() -> None:
    # The port is never connected to: the check comes first.
    publisher = RedisStreamsPublisher("redis://127.0.0.1:1/0", stream=lambda e: "")
    with pytest.raises(ConfigError) as info:
        await publisher.publish([Envelope(source="/s", type="t")])
    assert info.value.path == "stream"
    await publisher.close()


async def test_publishing_after_close_is_refused_naming_the_events() -> None:
    publisher = RedisStreamsPublisher("redis://127.0.0.1:1/0", stream="s")
    await publisher.close()
    event = Envelope(source="/s", type="t")
    with pytest.raises(PublishRefused) as info:
        await publisher.publish([event])
    assert info.value.unconfirmed == (event.id,)
    with pytest.raises(PublishRefused):
        await publisher.connect()


async def test_an_empty_batch_sends_nothing() -> None:
    publisher = RedisStreamsPublisher("redis://127.0.0.1:1/0", stream="s")
    await publisher.publish([])  # would fail to connect if it tried
    await publisher.close()
