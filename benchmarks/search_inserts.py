"""What the search index costs every insert: ``DeadLetterArchive.store`` with and without it, in one run.

Two fresh archives on one database: one as built (the search document written
and indexed: SQLite's FTS5 triggers, PostgreSQL's GIN index), one with the
index dropped (the document is still written, so the difference is the
index's upkeep). Batches of 200 dead letters, the archiver's default, read from
Dramatiq bodies as the archiver reads them; the variants alternate, A B A B.
Building the search documents (masking secrets) is timed alone as well.

Run: ``python -m benchmarks.search_inserts [--n 20000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Iterator

from provider_jobs.dlq import DeadLetterArchive, dead_letter_from_delivery
from provider_jobs.dlq.archive.records import DeadLetter
from provider_jobs.dlq.archive.search import FTS_TABLE, SearchDocuments
from provider_jobs.redaction import Redactor

from .dlq_queries import CATEGORIES, ERRORS, OPERATIONS, PROVIDERS
from .dlq_support import throwaway_archive_url

#: Dead letters per ``store`` call: the archiver's default batch.
BATCH = 200


def dead_letters(n: int, seed: int) -> list[DeadLetter]:
    """``n`` dead letters as the archiver reads them from ``<queue>.XQ``, each with a request."""
    records = []
    for i in range(n):
        namespace, resource_type = PROVIDERS[(i * 7 + seed) % len(PROVIDERS)]
        operation = OPERATIONS[i % len(OPERATIONS)]
        error = ERRORS[i % len(ERRORS)].format(i % 997)
        job = {
            "job_id": f"job-{seed}-{i}",
            "provider_namespace": namespace,
            "resource_type": resource_type,
            "operation": operation,
            "request": {"name": f"rg-{i}", "location": "westeurope", "tags": {"team": "a"}, "password": "pw"},
            "priority": 5,
        }
        dead = {"category": CATEGORIES[i % len(CATEGORIES)], "error": error, "error_type": "ProviderError"}
        body = json.dumps(
            {
                "queue_name": "provider.jobs",
                "actor_name": f"{operation}_resource",
                "args": [],
                "kwargs": {"job": job},
                "options": {"dead_letter": dead},
                "message_id": str(uuid.uuid4()),
                "message_timestamp": int(time.time() * 1000),
            }
        ).encode()
        records.append(dead_letter_from_delivery(body, {}, source_queue="provider.jobs.XQ"))
    return records


def _drop_index(archive: DeadLetterArchive) -> None:
    engine = archive._engine_ready()
    with engine.begin() as conn:
        if archive.is_sqlite:
            for trigger in ("insert", "delete", "update"):
                conn.exec_driver_sql(f"DROP TRIGGER dead_letters_search_{trigger}")
            conn.exec_driver_sql(f"DROP TABLE {FTS_TABLE}")
        else:
            conn.exec_driver_sql("DROP INDEX ix_dead_letters_search")


def _batches(records: list[DeadLetter]) -> Iterator[list[DeadLetter]]:
    for start in range(0, len(records), BATCH):
        yield records[start : start + BATCH]


def measure(database: str, n: int, rounds: int) -> dict[str, list[float]]:
    """Records stored per second, per round, with and without the index; and µs per document."""
    rates: dict[str, list[float]] = {"with the search index": [], "without it": []}
    with throwaway_archive_url(database) as with_url, throwaway_archive_url(database) as without_url:
        indexed, plain = DeadLetterArchive(with_url), DeadLetterArchive(without_url)
        try:
            indexed.check()
            _drop_index(plain)
            for round_ in range(rounds):
                for name, archive in (("with the search index", indexed), ("without it", plain)):
                    records = dead_letters(n, seed=round_ * 2 + (archive is plain))
                    started = time.perf_counter()
                    for batch in _batches(records):
                        archive.store(batch)
                    rates[name].append(n / (time.perf_counter() - started))
            records = dead_letters(n, seed=99)
            documents = SearchDocuments(Redactor())
            started = time.perf_counter()
            for record in records:
                documents(record)
            rates["document µs"] = [(time.perf_counter() - started) / n * 1e6]
        finally:
            indexed.close()
            plain.close()
    return rates


def report(database: str, n: int, rounds: int) -> list[str]:
    """The measurement as table rows (median, min, max; ratio to the archive without the index)."""
    rates = measure(database, n, rounds)
    base = statistics.median(rates["without it"])
    lines = []
    for name in ("without it", "with the search index"):
        values = rates[name]
        median = statistics.median(values)
        lines.append(
            f"| inserts, {n:,} dead letters in batches of {BATCH} ({database}) | {name} | "
            f"{median:,.0f} | {min(values):,.0f} | {max(values):,.0f} | records/s | {median / base:.2f}x |"
        )
    lines.append(
        f"| building one search document ({database}) | masking included | "
        f"{rates['document µs'][0]:.1f} | | | µs | |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_inserts", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="dead letters stored per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", nargs="*", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    print("| measure | variant | median | min | max | unit | ratio |")
    print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for database in args.databases:
        for line in report(database, args.n, args.rounds):
            print(line, flush=True)


if __name__ == "__main__":
    main()
