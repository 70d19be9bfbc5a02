"""The retry delay policy of :class:`.ClassifiedRetries`: how long a retry waits, and where.

A delay comes, in order of precedence, from a :class:`dramatiq.Retry`'s own
``delay``, a provider's ``Retry-After`` (capped at ``max_retry_after_ms``), a
fixed ``retry_delay_ms`` or exponential backoff with jitter. On RabbitMQ a
retry waits in a TTL queue (see :mod:`.publisher`), held by nobody, so it may
wait as long as ``Retries`` allows; else in Dramatiq's ``<queue>.DQ``. Only a
delay that a RabbitMQ consumer holds unacked (``<queue>.DQ`` on RabbitMQ, a
held retry) must stay below ``consumer_timeout``: configured ones are refused
when the actor is declared, per-message ones are clamped.
"""

from __future__ import annotations

from typing import Any, Protocol

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import compute_backoff
from dramatiq.middleware import MiddlewareError

from ..errors import ConfigurationError
from .classifier import Classification
from .publisher import ConfirmPublisher, amqp_priority
from .retry_log import logger

__all__ = [
    "DEFAULT_CONSUMER_TIMEOUT_MS",
    "DEFAULT_MAX_BACKOFF_MS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_AFTER_MS",
    "DEFAULT_MIN_BACKOFF_MS",
    "DelayPolicy",
    "RetryConfigurationError",
    "check_actor_delays",
    "check_delays",
    "check_policy",
    "enqueue_retry",
    "retry_delay_ms",
]

#: Dramatiq's own default ``max_retries``, kept so that swapping ``Retries`` changes nothing.
DEFAULT_MAX_RETRIES = 20
#: Dramatiq's own default backoff factor, kept so that swapping ``Retries`` changes nothing.
DEFAULT_MIN_BACKOFF_MS = 15_000
#: Dramatiq's own default ``max_backoff``, 7 days, which is also the ceiling ``Retries``
#: puts on any ``max_backoff``.
DEFAULT_MAX_BACKOFF_MS = 7 * 86_400_000
#: RabbitMQ's default ``consumer_timeout``. Dramatiq's ``.DQ`` path (our fallback)
#: holds a delayed message unacked until its eta, and RabbitMQ closes consumers
#: that hold one longer; delays in our TTL buckets are not affected.
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
#: Cap on a provider's ``Retry-After``.
DEFAULT_MAX_RETRY_AFTER_MS = 300_000


class RetryConfigurationError(ConfigurationError, MiddlewareError):
    """A retry delay is not allowed; raised when the middleware or an actor is declared.

    It is a ``MiddlewareError`` so that Dramatiq lets it out of ``before_declare_actor``.
    """


class DelayPolicy(Protocol):
    """The defaults a delay is computed from, all in ms; a :class:`.ClassifiedRetries` is one."""

    min_backoff: int
    max_backoff: int
    retry_delay_ms: int | None
    retry_backoff: bool
    max_retry_after_ms: int


def check_delays(
    owner: str, consumer_timeout_ms: int | None, *, held_by: str = "", **delays_ms: int | None
) -> None:
    """Refuse delays that are not whole ms >= 0, or that reach ``consumer_timeout_ms`` when given.

    Args:
        owner: Named in the error, such as ``"actor 'sync'"``.
        consumer_timeout_ms: RabbitMQ's ``consumer_timeout``, in ms, when these delays are held
            unacked by a consumer; ``None`` when nothing holds them.
        held_by: Says in the error what holds them, such as ``"a retry waits in <queue>.DQ"``.
        delays_ms: The delays to check, by setting name; ``None`` is not set.

    Raises:
        RetryConfigurationError: A delay is not allowed.
    """
    for name, value in delays_ms.items():
        if value is None:
            continue
        if not isinstance(value, int) or value < 0:
            raise RetryConfigurationError(f"{owner}: {name}={value!r} is not allowed; use whole ms >= 0")
        if consumer_timeout_ms is not None and value >= consumer_timeout_ms:
            raise RetryConfigurationError(
                f"{owner}: {name}={value} ms is at or above RabbitMQ's consumer_timeout "
                f"({consumer_timeout_ms} ms), and {held_by}, held unacked by the worker until due; "
                f"RabbitMQ closes a consumer that holds a message that long. Use a delay below it "
                f"or raise consumer_timeout on the broker"
            )


