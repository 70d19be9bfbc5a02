"""Schema versions: an archive made before them is upgraded keeping every record; older and newer refused."""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from provider_jobs.cli import app
from provider_jobs.dlq import DeadLetterArchive, RecordFilter
from provider_jobs.dlq.archive.versions import VERSION_TABLE, head_revision
from provider_jobs.errors import ArchiveVersionError

FIXTURES = Path(__file__).parent / "fixtures"
#: The machine's PostgreSQL, as tests/dlq/conftest.py names it.
POSTGRES_URL = os.environ.get(
    "PROVIDER_JOBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_dsn() -> str:
    return POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)


def _pg_schema() -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_postgres_dsn(), autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    return schema


@pytest.fixture(params=["sqlite", "postgresql"])
def baseline_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An archive made before schema versions: the fixture's DDL and rows, loaded as they were dumped."""
    if request.param == "sqlite":
        path = tmp_path / "archive.sqlite3"
        with sqlite3.connect(path) as conn:
            conn.executescript((FIXTURES / "archive_0001.sqlite.sql").read_text())
            # As every archive is: the dump does not say so.
            conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
        yield f"sqlite:///{path}"
        return
    schema = _pg_schema()
    # pg_dump's \restrict lines are psql's, not SQL.
    dump = "\n".join(
        line
        for line in (FIXTURES / "archive_0001.postgresql.sql").read_text().splitlines()
        if not line.startswith("\\")
    )
    with psycopg.connect(_postgres_dsn(), autocommit=True) as conn:
        conn.execute(dump.replace("__SCHEMA__", schema))  # type: ignore[arg-type]
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(_postgres_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _database(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _expected(url: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / f"archive_0001.{_database(url)}.records.json").read_text())


def _read_back(archive: DeadLetterArchive) -> list[dict[str, Any]]:
    out = []
    for record in archive.find(limit=1000, oldest_first=True):
        data = record.to_dict()
        data["body_b64"] = base64.b64encode(record.body).decode()
        out.append(data)
    return out


def _revision(archive: DeadLetterArchive) -> str | None:
    with archive._engine_ready().connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def test_an_archive_made_before_schema_versions_is_upgraded_keeping_every_record(baseline_url: str) -> None:
    archive = DeadLetterArchive(baseline_url)
    try:
        assert archive.upgrade() == ("0001", head_revision())
        assert _read_back(archive) == _expected(baseline_url)
        assert len(archive.audit(limit=100)) == 4
        assert sum(g.count for g in archive.groups()) == len(_expected(baseline_url))
    finally:
        archive.close()


def test_an_upgraded_archive_finds_its_earlier_records_by_search(baseline_url: str) -> None:
    archive = DeadLetterArchive(baseline_url)
    try:
        archive.upgrade()
        found = archive.find(RecordFilter(text="rg-0001-3"))
        assert [r.job_id for r in found] == ["job-0001-3"]
        assert archive.find(RecordFilter(text="secret-3")) == []
    finally:
        archive.close()


def test_an_embedded_sqlite_archive_is_upgraded_when_first_opened(tmp_path: Path) -> None:
    path = tmp_path / "archive.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / "archive_0001.sqlite.sql").read_text())
    conn.close()
    archive = DeadLetterArchive(f"sqlite:///{path}")
    try:
        assert archive.count() == len(_expected(f"sqlite:///{path}"))
        assert _revision(archive) == head_revision()
    finally:
        archive.close()


def test_an_older_postgresql_archive_is_refused_with_the_command_to_run(baseline_url: str) -> None:
    if _database(baseline_url) == "sqlite":
        pytest.skip("SQLite is upgraded when opened")
    archive = DeadLetterArchive(baseline_url)
    try:
        with pytest.raises(ArchiveVersionError) as refused:
            archive.count()
    finally:
        archive.close()
    message = str(refused.value)
    assert "\n" not in message
    assert "schema revision 0001" in message and "run `provider-jobs archive upgrade`" in message


def test_an_archive_newer_than_this_version_is_refused_in_one_line(archive_url: str) -> None:
    archive = DeadLetterArchive(archive_url)
    archive.check()
    with archive._engine_ready().begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    archive.close()
    reopened = DeadLetterArchive(archive_url)
    try:
        with pytest.raises(ArchiveVersionError) as refused:
            reopened.count()
    finally:
        reopened.close()
    message = str(refused.value)
    assert "\n" not in message
    assert "schema revision 9999" in message and "upgrade provider-jobs" in message


def test_a_new_archive_records_the_newest_revision(archive: DeadLetterArchive) -> None:
    archive.check()
    assert _revision(archive) == head_revision()


def test_the_revisions_make_the_tables_the_code_declares(archive: DeadLetterArchive) -> None:
    archive.check()
    with archive._engine_ready().connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                # The trigram indexes and SQLite's FTS5 table and its shadow tables are the
                # revisions' own, outside the code's metadata.
                "include_name": lambda name, kind, _parent: (
                    not (
                        (
                            kind == "table"
                            and (name.startswith("dead_letters_search") or name == VERSION_TABLE)
                        )
                        or (kind == "index" and name == "ix_dead_letters_search")
                    )
                )
            },
        )
        differences = compare_metadata(context, archive._metadata)
    assert differences == []


