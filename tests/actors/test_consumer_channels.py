"""WorkerConsumer settles only the deliveries of its own channel.

After a connection drop Dramatiq settles the old channel's messages on the new
consumer. Delivery tags are numbered per channel from 1, so a tag alone would
settle a different, live message of the new channel.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from provider_jobs.actors.broker import build_broker
from provider_jobs.middleware.dead_letters import DEFER_ATTRIBUTE, DeadLetter
from provider_jobs.settings import Settings

from support import queue_depth


def _next_message(consumer: Any) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no delivery within 10 s")


@pytest.fixture
def broker(settings: Settings) -> Any:
    broker = build_broker(settings)
    yield broker
    broker.close()


def _two_consumers(broker: RabbitmqBroker, queue_name: str) -> tuple[Any, Any, Any, Any]:
    """A message delivered (tag 1) on a consumer whose connection then dropped, and another message
    delivered (tag 1 too) on a second consumer of another queue."""
    other = f"{queue_name}.other"
    for name in (queue_name, other):
        broker.declare_queue(name)
        broker.enqueue(dramatiq.Message(queue_name=name, actor_name="a", args=(), kwargs={}, options={}))
    old = broker.consume(queue_name, prefetch=1, timeout=20)
    stale = _next_message(old)
    old.connection.close()  # the drop: RabbitMQ requeues `stale`
    new = broker.consume(other, prefetch=1, timeout=20)
    live = _next_message(new)
    assert stale._tag == live._tag == 1
    return old, stale, new, live


def test_an_ack_from_a_dropped_channel_does_not_ack_a_live_message_with_the_same_tag(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    _old, stale, new, _live = _two_consumers(broker, queue_name)
    new.ack(stale)
    new.close()
    assert queue_depth(amqp, f"{queue_name}.other") == 1  # the live message was not acked
    assert queue_depth(amqp, queue_name) == 1  # and the stale one is back for redelivery
    amqp.queue_delete(f"{queue_name}.other")


def test_a_nack_from_a_dropped_channel_does_not_nack_a_live_message(
    broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    _old, stale, new, _live = _two_consumers(broker, queue_name)
    new.nack(stale)
    new.close()
    assert queue_depth(amqp, f"{queue_name}.other") == 1
    amqp.queue_delete(f"{queue_name}.other")


def test_a_dead_letter_from_a_dropped_channel_is_logged_and_its_job_left_for_redelivery(
    broker: RabbitmqBroker, queue_name: str, amqp, caplog: pytest.LogCaptureFixture
) -> None:
    _old, stale, new, _live = _two_consumers(broker, queue_name)
    letter = DeadLetter(f"{queue_name}.XQ", b"{}", None, {}, stale.message_id)
    setattr(stale, DEFER_ATTRIBUTE, letter)
    new.ack(stale)
    new.close()
    assert queue_depth(amqp, f"{queue_name}.other") == 1
    assert queue_depth(amqp, queue_name) == 1  # the job runs again; its dead letter was not published
    assert f"Dropped the dead letter of message {stale.message_id}" in caplog.text
    amqp.queue_delete(f"{queue_name}.other")
