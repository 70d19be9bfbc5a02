"""Archiver throughput: dead letters per second from an XQ into SQLite, acked after commit.

Fills ``bench.archiver.XQ`` on the machine's RabbitMQ with N enriched dead
letters (shaped like ClassifiedRetries' ones, traceback included), drains it
with DeadLetterArchiver into a fresh SQLite file, then does the same with a
baseline: raw pika consume + one sqlite3 ``executemany`` per batch + ``basic_ack(multiple=True)``.

    python benchmarks/archiver_drain.py [--messages 20000] [--batch 200] [--broker amqp://...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import pika
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL

from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver

QUEUE = "bench.archiver"
XQ = f"{QUEUE}.XQ"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "x.py", line 1, in run\n    f()\n' * 12
    + ("provider_jobs.errors.ProviderNotFound: No provider found for ITL.Core/ResourceGroup\n")
)


def body(i: int) -> bytes:
    job_id = uuid.uuid4().hex
    history = [
        {
            "attempt": a,
            "category": "provider_not_found",
            "retryable": True,
            "error_type": "ProviderNotFound",
            "error": "No provider found for ITL.Core/ResourceGroup",
            "at_ms": 1_800_000_000_000 + a,
            "worker_id": "bench-1",
            "delay_ms": 5000,
            "redelivered": False,
        }
        for a in (1, 2, 3)
    ]
    return json.dumps(
        {
            "queue_name": QUEUE,
            "actor_name": "create_resource",
            "args": [],
            "kwargs": {
                "job": {
                    "job_id": job_id,
                    "provider_namespace": "ITL.Core",
                    "resource_type": "ResourceGroup",
                    "operation": "create",
                    "request": {"name": f"rg-{i}", "location": "westeurope"},
                    "priority": 5,
                    "submitted_at": "2027-01-01T00:00:00Z",
                    "correlation_id": None,
                }
            },
            "options": {
                "broker_priority": 5,
                "job_id": job_id,
                "provider": "ITL.Core/ResourceGroup",
                "operation": "create",
                "retries": 3,
                "traceback": TRACEBACK,
                "attempt_history": history,
                "dead_letter": {
                    "reason": "exhausted",
                    "category": "provider_not_found",
                    "retryable": True,
                    "error_type": "ProviderNotFound",
                    "error": "No provider found for ITL.Core/ResourceGroup",
                    "traceback": TRACEBACK,
                    "attempts": 3,
                    "max_retries": 2,
                    "worker_id": "bench-1",
                    "queue_name": QUEUE,
                    "dead_lettered_at_ms": 1_800_000_000_000,
                },
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": 1_800_000_000_000,
        }
    ).encode()


def fill(url: str, count: int) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(XQ, durable=True, arguments={"x-message-ttl": DEAD_MESSAGE_TTL})
    channel.queue_purge(XQ)
    channel.confirm_delivery()
    size = 0
    for i in range(count):
        data = body(i)
        size += len(data)
        channel.basic_publish(
            "",
            XQ,
            data,
            pika.BasicProperties(delivery_mode=2, headers={"x-provider-jobs-dead-letter": "exhausted"}),
        )
    connection.close()
    return size // count


def baseline(url: str, path: Path, count: int, batch: int) -> float:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB)")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=batch * 2)
    pending: list[tuple[int, bytes]] = []
    done = 0
    started = time.perf_counter()

    def on_message(ch: object, method: pika.spec.Basic.Deliver, props: object, data: bytes) -> None:
        pending.append((method.delivery_tag, data))

    channel.basic_consume(XQ, on_message)
    while done < count:
        connection.process_data_events(time_limit=0.05)
        if pending:
            rows = [(str(uuid.uuid4()), data) for _, data in pending]
            with db:
                db.executemany("INSERT OR IGNORE INTO t (key, body) VALUES (?, ?)", rows)
            channel.basic_ack(pending[-1][0], multiple=True)
            done += len(pending)
            pending.clear()
    elapsed = time.perf_counter() - started
    connection.close()
    db.close()
    return count / elapsed


def archiver(url: str, path: Path, count: int, batch: int) -> float:
    archive = DeadLetterArchive(f"sqlite:///{path}")
    archive.check()
    worker = DeadLetterArchiver(
        archive=archive, broker_url=url, queues=[QUEUE], batch_size=batch, flush_ms=50
    )
    started = time.perf_counter()
    stats = worker.run(until_idle=True)
    elapsed = time.perf_counter() - started
    assert stats.archived == count == archive.count(), (stats, archive.count())
    archive.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        size = fill(args.broker, args.messages)
        print(f"{args.messages} dead letters of ~{size} bytes, batches of {args.batch}")
        rate = archiver(args.broker, Path(tmp) / "archive.sqlite3", args.messages, args.batch)
        print(f"DeadLetterArchiver -> SQLite (WAL), acked after commit: {rate:8.0f} msg/s")
        fill(args.broker, args.messages)
        rate = baseline(args.broker, Path(tmp) / "baseline.sqlite3", args.messages, args.batch)
        print(f"baseline: pika consume + sqlite3 executemany + ack:      {rate:8.0f} msg/s")
    connection = pika.BlockingConnection(pika.URLParameters(args.broker))
    connection.channel().queue_delete(XQ)
    connection.close()


if __name__ == "__main__":
    main()
