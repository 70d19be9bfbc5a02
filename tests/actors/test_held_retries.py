"""Short retries held by the worker's consumer: no delay queue, nothing lost when the worker stops."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import dramatiq
import pika
import pika.exceptions

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.consumer import held_retries
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.middleware.publisher import delay_queue_name
from provider_jobs.providers import FunctionProvider, ProviderRegistry

from support import depth_or_zero, running_worker, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}


class FailsFirst:
    """Fails the first ``failures`` attempts with a retryable error, recording when each ran."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, job: Any) -> None:
        with self.lock:
            self.times.append(time.monotonic())
            attempt = len(self.times)
        if attempt <= self.failures:
            raise ConnectionError("connection reset by peer")


def _system(settings: Any, provider: FailsFirst, **changes: Any) -> tuple[dramatiq.Broker, Any]:
    changed = settings.replace(**changes)
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": provider}))
    broker = build_broker(changed)
    return broker, declare_provider_actors(broker, registry, changed)["create_resource"]


def _queue_exists(url: str, name: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    finally:
        if connection.is_open:
            connection.close()


def test_a_retry_due_within_the_hold_limit_runs_again_without_a_delay_queue(
    settings, rabbitmq_url, queue_name
) -> None:
    provider = FailsFirst(failures=2)
    broker, actor = _system(settings, provider, retry_delay_s=0.05, hold_retries_up_to_ms=1000)
    actor.send(RG)
    with running_worker(broker):
        wait_for(lambda: len(provider.times) == 3)
    first, second, third = provider.times
    assert second - first >= 0.05 and third - second >= 0.05
    assert not _queue_exists(rabbitmq_url, delay_queue_name(queue_name, 50))
    assert depth_or_zero(rabbitmq_url, queue_name) == 0  # acked once it succeeded


def test_a_retry_longer_than_the_hold_limit_goes_through_its_delay_queue(
    settings, rabbitmq_url, queue_name
) -> None:
    provider = FailsFirst()
    broker, actor = _system(settings, provider, retry_delay_s=0.05, hold_retries_up_to_ms=10)
    actor.send(RG)
    with running_worker(broker):
        wait_for(lambda: len(provider.times) == 2)
    assert provider.times[1] - provider.times[0] >= 0.05
    assert _queue_exists(rabbitmq_url, delay_queue_name(queue_name, 50))


def test_a_held_retry_goes_back_to_the_queue_as_published_when_the_worker_stops(
    settings, rabbitmq_url, queue_name
) -> None:
    provider = FailsFirst(failures=100)
    broker, actor = _system(settings, provider, retry_delay_s=30, hold_retries_up_to_ms=60_000)
    actor.send(RG)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        wait_for(lambda: held_retries(worker) == 1)
    finally:
        worker.stop()
        broker.close()
    assert len(provider.times) == 1
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        wait_for(lambda: depth_or_zero(rabbitmq_url, queue_name) == 1)
        _, _, body = connection.channel().basic_get(queue_name, auto_ack=True)
    finally:
        connection.close()
    # The attempt that failed runs again: RabbitMQ has the message as it was published.
    assert json.loads(body)["options"].get("retries", 0) == 0


def test_the_retries_a_worker_holds_are_a_gauge_of_its_metrics(settings, rabbitmq_url, queue_name) -> None:
    from provider_jobs.middleware import Metrics

    provider = FailsFirst(failures=100)
    broker, actor = _system(settings, provider, retry_delay_s=30, hold_retries_up_to_ms=60_000)
    [metrics] = [m for m in broker.middleware if isinstance(m, Metrics)]

    def held_gauge() -> float:
        return metrics.registry.get_sample_value("worker_retries_held", {"worker_id": "test-worker"}) or 0.0

    actor.send(RG)
    actor.send(RG)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        wait_for(lambda: held_retries(worker) == 2)
        assert held_gauge() == 2
    finally:
        worker.stop()
        broker.close()
    assert held_gauge() == 0  # back in RabbitMQ
