"""Replayer: sends archived dead letters back to their queue, each exactly once.

A replay is planned first (:mod:`.planning`): every record is read, every edit
applied and the job validated; one invalid edit stops the replay before
anything is sent. Then, batch by batch (the batches of providers whose breaker
is open held back by the :mod:`.gate`): claim the batch's records in the
archive (one conditional ``UPDATE`` under one token; a record someone else is
replaying is skipped), publish the fresh messages (:mod:`.message`)
persistently through a :class:`~provider_jobs.rabbitmq.bulk.BulkPublisher`
(publisher confirms, many in flight, unroutable ones returned), and mark the
records whose message RabbitMQ confirmed ``replayed`` with the new message ids,
audited, in one transaction (:mod:`.settlement`). Every other claim is given
back, so the record can be replayed later; a message left *unconfirmed* by a
lost connection may still have been queued, so such a later replay can deliver
its job twice (as any redelivery can). A replay reads only the columns it
sends from (:class:`~provider_jobs.dlq.archive.ReplaySource`).

The batches go by one of two send strategies: as fast as confirms allow, the
archive's work overlapping the publishing (:mod:`.overlapped`), or paced to a
rate, each record claimed when its message is due (:mod:`.paced`). This
module composes them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import BrokerUnavailable, InvalidJob
from ...gc_pause import paused_gc
from ...rabbitmq.bulk import BulkPublisher
from ...tracing import tracer_of
from ..archive.records import DeadLetter
from ..archive.store import DEAD, DeadLetterArchive
from .batch import SendContext
from .gate import HealthGate, PauseHandler, ProviderHealth
from .message import merge_patch, unstorable
from .overlapped import send_overlapped
from .paced import paced_batch_size, send_paced
from .planning import allowed_statuses, plan_records, read_records

# Re-exported: the CLI takes the outcome status it counts from here.
from .report import FAILED as FAILED  # noqa: PLC0414
from .report import ReplayOutcome, ReplayPlan, ReplayReport, paused_outcome, unsent

__all__ = ["ReplayOutcome", "ReplayPlan", "ReplayReport", "Replayer", "merge_patch"]


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
        return plan_records(
            ids,
            read_records(self.archive, ids),
            allowed=allowed_statuses(self.allow_statuses, force=force),
            request_patch=request_patch,
            job_patch=job_patch,
        )

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
        allowed = allowed_statuses(self.allow_statuses, force=force)
        # Only the columns a replay needs: a whole record costs ten times as much to read.
        plans = plan_records(
            ids,
            self.archive.replay_sources(ids),
            allowed=allowed,
            request_patch=request_patch,
            job_patch=job_patch,
        )
        report = ReplayReport()
        started = time.monotonic()
        size = self.window if rate_per_s is None else paced_batch_size(rate_per_s, self.window)
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
        context = SendContext(
            archive=self.archive,
            who=self.who,
            tracer=self._tracer,
            allowed=allowed,
            reason=reason,
            audit={"request_patch": request_patch, "job_patch": job_patch},
        )
        try:
            if rate_per_s is None:
                send_overlapped(gate, publisher, context, emit)
            else:
                send_paced(gate, publisher, context, emit, rate_per_s=rate_per_s)
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

    def _open_publisher(self) -> BulkPublisher:
        publisher = BulkPublisher(self.broker_url, window=self.window)
        try:
            publisher.connect()
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"{exc}; nothing was replayed") from exc
        return publisher
