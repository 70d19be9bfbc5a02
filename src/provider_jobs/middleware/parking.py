"""Parking: where jobs wait for a provider whose breaker is open, without moving.

A job that may not go to its provider because the breaker is open is
published, confirmed, to the provider's parking queue,
``<queue>.parked.<provider>``, and stays there untouched: no delay queue
hands it back every probe interval, so a long outage costs RabbitMQ nothing
per waiting job. What takes jobs out again is the worker's
:class:`~provider_jobs.actors.parking.ParkingKeeper`: a few per probe round
(the probes), and all of them, oldest first and paced, once the breaker
closes.

A parked job carries the option ``breaker_parked``, and its message expires
(its AMQP ``expiration``) when the job has waited the breaker's
``max_wait_s``: RabbitMQ then dead-letters it to its work queue (at least once
on quorum queues), and the worker that receives it, seeing the option and the
wait, dead-letters it as ``provider_down`` without running it, as it does a
job that waited as long in the delay queues. A released job goes back without
the option (:func:`released_body`), and runs however long it waited. Like
every per-message TTL, a parked job expires at the head of its queue: one
parked again after a failed probe may expire after jobs parked before it,
never before its time.

The parking queue is a plain FIFO queue of the family's type (classic or
quorum), without priorities: order is the order jobs parked in, and a
released job goes back to its work queue with its own priority.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.errors import DecodeError

from .publisher import ConfirmPublisher, amqp_priority

__all__ = ["PARKED_INFIX", "PARKED_OPTION", "Parking", "parking_queue_name", "released_body"]

#: Between a work queue's name and a provider's key in a parking queue's name.
PARKED_INFIX = ".parked."
#: Message option of a parked job (``True``): a copy that still has it was not released.
PARKED_OPTION = "breaker_parked"


def parking_queue_name(queue_name: str, key: str) -> str:
    """The parking queue of breaker ``key`` (``namespace/resource_type``) in front of ``queue_name``."""
    return f"{q_name(queue_name)}{PARKED_INFIX}{key}"


def released_body(body: bytes) -> bytes:
    """A parked message's ``body`` as it is released: the same message without :data:`PARKED_OPTION`;
    a body that is not a Dramatiq message goes as it is (its worker's consumer refuses it)."""
    try:
        message = dramatiq.Message.decode(body)
    except DecodeError:
        return body
    options = {k: v for k, v in message.options.items() if k != PARKED_OPTION}
    released: bytes = message._replace(options=options).encode()
    return released


class Parking:
    """Parks messages, and remembers which parking queues this process declared or found.

    Args:
        publisher: Publishes with confirms on the calling thread's connection.
    """

    def __init__(self, publisher: ConfirmPublisher) -> None:
        self.publisher = publisher
        #: Parking queue name -> (work queue, breaker key), for the queues declared here.
        self._queues: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def queues(self) -> dict[str, tuple[str, str]]:
        """The parking queues this process declared or found: name -> (work queue, breaker key)."""
        with self._lock:
            return dict(self._queues)

    def declare(self, broker: dramatiq.Broker, channel: Any, queue_name: str, key: str) -> str:
        """Declare ``key``'s parking queue of ``queue_name`` on ``channel``; returns its name."""
        name = parking_queue_name(queue_name, key)
        arguments = {
            # The broker's queue type (quorum: at-least-once dead-lettering), as its other queues.
            **(getattr(broker, "delay_queue_arguments", None) or {}),
            "x-dead-letter-exchange": "",
            # Expired: back to the work queue, whose worker dead-letters it as provider_down.
            "x-dead-letter-routing-key": str(q_name(queue_name)),
        }
        declare = getattr(broker, "declare_durable_queue", None)
        if declare is not None:
            declare(channel, name, arguments)
        else:
            channel.queue_declare(name, durable=True, arguments=arguments)
        self.adopt(name, queue_name, key)
        return name

    def adopt(self, name: str, queue_name: str, key: str) -> None:
        """Count ``name``, ``key``'s parking queue of ``queue_name``, among this process's queues."""
        with self._lock:
            self._queues[name] = (str(q_name(queue_name)), key)

    def forget(self, name: str) -> None:
        """No longer count parking queue ``name`` (it was deleted)."""
        with self._lock:
            self._queues.pop(name, None)

    def park(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, key: str, expires_ms: int
    ) -> None:
        """Publish ``message`` to ``key``'s parking queue, confirmed, to expire after ``expires_ms``;
        the caller marks it with :data:`PARKED_OPTION`.

        Raises:
            Exception: Whatever pika raised; the message was not parked.
        """
        name = parking_queue_name(message.queue_name, key)
        if name not in self._queues:
            try:
                channel = self.publisher.channel(broker)  # type: ignore[arg-type]
                self.declare(broker, channel, message.queue_name, key)
            except Exception:
                self.publisher.drop_channel()
                raise
        self.publisher.publish(
            broker,  # type: ignore[arg-type]
            name,
            message._message.encode(),
            priority=amqp_priority(message.options.get("broker_priority")),
            expiration_ms=max(1, expires_ms),
        )
