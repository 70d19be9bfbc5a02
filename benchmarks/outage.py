"""Workload "provider outage": N jobs for a provider that is down for D seconds, then recovers.

Variants, one after the other in one run, each on a queue of its own (``--variants``):

- ``plain``: plain Dramatiq ``Retries`` (3 attempts, 5 s apart);
- ``nobreaker``: provider-jobs without breaker (``PROVIDER_JOBS_BREAKER_MIN_CALLS=0``; 3
  attempts, 5 s apart);
- ``waiting``: provider-jobs with breaker (defaults, a probe round every 5 s), jobs waiting for
  it in the retry delay queues, put back every probe interval
  (``PROVIDER_JOBS_BREAKER_RELEASE_RATE=0``), and recovery replay (the archiver's, of the
  health categories);
- ``parked``: the same with the defaults: jobs parked until the breaker closes, then released
  at ``PROVIDER_JOBS_BREAKER_RELEASE_RATE`` (1000/s).

For each: calls made to the provider while it was down, jobs dead-lettered, jobs done by 30 s
after recovery, and the time from recovery until the last job was done. Given ``--node``
(the RabbitMQ node's name for ``rabbitmqctl -n``, best a node of its own), also the messages
RabbitMQ moved per second over the second half of the outage (published + delivered +
dead-lettered, from its global counters), its memory then, and the resident memory of this
process (the worker, its archiver and the harness) then.

    python -m benchmarks.outage [--n 10000] [--down-s 60] [--variants plain,nobreaker,parked]
        [--url amqp://...] [--node rabbit@host] [--watch-s 35]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import subprocess
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

from .rss import rss_mb

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
THREADS = 8
WORKER_TIMEOUT_MS = 100
#: How long after recovery a variant is watched.
WATCH_S = 35.0
#: Global counters of RabbitMQ that count a message moved: published, delivered, dead-lettered.
MOVES = (
    "messages_received_total",
    "messages_delivered_total",
    "messages_dead_lettered_expired_total",
    "messages_dead_lettered_rejected_total",
    "messages_dead_lettered_maxlen_total",
)


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
class Broker:
    """The RabbitMQ node under test: its URL, and its name for ``rabbitmqctl -n`` (``None``: not read)."""

    url: str = URL
    node: str | None = None
    watch_s: float = WATCH_S

    def eval(self, expression: str) -> str:
        assert self.node is not None
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, "eval", expression],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    def moves(self) -> dict[str, int]:
        """RabbitMQ's global counters of :data:`MOVES`, each summed over queue types."""
        totals = dict.fromkeys(MOVES, 0)
        for name, value in re.findall(r"(\w+) => (\d+)", self.eval("rabbit_global_counters:overview().")):
            if name in totals:
                totals[name] += int(value)
        return totals

    def memory_mb(self) -> float:
        return int(self.eval("erlang:memory(total).").strip()) / 2**20


@dataclasses.dataclass
class Churn:
    """What RabbitMQ moved per second over the second half of the outage, and memory at its end."""

    published_per_s: float
    delivered_per_s: float
    dead_lettered_per_s: float
    rabbitmq_mb: float
    process_mb: float

    @property
    def moved_per_s(self) -> float:
        return self.published_per_s + self.delivered_per_s + self.dead_lettered_per_s


@dataclasses.dataclass
class Row:
    variant: str
    calls_down: int
    dead_lettered: int
    done_by_30s: int
    last_done_s: float | None
    done: int = 0
    churn: Churn | None = None


def _channel(url: str = URL) -> tuple[Any, Any]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    return connection, connection.channel()


