"""Circuit breakers on a real RabbitMQ node, through the provider-operation actors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import ProviderActor, declare_provider_actors
from provider_jobs.errors import ProviderBusy, ProviderNotAvailable, ServiceUnavailable
from provider_jobs.jobs import ProviderJob
from provider_jobs.middleware import ClassifiedRetries, Metrics
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, running_worker, take_dead_letters, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}
KEY = "ITL.Core/ResourceGroup"


class Flaky:
    """A provider that is down (raises what ``error`` makes) until ``up()``; it records its calls."""

    def __init__(
        self, error: Callable[[], BaseException] = lambda: ProviderNotAvailable("Provider not available")
    ):
        self.error = error
        self.down = True
        self.calls: list[tuple[float, bool, str]] = []
        self.done: set[str] = set()
        self.lock = threading.Lock()

    def up(self) -> float:
        with self.lock:
            self.down = False
            return time.monotonic()

    def execute(self, job: ProviderJob) -> Any:
        with self.lock:
            self.calls.append((time.monotonic(), self.down, job.job_id))
            if self.down:
                raise self.error()
            self.done.add(job.job_id)
        return {"ok": True}

    def calls_while_down(self) -> int:
        with self.lock:
            return sum(1 for _, down, _ in self.calls if down)


System = tuple[dramatiq.Broker, dict[str, ProviderActor]]


@pytest.fixture
def registry() -> ProviderRegistry:
    return ProviderRegistry()


@pytest.fixture
def make_system(settings: Settings, registry: ProviderRegistry, amqp: Any) -> Iterator[Callable[..., System]]:
    brokers: list[dramatiq.Broker] = []

    def make(**changes: Any) -> System:
        changed = settings.replace(
            **{"breaker_min_calls": 3, "breaker_probe_interval_s": 0.2, "max_attempts": 2, **changes},
        )
        brokers.append(build_broker(changed))
        return brokers[-1], declare_provider_actors(brokers[-1], registry, changed)

    yield make
    for broker in brokers:
        broker.close()
    amqp.queue_delete(f"{settings.queue_name}.health")


def breakers_of(broker: dramatiq.Broker) -> Any:
    return next(m for m in broker.middleware if isinstance(m, ClassifiedRetries)).breakers


def test_an_outage_opens_the_breaker_and_jobs_wait_without_spending_attempts_or_calls(
    make_system, registry, amqp, queue_name, caplog
) -> None:
    broker, actors = make_system()
    provider = Flaky()
    registry.register("ITL.Core", "ResourceGroup", provider)
    caplog.set_level("INFO")
    jobs = [actors["create_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(20)]
    with running_worker(broker, threads=2):
        wait_for(lambda: breakers_of(broker).state(KEY).state != "closed")
        opened = time.monotonic()
        # Down for 1 s: with 2 attempts of 20 ms each, every job would be dead-lettered by then.
        wait_for(lambda: time.monotonic() - opened > 1.0, timeout_s=5)
        calls_down = provider.calls_while_down()
        recovered = provider.up()
        wait_for(lambda: provider.done >= set(jobs), timeout_s=10)
        done_in_s = time.monotonic() - recovered
    # The 3 failures that open it, what was in flight, then at most 3 probes per round, a round per 0.2 s.
    assert calls_down <= 3 + 2 + 3 * (1.0 / 0.2 + 2), provider.calls
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0
    assert done_in_s < 0.2 + 2.0
    lines = [r.getMessage() for r in caplog.records if r.name == "provider_jobs.breaker"]
    assert lines[0].startswith(
        f"Breaker for {KEY} opened: its last 3 new jobs all failed (provider_not_available)"
    )
    assert any(line.startswith(f"Breaker for {KEY}: a probe round lets ") for line in lines)
    assert lines[-1].startswith(f"Breaker for {KEY} closed after ")
    assert not [
        r for r in caplog.records if r.getMessage().startswith("Message ") and "was skipped" in r.getMessage()
    ]


def test_a_failed_probe_does_not_spend_the_jobs_attempts(make_system, registry, amqp, queue_name) -> None:
    broker, actors = make_system(max_attempts=1)
    provider = Flaky()
    registry.register("ITL.Core", "ResourceGroup", provider)
    # Three failures open the breaker: two jobs have spent their one attempt; the third,
    # whose failure opened it, waits, and probes until the provider is back.
    jobs = [actors["get_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(3)]
    with running_worker(broker, threads=1):
        dead = take_dead_letters(amqp, queue_name, 2)
        [waiting] = set(jobs) - {body["kwargs"]["job"]["job_id"] for _, body in dead}
        wait_for(lambda: sum(1 for _, _, job in provider.calls if job == waiting) >= 3, timeout_s=5)
        provider.up()
        wait_for(lambda: waiting in provider.done, timeout_s=5)
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0
    metrics = next(m for m in broker.middleware if isinstance(m, Metrics))
    labels = {"provider": KEY, "operation": "get", "outcome": "breaker_wait"}
    assert metrics.registry.get_sample_value("worker_job_duration_seconds_count", labels) >= 3


def test_a_job_that_waits_past_the_maximum_is_dead_lettered_as_provider_down_with_the_history(
    make_system, registry, amqp, queue_name
) -> None:
    broker, actors = make_system(breaker_max_wait_s=0.5, max_attempts=1000)
    registry.register("ITL.Core", "ResourceGroup", Flaky())
    for i in range(3):
        actors["delete_resource"].send({**RG, "request": {"n": i}})
    with running_worker(broker, threads=1):
        dead = take_dead_letters(amqp, queue_name, 3, timeout_s=10)
    metrics = next(m for m in broker.middleware if isinstance(m, Metrics))
    labels = {"worker_id": "test-worker", "category": "provider_down", "reason": "provider_down"}
    assert metrics.registry.get_sample_value("worker_jobs_failed_by_category_total", labels) == 3
    for _, body in dead:
        letter = body["options"]["dead_letter"]
        assert (letter["category"], letter["reason"]) == ("provider_down", "provider_down")
        assert letter["error"].startswith(f"Provider {KEY} is down: the job waited ")
        assert body["options"]["breaker"]["history"][0]["event"] == "opened"
        assert body["options"].get("retries", 0) < 3


def test_a_providers_retry_after_holds_every_job_for_it(make_system, registry, amqp, queue_name) -> None:
    broker, actors = make_system(max_attempts=3)
    first: list[float] = []

    def busy_once() -> BaseException:
        first.append(time.monotonic())
        return ProviderBusy("Too many requests", status_code=429, retry_after_s=0.5)

    provider = Flaky(busy_once)
    registry.register("ITL.Core", "ResourceGroup", provider)
    actors["get_resource"].send(RG)
    with running_worker(broker, threads=2):
        wait_for(lambda: first)
        provider.up()
        others = [
            actors["get_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(4)
        ]
        wait_for(lambda: provider.done >= set(others), timeout_s=5)
    later = [t for t, _, job in provider.calls if job in others]
    assert min(later) - first[0] >= 0.5
    assert len(provider.calls) == 6
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0


def test_without_a_breaker_the_same_outage_dead_letters_every_job(
    make_system, registry, amqp, queue_name
) -> None:
    broker, actors = make_system(breaker_min_calls=0)
    provider = Flaky()
    registry.register("ITL.Core", "ResourceGroup", provider)
    for i in range(10):
        actors["create_resource"].send({**RG, "request": {"n": i}})
    with running_worker(broker, threads=2):
        take_dead_letters(amqp, queue_name, 10)
    assert provider.calls_while_down() == 20


class Mixed:
    """A provider that works, with jobs of four kinds by ``request["n"] % 10``: 0 answers 503 every
    time, 1-3 answer 503 once then succeed, 4 fails validation, the rest succeed."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.lock = threading.Lock()

    def execute(self, job: ProviderJob) -> Any:
        n = job.request["n"]
        with self.lock:
            self.calls[n] = calls = self.calls.get(n, 0) + 1
        kind = n % 10
        if kind == 0 or (kind <= 3 and calls == 1):
            raise ServiceUnavailable(f"Service unavailable: HTTP 503 for job {n}")
        if kind == 4:
            raise ValueError(f"Validation error: field 'name' of job {n} is invalid")
        return {"ok": n}


