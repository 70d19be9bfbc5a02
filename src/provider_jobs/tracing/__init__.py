"""OpenTelemetry tracing, optional: one trace per job, across attempts, retries, the dead-letter
queue, the archive and replay.

Needs the ``otel`` extra (``pip install 'provider-jobs[otel]'``) and is set
up from the standard ``OTEL_*`` variables (:func:`configure_tracing`), or
uses a ``TracerProvider`` the application configured. With neither, nothing
of it runs: no middleware is added, no span or header is made. The message
options that carry the trace context (:mod:`.context`) are read without
OpenTelemetry, so the archive and the console show trace ids either way.

:class:`Tracing` (the Dramatiq middleware) and the span helpers import
OpenTelemetry; they are imported from this package on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .context import REPLAY_OF_TRACE_OPTION, TRACE_OPTION, move_to_replay_of, trace_id_of, trace_ids
from .logs import add_trace_ids
from .publish import publish_failed
from .setup import EXTRA_MISSING, active_provider, configure_tracing, tracer_of

if TYPE_CHECKING:
    from .middleware import Tracing
    from .spans import archive_spans, instrument_httpx, replay_send

__all__ = [
    "EXTRA_MISSING",
    "REPLAY_OF_TRACE_OPTION",
    "TRACE_OPTION",
    "Tracing",
    "active_provider",
    "add_trace_ids",
    "archive_spans",
    "configure_tracing",
    "instrument_httpx",
    "move_to_replay_of",
    "publish_failed",
    "replay_send",
    "trace_id_of",
    "trace_ids",
    "tracer_of",
]

#: Names imported from a submodule that needs OpenTelemetry, when first asked for.
_NEEDS_OTEL = {
    "Tracing": ".middleware",
    "archive_spans": ".spans",
    "instrument_httpx": ".spans",
    "replay_send": ".spans",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_OTEL.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ImportError as exc:
        raise ImportError(f"provider_jobs.tracing.{name} {EXTRA_MISSING}") from exc
