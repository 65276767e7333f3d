"""Shared fixtures: the fake clock, and access to real services.

A service-backed test asks for its service through :func:`require_service`. When
the service is not reachable the test is skipped — unless
``BUTTRESS_REQUIRE_SERVICES`` is set (CI sets it), in which case it fails loudly.
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import HealthCheck, settings

from buttress.clock import FakeClock

# Time in these tests is fake; wall-clock deadlines would only measure how busy the
# machine is (CI shares two cores), so they are off. print_blob lets a CI failure be
# replayed exactly.
settings.register_profile(
    "buttress",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("buttress")

SERVICES = {
    "postgres": 5432,
    "redis": 6379,
    "rabbitmq": 5672,
    "nats": 4222,
}


def service_available(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Skip (or, with BUTTRESS_REQUIRE_SERVICES set, fail) when ``name`` is down."""
    port = SERVICES[name]
    if service_available(port):
        return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("BUTTRESS_REQUIRE_SERVICES"):
        pytest.fail(f"{message} and BUTTRESS_REQUIRE_SERVICES is set", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at t=0 that jumps forward whenever code sleeps."""
    return FakeClock()


@pytest.fixture
def manual_clock() -> FakeClock:
    """A fake clock that moves only when the test calls ``advance()``."""
    return FakeClock(auto_advance=False)
