"""The seed's documented API: ProviderWorker and JobQueue, on a real RabbitMQ node."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from provider_jobs import ConfigurationError, JobQueue, ProviderJob, ProviderRegistry, ProviderWorker
from provider_jobs.settings import Settings

from support import take_dead_letters, wait_for


class CountingProvider:
    """Fails with the given error text until it has been called ``failures`` times."""

    def __init__(self, error: str | None = None, failures: int = 10**6) -> None:
        self.error = error
        self.failures = failures
        self.calls: list[ProviderJob] = []
        self.lock = threading.Lock()

    def execute(self, job: ProviderJob) -> Any:
        with self.lock:
            self.calls.append(job)
            count = len(self.calls)
        if self.error and count <= self.failures:
            raise RuntimeError(self.error)
        return {"done": True}


class CustomProviderWorker(ProviderWorker):
    """The seed's example: deploys in progress are retried, exceeded quotas are not."""

    def _is_retryable_error(self, exception: BaseException) -> bool:
        message = str(exception).lower()
        if "deploy in progress" in message:
            return True
        if "quota exceeded" in message:
            return False
        return super()._is_retryable_error(exception)


@pytest.fixture
def queue(settings: Settings) -> Iterator[JobQueue]:
    """The document's configurations run with every default on, circuit breakers included; only
    delays are shortened."""
    defaults = Settings()
    queue = JobQueue(settings=settings.replace(breaker_min_calls=defaults.breaker_min_calls))
    yield queue
    queue.close()


def submit(queue: JobQueue, **fields: Any) -> str:
    return asyncio.run(
        queue.submit_job(
            **{
                "provider_namespace": "ITL.Core",
                "resource_type": "ResourceGroup",
                "operation": "create",
                "request": {"name": "rg"},
                **fields,
            }
        )
    )


def test_submit_job_is_awaitable_and_returns_the_job_id(queue: JobQueue, amqp) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider()
    registry.register("ITL.Core", "ResourceGroup", provider)
    job_id = submit(queue, priority=7)
    with ProviderWorker(worker_id="w1", provider_registry=registry, job_queue=queue, retry_delay=0.02):
        wait_for(lambda: provider.calls)
    assert provider.calls[0].job_id == job_id
    assert provider.calls[0].priority == 7


def test_max_retries_three_means_three_attempts_in_total(queue: JobQueue, amqp, queue_name: str) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider("Service unavailable")
    registry.register("ITL.Core", "ResourceGroup", provider)
    submit(queue)
    with ProviderWorker(
        worker_id="w1", provider_registry=registry, job_queue=queue, max_retries=3, retry_delay=0.02
    ):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert len(provider.calls) == 3
    assert body["options"]["dead_letter"]["worker_id"] == "w1"


def test_max_retries_one_means_a_single_attempt(queue: JobQueue, amqp, queue_name: str) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider("Connection timeout")
    registry.register("ITL.Core", "ResourceGroup", provider)
    submit(queue)
    with ProviderWorker(
        worker_id="w1", provider_registry=registry, job_queue=queue, max_retries=1, retry_delay=0.02
    ):
        take_dead_letters(amqp, queue_name, 1)
    assert len(provider.calls) == 1


def test_the_aggressive_configuration_tries_a_timing_out_job_ten_times_then_dead_letters_it(
    queue: JobQueue, amqp, queue_name: str
) -> None:
    """``max_retries=10``: one job whose provider keeps timing out never opens its breaker."""
    registry = ProviderRegistry()
    provider = CountingProvider("Connection timeout")
    registry.register("ITL.Core", "ResourceGroup", provider)
    submit(queue)
    with ProviderWorker(
        worker_id="w1", provider_registry=registry, job_queue=queue, max_retries=10, retry_delay=0.02
    ):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert len(provider.calls) == 10
    letter = body["options"]["dead_letter"]
    assert (letter["reason"], letter["category"]) == ("exhausted", "timeout")
    assert "breaker" not in body["options"]


