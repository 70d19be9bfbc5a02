"""The Tracing middleware on a real broker: a send span per job, a process span per attempt, one trace."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.trace import SpanKind

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.errors import ProviderNotAvailable, ValidationFailed
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.tracing import TRACE_OPTION, trace_id_of
from provider_jobs.tracing.middleware import Tracing

from support import running_worker, take_dead_letters, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}


class Fails:
    """Raises ``error`` for the first ``failures`` attempts, then succeeds; counts attempts."""

    def __init__(self, error: Exception, failures: int = 1) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, job: Any) -> None:
        with self.lock:
            self.calls += 1
            attempt = self.calls
        if attempt <= self.failures:
            raise self.error


def _system(settings: Any, provider: Fails, tracer_provider: Any, **changes: Any) -> tuple[Any, Any]:
    changed = settings.replace(**changes)
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": provider}))
    broker = build_broker(changed, tracer_provider=tracer_provider)
    return broker, declare_provider_actors(broker, registry, changed)["create_resource"]


def _spans(exporter: Any, count: int) -> list[Any]:
    return wait_for(lambda: (spans := exporter.get_finished_spans()) and len(spans) >= count and spans)


def _process(spans: list[Any]) -> list[Any]:
    return sorted(
        (s for s in spans if s.kind is SpanKind.CONSUMER), key=lambda s: s.attributes["provider_jobs.attempt"]
    )


def test_a_job_retried_through_a_delay_queue_is_one_trace_of_a_send_and_two_process_spans(
    settings, queue_name, tracer_provider, exporter
) -> None:
    provider = Fails(ConnectionError("connection reset by peer"))
    broker, actor = _system(settings, provider, tracer_provider, hold_retries_up_to_ms=0)
    message = actor.send(RG)
    with running_worker(broker):
        spans = _spans(exporter, 3)
    send = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    first, second = _process(spans)
    assert send.name == f"send {queue_name}"
    assert {s.context.trace_id for s in spans} == {send.context.trace_id}
    assert first.parent.span_id == second.parent.span_id == send.context.span_id
    assert first.name == f"process {queue_name}"
    assert first.attributes["messaging.message.id"] == message.message_id
    assert first.attributes["provider_jobs.job_id"] == message.options["job_id"]
    assert first.attributes["provider_jobs.provider"] == "ITL.Core/ResourceGroup"
    assert first.attributes["provider_jobs.operation"] == "create"
    assert first.attributes["provider_jobs.max_attempts"] == settings.max_retries + 1
    assert first.attributes["provider_jobs.outcome"] == "retry_scheduled"
    assert first.attributes["provider_jobs.error.category"] == "connection_error"
    assert first.attributes["provider_jobs.error.retryable"] is True
    assert first.attributes["provider_jobs.retry.delay_ms"] == 20
    assert second.attributes["provider_jobs.attempt"] == 2
    assert second.attributes["provider_jobs.outcome"] == "succeeded"


def test_a_held_retry_stays_in_the_jobs_trace(settings, tracer_provider, exporter) -> None:
    provider = Fails(ConnectionError("connection reset by peer"))
    broker, actor = _system(settings, provider, tracer_provider, hold_retries_up_to_ms=1000)
    actor.send(RG)
    with running_worker(broker):
        spans = _spans(exporter, 3)
    first, second = _process(spans)
    assert first.attributes["provider_jobs.retry.held"] is True
    assert first.attributes["provider_jobs.outcome"] == "retry_scheduled"
    assert second.attributes["provider_jobs.outcome"] == "succeeded"
    assert first.context.trace_id == second.context.trace_id


def test_a_retry_through_the_dramatiq_delay_queue_stays_in_the_jobs_trace(
    settings, tracer_provider, exporter
) -> None:
    provider = Fails(ConnectionError("connection reset by peer"))
    broker, actor = _system(settings, provider, tracer_provider, hold_retries_up_to_ms=0)
    for middleware in broker.middleware:
        if hasattr(middleware, "native_delays"):
            middleware.native_delays = False
    actor.send(RG)
    with running_worker(broker):
        spans = _spans(exporter, 3)
    assert len([s for s in spans if s.kind is SpanKind.PRODUCER]) == 1
    assert len({s.context.trace_id for s in spans}) == 1


def test_a_permanent_failure_is_dead_lettered_with_its_trace_context_in_the_dead_letter(
    settings, queue_name, amqp, tracer_provider, exporter
) -> None:
    provider = Fails(ValidationFailed("name is not valid"))
    broker, actor = _system(settings, provider, tracer_provider)
    actor.send(RG)
    with running_worker(broker):
        spans = _spans(exporter, 2)
        [(_, letter)] = take_dead_letters(amqp, queue_name, 1)
    [attempt] = _process(spans)
    assert attempt.attributes["provider_jobs.outcome"] == "dead_lettered"
    assert attempt.attributes["provider_jobs.dead_letter.reason"] == "non_retryable"
    assert attempt.attributes["provider_jobs.error.category"] == "validation"
    assert attempt.attributes["provider_jobs.error.retryable"] is False
    assert attempt.attributes["error.type"] == "ValidationFailed"
    assert trace_id_of(letter["options"][TRACE_OPTION]) == format(attempt.context.trace_id, "032x")


def test_exhausted_retries_end_with_a_dead_lettered_attempt(settings, tracer_provider, exporter) -> None:
    provider = Fails(ConnectionError("connection reset by peer"), failures=10)
    broker, actor = _system(settings, provider, tracer_provider, max_attempts=2)
    actor.send(RG)
    with running_worker(broker):
        spans = _spans(exporter, 3)
    first, second = _process(spans)
    assert first.attributes["provider_jobs.outcome"] == "retry_scheduled"
    assert second.attributes["provider_jobs.outcome"] == "dead_lettered"
    assert second.attributes["provider_jobs.dead_letter.reason"] == "exhausted"
    assert second.attributes["provider_jobs.max_attempts"] == 2


def test_without_a_tracer_provider_the_broker_has_no_tracing_middleware(settings) -> None:
    broker = build_broker(settings)
    assert not any(isinstance(m, Tracing) for m in broker.middleware)
    broker.close()


def test_the_middleware_adds_its_spans_to_a_plain_dramatiq_services_own_provider(
    tracer_provider, exporter
) -> None:
    broker = StubBroker(middleware=[Tracing(tracer_provider=tracer_provider)])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, queue_name="plain")
    def plain() -> None:
        pass

    with exporter_context(tracer_provider) as parent:
        plain.send()
    worker = dramatiq.Worker(broker, worker_timeout=20)
    worker.start()
    broker.join("plain")
    worker.join()
    worker.stop()
    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [process] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert send.parent.span_id == parent.get_span_context().span_id
    assert process.context.trace_id == send.context.trace_id
    assert process.attributes["provider_jobs.outcome"] == "succeeded"


def exporter_context(tracer_provider: Any) -> Any:
    """A span of the host service, current while its block sends a message."""
    return tracer_provider.get_tracer("host").start_as_current_span("host request")


def test_a_job_dead_lettered_as_crash_loop_gets_a_process_span_saying_so(
    settings, queue_name, rabbitmq_url, amqp, tracer_provider, exporter
) -> None:
    if settings.queue_type == "quorum":
        pytest.skip("on quorum queues RabbitMQ counts deliveries itself")
    provider = Fails(ConnectionError("never runs"), failures=0)
    broker, actor = _system(settings, provider, tracer_provider, max_deliveries=1, redelivery_grace_s=0.2)
    broker.declare_queue(queue_name, ensure=True)
    message = actor.send(RG)
    # A worker that died running it: taken, never settled, so RabbitMQ redelivers it.
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    wait_for(lambda: connection.channel().basic_get(queue_name)[0] is not None)
    connection.close()
    with running_worker(broker):
        [(_, letter)] = take_dead_letters(amqp, queue_name, 1)
        spans = _spans(exporter, 2)
    assert provider.calls == 0
    [send] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [crash] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert crash.attributes["provider_jobs.outcome"] == "crash_loop"
    assert crash.attributes["provider_jobs.job_id"] == message.options["job_id"]
    assert crash.context.trace_id == send.context.trace_id
    assert letter["options"]["dead_letter"]["reason"] == "crash_loop"


def test_submit_many_gives_each_job_a_send_span_and_its_own_trace(
    settings, queue_name, tracer_provider, exporter
) -> None:
    from provider_jobs.compat import JobQueue

    queue = JobQueue(settings=settings, tracer_provider=tracer_provider)
    try:
        job_ids = queue.submit_many([{**RG, "operation": "create", "request": {}} for _ in range(3)])
    finally:
        queue.close()
        queue.broker.close()
    [tracing] = [m for m in queue.broker.middleware if isinstance(m, Tracing)]
    assert len(tracing._sending) == 0
    sends = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert sorted(s.attributes["provider_jobs.job_id"] for s in sends) == sorted(job_ids)
    assert all(s.name == f"send {queue_name}" for s in sends)
    assert len({s.context.trace_id for s in sends}) == 3


def test_an_attempt_put_back_to_wait_for_its_providers_breaker_says_so(tracer_provider, exporter) -> None:
    """What ClassifiedRetries leaves on a job it puts back to wait (its breaker_waits option, counted
    up) is read as the outcome, whether the job was skipped or its failure absorbed."""
    broker = StubBroker()
    tracing = Tracing(tracer_provider=tracer_provider)

    @dramatiq.actor(broker=broker, queue_name="plain", max_retries=4)
    def plain() -> None:
        pass

    for end in ("skipped", "failed"):
        proxy = dramatiq.MessageProxy(plain.message())
        tracing.before_process_message(broker, proxy)
        proxy.options["breaker_waits"] = 1
        if end == "skipped":
            tracing.after_skip_message(broker, proxy)
        else:
            tracing.after_process_message(broker, proxy, exception=ConnectionError("refused"))
    spans = exporter.get_finished_spans()
    assert [s.attributes["provider_jobs.outcome"] for s in spans] == ["breaker_wait", "breaker_wait"]
    assert all(s.attributes["provider_jobs.max_attempts"] == 5 for s in spans)


def test_jobs_held_back_by_an_open_breaker_have_attempts_that_say_breaker_wait_in_their_trace(
    settings, amqp, tracer_provider, exporter
) -> None:
    provider = Fails(ProviderNotAvailable("Provider not available"), failures=1_000)
    broker, actor = _system(
        settings, provider, tracer_provider, breaker_min_calls=3, breaker_probe_interval_s=0.2, max_attempts=2
    )
    for i in range(6):
        actor.send({**RG, "request": {"n": i}})

    def waits() -> list[Any]:
        return [
            s
            for s in exporter.get_finished_spans()
            if s.kind is SpanKind.CONSUMER and s.attributes.get("provider_jobs.outcome") == "breaker_wait"
        ]

    with running_worker(broker):
        waiting = wait_for(waits)
    sends = {
        s.attributes["provider_jobs.job_id"]: s.context.trace_id
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.PRODUCER
    }
    assert all(sends[s.attributes["provider_jobs.job_id"]] == s.context.trace_id for s in waiting)


def test_a_submit_many_that_rabbitmq_does_not_route_ends_each_send_span_as_an_error(
    settings, queue_name, amqp, tracer_provider, exporter
) -> None:
    from opentelemetry.trace import StatusCode

    from provider_jobs.compat import JobQueue
    from provider_jobs.errors import PublishFailed

    queue = JobQueue(settings=settings, tracer_provider=tracer_provider)
    try:
        queue.submit_many([{**RG, "operation": "create", "request": {}}])  # declares the queue
        amqp.queue_delete(queue_name)  # behind the job queue's back: the next publish is unroutable
        with pytest.raises(PublishFailed) as failed:
            queue.submit_many([{**RG, "operation": "create", "request": {"n": i}} for i in range(2)])
    finally:
        queue.close()
        queue.broker.close()
    [tracing] = [m for m in queue.broker.middleware if isinstance(m, Tracing)]
    assert len(tracing._sending) == 0
    sends = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert [s.status.status_code for s in sends].count(StatusCode.UNSET) == 1
    errors = [s for s in sends if s.status.status_code is StatusCode.ERROR]
    assert sorted(s.attributes["provider_jobs.job_id"] for s in errors) == sorted(failed.value.not_confirmed)
    assert all("unroutable" in (s.status.description or "").lower() for s in errors)


def test_a_send_span_lasts_until_the_publish_went_through_including_dramatiqs_second_try(
    settings, queue_name, amqp, tracer_provider, exporter
) -> None:
    broker, actor = _system(settings, Fails(RuntimeError("unused"), failures=0), tracer_provider)
    try:
        actor.send(RG)  # declares the queue
        amqp.queue_delete(queue_name)  # the next publish is returned unroutable; Dramatiq declares again
        message = actor.send(RG)
    finally:
        broker.close()
    [tracing] = [m for m in broker.middleware if isinstance(m, Tracing)]
    assert len(tracing._sending) == 0
    sends = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    [send] = [s for s in sends if s.attributes["messaging.message.id"] == message.message_id]
    assert send.attributes["messaging.message.id"] == message.message_id
    assert [e.name for e in send.events] == ["publish retried"]
    assert amqp.queue_declare(queue_name, passive=True).method.message_count == 1
