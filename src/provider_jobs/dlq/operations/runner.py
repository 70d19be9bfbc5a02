"""OperationRunner: runs a running operation in this thread, chunk by chunk, until its records are
settled, it is paused or cancelled, or an error stops it.

A chunk of records is marked ``sending`` and handed to the :class:`Replayer`, whose claims and
marks (:mod:`..archive.claims`) are what keep a record from being sent twice; its outcomes are
then written back. A discard's chunk is marked discarded in one statement. Between chunks the
runner says it is alive and reads the operation's state: a pause or cancel asked by any process
stops it there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import ArchiveError, BrokerUnavailable, ProviderJobsError, RecordNotFound
from ..archive.filters import RecordFilter
from ..archive.operations import (
    DISCARDED_STATE,
    DONE,
    FAILED,
    FAILED_STATE,
    RUNNING,
    SENT,
    SKIPPED,
    OperationRow,
)
from ..archive.store import DEAD, DISCARDED, DeadLetterArchive
from ..replay.gate import PauseHandler, ProviderHealth
from ..replay.replayer import Replayer, ReplayOutcome
from .liveness import heartbeat
from .stoppable import StoppableHealth, Stopped

__all__ = ["CHUNK", "OperationRunner"]

logger = logging.getLogger("provider_jobs.dlq.operations")

#: Records handed to the replayer at once; the most an interrupted replay cannot vouch for.
CHUNK = 1000
#: Batches the replayer sends a chunk in, so that its claims and marks overlap its publishing.
_BATCHES_PER_CHUNK = 4
#: Seconds of messages a paced replay hands over at once (its runner says it is alive between).
_PACED_CHUNK_S = 5.0
#: Outcome statuses of a replay, as a record's state in the operation.
_REPLAY_STATES = {"published": SENT, "failed": FAILED_STATE}


class OperationRunner:
    """Runs operations stored in one archive, chunk by chunk; :class:`~.control.Operations`
    makes one with its own ``archive``, ``broker_url`` and ``tracer_provider``."""

    def __init__(self, archive: DeadLetterArchive, *, broker_url: str, tracer_provider: Any = None) -> None:
        self.archive = archive
        self.broker_url = broker_url
        self._tracer_provider = tracer_provider

    def replayer(self, who: str) -> Replayer:
        """The :class:`Replayer` an operation's replay sends its chunks with, as ``who``."""
        return Replayer(
            archive=self.archive,
            broker_url=self.broker_url,
            who=who,
            window=max(1, CHUNK // _BATCHES_PER_CHUNK),
            tracer_provider=self._tracer_provider,
        )

    def run(
        self,
        operation: OperationRow,
        *,
        on_outcome: Callable[[ReplayOutcome], None] | None = None,
        health: ProviderHealth | None = None,
        on_pause: PauseHandler | None = None,
    ) -> None:
        """Run ``operation`` until its records are settled (then ``done``) or it is paused or
        cancelled; an error stops it as ``failed``.

        Args:
            operation: A ``running`` operation this process owns (started or taken over).
            on_outcome: Called with each replayed record's outcome (progress bars).
            health: The providers' health: a replay holds back the records of a provider whose
                breaker is open (see :meth:`Replayer.replay`). Default: sends whatever it says.
            on_pause: Called when a provider's records start or stop being held back.

        Raises:
            BrokerUnavailable, ArchiveError: The operation stopped on it; it is stored ``failed``
                with the error, and can be resumed.
        """
        chunk = CHUNK
        rate = operation.options.get("rate_per_s")
        if rate:
            chunk = max(1, min(CHUNK, int(rate * _PACED_CHUNK_S)))
        try:
            with heartbeat(self.archive, operation.id):
                self._run_chunks(operation, chunk, on_outcome, health=health, on_pause=on_pause)
        except ProviderJobsError as exc:
            logger.error("Operation %d failed: %s", operation.id, exc)
            self._fail(operation.id, str(exc))
            raise
        except Exception as exc:
            self._fail(operation.id, f"{type(exc).__name__}: {exc}")
            raise

    def _run_chunks(
        self,
        operation: OperationRow,
        chunk: int,
        on_outcome: Callable[[ReplayOutcome], None] | None,
        *,
        health: ProviderHealth | None,
        on_pause: PauseHandler | None,
    ) -> None:
        operation_id = operation.id
        while True:
            if self.archive.operation_heartbeat(operation_id) != RUNNING:
                return
            pending = self.archive.next_pending(operation_id, limit=chunk)
            if not pending:
                self.archive.set_operation_state(operation_id, DONE, only_from=(RUNNING,))
                return
            self.archive.begin_sending(operation_id, [position for position, _ in pending])
            if operation.action == "discard":
                self._discard_chunk(operation, pending)
            else:
                self._replay_chunk(operation, pending, on_outcome, health=health, on_pause=on_pause)

    def _fail(self, operation_id: int, error: str) -> None:
        """Store the operation as failed (resumable), if the archive can be written."""
        try:
            self.archive.set_operation_state(operation_id, FAILED, only_from=(RUNNING,), error=error)
        except ArchiveError as exc:
            logger.error(
                "Operation %d could not be marked failed (%s): it shows as interrupted", operation_id, exc
            )

    def _replay_chunk(
        self,
        operation: OperationRow,
        pending: Sequence[tuple[int, int]],
        on_outcome: Callable[[ReplayOutcome], None] | None,
        *,
        health: ProviderHealth | None,
        on_pause: PauseHandler | None,
    ) -> None:
        options = operation.options
        positions = {record_id: position for position, record_id in pending}
        seen: list[ReplayOutcome] = []

        def outcome(done: ReplayOutcome) -> None:
            seen.append(done)
            if on_outcome is not None:
                on_outcome(done)

        def still_running() -> bool:
            return self.archive.operation_heartbeat(operation.id) == RUNNING

        try:
            report = self.replayer(operation.who).replay(
                [record_id for _, record_id in pending],
                request_patch=options.get("request_patch"),
                job_patch=options.get("job_patch"),
                rate_per_s=options.get("rate_per_s"),
                force=bool(options.get("force")),
                reason=operation.reason,
                on_outcome=outcome,
                health=None if health is None else StoppableHealth(health, still_running),
                max_pause_s=options.get("max_pause_s"),
                on_pause=on_pause,
            )
        except Stopped:
            # Paused or cancelled while records waited for a breaker: whatever was sent is
            # settled, the records held back are pending again (unclaimed), for a resume.
            self._settle_outcomes(operation, positions, seen)
            self.archive.reconcile_operation(operation.id, action=operation.action)
            return
        except BrokerUnavailable:
            # Nothing of the chunk was published: it is pending again, for a resume.
            self.archive.reconcile_operation(operation.id, action=operation.action)
            raise
        except RecordNotFound:
            # A record purged since the operation started: the chunk goes on without it.
            self.archive.reconcile_operation(operation.id, action=operation.action)
            self._skip_missing(operation, pending)
            return
        self._settle_outcomes(operation, positions, report.outcomes)

    def _settle_outcomes(
        self, operation: OperationRow, positions: Mapping[int, int], outcomes: Sequence[ReplayOutcome]
    ) -> None:
        self.archive.settle_operation_records(
            operation.id,
            [
                (positions[o.record_id], _REPLAY_STATES.get(o.status, SKIPPED), o.detail, o.message_id)
                for o in outcomes
            ],
        )

    def _skip_missing(self, operation: OperationRow, pending: Sequence[tuple[int, int]]) -> None:
        present = set(self.archive.ids(RecordFilter(ids=[record_id for _, record_id in pending])))
        self.archive.settle_operation_records(
            operation.id,
            [(p, SKIPPED, "no longer in the archive", None) for p, r in pending if r not in present],
        )

    def _discard_chunk(self, operation: OperationRow, pending: Sequence[tuple[int, int]]) -> None:
        changed = set(
            self.archive.set_status(
                RecordFilter(ids=[record_id for _, record_id in pending], statuses=[DEAD]),
                DISCARDED,
                who=operation.who,
                reason=operation.reason,
                action="discard",
            )
        )
        self.archive.settle_operation_records(
            operation.id,
            [
                (position, DISCARDED_STATE, None, None)
                if record_id in changed
                else (position, SKIPPED, "not a dead letter awaiting action (or being replayed)", None)
                for position, record_id in pending
            ],
        )
