"""The paced send strategy: messages spaced to a rate, each record claimed only when it is due.

A paced replay may last hours. It settles about a second of messages per
publish (:func:`paced_batch_size`), and claims each record right before its
message goes, so that no claim is held through a pacing wait (a claim held
that long could expire and be taken over). A chunk's confirmed records are
marked in one transaction and the others released in one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ...errors import ArchiveError
from ...rabbitmq.bulk import BulkPublisher, OutgoingMessage
from .batch import Emit, SendContext, SentBatch, claim_batch, logger, settle_batch
from .gate import HealthGate
from .pacing import Pacer
from .report import ReplayOutcome, ReplayPlan, failed, not_claimed, record_id_of

__all__ = ["paced_batch_size", "send_paced"]

#: Seconds of messages a paced replay settles per chunk: its claims are held about this long.
_PACED_CHUNK_S = 1.0


def paced_batch_size(rate_per_s: float, window: int) -> int:
    """Records per chunk at ``rate_per_s``: about a second of messages, at most ``window``."""
    return max(1, min(window, int(rate_per_s * _PACED_CHUNK_S)))


def send_paced(
    gate: HealthGate, publisher: BulkPublisher, context: SendContext, emit: Emit, *, rate_per_s: float
) -> None:
    """Send the gate's batches at most ``rate_per_s`` messages a second, handing each
    chunk's outcomes to ``emit`` once it is settled; wait while only records of paused
    providers are left."""
    pacer = Pacer(rate_per_s)
    while (batch := gate.next_batch()) or gate.holding:
        if batch:
            emit(_send_chunk(batch, publisher, context, pacer))
        else:
            gate.wait()


def _send_chunk(
    chunk: Sequence[ReplayPlan[Any]], publisher: BulkPublisher, context: SendContext, pacer: Pacer
) -> list[ReplayOutcome]:
    """Claim each record when the rate lets its message go, publish, then settle the chunk."""
    claimed = claim_batch(chunk, context, claim_all=False)
    outcomes, candidates, token = claimed.outcomes, claimed.candidates, claimed.token
    sent = SentBatch()
    archive_errors: list[ArchiveError] = []

    def claim_each() -> Iterator[tuple[int, ReplayPlan[Any]]]:
        # The chunk's first wait was taken before publish_many (nothing in flight then).
        waited = True
        for k, (position, plan) in enumerate(candidates):
            if not waited:
                pacer.wait()
            waited = False
            try:
                _, mine = context.archive.claim_many(
                    [record_id_of(plan)], allow_statuses=context.allowed, token=token
                )
            except ArchiveError as exc:
                archive_errors.append(exc)
                for later, later_plan in candidates[k:]:
                    outcomes[later] = failed(later_plan, f"not sent: {exc}")
                return
            if mine:
                yield position, plan
            else:
                # Nothing is sent for it: the next record may take its slot.
                pacer.refund()
                outcomes[position] = not_claimed(plan)

    def messages() -> Iterator[OutgoingMessage]:
        for position, plan in claim_each():
            yield sent.take(position, plan, tracer=context.tracer)

    if candidates:
        pacer.wait()
    # Paced here, not by publish_many: its pacing waits after a chunk's last send,
    # while the chunk's claims are held and not yet marked.
    sent.publish(publisher, messages())
    in_order = settle_batch(claimed, sent, context)
    if archive_errors:
        logger.error("Replay stopped: %s", archive_errors[0])
    return in_order
