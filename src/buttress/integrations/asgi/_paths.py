"""Path patterns (``/items/{id}``, ``/files/**``) matched in time linear in the path.

A pattern is matched against the whole of ``scope["path"]``:

- ``*`` matches any run of characters within one segment (no ``/``), empty too;
- ``**`` matches any run of characters, ``/`` included, empty too;
- ``{name}`` matches one non-empty run within a segment;
- ``{name:path}`` matches any non-empty run, ``/`` included;
- everything else is literal (``.`` is a dot; a decoded ``%0A`` is a character).

A regular expression would say the same (``[^/]*``, ``.*``, ``[^/]+``, ``.+``), but
a backtracking engine takes quadratic time or worse on it: ``/**/x/**/y`` against a
16 KB path cost a quarter of a second per request. Here nothing backtracks:

1. The pattern is cut at its cross-segment wildcards (``**``, ``{name:path}``) into
   *blocks*. A block's own wildcards cannot cross a ``/``, so every ``/`` of the
   path region a block matches is one of the block's literal slashes: a block is
   a fixed number of *segment globs* joined by ``/``.
2. The first block must match at the start of the path, the last one at its end,
   and each block in between at the earliest place that ends soonest after the
   previous one — the one choice that leaves the most room for the rest, since a
   cross-segment wildcard between them takes whatever lies in between.
3. A segment glob (literals and in-segment wildcards) is matched greedily, the
   way ``fnmatch`` ought to: each literal at its leftmost (or, matching from the
   right, rightmost) place, found by ``str.find``/``str.rfind``.

Every ``find`` is bounded by the segment it searches, and each segment is looked
at a bounded number of times per block, so a match costs a number of string
operations linear in the length of the path (times the size of the pattern).
The commonest shapes take shortcuts: a literal pattern is one comparison,
``/prefix/**`` one ``startswith``, and a pattern with no cross-segment wildcard and
at most one wildcard per segment (``/items/{id}``) a regex, which cannot backtrack
badly on that shape.
A ``{name}`` right beside ``**`` or ``{name:path}`` (``/**{id}``) has no
sensible meaning and is refused when the pattern is compiled.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from buttress.errors import ConfigError

__all__ = ["PathPattern"]

_TOKEN = re.compile(r"\*\*|\*|\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


class _Glob(NamedTuple):
    """A segment glob: ``head`` then (wildcard of at least ``min`` characters, literal) pairs.

    ``steps`` are those pairs, the last one included; ``last`` and ``last_min`` repeat
    the last pair, ``middle`` all others, for the matchers anchored at the end.
    ``literal`` is true when there is no wildcard at all (``steps`` is empty).
    """

    head: str
    steps: tuple[tuple[int, str], ...]
    middle: tuple[tuple[int, str], ...]
    last_min: int
    last: str
    literal: bool


def _glob(items: list[str | int]) -> _Glob:
    """A glob from alternating items: literal text (``str``) and wildcard minimums (``int``)."""
    head = ""
    steps: list[tuple[int, str]] = []
    pending: int | None = None
    for item in items:
        if isinstance(item, int):
            pending = item if pending is None else pending + item
        elif pending is None:
            if steps:
                steps[-1] = (steps[-1][0], steps[-1][1] + item)
            else:
                head += item
        else:
            steps.append((pending, item))
            pending = None
    if pending is not None:
        steps.append((pending, ""))
    if not steps:
        return _Glob(head, (), (), 0, "", literal=True)
    last_min, last = steps[-1]
    return _Glob(head, tuple(steps), tuple(steps[:-1]), last_min, last, literal=False)


# Segment-glob matchers. Each works on path[start:end], a range holding no "/".


def _full(glob: _Glob, path: str, start: int, end: int) -> bool:
    """Whether ``glob`` matches ``path[start:end]`` exactly."""
    head = glob.head
    if glob.literal:
        return end - start == len(head) and path.startswith(head, start)
    stop = end - len(glob.last)
    # (Offsets below zero would count from the end of the string: never pass one.)
    if stop < start or not path.startswith(head, start) or not path.startswith(glob.last, stop):
        return False
    position = start + len(head)
    for minimum, literal in glob.middle:
        found = path.find(literal, position + minimum, stop)
        if found < 0:
            return False
        position = found + len(literal)
    return stop - position >= glob.last_min


def _prefix(glob: _Glob, path: str, start: int, end: int) -> int:
    """The least ``e <= end`` such that ``glob`` matches ``path[start:e]``; -1 if none."""
    position = start + len(glob.head)
    if position > end or not path.startswith(glob.head, start):
        return -1
    for minimum, literal in glob.steps:
        found = path.find(literal, position + minimum, end)
        if found < 0:
            return -1
        position = found + len(literal)
    return position


def _suffix(glob: _Glob, path: str, low: int, end: int) -> bool:
    """Whether ``glob`` matches ``path[t:end]`` for some ``t >= low``."""
    if glob.literal:
        start = end - len(glob.head)
        return start >= low and path.startswith(glob.head, start)
    stop = end - len(glob.last)
    if stop < low or not path.startswith(glob.last, stop):
        return False
    limit = stop - glob.last_min
    for minimum, literal in reversed(glob.middle):
        if limit < low:
            return False
        found = path.rfind(literal, low, limit)
        if found < 0:
            return False
        limit = found - minimum
    return limit >= low and path.rfind(glob.head, low, limit) >= 0


def _segment_end(path: str, start: int) -> int:
    end = path.find("/", start)
    return len(path) if end < 0 else end


class _Block(NamedTuple):
    """Segment globs joined by literal slashes; ``anchor`` and ``offset`` find candidates.

    ``anchor`` is the literal text around the block's first slash (the end of the
    first glob, the slash, the start of the second, and on while the globs are
    plain literals); the slash is ``offset`` characters into it.
    """

    globs: tuple[_Glob, ...]
    anchor: str
    offset: int


def _block(items: list[str | int]) -> _Block:
    globs: list[list[str | int]] = [[]]
    for item in items:
        if isinstance(item, int):
            globs[-1].append(item)
            continue
        first, *others = item.split("/")
        globs[-1].append(first)
        for text in others:
            globs.append([text])
    compiled = tuple(_glob(parts) for parts in globs)
    if len(compiled) == 1:
        return _Block(compiled, compiled[0].head, 0)
    before = compiled[0].head if compiled[0].literal else compiled[0].last
    # The anchor runs on through segments that are plain literals: the longer it
    # is, the fewer false candidates there are to check.
    anchor = f"{before}/{compiled[1].head}"
    for index in range(1, len(compiled) - 1):
        if not compiled[index].literal:
            break
        anchor += f"/{compiled[index + 1].head}"
    return _Block(compiled, anchor, len(before))


def _match_first(block: _Block, path: str, whole: bool) -> int:
    """Where ``block``, matched at the start of the path, ends soonest; -1 if it cannot.

    With ``whole`` the block must also end where the path ends.
    """
    globs = block.globs
    start = 0
    for glob in globs[:-1]:
        slash = path.find("/", start)
        if slash < 0 or not _full(glob, path, start, slash):
            return -1
        start = slash + 1
    if whole:
        end = len(path)
        if path.find("/", start) >= 0 or not _full(globs[-1], path, start, end):
            return -1
        return end
    return _prefix(globs[-1], path, start, _segment_end(path, start))


def _match_last(block: _Block, path: str, low: int) -> bool:
    """Whether ``block`` matches a suffix of the path that starts at ``low`` or later."""
    globs = block.globs
    end = len(path)
    for glob in globs[:0:-1]:
        slash = path.rfind("/", low, end)
        if slash < 0 or not _full(glob, path, slash + 1, end):
            return False
        end = slash
    slash = path.rfind("/", low, end)
    return _suffix(globs[0], path, low if slash < 0 else slash + 1, end)


def _match_inner(block: _Block, path: str, low: int) -> int:
    """The soonest end of a match of ``block`` starting at ``low`` or later; -1 if none."""
    globs = block.globs
    anchor = block.anchor
    if len(globs) == 1:
        # Within one segment. The head is a non-empty literal (see _compile): the
        # greedy match from its leftmost place ends soonest, and if it fails, no
        # later start in the same segment can succeed — go to the next segment.
        glob = globs[0]
        while True:
            found = path.find(anchor, low)
            if found < 0:
                return -1
            end = _segment_end(path, found)
            matched = _prefix(glob, path, found, end)
            if matched >= 0:
                return matched
            low = end + 1
    # Across segments: each occurrence of the anchor puts the block's first slash at
    # one place; the first place that works ends soonest.
    offset = block.offset
    found = path.find(anchor, low)
    while found >= 0:
        slash = found + offset
        before = path.rfind("/", low, slash)
        matched = -1
        if _suffix(globs[0], path, low if before < 0 else before + 1, slash):
            matched = _match_from_slash(globs, path, slash)
        if matched >= 0:
            return matched
        found = path.find(anchor, found + 1)
    return -1


def _match_from_slash(globs: tuple[_Glob, ...], path: str, slash: int) -> int:
    """Match ``globs[1:]`` after the slash at ``slash``; the soonest end, or -1."""
    start = slash + 1
    for glob in globs[1:-1]:
        slash = path.find("/", start)
        if slash < 0 or not _full(glob, path, start, slash):
            return -1
        start = slash + 1
    return _prefix(globs[-1], path, start, _segment_end(path, start))


class PathPattern:
    """A compiled path pattern (see the module docs); :meth:`match` tests a whole path."""

    __slots__ = ("_blocks", "_gaps", "_literal", "_prefix", "_regex", "pattern")

    def __init__(self, pattern: str, *, path: str = "path") -> None:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ConfigError(f"must be a pattern starting with '/', got {pattern!r}", path=path)
        self.pattern = pattern
        blocks, gaps = _compile(pattern, path)
        self._blocks = tuple(_block(items) for items in blocks)
        self._gaps = tuple(gaps)
        # The two commonest shapes, answered by one string comparison each.
        self._literal: str | None = None
        self._prefix: str | None = None
        self._regex: re.Pattern[str] | None = None
        if len(blocks) == 1 and all(isinstance(item, str) for item in blocks[0]):
            self._literal = "".join(str(item) for item in blocks[0])
        elif len(blocks) == 1 and all(len(glob.steps) <= 1 for glob in self._blocks[0].globs):
            # No wildcard crosses a segment and no segment has two: every "/" of the
            # path is one of the pattern's, and each wildcard's length is forced by
            # the literal after it. A regex cannot backtrack badly here, and it is
            # the fastest matcher there is (``/items/{id}``, ``/a/*.json``).
            self._regex = _segment_regex(blocks[0])
        elif (
            len(blocks) == 2
            and not blocks[1]
            and gaps == [0]
            and all(isinstance(item, str) for item in blocks[0])
        ):
            self._prefix = "".join(str(item) for item in blocks[0])

    def match(self, path: str) -> bool:
        """Whether the pattern matches the whole of ``path``."""
        if self._literal is not None:
            return path == self._literal
        if self._prefix is not None:
            return path.startswith(self._prefix)
        if self._regex is not None:
            return self._regex.fullmatch(path) is not None
        blocks = self._blocks
        gaps = self._gaps
        if not gaps:
            return _match_first(blocks[0], path, whole=True) >= 0
        position = _match_first(blocks[0], path, whole=False)
        if position < 0:
            return False
        for index in range(1, len(blocks) - 1):
            position = _match_inner(blocks[index], path, position + gaps[index - 1])
            if position < 0:
                return False
        return _match_last(blocks[-1], path, position + gaps[-1])

    def __repr__(self) -> str:
        return f"PathPattern({self.pattern!r})"


def _segment_regex(items: list[str | int]) -> re.Pattern[str]:
    """The regex of one block whose segments hold one wildcard at most (see PathPattern)."""
    parts = [
        re.escape(item) if isinstance(item, str) else "[^/]*" if item == 0 else f"[^/]{{{item},}}"
        for item in items
    ]
    return re.compile("".join(parts), re.DOTALL)


def _compile(pattern: str, path: str) -> tuple[list[list[str | int]], list[int]]:
    """Cut ``pattern`` into blocks (literal text and in-segment wildcard minimums) and
    the minimum length of each cross-segment wildcard between two blocks.
    """
    # Each run of adjacent wildcards becomes one: in-segment only, with the sum of
    # their minimums, or — if any of them crosses segments — one that crosses.
    items: list[str | tuple[bool, int, bool]] = []  # text | (crosses, minimum, has {name})
    position = 0
    for match in _TOKEN.finditer(pattern):
        if match.start() > position:
            items.append(pattern[position : match.start()])
        token = match.group(0)
        if token == "**":
            wildcard = (True, 0, False)
        elif token == "*":
            wildcard = (False, 0, False)
        elif match.group(2):
            wildcard = (True, 1, False)
        else:
            wildcard = (False, 1, True)
        previous = items[-1] if items else None
        if isinstance(previous, tuple):
            crosses = previous[0] or wildcard[0]
            named = previous[2] or wildcard[2]
            if crosses and named:
                raise ConfigError(
                    f"{pattern!r}: a '{{name}}' segment right beside '**' or '{{name:path}}' "
                    "matches nothing definite; put a literal such as '/' between them",
                    path=path,
                )
            items[-1] = (crosses, previous[1] + wildcard[1], previous[2] or wildcard[2])
        else:
            items.append(wildcard)
        position = match.end()
    if position < len(pattern):
        items.append(pattern[position:])
    blocks: list[list[str | int]] = [[]]
    gaps: list[int] = []
    for item in items:
        if isinstance(item, str):
            blocks[-1].append(item)
        elif item[0]:
            gaps.append(item[1])
            blocks.append([])
        else:
            # Runs are merged: an in-segment wildcard never stands beside a crossing one.
            blocks[-1].append(item[1])
    return blocks, gaps
