"""ReplayPlan, ReplayOutcome and ReplayReport: what a replay would send, and what became of each record."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Generic, Protocol, TypeVar

from ...health.watch import Pause

__all__ = [
    "FAILED",
    "PUBLISHED",
    "SKIPPED",
    "WOULD_PUBLISH",
    "PlannedRecord",
    "ReplayOutcome",
    "ReplayPlan",
    "ReplayReport",
    "failed",
    "not_claimed",
    "paused_outcome",
    "record_id_of",
    "unsent",
]

PUBLISHED, WOULD_PUBLISH, SKIPPED, FAILED = "published", "would_publish", "skipped", "failed"


class PlannedRecord(Protocol):
    """What planning a replay reads of a record: a :class:`~.records.DeadLetter`, or the
    lighter :class:`~.claims.ReplaySource` that :meth:`~.replay.Replayer.replay` reads."""

    @property
    def id(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def queue_name(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def job_id(self) -> str | None: ...
    @property
    def error(self) -> str: ...
    def decoded_body(self) -> dict[str, Any] | None: ...


#: A planned record: a DeadLetter, or a ReplaySource.
RecordT = TypeVar("RecordT", bound=PlannedRecord)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayPlan(Generic[RecordT]):
    """One record and the message that replaying it would send (without its new id and time).

    :meth:`~.replay.Replayer.plan` plans whole :class:`~.records.DeadLetter` records.
    """

    record: RecordT
    message: dict[str, Any] | None
    skip_reason: str | None = None
    edited: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayOutcome:
    """What happened to one record: ``published``, ``would_publish`` (dry run), ``skipped`` or ``failed``."""

    record_id: int
    status: str
    queue_name: str | None = None
    message_id: str | None = None
    job_id: str | None = None
    detail: str | None = None


@dataclasses.dataclass
class ReplayReport:
    """Every record's outcome, in order, and each time a provider's records were held back."""

    outcomes: list[ReplayOutcome] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0
    pauses: list[Pause] = dataclasses.field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def published(self) -> int:
        return self.count(PUBLISHED)

    @property
    def failed(self) -> int:
        return self.count(FAILED)


def unsent(plan: ReplayPlan[Any], *, dry_run: bool) -> ReplayOutcome:
    """The outcome of a plan not sent: skipped, or ``would_publish`` in a dry run."""
    record_id = plan.record.id
    assert record_id is not None
    if plan.message is None:
        return ReplayOutcome(record_id=record_id, status=SKIPPED, detail=plan.skip_reason)
    kwargs = json.dumps(plan.message["kwargs"], default=str)
    return ReplayOutcome(
        record_id=record_id,
        status=WOULD_PUBLISH if dry_run else SKIPPED,
        queue_name=plan.message["queue_name"],
        job_id=plan.record.job_id,
        detail=kwargs,
    )


def record_id_of(plan: ReplayPlan[Any]) -> int:
    """The archive id of the plan's record."""
    record_id: int | None = plan.record.id
    assert record_id is not None
    return record_id


def not_claimed(plan: ReplayPlan[Any]) -> ReplayOutcome:
    """The outcome of a record whose claim was not won."""
    return ReplayOutcome(
        record_id=record_id_of(plan),
        status=SKIPPED,
        job_id=plan.record.job_id,
        detail="already replayed, discarded, or being replayed by someone else",
    )


def failed(plan: ReplayPlan[Any], detail: str) -> ReplayOutcome:
    """The outcome of a record that was not replayed, and why."""
    return ReplayOutcome(
        record_id=record_id_of(plan), status=FAILED, job_id=plan.record.job_id, detail=detail
    )


def paused_outcome(plan: ReplayPlan[Any], pause: Pause) -> ReplayOutcome:
    """The outcome of a record held back for its provider longer than the replay would wait."""
    return ReplayOutcome(
        record_id=record_id_of(plan),
        status=SKIPPED,
        job_id=plan.record.job_id,
        detail=f"paused: {pause.describe()}; not sent",
    )
