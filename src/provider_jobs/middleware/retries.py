"""ClassifiedRetries: Dramatiq's ``Retries``, but it knows which errors to retry.

A drop-in replacement for :class:`dramatiq.middleware.Retries`: the same actor
and message options (``max_retries``, ``min_backoff``, ``max_backoff``,
``retry_when``, ``throws``, ``on_retry_exhausted``) with the same meanings and
defaults, and :class:`dramatiq.Retry` still asks for another attempt; a
``throws`` exception and a ``Retry`` log what ``Retries`` logs, at its levels.
``tests/dramatiq_compat`` checks it against Dramatiq's own retry tests. On top of that:

- every failure is classified; permanent ones are dead-lettered at once;
- a fixed delay (``retry_delay_ms``) or exponential backoff with jitter, per
  middleware, actor or message; a provider's ``Retry-After`` is honoured up to
  ``max_retry_after_ms`` (see :mod:`.delays`);
- on RabbitMQ a retry waits in a TTL queue that RabbitMQ itself moves back to
  the work queue when due (see :mod:`.publisher`), with its priority raised so
  that a due retry does not wait behind the whole backlog;
- each attempt is recorded in the message, and a dead letter carries the final
  attempt's error, published to ``<queue>.XQ`` with confirms before the
  original is acked (see :mod:`.dead_letters`);
- a retry whose publish fails is dead-lettered, never acked and lost;
- with a :class:`.BreakerWait`, each failure is fed to its provider's circuit
  breaker, and one the open breaker takes over is not retried: the job waits for
  the breaker instead, its attempt not counted (see :mod:`.breaker_wait`).

Like ``Retries`` it must be the last middleware in the broker's list, so that
its ``after_process_message`` runs first; only the ``BreakerWait`` it is given
comes after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from .. import identity
from . import dead_letters, delays
from .breaker import ProviderBreakers, job_of
from .breaker_wait import BreakerWait
from .classifier import RETRY_REQUESTED, Classification, ErrorClassifier
from .delays import (
    DEFAULT_CONSUMER_TIMEOUT_MS,
    DEFAULT_MAX_BACKOFF_MS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER_MS,
    DEFAULT_MIN_BACKOFF_MS,
    RetryConfigurationError,
)
from .parking import Parking
from .publisher import ConfirmPublisher, bucket_ms
from .retry_log import DropWorkerFailureLogs, RetryLog, logger

__all__ = ["ClassifiedRetries", "RetryConfigurationError"]

#: Classifies an exception; an :class:`ErrorClassifier` is one.
Classifier = Callable[[BaseException], Classification]


class ClassifiedRetries(Middleware):
    """Retry failed messages when the error is worth retrying; dead-letter the rest.

    Args:
        classifier: Decides category and retryability of an exception.
            Defaults to ``ErrorClassifier()``.
        max_retries: Retries after the first attempt (Dramatiq's meaning:
            ``max_retries=2`` is at most 3 attempts). Defaults to 20, as ``Retries``.
        min_backoff: Exponential backoff factor in ms. Defaults to 15 000.
        max_backoff: Backoff cap in ms. Defaults to 7 days, as ``Retries``; with
            ``native_delays=False``, to 90 % of ``consumer_timeout_ms``.
        retry_when: ``(retries, exception) -> bool``; when set it decides
            alone, over ``max_retries`` and the classification, as in ``Retries``.
        retry_delay_ms: Fixed delay between attempts in ms; ``None`` (the
            default) uses exponential backoff from ``min_backoff``.
        retry_backoff: With ``retry_delay_ms`` set, grow it exponentially
            (with jitter, capped at ``max_backoff``) instead of keeping it fixed.
            Defaults to ``False``.
        max_retry_after_ms: Cap on a provider's ``Retry-After``. Defaults to 300 000.
        consumer_timeout_ms: RabbitMQ's ``consumer_timeout``. A delay that a
            consumer would hold unacked (``<queue>.DQ`` on RabbitMQ with
            ``native_delays=False``, ``hold_retries_up_to_ms``) must stay below it;
            TTL delay queues hold nothing. Defaults to 1 800 000 (30 min).
        worker_id: Recorded in each attempt and log line. Defaults to ``host-pid``.
        log_success: Log ``Job X completed successfully on attempt N`` at INFO.
            Defaults to ``True``.
        native_delays: On RabbitMQ, delay retries in TTL queues that RabbitMQ
            routes back when due; ``False`` uses Dramatiq's ``<queue>.DQ``.
            Defaults to ``True``. Delays are then rounded up to two significant digits.
        retry_priority_boost: Added to a retry's RabbitMQ priority (capped at the
            broker's ``max_priority``) so that a due retry runs before the backlog
            of its own priority. Defaults to 1; 0 keeps the job's priority.
        hold_retries_up_to_ms: A retry due within this many ms is held by the
            worker's consumer, the message unacked in RabbitMQ, and run again
            when due: no publish, no second delivery. Only on a broker whose
            consumers can hold (``holds_retries``, as ``build_broker``'s);
            elsewhere, and for longer delays, retries are published. Defaults
            to 0 (never held).
        breaker_wait: The :class:`.BreakerWait` in the broker's middleware list, right
            after this one: each failure is fed to its breakers, and one it takes over
            waits for the breaker instead of being retried. Its publisher is shared.
            Default ``None``: no breaker.
        breakers: Circuit breakers per provider, for a broker without a ``BreakerWait``
            of its own: this middleware makes one (with ``park_waiting`` and its own
            ``native_delays``, ``consumer_timeout_ms``, ``max_retries`` and
            ``worker_id``) and runs its hooks itself. Default ``None``: no breaker.
        park_waiting: With ``breakers``, a job whose breaker is open waits in the
            provider's parking queue (see :class:`.BreakerWait`). Default ``False``.

    Raises:
        RetryConfigurationError: A delay is not whole ms >= 0 (here or when an
            actor is declared), or, when an actor is declared on a broker that
            would hold it unacked, at or above ``consumer_timeout_ms``; or both
            ``breaker_wait`` and ``breakers`` are given.
    """

    def __init__(
        self,
        *,
        classifier: Classifier | None = None,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        min_backoff: int | None = None,
        max_backoff: int | None = None,
        retry_when: Callable[[int, BaseException], bool] | None = None,
        retry_delay_ms: int | None = None,
        retry_backoff: bool = False,
        max_retry_after_ms: int = DEFAULT_MAX_RETRY_AFTER_MS,
        consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS,
        worker_id: str | None = None,
        log_success: bool = True,
        native_delays: bool = True,
        retry_priority_boost: int = 1,
        hold_retries_up_to_ms: int = 0,
        breaker_wait: BreakerWait | None = None,
        breakers: ProviderBreakers | None = None,
        park_waiting: bool = False,
    ) -> None:
        self.classifier: Classifier = classifier or ErrorClassifier()
        self.max_retries = max_retries
        self.consumer_timeout_ms = consumer_timeout_ms
        #: The longest a RabbitMQ consumer may hold a delayed message, with a margin.
        self._max_held_ms = int(consumer_timeout_ms * 0.9)
        self.min_backoff = min_backoff or DEFAULT_MIN_BACKOFF_MS
        self.max_backoff = max_backoff or (DEFAULT_MAX_BACKOFF_MS if native_delays else self._max_held_ms)
        self.retry_when = retry_when
        self.retry_delay_ms = retry_delay_ms
        self.retry_backoff = retry_backoff
        self.max_retry_after_ms = max_retry_after_ms
        self.worker_id = identity.worker_id(worker_id)
        self._log = RetryLog(self.worker_id)
        self.log_success = log_success
        self.native_delays = native_delays
        self.retry_priority_boost = retry_priority_boost
        self.hold_retries_up_to_ms = hold_retries_up_to_ms
        if breaker_wait is not None and breakers is not None:
            raise RetryConfigurationError(
                "ClassifiedRetries: give breaker_wait or breakers, not both (breaker_wait has its breakers)"
            )
        self._publisher = breaker_wait.publisher if breaker_wait is not None else ConfirmPublisher()
        #: The breaker wait made from ``breakers``, whose hooks this middleware runs itself.
        self._own_wait = (
            BreakerWait(
                breakers,
                park_waiting=park_waiting,
                native_delays=native_delays,
                consumer_timeout_ms=consumer_timeout_ms,
                max_retries=max_retries,
                worker_id=self.worker_id,
                publisher=self._publisher,
            )
            if breakers is not None
            else None
        )
        #: The breaker wait that failures are fed to; ``None``: no breaker.
        self.breaker_wait = breaker_wait or self._own_wait
        delays.check_policy(self, consumer_timeout_ms, hold_retries_up_to_ms=hold_retries_up_to_ms)

    @property
    def actor_options(self) -> set[str]:
        return {
            "max_retries",
            "min_backoff",
            "max_backoff",
            "retry_when",
            "throws",
            "on_retry_exhausted",
            "retry_delay_ms",
            "retry_backoff",
        }

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        held = self._held_on_delay_queue(broker)
        delays.check_actor_delays(self, actor, self.consumer_timeout_ms if held else None)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        worker_logger = logging.getLogger("dramatiq.worker.WorkerThread")
        if not any(isinstance(f, DropWorkerFailureLogs) for f in worker_logger.filters):
            worker_logger.addFilter(DropWorkerFailureLogs())
        if self._held_on_delay_queue(broker) and not getattr(broker, "confirm_delivery", True):
            # Retries and dead letters on TTL delay queues go through our own confirmed channel.
            logger.warning(
                "The broker publishes without confirms: a retry it loses cannot be detected. "
                "Build it with confirm_delivery=True."
            )

    @property
    def breakers(self) -> ProviderBreakers | None:
        """The circuit breakers of its breaker wait; ``None``: no breaker."""
        return None if self.breaker_wait is None else self.breaker_wait.breakers

    @property
    def parking(self) -> Parking | None:
        """Where its breaker wait parks jobs; ``None``: no parking."""
        return None if self.breaker_wait is None else self.breaker_wait.parking

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if self._own_wait is not None:
            self._own_wait.before_process_message(broker, message)

    # -- the decision -------------------------------------------------------------

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        actor = broker.get_actor(message.actor_name)
        options = message.options
        retries: int = options.get("retries", 0)
        max_retries = options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        if exception is None:
            # A message failed before it ran (AgeLimit, a before-hook) did not succeed.
            if self._own_wait is not None:
                self._own_wait.after_process_message(broker, message, result=result)
            if self.log_success and not message.failed:
                self._log.success(message, retries + 1, max_retries)
            return

        try:
            self._handle_failure(broker, message, actor, exception, retries=retries, max_retries=max_retries)
        except Exception:
            # Dramatiq swallows an after-hook's exception and then acks the
            # message: a raising rule, override or retry_when must not lose it.
            logger.exception(
                "Job %s: deciding its retry failed; nacking it so that RabbitMQ dead-letters it",
                job_of(message),
            )
            message.fail()

    def _handle_failure(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        actor: dramatiq.Actor[Any, Any],
        exception: BaseException,
        *,
        retries: int,
        max_retries: int | None,
    ) -> None:
        options = message.options
        context = self._log.context(message, retries + 1, max_retries)
        requested = isinstance(exception, dramatiq.Retry)
        classification = (
            Classification(RETRY_REQUESTED, True, None, "type") if requested else self.classifier(exception)
        )
        context["category"] = classification.category.name
        error = f"{exception}" or type(exception).__name__

        throws = options.get("throws") or actor.options.get("throws")
        retry_when = actor.options.get("retry_when", self.retry_when)
        if throws and isinstance(exception, throws):
            reason = "throws"
        elif retry_when is not None:
            reason = "retry" if retry_when(retries, exception) else "retry_when"
        elif not classification.retryable:
            reason = "non_retryable"
        elif max_retries is not None and retries >= max_retries:
            reason = "exhausted"
        else:
            reason = "retry"
        if (
            not requested
            and self.breaker_wait is not None
            and self.breaker_wait.absorbs(broker, message, exception, classification, context, reason=reason)
        ):
            return
        if reason != "throws":
            # As Retries: an expected exception fails the message before a retry is counted.
            options["retries"] = retries + 1
            options["requeue_timestamp"] = int(time.time() * 1000)

        delay_ms = (
            delays.retry_delay_ms(self, message, actor, exception, classification, retries=retries)
            if reason == "retry"
            else None
        )
        if delay_ms is not None and self._held_on_delay_queue(broker):
            # Per-message options cannot be checked at declaration: clamp them below the timeout.
            delay_ms = min(delay_ms, self._max_held_ms)
        hold = (
            delay_ms is not None
            and delay_ms <= self.hold_retries_up_to_ms
            and delays.can_hold_retries(broker)
        )
        if delay_ms is not None and not hold and self._native(broker):
            delay_ms = bucket_ms(delay_ms)
        dead_letters.record_attempt(
            message, exception, classification, retries + 1, delay_ms, worker_id=self.worker_id
        )

        if delay_ms is not None:
            if requested:
                self._log.retry_requested(context, delay_ms)
            else:
                self._log.retry(context, error, delay_ms)
            if hold:
                delays.hold_retry(message, delay_ms)
                return
            try:
                delays.enqueue_retry(
                    self._publisher,
                    broker,
                    message,
                    delay_ms,
                    native=self._native(broker),
                    boost=self.retry_priority_boost,
                    max_held_ms=self._max_held_ms,
                )
                return
            except Exception as exc:
                self._log.retry_unpublished(context, exc)
                reason = "retry_publish_failed"
        elif reason == "throws":
            self._log.aborted(context)
        elif requested:
            self._log.retries_exceeded(reason, context)
        else:
            self._log.dead_letter(reason, context, error, exception, classification)

        dead_letters.send_dead_letter(
            self._publisher,
            broker,
            message,
            classification=classification,
            exception=exception,
            reason=reason,
            retries=retries,
            max_retries=max_retries,
            worker_id=self.worker_id,
        )
        if reason in ("exhausted", "retry_when"):
            dead_letters.notify_exhausted(broker, message, actor, retries, max_retries)

    def _native(self, broker: dramatiq.Broker) -> bool:
        return self.native_delays and isinstance(broker, RabbitmqBroker)

    def _held_on_delay_queue(self, broker: dramatiq.Broker) -> bool:
        """Whether ``broker``'s retries wait in ``<queue>.DQ``, held unacked by a RabbitMQ consumer."""
        return isinstance(broker, RabbitmqBroker) and not self.native_delays
