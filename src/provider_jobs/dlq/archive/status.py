"""Record statuses, and ArchiveStatus: the writes that set them outside a replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .audit import audit_row
from .database import ArchiveDatabase, chunks, epoch_ms, moved
from .filters import RecordFilter

__all__ = ["DEAD", "DISCARDED", "REPLAYED", "STATUSES", "UNCERTAIN", "ArchiveStatus"]

DEAD, REPLAYED, DISCARDED = "dead", "replayed", "discarded"
#: A record an interrupted operation may have sent: no replay sends it (not even forced)
#: until an operator says whether it was sent (:meth:`~.operations.ArchiveOperations.resolve_uncertain`).
UNCERTAIN = "uncertain"
#: Every status a record can have.
STATUSES = (DEAD, REPLAYED, DISCARDED, UNCERTAIN)


class ArchiveStatus(ArchiveDatabase):
    """Discarding and escalating records; part of :class:`~.archive.DeadLetterArchive`."""

    def set_status(
        self, record_filter: RecordFilter, status: str, *, who: str, reason: str | None, action: str
    ) -> list[int]:
        """Set the status of every record matching ``record_filter`` that is not claimed.

        Returns:
            The ids changed.
        """
        table = self.records
        with self._write(f"{action} records") as conn:
            matched = conn.execute(
                sa.select(table.c.id, table.c.fingerprint, table.c.status)
                .where(*record_filter.clauses(table), table.c.claim_token.is_(None))
                .with_for_update()
            ).all()
            if not matched:
                return []
            ids = [r.id for r in matched]
            now = epoch_ms()
            for chunk in chunks(ids, 500):
                conn.execute(
                    table.update()
                    .where(table.c.id.in_(chunk))
                    .values(status=status, status_reason=reason, updated_ms=now)
                )
            self._groups.apply(conn, moved([(r.fingerprint, r.status) for r in matched], status))
            conn.execute(
                self.audit_log.insert(),
                [
                    audit_row(who=who, action=action, record_id=i, reason=reason, at_ms=now, details={})
                    for i in ids
                ],
            )
            return ids

    def mark_escalated(
        self, ids: Sequence[int], *, who: str, reason: str | None, details: dict[str, Any] | None = None
    ) -> None:
        """Note that records were escalated, so that triage does not escalate them again."""
        if not ids:
            return
        table = self.records
        with self._write("marking records escalated") as conn:
            now = epoch_ms()
            conn.execute(table.update().where(table.c.id.in_(list(ids))).values(escalated_ms=now))
            conn.execute(
                self.audit_log.insert(),
                [
                    audit_row(
                        who=who,
                        action="escalate",
                        record_id=i,
                        reason=reason,
                        at_ms=now,
                        details=details or {},
                    )
                    for i in ids
                ],
            )
