from __future__ import annotations

import json
import uuid

from prometheus_client import CollectorRegistry

from provider_jobs.api.archive_stats import ArchiveCollector
from provider_jobs.dlq import DeadLetterArchive, RecordFilter, ReplayMark, dead_letter_from_delivery


def _store(archive: DeadLetterArchive, count: int) -> list[int]:
    bodies = [
        json.dumps(
            {
                "queue_name": "provider.jobs",
                "actor_name": "create_resource",
                "args": [],
                "kwargs": {"job": {"provider_namespace": "ITL.Core", "resource_type": "RG"}},
                "options": {},
                "message_id": str(uuid.uuid4()),
            }
        ).encode()
        for _ in range(count)
    ]
    archive.store([dead_letter_from_delivery(b, {}, source_queue="provider.jobs.XQ") for b in bodies])
    return archive.ids(RecordFilter())


def test_replayed_and_discarded_counters_count_the_audit_log_and_never_go_down(
    archive: DeadLetterArchive,
) -> None:
    registry = CollectorRegistry()
    registry.register(ArchiveCollector(archive))
    ids = _store(archive, 4)
    token, won = archive.claim_many(ids[:2])
    archive.mark_replayed_many([ReplayMark(record_id=i, message_id=f"m{i}") for i in won], token, who="a")
    archive.set_status(RecordFilter(ids=ids[2:]), "discarded", who="a", reason="bad", action="discard")
    archive.purge(RecordFilter(), who="a", reason="spring cleaning")
    assert archive.count() == 0
    assert registry.get_sample_value("provider_jobs_dlq_replayed_total") == 2
    assert registry.get_sample_value("provider_jobs_dlq_discarded_total") == 2
