"""``BUTTRESS_*`` environment variables: one configuration value each.

``BUTTRESS_POLICIES__API__MAX_ATTEMPTS=6`` sets ``policies.api.max_attempts``: after
the prefix, the key path with ``__`` between its parts. Parts match existing keys
case-insensitively with ``-`` and ``_`` alike (``API_RETRY`` finds ``api-retry``);
a part that matches nothing adds a key, in lower case, so a variable can define a
whole policy. A number part indexes a list (``LIMITS__1__RATE``). The value is
read as a TOML value (``6``, ``0.5``, ``true``, ``["A", "B"]``,
``{ type = "token_bucket", rate = 5 }``) and otherwise taken as a string.

Every variable set is remembered with the key path it set, so that an error about
that value can name the variable as well as the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from buttress.errors import ConfigError

__all__ = ["ENV_PREFIX", "Origins", "apply_env", "parse_env_value"]

ENV_PREFIX = "BUTTRESS_"


def _norm(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def parse_env_value(raw: str) -> Any:
    """The value of a variable: a TOML value if it reads as one, else the string."""
    import tomllib  # noqa: PLC0415 - only configuration loading needs it

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


class Origins:
    """Which variable set which key path; finds the one behind an error's path."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set: list[tuple[str, str]] = []

    def add(self, path: str, variable: str) -> None:
        """Remember that ``variable`` set (or created) the value at ``path``."""
        self._set.append((path, variable))

    def variable_for(self, path: str | None) -> str | None:
        """The variable that set ``path`` or a table or list containing it."""
        if not path:
            return None
        best: tuple[int, str] | None = None
        for origin, variable in self._set:
            inside = path == origin or path.startswith((f"{origin}.", f"{origin}["))
            if inside and (best is None or len(origin) > best[0]):
                best = (len(origin), variable)
        return None if best is None else best[1]

    def __bool__(self) -> bool:
        return bool(self._set)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def apply_env(
    data: dict[str, Any],
    env: Mapping[str, str],
    *,
    prefix: str = ENV_PREFIX,
    root: str = "",
) -> Origins:
    """Apply ``BUTTRESS_A__B__C=value`` overrides to ``data`` in place.

    Only variables with ``__`` after the prefix are configuration (a plain
    ``BUTTRESS_SOMETHING`` is left alone). ``root`` is the key path of ``data`` in
    its file (``"tool.buttress"`` in ``pyproject.toml``), for the paths remembered
    and reported. Returns which variable set what.
    """
    origins = Origins()
    for variable in sorted(env):
        if not variable.startswith(prefix) or "__" not in variable[len(prefix) :]:
            continue
        parts = variable[len(prefix) :].split("__")
        if not all(part.strip() for part in parts):
            raise ConfigError(
                f"the environment variable {variable} has an empty part between '__'; "
                f"write {prefix}SECTION__NAME__KEY",
                path=root or None,
            )
        node: Any = data
        path = root
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, dict):
                key = next((k for k in node if _norm(str(k)) == _norm(part)), part.lower())
                path = _join(path, key)
                if last:
                    node[key] = parse_env_value(env[variable])
                    origins.add(path, variable)
                elif key not in node:
                    node[key] = {}
                    origins.add(path, variable)
                node = node[key]
            elif isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"the environment variable {variable} indexes a list of {len(node)} "
                        f"with {part!r}: expected a number from 0 to {len(node) - 1}",
                        path=path,
                    )
                index = int(part)
                path = _join(path, index)
                if last:
                    node[index] = parse_env_value(env[variable])
                    origins.add(path, variable)
                node = node[index]
            else:
                raise ConfigError(
                    f"the environment variable {variable} sets a key inside a "
                    f"{type(node).__name__} value, which has no keys",
                    path=path,
                )
    return origins
