"""Options objects: every policy's settings, validated once, frozen, loadable from TOML.

Each policy has one frozen dataclass of options (``RetryOptions``,
``CircuitOptions``, ...), subclassing :class:`Options`. Its ``__post_init__``
checks and normalises every field with the checks of :mod:`buttress._validate`, so
an options object that exists is valid; the policy's constructor only builds one
from its keyword arguments and hands it to the engine. The registry builds the same
objects from TOML tables with :meth:`Options.from_mapping`, which adds what a file
needs: unknown keys refused with the list of valid ones, the key path in every
error, and conversions of text into Python values, declared per field::

    @dataclass(frozen=True, slots=True, kw_only=True)
    class RetryOptions(Options):
        max_attempts: int | None = option(3, doc="attempts in all, the first included")
        on: OnErrors | None = option(None, toml="exceptions", doc="...")

Conversions (``toml=``): ``"exceptions"`` (a class name, or a list of them, to
classes: built-ins and buttress's by name, others by dotted path), and those other
layers register (:func:`register_conversion`; ``buttress.ratelimit`` adds
``"rates"``, rate strings to algorithms). Fields that only code can give (callables,
clocks) are marked ``toml=False`` and refused in files.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, cast

from buttress.errors import ConfigError

__all__ = ["Options", "built_from", "convert_exceptions", "option", "register_conversion"]

OptionsT = TypeVar("OptionsT", bound="Options")
PolicyT = TypeVar("PolicyT")

_MISSING: Any = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    doc: str,
    toml: str | bool = True,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A field of an options class: its default, what it means, how TOML gives it.

    ``doc`` is one sentence for the configuration reference. ``toml`` is ``True``
    (the value as TOML gives it), ``False`` (code only) or the name of a conversion.
    """
    metadata = {"doc": doc, "toml": toml}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Options:
    """Base of the frozen, validated options of a policy.

    Subclasses are ``@dataclass(frozen=True, slots=True, kw_only=True)`` classes whose
    fields are made with :func:`option`, validated in ``__post_init__`` (normalise
    with ``self._set(name, value)``).
    """

    __slots__ = ()

    kind: ClassVar[str] = ""
    """The ``type = "..."`` of this policy in configuration files."""

    def _set(self, name: str, value: Any) -> None:
        """Store a normalised value in a frozen instance (for ``__post_init__``)."""
        object.__setattr__(self, name, value)

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field[Any], ...]:
        """The option fields, in order."""
        return dataclasses.fields(cls)  # type: ignore[arg-type]

    @classmethod
    def toml_keys(cls) -> tuple[str, ...]:
        """The keys a configuration table may give."""
        return tuple(f.name for f in cls.fields() if f.metadata.get("toml", True) is not False)

    @classmethod
    def from_mapping(cls: type[OptionsT], data: Mapping[str, Any], *, path: str = "") -> OptionsT:
        """Options from a configuration table: keys checked, values converted and validated.

        Every :class:`~buttress.errors.ConfigError` carries the key path
        (``policies.api.max_attempts``); ``-`` and ``_`` are alike in keys.
        """
        prefix = f"{path}." if path else ""
        keys = cls.toml_keys()
        fields = {f.name: f for f in cls.fields()}
        values: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = raw_key.strip().replace("-", "_") if isinstance(raw_key, str) else raw_key
            if key not in keys:
                hint = f"; valid keys: {', '.join(keys)}" if keys else ""
                raise ConfigError(f"unknown option{hint}", path=f"{prefix}{raw_key}")
            conversion = fields[key].metadata.get("toml", True)
            if isinstance(conversion, str):
                values[key] = _CONVERSIONS[conversion](value, f"{prefix}{raw_key}")
            else:
                values[key] = value
        try:
            return cls(**values)
        except ConfigError as exc:
            if exc.path and prefix and not exc.path.startswith(prefix):
                raise ConfigError(_message(exc), path=f"{prefix}{exc.path}") from None
            raise
        except TypeError as exc:  # a required option left out
            raise ConfigError(str(exc), path=path or cls.__name__) from None

    def replace(self: OptionsT, **changes: Any) -> OptionsT:
        """A copy with some options changed, validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _message(exc: ConfigError) -> str:
    text = str(exc)
    prefix = f"{exc.path}: "
    return text[len(prefix) :] if exc.path and text.startswith(prefix) else text


def _resolve_exception(dotted: object, path: str) -> type[BaseException]:
    if not isinstance(dotted, str):
        raise ConfigError(f"expected an exception class name, got {dotted!r}", path=path)
    if "." in dotted:
        module_name, _, attr = dotted.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import exception class {dotted!r}", path=path) from exc
    else:
        obj = getattr(builtins, dotted, None)
        if obj is None:
            obj = getattr(importlib.import_module("buttress.errors"), dotted, None)
        if obj is None:
            raise ConfigError(
                f"{dotted!r} is not a built-in or buttress exception; use a dotted path like "
                "'package.module.ErrorClass'",
                path=path,
            )
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        raise ConfigError(f"{dotted!r} is not an exception class", path=path)
    return obj


def convert_exceptions(value: Any, path: str) -> Any:
    """An exception class name, or a list of them, to the class or a tuple of classes."""
    if isinstance(value, list):
        return tuple(_resolve_exception(item, f"{path}[{i}]") for i, item in enumerate(value))
    return _resolve_exception(value, path)


_CONVERSIONS: dict[str, Callable[[Any, str], Any]] = {"exceptions": convert_exceptions}


def register_conversion(name: str, convert: Callable[[Any, str], Any]) -> None:
    """Make ``option(toml=name)`` convert a TOML value with ``convert(value, path)``.

    A layer above the core registers its own (``ratelimit`` registers ``"rates"``).
    """
    _CONVERSIONS[name] = convert


def built_from(cls: type[PolicyT], options: object, *setup: Any) -> PolicyT:
    """What every policy's ``from_options`` does: check ``options`` is a ``cls.Options``,
    then build the policy through ``cls._setup(options, *setup)``, its one place of
    construction (``__init__`` builds the options from its keywords and calls it too).
    """
    expected = cast("type[Options]", getattr(cls, "Options"))  # noqa: B009 - typed below
    if not isinstance(options, expected):
        raise ConfigError(
            f"must be {expected.__name__} ({cls.__name__}.Options), got {options!r}",
            path="options",
        )
    policy = cls.__new__(cls)
    cast(Any, policy)._setup(options, *setup)
    return policy
