"""``import buttress`` stays light: no optional dependency is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

OPTIONAL = (
    "redis",
    "psycopg",
    "aio_pika",
    "aiormq",
    "nats",
    "starlette",
    "httpx",
    "aiohttp",
    "prometheus_client",
    "opentelemetry",
    "rich",
    "uvicorn",
)


def _loaded_after(statement: str) -> list[str]:
    code = textwrap.dedent(
        f"""
        import json, sys
        {statement}
        optional = {OPTIONAL!r}
        print(json.dumps(sorted(
            name for name in sys.modules if name.partition(".")[0] in optional
        )))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_import_buttress_imports_no_optional_dependency() -> None:
    assert _loaded_after("import buttress") == []


def test_the_check_sees_an_optional_import() -> None:
    # The probe itself works: importing a driver shows up.
    assert "httpx" in _loaded_after("import buttress, httpx")
