"""Prometheus metrics of the archiver, in the default registry (served by the API's ``/metrics``).

In prometheus multiprocess mode the gauges are ``livemostrecent``: the value
last set by a live process, with no ``pid`` label, and nothing left behind by
an archiver that exited.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "ARCHIVED",
    "ARCHIVE_OVER_CAP",
    "ARCHIVE_RECORDS",
    "ARCHIVE_UP",
    "DUPLICATES",
    "EVICTED",
    "EXPIRED",
    "QUARANTINED",
]

#: Dead letters committed to the archive (then acked), per XQ.
ARCHIVED = Counter("provider_jobs_dlq_archived", "Dead letters archived", ["queue"])
#: Deliveries that were already archived (a redelivery after a crash or a lost ack).
DUPLICATES = Counter("provider_jobs_dlq_duplicates", "Redelivered dead letters not archived twice", ["queue"])
#: 1 while the archiver can write to the archive, 0 while it keeps messages unacked.
ARCHIVE_UP = Gauge(
    "provider_jobs_dlq_archive_up",
    "Whether the archive database accepts writes",
    multiprocess_mode="livemostrecent",
)
#: Records in the archive after the last retention pass.
ARCHIVE_RECORDS = Gauge(
    "provider_jobs_dlq_archive_records",
    "Records in the dead-letter archive",
    multiprocess_mode="livemostrecent",
)
#: Records above ``archive_max_records`` that are unhandled dead letters and were kept.
ARCHIVE_OVER_CAP = Gauge(
    "provider_jobs_dlq_archive_over_cap",
    "Unhandled dead letters kept above the cap",
    multiprocess_mode="livemostrecent",
)
#: Replayed or discarded records evicted to keep the archive under its cap.
EVICTED = Counter("provider_jobs_dlq_evicted", "Handled records evicted for the archive cap")
#: Records purged because they were older than the retention period.
EXPIRED = Counter("provider_jobs_dlq_expired", "Records purged by retention")
#: Dead letters the archive refused as parsed, archived as minimal ``unarchivable`` records.
QUARANTINED = Counter(
    "provider_jobs_dlq_quarantined", "Dead letters archived as raw unarchivable records", ["queue"]
)
