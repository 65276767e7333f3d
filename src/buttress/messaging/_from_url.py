"""Building a backend object from a URL: a scheme registry of import paths.

A registry maps a URL scheme to ``"module:Class"``; the class is imported only when a
URL of that scheme is used (its driver comes with an extra). Query parameters named
like parameters of the class's constructor (but the first: the URL's own) become
those arguments, converted to the parameter's type (``int``, ``float``, ``bool``,
``None``; a repeated or comma-separated value for a sequence); every other query
parameter stays in the URL for the driver (``sslmode=require``, ``heartbeat=30``). So
``nats://127.0.0.1:4222?stream=ORDERS_DLQ&subject=orders.dead`` becomes
``NatsDeadLetters("nats://127.0.0.1:4222", stream="ORDERS_DLQ", subject="orders.dead")``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from buttress.errors import ConfigError

__all__ = ["build", "load", "scheme_of", "split_options"]

_BY_NAME = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def scheme_of(url: str) -> str:
    """The lowercased scheme of ``url`` (``""`` when it has none)."""
    scheme, found, _ = url.partition("://")
    if not found and url.startswith("sqlite:"):
        return "sqlite"
    return scheme.lower() if found else ""


def load(target: str) -> Any:
    """Import ``"module:attribute"``."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _convert(name: str, values: list[str], parameter: inspect.Parameter, path: str) -> Any:
    annotation = str(parameter.annotation)
    default = parameter.default
    if "Sequence" in annotation or "list[" in annotation or "tuple[" in annotation:
        return tuple(part for value in values for part in value.split(",") if part)
    value = values[-1]
    if value.lower() == "none" and "None" in annotation:
        return None
    try:
        if isinstance(default, bool) or annotation.startswith("bool"):
            if value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError(value)
        if isinstance(default, int) or annotation.startswith("int"):
            return int(value)
        if isinstance(default, float) or annotation.startswith("float"):
            return float(value)
    except ValueError:
        raise ConfigError(
            f"query parameter {name}={value!r} is not a valid {annotation}", path=path
        ) from None
    return value


def split_options(url: str, cls: Any, path: str) -> tuple[str, dict[str, Any]]:
    """``(url without the constructor's parameters, those parameters as keywords)``."""
    parts = urlsplit(url)
    try:
        accepted = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        accepted = {}  # type: ignore[assignment]
    first = next(iter(accepted), None)  # the URL's own parameter
    options: dict[str, list[str]] = {}
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        parameter = accepted.get(key)
        if parameter is not None and parameter.kind in _BY_NAME and key != first:
            options.setdefault(key, []).append(value)
        else:
            kept.append((key, value))
    converted = {key: _convert(key, values, accepted[key], path) for key, values in options.items()}
    # Cut by hand: urlunsplit would turn sqlite:///app.db into sqlite:/app.db.
    bare = url.partition("?")[0].partition("#")[0]
    if kept:
        bare += "?" + urlencode(kept)
    return bare, converted


def build(
    registry: Mapping[str, str],
    url: str,
    path: str,
    what: str,
    **options: Any,
) -> Any:
    """Build the object ``registry`` names for ``url``'s scheme.

    Args:
        registry: ``scheme -> "module:Class"``.
        url: The URL; its query parameters named like parameters of the class
            (but the first) become keyword arguments.
        path: The option the URL was given for (for errors).
        what: What the registry builds, for errors ("a dead-letter queue").
        options: Keyword arguments that win over the URL's.

    Raises:
        ConfigError: an unknown scheme, or a query parameter of the wrong type.
        ImportError: the class's module is not importable (its extra is missing).
    """
    if not isinstance(url, str):
        raise ConfigError(f"must be a URL, got {url!r}", path=path)
    scheme = scheme_of(url)
    target = registry.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(registry))
        raise ConfigError(f"no {what} for the URL {url!r}; known schemes: {known}", path=path)
    cls = load(target)
    bare, found = split_options(url, cls, path)
    return cls(bare, **(found | {k: v for k, v in options.items() if v is not None}))
