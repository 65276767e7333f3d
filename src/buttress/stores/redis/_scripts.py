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
from collections.abc import Generator, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, TypeAlias

from redis.exceptions import NoScriptError

from ._clients import map_error

__all__ = ["PRELUDE", "Call", "arun_scripts", "run_scripts", "script"]

Call: TypeAlias = tuple[str, str, tuple[Any, ...]]
"""One script call: ``(sha1, source, args)``, ``args`` being what follows the sha in
``EVALSHA``: the number of keys, the keys, then the script's arguments."""


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


def _exchange(client: Any, calls: Sequence[Call], store: str) -> Generator[Any, Any, list[Any]]:
    """The round trips that run ``calls`` on ``client``: yields what each one returns.

    With a sync client that is the replies themselves; with an asyncio one, an
    awaitable the driver awaits, sending the replies (or throwing the error) back.
    """
    try:
        if len(calls) == 1:
            sha, _, args = calls[0]
            try:
                replies = [(yield client.evalsha(sha, *args))]
            except NoScriptError as exc:
                replies = [exc]
        else:
            replies = yield _pipeline(client, (), calls).execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            sources = tuple(dict.fromkeys(calls[i][1] for i in missing))
            again = _pipeline(client, sources, [calls[i] for i in missing])
            retried = yield again.execute(raise_on_error=False)
            for i, reply in zip(missing, retried[len(sources) :], strict=True):
                replies[i] = reply
    except Exception as exc:
        raise map_error(store, exc) from exc
    for reply in replies:
        if isinstance(reply, Exception):
            raise map_error(store, reply) from reply
    return replies


def _pipeline(client: Any, sources: Sequence[str], calls: Sequence[Call]) -> Any:
    """A pipeline (not a transaction) loading ``sources``, then making ``calls``."""
    pipe = client.pipeline(transaction=False)
    for source in sources:
        pipe.script_load(source)
    for sha, _, args in calls:
        pipe.evalsha(sha, *args)
    return pipe


def run_scripts(client: Any, calls: Sequence[Call], store: str) -> list[Any]:
    """The replies of ``calls``, in order, made with the ``redis.Redis`` ``client``.

    One round trip (two after a ``NOSCRIPT``). A failure raises
    :class:`~buttress.stores.StoreUnavailable` (connection, timeout) or
    :class:`~buttress.stores.StoreError` naming ``store``, the driver's error as
    ``__cause__``.
    """
    steps = _exchange(client, calls, store)
    try:
        replies = next(steps)
        while True:
            replies = steps.send(replies)
    except StopIteration as done:
        result: list[Any] = done.value
        return result


async def arun_scripts(client: Any, calls: Sequence[Call], store: str) -> list[Any]:
    """The async twin of :func:`run_scripts`, with a ``redis.asyncio.Redis`` client."""
    steps = _exchange(client, calls, store)
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
