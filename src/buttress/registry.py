"""Named policies and pipelines, in code or declared in TOML.

Configuration is code first: ``registry.add("payments", Pipeline(...))``. The same
policies can be declared in ``buttress.toml`` (or under ``[tool.buttress]`` in
``pyproject.toml``) and overridden by ``BUTTRESS_*`` environment variables::

    [policies.api-retry]
    type = "retry"
    max_attempts = 4
    delay = 0.2
    on = ["ConnectionError", "TimeoutError"]

    [policies.api-breaker]
    type = "circuit_breaker"
    failure_ratio = 0.5

    [pipelines.api]
    policies = ["api-retry", "api-breaker", { type = "bulkhead", max_concurrent = 10 }]

    [policies.api-limit]
    type = "rate_limiter"
    store = "redis://127.0.0.1:6379/0"
    limits = [
        { type = "token_bucket", rate = 10 },
        { type = "fixed_window", limit = 1000, period = 3600 },
    ]

``BUTTRESS_POLICIES__API_RETRY__MAX_ATTEMPTS=6`` overrides one value: the variable
name is the key path joined by ``__``, matched case-insensitively with ``-`` and
``_`` alike; the value is read as a TOML value (``6``, ``0.5``, ``true``,
``["A", "B"]``) and otherwise taken as a string.

Everything is validated while loading: an unknown policy type, an unknown option, a
bad value or a reference to an undefined policy raises :class:`ConfigError` whose
message starts with the key path (``policies.api-retry.max_attempts: ...``). A
policy named once and used in several pipelines is one object, so its state (a
breaker's window, a bulkhead's slots) is shared.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from buttress._strategy import Strategy
from buttress.errors import ConfigError
from buttress.pipeline import Pipeline
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.fallback import Fallback
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout
from buttress.ratelimit import GCRA, FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from buttress.stores.base import Algorithm

__all__ = ["Registry", "register_kind"]

ENV_PREFIX = "BUTTRESS_"

# Options whose values name exception classes; TOML gives them as strings.
_EXCEPTION_OPTIONS = frozenset({"on", "failure_on", "ignore"})

_ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    "token_bucket": TokenBucket,
    "gcra": GCRA,
    "sliding_window": SlidingWindow,
    "fixed_window": FixedWindow,
}


def _rate_limiter(
    *,
    limits: list[Any],
    store: str = "memory://",
    key: str = "global",
    cost: int = 1,
    mode: Literal["reject", "wait"] = "reject",
    max_wait: float = 1.0,
    name: str,
) -> RateLimiter:
    """``type = "rate_limiter"``: ``limits`` is a list of tables with their own ``type``."""
    if not isinstance(limits, list) or not limits:
        raise ConfigError("expected a non-empty list of limit tables", path="limits")
    algorithms: list[Algorithm] = []
    for index, table in enumerate(limits):
        path = f"limits[{index}]"
        options = {_norm(k): v for k, v in _table(table, path).items()}
        kind = options.pop("type", None)
        factory = _ALGORITHMS.get(_norm(kind)) if isinstance(kind, str) else None
        if factory is None:
            raise ConfigError(
                f"expected type = one of {', '.join(sorted(_ALGORITHMS))}", path=f"{path}.type"
            )
        try:
            algorithms.append(factory(**options))
        except ConfigError as exc:
            raise ConfigError(_strip_path(exc), path=f"{path}.{exc.path}") from exc
        except TypeError as exc:
            raise ConfigError(str(exc), path=path) from exc
    return RateLimiter(
        *algorithms, store=store, key=key, cost=cost, mode=mode, max_wait=max_wait, name=name
    )


def _strip_path(exc: ConfigError) -> str:
    text = str(exc)
    prefix = f"{exc.path}: "
    return text[len(prefix) :] if exc.path and text.startswith(prefix) else text


_kinds: dict[str, Callable[..., Strategy]] = {
    "rate_limiter": _rate_limiter,
    "retry": Retry,
    "circuit_breaker": CircuitBreaker,
    "breaker": CircuitBreaker,
    "timeout": Timeout,
    "bulkhead": Bulkhead,
    "fallback": Fallback,
}
_kinds_lock = threading.Lock()


def register_kind(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``type = "<name>"`` in configuration build policies with ``factory``.

    ``factory`` is called with the entry's options as keyword arguments plus
    ``name=``; usually it is the policy class itself.
    """
    with _kinds_lock:
        _kinds[_norm(name)] = factory


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _resolve_exception(dotted: str, path: str) -> type[BaseException]:
    if "." in dotted:
        module_name, _, attr = dotted.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import exception class {dotted!r}", path=path) from exc
    else:
        obj = getattr(builtins, dotted, None)
        if obj is None:
            raise ConfigError(
                f"{dotted!r} is not a built-in exception; use a dotted path like "
                "'package.module.ErrorClass'",
                path=path,
            )
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise ConfigError(f"{dotted!r} is not an exception class", path=path)
    return obj


