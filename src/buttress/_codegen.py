"""Drivers written once, generated in every shape they are needed in.

A policy's call driver — the few lines that run the call between its engine's
decisions — is needed sync and async, as a pipeline runner around the next
strategy, as a runner that calls the user's function directly, and as a decorator's
wrapper. Writing each by hand copies the same lines a dozen times; calling one
shared helper from each costs a Python frame (~40 ns) on every call. So, as
:mod:`dataclasses` builds ``__init__``, a driver is written once as a *template* and
the variants are generated from it, once per shape and set of flags, into factories
that close over the policy's state like hand-written code would.

A template is the source of one function, with these placeholders:

- ``{DEF}``: ``def`` or ``async def``;
- ``{SIG}``: the parameters of the shape: ``(fn, args, kwargs)`` for runners,
  ``(*args, **kwargs)`` for a decorator's wrapper (``fn`` is then a factory
  parameter, and so is ``inner`` when the wrapper is a pipeline's outermost policy
  around the runners of the rest);
- ``{CALL}``: the call of the next step: ``inner(fn, args, kwargs)`` or
  ``fn(*args, **kwargs)``;
- ``{AWAIT}``: ``await `` in async shapes;
- ``{CHECK}``: a statement checking a sync call's ``result`` (the function was
  async: raise ``TypeError`` naming ``acall``) in shapes that call the user's
  function directly; nothing elsewhere. Use it on its own line right after
  ``result = {CALL}``.

A line whose first word (after its indentation) is ``@flag`` is kept only when
``flag`` is true, ``@!flag`` only when it is false. Lines left empty are dropped.
The generated source is registered with :mod:`linecache`, so tracebacks through a
driver show its lines.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

__all__ = [
    "ASYNC_AROUND",
    "ASYNC_DECORATOR",
    "ASYNC_DIRECT",
    "ASYNC_RUNNER",
    "SHAPES",
    "SYNC_AROUND",
    "SYNC_DECORATOR",
    "SYNC_DIRECT",
    "SYNC_RUNNER",
    "Shape",
    "Target",
    "factory",
    "targets",
    "use_acall",
]


@dataclass(frozen=True, slots=True)
class Shape:
    """One form a driver is generated in."""

    name: str
    is_async: bool
    signature: str
    call: str
    check: str
    takes: str
    """``"inner"`` (a runner around the next strategy) or ``"fn"`` (calls the function)."""

    @property
    def decorator(self) -> bool:
        """Whether ``fn`` is fixed when the driver is built (a decorator's wrapper)."""
        return self.signature.startswith("(*")


_CHECK = "if result.__class__ is _coroutine: _use_acall(fn, result)"

SYNC_RUNNER = Shape(
    "sync_runner", False, "(fn, args, kwargs)", "inner(fn, args, kwargs)", "", "inner"
)
ASYNC_RUNNER = Shape(
    "async_runner", True, "(fn, args, kwargs)", "inner(fn, args, kwargs)", "", "inner"
)
SYNC_DIRECT = Shape("sync_direct", False, "(fn, args, kwargs)", "fn(*args, **kwargs)", _CHECK, "fn")
ASYNC_DIRECT = Shape("async_direct", True, "(fn, args, kwargs)", "fn(*args, **kwargs)", "", "fn")
SYNC_DECORATOR = Shape(
    "sync_decorator", False, "(*args, **kwargs)", "fn(*args, **kwargs)", _CHECK, "fn"
)
ASYNC_DECORATOR = Shape(
    "async_decorator", True, "(*args, **kwargs)", "fn(*args, **kwargs)", "", "fn"
)
# A pipeline used as a decorator: its outermost policy's wrapper, around the runners
# of the policies inside it (one frame less than a wrapper calling the runners).
SYNC_AROUND = Shape(
    "sync_around", False, "(*args, **kwargs)", "inner(fn, args, kwargs)", "", "inner"
)
ASYNC_AROUND = Shape(
    "async_around", True, "(*args, **kwargs)", "inner(fn, args, kwargs)", "", "inner"
)
SHAPES = (
    SYNC_RUNNER,
    ASYNC_RUNNER,
    SYNC_DIRECT,
    ASYNC_DIRECT,
    SYNC_DECORATOR,
    ASYNC_DECORATOR,
    SYNC_AROUND,
    ASYNC_AROUND,
)

Target: TypeAlias = "Callable[..., Any] | tuple[Callable[..., Any], Callable[..., Any]] | None"
"""What a driver is built around: the next runner (a runner shape), the decorated
function (a decorator shape), ``(fn, inner)`` (an around shape), or ``None`` (a
direct runner, which gets ``fn`` per call)."""


def targets(target: Target) -> tuple[Callable[..., Any], ...]:
    """``target`` as the factory's trailing arguments (``fn``, then ``inner``)."""
    if target is None:
        return ()
    if isinstance(target, tuple):
        return target
    return (target,)


def use_acall(fn: object, coroutine: Any) -> NoReturn:
    """A sync entry point was given an async function: close its coroutine, say so.

    The coroutine never ran (its body starts at the first ``await``), so nothing
    happened; closing it spares a "never awaited" warning.
    """
    coroutine.close()
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    raise TypeError(
        f"{name} returned a coroutine: it is async, and a sync entry point cannot "
        "apply any protection to it. Use `await policy.acall(fn, ...)`, or decorate the "
        "async function itself."
    )


_BUILTINS: dict[str, Any] = {"_coroutine": types.CoroutineType, "_use_acall": use_acall}

_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Callable[..., Any]] = {}
_serial = 0


