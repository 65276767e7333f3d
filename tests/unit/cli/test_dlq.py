"""``buttress dlq`` on a SQLite outbox (CliRunner), and its queue registry."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from buttress.cli import EXIT_CONFIG, EXIT_MISSING, EXIT_USAGE
from buttress.cli._app import app
from buttress.errors import ConfigError
from buttress.messaging import Envelope, Outbox, migrate
from buttress.messaging.deadletters import QUEUES, OutboxDeadLetters, dead_letters_from_url

TABLE = "evt"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        migrate(conn, TABLE)
    conn.close()
    return path


def dead(db: Path, count: int, *, reason: str = "PublishRefused: no route") -> list[Envelope]:
    events = [
        Envelope(source="/orders", type="order.placed", subject=f"o-{i}", data={"n": i})
        for i in range(count)
    ]
    conn = sqlite3.connect(db)
    Outbox(TABLE).add_many(conn, events)
    conn.execute(f"UPDATE {TABLE} SET status = 'dead', attempts = 10, last_error = ?", (reason,))
    conn.commit()
    conn.close()
    return events


def statuses(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    found = list(conn.execute(f"SELECT event_id, status FROM {TABLE} ORDER BY seq"))
    conn.close()
    return found


def cli(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_a_table_and_the_next_page(db: Path) -> None:
    events = dead(db, 3, reason="PublishRefused: " + "x" * 200)
    url = f"sqlite:///{db}"
    code, out, _ = cli("dlq", "list", "--outbox", url, "--table", TABLE, "--limit", "2")
    assert code == 0, out
    assert "Dead letters in" in out
    for shown in ("order.placed", "o-0", "o-1"):
        assert shown in out
    assert "o-2" not in out
    assert "x" * 100 not in out  # long reasons are cut in the table
    assert f"--after {events[1].id}" in out.replace("\n", "")
    code, out, _ = cli(
        "dlq", "list", "--outbox", url, "--table", TABLE, "--after", events[1].id, "--json"
    )
    assert code == 0
    [line] = out.splitlines()
    record = json.loads(line)
    assert record["id"] == events[2].id
    assert record["attempts"] == 10
    assert record["event"]["data"] == {"n": 2}


def test_list_of_an_empty_queue(db: Path) -> None:
    code, out, _ = cli("dlq", "list", "--outbox", f"sqlite:///{db}", "--table", TABLE)
    assert (code, out.strip()) == (0, "no dead letters")


def test_show_prints_the_event_and_the_whole_reason(db: Path) -> None:
    [event] = dead(db, 1, reason="PublishRefused: " + "y" * 150)
    url = f"sqlite:///{db}"
    code, out, _ = cli("dlq", "show", event.id, "--outbox", url, "--table", TABLE)
    assert code == 0, out
    for shown in (event.id, "order.placed", '"n": 0'):
        assert shown in out
    assert "y" * 150 in out.replace("\n", "").replace(" ", "")
    code, out, _ = cli("dlq", "show", event.id, "--outbox", url, "--table", TABLE, "--json")
    assert json.loads(out)["reason"].endswith("y" * 150)
    code, _, err = cli("dlq", "show", "nope", "--outbox", url, "--table", TABLE)
    assert code == EXIT_MISSING
    assert "no dead letter 'nope'" in err


def test_replay_by_id_and_all(db: Path) -> None:
    events = dead(db, 3)
    url = f"sqlite:///{db}"
    code, out, _ = cli("dlq", "replay", events[0].id, "--outbox", url, "--table", TABLE)
    assert (code, out.strip()) == (0, "replayed 1 dead letter")
    assert [s for _, s in statuses(db)] == ["pending", "dead", "dead"]
    code, out, _ = cli("dlq", "replay", "--all", "--outbox", url, "--table", TABLE)
    assert (code, out.strip()) == (0, "replayed 2 dead letters")
    assert {s for _, s in statuses(db)} == {"pending"}


def test_purge_asks_unless_yes(db: Path) -> None:
    events = dead(db, 3)
    url = f"sqlite:///{db}"
    code, _, err = cli("dlq", "purge", events[0].id, "--outbox", url, "--table", TABLE, input="n\n")
    assert code == EXIT_USAGE
    assert "nothing purged" in err
    assert len(statuses(db)) == 3
    code, out, _ = cli("dlq", "purge", events[0].id, "--outbox", url, "--table", TABLE, input="y\n")
    assert code == 0
    assert "purged 1 dead letter" in out
    code, out, _ = cli("dlq", "purge", "--all", "--yes", "--outbox", url, "--table", TABLE)
    assert (code, out.strip()) == (0, "purged 2 dead letters")
    assert statuses(db) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list"], "give one of --outbox URL and --queue URL"),
        (["list", "--outbox", "sqlite:///a.db", "--queue", "nats://x"], "give one of"),
        (["list", "--queue", "nats://127.0.0.1", "--table", "t"], "--table and --schema go with"),
        (["list", "--outbox", "redis://127.0.0.1"], "expected a sqlite:/// or postgresql://"),
        (["list", "--queue", "kafka://127.0.0.1"], "known schemes"),
        (["list", "--outbox", "sqlite:///a.db", "--table", "Bad-Name"], "table: "),
        (["replay", "--outbox", "sqlite:///a.db"], "give the ids to replay, or --all"),
        (["purge", "x", "--all", "--outbox", "sqlite:///a.db"], "not both"),
        (["list", "--outbox", "sqlite:///a.db", "--limit", "0"], "--limit"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    code, _, err = cli("dlq", *args)
    assert code == EXIT_USAGE
    assert message in err.replace("\n", " ")


def test_an_unreachable_queue_exits_3(tmp_path: Path) -> None:
    code, _, err = cli("dlq", "list", "--outbox", f"sqlite:///{tmp_path / 'missing.db'}")
    assert code == EXIT_CONFIG
    assert "unable to open database file" in err
    assert not (tmp_path / "missing.db").exists()


def test_a_queue_whose_module_is_missing_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(QUEUES, "fake", "buttress.messaging.no_such_module:Queue")
    code, _, err = cli("dlq", "list", "--queue", "fake://127.0.0.1")
    assert code == EXIT_CONFIG
    assert "not installed" in err


class _Memory:
    """A dead-letter queue plugged into the registry by a test."""

    def __init__(self, url: str, *, name: str, size: int = 1, loud: bool = False) -> None:
        self.url, self.name, self.size, self.loud = url, name, size, loud

    async def list(self, limit: int = 100, after: str | None = None) -> list[object]:
        return []

    async def replay(self, ids: object = None) -> int:
        return self.size

    async def close(self) -> None:
        pass


def test_the_registry_builds_from_the_url_and_its_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(QUEUES, "mem", f"{__name__}:_Memory")
    queue: Any = dead_letters_from_url("mem://host:1/x?name=orders&size=3&loud=yes&other=1")
    assert type(queue) is _Memory
    assert (queue.url, queue.name, queue.size, queue.loud) == (
        "mem://host:1/x?other=1",
        "orders",
        3,
        True,
    )
    with pytest.raises(ConfigError, match=r"^url: query parameter size='many'"):
        dead_letters_from_url("mem://h?name=a&size=many")
    code, out, _ = cli("dlq", "replay", "--all", "--queue", "mem://h?name=a&size=4")
    assert (code, out.strip()) == (0, "replayed 4 dead letters")


def test_outbox_urls_open_the_outbox(db: Path) -> None:
    letters = dead_letters_from_url(f"sqlite:///{db}?table={TABLE}&batch_size=9")
    assert isinstance(letters, OutboxDeadLetters)
    assert (letters.table.name, letters.batch_size) == (TABLE, 9)


class _Typed:
    """Parameters of every kind the URL's query converts to."""

    def __init__(
        self,
        url: str,
        keys: Sequence[str] = (),
        *,
        limit: int | None = 5,
        ratio: float = 1.0,
        name: str = "x",
    ) -> None:
        self.url, self.keys, self.limit, self.ratio, self.name = url, keys, limit, ratio, name


def test_query_values_follow_the_parameters_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(QUEUES, "typed", f"{__name__}:_Typed")
    made: Any = dead_letters_from_url(
        "typed://h/p?keys=a,b&keys=c&limit=none&ratio=0.5&name=7&url=ignored"
    )
    assert (made.url, made.keys, made.limit, made.ratio, made.name) == (
        "typed://h/p?url=ignored",  # the first parameter is the URL itself
        ("a", "b", "c"),
        None,
        0.5,
        "7",
    )
    assert dead_letters_from_url("typed://h?limit=9", limit=3).limit == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="ratio='half'"):
        dead_letters_from_url("typed://h?ratio=half")
