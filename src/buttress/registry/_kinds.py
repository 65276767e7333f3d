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
import datetime
import inspect
import math
import re
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar, overload

from buttress._options import _CONVERSIONS as CONVERSIONS
from buttress._options import Options, convert_exceptions, register_conversion
from buttress._strategy import Strategy
from buttress.errors import ConfigError
from buttress.policies.bulkhead import Bulkhead
from buttress.policies.circuit import CircuitBreaker
from buttress.policies.fallback import Fallback
from buttress.policies.retry import Retry
from buttress.policies.timeout import Timeout
from buttress.ratelimit import (
    GCRA,
    FixedWindow,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    parse_rates,
)
from buttress.registry._values import convert_seconds
from buttress.stores.base import Algorithm

__all__ = [
    "CODE_ONLY",
    "REQUIRED",
    "Key",
    "Kind",
    "convert_limits",
    "kinds",
    "limit_kinds",
    "lookup",
    "norm",
    "register_kind",
    "under",
]

KindT = TypeVar("KindT", bound=Callable[..., Strategy])


class _Required:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a key that a table must give."""

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


_TYPE_WORDS: dict[object, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    datetime.timedelta: "duration",
}

_CONVERSION_TYPES = {
    "exceptions": "exception name or list of names",
    "seconds": "duration",
    "limits": "rate string, limit table, or a list of them",
    "rates": "rate string, limit table, or a list of them",
}


_TEXT_ATOMS: dict[str, object] = {
    "None": type(None),
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "timedelta": datetime.timedelta,
    "datetime.timedelta": datetime.timedelta,
}


def _atoms(hint: object) -> tuple[object, ...]:
    if isinstance(hint, str):  # an annotation that could not be resolved: its words
        return tuple(_TEXT_ATOMS.get(word.strip(), word.strip()) for word in hint.split("|"))
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(atom for arg in typing.get_args(hint) for atom in _atoms(arg))
    return (hint,)


def _describe(hint: object, text: str) -> str:
    """A type for people who write TOML: ``int | None`` is "integer"."""
    words: list[str] = []
    for atom in _atoms(hint):
        if atom is type(None):
            continue
        if typing.get_origin(atom) is Literal:
            words.extend(f"`{_toml(value)}`" for value in typing.get_args(atom))
            continue
        if atom is object or atom is Any:
            return "any value"
        word = _TYPE_WORDS.get(atom)
        if word is None and typing.get_origin(atom) in (list, tuple):
            word = "list"
        if word is not None and word not in words:
            words.append(word)
    if "integer" in words and "number" in words:
        words.remove("integer")
    if not words:
        return f"`{text}`" if text else "any value"
    if len(words) > 2:
        return ", ".join(words[:-1]) + " or " + words[-1]
    return " or ".join(words)


def _is_duration(hint: object) -> bool:
    if isinstance(hint, str):  # an annotation that could not be resolved
        return "timedelta" in hint
    return datetime.timedelta in _atoms(hint)


def _code_only_type(hint: object) -> bool:
    """Whether no TOML value could ever be of this type: a callable (or ``None``)."""
    if isinstance(hint, str):
        words = [word.strip() for word in hint.split("|") if word.strip() != "None"]
        return bool(words) and all(word.startswith("Callable") for word in words)
    atoms = [atom for atom in _atoms(hint) if atom is not type(None)]
    return bool(atoms) and all((typing.get_origin(atom) or atom) is Callable for atom in atoms)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml(value: object) -> str:
    """A default as a TOML value (or the words people read for one)."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, datetime.timedelta):
        return repr(value.total_seconds())
    if isinstance(value, type):
        return _quoted(value.__name__)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return "unset"


# Patterns used only to write the reference page: left to re's cache, not compiled
# at import.
_SENTENCE = r"(?<=[.!?])\s+(?=[A-Z`*(-])"
_ROLE = r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`"


def _plain(text: str) -> str:
    """reST of a docstring as Markdown for a table cell."""
    text = re.sub(_ROLE, r"`\1`", text)
    text = text.replace("``", "`").replace("\\", "")
    return " ".join(text.split()).replace("|", "\\|")


def _docs_for(keys: Iterable[str], docstrings: Iterable[str]) -> dict[str, str]:
    """For each key, the sentence of ``docstrings`` about it, as Markdown.

    For kinds without an options class, whose keys have no ``doc`` of their own: of
    the sentences naming a key, the one naming it nearest its start is most often
    the one about it (``"``max_elapsed`` bounds the time..."``). A sentence already
    given to an earlier key is not repeated: the later key points to that one.
    """
    sentences = [
        sentence.lstrip("- ")
        for docstring in docstrings
        for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(docstring))
        for sentence in re.split(_SENTENCE, " ".join(paragraph.split()))
    ]
    docs: dict[str, str] = {}
    used: dict[str, str] = {}
    for key in keys:
        mark = re.compile(rf"``{re.escape(key)}(?:``|=)")
        found = sorted(
            (match.start(), index)
            for index, sentence in enumerate(sentences)
            if (match := mark.search(sentence)) is not None
        )
        fresh = [sentences[index] for _, index in found if sentences[index] not in used]
        if fresh:
            used[fresh[0]] = key
            docs[key] = _plain(fresh[0])
        elif found:
            docs[key] = f"See `{used[sentences[found[0][1]]]}`."
        else:
            docs[key] = ""
    return docs


def _summary(docstring: str | None) -> str:
    if not docstring:
        return ""
    first = re.split(r"\n\s*\n", inspect.cleandoc(docstring))[0]
    return _plain(first)


