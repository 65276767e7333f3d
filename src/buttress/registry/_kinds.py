"""Kinds: what ``type = "..."`` in a configuration table builds, and which keys it takes.

A kind is a policy class (or a factory) under a name. The registry learns its keys,
their types, defaults and meaning from the kind itself, so that a configuration
file is checked, and the reference page written, from one source:

- a kind whose class has an ``Options`` class (a subclass of
  :class:`buttress._options.Options`) is loaded through it: the table goes to
  ``Options.from_mapping(table, path=...)`` — the very checks the constructor runs
  — and the policy is built with ``from_options(options, name=...)``. Keys, types,
  defaults and docs come from the options' fields;
- any other kind is loaded through its signature: its keyword parameters are its
  keys (``name``, ``clock``, ``random`` and callables are for code only), and the
  constructor checks the values. Docs come from its docstring.

The second path is the fallback for policies written without an options class;
a kind moves to the first as soon as its class grows one, without a change here.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from buttress._options import _CONVERSIONS as CONVERSIONS
from buttress._options import Options
from buttress._strategy import Strategy
from buttress.errors import ConfigError
from buttress.registry._text import (
    CONVERSION_TYPES,
    REQUIRED,
    code_only_type,
    describe,
    docs_for,
    is_duration,
    plain,
    summary,
)
from buttress.registry._values import convert_seconds

__all__ = [
    "CODE_ONLY",
    "REQUIRED",
    "Key",
    "Kind",
    "add",
    "kinds",
    "lookup",
    "message_of",
    "norm",
    "options_of",
    "register_kind",
    "under",
    "valid_types",
]

KindT = TypeVar("KindT", bound=Callable[..., Strategy])


CODE_ONLY = frozenset({"name", "clock", "random", "self"})
"""Parameters never read from a file: the name is the table's key; clocks and
random sources are for code and tests."""

# Signature-built kinds: options whose values name exception classes, unless the
# kind says otherwise.
_EXCEPTION_KEYS = {"on": "exceptions", "failure_on": "exceptions", "ignore": "exceptions"}


def norm(name: str) -> str:
    """A kind's name as looked up: ``"Circuit-Breaker"`` is ``"circuit_breaker"``."""
    return name.strip().lower().replace("-", "_")


def message_of(exc: ConfigError) -> str:
    """The message of ``exc`` without its path prefix."""
    text = str(exc)
    prefix = f"{exc.path}: "
    return text[len(prefix) :] if exc.path and text.startswith(prefix) else text


