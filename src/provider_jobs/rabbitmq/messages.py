"""The messages of a bulk publish and what became of each: the states of :data:`OUTCOMES`.

Only ``confirmed`` means RabbitMQ took responsibility for a message;
:class:`~provider_jobs.rabbitmq.bulk.BulkPublisher` reports every other one as a
:class:`PublishFailure`.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "CONFIRMED",
    "NACKED",
    "NOT_SENT",
    "OUTCOMES",
    "RETURNED",
    "UNCONFIRMED",
    "BulkResult",
    "OutgoingMessage",
    "PublishFailure",
]

CONFIRMED, NACKED, RETURNED, UNCONFIRMED, NOT_SENT = (
    "confirmed",
    "nacked",
    "returned",
    "unconfirmed",
    "not_sent",
)
#: Every state a message of a bulk publish can end in.
OUTCOMES = (CONFIRMED, NACKED, RETURNED, UNCONFIRMED, NOT_SENT)


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to publish to the default exchange.

    Args:
        routing_key: The queue's name.
        body: The encoded message.
        priority: RabbitMQ priority (``BasicProperties.priority``), or ``None``.
        message_id: ``BasicProperties.message_id``; it is how a returned
            (unroutable) message is matched to its delivery. Default: the
            delivery tag's number.
    """

    routing_key: str
    body: bytes
    priority: int | None = None
    message_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PublishFailure:
    """A message that was not confirmed: its position in the input, its state and why."""

    index: int
    status: str
    detail: str


@dataclasses.dataclass
class BulkResult:
    """What became of each message of one :meth:`BulkPublisher.publish_many` call.

    Attributes:
        confirmed: Indexes (positions in the input) RabbitMQ confirmed, ascending.
        failures: Every other message that was taken from the input, by index.
        elapsed_s: Wall time of the call.
    """

    confirmed: list[int] = dataclasses.field(default_factory=list)
    failures: list[PublishFailure] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every message was confirmed."""
        return not self.failures

    @property
    def total(self) -> int:
        return len(self.confirmed) + len(self.failures)

    def count(self, status: str) -> int:
        """How many messages ended in ``status``."""
        if status == CONFIRMED:
            return len(self.confirmed)
        return sum(1 for f in self.failures if f.status == status)
