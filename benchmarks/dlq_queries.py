"""Workload 7: archive queries on a million records, p95 latency.

The records are written straight into the archive's table (SQLite:
``executemany`` in large transactions; PostgreSQL: ``COPY``), not through
RabbitMQ, each with its search document (the search index is kept as they go in:
SQLite's triggers, PostgreSQL's GIN index), then the group summary is counted once with
``DeadLetterArchive.rebuild_groups()``. They are spread over 40 providers,
4 operations, 10 categories and 30 days; 80 % are dead, 15 % replayed,
5 % discarded; about 1,600 fingerprints, a few of them large.

Measured through ``DeadLetterArchive`` as the API and CLI call it:

- a filtered page: ``find(status=dead, category, provider)``, newest first, 50 rows;
- the group summary: ``groups(status=dead)``, the 100 largest groups.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import psycopg

from provider_jobs.dlq import DeadLetterArchive, RecordFilter, fingerprint
from provider_jobs.dlq.archive.search import SearchDocuments
from provider_jobs.redaction import Redactor

from .dlq_support import throwaway_archive_url

CATEGORIES = [f"category_{i}" for i in range(10)]
PROVIDERS = [(f"ITL.P{i % 20}", f"Type{i % 3}_{i}") for i in range(40)]
OPERATIONS = ["create", "get", "update", "delete"]
ERRORS = ["Upstream said no for {}", "Timeout after {} s", "Quota exceeded on {}", "Conflict on {}"]
DAY_MS = 86_400_000
#: Rows per transaction while loading.
LOAD_BATCH = 20_000

_HISTORY = json.dumps(
    [{"attempt": a, "category": "x", "error": "Upstream said no", "at_ms": 1} for a in (1, 2, 3)]
)
_DOCUMENTS = SearchDocuments(Redactor())
_TRACEBACK = (
    'Traceback (most recent call last):\n  File "x.py", line 1, in run\n' * 4 + "X: Upstream said no\n"
)


def _causes(rng: random.Random) -> list[tuple[str, str, str, str, str, str]]:
    """(category, namespace, type, operation, error, fingerprint), each a distinct cause."""
    causes = []
    for category in CATEGORIES:
        for namespace, resource_type in PROVIDERS:
            operation = rng.choice(OPERATIONS)
            for template in rng.sample(ERRORS, 4):
                error = template.format(rng.randint(1, 999))
                fp = fingerprint(
                    category=category,
                    provider_namespace=namespace,
                    resource_type=resource_type,
                    operation=operation,
                    error=error,
                )
                causes.append((category, namespace, resource_type, operation, error, fp))
    return causes


def _rows(n: int, columns: list[str], seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    causes = _causes(rng)
    weights = [1 / (rank + 1) for rank in range(len(causes))]  # a few large groups, a long tail
    picks = rng.choices(causes, weights=weights, k=n)
    start = int(time.time() * 1000) - 30 * DAY_MS
    step = 30 * DAY_MS // n
    for i, (category, namespace, resource_type, operation, error, fp) in enumerate(picks):
        status = rng.choices(("dead", "replayed", "discarded"), weights=(80, 15, 5))[0]
        message_id = str(uuid.UUID(int=rng.getrandbits(128)))
        job_id = f"job-{i}"
        dead_ms = start + i * step + rng.randint(0, step)
        body = json.dumps(
            {"message_id": message_id, "job": {"job_id": job_id, "request": {"name": f"rg-{i}"}}}
        ).encode()
        searchable = SimpleNamespace(
            error_type="ProviderError",
            error=error,
            provider_namespace=namespace,
            resource_type=resource_type,
            operation=operation,
            job_id=job_id,
            message_id=message_id,
            request={"name": f"rg-{i}"},
        )
        row = {
            "dedupe_key": f"msg:{message_id}",
            "message_id": message_id,
            "job_id": job_id,
            "queue_name": "provider.jobs",
            "source_queue": "provider.jobs.XQ",
            "actor_name": f"{operation}_resource",
            "provider_namespace": namespace,
            "resource_type": resource_type,
            "operation": operation,
            "request": f'{{"name":"rg-{i}"}}',
            "priority": 5,
            "category": category,
            "retryable": False,
            "reason": "exhausted",
            "error_type": "ProviderError",
            "error": error,
            "traceback": _TRACEBACK,
            "attempts": 3,
            "max_retries": 2,
            "attempt_history": _HISTORY,
            "x_death": None,
            "headers": "{}",
            "first_enqueued_ms": dead_ms - 60_000,
            "dead_lettered_ms": dead_ms,
            "archived_ms": dead_ms + 5,
            "fingerprint": fp,
            "body": body,
            "status": status,
            "status_reason": None,
            "replay_count": 1 if status == "replayed" else 0,
            "replay_message_ids": "[]",
            "escalated_ms": None,
            "updated_ms": dead_ms + 5,
            "search_text": _DOCUMENTS(searchable),
        }
        yield tuple(row[c] for c in columns)


def load(archive: DeadLetterArchive, n: int) -> float:
    """Write ``n`` records into an empty archive and count its groups; seconds taken."""
    started = time.perf_counter()
    archive.check()
    table = archive.records
    columns = [c.name for c in table.columns if c.name not in {"id", "claim_token", "claimed_ms"}]
    rows = _rows(n, columns)
    if archive.is_sqlite:
        engine = archive._engine_ready()
        raw = engine.raw_connection()
        placeholders = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
        cursor = raw.cursor()
        while batch := [row for _, row in zip(range(LOAD_BATCH), rows, strict=False)]:
            cursor.execute("BEGIN")
            cursor.executemany(sql, batch)
            cursor.execute("COMMIT")
        raw.close()
    else:
        dsn = archive.url.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            conn.autocommit = True
            conn.execute(f"VACUUM ANALYZE {table.name}")
    archive.rebuild_groups()
    return time.perf_counter() - started


def p95_ms(query: Callable[[], object], repeats: int) -> float:
    """The 95th percentile of ``repeats`` timed calls of ``query`` (after one warm-up call), in ms."""
    query()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        query()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.quantiles(timings, n=20, method="inclusive")[18]


class LoadedArchive:
    """A million-record archive on one database, loaded once for every round of the workload."""

    def __init__(self, database: str, n: int) -> None:
        self.database = database
        self.n = n
        self._context = throwaway_archive_url(database)
        self.archive = DeadLetterArchive(self._context.__enter__())
        self.load_s = load(self.archive, n)
        print(f"  loaded {n:,} records into {database} in {self.load_s:.1f} s", flush=True)
        self._rng = random.Random(11)

    def filtered_page(self, repeats: int = 200) -> float:
        def query() -> object:
            namespace, resource_type = self._rng.choice(PROVIDERS)
            page = self.archive.find(
                RecordFilter(
                    statuses=["dead"],
                    category=self._rng.choice(CATEGORIES),
                    provider_namespace=namespace,
                    resource_type=resource_type,
                ),
                limit=50,
            )
            if len(page) > 50:
                raise AssertionError("more than a page")
            return page

        return p95_ms(query, repeats)

    def group_summary(self, repeats: int = 50) -> float:
        def query() -> object:
            groups = self.archive.groups(RecordFilter(statuses=["dead"]), limit=100)
            if len(groups) != 100:
                raise AssertionError(f"{len(groups)} groups")
            return groups

        return p95_ms(query, repeats)

    def close(self) -> None:
        self.archive.close()
        self._context.__exit__(None, None, None)


__all__ = ["LoadedArchive", "load", "p95_ms"]
