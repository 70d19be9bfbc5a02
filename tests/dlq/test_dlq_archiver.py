from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dlq_support import (
    TcpProxy,
    archiver_thread,
    dead_letters_from_worker,
    declare_xq,
    dramatiq_body,
    job,
    publish,
)
from dramatiq.common import xq_name

from provider_jobs.demo import ResourceGroupProvider
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver, RecordFilter, dead_letter_from_delivery
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

HERE = Path(__file__).parent


def _archiver(settings: Settings, archive: DeadLetterArchive, **options: Any) -> DeadLetterArchiver:
    options = {"batch_size": 50, "flush_ms": 20, "max_backoff_s": 0.2, **options}
    return DeadLetterArchiver(
        archive=archive, broker_url=settings.broker_url, queues=[settings.queue_name], **options
    )


def test_every_kind_of_dead_letter_is_archived(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", ResourceGroupProvider())
    dead_letters_from_worker(
        settings,
        registry,
        [
            job(request={}),  # validation: enriched, non_retryable
            job(namespace="ITL.Gone", resource_type="Thing"),  # provider_not_found: enriched, exhausted
        ],
        amqp,
    )
    queue = settings.queue_name
    # Plain Dramatiq dead letters, moved by RabbitMQ with x-death: an unknown actor and an expired message.
    unknown = json.loads(dramatiq_body(queue))
    unknown["actor_name"] = "no_such_actor"
    expired = json.loads(dramatiq_body(queue, options={"max_age": 10}))
    expired["message_timestamp"] -= 60_000
    from dlq_support import running_worker

    with running_worker(settings, registry):
        publish(amqp, queue, json.dumps(unknown).encode())
        publish(amqp, queue, json.dumps(expired).encode())
        wait_for(lambda: queue_depth(amqp, xq_name(queue)) >= 4, timeout_s=20)
    raw = b"\x89PNG\r\n\x1a\n not a message"
    publish(amqp, xq_name(queue), raw)
    publish(amqp, xq_name(queue), b'{"some": "json"}')

    with archiver_thread(_archiver(settings, archive)):
        wait_for(lambda: archive.count() >= 6, timeout_s=20)
    records = {r.category: r for r in archive.find(limit=100)}
    assert sorted(records) == ["age_limit", "provider_not_found", "rejected", "undecodable", "validation"]
    assert records["validation"].reason == "non_retryable"
    assert records["provider_not_found"].reason == "exhausted"
    assert len(records["provider_not_found"].attempt_history) == settings.max_attempts
    assert records["rejected"].x_death and records["rejected"].actor_name == "no_such_actor"
    assert records["age_limit"].reason == "age_limit"
    assert raw in {r.body for r in archive.find(RecordFilter(category="undecodable"))}
    assert archive.count() == 6
    assert queue_depth(amqp, xq_name(queue)) == 0


@pytest.mark.fault
def test_an_archiver_killed_between_commit_and_ack_loses_and_duplicates_nothing(
    settings: Settings, amqp: Any, archive_url: str, tmp_path: Path
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    ids = [str(uuid.uuid4()) for _ in range(30)]
    for message_id in ids:
        publish(amqp, xq, dramatiq_body(settings.queue_name, message_id=message_id))
    marker = tmp_path / "committed"
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "archiver_child.py"),
            settings.broker_url,
            settings.queue_name,
            archive_url,
            str(marker),
            "10",
        ],
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    try:
        wait_for(marker.exists, timeout_s=20)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    committed = int(marker.read_text())
    assert 10 <= committed < 30
    archive = DeadLetterArchive(archive_url)
    assert archive.count() == committed  # committed, never acked
    wait_for(lambda: queue_depth(amqp, xq) == 30, timeout_s=10)  # RabbitMQ requeued all of them

    archiver = _archiver(settings, archive)
    stats = archiver.run(until_idle=True)
    assert (stats.archived, stats.duplicates) == (30 - committed, committed)
    assert sorted(r.message_id for r in archive.find(limit=100)) == sorted(ids)
    assert queue_depth(amqp, xq) == 0
    archive.close()


