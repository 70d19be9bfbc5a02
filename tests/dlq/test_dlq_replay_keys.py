"""The idempotency key a replayed job runs under: kept by a plain replay, new for an edit that changes it."""

from __future__ import annotations

import json
import threading
from typing import Any

from dlq_support import job, running_worker

from provider_jobs.dlq import DeadLetterArchive, Replayer, dead_letter_from_delivery
from provider_jobs.dlq.replay.message import prepare_message
from provider_jobs.errors import ValidationFailed
from provider_jobs.jobs import ProviderJob, parse_job
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, wait_for


class FirstCallFails:
    """A provider that refuses its first call as invalid (the job is dead-lettered); it records every job."""

    def __init__(self) -> None:
        self.jobs: list[ProviderJob] = []
        self.lock = threading.Lock()

    def create(self, job: ProviderJob) -> dict[str, Any]:
        with self.lock:
            self.jobs.append(job)
            first = len(self.jobs) == 1
        if first:
            raise ValidationFailed("Validation error: name is taken")
        return {"ok": True}


def _archive_the_dead_letter(amqp: Any, settings: Settings, archive: DeadLetterArchive) -> int:
    xq = f"{settings.queue_name}.XQ"
    wait_for(lambda: queue_depth(amqp, xq) >= 1)
    _, properties, body = amqp.basic_get(xq, auto_ack=True)
    archive.store([dead_letter_from_delivery(body, properties.headers, source_queue=xq)])
    [record] = archive.find(limit=1)
    assert record.id is not None
    return record.id


def test_a_plain_replay_keeps_the_key_and_an_edited_one_runs_under_a_key_of_its_edit(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    provider = FirstCallFails()
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": provider.create}))
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="alice")
    with running_worker(settings, registry) as actors:
        actors["create_resource"].send(job(job_id="job-17"))
        record_id = _archive_the_dead_letter(amqp, settings, archive)
        replays: list[dict[str, Any]] = [
            {},
            {"request_patch": {"name": "rg-2"}},
            # The same edit again (say its first replay's confirm was lost): the same key.
            {"request_patch": {"name": "rg-2"}},
            # An edit that names the key decides it; null restores the job id.
            {"job_patch": {"priority": 9, "idempotency_key": None}},
        ]
        for count, options in enumerate(replays, start=2):
            assert replayer.replay([record_id], force=True, **options).published == 1
            wait_for(lambda count=count: len(provider.jobs) == count)

    plain, edited, edited_again, named = provider.jobs[1:]
    assert plain.idempotency_key == "job-17" and plain.request == {"name": "rg-1"}
    assert edited.request == {"name": "rg-2"} and edited.job_id == "job-17"
    assert edited.idempotency_key.startswith("job-17.") and edited.idempotency_key != "job-17"
    assert edited_again.idempotency_key == edited.idempotency_key
    assert (named.priority, named.idempotency_key) == (9, "job-17")


def test_a_plain_replay_of_an_edited_replay_keeps_its_key_and_so_does_an_edit_that_changes_nothing() -> None:
    edited_job = parse_job(job()).rekeyed()
    message = {
        "queue_name": "provider.jobs",
        "actor_name": "create_resource",
        "args": [],
        "kwargs": {"job": edited_job.to_message()},
        "options": {"job_id": edited_job.job_id},
        "message_id": "m-1",
        "message_timestamp": 0,
    }
    record = dead_letter_from_delivery(json.dumps(message).encode(), {}, source_queue="provider.jobs.XQ")
    for request_patch in (None, {}, {"name": "rg-1"}):
        prepared = prepare_message(record, message, request_patch, None)
        assert prepared["kwargs"]["job"]["idempotency_key"] == edited_job.idempotency_key != edited_job.job_id
    edited = prepare_message(record, message, {"name": "rg-2"}, None)
    assert parse_job(edited["kwargs"]["job"]).idempotency_key not in (
        edited_job.idempotency_key,
        edited_job.job_id,
    )
