"""Standard Webhooks signing: secrets, signatures, verification, and interop with the
reference library (``standardwebhooks`` from PyPI) in both directions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.webhooks import (
    HeaderError,
    Secret,
    SignatureError,
    Signer,
    TimestampError,
    Verifier,
    WebhookVerificationError,
    sign,
)
from buttress.webhooks.signing import SignedHeaders

# The scheme's published example: secret, id, timestamp, body and signature.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY_A = Secret(b"a" * 32)
KEY_B = Secret(b"b" * 32)
NOW = 1_767_225_600  # FakeClock's default wall time


def fixed_clock() -> FakeClock:
    return FakeClock()


def signed(
    secret: Any = KEY_A, msg_id: str = "msg_1", ts: int = NOW, body: bytes = b"{}"
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


# ---------------------------------------------------------------------------- secrets


def test_the_published_example_signs_as_published() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_secret_round_trips_through_its_text_form() -> None:
    secret = Secret.generate()
    text = secret.export()
    assert text.startswith("whsec_")
    assert Secret.parse(text) == secret
    assert len(secret.key) == 32


def test_secret_without_prefix_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="whsec_"):
        Secret.parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    # ... but from_base64 reads a bare key on purpose.
    assert Secret.from_base64("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == Secret.parse(VECTOR_SECRET)


def test_unpadded_base64_is_read_like_the_reference_library() -> None:
    key = bytes(range(25))  # 25 bytes: base64 needs padding
    padded = base64.b64encode(key).decode()
    assert padded.endswith("=")
    assert Secret.parse("whsec_" + padded.rstrip("=")).key == key


@pytest.mark.parametrize(
    "text",
    ["whsec_", "whsec_not base64!", "whsec_@@@@", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_bad_secret_text_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        Secret.parse(text)


@pytest.mark.parametrize("key", [b"", b"x" * 15, b"x" * 1025])
def test_key_length_is_checked(key: bytes) -> None:
    with pytest.raises(ConfigError, match="bytes long"):
        Secret(key)


@pytest.mark.parametrize("size", [23, 65, True, 32.0])
def test_generate_refuses_odd_sizes(size: Any) -> None:
    with pytest.raises(ConfigError):
        Secret.generate(size)


def test_generated_secrets_differ() -> None:
    assert Secret.generate() != Secret.generate()
    assert len(Secret.generate(64).key) == 64


def test_repr_never_shows_the_key() -> None:
    secret = Secret(b"k" * 32)
    text = repr(secret)
    assert "kkkk" not in text
    assert secret.export()[6:] not in text
    assert secret.fingerprint() in text
    assert "whsec_" not in repr(Signer(secret)) + repr(Verifier(secret))


@pytest.mark.parametrize("bad", [None, 42, [], [42], ["nope"]])
def test_bad_secrets_arguments_are_config_errors(bad: Any) -> None:
    with pytest.raises(ConfigError):
        Signer(bad)


# ---------------------------------------------------------------------------- signing


def test_several_secrets_give_several_signatures_in_order() -> None:
    value = sign([KEY_A, KEY_B], "msg_1", NOW, b"{}")
    entries = value.split(" ")
    assert entries == [sign(KEY_A, "msg_1", NOW, b"{}"), sign(KEY_B, "msg_1", NOW, b"{}")]
    assert all(entry.startswith("v1,") for entry in entries)


def test_secrets_given_as_text_bytes_and_objects_are_the_same() -> None:
    by_text = sign(KEY_A.export(), "m", 1, b"x")
    assert by_text == sign(KEY_A.key, "m", 1, b"x") == sign(KEY_A, "m", 1, b"x")
    # The same secret twice signs once.
    assert sign([KEY_A, KEY_A.export()], "m", 1, b"x") == by_text


def test_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    raw = hmac.new(KEY_A.key, b"msg_1.5.hello", hashlib.sha256).digest()
    assert sign(KEY_A, "msg_1", 5, b"hello") == "v1," + base64.b64encode(raw).decode()


def test_signer_headers_use_the_clock_and_a_given_timestamp() -> None:
    clock = FakeClock(wall=1000.75)
    signer = Signer([KEY_A, KEY_B], clock=clock)
    headers = signer.headers("msg_9", b"{}")
    assert headers == {
        "webhook-id": "msg_9",
        "webhook-timestamp": "1000",
        "webhook-signature": sign([KEY_A, KEY_B], "msg_9", 1000, b"{}"),
    }
    assert signer.headers("msg_9", b"{}", timestamp=7)["webhook-timestamp"] == "7"
    assert signer.secrets == (KEY_A, KEY_B)


@pytest.mark.parametrize("msg_id", ["", "has space", "new\nline", "é", "x" * 257])
def test_ids_that_cannot_be_a_header_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(KEY_A, msg_id, 1, b"")


@pytest.mark.parametrize("ts", [-1, 1.5, "1", True])
def test_bad_timestamps_are_refused_when_signing(ts: Any) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        sign(KEY_A, "m", ts, b"")


def test_a_text_body_must_be_encoded_first() -> None:
    with pytest.raises(TypeError, match="encode"):
        sign(KEY_A, "m", 1, "{}")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- verification


def test_verify_accepts_a_good_message() -> None:
    Verifier(KEY_A, clock=fixed_clock()).verify(signed(), b"{}")


def test_header_names_are_read_in_any_case() -> None:
    headers = {name.title(): value for name, value in signed().items()}
    Verifier(KEY_A, clock=fixed_clock()).verify(headers, b"{}")


def test_the_same_header_in_two_cases_is_refused() -> None:
    headers = signed()
    headers["Webhook-Id"] = "msg_2"
    with pytest.raises(HeaderError, match="twice"):
        Verifier(KEY_A, clock=fixed_clock()).verify(headers, b"{}")


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"body": b"{ }"}, "body"),
        ({"msg_id": "msg_2"}, "id"),
        ({"ts": NOW + 1}, "timestamp"),
    ],
)
def test_tampering_breaks_the_signature(change: dict[str, Any], what: str) -> None:
    headers = signed()
    body = b"{}"
    if what == "body":
        body = change["body"]
    elif what == "id":
        headers["webhook-id"] = change["msg_id"]
    else:
        headers["webhook-timestamp"] = str(change["ts"])
    with pytest.raises(SignatureError):
        Verifier(KEY_A, clock=fixed_clock()).verify(headers, body)


def test_wrong_secret_is_a_signature_error() -> None:
    with pytest.raises(SignatureError) as caught:
        Verifier(KEY_B, clock=fixed_clock()).verify(signed(KEY_A), b"{}")
    assert isinstance(caught.value, WebhookVerificationError)


def test_rotation_any_signature_against_any_secret() -> None:
    clock = fixed_clock()
    both = signed([KEY_A, KEY_B])
    # A receiver that knows only one of the two secrets accepts it.
    Verifier(KEY_A, clock=clock).verify(both, b"{}")
    Verifier(KEY_B, clock=clock).verify(both, b"{}")
    # A receiver that knows both accepts a message signed with either.
    Verifier([KEY_A, KEY_B], clock=clock).verify(signed(KEY_B), b"{}")
    Verifier([KEY_B, KEY_A], clock=clock).verify(signed(KEY_A), b"{}")


def test_other_signature_versions_are_skipped() -> None:
    headers = signed()
    headers["webhook-signature"] = "v1a,c29tZXRoaW5n " + headers["webhook-signature"]
    Verifier(KEY_A, clock=fixed_clock()).verify(headers, b"{}")


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    Verifier([KEY_B, KEY_A], clock=fixed_clock()).verify(signed([KEY_A, KEY_B]), b"{}")
    # Every (secret, signature) pair is compared, with no early exit on a match.
    assert len(calls) == 4


@pytest.mark.parametrize("skew", [-300, 300, 0, -299.5])
def test_timestamps_within_tolerance_pass(skew: float) -> None:
    clock = FakeClock(wall=NOW - skew)
    Verifier(KEY_A, clock=clock).verify(signed(), b"{}")


@pytest.mark.parametrize(("skew", "word"), [(-301, "future"), (301, "old"), (86400, "old")])
def test_timestamps_outside_tolerance_either_way_fail(skew: float, word: str) -> None:
    clock = FakeClock(wall=NOW + skew)
    with pytest.raises(TimestampError, match=word) as caught:
        Verifier(KEY_A, clock=clock).verify(signed(), b"{}")
    assert caught.value.timestamp == NOW
    assert caught.value.now == NOW + skew


def test_tolerance_is_configurable() -> None:
    clock = FakeClock(wall=NOW + 20)
    Verifier(KEY_A, tolerance=20, clock=clock).verify(signed(), b"{}")
    with pytest.raises(TimestampError):
        Verifier(KEY_A, tolerance=19, clock=clock).verify(signed(), b"{}")


@pytest.mark.parametrize("tolerance", [0, -1, math.inf, math.nan, True, "300"])
def test_bad_tolerance_is_refused(tolerance: Any) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        Verifier(KEY_A, tolerance)


def test_a_bad_timestamp_is_refused_before_the_signature_is_computed() -> None:
    # A stale message with a wrong signature is a timestamp error: no HMAC needed.
    headers = signed(KEY_B, ts=NOW - 1000)
    with pytest.raises(TimestampError):
        Verifier(KEY_A, clock=fixed_clock()).verify(headers, b"{}")


VALID_SIG = sign(KEY_A, "msg_1", NOW, b"{}")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"webhook-timestamp": str(NOW), "webhook-signature": VALID_SIG}, "webhook-id is missing"),
        ({"webhook-id": "msg_1", "webhook-signature": VALID_SIG}, "webhook-timestamp is missing"),
        ({"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}, "webhook-signature is missing"),
        (
            {"webhook-id": " ", "webhook-timestamp": str(NOW), "webhook-signature": VALID_SIG},
            "empty",
        ),
        (
            {"webhook-id": "a b", "webhook-timestamp": str(NOW), "webhook-signature": VALID_SIG},
            "ASCII",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": "soon", "webhook-signature": VALID_SIG},
            "digits",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": "-5", "webhook-signature": VALID_SIG},
            "digits",
        ),
        (
            {
                "webhook-id": "msg_1",
                "webhook-timestamp": f"{NOW}.5",
                "webhook-signature": VALID_SIG,
            },
            "digits",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": "9" * 40, "webhook-signature": VALID_SIG},
            "digits",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1"},
            "entries",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,"},
            "entries",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": ",abc"},
            "entries",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,***"},
            "base64",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,YWJj"},
            "32 bytes",
        ),
        (
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1a,YWJj"},
            "no v1",
        ),
        (
            {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(NOW),
                "webhook-signature": " ".join([VALID_SIG] * 33),
            },
            "more than",
        ),
    ],
)
def test_malformed_headers_are_header_errors(headers: dict[str, str], message: str) -> None:
    with pytest.raises(HeaderError, match=message):
        Verifier(KEY_A, clock=fixed_clock()).verify(headers, b"{}")


def test_far_future_timestamp_in_digits_is_a_timestamp_error() -> None:
    with pytest.raises(TimestampError, match="future"):
        Verifier(KEY_A, clock=fixed_clock()).verify(signed(ts=10**14), b"{}")


def test_parsed_headers_hold_the_decoded_v1_signatures() -> None:
    parsed = SignedHeaders.parse(signed([KEY_A, KEY_B]))
    assert parsed.msg_id == "msg_1"
    assert parsed.timestamp == NOW
    assert parsed.signatures == (
        KEY_A.signature("msg_1", NOW, b"{}"),
        KEY_B.signature("msg_1", NOW, b"{}"),
    )


# --------------------------------------------------------------------------- interop


def test_buttress_signs_and_the_reference_library_verifies() -> None:
    secret = Secret.generate()
    body = b'{"type":"invoice.paid","data":{"id":"in_1","amount":4200}}'
    headers = Signer([Secret.generate(), secret]).headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", body)
    reference = standardwebhooks.Webhook(secret.export())
    assert reference.verify(body, headers) == {
        "type": "invoice.paid",
        "data": {"id": "in_1", "amount": 4200},
    }
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        reference.verify(body + b" ", headers)


def test_the_reference_library_signs_and_buttress_verifies() -> None:
    secret = Secret.generate(24)
    reference = standardwebhooks.Webhook(secret.export())
    now = datetime.now(tz=UTC)
    body = '{"type":"user.created","data":{"name":"Zoë"}}'
    headers = {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": reference.sign("msg_abc", now, body),
    }
    Verifier(secret.export()).verify(headers, body.encode())
    Verifier([Secret.generate(), secret]).verify(headers, body.encode())
    with pytest.raises(SignatureError):
        Verifier(Secret.generate()).verify(headers, body.encode())


def test_the_reference_library_refuses_what_buttress_refuses_for_time() -> None:
    secret = Secret.generate()
    stale = math.floor(time.time()) - 301
    headers = Signer(secret).headers("msg_1", b"{}", timestamp=stale)
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        standardwebhooks.Webhook(secret.export()).verify(b"{}", headers)
    with pytest.raises(TimestampError):
        Verifier(secret).verify(headers, b"{}")


def test_the_published_example_verifies_in_both() -> None:
    clock = FakeClock(wall=VECTOR_TS)
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIG,
    }
    Verifier(VECTOR_SECRET, clock=clock).verify(headers, VECTOR_BODY)
    reference = standardwebhooks.Webhook(VECTOR_SECRET)
    moment = datetime.fromtimestamp(VECTOR_TS, tz=UTC)
    assert reference.sign(VECTOR_ID, moment, VECTOR_BODY.decode()) == VECTOR_SIG


def test_starlette_headers_are_read_and_a_repeated_one_refused() -> None:
    from starlette.datastructures import Headers

    raw = [(k.encode(), v.encode()) for k, v in signed().items()]
    Verifier(KEY_A, clock=fixed_clock()).verify(Headers(raw=raw), b"{}")
    twice = [*raw, (b"webhook-signature", sign(KEY_B, "msg_1", NOW, b"{}").encode())]
    with pytest.raises(HeaderError, match="webhook-signature is given twice"):
        Verifier(KEY_A, clock=fixed_clock()).verify(Headers(raw=twice), b"{}")


def test_other_headers_in_two_cases_are_no_concern() -> None:
    headers = {**signed(), "Accept": "a", "accept": "b"}
    Verifier(KEY_A, clock=fixed_clock()).verify(headers, b"{}")


ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)


@given(
    key=st.binary(min_size=16, max_size=80),
    msg_id=ids,
    ts=st.integers(0, 10**12),
    body=st.binary(max_size=500),
    flip=st.integers(0, 10**6),
)
def test_any_message_round_trips_and_any_changed_byte_fails(
    key: bytes, msg_id: str, ts: int, body: bytes, flip: int
) -> None:
    secret = Secret(key)
    clock = FakeClock(wall=ts)
    headers = Signer(secret).headers(msg_id, body, timestamp=ts)
    Verifier(secret.export(), clock=clock).verify(headers, body)
    if body:
        changed = bytearray(body)
        changed[flip % len(body)] ^= 1 << (flip % 8)
        with pytest.raises(SignatureError):
            Verifier(secret, clock=clock).verify(headers, bytes(changed))
