"""The seed's flows end to end on a real RabbitMQ node, through the provider-operation actors."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pika
import pytest

from provider_jobs.actors import OPERATION_ACTORS
from provider_jobs.actors.broker import MAX_PRIORITY, build_broker
from provider_jobs.actors.provider_ops import ProviderActor, declare_provider_actors
from provider_jobs.errors import InvalidJob, ProviderBusy
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, running_worker, take_dead_letters, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}


class Recorder:
    """A provider whose behaviour per attempt is scripted; it records when each attempt ran."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[float, ProviderJob]] = []
        self.lock = threading.Lock()

    def execute(self, job: ProviderJob) -> Any:
        with self.lock:
            self.calls.append((time.monotonic(), job))
            index = len(self.calls) - 1
        outcome = self.outcomes[min(index, len(self.outcomes) - 1)] if self.outcomes else None
        if outcome is not None:
            raise outcome
        return {"ok": True}

    @property
    def gaps(self) -> list[float]:
        times = [t for t, _ in self.calls]
        return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture
def registry() -> ProviderRegistry:
    return ProviderRegistry()


System = tuple[dramatiq.Broker, dict[str, ProviderActor]]


@pytest.fixture
def make_system(settings: Settings, registry: ProviderRegistry) -> Iterator[Callable[..., System]]:
    """Builds broker and actors from the test's settings with some fields replaced."""
    brokers: list[dramatiq.Broker] = []

    def make(**changes: Any) -> System:
        changed = settings.replace(**changes)
        brokers.append(build_broker(changed))
        return brokers[-1], declare_provider_actors(brokers[-1], registry, changed)

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def system(make_system: Callable[..., System]) -> System:
    return make_system()


def test_a_job_succeeds_on_the_first_attempt(system, registry, amqp, queue_name) -> None:
    broker, actors = system
    provider = Recorder(None)
    registry.register("ITL.Core", "ResourceGroup", provider)
    actors["create_resource"].send({**RG, "request": {"name": "rg1"}})
    with running_worker(broker):
        wait_for(lambda: provider.calls)
        broker.join(queue_name, min_successes=3, idle_time=20)
    [(_, job)] = provider.calls
    assert (job.operation, job.request) == ("create", {"name": "rg1"})
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0


def test_a_job_failing_twice_with_retryable_errors_succeeds_on_attempt_three(
    system, registry, amqp, queue_name, caplog
) -> None:
    broker, actors = system
    provider = Recorder(TimeoutError("Connection timeout"), ConnectionError("connection reset"), None)
    registry.register("ITL.Core", "ResourceGroup", provider)
    message = actors["create_resource"].send({**RG, "request": {"name": "rg"}})
    caplog.set_level("INFO")
    with running_worker(broker):
        wait_for(lambda: len(provider.calls) == 3)
        broker.join(queue_name, min_successes=3, idle_time=20)
    assert all(gap >= 0.02 for gap in provider.gaps)
    job_id = message.options["job_id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "provider_jobs.retries"]
    assert lines == [
        f"Job {job_id} failed with retryable error: Connection timeout. Retrying in 0.02s... (attempt 1/3)",
        f"Job {job_id} failed with retryable error: connection reset. Retrying in 0.02s... (attempt 2/3)",
        f"Job {job_id} completed successfully on attempt 3",
    ]
    success = next(r for r in caplog.records if r.getMessage().endswith("on attempt 3"))
    assert (success.job_id, success.worker_id, success.provider, success.operation) == (
        job_id,
        "test-worker",
        "ITL.Core/ResourceGroup",
        "create",
    )


def test_a_non_retryable_failure_takes_one_attempt_and_lands_in_xq_with_its_error(
    system, registry, amqp, queue_name, caplog
) -> None:
    broker, actors = system
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({}))
    message = actors["run_provider_action"].send({**RG, "operation": "restart"})
    caplog.set_level("INFO")
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    dead = body["options"]["dead_letter"]
    assert (dead["category"], dead["attempts"], dead["reason"]) == ("unknown_operation", 1, "non_retryable")
    assert dead["error"] == "Unknown operation 'restart' for ITL.Core/ResourceGroup"
    assert body["kwargs"]["job"]["job_id"] == message.options["job_id"]
    job_id = message.options["job_id"]
    assert (
        f"Job {job_id} failed (attempt 1/3): Unknown operation 'restart' for ITL.Core/ResourceGroup. "
        "This is non-retryable, moving to DLQ"
    ) in caplog.messages


