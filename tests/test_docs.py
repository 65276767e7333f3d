"""Every ```python example in README.md and docs/ runs, as a program of its own.

Examples that talk to a service (they mention ``redis://``, ``postgresql://``, ...)
need it; see :func:`tests.conftest.require_service`.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
SERVICE_HINTS = {
    "redis": ("redis://",),
    "postgres": ("postgresql://",),
    "rabbitmq": ("amqp://",),
    "nats": ("nats://",),
}


def _examples() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = []
    for file in files:
        if not file.exists():
            continue
        text = file.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((f"{file.relative_to(ROOT)}:{line}", match.group(1)))
    return found


EXAMPLES = _examples()


def test_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service, hints in SERVICE_HINTS.items():
        if any(hint in code for hint in hints):
            require_service(service)
    script = tmp_path / "example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    runpy.run_path(str(script), run_name="__main__")
