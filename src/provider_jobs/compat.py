"""The ProviderWorker API: ``ProviderWorker`` and ``JobQueue``.

In ``ProviderWorker(max_retries=3)``,
``max_retries`` counts attempts in total: 3 means at most 3 attempts and 1
means a single attempt. Dramatiq's own ``max_retries`` actor option keeps
Dramatiq's meaning (retries *after* the first attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import dramatiq
import pika.exceptions

from .actors.broker import build_broker
from .actors.consumer import held_retries
from .actors.provider_ops import actor_for, declare_provider_actors
from .errors import BrokerUnavailable, ConfigurationError, InvalidJob, PublishFailed
from .gc_pause import paused_gc
from .jobs import ProviderJob, parse_job
from .middleware import Classification, ErrorClassifier
from .providers import ProviderRegistry
from .rabbitmq.bulk import BulkPublisher, OutgoingMessage
from .rabbitmq.connectivity import redact_url
from .settings import Settings
from .tracing import publish_failed

if TYPE_CHECKING:
    from .dlq import DeadLetterArchive

__all__ = ["JobQueue", "ProviderWorker"]


class JobQueue:
    """Submits provider jobs to RabbitMQ.

    Args:
        settings: Broker URL and queue name. Defaults to ``Settings.from_env()``.
        tracer_provider: An OpenTelemetry ``TracerProvider``: each job submitted gets a ``send``
            span and its trace context. Default ``None``: the global one, if one is set.
    """

    def __init__(self, *, settings: Settings | None = None, tracer_provider: Any = None) -> None:
        self.settings = settings or Settings.from_env()
        self.broker = build_broker(self.settings, tracer_provider=tracer_provider)
        self.actors = declare_provider_actors(self.broker, None, self.settings)
        self._archive: DeadLetterArchive | None = None
        self._publisher: BulkPublisher | None = None
        self._publisher_lock = threading.Lock()

    def submit(
        self,
        *,
        provider_namespace: str,
        resource_type: str,
        operation: str,
        request: dict[str, Any] | None = None,
        priority: int = 5,
        job_id: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish one job (persistently, confirmed by RabbitMQ) and return its id.

        Raises:
            InvalidJob: The job does not match the schema; nothing is published.
            dramatiq.errors.ConnectionClosed: RabbitMQ could not be reached.
        """
        fields: dict[str, Any] = {
            "provider_namespace": provider_namespace,
            "resource_type": resource_type,
            "operation": operation,
            "request": request if request is not None else {},
            "priority": priority,
            "correlation_id": correlation_id,
        }
        if job_id is not None:
            fields["job_id"] = job_id
        job = parse_job(fields)
        self.actors[actor_for(job.operation)].send(job)
        return job.job_id

    async def submit_job(self, **fields: Any) -> str:
        """The awaitable form of :meth:`submit`; same arguments, same errors."""
        return await asyncio.to_thread(lambda: self.submit(**fields))

    def submit_many(
        self, jobs: Iterable[ProviderJob | Mapping[str, Any]], *, pause_gc: bool = False
    ) -> list[str]:
        """Publish many jobs, many confirms in flight, and return their ids in order.

        Each job is a :class:`ProviderJob` or a mapping of :meth:`submit`'s
        fields. Every job is validated before anything is sent; each message
        is the one ``send()`` would publish for it (same body, priority,
        persistence), with its Dramatiq message id as AMQP ``message_id``.

        Args:
            jobs: The jobs, in the order to publish them.
            pause_gc: Hold Python's cyclic garbage collector off, process-wide, while the call
                runs: about a third less CPU for a large submit, whose objects all live until
                it returns. Off by default: the collector is the host application's.

        Raises:
            InvalidJob: A job is not valid; the message names its index. Nothing was sent.
            BrokerUnavailable: RabbitMQ cannot be reached; nothing was sent.
            PublishFailed: Some jobs were not confirmed; ``not_confirmed`` maps
                their ids to what happened, ``confirmed`` lists the others.
        """
        with paused_gc() if pause_gc else contextlib.nullcontext():
            return self._submit_many(jobs)

    def _submit_many(self, jobs: Iterable[ProviderJob | Mapping[str, Any]]) -> list[str]:
        checked = []
        for index, data in enumerate(jobs):
            try:
                job = parse_job(data)
                checked.append((self.actors[actor_for(job.operation)], job))
            except InvalidJob as exc:
                raise InvalidJob(f"Job {index}: {exc}; nothing was sent") from None
        broker = self.broker
        if not checked:
            return []
        try:
            for queue_name in {actor.queue_name for actor, _ in checked}:
                broker.declare_queue(queue_name, ensure=True)
        except (dramatiq.errors.ConnectionError, pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(
                f"Cannot reach RabbitMQ at {redact_url(self.settings.broker_url)} "
                f"({type(exc).__name__}: {exc}); nothing was sent"
            ) from exc

        messages: list[dramatiq.Message[Any]] = []

        def outgoing() -> Iterator[OutgoingMessage]:
            # Built and encoded as they go out, while RabbitMQ works on the ones before
            # (a valid job always makes a valid message).
            for actor, job in checked:
                m = actor.message_for(job)
                messages.append(m)
                broker.emit_before("enqueue", m, None)
                yield OutgoingMessage(
                    routing_key=m.queue_name,
                    body=m.encode(),
                    priority=m.options.get("broker_priority"),
                    message_id=m.message_id,
                )

        with self._publisher_lock:
            if self._publisher is None:
                self._publisher = BulkPublisher(self.settings.broker_url)
            publisher = self._publisher
        try:
            result = publisher.publish_many(outgoing())
        except BaseException as exc:
            for m in messages:
                publish_failed(broker, m, exc)
            raise
        for index in result.confirmed:
            broker.emit_after("enqueue", messages[index], None)
        if len(result.confirmed) < len(messages):
            failed = {f.index: f"{f.status}: {f.detail}" for f in result.failures}
            for index in set(range(len(messages))).difference(result.confirmed):
                why = failed.get(index, "not sent: the publish stopped before it")
                publish_failed(broker, messages[index], why)
        job_ids = [job.job_id for _, job in checked]
        if result.failures:
            not_confirmed = {job_ids[f.index]: f"{f.status}: {f.detail}" for f in result.failures}
            shown = "; ".join(f"{i}: {why}" for i, why in list(not_confirmed.items())[:5])
            more = f" (and {len(not_confirmed) - 5} more)" if len(not_confirmed) > 5 else ""
            raise PublishFailed(
                f"{len(not_confirmed)} of {len(checked)} jobs were not confirmed by RabbitMQ: {shown}{more}",
                confirmed=[job_ids[i] for i in result.confirmed],
                not_confirmed=not_confirmed,
            )
        return job_ids

    async def submit_jobs(self, jobs: Iterable[ProviderJob | Mapping[str, Any]]) -> list[str]:
        """The awaitable form of :meth:`submit_many`; same argument, same errors."""
        batch = list(jobs)
        return await asyncio.to_thread(lambda: self.submit_many(batch))

    def close(self) -> None:
        self.broker.close()
        if self._publisher is not None:
            self._publisher.close()
        if self._archive is not None:
            self._archive.close()

    async def get_dlq_messages(self, limit: int = 10) -> list[dict[str, Any]]:
        """Archived dead letters still ``dead``, oldest first, as plain dicts:
        ``provider_namespace``, ``resource_type``, ``operation``, ``request``,
        ``priority``, ``error``, ``job_id``, ``category``, ``attempts``, ``archive_id``.

        Raises:
            ArchiveUnavailable: The archive (``settings.archive_url``) cannot be reached.
        """
        from .dlq import DEAD, DeadLetterArchive, RecordFilter

        if self._archive is None:
            self._archive = DeadLetterArchive(self.settings.archive_url)
        archive = self._archive
        records = await asyncio.to_thread(
            lambda: archive.find(RecordFilter(statuses=[DEAD]), limit=limit, oldest_first=True)
        )
        return [
            {
                "provider_namespace": r.provider_namespace,
                "resource_type": r.resource_type,
                "operation": r.operation,
                "request": r.request or {},
                "priority": r.priority,
                "error": r.error,
                "job_id": r.job_id,
                "category": r.category,
                "attempts": r.attempts,
                "archive_id": r.id,
            }
            for r in records
            if r.provider_namespace and r.resource_type and r.operation
        ]


class ProviderWorker:
    """Runs provider jobs in this process; ``max_retries`` counts attempts in total.

    Subclasses may override ``_is_retryable_error(exception) -> bool`` and call
    ``super()._is_retryable_error(exception)`` for the cases they do not decide.

    Args:
        worker_id: Name used in logs and attempt records.
        provider_registry: Where providers are looked up.
        job_queue: The queue whose settings (broker URL, queue name) to use.
        max_retries: Attempts in total, the first included. Default 3.
        retry_delay: Seconds between attempts. Default 5.0.
        worker_threads: Threads running jobs. Default: the settings' ``worker_threads``.

    Raises:
        ConfigurationError: ``max_retries`` is below 1 or ``retry_delay`` not allowed.
    """

    def __init__(
        self,
        *,
        worker_id: str,
        provider_registry: ProviderRegistry,
        job_queue: JobQueue,
        max_retries: int = 3,
        retry_delay: float = 5.0,
        worker_threads: int | None = None,
    ) -> None:
        if max_retries < 1:
            raise ConfigurationError(
                f"max_retries={max_retries!r} is not allowed: it counts attempts in total, so use 1 or more"
            )
        self.worker_id = worker_id
        self.provider_registry = provider_registry
        self.job_queue = job_queue
        self.settings = job_queue.settings.replace(
            worker_id=worker_id,
            max_attempts=max_retries,
            retry_delay_s=retry_delay,
            worker_threads=worker_threads or job_queue.settings.worker_threads,
        )
        self._classifier = ErrorClassifier(unknown_retryable=self.settings.unknown_errors_retryable)
        self.broker = build_broker(self.settings, classifier=self._classify)
        declare_provider_actors(self.broker, provider_registry, self.settings)
        self._worker: dramatiq.Worker | None = None
        self._stop = threading.Event()

    def _is_retryable_error(self, exception: BaseException) -> bool:
        """Whether ``exception`` is worth another attempt; override to add cases."""
        return self._classifier(exception).retryable

    def _classify(self, exception: BaseException) -> Classification:
        base = self._classifier(exception)
        retryable = self._is_retryable_error(exception)
        if retryable == base.retryable:
            return base
        return dataclasses.replace(base, retryable=retryable, matched_by="_is_retryable_error")

    def start(self) -> None:
        """Start consuming in background threads; returns at once."""
        if self._worker is not None:
            return
        self._worker = dramatiq.Worker(
            self.broker,
            worker_threads=self.settings.worker_threads,
            worker_timeout=self.settings.worker_timeout_ms,
        )
        self._worker.start()

    def join(self) -> None:
        """Wait until the worker has no message in hand, held retries included (for tests and scripts)."""
        worker = self._worker
        if worker is None:
            return
        worker.join()
        while held_retries(worker):
            time.sleep(0.005)
            worker.join()

    def stop(self) -> None:
        """Stop consuming; unfinished messages go back to RabbitMQ."""
        self._stop.set()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self.broker.close()

    def run(self) -> None:
        """Start, then block until SIGINT or SIGTERM (or :meth:`stop`), then stop."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not self._stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> ProviderWorker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
