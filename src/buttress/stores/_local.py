"""What a store that decides in this process offers beyond the :class:`Store` protocol.

A store that keeps its state in this process decides without I/O, so a caller may
hold on to a *decider* it bound once for some limits, instead of naming the limits
at every call: :class:`~buttress.ratelimit.RateLimiter` does, for its hot paths.
:class:`LocalStore` is that capability, detected with ``isinstance``;
:class:`~buttress.stores.MemoryStore` has it.

The boolean deciders (``bind_allow``) answer only "allowed?", building no
:class:`~buttress.stores.Decision`. An algorithm may offer them a *boolean twin* of
its ``decide`` (:class:`AllowTwin`): Python source that the memory store compiles
into the decider, so a decision is one function call. An algorithm without one is
asked through ``decide``, with the same answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple, Protocol, TypeAlias, runtime_checkable

from buttress.stores.base import Algorithm, Decision

__all__ = [
    "Allow",
    "AllowTwin",
    "AsyncAllow",
    "Decider",
    "LocalStore",
    "MultiDecider",
    "is_local",
]

Decider: TypeAlias = Callable[[str, int, float | None], Decision]
"""A bound decider: ``(key, cost, now=None) -> Decision`` for one algorithm."""

MultiDecider: TypeAlias = Callable[[str, int, float | None], tuple[Decision, ...]]
"""A bound all-limits decider: ``(key, cost, now=None) -> decisions`` for some algorithms."""


class Allow(Protocol):
    """A bound boolean decider: ``allow(key=None, cost=None) -> bool`` (see ``bind_allow``)."""

    def __call__(self, key: str | None = None, cost: int | None = None) -> bool: ...


class AsyncAllow(Protocol):
    """The async twin of :class:`Allow`."""

    def __call__(self, key: str | None = None, cost: int | None = None) -> Awaitable[bool]: ...


class AllowTwin(NamedTuple):
    """An algorithm's boolean twin of ``decide``, as Python source for a local store.

    ``source`` is a block of statements that reads ``state`` (the key's state, or
    ``None``), ``now`` and ``cost`` (a whole number >= 0, as an int or a float:
    the store passes its default cost as a float, which keeps the arithmetic on
    the interpreter's float fast paths), and the constants in ``names``,
    and sets ``state`` (the new state), ``reset_after`` and ``allowed`` to exactly
    what ``decide(state, now, cost)`` returns as its new state, its decision's
    ``reset_after`` and its ``allowed``: the same floating-point operations in the
    same order. It must not assign ``now``, ``cost``, ``key`` or any name that
    starts with ``_`` (the store's own). The shared store tests check each twin
    against ``decide``, as they check the Lua twins.
    """

    source: str
    names: Mapping[str, object]


@runtime_checkable
class LocalStore(Protocol):
    """A store that decides in this process, without I/O, through deciders bound once.

    Each method returns a callable that decides exactly as the store's
    ``decide``/``decide_all`` would for the limits it was bound to, sharing their
    state. A store whose ``decide`` methods were overridden (a subclass) returns
    deciders that call the overrides.
    """

    def bind(self, algorithm: Algorithm) -> Decider:
        """A decider for ``algorithm`` alone: ``(key, cost, now=None) -> Decision``."""
        ...

    def bind_all(self, algorithms: Sequence[Algorithm]) -> MultiDecider:
        """An all-limits decider: ``(key, cost, now=None) -> decisions``, as ``decide_all``."""
        ...

    def bind_allow(
        self,
        algorithms: Sequence[Algorithm],
        *,
        prefix: str = "",
        default_key: str = "",
        default_cost: int = 1,
        on_refused: Callable[[], object] | None = None,
    ) -> Allow:
        """``allow(key=None, cost=None) -> bool``: one request under every limit, all or nothing.

        The key stored is ``prefix + key``, or ``default_key`` as it is when ``key``
        is ``None``, so a caller can hand the decider out as its own API without a
        wrapper; ``on_refused()`` is called after each refusal.
        """
        ...

    def bind_async_allow(
        self,
        algorithms: Sequence[Algorithm],
        *,
        prefix: str = "",
        default_key: str = "",
        default_cost: int = 1,
        on_refused: Callable[[], object] | None = None,
    ) -> AsyncAllow:
        """The async twin of :meth:`bind_allow`."""
        ...


_MEMBERS = ("bind", "bind_all", "bind_allow", "bind_async_allow")


def is_local(store: object) -> bool:
    """``isinstance(store, LocalStore)``, judged on the store's class.

    Python 3.11 asks the instance (``hasattr``), so a wrapper whose ``__getattr__``
    forwards to a memory store would pass, and its binders would skip the
    wrapper's own ``decide``; Python 3.12 asks the class. This asks the class
    everywhere: a wrapper is local only if it defines the binders itself.
    """
    return isinstance(store, LocalStore) and all(
        inspect.getattr_static(store, name, None) is not None for name in _MEMBERS
    )
