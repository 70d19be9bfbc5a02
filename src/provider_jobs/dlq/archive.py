"""DeadLetterArchive: dead letters and the audit log, in SQLite or PostgreSQL.

SQLAlchemy Core 2, the same statements for both databases. SQLite is a file in
WAL mode whose write transactions start with ``BEGIN IMMEDIATE`` (so that a
read-then-write never fails half-way on a snapshot); PostgreSQL is reached
through psycopg 3. A record's status moves ``dead`` -> ``replayed`` or
``discarded``; a replay first *claims* the record with one conditional
``UPDATE``, which is what lets two operators replay the same records at
the same moment and publish each once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import operator
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ..errors import ArchiveError, ArchiveUnavailable, ConfigurationError, RecordConflict, RecordNotFound
from .filters import AuditEntry, Group, RecordFilter, RetentionReport
from .groups import GroupDeltas, GroupSummary
from .records import DeadLetter
from .schema import JSON_COLUMNS, Tables

__all__ = ["DEAD", "DISCARDED", "REPLAYED", "STATUSES", "DeadLetterArchive", "ReplayMark"]

DEAD, REPLAYED, DISCARDED = "dead", "replayed", "discarded"
#: Every status a record can have.
STATUSES = (DEAD, REPLAYED, DISCARDED)
#: A replay claim older than this is taken to be from a replayer that died.
DEFAULT_CLAIM_TTL_S = 300.0

logger = logging.getLogger("provider_jobs.dlq.archive")

#: Serialises table creation within the process; across processes, SQLite's
#: ``BEGIN IMMEDIATE`` and PostgreSQL's advisory lock do.
_CREATE_LOCK = threading.Lock()
#: Key of the PostgreSQL advisory lock held while creating the tables.
_CREATE_ADVISORY_KEY = 0x70_6A_64_6C_71  # "pjdlq"

#: Columns the archiver inserts: every field of a record but its id.
_INSERT_COLUMNS = tuple(f.name for f in dataclasses.fields(DeadLetter) if f.name != "id")
_insert_values = operator.attrgetter(*_INSERT_COLUMNS)
_JSON_POSITIONS = tuple(i for i, name in enumerate(_INSERT_COLUMNS) if name in JSON_COLUMNS)
_UPDATED_POSITION = _INSERT_COLUMNS.index("updated_ms")
#: Positions of the text columns: every one but the JSON columns and the raw body (kept byte for byte).
_TEXT_POSITIONS = tuple(
    i for i, name in enumerate(_INSERT_COLUMNS) if name not in JSON_COLUMNS and name != "body"
)
_ARCHIVED_POSITION = _INSERT_COLUMNS.index("archived_ms")
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _text_safe(value: Any) -> Any:
    """``value`` with NUL characters escaped as ``\\x00`` if it is a string: PostgreSQL
    text cannot hold them, and one such dead letter would otherwise fail its whole batch."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\\x00")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayMark:
    """One published replay to record with :meth:`DeadLetterArchive.mark_replayed_many`."""

    record_id: int
    message_id: str
    action: str = "replay"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def _insert_row(record: DeadLetter) -> tuple[Any, ...]:
    """``record`` as the parameters of the compiled insert: JSON columns already
    serialised (JSON escapes NUL as ``\\u0000``), NUL escaped in text columns."""
    values = list(_insert_values(record))
    for i in _TEXT_POSITIONS:
        values[i] = _text_safe(values[i])
    for i in _JSON_POSITIONS:
        if values[i] is not None:
            values[i] = _dumps(values[i])
    values[_UPDATED_POSITION] = values[_ARCHIVED_POSITION]
    return tuple(values)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _engine_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in {"sqlite", "sqlite+pysqlite", "postgresql+psycopg"}:
        raise ConfigurationError(
            f"archive URL {parsed.render_as_string(hide_password=True)!r} is not allowed: "
            "expected sqlite:///path or postgresql+psycopg://..."
        )
    return parsed


