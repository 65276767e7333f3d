"""The ``buttress`` click group; each subcommand is imported only when it runs.

A subcommand is registered in :data:`COMMANDS` as ``name -> "module:attribute"``
(a :class:`click.Command`), so ``buttress --help`` imports none of them and a
command that needs another extra (the gateway's ``serve``) costs the others
nothing.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["COMMANDS", "app"]

COMMANDS: dict[str, tuple[str, str]] = {
    "dlq": ("buttress.cli._dlq:dlq", "List, show, replay and purge dead letters."),
    "observe": ("buttress.cli._observe:observe", "Export alert rules and a Grafana dashboard."),
    "outbox": ("buttress.cli._outbox:outbox", "Create the transactional outbox's table."),
    "relay": ("buttress.cli._relay:relay", "Run the outbox relay, or show its status."),
    "report": ("buttress.cli._report:report", "List the protections of every named pipeline."),
}
"""Subcommands: name -> (``module:attribute`` of the click command, one-line help)."""


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = COMMANDS[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{COMMANDS[cmd_name][0]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table, so --help imports no command module.
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str()))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="buttress", prog_name="buttress")
def app() -> None:
    """buttress: resilience for Python services — operations tools."""
