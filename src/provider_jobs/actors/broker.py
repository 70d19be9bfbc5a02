"""build_broker: the one place a RabbitMQ broker for provider-jobs is made."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Sequence

import dramatiq
import pika
import pika.exceptions
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

from ..errors import BrokerUnavailable
from ..middleware import ClassifiedRetries, Classifier, ErrorClassifier, LogContext, Metrics
from ..settings import Settings

__all__ = ["MAX_PRIORITY", "build_broker", "check_broker", "redact_url"]

#: Queues are declared with ``x-max-priority`` 10; job priorities are 0-9.
#: RabbitMQ refuses (406) to change it on an existing queue.
MAX_PRIORITY = 10


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


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


def check_broker(settings: Settings, *, timeout_s: float = 3.0) -> None:
    """Open and close one connection to the broker.

    Raises:
        BrokerUnavailable: RabbitMQ cannot be reached; the message names the
            URL tried (password hidden) and how to start a broker.
    """
    parameters = pika.URLParameters(settings.broker_url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout_s
    parameters.blocked_connection_timeout = timeout_s
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    # pika logs each failed step at ERROR; the single line below says it all.
    pika_logger.setLevel(logging.CRITICAL)
    try:
        # A plain socket first: pika's own error for a refused port is an empty AMQPConnectionError.
        socket.create_connection((parameters.host, parameters.port), timeout=timeout_s).close()
        pika.BlockingConnection(parameters).close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BrokerUnavailable(
            f"Cannot reach RabbitMQ at {redact_url(settings.broker_url)} ({reason}). "
            "Start one with `rabbitmq-server -detached` (Debian package rabbitmq-server) "
            "or `docker compose up -d rabbitmq`, or set PROVIDER_JOBS_BROKER_URL."
        ) from None
    finally:
        pika_logger.setLevel(level)