def _depth(channel: Any, name: str) -> int:
    try:
        return int(channel.queue_declare(name, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0


def _cleanup(queue: str, broker: dramatiq.Broker | None = None, url: str = URL) -> None:
    """Delete the variant's queues: work, delay, dead letters, health stream, retry buckets, parking."""
    buckets: set[str] = set()
    for middleware in broker.middleware if broker is not None else ():
        buckets |= getattr(getattr(middleware, "_publisher", None), "_declared", set())
        buckets |= set(getattr(getattr(middleware, "parking", None), "queues", dict)())
    connection, channel = _channel(url)
    for name in (queue, dq_name(queue), xq_name(queue), f"{queue}.health", *buckets):
        channel.queue_delete(name)
    connection.close()


def _churn(rabbitmq: Broker, outage: Outage) -> Churn | None:
    """Measure RabbitMQ's moves over the second half of the outage (``None`` without a node)."""
    if rabbitmq.node is None:
        return None
    half = (outage.recover_at - time.monotonic()) / 2
    time.sleep(max(0.0, half))
    first, began = rabbitmq.moves(), time.monotonic()
    time.sleep(max(1.0, outage.recover_at - time.monotonic() - 2.0))
    last, ended = rabbitmq.moves(), time.monotonic()
    seconds = ended - began

    def rate(*names: str) -> float:
        return sum(last[name] - first[name] for name in names) / seconds

    return Churn(
        published_per_s=rate("messages_received_total"),
        delivered_per_s=rate("messages_delivered_total"),
        dead_lettered_per_s=rate(*MOVES[2:]),
        rabbitmq_mb=rabbitmq.memory_mb(),
        process_mb=rss_mb(),
    )


def _watch(
    outage: Outage, n: int, dead: Callable[[], int], watch_s: float = WATCH_S
) -> tuple[int, float | None]:
    """Wait until every job is done or dead, or ``watch_s`` after recovery; done by +30 s, last done."""
    done_by_30 = None
    while True:
        now = time.monotonic()
        if done_by_30 is None and now >= outage.recover_at + 30:
            done_by_30 = outage.done
        if now >= outage.recover_at + watch_s:
            break
        if now > outage.recover_at and outage.done + dead() >= n:
            break
        time.sleep(0.2)
    finished = outage.done
    if done_by_30 is None:
        done_by_30 = finished
    last = outage.last_done - outage.recover_at if finished == n else None
    return done_by_30, last


def plain_dramatiq(n: int, down_s: float, rabbitmq: Broker) -> Row:
    queue = f"bench.outage.plain.{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(url=rabbitmq.url)
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
    connection, channel = _channel(rabbitmq.url)
    try:
        churn = _churn(rabbitmq, outage)
        done_by_30, last = _watch(outage, n, lambda: _depth(channel, xq_name(queue)), rabbitmq.watch_s)
        dead = _depth(channel, xq_name(queue))
    finally:
        connection.close()
        worker.stop()
        broker.close()
        _cleanup(queue, url=rabbitmq.url)
    return Row("plain Dramatiq Retries", outage.calls_down, dead, done_by_30, last, outage.done, churn)


def provider_jobs(n: int, down_s: float, rabbitmq: Broker, *, breaker: bool, park: bool = True) -> Row:
    from provider_jobs.actors.broker import build_broker
    from provider_jobs.actors.provider_ops import declare_provider_actors
    from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
    from provider_jobs.dlq.recovery import HEALTH_CATEGORIES, RecoveryReplay
    from provider_jobs.errors import ProviderNotAvailable
    from provider_jobs.jobs import ProviderJob
    from provider_jobs.providers import ProviderRegistry
    from provider_jobs.settings import Settings

    kind = ("parked" if park else "waiting") if breaker else "nobreaker"
    queue = f"bench.outage.{kind}.{uuid.uuid4().hex[:8]}"
    tmp = tempfile.TemporaryDirectory(prefix="bench-outage-")
    settings = Settings(
        broker_url=rabbitmq.url,
        queue_name=queue,
        worker_threads=THREADS,
        worker_timeout_ms=WORKER_TIMEOUT_MS,
        max_attempts=3,
        retry_delay_s=5.0,
        breaker_min_calls=Settings().breaker_min_calls if breaker else 0,
        archive_url=f"sqlite:///{tmp.name}/archive.sqlite3",
        recovery_replay_rate=500.0,
        breaker_release_rate=Settings().breaker_release_rate if park else 0.0,
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
        churn = _churn(rabbitmq, outage)
        done_by_30, last = _watch(outage, n, dead, rabbitmq.watch_s)
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
        _cleanup(queue, broker, rabbitmq.url)
    name = {
        "nobreaker": "provider-jobs, no breaker",
        "waiting": "provider-jobs, breaker (jobs wait in delay queues) + recovery replay",
        "parked": "provider-jobs, breaker (jobs parked) + recovery replay",
    }[kind]
    return Row(name, outage.calls_down, dead_lettered, done_by_30, last, outage.done, churn)


#: The variants by name, in the order they run.
VARIANTS: dict[str, Callable[[int, float, Broker], Row]] = {
    "plain": plain_dramatiq,
    "nobreaker": lambda n, down_s, rabbitmq: provider_jobs(n, down_s, rabbitmq, breaker=False),
    "waiting": lambda n, down_s, rabbitmq: provider_jobs(n, down_s, rabbitmq, breaker=True, park=False),
    "parked": lambda n, down_s, rabbitmq: provider_jobs(n, down_s, rabbitmq, breaker=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--down-s", type=float, default=60.0)
    parser.add_argument("--variants", default="plain,nobreaker,parked", help=", ".join(VARIANTS))
    parser.add_argument("--url", default=URL)
    parser.add_argument("--node", default=None, help="rabbitmqctl -n NODE: RabbitMQ's moves and memory")
    parser.add_argument("--watch-s", type=float, default=WATCH_S, help="longest watch after recovery")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    rabbitmq = Broker(args.url, args.node, args.watch_s)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: no variant {', '.join(unknown)}; use {', '.join(VARIANTS)}")
    rows = [VARIANTS[name](args.n, args.down_s, rabbitmq) for name in names]
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
        if row.last_done_s is not None:
            last = f"{row.last_done_s:.1f} s after recovery"
        elif row.dead_lettered:
            last = "never (dead letters wait for an operator)"
        else:
            last = f"not all within {args.watch_s:g} s ({row.done:,} done)"
        print(
            f"| {row.variant} | {row.calls_down:,} | {row.dead_lettered:,} | {row.done_by_30s:,} | {last} |"
        )
    measured = [row for row in rows if row.churn is not None]
    if measured:
        print("\nSecond half of the outage: messages RabbitMQ moved per second, and memory at its end\n")
        print(
            "| variant | moved/s | published/s | delivered/s | dead-lettered/s | RabbitMQ memory "
            "| worker process RSS |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in measured:
            churn = row.churn
            assert churn is not None
            print(
                f"| {row.variant} | {churn.moved_per_s:,.1f} | {churn.published_per_s:,.1f} "
                f"| {churn.delivered_per_s:,.1f} | {churn.dead_lettered_per_s:,.1f} "
                f"| {churn.rabbitmq_mb:,.0f} MiB | {churn.process_mb:,.0f} MiB |"
            )


if __name__ == "__main__":
    main()
