"""Fallback on the happy path (the call succeeds, nothing is answered for): buttress vs
the empty-wrapper floor and the peers that have a fallback (pyresilience's
``FallbackConfig``; tenacity's ``retry_error_callback`` answers for an exhausted retry,
not for a failed call, so it is no fallback and is left out). Decorated functions, and
the same fallback called with ``call``/``acall``, sync and async."""

from __future__ import annotations

import sys
from typing import Any

from buttress.policies.fallback import Fallback

from _common import awork, baseline, work
from _harness import Case, check_works, main

SYNC = "fallback happy path (sync)"
ASYNC = "fallback happy path (async)"


def pyresilience_fallback(fn: Any) -> Any:
    from pyresilience import FallbackConfig, resilient

    return resilient(fallback=FallbackConfig(handler=0))(fn)


def called(fn: Any) -> Any:
    fallback = Fallback(value=0)
    call = fallback.call

    def run() -> Any:
        return call(fn)

    return run


def acalled(fn: Any) -> Any:
    fallback = Fallback(value=0)
    acall = fallback.acall

    async def run() -> Any:
        return await acall(fn)

    return run


CASES = [
    *baseline(SYNC),
    Case(SYNC, "buttress", lambda: Fallback(value=0)(work)),
    Case(SYNC, "buttress call()", lambda: called(work)),
    Case(SYNC, "pyresilience", lambda: pyresilience_fallback(work), peer=True),
    *baseline(ASYNC, is_async=True),
    Case(ASYNC, "buttress", lambda: Fallback(value=0)(awork), is_async=True),
    Case(ASYNC, "buttress acall()", lambda: acalled(awork), is_async=True),
    Case(ASYNC, "pyresilience", lambda: pyresilience_fallback(awork), is_async=True, peer=True),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)