# ----------------------------------------------------------------------------- kinds


def _docstrings(target: object) -> tuple[str, ...]:
    """The docstrings that describe ``target``'s parameters: its own and its ``__init__``'s."""
    found = [getattr(target, "__doc__", None)]
    if isinstance(target, type):
        found.append(getattr(target.__init__, "__doc__", None))  # type: ignore[misc]
    return tuple(
        doc for doc in found if isinstance(doc, str) and doc and doc != object.__init__.__doc__
    )


def _options_of(target: object) -> type[Options] | None:
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

    Made by :func:`register_kind` (and for the built-in kinds, at import). ``keys()``
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
        return self._options if self._options is not None else _options_of(self.target)

    def summary(self) -> str:
        """The first paragraph of the kind's docstring, as Markdown."""
        return _summary(self._docs[0] if self._docs else None)

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
                seconds = _is_duration(hint) or self._conversions.get(field.name) == "seconds"
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
                    type=_CONVERSION_TYPES.get(conversion or "", "")
                    or _describe(hint, str(field.type)),
                    default=default,
                    doc=_plain(field.metadata.get("doc", "")),
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
            if _code_only_type(hint):
                continue
            params.append(param)
        docs = _docs_for((param.name for param in params), self._docs)
        found: list[tuple[Key, inspect.Parameter]] = []
        for param in params:
            hint = hints.get(param.name, param.annotation)
            conversion = self._conversions.get(param.name)
            if conversion is None and _is_duration(hint):
                conversion = "seconds"
            text = param.annotation if isinstance(param.annotation, str) else ""
            if param.annotation is param.empty:
                text = ""
            default = REQUIRED if param.default is param.empty else param.default
            found.append(
                (
                    Key(
                        name=param.name,
                        type=_CONVERSION_TYPES.get(conversion or "", "") or _describe(hint, text),
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
        for key in keys.values():
            if key.required and key.name not in given:
                raise ConfigError(
                    f"required option of {self.name!r} missing", path=f"{path}.{key.name}"
                )
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
        for key in found.values():
            if key.required and key.name not in values:
                raise ConfigError(
                    f"required option of {self.name!r} missing", path=f"{path}.{key.name}"
                )
        factory = self._fallback or self.target
        return factory(**values, name=name) if self.policy else factory(**values)


# ------------------------------------------------------------------ limits in files


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


# A layer may have registered its own under these names (``ratelimit`` may register
# "rates"); the registry's only fill the gaps.
for _name, _convert in (
    ("seconds", convert_seconds),
    ("limits", convert_limits),
    ("rates", convert_limits),
    ("exceptions", convert_exceptions),
):
    if _name not in CONVERSIONS:
        register_conversion(_name, _convert)


def _rate_limiter(
    *,
    limits: tuple[Algorithm, ...],
    store: str = "memory://",
    key: str = "global",
    cost: int = 1,
    mode: Literal["reject", "wait"] = "reject",
    max_wait: float = 1.0,
    name: str,
) -> RateLimiter:
    return RateLimiter(
        *limits, store=store, key=key, cost=cost, mode=mode, max_wait=max_wait, name=name
    )


# ------------------------------------------------------------------------ the table


_kinds: dict[str, Kind] = {}
_names: dict[str, Kind] = {}  # names and aliases
_lock = threading.Lock()


def _add(kind: Kind, *, replace: bool) -> None:
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


def _builtin(name: str, target: Callable[..., Any], **hints: Any) -> None:
    aliases = list(hints.pop("aliases", ()))
    options = _options_of(target)
    if options is not None and options.kind and norm(options.kind) not in (name, *aliases):
        aliases.append(norm(options.kind))  # the name its options class gives
    _add(Kind(name, target, aliases=aliases, **hints), replace=False)


# The hints below (conversions, code-only keys) serve only while a policy has no
# options class; once it has one, its fields say all of this themselves.
_S = "seconds"
_builtin(
    "retry",
    Retry,
    conversions={"delay": _S, "max_delay": _S, "max_elapsed": _S, "on": "exceptions"},
    code_only=("on_result",),
)
_builtin(
    "circuit_breaker",
    CircuitBreaker,
    aliases=("breaker",),
    conversions={
        "window_seconds": _S,
        "slow_call_duration": _S,
        "open_duration": _S,
        "max_open_duration": _S,
        "failure_on": "exceptions",
        "ignore": "exceptions",
    },
    code_only=("sync",),
)
_builtin("timeout", Timeout, conversions={"seconds": _S})
_builtin("bulkhead", Bulkhead, conversions={"max_wait": _S})
_builtin("fallback", Fallback, conversions={"on": "exceptions"}, code_only=("on_result",))
_builtin(
    "rate_limiter",
    RateLimiter,
    fallback=_rate_limiter,
    conversions={"limits": "limits", "max_wait": _S},
)
BUILTIN_KINDS = tuple(_kinds)


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
    _add(Kind(norm(name), kind, options=options), replace=replace)
    return kind


def _check_takes_name(kind: Callable[..., Any], options: type[Options] | None) -> None:
    built_by = getattr(kind, "from_options", None) if options is None else kind
    if options is None and _options_of(kind) is None:
        built_by = kind
    if built_by is None:
        built_by = kind
    try:
        signature = inspect.signature(built_by)
    except (TypeError, ValueError):
        return
    params = signature.parameters.values()
    if not any(p.name == "name" or p.kind is p.VAR_KEYWORD for p in params):
        raise ConfigError(
            f"{getattr(built_by, '__qualname__', built_by)!r} must accept name=: "
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
