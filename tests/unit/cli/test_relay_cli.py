"""``buttress relay`` on a SQLite outbox: ``status`` (CliRunner), and ``run`` as a
subprocess with a file-backed publisher plugged into its registry: it publishes, and a
SIGTERM in the middle of a batch lets that batch finish before it exits."""

from __future__ import annotations

import asyncio
import json
import logging
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
from click.testing import CliRunner

from buttress.cli import EXIT_CONFIG, EXIT_USAGE
from buttress.cli._app import app
from buttress.messaging import Envelope, Outbox, migrate

ROOT = Path(__file__).resolve().parents[3]
TABLE = "evt"
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


def write(db: Path, count: int) -> list[Envelope]:
    events = [Envelope(source="/o", type="order.placed", subject=f"o-{i}") for i in range(count)]
    conn = sqlite3.connect(db)
    Outbox(TABLE).add_many(conn, events)
    conn.commit()
    conn.close()
    return events


def statuses(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    found = dict(conn.execute(f"SELECT event_id, status FROM {TABLE}").fetchall())
    conn.close()
    return found


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- status ---------------------------------------------------------------------------------


def test_status_counts_and_lag(db: Path) -> None:
    events = write(db, 4)
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE {TABLE} SET status = 'dead' WHERE event_id = ?", (events[0].id,))
    conn.execute(f"UPDATE {TABLE} SET status = 'published' WHERE event_id = ?", (events[1].id,))
    conn.execute(f"UPDATE {TABLE} SET created_at = created_at - 600")
    conn.commit()
    conn.close()
    url = f"sqlite:///{db}"
    code, out, _ = cli("relay", "status", "--outbox", url, "--table", TABLE, "--json")
    assert code == 0, out
    found = json.loads(out)
    assert (found["pending"], found["dead"]) == (2, 1)
    assert "published" not in found
    assert 600 <= found["lag_seconds"] < 660
    code, out, _ = cli("relay", "status", "--outbox", url, "--table", TABLE)
    assert code == 0
    assert "10.0min" in out
    assert "buttress dlq list" in out


def test_status_of_an_empty_outbox(db: Path) -> None:
    code, out, _ = cli("relay", "status", "--outbox", f"sqlite:///{db}", "--table", TABLE, "--json")
    assert json.loads(out) == {
        "pending": 0,
        "dead": 0,
        "lag_seconds": None,
        "table": TABLE,
    }
    assert code == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["status", "--outbox", "redis://127.0.0.1"], EXIT_USAGE, "sqlite:/// or postgresql://"),
        (["status", "--outbox", "sqlite:///{db}", "--table", "No-Good"], EXIT_USAGE, "table: "),
        (["status", "--outbox", "sqlite:///{tmp}/none.db"], EXIT_CONFIG, "no database file"),
        (["status", "--outbox", "sqlite:///{db}"], EXIT_CONFIG, "no such table"),
        (
            ["run", "--outbox", "sqlite:///{db}", "--broker", "redis://127.0.0.1:1/0?stream=x"],
            EXIT_CONFIG,
            "cannot read the outbox table: no such table",
        ),
        (
            ["run", "--outbox", "sqlite:///{db}", "--broker", "kafka://127.0.0.1"],
            EXIT_USAGE,
            "known schemes",
        ),
        (
            ["run", "--outbox", "sqlite:///{db}", "--broker", "redis://127.0.0.1?maxlen=x"],
            EXIT_USAGE,
            "maxlen='x'",
        ),
        (
            ["run", "--outbox", "sqlite:///{db}", "--broker", "file:///x", "--batch-size", "0"],
            EXIT_USAGE,
            "--batch-size",
        ),
        (
            ["run", "--outbox", "sqlite:///{db}", "--broker", "file:///x", "--concurrency", "0"],
            EXIT_USAGE,
            "--concurrency",
        ),
    ],
)
def test_usage_and_database_errors(
    db: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    filled = [a.format(db=db, tmp=tmp_path) for a in args]
    found, _, err = cli("relay", *filled)
    assert found == code, err
    assert message in err.replace("\n", " ")


# -- run ------------------------------------------------------------------------------------


def start(db: Path, out: Path, delay: float) -> subprocess.Popen[str]:
    program = (
        "import sys\n"
        "from buttress.cli._relay import PUBLISHERS\n"
        "PUBLISHERS['file'] = 'tests.unit.cli.test_relay_cli:FilePublisher'\n"
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
    return subprocess.Popen(
        [sys.executable, "-c", program, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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
    relay = start(db, out, delay=60.0)
    try:
        wait_for(lambda: lines(out) == ["started 1"], "the batch to start")
        relay.send_signal(signal.SIGINT)
        time.sleep(0.2)  # let the first signal be handled before the second
        relay.send_signal(signal.SIGINT)
        _, err = relay.communicate(timeout=BOUND)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, err
    assert "again: stopping now" in err
    assert set(statuses(db).values()) == {"pending"}  # left for the lease to run out


def test_run_leaves_the_logging_configuration_as_it_found_it(db: Path) -> None:
    before = (logging.getLogger().handlers[:], logging.getLogger("buttress").handlers[:])
    level = logging.getLogger("buttress").level
    code, _, err = cli(
        "relay", "run", "--outbox", f"sqlite:///{db}", "--broker", "redis://127.0.0.1:1/0?stream=x"
    )
    assert code == EXIT_CONFIG, err
    after = (logging.getLogger().handlers[:], logging.getLogger("buttress").handlers[:])
    assert after == before
    assert logging.getLogger("buttress").level == level
