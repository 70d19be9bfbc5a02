"""What :class:`.ClassifiedRetries` writes into a failed message, and how it dead-letters it.

Each attempt is recorded in the message (``options["attempt_history"]``). The
dead letter carries the *final* attempt's error, category and traceback
(``options["dead_letter"]``): it is published to ``<queue>.XQ`` with publisher
confirms and only then is the original acked; if that publish fails the
message is nacked, which dead-letters it through RabbitMQ. On a broker whose
consumers can publish it (``publishes_dead_letters``, as ``build_broker``'s),
the dead letter is handed to the consumer with the ack instead: the consumer
publishes it and acks the original once RabbitMQ confirmed it (nacks it if
RabbitMQ refused it), so that a worker thread does not wait for the confirm.
When retries are exhausted the actor's ``on_retry_exhausted`` is notified, as
``Retries`` does.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import xq_name

from ..envelope import shortstr_or_none
from .classifier import Classification
from .dead_letter_details import DeadLetterDetails
from .publisher import ConfirmPublisher, amqp_priority
from .retry_log import logger

__all__ = [
    "CRASH_LOOP",
    "DEAD_LETTER_HEADER",
    "MAX_ATTEMPT_HISTORY",
    "DeadLetter",
    "dead_letter_of",
    "defer_dead_letter",
    "format_traceback",
    "notify_exhausted",
    "publish_dead_letter",
    "record_attempt",
    "send_dead_letter",
    "stamp_dead_letter",
    "take_dead_letter",
]

#: AMQP header naming why a dead letter was published (its reason), on every one we publish.
DEAD_LETTER_HEADER = "x-provider-jobs-dead-letter"
#: Category and reason of a job whose deliveries kept ending without an outcome (its worker died).
CRASH_LOOP = "crash_loop"
#: Attempt records kept per message; older ones are dropped so that an actor
#: retried forever does not grow its message without bound.
MAX_ATTEMPT_HISTORY = 50


def record_attempt(
    message: dramatiq.MessageProxy,
    exception: BaseException,
    classification: Classification,
    attempt: int,
    delay_ms: int | None,
    *,
    worker_id: str,
) -> None:
    """Append this attempt to ``options["attempt_history"]``, keeping the last :data:`MAX_ATTEMPT_HISTORY`.

    Args:
        message: The failed message.
        exception: What the attempt raised.
        classification: The exception's classification.
        attempt: The attempt's number, from 1.
        delay_ms: Delay before the retry, in ms; ``None`` when it is not retried.
        worker_id: The worker that ran the attempt.
    """
    history: list[dict[str, Any]] = message.options.setdefault("attempt_history", [])
    history.append(
        {
            "attempt": attempt,
            "category": classification.category.name,
            "retryable": classification.retryable,
            "error_type": type(exception).__qualname__,
            "error": str(exception),
            "at_ms": int(time.time() * 1000),
            "worker_id": worker_id,
            "delay_ms": delay_ms,
            "redelivered": bool(getattr(message, "redelivered", False)),
        }
    )
    del history[:-MAX_ATTEMPT_HISTORY]


def format_traceback(exception: BaseException, *, limit: int = 30) -> str:
    """``exception``'s traceback, chained exceptions included, as ``traceback.format_exception``
    writes it but without Python 3.11's ``^^^^`` markers under each line.

    Working out where those markers go parses each frame's source line: it is
    more than half the cost of formatting, and most of a dead letter's cost
    in the worker. File, line, function and source line are all still there.
    """
    formatted = traceback.TracebackException.from_exception(exception, limit=limit)
    todo, seen = [formatted], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            frame.colno = frame.end_colno = None  # no position: no markers
        todo.extend(chained for chained in (current.__cause__, current.__context__) if chained is not None)
        todo.extend(getattr(current, "exceptions", None) or ())
    return "".join(formatted.format())


def stamp_dead_letter(
    message: dramatiq.MessageProxy,
    *,
    classification: Classification,
    exception: BaseException,
    reason: str,
    retries: int,
    max_retries: int | None,
    worker_id: str,
) -> None:
    """Write the final attempt's details into ``options["traceback"]`` and ``options["dead_letter"]``.

    Args:
        message: The message to dead-letter.
        classification: The final exception's classification.
        exception: What the final attempt raised.
        reason: Why it is dead-lettered, such as ``"exhausted"``.
        retries: Retries before the final attempt.
        max_retries: The message's retry limit; ``None`` is unlimited.
        worker_id: The worker that ran the final attempt.
    """
    # Formatted once, for the final attempt only: retries carry the error in
    # their attempt history, and formatting a traceback per failure is costly.
    message.options["traceback"] = format_traceback(exception)
    message.options["dead_letter"] = DeadLetterDetails(
        reason=reason,
        category=classification.category.name,
        retryable=classification.retryable,
        error_type=type(exception).__qualname__,
        error=str(exception),
        traceback=message.options["traceback"],
        attempts=retries + 1,
        max_retries=max_retries,
        worker_id=worker_id,
        queue_name=message.queue_name,
        dead_lettered_at_ms=int(time.time() * 1000),
    ).as_option()


def notify_exhausted(
    broker: dramatiq.Broker,
    message: dramatiq.MessageProxy,
    actor: dramatiq.Actor[Any, Any],
    retries: int,
    max_retries: int | None,
) -> None:
    """Send ``on_retry_exhausted``'s message, as ``Retries`` does; the dead letter is already safe."""
    target = message.options.get("on_retry_exhausted") or actor.options.get("on_retry_exhausted")
    if not target:
        return
    try:
        broker.get_actor(target).send(message.asdict(), {"retries": retries, "max_retries": max_retries})
    except Exception:
        logger.exception("Job %s: could not notify on_retry_exhausted actor %r", message.message_id, target)


