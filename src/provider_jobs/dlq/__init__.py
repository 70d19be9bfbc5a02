"""The dead-letter room: archive every dead letter, group, triage and replay them.

The archiver (:mod:`.consumer`) drains ``<queue>.XQ`` into a
:class:`DeadLetterArchive` (SQLite or PostgreSQL); operators work with it through
the :class:`Replayer`, :func:`process_dlq` and ``provider-jobs dlq ...``
(:data:`~provider_jobs.dlq.cli.dlq_app`). Never imports ``provider_jobs.actors``.
Importing it opens nothing.
"""

from __future__ import annotations

from .archive import DEAD, DISCARDED, REPLAYED, STATUSES, DeadLetterArchive, ReplayMark
from .claims import ReplaySource
from .consumer import ArchiverStats, DeadLetterArchiver
from .filters import AuditEntry, Group, RecordFilter, RetentionReport
from .policy import DEFAULT_POLICY, DlqPolicy, PolicyRule, TriageDecision, TriageReport, process_dlq
from .records import DeadLetter, dead_letter_from_delivery, fingerprint, normalise_error
from .replay import Replayer, ReplayOutcome, ReplayPlan, ReplayReport, merge_patch

__all__ = [
    "DEAD",
    "DEFAULT_POLICY",
    "DISCARDED",
    "REPLAYED",
    "STATUSES",
    "ArchiverStats",
    "AuditEntry",
    "DeadLetter",
    "DeadLetterArchive",
    "DeadLetterArchiver",
    "DlqPolicy",
    "Group",
    "PolicyRule",
    "RecordFilter",
    "ReplayMark",
    "ReplayOutcome",
    "ReplayPlan",
    "ReplayReport",
    "ReplaySource",
    "Replayer",
    "RetentionReport",
    "TriageDecision",
    "TriageReport",
    "dead_letter_from_delivery",
    "fingerprint",
    "merge_patch",
    "normalise_error",
    "process_dlq",
]
