"""DeadLetterArchive: dead letters and the audit log, in SQLite or PostgreSQL.

The archive is composed of one part per concept, each a module of its own:
the connection and transactions (:mod:`.database`), replay claims and marks
(:mod:`.claims`), status changes (:mod:`.status`), purges and retention
(:mod:`.retention`), the audit log (:mod:`.audit`) and bulk operations
(:mod:`.operations`). This module adds storing
and reading records. A record's status moves ``dead`` -> ``replayed`` or
``discarded``; a replay first *claims* the record with one conditional
``UPDATE``, which is what lets two operators replay the same records at the
same moment and publish each once.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ...errors import RecordNotFound
from .audit import ArchiveAudit
from .claims import ArchiveClaims, ReplayMark
from .database import json_text
from .filters import Group, RecordFilter
from .groups import GroupSummary
from .operations import ArchiveOperations
from .records import DeadLetter
from .retention import ArchiveRetention
from .schema import JSON_COLUMNS
from .search import SEARCH_COLUMN, sqlite_page_condition
from .status import DEAD, DISCARDED, REPLAYED, STATUSES, ArchiveStatus

__all__ = ["DEAD", "DISCARDED", "REPLAYED", "STATUSES", "DeadLetterArchive", "ReplayMark"]

logger = logging.getLogger("provider_jobs.dlq.archive.store")

#: Fields of a record the archiver inserts: every one but its id.
_INSERT_COLUMNS = tuple(f.name for f in dataclasses.fields(DeadLetter) if f.name != "id")
#: Columns of the insert: those fields, then the record's search document.
_STORED_COLUMNS = (*_INSERT_COLUMNS, SEARCH_COLUMN)
_insert_values = operator.attrgetter(*_INSERT_COLUMNS)
_JSON_POSITIONS = tuple(i for i, name in enumerate(_INSERT_COLUMNS) if name in JSON_COLUMNS)
_UPDATED_POSITION = _INSERT_COLUMNS.index("updated_ms")
#: Positions of the text columns: every one but the JSON columns and the raw body (kept byte for byte).
_TEXT_POSITIONS = tuple(
    i for i, name in enumerate(_INSERT_COLUMNS) if name not in JSON_COLUMNS and name != "body"
)
_ARCHIVED_POSITION = _INSERT_COLUMNS.index("archived_ms")
#: Milliseconds in an hour: the buckets of :meth:`DeadLetterArchive.counts_by_hour`.
_HOUR_MS = 3_600_000


def _insert_row(record: DeadLetter) -> tuple[Any, ...]:
    """``record`` as the parameters of the compiled insert: JSON columns already
    serialised (JSON escapes NUL as ``\\u0000``), NUL escaped as ``\\x00`` in text
    columns: PostgreSQL text cannot hold it, and one such dead letter would otherwise
    fail its whole batch."""
    values = list(_insert_values(record))
    for i in _TEXT_POSITIONS:
        value = values[i]
        if isinstance(value, str) and "\x00" in value:
            values[i] = value.replace("\x00", "\\x00")
    for i in _JSON_POSITIONS:
        if values[i] is not None:
            values[i] = json_text(values[i])
    values[_UPDATED_POSITION] = values[_ARCHIVED_POSITION]
    return tuple(values)


class _HoldsArchived(Exception):
    """A batch's insert skipped a record already archived: its transaction is rolled back."""