def check_policy(policy: DelayPolicy, consumer_timeout_ms: int, *, hold_retries_up_to_ms: int) -> None:
    """Refuse a middleware's delays that are not whole ms >= 0, and a hold that would reach
    ``consumer_timeout_ms``.

    Args:
        policy: The middleware's defaults.
        consumer_timeout_ms: RabbitMQ's ``consumer_timeout``, in ms.
        hold_retries_up_to_ms: The longest retry the worker's consumer holds unacked, in ms.

    Raises:
        RetryConfigurationError: A delay is not allowed.
    """
    check_delays(
        "ClassifiedRetries",
        None,
        retry_delay_ms=policy.retry_delay_ms,
        min_backoff=policy.min_backoff,
        max_backoff=policy.max_backoff,
        max_retry_after_ms=policy.max_retry_after_ms,
        hold_retries_up_to_ms=hold_retries_up_to_ms,
    )
    check_delays(
        "ClassifiedRetries",
        consumer_timeout_ms,
        held_by="a retry due within it waits in the worker's consumer",
        hold_retries_up_to_ms=hold_retries_up_to_ms,
    )


def check_actor_delays(
    policy: DelayPolicy, actor: dramatiq.Actor[Any, Any], consumer_timeout_ms: int | None
) -> None:
    """Refuse an actor's delay options that are not whole ms >= 0, and, when its retries wait
    held unacked in ``<queue>.DQ``, any configured delay that would reach ``consumer_timeout_ms``.

    Args:
        policy: The middleware's defaults.
        actor: The actor being declared.
        consumer_timeout_ms: RabbitMQ's ``consumer_timeout``, in ms, when the actor's retries
            wait in ``<queue>.DQ``; ``None`` when nothing holds them.

    Raises:
        RetryConfigurationError: A delay is not allowed.
    """
    owner = f"actor {actor.actor_name!r}"
    options = actor.options
    check_delays(
        owner,
        None,
        retry_delay_ms=options.get("retry_delay_ms"),
        min_backoff=options.get("min_backoff"),
        max_backoff=options.get("max_backoff"),
    )
    if consumer_timeout_ms is None:
        return
    # The backoff factor is not a delay: max_backoff caps what it grows to.
    held_by = f"with native_delays=False a retry waits in {actor.queue_name}.DQ"
    grows = options.get("retry_backoff", policy.retry_backoff)
    check_delays(
        "ClassifiedRetries",
        consumer_timeout_ms,
        held_by=held_by,
        max_backoff=policy.max_backoff,
        max_retry_after_ms=policy.max_retry_after_ms,
    )
    check_delays(
        owner,
        consumer_timeout_ms,
        held_by=held_by,
        max_backoff=options.get("max_backoff"),
        retry_delay_ms=None if grows else options.get("retry_delay_ms", policy.retry_delay_ms),
    )


