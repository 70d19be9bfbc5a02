"""Queue statistics read from RabbitMQ with passive declares: no management plugin needed."""

from __future__ import annotations

from dataclasses import dataclass

import pika
import pika.exceptions

from ..errors import BrokerUnavailable
from ..settings import Settings
from .connectivity import broker_parameters, redact_url
from .queues import queue_roles

__all__ = ["QueueStat", "read_queue_stats"]


@dataclass(frozen=True, kw_only=True)
class QueueStat:
    """One queue as RabbitMQ reports it.

    Args:
        name: Queue name, for example ``provider.jobs.XQ``.
        role: ``work``, ``delay`` (Dramatiq's ``.DQ``), ``retry`` (a delay bucket
            ``.retry.<ms>`` where retries wait until due) or ``dead_letter`` (``.XQ``).
        exists: Whether the queue is declared; a missing queue reports zeros.
        messages_ready: Messages ready for delivery (not those delivered and
            unacked); in a ``retry`` queue, retries waiting to be due.
        consumers: Consumers attached to the queue.
    """

    name: str
    role: str
    exists: bool
    messages_ready: int
    consumers: int


def read_queue_stats(settings: Settings, *, timeout_s: float = 3.0) -> list[QueueStat]:
    """Messages ready and consumers of ``settings.queue_name`` and its delay, retry and dead-letter queues.

    Args:
        settings: Broker URL and queue name.
        timeout_s: Connection and socket timeout in seconds. Default 3.

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached or closed the connection.
    """
    parameters = broker_parameters(settings.broker_url)
    for each in parameters:
        each.connection_attempts = 1
        each.socket_timeout = timeout_s
        each.blocked_connection_timeout = timeout_s
    try:
        connection = pika.BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(
            f"Cannot reach RabbitMQ at {redact_url(settings.broker_url)} ({exc or type(exc).__name__})"
        ) from exc
    stats: list[QueueStat] = []
    try:
        channel = connection.channel()
        for name, role in queue_roles(settings):
            try:
                method = channel.queue_declare(name, passive=True).method
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                # A failed passive declare closes the channel; the next queue needs a new one.
                channel = connection.channel()
                stats.append(QueueStat(name=name, role=role, exists=False, messages_ready=0, consumers=0))
                continue
            stats.append(
                QueueStat(
                    name=name,
                    role=role,
                    exists=True,
                    messages_ready=int(method.message_count),
                    consumers=int(method.consumer_count),
                )
            )
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(
            f"RabbitMQ at {redact_url(settings.broker_url)} failed while reading queues "
            f"({exc or type(exc).__name__})"
        ) from exc
    finally:
        if connection.is_open:
            connection.close()
    return stats
