"""Spans outside Dramatiq's middleware: a replay's ``send``, the archiver's ``archive``, HTTP calls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Tracer

from .context import REPLAY_OF_TRACE_OPTION, TRACE_OPTION
from .middleware import link_to
from .setup import active_provider

__all__ = ["archive_spans", "instrument_httpx", "replay_send"]


def replay_send(tracer: Tracer, message: dict[str, Any]) -> Span:
    """A PRODUCER ``send`` span for a replay's ``message``, the root of a new trace linked to the
    replayed job's (``options["replay_of_trace_context"]``); its context goes into the message.

    Args:
        tracer: Where the span goes.
        message: The replay's message as it is published, its ``options`` edited in place.

    Returns:
        The span, still open: whoever publishes the message ends it with
        :func:`~.open_sends.end_send` once RabbitMQ confirmed the publish, or it failed.
    """
    options = message["options"]
    queue = message["queue_name"]
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
        "messaging.message.id": message["message_id"],
        "provider_jobs.replay_of": options.get("replay_of"),
    }
    for option in ("job_id", "provider", "operation"):
        if isinstance(options.get(option), str):
            attributes[f"provider_jobs.{option}"] = options[option]
    span = tracer.start_span(
        f"send {queue}",
        context=otel_context.Context(),  # a new trace, whatever is current
        kind=SpanKind.PRODUCER,
        links=link_to(options.get(REPLAY_OF_TRACE_OPTION)),
        attributes={k: v for k, v in attributes.items() if v is not None},
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    options[TRACE_OPTION] = carrier
    return span


def archive_spans(tracer: Tracer, stored: Iterable[tuple[str, str | None, Any]]) -> None:
    """An ``archive`` span, in each job's trace, for each dead letter the archiver stored.

    Args:
        tracer: Where the spans go.
        stored: ``(source queue, Dramatiq message id, message options)`` of each new record.
    """
    for source_queue, message_id, options in stored:
        carrier = options.get(TRACE_OPTION) if isinstance(options, dict) else None
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else otel_context.Context()
        attributes: dict[str, Any] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "archive",
            "messaging.destination.name": source_queue,
        }
        if message_id is not None:
            attributes["messaging.message.id"] = message_id
        if isinstance(options, dict):
            dead_letter = options.get("dead_letter")
            if isinstance(dead_letter, dict):
                attributes["provider_jobs.dead_letter.reason"] = str(dead_letter.get("reason"))
            if isinstance(options.get("job_id"), str):
                attributes["provider_jobs.job_id"] = options["job_id"]
        tracer.start_span(
            f"archive {source_queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ).end()


def instrument_httpx(client: Any, tracer_provider: Any = None) -> bool:
    """Make ``client``'s requests CLIENT spans that send ``traceparent``, when tracing is on
    and ``opentelemetry-instrumentation-httpx`` is installed.

    Args:
        client: An ``httpx.Client``.
        tracer_provider: A ``TracerProvider`` the application configured. Default ``None``: the
            global one, if one is set.

    Returns:
        Whether the client is instrumented.
    """
    provider = active_provider(tracer_provider)
    if provider is None:
        return False
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return False
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    return True
