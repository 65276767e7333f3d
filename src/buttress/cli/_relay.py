"""``buttress relay``: run the outbox relay (``run``), or show the outbox's state
(``status``).

``run`` publishes the outbox's events to the broker named by ``--broker``'s URL scheme
(:data:`PUBLISHERS`; the publisher's options in the query string:
``redis://127.0.0.1:6379/0?stream=orders``, ``amqp://guest:guest@127.0.0.1/?exchange=orders``,
``nats://127.0.0.1:4222?stream=ORDERS``) until SIGINT or SIGTERM, then finishes the
batch in flight and exits (a second signal stops at once: the rows it held go back to
the other relays after their lease).

Exit status: 0 done (``run``: stopped by a signal), 2 a usage error, 3 the database
or the broker could not be reached at start, or failed (its message is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from buttress.cli import EXIT_CONFIG
from buttress.errors import ButtressError, ConfigError, StoreError
from buttress.messaging._from_url import build, scheme_of
from buttress.messaging._schema import DEFAULT_TABLE, TableName
from buttress.messaging.brokers import PublishError
from buttress.messaging.deadletters import OutboxDeadLetters
from buttress.messaging.relay import Relay, SQLiteRelayStore

__all__ = ["PUBLISHERS", "relay"]

_REDIS = "buttress.messaging.brokers.redis_streams:RedisStreamsPublisher"
_RABBITMQ = "buttress.messaging.brokers.rabbitmq:RabbitMQPublisher"
_NATS = "buttress.messaging.brokers.nats:NatsPublisher"

PUBLISHERS: dict[str, str] = {
    "redis": _REDIS,
    "rediss": _REDIS,
    "unix": _REDIS,
    "valkey": _REDIS,
    "valkeys": _REDIS,
    "amqp": _RABBITMQ,
    "amqps": _RABBITMQ,
    "nats": _NATS,
    "tls": _NATS,
}
"""``--broker`` URL scheme -> ``"module:Class"`` of the publisher, imported on use."""

log = logging.getLogger("buttress.cli.relay")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _fail(url: str, exc: BaseException) -> None:
    click.echo(f"error: {_redact(url)}: {exc}".rstrip(), err=True)
    sys.exit(EXIT_CONFIG)


def _sqlite_file(outbox: str) -> str | None:
    if scheme_of(outbox) != "sqlite":
        return None
    path = outbox.partition("?")[0].removeprefix("sqlite:///")
    if not path or path.startswith("sqlite:") or path == ":memory:":
        raise click.BadParameter(
            f"expected sqlite:///PATH (sqlite:////abs/path.db), got {outbox!r}",
            param_hint="'--outbox'",
        )
    if not Path(path).is_file():
        _fail(outbox, FileNotFoundError(f"no database file {path!r}"))
    return path


def _store(outbox: str, table: str, schema: str | None, *, pool_size: int = 1) -> Any:
    """The relay's claim store for ``--outbox`` (``pool_size``: PostgreSQL's pool)."""
    try:
        TableName(table, schema)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    path = _sqlite_file(outbox)
    if path is not None:
        return SQLiteRelayStore(path, table, schema=schema)
    if scheme_of(outbox) in ("postgresql", "postgres"):
        try:
            from buttress.messaging.relay import PostgresRelayStore  # noqa: PLC0415 - extra
        except ImportError as exc:
            click.echo(
                f"error: PostgreSQL needs the 'postgres' extra ({exc}); install it with: "
                "pip install 'buttress[postgres]'",
                err=True,
            )
            sys.exit(EXIT_CONFIG)
        return PostgresRelayStore(
            outbox,
            table,
            schema=schema,
            application_name="buttress relay",
            pool_min_size=1,
            pool_max_size=pool_size,
        )
    raise click.BadParameter(
        f"expected a sqlite:/// or postgresql:// URL, got {_redact(outbox)!r}",
        param_hint="'--outbox'",
    )


def _outbox_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--outbox",
                required=True,
                metavar="URL",
                help="The outbox's database: sqlite:///app.db (sqlite:////abs/app.db) or "
                "postgresql://user@host/db (a direct connection: LISTEN needs one).",
            ),
            click.option("--table", default=DEFAULT_TABLE, show_default=True),
            click.option("--schema", default=None, help="The outbox's schema (PostgreSQL)."),
        ]
    ):
        command = option(command)
    return command


@click.group()
def relay() -> None:
    """The outbox relay: run it, or show the outbox's state."""