def test_a_job_exhausting_its_attempts_lands_in_xq_after_the_last(system, registry, amqp, queue_name) -> None:
    broker, actors = system
    provider = Recorder(ProviderBusy("Provider busy"))
    registry.register("ITL.Core", "ResourceGroup", provider)
    actors["get_resource"].send(RG)
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert len(provider.calls) == 3
    assert body["options"]["dead_letter"]["reason"] == "exhausted"
    assert [a["category"] for a in body["options"]["attempt_history"]] == ["busy"] * 3


def test_a_missing_provider_is_retried_and_succeeds_once_it_registers(
    make_system, registry, amqp, queue_name, caplog
) -> None:
    broker, actors = make_system(max_attempts=1000)
    provider = Recorder(None)
    caplog.set_level("INFO")
    message = actors["delete_resource"].send(RG)
    with running_worker(broker):
        wait_for(lambda: any("No provider found for ITL.Core/ResourceGroup" in m for m in caplog.messages))
        registry.register("ITL.Core", "ResourceGroup", provider)
        wait_for(lambda: provider.calls)
    assert provider.calls[0][1].job_id == message.options["job_id"]
    assert queue_depth(amqp, f"{queue_name}.XQ") == 0


def test_a_missing_provider_that_never_appears_dead_letters_with_the_seed_message(
    system, amqp, queue_name
) -> None:
    broker, actors = system
    actors["create_resource"].send(RG)
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    dead = body["options"]["dead_letter"]
    assert (dead["category"], dead["error"]) == (
        "provider_not_found",
        "No provider found for ITL.Core/ResourceGroup",
    )


def test_each_operation_waits_its_own_delay(make_system, registry, amqp) -> None:
    broker, actors = make_system(
        retry_delay_s=0.01, worker_timeout_ms=10, operation_delays_s={"create": 0.3, "get": 0.02}
    )
    providers = {rt: Recorder(TimeoutError("timeout"), None) for rt in ("A", "B")}
    for rt, provider in providers.items():
        registry.register("ITL.Test", rt, provider)
    actors["create_resource"].send(provider_namespace="ITL.Test", resource_type="A")
    actors["get_resource"].send(provider_namespace="ITL.Test", resource_type="B")
    with running_worker(broker):
        wait_for(lambda: all(len(p.calls) == 2 for p in providers.values()))
    assert providers["A"].gaps[0] >= 0.3
    assert 0.02 <= providers["B"].gaps[0] < 0.3


def test_a_providers_retry_after_sets_the_delay(system, registry, amqp, queue_name) -> None:
    broker, actors = system
    provider = Recorder(ProviderBusy("busy", status_code=429, retry_after_s=0.25), None)
    registry.register("ITL.Core", "ResourceGroup", provider)
    actors["update_resource"].send(RG)
    with running_worker(broker):
        wait_for(lambda: len(provider.calls) == 2)
    assert provider.gaps[0] >= 0.25


def test_higher_priority_jobs_run_first(system, registry, amqp, queue_name) -> None:
    broker, actors = system
    if broker.queue_type == "quorum":
        pytest.skip("quorum queues on RabbitMQ 3.x have no priorities (README: Quorum mode)")
    provider = Recorder(None)
    registry.register("ITL.Core", "ResourceGroup", provider)
    for priority in (1, 5, 9, 0, 7):
        actors["create_resource"].send({**RG, "priority": priority, "request": {"p": priority}})
    assert MAX_PRIORITY == 10
    with running_worker(broker, threads=1):
        wait_for(lambda: len(provider.calls) == 5)
    assert [job.priority for _, job in provider.calls] == [9, 7, 5, 1, 0]


