"""Operations as plain data: a filter as the selection an operation stores, and an operation as
the JSON-ready view the CLI's ``--json``, the API and the console show."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..archive.filters import RecordFilter
from ..archive.operations import OperationRow
from .liveness import interrupted

__all__ = ["describe_filter", "operation_view"]


def operation_view(operation: OperationRow) -> dict[str, Any]:
    """The operation as JSON-ready data (the CLI's ``--json``, the API, the console): its
    fields, ``settled`` and ``interrupted`` (running, but its process is gone)."""
    return {
        **dataclasses.asdict(operation),
        "settled": operation.settled,
        "interrupted": interrupted(operation),
    }


def describe_filter(record_filter: RecordFilter) -> dict[str, Any]:
    """A filter as an operation's stored selection: the fields set (ids only counted)."""
    selection: dict[str, Any] = {}
    for name, value in vars(record_filter).items():
        if name == "ids":
            if value is not None:
                selection["ids"] = len(value)
        elif value not in (None, False):
            selection[name] = list(value) if isinstance(value, list | tuple) else value
    return selection
