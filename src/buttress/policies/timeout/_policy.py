"""The ``Timeout`` policy: its drivers, generated from one template, and its blocks."""

from __future__ import annotations

import contextvars
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

if TYPE_CHECKING:
    import asyncio

from buttress._codegen import Shape, Target, factory, targets
from buttress._deadline import (
    DEADLINE,
    Published,
    mark_timeout_cancel,
    unmark_timeout_cancel,
)
from buttress._events import call_name
from buttress._options import built_from
from buttress._strategy import AsyncRunner, GeneratedDrivers, SyncRunner, invoke, invoke_async
from buttress._switches import SWITCHES
from buttress._validate import check_clock
from buttress.clock import MONOTONIC, Clock, TimerHandle
from buttress.errors import TimeoutExceeded
from buttress.policies.timeout._engine import Registry, publish_nested
from buttress.policies.timeout._events import TimeoutOccurred
from buttress.policies.timeout._options import TimeoutMode, TimeoutOptions
from buttress.policies.timeout._workers import Work, pool

__all__ = ["Timeout"]

_Token = contextvars.Token[Published | None]
_ExcType = type[BaseException] | None

# The driver of every shape but the pessimistic sync ones.
#
# ``@aio`` lines are the async call's. Find this loop's registry and the task: the
# registry is kept per thread, for the loop the thread ran last, since
# asyncio.get_running_loop() makes a getpid() system call on 3.11; that loop is the
# running one if it runs a task, in this thread. A task already in the registry
# re-entered this Timeout: the enclosing call started earlier with the same
# duration, so its deadline comes first and covers this call. Otherwise watch the
# task until its deadline and, on the way out, tell a cancellation of ours (the
# entry is gone: the timer took it) from one asked for by somebody else
# (asyncio.timeout's rule: ours only if no other cancel request came meanwhile).
#
# ``@!aio`` lines are the optimistic sync call's: a result that arrives after the
# deadline is refused.
#
# The deadline carries the policy and the call (``fn``, in the published tuple: no
# object of its own per call), so that a wait inside that cannot fit reports which
# call ran out of time. The timer is armed
# before the deadline is published: a loop timer keeps a copy of the context it was
# armed in, which should not keep this call's deadline (and its policy) alive.
_DRIVER = """
{DEF} timeout{SIG}:
    if switches.no_timeouts:
        result = {AWAIT}{CALL}
        {CHECK}
        return result
    @aio try:
    @aio     registry = local.registry
    @aio except AttributeError:
    @aio     registry = new_registry()
    @aio task = current_task(registry.loop)
    @aio if task is None or registry.runs._thread_id != registry.thread:
    @aio     registry = new_registry()
    @aio     task = current_task(registry.loop)
    @aio     if task is None:
    @aio         raise RuntimeError("Timeout must be awaited inside an asyncio task")
    @aio entries = registry.entries
    @aio if task in entries:
    @aio     return {AWAIT}{CALL}
    deadline = monotonic() + seconds
    @aio entries[task] = deadline
    @aio if registry.handle is None:
    @aio     registry.handle = clock.call_later(seconds, registry.fire)
    @aio cancelling = task.cancelling()
    current = get()
    if current is None:
        token = publish((deadline, clock, policy, fn))
    else:
        token = nested((deadline, clock, policy, fn), seconds, current)
    try:
        result = {AWAIT}{CALL}
        {CHECK}
    @aio except BaseException as exc:
    @aio     if token is not None:
    @aio         unpublish(token)
    @aio     if entries.pop(task, None) is None:
    @aio         unmark(task)
    @aio         if task.uncancel() <= cancelling and isinstance(exc, cancelled_error):
    @aio             timed_out(policy, fn, exc)
    @aio     raise
    @!aio finally:
    @!aio     if token is not None:
    @!aio         unpublish(token)
    @aio if token is not None:
    @aio     unpublish(token)
    @aio if entries.pop(task, None) is None:
    @aio     unmark(task)
    @aio     task.uncancel()
    @!aio if monotonic() >= deadline:
    @!aio     timed_out(policy, fn, None)
    return result
"""

# The factory of each shape, by the shape's name: a Timeout made for one block
# builds its drivers too, so building them costs no more than it must.
_MADE: dict[str, Callable[..., Callable[..., Any]]] = {}


