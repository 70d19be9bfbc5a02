"""Workload 5: the archiver draining a full XQ, against raw pika consume + a batched insert.

Both variants consume ``bench.drain.XQ`` with the same prefetch and batch
size, insert each batch in one transaction and ack it with one
``basic_ack(multiple=True)`` after the commit. The baseline stores what a
minimal archive must (a unique key and the body) with the DBAPI's
``executemany``; the archiver decodes, classifies, fingerprints and stores the
whole record.

Two floors bound what the archiver could reach, in the same rounds: consuming
and decoding the bodies as the archiver must (pika, the same loop as the
baseline, plus reading each delivery into its record) without a database; and
the archive's own insert of the same records (read beforehand; each made
into its row, then one ``executemany`` + commit per batch through the DBAPI)
without a broker. The
archiver does both, one after the other: its time per message is at least the
sum of the two floors' (a writer thread to overlap them measured slower, see
benchmarks/README.md).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

import pika
import psycopg

from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver, dead_letter_from_delivery
from provider_jobs.dlq.archive.store import _insert_row
from provider_jobs.settings import Settings

from .dlq_support import URL, channel, enriched_body, fill_xq, throwaway_archive_url

#: The headers ``fill_xq`` publishes with.
_HEADERS = {"x-provider-jobs-dead-letter": "exhausted"}

QUEUE = "bench.drain"
XQ = f"{QUEUE}.XQ"
#: The archiver's defaults; the baseline uses the same batch and prefetch.
BATCH = Settings().archiver_batch_size
FLUSH_MS = Settings().archiver_flush_ms


def _fill(n: int) -> None:
    fill_xq(XQ, [enriched_body(QUEUE, i) for i in range(n)])


def _open_baseline(database: str, url: str) -> tuple[Any, str]:
    if database == "sqlite":
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB)")
        return db, "INSERT INTO t (key, body) VALUES (?, ?) ON CONFLICT DO NOTHING"
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    pg = psycopg.connect(dsn)
    pg.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, key TEXT UNIQUE, body BYTEA)")
    pg.commit()
    return pg, "INSERT INTO t (key, body) VALUES (%s, %s) ON CONFLICT DO NOTHING"


def raw_drain(database: str, n: int) -> float:
    """Baseline: pika consume, one ``executemany`` + commit per batch, then one multiple ack; msg/s."""
    _fill(n)
    with throwaway_archive_url(database) as url:
        db, insert = _open_baseline(database, url)
        started = time.perf_counter()
        connection, ch = channel()
        ch.basic_qos(prefetch_count=BATCH * 2)
        pending: list[tuple[int, bytes]] = []

        def on_message(_ch: Any, method: pika.spec.Basic.Deliver, _props: Any, data: bytes) -> None:
            pending.append((method.delivery_tag, data))

        ch.basic_consume(XQ, on_message)
        done = 0
        deadline = time.monotonic() + FLUSH_MS / 1000
        while done < n:
            connection.process_data_events(time_limit=max(0.0, deadline - time.monotonic()))
            if pending and (len(pending) >= BATCH or time.monotonic() >= deadline):
                rows = [(str(uuid.uuid4()), data) for _, data in pending]
                if database == "sqlite":
                    db.executemany(insert, rows)
                else:
                    with db.cursor() as cursor:
                        cursor.executemany(insert, rows)
                db.commit()
                ch.basic_ack(pending[-1][0], multiple=True)
                done += len(pending)
                pending.clear()
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + FLUSH_MS / 1000
        elapsed = time.perf_counter() - started
        connection.close()
        db.close()
    return n / elapsed


def archiver_drain(database: str, n: int) -> float:
    """DeadLetterArchiver with its default batch and flush until the XQ is empty; msg/s."""
    _fill(n)
    with throwaway_archive_url(database) as url:
        archive = DeadLetterArchive(url)
        archive.check()  # tables created before the clock starts, as the baseline's are
        archiver = DeadLetterArchiver(
            archive=archive, broker_url=URL, queues=[QUEUE], batch_size=BATCH, flush_ms=FLUSH_MS
        )
        started = time.perf_counter()
        stats = archiver.run(until_idle=True)
        elapsed = time.perf_counter() - started
        stored = archive.count()
        archive.close()
    if stats.archived != n or stored != n:
        raise AssertionError(f"archived {stats.archived}, stored {stored}, expected {n}")
    return n / elapsed


def consume_floor(database: str, n: int) -> float:
    """Floor 1: the baseline's consume loop, reading each delivery into its record, no database; msg/s."""
    _fill(n)
    started = time.perf_counter()
    connection, ch = channel()
    ch.basic_qos(prefetch_count=BATCH * 2)
    pending: list[int] = []

    def on_message(_ch: Any, method: pika.spec.Basic.Deliver, props: Any, data: bytes) -> None:
        dead_letter_from_delivery(
            data,
            props.headers,
            source_queue=XQ,
            amqp_message_id=props.message_id,
            amqp_timestamp_s=props.timestamp,
        )
        pending.append(method.delivery_tag)

    ch.basic_consume(XQ, on_message)
    done = 0
    while done < n:
        connection.process_data_events(time_limit=FLUSH_MS / 1000)
        if len(pending) >= BATCH or (pending and done + len(pending) >= n):
            ch.basic_ack(pending[-1], multiple=True)
            done += len(pending)
            pending.clear()
    elapsed = time.perf_counter() - started
    connection.close()
    return n / elapsed


def insert_floor(database: str, n: int) -> float:
    """Floor 2: the archive's insert of ``n`` records read beforehand, no broker: each record made
    into its row (its JSON columns serialised), then one ``executemany`` + commit per batch; msg/s."""
    bodies = [enriched_body(QUEUE, i) for i in range(n)]
    records = [dead_letter_from_delivery(body, _HEADERS, source_queue=XQ) for body in bodies]
    with throwaway_archive_url(database) as url:
        archive = DeadLetterArchive(url)
        archive.check()
        sql = archive._compiled_insert()
        archive.close()
        if database == "sqlite":
            db: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        else:
            db = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            batch = [_insert_row(record) for record in records[start : start + BATCH]]
            if database == "sqlite":
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, batch)
                db.execute("COMMIT")
            else:
                with db.cursor() as cursor:
                    cursor.executemany(sql, batch)
                db.commit()
        elapsed = time.perf_counter() - started
        db.close()
    return n / elapsed


def profile_target(database: str = "sqlite", n: int = 20_000) -> None:
    """One archiver drain, for ``py-spy record -- python -c 'from benchmarks.dlq_drain import ...'``."""
    print(f"{archiver_drain(database, n):,.0f} msg/s")


def cleanup() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.channel().queue_delete(XQ)
    connection.close()
