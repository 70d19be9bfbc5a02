"""The archive's tables: dead letters, the per-fingerprint summary and the audit log.

Indexes serve the archive's own queries and nothing else, since each one costs
every insert: pages newest first (by status, category, provider, or category
and provider), the group summary's upkeep (fingerprint), retention (archived
time) and the dedupe key. Text search (ids, job ids, errors, requests) reads the
``search_text`` column through a trigram index, which the migrations create:
an FTS5 table on SQLite, a ``pg_trgm`` GIN index on PostgreSQL (see :mod:`.search`).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["JSON_COLUMNS", "Tables"]

#: Columns stored as JSON text; the archive serialises them itself on its insert fast path.
JSON_COLUMNS = frozenset({"request", "attempt_history", "x_death", "headers", "replay_message_ids"})


class Tables:
    """The archive's tables in ``metadata``.

    Attributes:
        records: ``dead_letters``, one row per archived dead letter.
        groups: ``dead_letter_groups``, one row per (fingerprint, status): the
            count, first and last dead-letter time and latest record, kept in
            the same transaction as every change to ``records``.
        audit: ``dlq_audit``, who did what to which record.
        operations: ``dlq_operations``, one row per bulk replay or discard: who, the
            selection, the record count, its state (:mod:`.operations`).
        operation_records: ``dlq_operation_records``, one row per record of an
            operation, in order: what became of it.
    """

    def __init__(self, metadata: sa.MetaData) -> None:
        self.records = sa.Table(
            "dead_letters",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
            sa.Column("message_id", sa.Text),
            sa.Column("job_id", sa.Text),
            sa.Column("queue_name", sa.Text),
            sa.Column("source_queue", sa.Text, nullable=False),
            sa.Column("actor_name", sa.Text),
            sa.Column("provider_namespace", sa.Text),
            sa.Column("resource_type", sa.Text),
            sa.Column("operation", sa.Text),
            # None is SQL NULL on every path: the fast insert writes NULL, and so must SQLAlchemy's.
            sa.Column("request", sa.JSON(none_as_null=True)),
            sa.Column("priority", sa.Integer),
            sa.Column("category", sa.Text, nullable=False),
            sa.Column("retryable", sa.Boolean),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("error_type", sa.Text),
            sa.Column("error", sa.Text, nullable=False),
            sa.Column("traceback", sa.Text),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("max_retries", sa.Integer),
            sa.Column("attempt_history", sa.JSON, nullable=False),
            sa.Column("x_death", sa.JSON(none_as_null=True)),
            sa.Column("headers", sa.JSON, nullable=False),
            sa.Column("first_enqueued_ms", sa.BigInteger),
            sa.Column("dead_lettered_ms", sa.BigInteger, nullable=False),
            sa.Column("archived_ms", sa.BigInteger, nullable=False),
            sa.Column("fingerprint", sa.String(32), nullable=False),
            sa.Column("body", sa.LargeBinary, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("status_reason", sa.Text),
            sa.Column("replay_count", sa.Integer, nullable=False),
            sa.Column("replay_message_ids", sa.JSON, nullable=False),
            sa.Column("escalated_ms", sa.BigInteger),
            sa.Column("updated_ms", sa.BigInteger),
            sa.Column("claim_token", sa.String(64)),
            sa.Column("claimed_ms", sa.BigInteger),
            # The masked search document (:class:`.search.SearchDocuments`); NULL only for a
            # record an older version wrote, until the archive indexes it.
            sa.Column("search_text", sa.Text),
            # Each page index ends in (dead_lettered_ms, id): the page's order, so that a
            # page newest first reads 50 index entries, not every match.
            sa.Index("ix_dead_letters_status_dead", "status", "dead_lettered_ms", "id"),
            sa.Index("ix_dead_letters_fp_status_dead", "fingerprint", "status", "dead_lettered_ms", "id"),
            sa.Index("ix_dead_letters_category_status_dead", "category", "status", "dead_lettered_ms", "id"),
            sa.Index(
                "ix_dead_letters_provider_status_dead",
                "provider_namespace",
                "resource_type",
                "status",
                "dead_lettered_ms",
                "id",
            ),
            sa.Index(
                "ix_dead_letters_category_provider_status_dead",
                "category",
                "provider_namespace",
                "resource_type",
                "status",
                "dead_lettered_ms",
                "id",
            ),
            sa.Index("ix_dead_letters_archived", "archived_ms"),
            # The records still to index: empty but for what an older version writes.
            sa.Index(
                "ix_dead_letters_unsearchable",
                "id",
                sqlite_where=sa.text("search_text IS NULL"),
                postgresql_where=sa.text("search_text IS NULL"),
            ),
        )
        self.groups = sa.Table(
            "dead_letter_groups",
            metadata,
            sa.Column("fingerprint", sa.String(32), primary_key=True),
            sa.Column("status", sa.String(16), primary_key=True),
            sa.Column("count", sa.BigInteger, nullable=False),
            sa.Column("first_seen_ms", sa.BigInteger),
            sa.Column("last_seen_ms", sa.BigInteger),
            sa.Column("latest_id", sa.Integer),
            # Null only inside the transaction that removes a group's last record.
            sa.Column("category", sa.Text),
            sa.Column("provider_namespace", sa.Text),
            sa.Column("resource_type", sa.Text),
            sa.Column("operation", sa.Text),
            sa.Column("sample_error", sa.Text),
            sa.Index("ix_dead_letter_groups_status_count", "status", "count"),
        )
        self.audit = sa.Table(
            "dlq_audit",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("at_ms", sa.BigInteger, nullable=False, index=True),
            sa.Column("who", sa.Text, nullable=False),
            sa.Column("action", sa.String(32), nullable=False),
            sa.Column("record_id", sa.Integer, index=True),
            sa.Column("reason", sa.Text),
            sa.Column("details", sa.JSON, nullable=False),
        )
        self.operations = sa.Table(
            "dlq_operations",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("action", sa.String(16), nullable=False),
            sa.Column("who", sa.Text, nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("selection", sa.JSON, nullable=False),
            sa.Column("options", sa.JSON, nullable=False),
            sa.Column("total", sa.Integer, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("error", sa.Text),
            sa.Column("runner", sa.Text),
            sa.Column("created_ms", sa.BigInteger, nullable=False),
            sa.Column("updated_ms", sa.BigInteger, nullable=False),
            sa.Column("heartbeat_ms", sa.BigInteger),
            sa.Column("finished_ms", sa.BigInteger),
        )
        self.operation_records = sa.Table(
            "dlq_operation_records",
            metadata,
            sa.Column("operation_id", sa.Integer, primary_key=True),
            sa.Column("position", sa.Integer, primary_key=True),
            sa.Column("record_id", sa.Integer, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("detail", sa.Text),
            sa.Column("message_id", sa.Text),
            # The record's replay count when it was handed to the replayer: a higher count
            # after a crash says the replay was marked, so sent.
            sa.Column("replays_before", sa.Integer),
            sa.Column("updated_ms", sa.BigInteger),
            # Each state's records in order: the next pending chunk, the failures' page.
            sa.Index("ix_dlq_operation_records_state", "operation_id", "state", "position"),
        )
