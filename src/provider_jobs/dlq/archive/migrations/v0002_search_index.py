"""Indexed text search: each record's masked search document and a trigram index over it.

Adds ``dead_letters.search_text`` (NULL for the records already there, which
the archive indexes afterwards in small batches, see :mod:`..versions`) and an
index of the records still NULL. SQLite gets an FTS5 table of trigrams with
external content and triggers that keep it; PostgreSQL a ``pg_trgm`` GIN index,
built ``CONCURRENTLY`` on an archive that already holds records, so that the
archiver keeps writing while it is built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"

_SQLITE = (
    "CREATE INDEX IF NOT EXISTS ix_dead_letters_unsearchable ON dead_letters (id) WHERE search_text IS NULL",
    "CREATE VIRTUAL TABLE IF NOT EXISTS dead_letters_search USING fts5("
    "search_text, content='dead_letters', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS dead_letters_search_insert AFTER INSERT ON dead_letters "
    "WHEN new.search_text IS NOT NULL BEGIN "
    "INSERT INTO dead_letters_search (rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER IF NOT EXISTS dead_letters_search_delete AFTER DELETE ON dead_letters "
    "WHEN old.search_text IS NOT NULL BEGIN "
    "INSERT INTO dead_letters_search (dead_letters_search, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER IF NOT EXISTS dead_letters_search_update AFTER UPDATE OF search_text ON dead_letters "
    "BEGIN "
    "INSERT INTO dead_letters_search (dead_letters_search, rowid, search_text) "
    "SELECT 'delete', old.id, old.search_text WHERE old.search_text IS NOT NULL; "
    "INSERT INTO dead_letters_search (rowid, search_text) "
    "SELECT new.id, new.search_text WHERE new.search_text IS NOT NULL; END",
)


def upgrade() -> None:
    bind = op.get_bind()
    context = op.get_context()
    schema: str | None = context.opts.get("archive_schema")
    columns = {c["name"] for c in sa.inspect(bind).get_columns("dead_letters", schema=schema)}
    if "search_text" not in columns:
        op.add_column("dead_letters", sa.Column("search_text", sa.Text), schema=schema)
    if bind.dialect.name == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
        return
    trgm_schema = bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    ).scalar()
    if trgm_schema is None:
        # In public, not the archive's schema: an extension is one per database, and an
        # archive's schema may be dropped with everything in it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
        trgm_schema = "public"
    preparer = bind.dialect.identifier_preparer
    table = f"{preparer.quote_schema(schema)}.dead_letters" if schema else "dead_letters"
    statements = (
        f"INDEX IF NOT EXISTS ix_dead_letters_unsearchable ON {table} (id) WHERE search_text IS NULL",
        f"INDEX IF NOT EXISTS ix_dead_letters_search ON {table} "
        f"USING gin (search_text {preparer.quote_schema(trgm_schema)}.gin_trgm_ops)",
    )
    # The table's name is quoted by the dialect, not taken from input.
    if bind.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar():  # noqa: S608
        with context.autocommit_block():
            for statement in statements:
                op.execute(f"CREATE {statement.replace('INDEX', 'INDEX CONCURRENTLY', 1)}")
    else:
        for statement in statements:
            op.execute(f"CREATE {statement}")


def downgrade() -> None:
    raise NotImplementedError("the archive is upgraded only")
