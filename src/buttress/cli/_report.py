"""``buttress report``: the protections of every named pipeline, for people and CI.

Exit status: 0 when every pipeline has what ``--require`` asks (or nothing is
required), 1 when one lacks a required protection, 2 for a usage error, 3 when the
configuration cannot be loaded (the :class:`~buttress.errors.ConfigError`
message is printed).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from buttress.cli import EXIT_CONFIG, EXIT_MISSING
from buttress.errors import ConfigError
from buttress.observe.ops import PROTECTIONS, Entry, inventory, protection_names
from buttress.registry import Registry

__all__ = ["report"]

_HEADERS = {
    "timeout": "Timeout",
    "retry": "Retry",
    "circuit_breaker": "Breaker",
    "bulkhead": "Bulkhead",
    "rate_limit": "Rate limit",
    "fallback": "Fallback",
}


def _required(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        return protection_names(part for item in value for part in item.split(","))
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _load(config: Path | None, registry: str | None, use_env: bool) -> tuple[Registry, str]:
    """The registry to report on, and where it came from (raises ConfigError)."""
    if registry is not None:
        module_name, _, attribute = registry.partition(":")
        if not module_name or not attribute:
            raise ConfigError(f"expected MODULE:ATTRIBUTE, got {registry!r}", path="--registry")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import {module_name!r}: {exc}", path="--registry") from exc
        found = module
        for part in attribute.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise ConfigError(
                    f"{module_name!r} has no attribute {attribute!r}", path="--registry"
                ) from None
        if not isinstance(found, Registry):
            raise ConfigError(
                f"{registry} is a {type(found).__name__}, not a buttress Registry",
                path="--registry",
            )
        return found, registry
    loaded = Registry.from_toml(config, env=None if use_env else {})
    if config is not None:
        return loaded, str(config)
    source = "buttress.toml" if Path("buttress.toml").exists() else "pyproject.toml"
    return loaded, source


def _text(entries: list[Entry], source: str, required: tuple[str, ...], failing: set[str]) -> None:
    console = Console(highlight=False)
    console.print(f"Protections in {source}", soft_wrap=True)
    summary = Table()
    summary.add_column("Pipeline", style="bold")
    for protection in PROTECTIONS:
        mark = "*" if protection in required else ""
        summary.add_column(_HEADERS[protection] + mark, justify="center")
    for entry in entries:
        name = entry.name + (" (policy)" if entry.kind == "policy" else "")
        if entry.name in failing:
            name = f"[red]{name}[/red]"
        present = entry.protections
        summary.add_row(
            name, *("[green]✓[/green]" if p in present else "[red]✗[/red]" for p in PROTECTIONS)
        )
    console.print(summary)
    if required:
        console.print(f"* required: {', '.join(required)}", soft_wrap=True)
    details = Table(title="Policies, outermost first", title_justify="left")
    for column in ("Pipeline", "Policy", "Type", "Details"):
        details.add_column(column)
    for entry in entries:
        for index, step in enumerate(entry.steps):
            details.add_row(entry.name if index == 0 else "", step.name, step.type, step.detail)
        details.add_section()
    console.print(details)
    for entry in entries:
        for note in entry.notes:
            console.print(f"note: {entry.name}: {note}", soft_wrap=True)


def _json(entries: list[Entry], source: str, required: tuple[str, ...], failing: set[str]) -> None:
    document: dict[str, Any] = {
        "source": source,
        "protections": list(PROTECTIONS),
        "required": list(required),
        "ok": not failing,
        "pipelines": [entry.to_dict() for entry in entries],
    }
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@click.command()
@click.argument(
    "config_file",
    required=False,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--registry",
    metavar="MODULE:ATTRIBUTE",
    help="Report on a Registry built in code (e.g. myapp.resilience:registry) "
    "instead of a configuration file.",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first (it may register its own policy kinds); repeatable.",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A table for people, or JSON for tools.",
)
@click.option(
    "--require",
    multiple=True,
    callback=_required,
    metavar="LIST",
    help=f"Protections every pipeline must have, comma-separated or repeated "
    f"({', '.join(PROTECTIONS)}); exit status 1 when one lacks any.",
)
@click.option(
    "--env/--no-env",
    "use_env",
    default=True,
    show_default=True,
    help="Apply the BUTTRESS_* environment variables, as the application does.",
)
def report(  # noqa: PLR0917 - click passes every option by keyword
    config_file: Path | None,
    registry: str | None,
    imports: tuple[str, ...],
    output: str,
    require: tuple[str, ...],
    use_env: bool,
) -> None:
    """List every named pipeline and the protections it has, and what is missing.

    CONFIG_FILE is a buttress.toml or a pyproject.toml with [tool.buttress]; left
    out, ./buttress.toml or else ./pyproject.toml is read, as Registry.from_toml
    does. A policy registered alone that no pipeline uses is listed too.

    Exit status: 0 all required protections present, 1 some missing, 2 usage
    error, 3 the configuration could not be loaded.
    """
    if config_file is not None and registry is not None:
        raise click.UsageError("give CONFIG_FILE or --registry, not both")
    try:
        for module in imports:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"cannot import {module!r}: {exc}", path="--import") from exc
        loaded, source = _load(config_file, registry, use_env)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    entries = inventory(loaded)
    failing = {e.name for e in entries if any(p in e.missing for p in require)}
    if output == "json":
        _json(entries, source, require, failing)
    elif entries:
        _text(entries, source, require, failing)
    if not entries:
        click.echo(f"no pipelines or policies in {source}", err=True)
    if failing:
        for entry in entries:
            lacking = [p for p in require if p in entry.missing]
            if lacking:
                click.echo(f"missing: {entry.name}: {', '.join(lacking)}", err=True)
        sys.exit(EXIT_MISSING)
