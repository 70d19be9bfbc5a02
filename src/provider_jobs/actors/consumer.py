"""BatchAckConsumer: Dramatiq's RabbitMQ consumer, sending the acks that pile up in one go."""

from __future__ import annotations

import threading
from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed

__all__ = ["BatchAckConsumer"]


class BatchAckConsumer(_RabbitmqConsumer):
    """A consumer whose worker threads hand their acks to the connection's thread in batches.

    pika is not thread-safe, so Dramatiq's consumer has every ack run on the
    connection's thread: one wake-up of that thread and one socket flush per
    message, about a third of a no-op worker's CPU. Here an ack joins a list,
    and only the first ack of a batch wakes the connection's thread, which
    writes every ack in the list and flushes once. What is acked, and when it
    counts as acked (once RabbitMQ reads the frame), does not change; a
    connection lost before the flush leaves those messages unacked, so
    RabbitMQ redelivers them, as with Dramatiq's consumer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._acks_lock = threading.Lock()
        self._pending_acks: list[int] = []

    def ack(self, message: Any) -> None:
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            self.logger.warning("Failed to ack message: not in known tags.")
            return
        with self._acks_lock:
            self._pending_acks.append(message._tag)
            if len(self._pending_acks) > 1:
                return  # the first ack of this batch has already woken the connection's thread
        try:
            self.connection.add_callback_threadsafe(self._send_acks)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            self._drop_pending_acks()
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        except Exception:
            self._drop_pending_acks()
            self.logger.warning("Failed to ack message.", exc_info=True)

    def _drop_pending_acks(self) -> None:
        # The connection is gone: RabbitMQ redelivers these messages.
        with self._acks_lock:
            self._pending_acks.clear()

    def _send_acks(self) -> None:
        """Write every pending ack, then flush once (runs on the connection's thread)."""
        with self._acks_lock:
            tags, self._pending_acks = self._pending_acks, []
        channel = self.channel._impl  # the asynchronous channel: writes a frame without flushing
        for tag in tags:
            channel.basic_ack(delivery_tag=tag)
        self.channel._flush_output()