class DeadLetterArchive:
    """The dead-letter archive.

    Nothing is connected or created until the first operation, which creates
    the tables (and, for SQLite, the file's directory) if they are missing.

    Args:
        url: ``sqlite:///relative/path.sqlite3``, ``sqlite:////abs/path`` or
            ``postgresql+psycopg://user:pw@host:port/db`` (``postgresql://`` is
            taken to mean psycopg 3).
        schema: PostgreSQL schema for the tables, created if missing. Default:
            the connection's search path. Not allowed with SQLite.
        busy_timeout_ms: How long SQLite waits for another writer's lock.
            Default 30 000.
        claim_ttl_s: A replay claim older than this is taken over. Default 300.

    Raises:
        ConfigurationError: The URL names another database, or ``schema`` is set for SQLite.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        busy_timeout_ms: int = 30_000,
        claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
    ) -> None:
        self.url = _engine_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if schema and self.is_sqlite:
            raise ConfigurationError(f"archive schema={schema!r} is not allowed with SQLite")
        self.schema = schema
        self.claim_ttl_s = claim_ttl_s
        self._busy_timeout_ms = busy_timeout_ms
        self._metadata = sa.MetaData(schema=schema)
        self.tables = Tables(self._metadata)
        self.records, self.audit_log = self.tables.records, self.tables.audit
        self._groups = GroupSummary(self.tables, is_sqlite=self.is_sqlite)
        self._insert_sql: str | None = None
        self._engine: Engine | None = None
        self._ready = False

    def __repr__(self) -> str:
        return f"DeadLetterArchive({self.url.render_as_string(hide_password=True)!r})"

    # -- connection ---------------------------------------------------------------

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return sa.create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        database = self.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArchiveUnavailable(
                    f"Cannot create the archive's directory for {database}: {exc}"
                ) from exc
        engine = sa.create_engine(self.url, connect_args={"timeout": self._busy_timeout_ms / 1000})
        busy_ms = self._busy_timeout_ms

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # We issue BEGIN ourselves (below), as SQLAlchemy's pysqlite docs advise.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # The busy timeout first: switching a fresh file to WAL needs its lock too.
            cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            write = connection.get_execution_options().get("provider_jobs_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise ArchiveUnavailable(
                f"Archive {self.url.render_as_string(hide_password=True)} unavailable while {doing}: "
                f"{str(exc.orig).strip() or type(exc.orig).__name__}"
            ) from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise ArchiveUnavailable(f"Archive connection lost while {doing}: {exc.orig}") from exc
            raise ArchiveError(f"Archive error while {doing}: {exc.orig}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise ArchiveError(f"Archive error while {doing}: {exc}") from exc

    def _engine_ready(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        if not self._ready:
            with _CREATE_LOCK:
                if not self._ready:
                    self._create_tables(self._engine)
                    self._ready = True
        return self._engine

    def _create_tables(self, engine: Engine) -> None:
        """Create what is missing, in a write transaction taken before the first read.

        Under a deferred ``BEGIN`` two connections opening a fresh SQLite file
        both read "no table", then both ask for the write lock, and one fails
        with "database is locked" at once (the busy timeout cannot help a
        deadlock). ``BEGIN IMMEDIATE`` takes the lock first and waits for it;
        PostgreSQL takes an advisory lock for the same reason.
        """
        with (
            self._errors("creating tables"),
            engine.execution_options(provider_jobs_write=True).begin() as conn,
        ):
            if not self.is_sqlite:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_ADVISORY_KEY)))
            if self.schema:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
            inspector = sa.inspect(conn)
            summary_missing = not inspector.has_table(self.tables.groups.name, schema=self.schema)
            records_existed = inspector.has_table(self.records.name, schema=self.schema)
            self._metadata.create_all(conn)
            if summary_missing and records_existed:
                # An archive from before the summary table: count what it holds once.
                self._groups.rebuild(conn)

    @contextlib.contextmanager
    def _read(self, doing: str) -> Iterator[Connection]:
        engine = self._engine_ready()
        with self._errors(doing), engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self, doing: str) -> Iterator[Connection]:
        engine = self._engine_ready().execution_options(provider_jobs_write=True)
        with self._errors(doing), engine.begin() as conn:
            yield conn

    def check(self) -> None:
        """Connect once and create the tables if needed.

        Raises:
            ArchiveUnavailable: The database cannot be reached.
        """
        with self._read("checking the connection") as conn:
            conn.execute(sa.select(1))

    def close(self) -> None:
        """Close every pooled connection."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._ready = False

    def drop_tables(self) -> None:
        """Drop the archive's tables (and its schema, if it has its own). For tests and resets."""
        engine = self._engine_ready()
        with self._errors("dropping tables"), engine.begin() as conn:
            if self.schema:
                conn.execute(sa.schema.DropSchema(self.schema, cascade=True, if_exists=True))
            else:
                self._metadata.drop_all(conn)
        self._ready = False

    def rebuild_groups(self) -> None:
        """Recount the group summary from the records, in one transaction.

        The summary is kept by every write of this class; this is for records
        written around it (a bulk load, a restore from backup).
        """
        with self._write("rebuilding the group summary") as conn:
            self._groups.rebuild(conn)

    # -- writing ------------------------------------------------------------------

    def _insert(self) -> Any:
        dialect = sqlite if self.is_sqlite else postgresql
        return dialect.insert(self.records).on_conflict_do_nothing(index_elements=["dedupe_key"])

    def _compiled_insert(self) -> str:
        """The insert as DBAPI SQL with positional parameters in ``_INSERT_COLUMNS`` order."""
        if self._insert_sql is None:
            dialect: sa.Dialect = (
                sqlite.dialect(paramstyle="qmark")
                if self.is_sqlite
                else postgresql.psycopg.dialect(paramstyle="format")  # type: ignore[no-untyped-call]
            )
            self._insert_sql = str(self._insert().compile(dialect=dialect, column_keys=list(_INSERT_COLUMNS)))
        return self._insert_sql

    def store(self, records: Sequence[DeadLetter]) -> list[str]:
        """Insert ``records`` in one transaction; those already archived are skipped.

        One ``executemany`` of a prepared insert; only a batch that holds an
        already archived record (a redelivery) is stored again row by row, to
        tell which ones were new.

        Returns:
            The dedupe keys of the records that were new.

        Raises:
            ArchiveUnavailable: The database cannot be reached; nothing was stored.
        """
        unique = list({r.dedupe_key: r for r in records}.values())
        if not unique:
            return []
        rows = [_insert_row(record) for record in unique]
        sql = self._compiled_insert()
        with self._write(f"storing {len(rows)} dead letter(s)") as conn:
            savepoint = conn.begin_nested()
            if conn.exec_driver_sql(sql, rows).rowcount == len(rows):
                savepoint.commit()
                new = unique
            else:
                savepoint.rollback()
                insert = self._insert().returning(self.records.c.dedupe_key)
                new = [
                    record
                    for record in unique
                    if conn.execute(
                        insert,
                        {
                            **{
                                name: getattr(record, name) if name in JSON_COLUMNS else value
                                for name, value in zip(_INSERT_COLUMNS, _insert_row(record), strict=True)
                            },
                            "updated_ms": record.archived_ms,
                        },
                    ).first()
                ]
            self._groups.apply(conn, Counter((r.fingerprint, r.status) for r in new))
        return [r.dedupe_key for r in new]

    def _audit_row(
        self,
        *,
        who: str,
        action: str,
        record_id: int | None,
        reason: str | None,
        details: dict[str, Any],
        at_ms: int | None = None,
    ) -> dict[str, Any]:
        return {
            "at_ms": at_ms or _now_ms(),
            "who": who,
            "action": action,
            "record_id": record_id,
            "reason": reason,
            "details": details,
        }

    def write_audit(
        self,
        *,
        who: str,
        action: str,
        record_id: int | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry to the audit log."""
        with self._write(f"writing audit entry {action}") as conn:
            conn.execute(
                self.audit_log.insert(),
                self._audit_row(
                    who=who, action=action, record_id=record_id, reason=reason, details=details or {}
                ),
            )

    def claim(self, record_id: int, *, allow_statuses: Iterable[str] = (DEAD,)) -> str | None:
        """Claim a record for replay: one atomic ``UPDATE``, so two replayers
        cannot both win.

        Returns:
            The claim token, or ``None`` when the record is not in one of
            ``allow_statuses`` or someone else holds a fresh claim.
        """
        token = uuid.uuid4().hex
        now = _now_ms()
        stale = now - int(self.claim_ttl_s * 1000)
        table = self.records
        with self._write(f"claiming record {record_id}") as conn:
            result = conn.execute(
                table.update()
                .where(
                    table.c.id == record_id,
                    table.c.status.in_(list(allow_statuses)),
                    sa.or_(table.c.claim_token.is_(None), table.c.claimed_ms < stale),
                )
                .values(claim_token=token, claimed_ms=now)
            )
            return token if result.rowcount == 1 else None

    def claim_many(
        self, ids: Sequence[int], *, allow_statuses: Iterable[str] = (DEAD,), token: str | None = None
    ) -> tuple[str, list[int]]:
        """Claim several records for replay under one token: one conditional ``UPDATE ...
        WHERE id IN (...)`` per 500 ids, in one transaction, then read back what was won.

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
        now = _now_ms()
        stale = now - int(self.claim_ttl_s * 1000)
        table = self.records
        won: set[int] = set()
        with self._write(f"claiming {len(ids)} record(s)") as conn:
            for chunk in _chunks(list(dict.fromkeys(ids)), 500):
                conn.execute(
                    table.update()
                    .where(
                        table.c.id.in_(chunk),
                        table.c.status.in_(list(allow_statuses)),
                        sa.or_(table.c.claim_token.is_(None), table.c.claimed_ms < stale),
                    )
                    .values(claim_token=token, claimed_ms=now)
                )
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
            for chunk in _chunks(list(ids), 500):
                conn.execute(
                    table.update()
                    .where(table.c.id.in_(chunk), table.c.claim_token == token)
                    .values(claim_token=None, claimed_ms=None)
                )

    def mark_replayed_many(
        self, marks: Sequence[ReplayMark], token: str, *, who: str, reason: str | None = None
    ) -> list[int]:
        """Record published replays under their claim ``token``, and audit them, in one
        transaction: one ``executemany`` update and one audit insert.

        Returns:
            The ids whose claim was lost (taken over after ``claim_ttl_s``): not marked,
            and they may be replayed twice.
        """
        if not marks:
            return []
        table = self.records
        by_id = {m.record_id: m for m in marks}
        with self._write(f"marking {len(by_id)} record(s) replayed") as conn:
            rows: list[Any] = []
            for chunk in _chunks(list(by_id), 500):
                rows += conn.execute(
                    sa.select(table.c.id, table.c.replay_message_ids, table.c.fingerprint, table.c.status)
                    .where(table.c.id.in_(chunk), table.c.claim_token == token)
                    .with_for_update()
                ).all()
            if not rows:
                return list(by_id)
            now = _now_ms()
            conn.execute(
                table.update()
                .where(table.c.id == sa.bindparam("b_id"))
                .values(
                    status=REPLAYED,
                    replay_count=table.c.replay_count + 1,
                    replay_message_ids=sa.bindparam("b_message_ids", type_=table.c.replay_message_ids.type),
                    claim_token=None,
                    claimed_ms=None,
                    updated_ms=now,
                ),
                [
                    {"b_id": r.id, "b_message_ids": [*(r.replay_message_ids or []), by_id[r.id].message_id]}
                    for r in rows
                ],
            )
            self._groups.apply(conn, _moved([(r.fingerprint, r.status) for r in rows], REPLAYED))
            conn.execute(
                self.audit_log.insert(),
                [
                    self._audit_row(
                        who=who,
                        action=by_id[r.id].action,
                        record_id=r.id,
                        reason=reason,
                        at_ms=now,
                        details={"message_id": by_id[r.id].message_id, **by_id[r.id].details},
                    )
                    for r in rows
                ],
            )
        marked = {r.id for r in rows}
        return [i for i in by_id if i not in marked]

    def release(self, record_id: int, token: str) -> None:
        """Give a claim back without replaying (the publish failed)."""
        table = self.records
        with self._write(f"releasing record {record_id}") as conn:
            conn.execute(
                table.update()
                .where(table.c.id == record_id, table.c.claim_token == token)
                .values(claim_token=None, claimed_ms=None)
            )

    def mark_replayed(
        self,
        record_id: int,
        token: str,
        *,
        message_id: str,
        who: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        action: str = "replay",
    ) -> None:
        """Record a published replay under its claim, and audit it, in one transaction.

        Raises:
            RecordConflict: The claim was lost (taken over after ``claim_ttl_s``).
        """
        table = self.records
        with self._write(f"marking record {record_id} replayed") as conn:
            row = conn.execute(
                sa.select(table.c.replay_message_ids, table.c.fingerprint, table.c.status)
                .where(table.c.id == record_id, table.c.claim_token == token)
                .with_for_update()
            ).first()
            if row is None:
                raise RecordConflict(f"Record {record_id}: replay claim lost; it may be replayed twice")
            now = _now_ms()
            conn.execute(
                table.update()
                .where(table.c.id == record_id)
                .values(
                    status=REPLAYED,
                    replay_count=table.c.replay_count + 1,
                    replay_message_ids=[*(row[0] or []), message_id],
                    claim_token=None,
                    claimed_ms=None,
                    updated_ms=now,
                )
            )
            self._groups.apply(conn, _moved([(row.fingerprint, row.status)], REPLAYED))
            conn.execute(
                self.audit_log.insert(),
                self._audit_row(
                    who=who,
                    action=action,
                    record_id=record_id,
                    reason=reason,
                    at_ms=now,
                    details={"message_id": message_id, **(details or {})},
                ),
            )

    def set_status(
        self, record_filter: RecordFilter, status: str, *, who: str, reason: str | None, action: str
    ) -> list[int]:
        """Set the status of every record matching ``record_filter`` that is not claimed.

        Returns:
            The ids changed.
        """
        table = self.records
        with self._write(f"{action} records") as conn:
            matched = conn.execute(
                sa.select(table.c.id, table.c.fingerprint, table.c.status)
                .where(*record_filter.clauses(table), table.c.claim_token.is_(None))
                .with_for_update()
            ).all()
            if not matched:
                return []
            ids = [r.id for r in matched]
            now = _now_ms()
            for chunk in _chunks(ids, 500):
                conn.execute(
                    table.update()
                    .where(table.c.id.in_(chunk))
                    .values(status=status, status_reason=reason, updated_ms=now)
                )
            self._groups.apply(conn, _moved([(r.fingerprint, r.status) for r in matched], status))
            conn.execute(
                self.audit_log.insert(),
                [
                    self._audit_row(who=who, action=action, record_id=i, reason=reason, at_ms=now, details={})
                    for i in ids
                ],
            )
            return ids

    def mark_escalated(
        self, ids: Sequence[int], *, who: str, reason: str | None, details: dict[str, Any] | None = None
    ) -> None:
        """Note that records were escalated, so that triage does not escalate them again."""
        if not ids:
            return
        table = self.records
        with self._write("marking records escalated") as conn:
            now = _now_ms()
            conn.execute(table.update().where(table.c.id.in_(list(ids))).values(escalated_ms=now))
            conn.execute(
                self.audit_log.insert(),
                [
                    self._audit_row(
                        who=who,
                        action="escalate",
                        record_id=i,
                        reason=reason,
                        at_ms=now,
                        details=details or {},
                    )
                    for i in ids
                ],
            )

    def purge(
        self, record_filter: RecordFilter, *, who: str, reason: str | None, action: str = "purge"
    ) -> int:
        """Delete every record matching ``record_filter`` that is not claimed; audited.

        Returns:
            How many were deleted.
        """
        table = self.records
        with self._write("purging records") as conn:
            deleted = conn.execute(
                table.delete()
                .where(*record_filter.clauses(table), table.c.claim_token.is_(None))
                .returning(table.c.fingerprint, table.c.status)
            ).all()
            count = len(deleted)
            self._groups.apply(conn, _removed(deleted))
            conn.execute(
                self.audit_log.insert(),
                self._audit_row(
                    who=who,
                    action=action,
                    record_id=None,
                    reason=reason,
                    details={"filter": record_filter.describe(), "deleted": count},
                ),
            )
            return count

    def apply_retention(
        self, *, retention_days: float, max_records: int, who: str = "archiver", now_ms: int | None = None
    ) -> RetentionReport:
        """Purge records older than ``retention_days``; above ``max_records``, evict the
        oldest replayed or discarded ones. Unhandled dead letters are never evicted
        for the cap: the report says by how much the archive is over it.
        """
        now = now_ms if now_ms is not None else _now_ms()
        cutoff = now - int(retention_days * 86_400_000)
        table = self.records
        with self._write("applying retention") as conn:
            gone = list(
                conn.execute(
                    table.delete()
                    .where(table.c.archived_ms < cutoff, table.c.claim_token.is_(None))
                    .returning(table.c.fingerprint, table.c.status)
                )
            )
            expired = len(gone)
            total = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            evicted = 0
            if total > max_records:
                victims = [
                    r[0]
                    for r in conn.execute(
                        sa.select(table.c.id)
                        .where(table.c.status != DEAD, table.c.claim_token.is_(None))
                        .order_by(table.c.archived_ms, table.c.id)
                        .limit(total - max_records)
                    )
                ]
                for chunk in _chunks(victims, 500):
                    evicted_rows = conn.execute(
                        table.delete()
                        .where(table.c.id.in_(chunk))
                        .returning(table.c.fingerprint, table.c.status)
                    ).all()
                    evicted += len(evicted_rows)
                    gone += evicted_rows
            self._groups.apply(conn, _removed(gone))
            remaining = total - evicted
            if expired or evicted:
                conn.execute(
                    self.audit_log.insert(),
                    self._audit_row(
                        who=who,
                        action="retention",
                        record_id=None,
                        reason=None,
                        at_ms=now,
                        details={
                            "expired": expired,
                            "evicted": evicted,
                            "retention_days": retention_days,
                            "max_records": max_records,
                        },
                    ),
                )
        return RetentionReport(
            expired=expired, evicted=evicted, records=remaining, over_cap=max(0, remaining - max_records)
        )

    # -- reading ------------------------------------------------------------------

    def _record(self, row: sa.Row[Any]) -> DeadLetter:
        data = row._asdict()
        data.pop("claim_token", None)
        data.pop("claimed_ms", None)
        data["body"] = bytes(data["body"])
        data["replay_message_ids"] = list(data["replay_message_ids"] or [])
        return DeadLetter(**data)

    def get(self, record_id: int) -> DeadLetter:
        """One record.

        Raises:
            RecordNotFound: No record has that id.
        """
        with self._read(f"reading record {record_id}") as conn:
            row = conn.execute(sa.select(self.records).where(self.records.c.id == record_id)).first()
        if row is None:
            raise RecordNotFound(f"No archived dead letter with id {record_id}")
        return self._record(row)

    def find(
        self,
        record_filter: RecordFilter | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[DeadLetter]:
        """Records matching ``record_filter``, newest first (by dead-letter time), paged."""
        table = self.records
        order = (
            (table.c.dead_lettered_ms, table.c.id)
            if oldest_first
            else (table.c.dead_lettered_ms.desc(), table.c.id.desc())
        )
        query = sa.select(table).where(*(record_filter or RecordFilter()).clauses(table)).order_by(*order)
        with self._read("listing records") as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
        return [self._record(r) for r in rows]

    def ids(self, record_filter: RecordFilter) -> list[int]:
        """Ids of every record matching ``record_filter``, oldest first."""
        table = self.records
        with self._read("selecting records") as conn:
            return [
                r[0]
                for r in conn.execute(
                    sa.select(table.c.id)
                    .where(*record_filter.clauses(table))
                    .order_by(table.c.dead_lettered_ms, table.c.id)
                )
            ]

    def count(self, record_filter: RecordFilter | None = None) -> int:
        """How many records match ``record_filter``."""
        table = self.records
        with self._read("counting records") as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(*(record_filter or RecordFilter()).clauses(table))
                ).scalar_one()
            )

    def groups(self, record_filter: RecordFilter | None = None, *, limit: int = 100) -> list[Group]:
        """Counts per fingerprint, largest first, with first and last seen and a sample error.

        A filter on status, category, provider, operation or fingerprint is
        answered from the group summary table (a lookup, whatever the archive's
        size); any other filter groups the matching records.
        """
        record_filter = record_filter or RecordFilter()
        if GroupSummary.answers(record_filter):
            with self._read("reading the group summary") as conn:
                return self._groups.read(conn, record_filter, limit=limit)
        t = self.records
        query = (
            sa.select(
                t.c.fingerprint,
                sa.func.count().label("count"),
                sa.func.min(t.c.dead_lettered_ms),
                sa.func.max(t.c.dead_lettered_ms),
                sa.func.min(t.c.category),
                sa.func.min(t.c.provider_namespace),
                sa.func.min(t.c.resource_type),
                sa.func.min(t.c.operation),
                sa.func.min(t.c.error),
                sa.func.max(t.c.id),
            )
            .where(*record_filter.clauses(t))
            .group_by(t.c.fingerprint)
            .order_by(sa.desc("count"), sa.func.max(t.c.dead_lettered_ms).desc())
            .limit(limit)
        )
        with self._read("grouping records") as conn:
            rows = conn.execute(query).all()
        return [
            Group(
                fingerprint=r[0],
                count=r[1],
                first_seen_ms=r[2],
                last_seen_ms=r[3],
                category=r[4],
                provider_namespace=r[5],
                resource_type=r[6],
                operation=r[7],
                sample_error=r[8],
                latest_id=r[9],
            )
            for r in rows
        ]

    def audit_counts(self) -> dict[str, int]:
        """Audit entries per action (``replay``, ``replay_edited``, ``discard``, ...): the
        totals of what operators and triage did, for counters that only grow."""
        a = self.audit_log
        with self._read("counting audit entries") as conn:
            rows = conn.execute(sa.select(a.c.action, sa.func.count()).group_by(a.c.action)).all()
        return {str(action): int(count) for action, count in rows}

    def audit(self, *, limit: int = 100, record_id: int | None = None) -> list[AuditEntry]:
        """Audit entries, newest first."""
        a = self.audit_log
        query = sa.select(a).order_by(a.c.at_ms.desc(), a.c.id.desc()).limit(limit)
        if record_id is not None:
            query = query.where(a.c.record_id == record_id)
        with self._read("reading the audit log") as conn:
            return [AuditEntry(**r._asdict()) for r in conn.execute(query)]


def _moved(rows: Iterable[tuple[str, str]], status: str) -> GroupDeltas:
    """Group deltas of records (fingerprint, old status) that now have ``status``."""
    deltas: GroupDeltas = Counter()
    for fingerprint, old in rows:
        if old != status:
            deltas[(fingerprint, old)] -= 1
            deltas[(fingerprint, status)] += 1
    return deltas


def _removed(rows: Iterable[Any]) -> GroupDeltas:
    """Group deltas of deleted records, given as (fingerprint, status) rows."""
    deltas: GroupDeltas = Counter()
    for fingerprint, status in rows:
        deltas[(fingerprint, status)] -= 1
    return deltas


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