def _asyncio() -> Any:
    """The asyncio module, imported on first use (a sync program never needs it)."""
    import asyncio  # noqa: PLC0415 - loaded once an async call or block is made

    return asyncio


def _task_of(aio: Any) -> Callable[[Any], Any]:
    """``current_task(loop)`` at its cheapest.

    On 3.11 :func:`asyncio.current_task` is a Python function around a lookup in
    the C module's ``loop -> task`` dict (a frame per call, two per request through
    an HTTP client's two timeouts); the lookup itself answers the same. Later
    versions implement ``current_task`` in C: it is used as it is.
    """
    found = aio.current_task
    if isinstance(found, types.FunctionType):
        tasks = getattr(aio.tasks, "_current_tasks", None)
        if type(tasks) is dict:
            get: Callable[[Any], Any] = tasks.get
            return get
    return found  # type: ignore[no-any-return]


_get_deadline = DEADLINE.get
_set_deadline = DEADLINE.set
_reset_deadline = DEADLINE.reset

_PARAMS = (
    "switches",
    "policy",
    "local",
    "new_registry",
    "current_task",
    "monotonic",
    "seconds",
    "clock",
    "events",
    "get",
    "publish",
    "unpublish",
    "nested",
    "unmark",
    "cancelled_error",
    "timed_out",
)


class _Block:
    """One ``with``/``async with`` of a ``Timeout``, on the stack of open blocks.

    An async block watches its task with a loop timer of its own, as
    :func:`asyncio.timeout` does: blocks are entered once each, and a ``Timeout``
    made for one block should leave nothing behind. ``task`` is ``None`` unless an
    async block watches its task (a sync block and one under the testing switch do
    not).
    """

    __slots__ = ("cancelling", "deadline", "fired", "handle", "outer", "policy", "task", "token")

    def __init__(self, policy: Timeout, outer: _Block | None) -> None:
        self.policy = policy
        self.outer = outer
        self.deadline: float | None = None
        self.token: _Token | None = None
        self.task: asyncio.Task[Any] | None = None
        self.handle: TimerHandle | None = None
        self.cancelling = 0
        self.fired = False

    def fire(self) -> None:
        """The deadline: cancel the block's task, marked as a timeout's cancellation."""
        task = self.task
        if task is not None:
            self.fired = True
            mark_timeout_cancel(task)
            task.cancel()


_BLOCKS: contextvars.ContextVar[_Block | None] = contextvars.ContextVar(
    "buttress_timeout_blocks", default=None
)


