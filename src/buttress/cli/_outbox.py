"""``buttress outbox``: the transactional outbox's schema (``init``).

Exit status: 0 done (or nothing to do), 2 a usage error (including a URL that is not
``postgresql://`` or ``sqlite:///``), 3 the database could not be reached or the
migration failed (the database's message is printed; nothing was applied).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console

from buttress.cli import EXIT_CONFIG
from buttress.errors import ButtressError
from buttress.messaging._schema import DEFAULT_INBOX_TABLE, DEFAULT_TABLE, TableName, Target
from buttress.messaging.outbox import migrate

__all__ = ["outbox"]


def _sqlite_path(url: str) -> str:
    # sqlite:///relative.db, sqlite:////absolute/path.db (SQLAlchemy's convention).
    path = url.removeprefix("sqlite:///")
    if not path or path == url:
        raise click.BadParameter(
            f"expected sqlite:///PATH (sqlite:////abs/path for an absolute one), got {url!r}",
            param_hint="'--url'",
        )
    if path == ":memory:":
        raise click.BadParameter("an in-memory database would vanish at exit", param_hint="'--url'")
    return path


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


@click.group()
def outbox() -> None:
    """The transactional outbox: create its table (and the Inbox's)."""


@outbox.command()
@click.option(
    "--url",
    required=True,
    metavar="URL",
    help="postgresql://user@host/db or sqlite:///path.db (sqlite:////abs/path.db).",
)
@click.option(
    "--table",
    default=None,
    help=f"The table (default: {DEFAULT_TABLE}, or {DEFAULT_INBOX_TABLE} with --inbox).",
)
@click.option("--schema", default=None, help="The PostgreSQL schema (default: search path).")
@click.option(
    "--inbox",
    is_flag=True,
    help="Create the Inbox's table (idempotent consumers: SQLInbox) instead of the outbox.",
)
def init(url: str, table: str | None, schema: str | None, inbox: bool) -> None:
    """Create or upgrade the outbox table (or, with --inbox, the Inbox's): apply the
    SQL migrations not yet applied.

    Safe to run again, and from several processes at once: each migration is
    applied once, in one transaction with the others. Exit status: 0 done, 2 usage
    error, 3 database error.
    """
    what: Target = "inbox" if inbox else "outbox"
    if table is None:
        table = DEFAULT_INBOX_TABLE if inbox else DEFAULT_TABLE
    try:
        TableName(table, schema)
    except ButtressError as exc:
        raise click.BadParameter(str(exc)) from None
    scheme = url.partition("://")[0].lower()
    console = Console(highlight=False)
    connection: Any
    if scheme == "sqlite":
        path = _sqlite_path(url)
        if not Path(path).parent.is_dir():
            click.echo(f"error: no directory {str(Path(path).parent)!r} for {path!r}", err=True)
            sys.exit(EXIT_CONFIG)
        errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        connect: Any = sqlite3.connect
        target = path
    elif scheme in ("postgresql", "postgres"):
        try:
            from buttress.messaging._outbox_postgres import (  # noqa: PLC0415 - postgres extra
                DatabaseError,
                connect,
            )
        except ImportError as exc:
            click.echo(
                f"error: PostgreSQL needs the 'postgres' extra ({exc}); "
                "install it with: pip install 'buttress[postgres]'",
                err=True,
            )
            sys.exit(EXIT_CONFIG)
        errors = (DatabaseError,)
        target = url
    else:
        raise click.BadParameter(
            f"expected a postgresql:// or sqlite:/// URL, got {_redact(url)!r}",
            param_hint="'--url'",
        )
    where = f"{schema}.{table}" if schema else table
    caught: tuple[type[BaseException], ...] = (*errors, ButtressError)
    try:
        connection = connect(target)
        try:
            applied = migrate(connection, table, schema=schema, what=what)
        finally:
            connection.close()
    except caught as exc:
        click.echo(f"error: {_redact(url)}: {exc}".rstrip(), err=True)
        sys.exit(EXIT_CONFIG)
    if applied:
        for name in applied:
            console.print(f"[green]applied[/] {name} to {where}", soft_wrap=True)
    else:
        console.print(f"{where} is up to date (nothing to apply)", soft_wrap=True)
