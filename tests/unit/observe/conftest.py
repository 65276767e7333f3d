"""Each test starts with an empty event tally and nothing instrumented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from buttress.observe import uninstrument
from buttress.observe.metrics import _unsubscribe_tally, tally


@pytest.fixture(autouse=True)
def _fresh_tally() -> Iterator[None]:
    counts = tally(subscribe=False)
    counts.clear()
    yield
    uninstrument()
    _unsubscribe_tally()
    counts.clear()
