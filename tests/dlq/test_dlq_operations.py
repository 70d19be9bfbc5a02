"""Bulk operations stored in the archive: run, paused and resumed, cancelled, and settled
after the process running them stopped halfway."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_dlq_replay import _store

from provider_jobs.dlq import DeadLetterArchive, Replayer
from provider_jobs.dlq.operations import Operations, liveness, runner, this_runner
from provider_jobs.errors import RecordConflict
from provider_jobs.settings import Settings

from support import declare_work_queue, queue_depth


def _replay_of(channel: Any, queue_name: str) -> list[int]:
    """The archive id each message on the queue replays, in queue order (the messages are consumed)."""
    import json

    ids: list[int] = []
    while True:
        method, _, body = channel.basic_get(queue_name, auto_ack=True)
        if method is None:
            return ids
        ids.append(json.loads(body)["options"]["replay_of"])


def test_a_replay_operation_sends_each_record_once_and_accounts_for_each(
    archive: DeadLetterArchive, settings: Settings, amqp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "CHUNK", 7)
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 20)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 20}, reason="provider deployed")
    assert ops.get(op_id).state == "running" and ops.get(op_id).counts == {"pending": 20}
    done = ops.run(op_id)
    assert (done.state, done.total, done.counts) == ("done", 20, {"sent": 20})
    assert sorted(_replay_of(amqp, settings.queue_name)) == sorted(ids)
    records = ops.records(op_id)
    assert [r.record_id for r in records] == ids and all(r.message_id for r in records)
    # Run again, nothing more is sent: the operation is done.
    assert ops.run(op_id).counts == {"sent": 20}
    assert queue_depth(amqp, settings.queue_name) == 0


def test_a_paused_operation_stops_after_its_chunk_and_resumes_where_it_stopped(
    archive: DeadLetterArchive, settings: Settings, amqp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "CHUNK", 5)
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 12)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 12})

    def pause_once(_: object) -> None:
        if ops.get(op_id).state == "running":
            ops.pause(op_id)

    paused = ops.run(op_id, on_outcome=pause_once)
    assert (paused.state, paused.counts) == ("paused", {"sent": 5, "pending": 7})
    with pytest.raises(RecordConflict, match="paused: it cannot be paused"):
        ops.pause(op_id)
    done = ops.resume(op_id)
    assert (done.state, done.counts) == ("done", {"sent": 12})
    assert sorted(_replay_of(amqp, settings.queue_name)) == sorted(ids)
    with pytest.raises(RecordConflict, match="is done: it cannot be resumed"):
        ops.resume(op_id)


def test_a_cancelled_operation_sends_nothing_more(
    archive: DeadLetterArchive, settings: Settings, amqp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "CHUNK", 4)
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 10)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 10})
    ops.cancel(op_id)
    stopped = ops.run(op_id)
    assert (stopped.state, stopped.counts) == ("cancelled", {"pending": 10})
    assert stopped.finished_ms is not None
    with pytest.raises(RecordConflict, match="cancelled: it cannot be resumed"):
        ops.resume(op_id)
    assert queue_depth(amqp, settings.queue_name) == 0


def test_a_resumed_operation_sends_only_what_its_stopped_runner_never_claimed(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    """The runner died with a chunk of ten handed over: five replayed and marked, two claimed
    (maybe published), three not reached. A resume sends the three, never the seven."""
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 12)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 12})
    archive.begin_sending(op_id, list(range(10)))
    Replayer(archive=archive, broker_url=settings.broker_url, who="carol").replay(ids[:5])
    archive.claim_many(ids[5:7])
    archive.set_operation_state(op_id, "running", runner="elsewhere:1")  # a runner long gone
    with archive._write("ageing the heartbeat") as conn:
        conn.execute(archive.tables.operations.update().values(heartbeat_ms=0))
    done = ops.resume(op_id)
    assert (done.state, done.counts) == ("done", {"sent": 10, "uncertain": 2})
    uncertain = ops.records(op_id, states=["uncertain"])
    assert [r.record_id for r in uncertain] == ids[5:7]
    assert all("may have been published" in (r.detail or "") for r in uncertain)
    sent_ids = [r.record_id for r in ops.records(op_id, states=["sent"])]
    assert sent_ids == ids[:5] + ids[7:]
    assert sorted(_replay_of(amqp, settings.queue_name)) == sorted(sent_ids)


def test_a_running_operation_of_a_live_process_cannot_be_resumed(
    archive: DeadLetterArchive, settings: Settings
) -> None:
    ids = _store(archive, settings, 2)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 2})
    with pytest.raises(RecordConflict, match=r"is running in .*: it cannot be resumed"):
        ops.resume(op_id)


def test_a_discard_operation_discards_only_dead_letters_awaiting_action(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 4)
    Replayer(archive=archive, broker_url=settings.broker_url, who="carol").replay(ids[:1])
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_discard(ids, who="carol", selection={"ids": 4}, reason="outage over")
    done = ops.run(op_id)
    assert (done.state, done.counts) == ("done", {"discarded": 3, "skipped": 1})
    [skipped] = ops.records(op_id, states=["skipped"])
    assert skipped.record_id == ids[0] and "awaiting action" in (skipped.detail or "")
    assert [e.action for e in archive.audit()].count("discard") == 3


def test_of_two_processes_taking_over_an_interrupted_operation_one_does(
    archive: DeadLetterArchive, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _store(archive, settings, 2)
    first, second = (Operations(archive, broker_url=settings.broker_url) for _ in range(2))
    op_id = first.start_replay(ids, who="carol", selection={"ids": 2})
    archive.set_operation_state(op_id, "running", runner="elsewhere:1")
    with archive._write("ageing the heartbeat") as conn:
        conn.execute(archive.tables.operations.update().values(heartbeat_ms=0))
    seen = first.get(op_id)
    first.take_over(op_id)
    # The second had read the operation as interrupted too; its take-over finds it changed.
    monkeypatch.setattr(second, "get", lambda _: seen)
    with pytest.raises(RecordConflict, match="changed meanwhile"):
        second.take_over(op_id)
    assert first.get(op_id).runner == this_runner()


def test_a_runner_says_it_is_alive_through_a_long_chunk(
    archive: DeadLetterArchive, settings: Settings, amqp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(liveness, "_BEAT_S", 0.02)
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 4)
    ops = Operations(archive, broker_url=settings.broker_url)
    # Paced at 10 a second: one chunk of four records that lasts about 0.3 s.
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 4}, rate_per_s=10)
    before = ops.get(op_id).heartbeat_ms
    running = threading.Thread(target=ops.run, args=(op_id,))
    running.start()
    beats = set()
    while running.is_alive():
        beats.add(archive.operation(op_id).heartbeat_ms)  # type: ignore[union-attr]
        time.sleep(0.01)
    running.join()
    assert ops.get(op_id).counts == {"sent": 4}
    # Between chunks the runner says so twice at most: the rest are beats during the chunk.
    assert len(beats - {before}) >= 5, "the heartbeat moved while the chunk was sent"
