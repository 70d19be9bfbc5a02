"""ArchiveOperations: bulk replays and discards stored as records, and what became of each record.

An operation is one row of ``dlq_operations`` (who, the selection, the record
count, its state) and one row per record of ``dlq_operation_records``, in order.
A record is ``pending`` until its chunk is handed over (``sending``), then
``sent``, ``discarded``, ``skipped`` or ``failed`` with its reason. After the
process running it died, :meth:`ArchiveOperations.reconcile_operation` reads
what the archive itself says of the records left ``sending``: a record marked
replayed since is ``sent``, one still claimed may have been published and is
``uncertain``, any other is ``pending`` again. An uncertain record takes the
status ``uncertain`` too, which no replay sends, until an operator says what
became of it (:meth:`ArchiveOperations.resolve_uncertain`). The runner is
:mod:`provider_jobs.dlq.operations`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from .audit import audit_row
from .database import ArchiveDatabase, chunks, epoch_ms, moved
from .status import DEAD, DISCARDED, REPLAYED
from .status import UNCERTAIN as UNCERTAIN_STATUS

__all__ = [
    "OPERATION_STATES",
    "RECORD_STATES",
    "ArchiveOperations",
    "OperationRecord",
    "OperationRow",
]

#: An operation's states; ``running`` until it is ``done``, or stopped as ``paused``,
#: ``failed`` (it can be resumed) or ``cancelled``.
RUNNING, PAUSED, DONE, FAILED, CANCELLED = "running", "paused", "done", "failed", "cancelled"
OPERATION_STATES = (RUNNING, PAUSED, DONE, FAILED, CANCELLED)
#: A record's states within an operation.
PENDING, SENDING, SENT, DISCARDED_STATE, SKIPPED, FAILED_STATE, UNCERTAIN = (
    "pending",
    "sending",
    "sent",
    "discarded",
    "skipped",
    "failed",
    "uncertain",
)
RECORD_STATES = (PENDING, SENDING, SENT, DISCARDED_STATE, SKIPPED, FAILED_STATE, UNCERTAIN)
#: Rows per statement when writing an operation's records.
_WRITE_CHUNK = 500
#: Why a record is uncertain, in its operation.
_UNCERTAIN_DETAIL = (
    "claimed when the process running the operation stopped: it may have been published; "
    "not sent again until an operator resolves it (dlq operations resolve)"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperationRow:
    """One stored operation and how many of its records are in each state."""

    id: int
    action: str
    who: str
    reason: str | None
    selection: dict[str, Any]
    options: dict[str, Any]
    total: int
    state: str
    error: str | None
    runner: str | None
    created_ms: int
    updated_ms: int
    heartbeat_ms: int | None
    finished_ms: int | None
    counts: dict[str, int]

    @property
    def settled(self) -> int:
        """Records with a final outcome in this operation (not pending, not being sent)."""
        return self.total - self.counts.get(PENDING, 0) - self.counts.get(SENDING, 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperationRecord:
    """One record of an operation and what became of it."""

    position: int
    record_id: int
    state: str
    detail: str | None
    message_id: str | None


class ArchiveOperations(ArchiveDatabase):
    """Storing operations and their records; part of :class:`~.archive.DeadLetterArchive`."""

    def create_operation(
        self,
        *,
        action: str,
        who: str,
        reason: str | None,
        selection: Mapping[str, Any],
        options: Mapping[str, Any],
        record_ids: Sequence[int],
        runner: str | None,
    ) -> int:
        """Store a new ``running`` operation over ``record_ids`` (all ``pending``), in one transaction.

        Returns:
            The operation's id.
        """
        ids = list(dict.fromkeys(record_ids))
        now = epoch_ms()
        ops, rows = self.tables.operations, self.tables.operation_records
        with self._write(f"storing an operation over {len(ids)} record(s)") as conn:
            key = conn.execute(
                ops.insert().values(
                    action=action,
                    who=who,
                    reason=reason,
                    selection=dict(selection),
                    options=dict(options),
                    total=len(ids),
                    state=RUNNING,
                    runner=runner,
                    created_ms=now,
                    updated_ms=now,
                    heartbeat_ms=now,
                )
            ).inserted_primary_key
            assert key is not None
            op_id = int(key[0])
            for first in range(0, len(ids), _WRITE_CHUNK):
                conn.execute(
                    rows.insert(),
                    [
                        {"operation_id": op_id, "position": first + k, "record_id": record_id,
                         "state": PENDING, "updated_ms": now}
                        for k, record_id in enumerate(ids[first : first + _WRITE_CHUNK])
                    ],
                )  # fmt: skip
        return int(op_id)

    def operation(self, operation_id: int) -> OperationRow | None:
        """The operation ``operation_id`` with its counts, or ``None``."""
        found = self._operations(self.tables.operations.c.id == operation_id, limit=1)
        return found[0] if found else None

    def operations(self, *, limit: int = 50) -> list[OperationRow]:
        """The latest operations, newest first."""
        return self._operations(None, limit=limit)

    def _operations(self, where: sa.ColumnElement[bool] | None, *, limit: int) -> list[OperationRow]:
        ops, rows = self.tables.operations, self.tables.operation_records
        query = sa.select(ops).order_by(ops.c.id.desc()).limit(limit)
        if where is not None:
            query = query.where(where)
        with self._read("reading operations") as conn:
            found = conn.execute(query).all()
            counts: dict[int, dict[str, int]] = {row.id: {} for row in found}
            if found:
                for op_id, state, count in conn.execute(
                    sa.select(rows.c.operation_id, rows.c.state, sa.func.count())
                    .where(rows.c.operation_id.in_(list(counts)))
                    .group_by(rows.c.operation_id, rows.c.state)
                ):
                    counts[op_id][state] = int(count)
        return [
            OperationRow(
                **{column.name: getattr(row, column.name) for column in ops.c}, counts=counts[row.id]
            )
            for row in found
        ]

    def operation_records(
        self, operation_id: int, *, states: Sequence[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[OperationRecord]:
        """The operation's records in ``states`` (default all), in order."""
        rows = self.tables.operation_records
        query = (
            sa.select(rows.c.position, rows.c.record_id, rows.c.state, rows.c.detail, rows.c.message_id)
            .where(rows.c.operation_id == operation_id)
            .order_by(rows.c.position)
            .limit(limit)
            .offset(offset)
        )
        if states is not None:
            query = query.where(rows.c.state.in_(list(states)))
        with self._read(f"reading the records of operation {operation_id}") as conn:
            return [OperationRecord(**row._mapping) for row in conn.execute(query)]

    def set_operation_state(
        self,
        operation_id: int,
        state: str,
        *,
        only_from: Sequence[str] | None = None,
        error: str | None = None,
        runner: str | None = None,
        heartbeat_ms: int | None = None,
    ) -> bool:
        """Move the operation to ``state`` if it is in one of ``only_from`` (default any) and,
        with ``heartbeat_ms``, its runner last said it was alive then (so that of two processes
        taking over an interrupted operation at once, one does).

        Returns:
            Whether it moved.
        """
        ops = self.tables.operations
        now = epoch_ms()
        values: dict[str, Any] = {"state": state, "updated_ms": now, "error": error}
        if state == RUNNING:
            values.update(runner=runner, heartbeat_ms=now, finished_ms=None)
        elif state in (DONE, CANCELLED):
            values["finished_ms"] = now
        update = ops.update().where(ops.c.id == operation_id).values(values)
        if only_from is not None:
            update = update.where(ops.c.state.in_(list(only_from)))
        if heartbeat_ms is not None:
            update = update.where(ops.c.heartbeat_ms == heartbeat_ms)
        with self._write(f"setting operation {operation_id} {state}") as conn:
            return bool(conn.execute(update).rowcount)

    def operation_heartbeat(self, operation_id: int) -> str | None:
        """Say the operation's runner is alive; its state now (``None`` if it is gone)."""
        ops = self.tables.operations
        with self._write(f"updating operation {operation_id}") as conn:
            now = epoch_ms()
            conn.execute(
                ops.update().where(ops.c.id == operation_id).values(heartbeat_ms=now, updated_ms=now)
            )
            state: str | None = conn.execute(sa.select(ops.c.state).where(ops.c.id == operation_id)).scalar()
        return state

    def next_pending(self, operation_id: int, *, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` pending records of the operation, in order: ``(position, record_id)``."""
        rows = self.tables.operation_records
        with self._read(f"reading operation {operation_id}'s pending records") as conn:
            found = conn.execute(
                sa.select(rows.c.position, rows.c.record_id)
                .where(rows.c.operation_id == operation_id, rows.c.state == PENDING)
                .order_by(rows.c.position)
                .limit(limit)
            ).all()
        return [(int(p), int(r)) for p, r in found]

    def begin_sending(self, operation_id: int, positions: Sequence[int]) -> None:
        """Mark records ``sending`` before they are handed over, noting each record's replay count."""
        rows, records = self.tables.operation_records, self.records
        replay_count = (
            sa.select(records.c.replay_count).where(records.c.id == rows.c.record_id).scalar_subquery()
        )
        with self._write(f"handing over {len(positions)} record(s) of operation {operation_id}") as conn:
            for chunk in chunks(list(positions), _WRITE_CHUNK):
                conn.execute(
                    rows.update()
                    .where(rows.c.operation_id == operation_id, rows.c.position.in_(chunk))
                    .values(state=SENDING, replays_before=replay_count, updated_ms=epoch_ms())
                )

    def settle_operation_records(
        self, operation_id: int, outcomes: Sequence[tuple[int, str, str | None, str | None]]
    ) -> None:
        """Write what became of records: ``(position, state, detail, message_id)`` each, one transaction."""
        if not outcomes:
            return
        with self._write(f"settling {len(outcomes)} record(s) of operation {operation_id}") as conn:
            self._write_outcomes(conn, operation_id, outcomes)

    def _write_outcomes(
        self,
        conn: sa.Connection,
        operation_id: int,
        outcomes: Sequence[tuple[int, str, str | None, str | None]],
    ) -> None:
        rows = self.tables.operation_records
        update = (
            rows.update()
            .where(rows.c.operation_id == operation_id, rows.c.position == sa.bindparam("p"))
            .values(
                state=sa.bindparam("s"),
                detail=sa.bindparam("d"),
                message_id=sa.bindparam("m"),
                updated_ms=sa.bindparam("t"),
            )
        )
        now = epoch_ms()
        conn.execute(update, [{"p": p, "s": s, "d": d, "m": m, "t": now} for p, s, d, m in outcomes])

    def reconcile_operation(self, operation_id: int, *, action: str) -> dict[str, int]:
        """Settle the records left ``sending`` by a runner that stopped without settling them,
        from what the archive says of each record; one transaction.

        For a replay: ``sent`` if the record was marked replayed since it was handed
        over (its newest message id kept), ``uncertain`` if it is still claimed (it may
        have been published; the record's status becomes ``uncertain``, audited, so that
        no replay sends it once the claim expires), ``pending`` otherwise (never
        published). For a discard: ``discarded`` if the record is, ``pending`` otherwise.

        Returns:
            How many records went to each state.
        """
        rows, records = self.tables.operation_records, self.records
        settled_as: dict[str, int] = {}
        with self._write(f"reconciling operation {operation_id}") as conn:
            found = conn.execute(
                sa.select(
                    rows.c.position,
                    rows.c.record_id,
                    rows.c.replays_before,
                    records.c.fingerprint,
                    records.c.status,
                    records.c.replay_count,
                    records.c.replay_message_ids,
                    records.c.claim_token,
                )
                .select_from(rows.outerjoin(records, records.c.id == rows.c.record_id))
                .where(rows.c.operation_id == operation_id, rows.c.state == SENDING)
            ).all()
            outcomes: list[tuple[int, str, str | None, str | None]] = []
            uncertain: list[tuple[int, str, str]] = []
            for position, record_id, before, fingerprint, status, count, message_ids, claim in found:
                detail: str | None = None
                message_id: str | None = None
                if status is None:
                    state, detail = SKIPPED, "no longer in the archive"
                elif action == "discard":
                    state = DISCARDED_STATE if status == DISCARDED else PENDING
                elif status == REPLAYED and count > (before or 0):
                    state, message_id = SENT, (list(message_ids or []) or [None])[-1]
                elif claim is not None:
                    state = UNCERTAIN
                    detail = _UNCERTAIN_DETAIL
                    uncertain.append((record_id, fingerprint, status))
                else:
                    state = PENDING
                settled_as[state] = settled_as.get(state, 0) + 1
                outcomes.append((position, state, detail, message_id))
            if outcomes:
                self._write_outcomes(conn, operation_id, outcomes)
            if uncertain:
                self._set_statuses(
                    conn, uncertain, UNCERTAIN_STATUS, action="uncertain", who="dlq-operations",
                    details={"operation": operation_id},
                )  # fmt: skip
        return settled_as

    def resolve_uncertain(
        self,
        operation_id: int,
        *,
        sent: bool,
        who: str,
        reason: str | None = None,
        record_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Say what became of the operation's uncertain records (all, or those of ``record_ids``),
        in one transaction: ``sent`` makes them ``replayed`` (the operator found their jobs ran),
        otherwise they are dead letters awaiting action again, which any replay may send. The
        operation's records become ``sent`` or ``skipped`` with who decided; audited.

        Returns:
            The ids resolved: those still ``uncertain`` (one marked replayed since is left alone).
        """
        rows, records = self.tables.operation_records, self.records
        query = (
            sa.select(rows.c.position, rows.c.record_id, records.c.fingerprint, records.c.status)
            .select_from(rows.join(records, records.c.id == rows.c.record_id))
            .where(
                rows.c.operation_id == operation_id,
                rows.c.state == UNCERTAIN,
                records.c.status == UNCERTAIN_STATUS,
            )
        )
        if record_ids is not None:
            query = query.where(rows.c.record_id.in_(list(record_ids)))
        status, state = (REPLAYED, SENT) if sent else (DEAD, SKIPPED)
        detail = (
            f"resolved by {who}: "
            + ("sent" if sent else "not sent; a dead letter awaiting action again")
            + (f" ({reason})" if reason else "")
        )
        with self._write(f"resolving the uncertain records of operation {operation_id}") as conn:
            found = conn.execute(query.with_for_update()).all()
            if not found:
                return []
            self._set_statuses(
                conn, [(r.record_id, r.fingerprint, r.status) for r in found], status,
                action="resolve", who=who, reason=reason,
                details={"operation": operation_id, "sent": sent}, count_replay=sent,
            )  # fmt: skip
            self._write_outcomes(conn, operation_id, [(r.position, state, detail, None) for r in found])
        return [int(r.record_id) for r in found]

    def _set_statuses(
        self,
        conn: sa.Connection,
        found: Sequence[tuple[int, str, str]],
        status: str,
        *,
        action: str,
        who: str,
        details: dict[str, Any],
        reason: str | None = None,
        count_replay: bool = False,
    ) -> None:
        """Give records ``(id, fingerprint, old status)`` ``status`` (an ``uncertain`` one keeps its
        claim, so that its replayer, if alive, still marks it; otherwise the claim is dropped),
        keeping the group summary and the audit log."""
        table = self.records
        now = epoch_ms()
        values: dict[str, Any] = {"status": status, "updated_ms": now}
        if status != UNCERTAIN_STATUS:
            values.update(claim_token=None, claimed_ms=None)
        if count_replay:
            values["replay_count"] = table.c.replay_count + 1
        ids = [record_id for record_id, _, _ in found]
        for chunk in chunks(ids, _WRITE_CHUNK):
            conn.execute(table.update().where(table.c.id.in_(chunk)).values(values))
        self._groups.apply(conn, moved([(fingerprint, old) for _, fingerprint, old in found], status))
        conn.execute(
            self.audit_log.insert(),
            [
                audit_row(who=who, action=action, record_id=i, reason=reason, at_ms=now, details=details)
                for i in ids
            ],
        )
