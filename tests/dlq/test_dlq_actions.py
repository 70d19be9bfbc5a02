"""replay_records and discard_records: the one path of the CLI, the API and the console."""

from __future__ import annotations

from typing import Any

from test_dlq_replay import _store

from provider_jobs.dlq import DeadLetterArchive, Operations, RecordFilter, discard_records, replay_records
from provider_jobs.settings import Settings

from support import declare_work_queue, queue_depth


def test_a_replay_of_a_filter_is_stored_as_an_operation_naming_the_filter(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 3)
    op_id, report = replay_records(
        archive, broker_url=settings.broker_url, who="carol", record_filter=RecordFilter(statuses=["dead"])
    )
    assert op_id is not None and report.published == 3
    operation = Operations(archive, broker_url="").get(op_id)
    assert (operation.who, operation.selection, operation.counts) == (
        "carol",
        {"statuses": ["dead"]},
        {"sent": 3},
    )
    assert queue_depth(amqp, settings.queue_name) == len(ids)


def test_a_dry_run_sends_nothing_and_stores_no_operation(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 2)
    op_id, report = replay_records(
        archive, broker_url=settings.broker_url, who="carol", ids=ids, dry_run=True
    )
    assert op_id is None
    assert [o.status for o in report.outcomes] == ["would_publish", "would_publish"]
    assert Operations(archive, broker_url="").latest() == []
    assert queue_depth(amqp, settings.queue_name) == 0


def test_a_discard_changes_only_dead_letters_awaiting_action(
    archive: DeadLetterArchive, settings: Settings
) -> None:
    ids = _store(archive, settings, 3)
    assert discard_records(archive, RecordFilter(ids=ids[:1]), who="carol", reason="seen") == ids[:1]
    # The first is discarded already: only the other two change.
    assert discard_records(archive, RecordFilter(ids=ids), who="carol", reason="again") == ids[1:]
    assert discard_records(archive, RecordFilter(ids=ids), who="carol", reason="once more") == []
    assert archive.count(RecordFilter(statuses=["discarded"])) == 3
