"""Workload "provider outage": N jobs for a provider that is down for D seconds, then recovers.

Three variants, one after the other in one run, each on a queue of its own:

- plain Dramatiq ``Retries`` (3 attempts, 5 s apart);
- provider-jobs without breaker (``PROVIDER_JOBS_BREAKER_MIN_CALLS=0``; 3 attempts, 5 s apart);
- provider-jobs with breaker (defaults: 5 failures, a probe every 5 s) and recovery replay
  (the archiver's, of the health categories).

For each: calls made to the provider while it was down, jobs dead-lettered, jobs done by 30 s
after recovery, and the time from recovery until the last job was done.

    python -m benchmarks.outage [--n 10000] [--down-s 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import Retries

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
THREADS = 8
WORKER_TIMEOUT_MS = 100
#: How long after recovery a variant is watched.
WATCH_S = 35.0


@dataclasses.dataclass
class Outage:
    """The provider: down until ``recover_at`` (monotonic); counts calls and finished jobs."""

    recover_at: float
    calls_down: int = 0
    done: int = 0
    last_done: float = 0.0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def call(self, error: Callable[[], BaseException]) -> None:
        now = time.monotonic()
        with self.lock:
            if now < self.recover_at:
                self.calls_down += 1
                raise error()
            self.done += 1
            self.last_done = now


@dataclasses.dataclass
class Row:
    variant: str
    calls_down: int
    dead_lettered: int
    done_by_30s: int
    last_done_s: float | None


def _channel() -> tuple[Any, Any]:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    return connection, connection.channel()


def _depth(channel: Any, name: str) -> int:
    try:
        return int(channel.queue_declare(name, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0


def _cleanup(queue: str, broker: dramatiq.Broker | None = None) -> None:
    """Delete the variant's queues: work, delay, dead letters, health stream and retry buckets."""
    buckets: set[str] = set()
    for middleware in broker.middleware if broker is not None else ():
        buckets |= getattr(getattr(middleware, "_publisher", None), "_declared", set())
    connection, channel = _channel()
    for name in (queue, dq_name(queue), xq_name(queue), f"{queue}.health", *buckets):
        channel.queue_delete(name)
    connection.close()


def _watch(outage: Outage, n: int, dead: Callable[[], int]) -> tuple[int, float | None]:
    """Wait until every job is done or dead, or ``WATCH_S`` after recovery; done by +30 s, last done."""
    done_by_30 = None
    while True:
        now = time.monotonic()
        if done_by_30 is None and now >= outage.recover_at + 30:
            done_by_30 = outage.done
        if now >= outage.recover_at + WATCH_S:
            break
        if now > outage.recover_at and outage.done + dead() >= n:
            break
        time.sleep(0.2)
    finished = outage.done
    if done_by_30 is None:
        done_by_30 = finished
    last = outage.last_done - outage.recover_at if finished == n else None
    return done_by_30, last


def plain_dramatiq(n: int, down_s: float) -> Row:
    queue = f"bench.outage.plain.{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(url=URL)
    for m in broker.middleware:
        if isinstance(m, Retries):
            m.max_retries, m.min_backoff, m.max_backoff = 2, 5000, 5000
    outage = Outage(recover_at=float("inf"))

    def call(job_id: str) -> None:
        outage.call(lambda: ConnectionError("Provider not available"))

    actor = dramatiq.actor(call, actor_name="outage", queue_name=queue, broker=broker)
    broker.declare_queue(queue, ensure=True)
    for _ in range(n):
        actor.send(uuid.uuid4().hex)
    outage.recover_at = time.monotonic() + down_s
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    worker.start()
    connection, channel = _channel()
    try:
        done_by_30, last = _watch(outage, n, lambda: _depth(channel, xq_name(queue)))
        dead = _depth(channel, xq_name(queue))
    finally:
        connection.close()
        worker.stop()
        broker.close()
        _cleanup(queue)
    return Row("plain Dramatiq Retries", outage.calls_down, dead, done_by_30, last)


def provider_jobs(n: int, down_s: float, *, breaker: bool) -> Row:
    from provider_jobs.actors.broker import build_broker
    from provider_jobs.actors.provider_ops import declare_provider_actors
    from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
    from provider_jobs.dlq.recovery import HEALTH_CATEGORIES, RecoveryReplay
    from provider_jobs.errors import ProviderNotAvailable
    from provider_jobs.jobs import ProviderJob
    from provider_jobs.providers import ProviderRegistry
    from provider_jobs.settings import Settings

    queue = f"bench.outage.{'breaker' if breaker else 'nobreaker'}.{uuid.uuid4().hex[:8]}"
    tmp = tempfile.TemporaryDirectory(prefix="bench-outage-")
    settings = Settings(
        broker_url=URL,
        queue_name=queue,
        worker_threads=THREADS,
        worker_timeout_ms=WORKER_TIMEOUT_MS,
        max_attempts=3,
        retry_delay_s=5.0,
        breaker_min_calls=Settings().breaker_min_calls if breaker else 0,
        archive_url=f"sqlite:///{tmp.name}/archive.sqlite3",
        recovery_replay_rate=500.0,
    )
    outage = Outage(recover_at=float("inf"))

    class Down:
        def execute(self, job: ProviderJob) -> None:
            outage.call(lambda: ProviderNotAvailable("Provider not available"))

    registry = ProviderRegistry()
    registry.register("ITL.Bench", "Outage", Down())
    broker = build_broker(settings)
    actor = declare_provider_actors(broker, registry, settings)["create_resource"]
    broker.declare_queue(queue, ensure=True)
    for _ in range(n):
        actor.send(provider_namespace="ITL.Bench", resource_type="Outage")
    archive = DeadLetterArchive(settings.archive_url)
    archiver = DeadLetterArchiver.from_settings(settings, archive=archive)
    recovery = RecoveryReplay(settings, archive, categories=HEALTH_CATEGORIES) if breaker else None
    outage.recover_at = time.monotonic() + down_s
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    worker.start()
    drain = threading.Thread(target=archiver.run, daemon=True)
    drain.start()
    if recovery is not None:
        recovery.start()
    dead_lettered = 0

    def dead() -> int:
        # Dead letters not replayed (yet): a replayed one is counted when it is done.
        return sum(1 for r in archive.find(limit=n) if r.status == "dead")

    try:
        done_by_30, last = _watch(outage, n, dead)
        dead_lettered = len(archive.find(limit=n))
    finally:
        if recovery is not None:
            recovery.stop()
        archiver.stop()
        drain.join(10)
        worker.stop()
        broker.close()
        archive.close()
        tmp.cleanup()
        _cleanup(queue, broker)
    name = "provider-jobs, breaker + recovery replay" if breaker else "provider-jobs, no breaker"
    return Row(name, outage.calls_down, dead_lettered, done_by_30, last)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--down-s", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    rows = [
        plain_dramatiq(args.n, args.down_s),
        provider_jobs(args.n, args.down_s, breaker=False),
        provider_jobs(args.n, args.down_s, breaker=True),
    ]
    print(f"\n{args.n:,} jobs, provider down for {args.down_s:g} s\n")
    header = (
        "variant",
        "calls to the down provider",
        "dead-lettered",
        "done by 30 s after recovery",
        "last job done",
    )
    print("| " + " | ".join(header) + " |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        last = (
            "never (dead letters wait for an operator)"
            if row.last_done_s is None
            else f"{row.last_done_s:.1f} s after recovery"
        )
        print(
            f"| {row.variant} | {row.calls_down:,} | {row.dead_lettered:,} | {row.done_by_30s:,} | {last} |"
        )


if __name__ == "__main__":
    main()