class DeadLetterArchive(ArchiveClaims, ArchiveStatus, ArchiveRetention, ArchiveAudit, ArchiveOperations):
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
        redact_keys: Key names whose values are masked before a record is indexed
            for search (``PROVIDER_JOBS_REDACT_KEYS``). Default
            :data:`~provider_jobs.redaction.DEFAULT_REDACT_KEYS`.

    Raises:
        ConfigurationError: The URL names another database, or ``schema`` is set for SQLite.

    The first operation also brings an embedded SQLite archive made by an earlier
    version to this version's schema; an older PostgreSQL archive is refused with
    :class:`~provider_jobs.errors.ArchiveVersionError` until ``provider-jobs archive
    upgrade`` (:meth:`upgrade`) has run, and any archive newer than this version is refused.
    """

    def __repr__(self) -> str:
        return f"DeadLetterArchive({self.url.render_as_string(hide_password=True)!r})"

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
        """The insert as DBAPI SQL with positional parameters in ``_STORED_COLUMNS`` order."""
        if self._insert_sql is None:
            dialect: sa.Dialect = (
                sqlite.dialect(paramstyle="qmark")
                if self.is_sqlite
                else postgresql.psycopg.dialect(paramstyle="format")  # type: ignore[no-untyped-call]
            )
            self._insert_sql = str(self._insert().compile(dialect=dialect, column_keys=list(_STORED_COLUMNS)))
        return self._insert_sql

    def store(self, records: Sequence[DeadLetter]) -> list[str]:
        """Insert ``records`` in one transaction; those already archived are skipped.

        One ``executemany`` of a prepared insert. A batch that holds an already
        archived record (a redelivery) inserts fewer rows than it holds: that
        transaction is rolled back and the batch stored again row by row, to tell
        which ones were new. Redeliveries are rare (a crash between commit and ack),
        so the common batch pays for no savepoint.

        Returns:
            The dedupe keys of the records that were new.

        Raises:
            ArchiveUnavailable: The database cannot be reached; nothing was stored.
        """
        unique = list({r.dedupe_key: r for r in records}.values())
        if not unique:
            return []
        documents = [self.search_documents(record) for record in unique]
        rows = [(*_insert_row(record), document) for record, document in zip(unique, documents, strict=True)]
        sql = self._compiled_insert()
        try:
            with self._write(f"storing {len(rows)} dead letter(s)") as conn:
                if conn.exec_driver_sql(sql, rows).rowcount != len(rows):
                    raise _HoldsArchived
                self._groups.apply(conn, Counter((r.fingerprint, r.status) for r in unique))
            return [r.dedupe_key for r in unique]
        except _HoldsArchived:
            pass
        insert = self._insert().returning(self.records.c.dedupe_key)
        with self._write(f"storing {len(rows)} dead letter(s) one by one") as conn:
            new = [
                record
                for record, document in zip(unique, documents, strict=True)
                if conn.execute(
                    insert,
                    {
                        **{
                            name: getattr(record, name) if name in JSON_COLUMNS else value
                            for name, value in zip(_INSERT_COLUMNS, _insert_row(record), strict=True)
                        },
                        "updated_ms": record.archived_ms,
                        SEARCH_COLUMN: document,
                    },
                ).first()
            ]
            self._groups.apply(conn, Counter((r.fingerprint, r.status) for r in new))
        return [r.dedupe_key for r in new]

    # -- reading ------------------------------------------------------------------

    def _record(self, row: sa.Row[Any]) -> DeadLetter:
        data = row._asdict()
        data.pop("claim_token", None)
        data.pop(SEARCH_COLUMN, None)
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
        before: tuple[int, int] | None = None,
    ) -> list[DeadLetter]:
        """Records matching ``record_filter``, newest first (by dead-letter time), paged.

        Args:
            record_filter: Which records. Default all.
            limit: Records returned at most. Default 50.
            offset: Records skipped first. Default 0.
            oldest_first: Oldest first instead.
            before: Keyset paging, newest first: only records older than this
                ``(dead_lettered_ms, id)``, the last record of the previous page.
                Each page then reads only its own index entries, however deep it is.
        """
        table = self.records
        order = (
            (table.c.dead_lettered_ms, table.c.id)
            if oldest_first
            else (table.c.dead_lettered_ms.desc(), table.c.id.desc())
        )
        where = (record_filter or RecordFilter()).clauses(table)
        if before is not None:
            before_ms, before_id = before
            # Spelled out rather than a row value: both databases use the page index for it.
            where.append(
                sa.or_(
                    table.c.dead_lettered_ms < before_ms,
                    sa.and_(table.c.dead_lettered_ms == before_ms, table.c.id < before_id),
                )
            )
        with self._read("listing records") as conn:
            if self.is_sqlite:
                where = [sqlite_page_condition(conn, condition) for condition in where]
            query = sa.select(table).where(*where).order_by(*order)
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

    def count(self, record_filter: RecordFilter | None = None, *, up_to: int | None = None) -> int:
        """How many records match ``record_filter``.

        Args:
            record_filter: Which records. Default all.
            up_to: Stop counting past this many (the answer is then ``up_to + 1``): a page
                that says "more than 10,000" need not read a million index entries.
        """
        table = self.records
        where = (record_filter or RecordFilter()).clauses(table)
        if up_to is None:
            query = sa.select(sa.func.count()).select_from(table).where(*where)
        else:
            matches = sa.select(table.c.id).where(*where).limit(up_to + 1).subquery()
            query = sa.select(sa.func.count()).select_from(matches)
        with self._read("counting records") as conn:
            return int(conn.execute(query).scalar_one())

    def counts_by_hour(self, *, since_ms: int) -> list[tuple[int, str, int]]:
        """Dead letters per hour and category since ``since_ms``: ``(hour_start_ms, category, count)``,
        oldest hour first; hours without any are left out."""
        t, g = self.records, self.tables.groups
        hour = (t.c.dead_lettered_ms // _HOUR_MS).label("hour")
        with self._read("counting dead letters per hour") as conn:
            # Naming every category and status lets the (category, status, dead_lettered_ms)
            # index seek to the window for each pair, instead of reading every record.
            categories = [row[0] for row in conn.execute(sa.select(g.c.category).distinct())]
            query = (
                sa.select(hour, t.c.category, sa.func.count())
                .where(
                    t.c.category.in_(categories),
                    t.c.status.in_(list(STATUSES)),
                    t.c.dead_lettered_ms >= since_ms,
                )
                .group_by(hour, t.c.category)
                .order_by(hour)
            )
            rows = conn.execute(query).all()
        return [(int(h) * _HOUR_MS, str(category), int(count)) for h, category, count in rows]

    def totals(self) -> dict[tuple[str, str], int]:
        """Records per (status, category), from the group summary: a lookup, whatever the archive's size."""
        g = self.tables.groups
        query = sa.select(g.c.status, g.c.category, sa.func.sum(g.c.count)).group_by(g.c.status, g.c.category)
        with self._read("reading the group summary's totals") as conn:
            return {(str(st), str(cat or "")): int(n) for st, cat, n in conn.execute(query) if n}

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
