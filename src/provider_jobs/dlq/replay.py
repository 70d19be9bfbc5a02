"""Replayer: sends archived dead letters back to their queue, each exactly once.

A replay is planned first: every record is read, every edit (a JSON merge
patch, RFC 7396) applied and the job validated with
:func:`~provider_jobs.jobs.parse_job`; one invalid edit stops the replay before
anything is sent. Then, batch by batch: claim each record in the archive (one
atomic ``UPDATE``; a record someone else is replaying is skipped), publish the
fresh messages persistently through a :class:`~provider_jobs.bulk.BulkPublisher`
(publisher confirms, many in flight, unroutable ones returned), and mark each
record whose message RabbitMQ confirmed ``replayed`` with the new message id,
audited. Every other claim is given back, so the record can be replayed later;
a message left *unconfirmed* by a lost connection may still have been queued,
so such a later replay can deliver its job twice (as any redelivery can).

The fresh message keeps the job and its ``job_id`` but gets a new
``message_id``, a fresh ``message_timestamp`` (or ``AgeLimit`` would drop it),
``retries`` reset to 0, no ``attempt_history`` / ``dead_letter`` /
``traceback``, and ``replay_of`` = the archive id.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..bulk import NOT_SENT, BulkPublisher, BulkResult, OutgoingMessage, PublishFailure
from ..errors import BrokerUnavailable, InvalidJob, NotReplayable, RecordNotFound
from ..jobs import parse_job
from .archive import DEAD, DISCARDED, REPLAYED, DeadLetterArchive
from .filters import RecordFilter
from .records import DeadLetter

__all__ = ["ReplayOutcome", "ReplayPlan", "ReplayReport", "Replayer", "merge_patch"]

logger = logging.getLogger("provider_jobs.dlq.replay")

#: Options of the dead message that a replay must not carry.
_DROPPED_OPTIONS = frozenset({"attempt_history", "dead_letter", "traceback", "requeue_timestamp", "eta"})

#: Records read per archive query when planning.
_READ_BATCH = 500

PUBLISHED, WOULD_PUBLISH, SKIPPED, FAILED = "published", "would_publish", "skipped", "failed"


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7396): objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayPlan:
    """One record and the message that replaying it would send (without its new id and time)."""

    record: DeadLetter
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
    """Every record's outcome, in order."""

    outcomes: list[ReplayOutcome] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def published(self) -> int:
        return self.count(PUBLISHED)

    @property
    def failed(self) -> int:
        return self.count(FAILED)


