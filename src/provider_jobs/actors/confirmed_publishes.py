"""ConfirmedPublishes: publishes a delivery's replacement, settling the delivery on RabbitMQ's confirm."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from dramatiq.errors import ConnectionClosed

__all__ = ["ConfirmedPublishes"]

#: (delivery tag, message id, refused) for each original whose replacement RabbitMQ answered.
Answered = list[tuple[int, str, bool]]


class ConfirmedPublishes:
    """A channel in confirm mode for what replaces a delivery: its dead letter, or a copy of it
    carrying new headers. Many are in flight at once; nobody waits for a confirm.

    When RabbitMQ confirms (or refuses, or returns as unroutable) a publish,
    ``on_answered`` gets the original delivery's tag, its message id and
    whether it was refused: the consumer then acks the original, or nacks it
    so that RabbitMQ dead-letters it itself. Runs on the connection's thread.
    """

    def __init__(self, connection: Any, on_answered: Callable[[Answered], None]) -> None:
        self._on_answered = on_answered
        #: Publish sequence number -> (original's delivery tag, message id), in publish order.
        self._awaiting: dict[int, tuple[int, str]] = {}
        self._returned: set[str] = set()
        self._published = 0
        try:
            self._channel = connection.channel()
            selected: list[bool] = []
            self._channel._impl.confirm_delivery(self._on_confirm, lambda _frame: selected.append(True))
            deadline = time.monotonic() + 30
            while not selected and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.1)
            if not selected:
                raise pika.exceptions.AMQPChannelError("RabbitMQ did not answer Confirm.Select")
            self._channel._impl.add_on_return_callback(self._on_return)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    @property
    def in_flight(self) -> bool:
        """Whether a publish waits for RabbitMQ's answer."""
        return bool(self._awaiting)

    def publish(self, tag: int, routing_key: str, body: bytes, properties: Any) -> None:
        """Publish the replacement of delivery ``tag`` (mandatory: an unroutable one is refused)."""
        self._published += 1
        self._awaiting[self._published] = (tag, properties.message_id)
        self._channel._impl.basic_publish("", routing_key, body, properties, mandatory=True)

    def forget(self) -> None:
        """The connection is gone: what was in flight is not settled here (RabbitMQ redelivers it)."""
        self._awaiting.clear()

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # A return comes before the confirm of the same message.
        self._returned.add(properties.message_id)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        refused = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            seqs = []
            for seq in self._awaiting:
                if seq > method.delivery_tag:
                    break
                seqs.append(seq)
        else:
            seqs = [method.delivery_tag]
        answered: Answered = []
        for seq in seqs:
            entry = self._awaiting.pop(seq, None)
            if entry is None:
                continue
            tag, message_id = entry
            returned = message_id in self._returned
            if returned:
                self._returned.discard(message_id)
            answered.append((tag, message_id, refused or returned))
        self._on_answered(answered)
