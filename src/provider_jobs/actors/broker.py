"""build_broker: the one place a RabbitMQ broker for provider-jobs is made."""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.encoder import JSONEncoder
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)

from ..middleware import ClassifiedRetries, Classifier, ErrorClassifier, LogContext, Metrics
from ..settings import Settings

__all__ = ["MAX_PRIORITY", "build_broker"]

#: Queues are declared with ``x-max-priority`` 10; job priorities are 0-9.
#: RabbitMQ refuses (406) to change it on an existing queue.
MAX_PRIORITY = 10


def build_broker(
    settings: Settings, *, classifier: Classifier | None = None, middleware: Sequence[Middleware] = ()
) -> RabbitmqBroker:
    """A RabbitMQ broker with publisher confirms, JSON messages, priorities and our middleware.

    The middleware list is built explicitly, ``ClassifiedRetries`` last, as
    Dramatiq's own ``Retries`` is in its default list. Nothing connects yet.

    Args:
        settings: Broker URL, retry policy, worker id.
        classifier: Decides which errors are retried. Defaults to an
            ``ErrorClassifier`` honouring ``settings.unknown_errors_retryable``.
        middleware: Extra middleware, placed before ``ClassifiedRetries``.
    """
    dramatiq.set_encoder(JSONEncoder())
    retries = ClassifiedRetries(
        classifier=classifier or ErrorClassifier(unknown_retryable=settings.unknown_errors_retryable),
        max_retries=settings.max_retries,
        retry_delay_ms=int(settings.retry_delay_s * 1000),
        retry_backoff=settings.retry_backoff,
        max_backoff=int(settings.max_retry_delay_s * 1000) or None,
        max_retry_after_ms=int(settings.max_retry_after_s * 1000),
        consumer_timeout_ms=int(settings.consumer_timeout_s * 1000),
        worker_id=settings.worker_id,
    )
    return RabbitmqBroker(
        url=settings.broker_url,
        confirm_delivery=True,
        max_priority=MAX_PRIORITY,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            CurrentMessage(),
            LogContext(),
            Metrics(worker_id=settings.worker_id, http_port=settings.metrics_port),
            *middleware,
            retries,
        ],
    )
