"""Planning a replay: every record read, every edit applied and every job validated before anything is sent.

An edit is a JSON merge patch (RFC 7396) of the job or of its ``request``; the
edited job is validated with :func:`~provider_jobs.jobs.parse_job`, and one
invalid edit stops the replay before anything is sent. A record that may not be
replayed (its status, or a body that is not a Dramatiq message) is planned as
skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import NotReplayable, RecordNotFound
from ..archive.filters import RecordFilter
from ..archive.records import DeadLetter
from ..archive.status import UNCERTAIN
from ..archive.store import DEAD, DISCARDED, REPLAYED, DeadLetterArchive
from .message import prepare_message
from .report import RecordT, ReplayPlan

__all__ = ["allowed_statuses", "plan_records", "read_records"]

#: Records read per archive query when planning.
_READ_BATCH = 500

#: Why no replay sends an uncertain record, forced or not.
_UNCERTAIN_SKIP = (
    "status is uncertain: an interrupted operation may have sent it; no replay sends it until "
    "`dlq operations resolve` says whether it was sent"
)


def allowed_statuses(allow_statuses: Sequence[str], *, force: bool) -> Sequence[str]:
    """The statuses a record may have to be replayed: ``allow_statuses``, or all of them with ``force``."""
    return (DEAD, REPLAYED, DISCARDED) if force else allow_statuses


def plan_records(
    ids: Sequence[int],
    records: Mapping[int, RecordT],
    *,
    allowed: Sequence[str],
    request_patch: dict[str, Any] | None,
    job_patch: dict[str, Any] | None,
) -> list[ReplayPlan[RecordT]]:
    """The plan of each of ``ids``, in order: its fresh message, or why it is skipped.

    Args:
        ids: Archive ids, each once.
        records: The records read, by id (whole records, or only what a replay sends from).
        allowed: Statuses a record may have to be replayed; the others are skipped.
        request_patch: JSON merge patch applied to each job's ``request``.
        job_patch: JSON merge patch applied to each job.

    Raises:
        RecordNotFound: An id is not in ``records``.
        InvalidJob: An edit makes a job invalid (the message names the record and fields).
        NotReplayable: An edit was asked for a record that holds no provider job.
    """
    edited = request_patch is not None or job_patch is not None
    plans: list[ReplayPlan[RecordT]] = []
    for record_id in ids:
        record = records.get(record_id)
        if record is None:
            raise RecordNotFound(f"No archived dead letter with id {record_id}")
        if record.status not in allowed:
            plans.append(
                ReplayPlan(
                    record=record,
                    message=None,
                    skip_reason=_UNCERTAIN_SKIP
                    if record.status == UNCERTAIN
                    else f"status is {record.status} (use force to replay it again)",
                )
            )
            continue
        message = record.decoded_body()
        if message is None:
            if edited:
                raise NotReplayable(f"Record {record.id}: its body is not a Dramatiq message; cannot edit it")
            plans.append(
                ReplayPlan(record=record, message=None, skip_reason=f"not replayable: {record.error}")
            )
            continue
        plans.append(
            ReplayPlan(
                record=record,
                message=prepare_message(record, message, request_patch, job_patch),
                edited=edited,
            )
        )
    return plans


def read_records(archive: DeadLetterArchive, ids: Sequence[int]) -> dict[int, DeadLetter]:
    """The whole records ``ids`` that exist, by id, read a few hundred per query."""
    found: dict[int, DeadLetter] = {}
    wanted = list(dict.fromkeys(ids))
    for first in range(0, len(wanted), _READ_BATCH):
        chunk = wanted[first : first + _READ_BATCH]
        for record in archive.find(RecordFilter(ids=chunk), limit=len(chunk)):
            assert record.id is not None
            found[record.id] = record
    return found
