"""ArchiveDatabase: the archive's engine, tables and transactions, in SQLite or PostgreSQL.

SQLAlchemy Core 2, the same statements for both databases. SQLite is a file in
WAL mode whose write transactions start with ``BEGIN IMMEDIATE`` (so that a
read-then-write never fails half-way on a snapshot); PostgreSQL is reached
through psycopg 3. Every part of :class:`~.archive.DeadLetterArchive` reads and
writes through :meth:`ArchiveDatabase._read` and :meth:`ArchiveDatabase._write`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ...errors import ArchiveError, ArchiveUnavailable, ArchiveVersionError, ConfigurationError
from ...json_bodies import read_json
from ...redaction import DEFAULT_REDACT_KEYS, Redactor
from .groups import GroupDeltas, GroupSummary
from .schema import Tables
from .search import FTS_TABLE, SEARCH_COLUMN, SEARCH_FIELDS, SearchDocuments
from .versions import VERSION_TABLE, SchemaState, head_revision, read_state, upgrade

__all__ = ["DEFAULT_CLAIM_TTL_S", "ArchiveDatabase", "chunks", "epoch_ms", "json_text", "moved", "removed"]

#: A replay claim older than this is taken to be from a replayer that died.
DEFAULT_CLAIM_TTL_S = 300.0

#: Serialises preparing the schema within the process; across processes, SQLite's
#: ``BEGIN IMMEDIATE`` and PostgreSQL's advisory lock do (:mod:`.versions`).
_CREATE_LOCK = threading.Lock()
#: Records indexed for search per write transaction when an older version's are.
_INDEX_BATCH = 2_000


_stdlib_dumps = json.JSONEncoder(separators=(",", ":")).encode
#: What orjson hands to the stdlib instead of serialising in its own way.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def json_text(value: Any) -> str:
    """``value`` as compact JSON text for a JSON column: orjson, about ten times the
    stdlib's speed, for what JSON itself produced; the stdlib for anything else
    (non-string keys, integers beyond 64 bits, lone surrogates, subclasses), which
    orjson refuses. A NaN or an infinity is written as ``null``, which every
    database's JSON type accepts (PostgreSQL's refuses ``NaN``); the record's body
    keeps the original bytes."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return _stdlib_dumps(value)


def epoch_ms() -> int:
    """The time now, in milliseconds since the epoch."""
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


#: What a JSON column too deeply nested to read is read as.
TOO_DEEP = "… nested too deeply to read"


def _read_json_column(text: str | bytes) -> Any:
    """A JSON column's value: orjson reads up to 1024 levels without using the call
    stack (the stdlib's reader recurses, and fails some hundred levels deep inside a
    deep caller such as a CLI command). Reading stored data never fails: a value
    nested deeper than Python's stack allows is read as :data:`TOO_DEEP`."""
    try:
        if isinstance(text, bytes):
            return read_json(text)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            return json.loads(text)
        return read_json(data)
    except RecursionError:
        return TOO_DEEP


def _create_private_file(path: Path) -> None:
    """Create the SQLite file 0600 (and its directory 0700) if missing: the archive holds
    requests with their credentials. SQLite gives its ``-wal`` and ``-shm`` files the
    database file's mode. Existing files and directories are left as they are.

    Raises:
        ArchiveUnavailable: The directory or the file cannot be created.
    """
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise ArchiveUnavailable(f"Cannot create the archive file {path}: {exc}") from exc


