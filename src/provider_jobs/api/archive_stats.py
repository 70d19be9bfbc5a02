"""The archive's gauges and counters for ``/metrics``, read from
:func:`~provider_jobs.dlq.summarise_archive` at each scrape."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..dlq import DeadLetterArchive
from ..dlq.summary import summarise_archive
from ..errors import ArchiveError

__all__ = ["ArchiveCollector"]


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
