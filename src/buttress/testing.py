"""Helpers for testing code that uses buttress.

- :class:`FakeClock`: pass it as ``clock=`` to any policy and move time by hand.
- :func:`zero_backoff`: make every retry wait 0 s, so a test suite that exercises
  retried code does not wait for real backoff. Attempt counts, predicates and
  events are unchanged.

Example::

    from buttress.testing import zero_backoff

    def test_flaky_path() -> None:
        with zero_backoff():
            assert fetch_with_retries() == "ok"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from buttress._switches import SWITCHES
from buttress.clock import FakeClock

__all__ = ["FakeClock", "set_zero_backoff", "zero_backoff"]


def set_zero_backoff(enabled: bool = True) -> None:
    """Switch zero backoff on or off for the whole process (e.g. in ``conftest.py``)."""
    SWITCHES.zero_backoff = enabled


@contextmanager
def zero_backoff() -> Iterator[None]:
    """Within the block every retry waits 0 s; the previous setting is restored after."""
    previous = SWITCHES.zero_backoff
    SWITCHES.zero_backoff = True
    try:
        yield
    finally:
        SWITCHES.zero_backoff = previous