def under(exc: ConfigError, prefix: str) -> ConfigError:
    """``exc`` again, its path placed under ``prefix`` (unless it already is)."""
    path = exc.path
    if not prefix or (path and (path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")))):
        return exc
    if not path:
        return ConfigError(message_of(exc), path=prefix)
    separator = "" if path.startswith("[") else "."
    return ConfigError(message_of(exc), path=f"{prefix}{separator}{path}")


# ------------------------------------------------------------------------------ keys


class Key:
    """One key a configuration table of some kind may give.

    ``type`` and ``doc`` are for people (the reference page, error messages);
    ``conversion`` names how text from the file becomes the value (``"exceptions"``,
    ``"seconds"``, ``"limits"``, or one registered with ``register_conversion``).
    """

    __slots__ = ("conversion", "default", "doc", "name", "type")

    def __init__(
        self, name: str, type: str, default: Any, doc: str, conversion: str | None = None
    ) -> None:
        self.name = name
        self.type = type
        self.default = default
        self.doc = doc
        self.conversion = conversion

    @property
    def required(self) -> bool:
        """Whether a table must give this key."""
        return self.default is REQUIRED

    def __repr__(self) -> str:
        return f"Key({self.name!r}, {self.type!r}, default={self.default!r})"


# ----------------------------------------------------------------------------- kinds


def _docstrings(target: object) -> tuple[str, ...]:
    """The docstrings that describe ``target``'s parameters: its own and its ``__init__``'s."""
    found = [getattr(target, "__doc__", None)]
    if isinstance(target, type):
        found.append(getattr(getattr(target, "__init__", None), "__doc__", None))
    return tuple(
        doc for doc in found if isinstance(doc, str) and doc and doc != object.__init__.__doc__
    )


def options_of(target: object) -> type[Options] | None:
    """``target.Options`` when it is an options class (a subclass of ``Options``)."""
    candidate = getattr(target, "Options", None)
    if isinstance(candidate, type) and issubclass(candidate, Options):
        return candidate
    return None


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # a name only imported for type checking: fall back to the text
        return {}


class Kind:
    """A ``type = "..."`` of configuration: how to build it, which keys it takes.

    Made by :func:`register_kind` (and for the built-in kinds, at import). ``table_keys()``
    lists what a table may give, ``build()`` checks a table and builds the policy.
    """

    __slots__ = (
        "_code_only",
        "_conversions",
        "_docs",
        "_fallback",
        "_options",
        "aliases",
        "name",
        "policy",
        "target",
    )

    def __init__(
        self,
        name: str,
        target: Callable[..., Any],
        *,
        options: type[Options] | None = None,
        aliases: Iterable[str] = (),
        policy: bool = True,
        fallback: Callable[..., Any] | None = None,
        conversions: Mapping[str, str] = _EXCEPTION_KEYS,
        code_only: Iterable[str] = (),
    ) -> None:
        self.name = name
        self.target = target
        self.aliases = tuple(aliases)
        self.policy = policy
        self._options = options
        # For the signature path only, where a parameter's type does not say it all:
        # another callable to build with, conversions by key, keys for code only.
        self._fallback = fallback
        self._conversions = dict(conversions)
        self._code_only = CODE_ONLY | frozenset(code_only)
        self._docs = _docstrings(target)

    def __repr__(self) -> str:
        return f"Kind({self.name!r}, {getattr(self.target, '__qualname__', self.target)!r})"

    # ------------------------------------------------------------- what it takes

    @property
    def options(self) -> type[Options] | None:
        """The options class tables are loaded through, if the kind has one."""
        return self._options if self._options is not None else options_of(self.target)

    def summary(self) -> str:
        """The first paragraph of the kind's docstring, as Markdown."""
        return summary(self._docs[0] if self._docs else None)

    def table_keys(self) -> tuple[Key, ...]:
        """The keys a table of this kind may give, in declaration order."""
        options = self.options
        if options is not None:
            return self._option_keys(options)
        return tuple(key for key, _ in self._signature_keys())

    def _option_keys(self, options: type[Options]) -> tuple[Key, ...]:
        hints = _hints(options)
        keys: list[Key] = []
        for field in options.fields():
            conversion = field.metadata.get("toml", True)
            if conversion is False:
                continue
            hint = hints.get(field.name, field.type)
            if conversion is True:
                # A duration by its type, or by the kind's word for it (an options
                # field typed plain ``float`` still reads "250ms" then).
                seconds = is_duration(hint) or self._conversions.get(field.name) == "seconds"
                conversion = "seconds" if seconds else None
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            else:
                default = REQUIRED
            keys.append(
                Key(
                    name=field.name,
                    type=CONVERSION_TYPES.get(conversion or "", "")
                    or describe(hint, str(field.type)),
                    default=default,
                    doc=plain(field.metadata.get("doc", "")),
                    conversion=conversion,
                )
            )
        return tuple(keys)

    def _signature(self) -> inspect.Signature | None:
        factory = self._fallback or self.target
        try:
            return inspect.signature(factory)
        except (TypeError, ValueError):
            return None

    def _signature_keys(self) -> list[tuple[Key, inspect.Parameter]]:
        signature = self._signature()
        if signature is None:
            return []
        factory = self._fallback or self.target
        hints = _hints(
            getattr(factory, "__init__", factory) if isinstance(factory, type) else factory
        )
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.name in self._code_only or param.name.startswith("_"):
                continue
            hint = hints.get(param.name, param.annotation)
            if code_only_type(hint):
                continue
            params.append(param)
        docs = docs_for((param.name for param in params), self._docs)
        found: list[tuple[Key, inspect.Parameter]] = []
        for param in params:
            hint = hints.get(param.name, param.annotation)
            conversion = self._conversions.get(param.name)
            if conversion is None and is_duration(hint):
                conversion = "seconds"
            text = param.annotation if isinstance(param.annotation, str) else ""
            if param.annotation is param.empty:
                text = ""
            default = REQUIRED if param.default is param.empty else param.default
            found.append(
                (
                    Key(
                        name=param.name,
                        type=CONVERSION_TYPES.get(conversion or "", "") or describe(hint, text),
                        default=default,
                        doc=docs[param.name],
                        conversion=conversion,
                    ),
                    param,
                )
            )
        return found

    def _open(self) -> bool:
        """Whether the signature takes any keyword (``**options``): keys unchecked."""
        signature = self._signature()
        return signature is None or any(
            p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
        )

    # ----------------------------------------------------------------- building

    def build(self, table: Mapping[str, Any], *, path: str, name: str) -> Any:
        """Check ``table`` (without its ``type``) and build the policy named ``name``.

        Every :class:`~buttress.errors.ConfigError` carries the key path under
        ``path``; an unknown key lists the valid ones.
        """
        options = self.options
        try:
            if options is not None:
                built = self._build_from_options(options, table, path, name)
            else:
                built = self._build_from_signature(table, path, name)
        except ConfigError as exc:
            placed = under(exc, path)
            if placed is exc:
                raise
            raise placed from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc), path=path) from exc
        if self.policy and not isinstance(built, Strategy):
            raise ConfigError(
                f"type {self.name!r} built a {type(built).__name__}, not a policy", path=path
            )
        return built

    def _unknown(self, key: str, path: str) -> ConfigError:
        valid = ", ".join(k.name for k in self.table_keys()) or "none"
        return ConfigError(
            f"unknown option for {self.name!r}; valid keys: {valid}", path=f"{path}.{key}"
        )

    def _check_required(self, keys: Iterable[Key], given: set[str], path: str) -> None:
        for key in keys:
            if key.required and key.name not in given:
                raise ConfigError(
                    f"required option of {self.name!r} missing", path=f"{path}.{key.name}"
                )

    def _build_from_options(
        self, options: type[Options], table: Mapping[str, Any], path: str, name: str
    ) -> Any:
        keys = {key.name: key for key in self.table_keys()}
        # Durations typed as such but declared without a conversion: the registry
        # reads their units here, so that "250ms" works for every kind.
        plain = {f.name for f in options.fields() if f.metadata.get("toml", True) is True}
        values: dict[str, Any] = {}
        given: set[str] = set()
        for raw, value in table.items():
            key = keys.get(raw.strip().replace("-", "_"))
            if key is None:
                raise self._unknown(raw, path)
            given.add(key.name)
            if key.conversion == "seconds" and key.name in plain:
                values[raw] = convert_seconds(value, f"{path}.{raw}")
            else:
                values[raw] = value
        self._check_required(keys.values(), given, path)
        loaded = options.from_mapping(values, path=path)
        if self._options is not None:  # registered as a factory taking options
            return self.target(loaded, name=name) if self.policy else self.target(loaded)
        from_options = getattr(self.target, "from_options", None)
        if from_options is not None:
            return from_options(loaded, name=name) if self.policy else from_options(loaded)
        fields = {f.name: getattr(loaded, f.name) for f in options.fields()}
        return self.target(**fields, name=name) if self.policy else self.target(**fields)

    def _build_from_signature(self, table: Mapping[str, Any], path: str, name: str) -> Any:
        found = {key.name: key for key, _ in self._signature_keys()}
        open_ended = self._open()
        values: dict[str, Any] = {}
        for raw, value in table.items():
            key_name = raw.strip().replace("-", "_")
            key = found.get(key_name)
            if key is None and not open_ended:
                raise self._unknown(raw, path)
            if key is not None and key.conversion is not None:
                values[key_name] = CONVERSIONS[key.conversion](value, f"{path}.{raw}")
            else:
                values[key_name] = value
        self._check_required(found.values(), set(values), path)
        factory = self._fallback or self.target
        return factory(**values, name=name) if self.policy else factory(**values)


