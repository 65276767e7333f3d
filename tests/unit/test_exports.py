"""The façade: ``buttress.__all__`` is sorted, complete, documented."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
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
    # The façade imports its names on first use: every lazy name is exported, and
    # nothing public is defined beside them.
    public = {
        name
        for name, value in vars(buttress).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public - {"annotations", "TYPE_CHECKING", "Any"} <= set(buttress.__all__)
    assert set(buttress._HOMES) == set(buttress.__all__)


def test_names_come_from_where_the_type_checker_sees_them() -> None:
    # The TYPE_CHECKING imports and the lazy table must agree (one list, two uses).
    source = (ROOT / "src" / "buttress" / "__init__.py").read_text()
    block = source.split("if TYPE_CHECKING:", 1)[1].split("__version__", 1)[0]
    for name, home in buttress._HOMES.items():
        assert re.search(rf"from {re.escape(home)} import[^;]*\b{name}\b", block, re.S), name
        assert getattr(buttress, name) is getattr(__import__(home, fromlist=[name]), name)


def test_import_buttress_imports_no_submodule() -> None:
    code = "import buttress, sys; print(sorted(m for m in sys.modules if m.startswith('buttress')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['buttress']"


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


def test_every_exported_error_lives_in_buttress_errors() -> None:
    # One place to import errors from: buttress.errors holds every error the
    # façade exports (StoreError included), wherever else it is re-exported.
    import buttress.errors

    exported = [getattr(buttress, name) for name in buttress.__all__]
    errors = {
        value.__name__
        for value in exported
        if isinstance(value, type) and issubclass(value, buttress.ButtressError)
    }
    assert errors <= set(buttress.errors.__all__)
    assert {"StoreError", "StoreUnavailable", "RetryExhausted"} <= errors