def test_an_invalid_job_is_refused_at_send_time_and_nothing_is_published(system, amqp, queue_name) -> None:
    broker, actors = system
    with pytest.raises(InvalidJob, match=r"priority: Input should be less than or equal to 9"):
        actors["create_resource"].send({**RG, "priority": 12})
    with pytest.raises(InvalidJob, match=r"create_resource runs 'create' jobs, not 'delete'"):
        actors["create_resource"].send({**RG, "operation": "delete"})
    with pytest.raises(InvalidJob, match=r"provider_namespace: Field required"):
        actors["get_resource"].send(resource_type="ResourceGroup")
    broker.declare_queue(queue_name, ensure=True)
    assert queue_depth(amqp, queue_name) == 0


def publish_raw(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str, body: bytes) -> None:
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))


def dramatiq_body(queue: str, actor: str, kwargs: dict[str, Any]) -> bytes:
    message = dramatiq.Message(queue_name=queue, actor_name=actor, args=(), kwargs=kwargs, options={})
    return message.encode()


def test_a_hand_made_invalid_job_is_dead_lettered_as_validation_without_retry(
    system, registry, amqp, queue_name
) -> None:
    broker, _ = system
    provider = Recorder(None)
    registry.register("ITL.Core", "ResourceGroup", provider)
    broker.declare_queue(queue_name, ensure=True)
    publish_raw(
        amqp, queue_name, dramatiq_body(queue_name, "create_resource", {"job": {**RG, "priority": "high"}})
    )
    publish_raw(amqp, queue_name, dramatiq_body(queue_name, "create_resource", {"surprise": 1}))
    with running_worker(broker):
        dead = take_dead_letters(amqp, queue_name, 2)
    assert provider.calls == []
    for _, body in dead:
        assert body["options"]["dead_letter"]["category"] == "validation"
        assert body["options"]["dead_letter"]["attempts"] == 1


def test_undecodable_bodies_and_unknown_actors_end_in_xq_and_the_worker_keeps_working(
    system, registry, amqp, queue_name
) -> None:
    broker, actors = system
    provider = Recorder(None)
    registry.register("ITL.Core", "ResourceGroup", provider)
    broker.declare_queue(queue_name, ensure=True)
    publish_raw(amqp, queue_name, b"\xff\xfe not json")
    publish_raw(amqp, queue_name, dramatiq_body(queue_name, "no_such_actor", {}))
    with running_worker(broker):
        wait_for(lambda: queue_depth(amqp, f"{queue_name}.XQ") == 2)
        actors["create_resource"].send(RG)
        wait_for(lambda: provider.calls)
    xq = f"{queue_name}.XQ"
    bodies = [amqp.basic_get(xq, auto_ack=True)[2] for _ in range(2)]
    assert b"\xff\xfe not json" in bodies
    assert any(b"no_such_actor" in b for b in bodies)


def test_every_operation_has_its_actor_on_the_configured_queue(system, queue_name) -> None:
    _, actors = system
    assert set(actors) == {*OPERATION_ACTORS.values(), "run_provider_action"}
    assert {a.queue_name for a in actors.values()} == {queue_name}
    with pytest.raises(InvalidJob, match="'get' jobs go to get_resource"):
        actors["run_provider_action"].send({**RG, "operation": "get"})


def test_settings_decide_the_attempt_budget(make_system, registry, amqp, queue_name) -> None:
    broker, actors = make_system(max_attempts=1)
    provider = Recorder(TimeoutError("timeout"))
    registry.register("ITL.Core", "ResourceGroup", provider)
    actors["get_resource"].send(RG)
    with running_worker(broker):
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    assert len(provider.calls) == 1
    assert body["options"]["dead_letter"]["reason"] == "exhausted"


def test_callback_options_name_their_actors_as_dramatiq_does(system) -> None:
    _, actors = system
    message = actors["create_resource"].message_with_options(
        kwargs=RG, on_failure=actors["delete_resource"], on_success="get_resource"
    )
    assert (message.options["on_failure"], message.options["on_success"]) == (
        "delete_resource",
        "get_resource",
    )
    with pytest.raises(TypeError, match="on_failure value must be an Actor"):
        actors["create_resource"].message_with_options(kwargs=RG, on_failure=42)
