"""``python -m buttress.registry``: the configuration reference, or a check of a file.

``--reference`` prints ``docs/configuration.md`` (``--import MODULE`` first imports
modules that register their own kinds, and adds those kinds to the page).
``--check [FILE]`` loads a configuration as the application would (``FILE``, or
else ``buttress.toml`` or ``[tool.buttress]`` in ``pyproject.toml``, with the
``BUTTRESS_*`` variables of the environment) and reports the first mistake.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from buttress.errors import ConfigError
from buttress.registry import Registry
from buttress.registry._reference import render


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m buttress.registry", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--reference", action="store_true", help="print the configuration reference (Markdown)"
    )
    action.add_argument(
        "--check",
        nargs="?",
        const="",
        metavar="FILE",
        help="load a configuration and report its first mistake",
    )
    parser.add_argument(
        "--import",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may call register_kind); repeatable",
    )
    args = parser.parse_args(argv)
    for module in args.modules:
        importlib.import_module(module)
    if args.reference:
        sys.stdout.write(render(builtin_only=not args.modules))
        return 0
    try:
        registry = Registry.from_toml(args.check or None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {', '.join(registry) or 'no policies'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
