"""build_broker: the one place a RabbitMQ broker for provider-jobs is made."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, xq_name
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

from .. import identity
from ..health import HealthSync
from ..middleware import ClassifiedRetries, Classifier, ErrorClassifier, LogContext, Metrics
from ..middleware.breaker import ProviderBreakers
from ..middleware.breaker_wait import BreakerWait
from ..rabbitmq.queue_types import dead_letter_queue_arguments, declare_queue, queue_arguments
from ..settings import Settings
from ..tracing import active_provider, publish_failed
from .consumer import WorkerConsumer
from .encoder import OrjsonEncoder
from .parking import ParkingKeeper
from .settled import SettledLedger
from .solo_runs import SoloRuns

__all__ = ["MAX_PRIORITY", "build_broker"]

#: Queues are declared with ``x-max-priority`` 10; job priorities are 0-9.
#: RabbitMQ refuses (406) to change it on an existing queue.
MAX_PRIORITY = 10


logger = logging.getLogger(__name__)

_Hooks = tuple[tuple[Middleware, Callable[..., Any]], ...]


class _ProviderBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker with a consumer that acks in batches and holds short retries, and signals
    sent only to the middleware that handle them.

    Dramatiq calls every middleware's hook for every signal, most of them the
    base class's no-op: with our ten middleware, about 20 calls per message.
    Here each signal's list of real hooks is worked out once per middleware
    list, in order, with Dramatiq's error handling.
    """

    def __init__(self, *args: Any, worker_id: str, **kwargs: Any) -> None:
        self._hooks_of: dict[str, _Hooks] = {}
        self._hooks_for: tuple[Middleware, ...] = ()
        #: The worker's id, worked out once by :func:`build_broker`: its consumers write it into
        #: the dead letters they publish, as its middleware do into theirs.
        self.worker_id = worker_id
        super().__init__(*args, **kwargs)

    #: Its consumers hold retries that ``ClassifiedRetries`` marks (``hold_retries_up_to_ms``).
    holds_retries = True
    #: Its consumers publish the dead letters ``ClassifiedRetries`` hands them, then ack.
    publishes_dead_letters = True
    #: Deliveries without an outcome before its consumers dead-letter a job as ``crash_loop``;
    #: ``None`` when RabbitMQ counts them (quorum queues' ``x-delivery-limit``).
    max_deliveries: int | None = 20
    #: Crashes counted against a job (see :class:`.WorkerConsumer`) before its consumers
    #: dead-letter it as ``crash_loop``; ``None``: not counted.
    max_crashes: int | None = 3
    #: ``classic`` or ``quorum``: the type of every queue it declares.
    queue_type = "classic"
    #: On quorum queues, the work queue's ``x-delivery-limit``.
    delivery_limit: int | None = None

    @property
    def delay_queue_arguments(self) -> dict[str, Any]:
        """Type arguments ``ConfirmPublisher`` adds to the retry delay queues it declares."""
        return queue_arguments(self.queue_type)

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        limit = self.delivery_limit if queue_name == self._work_queue_of(queue_name) else None
        return {**arguments, **queue_arguments(self.queue_type, delivery_limit=limit)}

    @staticmethod
    def _work_queue_of(queue_name: str) -> str:
        return queue_name[: -len(".DQ")] if queue_name.endswith(".DQ") else queue_name

    def _declared(self, name: str, arguments: dict[str, Any]) -> Any:
        return declare_queue(self.connection, self.channel, name, arguments)

    def declare_durable_queue(self, channel: Any, name: str, arguments: dict[str, Any]) -> Any:
        """Declare a queue for ``ConfirmPublisher`` (the retry delay queues) as this broker's own are."""
        return declare_queue(channel.connection, channel, name, arguments)

    def _declare_queue(self, queue_name: str) -> Any:
        return self._declared(queue_name, self._build_queue_arguments(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        arguments = self._build_queue_arguments(dq_name(queue_name))
        return self._declared(dq_name(queue_name), arguments)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        arguments = dead_letter_queue_arguments(self.queue_type, message_ttl_ms=DEAD_MESSAGE_TTL)
        return self._declared(xq_name(queue_name), arguments)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        try:
            return super().enqueue(message, delay=delay)
        except BaseException as exc:
            # Dramatiq has no hook for a publish that failed: its send span ends here, as an error.
            publish_failed(self, message, exc)
            raise

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


def _tracing(tracer_provider: Any) -> list[Middleware]:
    """The ``Tracing`` middleware when tracing is on, else nothing (no hook costs anything)."""
    provider = active_provider(tracer_provider)
    if provider is None:
        return []
    from ..tracing.middleware import Tracing

    return [Tracing(tracer_provider=provider)]


def build_broker(
    settings: Settings,
    *,
    classifier: Classifier | None = None,
    middleware: Sequence[Middleware] = (),
    tracer_provider: Any = None,
) -> RabbitmqBroker:
    """A RabbitMQ broker with publisher confirms, JSON messages, priorities and our middleware.

    The middleware list is built explicitly, ``ClassifiedRetries`` last, as
    Dramatiq's own ``Retries`` is in its default list, but for the ``BreakerWait``
    it consults when breakers are on. Nothing connects yet.

    Args:
        settings: Broker URL, retry policy, worker id.
        classifier: Decides which errors are retried. Defaults to an
            ``ErrorClassifier`` honouring ``settings.unknown_errors_retryable``.
        middleware: Extra middleware, placed before ``ClassifiedRetries``.
        tracer_provider: An OpenTelemetry ``TracerProvider`` for the ``Tracing`` middleware.
            Default ``None``: the global one if the application set one (see
            :func:`~provider_jobs.tracing.configure_tracing`); with none, no tracing middleware.
    """
    dramatiq.set_encoder(OrjsonEncoder())
    worker_id = identity.worker_id(settings.worker_id)
    metrics = Metrics(worker_id=worker_id, http_port=settings.metrics_port)
    breakers = None
    if settings.breaker_min_calls:
        breakers = ProviderBreakers(
            failure_rate=settings.breaker_failure_rate,
            min_calls=settings.breaker_min_calls,
            min_jobs=settings.breaker_min_jobs,
            window_s=settings.breaker_window_s,
            probe_interval_s=settings.breaker_probe_interval_s,
            probe_jobs=settings.breaker_probe_jobs,
            max_wait_s=settings.breaker_max_wait_s,
            categories=settings.breaker_categories,
            worker_id=worker_id,
            registry=metrics.registry,
        )
    wait = (
        BreakerWait(
            breakers,
            park_waiting=settings.breaker_release_rate > 0,
            consumer_timeout_ms=int(settings.consumer_timeout_s * 1000),
            max_retries=settings.max_retries,
            worker_id=worker_id,
        )
        if breakers is not None
        else None
    )
    retries = ClassifiedRetries(
        classifier=classifier or ErrorClassifier(unknown_retryable=settings.unknown_errors_retryable),
        max_retries=settings.max_retries,
        retry_delay_ms=int(settings.retry_delay_s * 1000),
        retry_backoff=settings.retry_backoff,
        max_backoff=int(settings.max_retry_delay_s * 1000) or None,
        max_retry_after_ms=int(settings.max_retry_after_s * 1000),
        consumer_timeout_ms=int(settings.consumer_timeout_s * 1000),
        worker_id=worker_id,
        hold_retries_up_to_ms=settings.hold_retries_up_to_ms,
        breaker_wait=wait,
    )
    keeper = [ParkingKeeper(settings, wait.breakers, wait.parking)] if wait and wait.parking else []
    quorum = settings.queue_type == "quorum"
    urls = settings.broker_urls
    broker = _ProviderBroker(
        worker_id=worker_id,
        url=list(urls) if len(urls) > 1 else urls[0],
        confirm_delivery=True,
        # Quorum queues refuse x-max-priority; RabbitMQ 4 gives them two priority bands of its own.
        max_priority=None if quorum else MAX_PRIORITY,
        middleware=[
            # First, so that its span covers every other hook and ends after the retry decision.
            *_tracing(tracer_provider),
            # Before the others: a suspect waits for its process to itself before any hook times it.
            SoloRuns(),
            SettledLedger(settings.broker_url, settings.queue_name, grace_s=settings.redelivery_grace_s),
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            CurrentMessage(),
            LogContext(),
            metrics,
            *([HealthSync(settings, breakers, worker_id=worker_id)] if breakers is not None else []),
            *keeper,
            *middleware,
            retries,
            # After it: its gate is then the last hook before a job runs, and it records a
            # success before the retry decision logs it.
            *([wait] if wait is not None else []),
        ],
    )
    broker.queue_type = settings.queue_type
    if quorum:
        # RabbitMQ counts deliveries of quorum queues: a delivery limit of n dead-letters at the
        # (n+1)th return, so max_deliveries - 1 keeps the consumer's meaning of the setting.
        broker.delivery_limit = settings.max_deliveries - 1
        logger.warning(
            "PROVIDER_JOBS_QUEUE_TYPE=quorum: quorum queues have no x-max-priority; job priorities "
            "are accepted, RabbitMQ 3.x ignores them and RabbitMQ 4 runs priorities 5-9 before 0-4"
        )
    broker.max_deliveries = settings.max_deliveries
    broker.max_crashes = settings.max_crashes
    return broker
