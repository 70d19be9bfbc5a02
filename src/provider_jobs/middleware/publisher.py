"""ConfirmPublisher: confirmed publishes from worker threads, and RabbitMQ-native delays.

A retry is published to a *delay bucket* queue, ``<queue>.retry.<ms>``, declared
with ``x-message-ttl`` = ``<ms>`` and a dead-letter route back to ``<queue>``:
RabbitMQ itself moves the message to the work queue when it is due. Compared
with Dramatiq's ``<queue>.DQ`` (a consumer holds the message unacked until its
eta, then publishes it again), a retry costs one confirmed publish, nothing is
held in worker memory, ``consumer_timeout`` does not apply, and the message
arrives within milliseconds of its due time rather than on the next wake-up of
an idle consumer. A broker with a ``delay_queue_arguments`` attribute (a dict,
such as ``{"x-queue-type": "quorum"}``) has them added to each bucket's
arguments, and one with a ``declare_durable_queue(channel, name, arguments)``
method declares the buckets itself. One bucket per delay keeps every queue FIFO in expiry order;
delays are rounded up to two significant digits so that backoff with jitter
does not create a queue per value.
"""

from __future__ import annotations

import threading
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name

__all__ = ["ConfirmPublisher", "amqp_priority", "bucket_ms", "delay_queue_name"]

#: The highest AMQP priority (an octet); a queue's ``x-max-priority`` caps it lower.
_MAX_AMQP_PRIORITY = 255

#: Errors that mean the thread's connection is gone, not that RabbitMQ refused the message.
_DEAD_CONNECTION = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.StreamLostError,
)


def amqp_priority(value: Any) -> int | None:
    """A message's ``broker_priority`` as a valid AMQP priority: an integer clamped to 0-255, or
    ``None`` for anything else. A hand-made message may say anything, and pika refuses to publish
    a priority that is not an octet."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return min(max(value, 0), _MAX_AMQP_PRIORITY)


def bucket_ms(delay_ms: int) -> int:
    """``delay_ms`` rounded up to two significant digits (exact below 100 ms)."""
    if delay_ms < 100:
        return max(1, delay_ms)
    step: int = 10 ** (len(str(delay_ms)) - 2)
    return -(-delay_ms // step) * step


def delay_queue_name(queue_name: str, delay_ms: int) -> str:
    """The delay bucket queue for ``delay_ms`` in front of ``queue_name``."""
    canonical: str = q_name(queue_name)
    return f"{canonical}.retry.{delay_ms}"


class ConfirmPublisher:
    """Publishes with publisher confirms on a channel of the calling thread's broker connection.

    Every method raises whatever pika raises (the caller decides what a
    failed publish means); the thread's channel is dropped after a failure.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._declared: set[str] = set()
        self._declared_lock = threading.Lock()

    def channel(self, broker: RabbitmqBroker) -> Any:
        """The calling thread's confirmed channel on ``broker``'s connection, opened when needed."""
        return self._channel(broker)

    def drop_channel(self) -> None:
        """Forget the calling thread's channel after a failure: the next call opens another."""
        self._local.channel = None

    def _channel(self, broker: RabbitmqBroker) -> Any:
        connection = broker.connection
        channel = getattr(self._local, "channel", None)
        if channel is None or channel.is_closed or getattr(self._local, "connection", None) is not connection:
            channel = connection.channel()
            channel.confirm_delivery()
            self._local.channel, self._local.connection = channel, connection
        return channel

    def publish(
        self,
        broker: RabbitmqBroker,
        routing_key: str,
        body: bytes,
        *,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        expiration_ms: int | None = None,
    ) -> None:
        """Publish persistently to ``routing_key`` and return once RabbitMQ confirmed it.

        A connection found dead (the broker restarted since this thread last
        published) is reopened once before giving up. ``expiration_ms`` is the
        message's own TTL (AMQP ``expiration``); ``None``: none.
        """
        properties = pika.BasicProperties(
            delivery_mode=2,
            priority=amqp_priority(priority),
            headers=headers,
            expiration=None if expiration_ms is None else str(expiration_ms),
        )
        for attempt in (1, 2):
            try:
                self._channel(broker).basic_publish(
                    exchange="", routing_key=routing_key, body=body, properties=properties, mandatory=True
                )
                return
            except _DEAD_CONNECTION:
                self._local.channel = None
                if attempt == 2:
                    raise
                # The broker's deleter closes what is left; the next access reconnects.
                del broker.connection
            except Exception:
                self._local.channel = None
                raise

    def publish_delayed(
        self,
        broker: RabbitmqBroker,
        queue_name: str,
        body: bytes,
        delay_ms: int,
        *,
        priority: int | None = None,
    ) -> int:
        """Publish ``body`` so that it reaches ``queue_name`` after ``delay_ms``.

        Returns:
            The delay actually used: ``delay_ms`` rounded up to its bucket.
        """
        delay = bucket_ms(delay_ms)
        name = delay_queue_name(queue_name, delay)
        if name not in self._declared:
            arguments = {
                # A broker's own queue type (quorum queues), as its other queues have.
                **(getattr(broker, "delay_queue_arguments", None) or {}),
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": str(q_name(queue_name)),
            }
            try:
                channel = self._channel(broker)
                declare = getattr(broker, "declare_durable_queue", None)
                if declare is not None:
                    declare(channel, name, arguments)
                else:
                    channel.queue_declare(name, durable=True, arguments=arguments)
            except Exception:
                self._local.channel = None
                raise
            with self._declared_lock:
                self._declared.add(name)
        self.publish(broker, name, body, priority=priority)
        return delay
