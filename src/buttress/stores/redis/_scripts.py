"""Run Lua scripts in one round trip, sync or async, reloading them after ``NOSCRIPT``.

The one place that knows how buttress talks to Redis: every Redis-backed state
(rate limits, shared breakers) is a script called with ``EVALSHA``. A batch of calls
is one pipelined round trip (a single call skips the pipeline, which costs as much
as the call itself). When Redis answers ``NOSCRIPT`` — after a ``SCRIPT FLUSH``, a
restart or a failover — the missing scripts are loaded and their calls repeated in
one more round trip.

Every script starts with buttress's prelude (``stores/lua/prelude.lua``): small
helpers that know no algorithm — ``now_of(ARGV[1])`` (the given time, or the
server's clock), ``numbers(text)``, ``store_numbers(key, values, ttl_ms)``.

The logic is written once, as a generator that yields each round trip and gets its
replies back (sans-I/O); :func:`run_scripts` and :func:`arun_scripts` only drive it.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Generator, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, TypeAlias

from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError

from ._clients import map_error

__all__ = ["PRELUDE", "Call", "arun_scripts", "run_scripts", "script"]

# Replies stay bytes whatever the client's decode_responses: scripts may answer in
# binary. Asking costs a few per cent of a round trip, so only clients that decode
# are asked; what each client does is looked up once (by identity, bounded).
_RAW: dict[str, Any] = {NEVER_DECODE: True}
_AS_IS: dict[str, Any] = {}
_decoding: dict[int, tuple[Any, dict[str, Any]]] = {}


def _options(client: Any) -> dict[str, Any]:
    """The options that keep ``client``'s replies raw: none unless it decodes."""
    known = _decoding.get(id(client))
    if known is not None and known[0]() is client:
        return known[1]
    try:
        options = _RAW if client.get_encoder().decode_responses else _AS_IS
        if len(_decoding) >= 256:
            _decoding.clear()
        _decoding[id(client)] = (weakref.ref(client), options)
    except Exception:  # a client of an unusual kind: ask every time, always right
        return _RAW
    return options


Call: TypeAlias = tuple[str | bytes, str, tuple[Any, ...]]
"""One script call: ``(sha1, source, args)``, ``args`` being what follows the sha in
``EVALSHA``: the number of keys, the keys, then the script's arguments. The sha1 may
be given as ``bytes``, which redis-py sends without encoding it again."""


# Read at import, never from a caller's thread: importlib.resources takes the import
# lock, and a fork while another thread holds it leaves the child's copy locked.
PRELUDE = resources.files("buttress.stores").joinpath("lua/prelude.lua").read_text("utf-8")
"""The Lua helpers every script starts with (see the module docstring)."""


@lru_cache(maxsize=1024)
def script(body: str) -> tuple[str, str]:
    """``(sha1, source)`` of the script running ``body`` after the :data:`PRELUDE`.

    ``sha1`` is what ``SCRIPT LOAD`` names ``source`` and what a :data:`Call` gives.
    """
    source = f"{PRELUDE}\n{body}"
    return hashlib.sha1(source.encode("utf-8")).hexdigest(), source


def _exchange(
    client: Any, calls: Sequence[Call], store: str, first: list[Any] | None = None
) -> Generator[Any, Any, list[Any]]:
    """The round trips that run ``calls`` on ``client``: yields what each one returns.

    With a sync client that is the replies themselves; with an asyncio one, an
    awaitable the driver awaits, sending the replies (or throwing the error) back.
    ``first``: the replies of a first round trip the driver already made.
    """
    options = _options(client)
    try:
        if first is not None:
            replies = first
        elif len(calls) == 1:
            try:
                replies = [(yield _evalsha(client, calls[0]))]
            except NoScriptError as exc:
                replies = [exc]
        else:
            replies = yield _pipeline(client, (), calls, options).execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            sources = tuple(dict.fromkeys(calls[i][1] for i in missing))
            again = _pipeline(client, sources, [calls[i] for i in missing], options)
            retried = yield again.execute(raise_on_error=False)
            for i, reply in zip(missing, retried[len(sources) :], strict=True):
                replies[i] = reply
    except Exception as exc:
        raise map_error(store, exc) from exc
    for reply in replies:
        if isinstance(reply, Exception):
            raise map_error(store, reply) from reply
    return replies


def _pipeline(
    client: Any, sources: Sequence[str], calls: Sequence[Call], options: dict[str, Any]
) -> Any:
    """A pipeline (not a transaction) loading ``sources``, then making ``calls``."""
    pipe = client.pipeline(transaction=False)
    for source in sources:
        pipe.script_load(source)
    for sha, _, args in calls:
        pipe.execute_command("EVALSHA", sha, *args, **options)
    return pipe


def _evalsha(client: Any, call: Call) -> Any:
    """One call, outside any pipeline: its reply (sync) or an awaitable of it (async)."""
    sha, _, args = call
    return client.execute_command("EVALSHA", sha, *args, **_options(client))


def _after(error: Exception, store: str) -> list[Any]:
    """The first round trip's replies when a single call failed with ``error``: a
    ``NOSCRIPT`` is for :func:`_exchange` to reload; anything else is raised, mapped."""
    if isinstance(error, NoScriptError):
        return [error]
    raise map_error(store, error) from error


def run_scripts(client: Any, calls: Sequence[Call], store: str) -> list[Any]:
    """The replies of ``calls``, in order, made with the ``redis.Redis`` ``client``.

    Bulk strings come back as ``bytes`` even from a client with
    ``decode_responses=True``, so a script may answer in binary.

    One round trip (two after a ``NOSCRIPT``). A failure raises
    :class:`~buttress.stores.StoreUnavailable` (connection, timeout) or
    :class:`~buttress.stores.StoreError` naming ``store``, the driver's error as
    ``__cause__``.
    """
    first = None
    if len(calls) == 1:  # the hot path: no generator to drive for one call
        try:
            return [_evalsha(client, calls[0])]
        except Exception as exc:
            first = _after(exc, store)
    return _driven(_exchange(client, calls, store, first))


def _driven(steps: Generator[Any, Any, list[Any]]) -> list[Any]:
    """Run the round trips of a sync client's exchange: its replies are the values."""
    try:
        replies = next(steps)
        while True:
            replies = steps.send(replies)
    except StopIteration as done:
        result: list[Any] = done.value
        return result


async def arun_scripts(client: Any, calls: Sequence[Call], store: str) -> list[Any]:
    """The async twin of :func:`run_scripts`, with a ``redis.asyncio.Redis`` client."""
    first = None
    if len(calls) == 1:  # the hot path, as in run_scripts
        try:
            return [await _evalsha(client, calls[0])]
        except Exception as exc:
            first = _after(exc, store)
    steps = _exchange(client, calls, store, first)
    try:
        pending = next(steps)
        while True:
            try:
                replies = await pending
            except Exception as exc:
                pending = steps.throw(exc)
            else:
                pending = steps.send(replies)
    except StopIteration as done:
        result: list[Any] = done.value
        return result