def test_a_provider_where_a_tenth_of_the_jobs_always_fail_never_opens_its_breaker(
    make_system, registry, amqp, queue_name
) -> None:
    """The mixed workload, with every breaker setting at its default: no breaker opens, and no job
    ends as provider_down: the always-503 jobs spend their attempts and are dead-lettered."""
    defaults = Settings()
    broker, actors = make_system(
        breaker_min_calls=defaults.breaker_min_calls,
        breaker_probe_interval_s=defaults.breaker_probe_interval_s,
        max_attempts=defaults.max_attempts,
    )
    provider = Mixed()
    registry.register("ITL.Core", "ResourceGroup", provider)
    total = 1000
    for n in range(total):
        actors["create_resource"].send({**RG, "request": {"n": n}})
    with running_worker(broker, threads=8):
        dead = take_dead_letters(amqp, queue_name, total // 5, timeout_s=60)
        wait_for(lambda: sum(provider.calls.values()) >= total + 3 * total // 10 + 2 * total // 10)
    assert breakers_of(broker).state(KEY).history == ()
    reasons: dict[str, int] = {}
    for _, body in dead:
        reason = body["options"]["dead_letter"]["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    assert reasons == {"exhausted": total // 10, "non_retryable": total // 10}
    assert all(provider.calls[n] == defaults.max_attempts for n in range(0, total, 10))
