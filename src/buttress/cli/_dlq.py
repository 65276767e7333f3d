"""``buttress dlq``: list, show, replay and purge dead letters.

The queue is the outbox's dead events (``--outbox sqlite:///app.db`` or
``--outbox postgresql://...``) or a broker's dead-letter or poison queue (``--queue
nats://...?stream=ORDERS_DLQ&subject=...``, ``redis://...``, ``amqp://...``): any URL
scheme of :data:`buttress.messaging.deadletters.QUEUES`, so a queue plugged in there
works here.

Exit status: 0 done, 1 ``show`` of an id that is not a dead letter, 2 a usage error
(an unknown URL scheme, ids and ``--all`` together, ``purge`` not confirmed), 3 the
queue could not be reached or failed (its message is printed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from buttress.cli import EXIT_CONFIG, EXIT_MISSING
from buttress.errors import ButtressError, ConfigError
from buttress.messaging.deadletters import DeadLetter, DeadLetters, dead_letters_from_url

__all__ = ["dlq"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_OUTBOX_SCHEMES = ("sqlite", "postgresql", "postgres")
_REASON_WIDTH = 60


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _queue_options(command: F) -> F:
    """The options that say which queue: ``--outbox`` (+ ``--table``, ``--schema``) or
    ``--queue``."""
    for option in reversed(
        [
            click.option(
                "--outbox",
                metavar="URL",
                help="The outbox's dead events: sqlite:///app.db (sqlite:////abs/app.db) "
                "or postgresql://user@host/db.",
            ),
            click.option("--table", default=None, help="The outbox table [buttress_outbox]."),
            click.option("--schema", default=None, help="The outbox's schema (PostgreSQL)."),
            click.option(
                "--queue",
                metavar="URL",
                help="A broker's dead-letter or poison queue, e.g. "
                "nats://127.0.0.1:4222?stream=ORDERS_DLQ&subject=orders.dead, "
                "redis://127.0.0.1:6379/0?stream=orders (the dead letters of the "
                "stream orders; add &poison=true for its poison queue), "
                "amqp://guest:guest@127.0.0.1/?queue=orders.",
            ),
        ]
    ):
        command = option(command)
    return command


def _open(outbox: str | None, table: str | None, schema: str | None, queue: str | None) -> Any:
    """The :class:`DeadLetters` the options name (a usage error when they do not)."""
    if (outbox is None) == (queue is None):
        raise click.UsageError("give one of --outbox URL and --queue URL")
    if queue is not None and (table or schema):
        raise click.UsageError("--table and --schema go with --outbox")
    url = outbox if outbox is not None else queue
    assert url is not None
    option = "--outbox" if outbox is not None else "--queue"
    if outbox is not None and outbox.partition(":")[0].lower() not in _OUTBOX_SCHEMES:
        raise click.BadParameter(
            f"expected a sqlite:/// or postgresql:// URL, got {_redact(outbox)!r}",
            param_hint=f"'{option}'",
        )
    try:
        return dead_letters_from_url(url, table=table, schema=schema)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None
    except ImportError as exc:
        click.echo(
            f"error: {_redact(url)}: this queue needs a module that is not installed "
            f"({exc}); install the broker's extra, e.g. pip install 'buttress[nats]'",
            err=True,
        )
        sys.exit(EXIT_CONFIG)


def _run(letters: Any, url: str, work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    """Run ``work`` on the queue, close it; print a failure and exit with status 3."""

    async def main() -> T:
        try:
            return await work(letters)
        finally:
            close = getattr(letters, "close", None)
            if close is not None:
                await close()

    try:
        return asyncio.run(main())
    except (ButtressError, OSError) as exc:
        click.echo(f"error: {_redact(url)}: {exc}".rstrip(), err=True)
        sys.exit(EXIT_CONFIG)


def _url(outbox: str | None, queue: str | None) -> str:
    return outbox or queue or ""


def _json(letter: DeadLetter) -> dict[str, Any]:
    envelope = letter.envelope
    return {
        "id": letter.id,
        "type": envelope.type if envelope else None,
        "subject": envelope.subject if envelope else None,
        "event_id": envelope.id if envelope else None,
        "attempts": letter.attempts,
        "dead_at": letter.dead_at.isoformat() if letter.dead_at else None,
        "reason": letter.reason,
        "event": json.loads(envelope.to_json()) if envelope else None,
        "body": None if envelope else letter.body.decode("utf-8", "replace"),
    }


def _short(text: str, width: int = _REASON_WIDTH) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@click.group()
def dlq() -> None:
    """Dead letters: list, show, replay and purge them (outbox or broker queue)."""


@dlq.command("list")
@_queue_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--after", metavar="ID", default=None, help="Start after this id (the next page).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(
    *,
    outbox: str | None,
    table: str | None,
    schema: str | None,
    queue: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List dead letters, oldest first."""
    letters = _open(outbox, table, schema, queue)
    found = _run(letters, _url(outbox, queue), lambda q: q.list(limit=limit, after=after))
    if as_json:
        for letter in found:
            click.echo(json.dumps(_json(letter), ensure_ascii=False))
        return
    console = Console(highlight=False)
    if not found:
        console.print("no dead letters" + (f" after {after}" if after else ""))
        return
    grid = Table(title=f"Dead letters in {_redact(_url(outbox, queue))}", title_justify="left")
    for header in ("ID", "Type", "Subject", "Attempts", "Dead at", "Reason"):
        grid.add_column(header, overflow="fold" if header == "ID" else "ellipsis")
    for letter in found:
        envelope = letter.envelope
        grid.add_row(
            letter.id,
            envelope.type if envelope else "[red](undecodable)[/]",
            (envelope.subject or "") if envelope else "",
            str(letter.attempts),
            letter.dead_at.strftime("%Y-%m-%d %H:%M:%S") if letter.dead_at else "",
            _short(letter.reason),
        )
    console.print(grid)
    if len(found) == limit:
        console.print(f"more may follow: --after {found[-1].id}", soft_wrap=True)


