"""``python -m buttress``: the ``buttress`` command (see :mod:`buttress.cli`)."""

from __future__ import annotations

import sys

from buttress.cli import main

if __name__ == "__main__":
    sys.exit(main())
