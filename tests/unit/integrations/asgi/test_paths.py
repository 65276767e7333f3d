"""Path patterns: the documented semantics, a regex as oracle, and linear time."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress.clock import FakeClock
from buttress.errors import ConfigError
from buttress.integrations.asgi import Rule
from buttress.integrations.asgi._paths import PathPattern
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


# ------------------------------------------------------------- the regex as the oracle


def _regex(pattern: str) -> re.Pattern[str]:
    """The semantics the patterns always had, as a (backtracking) regular expression."""
    parts: list[str] = []
    position = 0
    for match in re.finditer(r"\*\*|\*|\{([A-Za-z_]\w*)(:path)?\}", pattern):
        parts.append(re.escape(pattern[position : match.start()]))
        token = match.group(0)
        parts.append(
            ".*"
            if token == "**"
            else "[^/]*"
            if token == "*"
            else ".+"
            if match.group(2)
            else "[^/]+"
        )
        position = match.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("".join(parts), re.DOTALL)


TOKENS = ["/", "/", "a", "b", "ab", ".", "*", "**", "{id}", "{rest:path}"]


@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=7),
    paths=st.lists(st.text(alphabet="/ab.\n", max_size=12), min_size=1, max_size=8),
)
@settings(max_examples=800)
def test_patterns_match_exactly_what_the_regex_matches(tokens: list[str], paths: list[str]) -> None:
    pattern = "/" + "".join(tokens)
    try:
        compiled = PathPattern(pattern)
    except ConfigError:
        assert re.search(r"\{id\}(\*|\{rest)|(\*\*|:path\})\*?\{id\}", pattern)
        return
    oracle = _regex(pattern)
    for path in paths:
        for candidate in (path, "/" + path):
            assert compiled.match(candidate) is (oracle.fullmatch(candidate) is not None), (
                pattern,
                candidate,
            )


@pytest.mark.parametrize("pattern", ["/**{id}", "/{id}**", "/x/{a:path}{id}", "/{id}*{r:path}"])
def test_a_segment_name_beside_a_crossing_wildcard_is_refused(pattern: str) -> None:
    with pytest.raises(ConfigError, match="beside") as info:
        Rule(limiter(FakeClock(), TokenBucket(1, 1.0)), path=pattern)
    assert info.value.path == "path"


def test_adjacent_wildcards_of_one_kind_add_up() -> None:
    two = PathPattern("/{a}{b}")
    assert not two.match("/x")
    assert two.match("/xy")
    assert PathPattern("/**{rest:path}").match("/x")
    assert not PathPattern("/{a:path}{b:path}").match("/x")


# ---------------------------------------------------------------------- linear time


class Counted(str):
    """A path that counts the string operations run on it and the characters they scan.

    A search scans from where it starts to where it finds (or to the end of its
    range when it finds nothing): the work a plain scan does.
    """

    operations: int
    scanned: int

    def __new__(cls, text: str) -> Counted:
        path = super().__new__(cls, text)
        path.operations = 0
        path.scanned = 0
        return path

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        first, last, _ = slice(start, end).indices(len(self))
        found = super().find(sub, start, end)
        self.operations += 1
        self.scanned += max(0, (found + len(sub) if found >= 0 else last) - first)
        return found

    def rfind(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        first, last, _ = slice(start, end).indices(len(self))
        found = super().rfind(sub, start, end)
        self.operations += 1
        self.scanned += max(0, last - (found if found >= 0 else first))
        return found

    def startswith(self, prefix: Any, start: Any = None, end: Any = None) -> bool:
        self.operations += 1
        self.scanned += len(prefix)
        return super().startswith(prefix, start, end)


# Patterns with several cross-segment wildcards and the paths that make a
# backtracking regex take quadratic time (or worse): none of them match.
ADVERSARIAL = [
    ("/**/x/**/y", "x/"),
    ("/**a**a**a**b", "a"),
    ("/{p:path}/{q:path}/end", "a/"),
    ("/**/a/b*c/**", "a/b/"),
    ("/**a*b**", "a/b/"),
    ("/**//**/*z", "a/"),
    ("/*a*a*a*b", "a"),
]


def _work(pattern: str, unit: str, size: int) -> tuple[int, int, Counted]:
    path = Counted("/" + unit * (size // len(unit)))
    assert not PathPattern(pattern).match(path)
    return path.operations, path.scanned, path


@pytest.mark.parametrize(("pattern", "unit"), ADVERSARIAL)
def test_adversarial_paths_cost_linear_work(pattern: str, unit: str) -> None:
    assert _regex(pattern).fullmatch("/" + unit * 50) is None  # the oracle agrees
    small_ops, small_scanned, _ = _work(pattern, unit, 16 * 1024)
    ops, scanned, path = _work(pattern, unit, 64 * 1024)
    # Four times the path, about four times the work (quadratic would be sixteen).
    assert ops <= 4.5 * small_ops + 10
    assert scanned <= 4.5 * small_scanned + 10
    # And a small multiple of the path: each character is looked at a few times.
    assert scanned <= 8 * len(path)
    assert ops <= 2 * len(path)
