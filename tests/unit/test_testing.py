"""``buttress.testing``: the zero-backoff switch restores what it found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import buttress.testing
from buttress._switches import SWITCHES
from buttress.clock import FakeClock
from buttress.testing import set_zero_backoff, zero_backoff


@pytest.fixture(autouse=True)
def restore_switch() -> Iterator[None]:
    before = SWITCHES.zero_backoff
    yield
    SWITCHES.zero_backoff = before


def test_off_by_default() -> None:
    assert SWITCHES.zero_backoff is False


def test_set_zero_backoff() -> None:
    set_zero_backoff()
    assert SWITCHES.zero_backoff is True
    set_zero_backoff(False)
    assert SWITCHES.zero_backoff is False
    set_zero_backoff(enabled=True)
    assert SWITCHES.zero_backoff is True


def test_context_manager_restores_off() -> None:
    with zero_backoff():
        assert SWITCHES.zero_backoff is True
    assert SWITCHES.zero_backoff is False


def test_context_manager_restores_on() -> None:
    set_zero_backoff(True)
    with zero_backoff():
        assert SWITCHES.zero_backoff is True
    assert SWITCHES.zero_backoff is True


def test_nested_blocks_restore_in_order() -> None:
    with zero_backoff():
        set_zero_backoff(False)  # a test switching it off inside the block
        with zero_backoff():
            assert SWITCHES.zero_backoff is True
        assert SWITCHES.zero_backoff is False
    assert SWITCHES.zero_backoff is False


def test_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="inside"), zero_backoff():
        raise RuntimeError("inside")
    assert SWITCHES.zero_backoff is False


def test_fake_clock_is_offered_here() -> None:
    assert buttress.testing.FakeClock is FakeClock
    assert sorted(buttress.testing.__all__) == ["FakeClock", "set_zero_backoff", "zero_backoff"]
