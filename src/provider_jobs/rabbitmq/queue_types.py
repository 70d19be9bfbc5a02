"""Queue types: the arguments a classic or a quorum queue of ours is declared with.

In ``quorum`` mode (``PROVIDER_JOBS_QUEUE_TYPE=quorum``) every queue of a job's
family is a quorum queue, replicated by Raft over the cluster's nodes: the work
queue, Dramatiq's ``.DQ``, the retry delay queues ``.retry.<ms>`` and the
dead-letter queue ``.XQ``. Queues that dead-letter do so *at least once*
(``x-dead-letter-strategy``, which needs ``x-overflow: reject-publish``,
RabbitMQ >= 3.10): RabbitMQ keeps a retry or a dead letter in its source queue
until the target queue has confirmed it, so none is dropped between queues. The
work queue's ``x-delivery-limit`` dead-letters a job whose deliveries keep
ending without an outcome (its worker process dies running it); the archiver
records those as ``crash_loop``.

RabbitMQ refuses (406) to declare a queue with other arguments than it has, so
a classic queue is never silently turned into a quorum one:
:func:`queue_type_error` turns that refusal into one line saying how to migrate.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions

from ..errors import ConfigurationError

__all__ = ["QUEUE_TYPES", "dead_letter_queue_arguments", "queue_arguments", "queue_type_error"]

#: The values of ``PROVIDER_JOBS_QUEUE_TYPE``.
QUEUE_TYPES = ("classic", "quorum")

#: Arguments every quorum queue of ours gets: at-least-once dead-lettering and what it requires.
_QUORUM = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def queue_arguments(queue_type: str, *, delivery_limit: int | None = None) -> dict[str, Any]:
    """The type arguments of a work, delay or retry queue, to merge with its dead-letter route.

    Args:
        queue_type: ``classic`` or ``quorum``.
        delivery_limit: On a quorum queue, deliveries returned without an
            outcome before RabbitMQ dead-letters the message
            (``x-delivery-limit``). ``None`` (the default) sets none.
    """
    if queue_type == "classic":
        return {}
    arguments: dict[str, Any] = dict(_QUORUM)
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    return arguments


def dead_letter_queue_arguments(queue_type: str, *, message_ttl_ms: int) -> dict[str, Any]:
    """The arguments of ``<queue>.XQ``: Dramatiq's ``x-message-ttl``, and on quorum its type."""
    arguments: dict[str, Any] = {"x-message-ttl": message_ttl_ms}
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        arguments["x-overflow"] = "reject-publish"
    return arguments


def queue_type_error(exc: BaseException, queue: str, queue_type: str) -> ConfigurationError | None:
    """The one-line error for RabbitMQ refusing to declare ``queue`` as ``queue_type`` because it
    exists with other arguments (406 ``inequivalent arg``); ``None`` for any other error."""
    if not isinstance(exc, pika.exceptions.ChannelClosedByBroker) or exc.reply_code != 406:
        return None
    if "inequivalent arg" not in str(exc.reply_text):
        return None
    other = "classic" if queue_type == "quorum" else "quorum (or other arguments)"
    return ConfigurationError(
        f"PROVIDER_JOBS_QUEUE_TYPE={queue_type} but queue {queue!r} exists on RabbitMQ as a {other} queue "
        f"({exc.reply_text}); queues are not redeclared: move its messages with "
        f"`provider-jobs queues migrate --to {queue_type}`, or set PROVIDER_JOBS_QUEUE_TYPE to match"
    )
