"""Settling a replay batch: mark the confirmed records replayed, give back the other claims."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ...errors import ArchiveError
from ...rabbitmq.bulk import BulkResult
from ..archive.store import DeadLetterArchive, ReplayMark
from .report import PUBLISHED, ReplayOutcome, ReplayPlan, failed, record_id_of

__all__ = ["settle"]

#: The replay's logger: settling is the last step of :meth:`~.replay.Replayer.replay`.
logger = logging.getLogger("provider_jobs.dlq.replay.replayer")

#: Tries at marking published records replayed before giving up loudly.
_MARK_ATTEMPTS = 4
#: First wait between those tries, doubled each time.
_MARK_BACKOFF_S = 0.1


def settle(
    archive: DeadLetterArchive,
    candidates: Sequence[tuple[int, ReplayPlan[Any]]],
    claimed: Sequence[tuple[int, ReplayPlan[Any]]],
    sent: Sequence[dict[str, Any]],
    result: BulkResult,
    *,
    token: str,
    who: str,
    reason: str | None,
    audit: dict[str, Any],
    outcomes: dict[int, ReplayOutcome],
) -> None:
    """Mark the confirmed records replayed and release the claims of the others,
    including those never taken by the publisher."""
    confirmed = set(result.confirmed)
    failures = {f.index: f for f in result.failures}
    marks: list[tuple[int, ReplayPlan[Any], dict[str, Any]]] = []
    released: list[int] = []
    for k, (position, plan) in enumerate(claimed):
        if k in confirmed:
            marks.append((position, plan, sent[k]))
            continue
        released.append(record_id_of(plan))
        failure = failures.get(k)
        why = f"{failure.status}: {failure.detail}" if failure else "not sent: the batch stopped"
        outcomes[position] = failed(plan, f"publish failed ({why}); claim released")
    outcomes.update(_mark(archive, marks, token, who=who, reason=reason, audit=audit))
    taken = {position for position, _ in claimed}
    stopped = result.failures[0].detail if result.failures else "the publish stopped before it"
    for position, plan in candidates:
        if position not in outcomes and position not in taken:
            # Never handed to RabbitMQ (unreachable, or the connection was lost first).
            released.append(record_id_of(plan))
            outcomes[position] = failed(plan, f"not sent ({stopped}); claim released")
    if released:
        try:
            archive.release_many(released, token)
        except ArchiveError as exc:
            logger.warning(
                "Could not release the claims of %d unsent record(s) (%s); they can be replayed "
                "again once the claims expire",
                len(released),
                exc,
            )


def _mark(
    archive: DeadLetterArchive,
    marks: Sequence[tuple[int, ReplayPlan[Any], dict[str, Any]]],
    token: str,
    *,
    who: str,
    reason: str | None,
    audit: dict[str, Any],
) -> dict[int, ReplayOutcome]:
    """Mark the published records replayed, in one transaction, retried with backoff:
    a record left claimed but unmarked would be replayed again once its claim expires."""
    if not marks:
        return {}
    replay_marks = []
    for _, plan, message in marks:
        details: dict[str, Any] = {
            "queue": message["queue_name"],
            "original_message_id": plan.record.message_id,
        }
        if plan.edited:
            details.update(audit)
        replay_marks.append(
            ReplayMark(
                record_id=record_id_of(plan),
                message_id=message["message_id"],
                action="replay_edited" if plan.edited else "replay",
                details=details,
            )
        )
    trouble: str | None = None
    for attempt in range(_MARK_ATTEMPTS):
        try:
            lost = archive.mark_replayed_many(replay_marks, token, who=who, reason=reason)
        except ArchiveError as exc:
            trouble = str(exc)
            if attempt + 1 < _MARK_ATTEMPTS:
                logger.warning("Marking %d replay(s) failed (%s); retrying", len(replay_marks), exc)
                time.sleep(_MARK_BACKOFF_S * 2**attempt)
            continue
        trouble = None
        if lost:
            logger.error(
                "Records %s were published but their replay claim was lost: they may be replayed twice",
                ", ".join(map(str, lost)),
            )
        break
    if trouble is not None:
        logger.error(
            "Records %s were PUBLISHED but could not be marked replayed after %d attempts (%s): "
            "they will be replayed again once their claims expire (%s s) unless discarded",
            ", ".join(str(m.record_id) for m in replay_marks),
            _MARK_ATTEMPTS,
            trouble,
            archive.claim_ttl_s,
        )
    outcomes = {}
    for position, plan, message in marks:
        logger.info(
            "Replayed record %s (job %s) to %s as message %s",
            plan.record.id,
            plan.record.job_id,
            message["queue_name"],
            message["message_id"],
        )
        outcomes[position] = ReplayOutcome(
            record_id=record_id_of(plan),
            status=PUBLISHED,
            queue_name=message["queue_name"],
            message_id=message["message_id"],
            job_id=plan.record.job_id,
            detail=None if trouble is None else f"published, but not marked replayed: {trouble}",
        )
    return outcomes
