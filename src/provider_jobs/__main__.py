"""``provider-jobs`` and ``python -m provider_jobs``: the command line, or one line naming a missing extra.

The command needs the ``cli`` extra, and some of its commands more (the
archive, the API, the console); without them a command says which extra to
install instead of ending in an import traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .extras import missing_extra_line

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``provider-jobs`` command; a missing extra is one line on stderr and exit code 2.

    Args:
        argv: The arguments; default ``sys.argv[1:]``.
    """
    try:
        from .cli import main as cli_main

        cli_main(argv)
    except ImportError as exc:
        line = missing_extra_line(exc)
        if line is None:
            raise
        print(f"provider-jobs: {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
