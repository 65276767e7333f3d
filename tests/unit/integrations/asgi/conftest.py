"""Fixtures of the ASGI tests."""

from __future__ import annotations

import pytest

from tests.unit.integrations.asgi.helpers import calls


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()
