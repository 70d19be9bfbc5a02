"""ArchiveRetention: purging records, by filter or by age and the archive's cap."""

from __future__ import annotations

import sqlalchemy as sa

from .audit import audit_row
from .database import ArchiveDatabase, chunks, epoch_ms, removed
from .filters import RecordFilter, RetentionReport
from .status import DEAD, UNCERTAIN

__all__ = ["ArchiveRetention"]


class ArchiveRetention(ArchiveDatabase):
    """Deleting records, audited; part of :class:`~.archive.DeadLetterArchive`."""

    def purge(
        self, record_filter: RecordFilter, *, who: str, reason: str | None, action: str = "purge"
    ) -> int:
        """Delete every record matching ``record_filter`` that is not claimed; audited.

        Returns:
            How many were deleted.
        """
        table = self.records
        with self._write("purging records") as conn:
            deleted = conn.execute(
                table.delete()
                .where(*record_filter.clauses(table), table.c.claim_token.is_(None))
                .returning(table.c.fingerprint, table.c.status)
            ).all()
            count = len(deleted)
            self._groups.apply(conn, removed(deleted))
            conn.execute(
                self.audit_log.insert(),
                audit_row(
                    who=who,
                    action=action,
                    record_id=None,
                    reason=reason,
                    details={"filter": record_filter.describe(), "deleted": count},
                ),
            )
            return count

    def apply_retention(
        self, *, retention_days: float, max_records: int, who: str = "archiver", now_ms: int | None = None
    ) -> RetentionReport:
        """Purge records older than ``retention_days``; above ``max_records``, evict the
        oldest replayed or discarded ones. Unhandled and uncertain dead letters are never evicted
        for the cap: the report says by how much the archive is over it.
        """
        now = now_ms if now_ms is not None else epoch_ms()
        cutoff = now - int(retention_days * 86_400_000)
        table = self.records
        with self._write("applying retention") as conn:
            gone = list(
                conn.execute(
                    table.delete()
                    .where(table.c.archived_ms < cutoff, table.c.claim_token.is_(None))
                    .returning(table.c.fingerprint, table.c.status)
                )
            )
            expired = len(gone)
            total = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            evicted = 0
            if total > max_records:
                victims = [
                    r[0]
                    for r in conn.execute(
                        sa.select(table.c.id)
                        .where(table.c.status.notin_([DEAD, UNCERTAIN]), table.c.claim_token.is_(None))
                        .order_by(table.c.archived_ms, table.c.id)
                        .limit(total - max_records)
                    )
                ]
                for chunk in chunks(victims, 500):
                    evicted_rows = conn.execute(
                        table.delete()
                        .where(table.c.id.in_(chunk))
                        .returning(table.c.fingerprint, table.c.status)
                    ).all()
                    evicted += len(evicted_rows)
                    gone += evicted_rows
            self._groups.apply(conn, removed(gone))
            remaining = total - evicted
            if expired or evicted:
                conn.execute(
                    self.audit_log.insert(),
                    audit_row(
                        who=who,
                        action="retention",
                        record_id=None,
                        reason=None,
                        at_ms=now,
                        details={
                            "expired": expired,
                            "evicted": evicted,
                            "retention_days": retention_days,
                            "max_records": max_records,
                        },
                    ),
                )
        return RetentionReport(
            expired=expired, evicted=evicted, records=remaining, over_cap=max(0, remaining - max_records)
        )
