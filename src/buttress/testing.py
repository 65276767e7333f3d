"""Helpers for testing code that uses buttress.

- :func:`set_testing`: the one switch for a test suite — every
  retry waits 0 s and every :class:`~buttress.Timeout` is switched off, so tests of
  code with resilience policies neither wait for real backoff nor fail on a slow CI
  machine (stamina's ``set_testing``). Attempt counts, predicates, breakers,
  bulkheads, rate limiters and events are unchanged.
- :class:`FakeClock`: pass it as ``clock=`` to any policy and move time by hand.
- :func:`zero_backoff` / :func:`set_zero_backoff`: only the retry half of the switch.

Example, in ``conftest.py``::

    import buttress.testing

    buttress.testing.set_testing(True)

or around one test::

    from buttress.testing import set_testing

    def test_flaky_path() -> None:
        with set_testing(True):
            assert fetch_with_retries() == "ok"

(There is no ``testing()`` context manager: pytest would collect a function of that
name imported into a test module as a test.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from buttress._switches import SWITCHES
from buttress.clock import FakeClock

__all__ = ["FakeClock", "is_testing", "set_testing", "set_zero_backoff", "zero_backoff"]


class _Restore:
    """What :func:`set_testing` returns: a block that restores the previous settings."""

    __slots__ = ("_previous",)

    def __init__(self, previous: tuple[bool, bool]) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        SWITCHES.zero_backoff, SWITCHES.no_timeouts = self._previous


def set_testing(enabled: bool = True) -> _Restore:
    """Switch testing mode on or off, for the whole process or for a block.

    ``set_testing(True)`` (e.g. in ``conftest.py``) keeps it on until switched off;
    ``with set_testing(True):`` switches it on for the block and restores the
    previous settings after it, even if the block raises.

    On: every retry waits 0 s between attempts (as :func:`set_zero_backoff`), and
    every ``Timeout`` is a pass-through — it publishes no deadline
    (:func:`~buttress.remaining` is ``None`` inside, so the waits of other policies
    are not capped by it), never cancels a call or block and never raises
    ``TimeoutExceeded``; a pessimistic one runs the call in the caller's thread.
    Nothing else changes: attempt counts, what is retried, breakers, bulkheads
    (their queues still wait up to ``max_wait``), rate limiters (a limiter in
    ``"wait"`` mode still waits) and events.
    """
    previous = (SWITCHES.zero_backoff, SWITCHES.no_timeouts)
    SWITCHES.zero_backoff = enabled
    SWITCHES.no_timeouts = enabled
    return _Restore(previous)


def is_testing() -> bool:
    """Whether testing mode is on (both of its halves)."""
    return SWITCHES.zero_backoff and SWITCHES.no_timeouts


def set_zero_backoff(enabled: bool = True) -> None:
    """Switch zero backoff on or off for the whole process; timeouts stay as they are."""
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
