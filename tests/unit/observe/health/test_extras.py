"""The ready-made checks: each behind its extra, loaded only when asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from buttress.errors import ConfigError
from buttress.observe import health

READY_MADE = {
    "postgres_check": ("psycopg", "postgres", "postgresql://localhost/app"),
    "redis_check": ("redis", "redis", "redis://localhost:6379/0"),
    "rabbitmq_check": ("aio_pika", "rabbitmq", "amqp://localhost/"),
    "nats_check": ("nats", "nats", "nats://localhost:4222"),
    "http_check": ("httpx", "httpx", "http://localhost/health"),
}


def test_importing_the_package_loads_no_driver() -> None:
    code = (
        "import sys, buttress.observe.health, buttress.integrations.asgi; "
        "print(sorted({m.partition('.')[0] for m in sys.modules} & "
        "{'psycopg', 'redis', 'aio_pika', 'aiormq', 'nats', 'httpx'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", list(READY_MADE))
def test_a_missing_driver_names_the_extra(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    package, extra, _ = READY_MADE[name]
    module = f"buttress.observe.health._{'httpx' if extra == 'httpx' else extra}"
    for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, package, None)  # "not installed"
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delitem(vars(health), name, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'buttress\[{extra}\]'"):
        getattr(health, name)


@pytest.mark.parametrize("name", list(READY_MADE))
def test_each_builds_a_named_check_and_refuses_a_foreign_url(name: str) -> None:
    factory = getattr(health, name)
    _, _, url = READY_MADE[name]
    check = factory(url, timeout=3, critical=False)
    assert (check.timeout, check.critical) == (3, False)
    with pytest.raises(ConfigError) as caught:
        factory("ftp://localhost/")
    assert caught.value.path == "url"


def test_a_url_password_is_masked() -> None:
    check = health.postgres_check("postgresql://app:p%40ss@localhost/app")
    assert set(check._secrets) == {"p%40ss", "p@ss"}


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"expect": 42}, "expect"),
        ({"expect": ()}, "expect"),
        ({"expect": True}, "expect"),
        ({"method": "GET /"}, "method"),
    ],
)
def test_http_check_options(options: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        health.http_check("http://localhost/", **options)  # type: ignore[arg-type]
    assert caught.value.path == path


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        health.mysql_check  # noqa: B018
    assert "postgres_check" in dir(health)
