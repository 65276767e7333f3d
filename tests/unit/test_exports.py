"""The façade: ``buttress.__all__`` is sorted, complete, documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import buttress

ROOT = Path(__file__).resolve().parents[2]


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_unique() -> None:
    assert list(buttress.__all__) == sorted(set(buttress.__all__), key=_isort_key)


def test_every_exported_name_resolves() -> None:
    for name in buttress.__all__:
        assert hasattr(buttress, name), name


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(buttress).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public - {"annotations"} == set(buttress.__all__)


def test_every_exported_name_is_documented() -> None:
    docs = "\n".join(
        p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    )
    missing = [n for n in buttress.__all__ if not re.search(rf"\b{re.escape(n)}\b", docs)]
    assert missing == []


def test_every_exported_callable_has_a_docstring() -> None:
    missing = [
        name
        for name in buttress.__all__
        if (inspect.isclass(getattr(buttress, name)) or inspect.isfunction(getattr(buttress, name)))
        and not inspect.getdoc(getattr(buttress, name))
    ]
    assert missing == []
