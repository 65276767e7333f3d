"""The ``buttress`` command: operations tools on the command line.

``buttress observe export`` writes Prometheus alert rules and a Grafana dashboard;
``buttress report`` lists the protections of every named pipeline in a
configuration (a CI gate with ``--require``). Run ``buttress --help`` for the rest.

The command needs the ``cli`` extra (click, rich, PyYAML): ``pip install
'buttress[cli]'``. :func:`main` is the console script's entry point, as is
``python -m buttress``.
"""

from __future__ import annotations

import sys

__all__ = ["EXIT_CONFIG", "EXIT_MISSING", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
"""Everything done; for ``report --require``: every pipeline has what is required."""
EXIT_MISSING = 1
"""``report --require``: some pipeline lacks a required protection."""
EXIT_USAGE = 2
"""A bad option or argument (click's usage error), or the ``cli`` extra is missing."""
EXIT_CONFIG = 3
"""The configuration (file, registry or imported module) could not be loaded."""

_EXTRA_PACKAGES = ("click", "rich", "yaml")


def main(argv: list[str] | None = None) -> int:
    """Run ``buttress`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    try:
        from buttress.cli._app import app  # noqa: PLC0415 - needs the cli extra
    except ImportError as exc:
        if exc.name not in _EXTRA_PACKAGES:
            raise
        print(
            f"buttress: the command line needs the 'cli' extra (missing: {exc.name}); "
            "install it with: pip install 'buttress[cli]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        app.main(args=argv, prog_name="buttress")
    except SystemExit as exit_:  # click ends every run with one (standalone mode)
        code: object = exit_.code
        if code is None or isinstance(code, int):
            return code or EXIT_OK
        print(code, file=sys.stderr)
        return 1
