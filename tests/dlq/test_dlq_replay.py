from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dlq_support import TcpProxy, dramatiq_body, running_worker

from provider_jobs.dlq import DeadLetterArchive, Replayer, ReplaySource, dead_letter_from_delivery
from provider_jobs.dlq.replay.message import outgoing
from provider_jobs.errors import InvalidJob
from provider_jobs.rabbitmq.bulk import BulkPublisher
from provider_jobs.settings import Settings

from support import declare_work_queue as _declare
from support import queue_depth, wait_for


def _store(archive: DeadLetterArchive, settings: Settings, count: int = 1, **job_fields: Any) -> list[int]:
    records = []
    for _ in range(count):
        body = json.loads(dramatiq_body(settings.queue_name, **job_fields))
        body["options"] = {
            "job_id": body["kwargs"]["job"]["job_id"],
            "provider": "ITL.Core/ResourceGroup",
            "retries": 3,
            "traceback": "Traceback ...",
            "attempt_history": [{"attempt": 3, "category": "provider_not_found"}],
            "dead_letter": {
                "reason": "exhausted",
                "category": "provider_not_found",
                "attempts": 3,
                "error": "No provider found for ITL.Core/ResourceGroup",
            },
            "max_age": 3_600_000,
        }
        body["message_timestamp"] -= 7_200_000
        records.append(dead_letter_from_delivery(json.dumps(body).encode(), {}, source_queue="x.XQ"))
    archive.store(records)
    return [r.id for r in archive.find(limit=1000, oldest_first=True) if r.id is not None][-count:]


def _drain(channel: Any, queue_name: str) -> list[tuple[Any, dict[str, Any]]]:
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue_name, auto_ack=True)
        if method is None:
            return messages
        messages.append((properties, json.loads(body)))


def test_a_replay_is_a_fresh_persistent_message_linked_to_its_record(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    [record_id] = _store(archive, settings)
    original = archive.get(record_id)
    report = Replayer(archive=archive, broker_url=settings.broker_url, who="alice").replay(
        [record_id], reason="provider deployed"
    )
    assert report.published == 1
    [(properties, message)] = _drain(amqp, settings.queue_name)
    assert properties.delivery_mode == 2 and properties.priority == 5
    assert message["message_id"] != original.message_id
    assert abs(message["message_timestamp"] - time.time() * 1000) < 10_000
    options = message["options"]
    assert options["retries"] == 0 and options["replay_of"] == record_id
    assert not {"attempt_history", "dead_letter", "traceback"} & options.keys()
    assert message["kwargs"]["job"]["job_id"] == original.job_id
    record = archive.get(record_id)
    assert (record.status, record.replay_count, record.replay_message_ids) == (
        "replayed",
        1,
        [message["message_id"]],
    )
    [entry] = archive.audit()
    assert (entry.who, entry.action, entry.record_id, entry.reason) == (
        "alice",
        "replay",
        record_id,
        "provider deployed",
    )


def test_concurrent_replays_publish_each_record_once(settings: Settings, amqp: Any, archive_url: str) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    seeding = DeadLetterArchive(archive_url)
    ids = _store(seeding, settings, count=20)
    seeding.close()
    operators = [
        Replayer(archive=DeadLetterArchive(archive_url), broker_url=settings.broker_url, who=f"op{i}")
        for i in range(3)
    ]
    barrier = threading.Barrier(len(operators))
    reports = []

    def replay(replayer: Replayer) -> None:
        barrier.wait()
        reports.append(replayer.replay(ids))

    threads = [threading.Thread(target=replay, args=(r,)) for r in operators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.published for r in reports) == 20
    messages = _drain(amqp, settings.queue_name)
    assert sorted(m["options"]["replay_of"] for _, m in messages) == sorted(ids)
    for replayer in operators:
        assert all(replayer.archive.get(i).replay_count == 1 for i in ids[:1])
        replayer.archive.close()


def test_an_invalid_edit_sends_nothing(settings: Settings, amqp: Any, archive: DeadLetterArchive) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=3)
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="alice")
    with pytest.raises(InvalidJob, match="priority"):
        replayer.replay(ids, job_patch={"priority": 42})
    with pytest.raises(InvalidJob, match="request"):
        replayer.replay(ids, request_patch=None, job_patch={"request": "not an object"})
    assert queue_depth(amqp, settings.queue_name) == 0
    assert {archive.get(i).status for i in ids} == {"dead"}
    assert archive.audit() == []


