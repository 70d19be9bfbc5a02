"""WorkerConsumer settles only the deliveries of its own channel.

After a connection drop Dramatiq settles the old channel's messages on the new
consumer. Delivery tags are numbered per channel from 1, so a tag alone would
settle a different, live message of the new channel.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.solo_runs import SOLO_ATTRIBUTE, SoloRuns
from provider_jobs.middleware.dead_letters import DEFER_ATTRIBUTE, DeadLetter
from provider_jobs.settings import Settings

from support import queue_depth, wait_for


def _next_message(consumer: Any) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no delivery within 10 s")


def _message(queue_name: str, actor_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(), kwargs={}, options={})


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


def test_a_redelivery_held_back_by_a_waiting_suspect_does_not_stop_the_consumer_reading(
    settings: Settings, queue_name: str, amqp
) -> None:
    """A suspect waits for the consumers' settlements to be confirmed; a redelivery whose grace
    has passed waits for the suspect. The consumer must read its connection meanwhile, or neither
    ever goes on (a worker once hung so)."""
    broker = build_broker(settings.replace(redelivery_grace_s=0.2))
    solo = next(m for m in broker.middleware if isinstance(m, SoloRuns))
    try:
        broker.declare_queue(queue_name)
        broker.enqueue(_message(queue_name, "redelivered"))
        first = broker.consume(queue_name, prefetch=1, timeout=20)
        assert _next_message(first).actor_name == "redelivered"
        first.connection.close()  # RabbitMQ redelivers it, marked so
        broker.enqueue(_message(queue_name, "settled"))
        consumer = broker.consume(queue_name, prefetch=4, timeout=20)
        settled = _next_message(consumer)  # the redelivery is parked for its grace meanwhile
        assert settled.actor_name == "settled"
        time.sleep(0.3)  # its grace is over
        setattr(settled, DEFER_ATTRIBUTE, DeadLetter(f"{queue_name}.XQ", b"{}", None, {}, settled.message_id))
        consumer.ack(settled)  # its dead letter's confirm, then its ack, are in flight
        suspect = MessageProxy(_message(queue_name, "suspect"))
        suspect.__dict__[SOLO_ATTRIBUTE] = True
        started = threading.Event()
        waiting = threading.Thread(
            target=lambda: (solo.before_process_message(broker, suspect), started.set()), daemon=True
        )
        waiting.start()
        wait_for(lambda: solo.busy)
        deadline = time.monotonic() + 10
        while not started.is_set() and time.monotonic() < deadline:
            assert next(consumer) is None  # the parked redelivery waits for the suspect
        assert started.is_set(), "the suspect never ran: the consumer stopped reading its confirms"
        solo.after_process_message(broker, suspect)
        assert _next_message(consumer).actor_name == "redelivered"  # recounted once the suspect ran
        consumer.close()
    finally:
        broker.close()
