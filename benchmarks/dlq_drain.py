"""Workload 5: the archiver draining a full XQ, against raw pika consume + a batched insert.

Every variant consumes ``bench.drain.XQ`` with the archiver's prefetch and batch
size, inserts each batch in one transaction and acks it with one
``basic_ack(multiple=True)`` after the commit. The baseline inserts the same
rows the archiver does, into the archive's own tables (its indexes and its
search index, whose upkeep is most of an insert on SQLite), with the DBAPI's
``executemany``; its rows are made before the clock starts, so it spends
nothing on reading a message. The archiver decodes, classifies, fingerprints,
makes the search document and stores the whole record, and keeps the group
summary. The reference row stores what a minimal archive would (a unique key
and the body, no index): what the archiver was measured against before the
archive was searchable. Floor 1 is the baseline's consume loop with each
delivery read into its record and no database: what reading costs.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
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


def _fill(n: int) -> list[bytes]:
    bodies = [enriched_body(QUEUE, i) for i in range(n)]
    fill_xq(XQ, bodies)
    return bodies


def _raw_consume(n: int, store: Callable[[list[bytes]], None]) -> float:
    """The baselines' loop: pika consume, ``store`` each batch (it commits), then one multiple ack;
    returns msg/s."""
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
            store([data for _, data in pending])
            ch.basic_ack(pending[-1][0], multiple=True)
            done += len(pending)
            pending.clear()
        if time.monotonic() >= deadline:
            deadline = time.monotonic() + FLUSH_MS / 1000
    elapsed = time.perf_counter() - started
    connection.close()
    return n / elapsed


def _executemany(database: str, db: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """One ``executemany`` of ``rows`` and a commit, in one transaction."""
    if database == "sqlite":
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, rows)
        db.execute("COMMIT")
    else:
        with db.cursor() as cursor:
            cursor.executemany(sql, rows)
        db.commit()


def _connect(database: str, url: str) -> Any:
    """A DBAPI connection to ``url``, as the archive configures its own (SQLite: WAL, synchronous=NORMAL)."""
    if database == "sqlite":
        db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))


def raw_drain(database: str, n: int) -> float:
    """Reference: pika consume, each body stored under a fresh key in a table of (key, body) with no
    other index, one ``executemany`` + commit per batch, then one multiple ack; msg/s."""
    _fill(n)
    with throwaway_archive_url(database) as url:
        db = _connect(database, url)
        if database == "sqlite":
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB)")
            insert = "INSERT INTO t (key, body) VALUES (?, ?) ON CONFLICT DO NOTHING"
        else:
            db.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, key TEXT UNIQUE, body BYTEA)")
            db.commit()
            insert = "INSERT INTO t (key, body) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        rate = _raw_consume(
            n, lambda bodies: _executemany(database, db, insert, [(str(uuid.uuid4()), b) for b in bodies])
        )
        db.close()
    return rate


def raw_schema_drain(database: str, n: int) -> float:
    """Baseline: pika consume, each delivery's archive row (made before the clock starts, looked up
    by its body) inserted into the archive's own tables (its indexes and search index), one
    ``executemany`` + commit per batch, then one multiple ack; msg/s.

    Everything the archiver does beyond this is its own: reading each delivery into its record,
    its fingerprint and search document, the group summary, SQLAlchemy's transaction."""
    bodies = _fill(n)
    with throwaway_archive_url(database) as url:
        archive = DeadLetterArchive(url)
        archive.check()
        sql = archive._compiled_insert()
        rows = {
            body: (*_insert_row(record), archive.search_documents(record))
            for body in bodies
            for record in [dead_letter_from_delivery(body, _HEADERS, source_queue=XQ)]
        }
        archive.close()
        db = _connect(database, url)
        rate = _raw_consume(n, lambda batch: _executemany(database, db, sql, [rows[b] for b in batch]))
        db.close()
    return rate


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


def profile_target(database: str = "sqlite", n: int = 20_000) -> None:
    """One archiver drain, for ``py-spy record -- python -c 'from benchmarks.dlq_drain import ...'``."""
    print(f"{archiver_drain(database, n):,.0f} msg/s")


def cleanup() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.channel().queue_delete(XQ)
    connection.close()
