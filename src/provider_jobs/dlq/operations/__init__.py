"""Bulk operations: a replay or discard of a selection, stored in the archive, run chunk by chunk.

The operation and each record's outcome are stored in the archive
(:mod:`..archive.operations`) as it runs, so its progress outlives the process running it.

- :mod:`.control`: :class:`Operations`, what the CLI, the API and the console call to start,
  list, show, pause, resume, cancel and resolve an operation.
- :mod:`.runner`: :class:`~.runner.OperationRunner`, which runs one chunk by chunk.
- :mod:`.stoppable`: a replay's wait for a provider's breaker, which a pause or cancel ends.
- :mod:`.liveness`: the runner's name, its heartbeat, and :func:`interrupted`.
- :mod:`.background`: the operations run in threads of this process.
- :mod:`.views`: an operation as JSON-ready data, a filter as its stored selection.
"""

from __future__ import annotations

from .control import HealthSource, Operations
from .liveness import STALE_AFTER_S, interrupted, this_runner
from .runner import CHUNK
from .views import describe_filter, operation_view

__all__ = [
    "CHUNK",
    "STALE_AFTER_S",
    "HealthSource",
    "Operations",
    "describe_filter",
    "interrupted",
    "operation_view",
    "this_runner",
]
