"""ChannelAcks writes several acks in one frame only below every delivery still open."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from provider_jobs.actors.channel_acks import ChannelAcks

from support import queue_depth, wait_for


class _Recording:
    """pika's asynchronous channel, with the acks written on it recorded."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.acks: list[tuple[int, bool]] = []

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))
        self.channel.basic_ack(delivery_tag=delivery_tag, multiple=multiple)

    def basic_nack(self, delivery_tag: int, requeue: bool) -> None:
        self.channel.basic_nack(delivery_tag=delivery_tag, requeue=requeue)


@pytest.fixture
def delivered(rabbitmq_url: str, queue_name: str, amqp: Any) -> Iterator[tuple[Any, ChannelAcks, _Recording]]:
    """Six messages delivered on a channel of their own, body b"n" with tag n, all open."""
    amqp.queue_declare(queue_name, durable=True)
    for number in range(1, 7):
        amqp.basic_publish("", queue_name, str(number).encode())
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    recording = _Recording(channel._impl)
    acks = ChannelAcks(recording)
    for _ in range(6):
        method, _properties, body = channel.basic_get(queue_name)
        assert body == str(method.delivery_tag).encode()
        acks.opened(method.delivery_tag)
    yield channel, acks, recording
    if connection.is_open:
        connection.close()


def _left_after_close(channel: Any, amqp: Any, queue_name: str, count: int) -> list[bytes]:
    """Close the deliveries' channel; the bodies RabbitMQ got back (the deliveries left unacked),
    once there are ``count`` of them (and a moment more, for any beyond)."""
    channel.connection.close()
    wait_for(lambda: queue_depth(amqp, queue_name) >= count)
    time.sleep(0.2)
    bodies = []
    while True:
        method, _properties, body = amqp.basic_get(queue_name, auto_ack=True)
        if method is None:
            return sorted(bodies)
        bodies.append(body)


def test_acks_below_every_open_delivery_go_in_one_frame(delivered: Any, amqp: Any, queue_name: str) -> None:
    channel, acks, recording = delivered
    acks.ack([3, 1, 2])
    assert recording.acks == [(3, True)]
    assert acks.open_count == 3
    assert _left_after_close(channel, amqp, queue_name, 3) == [b"4", b"5", b"6"]


def test_an_open_delivery_below_an_ack_keeps_that_ack_apart(
    delivered: Any, amqp: Any, queue_name: str
) -> None:
    channel, acks, recording = delivered
    acks.ack([1, 2, 5])  # 3 and 4 are still running: a multiple ack of 5 would settle them
    assert recording.acks == [(2, True), (5, False)]
    acks.nack(3)  # dead-lettered by RabbitMQ (no dead-letter exchange here: dropped)
    acks.ack([4, 6])
    assert recording.acks[2:] == [(6, True)]
    assert acks.open_count == 0
    assert _left_after_close(channel, amqp, queue_name, 0) == []


def test_a_single_ack_is_a_plain_one(delivered: Any, amqp: Any, queue_name: str) -> None:
    channel, acks, recording = delivered
    acks.ack([2])
    assert recording.acks == [(2, False)]
    assert _left_after_close(channel, amqp, queue_name, 5) == [b"1", b"3", b"4", b"5", b"6"]