class Replayer:
    """Replays archived dead letters.

    Args:
        archive: Where the records are.
        broker_url: RabbitMQ URL to publish to.
        who: Name written to the audit log.
        allow_statuses: Record statuses that may be replayed. Default: ``dead`` only;
            ``force`` in :meth:`replay` adds ``replayed`` and ``discarded``.
        window: Records claimed and published together, confirms in flight. Default 1000.

    Raises:
        ValueError: ``window`` is below 1.
    """

    def __init__(
        self,
        *,
        archive: DeadLetterArchive,
        broker_url: str,
        who: str,
        allow_statuses: Sequence[str] = (DEAD,),
        window: int = 1000,
    ) -> None:
        if window < 1:
            raise ValueError(f"window={window!r} is not allowed: expected 1 or more records")
        self.archive = archive
        self.broker_url = broker_url
        self.who = who
        self.allow_statuses = tuple(allow_statuses)
        self.window = window

    # -- planning -----------------------------------------------------------------

    def plan(
        self,
        ids: Sequence[int],
        *,
        request_patch: dict[str, Any] | None = None,
        job_patch: dict[str, Any] | None = None,
        force: bool = False,
    ) -> list[ReplayPlan]:
        """Read and prepare each record; nothing is sent or changed.

        Raises:
            RecordNotFound: An id is not in the archive.
            InvalidJob: An edit makes a job invalid (the message names the record and fields).
            NotReplayable: An edit was asked for a record that holds no provider job.
        """
        allowed = (DEAD, REPLAYED, DISCARDED) if force else self.allow_statuses
        records = self._read(ids)
        plans = []
        for record_id in ids:
            record = records.get(record_id)
            if record is None:
                raise RecordNotFound(f"No archived dead letter with id {record_id}")
            if record.status not in allowed:
                plans.append(
                    ReplayPlan(
                        record=record,
                        message=None,
                        skip_reason=f"status is {record.status} (use force to replay it again)",
                    )
                )
                continue
            message = record.decoded_body()
            if message is None:
                if request_patch is not None or job_patch is not None:
                    raise NotReplayable(
                        f"Record {record.id}: its body is not a Dramatiq message; cannot edit it"
                    )
                plans.append(
                    ReplayPlan(record=record, message=None, skip_reason=f"not replayable: {record.error}")
                )
                continue
            edited = request_patch is not None or job_patch is not None
            plans.append(
                ReplayPlan(
                    record=record,
                    message=self._prepare(record, message, request_patch, job_patch),
                    edited=edited,
                )
            )
        return plans

    def _read(self, ids: Sequence[int]) -> dict[int, DeadLetter]:
        """The records ``ids``, by id, read a few hundred per query."""
        found: dict[int, DeadLetter] = {}
        wanted = list(dict.fromkeys(ids))
        for first in range(0, len(wanted), _READ_BATCH):
            chunk = wanted[first : first + _READ_BATCH]
            for record in self.archive.find(RecordFilter(ids=chunk), limit=len(chunk)):
                assert record.id is not None
                found[record.id] = record
        return found

    def _prepare(
        self,
        record: DeadLetter,
        message: dict[str, Any],
        request_patch: dict[str, Any] | None,
        job_patch: dict[str, Any] | None,
    ) -> dict[str, Any]:
        options = {k: v for k, v in message["options"].items() if k not in _DROPPED_OPTIONS}
        options.update(retries=0, replay_of=record.id, replay_of_message_id=record.message_id)
        kwargs = dict(message["kwargs"])
        job_data = kwargs.get("job")
        if isinstance(job_data, dict):
            job_data = merge_patch(job_data, job_patch) if job_patch is not None else job_data
            if request_patch is not None and isinstance(job_data, dict):
                job_data = {**job_data, "request": merge_patch(job_data.get("request"), request_patch)}
            try:
                job = parse_job(job_data)
            except InvalidJob as exc:
                raise InvalidJob(f"Record {record.id}: {exc}; nothing was sent") from None
            kwargs["job"] = job.to_message()
            options.update(
                broker_priority=job.priority,
                job_id=job.job_id,
                provider=job.provider,
                operation=job.operation,
            )
        elif request_patch is not None or job_patch is not None:
            raise NotReplayable(f"Record {record.id}: the message holds no provider job to edit")
        return {
            **message,
            "queue_name": record.queue_name or message["queue_name"],
            "kwargs": kwargs,
            "options": options,
        }

    # -- sending ------------------------------------------------------------------

    def replay(
        self,
        ids: Sequence[int],
        *,
        request_patch: dict[str, Any] | None = None,
        job_patch: dict[str, Any] | None = None,
        dry_run: bool = False,
        rate_per_s: float | None = None,
        force: bool = False,
        reason: str | None = None,
        on_outcome: Callable[[ReplayOutcome], None] | None = None,
    ) -> ReplayReport:
        """Replay the records ``ids``, in order.

        Records go in batches of at most ``window`` (one at a time when
        ``rate_per_s`` is given): each batch is claimed, published with its
        confirms in flight together, and then each record is marked replayed
        if RabbitMQ confirmed its message, or released if not.

        Args:
            ids: Archive ids.
            request_patch: JSON merge patch applied to each job's ``request``.
            job_patch: JSON merge patch applied to each job (e.g. ``{"priority": 9}``).
            dry_run: Plan and report, send nothing, change nothing.
            rate_per_s: Messages per second at most; ``None`` for as fast as confirms allow.
            force: Also replay records already replayed or discarded.
            reason: Why, for the audit log.
            on_outcome: Called for each record, in order, once its batch is settled (progress bars).

        Raises:
            RecordNotFound, InvalidJob, NotReplayable: From planning; nothing was sent.
            BrokerUnavailable: RabbitMQ cannot be reached before the first publish.
            ValueError: ``rate_per_s`` is not positive.
        """
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s!r} is not allowed: expected messages per second > 0")
        plans = self.plan(ids, request_patch=request_patch, job_patch=job_patch, force=force)
        report = ReplayReport()
        started = time.monotonic()
        # A paced replay goes record by record: the archive work then fits between two
        # sends instead of delaying the first send of the next batch.
        batch = self.window if rate_per_s is None else 1
        publisher = None if dry_run else self._open_publisher()
        context = _SendContext(
            allowed=(DEAD, REPLAYED, DISCARDED) if force else self.allow_statuses,
            reason=reason,
            audit={"request_patch": request_patch, "job_patch": job_patch},
            rate_per_s=rate_per_s,
        )
        try:
            for first in range(0, len(plans), batch):
                chunk = plans[first : first + batch]
                if publisher is None:
                    outcomes = [self._unsent(plan, dry_run=dry_run) for plan in chunk]
                else:
                    outcomes = self._send_batch(chunk, publisher, context)
                for outcome in outcomes:
                    report.outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
        finally:
            if publisher is not None:
                publisher.close()
        report.elapsed_s = time.monotonic() - started
        return report

    @staticmethod
    def _unsent(plan: ReplayPlan, *, dry_run: bool) -> ReplayOutcome:
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

    def _send_batch(
        self, chunk: Sequence[ReplayPlan], publisher: BulkPublisher, context: _SendContext
    ) -> list[ReplayOutcome]:
        """Claim, publish with confirms in flight, then mark the confirmed and release the rest."""
        outcomes: list[ReplayOutcome | None] = [None] * len(chunk)
        claimed: list[tuple[int, ReplayPlan, str]] = []
        for position, plan in enumerate(chunk):
            record = plan.record
            assert record.id is not None
            if plan.message is None:
                outcomes[position] = self._unsent(plan, dry_run=False)
                continue
            token = self.archive.claim(record.id, allow_statuses=context.allowed)
            if token is None:
                outcomes[position] = ReplayOutcome(
                    record_id=record.id,
                    status=SKIPPED,
                    job_id=record.job_id,
                    detail="already replayed, discarded, or being replayed by someone else",
                )
                continue
            claimed.append((position, plan, token))
        sent: list[dict[str, Any]] = []

        def messages() -> Iterator[OutgoingMessage]:
            for _, plan, _ in claimed:
                assert plan.message is not None
                # Stamped when it goes out, not when the batch was planned (AgeLimit, pacing).
                message = {
                    **plan.message,
                    "message_id": str(uuid.uuid4()),
                    "message_timestamp": int(time.time() * 1000),
                }
                sent.append(message)
                yield OutgoingMessage(
                    routing_key=message["queue_name"],
                    body=json.dumps(message, separators=(",", ":")).encode(),
                    priority=message["options"].get("broker_priority"),
                    message_id=message["message_id"],
                )

        try:
            result = publisher.publish_many(messages(), rate_per_s=context.rate_per_s)
        except BrokerUnavailable as exc:
            result = BulkResult(failures=[PublishFailure(0, NOT_SENT, str(exc))])
        confirmed = set(result.confirmed)
        failures = {f.index: f for f in result.failures}
        for k, (position, plan, token) in enumerate(claimed):
            if k in confirmed:
                outcomes[position] = self._mark(plan, token, sent[k], context)
                continue
            record_id = plan.record.id
            assert record_id is not None
            self.archive.release(record_id, token)
            failure = failures.get(k)
            why = f"{failure.status}: {failure.detail}" if failure else "not sent: the batch stopped"
            outcomes[position] = ReplayOutcome(
                record_id=record_id,
                status=FAILED,
                job_id=plan.record.job_id,
                detail=f"publish failed ({why}); claim released",
            )
        return [o for o in outcomes if o is not None]

    def _mark(
        self, plan: ReplayPlan, token: str, message: dict[str, Any], context: _SendContext
    ) -> ReplayOutcome:
        record = plan.record
        assert record.id is not None
        details: dict[str, Any] = {"queue": message["queue_name"], "original_message_id": record.message_id}
        if plan.edited:
            details.update(context.audit)
        self.archive.mark_replayed(
            record.id,
            token,
            message_id=message["message_id"],
            who=self.who,
            reason=context.reason,
            details=details,
            action="replay_edited" if plan.edited else "replay",
        )
        logger.info(
            "Replayed record %s (job %s) to %s as message %s",
            record.id,
            record.job_id,
            message["queue_name"],
            message["message_id"],
        )
        return ReplayOutcome(
            record_id=record.id,
            status=PUBLISHED,
            queue_name=message["queue_name"],
            message_id=message["message_id"],
            job_id=record.job_id,
        )

    def _open_publisher(self) -> BulkPublisher:
        publisher = BulkPublisher(self.broker_url, window=self.window)
        try:
            publisher.connect()
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"{exc}; nothing was replayed") from exc
        return publisher


@dataclasses.dataclass(frozen=True, kw_only=True)
class _SendContext:
    """What every batch of one :meth:`Replayer.replay` call shares."""

    allowed: Sequence[str]
    reason: str | None
    audit: dict[str, Any]
    rate_per_s: float | None
