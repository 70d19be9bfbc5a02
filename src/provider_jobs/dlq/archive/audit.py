"""ArchiveAudit: the archive's audit log of what operators and triage did to records."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .database import ArchiveDatabase, epoch_ms
from .filters import AuditEntry

__all__ = ["ArchiveAudit", "audit_row"]


def audit_row(
    *,
    who: str,
    action: str,
    record_id: int | None,
    reason: str | None,
    details: dict[str, Any],
    at_ms: int | None = None,
) -> dict[str, Any]:
    """One audit log row, stamped now unless ``at_ms`` is given."""
    return {
        "at_ms": at_ms or epoch_ms(),
        "who": who,
        "action": action,
        "record_id": record_id,
        "reason": reason,
        "details": details,
    }


class ArchiveAudit(ArchiveDatabase):
    """Writing and reading the audit log; part of :class:`~.archive.DeadLetterArchive`."""

    def write_audit(
        self,
        *,
        who: str,
        action: str,
        record_id: int | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry to the audit log."""
        with self._write(f"writing audit entry {action}") as conn:
            conn.execute(
                self.audit_log.insert(),
                audit_row(who=who, action=action, record_id=record_id, reason=reason, details=details or {}),
            )

    def audit_counts(self) -> dict[str, int]:
        """Audit entries per action (``replay``, ``replay_edited``, ``discard``, ...): the
        totals of what operators and triage did, for counters that only grow."""
        a = self.audit_log
        with self._read("counting audit entries") as conn:
            rows = conn.execute(sa.select(a.c.action, sa.func.count()).group_by(a.c.action)).all()
        return {str(action): int(count) for action, count in rows}

    def audit(
        self,
        *,
        limit: int = 100,
        record_id: int | None = None,
        who: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """Audit entries, newest first; ``record_id``, ``who`` and ``action`` filter them."""
        a = self.audit_log
        query = sa.select(a).order_by(a.c.at_ms.desc(), a.c.id.desc()).limit(limit)
        if record_id is not None:
            query = query.where(a.c.record_id == record_id)
        if who is not None:
            query = query.where(a.c.who == who)
        if action is not None:
            query = query.where(a.c.action == action)
        with self._read("reading the audit log") as conn:
            return [AuditEntry(**r._asdict()) for r in conn.execute(query)]
