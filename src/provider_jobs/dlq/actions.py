"""Replay or discard a selection of archived dead letters: the one path the CLI
(``provider-jobs dlq replay|discard``), the API (``POST /dlq/replay|discard``) and the
console's record and group actions take.

Each runs as an operation stored in the archive (:mod:`.operations`), which outlives
the process running it; a dry run plans with the :class:`~.replay.replayer.Replayer`
and stores nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .archive.filters import RecordFilter
from .archive.operations import DISCARDED_STATE
from .archive.store import DEAD, DeadLetterArchive
from .operations import Operations, describe_filter
from .replay.gate import PauseHandler, ProviderHealth
from .replay.replayer import Replayer, ReplayOutcome, ReplayReport

__all__ = ["discard_records", "replay_records"]


def replay_records(
    archive: DeadLetterArchive,
    *,
    broker_url: str,
    who: str,
    ids: list[int] | None = None,
    record_filter: RecordFilter | None = None,
    selection: dict[str, Any] | None = None,
    request_patch: dict[str, Any] | None = None,
    job_patch: dict[str, Any] | None = None,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    rate_per_s: float | None = None,
    on_outcome: Callable[[ReplayOutcome], None] | None = None,
    health: ProviderHealth | None = None,
    max_pause_s: float | None = None,
    on_pause: PauseHandler | None = None,
) -> tuple[int | None, ReplayReport]:
    """Replay the records ``ids``, or those of ``record_filter``, as an operation stored in the
    archive (a dry run is not one).

    Args:
        archive: The dead-letter archive.
        broker_url: RabbitMQ URL to publish to.
        who: Name written to the audit log.
        ids: Archive ids; when ``None``, every record ``record_filter`` selects, oldest first.
        record_filter: Which records, when ``ids`` is ``None``. Default: dead letters awaiting action.
        selection: The selection as the operation stores it. Default: ``{"ids": <count>}`` for
            ``ids``, else the filter's fields (:func:`~.operations.describe_filter`).
        request_patch: JSON merge patch for each request.
        job_patch: JSON merge patch for each job (``{"priority": 9}``).
        dry_run: Plan and report; send and change nothing.
        force: Also replay records already replayed or discarded.
        reason: Why, for the audit log.
        rate_per_s: Messages per second at most. Default: as fast as confirms allow.
        on_outcome: Called with each record's outcome as it is settled (progress).
        health: Providers' breakers (:func:`~provider_jobs.health.follow_breakers`): a paused
            provider's records wait for it. Default ``None``: every record goes at once.
        max_pause_s: Longest they wait before they are skipped. Default: until it resumes.
        on_pause: Told when a provider's records start waiting, and when they go again.

    Returns:
        The operation's id (``None`` for a dry run) and the report of what was sent.

    Raises:
        RecordNotFound, InvalidJob, NotReplayable, BrokerUnavailable: As :meth:`Replayer.replay`.
    """
    record_filter = record_filter or RecordFilter(statuses=[DEAD])
    chosen = ids if ids is not None else archive.ids(record_filter)
    if dry_run:
        replayer = Replayer(archive=archive, broker_url=broker_url, who=who)
        report = replayer.replay(
            chosen, request_patch=request_patch, job_patch=job_patch, dry_run=True, force=force
        )
        return None, report
    if selection is None:
        selection = {"ids": len(chosen)} if ids is not None else describe_filter(record_filter)
    return Operations(archive, broker_url=broker_url).replay(
        chosen,
        who=who,
        selection=selection,
        on_outcome=on_outcome,
        health=health,
        on_pause=on_pause,
        request_patch=request_patch,
        job_patch=job_patch,
        force=force,
        reason=reason,
        rate_per_s=rate_per_s,
        max_pause_s=max_pause_s,
    )


def discard_records(
    archive: DeadLetterArchive, record_filter: RecordFilter, *, who: str, reason: str
) -> list[int]:
    """Mark the dead letters awaiting action that ``record_filter`` selects discarded, audited,
    as an operation stored in the archive.

    Records already replayed or discarded stay as they are.

    Returns:
        The ids discarded.

    Raises:
        RecordNotFound: One of the filter's ``ids`` is not in the archive.
    """
    for record_id in record_filter.ids if record_filter.ids is not None else ():
        archive.get(record_id)
    record_filter = dataclasses.replace(record_filter, statuses=[DEAD])
    chosen = archive.ids(record_filter)
    if not chosen:
        return []
    operations = Operations(archive, broker_url="")
    op_id = operations.start_discard(chosen, who=who, selection=describe_filter(record_filter), reason=reason)
    operations.run(op_id)
    return [r.record_id for r in operations.records(op_id, states=[DISCARDED_STATE], limit=len(chosen))]
