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

Run it with ``provider-jobs archiver`` or ``python -m provider_jobs.dlq.consumer``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import xq_name

from ..connectivity import redact_url
from ..errors import ArchiveError, ArchiveUnavailable
from ..settings import Settings
from . import metrics
from .archive import DeadLetterArchive
from .records import DeadLetter, dead_letter_from_delivery, quarantined

__all__ = ["ArchiverStats", "DeadLetterArchiver", "main"]

logger = logging.getLogger("provider_jobs.dlq.archiver")

#: First wait after a failure; doubled on each further failure up to ``max_backoff_s``.
_MIN_BACKOFF_S = 0.05
#: How often retention and the cap are applied while the archiver runs.
DEFAULT_MAINTENANCE_INTERVAL_S = 300.0

#: Called with the batch after its commit and before its ack (a test seam).
AfterCommit = Callable[[Sequence[DeadLetter]], None]


@dataclass
class _Delivery:
    queue: str
    tag: int
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool


@dataclass
class ArchiverStats:
    """What the archiver has done since it started."""

    archived: int = 0
    duplicates: int = 0
    batches: int = 0
    archive_failures: int = 0
    quarantined: int = 0
    reconnects: int = 0
    per_queue: dict[str, int] = field(default_factory=dict)


class DeadLetterArchiver:
    """Consumes the dead-letter queues of ``queues`` into ``archive``.

    Args:
        archive: Where records go.
        broker_url: RabbitMQ URL.
        queues: Work queues whose ``<queue>.XQ`` to drain.
        batch_size: Messages per transaction. Default 200.
        flush_ms: Longest a partial batch waits. Default 200.
        max_backoff_s: Cap on the wait between retries (archive or broker down). Default 30.
        retention_days: Purge records older than this; ``None`` keeps them. Default ``None``.
        max_records: The archive's cap; ``None`` for no cap. Default ``None``.
        maintenance_interval_s: How often retention runs. Default 300.
        after_commit: Called after each commit, before the ack (for fault tests).
    """

    def __init__(
        self,
        *,
        archive: DeadLetterArchive,
        broker_url: str,
        queues: Sequence[str],
        batch_size: int = 200,
        flush_ms: int = 200,
        max_backoff_s: float = 30.0,
        retention_days: float | None = None,
        max_records: int | None = None,
        maintenance_interval_s: float = DEFAULT_MAINTENANCE_INTERVAL_S,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.archive = archive
        self.broker_url = broker_url
        self.dead_letter_queues = [xq_name(q) for q in queues]
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.max_backoff_s = max_backoff_s
        self.retention_days = retention_days
        self.max_records = max_records
        self.maintenance_interval_s = maintenance_interval_s
        self.after_commit = after_commit
        self.stats = ArchiverStats()
        self._stop = threading.Event()
        self._pending: list[_Delivery] = []
        #: Tags delivered on the current channel and not acked: pending, in a flush, or given up.
        self._unacked: set[int] = set()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._next_maintenance = 0.0
        self._archive_down = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeadLetterArchiver:
        """An archiver configured by ``settings``; keyword arguments override."""
        options: dict[str, Any] = {
            "archive": DeadLetterArchive(settings.archive_url),
            "broker_url": settings.broker_url,
            "queues": settings.archived_queues,
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
        params = pika.URLParameters(self.broker_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
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
            channel.queue_declare(queue, durable=True, arguments={"x-message-ttl": DEAD_MESSAGE_TTL})
        if channel.is_open:
            channel.close()

    def _on_message(self, queue: str) -> Callable[..., None]:
        def on_message(channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
            self._pending.append(_Delivery(queue, method.delivery_tag, body, properties, method.redelivered))
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
            elif not self._pending and now >= deadline:
                if until_idle and self._queues_empty():
                    return True
                deadline = now + self.flush_s

    def _queues_empty(self) -> bool:
        assert self._channel is not None
        return all(
            self._channel.queue_declare(q, passive=True).method.message_count == 0
            for q in self.dead_letter_queues
        )

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        records = [
            dead_letter_from_delivery(
                d.body,
                d.properties.headers,
                source_queue=d.queue,
                amqp_message_id=d.properties.message_id,
                amqp_timestamp_s=d.properties.timestamp,
            )
            for d in batch
        ]
        backoff = _MIN_BACKOFF_S
        while True:
            try:
                new_keys = set(self._store(records))
                records, new_keys = self._store_raw_twins(batch, records, new_keys)
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
        self._ack([d.tag for d in batch])
        self.stats.batches += 1
        for record in records:
            queue = record.source_queue
            if record.dedupe_key in new_keys:
                new_keys.discard(record.dedupe_key)
                self.stats.archived += 1
                self.stats.per_queue[queue] = self.stats.per_queue.get(queue, 0) + 1
                metrics.ARCHIVED.labels(queue).inc()
            else:
                self.stats.duplicates += 1
                metrics.DUPLICATES.labels(queue).inc()
                # A raw body has no id: say so louder, it is matched by its bytes alone.
                logger.log(
                    logging.WARNING if record.dedupe_key.startswith("raw:") else logging.INFO,
                    "Dead letter %s from %s was already archived; acked without a second record",
                    record.message_id or record.dedupe_key,
                    queue,
                )

    def _store_raw_twins(
        self, batch: Sequence[_Delivery], records: list[DeadLetter], new_keys: set[str]
    ) -> tuple[list[DeadLetter], set[str]]:
        """Store again, under a key of their own, raw bodies that only looked like duplicates.

        A body that is not a Dramatiq message has no id: its dedupe key is its
        bytes, death time and AMQP ids, so that a redelivery after a crash
        between commit and ack finds its record. Two *different* messages can
        share that key (the same bytes published twice within x-death's one
        second, without a ``message_id``). A delivery without the
        ``redelivered`` flag was never handed to a consumer before, so it
        cannot be in the archive yet: when its key is taken, it is such a twin
        and gets a key of its own. The one case still taken as a duplicate is a
        redelivered body whose identical twin was archived while it was itself
        never committed: that needs identical bytes in the same second *and* an
        archiver lost between delivery and commit, and is logged.

        Returns:
            The records as stored, and every new key.
        """
        twins: list[int] = []
        first_seen = set(new_keys)
        for position, (delivery, record) in enumerate(zip(batch, records, strict=True)):
            key = record.dedupe_key
            if delivery.redelivered or not key.startswith("raw:"):
                continue
            if key in first_seen:
                first_seen.discard(key)
            else:
                twins.append(position)
        if not twins:
            return records, new_keys
        records = list(records)
        for position in twins:
            record = records[position]
            records[position] = dataclasses.replace(
                record, dedupe_key=f"{record.dedupe_key}#{uuid.uuid4().hex}"
            )
        return records, new_keys | set(self._store([records[p] for p in twins]))

    def _store(self, records: Sequence[DeadLetter]) -> list[str]:
        """Store ``records`` in one transaction; if the archive refuses the batch (not
        unavailable: an error that retrying will not cure), store them one by one and
        quarantine each one refused, so one bad dead letter never blocks the rest.

        Raises:
            ArchiveError: The archive is unavailable, or refused even a quarantined record.
        """
        try:
            return self.archive.store(records)
        except ArchiveUnavailable:
            raise
        except ArchiveError as exc:
            logger.warning("%s; storing the batch of %d record by record", exc, len(records))
        new_keys: list[str] = []
        for record in records:
            try:
                new_keys += self.archive.store([record])
            except ArchiveUnavailable:
                raise
            except ArchiveError as exc:
                self.stats.quarantined += 1
                metrics.QUARANTINED.labels(record.source_queue).inc()
                logger.error(
                    "Archive refused dead letter %s from %s (%s); archived it as category unarchivable "
                    "with its raw body",
                    record.message_id or record.dedupe_key,
                    record.source_queue,
                    exc,
                )
                new_keys += self.archive.store([quarantined(record, str(exc))])
        return new_keys

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
        if self.retention_days is None and self.max_records is None:
            return
        try:
            report = self.archive.apply_retention(
                retention_days=self.retention_days or 36_500.0, max_records=self.max_records or 2**62
            )
        except ArchiveError as exc:
            logger.warning("Retention skipped: %s", exc)
            return
        metrics.ARCHIVE_RECORDS.set(report.records)
        metrics.ARCHIVE_OVER_CAP.set(report.over_cap)
        metrics.EXPIRED.inc(report.expired)
        metrics.EVICTED.inc(report.evicted)
        if report.expired or report.evicted:
            logger.info(
                "Retention: purged %d record(s) older than %s day(s), evicted %d handled record(s) "
                "for the cap of %s",
                report.expired,
                self.retention_days,
                report.evicted,
                self.max_records,
            )
        if report.over_cap:
            logger.warning(
                "Archive holds %d records, %d above its cap of %s, all unhandled dead letters: "
                "they are kept. Replay, discard or purge them (provider-jobs dlq groups).",
                report.records,
                report.over_cap,
                self.max_records,
            )

    def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()


def main(settings: Settings | None = None) -> None:
    """Run the archiver until SIGINT or SIGTERM; unacked messages stay in RabbitMQ."""
    from ..log_config import configure_logging

    settings = settings or Settings.from_env()
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    archiver = DeadLetterArchiver.from_settings(settings)

    def handle(signum: int, frame: FrameType | None) -> None:
        archiver.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    archiver.run()
    archiver.archive.close()


if __name__ == "__main__":
    main()
