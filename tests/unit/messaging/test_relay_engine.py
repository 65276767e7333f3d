"""The relay's sans-I/O engine: decisions from claimed rows and publish outcomes."""

from __future__ import annotations

import pytest

from buttress.errors import CircuitOpen, ConfigError
from buttress.messaging.brokers import BrokerUnavailable, PublishRefused
from buttress.messaging.relay import ClaimedRow, Engine
from buttress.policies.backoff import Constant, Exponential

NOW = 1_767_225_600.0


def rows(*attempts: int) -> list[ClaimedRow]:
    return [
        ClaimedRow(seq=i + 1, event_id=f"e{i + 1}", subject="k", envelope="{}", attempts=a)
        for i, a in enumerate(attempts)
    ]


def engine(**options: object) -> Engine:
    options.setdefault("random", lambda: 1.0)
    return Engine(**options)  # type: ignore[arg-type]


def test_success_marks_every_row_published() -> None:
    decision = engine().decide(rows(0, 3), None, NOW)
    assert decision.published == [1, 2]
    assert decision.retry == []
    assert decision.dead == []
    assert decision.released == []


def test_partial_confirmation_publishes_the_confirmed_and_retries_the_rest() -> None:
    error = BrokerUnavailable("nack", ["e2"], causes={"e2": ValueError("queue full")})
    decision = engine().decide(rows(0, 0, 0), error, NOW)
    assert decision.published == [1, 3]
    [(seq, at, text)] = decision.retry
    assert seq == 2
    assert at == NOW + 1.0
    assert "BrokerUnavailable" in text
    assert "ValueError: queue full" in text


def test_backoff_is_exponential_capped_and_jittered() -> None:
    e = engine(backoff=Exponential(1.0, 2.0), max_delay=5.0)
    assert [e.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    low = engine(backoff=Exponential(1.0, 2.0), random=lambda: 0.0)
    assert low.delay(3) == 2.0  # equal jitter: between half the delay and the delay
    decision = e.decide(rows(2), TimeoutError("slow"), NOW)
    assert decision.retry == [(1, NOW + 4.0, "TimeoutError: slow")]


def test_dead_letter_after_max_attempts_with_the_last_error() -> None:
    e = engine(max_attempts=3, backoff=Constant(1.0))
    error = PublishRefused("unroutable", ["e1", "e2"])
    decision = e.decide(rows(1, 2), error, NOW)
    assert decision.retry == [(1, NOW + 1.0, str(decision.retry[0][2]))]
    assert [seq for seq, _ in decision.dead] == [2]
    assert decision.dead[0][1].startswith("PublishRefused: unroutable")


def test_max_attempts_one_dead_letters_at_the_first_failure() -> None:
    decision = engine(max_attempts=1).decide(rows(0), RuntimeError("boom"), NOW)
    assert decision.dead == [(1, "RuntimeError: boom")]


def test_a_rejection_releases_without_counting_an_attempt() -> None:
    decision = engine(max_attempts=1).decide(rows(0, 5), CircuitOpen("relay", 0.0, 7.0), NOW)
    assert decision.released == [(1, NOW + 7.0), (2, NOW + 7.0)]
    assert decision.dead == []
    assert decision.retry == []
    assert decision.published == []


def test_long_errors_are_cut() -> None:
    decision = engine(max_attempts=1).decide(rows(0), RuntimeError("x" * 10_000), NOW)
    assert len(decision.dead[0][1]) == 2000


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_attempts", 0), ("max_attempts", 1.5), ("max_attempts", True), ("max_delay", -1)],
)
def test_bad_options_are_named(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Engine(**{option: value})  # type: ignore[arg-type]
    assert option in str(info.value)


def test_backoff_must_be_a_schedule() -> None:
    with pytest.raises(ConfigError, match="backoff"):
        Engine(backoff="exponential")  # type: ignore[arg-type]
