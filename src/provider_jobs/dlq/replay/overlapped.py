"""The unpaced send strategy: batches published as fast as confirms allow, the archive's work overlapping.

One archive thread claims batches and settles them while the calling thread
publishes: the database drivers release the GIL while they work, so their time
mostly hides behind the publishing. Claims are taken two batches ahead and
queued before the settling of the batch just sent, so that the next publish
rarely waits for a claim. The thread runs one job at a time, in order, so
claims and marks never wait for each other's locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from ...errors import ArchiveError
from ...rabbitmq.bulk import BulkPublisher, OutgoingMessage
from .batch import ClaimedBatch, Emit, SendContext, SentBatch, claim_batch, logger, settle_batch
from .gate import HealthGate
from .report import ReplayOutcome, not_claimed, record_id_of

__all__ = ["send_overlapped"]

#: Batches an unpaced replay has claimed ahead of the one it publishes.
_CLAIMS_AHEAD = 2


def send_overlapped(gate: HealthGate, publisher: BulkPublisher, context: SendContext, emit: Emit) -> None:
    """Send the gate's batches unpaced, the archive's work overlapping RabbitMQ's.

    Outcomes are handed to ``emit`` here, in order, as batches are settled. When only
    records of paused providers are left, everything sent is settled before waiting for
    one to resume. Whatever stops the replay, every batch published is settled (its
    records marked or released) and the claims taken ahead are given back.
    """
    claiming: deque[Future[ClaimedBatch]] = deque()
    settling: deque[Future[list[ReplayOutcome]]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-archive") as archive_thread:

        def claim_ahead() -> None:
            while len(claiming) < _CLAIMS_AHEAD and (batch := gate.next_batch()):
                claiming.append(archive_thread.submit(claim_batch, batch, context, claim_all=True))

        try:
            claim_ahead()
            while claiming or gate.holding:
                if not claiming:
                    while settling:
                        emit(settling.popleft().result())
                    gate.wait()
                    claim_ahead()
                    continue
                claimed_batch = claiming.popleft().result()
                sent = _publish(claimed_batch, publisher, context)
                claim_ahead()
                settling.append(archive_thread.submit(settle_batch, claimed_batch, sent, context))
                while settling and settling[0].done():
                    emit(settling.popleft().result())
        finally:
            for ahead_claim in claiming:
                archive_thread.submit(_release_unsent, ahead_claim, context)
            futures_wait(settling)
    for settled in settling:
        emit(settled.result())


def _publish(claimed: ClaimedBatch, publisher: BulkPublisher, context: SendContext) -> SentBatch:
    """Publish the won records of a batch, with their confirms in flight."""
    sent = SentBatch()
    won_ids = set(claimed.won)

    def messages() -> Iterator[OutgoingMessage]:
        for position, plan in claimed.candidates:
            if record_id_of(plan) not in won_ids:
                claimed.outcomes[position] = not_claimed(plan)
                continue
            yield sent.take(position, plan, tracer=context.tracer)

    sent.publish(publisher, messages())
    return sent


def _release_unsent(claiming: Future[ClaimedBatch], context: SendContext) -> None:
    """Give back the claims of a batch claimed ahead and never published."""
    if claiming.exception() is not None:
        return
    claimed = claiming.result()
    if not claimed.won:
        return
    try:
        context.archive.release_many(claimed.won, claimed.token)
    except ArchiveError as exc:
        logger.warning(
            "Could not release the claims of %d record(s) not sent (%s); they can be replayed "
            "again once the claims expire",
            len(claimed.won),
            exc,
        )