@relay.command()
@_outbox_options
@click.option(
    "--broker",
    required=True,
    metavar="URL",
    help="redis://host:6379/0?stream=NAME, amqp://user:pass@host/?exchange=NAME or "
    "nats://host:4222?stream=NAME (other publisher options in the query string too).",
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Batches in flight at once.",
)
@click.option(
    "--pool-size",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="PostgreSQL: the most connections of the relay's pool.",
)
@click.option(
    "--poll-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between claims when nothing wakes the relay.",
)
@click.option("--max-attempts", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--retention",
    default=7 * 86400.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds published rows are kept; 0 keeps them for ever.",
)
@click.option("--name", default=None, help="This relay's name in claimed_by.")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def run(
    *,
    outbox: str,
    table: str,
    schema: str | None,
    broker: str,
    batch_size: int,
    concurrency: int,
    pool_size: int,
    poll_interval: float,
    max_attempts: int,
    retention: float,
    name: str | None,
    log_level: str,
) -> None:
    """Publish the outbox's events to the broker until SIGINT or SIGTERM.

    The first signal finishes the batch in flight and exits; a second one stops at
    once.
    """
    store = _store(outbox, table, schema, pool_size=pool_size)
    try:
        publisher = build(PUBLISHERS, broker, "--broker", "publisher")
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--broker'") from None
    except ImportError as exc:
        _fail(broker, ImportError(f"this broker needs its extra ({exc})"))
    try:
        service = Relay(
            store,
            publisher,
            batch_size=batch_size,
            concurrency=concurrency,
            poll_interval=poll_interval,
            max_attempts=max_attempts,
            retention=None if retention == 0 else retention,
            name=name,
        )
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    # buttress's loggers to standard error while it runs (the root logger is left
    # alone: the command may run inside another program).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("buttress")
    level = root.level
    root.addHandler(handler)
    root.setLevel(log_level.upper())
    try:
        asyncio.run(_serve(service, store, publisher, outbox, broker))
    except (ButtressError, OSError) as exc:
        _fail(broker if isinstance(exc, PublishError) else outbox, exc)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    click.echo(
        f"relay {service.name} stopped: {service.published} published, "
        f"{service.dead_lettered} dead-lettered",
        err=True,
    )


async def _serve(service: Relay, store: Any, publisher: Any, outbox: str, broker: str) -> None:
    loop = asyncio.get_running_loop()
    task: asyncio.Task[None] | None = None
    signals = 0

    def on_signal(number: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: stopping after the batch in flight", signal.Signals(number).name)
            service.stop()
        elif task is not None:
            log.warning("%s again: stopping now", signal.Signals(number).name)
            task.cancel()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    try:
        try:  # fail fast: a database that cannot be read is not worth a running relay
            await store.oldest_pending()
        except Exception as exc:
            raise StoreError("outbox", f"cannot read the outbox table: {exc}") from exc
        async with publisher:
            log.info("relay %s: %s -> %s", service.name, _redact(outbox), _redact(broker))
            task = asyncio.create_task(service.run())
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
        await store.close()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


@relay.command()
@_outbox_options
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
def status(outbox: str, table: str, schema: str | None, as_json: bool) -> None:
    """Show the outbox: pending and dead events, and the lag (the age of the oldest
    pending event)."""
    store = _store(outbox, table, schema)
    letters = OutboxDeadLetters(outbox, table, schema=schema)

    async def gather() -> tuple[dict[str, int], float | None]:
        try:
            counts = dict(await letters.counts())
            oldest = await store.oldest_pending()
        finally:
            await letters.close()
            await store.close()
        return counts, oldest

    try:
        counts, oldest = asyncio.run(gather())
    except (ButtressError, OSError) as exc:
        _fail(outbox, exc)
    except Exception as exc:  # the database driver's own error (psycopg)
        if type(exc).__module__.partition(".")[0] != "psycopg":
            raise
        _fail(outbox, exc)
    lag = None if oldest is None else max(0.0, time.time() - oldest)
    if as_json:
        click.echo(json.dumps({**counts, "lag_seconds": lag, "table": table}))
        return
    grid = Table(title=f"Outbox {_redact(outbox)} ({table})", title_justify="left")
    for header in ("Pending", "Lag", "Dead"):
        grid.add_column(header, justify="right")
    grid.add_row(
        str(counts["pending"]),
        _age(lag),
        f"[red]{counts['dead']}[/]" if counts["dead"] else "0",
    )
    console = Console(highlight=False)
    console.print(grid)
    if counts["dead"]:
        console.print(
            f"inspect them with: buttress dlq list --outbox {_redact(outbox)} --table {table}",
            soft_wrap=True,
        )
