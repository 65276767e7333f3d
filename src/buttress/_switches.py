"""Process-wide switches that :mod:`buttress.testing` flips for users' test suites.

Policies read them where it costs nothing measurable: one attribute of this
module-level object, at the top of a driver or on a path that already waits.
"""

from __future__ import annotations

__all__ = ["SWITCHES"]


class _Switches:
    __slots__ = ("no_timeouts", "zero_backoff")

    def __init__(self) -> None:
        # When True, every retry waits 0 s between attempts (attempt counts and
        # predicates are unchanged). Read only on the retry path, never on success.
        self.zero_backoff = False
        # When True, every Timeout is a pass-through: it publishes no deadline and
        # never raises. Read once per call or block, at its start.
        self.no_timeouts = False


SWITCHES = _Switches()
