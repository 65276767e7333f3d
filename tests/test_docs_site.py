"""The docs site's own machinery: link rewriting, and a reference page per public module.

The site itself is built by ``make docs`` (part of ``make test``) in strict mode;
these tests pin down what the build hook does to links, which the build would
only notice once a link broke.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

PUBLIC_MODULES = [
    "buttress",
    "buttress.pipeline",
    "buttress.policies.retry",
    "buttress.policies.backoff",
    "buttress.policies.circuit",
    "buttress.policies.timeout",
    "buttress.policies.bulkhead",
    "buttress.policies.fallback",
    "buttress.ratelimit",
    "buttress.stores",
    "buttress.integrations.asgi",
    "buttress.integrations.httpx",
    "buttress.integrations.aiohttp",
    "buttress.observe",
    "buttress.messaging",
    "buttress.observe.health",
    "buttress.policies.budget",
    "buttress.testing",
    "buttress.clock",
    "buttress.errors",
    "buttress.events",
    "buttress.registry",
]


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    pytest.importorskip("griffe", reason="the docs extra is not installed")
    spec = importlib.util.spec_from_file_location("_docs_hooks", ROOT / "docs/_mkdocs/hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPO = "https://github.com/buttress-dev/buttress/blob/main/"


@pytest.mark.parametrize(
    ("source", "markdown", "expected"),
    [
        ("README.md", "[Policies](docs/policies.md)", "[Policies](policies.md)"),
        ("README.md", "[b](docs/policies/retry.md#events)", "[b](policies/retry.md#events)"),
        ("README.md", "[Benchmarks](bench/RESULTS.md)", f"[Benchmarks]({REPO}bench/RESULTS.md)"),
        (
            "docs/policies.md",
            "[README](../README.md#configuration)",
            "[README](index.md#configuration)",
        ),
        ("docs/policies/retry.md", "[home](../../README.md)", "[home](../index.md)"),
        ("docs/policies/retry.md", "[log](../../CHANGELOG.md)", f"[log]({REPO}CHANGELOG.md)"),
        (
            "docs/policies/retry.md",
            "[cb](circuit-breaker.md#states)",
            "[cb](circuit-breaker.md#states)",
        ),
        ("docs/policies.md", "[up](#errors)", "[up](#errors)"),
        ("docs/policies.md", "[ext](https://example.org/x.md)", "[ext](https://example.org/x.md)"),
        ("docs/policies.md", "`f[0](x.md)`", "`f[0](x.md)`"),
        ("docs/policies.md", "```python\nf[0](x.md)\n```\n", "```python\nf[0](x.md)\n```\n"),
    ],
)
def test_links_point_into_the_site(
    hooks: ModuleType, source: str, markdown: str, expected: str
) -> None:
    assert hooks.rewrite_links(markdown, source) == expected


def test_the_readme_links_resolve_on_the_site(hooks: ModuleType) -> None:
    readme = hooks.rewrite_links((ROOT / "README.md").read_text(), "README.md")
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", readme):
        assert target.startswith("https://") or (ROOT / "docs" / target).is_file(), target


def test_every_public_module_has_a_reference_page() -> None:
    documented = {
        match.group(1)
        for page in (ROOT / "docs" / "reference").rglob("*.md")
        for match in re.finditer(r"^::: ([\w.]+)\s*$", page.read_text(), re.MULTILINE)
    }
    assert [m for m in PUBLIC_MODULES if m not in documented] == []


def test_every_reference_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted((ROOT / "docs" / "reference").rglob("*.md"))
    missing = [p for p in pages if str(p.relative_to(ROOT / "docs")) not in nav]
    assert missing == []
