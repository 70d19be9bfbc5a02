"""Workload 4: non-retryable failures, from a full work queue to where they come to rest.

- plain Dramatiq: an actor with ``throws`` and ``max_retries=0`` under the
  default middleware; each failure is nacked and RabbitMQ moves it to
  ``<queue>.XQ``. Timed until the XQ holds all N.
- provider-jobs: our broker and actors (every middleware) with a provider
  that raises ``ValidationFailed``; ``ClassifiedRetries`` publishes each
  enriched dead letter to XQ (confirmed) and acks the job, while a
  ``provider-jobs archiver`` process drains XQ into a SQLite archive. Timed
  until the archiver has committed all N records, one step further than the
  baseline goes.

Both workers run in this process, 1 process x 8 threads, on preloaded queues.
The archiver runs as the separate process it is in production; it is started
and connected before the clock starts.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.errors import ValidationFailed
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from .dlq_support import URL, delete_queues, wait_depth
from .workers import THREADS, WORKER_TIMEOUT_MS, _publish_raw

_queues: list[str] = []


class PermanentError(Exception):
    """What the plain actor raises: it is in the actor's ``throws``."""


def _queue(kind: str) -> str:
    name = f"bench.e2e.{kind}.{uuid.uuid4().hex[:8]}"
    _queues.append(name)
    return name


def _worker(broker: dramatiq.Broker) -> dramatiq.Worker:
    return dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=WORKER_TIMEOUT_MS)


def plain_xq_landing(n: int) -> float:
    """Plain Dramatiq: failures per second until the XQ holds all ``n``."""
    queue = _queue("plain")
    broker = RabbitmqBroker(url=URL, max_priority=10)

    def fail(key: str) -> None:
        raise PermanentError(key)

    actor = dramatiq.actor(
        fail, actor_name="fail", queue_name=queue, broker=broker, throws=(PermanentError,), max_retries=0
    )
    broker.declare_queue(queue, ensure=True)
    _publish_raw(queue, [(actor.message(uuid.uuid4().hex).encode(), None) for _ in range(n)])
    worker = _worker(broker)
    started = time.perf_counter()
    worker.start()
    try:
        wait_depth(xq_name(queue), n)
        return n / (time.perf_counter() - started)
    finally:
        worker.stop()
        broker.close()
        delete_queues(queue, dq_name(queue), xq_name(queue))


def archived_end_to_end(n: int) -> float:
    """provider-jobs: failures per second until the archiver has committed all ``n`` records."""
    queue = _queue("ours")
    settings = Settings(
        broker_url=URL, queue_name=queue, worker_threads=THREADS, worker_timeout_ms=WORKER_TIMEOUT_MS
    )
    broker = build_broker(settings)

    class Refusing:
        def execute(self, job: ProviderJob) -> None:
            raise ValidationFailed(f"resource name {job.job_id!r} is not allowed")

    registry = ProviderRegistry()
    registry.register("ITL.Bench", "Refused", Refusing())
    actor = declare_provider_actors(broker, registry, settings)["create_resource"]
    broker.declare_queue(queue, ensure=True)
    bodies = []
    for _ in range(n):
        message = actor.message(provider_namespace="ITL.Bench", resource_type="Refused")
        bodies.append((message.encode(), message.options["broker_priority"]))
    _publish_raw(queue, bodies)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        archiver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.dlq_end_to_end",
                queue,
                f"sqlite:///{Path(tmp) / 'a.sqlite3'}",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        assert archiver.stdout is not None
        try:
            if archiver.stdout.readline().strip() != "ready":
                raise RuntimeError("the archiver process did not start")
            worker = _worker(broker)
            started = time.perf_counter()
            worker.start()
            try:
                for line in archiver.stdout:
                    if int(line) >= n:
                        break
                else:
                    raise RuntimeError("the archiver process ended before archiving everything")
                return n / (time.perf_counter() - started)
            finally:
                worker.stop()
                broker.close()
        finally:
            archiver.terminate()
            archiver.wait(timeout=30)
            delete_queues(queue, dq_name(queue), xq_name(queue))


def no_op_ceiling(n: int) -> float:
    """Not a variant but a bound: the same worker (1 process x 8 threads) draining ``n`` jobs that
    succeed at once, the least any job costs. No failure can be handled faster than this."""
    from . import workers

    return max(workers.success_path(name, n) for name in workers.VARIANTS)


VARIANTS = {
    "plain dramatiq -> XQ": plain_xq_landing,
    "provider-jobs -> archived": archived_end_to_end,
    "ceiling: the faster no-op worker (workload 1)": no_op_ceiling,
}


def cleanup() -> None:
    if _queues:
        delete_queues(*(name for q in _queues for name in (q, dq_name(q), xq_name(q))))
        _queues.clear()


def _archiver_process(queue: str, archive_url: str) -> None:
    """The archiver process: prints ``ready``, then the running count of records after each commit."""
    from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver

    settings = Settings(broker_url=URL, queue_name=queue, archive_url=archive_url)
    archiver = DeadLetterArchiver.from_settings(settings, archive=DeadLetterArchive(archive_url))
    archiver.archive.check()
    committed = 0

    def report(records: object) -> None:
        nonlocal committed
        committed += len(records)  # type: ignore[arg-type]
        print(committed, flush=True)

    archiver.after_commit = report
    print("ready", flush=True)
    archiver.run()


if __name__ == "__main__":
    _archiver_process(*sys.argv[1:3])