def test_an_edit_patches_the_request_and_is_audited(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    [record_id] = _store(archive, settings)
    Replayer(archive=archive, broker_url=settings.broker_url, who="bob").replay(
        [record_id], request_patch={"name": "rg-fixed", "location": "westeurope"}
    )
    [(_, message)] = _drain(amqp, settings.queue_name)
    assert message["kwargs"]["job"]["request"] == {"name": "rg-fixed", "location": "westeurope"}
    [entry] = archive.audit()
    assert entry.action == "replay_edited"
    assert entry.details["request_patch"] == {"name": "rg-fixed", "location": "westeurope"}


def test_the_rate_holds_within_ten_percent(settings: Settings, amqp: Any, archive: DeadLetterArchive) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=21)
    Replayer(archive=archive, broker_url=settings.broker_url, who="alice").replay(ids, rate_per_s=20)
    stamps = sorted(m["message_timestamp"] for _, m in _drain(amqp, settings.queue_name))
    assert len(stamps) == 21
    elapsed_ms = stamps[-1] - stamps[0]
    assert 900 <= elapsed_ms <= 1100, elapsed_ms  # 20 intervals at 20/s = 1000 ms


def test_a_failed_publish_releases_the_claim(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    [record_id] = _store(archive, settings)  # the queue is not declared: the publish is unroutable
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="alice")
    report = replayer.replay([record_id])
    assert (report.failed, archive.get(record_id).status) == (1, "dead")
    _declare(amqp, settings.queue_name, settings.queue_type)
    assert replayer.replay([record_id]).published == 1


def test_a_dry_run_sends_and_changes_nothing(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=2)
    report = Replayer(archive=archive, broker_url=settings.broker_url, who="a").replay(ids, dry_run=True)
    assert [o.status for o in report.outcomes] == ["would_publish", "would_publish"]
    assert queue_depth(amqp, settings.queue_name) == 0
    assert {archive.get(i).status for i in ids} == {"dead"}