class Timeout(GeneratedDrivers):
    """Limit a call to ``seconds``; raise :class:`~buttress.errors.TimeoutExceeded` past it.

    Async calls are cancelled at the deadline; a cancellation from outside still
    propagates as :class:`asyncio.CancelledError`. Sync calls follow ``mode``:

    ``"optimistic"`` (default)
        No thread, ~0.3 µs per call. The deadline is published for :func:`remaining`;
        code that honours it stops in time. A call that returns late raises
        ``TimeoutExceeded`` and its result is discarded — its side effects are not
        undone. A call that never returns is never interrupted.
    ``"pessimistic"``
        The call runs on a small, bounded pool of daemon worker threads (see
        :func:`set_pessimistic_workers`) with the caller's context variables, and
        the caller waits at most ``seconds``. On timeout the caller is released at
        once and the call is abandoned: it runs to its end in the background,
        holding a worker meanwhile; it never keeps the interpreter from exiting.
        Costs a thread hand-off per call (tens of µs); thread-local state of the
        caller is not visible to the call.

    Also a block: ``async with Timeout(2.0):`` cancels the block at the deadline and
    raises ``TimeoutExceeded``, like :func:`asyncio.timeout`; ``with Timeout(2.0):``
    (optimistic mode) publishes the deadline and raises on exit when it passed.
    Blocks nest, with each other and with calls.

    Emits :class:`TimeoutOccurred` whenever it raises ``TimeoutExceeded``.
    """

    __slots__ = ("_built_async", "_built_sync", "_local", "clock", "mode", "options", "seconds")

    Options: ClassVar[type[TimeoutOptions]] = TimeoutOptions

    options: TimeoutOptions
    seconds: float
    mode: TimeoutMode
    clock: Clock
    _built_sync: SyncRunner
    _built_async: AsyncRunner

    def __init__(
        self,
        seconds: float,
        *,
        mode: TimeoutMode = "optimistic",
        name: str | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._setup(TimeoutOptions(seconds=seconds, mode=mode), name, clock)

    @classmethod
    def from_options(
        cls, options: TimeoutOptions, *, name: str | None = None, clock: Clock = MONOTONIC
    ) -> Timeout:
        """A ``Timeout`` from its options (as the registry builds it from TOML)."""
        return built_from(cls, options, name, clock)

    def _setup(self, options: TimeoutOptions, name: str | None, clock: Clock) -> None:
        self.options = options
        self.seconds = options.seconds
        self.mode = options.mode
        self.clock = clock if clock is MONOTONIC else check_clock(clock)
        # Each thread runs at most one event loop at a time, so a per-thread cache
        # of the last registry finds the right one without asking for the running
        # loop (see _DRIVER). It keeps the thread's last loop referenced until the
        # thread uses another.
        self._local: threading.local | None = None
        self._init_strategy(name, "timeout")
        # No _build(): a Timeout made per block (``async with Timeout(2.0):``, as one
        # writes asyncio.timeout) never needs its call runners; they are built on
        # the first call() / acall() (the properties below).

    @property  # a lazily built runner, where Strategy has a slot
    def _sync(self) -> SyncRunner:
        try:
            return self._built_sync
        except AttributeError:
            runner: SyncRunner = self._sync_runner(invoke)
            self._built_sync = runner
            return runner

    @_sync.setter
    def _sync(self, runner: SyncRunner) -> None:
        self._built_sync = runner

    @property
    def _async(self) -> AsyncRunner:
        try:
            return self._built_async
        except AttributeError:
            runner: AsyncRunner = self._async_runner(invoke_async)
            self._built_async = runner
            return runner

    @_async.setter
    def _async(self, runner: AsyncRunner) -> None:
        self._built_async = runner

    # ------------------------------------------------------------------------ drivers

    def _thread_cache(self) -> threading.local:
        local = self._local
        if local is None:
            local = self._local = threading.local()
        return local

    def _registry(self) -> Registry:
        registry = Registry(_asyncio().get_running_loop(), self.clock)
        self._thread_cache().registry = registry
        return registry

    def _driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        if self.mode == "pessimistic" and not shape.is_async:
            return self._pessimistic_driver(shape, target)
        make = _MADE.get(shape.name)
        if make is None:
            flags = {"aio": shape.is_async}
            make = _MADE[shape.name] = factory(_DRIVER, shape, _PARAMS, flags, label="timeout")
        clock = self.clock
        # asyncio is imported by the first async driver, never by importing buttress.
        aio = _asyncio() if shape.is_async else None
        values = (
            SWITCHES,
            self,
            self._thread_cache() if shape.is_async else None,
            self._registry,
            None if aio is None else _task_of(aio),
            clock.monotonic,
            self.seconds,
            clock,
            self._events,
            _get_deadline,
            _set_deadline,
            _reset_deadline,
            publish_nested,
            unmark_timeout_cancel,
            None if aio is None else aio.CancelledError,
            _timed_out,
        )
        return make(*values, *targets(target))

    def _pessimistic_driver(self, shape: Shape, target: Target) -> Callable[..., Any]:
        given = targets(target)
        inner: SyncRunner = given[-1] if shape.takes == "inner" and given else invoke
        run = self._pessimistic(inner)
        if not shape.decorator or not given:
            return run
        fn = given[0]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return run(fn, args, kwargs)

        return wrapper

    def _pessimistic(self, inner: SyncRunner) -> SyncRunner:
        seconds = self.seconds
        clock = self.clock
        publish = self._publish
        switches = SWITCHES

        def run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if switches.no_timeouts:
                return inner(fn, args, kwargs)
            token = publish(clock.monotonic() + seconds, fn)
            try:
                context = contextvars.copy_context()
            finally:
                if token is not None:
                    DEADLINE.reset(token)
            work = Work(context, inner, (fn, args, kwargs))
            workers = pool()
            workers.submit(work)
            if not clock.wait(work.done, seconds):
                # Not started yet (every worker busy): it never will. Started: abandoned.
                workers.withdraw(work)
                _timed_out(self, fn, None)
            return work.outcome()

        return run

    def _publish(self, deadline: float, fn: Callable[..., Any] | None) -> _Token | None:
        """Publish ``deadline`` for what runs inside (unless an earlier one already is)."""
        current = DEADLINE.get()
        if current is None:
            return DEADLINE.set((deadline, self.clock, self, fn))
        return publish_nested((deadline, self.clock, self, fn), self.seconds, current)

    # ------------------------------------------------------------------------- blocks

    def __enter__(self) -> Timeout:
        if self.mode == "pessimistic":
            raise TypeError(
                f"{self!r} cannot time a block: a block cannot be moved to a worker thread. "
                "Use timeout.call(fn, ...) for a pessimistic timeout, or mode='optimistic'."
            )
        block = _Block(self, _BLOCKS.get())
        if not SWITCHES.no_timeouts:
            block.deadline = self.clock.monotonic() + self.seconds
            block.token = self._publish(block.deadline, None)
        _BLOCKS.set(block)
        return self

    def __exit__(self, exc_type: _ExcType, exc: BaseException | None, tb: object) -> None:
        block = self._leave()
        # A block that raised keeps its own error, late or not, as a late call does.
        deadline = block.deadline
        if exc_type is None and deadline is not None and self.clock.monotonic() >= deadline:
            _timed_out(self, None, None)

    async def __aenter__(self) -> Timeout:
        block = _Block(self, _BLOCKS.get())
        if not SWITCHES.no_timeouts:
            task = _asyncio().current_task()
            if task is None:
                raise RuntimeError("async with Timeout(...) must run inside an asyncio task")
            seconds = self.seconds
            clock = self.clock
            block.task = task
            block.cancelling = task.cancelling()
            block.deadline = clock.monotonic() + seconds
            # Armed before the deadline is published (see _DRIVER); the real clock's
            # timer straight on the task's loop, sparing a get_running_loop().
            if clock is MONOTONIC:
                block.handle = task.get_loop().call_later(seconds, block.fire)
            else:
                block.handle = clock.call_later(seconds, block.fire)
            block.token = self._publish(block.deadline, None)
        _BLOCKS.set(block)
        return self

    async def __aexit__(self, exc_type: _ExcType, exc: BaseException | None, tb: object) -> None:
        block = self._leave()
        task = block.task
        if task is None:
            return
        if not block.fired:
            if block.handle is not None:
                block.handle.cancel()
            return
        # The timer cancelled this block's task: a timeout, unless somebody else
        # asked for a cancellation meanwhile (then theirs goes on).
        unmark_timeout_cancel(task)
        cancelled = exc_type is not None and issubclass(exc_type, _asyncio().CancelledError)
        if task.uncancel() <= block.cancelling and cancelled:
            _timed_out(self, None, exc)

    def _leave(self) -> _Block:
        block = _BLOCKS.get()
        if block is None or block.policy is not self:
            raise RuntimeError(f"{self!r}: a block left that was not the innermost one entered")
        _BLOCKS.set(block.outer)
        if block.token is not None:
            DEADLINE.reset(block.token)
        return block

    # ------------------------------------------------------------------------- errors

    def expired(self, detail: str, fn: object = None) -> TimeoutExceeded:
        """The error of a wait inside this timeout that cannot fit in what is left.

        ``fn``: the call that waits (a function, or a label), named by the
        :class:`TimeoutOccurred` this emits like any timeout of this policy.
        """
        return self._expired(detail, fn)

    def _expired(self, detail: str | None, fn: object) -> TimeoutExceeded:
        events = self._events
        if events.enabled:
            call = "" if fn is None else fn if isinstance(fn, str) else call_name(fn)
            events.emit(TimeoutOccurred(self.name, self.seconds, call=call))
        return TimeoutExceeded(self.name, self.seconds, detail)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r}, mode={self.mode!r}, name={self.name!r})"


def _timed_out(
    policy: Timeout, fn: Callable[..., Any] | None, cause: BaseException | None
) -> NoReturn:
    raise policy._expired(None, fn) from cause
