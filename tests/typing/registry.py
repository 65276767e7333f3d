"""The registry's typed API: ``mypy --strict`` must accept this file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, assert_type

from buttress import Bulkhead, Pipeline, Registry
from buttress._strategy import Call, Policy, Strategy
from buttress.registry import Key, Kind, kinds, register_kind

R = TypeVar("R")


@register_kind("typing-decorated")
class Decorated(Policy):
    """A policy registered with the decorator form keeps its class type."""

    def execute(self, call: Call[R]) -> R:
        return call()


def make(*, name: str) -> Bulkhead:
    return Bulkhead(1, name=name)


factory: Callable[..., Bulkhead] = register_kind("typing-factory", make)
assert_type(Decorated, type[Decorated])

registry = Registry.from_toml("buttress.toml", env={}, missing_ok=True)
assert_type(registry, Registry)
assert_type(Registry.from_mapping({"policies": {}}, env={"BUTTRESS_X__Y": "1"}), Registry)
assert_type(registry.get("api"), Strategy)
assert_type(registry.pipeline("api"), Pipeline)
kind: Kind = kinds()["retry"]
keys: tuple[Key, ...] = kind.table_keys()
