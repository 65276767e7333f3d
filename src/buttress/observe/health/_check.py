"""Checks and composites: running one check with its own timeout, thresholds, history.

A check's function runs once per monitor run. An async function runs as a task on
the monitor's loop; a sync one in a thread of its own, so that a stalled driver call
never blocks the loop. Either way the monitor stops waiting for it after the check's
``timeout`` (on the monitor's clock, so a fake clock drives it in tests): the run is
a failure that says it timed out. A stalled sync function cannot be stopped — no
thread can be killed — so its thread is a daemon (it never holds up the exit of the
process), and while it is still stuck the next runs of that check do not start
another one: they fail at once, saying the previous run is still in progress.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, Literal, TypeAlias

from buttress._strategy import is_async_callable
from buttress._validate import check_callable, check_choice, check_count, check_seconds
from buttress.clock import Clock
from buttress.errors import ConfigError

from ._status import CheckResult, HealthStatus, Observation, worst

__all__ = ["Check", "CheckFunction", "Composite"]

CheckFunction: TypeAlias = Callable[[], object] | Callable[[], Awaitable[object]]
"""A check: a sync or async callable without arguments. It passes by returning
``None`` or ``True``, fails by returning ``False`` or raising, and may return a
:class:`HealthStatus` or an :class:`Observation` to say more."""

_PASS, _WARN, _FAIL = HealthStatus.PASS, HealthStatus.WARN, HealthStatus.FAIL
_OUTPUT_LIMIT = 300

# What one attempt found: outcome, observed value, unit, output, timed out.
_Found = tuple[HealthStatus, "float | int | str | bool | None", "str | None", str, bool]


_STILL_RUNNING: _Found = (_FAIL, None, None, "the previous run is still in progress", True)


def _check_name(value: object, path: str = "name") -> str:
    if not isinstance(value, str) or not value or value != value.strip() or ":" in value:
        raise ConfigError(
            f"must be a non-empty string without surrounding spaces or ':', got {value!r}",
            path=path,
        )
    return value


def _describe(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    # One line: drivers' messages span several (psycopg's do).
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text if len(text) <= _OUTPUT_LIMIT else text[: _OUTPUT_LIMIT - 1] + "…"


def _judge(value: object) -> _Found:
    """What a check function's return value says."""
    if value is None or value is True:
        return _PASS, None, None, "", False
    if value is False:
        return _FAIL, None, None, "the check returned False", False
    if isinstance(value, HealthStatus):
        return value, None, None, "", False
    if isinstance(value, Observation):
        return value.status, value.value, value.unit, value.output, False
    return (
        _FAIL,
        None,
        None,
        f"the check returned {type(value).__name__}: return None, a bool, a HealthStatus "
        "or an Observation",
        False,
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A run we stopped waiting for may still end in an error; nobody will read it,
    # and asyncio would log it as never retrieved.
    if not future.cancelled():
        future.exception()


class _Entry:
    """What checks and composites share: a name, criticality, where they stand, history."""

    __slots__ = (
        "_fails",
        "_history",
        "_last",
        "_oks",
        "_owner",
        "_status",
        "component_type",
        "critical",
        "name",
    )

    name: str
    critical: bool
    component_type: str

    def _init_entry(
        self, name: str, critical: object, component_type: object, history: object
    ) -> None:
        self.name = _check_name(name)
        if not isinstance(critical, bool):
            raise ConfigError(f"must be a bool, got {critical!r}", path="critical")
        self.critical = critical
        if not isinstance(component_type, str) or not component_type:
            raise ConfigError(
                f"must be a non-empty string (such as 'datastore'), got {component_type!r}",
                path="component_type",
            )
        self.component_type = component_type
        self._history: deque[CheckResult] = deque(maxlen=check_count(history, "history"))
        self._last: CheckResult | None = None
        self._status: HealthStatus | None = None
        self._fails = 0
        self._oks = 0
        self._owner: object = None

    @property
    def timeout(self) -> float:
        """The longest a run of this entry waits, in seconds."""
        raise NotImplementedError

    @property
    def status(self) -> HealthStatus | None:
        """The current status after thresholds; ``None`` before the first run."""
        return self._status

    @property
    def last(self) -> CheckResult | None:
        """The latest result, or ``None`` before the first run."""
        return self._last

    @property
    def history(self) -> tuple[CheckResult, ...]:
        """The latest results, oldest first (as many as ``history=`` keeps)."""
        return tuple(self._history)

    @property
    def success_rate(self) -> float | None:
        """The share of runs in :attr:`history` that did not fail; ``None`` before the first."""
        history = self._history
        if not history:
            return None
        return sum(1 for result in history if result.outcome is not _FAIL) / len(history)

    def _settle(self, outcome: HealthStatus, thresholds: tuple[int, int]) -> HealthStatus:
        """The status after a run found ``outcome`` (sans-I/O: counts and thresholds only)."""
        failure_threshold, success_threshold = thresholds
        if outcome is _FAIL:
            self._fails += 1
            self._oks = 0
        else:
            self._oks += 1
            self._fails = 0
        previous = self._status
        if previous is None:
            # The first run decides: a service whose database is down at start-up is
            # not ready, whatever the threshold.
            return outcome
        if outcome is _FAIL:
            return _FAIL if previous is _FAIL or self._fails >= failure_threshold else previous
        if previous is _FAIL and self._oks < success_threshold:
            return _FAIL
        return outcome

    def _keep(self, result: CheckResult) -> CheckResult:
        self._status = result.status
        self._last = result
        self._history.append(result)
        return result

    async def _run(self, clock: Clock) -> CheckResult:
        raise NotImplementedError


class Check(_Entry):
    """One health check: a sync or async callable, run with its own timeout.

    - ``name``: how the check is reported (the component name of the IETF format).
    - ``fn``: the check; it passes by returning ``None`` or ``True`` and fails by
      returning ``False``, raising, or running past ``timeout`` seconds. It may
      return a :class:`HealthStatus` or an :class:`Observation`.
    - ``critical``: whether its failure makes the service not ready (``fail``);
      a failing non-critical check only makes it ``warn``.
    - ``failure_threshold``: failed runs in a row before a passing check is
      reported failing; ``success_threshold``: good runs in a row before a failing
      check is reported passing again. The first run sets the status directly.
    - ``history``: how many results :attr:`history` keeps.
    - ``component_type`` and ``measurement``: the IETF ``componentType`` and the
      measurement half of the check's key (``"postgres:responseTime"``).

    Where it stands: ``status`` (after thresholds; ``None`` before the first run),
    ``last`` (the latest :class:`CheckResult`), ``history`` (the latest results,
    oldest first) and ``success_rate`` (the share of them that did not fail).
    """

    __slots__ = (
        "_fn",
        "_inflight",
        "_is_async",
        "_secrets",
        "_timeout",
        "failure_threshold",
        "measurement",
        "success_threshold",
    )

    def __init__(
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
    ) -> None:
        self._init_entry(name, critical, component_type, history)
        self._fn = check_callable(fn, "fn", "a callable taking no arguments")
        self._is_async = is_async_callable(fn)
        self._timeout = check_seconds(timeout, "timeout", positive=True)
        self.failure_threshold = check_count(failure_threshold, "failure_threshold")
        self.success_threshold = check_count(success_threshold, "success_threshold")
        if not isinstance(measurement, str) or not measurement or ":" in measurement:
            raise ConfigError(
                f"must be a non-empty string without ':', got {measurement!r}", path="measurement"
            )
        self.measurement = measurement
        self._inflight: asyncio.Future[Any] | None = None
        self._secrets: tuple[str, ...] = ()

    @property
    def timeout(self) -> float:
        """Seconds a run may take before it counts as failed (timed out)."""
        return self._timeout

    async def _run(self, clock: Clock) -> CheckResult:
        start = clock.monotonic()
        outcome, value, unit, output, timed_out = await self._attempt(clock)
        duration = max(0.0, clock.monotonic() - start)
        status = self._settle(outcome, (self.failure_threshold, self.success_threshold))
        return self._keep(
            CheckResult(
                name=self.name,
                status=status,
                outcome=outcome,
                duration=duration,
                checked_at=clock.time(),
                output=output,
                observed_value=value,
                observed_unit=unit,
                timed_out=timed_out,
                critical=self.critical,
                consecutive_failures=self._fails,
                consecutive_successes=self._oks,
                component_type=self.component_type,
                measurement=self.measurement,
            )
        )

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        if self._is_async:
            task: asyncio.Future[Any] = asyncio.ensure_future(self._fn())
            return task
        future: asyncio.Future[Any] = loop.create_future()
        fn = self._fn
        context = contextvars.copy_context()

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def work() -> None:
            try:
                value, error = context.run(fn), None
            except BaseException as exc:  # reported as the check's failure
                value, error = None, exc
            if asyncio.iscoroutine(value):
                value.close()
                value, error = None, TypeError("a sync check returned a coroutine: use async def")
            try:
                loop.call_soon_threadsafe(settle, value, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        threading.Thread(target=work, name=f"buttress-health-{self.name}", daemon=True).start()
        return future

    async def _attempt(self, clock: Clock) -> _Found:
        previous = self._inflight
        if previous is not None and not previous.done() and not self._is_async:
            return _STILL_RUNNING
        loop = asyncio.get_running_loop()
        expired: asyncio.Future[None] = loop.create_future()

        def expire() -> None:
            if not expired.done():
                expired.set_result(None)

        # One timer for the whole attempt, the wait for a previous run included.
        handle = clock.call_later(self._timeout, expire)
        work: asyncio.Future[Any] | None = None
        try:
            if previous is not None and not previous.done():
                # An async run we cancelled may take a moment to clean up (closing
                # its connection): wait for it, within this run's time.
                await asyncio.wait((previous, expired), return_when=asyncio.FIRST_COMPLETED)
                if not previous.done():
                    return _STILL_RUNNING
            work = self._start(loop)
            self._inflight = work
            work.add_done_callback(_retrieve)
            await asyncio.wait((work, expired), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if work is not None and self._is_async:
                work.cancel()
            raise
        finally:
            handle.cancel()
            expired.cancel()
        if not work.done():
            # Not awaited: a task that ignores its cancellation must not hold up the
            # monitor; it stays in _inflight until it ends. A sync check's thread
            # cannot be stopped at all: its future stays pending until the thread ends.
            if self._is_async:
                work.cancel()
            return _FAIL, None, None, f"timed out after {self._timeout:g} s", True
        if work.cancelled():
            return _FAIL, None, None, "the check was cancelled", False
        error = work.exception()
        if error is not None:
            return _FAIL, None, None, _describe(error, self._secrets), False
        return _judge(work.result())

    def __repr__(self) -> str:
        return (
            f"Check({self.name!r}, timeout={self._timeout:g}, critical={self.critical}, "
            f"status={self._status and self._status.value!r})"
        )


def ready_made(
    name: str,
    fn: CheckFunction,
    url: str,
    *,
    component_type: str,
    timeout: float | timedelta,
    critical: bool,
    failure_threshold: int,
    success_threshold: int,
) -> Check:
    """A ready-made check of the service at ``url``; its password never shows in an output."""
    check = Check(
        name,
        fn,
        timeout=timeout,
        critical=critical,
        failure_threshold=failure_threshold,
        success_threshold=success_threshold,
        component_type=component_type,
    )
    from urllib.parse import unquote, urlsplit  # noqa: PLC0415 - only for ready-made checks

    password = urlsplit(url).password
    if password:
        check._secrets = (password, unquote(password))
    return check


def check_url(value: object, schemes: tuple[str, ...]) -> str:
    """A URL with one of ``schemes``, or :class:`ConfigError` naming ``url``."""
    if not isinstance(value, str) or value.partition("://")[0] not in schemes or "://" not in value:
        listed = ", ".join(f"{scheme}://" for scheme in schemes)
        raise ConfigError(f"must be a URL starting with {listed}; got {value!r}", path="url")
    return value


Mode: TypeAlias = Literal["all", "any"]


class Composite(_Entry):
    """A group of checks reported as one component (a primary and its replicas, say).

    Its members run together, each with its own timeout and thresholds. With
    ``mode="all"`` (default) the group fails when a critical member fails and warns
    when a non-critical member fails or any member warns. With ``mode="any"`` it
    passes while every member passes, warns while at least one does not fail, and
    fails only when all fail. ``critical`` is the group's own weight in the monitor.
    """

    __slots__ = ("_members", "mode")

    def __init__(
        self,
        name: str,
        checks: Iterable[Check],
        *,
        mode: Mode = "all",
        critical: bool = True,
        history: int = 100,
        component_type: str = "component",
    ) -> None:
        self._init_entry(name, critical, component_type, history)
        self.mode: Mode = check_choice(mode, "mode", ("all", "any"))
        members = tuple(checks)
        if not members:
            raise ConfigError("a composite needs at least one check", path="checks")
        seen: set[str] = set()
        for member in members:
            if not isinstance(member, Check):
                raise ConfigError(f"must hold Check objects, got {member!r}", path="checks")
            if member.name in seen:
                raise ConfigError(f"two members are called {member.name!r}", path="checks")
            if member._owner is not None:
                raise ConfigError(
                    f"{member.name!r} already belongs to {member._owner!r}", path="checks"
                )
            seen.add(member.name)
        for member in members:
            member._owner = self
        self._members = members

    @property
    def checks(self) -> tuple[Check, ...]:
        """The members, in order."""
        return self._members

    @property
    def timeout(self) -> float:
        """The longest member timeout: members run concurrently."""
        return max(member.timeout for member in self._members)

    def combine(self, statuses: list[HealthStatus], critical: list[bool]) -> HealthStatus:
        """The group's status from its members' (sans-I/O)."""
        if self.mode == "any":
            if all(status is _FAIL for status in statuses):
                return _FAIL
            return worst([_WARN if status is _FAIL else status for status in statuses])
        return worst(
            [
                _WARN if status is _FAIL and not is_critical else status
                for status, is_critical in zip(statuses, critical, strict=True)
            ]
        )

    async def _run(self, clock: Clock) -> CheckResult:
        results = await asyncio.gather(*(member._run(clock) for member in self._members))
        critical = [member.critical for member in self._members]
        outcome = self.combine([result.outcome for result in results], critical)
        status = self.combine([result.status for result in results], critical)
        self._settle(outcome, (1, 1))  # only the counts: members carry the thresholds
        failing = [
            f"{r.name}: {r.output or r.status.value}" for r in results if r.status is not _PASS
        ]
        return self._keep(
            CheckResult(
                name=self.name,
                status=status,
                outcome=outcome,
                duration=max(result.duration for result in results),
                checked_at=clock.time(),
                output="; ".join(failing) if status is not _PASS else "",
                timed_out=any(result.timed_out for result in results),
                critical=self.critical,
                consecutive_failures=self._fails,
                consecutive_successes=self._oks,
                members=tuple(results),
                component_type=self.component_type,
            )
        )

    def __repr__(self) -> str:
        names = ", ".join(member.name for member in self._members)
        return f"Composite({self.name!r}, [{names}], mode={self.mode!r}, critical={self.critical})"
