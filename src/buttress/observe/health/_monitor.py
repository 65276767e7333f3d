"""HealthMonitor: runs checks on demand or in the background, and reports on them."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any

from buttress._events import Emitter, Listener, logger
from buttress._strategy import is_async_callable
from buttress._validate import check_callable, check_clock, check_name, check_seconds
from buttress.clock import MONOTONIC, Clock
from buttress.errors import ConfigError

from ._check import Check, CheckFunction, Composite, _Entry
from ._status import (
    CheckResult,
    CheckSnapshot,
    HealthReport,
    HealthStatus,
    HealthStatusChanged,
    worst,
)

__all__ = ["ChangeCallback", "HealthMonitor", "live_monitors"]

ChangeCallback = (
    Callable[[HealthStatusChanged], object] | Callable[[HealthStatusChanged], Awaitable[object]]
)
"""Called on every status change: sync, or async (awaited in the run that saw it)."""

_live: weakref.WeakSet[HealthMonitor] = weakref.WeakSet()
_log = "buttress.health"


def live_monitors() -> list[HealthMonitor]:
    """Every :class:`HealthMonitor` alive in this process (held weakly), for exporters."""
    while True:
        try:
            return list(_live)
        except RuntimeError:  # pragma: no cover - the set changed while being copied
            continue


class HealthMonitor:
    """A set of health checks: run them on demand or in the background, report on them.

    ::

        monitor = HealthMonitor(interval=10)
        monitor.add("postgres", ping_db, timeout=2)
        monitor.add("cache", ping_cache, timeout=1, critical=False)
        report = await monitor.run()          # once, now
        async with monitor:                   # or every 10 s in the background
            ...

    Every run starts all checks at once and takes at most the longest check
    timeout. The overall status is ``fail`` when a critical check fails, ``warn``
    when a non-critical one fails or any check warns, else ``pass``.

    - ``interval``: seconds from the end of one background run to the start of the
      next (:meth:`start`).
    - ``name``: the monitor's name in events and metrics (default ``"health"``).
    - ``on_change``: a callback (sync or async) for every status change, of a check
      or of the whole; more with :meth:`on_change`. Each change is also emitted as a
      :class:`HealthStatusChanged` event to listeners (:meth:`subscribe`,
      :func:`buttress.events.subscribe`).
    - ``clock``: the clock timing checks out and spacing runs (a fake one in tests).
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_clock",
        "_entries",
        "_events",
        "_report",
        "_running",
        "_status",
        "_task",
        "interval",
        "name",
    )

    def __init__(
        self,
        checks: Iterable[Check | Composite] = (),
        *,
        interval: float | timedelta = 10.0,
        name: str = "health",
        on_change: ChangeCallback | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.name: str = check_name(name) or "health"
        self.interval = check_seconds(interval, "interval", positive=True)
        self._clock = check_clock(clock)
        self._entries: list[Check | Composite] = []
        self._callbacks: tuple[ChangeCallback, ...] = ()
        if on_change is not None:
            self.on_change(on_change)
        self._events = Emitter()
        self._report: HealthReport | None = None
        self._status: HealthStatus | None = None
        self._running: asyncio.Future[HealthReport] | None = None
        self._task: asyncio.Task[None] | None = None
        for entry in checks:
            self.include(entry)
        _live.add(self)

    # ---------------------------------------------------------------- the checks

    def add(
        self,
        name: str,
        fn: CheckFunction,
        *,
        timeout: float | timedelta = 5.0,
        critical: bool = True,
        failure_threshold: int = 1,
        success_threshold: int = 1,
        history: int = 100,
        component_type: str = "component",
        measurement: str = "responseTime",
    ) -> Check:
        """Add a check made from ``fn`` (see :class:`Check` for the options); return it."""
        check = Check(
            name,
            fn,
            timeout=timeout,
            critical=critical,
            failure_threshold=failure_threshold,
            success_threshold=success_threshold,
            history=history,
            component_type=component_type,
            measurement=measurement,
        )
        self.include(check)
        return check

    def include(self, entry: Check | Composite) -> None:
        """Add a ready :class:`Check` (such as :func:`postgres_check`'s) or :class:`Composite`."""
        if not isinstance(entry, Check | Composite):
            raise ConfigError(f"must be a Check or a Composite, got {entry!r}", path="checks")
        if entry._owner is not None:
            raise ConfigError(f"{entry.name!r} already belongs to {entry._owner!r}", path="checks")
        if any(other.name == entry.name for other in self._entries):
            raise ConfigError(f"there is already a check called {entry.name!r}", path="name")
        entry._owner = self
        self._entries.append(entry)

    def check(
        self,
        name: str | None = None,
        *,
        timeout: float | timedelta = 5.0,
        critical: bool = True,
        failure_threshold: int = 1,
        success_threshold: int = 1,
        component_type: str = "component",
    ) -> Callable[[Any], Any]:
        """A decorator adding the function as a check (named after it by default)."""

        def decorate(fn: Any) -> Any:
            self.add(
                name if name is not None else fn.__name__,
                fn,
                timeout=timeout,
                critical=critical,
                failure_threshold=failure_threshold,
                success_threshold=success_threshold,
                component_type=component_type,
            )
            return fn

        return decorate

    @property
    def checks(self) -> tuple[Check | Composite, ...]:
        """The checks and composites, in the order they were added."""
        return tuple(self._entries)

    def __getitem__(self, name: str) -> Check | Composite:
        """The check or composite called ``name``."""
        for entry in self._entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    # ---------------------------------------------------------------- listening

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback`` on every status change; returns a function that removes it."""
        check_callable(callback, "on_change", "a callable taking one HealthStatusChanged")
        self._callbacks = (*self._callbacks, callback)

        def remove() -> None:
            self._callbacks = tuple(c for c in self._callbacks if c is not callback)

        return remove

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Send this monitor's :class:`HealthStatusChanged` events to ``listener``."""
        return self._events.subscribe(listener)

    async def _announce(self, change: HealthStatusChanged) -> None:
        if self._events.enabled:
            self._events.emit(change)
        for callback in self._callbacks:
            try:
                if is_async_callable(callback):
                    await callback(change)  # type: ignore[misc]
                else:
                    callback(change)
            except Exception:
                logger(_log).exception(
                    "health monitor %r: on_change callback %r failed on %r",
                    self.name,
                    callback,
                    change,
                )

    # ---------------------------------------------------------------- running

    async def run(self) -> HealthReport:
        """Run every check now (concurrently, each within its timeout) and report.

        Runs asked for while one is under way share it rather than start another:
        a burst of health requests costs the dependencies one round of checks.
        """
        running = self._running
        if running is None:
            running = asyncio.ensure_future(self._run_all())
            self._running = running
            running.add_done_callback(self._ran)
        # Shielded: a caller that goes away (a client hanging up on /health) does not
        # cancel the run the others are waiting for.
        return await asyncio.shield(running)

    def _ran(self, task: asyncio.Future[HealthReport]) -> None:
        if self._running is task:
            self._running = None
        if not task.cancelled():
            # Read here so that asyncio does not log an error as never retrieved when
            # every caller has gone; the callers still get it.
            task.exception()

    def run_sync(self) -> HealthReport:
        """:meth:`run` from synchronous code with no event loop running (a script, a CLI)."""
        return asyncio.run(self.run())

    async def _run_all(self) -> HealthReport:
        entries = tuple(self._entries)
        before = [(entry, entry.status, _member_statuses(entry)) for entry in entries]
        results = await asyncio.gather(*(entry._run(self._clock) for entry in entries))
        report = self._compose(results)
        self._report = report
        changes: list[HealthStatusChanged] = []
        for (entry, old, members_before), result in zip(before, results, strict=True):
            for member, member_old in members_before:
                member_result = next(r for r in result.members if r.name == member.name)
                if member_result.status is not member_old:
                    changes.append(
                        HealthStatusChanged(
                            self.name,
                            check=f"{entry.name}.{member.name}",
                            old=member_old,
                            new=member_result.status,
                            result=member_result,
                        )
                    )
            if result.status is not old:
                changes.append(
                    HealthStatusChanged(
                        self.name, check=entry.name, old=old, new=result.status, result=result
                    )
                )
        if report.status is not self._status:
            changes.append(
                HealthStatusChanged(self.name, check=None, old=self._status, new=report.status)
            )
            self._status = report.status
        for change in changes:
            await self._announce(change)
        return report

    def _compose(self, results: list[CheckResult]) -> HealthReport:
        statuses = [
            HealthStatus.WARN
            if result.status is HealthStatus.FAIL and not result.critical
            else result.status
            for result in results
        ]
        return HealthReport(worst(statuses), tuple(results), self._clock.time())

    def report(self) -> HealthReport | None:
        """The latest run's report, or ``None`` before the first run."""
        return self._report

    async def latest(self) -> HealthReport:
        """The report to answer a request with: the latest one while the monitor runs in
        the background (a first run if there is none yet), else a fresh :meth:`run`."""
        if self._task is not None and self._report is not None:
            return self._report
        return await self.run()

    @property
    def status(self) -> HealthStatus | None:
        """The overall status of the latest run; ``None`` before the first."""
        return self._status

    # ---------------------------------------------------------------- background

    @property
    def running(self) -> bool:
        """Whether background runs are on (between :meth:`start` and :meth:`stop`)."""
        return self._task is not None

    def start(self) -> None:
        """Run the checks in a task on the running event loop, ``interval`` seconds apart.

        The first run starts at once. A failing run is logged and the next one
        still happens. Starting a started monitor does nothing.
        """
        if self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"buttress-health-{self.name}"
        )

    async def stop(self) -> None:
        """Stop background runs; a run under way is cancelled (its checks with it)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        if self._running is not None:
            self._running.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _loop(self) -> None:
        while True:
            try:
                await self.run()
            except Exception:
                logger(_log).exception("health monitor %r: a run failed", self.name)
            await self._clock.asleep(self.interval)

    async def __aenter__(self) -> HealthMonitor:
        """``async with monitor:`` — :meth:`start`, and :meth:`stop` on the way out."""
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- metrics

    def snapshot(self) -> tuple[CheckSnapshot, ...]:
        """Each check's latest state, members of composites included, for exporters.

        Cheap and lock-free: it reads what the last run left.
        """
        found: list[CheckSnapshot] = []
        for entry in self._entries:
            found.append(self._snap(entry.name, entry, entry.critical))
            if isinstance(entry, Composite):
                for member in entry.checks:
                    found.append(self._snap(f"{entry.name}.{member.name}", member, member.critical))
        return tuple(found)

    def _snap(self, name: str, entry: _Entry, critical: bool) -> CheckSnapshot:
        last = entry.last
        status = entry.status
        return CheckSnapshot(
            monitor=self.name,
            check=name,
            status=status,
            up=status is not None and status is not HealthStatus.FAIL,
            duration=None if last is None else last.duration,
            checked_at=None if last is None else last.checked_at,
            critical=critical,
        )

    def __repr__(self) -> str:
        return (
            f"HealthMonitor(name={self.name!r}, checks={len(self._entries)}, "
            f"status={self._status and self._status.value!r}, running={self.running})"
        )


def _member_statuses(entry: Check | Composite) -> list[tuple[Check, HealthStatus | None]]:
    if isinstance(entry, Composite):
        return [(member, member.status) for member in entry.checks]
    return []