def test_each_operation_waits_its_own_retry_delay(settings: Settings, amqp, queue_name: str) -> None:
    """The document's per-operation delays: create waits longer than get, breakers on."""
    defaults = Settings()
    queue = JobQueue(
        settings=settings.replace(
            breaker_min_calls=defaults.breaker_min_calls,
            operation_delays_s={"create": 0.4, "get": 0.02},
        )
    )
    registry = ProviderRegistry()
    provider = CountingProvider("Service unavailable")
    registry.register("ITL.Core", "ResourceGroup", provider)
    times: dict[str, list[float]] = {"create": [], "get": []}
    original = provider.execute

    def timed(job: ProviderJob) -> Any:
        times[job.operation].append(time.monotonic())
        return original(job)

    provider.execute = timed  # type: ignore[method-assign]
    submit(queue)
    submit(queue, operation="get")
    try:
        with ProviderWorker(worker_id="w1", provider_registry=registry, job_queue=queue, max_retries=2):
            take_dead_letters(amqp, queue_name, 2)
    finally:
        queue.close()
    assert times["create"][1] - times["create"][0] >= 0.4
    assert times["get"][1] - times["get"][0] < 0.4


def test_max_retries_below_one_is_refused(queue: JobQueue) -> None:
    with pytest.raises(ConfigurationError, match="max_retries=0 is not allowed"):
        ProviderWorker(worker_id="w", provider_registry=ProviderRegistry(), job_queue=queue, max_retries=0)


@pytest.mark.parametrize(
    ("error", "attempts", "category"),
    [
        ("Deploy in progress: Validation pending", 3, "validation"),  # permanent text, overridden to retry
        ("Quota exceeded for subscription", 1, "unknown"),  # unknown, overridden to permanent
        ("Validation error: missing required field 'name'", 1, "validation"),  # falls through to super()
        ("No provider found for ITL.Core/ResourceGroup", 3, "provider_not_found"),
    ],
)
def test_a_subclass_decides_retryability_with_is_retryable_error(
    queue: JobQueue, amqp, queue_name: str, error: str, attempts: int, category: str
) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider(error)
    registry.register("ITL.Core", "ResourceGroup", provider)
    submit(queue)
    worker = CustomProviderWorker(
        worker_id="custom", provider_registry=registry, job_queue=queue, max_retries=3, retry_delay=0.02
    )
    with worker:
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert len(provider.calls) == attempts
    assert body["options"]["dead_letter"]["category"] == category


def test_a_flaky_job_succeeds_within_its_attempts(queue: JobQueue, amqp, queue_name: str) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider("deploy in progress", failures=2)
    registry.register("ITL.Core", "ResourceGroup", provider)
    submit(queue)
    with CustomProviderWorker(
        worker_id="custom", provider_registry=registry, job_queue=queue, max_retries=3, retry_delay=0.02
    ) as worker:
        wait_for(lambda: len(provider.calls) == 3)
        worker.join()
    assert len({job.job_id for job in provider.calls}) == 1


def test_run_blocks_until_signalled_then_stops(queue: JobQueue, amqp) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider()
    registry.register("ITL.Core", "ResourceGroup", provider)
    worker = ProviderWorker(worker_id="w1", provider_registry=registry, job_queue=queue, retry_delay=0.02)
    submit(queue)

    def signal_when_done() -> None:
        wait_for(lambda: provider.calls)
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=signal_when_done)
    helper.start()
    worker.run()
    helper.join()
    assert len(provider.calls) == 1


def test_join_waits_for_a_retry_the_worker_holds(queue: JobQueue, amqp) -> None:
    registry = ProviderRegistry()
    provider = CountingProvider("connection reset", failures=1)
    registry.register("ITL.Core", "ResourceGroup", provider)
    submit(queue)
    with ProviderWorker(
        worker_id="w1", provider_registry=registry, job_queue=queue, max_retries=2, retry_delay=0.3
    ) as worker:
        wait_for(lambda: len(provider.calls) == 1)
        worker.join()  # the retry is held (unacked, in no queue) for 0.3 s: join waits for it
        assert len(provider.calls) == 2
