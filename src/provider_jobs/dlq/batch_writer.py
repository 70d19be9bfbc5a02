"""BatchWriter: stores the archiver's batches on a thread of its own, one at a time.

Part of :class:`~.consumer.DeadLetterArchiver`. While the writer thread commits
one batch, the connection's thread goes on consuming and decoding the next, so
that the database's time (SQLite's page writes, PostgreSQL's round trips, both
outside the GIL) overlaps pika's. Decoding stays on the connection's thread:
the two threads' Python time is about even that way. The writer never touches the AMQP connection,
which is not thread-safe: when a batch is committed (or given up) it wakes the
connection's thread, which acks it there. One batch at a time, so that acks
follow commits in order; a prefetch of two batches keeps the next one coming.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import ArchiveError, ArchiveUnavailable
from . import metrics
from .batch_store import ArchiverStats, BatchStore, Delivery
from .records import DeadLetter

__all__ = ["MIN_BACKOFF_S", "AfterCommit", "BatchWriter", "WrittenBatch"]

#: The archiver's logger: storing is a step of :class:`~.consumer.DeadLetterArchiver`.
logger = logging.getLogger("provider_jobs.dlq.archiver")

#: First wait after a failure; doubled on each further failure up to the archiver's ``max_backoff_s``.
MIN_BACKOFF_S = 0.05

#: Called with the batch after its commit and before its ack (a test seam).
AfterCommit = Callable[[Sequence[DeadLetter]], None]


@dataclass
class WrittenBatch:
    """A batch the writer is done with.

    Attributes:
        deliveries: The batch as consumed.
        records: Its records as stored.
        new_keys: The dedupe keys of the records that were new.
        stored: ``False`` when the batch was given up (stopping, or its connection
            lost) while the archive was failing: it must stay unacked.
    """

    deliveries: Sequence[Delivery]
    records: list[DeadLetter]
    new_keys: set[str]
    stored: bool


class BatchWriter:
    """Stores one batch at a time on a thread of its own, retrying with backoff while the archive fails.

    Args:
        store: Stores a batch's records.
        stats: The archiver's counters, updated in place.
        stop: Set when the archiver stops: a failing batch is then given up, not retried.
        max_backoff_s: Cap on the wait between retries.
        after_commit: Called on the writer thread after each commit, before the ack.
    """

    def __init__(
        self,
        *,
        store: BatchStore,
        stats: ArchiverStats,
        stop: threading.Event,
        max_backoff_s: float,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._store = store
        self._stats = stats
        self._stop = stop
        self._max_backoff_s = max_backoff_s
        self._after_commit = after_commit
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: Future[WrittenBatch] | None = None
        #: Set to end the retries of the batch in flight at once.
        self._give_up = threading.Event()
        self._archive_down = False

    @property
    def busy(self) -> bool:
        """Whether a batch was submitted and not yet taken back with :meth:`take`."""
        return self._in_flight is not None

    def submit(
        self, deliveries: Sequence[Delivery], records: list[DeadLetter], wake: Callable[[], None]
    ) -> None:
        """Store ``records`` on the writer thread, then call ``wake`` there.

        Args:
            deliveries: The batch, in delivery order.
            records: Their records (:func:`~.batch_store.dead_letters_of`).
            wake: Called (on the writer thread) once the batch is done with; it must be thread-safe.
        """
        assert self._in_flight is None, "one batch at a time"
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlq-archive-writer")
        self._give_up.clear()
        future = self._executor.submit(self._write, deliveries, records)
        future.add_done_callback(lambda _: wake())
        self._in_flight = future

    def take(self) -> WrittenBatch | None:
        """The batch in flight if the writer is done with it, else ``None``.

        Raises:
            Exception: Whatever storing the batch raised that is not an :class:`ArchiveError`
                (which is retried), such as ``after_commit``'s exceptions.
        """
        future = self._in_flight
        if future is None or not future.done():
            return None
        self._in_flight = None
        return future.result()

    def give_up(self) -> None:
        """End the retries of the batch in flight (if the archive is failing); safe from any thread."""
        self._give_up.set()

    def abandon(self) -> None:
        """Wait for the batch in flight, ending its retries, and forget it: its connection is lost,
        so RabbitMQ redelivers it (the archive's dedupe key makes a committed one a duplicate)."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        self._give_up.set()
        exc = future.exception()
        if exc is not None:
            logger.info("Abandoned a batch whose connection was lost: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Abandon the batch in flight and end the writer thread."""
        self.abandon()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _write(self, deliveries: Sequence[Delivery], records: list[DeadLetter]) -> WrittenBatch:
        backoff = MIN_BACKOFF_S
        while True:
            try:
                records, new_keys = self._store.store_batch(deliveries, records)
                break
            except ArchiveError as exc:
                self._stats.archive_failures += 1
                self._archive_down = True
                metrics.ARCHIVE_UP.set(0)
                level = logging.WARNING if isinstance(exc, ArchiveUnavailable) else logging.ERROR
                logger.log(
                    level,
                    "%s; keeping %d dead letter(s) unacked in RabbitMQ, retrying in %.2f s",
                    exc,
                    len(deliveries),
                    backoff,
                )
                if self._stop.is_set() or self._give_up.is_set():
                    # Left unacked (and out of every later ack): RabbitMQ requeues them when
                    # the channel closes and hands them to the next archiver.
                    logger.warning(
                        "%s: %d dead letter(s) not stored go back to RabbitMQ",
                        "Stopping" if self._stop.is_set() else "Giving up",
                        len(deliveries),
                    )
                    return WrittenBatch(deliveries, records, set(), stored=False)
                self._give_up.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        if self._archive_down:
            self._archive_down = False
            logger.info("Archive available again; stored the %d dead letter(s) held back", len(deliveries))
        metrics.ARCHIVE_UP.set(1)
        if self._after_commit is not None:
            self._after_commit(records)
        return WrittenBatch(deliveries, records, new_keys, stored=True)
