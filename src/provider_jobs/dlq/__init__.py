"""The dead-letter room: archive every dead letter, group, triage and replay them.

Four rooms and a few modules, arrows pointing down:

- :mod:`.archive`: the store (:class:`DeadLetterArchive`, SQLite or PostgreSQL);
  it knows nothing of the rooms below.
- :mod:`.archiver`: drains ``<queue>.XQ`` into the archive.
- :mod:`.replay`: the :class:`Replayer`, which sends dead letters back.
- :mod:`.triage`: the policy of :func:`process_dlq`.
- :mod:`.operations`: bulk replays and discards stored in the archive
  (:class:`Operations`), which the CLI, the API and the console start and steer.
- :mod:`.actions`: :func:`replay_records` and :func:`discard_records`, the one path
  by which the CLI, the API and the console replay or discard a selection.
- :mod:`.summary`: what the archive holds (:func:`summarise_archive`), for the
  API's metrics and the console's overview.
- :mod:`.cli`: ``provider-jobs dlq ...`` and ``provider-jobs archiver``.

Never imports ``provider_jobs.actors``. Importing it opens nothing.
"""

from __future__ import annotations

from .actions import discard_records, replay_records
from .archive.claims import ReplaySource
from .archive.filters import AuditEntry, Group, RecordFilter, RetentionReport
from .archive.fingerprint import fingerprint, normalise_error
from .archive.from_delivery import dead_letter_from_delivery
from .archive.records import DeadLetter
from .archive.store import DEAD, DISCARDED, REPLAYED, STATUSES, DeadLetterArchive, ReplayMark
from .archiver.consumer import ArchiverStats, DeadLetterArchiver
from .operations import Operations
from .replay.replayer import Replayer, ReplayOutcome, ReplayPlan, ReplayReport, merge_patch
from .summary import ArchiveSummary, summarise_archive
from .triage import DEFAULT_POLICY, DlqPolicy, PolicyRule, TriageDecision, TriageReport, process_dlq

__all__ = [
    "DEAD",
    "DEFAULT_POLICY",
    "DISCARDED",
    "REPLAYED",
    "STATUSES",
    "ArchiveSummary",
    "ArchiverStats",
    "AuditEntry",
    "DeadLetter",
    "DeadLetterArchive",
    "DeadLetterArchiver",
    "DlqPolicy",
    "Group",
    "Operations",
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
    "discard_records",
    "fingerprint",
    "merge_patch",
    "normalise_error",
    "process_dlq",
    "replay_records",
    "summarise_archive",
]
