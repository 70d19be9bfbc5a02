"""The SQLite fast path of replay claims: a whole batch of ids or marks as one JSON parameter.

The sqlite3 module releases the GIL for every row stepped, and each row of an
``executemany`` or a result then waits for the replay's publishing thread to
hand the GIL back, which cost more than the database's own work. One statement
over a ``json_each`` of the batch is one step, and its result one aggregated
row. :class:`~.claims.ArchiveClaims` takes this path in SQLite 3.38+ (where the
JSON functions are always built in) and SQLAlchemy statements elsewhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from .database import epoch_ms, json_text, moved
from .groups import GroupSummary
from .status import REPLAYED

if TYPE_CHECKING:
    from .claims import ReplayMark

__all__ = ["claim_in_sqlite", "json_batches", "mark_in_sqlite", "read_sources_in_sqlite"]


def json_batches(is_sqlite: bool) -> bool:
    """Whether an archive in this database takes the JSON-parameter path: SQLite 3.38+."""
    return is_sqlite and sqlite3.sqlite_version_info >= (3, 38)


def read_sources_in_sqlite(conn: sa.Connection, ids: Sequence[int]) -> Sequence[sa.Row[Any]]:
    """The replay columns (id, status, queue_name, message_id, job_id, error, body) of ``ids``,
    in one statement, its rows unprocessed: 2.5x the ORM's speed."""
    return conn.exec_driver_sql(
        "SELECT id, status, queue_name, message_id, job_id, error, body FROM dead_letters "
        "WHERE id IN (SELECT value FROM json_each(?))",
        (json_text(list(dict.fromkeys(ids))),),
    ).fetchall()


def claim_in_sqlite(
    conn: sa.Connection,
    ids: Sequence[int],
    allow_statuses: Iterable[str],
    *,
    token: str,
    now: int,
    stale: int,
) -> set[int]:
    """Claim ``ids`` under ``token`` in one statement, and read back those won as one row."""
    wanted = json_text(list(dict.fromkeys(ids)))
    conn.exec_driver_sql(
        "UPDATE dead_letters SET claim_token = ?, claimed_ms = ? "
        "WHERE id IN (SELECT value FROM json_each(?)) AND status IN (SELECT value FROM json_each(?)) "
        "AND (claim_token IS NULL OR claimed_ms < ?)",
        (token, now, wanted, json_text(list(allow_statuses)), stale),
    )
    won = conn.exec_driver_sql(
        "SELECT json_group_array(id) FROM dead_letters "
        "WHERE claim_token = ? AND id IN (SELECT value FROM json_each(?))",
        (token, wanted),
    ).scalar_one()
    return set(orjson.loads(won))


def mark_in_sqlite(
    conn: sa.Connection,
    groups: GroupSummary,
    by_id: Mapping[int, ReplayMark],
    token: str,
    *,
    who: str,
    reason: str | None,
) -> set[int]:
    """Mark replayed and audit the records of ``by_id`` that ``token`` holds, three
    statements in all; the ids marked."""
    found = conn.exec_driver_sql(
        "SELECT json_group_array(json_array(id, fingerprint, status)) FROM dead_letters "
        "WHERE claim_token = ? AND id IN (SELECT value FROM json_each(?))",
        (token, json_text(list(by_id))),
    ).scalar_one()
    rows: list[list[Any]] = orjson.loads(found)
    if not rows:
        return set()
    now = epoch_ms()
    conn.exec_driver_sql(
        "UPDATE dead_letters SET status = ?, replay_count = replay_count + 1, "
        "replay_message_ids = json_insert(coalesce(replay_message_ids, '[]'), '$[#]', "
        "json_extract(marks.value, '$[1]')), claim_token = NULL, claimed_ms = NULL, updated_ms = ? "
        "FROM json_each(?) AS marks WHERE dead_letters.id = json_extract(marks.value, '$[0]') "
        "AND dead_letters.claim_token = ?",
        (REPLAYED, now, json_text([[r[0], by_id[r[0]].message_id] for r in rows]), token),
    )
    groups.apply(conn, moved([(r[1], r[2]) for r in rows], REPLAYED))
    entries = [
        [
            (mark := by_id[r[0]]).action,
            r[0],
            json_text({"message_id": mark.message_id, **mark.details}),
        ]
        for r in rows
    ]
    conn.exec_driver_sql(
        "INSERT INTO dlq_audit (at_ms, who, action, record_id, reason, details) "
        "SELECT ?, ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?, "
        "json_extract(value, '$[2]') FROM json_each(?)",
        (now, who, reason, json_text(entries)),
    )
    return {r[0] for r in rows}
