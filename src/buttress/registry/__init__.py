"""Named policies and pipelines, in code or declared in TOML.

Configuration is code first: ``registry.add("payments", Pipeline(...))``. The same
policies can be declared in ``buttress.toml`` (or under ``[tool.buttress]`` in
``pyproject.toml``) and overridden by ``BUTTRESS_*`` environment variables::

    [policies.api-retry]
    type = "retry"
    max_attempts = 4
    delay = "200ms"
    on = ["ConnectionError", "TimeoutError"]

    [policies.api-limit]
    type = "rate_limiter"
    store = "redis://127.0.0.1:6379/0"
    limits = "10/second; 1000/hour"

    [pipelines.api]
    policies = ["api-limit", "api-retry", { type = "bulkhead", max_concurrent = 10 }]

``BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS=6`` overrides one value (the key
path, ``__`` between its parts; see :mod:`buttress.registry._env`).

Everything is checked while loading, through the same checks the policies run in
code: an unknown type or key (the valid ones are listed), a bad value, a reference
to an undefined policy — anywhere, a limit table inside ``limits`` included —
raises :class:`~buttress.errors.ConfigError` whose ``path`` is the key path
(``policies.api-limit.limits[1].rate``); a value from the environment also names
its variable. A policy's name is its key under ``policies`` (stable across
processes, as state shared through Redis needs). A policy named once and used in
several pipelines is one object, so its state (a breaker's window, a bulkhead's
slots) is shared.

``type = "..."`` picks a *kind*; :func:`register_kind` adds your own. Every key of
every kind is listed in ``docs/configuration.md``, which
``python -m buttress.registry --reference`` writes from the kinds themselves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from buttress._strategy import Strategy
from buttress.errors import ConfigError
from buttress.pipeline import Pipeline
from buttress.registry._builtins import BUILTIN_KINDS
from buttress.registry._env import ENV_PREFIX, Origins, apply_env
from buttress.registry._kinds import (
    Key,
    Kind,
    kinds,
    lookup,
    message_of,
    register_kind,
    valid_types,
)
from buttress.registry._limits import convert_limits, limit_kinds
from buttress.registry._values import parse_duration

__all__ = [
    "BUILTIN_KINDS",
    "ENV_PREFIX",
    "SECTIONS",
    "Key",
    "Kind",
    "Registry",
    "convert_limits",
    "kinds",
    "limit_kinds",
    "parse_duration",
    "reference",
    "register_kind",
]

SECTIONS = ("policies", "pipelines")
"""The tables a configuration has (under ``[tool.buttress]`` in ``pyproject.toml``)."""

PIPELINE_KEYS = ("policies",)


def reference() -> str:
    """The configuration reference page (``docs/configuration.md``), as Markdown."""
    from buttress.registry._reference import render  # noqa: PLC0415 - for the CLI and tests

    return render()


class Registry:
    """A name → policy (or pipeline) map, filled in code or from configuration.

    ``Registry()`` is empty; :meth:`from_toml` and :meth:`from_mapping` fill one
    from configuration. ``registry.pipeline("api")`` returns a
    :class:`~buttress.Pipeline`, which is itself a decorator:
    ``@registry.pipeline("api")``.
    """

    def __init__(self) -> None:
        self._items: dict[str, Strategy] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ in code

    def add(self, name: str, strategy: Strategy) -> Strategy:
        """Register ``strategy`` under ``name``; a name can be registered once."""
        if not isinstance(strategy, Strategy):
            raise ConfigError(
                f"expected a policy or pipeline, got {type(strategy).__name__}", path=name
            )
        with self._lock:
            if name in self._items:
                raise ConfigError("already registered", path=name)
            self._items[name] = strategy
        return strategy

    def get(self, name: str) -> Strategy:
        """The policy or pipeline registered as ``name``."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "nothing"
            raise KeyError(f"no policy or pipeline named {name!r} (registered: {known})") from None

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline registered as ``name`` (a lone policy is wrapped in one)."""
        item = self.get(name)
        if isinstance(item, Pipeline):
            return item
        with self._lock:
            current = self._items[name]
            if isinstance(current, Pipeline):
                return current
            pipeline = Pipeline(item, name=name)
            self._items[name] = pipeline
        return pipeline

    def __getitem__(self, name: str) -> Strategy:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({sorted(self._items)!r})"

    # --------------------------------------------------------- from configuration

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, env: Mapping[str, str] | None = None
    ) -> Registry:
        """Build a registry from parsed configuration (``policies`` and ``pipelines``).

        ``env`` (default: none) supplies ``BUTTRESS_*`` overrides.
        """
        return cls._load(data, env=env, root="", source=None)

    @classmethod
    def from_toml(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Registry:
        """Load ``path``, or else ``./buttress.toml``, or else ``[tool.buttress]`` in
        ``./pyproject.toml``; then apply ``BUTTRESS_*`` overrides from ``env``
        (default: ``os.environ``).

        Finding no configuration is a :class:`~buttress.errors.ConfigError` that
        says where it looked (a deployment that lost its file should not run with
        no policies); ``missing_ok=True`` makes it an empty registry instead (still
        with the environment's overrides), as is ``Registry()`` in code.
        """
        environ = os.environ if env is None else env
        found = _find(None if path is None else Path(path), missing_ok=missing_ok)
        if found is None:
            return cls._load({}, env=environ, root="", source=None)
        source, data = found
        root = "tool.buttress." if source.name == "pyproject.toml" else ""
        return cls._load(data, env=environ, root=root, source=source)

    @classmethod
    def _load(
        cls,
        data: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None,
        root: str,
        source: Path | None,
    ) -> Registry:
        config = _copy(dict(data))
        origins = Origins()
        try:
            if env is not None:
                origins = apply_env(config, env, root=root.rstrip("."))
            return _build(cls(), config, root)
        except ConfigError as exc:
            variable = origins.variable_for(exc.path)
            if variable is not None:
                where = f" (set by the environment variable {variable})"
            elif source is not None:
                where = f" (in {source})"
            else:
                raise
            raise ConfigError(message_of(exc) + where, path=exc.path) from exc


def _build(registry: Registry, config: dict[str, Any], root: str) -> Registry:
    for section in config:
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown section; valid sections: {', '.join(SECTIONS)}", path=f"{root}{section}"
            )
    policies = _table(config.get("policies", {}), f"{root}policies")
    for name, table in policies.items():
        path = f"{root}policies.{name}"
        registry.add(name, _build_policy(table, path, name))
    pipelines = _table(config.get("pipelines", {}), f"{root}pipelines")
    for name, value in pipelines.items():
        path = f"{root}pipelines.{name}"
        if name in registry:
            raise ConfigError("a policy already has this name", path=path)
        table = _table(value, path)
        for key in table:
            if key not in PIPELINE_KEYS:
                raise ConfigError(
                    f"unknown option for a pipeline; valid keys: {', '.join(PIPELINE_KEYS)}",
                    path=f"{path}.{key}",
                )
        items = table.get("policies")
        if not isinstance(items, list) or not items:
            raise ConfigError(
                "expected a non-empty list of policy names or inline policy tables",
                path=f"{path}.policies",
            )
        strategies: list[Strategy] = []
        for index, item in enumerate(items):
            item_path = f"{path}.policies[{index}]"
            if isinstance(item, str):
                if item not in registry:
                    known = ", ".join(repr(n) for n in registry) or "none"
                    raise ConfigError(
                        f"no policy named {item!r} is defined (defined so far: {known})",
                        path=item_path,
                    )
                strategies.append(registry.get(item))
            elif isinstance(item, dict):
                strategies.append(_build_policy(item, item_path, f"{name}[{index}]"))
            else:
                raise ConfigError(
                    f"expected a policy name or an inline policy table, got {item!r}",
                    path=item_path,
                )
        registry.add(name, Pipeline(*strategies, name=name))
    return registry


def _build_policy(value: Any, path: str, name: str) -> Strategy:
    table = _table(value, path)
    kind_name = table.get("type")
    if kind_name is None:
        raise ConfigError(f"missing 'type'; one of: {valid_types()}", path=f"{path}.type")
    kind = lookup(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise ConfigError(
            f"unknown policy type {kind_name!r}; one of: {valid_types()}", path=f"{path}.type"
        )
    options = {key: item for key, item in table.items() if key != "type"}
    built: Strategy = kind.build(options, path=path, name=name)
    return built


def _find(path: Path | None, *, missing_ok: bool) -> tuple[Path, dict[str, Any]] | None:
    """The configuration file and its buttress tables, or ``None`` when there is none.

    A ``pyproject.toml`` counts only if it has a ``[tool.buttress]`` table: most
    projects have one, and finding it must not pass for finding configuration.
    """
    if path is not None:
        if not path.exists() and missing_ok:
            return None
        data = _read_toml(path)
        if path.name != "pyproject.toml":
            return path, data
        section = _tool_section(data)
        if section is None and not missing_ok:
            raise ConfigError(f"{path} has no [tool.buttress] table", path="tool.buttress")
        return None if section is None else (path, section)
    here = Path("buttress.toml")
    if here.exists():
        return here, _read_toml(here)
    pyproject = Path("pyproject.toml")
    section = _tool_section(_read_toml(pyproject)) if pyproject.exists() else None
    if section is not None:
        return pyproject, section
    if missing_ok:
        return None
    cwd = Path.cwd()
    raise ConfigError(
        f"no configuration found: looked for {cwd / 'buttress.toml'} and for a "
        f"[tool.buttress] table in {cwd / 'pyproject.toml'}; pass a path, or "
        "missing_ok=True to start with an empty registry"
    )


def _read_toml(file: Path) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - only configuration loading needs it

    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("configuration file not found", path=str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(file)) from exc


def _tool_section(data: dict[str, Any]) -> dict[str, Any] | None:
    tool = data.get("tool")
    if not isinstance(tool, dict) or "buttress" not in tool:
        return None
    return _table(tool["buttress"], "tool.buttress")


def _table(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type(value).__name__}", path=path)
    return value


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_copy(value) for value in data]
    return data
