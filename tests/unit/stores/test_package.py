"""The stores and ratelimit packages: exports, and the optional redis dependency."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import buttress.ratelimit
import buttress.stores


@pytest.mark.parametrize("module", [buttress.stores, buttress.ratelimit])
def test_exports_resolve(module: object) -> None:
    # Their order is ruff's (RUF022): constants, then classes, then functions.
    names = module.__all__  # type: ignore[attr-defined]
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(module, name) is not None


def test_importing_buttress_stores_does_not_import_redis() -> None:
    code = "import buttress.stores, buttress.ratelimit, sys; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "buttress.stores.redis", raising=False)
    with pytest.raises(ImportError, match=r"buttress\[redis\]"):
        importlib.import_module("buttress.stores.redis")


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        buttress.stores.NoSuchStore  # type: ignore[attr-defined]  # noqa: B018
