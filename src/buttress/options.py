"""Options for your own policies: the base class and the checks buttress's policies use.

A policy's settings are a frozen dataclass of :func:`option` fields subclassing
:class:`Options`, validated in ``__post_init__`` with the ``check_*`` functions below
(which raise :class:`~buttress.errors.ConfigError` naming the option). The registry
loads such a class from a TOML table with :meth:`Options.from_mapping`, and the
configuration reference is written from the fields' ``doc``. See
``docs/extending.md``.
"""

from __future__ import annotations

from buttress._options import Options, convert_exceptions, option, register_conversion
from buttress._validate import (
    check_callable,
    check_choice,
    check_clock,
    check_count,
    check_name,
    check_number,
    check_ratio,
    check_seconds,
    optional_seconds,
)

__all__ = [
    "Options",
    "check_callable",
    "check_choice",
    "check_clock",
    "check_count",
    "check_name",
    "check_number",
    "check_ratio",
    "check_seconds",
    "convert_exceptions",
    "option",
    "optional_seconds",
    "register_conversion",
]
