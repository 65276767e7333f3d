"""The import graph points down, and optional packages stay inside their extra's module.

Layers, lowest first (see ``shared/DESIGN.md``):

0. the bottom: errors, clock, events, option checks — no other buttress module;
1. the execution core: strategies, pipelines, generated drivers, the outcome model,
   the time budget, options;
2. stores — beside the policies, importing neither policies nor rate limiting;
3. policies and rate limiting (which use stores);
4. observability, integrations, messaging, the registry;
5. webhooks; 6. the gateway and the CLI; 7. the façade (``buttress``), demo, testing.

A module may import its own layer and the layers below. Imports under
``if TYPE_CHECKING:`` are not imports at run time and are not counted. The check
reads the source (``ast``), so an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "buttress"

# (rank, dotted prefixes): the longest matching prefix decides.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (
        0,
        (
            "buttress.errors",
            "buttress.clock",
            "buttress._events",
            "buttress.events",
            "buttress._switches",
            "buttress._validate",
        ),
    ),
    (
        1,
        (
            "buttress._strategy",
            "buttress._codegen",
            "buttress._outcome",
            "buttress._deadline",
            "buttress._options",
            "buttress.options",
            "buttress.pipeline",
        ),
    ),
    (2, ("buttress.stores",)),
    (3, ("buttress.policies", "buttress.ratelimit")),
    (
        4,
        (
            "buttress.observe",
            "buttress.integrations",
            "buttress.messaging",
            "buttress.registry",
        ),
    ),
    (5, ("buttress.webhooks",)),
    (6, ("buttress.server", "buttress.cli")),
    (7, ("buttress", "buttress.demo", "buttress.testing", "buttress.__main__")),
]

# Optional package -> fragments one of which the importing module's name must contain.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "psycopg": ("postgres", "psycopg"),
    "psycopg_pool": ("postgres", "psycopg"),
    "asyncpg": ("postgres",),
    "aio_pika": ("rabbitmq", "amqp"),
    "aiormq": ("rabbitmq", "amqp"),
    "nats": ("nats",),
    "starlette": ("asgi", "server"),
    "fastapi": ("asgi", "server"),
    "httpx": ("httpx",),
    "aiohttp": ("aiohttp", "webhooks", "server"),
    "prometheus_client": ("prometheus",),
    "opentelemetry": ("otel",),
    "rich": ("cli", "server", "demo"),
    "click": ("cli",),
    "yaml": ("cli", "ops"),
    "uvicorn": ("server", "cli"),
    "structlog": ("structlog", "logging"),
    "sqlalchemy": ("sqlalchemy",),
    "aiosqlite": ("sqlite",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rank(module: str) -> int:
    best, best_len = None, -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _in_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every run-time import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _in_type_checking(child):
                for other in child.orelse:
                    yield from visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                yield target, child.lineno
                for alias in child.names:
                    # "from buttress.stores import redis" imports a submodule.
                    sub = f"{target}.{alias.name}"
                    if (SRC / Path(*sub.split("."))).exists() or (
                        SRC / Path(*sub.split("."))
                    ).with_suffix(".py").exists():
                        yield sub, child.lineno
            yield from visit(child)

    yield from visit(tree)


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_there_is_source_to_check() -> None:
    assert len(SOURCES) > 20


def upward(module: str, targets: list[tuple[str, int]]) -> list[str]:
    """The imports of ``module`` that break the layering, described."""
    mine = rank(module)
    found = []
    for target, line in targets:
        if not (target == "buttress" or target.startswith("buttress.")):
            continue
        if target == "buttress":
            if mine < 7:
                found.append(f"line {line}: imports the façade 'buttress'")
            continue
        theirs = rank(target)
        if theirs > mine:
            found.append(f"line {line}: {target} (layer {theirs}) from layer {mine}")
        elif mine == 2 and theirs == 3:
            # Stores sit beside the policies and import neither them nor rate limiting.
            found.append(f"line {line}: stores import {target}")
    return found


def stray(module: str, targets: list[tuple[str, int]]) -> list[str]:
    """The imports of optional packages by ``module`` outside their extra's modules."""
    found = []
    for target, line in targets:
        fragments = OPTIONAL.get(target.partition(".")[0])
        if fragments is not None and not any(f in module for f in fragments):
            found.append(f"line {line}: {target}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_imports_point_down(path: Path) -> None:
    module = module_name(path)
    found = upward(module, list(imports(path)))
    assert found == [], f"{module} imports upward:\n" + "\n".join(found)


@pytest.mark.parametrize("path", SOURCES, ids=module_name)
def test_optional_packages_stay_in_their_extras_module(path: Path) -> None:
    module = module_name(path)
    found = stray(module, list(imports(path)))
    assert found == [], f"{module} imports optional packages outside their extra:\n" + "\n".join(
        found
    )


def test_the_rules_catch_violations() -> None:
    assert upward("buttress.errors", [("buttress.policies.retry", 3)]) == [
        "line 3: buttress.policies.retry (layer 3) from layer 0"
    ]
    assert upward("buttress.stores.memory", [("buttress.ratelimit", 5)]) == [
        "line 5: buttress.ratelimit (layer 3) from layer 2"
    ]
    assert upward("buttress.policies.retry", [("buttress", 1)]) == [
        "line 1: imports the façade 'buttress'"
    ]
    assert upward("buttress.policies.retry", [("buttress.stores", 1), ("asyncio", 2)]) == []
    assert stray("buttress.policies.retry", [("redis.asyncio", 7)]) == ["line 7: redis.asyncio"]
    assert stray("buttress.stores.redis", [("redis.asyncio", 7)]) == []


def test_type_checking_imports_are_not_counted() -> None:
    targets = dict(imports(PACKAGE / "events.py"))
    assert "buttress._events" in targets
    assert not any(name.startswith("buttress.policies") for name in targets)
