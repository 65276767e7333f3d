"""UUIDv7: RFC 9562 layout, time order, monotonic within a millisecond, thread-safe."""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest

from buttress.messaging import _uuid7, uuid7


def _ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_version_and_variant() -> None:
    for _ in range(1000):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 62) & 0b11 == 0b10


def test_timestamp_is_unix_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_uuid7, "_time_ns", lambda: 1_700_000_000_123_456_789)
    monkeypatch.setattr(_uuid7, "_last_ms", -1)
    assert _ms(uuid7()) == 1_700_000_000_123


def test_ordered_across_many_ids() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)


def test_monotonic_within_one_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_uuid7, "_time_ns", lambda: 1_700_000_000_000_000_000)
    monkeypatch.setattr(_uuid7, "_last_ms", -1)
    ids = [uuid7() for _ in range(5000)]
    assert all(_ms(i) == 1_700_000_000_000 for i in ids)
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_clock_going_backwards_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [2_000_000_000_000_000_000]
    monkeypatch.setattr(_uuid7, "_time_ns", lambda: now[0])
    monkeypatch.setattr(_uuid7, "_last_ms", -1)
    first = uuid7()
    now[0] -= 5_000_000_000  # five seconds back
    second = uuid7()
    assert second > first
    assert _ms(second) == _ms(first)


def test_counter_overflow_moves_to_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_uuid7, "_time_ns", lambda: 1_000_000_000_000)
    monkeypatch.setattr(_uuid7, "_last_ms", 1_000_000)
    monkeypatch.setattr(_uuid7, "_last_rand", (1 << 74) - 1)
    value = uuid7()
    assert _ms(value) == 1_000_001
    assert value.version == 7


def test_unique_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_uuid7, "_time_ns", lambda: 1_700_000_000_000_000_000)
    monkeypatch.setattr(_uuid7, "_last_ms", -1)
    per_thread: list[list[uuid.UUID]] = [[] for _ in range(8)]

    def work(out: list[uuid.UUID]) -> None:
        out.extend(uuid7() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in per_thread for i in out]
    assert len(set(every)) == len(every) == 16_000
    for out in per_thread:  # each thread sees its own ids increase
        assert out == sorted(out)
