"""ArchiveClaims: claiming records for replay, and marking or releasing them after.

A replay first *claims* a record with one conditional ``UPDATE``, which is
what lets two operators replay the same records at the same moment and
publish each once; a claim older than ``claim_ttl_s`` is taken over. What a
replay reads of a record before claiming it is a :class:`ReplaySource`: the
few columns it needs, not the whole record. Claims, releases and marks work a
batch at a time; in SQLite a batch goes as one JSON parameter
(:mod:`.sqlite_batches`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .database import ArchiveDatabase, chunks, epoch_ms, json_text, moved
from .delivery import decode_message
from .sqlite_batches import claim_in_sqlite, json_batches, mark_in_sqlite, read_sources_in_sqlite
from .status import DEAD, REPLAYED

__all__ = ["ArchiveClaims", "ReplayMark", "ReplaySource"]

#: Ids per query when reading replay sources: under SQLite's bound-parameter limit.
_READ_CHUNK = 500


def _json_list(value: Any) -> list[Any]:
    """A JSON list column as read: text from SQLite, already parsed by psycopg, or ``NULL``."""
    if value is None:
        return []
    if isinstance(value, str | bytes):
        parsed = orjson.loads(value)
        return list(parsed or [])
    return list(value)


class _DriverStatement(NamedTuple):
    """A statement compiled for the archive's DBAPI driver, and its parameters in order."""

    sql: str
    names: tuple[str, ...]

    def row(self, **values: Any) -> tuple[Any, ...]:
        """``values`` as this statement's positional parameters."""
        return tuple(map(values.__getitem__, self.names))


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ReplaySource:
    """What replaying a record reads of it: its id, status, routing and raw body.

    Read by :meth:`ArchiveClaims.replay_sources`, a tenth of the cost of a whole
    :class:`~.records.DeadLetter` (no JSON columns, traceback or history).
    """

    id: int
    status: str
    queue_name: str | None
    message_id: str | None
    job_id: str | None
    error: str
    body: bytes

    def decoded_body(self) -> dict[str, Any] | None:
        """The Dramatiq message as a dict, or ``None`` if the body is not one."""
        return decode_message(self.body)[0]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayMark:
    """One published replay to record with :meth:`DeadLetterArchive.mark_replayed_many`."""

    record_id: int
    message_id: str
    action: str = "replay"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class ArchiveClaims(ArchiveDatabase):
    """Replay claims and replay marks; part of :class:`~.archive.DeadLetterArchive`."""

    def replay_sources(self, ids: Sequence[int]) -> dict[int, ReplaySource]:
        """The :class:`ReplaySource` of each of ``ids`` that exists, by id, read in one
        transaction: one query in SQLite (:mod:`.sqlite_batches`), elsewhere a few hundred ids each."""
        table = self.records
        query = sa.select(
            table.c.id,
            table.c.status,
            table.c.queue_name,
            table.c.message_id,
            table.c.job_id,
            table.c.error,
            table.c.body,
        )
        found: dict[int, ReplaySource] = {}
        with self._read(f"reading {len(ids)} record(s) to replay") as conn:
            if self._json_batches:
                batches: Iterable[Iterable[Any]] = [read_sources_in_sqlite(conn, ids)]
            else:
                batches = (
                    conn.execute(query.where(table.c.id.in_(chunk)))
                    for chunk in chunks(list(dict.fromkeys(ids)), _READ_CHUNK)
                )
            for rows in batches:
                for row in rows:
                    found[row[0]] = ReplaySource(
                        id=row[0],
                        status=row[1],
                        queue_name=row[2],
                        message_id=row[3],
                        job_id=row[4],
                        error=row[5],
                        body=bytes(row[6]),
                    )
        return found

    def claim_many(
        self, ids: Sequence[int], *, allow_statuses: Iterable[str] = (DEAD,), token: str | None = None
    ) -> tuple[str, list[int]]:
        """Claim several records for replay under one token, in one transaction: in SQLite
        one conditional ``UPDATE`` over the ids as one JSON parameter, and what was won read
        back as one row; elsewhere one ``UPDATE ... WHERE id IN (...) RETURNING id`` per 500
        ids (without ``RETURNING``, what was won is read back).

        Args:
            ids: Archive ids.
            allow_statuses: Statuses a record may have to be claimed. Default: ``dead``.
            token: The claim token; default a new one. A caller claiming record by
                record passes the same token each time, to settle them together.

        Returns:
            The token, and the ids won (in the order of ``ids``): not those in another
            status or under someone else's fresh claim.
        """
        token = token or uuid.uuid4().hex
        if not ids:
            return token, []
        now = epoch_ms()
        stale = now - int(self.claim_ttl_s * 1000)
        table = self.records
        won: set[int] = set()
        with self._write(f"claiming {len(ids)} record(s)") as conn:
            if self._json_batches:
                won = claim_in_sqlite(conn, ids, allow_statuses, token=token, now=now, stale=stale)
                return token, [i for i in dict.fromkeys(ids) if i in won]
            # The ids won come back from the update itself where the database can say
            # (PostgreSQL, SQLite 3.35+), or are read back under the token.
            returning = conn.dialect.update_returning
            for chunk in chunks(list(dict.fromkeys(ids)), 500):
                update = (
                    table.update()
                    .where(
                        table.c.id.in_(chunk),
                        table.c.status.in_(list(allow_statuses)),
                        sa.or_(table.c.claim_token.is_(None), table.c.claimed_ms < stale),
                    )
                    .values(claim_token=token, claimed_ms=now)
                )
                if returning:
                    won.update(r[0] for r in conn.execute(update.returning(table.c.id)))
                    continue
                conn.execute(update)
                won.update(
                    r[0]
                    for r in conn.execute(
                        sa.select(table.c.id).where(table.c.id.in_(chunk), table.c.claim_token == token)
                    )
                )
        return token, [i for i in dict.fromkeys(ids) if i in won]

    def release_many(self, ids: Sequence[int], token: str) -> None:
        """Give back the claims ``token`` holds on ``ids`` (their publish failed), in one transaction."""
        table = self.records
        with self._write(f"releasing {len(ids)} record(s)") as conn:
            for chunk in chunks(list(ids), 500):
                conn.execute(
                    table.update()
                    .where(table.c.id.in_(chunk), table.c.claim_token == token)
                    .values(claim_token=None, claimed_ms=None)
                )

    def mark_replayed_many(
        self, marks: Sequence[ReplayMark], token: str, *, who: str, reason: str | None = None
    ) -> list[int]:
        """Record published replays under their claim ``token``, and audit them, in one
        transaction: in SQLite one update and one audit insert, each over the batch as one
        JSON parameter; elsewhere one ``executemany`` update and one audit insert.

        The latter are prepared driver statements fed tuples with their JSON already text,
        as the archive's insert is: SQLAlchemy's per-row parameter processing cost more
        than the database's work, and a replay marks one batch while the next publishes.

        Returns:
            The ids whose claim was lost (taken over after ``claim_ttl_s``): not marked,
            and they may be replayed twice.
        """
        if not marks:
            return []
        by_id = {m.record_id: m for m in marks}
        with self._write(f"marking {len(by_id)} record(s) replayed") as conn:
            if self._json_batches:
                marked = mark_in_sqlite(conn, self._groups, by_id, token, who=who, reason=reason)
            else:
                marked = self._mark_rows(conn, by_id, token, who=who, reason=reason)
        return [i for i in by_id if i not in marked]

    @property
    def _json_batches(self) -> bool:
        """Whether batches go to the database as one JSON parameter (:mod:`.sqlite_batches`)."""
        return json_batches(self.is_sqlite)

    def _mark_rows(
        self, conn: sa.Connection, by_id: dict[int, ReplayMark], token: str, *, who: str, reason: str | None
    ) -> set[int]:
        """Mark and audit the records ``token`` holds, one parameter row each; the ids marked."""
        table = self.records
        # Read as the stored text where the driver allows (SQLite), parsed below.
        message_ids = sa.type_coerce(table.c.replay_message_ids, sa.Text)
        rows: list[Any] = []
        for chunk in chunks(list(by_id), 500):
            rows += conn.execute(
                sa.select(table.c.id, message_ids, table.c.fingerprint, table.c.status)
                .where(table.c.id.in_(chunk), table.c.claim_token == token)
                .with_for_update()
            ).all()
        if not rows:
            return set()
        now = epoch_ms()
        update = self._driver_statement("mark_replayed", self._mark_update)
        conn.exec_driver_sql(
            update.sql,
            [
                update.row(
                    m_id=r[0],
                    m_status=REPLAYED,
                    m_ids=json_text([*_json_list(r[1]), by_id[r[0]].message_id]),
                    m_now=now,
                )
                for r in rows
            ],
        )
        self._groups.apply(conn, moved([(r[2], r[3]) for r in rows], REPLAYED))
        insert = self._driver_statement("audit_insert", self._audit_insert)
        conn.exec_driver_sql(
            insert.sql,
            [
                insert.row(
                    at_ms=now,
                    who=who,
                    action=(mark := by_id[r[0]]).action,
                    record_id=r[0],
                    reason=reason,
                    details=json_text({"message_id": mark.message_id, **mark.details}),
                )
                for r in rows
            ],
        )
        return {r[0] for r in rows}

    def _mark_update(self) -> sa.Insert | sa.Update:
        table = self.records
        return (
            table.update()
            .where(table.c.id == sa.bindparam("m_id"))
            .values(
                status=sa.bindparam("m_status"),
                replay_count=table.c.replay_count + sa.literal_column("1"),
                replay_message_ids=sa.bindparam("m_ids", type_=table.c.replay_message_ids.type),
                claim_token=sa.null(),
                claimed_ms=sa.null(),
                updated_ms=sa.bindparam("m_now"),
            )
        )

    def _audit_insert(self) -> sa.Insert | sa.Update:
        # inline: no RETURNING of the new id, which an executemany cannot use.
        columns = ("at_ms", "who", "action", "record_id", "reason", "details")
        return (
            self.audit_log.insert()
            .inline()
            .values({name: sa.bindparam(name, type_=self.audit_log.c[name].type) for name in columns})
        )

    def _driver_statement(self, name: str, build: Callable[[], sa.Insert | sa.Update]) -> _DriverStatement:
        """The statement ``build()`` compiled for this archive's driver, once per archive."""
        cache: dict[str, _DriverStatement] = self.__dict__.setdefault("_driver_statements", {})
        statement = cache.get(name)
        if statement is None:
            dialect: sa.Dialect = (
                sqlite.dialect(paramstyle="qmark")
                if self.is_sqlite
                else postgresql.psycopg.dialect(paramstyle="format")  # type: ignore[no-untyped-call]
            )
            compiled = build().compile(dialect=dialect)
            assert compiled.positiontup is not None
            statement = cache[name] = _DriverStatement(str(compiled), tuple(compiled.positiontup))
        return statement
