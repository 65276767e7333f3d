"""A rate limiter declared in TOML shares its Redis state under its table's key.

Two registries loaded from the same file stand for two processes: their limiters
are named by the key under ``policies`` (not by construction order), so they find
the same buckets in Redis and enforce one limit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from buttress import RateLimiter, Registry

from tests.conftest import require_service

pytestmark = pytest.mark.integration


@pytest.fixture
def name() -> Iterator[str]:
    require_service("redis")
    client = redis.Redis(host="127.0.0.1", port=6379)
    name = f"buttress-test-registry-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(f"*{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_redis_limiter_from_toml_is_named_by_its_table_key(name: str, tmp_path: Path) -> None:
    file = tmp_path / "buttress.toml"
    file.write_text(
        f"""
[policies.unnamed-first]
type = "rate_limiter"
limits = "1/second"

[policies.{name}]
type = "rate_limiter"
store = "redis://127.0.0.1:6379/0"
limits = "5/minute"
"""
    )
    # The second "process" has other policies declared first: the name must not move.
    other = tmp_path / "other.toml"
    other.write_text(file.read_text().replace("unnamed-first", "a-b-c"))
    first = Registry.from_toml(file, env={}).get(name)
    second = Registry.from_toml(other, env={}).get(name)
    assert isinstance(first, RateLimiter)
    assert isinstance(second, RateLimiter)
    try:
        assert first.name == second.name == name
        allowed = [first.hit("user").allowed for _ in range(3)]
        allowed += [second.hit("user").allowed for _ in range(3)]
        assert allowed == [True] * 5 + [False]
        assert not first.hit("user").allowed
        client = redis.Redis(host="127.0.0.1", port=6379)
        try:
            assert any(name in key.decode() for key in client.scan_iter(f"*{name}:user*"))
        finally:
            client.close()
    finally:
        first.close()
        second.close()
