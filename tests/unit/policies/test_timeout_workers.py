"""The workers of pessimistic timeouts: daemon threads, bounded, reused, out of the way
of interpreter exit, and fresh in a forked child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

from buttress.clock import FakeClock
from buttress.errors import TimeoutExceeded
from buttress.policies.timeout import Timeout, _workers, set_pessimistic_workers

from tests.helpers import WatchedClock


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (for real, briefly) until another thread has made ``predicate`` true."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if predicate():
            return
        pause.wait(0.001)
    raise AssertionError("condition not reached")


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    previous = _workers._max_workers
    yield
    set_pessimistic_workers(previous)


def test_workers_are_daemon_threads(manual_clock: FakeClock) -> None:
    timeout = Timeout(60.0, mode="pessimistic", clock=manual_clock)
    worker = timeout.call(threading.current_thread)
    assert worker is not threading.current_thread()
    assert worker.daemon
    assert worker.name.startswith("buttress-timeout-")


def test_a_worker_is_reused(manual_clock: FakeClock) -> None:
    set_pessimistic_workers(1)
    timeout = Timeout(60.0, mode="pessimistic", clock=manual_clock)
    first = timeout.call(threading.get_ident)
    assert [timeout.call(threading.get_ident) for _ in range(5)] == [first] * 5
    assert _workers.pool().threads == 1


def test_sequential_calls_start_no_second_worker(manual_clock: FakeClock) -> None:
    set_pessimistic_workers(8)
    timeout = Timeout(60.0, mode="pessimistic", clock=manual_clock)
    for _ in range(20):
        timeout.call(int)
    # A worker is idle again before its caller hears back, so the next call finds it.
    assert _workers.pool().threads == 1


def test_the_pool_is_bounded_and_a_call_queued_at_the_deadline_never_runs() -> None:
    set_pessimistic_workers(2)
    clock = WatchedClock()
    timeout = Timeout(1.0, mode="pessimistic", clock=clock)
    release = threading.Event()
    started: list[int] = []
    results: list[BaseException] = []

    def hung(index: int) -> None:
        started.append(index)
        release.wait(5)

    def caller(index: int) -> None:
        try:
            timeout.call(hung, index)
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for thread in threads[:2]:
        thread.start()
    eventually(lambda: len(started) == 2)
    threads[2].start()
    eventually(lambda: clock.waiting == 3)  # every caller waits, with its deadline set
    assert len(_workers.pool()._queue) == 1  # the third call waits for a worker
    assert _workers.pool().threads == 2
    clock.advance(1.0)
    for thread in threads:
        thread.join(5)
    assert len(results) == 3
    assert all(isinstance(result, TimeoutExceeded) for result in results)
    release.set()
    assert Timeout(60.0, mode="pessimistic").call(lambda: "after") == "after"
    assert sorted(started) == [0, 1]  # the third was withdrawn, never started


def test_a_replaced_pool_lets_its_idle_workers_go(manual_clock: FakeClock) -> None:
    set_pessimistic_workers(2)
    timeout = Timeout(60.0, mode="pessimistic", clock=manual_clock)
    timeout.call(int)
    old = _workers.pool()
    assert old.threads == 1
    set_pessimistic_workers(3)
    eventually(lambda: old.threads == 0)
    assert timeout.call(lambda: "new pool") == "new pool"
    assert _workers.pool() is not old


def test_work_reports_errors_of_any_kind(manual_clock: FakeClock) -> None:
    timeout = Timeout(60.0, mode="pessimistic", clock=manual_clock)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        timeout.call(interrupted)
    assert timeout.call(lambda: "still serving") == "still serving"


def test_an_abandoned_hung_call_does_not_keep_the_interpreter_alive() -> None:
    script = textwrap.dedent(
        """
        import threading
        from buttress import Timeout, TimeoutExceeded
        from buttress.clock import FakeClock

        started = threading.Event()

        def hang():
            started.set()
            threading.Event().wait()  # never returns

        class StartedClock(FakeClock):
            # Times out only once the call hangs on its worker.
            def wait(self, event, timeout):
                started.wait(10)
                return super().wait(event, timeout)

        try:
            Timeout(1.0, mode="pessimistic", clock=StartedClock()).call(hang)
        except TimeoutExceeded:
            print("abandoned", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "abandoned"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_workers(manual_clock: FakeClock) -> None:
    set_pessimistic_workers(1)
    timeout = Timeout(60.0, mode="pessimistic", clock=manual_clock)
    timeout.call(int)  # the parent has a worker now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = Timeout(5.0, mode="pessimistic").call(lambda: "child") == "child"
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    status: list[int] = []

    def reaped() -> bool:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status.append(code)
        return bool(done)

    eventually(reaped, timeout=30)
    assert os.waitstatus_to_exitcode(status[0]) == 0