@pytest.mark.fault
def test_nothing_is_lost_while_the_archive_is_down(
    settings: Settings, amqp: Any, archive_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    proxy: TcpProxy | None = None
    lock: sqlite3.Connection | None = None
    if archive_url.startswith("sqlite"):
        archive = DeadLetterArchive(archive_url, busy_timeout_ms=20)
        archive.check()

        def outage() -> None:
            nonlocal lock
            lock = sqlite3.connect(archive_url.removeprefix("sqlite:///"), isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")

        def recovery() -> None:
            assert lock is not None
            lock.execute("ROLLBACK")
            lock.close()
    else:
        proxy = TcpProxy(("127.0.0.1", 5432))
        proxy.start()
        archive = DeadLetterArchive(archive_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
        archive.check()
        outage, recovery = proxy.stop, proxy.start

    with archiver_thread(_archiver(settings, archive)) as archiver:
        publish(amqp, xq, dramatiq_body(settings.queue_name))
        wait_for(lambda: archiver.stats.archived == 1)
        outage()
        for _ in range(20):
            publish(amqp, xq, dramatiq_body(settings.queue_name))
        wait_for(lambda: archiver.stats.archive_failures >= 3, timeout_s=20)
        # Held unacked in RabbitMQ, not acked and lost.
        assert archiver.stats.archived == 1
        recovery()
        wait_for(lambda: archiver.stats.archived == 21, timeout_s=20)
    assert archive.count() == 21
    assert queue_depth(amqp, xq) == 0
    assert any(
        "keeping" in r.getMessage() and "unacked in RabbitMQ" in r.getMessage() for r in caplog.records
    )
    archive.close()
    if proxy is not None:
        proxy.stop()


@pytest.mark.fault
def test_the_archiver_survives_a_broker_restart(
    settings: Settings, rabbitmq_proc: Any, tmp_path: Path
) -> None:
    import pika

    archive = DeadLetterArchive(f"sqlite:///{tmp_path}/a.sqlite3")

    def publish_some(count: int) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
        channel = connection.channel()
        xq = declare_xq(channel, settings.queue_name)
        for _ in range(count):
            publish(channel, xq, dramatiq_body(settings.queue_name))
        connection.close()

    with archiver_thread(_archiver(settings, archive)) as archiver:
        publish_some(3)
        wait_for(lambda: archive.count() == 3, timeout_s=20)
        rabbitmq_proc.stop()
        rabbitmq_proc.start()
        publish_some(3)
        wait_for(lambda: archive.count() == 6, timeout_s=30)
        assert archiver.stats.reconnects >= 1
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    connection.channel().queue_delete(xq_name(settings.queue_name))
    connection.close()
    archive.close()


def test_the_archiver_stops_promptly_and_acks_what_it_committed(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    for _ in range(5):
        publish(amqp, xq, dramatiq_body(settings.queue_name))
    started = time.monotonic()
    stats = _archiver(settings, archive).run(until_idle=True)
    assert stats.archived == 5 and time.monotonic() - started < 5
    assert queue_depth(amqp, xq) == 0


class _ArchiveDownUntilStopped(DeadLetterArchive):
    """A SQLite archive locked by another writer for its first two stores; the second stops the archiver.

    The first failed store publishes ``later`` to the XQ, so that a second batch
    is in hand when the first is given up, and is stored once the lock is gone.
    """

    def __init__(self, url: str, *, publish_later: Any) -> None:
        super().__init__(url, busy_timeout_ms=20)
        self.publish_later = publish_later
        self.stop: Any = None
        self.stores = 0
        self._lock: sqlite3.Connection | None = None

    def store(self, records: Any) -> list[str]:
        self.stores += 1
        if self.stores == 1:
            self._lock = sqlite3.connect(str(self.url.database), isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")
            self.publish_later()
        elif self.stores == 2:
            self.stop()
        try:
            return super().store(records)
        finally:
            if self.stores == 2 and self._lock is not None:
                self._lock.execute("ROLLBACK")
                self._lock.close()


def test_a_batch_given_up_on_stop_is_not_acked_by_a_later_batch(
    settings: Settings, amqp: Any, tmp_path: Path
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    first = [str(uuid.uuid4()) for _ in range(3)]
    for message_id in first:
        publish(amqp, xq, dramatiq_body(settings.queue_name, message_id=message_id))

    def publish_later() -> None:
        for _ in range(2):
            publish(amqp, xq, dramatiq_body(settings.queue_name))

    archive = _ArchiveDownUntilStopped(f"sqlite:///{tmp_path}/a.sqlite3", publish_later=publish_later)
    archive.check()
    archiver = _archiver(settings, archive, max_backoff_s=0.05)
    archive.stop = archiver.stop
    stats = archiver.run()
    assert stats.archived == 2
    assert not {r.message_id for r in archive.find(limit=10)} & set(first)
    # The first batch, never stored, is back in the XQ rather than acked along with the second.
    wait_for(lambda: queue_depth(amqp, xq) == 3, timeout_s=10)
    archive.close()


def test_a_dead_letter_with_a_nul_byte_in_its_error_is_archived_with_the_nul_escaped(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    dead_letter = {"category": "unknown", "reason": "exhausted", "error": "bad\x00byte"}
    publish(amqp, xq, dramatiq_body(settings.queue_name, options={"dead_letter": dead_letter}))
    with archiver_thread(_archiver(settings, archive)):
        wait_for(lambda: archive.count() == 1, timeout_s=10)
    [record] = archive.find()
    assert record.error == "bad\\x00byte"
    assert b"bad\\u0000byte" in record.body


def test_a_dead_letter_the_archive_refuses_is_quarantined_and_the_rest_are_archived(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    if archive.is_sqlite:
        pytest.skip("SQLite stores any 64-bit priority; PostgreSQL refuses one out of its integer column")
    xq = declare_xq(amqp, settings.queue_name)
    bad = dramatiq_body(settings.queue_name, priority=2**40)
    publish(amqp, xq, dramatiq_body(settings.queue_name))
    publish(amqp, xq, bad)
    publish(amqp, xq, dramatiq_body(settings.queue_name))
    with archiver_thread(_archiver(settings, archive)) as archiver:
        wait_for(lambda: archive.count() == 3, timeout_s=10)
        assert archiver.stats.quarantined == 1
    [refused] = archive.find(RecordFilter(category="unarchivable"))
    assert refused.body == bad and "out of range" in refused.error
    assert archive.count(RecordFilter(category="unarchivable")) == 1
    wait_for(lambda: queue_depth(amqp, xq) == 0)


def test_a_retried_message_later_nacked_is_archived_with_its_most_recent_death(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    queue = settings.queue_name
    xq = declare_xq(amqp, queue)
    amqp.queue_declare(
        queue, durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq}
    )
    retry_queue = f"{queue}.retry.20"
    amqp.queue_declare(
        retry_queue,
        durable=True,
        arguments={"x-message-ttl": 20, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue},
    )
    try:
        publish(amqp, retry_queue, dramatiq_body(queue))
        wait_for(lambda: queue_depth(amqp, queue) == 1)
        method, _, _ = amqp.basic_get(queue)
        amqp.basic_nack(method.delivery_tag, requeue=False)
        wait_for(lambda: queue_depth(amqp, xq) == 1)
        _archiver(settings, archive).run(until_idle=True)
    finally:
        amqp.queue_delete(retry_queue)
    [record] = archive.find()
    assert record.x_death is not None
    assert [d["reason"] for d in record.x_death] == ["rejected", "expired"]
    assert record.reason == "rejected"


def test_two_identical_raw_bodies_are_archived_as_two_records(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    publish(amqp, xq, b"not a message")
    publish(amqp, xq, b"not a message")
    stats = _archiver(settings, archive).run(until_idle=True)
    assert (stats.archived, stats.duplicates) == (2, 0)
    assert [r.body for r in archive.find()] == [b"not a message", b"not a message"]


def test_raw_bodies_redelivered_after_their_commit_are_not_archived_twice(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    import pika.exceptions

    xq = declare_xq(amqp, settings.queue_name)
    publish(amqp, xq, b"not a message")
    publish(amqp, xq, b"not a message")
    commits: list[int] = []

    def lose_the_connection_once(records: Any) -> None:
        commits.append(len(records))
        if len(commits) == 1:
            raise pika.exceptions.AMQPConnectionError("lost between commit and ack")

    stats = _archiver(settings, archive, after_commit=lose_the_connection_once).run(until_idle=True)
    assert (stats.reconnects, stats.duplicates) == (1, 2)
    assert archive.count() == 2


def test_a_body_nested_100k_levels_deep_is_archived_as_undecodable_and_the_archiver_goes_on(
    settings: Settings, amqp: Any, archive: DeadLetterArchive
) -> None:
    xq = declare_xq(amqp, settings.queue_name)
    deep = b"[" * 100_000 + b"]" * 100_000
    publish(amqp, xq, deep)
    publish(amqp, xq, dramatiq_body(settings.queue_name))
    with archiver_thread(_archiver(settings, archive)):
        wait_for(lambda: archive.count() == 2, timeout_s=10)
    [record] = archive.find(RecordFilter(category="undecodable"))
    assert (record.body, record.error) == (deep, "body is JSON nested too deeply to read")


def test_a_delivery_that_fails_to_be_read_is_quarantined_raw_and_the_archiver_goes_on(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provider_jobs.dlq.archiver import batch_store

    read = batch_store.dead_letter_from_delivery

    def read_or_fail(body: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"poison" in body:  # stands for any bug in reading a delivery
            raise RuntimeError("a bug in reading")
        return read(body, *args, **kwargs)

    monkeypatch.setattr(batch_store, "dead_letter_from_delivery", read_or_fail)
    xq = declare_xq(amqp, settings.queue_name)
    publish(amqp, xq, dramatiq_body(settings.queue_name, request={"name": "poison"}))
    publish(amqp, xq, dramatiq_body(settings.queue_name))
    with archiver_thread(_archiver(settings, archive)):
        wait_for(lambda: archive.count() == 2, timeout_s=10)
    [record] = archive.find(RecordFilter(category="unarchivable"))
    assert b"poison" in record.body
    assert record.error == "could not read the dead letter: RuntimeError: a bug in reading"
    assert queue_depth(amqp, xq) == 0


def test_a_record_the_database_driver_refuses_outright_is_quarantined(archive: DeadLetterArchive) -> None:
    from provider_jobs.dlq.archiver.batch_store import ArchiverStats, BatchStore

    good = dead_letter_from_delivery(dramatiq_body("provider.jobs"), None, source_queue="provider.jobs.XQ")
    # A lone surrogate, which no driver can encode (the reader escapes it; a bug might not).
    bad = dataclasses.replace(
        dead_letter_from_delivery(dramatiq_body("provider.jobs"), None, source_queue="provider.jobs.XQ"),
        job_id="\ud800",
    )
    stats = ArchiverStats()
    keys = BatchStore(archive=archive, stats=stats).store([good, bad])
    assert sorted(keys) == sorted([good.dedupe_key, bad.dedupe_key])
    assert stats.quarantined == 1
    [quarantined] = archive.find(RecordFilter(category="unarchivable"))
    assert quarantined.job_id == "\\ud800" and "UnicodeEncodeError" in quarantined.error


def test_an_empty_x_death_is_sql_null_on_the_batch_insert_and_its_row_by_row_fallback(
    archive: DeadLetterArchive,
) -> None:
    def record() -> Any:
        return dead_letter_from_delivery(
            dramatiq_body("provider.jobs"), None, source_queue="provider.jobs.XQ"
        )

    batch = record()
    assert batch.x_death is None
    archive.store([batch])
    fallback = record()
    archive.store([batch, fallback])  # holds an archived record: stored again row by row
    with archive._engine_ready().connect() as conn:
        rows = conn.exec_driver_sql("SELECT dedupe_key, x_death IS NULL FROM dead_letters").all()
    assert sorted(rows) == sorted([(batch.dedupe_key, True), (fallback.dedupe_key, True)])
