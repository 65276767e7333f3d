"""``buttress relay`` on a SQLite outbox: ``status`` and the usage errors of both
commands (CliRunner). ``run`` as a subprocess: ``tests/integration/test_relay_cli_run.py``."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from buttress.cli import EXIT_CONFIG, EXIT_USAGE
from buttress.cli._app import app
from buttress.messaging import Envelope, Outbox, migrate

TABLE = "evt"


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
