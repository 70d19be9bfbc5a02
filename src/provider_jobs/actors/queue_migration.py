"""``provider-jobs queues migrate``: turn a job's classic queues into quorum queues (or back), keeping
every message.

RabbitMQ cannot change a queue's type: the queue must be deleted and declared
again. For each queue of ``settings.queue_name``'s family that exists (the
retry delay queues first, so that none dead-letters into a work queue that is
briefly gone; then ``.DQ``, the work queue and ``.XQ``), its messages are moved
into a holding queue ``<name>.migrating`` of the target type (without TTL or
dead-letter route, so nothing expires meanwhile), each publish confirmed before
the original is acked; the queue is deleted (only if empty) and declared as the
workers of the target type declare it; the messages are moved back the same
way and the holding queue is deleted. Run it with workers and producers
stopped; a message that arrives meanwhile stops it before a delete, and running
the command again finishes the job (a holding queue left behind is emptied
first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name

from ..errors import BrokerUnavailable, ConfigurationError
from ..middleware.publisher import delay_queue_name
from ..rabbitmq.connectivity import broker_parameters, redact_url
from ..rabbitmq.queue_types import dead_letter_queue_arguments, declare_queue, queue_arguments
from ..rabbitmq.queues import queue_roles
from ..settings import Settings
from .broker import build_broker

__all__ = ["MigrationReport", "migrate_queues"]

logger = logging.getLogger(__name__)

#: Suffix of the queue that holds a queue's messages while it is declared again.
HOLDING_SUFFIX = ".migrating"


@dataclass
class MigrationReport:
    """What :func:`migrate_queues` did: queue name -> messages moved (``None``: did not exist)."""

    to: str
    moved: dict[str, int | None] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"{name}: not found, skipped" if n is None else f"{name}: now {self.to}, {n} message(s) kept"
            for name, n in self.moved.items()
        ]


def _exists(connection: Any, name: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return False
    channel.close()
    return True


def _move(connection: Any, source: str, target: str) -> int:
    """Move every message of ``source`` to ``target``, each publish confirmed before its ack."""
    channel = connection.channel()
    channel.confirm_delivery()
    moved = 0
    while True:
        method, properties, body = channel.basic_get(source, auto_ack=False)
        if method is None:
            break
        # Publish raises (and the message stays unacked, so in source) unless RabbitMQ confirms it.
        channel.basic_publish("", target, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)
        moved += 1
    channel.close()
    return moved


def _delete_empty(connection: Any, name: str) -> None:
    """Delete queue ``name`` if it holds no message (quorum queues refuse ``if_empty``: checked first).

    Raises:
        ConfigurationError: Messages arrived meanwhile: a worker or producer still runs.
    """
    channel = connection.channel()
    count = channel.queue_declare(name, passive=True).method.message_count
    if count:
        raise ConfigurationError(
            f"queue {name!r} received {count} message(s) during the migration: stop every worker "
            "and producer, then run `provider-jobs queues migrate` again to finish"
        )
    channel.queue_delete(name)
    channel.close()


def _arguments(settings: Settings, broker: Any, name: str, retry_ms: dict[str, int]) -> dict[str, Any]:
    """The arguments the workers of ``settings.queue_type`` declare queue ``name`` with."""
    queue = settings.queue_name
    if name == xq_name(queue):
        return dead_letter_queue_arguments(settings.queue_type, message_ttl_ms=DEAD_MESSAGE_TTL)
    if name in retry_ms:
        return {
            **queue_arguments(settings.queue_type),
            "x-message-ttl": retry_ms[name],
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        }
    arguments: dict[str, Any] = broker._build_queue_arguments(name)
    return arguments


def migrate_queues(settings: Settings, *, to: str, retry_delays_ms: tuple[int, ...] = ()) -> MigrationReport:
    """Declare every existing queue of ``settings.queue_name``'s family again as ``to``, keeping its messages.

    Args:
        settings: Broker URL(s), queue name, retry delays (their buckets are migrated).
        to: ``classic`` or ``quorum``.
        retry_delays_ms: Further retry buckets to migrate (delays in ms, such as those
            backoff created); the configured fixed delays are always included.

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached.
        pika.exceptions.AMQPError: RabbitMQ refused a step; run again to finish.
    """
    target = settings.replace(queue_type=to)
    queue = settings.queue_name
    retry_ms = {name: int(name.rsplit(".", 1)[1]) for name, role in queue_roles(settings) if role == "retry"}
    retry_ms.update({delay_queue_name(queue, ms): ms for ms in retry_delays_ms})
    order = [*sorted(retry_ms), dq_name(queue), queue, xq_name(queue)]
    try:
        connection = pika.BlockingConnection(broker_parameters(settings.broker_url))
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(
            f"Cannot reach RabbitMQ at {redact_url(settings.broker_url)} ({exc!r})"
        ) from None
    report = MigrationReport(to=to)
    # Declares nothing itself: it knows the arguments the workers of the target type declare.
    target_broker = build_broker(target)
    holding_arguments = queue_arguments(to)
    try:
        for name in order:
            holding = name + HOLDING_SUFFIX
            had_holding = _exists(connection, holding)
            if not _exists(connection, name) and not had_holding:
                report.moved[name] = None
                continue
            declare_queue(connection, connection.channel(), holding, holding_arguments)
            moved = _move(connection, name, holding) if _exists(connection, name) else 0
            if _exists(connection, name):
                _delete_empty(connection, name)
            declare_queue(
                connection, connection.channel(), name, _arguments(target, target_broker, name, retry_ms)
            )
            kept = _move(connection, holding, name)
            _delete_empty(connection, holding)
            logger.info("Queue %s is now %s: %d message(s) moved out, %d moved back", name, to, moved, kept)
            report.moved[name] = kept
    finally:
        target_broker.close()
        if connection.is_open:
            connection.close()
    return report
