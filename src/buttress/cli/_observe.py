"""``buttress observe export``: the alert rules and the Grafana dashboard, as files.

Every threshold of :class:`~buttress.observe.ops.AlertThresholds` is an option,
made from the dataclass's fields, so a new threshold needs no edit here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from buttress.errors import ConfigError
from buttress.observe.ops import AlertThresholds, render_dashboard, render_rules
from buttress.observe.ops._dashboard import DASHBOARD_UID
from buttress.registry import parse_duration

__all__ = ["observe"]

RULES_FILE = "buttress-alerts.yml"
DASHBOARD_FILE = "buttress-dashboard.json"


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _kind(field: dataclasses.Field[Any]) -> str:
    name = field.name
    if name in ("selector", "runbook_url"):
        return "text"
    if name.endswith("_windows"):
        return "windows"
    if name.endswith(("_ratio", "_saturation", "_factor")):
        return "number"
    return "duration"


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _threshold_options(command: Any) -> Any:
    """Add one ``--option`` per threshold (in field order) to ``command``."""
    for field in reversed(dataclasses.fields(AlertThresholds)):
        kind = _kind(field)
        unit = {
            "duration": " (a duration: 300, 90s, 5m, 1h)",
            "windows": " (two durations, long and short: 1h,5m)",
        }.get(kind, "")
        default = field.default
        shown = f'"{default}"' if kind == "text" and default == "" else _show(default)
        command = click.option(
            _option_name(field.name),
            field.name,
            type=str if kind != "number" else float,
            default=None,
            metavar={"duration": "DURATION", "windows": "LONG,SHORT"}.get(kind),
            help=f"{field.metadata['help']}{unit} [default: {shown}]",
        )(command)
    return command


def _thresholds(given: dict[str, Any]) -> AlertThresholds:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(AlertThresholds):
        raw = given.get(field.name)
        if raw is None:
            continue
        option = _option_name(field.name)
        kind = _kind(field)
        if kind == "duration":
            values[field.name] = parse_duration(raw, option)
        elif kind == "windows":
            parts = [p for p in raw.split(",") if p.strip()]
            if len(parts) != 2:
                raise ConfigError(
                    f"expected two durations, long and short, got {raw!r}", path=option
                )
            values[field.name] = tuple(parse_duration(p, option) for p in parts)
        else:
            values[field.name] = raw
    try:
        return AlertThresholds(**values)
    except ConfigError as exc:
        # Name the option the user typed, not the dataclass field.
        if exc.path is None:  # pragma: no cover - every check names its field
            raise
        message = str(exc).removeprefix(f"{exc.path}: ")
        raise ConfigError(message, path=_option_name(exc.path)) from None


@click.group()
def observe() -> None:
    """Observability tools: alert rules and dashboards for buttress's metrics."""


@observe.command()
@click.option(
    "--out",
    "out",
    default=".",
    show_default=True,
    metavar="DIR",
    help=f"Directory to write {RULES_FILE} and {DASHBOARD_FILE} into (created if "
    "needed); '-' writes the one selected file to standard output.",
)
@click.option("--rules-only", is_flag=True, help="Write only the Prometheus alert rules.")
@click.option("--dashboard-only", is_flag=True, help="Write only the Grafana dashboard.")
@click.option("--title", default="buttress", show_default=True, help="The dashboard's title.")
@click.option(
    "--uid",
    default=DASHBOARD_UID,
    show_default=True,
    help="The dashboard's uid (keep it to replace an earlier import).",
)
@_threshold_options
def export(
    out: str,
    rules_only: bool,
    dashboard_only: bool,
    title: str,
    uid: str,
    **thresholds: Any,
) -> None:
    """Write Prometheus alert rules (YAML) and a Grafana dashboard (JSON).

    The rules alert on breakers left open, high failure rates, fast and slow error
    budget burn, failing health checks, degraded stores, saturated bulkheads and
    rate-limit denials; check them with `promtool check rules`. The dashboard has a
    data source and a policy variable; import it in Grafana or provision it.
    """
    if rules_only and dashboard_only:
        raise click.UsageError("--rules-only and --dashboard-only exclude each other")
    try:
        limits = _thresholds(thresholds)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint=exc.path) from None
    files: list[tuple[str, str]] = []
    if not dashboard_only:
        files.append((RULES_FILE, render_rules(limits)))
    if not rules_only:
        files.append((DASHBOARD_FILE, render_dashboard(title=title, uid=uid)))
    if out == "-":
        if len(files) != 1:
            raise click.UsageError("--out - needs --rules-only or --dashboard-only")
        click.echo(files[0][1], nl=False)
        return
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files:
            (directory / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(exc.filename or directory), hint=exc.strerror) from None
    for name, _ in files:
        click.echo(f"wrote {directory / name}")
