"""Retries and dead letters publish valid AMQP properties whatever a hand-made message says.

On a plain Dramatiq app (Dramatiq's own encoder, which checks no field) a
message's ``broker_priority`` and ``message_id`` reach the properties of the
retry and the dead letter ``ClassifiedRetries`` publishes; pika refuses a
priority that is not an octet and a ``message_id`` that is not a short string.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import xq_name
from dramatiq.encoder import JSONEncoder

from provider_jobs.middleware import ClassifiedRetries, ErrorClassifier
from provider_jobs.middleware.dead_letters import dead_letter_of, stamp_dead_letter
from provider_jobs.middleware.publisher import amqp_priority

from support import running_worker, take_dead_letters, wait_for


@pytest.fixture
def dramatiqs_encoder() -> Iterator[None]:
    """Dramatiq's own JSON encoder for the test (another test may have set ours)."""
    previous = dramatiq.get_encoder()
    dramatiq.set_encoder(JSONEncoder())
    yield
    dramatiq.set_encoder(previous)


@pytest.fixture
def broker(rabbitmq_url: str, dramatiqs_encoder: None) -> Iterator[RabbitmqBroker]:
    retries = ClassifiedRetries(retry_delay_ms=20, max_retries=2, worker_id="w1")
    broker = RabbitmqBroker(url=rabbitmq_url, confirm_delivery=True, middleware=[retries])
    yield broker
    broker.close()


def hand_made(amqp: Any, queue_name: str, actor_name: str, **options: Any) -> None:
    """Publish a message Dramatiq's ``send`` would refuse to write, once the worker declared its queue."""
    wait_for(lambda: _declared(amqp, queue_name) and _declared(amqp, xq_name(queue_name)))
    body = {
        "queue_name": queue_name,
        "actor_name": actor_name,
        "args": [],
        "kwargs": {},
        "options": options,
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    amqp.basic_publish("", queue_name, json.dumps(body).encode(), pika.BasicProperties(delivery_mode=2))


def _declared(amqp: Any, queue_name: str) -> bool:
    channel = amqp.connection.channel()
    try:
        channel.queue_declare(queue_name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    channel.close()
    return True


@pytest.mark.parametrize("priority", [1000, -1])
def test_a_retry_of_a_message_whose_broker_priority_is_no_octet_is_published_and_runs(
    broker: RabbitmqBroker, queue_name: str, amqp: Any, priority: Any
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("connection reset by peer")

    with running_worker(broker):
        hand_made(amqp, queue_name, "flaky", broker_priority=priority)
        wait_for(lambda: len(attempts) == 2)


@pytest.mark.parametrize("priority", [1000, -1])
def test_the_dead_letter_of_a_message_whose_broker_priority_is_no_octet_is_the_enriched_one(
    broker: RabbitmqBroker, queue_name: str, amqp: Any, priority: Any
) -> None:
    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def invalid() -> None:
        raise ValueError("Validation error: missing required field 'name'")

    with running_worker(broker):
        hand_made(amqp, queue_name, "invalid", broker_priority=priority)
        [(_, body)] = take_dead_letters(amqp, queue_name, 1)
    # Not the raw copy RabbitMQ dead-letters after a nack: the publish of the enriched one worked.
    assert body["options"]["dead_letter"]["reason"] == "non_retryable"


@pytest.mark.parametrize(
    ("message_id", "priority"),
    [
        (12345, 1000),
        ("x" * 300, "high"),
        ("\ud800", -1),
        ("ok-id", True),
    ],
)
def test_a_dead_letters_properties_encode_whatever_the_message_says(message_id: Any, priority: Any) -> None:
    message = dramatiq.Message(
        queue_name="q",
        actor_name="a",
        args=(),
        kwargs={},
        options={"broker_priority": priority},
        message_id=message_id,
    )
    proxy = dramatiq.MessageProxy(message)
    error = ValueError("bad")
    stamp_dead_letter(
        proxy,
        classification=ErrorClassifier()(error),
        exception=error,
        reason="non_retryable",
        retries=0,
        max_retries=0,
        worker_id="w1",
    )
    letter = dead_letter_of(proxy)
    # What WorkerConsumer publishes for it: pika must be able to write these properties.
    pika.BasicProperties(
        delivery_mode=2, priority=letter.priority, headers=letter.headers, message_id=letter.message_id
    ).encode()
    assert letter.priority is None or 0 <= letter.priority <= 255
    assert letter.message_id in {None, "ok-id"}


@pytest.mark.parametrize(
    ("value", "priority"),
    [(5, 5), (1000, 255), (-1, 0), ("high", None), (True, None), (None, None), (2.5, None)],
)
def test_a_broker_priority_becomes_an_octet_or_none(value: Any, priority: int | None) -> None:
    assert amqp_priority(value) == priority