@dlq.command()
@_queue_options
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
def show(
    *,
    outbox: str | None,
    table: str | None,
    schema: str | None,
    queue: str | None,
    id: str,
    as_json: bool,
) -> None:
    """Show one dead letter: its event, attempts and the last error in full."""
    letters = _open(outbox, table, schema, queue)
    letter = _run(letters, _url(outbox, queue), lambda q: q.get(id))
    if letter is None:
        click.echo(f"error: no dead letter {id!r} in {_redact(_url(outbox, queue))}", err=True)
        sys.exit(EXIT_MISSING)
    if as_json:
        click.echo(json.dumps(_json(letter), ensure_ascii=False, indent=2))
        return
    console = Console(highlight=False)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    envelope = letter.envelope
    grid.add_row("id", letter.id)
    if envelope is not None:
        grid.add_row("event id", envelope.id)
        grid.add_row("type", envelope.type)
        grid.add_row("source", envelope.source)
        grid.add_row("subject", envelope.subject or "")
        grid.add_row("time", envelope.time.isoformat() if envelope.time else "")
    else:
        grid.add_row("event", "[red]undecodable (a poison message)[/]")
    grid.add_row("attempts", str(letter.attempts))
    grid.add_row("dead at", letter.dead_at.isoformat() if letter.dead_at else "")
    grid.add_row("reason", letter.reason)
    console.print(grid)
    if envelope is not None:
        console.print("data:", style="bold")
        click.echo(json.dumps(envelope.data, indent=2, ensure_ascii=False, default=str))
    else:
        console.print("body:", style="bold")
        click.echo(letter.body.decode("utf-8", "replace"))


def _ids(ids: Sequence[str], all_: bool, verb: str) -> list[str] | None:
    if ids and all_:
        raise click.UsageError(f"give ids or --all, not both, to {verb}")
    if not ids and not all_:
        raise click.UsageError(f"give the ids to {verb}, or --all")
    return None if all_ else list(ids)


@dlq.command()
@_queue_options
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the queue.")
def replay(
    *,
    outbox: str | None,
    table: str | None,
    schema: str | None,
    queue: str | None,
    ids: tuple[str, ...],
    all_: bool,
) -> None:
    """Send dead letters back to be processed again (the outbox: pending, attempts
    reset, due now)."""
    chosen = _ids(ids, all_, "replay")
    letters = _open(outbox, table, schema, queue)
    count = _run(letters, _url(outbox, queue), lambda q: q.replay(chosen))
    Console(highlight=False).print(f"replayed {count} dead letter{'s' * (count != 1)}")


@dlq.command()
@_queue_options
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the queue.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(
    *,
    outbox: str | None,
    table: str | None,
    schema: str | None,
    queue: str | None,
    ids: tuple[str, ...],
    all_: bool,
    yes: bool,
) -> None:
    """Delete dead letters for good."""
    chosen = _ids(ids, all_, "purge")
    letters = _open(outbox, table, schema, queue)
    what = "every dead letter" if chosen is None else f"{len(chosen)} dead letter(s)"
    if not yes and not click.confirm(
        f"Delete {what} of {_redact(_url(outbox, queue))} for good?", default=False
    ):
        click.echo("nothing purged", err=True)
        sys.exit(2)
    count = _run(letters, _url(outbox, queue), lambda q: q.purge(chosen))
    Console(highlight=False).print(f"purged {count} dead letter{'s' * (count != 1)}")
