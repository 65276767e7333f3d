"""``python -m buttress.demo`` runs and shows every policy acting.

The demo is a real-time program, so this lives with the integration tests; at 5x
speed it takes about half a second.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

from rich.console import Console

from buttress.demo import run


def test_demo_shows_each_policy_acting() -> None:
    buffer = io.StringIO()
    outcomes = asyncio.run(run(Console(file=buffer, width=120), speed=5.0))
    text = buffer.getvalue()
    assert outcomes["ok"] > 0
    assert outcomes["circuit open"] > 0
    assert outcomes["bulkhead full"] > 0
    assert outcomes["timed out"] > 0
    for fragment in (
        "retry    attempt 1 failed",
        "breaker  closed → open",
        "breaker  open → half_open",
        "breaker  half_open → closed",
        "bulkhead rejected a call: bulkhead_full",
        "timeout  call exceeded",
        "What happened",
    ):
        assert fragment in text, fragment


def test_demo_module_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buttress.demo", "--fast"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "What happened" in result.stdout
