"""Workload 9: provider-jobs on quorum queues against classic ones, in one run.

The success path (no-op jobs) and the fail-once path (every job fails once, then
succeeds after 10 ms) of workloads 1 and 2, with ``PROVIDER_JOBS_QUEUE_TYPE``
``classic`` (the baseline) and ``quorum``, on the machine's RabbitMQ (one node:
a quorum queue still writes every message to its Raft log before confirming).
"""

from __future__ import annotations

import uuid
from functools import partial

import pika

from . import workers
from .harness import Result, Variant, interleave

#: The variants: queue types.
QUEUE_TYPES = ("classic", "quorum")


def _delete(queue: str, delay_ms: int | None = None) -> None:
    workers._delete_queues(queue)
    if delay_ms is not None:
        connection = pika.BlockingConnection(pika.URLParameters(workers.URL))
        connection.channel().queue_delete(f"{queue}.retry.{delay_ms}")
        connection.close()


def success_path(queue_type: str, n: int) -> float:
    """Drain n no-op jobs; messages per second."""
    queue = f"bench.qsuccess.{uuid.uuid4().hex[:8]}"
    counter = workers.Counter()
    broker, actor = workers._ours(queue, lambda key: counter.add(), queue_type=queue_type)
    workers._publish_raw(queue, workers._our_bodies(actor, n))
    try:
        return workers._drain(broker, counter, n)
    finally:
        _delete(queue)


def fail_once(queue_type: str, n: int, delay_ms: int = 10) -> float:
    """Every job fails once (retryable), then succeeds after ``delay_ms``; jobs per second."""
    queue = f"bench.qfailonce.{uuid.uuid4().hex[:8]}"
    counter = workers.Counter()
    handler = workers._FailOnce(counter, delay_ms)
    broker, actor = workers._ours(queue, handler, delay_s=delay_ms / 1000, queue_type=queue_type)
    workers._publish_raw(queue, workers._our_bodies(actor, n))
    try:
        return workers._drain(broker, counter, n)
    finally:
        _delete(queue, delay_ms)


def quorum(rounds: int, n: int) -> list[Result]:
    return [
        interleave(
            title,
            [Variant(f"provider-jobs {kind}", partial(measure, kind, n)) for kind in QUEUE_TYPES],
            rounds=rounds,
            unit=unit,
            target="(measured)",
        )
        for title, measure, unit in (
            ("9 success path, quorum vs classic queues", success_path, "msg/s"),
            ("9 fail once then succeed, quorum vs classic queues", fail_once, "jobs/s"),
        )
    ]