# ------------------------------------------------------------------------ the table


_kinds: dict[str, Kind] = {}
_names: dict[str, Kind] = {}  # names and aliases
_lock = threading.Lock()


def add(kind: Kind, *, replace: bool) -> None:
    """Register ``kind`` under its name and aliases (see :func:`register_kind`)."""
    with _lock:
        for alias in (kind.name, *kind.aliases):
            taken = _names.get(alias)
            if taken is not None and taken.name != kind.name and not replace:
                raise ConfigError(
                    f"type {alias!r} is already registered for {taken.target!r}; "
                    "pass replace=True to replace it",
                    path="name",
                )
        previous = _kinds.get(kind.name)
        if previous is not None:
            if not replace and previous.target is not kind.target:
                raise ConfigError(
                    f"type {kind.name!r} is already registered for {previous.target!r}; "
                    "pass replace=True to replace it",
                    path="name",
                )
            for alias in (previous.name, *previous.aliases):
                _names.pop(alias, None)
        _kinds[kind.name] = kind
        for alias in (kind.name, *kind.aliases):
            _names[alias] = kind


@overload
def register_kind(
    name: str, kind: None = None, /, *, options: type[Options] | None = ..., replace: bool = ...
) -> Callable[[KindT], KindT]: ...


@overload
def register_kind(
    name: str, kind: KindT, /, *, options: type[Options] | None = ..., replace: bool = ...
) -> KindT: ...