class ArchiveDatabase:
    """The connection under :class:`~.archive.DeadLetterArchive`, which documents the arguments.

    Nothing is connected or created until the first operation, which creates
    the tables (and, for SQLite, the file's directory) if they are missing, or
    upgrades or refuses an archive of another schema version (:meth:`_prepare`).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        busy_timeout_ms: int = 30_000,
        claim_ttl_s: float = DEFAULT_CLAIM_TTL_S,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
    ) -> None:
        self.url = _engine_url(url)
        self.search_documents = SearchDocuments(Redactor(keys=redact_keys))
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

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return sa.create_engine(
                self.url,
                pool_pre_ping=True,
                connect_args={"connect_timeout": 5},
                json_deserializer=_read_json_column,
            )
        database = self.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _create_private_file(Path(database))
        engine = sa.create_engine(
            self.url,
            connect_args={"timeout": self._busy_timeout_ms / 1000},
            json_deserializer=_read_json_column,
        )
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
                    self._prepare(self._engine)
                    self._ready = True
        return self._engine

    def _prepare(self, engine: Engine) -> None:
        """Make the archive ready to use: created if new, upgraded if it is older and
        SQLite, refused if it is older and PostgreSQL (an operator upgrades it) or newer
        than this version knows; then index what an older version wrote.

        Raises:
            ArchiveVersionError: The archive needs ``provider-jobs archive upgrade``, or
                is newer than this version of provider-jobs.
        """
        with self._errors("reading the archive's schema version"), engine.connect() as conn:
            state = read_state(conn, self.schema)
        if state.newer:
            raise self._newer(state)
        if not state.current:
            if state.has_records and not self.is_sqlite:
                raise ArchiveVersionError(
                    f"archive {self._where} is at schema revision {state.effective}, this provider-jobs "
                    f"needs {head_revision()}: run `provider-jobs archive upgrade` (safe while "
                    "the archiver runs)"
                )
            with self._errors("upgrading the archive's schema"):
                upgrade(engine, self.schema)
        self._index_unsearchable(engine)

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the archive to this version's schema, keeping every record, and index the
        records it holds for search; safe while the archiver writes.

        Returns:
            The revision it was at (``None`` for a new archive) and the one it is at now.

        Raises:
            ArchiveVersionError: The archive is newer than this version of provider-jobs.
            ArchiveUnavailable: The database cannot be reached.
        """
        if self._engine is None:
            self._engine = self._make_engine()
        engine = self._engine
        with self._errors("reading the archive's schema version"), engine.connect() as conn:
            before = read_state(conn, self.schema)
        if before.newer:
            raise self._newer(before)
        with self._errors("upgrading the archive's schema"):
            upgrade(engine, self.schema)
        self._index_unsearchable(engine)
        self._ready = True
        return before.effective, head_revision()

    @property
    def _where(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def _newer(self, state: SchemaState) -> ArchiveVersionError:
        return ArchiveVersionError(
            f"archive {self._where} is at schema revision {state.revision}, newer than this "
            f"provider-jobs knows (its newest is {head_revision()}): upgrade provider-jobs to use it"
        )

    def _index_unsearchable(self, engine: Engine) -> None:
        """Write the search document of every record that has none (written by an older
        version), a short write transaction per batch so that other writers interleave."""
        records = self.records
        search_text = records.c[SEARCH_COLUMN]
        select = (
            sa.select(*(records.c[name] for name in SEARCH_FIELDS))
            .where(search_text.is_(None))
            .order_by(records.c.id)
            .limit(_INDEX_BATCH)
        )
        update = (
            records.update()
            .where(records.c.id == sa.bindparam("record_id"), search_text.is_(None))
            .values({SEARCH_COLUMN: sa.bindparam("document")})
        )
        writer = engine.execution_options(provider_jobs_write=True)
        while True:
            with self._errors("indexing records for search"), writer.begin() as conn:
                rows = conn.execute(select).all()
                if rows:
                    conn.execute(
                        update,
                        [{"record_id": row.id, "document": self.search_documents(row)} for row in rows],
                    )
            if len(rows) < _INDEX_BATCH:
                return

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
        """Connect once, and create the tables or upgrade an embedded SQLite archive if needed.

        Raises:
            ArchiveUnavailable: The database cannot be reached.
            ArchiveVersionError: The archive needs ``provider-jobs archive upgrade``, or
                is newer than this version of provider-jobs.
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
                if self.is_sqlite:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS_TABLE}")
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
        self._ready = False


def moved(rows: Iterable[tuple[str, str]], status: str) -> GroupDeltas:
    """Group deltas of records (fingerprint, old status) that now have ``status``."""
    deltas: GroupDeltas = Counter()
    for fingerprint, old in rows:
        if old != status:
            deltas[(fingerprint, old)] -= 1
            deltas[(fingerprint, status)] += 1
    return deltas


def removed(rows: Iterable[Any]) -> GroupDeltas:
    """Group deltas of deleted records, given as (fingerprint, status) rows."""
    deltas: GroupDeltas = Counter()
    for fingerprint, status in rows:
        deltas[(fingerprint, status)] -= 1
    return deltas


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
