"""Keys described for people: TOML types, defaults and meanings for the reference page.

A key's type comes from its annotation (``int | None`` is "integer"), its default
is written as TOML, and its meaning comes from the options field's ``doc`` or, for a
kind without an options class, from the sentence of its docstring about it.
"""

from __future__ import annotations

import datetime
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal

__all__ = [
    "CONVERSION_TYPES",
    "REQUIRED",
    "code_only_type",
    "describe",
    "docs_for",
    "is_duration",
    "plain",
    "summary",
    "toml",
]


class _Required:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a key that a table must give."""

_TYPE_WORDS: dict[object, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    datetime.timedelta: "duration",
}

CONVERSION_TYPES = {
    "exceptions": "exception name or list of names",
    "seconds": "duration",
    "limits": "rate string, limit table, or a list of them",
    "rates": "rate string, limit table, or a list of them",
}


_TEXT_ATOMS: dict[str, object] = {
    "None": type(None),
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "timedelta": datetime.timedelta,
    "datetime.timedelta": datetime.timedelta,
}


def _atoms(hint: object) -> tuple[object, ...]:
    if isinstance(hint, str):  # an annotation that could not be resolved: its words
        return tuple(_TEXT_ATOMS.get(word.strip(), word.strip()) for word in hint.split("|"))
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(atom for arg in typing.get_args(hint) for atom in _atoms(arg))
    return (hint,)


def describe(hint: object, text: str) -> str:
    """A type for people who write TOML: ``int | None`` is "integer"."""
    words: list[str] = []
    for atom in _atoms(hint):
        if atom is type(None):
            continue
        if typing.get_origin(atom) is Literal:
            words.extend(f"`{toml(value)}`" for value in typing.get_args(atom))
            continue
        if atom is object or atom is Any:
            return "any value"
        word = _TYPE_WORDS.get(atom)
        if word is None and typing.get_origin(atom) in (list, tuple):
            word = "list"
        if word is not None and word not in words:
            words.append(word)
    if "integer" in words and "number" in words:
        words.remove("integer")
    if not words:
        return f"`{text}`" if text else "any value"
    if len(words) > 2:
        return ", ".join(words[:-1]) + " or " + words[-1]
    return " or ".join(words)


def is_duration(hint: object) -> bool:
    if isinstance(hint, str):  # an annotation that could not be resolved
        return "timedelta" in hint
    return datetime.timedelta in _atoms(hint)


def code_only_type(hint: object) -> bool:
    """Whether no TOML value could ever be of this type: a callable (or ``None``)."""
    if isinstance(hint, str):
        words = [word.strip() for word in hint.split("|") if word.strip() != "None"]
        return bool(words) and all(word.startswith("Callable") for word in words)
    atoms = [atom for atom in _atoms(hint) if atom is not type(None)]
    return bool(atoms) and all((typing.get_origin(atom) or atom) is Callable for atom in atoms)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml(value: object) -> str:
    """A default as a TOML value (or the words people read for one)."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, datetime.timedelta):
        return repr(value.total_seconds())
    if isinstance(value, type):
        return _quoted(value.__name__)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return "unset"


# Patterns used only to write the reference page: left to re's cache, not compiled
# at import.
_SENTENCE = r"(?<=[.!?])\s+(?=[A-Z`*(-])"
_ROLE = r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`"


def plain(text: str) -> str:
    """reST of a docstring as Markdown for a table cell."""
    text = re.sub(_ROLE, r"`\1`", text)
    text = text.replace("``", "`").replace("\\", "")
    return " ".join(text.split()).replace("|", "\\|")


def docs_for(keys: Iterable[str], docstrings: Iterable[str]) -> dict[str, str]:
    """For each key, the sentence of ``docstrings`` about it, as Markdown.

    For kinds without an options class, whose keys have no ``doc`` of their own: of
    the sentences naming a key, the one naming it nearest its start is most often
    the one about it (``"``max_elapsed`` bounds the time..."``). A sentence already
    given to an earlier key is not repeated: the later key points to that one.
    """
    sentences = [
        sentence.lstrip("- ")
        for docstring in docstrings
        for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(docstring))
        for sentence in re.split(_SENTENCE, " ".join(paragraph.split()))
    ]
    docs: dict[str, str] = {}
    used: dict[str, str] = {}
    for key in keys:
        mark = re.compile(rf"``{re.escape(key)}(?:``|=)")
        found = sorted(
            (match.start(), index)
            for index, sentence in enumerate(sentences)
            if (match := mark.search(sentence)) is not None
        )
        fresh = [sentences[index] for _, index in found if sentences[index] not in used]
        if fresh:
            used[fresh[0]] = key
            docs[key] = plain(fresh[0])
        elif found:
            docs[key] = f"See `{used[sentences[found[0][1]]]}`."
        else:
            docs[key] = ""
    return docs


def summary(docstring: str | None) -> str:
    if not docstring:
        return ""
    first = re.split(r"\n\s*\n", inspect.cleandoc(docstring))[0]
    return plain(first)
