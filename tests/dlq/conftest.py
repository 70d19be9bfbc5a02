"""Fixtures of the DLQ tests: an archive on SQLite and on PostgreSQL, real dead letters."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from provider_jobs.dlq import DeadLetterArchive

#: The machine's PostgreSQL; the tests skip it locally when absent and fail in CI.
POSTGRES_URL = os.environ.get(
    "PROVIDER_JOBS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_dsn() -> str:
    return POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty archive's URL: a SQLite file, or a PostgreSQL schema of its own (via search_path)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/archive/archive.sqlite3"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_postgres_dsn(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(_postgres_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def archive(archive_url: str) -> Iterator[DeadLetterArchive]:
    archive = DeadLetterArchive(archive_url, busy_timeout_ms=2000)
    yield archive
    archive.close()
