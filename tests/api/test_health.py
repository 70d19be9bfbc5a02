"""GET /healthz and /readyz, including a RabbitMQ node that stops and comes back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

from provider_jobs.api import create_app
from provider_jobs.dlq import DeadLetterArchive
from provider_jobs.settings import Settings

from support import wait_for


def test_healthz_answers_while_the_process_runs(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_when_rabbitmq_is_reachable(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == "ok"


@pytest.fixture
def stopped_rabbitmq(rabbitmq_proc: RabbitMqExecutor) -> Iterator[RabbitMqExecutor]:
    """Stops the private node; it is running again after the test, whatever happened."""
    rabbitmq_proc.stop()
    try:
        yield rabbitmq_proc
    finally:
        if not rabbitmq_proc.running():
            rabbitmq_proc.start()


@pytest.mark.fault
def test_readyz_is_503_while_rabbitmq_is_stopped_and_200_once_it_is_back(
    client: TestClient, stopped_rabbitmq: RabbitMqExecutor
) -> None:
    down = client.get("/readyz")

    stopped_rabbitmq.start()
    back = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, timeout_s=30)

    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert "Cannot reach RabbitMQ" in down.json()["checks"]["broker"]
    assert back.json() == {"status": "ready", "checks": {"broker": "ok", "archive": "ok"}}


def test_readyz_is_503_naming_the_archive_when_it_cannot_be_opened(settings: Settings) -> None:
    unreachable = DeadLetterArchive("sqlite:////proc/no-such-dir/archive.sqlite3")

    with TestClient(create_app(settings, archive=unreachable)) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "ok"
    assert "archive" in response.json()["checks"]["archive"].lower()
    assert response.json()["checks"]["archive"] != "ok"
