"""Our own RabbitMQ transport, beside Dramatiq's: the bulk publisher with pipelined confirms,
its connection, outgoing messages and their outcomes, frame writing, connectivity checks (with
failover URLs), the names and roles of the queues behind an actor queue and their types
(classic or quorum), and their statistics (messages ready, consumers)."""

from __future__ import annotations

from .bulk import BulkPublisher, BulkResult, OutgoingMessage, PublishFailure
from .connectivity import broker_parameters, check_broker, redact_url
from .queue_stats import QueueStat, read_queue_stats
from .queue_types import QUEUE_TYPES, declare_queue, queue_arguments
from .queues import queue_roles

__all__ = [
    "QUEUE_TYPES",
    "BulkPublisher",
    "BulkResult",
    "OutgoingMessage",
    "PublishFailure",
    "QueueStat",
    "broker_parameters",
    "check_broker",
    "declare_queue",
    "queue_arguments",
    "queue_roles",
    "read_queue_stats",
    "redact_url",
]
