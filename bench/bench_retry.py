"""Retry: the happy path, fail-fail-succeed with zero waits, and the loop form, vs
tenacity, stamina, backoff, pyresilience and a hand-written loop."""

from __future__ import annotations

import sys
from typing import Any

from buttress.policies.retry import Retry

from _common import afail_twice, awork, baseline, fail_twice, work
from _harness import Case, check_works, main

HAPPY = "retry happy path (sync)"
AHAPPY = "retry happy path (async)"
FLAKY = "retry fail, fail, succeed, zero waits (sync)"
AFLAKY = "retry fail, fail, succeed, zero waits (async)"
LOOP = "retry loop form, fail, fail, succeed, zero waits (sync)"


def tenacity_retry(fn: Any) -> Any:
    import tenacity

    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(ConnectionError),
    )(fn)


def stamina_retry(fn: Any) -> Any:
    import stamina

    return stamina.retry(on=ConnectionError, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0)(
        fn
    )


def backoff_retry(fn: Any) -> Any:
    import backoff

    return backoff.on_exception(
        backoff.constant, ConnectionError, max_tries=3, interval=0, jitter=None
    )(fn)


def pyresilience_retry(fn: Any) -> Any:
    from pyresilience import RetryConfig, resilient

    return resilient(
        retry=RetryConfig(max_attempts=3, delay=0, jitter=False, retry_on=(ConnectionError,))
    )(fn)


def hand_loop() -> Any:
    fn = fail_twice()

    def call() -> Any:
        for attempt in range(3):
            try:
                return fn()
            except ConnectionError:
                if attempt == 2:
                    raise
        return None

    return call


def buttress_loop() -> Any:
    retry = zero()
    fn = fail_twice()

    def block() -> Any:
        for attempt in retry.attempts():
            with attempt:
                return fn()
        return None

    return block


def tenacity_loop() -> Any:
    import tenacity

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(ConnectionError),
    )
    fn = fail_twice()

    def block() -> Any:
        for attempt in retrying:
            with attempt:
                return fn()
        return None

    return block


def stamina_loop() -> Any:
    import stamina

    fn = fail_twice()

    def block() -> Any:
        for attempt in stamina.retry_context(
            on=ConnectionError, attempts=3, wait_initial=0, wait_max=0, wait_jitter=0
        ):
            with attempt:
                return fn()
        return None

    return block


def zero() -> Retry:
    return Retry(3, backoff="constant", delay=0)


PEERS = [
    ("tenacity", tenacity_retry),
    ("stamina", stamina_retry),
    ("backoff", backoff_retry),
    ("pyresilience", pyresilience_retry),
]

CASES = [
    *baseline(HAPPY),
    Case(HAPPY, "buttress", lambda: Retry()(work), target_ns=80),
    *[Case(HAPPY, n, lambda f=f: f(work), peer=True) for n, f in PEERS],
    *baseline(AHAPPY, is_async=True),
    Case(AHAPPY, "buttress", lambda: Retry()(awork), is_async=True),
    *[Case(AHAPPY, n, lambda f=f: f(awork), is_async=True, peer=True) for n, f in PEERS],
    Case(FLAKY, "bare", lambda: work),
    Case(FLAKY, "hand-written loop", hand_loop),
    Case(FLAKY, "buttress", lambda: zero()(fail_twice()), target_ns=5000),
    *[Case(FLAKY, n, lambda f=f: f(fail_twice()), peer=True) for n, f in PEERS],
    Case(LOOP, "bare", lambda: work),
    Case(LOOP, "buttress", buttress_loop),
    Case(LOOP, "tenacity", tenacity_loop, peer=True),
    Case(LOOP, "stamina", stamina_loop, peer=True),
    Case(AFLAKY, "bare", lambda: awork, is_async=True),
    Case(AFLAKY, "buttress", lambda: zero()(afail_twice()), is_async=True, target_ns=5000),
    *[Case(AFLAKY, n, lambda f=f: f(afail_twice()), is_async=True, peer=True) for n, f in PEERS],
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        check_works(CASES)
    else:
        main(CASES)
