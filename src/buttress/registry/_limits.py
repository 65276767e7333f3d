"""Rate limits in configuration files: rate strings, limit tables, or a list of both.

``limits = "10/second; 1000/hour"`` reads as :func:`~buttress.ratelimit.parse_rates`
does; a table ``{ type = "token_bucket", rate = 10 }`` is one algorithm, its keys
checked like a policy's (``limits[1].rat`` is refused with the valid keys). The
conversions ``"limits"``, ``"rates"`` and ``"seconds"`` are registered here for
options classes to name, unless a layer registered its own first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from buttress._options import _CONVERSIONS as CONVERSIONS
from buttress._options import convert_exceptions, register_conversion
from buttress.errors import ConfigError
from buttress.ratelimit import GCRA, FixedWindow, SlidingWindow, TokenBucket, parse_rates
from buttress.registry._kinds import Kind, norm
from buttress.registry._values import convert_seconds
from buttress.stores.base import Algorithm

__all__ = ["convert_limits", "limit_kinds"]

_limit_kinds: dict[str, Kind] = {}


def _limit_kind(name: str, target: Callable[..., Algorithm]) -> None:
    _limit_kinds[name] = Kind(name, target, policy=False, conversions={"period": "seconds"})


_limit_kind("token_bucket", TokenBucket)
_limit_kind("gcra", GCRA)
_limit_kind("sliding_window", SlidingWindow)
_limit_kind("fixed_window", FixedWindow)


def limit_kinds() -> dict[str, Kind]:
    """The ``type = "..."`` a limit table in ``limits = [...]`` may have."""
    return dict(_limit_kinds)


def _limit_from_table(table: Mapping[str, Any], path: str) -> Algorithm:
    options = dict(table)
    kind_name = options.pop("type", None)
    kind = _limit_kinds.get(norm(kind_name)) if isinstance(kind_name, str) else None
    if kind is None:
        valid = ", ".join(_limit_kinds)
        got = "missing" if kind_name is None else f"got {kind_name!r}"
        raise ConfigError(
            f"a limit table needs type = one of {valid} ({got}); or write a rate string "
            "such as '10/second'",
            path=f"{path}.type",
        )
    built: Algorithm = kind.build(options, path=path, name="")
    return built


def convert_limits(value: object, path: str) -> tuple[Algorithm, ...]:
    """``limits`` from a file: rate strings, limit tables, or a list mixing them.

    ``"10/second; 1000/hour"`` (see :func:`~buttress.ratelimit.parse_rates`),
    ``{ type = "token_bucket", rate = 10 }``, or a list of either; every error names
    the entry (``limits[1].rate``).
    """
    if isinstance(value, str):
        return parse_rates(value, path=path)
    if isinstance(value, dict):
        return (_limit_from_table(value, path),)
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError("give at least one limit, e.g. '10/second'", path=path)
        found: list[Algorithm] = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if isinstance(item, str):
                found.extend(parse_rates(item, path=where))
            elif isinstance(item, dict):
                found.append(_limit_from_table(item, where))
            elif isinstance(item, Algorithm):
                found.append(item)
            else:
                raise ConfigError(
                    f"expected a rate string such as '10/second' or a limit table, got {item!r}",
                    path=where,
                )
        return tuple(found)
    raise ConfigError(
        f"expected a rate string such as '10/second; 1000/hour', a limit table or a list "
        f"of them, got {value!r}",
        path=path,
    )


# "limits" and "rates" read limit tables too, which only the registry can build: its
# conversions replace the plain ones ``buttress.ratelimit`` registers for
# ``RateLimiterOptions.from_mapping``. The others fill gaps a layer left.
register_conversion("limits", convert_limits)
register_conversion("rates", convert_limits)
for _name, _convert in (("seconds", convert_seconds), ("exceptions", convert_exceptions)):
    if _name not in CONVERSIONS:
        register_conversion(_name, _convert)
