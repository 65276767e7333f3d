"""docs/events.md describes every event type buttress defines, with every field.

The event types are found by importing every module of the package (a module whose
optional extra is not installed is skipped) and collecting the subclasses of
:class:`buttress.Event`, so a new event, or a new field on one, fails here until
the page describes it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import buttress
from buttress import Event

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "events.md"


def _import_all() -> None:
    for module in pkgutil.walk_packages(buttress.__path__, "buttress."):
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as exc:
            # An optional extra that is not installed; a missing buttress module is a bug.
            if (exc.name or "").partition(".")[0] == "buttress":
                raise


def _event_types() -> list[type[Event]]:
    _import_all()
    found: list[type[Event]] = []
    todo: list[type[Event]] = [Event]
    while todo:
        cls = todo.pop()
        # dataclass(slots=True) replaces the class it decorates; the replaced one
        # may linger among the subclasses until collected: keep the module's own.
        module = sys.modules.get(cls.__module__)
        ours = cls.__module__.partition(".")[0] == "buttress"
        if ours and getattr(module, cls.__qualname__, None) is cls and cls not in found:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


def _sections() -> dict[str, str]:
    """The page's ``### `Name``` sections: heading name -> text up to the next heading."""
    text = PAGE.read_text()
    heads = list(re.finditer(r"^#{1,3} (.*)$", text, re.MULTILINE))
    sections = {}
    for head, after in zip(heads, [*heads[1:], None], strict=True):
        name = head.group(1).strip().strip("`")
        sections[name] = text[head.end() : after.start() if after else len(text)]
    return sections


def _fields(cls: type) -> tuple[dataclasses.Field[object], ...]:
    return dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()


EVENT_TYPES = _event_types()


def test_the_walk_finds_the_known_events() -> None:
    names = {cls.__name__ for cls in EVENT_TYPES}
    assert {"Event", "CallRejected", "RetryScheduled", "CircuitStateChanged"} <= names
    assert {"StoreFellBack", "TimeoutOccurred", "FallbackUsed"} <= names


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_event_has_a_section_naming_each_field(event: type[Event]) -> None:
    section = _sections().get(event.__name__)
    assert section is not None, f"docs/events.md has no '### `{event.__name__}`' section"
    # Inherited fields are described with the class that declares them.
    inherited = {f.name for base in event.__bases__ if base is not object for f in _fields(base)}
    own = [f.name for f in _fields(event) if f.name not in inherited]
    missing = [name for name in own if f"`{name}`" not in section]
    assert missing == [], f"docs/events.md: {event.__name__} does not describe {missing}"


def test_every_event_is_in_the_summary_table() -> None:
    summary = _sections()["Every event"]
    missing = [
        cls.__name__
        for cls in EVENT_TYPES
        if cls is not Event and f"[`{cls.__name__}`]" not in summary
    ]
    assert missing == []


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda cls: cls.__name__)
def test_every_reason_in_the_docstring_is_on_the_page(event: type[Event]) -> None:
    # The docstrings list the stable values of a ``reason`` as ``"value"``.
    values = re.findall(r'``"(\w+)"``', event.__doc__ or "")
    section = _sections().get(event.__name__, "")
    assert [v for v in values if f'`"{v}"`' not in section] == []
