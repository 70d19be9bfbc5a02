"""Our own RabbitMQ transport, beside Dramatiq's: the bulk publisher with pipelined confirms,
its connection, outgoing messages and their outcomes, frame writing, connectivity checks and
the names and roles of the queues behind an actor queue."""

from __future__ import annotations

from .bulk import BulkPublisher, BulkResult, OutgoingMessage, PublishFailure
from .connectivity import check_broker, redact_url
from .queues import queue_roles

__all__ = [
    "BulkPublisher",
    "BulkResult",
    "OutgoingMessage",
    "PublishFailure",
    "check_broker",
    "queue_roles",
    "redact_url",
]
