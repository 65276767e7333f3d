"""Path patterns: the documented semantics, a regex as oracle, and linear time."""

from __future__ import annotations

import re

import pytest

from buttress.clock import FakeClock
from buttress.integrations.asgi import Rule
from buttress.ratelimit import TokenBucket

from tests.unit.integrations.asgi.helpers import limiter


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/items", "/items", True),
        ("/items", "/items/", False),
        ("/items/*", "/items/42", True),
        ("/items/*", "/items/", True),
        ("/items/*", "/items/42/parts", False),
        ("/items/**", "/items/42/parts", True),
        ("/items/**", "/items", False),
        ("/items/{id}", "/items/42", True),
        ("/items/{id}", "/items/", False),
        ("/items/{id}/parts", "/items/42/parts", True),
        ("/files/{rest:path}", "/files/a/b.txt", True),
        ("/files/{rest:path}", "/files/", False),
        ("/v1.0/*", "/v1x0/a", False),  # the dot is literal
        ("/*.json", "/data.json", True),
        # A decoded %0A cannot slip past a pattern.
        ("/items/**", "/items/a\nb", True),
        ("/files/{rest:path}", "/files/a\nb", True),
        ("/items/{id}", "/items/a\nb", True),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    rule = Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), path=pattern)
    assert rule.matches("GET", path) is expected


def test_a_regex_path_is_full_matched() -> None:
    rule = Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), path=re.compile(r"/v\d+/.*"))
    assert rule.matches("GET", "/v2/users")
    assert not rule.matches("GET", "/api/v2/users")
