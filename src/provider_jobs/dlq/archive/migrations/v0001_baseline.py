"""Baseline: the archive as it was before schema versions (dead letters, group summary, audit log).

Creates what is missing, so that it serves a new archive and every archive made
before versions were recorded: an archive older than the group summary gets its
summary counted once. The tables are spelled out as they were then, not taken
from the code's current schema, which later revisions change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from provider_jobs.dlq.archive.groups import GroupSummary
from provider_jobs.dlq.archive.schema import Tables

revision = "0001"
down_revision: str | None = None


def baseline_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The tables of the baseline, in ``metadata``: records, group summary, audit log."""
    records = sa.Table(
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
    )
    groups = sa.Table(
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
    audit = sa.Table(
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

    return records, groups, audit


def upgrade() -> None:
    bind = op.get_bind()
    schema = op.get_context().opts.get("archive_schema")
    inspector = sa.inspect(bind)
    summary_missing = not inspector.has_table("dead_letter_groups", schema=schema)
    records_existed = inspector.has_table("dead_letters", schema=schema)
    metadata = sa.MetaData(schema=schema)
    baseline_tables(metadata)
    metadata.create_all(bind)
    if summary_missing and records_existed:
        # An archive from before the summary table: count what it holds once. The
        # summary's upkeep reads only columns the baseline has.
        summary = GroupSummary(Tables(sa.MetaData(schema=schema)), is_sqlite=bind.dialect.name == "sqlite")
        summary.rebuild(bind)


def downgrade() -> None:
    raise NotImplementedError("the baseline is the oldest schema")
