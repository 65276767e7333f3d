"""mypy refuses what the runtime refuses: a sync entry point given an async function."""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
from buttress import Pipeline, Retry, Timeout


async def flaky() -> int:
    return 1


async def main() -> int:
    a: int = await Retry(3).call(flaky)
    b: int = Timeout(0.1).call(flaky)
    return a + b + Pipeline(Retry()).call(flaky)
"""


def test_mypy_rejects_a_sync_call_of_an_async_function(tmp_path: Path) -> None:
    source = tmp_path / "refused.py"
    source.write_text(SNIPPET)
    out, err, status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(source),
        ]
    )
    assert status == 1, out + err
    lines = [line for line in out.splitlines() if "refused.py" in line]
    assert len(lines) == 3, out
    assert all("UseAcall" in line for line in lines), out
