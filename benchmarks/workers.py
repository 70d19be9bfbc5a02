"""Workloads 1-3 and 8: worker throughput, retries, retry lateness and memory, ours against plain Dramatiq."""

from __future__ import annotations

import json
import resource
import statistics
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
#: Both variants' workers wake this often when idle (Dramatiq's default is 1000 ms).
WORKER_TIMEOUT_MS = 100


class Counter:
    """Counts calls; ``wait(n)`` blocks until ``n`` were counted."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def add(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait(self, n: int, timeout_s: float = 600) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.count >= n, timeout=timeout_s):
                raise TimeoutError(f"only {self.count} of {n} done in {timeout_s} s")


def _publish_raw(queue: str, bodies: list[tuple[bytes, int | None]]) -> None:
    """Preload a queue without confirms (the same way for every variant; not timed)."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    for body, priority in bodies:
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, priority=priority))
    connection.close()


def _delete_queues(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    for name in (queue, dq_name(queue), xq_name(queue)):
        channel.queue_delete(name)
    connection.close()


def _drain(broker: dramatiq.Broker, counter: Counter, n: int) -> float:
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    started = time.perf_counter()
    worker.start()
    try:
        counter.wait(n)
        return n / (time.perf_counter() - started)
    finally:
        worker.stop()
        broker.close()


# -- plain Dramatiq ----------------------------------------------------------------------------


def _plain(
    queue: str, handler: Callable[[str], None], *, min_backoff: int | None = None
) -> tuple[RabbitmqBroker, Any]:
    broker = RabbitmqBroker(url=URL, max_priority=10)
    if min_backoff is not None:
        for m in broker.middleware:
            if isinstance(m, Retries):
                m.min_backoff, m.max_backoff = min_backoff, min_backoff
    actor = dramatiq.actor(handler, actor_name="noop", queue_name=queue, broker=broker)
    broker.declare_queue(queue, ensure=True)
    return broker, actor


def _plain_bodies(actor: Any, n: int) -> list[tuple[bytes, int | None]]:
    return [(actor.message(uuid.uuid4().hex).encode(), None) for _ in range(n)]


# -- provider-jobs ------------------------------------------------------------------------------


def _ours(
    queue: str,
    handler: Callable[[str], None],
    *,
    delay_s: float = 5.0,
    queue_type: str = "classic",
    tracer_provider: Any = None,
) -> tuple[dramatiq.Broker, Any]:
    # Imported here so that a plain-Dramatiq process (the memory workload) does not load provider-jobs.
    from provider_jobs.actors.broker import build_broker
    from provider_jobs.actors.provider_ops import declare_provider_actors
    from provider_jobs.jobs import ProviderJob
    from provider_jobs.providers import ProviderRegistry
    from provider_jobs.settings import Settings

    settings = Settings(
        broker_url=URL,
        queue_name=queue,
        queue_type=queue_type,
        retry_delay_s=delay_s,
        worker_threads=THREADS,
        worker_timeout_ms=WORKER_TIMEOUT_MS,
        max_attempts=3,
        # Every default on, the breakers, the ledger of lost acks and the suspects' queue included.
    )
    broker = build_broker(settings, tracer_provider=tracer_provider)

    class Bench:
        def execute(self, job: ProviderJob) -> None:
            handler(job.job_id)

    registry = ProviderRegistry()
    registry.register("ITL.Bench", "Noop", Bench())
    actor = declare_provider_actors(broker, registry, settings)["create_resource"]
    broker.declare_queue(queue, ensure=True)
    return broker, actor


def _our_bodies(actor: Any, n: int) -> list[tuple[bytes, int | None]]:
    bodies = []
    for _ in range(n):
        message = actor.message(provider_namespace="ITL.Bench", resource_type="Noop")
        bodies.append((message.encode(), message.options["broker_priority"]))
    return bodies


Builder = Callable[..., tuple[dramatiq.Broker, Any]]
VARIANTS: dict[str, tuple[Builder, Callable[[Any, int], list[tuple[bytes, int | None]]]]] = {
    "plain dramatiq": (_plain, _plain_bodies),
    "provider-jobs": (_ours, _our_bodies),
}


def success_path(variant: str, n: int) -> float:
    """Workload 1: drain n no-op jobs; messages per second."""
    build, bodies = VARIANTS[variant]
    queue = f"bench.success.{uuid.uuid4().hex[:8]}"
    counter = Counter()
    broker, actor = build(queue, lambda key: counter.add())
    _publish_raw(queue, bodies(actor, n))
    try:
        return _drain(broker, counter, n)
    finally:
        _delete_queues(queue)


class _FailOnce:
    """A handler that fails each job's first attempt (only those in ``only``, when given),
    counts successes, and records how late (ms) each second attempt ran after its due time."""

    def __init__(
        self,
        counter: Counter,
        delay_ms: int,
        only: set[str] | None = None,
        error: Callable[[], Exception] = lambda: RuntimeError("the resource is not ready yet"),
    ) -> None:
        self.counter = counter
        self.error = error
        self.delay_ms = delay_ms
        self.only = only
        self.failed_at: dict[str, float] = {}
        self.lateness: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, key: str) -> None:
        now = time.monotonic()
        if self.only is None or key in self.only:
            with self.lock:
                first = key not in self.failed_at
                if first:
                    self.failed_at[key] = now
                else:
                    self.lateness.append((now - self.failed_at[key]) * 1000 - self.delay_ms)
            if first:
                raise self.error()
        self.counter.add()


