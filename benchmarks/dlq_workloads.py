"""Workloads 4, 5 and 7 as ``python -m benchmarks`` runs them: each returns harness results."""

from __future__ import annotations

from . import dlq_drain, dlq_end_to_end, dlq_queries
from .dlq_support import DATABASES
from .harness import Result, Variant, interleave


def dead_letter_end_to_end(rounds: int, n: int) -> list[Result]:
    """Workload 4: non-retryable failure to archived record vs plain Dramatiq's XQ landing."""
    try:
        return [
            interleave(
                "4 non-retryable failure to archived record (SQLite)",
                [Variant(name, lambda run=run: run(n)) for name, run in dlq_end_to_end.VARIANTS.items()],
                rounds=rounds,
                unit="msg/s",
                target=">= 2x",
            )
        ]
    finally:
        dlq_end_to_end.cleanup()


def archiver_drain(rounds: int, n: int) -> list[Result]:
    """Workload 5: the archiver draining an n-message XQ vs raw pika inserting into its tables, per DB."""
    try:
        return [
            interleave(
                f"5 archiver drain of a {n:,}-message XQ into {database}",
                [
                    Variant(
                        "raw pika + batched insert into the archive's tables",
                        lambda db=database: dlq_drain.raw_schema_drain(db, n),
                    ),
                    Variant("DeadLetterArchiver", lambda db=database: dlq_drain.archiver_drain(db, n)),
                    Variant(
                        "reference: raw pika + batched insert of (key, body), no index",
                        lambda db=database: dlq_drain.raw_drain(db, n),
                    ),
                    Variant(
                        "floor 1: pika consume + read records, no database",
                        lambda db=database: dlq_drain.consume_floor(db, n),
                    ),
                ],
                rounds=rounds,
                unit="msg/s",
                target=">= 0.8x",
            )
            for database in DATABASES
        ]
    finally:
        dlq_drain.cleanup()


def archive_queries(rounds: int, n: int) -> list[Result]:
    """Workload 7: a filtered page and the group summary on an n-record archive, p95, per database."""
    results = []
    for database in DATABASES:
        loaded = dlq_queries.LoadedArchive(database, n)
        try:
            results += [
                interleave(
                    f"7 filtered page, {n:,} records ({database})",
                    [Variant("find(status, category, provider) limit 50", loaded.filtered_page)],
                    rounds=rounds,
                    unit="ms p95",
                    higher_is_better=False,
                    target="p95 < 50 ms",
                ),
                interleave(
                    f"7 group summary, {n:,} records ({database})",
                    [Variant("groups(status=dead) limit 100", loaded.group_summary)],
                    rounds=rounds,
                    unit="ms p95",
                    higher_is_better=False,
                    target="p95 < 500 ms",
                ),
            ]
        finally:
            loaded.close()
    return results
