"""add_trace_ids: a structlog processor naming the active span in each log line."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["add_trace_ids"]

#: OpenTelemetry's ``get_current_span``, looked up on the first line; ``False`` without the extra.
_current_span: Callable[[], Any] | bool | None = None


def _span_lookup() -> Callable[[], Any] | bool:
    try:
        from opentelemetry.trace import get_current_span
    except ImportError:
        return False
    return get_current_span


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``trace_id`` and ``span_id`` (hex, as OTLP backends show them) while a span is active.

    A structlog processor; lines written outside a span, or without the ``otel`` extra, are
    left as they are.
    """
    global _current_span  # noqa: PLW0603 - one look-up per process, not one per line
    if _current_span is None:
        _current_span = _span_lookup()
    if _current_span is False:
        return event_dict
    assert callable(_current_span)
    span_context = _current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(span_context.span_id, "016x"))
    return event_dict
