"""Replayer: sends archived dead letters back to their queue, each exactly once.

A replay is planned first: every record is read, every edit (a JSON merge
patch, RFC 7396) applied and the job validated with
:func:`~provider_jobs.jobs.parse_job`; one invalid edit stops the replay before
anything is sent. Then, batch by batch: claim the batch's records in the
archive (one conditional ``UPDATE`` under one token; a record someone else is
replaying is skipped), publish the fresh messages persistently through a
:class:`~provider_jobs.bulk.BulkPublisher` (publisher confirms, many in flight,
unroutable ones returned), and mark the records whose message RabbitMQ
confirmed ``replayed`` with the new message ids, audited, in one transaction
(retried a few times: a published record left unmarked would be replayed
again once its claim expires). Every other claim is given back, so the record
can be replayed later; a message left *unconfirmed* by a lost connection may
still have been queued, so such a later replay can deliver its job twice (as
any redelivery can).

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
from ..errors import ArchiveError, BrokerUnavailable, InvalidJob, NotReplayable, RecordNotFound
from ..jobs import parse_job
from .archive import DEAD, DISCARDED, REPLAYED, DeadLetterArchive, ReplayMark
from .filters import RecordFilter
from .records import DeadLetter

__all__ = ["ReplayOutcome", "ReplayPlan", "ReplayReport", "Replayer", "merge_patch"]

logger = logging.getLogger("provider_jobs.dlq.replay")

#: Options of the dead message that a replay must not carry.
_DROPPED_OPTIONS = frozenset({"attempt_history", "dead_letter", "traceback", "requeue_timestamp", "eta"})

#: Records read per archive query when planning.
_READ_BATCH = 500
#: Tries at marking published records replayed before giving up loudly.
_MARK_ATTEMPTS = 4
#: First wait between those tries, doubled each time.
_MARK_BACKOFF_S = 0.1
#: Seconds of messages a paced replay settles per chunk: its claims are held about this long.
_PACED_CHUNK_S = 1.0

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

        Records go in batches of at most ``window``: each batch is claimed,
        published with its confirms in flight together, and then its records
        are marked replayed if RabbitMQ confirmed their message, or released if
        not. With ``rate_per_s`` a batch is about a second of messages, and each
        record is claimed only when its message is due, so that no claim is
        held through a pacing wait.

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
        # A paced replay claims each record when its message is due and settles about a
        # second of messages per publish_many call, so that claims are held briefly.
        batch = (
            self.window if rate_per_s is None else max(1, min(self.window, int(rate_per_s * _PACED_CHUNK_S)))
        )
        publisher = None if dry_run else self._open_publisher()
        context = _SendContext(
            allowed=(DEAD, REPLAYED, DISCARDED) if force else self.allow_statuses,
            reason=reason,
            audit={"request_patch": request_patch, "job_patch": job_patch},
            rate_per_s=rate_per_s,
            pacer=None if rate_per_s is None else _Pacer(rate_per_s),
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
        """Claim, publish with confirms in flight, then mark the confirmed and release the rest.

        Unpaced, the whole chunk is claimed at once (:meth:`DeadLetterArchive.claim_many`)
        before the publish. Paced, each record is claimed when the rate lets its message
        go, so that no claim waits out a pacing sleep. Either way the chunk's confirmed
        records are marked in one transaction and the others released in one.
        """
        outcomes: dict[int, ReplayOutcome] = {}
        candidates: list[tuple[int, ReplayPlan]] = []
        for position, plan in enumerate(chunk):
            if plan.message is None:
                outcomes[position] = self._unsent(plan, dry_run=False)
            else:
                candidates.append((position, plan))
        claimed: list[tuple[int, ReplayPlan]] = []
        sent: list[dict[str, Any]] = []
        archive_errors: list[ArchiveError] = []
        token, won = self.archive.claim_many(
            [] if context.rate_per_s is not None else [_record_id(p) for _, p in candidates],
            allow_statuses=context.allowed,
        )

        def claim_each() -> Iterator[tuple[int, ReplayPlan]]:
            if context.rate_per_s is None:
                won_ids = set(won)
                for position, plan in candidates:
                    if _record_id(plan) in won_ids:
                        yield position, plan
                    else:
                        outcomes[position] = _not_claimed(plan)
                return
            pacer = context.pacer
            assert pacer is not None
            # The chunk's first wait was taken before publish_many (nothing in flight then).
            waited = True
            for k, (position, plan) in enumerate(candidates):
                if not waited:
                    pacer.wait()
                waited = False
                try:
                    _, mine = self.archive.claim_many(
                        [_record_id(plan)], allow_statuses=context.allowed, token=token
                    )
                except ArchiveError as exc:
                    archive_errors.append(exc)
                    for later, later_plan in candidates[k:]:
                        outcomes[later] = _failed(later_plan, f"not sent: {exc}")
                    return
                if mine:
                    yield position, plan
                else:
                    # Nothing is sent for it: the next record may take its slot.
                    pacer.refund()
                    outcomes[position] = _not_claimed(plan)

        def messages() -> Iterator[OutgoingMessage]:
            for position, plan in claim_each():
                assert plan.message is not None
                claimed.append((position, plan))
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

        if context.pacer is not None and candidates:
            context.pacer.wait()
        try:
            # Paced here, not by publish_many: its pacing waits after a chunk's last send,
            # while the chunk's claims are held and not yet marked.
            result = publisher.publish_many(messages())
        except BrokerUnavailable as exc:
            result = BulkResult(failures=[PublishFailure(0, NOT_SENT, str(exc))])
        self._settle(candidates, claimed, sent, result, token=token, context=context, outcomes=outcomes)
        if archive_errors:
            logger.error("Replay stopped: %s", archive_errors[0])
        return [outcomes[position] for position in sorted(outcomes)]

    def _settle(
        self,
        candidates: Sequence[tuple[int, ReplayPlan]],
        claimed: Sequence[tuple[int, ReplayPlan]],
        sent: Sequence[dict[str, Any]],
        result: BulkResult,
        *,
        token: str,
        context: _SendContext,
        outcomes: dict[int, ReplayOutcome],
    ) -> None:
        """Mark the confirmed records replayed and release the claims of the others,
        including those never taken by the publisher."""
        confirmed = set(result.confirmed)
        failures = {f.index: f for f in result.failures}
        marks: list[tuple[int, ReplayPlan, dict[str, Any]]] = []
        released: list[int] = []
        for k, (position, plan) in enumerate(claimed):
            if k in confirmed:
                marks.append((position, plan, sent[k]))
                continue
            released.append(_record_id(plan))
            failure = failures.get(k)
            why = f"{failure.status}: {failure.detail}" if failure else "not sent: the batch stopped"
            outcomes[position] = _failed(plan, f"publish failed ({why}); claim released")
        outcomes.update(self._mark(marks, token, context))
        taken = {position for position, _ in claimed}
        stopped = result.failures[0].detail if result.failures else "the publish stopped before it"
        for position, plan in candidates:
            if position not in outcomes and position not in taken:
                # Never handed to RabbitMQ (unreachable, or the connection was lost first).
                released.append(_record_id(plan))
                outcomes[position] = _failed(plan, f"not sent ({stopped}); claim released")
        if released:
            try:
                self.archive.release_many(released, token)
            except ArchiveError as exc:
                logger.warning(
                    "Could not release the claims of %d unsent record(s) (%s); they can be replayed "
                    "again once the claims expire",
                    len(released),
                    exc,
                )

    def _mark(
        self, marks: Sequence[tuple[int, ReplayPlan, dict[str, Any]]], token: str, context: _SendContext
    ) -> dict[int, ReplayOutcome]:
        """Mark the published records replayed, in one transaction, retried with backoff:
        a record left claimed but unmarked would be replayed again once its claim expires."""
        if not marks:
            return {}
        replay_marks = []
        for _, plan, message in marks:
            details: dict[str, Any] = {
                "queue": message["queue_name"],
                "original_message_id": plan.record.message_id,
            }
            if plan.edited:
                details.update(context.audit)
            replay_marks.append(
                ReplayMark(
                    record_id=_record_id(plan),
                    message_id=message["message_id"],
                    action="replay_edited" if plan.edited else "replay",
                    details=details,
                )
            )
        trouble: str | None = None
        for attempt in range(_MARK_ATTEMPTS):
            try:
                lost = self.archive.mark_replayed_many(
                    replay_marks, token, who=self.who, reason=context.reason
                )
            except ArchiveError as exc:
                trouble = str(exc)
                if attempt + 1 < _MARK_ATTEMPTS:
                    logger.warning("Marking %d replay(s) failed (%s); retrying", len(replay_marks), exc)
                    time.sleep(_MARK_BACKOFF_S * 2**attempt)
                continue
            trouble = None
            if lost:
                logger.error(
                    "Records %s were published but their replay claim was lost: they may be replayed twice",
                    ", ".join(map(str, lost)),
                )
            break
        if trouble is not None:
            logger.error(
                "Records %s were PUBLISHED but could not be marked replayed after %d attempts (%s): "
                "they will be replayed again once their claims expire (%s s) unless discarded",
                ", ".join(str(m.record_id) for m in replay_marks),
                _MARK_ATTEMPTS,
                trouble,
                self.archive.claim_ttl_s,
            )
        outcomes = {}
        for position, plan, message in marks:
            logger.info(
                "Replayed record %s (job %s) to %s as message %s",
                plan.record.id,
                plan.record.job_id,
                message["queue_name"],
                message["message_id"],
            )
            outcomes[position] = ReplayOutcome(
                record_id=_record_id(plan),
                status=PUBLISHED,
                queue_name=message["queue_name"],
                message_id=message["message_id"],
                job_id=plan.record.job_id,
                detail=None if trouble is None else f"published, but not marked replayed: {trouble}",
            )
        return outcomes

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
    pacer: _Pacer | None


class _Pacer:
    """Spaces sends ``1 / rate_per_s`` apart, from when each was due (absorbing a late
    wake-up); after a longer stall, from now, never catching up in a burst."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1 / rate_per_s
        self.next_at = 0.0
        self._previous = 0.0

    def wait(self) -> None:
        """Sleep until the next send is due, and book the one after it."""
        due = self.next_at
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        self._previous = due
        self.next_at = (due if now - due < self.interval_s else now) + self.interval_s

    def refund(self) -> None:
        """Give back the slot of the last :meth:`wait` (nothing was sent in it)."""
        self.next_at = self._previous


def _record_id(plan: ReplayPlan) -> int:
    record_id = plan.record.id
    assert record_id is not None
    return record_id


def _not_claimed(plan: ReplayPlan) -> ReplayOutcome:
    return ReplayOutcome(
        record_id=_record_id(plan),
        status=SKIPPED,
        job_id=plan.record.job_id,
        detail="already replayed, discarded, or being replayed by someone else",
    )


def _failed(plan: ReplayPlan, detail: str) -> ReplayOutcome:
    return ReplayOutcome(record_id=_record_id(plan), status=FAILED, job_id=plan.record.job_id, detail=detail)
