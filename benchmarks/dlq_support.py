"""Shared pieces of the DLQ workloads (4, 5, 7): dead-letter bodies, XQ filling, throwaway archives."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import psycopg
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The machine's PostgreSQL (trust auth); each run gets a schema of its own.
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DATABASES = ("sqlite", "postgresql")

TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "x.py", line 1, in run\n    f()\n' * 12
    + "provider_jobs.errors.ProviderNotFound: No provider found for ITL.Core/ResourceGroup\n"
)


def enriched_body(queue: str, i: int) -> bytes:
    """A dead letter shaped like ClassifiedRetries' (three attempts, traceback twice), ~3 KB."""
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
            "queue_name": queue,
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
                    "queue_name": queue,
                    "dead_lettered_at_ms": 1_800_000_000_000,
                },
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": 1_800_000_000_000,
        }
    ).encode()


def channel() -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    return connection, connection.channel()


def depth(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def wait_depth(queue: str, count: int, *, timeout_s: float = 120.0, interval_s: float = 0.005) -> None:
    """Block until ``queue`` holds ``count`` ready messages."""
    connection, ch = channel()
    deadline = time.monotonic() + timeout_s
    try:
        while depth(ch, queue) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue} holds {depth(ch, queue)} of {count} after {timeout_s} s")
            time.sleep(interval_s)
    finally:
        connection.close()


def fill_xq(xq: str, bodies: list[bytes]) -> None:
    """Empty ``xq`` (as Dramatiq declares it), publish ``bodies``, wait until all are queued."""
    connection, ch = channel()
    ch.queue_declare(xq, durable=True, arguments={"x-message-ttl": DEAD_MESSAGE_TTL})
    ch.queue_purge(xq)
    properties = pika.BasicProperties(delivery_mode=2, headers={"x-provider-jobs-dead-letter": "exhausted"})
    for data in bodies:
        ch.basic_publish("", xq, data, properties)
    connection.close()
    wait_depth(xq, len(bodies))


def delete_queues(*names: str) -> None:
    connection, ch = channel()
    for name in names:
        ch.queue_delete(name)
    connection.close()


@contextlib.contextmanager
def throwaway_archive_url(database: str) -> Iterator[str]:
    """A fresh, empty archive URL: a SQLite file in a temporary directory, or a PostgreSQL schema."""
    if database == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-dlq-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'archive.sqlite3'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