#: Set on a message's proxy by :func:`defer_dead_letter`, taken by the consumer that acks it.
DEFER_ATTRIBUTE = "provider_jobs_dead_letter"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter to publish to the default exchange before the original is acked.

    Args:
        routing_key: ``<queue>.XQ``.
        body: The enriched message, encoded.
        priority: Its RabbitMQ priority, 0-255.
        headers: AMQP headers.
        message_id: The Dramatiq message id, as AMQP ``message_id``; ``None`` when it cannot be
            one (not a string of at most 255 UTF-8 bytes): the body still holds it.
    """

    routing_key: str
    body: bytes
    priority: int | None
    headers: dict[str, Any]
    message_id: str | None


def dead_letter_of(message: dramatiq.MessageProxy) -> DeadLetter:
    """The dead letter of a message :func:`stamp_dead_letter` has enriched, with AMQP properties
    that are valid whatever the message says (a refused property fails the publish)."""
    return DeadLetter(
        routing_key=xq_name(message.queue_name),
        body=message._message.encode(),
        priority=amqp_priority(message.options.get("broker_priority")),
        headers={DEAD_LETTER_HEADER: str(message.options["dead_letter"]["reason"])},
        message_id=shortstr_or_none(message.message_id),
    )


def defer_dead_letter(broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
    """Hand the dead letter to the consumer that acks ``message``, when ``broker``'s consumers
    publish dead letters (a true ``publishes_dead_letters``); ``False`` when they do not."""
    if not getattr(broker, "publishes_dead_letters", False):
        return False
    setattr(message, DEFER_ATTRIBUTE, dead_letter_of(message))
    return True


def take_dead_letter(message: Any) -> DeadLetter | None:
    """The dead letter :func:`defer_dead_letter` put on ``message``, removed from it."""
    letter: DeadLetter | None = message.__dict__.pop(DEFER_ATTRIBUTE, None)
    return letter


def publish_dead_letter(
    publisher: ConfirmPublisher, broker: dramatiq.Broker, message: dramatiq.MessageProxy
) -> bool:
    """Publish the enriched message to ``<queue>.XQ`` and wait for RabbitMQ's confirm.

    Returns ``False``, having logged why, when the broker is not RabbitMQ or the publish failed.
    """
    if not isinstance(broker, RabbitmqBroker):
        return False
    letter = dead_letter_of(message)
    try:
        publisher.publish(
            broker, letter.routing_key, letter.body, priority=letter.priority, headers=letter.headers
        )
    except Exception as exc:
        logger.warning(
            "Could not publish dead letter %s to %s (%s: %s); nacking it so RabbitMQ dead-letters it",
            message.message_id,
            xq_name(message.queue_name),
            type(exc).__name__,
            exc,
        )
        return False
    return True


def send_dead_letter(
    publisher: ConfirmPublisher,
    broker: dramatiq.Broker,
    message: dramatiq.MessageProxy,
    *,
    classification: Classification,
    exception: BaseException,
    reason: str,
    retries: int,
    max_retries: int | None,
    worker_id: str,
) -> None:
    """Stamp ``message`` (see :func:`stamp_dead_letter`) and dead-letter it: handed to its consumer
    (:func:`defer_dead_letter`) or published with ``publisher``; nacked when neither could be done,
    so that RabbitMQ moves it to ``<queue>.XQ`` itself, without the final attempt's details."""
    stamp_dead_letter(
        message,
        classification=classification,
        exception=exception,
        reason=reason,
        retries=retries,
        max_retries=max_retries,
        worker_id=worker_id,
    )
    if not defer_dead_letter(broker, message) and not publish_dead_letter(publisher, broker, message):
        message.fail()
