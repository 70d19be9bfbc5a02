"""build_broker: the one place a RabbitMQ broker for provider-jobs is made."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    MiddlewareError,
    Pipelines,
    ShutdownNotifications,
    TimeLimit,
)

from ..middleware import ClassifiedRetries, Classifier, ErrorClassifier, LogContext, Metrics
from ..settings import Settings
from .consumer import WorkerConsumer
from .encoder import OrjsonEncoder

__all__ = ["MAX_PRIORITY", "build_broker"]

#: Queues are declared with ``x-max-priority`` 10; job priorities are 0-9.
#: RabbitMQ refuses (406) to change it on an existing queue.
MAX_PRIORITY = 10


_Hooks = tuple[tuple[Middleware, Callable[..., Any]], ...]


class _ProviderBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker with a consumer that acks in batches and holds short retries, and signals
    sent only to the middleware that handle them.

    Dramatiq calls every middleware's hook for every signal, most of them the
    base class's no-op: with our ten middleware, about 20 calls per message.
    Here each signal's list of real hooks is worked out once per middleware
    list, in order, with Dramatiq's error handling.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._hooks_of: dict[str, _Hooks] = {}
        self._hooks_for: tuple[Middleware, ...] = ()
        super().__init__(*args, **kwargs)

    #: Its consumers hold retries that ``ClassifiedRetries`` marks (``hold_retries_up_to_ms``).
    holds_retries = True
    #: Its consumers publish the dead letters ``ClassifiedRetries`` hands them, then ack.
    publishes_dead_letters = True
    #: Deliveries without an outcome before its consumers dead-letter a job as ``crash_loop``.
    max_deliveries = 5

    @property
    def consumer_class(self) -> type[WorkerConsumer]:
        return WorkerConsumer

    def _hooks(self, name: str) -> _Hooks:
        """The middleware whose ``name`` hook is not the base class's no-op, with that hook."""
        middleware = tuple(self.middleware)
        if middleware != self._hooks_for:
            self._hooks_of, self._hooks_for = {}, middleware
        hooks = self._hooks_of.get(name)
        if hooks is None:
            if name.startswith("after_"):
                middleware = middleware[::-1]
            noop = getattr(Middleware, name, None)
            hooks = tuple(
                (m, hook)
                for m in middleware
                if (hook := getattr(m, name)) is not None and getattr(hook, "__func__", None) is not noop
            )
            self._hooks_of[name] = hooks
        return hooks

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "before_" + signal
        for middleware, hook in self._hooks(signal):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        signal = "after_" + signal
        for middleware, hook in self._hooks(signal):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)


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
    dramatiq.set_encoder(OrjsonEncoder())
    retries = ClassifiedRetries(
        classifier=classifier or ErrorClassifier(unknown_retryable=settings.unknown_errors_retryable),
        max_retries=settings.max_retries,
        retry_delay_ms=int(settings.retry_delay_s * 1000),
        retry_backoff=settings.retry_backoff,
        max_backoff=int(settings.max_retry_delay_s * 1000) or None,
        max_retry_after_ms=int(settings.max_retry_after_s * 1000),
        consumer_timeout_ms=int(settings.consumer_timeout_s * 1000),
        worker_id=settings.worker_id,
        hold_retries_up_to_ms=settings.hold_retries_up_to_ms,
    )
    broker = _ProviderBroker(
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
    broker.max_deliveries = settings.max_deliveries
    return broker
