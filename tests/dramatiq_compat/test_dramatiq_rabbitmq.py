"""The retry, delay and dead-letter behaviours of Dramatiq's ``tests/test_rabbitmq.py``,
on a real RabbitMQ broker with ClassifiedRetries (see README.md beside this file).

Retries wait in our TTL delay queues here, not in ``<queue>.DQ``; the
behaviours checked are the ones Dramatiq's tests check.
"""

from __future__ import annotations

import time

import dramatiq
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from support import queue_depth, running_worker, wait_for


def counts(amqp, queue_name: str) -> tuple[int, int, int]:
    """Ready messages in ``queue_name``, its ``.DQ`` and its ``.XQ``."""
    return tuple(queue_depth(amqp, name) for name in (queue_name, dq_name(queue_name), xq_name(queue_name)))


def test_a_failed_actor_is_retried_after_its_backoff(
    rabbitmq_broker: RabbitmqBroker, rabbitmq_worker, queue_name: str, amqp
) -> None:
    started: list[float] = []

    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name, min_backoff=50, max_backoff=250)
    def do_work() -> None:
        started.append(time.monotonic())
        if len(started) == 1:
            raise RuntimeError("First failure.")

    do_work.send()
    wait_for(lambda: len(started) == 2)
    # The first backoff is 100-200 % of min_backoff; the rest is slack for a loaded machine.
    assert 0.05 <= started[1] - started[0] <= 0.1 + 0.5


def test_an_actor_is_retried_as_often_as_it_fails_under_max_backoff(
    rabbitmq_broker: RabbitmqBroker, rabbitmq_worker, queue_name: str, amqp
) -> None:
    attempts: list[int] = []

    # The default min_backoff (15 s) capped by max_backoff: every retry within 20-40 ms.
    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name, max_backoff=40)
    def do_work() -> None:
        attempts.append(1)
        if len(attempts) < 4:
            raise RuntimeError(f"Failure #{len(attempts)}")

    do_work.send()
    wait_for(lambda: len(attempts) == 4, timeout_s=5)
    rabbitmq_broker.join(queue_name, min_successes=5, idle_time=20)
    assert len(attempts) == 4
    assert counts(amqp, queue_name)[2] == 0


def test_a_delayed_message_runs_no_earlier_than_its_delay(
    rabbitmq_broker: RabbitmqBroker, rabbitmq_worker, queue_name: str, amqp
) -> None:
    ran_at: list[float] = []

    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name)
    def record() -> None:
        ran_at.append(time.monotonic())

    sent_at = time.monotonic()
    record.send_with_options(delay=100)
    wait_for(lambda: ran_at)
    assert ran_at[0] - sent_at >= 0.1


def test_delayed_messages_run_in_the_order_they_fall_due(
    rabbitmq_broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    results: list[int] = []

    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name)
    def append(x: int) -> None:
        results.append(x)

    # The worker runs before they are sent: one that starts after both fell due (a loaded
    # machine) would take them in the order they were sent, which says nothing about delays.
    with running_worker(rabbitmq_broker, threads=1):
        append.send_with_options(args=(1,), delay=600)
        append.send_with_options(args=(2,), delay=200)
        wait_for(lambda: len(results) == 2)
    assert results == [2, 1]


def test_an_actor_past_its_retry_limit_is_moved_to_the_dead_letter_queue(
    rabbitmq_broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name, max_retries=0)
    def do_work() -> None:
        raise RuntimeError("failed")

    do_work.send()
    with running_worker(rabbitmq_broker):
        wait_for(lambda: counts(amqp, queue_name)[2] == 1)
    # The worker's connection is closed: an unacked original would be ready again.
    assert counts(amqp, queue_name) == (0, 0, 1)


def test_a_message_for_a_missing_actor_is_moved_to_the_dead_letter_queue(
    rabbitmq_broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    message = Message(queue_name=queue_name, actor_name="some-actor", args=(), kwargs={}, options={})
    rabbitmq_broker.declare_queue(queue_name)
    rabbitmq_broker.enqueue(message)
    with running_worker(rabbitmq_broker):
        wait_for(lambda: counts(amqp, queue_name)[2] == 1)
    assert counts(amqp, queue_name) == (0, 0, 1)


def test_a_message_that_fails_to_decode_is_moved_to_the_dead_letter_queue(
    rabbitmq_broker: RabbitmqBroker, queue_name: str, amqp
) -> None:
    @dramatiq.actor(broker=rabbitmq_broker, queue_name=queue_name, max_retries=0)
    def do_work(_: str) -> None:
        pass

    old_encoder = dramatiq.get_encoder()

    class FailingEncoder(type(old_encoder)):  # type: ignore[misc]
        def decode(self, data: bytes) -> dramatiq.encoder.MessageData:
            if b"xfail" in data:
                raise RuntimeError("xfail")
            return super().decode(data)

    dramatiq.set_encoder(FailingEncoder())
    try:
        do_work.send("xfail")
        with running_worker(rabbitmq_broker):
            wait_for(lambda: counts(amqp, queue_name)[2] == 1)
    finally:
        dramatiq.set_encoder(old_encoder)
    assert counts(amqp, queue_name) == (0, 0, 1)
