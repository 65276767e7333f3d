"""Circuit breaker, closed state, successful call: buttress vs pybreaker,
circuitbreaker, aiobreaker, purgatory and pyresilience; and a breaker shared
through Redis (its syncing thread running) against the same breaker kept local."""

from __future__ import annotations

import socket
import sys

from buttress.policies.circuit import BreakerHub, CircuitBreaker

from _common import awork, baseline, work
from _harness import Case, check_works, main

SYNC = "breaker closed, success (sync)"
SLOW = "breaker closed, success, slow-call detection on (sync)"
ASYNC = "breaker closed, success (async)"
SHARED = "breaker closed, success, shared through Redis (sync)"
REDIS = "redis://127.0.0.1:6379/0"


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def shared_hub():  # type: ignore[no-untyped-def]
    # The hub's thread runs (interval 0.1 s) while the calls are timed: its cost
    # to the calling thread is part of the measure. Never closed: a worker exits.
    hub = BreakerHub(REDIS, interval=0.1, prefix="buttress-bench")
    return CircuitBreaker(name="bench", hub=hub)(work)


def shared_baseline():  # type: ignore[no-untyped-def]
    return CircuitBreaker(name="bench")(work)


def pybreaker_sync():  # type: ignore[no-untyped-def]
    import pybreaker

    return pybreaker.CircuitBreaker()(work)


def circuitbreaker_sync():  # type: ignore[no-untyped-def]
    from circuitbreaker import CircuitBreaker as CB

    return CB()(work)


def purgatory_sync():  # type: ignore[no-untyped-def]
    import purgatory

    return purgatory.SyncCircuitBreakerFactory()(circuit="bench")(work)


def pyresilience_sync():  # type: ignore[no-untyped-def]
    from pyresilience import CircuitBreakerConfig, resilient

    return resilient(circuit_breaker=CircuitBreakerConfig())(work)


def pyresilience_slow():  # type: ignore[no-untyped-def]
    from pyresilience import CircuitBreakerConfig, resilient

    return resilient(circuit_breaker=CircuitBreakerConfig(slow_call_duration=1.0))(work)


def aiobreaker_async():  # type: ignore[no-untyped-def]
    import aiobreaker

    return aiobreaker.CircuitBreaker()(awork)


def purgatory_async():  # type: ignore[no-untyped-def]
    import purgatory

    return purgatory.AsyncCircuitBreakerFactory()(circuit="bench")(awork)


def pyresilience_async():  # type: ignore[no-untyped-def]
    from pyresilience import CircuitBreakerConfig, resilient

    return resilient(circuit_breaker=CircuitBreakerConfig())(awork)


CASES = [
    *baseline(SYNC),
    Case(SYNC, "buttress", lambda: CircuitBreaker()(work), target_ns=150),
    Case(SYNC, "pybreaker", pybreaker_sync, peer=True),
    Case(SYNC, "circuitbreaker", circuitbreaker_sync, peer=True),
    Case(SYNC, "purgatory", purgatory_sync, peer=True),
    Case(SYNC, "pyresilience", pyresilience_sync, peer=True),
    *baseline(SLOW),
    Case(SLOW, "buttress", lambda: CircuitBreaker(slow_call_duration=1.0)(work), target_ns=300),
    Case(SLOW, "pyresilience", pyresilience_slow, peer=True),
    *baseline(ASYNC, is_async=True),
    Case(ASYNC, "buttress", lambda: CircuitBreaker()(awork), is_async=True),
    Case(ASYNC, "aiobreaker", aiobreaker_async, is_async=True, peer=True),
    Case(ASYNC, "purgatory", purgatory_async, is_async=True, peer=True),
    Case(ASYNC, "pyresilience", pyresilience_async, is_async=True, peer=True),
]
if redis_up():
    CASES += [
        *baseline(SHARED),
        Case(SHARED, "buttress, local (same options)", shared_baseline),
        Case(SHARED, "buttress, shared", shared_hub, note="target: at most 2x the local"),
    ]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)
