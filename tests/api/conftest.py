"""API fixtures: settings with an archive of the test's own, the app behind FastAPI's
test client, and real dead letters archived by the real archiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from api_support import DEAD_LETTERS, TOKEN
from dramatiq.common import xq_name
from fastapi.testclient import TestClient

from metrics_workload import send_jobs, workload_registry
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.api import create_app
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
from provider_jobs.settings import Settings

from support import queue_depth, wait_for


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The session node and the test's queue, plus a SQLite archive in ``tmp_path``."""
    return settings.replace(archive_url=f"sqlite:///{tmp_path}/archive.sqlite3")


@pytest.fixture
def archive(settings: Settings) -> Iterator[DeadLetterArchive]:
    archive = DeadLetterArchive(settings.archive_url)
    yield archive
    archive.close()


@pytest.fixture
def client(settings: Settings, archive: DeadLetterArchive) -> Iterator[TestClient]:
    with TestClient(create_app(settings, archive=archive)) as test_client:
        yield test_client


@pytest.fixture
def token_settings(settings: Settings) -> Settings:
    return settings.replace(api_token=TOKEN)


@pytest.fixture
def token_client(token_settings: Settings, archive: DeadLetterArchive) -> Iterator[TestClient]:
    """The app with ``PROVIDER_JOBS_API_TOKEN`` set to :data:`TOKEN`."""
    with TestClient(create_app(token_settings, archive=archive)) as test_client:
        yield test_client


@pytest.fixture
def archived(settings: Settings, archive: DeadLetterArchive, amqp: Any) -> list[int]:
    """Real dead letters: jobs fail in a real worker, the archiver moves the XQ into the archive.

    Returns the archive ids, oldest first.
    """
    broker = build_broker(settings)
    declare_provider_actors(broker, workload_registry(), settings)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        send_jobs(settings, DEAD_LETTERS.jobs())
        expected = DEAD_LETTERS.expected(settings.max_attempts)["failed"]
        wait_for(lambda: queue_depth(amqp, xq_name(settings.queue_name)) == expected, timeout_s=20)
    finally:
        worker.stop()
        broker.close()
    DeadLetterArchiver.from_settings(settings, archive=archive).run(until_idle=True)
    ids = [record.id for record in archive.find(limit=100, oldest_first=True) if record.id is not None]
    assert len(ids) == expected
    return ids
