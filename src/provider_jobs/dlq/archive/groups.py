"""GroupSummary: per-fingerprint counts kept beside the records, so that grouping a million is a lookup.

One row per (fingerprint, status) in ``dead_letter_groups``: how many records,
the first and last dead-letter time, and the latest record (its id and error).
Every change to ``dead_letters`` calls :meth:`GroupSummary.apply` in the same
transaction with the change in count per (fingerprint, status). The count moves
by that delta; the first, last and latest are read back from the records
through the ``(fingerprint, status, dead_lettered_ms)`` index, a few seeks per
group. On PostgreSQL the summary rows are locked first, in one order, so that
two writers of the same group take turns and the second reads the first's
committed records; SQLite's ``BEGIN IMMEDIATE`` already makes writers take turns.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .filters import Group, RecordFilter
from .schema import Tables

__all__ = ["GroupDeltas", "GroupSummary"]

#: Change in record count per (fingerprint, status).
GroupDeltas = Counter[tuple[str, str]]

#: Filter fields that are the same for every record of a fingerprint (or are its status):
#: a filter using only these is answered from the summary.
_SUMMARY_FIELDS = frozenset(
    {"statuses", "category", "provider_namespace", "resource_type", "operation", "fingerprint"}
)
_LATEST_FIELDS = ("category", "provider_namespace", "resource_type", "operation")


class GroupSummary:
    """Keeps and reads ``dead_letter_groups`` for the tables of one archive.

    Args:
        tables: The archive's tables.
        is_sqlite: Whether the database is SQLite (else PostgreSQL).
    """

    def __init__(self, tables: Tables, *, is_sqlite: bool) -> None:
        self.tables = tables
        self.is_sqlite = is_sqlite
        r, g = tables.records, tables.groups
        same_group = sa.and_(r.c.fingerprint == g.c.fingerprint, r.c.status == g.c.status)

        def latest(column: sa.Column[Any]) -> sa.ScalarSelect[Any]:
            return (
                sa.select(column)
                .where(same_group)
                .order_by(r.c.dead_lettered_ms.desc(), r.c.id.desc())
                .limit(1)
                .scalar_subquery()
            )

        key = sa.and_(g.c.fingerprint == sa.bindparam("fp"), g.c.status == sa.bindparam("st"))
        self._refresh = (
            g.update()
            .where(key)
            .values(
                count=g.c.count + sa.bindparam("delta"),
                first_seen_ms=sa.select(sa.func.min(r.c.dead_lettered_ms))
                .where(same_group)
                .scalar_subquery(),
                last_seen_ms=sa.select(sa.func.max(r.c.dead_lettered_ms)).where(same_group).scalar_subquery(),
                latest_id=latest(r.c.id),
                sample_error=latest(r.c.error),
                **{name: latest(r.c[name]) for name in _LATEST_FIELDS},
            )
        )
        dialect = sqlite if is_sqlite else postgresql
        self._ensure = dialect.insert(g).on_conflict_do_nothing(index_elements=["fingerprint", "status"])
        self._lock_order = (g.c.fingerprint, g.c.status)

    def apply(self, conn: Connection, deltas: Mapping[tuple[str, str], int]) -> None:
        """Move the counts of ``deltas`` and re-read their first, last and latest records."""
        pairs = sorted(pair for pair, delta in deltas.items() if delta)
        if not pairs:
            return
        g = self.tables.groups
        conn.execute(
            self._ensure,
            [{"fingerprint": fp, "status": st, "count": 0, "category": ""} for fp, st in pairs],
        )
        if not self.is_sqlite:
            # Lock in one order (pairs are sorted); the refresh below is a new statement, so on
            # READ COMMITTED it sees whatever a writer we waited for has committed.
            conn.execute(
                sa.select(g.c.fingerprint)
                .where(sa.tuple_(g.c.fingerprint, g.c.status).in_(pairs))
                .order_by(*self._lock_order)
                .with_for_update()
            )
        conn.execute(self._refresh, [{"fp": fp, "st": st, "delta": deltas[(fp, st)]} for fp, st in pairs])
        if all(deltas[pair] > 0 for pair in pairs):
            # Only added records (the archiver's every batch): each group now counts one at least.
            return
        conn.execute(
            g.delete().where(
                g.c.fingerprint.in_({fp for fp, _ in pairs}), sa.or_(g.c.count <= 0, g.c.latest_id.is_(None))
            )
        )

    def rebuild(self, conn: Connection) -> None:
        """Recount every group from the records (for an archive made before the summary existed)."""
        r, g = self.tables.records, self.tables.groups
        conn.execute(g.delete())
        counts = conn.execute(
            sa.select(r.c.fingerprint, r.c.status, sa.func.count()).group_by(r.c.fingerprint, r.c.status)
        ).all()
        self.apply(conn, Counter({(fp, st): n for fp, st, n in counts}))

    @staticmethod
    def answers(record_filter: RecordFilter) -> bool:
        """Whether ``record_filter`` uses only fields the summary keeps."""
        return all(
            getattr(record_filter, f.name) is None or getattr(record_filter, f.name) is False
            for f in dataclasses.fields(record_filter)
            if f.name not in _SUMMARY_FIELDS
        )

    def read(self, conn: Connection, record_filter: RecordFilter, *, limit: int) -> list[Group]:
        """The largest groups matching ``record_filter`` (which :meth:`answers` must accept)."""
        g = self.tables.groups
        rows = conn.execute(sa.select(g).where(*record_filter.clauses(g))).all()
        merged: dict[str, dict[str, Any]] = {}
        for row in rows:
            data = row._asdict()
            seen = merged.get(data["fingerprint"])
            if seen is None:
                merged[data["fingerprint"]] = data
                continue
            seen["count"] += data["count"]
            seen["first_seen_ms"] = min(seen["first_seen_ms"], data["first_seen_ms"])
            if (data["last_seen_ms"], data["latest_id"]) > (seen["last_seen_ms"], seen["latest_id"]):
                data["count"], data["first_seen_ms"] = seen["count"], seen["first_seen_ms"]
                merged[data["fingerprint"]] = data
        largest = sorted(merged.values(), key=lambda d: (-d["count"], -d["last_seen_ms"]))[:limit]
        for data in largest:
            data.pop("status")
        return [Group(**data) for data in largest]
