"""The NATS publisher's wire encoding, PubAck matching and error classes, without a server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import pytest
from nats.protocol.command import hpub_cmd

from buttress.messaging import Envelope
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused
from buttress.messaging.brokers._nats_common import failure_kind, header_text, text_headers
from buttress.messaging.brokers._nats_publisher import NatsPublisher, _hpub, _Pending


def test_hpub_is_what_nats_py_would_write() -> None:
    headers = {"ce-id": "abc", "ce-source": "/orders", "content-type": "application/json"}
    body = b'{"n":1}'
    expected_head = (
        b"NATS/1.0\r\nce-id: abc\r\nce-source: /orders\r\ncontent-type: application/json\r\n\r\n"
    )
    assert _hpub("a.b", "_INBOX.x.1", headers, body) == hpub_cmd(
        "a.b", "_INBOX.x.1", expected_head, body
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (nats.js.errors.NoStreamResponseError(), PublishRefused),
        (nats.js.errors.APIError(code=503, description="not ready"), BrokerUnavailable),
        (nats.js.errors.APIError(code=500, description="boom"), BrokerUnavailable),
        (nats.js.errors.APIError(code=408, description="timeout"), BrokerUnavailable),
        (nats.js.errors.APIError(code=400, description="bad"), PublishRefused),
        (nats.errors.MaxPayloadError(), PublishRefused),
        (nats.errors.BadSubjectError(), PublishRefused),
        (nats.errors.ConnectionClosedError(), BrokerUnavailable),
        (nats.errors.OutboundBufferLimitError(), BrokerUnavailable),
        (ConnectionResetError(), BrokerUnavailable),
        (TimeoutError(), BrokerUnavailable),
        (ValueError("not a PubAck"), PublishRefused),
    ],
)
def test_driver_errors_map_to_transient_or_permanent(error: BaseException, kind: type) -> None:
    assert failure_kind(error) is kind


@dataclass
class FakeMsg:
    subject: str
    data: bytes
    headers: dict[str, str] | None = None


def events(n: int) -> list[Envelope]:
    return [Envelope(source="/s", type="t", data={"i": i}) for i in range(n)]


async def answered(replies: list[FakeMsg]) -> _Pending:
    """A publisher's reply callback fed ``replies`` for a batch of that many events."""
    publisher = NatsPublisher("nats://127.0.0.1:4222")
    publisher._inbox = "_INBOX.test"
    batch = events(len(replies))
    pending = _Pending([e.id for e in batch], len(batch))
    for index in range(len(batch)):
        publisher._waiting[str(index)] = (pending, index)
    for reply in replies:
        await publisher._on_reply(reply)  # type: ignore[arg-type]
    await publisher._on_reply(FakeMsg("_INBOX.test.99", b"{}"))  # nobody waits: ignored
    assert publisher._waiting == {}
    return pending


async def test_pubacks_confirm_and_errors_are_kept_per_event() -> None:
    pending = await answered(
        [
            FakeMsg("_INBOX.test.0", b'{"stream":"S","seq":1}'),
            FakeMsg("_INBOX.test.1", b'{"stream":"S","seq":1,"duplicate":true}'),
            FakeMsg(
                "_INBOX.test.2",
                b'{"error":{"code":503,"err_code":10077,"description":"maximum messages"}}',
            ),
            FakeMsg("_INBOX.test.3", b"", {"Status": "503"}),
            FakeMsg("_INBOX.test.4", b"-ERR"),
        ]
    )
    assert pending.done.is_set()
    assert pending.confirmed == [True, True, False, False, False]
    ids = pending.ids
    assert isinstance(pending.causes[ids[2]], nats.js.errors.ServiceUnavailableError)
    assert isinstance(pending.causes[ids[3]], nats.js.errors.NoStreamResponseError)
    assert isinstance(pending.causes[ids[4]], nats.errors.Error)  # odd: transient
    assert failure_kind(pending.causes[ids[4]]) is BrokerUnavailable
    with pytest.raises(BrokerUnavailable) as info:  # one transient cause: all retried
        NatsPublisher._raise_for(pending)
    assert info.value.unconfirmed == tuple(ids[2:])


async def test_only_permanent_causes_are_a_refusal() -> None:
    pending = await answered(
        [
            FakeMsg("_INBOX.test.0", b'{"stream":"S","seq":1}'),
            FakeMsg("_INBOX.test.1", b"", {"Status": "503"}),
        ]
    )
    with pytest.raises(PublishRefused, match="no JetStream stream") as info:
        NatsPublisher._raise_for(pending)
    assert info.value.unconfirmed == (pending.ids[1],)
    NatsPublisher._raise_for(await answered([FakeMsg("_INBOX.test.0", b'{"seq":2}')]))


async def test_an_empty_batch_is_done_at_once() -> None:
    pending = _Pending([], 0)
    await asyncio.wait_for(pending.done.wait(), 1)


def test_header_text_is_one_bounded_line() -> None:
    assert header_text("ValueError: x\n  at y\r\n") == "ValueError: x at y"
    long = header_text("x" * 5000)
    assert len(long) == 2000
    assert long.endswith("…")


def test_text_headers_undo_the_email_parsers_surrogates() -> None:
    raw = "naïve".encode().decode("ascii", "surrogateescape")
    assert text_headers({"ce-subject": raw, "n": 1}) == {"ce-subject": "naïve", "n": "1"}
    assert text_headers(None) == {}