def _build_retrying(
    variant: str, queue: str, handler: Callable[[str], None], delay_ms: int
) -> tuple[Any, Any]:
    """Broker and actor of ``variant`` retrying after ``delay_ms`` (Dramatiq: its backoff factor)."""
    build, _ = VARIANTS[variant]
    if variant == "plain dramatiq":
        return build(queue, handler, min_backoff=delay_ms)
    return build(queue, handler, delay_s=delay_ms / 1000)


def fail_once(variant: str, n: int, delay_ms: int = 10, *, health: bool = False) -> float:
    """Workload 2: every job fails once (retryable), then succeeds; jobs per second.

    The failure is the job's own (an error the classifier calls ``unknown``, retried); with
    ``health``, it is a connection error, which a provider's circuit breaker counts: every new job
    failing is how an outage begins, so the breaker opens and holds jobs until a probe."""
    queue = f"bench.failonce.{uuid.uuid4().hex[:8]}"
    counter = Counter()
    error = (lambda: ConnectionError("connection reset by peer")) if health else None
    handler = _FailOnce(counter, delay_ms, error=error) if error else _FailOnce(counter, delay_ms)
    broker, actor = _build_retrying(variant, queue, handler, delay_ms)
    _publish_raw(queue, VARIANTS[variant][1](actor, n))
    try:
        return _drain(broker, counter, n)
    finally:
        _delete_queues(queue)


def retry_lateness(variant: str, n: int, rate_per_s: float = 5.0, delay_ms: int = 10) -> list[float]:
    """Workload 3 (trickle): each job fails once; how late (ms) the second attempt runs after its due time."""
    queue = f"bench.lateness.{uuid.uuid4().hex[:8]}"
    counter = Counter()
    handler = _FailOnce(counter, delay_ms)
    broker, actor = _build_retrying(variant, queue, handler, delay_ms)
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    worker.start()
    try:
        for body in VARIANTS[variant][1](actor, n):
            _publish_raw(queue, [body])
            time.sleep(1 / rate_per_s)
        counter.wait(n)
    finally:
        worker.stop()
        broker.close()
        _delete_queues(queue)
    return handler.lateness


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backlog_lateness(variant: str, backlog: int = 20_000, flaky: int = 20, delay_ms: int = 10) -> list[float]:
    """Workload 3 (backlog): ``flaky`` jobs fail once in front of a ``backlog`` of no-op jobs of the
    same priority; how late (ms) each second attempt runs after its due time."""
    queue = f"bench.backlog.{uuid.uuid4().hex[:8]}"
    counter = Counter()
    handler = _FailOnce(counter, delay_ms, only=set())
    broker, actor = _build_retrying(variant, queue, handler, delay_ms)
    bodies = VARIANTS[variant][1]
    front = bodies(actor, flaky)
    handler.only = {_key_of(body) for body, _ in front}
    _publish_raw(queue, front + bodies(actor, backlog))
    try:
        _drain(broker, counter, flaky + backlog)
    finally:
        _delete_queues(queue)
    return handler.lateness


def _key_of(body: bytes) -> str:
    """The key a handler sees for a preloaded message: the plain actor's argument or the job id."""
    message = json.loads(body)
    return str(message["args"][0] if message["args"] else message["kwargs"]["job"]["job_id"])
