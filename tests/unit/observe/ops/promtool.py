"""Run Prometheus's ``promtool`` (Debian's ``prometheus`` package; ``.ci/run`` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def promtool() -> str:
    """The path of ``promtool``; skips the test when it is absent, fails in CI."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    message = "promtool is not installed (apt-get install prometheus)"
    if os.environ.get("BUTTRESS_REQUIRE_SERVICES"):
        pytest.fail(f"{message} and BUTTRESS_REQUIRE_SERVICES is set", pytrace=False)
    pytest.skip(message)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS``, its output captured (no timing depends on it: it runs offline)."""
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
