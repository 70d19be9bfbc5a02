"""Workload 6: confirmed bulk submit and replay vs pika with one confirm in flight.

Baseline: a pika ``BlockingChannel`` with ``confirm_delivery`` publishing N
Dramatiq-shaped messages (persistent, mandatory, with priority) in a loop,
each publish waiting for its confirm. Variants, into the same kind of queue:

- ``submit_many``: ``JobQueue.submit_many`` of N job dicts (validation and
  message building included);
- ``replay``: ``Replayer.replay`` of N archived dead letters in a fresh SQLite
  archive (claim, publish, mark replayed and audit included; storing the
  records is not timed).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

from provider_jobs.compat import JobQueue
from provider_jobs.dlq import DEAD, DeadLetterArchive, Replayer, ReplayMark, dead_letter_from_delivery
from provider_jobs.ids import new_uuid4
from provider_jobs.settings import Settings

from .harness import Result, Variant, interleave

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE = "bench.bulk"


def _job(i: int) -> dict[str, Any]:
    return {
        "provider_namespace": "ITL.Core",
        "resource_type": "ResourceGroup",
        "operation": "create",
        "request": {"name": f"rg-{i}", "location": "westeurope"},
        "priority": 5,
    }


def _body(i: int, queue: str) -> bytes:
    job_id = uuid.uuid4().hex
    return json.dumps(
        {
            "queue_name": queue,
            "actor_name": "create_resource",
            "args": [],
            "kwargs": {"job": {**_job(i), "job_id": job_id, "submitted_at": "2027-01-01T00:00:00Z"}},
            "options": {
                "broker_priority": 5,
                "job_id": job_id,
                "provider": "ITL.Core/ResourceGroup",
                "operation": "create",
                "retries": 3,
                "traceback": "Traceback ...",
                "attempt_history": [{"attempt": 3, "category": "provider_not_found"}],
                "dead_letter": {"reason": "exhausted", "category": "provider_not_found", "attempts": 3},
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        },
        separators=(",", ":"),
    ).encode()


def _channel() -> Any:
    return pika.BlockingConnection(pika.URLParameters(URL)).channel()


def _declare(channel: Any, queue: str) -> None:
    # workload() has the JobQueue's broker declare it, as a worker would.
    channel.queue_purge(queue)


def one_confirm_in_flight(n: int, queue: str) -> float:
    """Messages per second: pika, ``confirm_delivery``, ``basic_publish`` in a loop."""
    channel = _channel()
    _declare(channel, queue)
    bodies = [_body(i, queue) for i in range(n)]
    channel.confirm_delivery()
    started = time.perf_counter()
    for body in bodies:
        channel.basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=2, priority=5), mandatory=True
        )
    rate = n / (time.perf_counter() - started)
    channel.queue_purge(queue)
    channel.connection.close()
    return rate


def all_confirms_in_flight(n: int, queue: str, *, alongside: Callable[[], None] | None = None) -> float:
    """Messages per second: raw pika ``SelectConnection`` publishing all ``n`` at once in confirm
    mode, timed until the last confirm. The most any pika client gets from this RabbitMQ: the
    ceiling that shows whether a ratio is reachable at all.

    ``alongside`` runs on a thread of its own from the first publish on, and the
    time runs until both are done."""
    channel = _channel()
    _declare(channel, queue)
    channel.connection.close()
    bodies = [_body(i, queue) for i in range(n)]
    properties = pika.BasicProperties(delivery_mode=2, priority=5)
    confirmed = 0
    times: list[float] = []

    def on_confirm(frame: Any) -> None:
        nonlocal confirmed
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            raise RuntimeError("RabbitMQ nacked a message")
        confirmed = method.delivery_tag if method.multiple else confirmed + 1
        if confirmed >= n:
            times.append(time.perf_counter())
            connection.close()

    def on_channel(ch: Any) -> None:
        ch.confirm_delivery(on_confirm)
        times.append(time.perf_counter())
        if helper is not None:
            helper.start()
        for body in bodies:
            ch.basic_publish("", queue, body, properties, mandatory=True)

    helper_done: list[float] = []

    def run_alongside() -> None:
        assert alongside is not None
        alongside()
        helper_done.append(time.perf_counter())

    helper = None if alongside is None else threading.Thread(target=run_alongside)
    connection = pika.SelectConnection(
        pika.URLParameters(URL), on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel)
    )
    connection.ioloop.call_later(300, connection.ioloop.stop)
    connection.add_on_close_callback(lambda *_: connection.ioloop.stop())
    connection.ioloop.start()
    if helper is not None:
        helper.join()
        times[1] = max(times[1], helper_done[0])
    if confirmed < n:
        raise RuntimeError(f"only {confirmed} of {n} confirmed")
    channel = _channel()
    channel.queue_purge(queue)
    channel.connection.close()
    return n / (times[1] - times[0])


def submit_many(n: int, queue: str, job_queue: JobQueue, *, pause_gc: bool = False) -> float:
    """Jobs per second through ``JobQueue.submit_many`` (the collector held off with ``pause_gc``)."""
    channel = _channel()
    _declare(channel, queue)
    jobs = [_job(i) for i in range(n)]
    started = time.perf_counter()
    ids = job_queue.submit_many(jobs, pause_gc=pause_gc)
    rate = n / (time.perf_counter() - started)
    assert len(ids) == n
    channel.queue_purge(queue)
    channel.connection.close()
    return rate


def replay(n: int, queue: str, *, pause_gc: bool = False) -> float:
    """Records per second through ``Replayer.replay`` from a fresh SQLite archive (the collector
    held off with ``pause_gc``, as ``provider-jobs dlq replay`` does)."""
    channel = _channel()
    _declare(channel, queue)
    with tempfile.TemporaryDirectory() as tmp:
        archive, ids = _archive_of(n, queue, tmp)
        replayer = Replayer(archive=archive, broker_url=URL, who="bench")
        started = time.perf_counter()
        report = replayer.replay(ids, pause_gc=pause_gc)
        rate = n / (time.perf_counter() - started)
        archive.close()
    assert report.published == n, (report.published, report.failed)
    channel.queue_purge(queue)
    channel.connection.close()
    return rate


def _archive_of(n: int, queue: str, tmp: str) -> tuple[DeadLetterArchive, list[int]]:
    """A fresh SQLite archive holding ``n`` dead letters of ``queue``, and their ids."""
    archive = DeadLetterArchive(f"sqlite:///{Path(tmp)}/archive.sqlite3")
    archive.store(
        [dead_letter_from_delivery(_body(i, queue), {}, source_queue=f"{queue}.XQ") for i in range(n)]
    )
    return archive, [r.id for r in archive.find(limit=n, oldest_first=True) if r.id is not None]


def ceiling_with_claims_and_marks(n: int, queue: str) -> float:
    """The ceiling publish with, alongside it on a thread, the claims and marks a replay of ``n``
    records must make (Replayer's batches of 1,000): the most a replay could reach with no
    reading, planning or message building at all; msg/s."""
    with tempfile.TemporaryDirectory() as tmp:
        archive, ids = _archive_of(n, queue, tmp)
        window = Replayer(archive=archive, broker_url=URL, who="bench").window

        def claim_and_mark() -> None:
            for first in range(0, len(ids), window):
                token, won = archive.claim_many(ids[first : first + window], allow_statuses=(DEAD,))
                marks = [ReplayMark(record_id=i, message_id=new_uuid4()) for i in won]
                assert archive.mark_replayed_many(marks, token, who="bench") == []

        rate = all_confirms_in_flight(n, queue, alongside=claim_and_mark)
        archive.close()
    return rate


def workload(rounds: int, n: int) -> list[Result]:
    """Bulk submit and bulk replay, each interleaved with the one-confirm baseline."""
    queue = f"{QUEUE}.{uuid.uuid4().hex[:8]}"
    job_queue = JobQueue(settings=Settings(broker_url=URL, queue_name=queue))
    job_queue.broker.declare_queue(queue, ensure=True)
    try:
        results = [
            interleave(
                f"6 confirmed bulk submit of {n:,} jobs",
                [
                    Variant("pika, one confirm in flight", lambda: one_confirm_in_flight(n, queue)),
                    Variant("JobQueue.submit_many", lambda: submit_many(n, queue, job_queue)),
                    Variant(
                        "JobQueue.submit_many(pause_gc=True)",
                        lambda: submit_many(n, queue, job_queue, pause_gc=True),
                    ),
                    Variant("ceiling: raw pika, all in flight", lambda: all_confirms_in_flight(n, queue)),
                ],
                rounds=rounds,
                unit="msg/s",
                target=">= 10x",
            ),
            interleave(
                f"6 replay of {n:,} archived records (SQLite)",
                [
                    Variant("pika, one confirm in flight", lambda: one_confirm_in_flight(n, queue)),
                    Variant("Replayer.replay", lambda: replay(n, queue)),
                    Variant(
                        "Replayer.replay(pause_gc=True), as dlq replay",
                        lambda: replay(n, queue, pause_gc=True),
                    ),
                    Variant("ceiling: raw pika, all in flight", lambda: all_confirms_in_flight(n, queue)),
                    Variant(
                        "floor: the ceiling + the replay's claims and marks alongside",
                        lambda: ceiling_with_claims_and_marks(n, queue),
                    ),
                ],
                rounds=rounds,
                unit="msg/s",
                target=">= 10x",
            ),
        ]
    finally:
        job_queue.close()
        channel = _channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        channel.connection.close()
    return results
