"""Where a job's W3C trace context travels: two message options, read without OpenTelemetry.

A job carries its trace context in ``options["trace_context"]``, a carrier of
``traceparent`` (and ``tracestate``) as the W3C propagator writes it. Options
go wherever the message goes (a retry's delay queue, a held retry, the
``<queue>.XQ`` copy, the archive's stored body), so every attempt of a job,
its dead letter and its archive entry share one trace. A replay moves the
dead job's carrier to ``options["replay_of_trace_context"]``: the replay is a
new trace that links to it, and its record shows both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REPLAY_OF_TRACE_OPTION", "TRACE_OPTION", "move_to_replay_of", "trace_id_of", "trace_ids"]

#: The message option holding a job's trace context: ``{"traceparent": ..., "tracestate": ...}``.
TRACE_OPTION = "trace_context"
#: The message option of a replay holding the trace context of the job it replays.
REPLAY_OF_TRACE_OPTION = "replay_of_trace_context"

#: ``version-trace_id-parent_id-flags``, as W3C Trace Context writes it (lower-case hex).
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_INVALID_TRACE_ID = "0" * 32


def trace_id_of(carrier: Any) -> str | None:
    """The trace id (32 hex digits) of a trace-context carrier, or ``None`` when it holds none.

    Args:
        carrier: A message option's value, whatever a hand-made message put there.
    """
    if not isinstance(carrier, Mapping):
        return None
    traceparent = carrier.get("traceparent")
    if not isinstance(traceparent, str):
        return None
    found = _TRACEPARENT.match(traceparent)
    if found is None or found.group(1) == _INVALID_TRACE_ID:
        return None
    return found.group(1)


def trace_ids(options: Any) -> tuple[str | None, str | None]:
    """A message's trace id and the trace id of the job it replays (each ``None`` when absent).

    Args:
        options: The message's ``options``.
    """
    if not isinstance(options, Mapping):
        return None, None
    return trace_id_of(options.get(TRACE_OPTION)), trace_id_of(options.get(REPLAY_OF_TRACE_OPTION))


def move_to_replay_of(options: dict[str, Any]) -> None:
    """Make ``options`` (a replay's, edited in place) start a new trace that keeps the old one's
    context as :data:`REPLAY_OF_TRACE_OPTION`; options without a trace context are left as they are."""
    carrier = options.pop(TRACE_OPTION, None)
    if carrier is not None:
        options[REPLAY_OF_TRACE_OPTION] = carrier
