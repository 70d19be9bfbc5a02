"""Replayer: sends archived dead letters back to their queue, each exactly once.

A replay is planned first: every record is read, every edit (a JSON merge
patch, RFC 7396) applied and the job validated with
:func:`~provider_jobs.jobs.parse_job`; one invalid edit stops the replay before
anything is sent. Then, record by record: claim it in the archive (one atomic
``UPDATE``; a record someone else is replaying is skipped), publish the fresh
message persistently with publisher confirms, and mark the record
``replayed`` with the new message id, audited. A failed publish gives the claim
back, so the record can be replayed later.

The fresh message keeps the job and its ``job_id`` but gets a new
``message_id``, a fresh ``message_timestamp`` (or ``AgeLimit`` would drop it),
``retries`` reset to 0, no ``attempt_history`` / ``dead_letter`` /
``traceback``, and ``replay_of`` = the archive id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions

from ..errors import BrokerUnavailable, InvalidJob, NotReplayable
from ..jobs import parse_job
from .archive import DEAD, DISCARDED, REPLAYED, DeadLetterArchive
from .records import DeadLetter

__all__ = ["ReplayOutcome", "ReplayPlan", "ReplayReport", "Replayer", "merge_patch"]

logger = logging.getLogger("provider_jobs.dlq.replay")

#: Options of the dead message that a replay must not carry.
_DROPPED_OPTIONS = frozenset({"attempt_history", "dead_letter", "traceback", "requeue_timestamp", "eta"})

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
    """

    def __init__(
        self,
        *,
        archive: DeadLetterArchive,
        broker_url: str,
        who: str,
        allow_statuses: Sequence[str] = (DEAD,),
    ) -> None:
        self.archive = archive
        self.broker_url = broker_url
        self.who = who
        self.allow_statuses = tuple(allow_statuses)
        self._channel: Any = None
        self._sent_at = 0.0

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
        plans = []
        for record_id in ids:
            record = self.archive.get(record_id)
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

        Args:
            ids: Archive ids.
            request_patch: JSON merge patch applied to each job's ``request``.
            job_patch: JSON merge patch applied to each job (e.g. ``{"priority": 9}``).
            dry_run: Plan and report, send nothing, change nothing.
            rate_per_s: Messages per second at most; ``None`` for as fast as confirms allow.
            force: Also replay records already replayed or discarded.
            reason: Why, for the audit log.
            on_outcome: Called after each record (progress bars).

        Raises:
            RecordNotFound, InvalidJob, NotReplayable: From planning; nothing was sent.
            BrokerUnavailable: RabbitMQ cannot be reached before the first publish.
        """
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s!r} is not allowed: expected messages per second > 0")
        plans = self.plan(ids, request_patch=request_patch, job_patch=job_patch, force=force)
        report = ReplayReport()
        started = time.monotonic()
        allowed = (DEAD, REPLAYED, DISCARDED) if force else self.allow_statuses
        audit = {"request_patch": request_patch, "job_patch": job_patch}
        self._channel = None if dry_run else self._open_channel()
        next_send = time.monotonic()
        try:
            for plan in plans:
                if dry_run or plan.message is None:
                    outcome = self._unsent(plan, dry_run=dry_run)
                else:
                    outcome = self._send(plan, allowed, reason=reason, audit=audit, not_before=next_send)
                    if rate_per_s is not None and outcome.status == PUBLISHED:
                        # Spaced from the previous send, never catching up in a burst.
                        next_send = self._sent_at + 1 / rate_per_s
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        finally:
            if self._channel is not None:
                self._close(self._channel)
                self._channel = None
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

    def _send(
        self,
        plan: ReplayPlan,
        allowed: Sequence[str],
        *,
        reason: str | None,
        audit: dict[str, Any],
        not_before: float,
    ) -> ReplayOutcome:
        """Claim, publish, mark replayed; a failed publish releases the claim."""
        record = plan.record
        assert record.id is not None and plan.message is not None
        token = self.archive.claim(record.id, allow_statuses=allowed)
        if token is None:
            return ReplayOutcome(
                record_id=record.id,
                status=SKIPPED,
                job_id=record.job_id,
                detail="already replayed, discarded, or being replayed by someone else",
            )
        wait_s = not_before - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)
        self._sent_at = time.monotonic()
        message = {
            **plan.message,
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
        try:
            self._publish(message)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.archive.release(record.id, token)
            if not isinstance(exc, pika.exceptions.UnroutableError):
                self._reopen()
            return ReplayOutcome(
                record_id=record.id,
                status=FAILED,
                job_id=record.job_id,
                detail=f"publish failed ({type(exc).__name__}: {exc}); claim released",
            )
        details: dict[str, Any] = {"queue": message["queue_name"], "original_message_id": record.message_id}
        if plan.edited:
            details.update(audit)
        self.archive.mark_replayed(
            record.id,
            token,
            message_id=message["message_id"],
            who=self.who,
            reason=reason,
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

    def _open_channel(self) -> Any:
        params = pika.URLParameters(self.broker_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        try:
            connection = pika.BlockingConnection(params)
            channel = connection.channel()
            channel.confirm_delivery()
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(
                f"Cannot reach RabbitMQ at {params.host}:{params.port} to replay "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return channel

    def _reopen(self) -> None:
        if self._channel is not None:
            self._close(self._channel)
        try:
            self._channel = self._open_channel()
        except BrokerUnavailable:
            self._channel = None

    def _publish(self, message: dict[str, Any]) -> None:
        if self._channel is None:
            raise pika.exceptions.AMQPConnectionError("no connection to RabbitMQ")
        self._channel.basic_publish(
            exchange="",
            routing_key=message["queue_name"],
            body=json.dumps(message, separators=(",", ":")).encode(),
            properties=pika.BasicProperties(
                delivery_mode=2, priority=message["options"].get("broker_priority")
            ),
            mandatory=True,
        )

    @staticmethod
    def _close(channel: Any) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            channel.connection.close()
