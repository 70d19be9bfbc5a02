"""The archive's schema version: Alembic revisions, read, refused or applied.

Each release's schema is an Alembic revision in :mod:`.migrations`; the archive
records the one it is at in ``dlq_schema_version`` (not Alembic's default
table name, which an application sharing the database may use for itself).
An archive without that table but with records is at the baseline, ``0001``.

SQLite applies every revision in one ``BEGIN IMMEDIATE`` transaction (its DDL
is transactional and quick). PostgreSQL applies each in its own transaction,
under a session advisory lock, so that a revision may build an index
``CONCURRENTLY`` while the archiver writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

__all__ = ["VERSION_TABLE", "SchemaState", "head_revision", "read_state", "upgrade"]

#: The table holding the archive's revision.
VERSION_TABLE = "dlq_schema_version"
#: Key of the PostgreSQL advisory lock held while changing the schema.
_SCHEMA_ADVISORY_KEY = 0x70_6A_64_6C_71  # "pjdlq"
_SCRIPTS = Path(__file__).with_name("migrations")


def _script() -> ScriptDirectory:
    return ScriptDirectory(str(_SCRIPTS), version_locations=[str(_SCRIPTS)])


def head_revision() -> str:
    """The newest revision this version of provider-jobs knows."""
    head = _script().get_current_head()
    assert head is not None
    return head


def _known(revision: str) -> bool:
    return any(script.revision == revision for script in _script().walk_revisions())


@dataclasses.dataclass(frozen=True)
class SchemaState:
    """Where an archive's schema stands.

    Attributes:
        revision: The recorded revision; ``None`` when none is recorded.
        has_records: Whether the records table exists (an archive at the
            baseline when no revision is recorded).
    """

    revision: str | None
    has_records: bool

    @property
    def effective(self) -> str | None:
        """The revision, ``0001`` for an archive from before versions, ``None`` for an empty database."""
        return self.revision or ("0001" if self.has_records else None)

    @property
    def current(self) -> bool:
        """Whether the archive is at this version's head."""
        return self.revision == head_revision()

    @property
    def newer(self) -> bool:
        """Whether the archive is at a revision this version does not know."""
        return self.revision is not None and not _known(self.revision)


def read_state(conn: Connection, schema: str | None) -> SchemaState:
    """The schema state of the archive ``conn`` reaches (read directly: Alembic's context
    would log at INFO in every process that opens an archive)."""
    inspector = sa.inspect(conn)
    revision = None
    if inspector.has_table(VERSION_TABLE, schema=schema):
        version = sa.table(VERSION_TABLE, sa.column("version_num"), schema=schema)
        revision = conn.execute(sa.select(version.c.version_num)).scalar()
    return SchemaState(revision, inspector.has_table("dead_letters", schema=schema))


def _run(conn: Connection, schema: str | None, **opts: Any) -> None:
    script = _script()

    def steps(revision: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs("head", revision)

    context = MigrationContext.configure(
        conn,
        opts={
            "version_table": VERSION_TABLE,
            "version_table_schema": schema,
            "archive_schema": schema,
            "transactional_ddl": True,
            "fn": steps,
            **opts,
        },
    )
    with Operations.context(context), context.begin_transaction():
        context.run_migrations()


def upgrade(engine: Engine, schema: str | None) -> None:
    """Bring the archive to the head revision; nothing happens if it is there.

    Args:
        engine: The archive's engine. For SQLite, its connections must begin
            with ``BEGIN IMMEDIATE`` when asked for the ``provider_jobs_write``
            execution option (as :class:`~.database.ArchiveDatabase`'s do).
        schema: The PostgreSQL schema of the tables, or ``None``.
    """
    if engine.dialect.name == "sqlite":
        with engine.execution_options(provider_jobs_write=True).begin() as conn:
            _run(conn, schema)
        return
    with engine.connect() as conn:
        lock = sa.func.pg_advisory_lock(_SCHEMA_ADVISORY_KEY)
        conn.execute(sa.select(lock))
        conn.commit()
        try:
            if schema:
                conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                conn.commit()
            _run(conn, schema, transaction_per_migration=True)
        finally:
            conn.rollback()
            conn.execute(sa.select(sa.func.pg_advisory_unlock(_SCHEMA_ADVISORY_KEY)))
            conn.commit()
