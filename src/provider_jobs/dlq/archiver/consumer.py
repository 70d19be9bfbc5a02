"""DeadLetterArchiver: drains ``<queue>.XQ`` into the archive, acking only what is committed.

Deliveries are collected into a batch (``batch_size`` messages or
``flush_ms``, whichever comes first), stored in one transaction, and only then
acked: with one ``basic_ack(multiple=True)`` when every unacked delivery up to
the batch's last tag belongs to the batch, else tag by tag, so that an ack
never covers a delivery that was not stored (a batch given up on stop while
the archive is down stays unacked, and RabbitMQ requeues it when the channel
closes). A crash between the commit and the ack redelivers the batch; the
archive's unique dedupe key (the Dramatiq message id) makes that a no-op.
While the archive is down nothing is acked: the batch stays unacked in
RabbitMQ (prefetch bounds how much), the archiver retries with backoff and
logs each retry. A lost broker connection drops the batch in hand (RabbitMQ
requeues it) and reconnects with backoff.

Run it with ``provider-jobs archiver`` or ``python -m provider_jobs.dlq.archiver.consumer``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import xq_name

from ...errors import ArchiveError, ArchiveUnavailable
from ...rabbitmq.connectivity import broker_parameters, redact_url
from ...rabbitmq.queue_types import dead_letter_queue_arguments, declare_queue
from ...settings import Settings
from ...tracing import configure_tracing, tracer_of
from ..archive.records import DeadLetter
from ..archive.store import DeadLetterArchive
from . import metrics
from .batch_store import ArchiverStats, BatchStore, Delivery, dead_letters_of
from .maintenance import DEFAULT_MAINTENANCE_INTERVAL_S, apply_retention

__all__ = ["ArchiverStats", "DeadLetterArchiver", "main"]

logger = logging.getLogger("provider_jobs.dlq.archiver")

#: First wait after a failure; doubled on each further failure up to ``max_backoff_s``.
_MIN_BACKOFF_S = 0.05

#: Called with the batch after its commit and before its ack (a test seam).
AfterCommit = Callable[[Sequence[DeadLetter]], None]


class DeadLetterArchiver:
    """Consumes the dead-letter queues of ``queues`` into ``archive``.

    Args:
        archive: Where records go.
        broker_url: RabbitMQ URL, or several separated by commas (tried in order on each connect).
        queue_type: ``classic`` or ``quorum``: how a missing ``<queue>.XQ`` is declared. Default ``classic``.
        queues: Work queues whose ``<queue>.XQ`` to drain.
        batch_size: Messages per transaction. Default 200.
        flush_ms: Longest a partial batch waits. Default 200.
        max_backoff_s: Cap on the wait between retries (archive or broker down). Default 30.
        retention_days: Purge records older than this; ``None`` keeps them. Default ``None``.
        max_records: The archive's cap; ``None`` for no cap. Default ``None``.
        maintenance_interval_s: How often retention runs. Default 300.
        after_commit: Called after each commit, before the ack (for fault tests).
        tracer_provider: An OpenTelemetry ``TracerProvider``: each new record gets an ``archive``
            span in its job's trace. Default ``None``: the global one, if one is set.
    """

    def __init__(
        self,
        *,
        archive: DeadLetterArchive,
        broker_url: str,
        queues: Sequence[str],
        queue_type: str = "classic",
        batch_size: int = 200,
        flush_ms: int = 200,
        max_backoff_s: float = 30.0,
        retention_days: float | None = None,
        max_records: int | None = None,
        maintenance_interval_s: float = DEFAULT_MAINTENANCE_INTERVAL_S,
        after_commit: AfterCommit | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.archive = archive
        self.broker_url = broker_url
        self.queue_type = queue_type
        self.dead_letter_queues = [xq_name(q) for q in queues]
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.max_backoff_s = max_backoff_s
        self.retention_days = retention_days
        self.max_records = max_records
        self.maintenance_interval_s = maintenance_interval_s
        self.after_commit = after_commit
        self.stats = ArchiverStats()
        self._store = BatchStore(archive=archive, stats=self.stats)
        self._stop = threading.Event()
        self._pending: list[Delivery] = []
        #: Tags delivered on the current channel and not acked: pending, in a flush, or given up.
        self._unacked: set[int] = set()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._next_maintenance = 0.0
        self._archive_down = False
        self._tracer = tracer_of(tracer_provider)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeadLetterArchiver:
        """An archiver configured by ``settings``; keyword arguments override."""
        options: dict[str, Any] = {
            "archive": DeadLetterArchive(settings.archive_url, redact_keys=settings.redact_keys),
            "broker_url": settings.broker_url,
            "queues": settings.archived_queues,
            "queue_type": settings.queue_type,
            "batch_size": settings.archiver_batch_size,
            "flush_ms": settings.archiver_flush_ms,
            "max_backoff_s": settings.archiver_max_backoff_s,
            "retention_days": settings.archive_retention_days,
            "max_records": settings.archive_max_records,
        }
        options.update(overrides)
        return cls(**options)

    def stop(self) -> None:
        """Ask :meth:`run` to flush what it holds and return; safe from any thread."""
        self._stop.set()

    # -- the loop -----------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> ArchiverStats:
        """Archive dead letters until :meth:`stop` (or, with ``until_idle``, until
        every dead-letter queue is empty and nothing is in hand).
        """
        backoff = _MIN_BACKOFF_S
        logger.info(
            "Archiving %s from %s into %r",
            ", ".join(self.dead_letter_queues),
            redact_url(self.broker_url),
            self.archive,
        )
        while not self._stop.is_set():
            try:
                self._connect()
                backoff = _MIN_BACKOFF_S
                if self._consume(until_idle=until_idle):
                    break
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.stats.reconnects += 1
                logger.warning(
                    "RabbitMQ connection lost (%s: %s); %d delivery(ies) in hand go back to the queue; "
                    "reconnecting in %.2f s",
                    type(exc).__name__,
                    exc,
                    len(self._pending),
                    backoff,
                )
                self._pending = []
                self._unacked = set()
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        self._close()
        logger.info(
            "Archiver stopped: %d archived, %d duplicate(s) skipped in %d batch(es)",
            self.stats.archived,
            self.stats.duplicates,
            self.stats.batches,
        )
        return self.stats

    def _connect(self) -> None:
        params = broker_parameters(self.broker_url)
        for each in params:
            each.connection_attempts = 1
            each.socket_timeout = 5
        self._unacked = set()
        self._connection = pika.BlockingConnection(params)
        for queue in self.dead_letter_queues:
            self._ensure_queue(queue)
        channel = self._connection.channel()
        channel.basic_qos(prefetch_count=self.batch_size * 2)
        for queue in self.dead_letter_queues:
            channel.basic_consume(queue, self._on_message(queue))
        self._channel = channel
        logger.info("Connected to RabbitMQ at %s", redact_url(self.broker_url))

    def _ensure_queue(self, queue: str) -> None:
        """Declare ``queue`` as Dramatiq does, unless it already exists (with any arguments)."""
        assert self._connection is not None
        channel = self._connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            channel = self._connection.channel()
            arguments = dead_letter_queue_arguments(self.queue_type, message_ttl_ms=DEAD_MESSAGE_TTL)
            # A worker may declare it meanwhile, of the other type: one line, not a reconnect loop.
            declare_queue(self._connection, channel, queue, arguments)
        if channel.is_open:
            channel.close()

    def _on_message(self, queue: str) -> Callable[..., None]:
        def on_message(channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
            self._pending.append(Delivery(queue, method.delivery_tag, body, properties, method.redelivered))
            self._unacked.add(method.delivery_tag)

        return on_message

    def _consume(self, *, until_idle: bool) -> bool:
        """Returns ``True`` when done (idle with ``until_idle``), ``False`` when stopped."""
        assert self._connection is not None
        deadline = time.monotonic() + self.flush_s
        while True:
            if time.monotonic() >= self._next_maintenance:
                self._maintain()
            stopping = self._stop.is_set()
            self._connection.process_data_events(
                time_limit=0 if stopping else max(0.0, min(deadline - time.monotonic(), self.flush_s))
            )
            now = time.monotonic()
            if self._pending and (len(self._pending) >= self.batch_size or now >= deadline or stopping):
                self._flush()
                deadline = time.monotonic() + self.flush_s
            elif stopping and not self._pending:
                return False
            elif not self._pending and (now >= deadline or until_idle):
                # With until_idle, asked as soon as nothing is in hand, not a flush interval later.
                if until_idle and self._idle():
                    return True
                deadline = now + self.flush_s

    def _idle(self) -> bool:
        """Whether every dead-letter queue is empty and nothing more was delivered."""
        assert self._connection is not None and self._channel is not None
        if not all(
            self._channel.queue_declare(q, passive=True).method.message_count == 0
            for q in self.dead_letter_queues
        ):
            return False
        # Deliveries that came before the declare's answer are dispatched only now.
        self._connection.process_data_events(time_limit=0)
        return not self._pending

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        records = dead_letters_of(batch)
        backoff = _MIN_BACKOFF_S
        while True:
            try:
                records, new_keys = self._store.store_batch(batch, records)
                break
            except ArchiveError as exc:
                self.stats.archive_failures += 1
                self._archive_down = True
                metrics.ARCHIVE_UP.set(0)
                level = logging.WARNING if isinstance(exc, ArchiveUnavailable) else logging.ERROR
                logger.log(
                    level,
                    "%s; keeping %d dead letter(s) unacked in RabbitMQ, retrying in %.2f s",
                    exc,
                    len(batch),
                    backoff,
                )
                if self._stop.is_set():
                    # Left unacked (and out of every later ack): RabbitMQ requeues them when
                    # the channel closes and hands them to the next archiver.
                    logger.warning("Stopping: %d dead letter(s) not stored go back to RabbitMQ", len(batch))
                    return
                assert self._connection is not None
                # sleep() keeps the AMQP connection (heartbeats) alive; new deliveries
                # collect in self._pending, bounded by prefetch.
                self._connection.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        if self._archive_down:
            self._archive_down = False
            logger.info("Archive available again; stored the %d dead letter(s) held back", len(batch))
        metrics.ARCHIVE_UP.set(1)
        if self.after_commit is not None:
            self.after_commit(records)
        if self._tracer is not None:
            _trace_archived(self._tracer, records, new_keys)
        self._ack([d.tag for d in batch])
        self._store.count(records, new_keys)

    def _ack(self, tags: Sequence[int]) -> None:
        """Ack exactly ``tags``: at once when no other unacked delivery precedes the last of them."""
        assert self._channel is not None
        batch = set(tags)
        top = max(batch)
        if all(tag in batch for tag in self._unacked if tag <= top):
            self._channel.basic_ack(delivery_tag=top, multiple=True)
        else:
            for tag in sorted(batch):
                self._channel.basic_ack(delivery_tag=tag)
        self._unacked -= batch

    def _maintain(self) -> None:
        self._next_maintenance = time.monotonic() + self.maintenance_interval_s
        apply_retention(self.archive, retention_days=self.retention_days, max_records=self.max_records)

    def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()


def _trace_archived(tracer: Any, records: Sequence[DeadLetter], new_keys: set[str]) -> None:
    """An ``archive`` span for each record of the batch that was new, in its job's trace."""
    from ...tracing import archive_spans

    stored = []
    for record in records:
        if record.dedupe_key in new_keys:
            body = record.decoded_body()
            stored.append((record.source_queue, record.message_id, body.get("options") if body else None))
    archive_spans(tracer, stored)


def main(settings: Settings | None = None) -> None:
    """Run the archiver until SIGINT or SIGTERM; unacked messages stay in RabbitMQ."""
    from ...log_config import configure_logging

    settings = settings or Settings.from_env()
    configure_logging(
        log_format=settings.log_format, level=settings.log_level, redact_keys=settings.redact_keys
    )
    configure_tracing(service_name="provider-jobs-archiver")
    archiver = DeadLetterArchiver.from_settings(settings)

    def handle(signum: int, frame: FrameType | None) -> None:
        archiver.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    archiver.run()
    archiver.archive.close()


if __name__ == "__main__":
    main()
