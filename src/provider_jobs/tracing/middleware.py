"""Tracing: a Dramatiq middleware that gives each job one OpenTelemetry trace.

Follows OpenTelemetry's messaging semantic conventions:

- a PRODUCER ``send <queue>`` span for every message enqueued without a trace
  context (``actor.send``, ``JobQueue.submit`` and ``submit_many``), whose
  context goes into the message (see :mod:`.context`); it lasts until RabbitMQ
  confirmed the publish, or ends as an error when the publish failed
  (:meth:`Tracing.send_failed`) or its outcome never came (:class:`.OpenSends`);
  a message that already has one (a retry through Dramatiq's ``<queue>.DQ``)
  keeps it;
- a CONSUMER ``process <queue>`` span for every attempt, a child of that
  context, so that every attempt of a job is in its trace, with the job id,
  attempt and maximum, provider and operation, and, read from what
  :class:`~provider_jobs.middleware.ClassifiedRetries` wrote into the message
  (the attempt history, ``options["dead_letter"]``, a held retry, a breaker
  wait), the failure's category and retryability, the delay chosen and the
  attempt's outcome (:data:`OUTCOMES`). The span is current while the actor
  and the other middleware run: the provider's HTTP calls and log lines
  belong to it;
- a ``process`` span with outcome ``crash_loop`` for a job the worker's
  consumer dead-letters without running it (:meth:`Tracing.record_crash_loop`).

Place it first in the broker's middleware list (before ``ClassifiedRetries``,
which must be last): its ``after_process_message`` then runs after the retry
decision was made. Without ``ClassifiedRetries`` it still records attempts
and whether they raised.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ..middleware.breaker_wait import WAITS_OPTION
from ..middleware.dead_letters import CRASH_LOOP
from ..middleware.delays import HOLD_ATTRIBUTE
from .context import REPLAY_OF_TRACE_OPTION, TRACE_OPTION
from .open_sends import OpenSends
from .setup import INSTRUMENTATION_NAME

__all__ = [
    "BREAKER_WAIT",
    "DEAD_LETTERED",
    "FAILED",
    "OUTCOMES",
    "RETRY_SCHEDULED",
    "SKIPPED",
    "SUCCEEDED",
    "Tracing",
    "link_to",
]

#: Outcomes of an attempt, as its span's ``provider_jobs.outcome``.
SUCCEEDED = "succeeded"
RETRY_SCHEDULED = "retry_scheduled"
BREAKER_WAIT = "breaker_wait"
DEAD_LETTERED = "dead_lettered"
FAILED = "failed"
SKIPPED = "skipped"
OUTCOMES = (SUCCEEDED, RETRY_SCHEDULED, BREAKER_WAIT, DEAD_LETTERED, CRASH_LOOP, FAILED, SKIPPED)

#: Set on a message's proxy while its ``process`` span runs: the span, its context token and
#: what the message held before the attempt.
_ATTEMPT_ATTRIBUTE = "provider_jobs_trace_attempt"


class _Attempt:
    __slots__ = ("dead_letter", "last_attempt", "span", "token", "waits")

    def __init__(self, span: trace.Span, token: Token[otel_context.Context], options: dict[str, Any]) -> None:
        self.span = span
        self.token = token
        history = options.get("attempt_history")
        self.last_attempt = history[-1] if isinstance(history, list) and history else None
        self.dead_letter = options.get("dead_letter")
        self.waits = options.get(WAITS_OPTION)


def link_to(carrier: Any) -> list[Link]:
    """A span link to the span a trace-context carrier names; none when it names none."""
    if not isinstance(carrier, dict):
        return []
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return [Link(span_context)] if span_context.is_valid else []


class Tracing(Middleware):
    """Spans for sending and processing messages, and the trace context in each message.

    Args:
        tracer_provider: Where spans go: a ``TracerProvider`` the application configured.
            Default ``None``: OpenTelemetry's global one.
        system: ``messaging.system``. Default ``"rabbitmq"``.
    """

    def __init__(self, *, tracer_provider: Any = None, system: str = "rabbitmq") -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        self.tracer_provider = tracer_provider
        self.system = system
        #: ``send`` spans open while their message is being published, by message id.
        self._sending = OpenSends()

    # -- sending ------------------------------------------------------------------

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: Any) -> None:
        options = message.options
        sending = self._sending.get(message.message_id)
        if sending is not None:
            # Dramatiq publishes again after a lost connection, under the same span.
            sending.add_event("publish retried")
            return
        if TRACE_OPTION in options:
            return  # a retry, or a message its sender traced: it stays in its trace
        queue = message.queue_name
        span = self.tracer.start_span(
            f"send {queue}",
            kind=SpanKind.PRODUCER,
            links=link_to(options.get(REPLAY_OF_TRACE_OPTION)),
            attributes={
                "messaging.system": self.system,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": queue,
                "messaging.message.id": message.message_id,
                **_job_attributes(options),
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        options[TRACE_OPTION] = carrier
        # Ended once RabbitMQ confirmed the publish (after_enqueue) or it failed (send_failed).
        self._sending.open(message.message_id, span)

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: Any) -> None:
        self._sending.settle(message.message_id)

    def send_failed(self, message: dramatiq.Message[Any], error: BaseException | str) -> None:
        """End ``message``'s ``send`` span as an error: its publish failed.

        Args:
            message: The message whose publish failed.
            error: The exception raised, or what RabbitMQ answered.
        """
        self._sending.settle(message.message_id, error)

    # -- processing ---------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        options = message.options
        carrier = options.get(TRACE_OPTION)
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else otel_context.Context()
        span = self.tracer.start_span(
            f"process {message.queue_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=link_to(options.get(REPLAY_OF_TRACE_OPTION)) if carrier is None else (),
        )
        # Worked out only for a span that records: an attempt not sampled costs a context, no more.
        if span.is_recording():
            span.set_attributes(self._process_attributes(broker, message))
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        setattr(message, _ATTEMPT_ATTRIBUTE, _Attempt(span, token, options))

    def _process_attributes(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> dict[str, Any]:
        options = message.options
        attributes: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": message.queue_name,
            "messaging.message.id": message.message_id,
            "provider_jobs.actor": message.actor_name,
            "provider_jobs.attempt": int(options.get("retries", 0) or 0) + 1,
            **_job_attributes(options),
        }
        max_retries = _max_retries(broker, message)
        if max_retries is not None:
            attributes["provider_jobs.max_attempts"] = max_retries + 1
        return attributes

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt: _Attempt | None = message.__dict__.pop(_ATTEMPT_ATTRIBUTE, None)
        if attempt is None:
            return
        span = attempt.span
        try:
            if span.is_recording():
                if exception is not None:
                    span.record_exception(exception)
                    span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
                    span.set_attribute("error.type", type(exception).__qualname__)
                _record_decision(span, message, attempt, failed=exception is not None or message.failed)
        finally:
            span.end()
            otel_context.detach(attempt.token)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        attempt: _Attempt | None = message.__dict__.pop(_ATTEMPT_ATTRIBUTE, None)
        if attempt is None:
            return
        span = attempt.span
        try:
            if span.is_recording():
                _record_decision(span, message, attempt, failed=message.failed, skipped=True)
        finally:
            span.end()
            otel_context.detach(attempt.token)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # A worker process may end without running atexit handlers: export what is batched.
        provider = self.tracer_provider or trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            flush()

    # -- a job that kept killing its worker -----------------------------------------

    def record_crash_loop(self, queue_name: str, options: Any, deliveries: int) -> None:
        """A ``process`` span for a job its worker's consumer dead-lettered as ``crash_loop``
        without running it (its earlier attempts' spans died with their processes).

        Args:
            queue_name: The queue it was delivered from.
            options: The message's options, as decoded.
            deliveries: Deliveries that ended without an outcome.
        """
        options = options if isinstance(options, dict) else {}
        carrier = options.get(TRACE_OPTION)
        parent = propagate.extract(carrier) if isinstance(carrier, dict) else otel_context.Context()
        span = self.tracer.start_span(
            f"process {queue_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": self.system,
                "messaging.operation.type": "process",
                "messaging.destination.name": queue_name,
                "provider_jobs.outcome": CRASH_LOOP,
                "provider_jobs.dead_letter.reason": CRASH_LOOP,
                "provider_jobs.deliveries": deliveries,
                **_job_attributes(options),
            },
        )
        span.set_status(Status(StatusCode.ERROR, CRASH_LOOP))
        span.end()


def _job_attributes(options: dict[str, Any]) -> dict[str, Any]:
    attributes = {}
    for option in ("job_id", "provider", "operation"):
        value = options.get(option)
        if isinstance(value, str):
            attributes[f"provider_jobs.{option}"] = value
    return attributes


def _max_retries(broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> int | None:
    value = message.options.get("max_retries")
    if value is None:
        try:
            value = broker.get_actor(message.actor_name).options.get("max_retries")
        except Exception:  # an unknown actor fails later, where Dramatiq reports it
            value = None
    if value is None:
        value = next(
            (getattr(m, "max_retries", None) for m in broker.middleware if hasattr(m, "max_retries")), None
        )
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _record_decision(
    span: trace.Span,
    message: dramatiq.MessageProxy,
    attempt: _Attempt,
    *,
    failed: bool,
    skipped: bool = False,
) -> None:
    """Set the attempt's classification, delay and outcome from what the retry middleware wrote."""
    options = message.options
    history = options.get("attempt_history")
    latest = history[-1] if isinstance(history, list) and history else None
    if isinstance(latest, dict) and latest is not attempt.last_attempt:
        span.set_attribute("provider_jobs.error.category", str(latest.get("category")))
        span.set_attribute("provider_jobs.error.retryable", bool(latest.get("retryable")))
        if isinstance(latest.get("delay_ms"), int):
            span.set_attribute("provider_jobs.retry.delay_ms", latest["delay_ms"])
    dead_letter = options.get("dead_letter")
    if isinstance(dead_letter, dict) and dead_letter is not attempt.dead_letter:
        outcome = DEAD_LETTERED
        span.set_attribute("provider_jobs.dead_letter.reason", str(dead_letter.get("reason")))
        if not isinstance(latest, dict) or latest is attempt.last_attempt:
            span.set_attribute("provider_jobs.error.category", str(dead_letter.get("category")))
            span.set_attribute("provider_jobs.error.retryable", bool(dead_letter.get("retryable")))
    elif options.get(WAITS_OPTION) != attempt.waits:
        outcome = BREAKER_WAIT
    elif HOLD_ATTRIBUTE in message.__dict__:
        outcome = RETRY_SCHEDULED
        span.set_attribute("provider_jobs.retry.held", True)
    elif message.failed:
        outcome = DEAD_LETTERED  # nacked: RabbitMQ moves it to <queue>.XQ
    elif skipped:
        outcome = SKIPPED
    elif failed:
        scheduled = (
            isinstance(latest, dict)
            and latest is not attempt.last_attempt
            and latest.get("delay_ms") is not None
        )
        outcome = RETRY_SCHEDULED if scheduled else FAILED
    else:
        outcome = SUCCEEDED
    span.set_attribute("provider_jobs.outcome", outcome)