def _expand(template: str, shape: Shape, flags: Mapping[str, bool]) -> tuple[str, str]:
    source = (
        template.replace("{DEF}", "async def" if shape.is_async else "def")
        .replace("{SIG}", shape.signature)
        .replace("{CALL}", shape.call)
        .replace("{AWAIT}", "await " if shape.is_async else "")
        .replace("{CHECK}", shape.check)
    )
    lines: list[str] = []
    name = ""
    for raw in source.splitlines():
        line = raw
        stripped = raw.lstrip()
        if stripped.startswith("@"):
            word, _, rest = stripped.partition(" ")
            negated = word.startswith("@!")
            flag = word[2:] if negated else word[1:]
            if flag not in flags:
                raise KeyError(f"template uses flag {flag!r}, which was not given")
            if flags[flag] == negated:
                continue
            line = raw[: len(raw) - len(stripped)] + rest
        if not line.strip():
            continue
        if not name and line.lstrip().startswith(("def ", "async def ")):
            name = line.split("def ", 1)[1].split("(", 1)[0].strip()
        lines.append(line)
    if not name:
        raise ValueError("a driver template must define a function")
    return "\n".join(lines), name


def factory(
    template: str,
    shape: Shape,
    params: tuple[str, ...],
    flags: Mapping[str, bool] | None = None,
    *,
    label: str = "driver",
) -> Callable[..., Callable[..., Any]]:
    """The factory of ``template`` in ``shape``: call it with ``params`` to get a driver.

    ``params`` are the names the template closes over (the engine's bound methods,
    the clock, ...); a decorator shape adds ``fn`` and a runner shape ``inner`` when
    the template uses them. Factories are cached per template, shape, parameters
    and flags, so building a policy does not compile anything after the first time.
    """
    global _serial
    flags = dict(flags or {})
    key = (template, shape, params, tuple(sorted(flags.items())))
    made = _cache.get(key)
    if made is not None:
        return made
    with _lock:
        made = _cache.get(key)
        if made is not None:
            return made
        body, name = _expand(template, shape, flags)
        extra = ("fn",) if shape.decorator else ()
        if shape.takes == "inner":
            extra = (*extra, "inner")
        arguments = ", ".join((*params, *(p for p in extra if p not in params)))
        indented = "\n".join(f"    {line}" for line in body.splitlines())
        source = f"def _factory({arguments}):\n{indented}\n    return {name}\n"
        _serial += 1
        filename = f"<buttress {label} {shape.name} #{_serial}>"
        code = compile(source, filename, "exec")
        import linecache  # noqa: PLC0415 - only when a driver is first generated

        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict[str, Any] = dict(_BUILTINS)
        exec(code, namespace)
        built: Callable[..., Callable[..., Any]] = namespace["_factory"]
        _cache[key] = built
        return built