def test_a_replayed_job_succeeds_once_its_provider_is_back(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    from provider_jobs.demo import ResourceGroupProvider
    from provider_jobs.providers import ProviderRegistry

    _declare(amqp, settings.queue_name, settings.queue_type)
    [record_id] = _store(archive, settings)
    provider = ResourceGroupProvider()
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", provider)
    with running_worker(settings, registry):
        Replayer(archive=archive, broker_url=settings.broker_url, who="a").replay([record_id])
        wait_for(lambda: "rg-1" in provider.groups, timeout_s=10)


def test_a_replay_larger_than_its_window_goes_in_batches_and_publishes_each_record_once(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=20)
    seen = []
    report = Replayer(archive=archive, broker_url=settings.broker_url, who="a", window=7).replay(
        ids, on_outcome=lambda o: seen.append(o.record_id)
    )
    assert (report.published, seen) == (20, ids)
    messages = _drain(amqp, settings.queue_name)
    assert sorted(m["options"]["replay_of"] for _, m in messages) == sorted(ids)
    assert {archive.get(i).status for i in ids} == {"replayed"}


def test_an_unroutable_record_is_released_while_the_rest_of_its_batch_is_marked_replayed(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:

    _declare(amqp, settings.queue_name, settings.queue_type)
    routed = _store(archive, settings, count=2)
    [lost] = _store(archive, settings.replace(queue_name=f"{settings.queue_name}.nowhere"))
    report = Replayer(archive=archive, broker_url=settings.broker_url, who="a").replay(
        [routed[0], lost, routed[1]]
    )
    assert [o.status for o in report.outcomes] == ["published", "failed", "published"]
    assert "returned" in (report.outcomes[1].detail or "")
    assert [archive.get(i).status for i in (routed[0], lost, routed[1])] == ["replayed", "dead", "replayed"]
    assert len(_drain(amqp, settings.queue_name)) == 2


class _ClaimClock(DeadLetterArchive):
    """An archive that notes when each record was claimed."""

    claimed_at_ms: dict[int, int]

    def claim_many(self, ids: Any, **options: Any) -> Any:
        token, won = super().claim_many(ids, **options)
        for record_id in won:
            self.claimed_at_ms[record_id] = int(time.time() * 1000)
        return token, won


def test_a_paced_replay_holds_no_claim_through_a_pacing_wait(
    settings: Settings, amqp: Any, archive_url: str
) -> None:
    archive = _ClaimClock(archive_url)
    archive.claimed_at_ms = {}
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=3)
    Replayer(archive=archive, broker_url=settings.broker_url, who="alice").replay(ids, rate_per_s=1.5)
    marked_at_ms = {e.record_id: e.at_ms for e in archive.audit() if e.action == "replay"}
    held_ms = [marked_at_ms[i] - archive.claimed_at_ms[i] for i in ids]
    # A claim held through the 667 ms wait between two sends could expire and be taken over.
    assert max(held_ms) < 300, held_ms
    archive.close()


class _MarkFailsOnce(DeadLetterArchive):
    """A SQLite archive locked by another writer during its first attempt at marking replays."""

    marks = 0

    def mark_replayed_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._locked_once(super().mark_replayed_many, *args, **kwargs)

    def mark_replayed(self, *args: Any, **kwargs: Any) -> Any:
        return self._locked_once(super().mark_replayed, *args, **kwargs)

    def _locked_once(self, mark: Any, *args: Any, **kwargs: Any) -> Any:
        self.marks += 1
        if self.marks > 1:
            return mark(*args, **kwargs)
        lock = sqlite3.connect(str(self.url.database), isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            return mark(*args, **kwargs)
        finally:
            lock.execute("ROLLBACK")
            lock.close()


def test_a_replay_whose_first_mark_fails_is_marked_on_a_retry(
    settings: Settings, amqp: Any, tmp_path: Path
) -> None:
    archive = _MarkFailsOnce(f"sqlite:///{tmp_path}/a.sqlite3", busy_timeout_ms=20)
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=2)
    report = Replayer(archive=archive, broker_url=settings.broker_url, who="alice").replay(ids)
    assert report.published == 2
    assert {archive.get(i).status for i in ids} == {"replayed"}
    archive.close()


def test_records_not_sent_because_the_broker_went_away_are_failed_and_released(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, rabbitmq_proc: Any, monkeypatch: Any
) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=2)
    proxy = TcpProxy(("127.0.0.1", rabbitmq_proc.port))
    proxy.start()
    url = settings.broker_url.replace(f":{rabbitmq_proc.port}/", f":{proxy.port}/")
    replayer = Replayer(archive=archive, broker_url=url, who="alice", window=1)
    publish_many = BulkPublisher.publish_many
    calls = []

    def broker_gone_before_the_second_batch(self: BulkPublisher, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            proxy.stop()
        return publish_many(self, *args, **kwargs)

    # The first batch is settled while the second is published: the broker goes away between them.
    monkeypatch.setattr(BulkPublisher, "publish_many", broker_gone_before_the_second_batch)
    try:
        report = replayer.replay(ids)
    finally:
        proxy.stop()
    assert [o.status for o in report.outcomes] == ["published", "failed"]
    assert archive.claim_many(ids[1:])[1] == ids[1:]


def test_replay_sources_hold_what_a_replay_reads_of_each_record(
    settings: Settings, archive: DeadLetterArchive
) -> None:
    [record_id] = _store(archive, settings)
    record = archive.get(record_id)
    assert archive.replay_sources([record_id, record_id + 1000]) == {
        record_id: ReplaySource(
            id=record_id,
            status="dead",
            queue_name=record.queue_name,
            message_id=record.message_id,
            job_id=record.job_id,
            error=record.error,
            body=record.body,
        )
    }


def test_a_record_replayed_twice_keeps_both_message_ids_and_both_audit_entries(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    _declare(amqp, settings.queue_name, settings.queue_type)
    [record_id] = _store(archive, settings)
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="alice")
    first = replayer.replay([record_id]).outcomes[0].message_id
    second = replayer.replay([record_id], force=True).outcomes[0].message_id
    record = archive.get(record_id)
    assert (record.status, record.replay_count, record.replay_message_ids) == ("replayed", 2, [first, second])
    audited = [e.details["message_id"] for e in archive.audit() if e.action == "replay"]
    assert sorted(audited) == sorted([first, second])


def test_replayed_messages_get_distinct_version_4_uuids() -> None:
    prepared = {"queue_name": "q", "kwargs": {}, "options": {}}
    ids = [outgoing(prepared)[0]["message_id"] for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert {uuid.UUID(i).version for i in ids} == {4}


def test_only_an_unpaced_replay_that_asks_holds_the_garbage_collector_off(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    import gc

    _declare(amqp, settings.queue_name, settings.queue_type)
    ids = _store(archive, settings, count=4)
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="a")
    seen: list[bool] = []
    replayer.replay(ids[:1], on_outcome=lambda _: seen.append(gc.isenabled()))
    replayer.replay(
        ids[1:2], rate_per_s=1000, pause_gc=True, on_outcome=lambda _: seen.append(gc.isenabled())
    )
    replayer.replay(ids[2:], pause_gc=True, on_outcome=lambda _: seen.append(gc.isenabled()))
    assert seen == [True, True, False, False]
    assert gc.isenabled()