def test_an_upgrade_while_an_older_archiver_writes_keeps_and_indexes_every_record(baseline_url: str) -> None:
    engine = sa.create_engine(baseline_url)
    with engine.connect() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns("dead_letters")]
    copied = ", ".join(c for c in columns if c not in {"id", "dedupe_key", "job_id"})
    # Inserts as the version before search does: the columns it knew, in small transactions.
    insert = sa.text(
        f"INSERT INTO dead_letters (dedupe_key, job_id, {copied}) "
        f"SELECT :key, :job_id, {copied} FROM dead_letters WHERE id = 1"
    )
    batches: list[int] = []
    upgraded = threading.Event()

    def older_archiver() -> None:
        while not upgraded.is_set() or len(batches) < 3:
            batch = len(batches)
            with engine.begin() as conn:
                conn.execute(
                    insert, [{"key": f"older:{batch}:{i}", "job_id": f"older-{batch}-{i}"} for i in range(20)]
                )
            batches.append(batch)

    writer = threading.Thread(target=older_archiver)
    writer.start()
    archive = DeadLetterArchive(baseline_url, busy_timeout_ms=10_000)
    try:
        archive.upgrade()
        upgraded.set()
        writer.join(timeout=60)
        assert not writer.is_alive()
        archive.close()
        # What the older archiver wrote after the upgrade's indexing is indexed at the next open.
        assert archive.count() == len(_expected(baseline_url)) + 20 * len(batches)
        assert archive.count(RecordFilter(text="older-")) == 20 * len(batches)
    finally:
        upgraded.set()
        writer.join(timeout=60)
        archive.close()
        engine.dispose()


@pytest.fixture
def cli_env(baseline_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("PROVIDER_JOBS_ARCHIVE_URL", baseline_url)
    monkeypatch.setenv("PROVIDER_JOBS_LOG_FORMAT", "json")
    monkeypatch.setenv("PROVIDER_JOBS_LOG_LEVEL", "WARNING")
    yield baseline_url
    logging.getLogger().handlers.clear()


def test_archive_upgrade_says_from_which_revision_to_which(cli_env: str) -> None:
    result = CliRunner().invoke(app, ["archive", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"archive upgraded from schema revision 0001 to {head_revision()}"
    again = CliRunner().invoke(app, ["archive", "upgrade"])
    assert again.stderr.strip() == f"archive already at schema revision {head_revision()}"


def test_dlq_list_on_an_older_postgresql_archive_is_one_line_naming_the_upgrade(cli_env: str) -> None:
    if _database(cli_env) == "sqlite":
        pytest.skip("SQLite is upgraded when opened")
    result = CliRunner().invoke(app, ["dlq", "list"])
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert "run `provider-jobs archive upgrade`" in line


def test_the_archiver_refuses_an_older_postgresql_archive_before_consuming(cli_env: str) -> None:
    if _database(cli_env) == "sqlite":
        pytest.skip("SQLite is upgraded when opened")
    result = CliRunner().invoke(app, ["archiver", "--until-idle"])
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert "run `provider-jobs archive upgrade`" in line


def test_the_api_refuses_an_older_postgresql_archive_before_serving(cli_env: str) -> None:
    if _database(cli_env) == "sqlite":
        pytest.skip("SQLite is upgraded when opened")
    result = CliRunner().invoke(app, ["api", "--port", "59631"])
    assert result.exit_code == 6
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("provider-jobs api: ") and "run `provider-jobs archive upgrade`" in line
