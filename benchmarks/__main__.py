"""python -m benchmarks [workload ...] [--rounds N]: interleaved runs, a table and results.json.

Needs RabbitMQ on 127.0.0.1:5672 (the machine's broker, not the tests' node).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from . import bulk, dlq_workloads, quorum, rss, tracing, workers
from .harness import Result, Variant, interleave, save, table


def success(rounds: int, n: int) -> list[Result]:
    return [
        interleave(
            "1 success path (no-op, 1 proc x 8 threads)",
            [Variant(name, lambda name=name: workers.success_path(name, n)) for name in workers.VARIANTS],
            rounds=rounds,
            unit="msg/s",
            target=">= 0.9x",
        )
    ]


def fail_once(rounds: int, n: int) -> list[Result]:
    return [
        interleave(
            "2 fail once then succeed (10 ms delay)",
            [Variant(name, lambda name=name: workers.fail_once(name, n)) for name in workers.VARIANTS],
            rounds=rounds,
            unit="jobs/s",
            target=">= 2x",
        )
    ]


def fail_once_health(rounds: int, n: int) -> list[Result]:
    return [
        interleave(
            "2b fail once with a connection error (a breaker's evidence), then succeed",
            [
                Variant(name, lambda name=name: workers.fail_once(name, n, health=True))
                for name in workers.VARIANTS
            ],
            rounds=rounds,
            unit="jobs/s",
            target="(reported)",
        )
    ]


def _lateness(title: str, target: str, measure: Callable[[str], list[float]], rounds: int) -> list[Result]:
    """p50 and p99 rows from one ``measure(variant)`` run per variant and round."""
    runs: dict[str, list[float]] = {}

    def run(name: str, q: float) -> float:
        if q == 50 or name not in runs:
            runs[name] = measure(name)
        return workers.percentile(runs[name], q)

    return [
        interleave(
            f"3 retry lateness p{q} {title}",
            [Variant(name, lambda name=name, q=q: run(name, q)) for name in workers.VARIANTS],
            rounds=rounds,
            unit="ms late",
            higher_is_better=False,
            target=target,
        )
        for q in (50, 99)
    ]


def lateness(rounds: int, n: int) -> list[Result]:
    return _lateness(
        "(trickle 5/s, 10 ms delay)", "p99 <= 50 ms", lambda name: workers.retry_lateness(name, n), rounds
    )


def backlog(rounds: int, n: int) -> list[Result]:
    return _lateness(
        f"behind a {n:,} backlog (10 ms delay)",
        "p99 <= 1000 ms",
        lambda name: workers.backlog_lateness(name, backlog=n),
        rounds,
    )


def memory(rounds: int, n: int) -> list[Result]:
    # One subprocess per variant and round gives all three samples; later passes read them back in order.
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in workers.VARIANTS}
    read: dict[tuple[str, str], int] = {}

    def run(name: str, what: str) -> float:
        if what == "idle":
            samples[name].append(rss.measure(name, n))
        index = read.get((name, what), 0)
        read[(name, what)] = index + 1
        return samples[name][index][what]

    floors: list[dict[str, float]] = []

    def floor(step: str) -> float:
        if step == "dramatiq + pika":
            floors.append(rss.floor())
        return floors[-1][step]

    libraries = "+ pydantic and one model"
    return [
        interleave(
            "8 RSS floor: the chosen libraries imported, no provider-jobs code",
            [
                Variant(name, lambda step=step: floor(step))
                for name, step in (
                    ("dramatiq, pika", "dramatiq + pika"),
                    ("+ prometheus-client, structlog, pydantic + a model", libraries),
                )
            ],
            rounds=rounds,
            unit="MiB",
            higher_is_better=False,
            target="<= 1.3x plain (ratio >= 0.77)",
        ),
        *[
            interleave(
                f"8 worker RSS {what}" + (f" {n:,} jobs" if what == "after" else ""),
                [Variant(name, lambda name=name, what=what: run(name, what)) for name in workers.VARIANTS],
                rounds=rounds,
                unit="MiB",
                higher_is_better=False,
                target="<= 1.3x plain (ratio >= 0.77)",
            )
            for what in ("idle", "load", "after")
        ],
    ]


WORKLOADS = {
    "success": (success, 20_000),
    "fail-once": (fail_once, 5_000),
    "fail-once-health": (fail_once_health, 5_000),
    "lateness": (lateness, 50),
    "backlog": (backlog, 20_000),
    "memory": (memory, 100_000),
    "bulk": (bulk.workload, 10_000),
    "dlq-e2e": (dlq_workloads.dead_letter_end_to_end, 5_000),
    "dlq-drain": (dlq_workloads.archiver_drain, 20_000),
    "dlq-queries": (dlq_workloads.archive_queries, 1_000_000),
    "quorum": (quorum.quorum, 5_000),
    "tracing": (tracing.workload, 20_000),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("workloads", nargs="*", choices=[*WORKLOADS, []], default=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="messages per run (default per workload)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    results: list[Result] = []
    for name in args.workloads:
        run, default_n = WORKLOADS[name]
        results += run(args.rounds, args.n or default_n)
    print()
    print(table(results))
    save(results, args.out)
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
