"""The broker build_broker makes: batched acks and signals sent only to middleware that handle them."""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq import Broker
from dramatiq.middleware import Middleware

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.consumer import WorkerConsumer
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.providers import FunctionProvider, ProviderRegistry

from support import depth_or_zero, running_worker, wait_for


class Recording(Middleware):
    """Records the signals it handles, under its own name."""

    def __init__(self, name: str, seen: list[str], *, fail: bool = False) -> None:
        self.name, self.seen, self.fail = name, seen, fail

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self.seen.append(f"{self.name}:before")
        if self.fail:
            raise RuntimeError(f"{self.name} broke")

    def after_process_message(self, broker: Broker, message: Any, **kwargs: Any) -> None:
        self.seen.append(f"{self.name}:after")


class Silent(Middleware):
    """Handles no signal of its own."""


def test_every_processed_message_is_acked_when_many_threads_ack_at_once(
    settings, rabbitmq_url, queue_name
) -> None:
    registry = ProviderRegistry()
    done: list[str] = []
    lock = threading.Lock()

    def record(job: Any) -> None:
        with lock:
            done.append(job.job_id)

    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": record}))
    broker = build_broker(settings)
    actors = declare_provider_actors(broker, registry, settings)
    assert broker.consumer_class is WorkerConsumer
    for i in range(600):
        actors["create_resource"].send(
            {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup", "request": {"i": i}}
        )
    with running_worker(broker, threads=8):
        wait_for(lambda: len(done) == 600, timeout_s=60)
    # The worker's connection is closed now: any message left unacked would be back in the queue.
    assert depth_or_zero(rabbitmq_url, queue_name) == 0
    assert len(set(done)) == 600


def test_signals_reach_only_the_middleware_that_handle_them_in_dramatiqs_order(settings) -> None:
    ours: list[str] = []
    dramatiqs: list[str] = []
    broker = build_broker(settings)
    broker.middleware[:] = [Recording("a", ours), Silent(), Recording("b", ours)]
    reference = Broker(middleware=[Recording("a", dramatiqs), Silent(), Recording("b", dramatiqs)])
    for b in (broker, reference):
        b.emit_before("process_message", None)
        b.emit_after("process_message", None, result=None)
    assert ours == dramatiqs == ["a:before", "b:before", "b:after", "a:after"]


def test_a_failing_hook_is_logged_and_the_next_middleware_still_runs(settings, caplog) -> None:
    seen: list[str] = []
    broker = build_broker(settings)
    broker.middleware[:] = [Recording("broken", seen, fail=True), Recording("b", seen)]
    with caplog.at_level(logging.CRITICAL):
        broker.emit_before("process_message", None)
    assert seen == ["broken:before", "b:before"]
    assert any("Unexpected failure in before_process_message" in r.getMessage() for r in caplog.records)


def test_middleware_added_after_a_signal_was_sent_receives_the_next_one(settings) -> None:
    seen: list[str] = []
    broker = build_broker(settings)
    broker.middleware[:] = [Recording("first", seen)]
    broker.emit_before("process_message", None)
    broker.add_middleware(Recording("late", seen))
    broker.emit_before("process_message", None)
    assert seen == ["first:before", "first:before", "late:before"]


def test_dead_letters_published_by_the_consumer_land_enriched_and_their_originals_are_acked(
    settings, rabbitmq_url, queue_name, amqp
) -> None:
    from provider_jobs.errors import ValidationFailed

    from support import take_dead_letters

    def refuse(job: Any) -> None:
        raise ValidationFailed(f"name {job.request['i']} is not allowed")

    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": refuse}))
    broker = build_broker(settings)
    assert broker.publishes_dead_letters
    actors = declare_provider_actors(broker, registry, settings)
    sent = {
        actors["create_resource"]
        .send({"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup", "request": {"i": i}})
        .message_id
        for i in range(200)
    }
    with running_worker(broker, threads=8):
        letters = take_dead_letters(amqp, queue_name, 200, timeout_s=60)
    assert {body["message_id"] for _, body in letters} == sent
    assert {body["options"]["dead_letter"]["category"] for _, body in letters} == {"validation"}
    assert all(p.message_id == body["message_id"] for p, body in letters)
    assert depth_or_zero(rabbitmq_url, queue_name) == 0


def test_the_worker_id_is_worked_out_once_and_every_component_names_it(settings) -> None:
    from provider_jobs.health import HealthSync
    from provider_jobs.identity import worker_id
    from provider_jobs.middleware import ClassifiedRetries, Metrics

    broker = build_broker(settings.replace(worker_id=None, breaker_min_calls=3))
    named = {
        type(m).__name__: m.worker_id
        for m in broker.middleware
        if isinstance(m, ClassifiedRetries | Metrics | HealthSync)
    }
    retries = next(m for m in broker.middleware if isinstance(m, ClassifiedRetries))
    assert retries.breakers is not None
    named["ProviderBreakers"] = retries.breakers.worker_id
    named["broker"] = broker.worker_id  # type: ignore[attr-defined]
    assert named == dict.fromkeys(
        ["ClassifiedRetries", "Metrics", "HealthSync", "ProviderBreakers", "broker"], worker_id()
    )
