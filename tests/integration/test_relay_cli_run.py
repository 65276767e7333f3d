"""``buttress relay run`` as a subprocess on a SQLite outbox, with a file-backed
publisher plugged into its registry: it publishes, a SIGTERM in the middle of a batch
lets that batch finish before it exits, and a second signal stops it at once.

Integration, not unit: the relay runs in another process, in real time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from buttress.messaging import Envelope, migrate

from tests.unit.cli.test_relay_cli import TABLE, statuses, write

ROOT = Path(__file__).resolve().parents[2]
BOUND = 30.0  # seconds: a bound on waiting for the subprocess


class FilePublisher:
    """Appends ``started <n>`` and then each event id to the file of its URL
    (``file:///path``), ``delay`` seconds apart: a broker the test can watch."""

    def __init__(self, url: str, *, delay: float = 0.0) -> None:
        self.path = Path(url.removeprefix("file://"))
        self.delay = delay

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        with self.path.open("a") as out:
            out.write(f"started {len(envelopes)}\n")
        await asyncio.sleep(self.delay)  # a slow broker, in the relay's subprocess
        with self.path.open("a") as out:
            out.writelines(f"{e.id}\n" for e in envelopes)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FilePublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, TABLE)
    conn.close()
    return path


# -- run ------------------------------------------------------------------------------------


def start(db: Path, out: Path, delay: float, stderr: Path | None = None) -> subprocess.Popen[str]:
    program = (
        "import sys\n"
        "from buttress.cli._relay import PUBLISHERS\n"
        "PUBLISHERS['file'] = 'tests.integration.test_relay_cli_run:FilePublisher'\n"
        "from buttress.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        "relay",
        "run",
        "--outbox",
        f"sqlite:///{db}",
        "--table",
        TABLE,
        "--broker",
        f"file://{out}?delay={delay}",
        "--poll-interval",
        "0.05",
        "--batch-size",
        "50",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as files:
        err = subprocess.PIPE if stderr is None else files.enter_context(stderr.open("w"))
        return subprocess.Popen(  # the child keeps its own copy of the file
            [sys.executable, "-c", program, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )


def wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # a subprocess's progress: real time passes there


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_run_publishes_until_sigterm_and_finishes_the_batch_in_flight(
    db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "published.txt"
    first = write(db, 3)
    relay = start(db, out, delay=0.5)
    try:
        wait_for(lambda: all(e.id in lines(out) for e in first), "the first events")
        wait_for(lambda: set(statuses(db).values()) == {"published"}, "rows marked published")
        second = write(db, 2)
        wait_for(lambda: lines(out)[-1:] == ["started 2"], "the second batch to start")
        relay.send_signal(signal.SIGTERM)  # in the middle of the slow publish
        _, err = relay.communicate(timeout=BOUND)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, err
    assert [line for line in lines(out) if not line.startswith("started")] == [
        e.id for e in first + second
    ]
    assert set(statuses(db).values()) == {"published"}  # the batch was confirmed and marked
    assert "stopping after the batch in flight" in err
    assert "stopped: 5 published, 0 dead-lettered" in err


def test_a_second_signal_stops_at_once(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "published.txt"
    write(db, 1)
    log = tmp_path / "stderr.txt"
    relay = start(db, out, delay=60.0, stderr=log)
    try:
        wait_for(lambda: lines(out) == ["started 1"], "the batch to start")
        relay.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping after the batch in flight" in log.read_text(), "the first")
        relay.send_signal(signal.SIGINT)
        relay.communicate(timeout=BOUND)
        err = log.read_text()
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, err
    assert "again: stopping now" in err
    assert set(statuses(db).values()) == {"pending"}  # left for the lease to run out
