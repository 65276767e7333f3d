"""Process-wide switches that :mod:`buttress.testing` flips for users' test suites."""

from __future__ import annotations

__all__ = ["SWITCHES"]


class _Switches:
    __slots__ = ("zero_backoff",)

    def __init__(self) -> None:
        # When True, every retry waits 0 s between attempts (attempt counts and
        # predicates are unchanged). Read only on the retry path, never on success.
        self.zero_backoff = False


SWITCHES = _Switches()
