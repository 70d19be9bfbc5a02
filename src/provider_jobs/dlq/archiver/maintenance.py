"""Archive maintenance while the archiver runs: retention by age and the record cap."""

from __future__ import annotations

import logging

from ...errors import ArchiveError
from ..archive.store import DeadLetterArchive
from . import metrics

__all__ = ["DEFAULT_MAINTENANCE_INTERVAL_S", "apply_retention"]

#: The archiver's logger: maintenance runs inside :class:`~.consumer.DeadLetterArchiver`.
logger = logging.getLogger("provider_jobs.dlq.archiver")

#: How often retention and the cap are applied while the archiver runs.
DEFAULT_MAINTENANCE_INTERVAL_S = 300.0


def apply_retention(
    archive: DeadLetterArchive, *, retention_days: float | None, max_records: int | None
) -> None:
    """Purge what ``retention_days`` and ``max_records`` allow, update the gauges and log.

    Does nothing when both are ``None``; an archive error is logged and skipped,
    to be tried again at the next interval.

    Args:
        archive: The archive to maintain.
        retention_days: Purge records older than this; ``None`` keeps them.
        max_records: The archive's cap; ``None`` for no cap.
    """
    if retention_days is None and max_records is None:
        return
    try:
        report = archive.apply_retention(
            retention_days=retention_days or 36_500.0, max_records=max_records or 2**62
        )
    except ArchiveError as exc:
        logger.warning("Retention skipped: %s", exc)
        return
    metrics.ARCHIVE_RECORDS.set(report.records)
    metrics.ARCHIVE_OVER_CAP.set(report.over_cap)
    metrics.EXPIRED.inc(report.expired)
    metrics.EVICTED.inc(report.evicted)
    if report.expired or report.evicted:
        logger.info(
            "Retention: purged %d record(s) older than %s day(s), evicted %d handled record(s) "
            "for the cap of %s",
            report.expired,
            retention_days,
            report.evicted,
            max_records,
        )
    if report.over_cap:
        logger.warning(
            "Archive holds %d records, %d above its cap of %s, all unhandled dead letters: "
            "they are kept. Replay, discard or purge them (provider-jobs dlq groups).",
            report.records,
            report.over_cap,
            max_records,
        )