def _convert_exceptions(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return _resolve_exception(value, path)
    if isinstance(value, list):
        return tuple(
            _resolve_exception(_expect_str(v, f"{path}[{i}]"), f"{path}[{i}]")
            for i, v in enumerate(value)
        )
    return value


def _expect_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {type(value).__name__}", path=path)
    return value


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], env: Mapping[str, str], prefix: str = ENV_PREFIX) -> None:
    """Apply ``BUTTRESS_A__B__C=value`` overrides to ``data`` in place."""
    for var in sorted(env):
        if not var.startswith(prefix) or "__" not in var[len(prefix) :]:
            continue
        parts = [p for p in var[len(prefix) :].split("__") if p]
        if len(parts) < 2:
            continue
        node: dict[str, Any] = data
        for depth, part in enumerate(parts):
            key = next((k for k in node if _norm(k) == _norm(part)), part.lower())
            if depth == len(parts) - 1:
                node[key] = _parse_env_value(env[var])
                break
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                path = ".".join(parts[: depth + 1]).lower()
                raise ConfigError(
                    f"cannot override inside a {type(child).__name__}", path=f"{path} (from {var})"
                )
            node = child


class Registry:
    """A name → policy (or pipeline) map, filled in code or from configuration.

    ``registry.pipeline("api")`` returns a :class:`~buttress.Pipeline`, which is
    itself a decorator: ``@registry.pipeline("api")``.
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
        pipeline = Pipeline(item, name=name)
        with self._lock:
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
        config = _deep_copy(dict(data))
        if env is not None:
            apply_env(config, env)
        unknown = set(config) - {"policies", "pipelines"}
        if unknown:
            raise ConfigError(
                "unknown section; expected 'policies' or 'pipelines'",
                path=sorted(unknown)[0],
            )
        registry = cls()
        policies = _table(config.get("policies", {}), "policies")
        for name, options in policies.items():
            registry.add(
                name, _build_policy(_table(options, f"policies.{name}"), f"policies.{name}", name)
            )
        pipelines = _table(config.get("pipelines", {}), "pipelines")
        for name, options in pipelines.items():
            path = f"pipelines.{name}"
            if name in registry:
                raise ConfigError("a policy already has this name", path=path)
            table = _table(options, path)
            extra = set(table) - {"policies"}
            if extra:
                raise ConfigError(
                    "unknown option; a pipeline takes only 'policies'",
                    path=f"{path}.{sorted(extra)[0]}",
                )
            items = table.get("policies")
            if not isinstance(items, list) or not items:
                raise ConfigError(
                    "expected a non-empty list of policy names or tables", path=f"{path}.policies"
                )
            strategies: list[Strategy] = []
            for index, item in enumerate(items):
                item_path = f"{path}.policies[{index}]"
                if isinstance(item, str):
                    if item not in registry:
                        raise ConfigError(f"no policy named {item!r} is defined", path=item_path)
                    strategies.append(registry.get(item))
                elif isinstance(item, dict):
                    strategies.append(_build_policy(item, item_path, f"{name}[{index}]"))
                else:
                    raise ConfigError("expected a policy name or an inline table", path=item_path)
            registry.add(name, Pipeline(*strategies, name=name))
        return registry

    @classmethod
    def from_toml(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> Registry:
        """Load ``path``, or else ``./buttress.toml``, or else ``[tool.buttress]`` in
        ``./pyproject.toml``; then apply ``BUTTRESS_*`` overrides from ``env``
        (default: ``os.environ``)."""
        environ = os.environ if env is None else env
        data: dict[str, Any]
        if path is not None:
            file = Path(path)
            data = _read_toml(file)
            if file.name == "pyproject.toml":
                data = _tool_section(data, file)
        elif Path("buttress.toml").exists():
            data = _read_toml(Path("buttress.toml"))
        elif Path("pyproject.toml").exists():
            data = _tool_section(_read_toml(Path("pyproject.toml")), Path("pyproject.toml"))
        else:
            data = {}
        return cls.from_mapping(data, env=environ)


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("configuration file not found", path=str(file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(file)) from exc


def _tool_section(data: dict[str, Any], file: Path) -> dict[str, Any]:
    section = data.get("tool", {}).get("buttress", {})
    return _table(section, f"{file.name}:tool.buttress")


def _table(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type(value).__name__}", path=path)
    return value


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _build_policy(options: dict[str, Any], path: str, name: str) -> Strategy:
    options = dict(options)
    kind = options.pop("type", None)
    if not isinstance(kind, str):
        raise ConfigError(
            f"missing 'type'; one of: {', '.join(sorted(_kinds))}", path=f"{path}.type"
        )
    factory = _kinds.get(_norm(kind))
    if factory is None:
        raise ConfigError(
            f"unknown policy type {kind!r}; one of: {', '.join(sorted(_kinds))}",
            path=f"{path}.type",
        )
    options = {_norm(k): v for k, v in options.items()}
    accepted = _accepted_options(factory)
    for key in options:
        if accepted is not None and key not in accepted:
            raise ConfigError(
                f"unknown option for {kind!r}; expected one of: {', '.join(sorted(accepted))}",
                path=f"{path}.{key}",
            )
    for key in _EXCEPTION_OPTIONS & set(options):
        options[key] = _convert_exceptions(options[key], f"{path}.{key}")
    try:
        return factory(**options, name=name)
    except ConfigError as exc:
        if exc.path:
            raise ConfigError(_strip_path(exc), path=f"{path}.{exc.path}") from exc
        raise ConfigError(str(exc), path=path) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), path=path) from exc


def _accepted_options(factory: Callable[..., Any]) -> set[str] | None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names: set[str] = set()
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if param.kind in (inspect.Parameter.VAR_POSITIONAL,) or param.name in ("name", "self"):
            continue
        if param.name in ("clock", "random"):
            continue
        names.add(param.name)
    return names