def retry_delay_ms(
    policy: DelayPolicy,
    message: dramatiq.MessageProxy,
    actor: dramatiq.Actor[Any, Any],
    exception: BaseException,
    classification: Classification,
    *,
    retries: int,
) -> int:
    """The delay in ms before the next attempt; message options override actor options and ``policy``.

    Args:
        policy: The middleware's defaults.
        message: The failed message.
        actor: Its actor.
        exception: What the attempt raised.
        classification: The exception's classification.
        retries: Retries before this attempt.
    """

    def option(name: str, default: Any) -> Any:
        return message.options.get(name, actor.options.get(name, default))

    max_backoff = min(option("max_backoff", policy.max_backoff), DEFAULT_MAX_BACKOFF_MS)
    if isinstance(exception, dramatiq.Retry) and exception.delay is not None:
        delay = int(exception.delay)
    elif classification.suggested_delay_s is not None:
        delay = min(int(classification.suggested_delay_s * 1000), policy.max_retry_after_ms)
    else:
        fixed = option("retry_delay_ms", policy.retry_delay_ms)
        if fixed is not None and not option("retry_backoff", policy.retry_backoff):
            delay = int(fixed)
        else:
            factor = fixed if fixed is not None else option("min_backoff", policy.min_backoff)
            _, delay = compute_backoff(retries, factor=factor, max_backoff=max_backoff)
    return max(0, delay)


#: Set on a message's proxy by :func:`hold_retry`: the worker's consumer, asked to ack the
#: message, holds it (unacked) for this many ms instead, then delivers it again.
HOLD_ATTRIBUTE = "provider_jobs_hold_ms"


def can_hold_retries(broker: dramatiq.Broker) -> bool:
    """Whether ``broker``'s consumers hold a message marked by :func:`hold_retry` rather than ack it.

    A broker says so with a true ``holds_retries`` attribute; on any other a
    marked message would simply be acked, and its retry lost.
    """
    return bool(getattr(broker, "holds_retries", False))


def hold_retry(message: dramatiq.MessageProxy, delay_ms: int) -> None:
    """Mark ``message`` to be held by its consumer and run again after ``delay_ms``."""
    setattr(message, HOLD_ATTRIBUTE, delay_ms)


def take_hold(message: Any) -> int | None:
    """The hold :func:`hold_retry` put on ``message``, removed from it; ``None`` when there is none."""
    delay: int | None = message.__dict__.pop(HOLD_ATTRIBUTE, None)
    return delay


def enqueue_retry(
    publisher: ConfirmPublisher,
    broker: dramatiq.Broker,
    message: dramatiq.MessageProxy,
    delay_ms: int,
    *,
    native: bool,
    boost: int,
    max_held_ms: int | None = None,
) -> None:
    """Publish the retry, confirmed, to be delivered after ``delay_ms``.

    Args:
        publisher: Publishes to the TTL queues.
        broker: The message's broker.
        message: The message to retry.
        delay_ms: Delay before delivery, in ms.
        native: Use RabbitMQ's TTL queues; when they fail, or otherwise, ``<queue>.DQ``.
        boost: Added to the message's priority, capped at the broker's ``max_priority``.
        max_held_ms: On RabbitMQ, the longest delay ``<queue>.DQ`` may hold a retry for; a
            longer one is shortened to it there. ``None`` (the default) keeps every delay.

    Raises:
        Exception: Whatever the broker raised; the message was not re-enqueued.
    """
    priority = amqp_priority(message.options.get("broker_priority"))
    if isinstance(broker, RabbitmqBroker) and native:
        if boost and broker.max_priority:
            priority = min((priority or 0) + boost, broker.max_priority)
        try:
            publisher.publish_delayed(
                broker, message.queue_name, message._message.encode(), delay_ms, priority=priority
            )
            return
        except Exception as exc:
            logger.warning(
                "Could not publish retry of %s to its delay queue (%s: %s); using %s.DQ instead",
                message.message_id,
                type(exc).__name__,
                exc,
                message.queue_name,
            )
    if max_held_ms is not None and isinstance(broker, RabbitmqBroker):
        delay_ms = min(delay_ms, max_held_ms)
    retry = message._message
    if priority != retry.options.get("broker_priority"):
        # Dramatiq's enqueue puts broker_priority into the AMQP properties as it is.
        retry = retry.copy(options={"broker_priority": priority})
    broker.enqueue(retry, delay=delay_ms)
