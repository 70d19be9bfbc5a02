"""What the archive holds: records by status, dead letters awaiting action by category, the
oldest, and replays and discards ever made. Read by the API's metrics and the console's overview."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .archive.filters import RecordFilter
from .archive.store import DEAD, STATUSES, DeadLetterArchive

__all__ = ["ArchiveSummary", "summarise_archive"]

#: Audit actions counted as replays: plain, and with an edited job.
_REPLAY_ACTIONS = ("replay", "replay_edited")


@dataclass(frozen=True, kw_only=True)
class ArchiveSummary:
    """Counts of the dead-letter archive.

    Args:
        by_status: Records per status (``dead``, ``replayed``, ``discarded``).
        awaiting_by_category: Dead letters awaiting action (status ``dead``) per category.
        oldest_awaiting_ms: When the oldest of those was dead-lettered (ms since
            the epoch); ``None`` when none awaits.
        replayed: Replays ever recorded in the audit log (a record replayed twice counts twice).
        discarded: Discards ever recorded in the audit log.
    """

    by_status: dict[str, int]
    awaiting_by_category: dict[str, int]
    oldest_awaiting_ms: int | None
    replayed: int = 0
    discarded: int = 0


def summarise_archive(archive: DeadLetterArchive) -> ArchiveSummary:
    """Read the counts from ``archive``.

    Raises:
        ArchiveError: The archive cannot be read (``ArchiveUnavailable`` when unreachable).
    """
    awaiting = RecordFilter(statuses=[DEAD])
    # Counted from the group summary (one row per cause and status), not the records:
    # a lookup, whatever the archive's size.
    by_status = dict.fromkeys(STATUSES, 0)
    by_category: Counter[str] = Counter()
    for (status, category), count in archive.totals().items():
        by_status[status] = by_status.get(status, 0) + count
        if status == DEAD:
            by_category[category] += count
    oldest = archive.find(awaiting, limit=1, oldest_first=True)
    actions = archive.audit_counts()
    return ArchiveSummary(
        replayed=sum(actions.get(action, 0) for action in _REPLAY_ACTIONS),
        discarded=actions.get("discard", 0),
        by_status=by_status,
        awaiting_by_category=dict(sorted(by_category.items())),
        oldest_awaiting_ms=oldest[0].dead_lettered_ms if oldest else None,
    )
