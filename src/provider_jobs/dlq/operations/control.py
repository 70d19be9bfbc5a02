"""Operations: what the CLI, the API and the console call to start, list, show, pause, resume,
cancel and resolve a bulk replay or discard stored in the archive, and to run it here or in
a thread of this process (:class:`~.runner.OperationRunner` runs it).

After the process running an operation died (a restart, a SIGKILL), :meth:`Operations.resume`
first settles the chunk it left ``sending`` from what the archive says of each record
(:meth:`~..archive.operations.ArchiveOperations.reconcile_operation`): marked replayed is sent,
never claimed is sent now, and a record still claimed may have been published: it is
``uncertain``, listed, and its record takes the status ``uncertain``, which no replay sends
(single, group, filter, triage, recovery, forced or not) until an operator says whether it was
sent (:meth:`Operations.resolve`). At most one chunk (:data:`~.runner.CHUNK` records) is uncertain.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ...errors import (
    ArchiveError,
    BrokerUnavailable,
    InvalidJob,
    RecordConflict,
    RecordNotFound,
)
from ...health.watch import Pause
from ..archive.operations import CANCELLED, FAILED, PAUSED, RUNNING, OperationRecord, OperationRow
from ..archive.store import DeadLetterArchive
from ..replay.gate import PauseHandler, ProviderHealth
from ..replay.message import unstorable
from ..replay.replayer import ReplayOutcome, ReplayReport
from .background import BackgroundRuns
from .liveness import interrupted, this_runner
from .runner import OperationRunner

__all__ = ["HealthSource", "Operations"]

logger = logging.getLogger("provider_jobs.dlq.operations")

#: Opens the providers' health for a run and closes it after (:func:`~provider_jobs.health.follow_breakers`).
HealthSource = Callable[[], AbstractContextManager[ProviderHealth | None]]


class Operations:
    """Starts, runs and steers bulk operations over one archive.

    Args:
        archive: The dead-letter archive holding the records and the operations.
        broker_url: RabbitMQ URL replays publish to.
        tracer_provider: Passed to the :class:`Replayer`. Default: the global one, if set.
    """

    def __init__(self, archive: DeadLetterArchive, *, broker_url: str, tracer_provider: Any = None) -> None:
        self.archive = archive
        self.broker_url = broker_url
        self._runner = OperationRunner(archive, broker_url=broker_url, tracer_provider=tracer_provider)
        self._background = BackgroundRuns()

    # -- starting -----------------------------------------------------------------

    def start_replay(
        self,
        record_ids: Sequence[int],
        *,
        who: str,
        selection: Mapping[str, Any],
        reason: str | None = None,
        force: bool = False,
        rate_per_s: float | None = None,
        request_patch: dict[str, Any] | None = None,
        job_patch: dict[str, Any] | None = None,
        max_pause_s: float | None = None,
    ) -> int:
        """Store a replay of ``record_ids`` as a new running operation; nothing is sent yet
        (:meth:`run` sends). An edit is checked on every record first. ``max_pause_s``: how
        long a paused provider's records wait for its breaker before they are skipped, when
        the operation runs with ``health`` (default: until it closes).

        Returns:
            The operation's id.

        Raises:
            RecordNotFound, InvalidJob, NotReplayable: From checking the edits, or a ``reason``
                no archive can store; nothing was stored.
            ValueError: ``rate_per_s`` is not positive.
        """
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s!r} is not allowed: expected messages per second > 0")
        self._check_reason(reason)
        if request_patch is not None or job_patch is not None:
            self._runner.replayer(who).plan(
                record_ids, request_patch=request_patch, job_patch=job_patch, force=force
            )
        options = {"force": force, "rate_per_s": rate_per_s, "request_patch": request_patch,
                   "job_patch": job_patch, "max_pause_s": max_pause_s}  # fmt: skip
        return self.archive.create_operation(
            action="replay", who=who, reason=reason, selection=selection, options=options,
            record_ids=record_ids, runner=this_runner(),
        )  # fmt: skip

    def start_discard(
        self, record_ids: Sequence[int], *, who: str, selection: Mapping[str, Any], reason: str
    ) -> int:
        """Store a discard of ``record_ids`` (those still dead letters awaiting action when their
        chunk runs) as a new running operation.

        Returns:
            The operation's id.

        Raises:
            InvalidJob: ``reason`` is empty or cannot be stored.
        """
        if not reason.strip():
            raise InvalidJob("A discard needs a reason: it is written to the audit log")
        self._check_reason(reason)
        return self.archive.create_operation(
            action="discard", who=who, reason=reason, selection=selection, options={},
            record_ids=record_ids, runner=this_runner(),
        )  # fmt: skip

    @staticmethod
    def _check_reason(reason: str | None) -> None:
        problem = unstorable(reason)
        if problem is not None:
            raise InvalidJob(f"The reason holds {problem}; nothing was sent")

    def replay(
        self,
        record_ids: Sequence[int],
        *,
        who: str,
        selection: Mapping[str, Any],
        on_outcome: Callable[[ReplayOutcome], None] | None = None,
        health: ProviderHealth | None = None,
        on_pause: PauseHandler | None = None,
        **options: Any,
    ) -> tuple[int, ReplayReport]:
        """Start a replay operation (:meth:`start_replay` takes ``options``) and run it in this
        thread to its end: what ``dlq replay`` and ``POST /dlq/replay`` do.

        Returns:
            The operation's id, and each record's outcome and each provider paused, as
            :meth:`Replayer.replay` reports them.

        Raises:
            RecordNotFound, InvalidJob, NotReplayable: From :meth:`start_replay`; nothing was stored.
            BrokerUnavailable, ArchiveError: The operation stopped (stored as failed, resumable).
        """
        started = time.monotonic()
        report = ReplayReport()
        op_id = self.start_replay(record_ids, who=who, selection=selection, **options)

        def outcome(done: ReplayOutcome) -> None:
            report.outcomes.append(done)
            if on_outcome is not None:
                on_outcome(done)

        def pause(provider: str, paused: Pause | None) -> None:
            if paused is not None:
                report.pauses.append(paused)
            if on_pause is not None:
                on_pause(provider, paused)

        try:
            self.run(op_id, on_outcome=outcome, health=health, on_pause=pause)
        except (ArchiveError, BrokerUnavailable) as exc:
            raise type(exc)(f"{exc} (operation {op_id} stopped; it can be resumed)") from exc
        report.elapsed_s = time.monotonic() - started
        return op_id, report

    # -- reading ------------------------------------------------------------------

    def get(self, operation_id: int) -> OperationRow:
        """The operation and its counts.

        Raises:
            RecordNotFound: No such operation.
        """
        found = self.archive.operation(operation_id)
        if found is None:
            raise RecordNotFound(f"No operation with id {operation_id}")
        return found

    def latest(self, *, limit: int = 50) -> list[OperationRow]:
        """The latest operations, newest first."""
        return self.archive.operations(limit=limit)

    def records(
        self, operation_id: int, *, states: Sequence[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[OperationRecord]:
        """The operation's records in ``states`` (default all), in order."""
        return self.archive.operation_records(operation_id, states=states, limit=limit, offset=offset)

    # -- steering -----------------------------------------------------------------

    def pause(self, operation_id: int) -> OperationRow:
        """Ask a running operation to stop after its current chunk; :meth:`resume` goes on.

        Raises:
            RecordNotFound: No such operation.
            RecordConflict: It is not running.
        """
        self._move(operation_id, PAUSED, only_from=(RUNNING,))
        return self.get(operation_id)

    def cancel(self, operation_id: int) -> OperationRow:
        """Stop an operation for good (after its current chunk); its pending records stay unsent.

        Raises:
            RecordNotFound: No such operation.
            RecordConflict: It is done or cancelled already.
        """
        self._move(operation_id, CANCELLED, only_from=(RUNNING, PAUSED, FAILED))
        return self.get(operation_id)

    def _move(self, operation_id: int, state: str, *, only_from: Sequence[str]) -> None:
        current = self.get(operation_id)
        if not self.archive.set_operation_state(operation_id, state, only_from=only_from):
            raise RecordConflict(f"Operation {operation_id} is {current.state}: it cannot be {state}")

    def resume(
        self, operation_id: int, *, on_outcome: Callable[[ReplayOutcome], None] | None = None
    ) -> OperationRow:
        """Go on with a paused, failed or interrupted operation in this process, until it ends
        or is paused or cancelled again.

        Raises:
            RecordNotFound: No such operation.
            RecordConflict: It is done, cancelled, or running in a live process.
        """
        self.take_over(operation_id)
        return self.run(operation_id, on_outcome=on_outcome)

    def take_over(self, operation_id: int) -> dict[str, int]:
        """Make a paused, failed or interrupted operation this process's, running again, and
        settle the records its last runner left being sent.

        Returns:
            How many records the settling moved to each state (``uncertain``: may have been sent).

        Raises:
            RecordNotFound: No such operation.
            RecordConflict: It is done, cancelled, or running in a live process.
        """
        current = self.get(operation_id)
        resumable = [PAUSED, FAILED] + ([RUNNING] if interrupted(current) else [])
        if current.state not in resumable:
            why = f"running in {current.runner}" if current.state == RUNNING else current.state
            raise RecordConflict(f"Operation {operation_id} is {why}: it cannot be resumed")
        if not self.archive.set_operation_state(
            operation_id,
            RUNNING,
            only_from=resumable,
            runner=this_runner(),
            heartbeat_ms=current.heartbeat_ms,
        ):
            raise RecordConflict(f"Operation {operation_id} changed meanwhile: look again")
        moved = self.archive.reconcile_operation(operation_id, action=current.action)
        if moved:
            logger.warning("Operation %d resumed: records left being sent settled as %s", operation_id, moved)
        return moved

    def resolve(
        self,
        operation_id: int,
        *,
        sent: bool,
        who: str,
        reason: str | None = None,
        record_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Say what became of the operation's uncertain records (all, or ``record_ids``): with
        ``sent`` they are marked replayed; otherwise they are dead letters awaiting action
        again, which any replay may send (:meth:`~..archive.operations.ArchiveOperations.resolve_uncertain`).

        Returns:
            The record ids resolved.

        Raises:
            RecordNotFound: No such operation.
            InvalidJob: ``reason`` cannot be stored.
        """
        self.get(operation_id)
        self._check_reason(reason)
        return self.archive.resolve_uncertain(
            operation_id, sent=sent, who=who, reason=reason, record_ids=record_ids
        )

    # -- running ------------------------------------------------------------------

    def run_in_background(
        self, operation_id: int, *, take_over: bool = False, health: HealthSource | None = None
    ) -> None:
        """Run the operation in a thread of this process; with ``take_over``, first make it
        this process's (:meth:`take_over`, which may refuse).

        Args:
            operation_id: The operation.
            take_over: Make a paused, failed or interrupted operation this process's first.
            health: Opens the providers' health in the thread for the run (``follow_breakers``
                with the settings); a replay holds back the records of a provider whose breaker
                is open, and a pause or cancel still stops it within a second or so. Default:
                sends whatever the breakers say.

        Raises:
            RecordNotFound, RecordConflict: From :meth:`take_over`; nothing was started.
        """
        if take_over:
            self.take_over(operation_id)

        def run() -> None:
            with health() if health is not None else contextlib.nullcontext() as watch:
                self.run(operation_id, health=watch)

        self._background.start(operation_id, run)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the operations running in this process's threads."""
        self._background.join(timeout_s)

    def run(
        self,
        operation_id: int,
        *,
        on_outcome: Callable[[ReplayOutcome], None] | None = None,
        health: ProviderHealth | None = None,
        on_pause: PauseHandler | None = None,
    ) -> OperationRow:
        """Run a running operation in this thread, chunk by chunk, until its records are settled
        (then ``done``) or it is paused or cancelled; an error stops it as ``failed``.

        Args:
            operation_id: A ``running`` operation this process owns (started or taken over).
            on_outcome: Progress, ``health`` the breakers a replay follows, ``on_pause`` told of
                their pauses: as :meth:`~.runner.OperationRunner.run` takes them.

        Returns:
            The operation as it stopped.

        Raises:
            RecordNotFound: No such operation.
            BrokerUnavailable, ArchiveError: The operation stopped on it (stored ``failed``,
                resumable).
        """
        operation = self.get(operation_id)
        self._runner.run(operation, on_outcome=on_outcome, health=health, on_pause=on_pause)
        return self.get(operation_id)
