"""BatchStore: commits one batch of deliveries as dead letters, quarantining what the archive refuses.

Part of :class:`~.consumer.DeadLetterArchiver`, which acks a batch only after
:meth:`BatchStore.store_batch` returns. A record the archive refuses (not
unavailable: an error that retrying will not cure) is stored as a minimal
``unarchivable`` record instead, so one bad dead letter never blocks the rest.
Raw bodies that only look like duplicates get a key of their own.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pika

from ...errors import ArchiveError, ArchiveUnavailable
from ..archive.from_delivery import dead_letter_from_delivery
from ..archive.raw_records import quarantined, unreadable
from ..archive.records import DeadLetter
from ..archive.store import DeadLetterArchive
from . import metrics

__all__ = ["ArchiverStats", "BatchStore", "Delivery", "dead_letters_of"]

#: The archiver's logger: storing is a step of :class:`~.consumer.DeadLetterArchiver`.
logger = logging.getLogger("provider_jobs.dlq.archiver")


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


@dataclass
class Delivery:
    """One delivery consumed from an XQ, held until its batch is committed and acked."""

    queue: str
    tag: int
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool


def dead_letters_of(batch: Sequence[Delivery]) -> list[DeadLetter]:
    """The records of ``batch``, in order, archived now.

    A delivery that cannot be read (any exception: a bug, a header nested too
    deeply) becomes an ``unarchivable`` record of its raw body and what went
    wrong, so that it never stops the archiver.
    """
    records = []
    for d in batch:
        try:
            record = dead_letter_from_delivery(
                d.body,
                d.properties.headers,
                source_queue=d.queue,
                amqp_message_id=d.properties.message_id,
                amqp_timestamp_s=d.properties.timestamp,
            )
        except Exception as exc:
            logger.exception(
                "Could not read dead letter %s from %s; archived it as category unarchivable with its "
                "raw body",
                d.properties.message_id,
                d.queue,
            )
            record = unreadable(
                d.body,
                exc,
                source_queue=d.queue,
                amqp_message_id=d.properties.message_id,
                amqp_timestamp_s=d.properties.timestamp,
            )
        records.append(record)
    return records


class BatchStore:
    """Stores batches of records in ``archive`` and counts them in ``stats``.

    Args:
        archive: Where records go.
        stats: The archiver's counters, updated in place.
    """

    def __init__(self, *, archive: DeadLetterArchive, stats: ArchiverStats) -> None:
        self.archive = archive
        self.stats = stats

    def store_batch(
        self, batch: Sequence[Delivery], records: list[DeadLetter]
    ) -> tuple[list[DeadLetter], set[str]]:
        """Store ``records``, the records of ``batch`` (:func:`dead_letters_of`).

        Returns:
            The records as stored, and every new key.

        Raises:
            ArchiveError: The archive is unavailable, or refused even a quarantined record.
        """
        new_keys = set(self.store(records))
        return self._store_raw_twins(batch, records, new_keys)

    def count(self, records: Sequence[DeadLetter], new_keys: set[str]) -> None:
        """Count a committed batch: new records as archived, the others as duplicates."""
        self.stats.batches += 1
        # Counted per queue and batch: a labelled counter costs microseconds a call.
        archived: Counter[str] = Counter()
        for record in records:
            queue = record.source_queue
            if record.dedupe_key in new_keys:
                new_keys.discard(record.dedupe_key)
                archived[queue] += 1
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
        for queue, count in archived.items():
            self.stats.archived += count
            self.stats.per_queue[queue] = self.stats.per_queue.get(queue, 0) + count
            metrics.ARCHIVED.labels(queue).inc(count)

    def _store_raw_twins(
        self, batch: Sequence[Delivery], records: list[DeadLetter], new_keys: set[str]
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
        return records, new_keys | set(self.store([records[p] for p in twins]))

    def store(self, records: Sequence[DeadLetter]) -> list[str]:
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
        except Exception as exc:  # ArchiveError, or what a driver raised on a value (not wrapped)
            logger.warning("%s; storing the batch of %d record by record", _why(exc), len(records))
        new_keys: list[str] = []
        for record in records:
            try:
                new_keys += self.archive.store([record])
            except ArchiveUnavailable:
                raise
            except Exception as exc:
                self.stats.quarantined += 1
                metrics.QUARANTINED.labels(record.source_queue).inc()
                logger.error(
                    "Archive refused dead letter %s from %s (%s); archived it as category unarchivable "
                    "with its raw body",
                    record.message_id or record.dedupe_key,
                    record.source_queue,
                    _why(exc),
                )
                new_keys += self._store_quarantined(quarantined(record, _why(exc)))
        return new_keys

    def _store_quarantined(self, record: DeadLetter) -> list[str]:
        try:
            return self.archive.store([record])
        except ArchiveError:
            raise
        except Exception as exc:
            raise ArchiveError(f"Archive refused the quarantined record {record.dedupe_key}: {exc}") from exc


def _why(exc: Exception) -> str:
    """``exc`` as a log line: an archive error words itself; anything else is named by its type."""
    return str(exc) if isinstance(exc, ArchiveError) else f"{type(exc).__name__}: {exc}"
