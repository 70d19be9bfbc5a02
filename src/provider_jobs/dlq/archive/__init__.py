"""The dead-letter archive: the store of dead letters and its audit log, in SQLite or PostgreSQL.

Database, schema, schema versions (Alembic revisions in ``migrations/``),
records, filters, text search, groups, fingerprints, statuses, audit, retention,
claims and bulk operations. Knows nothing of the archiver, replay or the CLI.
"""

from __future__ import annotations

from .claims import ReplaySource
from .filters import AuditEntry, Group, RecordFilter, RetentionReport
from .fingerprint import fingerprint, normalise_error
from .from_delivery import dead_letter_from_delivery
from .operations import OperationRecord, OperationRow
from .records import DeadLetter
from .store import DEAD, DISCARDED, REPLAYED, STATUSES, DeadLetterArchive, ReplayMark

__all__ = [
    "DEAD",
    "DISCARDED",
    "REPLAYED",
    "STATUSES",
    "AuditEntry",
    "DeadLetter",
    "DeadLetterArchive",
    "Group",
    "OperationRecord",
    "OperationRow",
    "RecordFilter",
    "ReplayMark",
    "ReplaySource",
    "RetentionReport",
    "dead_letter_from_delivery",
    "fingerprint",
    "normalise_error",
]
