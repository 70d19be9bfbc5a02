"""Brokers and workers as Dramatiq's own tests build them, with ``Retries`` swapped for
``ClassifiedRetries`` (see :mod:`swapped`); nothing else of provider-jobs is used."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker

from dramatiq_compat.swapped import swapped_middleware


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=swapped_middleware())
    broker.emit_after("process_boot")
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(stub_broker, worker_timeout=10, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def rabbitmq_broker(rabbitmq_url: str, amqp) -> Iterator[RabbitmqBroker]:
    """As Dramatiq's fixture: priorities on, publisher confirms left at Dramatiq's default (off)."""
    broker = RabbitmqBroker(url=rabbitmq_url, max_priority=10, middleware=swapped_middleware())
    broker.emit_after("process_boot")
    yield broker
    broker.close()


@pytest.fixture
def rabbitmq_worker(rabbitmq_broker: RabbitmqBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(rabbitmq_broker, worker_timeout=20, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()
