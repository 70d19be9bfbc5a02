"""Replayer: sends archived dead letters back to their queue, each exactly once.

A replay is planned first: every record is read, every edit (a JSON merge
patch, RFC 7396) applied and the job validated with
:func:`~provider_jobs.jobs.parse_job`; one invalid edit stops the replay before
anything is sent. Then, batch by batch: claim the batch's records in the
archive (one conditional ``UPDATE`` under one token; a record someone else is
replaying is skipped), publish the fresh messages persistently through a
:class:`~provider_jobs.rabbitmq.bulk.BulkPublisher` (publisher confirms, many in flight,
unroutable ones returned), and mark the records whose message RabbitMQ
confirmed ``replayed`` with the new message ids, audited, in one transaction
(retried a few times: a published record left unmarked would be replayed
again once its claim expires). Every other claim is given back, so the record
can be replayed later; a message left *unconfirmed* by a lost connection may
still have been queued, so such a later replay can deliver its job twice (as
any redelivery can). Unpaced, the claims and marks run on one archive thread
while the next batch publishes; a replay reads only the columns it sends from
(:class:`~.claims.ReplaySource`).

The fresh message keeps the job, its ``job_id`` and its idempotency key (an
edit that changes the job gives it a key of its own) but gets a new
``message_id``, a fresh ``message_timestamp`` (or ``AgeLimit`` would drop it),
``retries`` reset to 0, no ``attempt_history`` / ``dead_letter`` /
``traceback``, and ``replay_of`` = the archive id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

from ...errors import ArchiveError, BrokerUnavailable, InvalidJob, NotReplayable, RecordNotFound
from ...gc_pause import paused_gc
from ...rabbitmq.bulk import NOT_SENT, BulkPublisher, BulkResult, OutgoingMessage, PublishFailure
from ...tracing import tracer_of
from ..archive.filters import RecordFilter
from ..archive.records import DeadLetter
from ..archive.store import DEAD, DISCARDED, REPLAYED, DeadLetterArchive
from .gate import HealthGate, PauseHandler, ProviderHealth
from .message import merge_patch, outgoing, prepare_message, unstorable
from .pacing import Pacer

# Re-exported: the CLI takes the outcome status it counts from here.
from .report import FAILED as FAILED  # noqa: PLC0414
from .report import (
    RecordT,
    ReplayOutcome,
    ReplayPlan,
    ReplayReport,
    failed,
    not_claimed,
    paused_outcome,
    record_id_of,
    unsent,
)
from .settlement import settle

__all__ = ["ReplayOutcome", "ReplayPlan", "ReplayReport", "Replayer", "merge_patch"]

logger = logging.getLogger("provider_jobs.dlq.replay.replayer")

#: Records read per archive query when planning.
_READ_BATCH = 500
#: Batches an unpaced replay has claimed ahead of the one it publishes.
_CLAIMS_AHEAD = 2
#: Seconds of messages a paced replay settles per chunk: its claims are held about this long.
_PACED_CHUNK_S = 1.0


class Replayer:
    """Replays archived dead letters.

    Args:
        archive: Where the records are.
        broker_url: RabbitMQ URL to publish to.
        who: Name written to the audit log.
        allow_statuses: Record statuses that may be replayed. Default: ``dead`` only;
            ``force`` in :meth:`replay` adds ``replayed`` and ``discarded``.
        window: Records claimed and published together, confirms in flight. Default 1000.
        tracer_provider: An OpenTelemetry ``TracerProvider``: each replay's ``send`` span starts
            a new trace linked to the replayed job's. Default ``None``: the global one, if set.

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
        tracer_provider: Any = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window={window!r} is not allowed: expected 1 or more records")
        self.archive = archive
        self.broker_url = broker_url
        self.who = who
        self.allow_statuses = tuple(allow_statuses)
        self.window = window
        self._tracer = tracer_of(tracer_provider)

    # -- planning -----------------------------------------------------------------

    def plan(
        self,
        ids: Sequence[int],
        *,
        request_patch: dict[str, Any] | None = None,
        job_patch: dict[str, Any] | None = None,
        force: bool = False,
    ) -> list[ReplayPlan[DeadLetter]]:
        """Read and prepare each record; nothing is sent or changed.

        Raises:
            RecordNotFound: An id is not in the archive.
            InvalidJob: An edit makes a job invalid (the message names the record and fields).
            NotReplayable: An edit was asked for a record that holds no provider job.
        """
        ids = list(dict.fromkeys(ids))
        return self._plan(ids, self._read(ids), request_patch=request_patch, job_patch=job_patch, force=force)

    def _plan(
        self,
        ids: Sequence[int],
        records: Mapping[int, RecordT],
        *,
        request_patch: dict[str, Any] | None,
        job_patch: dict[str, Any] | None,
        force: bool,
    ) -> list[ReplayPlan[RecordT]]:
        allowed = (DEAD, REPLAYED, DISCARDED) if force else self.allow_statuses
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
                        skip_reason=f"status is {record.status} (use force to replay it again)",
                    )
                )
                continue
            message = record.decoded_body()
            if message is None:
                if edited:
                    raise NotReplayable(
                        f"Record {record.id}: its body is not a Dramatiq message; cannot edit it"
                    )
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
        pause_gc: bool = False,
        health: ProviderHealth | None = None,
        max_pause_s: float | None = None,
        on_pause: PauseHandler | None = None,
    ) -> ReplayReport:
        """Replay the records ``ids``, in order.

        Records go in batches of at most ``window``, in order, those of paused providers
        (see ``health``) set aside until they resume: each batch is claimed,
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
            on_outcome: Called for each record, in order, on the calling thread, once its batch
                is settled, which may be while a later batch publishes (progress bars).
            pause_gc: Hold Python's cyclic garbage collector off, process-wide, during an unpaced
                replay (a paced one may last hours). Off by default: the collector is the
                host application's; ``provider-jobs dlq replay`` turns it on.
            health: The providers' health (a :class:`~provider_jobs.health.BreakerWatch`): the
                records of a provider whose breaker is open or whose ``Retry-After`` is pending
                are held back, unclaimed, while the others go on, and go once it is not
                (:mod:`.gate`). Default ``None``: every record goes at once.
            max_pause_s: Longest a paused provider's records are held back; then they are
                ``skipped`` with the pause as their detail. Default ``None``: until it resumes.
            on_pause: Called on the calling thread with a provider and its
                :class:`~provider_jobs.health.Pause` when its records start being held back,
                and with the provider and ``None`` when they go again.

        Raises:
            RecordNotFound, InvalidJob, NotReplayable: From planning, or a ``reason`` no archive
                can store (a NUL character); nothing was sent.
            BrokerUnavailable: RabbitMQ cannot be reached before the first publish.
            ValueError: ``rate_per_s`` is not positive.
        """
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s!r} is not allowed: expected messages per second > 0")
        # The reason goes to text columns, which cannot hold every text (the edits go to JSON ones).
        problem = unstorable(reason)
        if problem is not None:
            raise InvalidJob(f"The replay's reason holds {problem}; nothing was sent")
        # An id named twice is replayed once.
        ids = list(dict.fromkeys(ids))
        # A paced replay may last hours: the collector is held off only for one as fast as it goes.
        with paused_gc() if pause_gc and rate_per_s is None else contextlib.nullcontext():
            return self._replay(
                ids,
                request_patch=request_patch,
                job_patch=job_patch,
                dry_run=dry_run,
                rate_per_s=rate_per_s,
                force=force,
                reason=reason,
                on_outcome=on_outcome,
                health=health,
                max_pause_s=max_pause_s,
                on_pause=on_pause,
            )

    def _replay(
        self,
        ids: Sequence[int],
        *,
        request_patch: dict[str, Any] | None,
        job_patch: dict[str, Any] | None,
        dry_run: bool,
        rate_per_s: float | None,
        force: bool,
        reason: str | None,
        on_outcome: Callable[[ReplayOutcome], None] | None,
        health: ProviderHealth | None,
        max_pause_s: float | None,
        on_pause: PauseHandler | None,
    ) -> ReplayReport:
        # Only the columns a replay needs: a whole record costs ten times as much to read.
        plans = self._plan(
            ids,
            self.archive.replay_sources(ids),
            request_patch=request_patch,
            job_patch=job_patch,
            force=force,
        )
        report = ReplayReport()
        started = time.monotonic()
        # A paced replay claims each record when its message is due and settles about a
        # second of messages per publish_many call, so that claims are held briefly.
        size = (
            self.window if rate_per_s is None else max(1, min(self.window, int(rate_per_s * _PACED_CHUNK_S)))
        )
        gate = HealthGate(plans, size=size, health=health, max_pause_s=max_pause_s, on_pause=on_pause)

        def emit(outcomes: Sequence[ReplayOutcome]) -> None:
            for outcome in outcomes:
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

        if dry_run:
            emit([unsent(plan, dry_run=True) for plan in plans])
            report.elapsed_s = time.monotonic() - started
            return report
        publisher = self._open_publisher()
        context = _SendContext(
            allowed=(DEAD, REPLAYED, DISCARDED) if force else self.allow_statuses,
            reason=reason,
            audit={"request_patch": request_patch, "job_patch": job_patch},
            rate_per_s=rate_per_s,
            pacer=None if rate_per_s is None else Pacer(rate_per_s),
        )
        try:
            if rate_per_s is None:
                self._send_overlapped(gate, publisher, context, emit)
            else:
                while (batch := gate.next_batch()) or gate.holding:
                    if batch:
                        emit(self._send_paced(batch, publisher, context))
                    else:
                        gate.wait()
        finally:
            publisher.close()
        emit([paused_outcome(plan, pause) for plan, pause in gate.given_up])
        report.pauses = gate.pauses
        if gate.pauses:
            # Held-back records were settled after later ones: the report keeps the order asked for.
            order = {record_id: k for k, record_id in enumerate(ids)}
            report.outcomes.sort(key=lambda outcome: order[outcome.record_id])
        report.elapsed_s = time.monotonic() - started
        return report

    # -- sending --------------------------------------------------------------------

    def _send_overlapped(
        self,
        gate: HealthGate,
        publisher: BulkPublisher,
        context: _SendContext,
        emit: Callable[[Sequence[ReplayOutcome]], None],
    ) -> None:
        """Send unpaced batches, the archive's work overlapping RabbitMQ's.

        One archive thread claims batches and settles them while this thread
        publishes: the database drivers release the GIL while they work, so their
        time mostly hides behind the publishing. Claims are taken two batches ahead
        and queued before the settling of the batch just sent, so that the next
        publish rarely waits for a claim. The thread runs one job at a time, in
        order, so claims and marks never wait for each other's locks. Outcomes are
        handed to ``emit`` here, in order, as batches are settled. When only records of
        paused providers are left, everything sent is settled before waiting for one to resume.
        """
        claiming: deque[Future[_Claimed]] = deque()
        settling: deque[Future[list[ReplayOutcome]]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-archive") as archive_thread:

            def claim_ahead() -> None:
                while len(claiming) < _CLAIMS_AHEAD and (batch := gate.next_batch()):
                    claiming.append(archive_thread.submit(self._claim, batch, context))

            try:
                claim_ahead()
                while claiming or gate.holding:
                    if not claiming:
                        while settling:
                            emit(settling.popleft().result())
                        gate.wait()
                        claim_ahead()
                        continue
                    claimed_batch = claiming.popleft().result()
                    sent = self._publish(claimed_batch, publisher)
                    claim_ahead()
                    settling.append(archive_thread.submit(self._settle, claimed_batch, sent, context))
                    while settling and settling[0].done():
                        emit(settling.popleft().result())
            finally:
                # Whatever stopped the replay, every batch published is settled (its records
                # marked or released) and the claims taken ahead are given back.
                for ahead_claim in claiming:
                    archive_thread.submit(self._release_unsent, ahead_claim)
                futures_wait(settling)
        for settled in settling:
            emit(settled.result())

    def _claim(self, chunk: Sequence[ReplayPlan[Any]], context: _SendContext) -> _Claimed:
        """Claim the chunk's sendable records at once (unpaced), or only open a token (paced)."""
        claimed = _Claimed()
        for position, plan in enumerate(chunk):
            if plan.message is None:
                claimed.outcomes[position] = unsent(plan, dry_run=False)
            else:
                claimed.candidates.append((position, plan))
        claimed.token, claimed.won = self.archive.claim_many(
            [] if context.rate_per_s is not None else [record_id_of(p) for _, p in claimed.candidates],
            allow_statuses=context.allowed,
        )
        return claimed

    def _release_unsent(self, claiming: Future[_Claimed]) -> None:
        """Give back the claims of a batch claimed ahead and never published."""
        if claiming.exception() is not None:
            return
        claimed = claiming.result()
        if not claimed.won:
            return
        try:
            self.archive.release_many(claimed.won, claimed.token)
        except ArchiveError as exc:
            logger.warning(
                "Could not release the claims of %d record(s) not sent (%s); they can be replayed "
                "again once the claims expire",
                len(claimed.won),
                exc,
            )

    def _publish(self, claimed: _Claimed, publisher: BulkPublisher) -> _Sent:
        """Publish the won records of an unpaced batch, with their confirms in flight."""
        sent = _Sent()
        won_ids = set(claimed.won)

        def messages() -> Iterator[OutgoingMessage]:
            for position, plan in claimed.candidates:
                if record_id_of(plan) not in won_ids:
                    claimed.outcomes[position] = not_claimed(plan)
                    continue
                assert plan.message is not None
                sent.taken.append((position, plan))
                message, outgoing_message = outgoing(plan.message, tracer=self._tracer)
                sent.messages.append(message)
                yield outgoing_message

        try:
            sent.result = publisher.publish_many(messages())
        except BrokerUnavailable as exc:
            sent.result = BulkResult(failures=[PublishFailure(0, NOT_SENT, str(exc))])
        return sent

    def _settle(self, claimed: _Claimed, sent: _Sent, context: _SendContext) -> list[ReplayOutcome]:
        """Mark the batch's confirmed records replayed and release the other claims."""
        settle(
            self.archive,
            claimed.candidates,
            sent.taken,
            sent.messages,
            sent.result,
            token=claimed.token,
            who=self.who,
            reason=context.reason,
            audit=context.audit,
            outcomes=claimed.outcomes,
        )
        return [claimed.outcomes[position] for position in sorted(claimed.outcomes)]

    def _send_paced(
        self, chunk: Sequence[ReplayPlan[Any]], publisher: BulkPublisher, context: _SendContext
    ) -> list[ReplayOutcome]:
        """Claim each record when the rate lets its message go, publish, then settle the chunk.

        No claim waits out a pacing sleep; the chunk's confirmed records are marked in
        one transaction and the others released in one.
        """
        claimed = self._claim(chunk, context)
        outcomes, candidates, token = claimed.outcomes, claimed.candidates, claimed.token
        sent = _Sent()
        archive_errors: list[ArchiveError] = []
        pacer = context.pacer
        assert pacer is not None

        def claim_each() -> Iterator[tuple[int, ReplayPlan[Any]]]:
            # The chunk's first wait was taken before publish_many (nothing in flight then).
            waited = True
            for k, (position, plan) in enumerate(candidates):
                if not waited:
                    pacer.wait()
                waited = False
                try:
                    _, mine = self.archive.claim_many(
                        [record_id_of(plan)], allow_statuses=context.allowed, token=token
                    )
                except ArchiveError as exc:
                    archive_errors.append(exc)
                    for later, later_plan in candidates[k:]:
                        outcomes[later] = failed(later_plan, f"not sent: {exc}")
                    return
                if mine:
                    yield position, plan
                else:
                    # Nothing is sent for it: the next record may take its slot.
                    pacer.refund()
                    outcomes[position] = not_claimed(plan)

        def messages() -> Iterator[OutgoingMessage]:
            for position, plan in claim_each():
                assert plan.message is not None
                sent.taken.append((position, plan))
                message, outgoing_message = outgoing(plan.message, tracer=self._tracer)
                sent.messages.append(message)
                yield outgoing_message

        if candidates:
            pacer.wait()
        try:
            # Paced here, not by publish_many: its pacing waits after a chunk's last send,
            # while the chunk's claims are held and not yet marked.
            sent.result = publisher.publish_many(messages())
        except BrokerUnavailable as exc:
            sent.result = BulkResult(failures=[PublishFailure(0, NOT_SENT, str(exc))])
        settle(
            self.archive,
            candidates,
            sent.taken,
            sent.messages,
            sent.result,
            token=token,
            who=self.who,
            reason=context.reason,
            audit=context.audit,
            outcomes=outcomes,
        )
        if archive_errors:
            logger.error("Replay stopped: %s", archive_errors[0])
        return [outcomes[position] for position in sorted(outcomes)]

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
    pacer: Pacer | None


@dataclasses.dataclass
class _Claimed:
    """One batch after its claim: the records to send, the claims won, outcomes so far."""

    candidates: list[tuple[int, ReplayPlan[Any]]] = dataclasses.field(default_factory=list)
    outcomes: dict[int, ReplayOutcome] = dataclasses.field(default_factory=dict)
    token: str = ""
    won: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Sent:
    """One batch after its publish: the records handed to RabbitMQ, their messages, the result."""

    taken: list[tuple[int, ReplayPlan[Any]]] = dataclasses.field(default_factory=list)
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    result: BulkResult = dataclasses.field(default_factory=BulkResult)
