"""``provider-jobs dlq ...`` (the operator's commands), ``provider-jobs archiver`` and
``provider-jobs archive upgrade``.

Tables for people, ``--json`` for scripts. Exit codes:

- 0: done;
- 1: no record matched, or an id is not in the archive;
- 2: bad usage or configuration, or an invalid ``--edit`` (nothing was sent);
- 3: the archive database cannot be reached;
- 4: RabbitMQ cannot be reached, or a replay could not be published.
"""

from __future__ import annotations

import typer

from .archiver import archiver
from .common import EXIT_ARCHIVE, EXIT_BROKER, EXIT_NOT_FOUND, EXIT_USAGE
from .discard import discard, purge
from .inspect import audit, groups, list_records, show
from .operations import operations_app
from .process import process
from .replay import replay
from .upgrade import upgrade

__all__ = [
    "EXIT_ARCHIVE",
    "EXIT_BROKER",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "archive_app",
    "archiver",
    "dlq_app",
]

dlq_app = typer.Typer(help="Inspect, group, replay and discard archived dead letters.", no_args_is_help=True)
# Registered here, in this order, so ``--help`` lists them as it always has.
dlq_app.command("list")(list_records)
dlq_app.command()(show)
dlq_app.command()(groups)
dlq_app.command()(replay)
dlq_app.command()(discard)
dlq_app.command()(purge)
dlq_app.command()(audit)
dlq_app.command()(process)
dlq_app.add_typer(operations_app, name="operations")

archive_app = typer.Typer(help="The dead-letter archive's schema.", no_args_is_help=True)
archive_app.command()(upgrade)
