"""Bulk operations as records: ``dlq_operations`` and ``dlq_operation_records``.

A replay or discard of a selection is stored as an operation (who, the selection,
the record count, its state) with one row per record saying what became of it,
so that an operation outlives the process running it (see :mod:`..operations`).
New tables only: the archiver's writes are not in their way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"


def upgrade() -> None:
    schema: str | None = op.get_context().opts.get("archive_schema")
    # An archive whose version was not recorded is taken for the baseline: what exists stays.
    if sa.inspect(op.get_bind()).has_table("dlq_operations", schema=schema):
        return
    op.create_table(
        "dlq_operations",
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
        schema=schema,
    )
    op.create_table(
        "dlq_operation_records",
        sa.Column("operation_id", sa.Integer, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("record_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("message_id", sa.Text),
        sa.Column("replays_before", sa.Integer),
        sa.Column("updated_ms", sa.BigInteger),
        schema=schema,
    )
    op.create_index(
        "ix_dlq_operation_records_state",
        "dlq_operation_records",
        ["operation_id", "state", "position"],
        schema=schema,
    )


def downgrade() -> None:
    raise NotImplementedError("the archive is upgraded only")
