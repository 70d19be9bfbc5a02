"""Bulk operations: a replay or discard of a selection, stored in the archive, run chunk by chunk.

What the CLI, the API and the console call to start, list, show, pause, resume
and cancel an operation. The operation and each record's outcome are stored in
the archive (:mod:`.archive.operations`) as it runs, so its progress outlives
the process running it:

- A chunk of records is marked ``sending`` and handed to the :class:`Replayer`,
  whose claims and marks (:mod:`.archive.claims`) are what keep a record from
  being sent twice; its outcomes are then written back.
- Between chunks the runner says it is alive and reads the operation's state:
  a pause or cancel asked by any process stops it there.
- After the process running it died (a restart, a SIGKILL), :meth:`Operations.resume`
  first settles the chunk it left ``sending`` from what the archive says of each
  record (:meth:`~.archive.operations.ArchiveOperations.reconcile_operation`):
  marked replayed is sent, never claimed is sent now, and a record still claimed
  may have been published: it is ``uncertain``, listed, and its record takes the
  status ``uncertain``, which no replay sends (single, group, filter, triage,
  recovery, forced or not) until an operator says whether it was sent
  (:meth:`Operations.resolve`). At most one chunk (:data:`CHUNK` records) is uncertain.
- A replay waiting for a provider's breaker to close asks every second whether the
  operation was paused or cancelled meanwhile, and stops there if it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..errors import (
    ArchiveError,
    BrokerUnavailable,
    InvalidJob,
    ProviderJobsError,
    RecordConflict,
    RecordNotFound,
)
from ..health.watch import Pause
from .archive.filters import RecordFilter
from .archive.operations import (
    CANCELLED,
    DISCARDED_STATE,
    DONE,
    FAILED,
    FAILED_STATE,
    PAUSED,
    RUNNING,
    SENT,
    SKIPPED,
    OperationRecord,
    OperationRow,
)
from .archive.store import DEAD, DISCARDED, DeadLetterArchive
from .replay.gate import PauseHandler, ProviderHealth
from .replay.message import unstorable
from .replay.replayer import Replayer, ReplayOutcome, ReplayReport

__all__ = [
    "CHUNK",
    "STALE_AFTER_S",
    "HealthSource",
    "Operations",
    "describe_filter",
    "interrupted",
    "operation_view",
    "this_runner",
]

logger = logging.getLogger("provider_jobs.dlq.operations")

#: Records handed to the replayer at once; the most an interrupted replay cannot vouch for.
CHUNK = 1000
#: Batches the replayer sends a chunk in, so that its claims and marks overlap its publishing.
_BATCHES_PER_CHUNK = 4
#: Seconds of messages a paced replay hands over at once (its runner says it is alive between).
_PACED_CHUNK_S = 5.0
#: A running operation whose runner has not said it is alive for this long is interrupted.
STALE_AFTER_S = 60.0
#: How often a runner says it is alive.
_BEAT_S = STALE_AFTER_S / 6
#: Outcome statuses of a replay, as a record's state in the operation.
_REPLAY_STATES = {"published": SENT, "failed": FAILED_STATE}
#: How often a replay waiting for a breaker reads whether its operation was paused or cancelled.
_STOP_CHECK_S = 1.0

#: Opens the providers' health for a run and closes it after (:func:`~provider_jobs.health.follow_breakers`).
HealthSource = Callable[[], AbstractContextManager[ProviderHealth | None]]


class _Stopped(Exception):
    """The operation was paused or cancelled while its replay waited for a breaker."""


class _StoppableHealth:
    """A replay's health that, while it waits for a breaker, stops the replay once the
    operation is no longer running (read at most every :data:`_STOP_CHECK_S`)."""

    def __init__(self, health: ProviderHealth, still_running: Callable[[], bool]) -> None:
        self._health = health
        self._still_running = still_running
        self._checked = time.monotonic()

    def pause_of(self, provider: str) -> Pause | None:
        return self._health.pause_of(provider)

    def wait(self, timeout_s: float) -> None:
        self._health.wait(timeout_s)
        now = time.monotonic()
        if now - self._checked >= _STOP_CHECK_S:
            self._checked = now
            if not self._still_running():
                raise _Stopped


def this_runner() -> str:
    """This process, as an operation's ``runner``: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(runner: str | None) -> bool | None:
    """Whether ``runner`` (``host:pid``) is alive; ``None`` when it is on another host."""
    host, _, pid = (runner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupted(operation: OperationRow, *, now_s: float | None = None) -> bool:
    """Whether a ``running`` operation's runner is gone: its process is dead (same host) or it
    has not said it is alive for :data:`STALE_AFTER_S`."""
    if operation.state != RUNNING:
        return False
    alive = _alive(operation.runner)
    if alive is not None:
        return not alive
    now_ms = (time.time() if now_s is None else now_s) * 1000
    return now_ms - (operation.heartbeat_ms or 0) > STALE_AFTER_S * 1000


def operation_view(operation: OperationRow) -> dict[str, Any]:
    """The operation as JSON-ready data (the CLI's ``--json``, the API, the console): its
    fields, ``settled`` and ``interrupted`` (running, but its process is gone)."""
    return {
        **dataclasses.asdict(operation),
        "settled": operation.settled,
        "interrupted": interrupted(operation),
    }


def describe_filter(record_filter: RecordFilter) -> dict[str, Any]:
    """A filter as an operation's stored selection: the fields set (ids only counted)."""
    selection: dict[str, Any] = {}
    for name, value in vars(record_filter).items():
        if name == "ids":
            if value is not None:
                selection["ids"] = len(value)
        elif value not in (None, False):
            selection[name] = list(value) if isinstance(value, list | tuple) else value
    return selection


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
        self._tracer_provider = tracer_provider
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

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
            self._replayer(who).plan(
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
        again, which any replay may send (:meth:`~.archive.operations.ArchiveOperations.resolve_uncertain`).

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

        def work() -> None:
            try:
                with health() if health is not None else contextlib.nullcontext() as watch:
                    self.run(operation_id, health=watch)
            except ProviderJobsError:
                pass  # logged and stored by run: the operation shows it failed, and why
            except Exception:  # a thread's failure is logged and stored, never lost
                logger.exception("Operation %d stopped", operation_id)
            finally:
                with self._lock:
                    self._threads.pop(operation_id, None)

        thread = threading.Thread(target=work, name=f"dlq-operation-{operation_id}", daemon=True)
        with self._lock:
            self._threads[operation_id] = thread
        thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the operations running in this process's threads."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout_s)

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
            on_outcome: Called with each replayed record's outcome (progress bars).
            health: The providers' health: a replay holds back the records of a provider whose
                breaker is open (see :meth:`Replayer.replay`). Default: sends whatever it says.
            on_pause: Called when a provider's records start or stop being held back.

        Returns:
            The operation as it stopped.

        Raises:
            RecordNotFound: No such operation.
            BrokerUnavailable, ArchiveError: The operation stopped on it; it is stored ``failed``
                with the error, and can be resumed.
        """
        operation = self.get(operation_id)
        chunk = CHUNK
        rate = operation.options.get("rate_per_s")
        if rate:
            chunk = max(1, min(CHUNK, int(rate * _PACED_CHUNK_S)))
        try:
            with self._beating(operation_id):
                self._run_chunks(operation, chunk, on_outcome, health=health, on_pause=on_pause)
        except ProviderJobsError as exc:
            logger.error("Operation %d failed: %s", operation_id, exc)
            self._fail(operation_id, str(exc))
            raise
        except Exception as exc:
            self._fail(operation_id, f"{type(exc).__name__}: {exc}")
            raise
        return self.get(operation_id)

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

    @contextlib.contextmanager
    def _beating(self, operation_id: int) -> Iterator[None]:
        """Say the operation's runner is alive every :data:`_BEAT_S` while the block runs, also
        through a chunk that waits long (a paced one, or records held back by a breaker)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(_BEAT_S):
                try:
                    self.archive.operation_heartbeat(operation_id)
                except ArchiveError as exc:
                    logger.warning("Operation %d: could not say it is alive (%s)", operation_id, exc)

        beater = threading.Thread(target=beat, name=f"dlq-operation-{operation_id}-heartbeat", daemon=True)
        beater.start()
        try:
            yield
        finally:
            stop.set()
            beater.join()

    def _fail(self, operation_id: int, error: str) -> None:
        """Store the operation as failed (resumable), if the archive can be written."""
        try:
            self.archive.set_operation_state(operation_id, FAILED, only_from=(RUNNING,), error=error)
        except ArchiveError as exc:
            logger.error(
                "Operation %d could not be marked failed (%s): it shows as interrupted", operation_id, exc
            )

    def _replayer(self, who: str) -> Replayer:
        return Replayer(
            archive=self.archive,
            broker_url=self.broker_url,
            who=who,
            window=max(1, CHUNK // _BATCHES_PER_CHUNK),
            tracer_provider=self._tracer_provider,
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
            report = self._replayer(operation.who).replay(
                [record_id for _, record_id in pending],
                request_patch=options.get("request_patch"),
                job_patch=options.get("job_patch"),
                rate_per_s=options.get("rate_per_s"),
                force=bool(options.get("force")),
                reason=operation.reason,
                on_outcome=outcome,
                health=None if health is None else _StoppableHealth(health, still_running),
                max_pause_s=options.get("max_pause_s"),
                on_pause=on_pause,
            )
        except _Stopped:
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
