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

RabbitMQ 3.10 may create two Raft clusters for one quorum queue that two
connections declare at the same moment (workers starting together, two workers
retrying for the first time): one of them then never expires its messages or
delivers what the other holds. :func:`declare_queue` therefore creates quorum
queues one at a time, under a lock that is an exclusive queue
(``provider-jobs.declare-lock``): a name only one connection in the cluster can
hold, released when it is deleted or its connection closes.

RabbitMQ refuses (406) to declare a queue with other arguments than it has, so
a classic queue is never silently turned into a quorum one:
:func:`queue_type_error` turns that refusal into one line saying how to migrate.
"""

from __future__ import annotations

import time
from typing import Any

import pika.exceptions

from ..errors import ConfigurationError

__all__ = [
    "DECLARE_LOCK_QUEUE",
    "QUEUE_TYPES",
    "dead_letter_queue_arguments",
    "declare_queue",
    "queue_arguments",
    "queue_type_error",
]

#: The values of ``PROVIDER_JOBS_QUEUE_TYPE``.
QUEUE_TYPES = ("classic", "quorum")

#: The exclusive queue that serializes the creation of quorum queues over a cluster.
DECLARE_LOCK_QUEUE = "provider-jobs.declare-lock"
#: Longest wait for that lock before declaring without it.
_LOCK_WAIT_S = 30.0

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
    text = str(exc.reply_text)
    # RabbitMQ names the first argument that differs; some only one type of queue can have.
    if "'x-queue-type'" in text or (queue_type == "quorum" and "'x-max-priority'" in text):
        found = "as a classic queue" if queue_type == "quorum" else "as a quorum queue"
    elif queue_type == "classic" and any(
        f"'{arg}'" in text for arg in ("x-delivery-limit", "x-dead-letter-strategy")
    ):
        found = "as a quorum queue"
    else:
        found = "with other arguments"
    return ConfigurationError(
        f"PROVIDER_JOBS_QUEUE_TYPE={queue_type} but queue {queue!r} exists on RabbitMQ {found} "
        f"({exc.reply_text}); queues are not redeclared: move its messages with "
        f"`provider-jobs queues migrate --to {queue_type}`, or set PROVIDER_JOBS_QUEUE_TYPE to match"
    )


def declare_queue(connection: Any, channel: Any, name: str, arguments: dict[str, Any]) -> Any:
    """Declare durable queue ``name`` on ``channel`` (of pika ``connection``), and return
    RabbitMQ's answer; a quorum queue under the cluster-wide declare lock.

    Raises:
        ConfigurationError: ``name`` exists with other arguments (see :func:`queue_type_error`).
        pika.exceptions.AMQPError: Whatever else RabbitMQ or pika raised.
    """
    lock = _acquire(connection) if arguments.get("x-queue-type") == "quorum" else None
    try:
        return channel.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        error = queue_type_error(exc, name, str(arguments.get("x-queue-type", "classic")))
        if error is not None:
            raise error from None
        raise
    finally:
        if lock is not None:
            _release(lock)


def _acquire(connection: Any) -> Any:
    """A channel holding :data:`DECLARE_LOCK_QUEUE`, or ``None`` after :data:`_LOCK_WAIT_S`."""
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        lock = connection.channel()
        try:
            lock.queue_declare(DECLARE_LOCK_QUEUE, exclusive=True)
            return lock
        except pika.exceptions.ChannelClosedByBroker as exc:
            # 405 RESOURCE_LOCKED: another connection holds it.
            if exc.reply_code != 405 or time.monotonic() > deadline:
                return None
            time.sleep(0.01)


def _release(lock: Any) -> None:
    """Delete the lock queue; if the channel or connection is gone, RabbitMQ deleted it already."""
    try:
        lock.queue_delete(DECLARE_LOCK_QUEUE)
        lock.close()
    except pika.exceptions.AMQPError:
        pass
