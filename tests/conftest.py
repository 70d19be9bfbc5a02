"""Shared fixtures: a private RabbitMQ node for the session, isolated queues per test.

The node (``pytest_rmq`` on port 5690, see ``addopts`` in pyproject.toml) runs
beside the machine's own RabbitMQ; fault tests may stop and start it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from dramatiq.common import dq_name, xq_name
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

from provider_jobs.settings import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--queue-type",
        default="classic",
        choices=["classic", "quorum"],
        help="PROVIDER_JOBS_QUEUE_TYPE of the settings fixture (make test-quorum runs the flows with quorum)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Give the private node its own listener.

    A machine-wide ``/etc/rabbitmq/rabbitmq.conf`` may pin ``listeners.tcp``
    to 5672, which overrides ``RABBITMQ_NODE_PORT``; the node then fails with
    eaddrinuse beside the machine's broker. A config file of its own wins.
    """
    if config.getoption("queue_type", "classic") == "quorum":
        # Workers, APIs and archivers that tests start as processes read it from the environment.
        os.environ["PROVIDER_JOBS_QUEUE_TYPE"] = "quorum"
    port = config.getoption("rabbitmq_port") or config.getini("rabbitmq_port")
    if not port or "RABBITMQ_CONFIG_FILE" in os.environ:
        return
    conf = Path(tempfile.mkdtemp(prefix="provider-jobs-rmq-")) / "rabbitmq.conf"
    conf.write_text(f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n")
    os.environ["RABBITMQ_CONFIG_FILE"] = str(conf)


#: A test that uses one of these fixtures, directly or through another, gets the marker of that name.
_MARKING_FIXTURES = ("browser", "cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark browser and cluster tests, and every test under ``tests/faults`` a fault test, so that
    ``make test-fast`` can leave them out."""
    faults = Path(__file__).parent / "faults"
    for item in items:
        for name in _MARKING_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, name))
        if item.path.is_relative_to(faults):
            item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_proc: RabbitMqExecutor) -> str:
    return f"amqp://guest:guest@127.0.0.1:{rabbitmq_proc.port}/%2F"


@pytest.fixture
def queue_name() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(rabbitmq_url: str, queue_name: str, request: pytest.FixtureRequest) -> Settings:
    """Settings for a test: private node, own queue (of ``--queue-type``), 20 ms retry delays and
    archiver flushes (an archiver run until idle waits out one flush), no circuit breakers (tests
    of retries and dead letters fail one provider on purpose; breaker tests turn them on)."""
    return Settings(
        broker_url=rabbitmq_url,
        queue_name=queue_name,
        queue_type=request.config.getoption("queue_type"),
        retry_delay_s=0.02,
        worker_threads=2,
        worker_timeout_ms=20,
        worker_id="test-worker",
        breaker_min_calls=0,
        archiver_flush_ms=20,
    )


@pytest.fixture
def amqp(rabbitmq_url: str, queue_name: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A raw pika channel on the private node; the test's queues are deleted afterwards."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    yield channel
    if not channel.is_open:
        # A test that made RabbitMQ close the channel (a failed passive declare) leaves its connection open.
        if connection.is_open:
            connection.close()
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        channel = connection.channel()
    # <queue>.health: the health stream a worker built by build_broker writes;
    # <queue>.suspects and the exchange <queue>.settled: a worker's consumer and ledger declare them.
    names = (queue_name, dq_name(queue_name), xq_name(queue_name), f"{queue_name}.health")
    for name in (*names, f"{queue_name}.suspects"):
        channel.queue_delete(name)
    channel.exchange_delete(f"{queue_name}.settled")
    connection.close()
