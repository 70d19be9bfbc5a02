"""What the archive holds: records by status, dead letters awaiting action by category, the oldest."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..dlq import DEAD, STATUSES, DeadLetterArchive, RecordFilter
from ..errors import ArchiveError

__all__ = ["ArchiveCollector", "ArchiveSummary", "summarise_archive"]

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


class ArchiveCollector(Collector):
    """Archive gauges read at each scrape.

    Exposes ``provider_jobs_dlq_archive_reachable``, ``provider_jobs_dlq_records{status}``,
    ``provider_jobs_dlq_awaiting_action{category}``,
    ``provider_jobs_dlq_oldest_awaiting_age_seconds``, and the counters
    ``provider_jobs_dlq_replayed_total`` and ``provider_jobs_dlq_discarded_total``
    (from the audit log, which only grows, so they never go down).

    Args:
        archive: The archive to read.
    """

    def __init__(self, archive: DeadLetterArchive) -> None:
        self.archive = archive

    def collect(self) -> Iterator[Metric]:
        reachable = GaugeMetricFamily(
            "provider_jobs_dlq_archive_reachable", "Whether the API could read the archive (1) or not (0)."
        )
        try:
            summary = summarise_archive(self.archive)
        except ArchiveError:
            reachable.add_metric([], 0)
            yield reachable
            return
        reachable.add_metric([], 1)
        yield reachable
        records = GaugeMetricFamily(
            "provider_jobs_dlq_records", "Archived records by status.", labels=["status"]
        )
        for status, count in summary.by_status.items():
            records.add_metric([status], count)
        yield records
        awaiting = GaugeMetricFamily(
            "provider_jobs_dlq_awaiting_action",
            "Archived dead letters neither replayed nor discarded, by error category.",
            labels=["category"],
        )
        for category, count in summary.awaiting_by_category.items():
            awaiting.add_metric([category], count)
        yield awaiting
        oldest = GaugeMetricFamily(
            "provider_jobs_dlq_oldest_awaiting_age_seconds",
            "Age of the oldest dead letter awaiting action; 0 when none awaits.",
        )
        age_s = 0.0 if summary.oldest_awaiting_ms is None else time.time() - summary.oldest_awaiting_ms / 1000
        oldest.add_metric([], max(age_s, 0.0))
        yield oldest
        yield CounterMetricFamily(
            "provider_jobs_dlq_replayed", "Dead letters replayed, per the audit log.", value=summary.replayed
        )
        yield CounterMetricFamily(
            "provider_jobs_dlq_discarded",
            "Dead letters discarded, per the audit log.",
            value=summary.discarded,
        )
