"""A dead job's trace goes on through the XQ into the archive; its replay is a new trace linked to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver, Replayer
from provider_jobs.errors import ValidationFailed
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.tracing import trace_ids

from support import running_worker, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}


def _invalid(job: Any) -> None:
    raise ValidationFailed("name is not valid")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[DeadLetterArchive]:
    archive = DeadLetterArchive(f"sqlite:///{tmp_path}/archive.sqlite3")
    yield archive
    archive.close()


def _run_job_to_the_archive(
    settings: Any, archive: DeadLetterArchive, tracer_provider: Any, send: Any
) -> None:
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": _invalid}))
    broker = build_broker(settings, tracer_provider=tracer_provider)
    actor = declare_provider_actors(broker, registry, settings)["create_resource"]
    before = len(archive.find(limit=100))
    send(actor)
    archiver = DeadLetterArchiver(
        archive=archive,
        broker_url=settings.broker_url,
        queues=[settings.queue_name],
        flush_ms=20,
        tracer_provider=tracer_provider,
    )
    with running_worker(broker):
        wait_for(lambda: archiver.run(until_idle=True) and len(archive.find(limit=100)) > before)


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def test_an_archived_dead_letter_has_an_archive_span_in_its_jobs_trace_and_keeps_its_trace_id(
    settings, archive, tracer_provider, exporter
) -> None:
    _run_job_to_the_archive(settings, archive, tracer_provider, lambda actor: actor.send(RG))
    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [archived] = [s for s in spans if s.name.startswith("archive ")]
    assert archived.name == f"archive {settings.queue_name}.XQ"
    assert archived.context.trace_id == send.context.trace_id
    assert archived.parent.span_id == send.context.span_id
    assert archived.attributes["provider_jobs.dead_letter.reason"] == "non_retryable"
    [record] = archive.find(limit=10)
    assert trace_ids(record.decoded_body()["options"]) == (_hex(send.context.trace_id), None)


def test_a_replay_is_a_new_trace_linked_to_the_original_and_its_record_shows_both(
    settings, archive, tracer_provider, exporter
) -> None:
    settings = settings.replace(hold_retries_up_to_ms=0)
    _run_job_to_the_archive(settings, archive, tracer_provider, lambda actor: actor.send(RG))
    [first] = archive.find(limit=10)
    [original] = [s.context for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    exporter.clear()

    replayer = Replayer(
        archive=archive, broker_url=settings.broker_url, who="alice", tracer_provider=tracer_provider
    )
    _run_job_to_the_archive(
        settings, archive, tracer_provider, lambda actor: replayer.replay([first.id], reason="fixed")
    )
    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    assert send.parent is None and send.context.trace_id != original.trace_id
    [link] = send.links
    assert (link.context.trace_id, link.context.span_id) == (original.trace_id, original.span_id)
    assert send.attributes["provider_jobs.replay_of"] == first.id
    process = [s for s in spans if s.kind is SpanKind.CONSUMER and s.name.startswith("process ")]
    assert process and all(s.context.trace_id == send.context.trace_id for s in process)
    [second] = [r for r in archive.find(limit=10) if r.id != first.id]
    assert trace_ids(second.decoded_body()["options"]) == (
        _hex(send.context.trace_id),
        _hex(original.trace_id),
    )


def test_a_replay_that_rabbitmq_cannot_route_ends_its_send_span_as_an_error(
    settings, archive, amqp, tracer_provider, exporter
) -> None:
    from opentelemetry.trace import StatusCode

    _run_job_to_the_archive(settings, archive, tracer_provider, lambda actor: actor.send(RG))
    [first] = archive.find(limit=10)
    exporter.clear()
    amqp.queue_delete(settings.queue_name)  # the replay's publish is returned unroutable
    replayer = Replayer(
        archive=archive, broker_url=settings.broker_url, who="alice", tracer_provider=tracer_provider
    )
    [outcome] = replayer.replay([first.id], reason="fixed").outcomes
    assert outcome.status == "failed" and "publish failed" in (outcome.detail or "")
    [send] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert send.status.status_code is StatusCode.ERROR
    assert "unroutable" in (send.status.description or "").lower()
    assert send.attributes["provider_jobs.replay_of"] == first.id