def register_kind(
    name: str,
    kind: Callable[..., Strategy] | None = None,
    /,
    *,
    options: type[Options] | None = None,
    replace: bool = False,
) -> Any:
    """Make ``type = "<name>"`` in configuration build policies of ``kind``.

    ``kind`` is a policy class — a subclass of :class:`buttress._strategy.Policy`
    (or any policy) — or a factory returning a policy; used as a decorator,
    ``@register_kind("name")`` registers the class below it. Its tables are checked
    like those of the built-in kinds:

    - a class with an ``Options`` class attribute (a frozen
      :class:`buttress._options.Options` dataclass) loads tables through
      ``Options.from_mapping`` and is built with ``cls.from_options(options,
      name=...)`` (or, without that classmethod, ``cls(**fields, name=...)``);
    - ``options=`` gives such an options class to a factory, then called as
      ``factory(options, name=...)``;
    - otherwise the keyword parameters of the class or factory are the keys.

    The policy's ``name`` is the table's key in ``policies`` — stable across
    processes, as shared state needs — so ``kind`` must accept ``name=``. ``-`` and
    ``_`` are alike and case does not matter in ``name``. A name already taken
    raises :class:`~buttress.errors.ConfigError` unless ``replace=True``.
    """
    if kind is None:

        def decorate(target: KindT) -> KindT:
            register_kind(name, target, options=options, replace=replace)
            return target

        return decorate
    if not isinstance(name, str) or not norm(name) or not re.fullmatch(r"[a-z0-9_]+", norm(name)):
        raise ConfigError(
            f"must be a non-empty name of letters, digits, '-' or '_', got {name!r}", path="name"
        )
    if isinstance(kind, type) and not issubclass(kind, Strategy):
        raise ConfigError(
            f"expected a Policy subclass or a factory returning a policy, got {kind!r}",
            path="kind",
        )
    if isinstance(kind, Strategy) or not callable(kind):
        raise ConfigError(
            f"expected a Policy subclass or a factory returning a policy, got {kind!r} "
            "(register the class, not an instance)",
            path="kind",
        )
    if options is not None and not (isinstance(options, type) and issubclass(options, Options)):
        raise ConfigError(
            f"expected a subclass of buttress._options.Options, got {options!r}", path="options"
        )
    if options is not None and not dataclasses.is_dataclass(options):
        raise ConfigError(f"{options.__name__} must be a dataclass", path="options")
    _check_takes_name(kind, options)
    add(Kind(norm(name), kind, options=options), replace=replace)
    return kind


def _check_takes_name(kind: Callable[..., Any], options: type[Options] | None) -> None:
    # What will build the policies: a class with an options class builds them with
    # its from_options (when it has one); anything else is called itself.
    builder = kind
    if options is None and options_of(kind) is not None:
        builder = getattr(kind, "from_options", kind)
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # a builtin without a signature: find out when built
        return
    params = signature.parameters.values()
    if not any(p.name == "name" or p.kind is p.VAR_KEYWORD for p in params):
        raise ConfigError(
            f"{getattr(builder, '__qualname__', builder)!r} must accept name=: "
            "a policy built from configuration is named by its table's key",
            path="kind",
        )


def kinds() -> dict[str, Kind]:
    """Every registered kind by its name (aliases are listed on each)."""
    with _lock:
        return dict(_kinds)


def lookup(name: str) -> Kind | None:
    """The kind registered as ``name`` or under that alias."""
    return _names.get(norm(name))


def valid_types() -> str:
    """The kind names, for error messages."""
    return ", ".join(sorted(_names))
