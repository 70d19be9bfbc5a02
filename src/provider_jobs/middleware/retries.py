"""ClassifiedRetries: Dramatiq's ``Retries``, but it knows which errors to retry.

A drop-in replacement for :class:`dramatiq.middleware.Retries`: the same actor
and message options (``max_retries``, ``min_backoff``, ``max_backoff``,
``retry_when``, ``throws``, ``on_retry_exhausted``) with the same meanings, and
:class:`dramatiq.Retry` still asks for another attempt. On top of that:

- every failure is classified; permanent ones are dead-lettered at once;
- a fixed delay (``retry_delay_ms``) or exponential backoff with jitter, per
  middleware, actor or message; a provider's ``Retry-After`` is honoured up to
  ``max_retry_after_ms``;
- on RabbitMQ a retry waits in a TTL queue that RabbitMQ itself moves back to
  the work queue when due (see :mod:`.publisher`), with its priority raised so
  that a due retry does not wait behind the whole backlog;
- each attempt is recorded in the message (``options["attempt_history"]``);
- the dead letter carries the *final* attempt's error, category and traceback
  (``options["dead_letter"]``): it is published to ``<queue>.XQ`` with
  publisher confirms and only then is the original acked; if that publish
  fails the message is nacked, which dead-letters it through RabbitMQ;
- a retry whose publish fails is dead-lettered, never acked and lost.

Like ``Retries`` it must be the last middleware in the broker's list, so that
its ``after_process_message`` runs first.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import compute_backoff, xq_name
from dramatiq.middleware import Middleware, MiddlewareError

from ..errors import ConfigurationError
from .classifier import RETRY_REQUESTED, Classification, ErrorClassifier
from .publisher import ConfirmPublisher, bucket_ms
from .retry_log import DropWorkerFailureLogs, RetryLog, logger

__all__ = ["ClassifiedRetries", "RetryConfigurationError"]

#: Dramatiq's own defaults, kept so that swapping ``Retries`` changes nothing.
DEFAULT_MAX_RETRIES = 20
DEFAULT_MIN_BACKOFF_MS = 15_000
#: RabbitMQ's default ``consumer_timeout``. Dramatiq's ``.DQ`` path (our fallback)
#: holds a delayed message unacked until its eta, and RabbitMQ closes consumers
#: that hold one longer; delays in our TTL buckets are not affected.
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
#: Cap on a provider's ``Retry-After``.
DEFAULT_MAX_RETRY_AFTER_MS = 300_000
#: Attempt records kept per message; older ones are dropped so that an actor
#: retried forever does not grow its message without bound.
MAX_ATTEMPT_HISTORY = 50

#: Classifies an exception; an :class:`ErrorClassifier` is one.
Classifier = Callable[[BaseException], Classification]


class RetryConfigurationError(ConfigurationError, MiddlewareError):
    """A retry delay is not allowed; raised when the middleware or an actor is declared.

    It is a ``MiddlewareError`` so that Dramatiq lets it out of ``before_declare_actor``.
    """


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ClassifiedRetries(Middleware):
    """Retry failed messages when the error is worth retrying; dead-letter the rest.

    Args:
        classifier: Decides category and retryability of an exception.
            Defaults to ``ErrorClassifier()``.
        max_retries: Retries after the first attempt (Dramatiq's meaning:
            ``max_retries=2`` is at most 3 attempts). Defaults to 20, as ``Retries``.
        min_backoff: Exponential backoff factor in ms. Defaults to 15 000.
        max_backoff: Backoff cap in ms. Defaults to 90 % of ``consumer_timeout_ms``.
        retry_when: ``(retries, exception) -> bool``; when set it decides
            alone, over ``max_retries`` and the classification, as in ``Retries``.
        retry_delay_ms: Fixed delay between attempts in ms; ``None`` (the
            default) uses exponential backoff from ``min_backoff``.
        retry_backoff: With ``retry_delay_ms`` set, grow it exponentially
            (with jitter, capped at ``max_backoff``) instead of keeping it fixed.
            Defaults to ``False``.
        max_retry_after_ms: Cap on a provider's ``Retry-After``. Defaults to 300 000.
        consumer_timeout_ms: RabbitMQ's ``consumer_timeout``; delays at or
            above it are refused. Defaults to 1 800 000 (30 min).
        worker_id: Recorded in each attempt and log line. Defaults to ``host-pid``.
        log_success: Log ``Job X completed successfully on attempt N`` at INFO.
            Defaults to ``True``.
        native_delays: On RabbitMQ, delay retries in TTL queues that RabbitMQ
            routes back when due; ``False`` uses Dramatiq's ``<queue>.DQ``.
            Defaults to ``True``. Delays are then rounded up to two significant digits.
        retry_priority_boost: Added to a retry's RabbitMQ priority (capped at the
            broker's ``max_priority``) so that a due retry runs before the backlog
            of its own priority. Defaults to 1; 0 keeps the job's priority.

    Raises:
        RetryConfigurationError: A delay is at or above ``consumer_timeout_ms``.
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
    ) -> None:
        self.classifier: Classifier = classifier or ErrorClassifier()
        self.max_retries = max_retries
        self.consumer_timeout_ms = consumer_timeout_ms
        self.min_backoff = min_backoff or DEFAULT_MIN_BACKOFF_MS
        self.max_backoff = max_backoff or int(consumer_timeout_ms * 0.9)
        self.retry_when = retry_when
        self.retry_delay_ms = retry_delay_ms
        self.retry_backoff = retry_backoff
        self.max_retry_after_ms = max_retry_after_ms
        self.worker_id = worker_id or _default_worker_id()
        self._log = RetryLog(self.worker_id)
        self.log_success = log_success
        self.native_delays = native_delays
        self.retry_priority_boost = retry_priority_boost
        self._publisher = ConfirmPublisher()
        self._check_delays(
            "ClassifiedRetries",
            retry_delay_ms=retry_delay_ms,
            min_backoff=self.min_backoff,
            max_backoff=self.max_backoff,
            max_retry_after_ms=max_retry_after_ms,
        )

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

    def _check_delays(self, owner: str, **delays_ms: int | None) -> None:
        for name, value in delays_ms.items():
            if value is None:
                continue
            if not isinstance(value, int) or value < 0:
                raise RetryConfigurationError(f"{owner}: {name}={value!r} is not allowed; use whole ms >= 0")
            if value >= self.consumer_timeout_ms:
                raise RetryConfigurationError(
                    f"{owner}: {name}={value} ms is at or above RabbitMQ's consumer_timeout "
                    f"({self.consumer_timeout_ms} ms); delayed messages are held unacked until due, "
                    f"so use a delay below it or raise consumer_timeout on the broker"
                )

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        self._check_delays(
            f"actor {actor.actor_name!r}",
            retry_delay_ms=actor.options.get("retry_delay_ms"),
            min_backoff=actor.options.get("min_backoff"),
            max_backoff=actor.options.get("max_backoff"),
        )

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        worker_logger = logging.getLogger("dramatiq.worker.WorkerThread")
        if not any(isinstance(f, DropWorkerFailureLogs) for f in worker_logger.filters):
            worker_logger.addFilter(DropWorkerFailureLogs())
        if not getattr(broker, "confirm_delivery", True):
            logger.warning(
                "The broker publishes without confirms: a retry it loses cannot be detected. "
                "Build it with confirm_delivery=True."
            )

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
                options.get("job_id") or message.message_id,
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
        if isinstance(exception, dramatiq.Retry):
            classification = Classification(RETRY_REQUESTED, True, None, "type")
        else:
            classification = self.classifier(exception)
        context["category"] = classification.category.name
        error = f"{exception}" or type(exception).__name__
        options["retries"] = retries + 1
        options["requeue_timestamp"] = int(time.time() * 1000)

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

        delay_ms = (
            self._delay_ms(message, actor, exception, classification, retries) if reason == "retry" else None
        )
        if delay_ms is not None and self._native(broker):
            delay_ms = bucket_ms(delay_ms)
        self._record_attempt(message, exception, classification, retries + 1, delay_ms)

        if delay_ms is not None:
            self._log.retry(context, error, delay_ms)
            try:
                self._enqueue_retry(broker, message, delay_ms)
                return
            except Exception as exc:
                self._log.retry_unpublished(context, exc)
                reason = "retry_publish_failed"
        else:
            self._log.dead_letter(reason, context, error, exception, classification)

        self._dead_letter(
            broker,
            message,
            actor=actor,
            classification=classification,
            exception=exception,
            reason=reason,
            retries=retries,
            max_retries=max_retries,
        )

    def _native(self, broker: dramatiq.Broker) -> bool:
        return self.native_delays and isinstance(broker, RabbitmqBroker)

    def _enqueue_retry(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, delay_ms: int) -> None:
        """Publish the retry, confirmed, to be delivered after ``delay_ms``.

        Raises:
            Exception: Whatever the broker raised; the message was not re-enqueued.
        """
        if isinstance(broker, RabbitmqBroker) and self._native(broker):
            priority = message.options.get("broker_priority")
            if self.retry_priority_boost and broker.max_priority:
                priority = min((priority or 0) + self.retry_priority_boost, broker.max_priority)
            try:
                self._publisher.publish_delayed(
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
        broker.enqueue(message._message, delay=delay_ms)

    def _delay_ms(
        self,
        message: dramatiq.MessageProxy,
        actor: dramatiq.Actor[Any, Any],
        exception: BaseException,
        classification: Classification,
        retries: int,
    ) -> int:
        def option(name: str, default: Any) -> Any:
            return message.options.get(name, actor.options.get(name, default))

        max_backoff = min(option("max_backoff", self.max_backoff), self.max_backoff)
        if isinstance(exception, dramatiq.Retry) and exception.delay is not None:
            delay = int(exception.delay)
        elif classification.suggested_delay_s is not None:
            delay = min(int(classification.suggested_delay_s * 1000), self.max_retry_after_ms)
        else:
            fixed = option("retry_delay_ms", self.retry_delay_ms)
            if fixed is not None and not option("retry_backoff", self.retry_backoff):
                delay = int(fixed)
            else:
                factor = fixed if fixed is not None else option("min_backoff", self.min_backoff)
                _, delay = compute_backoff(retries, factor=factor, max_backoff=max_backoff)
        # Per-message options cannot be checked at start; clamp them below the timeout.
        return max(0, min(delay, int(self.consumer_timeout_ms * 0.9)))

    def _record_attempt(
        self,
        message: dramatiq.MessageProxy,
        exception: BaseException,
        classification: Classification,
        attempt: int,
        delay_ms: int | None,
    ) -> None:
        history: list[dict[str, Any]] = message.options.setdefault("attempt_history", [])
        history.append(
            {
                "attempt": attempt,
                "category": classification.category.name,
                "retryable": classification.retryable,
                "error_type": type(exception).__qualname__,
                "error": str(exception),
                "at_ms": int(time.time() * 1000),
                "worker_id": self.worker_id,
                "delay_ms": delay_ms,
                "redelivered": bool(getattr(message, "redelivered", False)),
            }
        )
        del history[:-MAX_ATTEMPT_HISTORY]

    # -- dead-lettering -----------------------------------------------------------

    def _dead_letter(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        actor: dramatiq.Actor[Any, Any],
        classification: Classification,
        exception: BaseException,
        reason: str,
        retries: int,
        max_retries: int | None,
    ) -> None:
        # Formatted once, for the final attempt only: retries carry the error in
        # their attempt history, and formatting a traceback per failure is costly.
        message.options["traceback"] = "".join(traceback.format_exception(exception, limit=30))
        message.options["dead_letter"] = {
            "reason": reason,
            "category": classification.category.name,
            "retryable": classification.retryable,
            "error_type": type(exception).__qualname__,
            "error": str(exception),
            "traceback": message.options["traceback"],
            "attempts": retries + 1,
            "max_retries": max_retries,
            "worker_id": self.worker_id,
            "queue_name": message.queue_name,
            "dead_lettered_at_ms": int(time.time() * 1000),
        }
        if not self._publish_dead_letter(broker, message):
            # RabbitMQ moves a nacked delivery to <queue>.XQ itself; only the
            # final attempt's details are missing from that copy.
            message.fail()
        if reason in ("exhausted", "retry_when"):
            self._notify_exhausted(broker, message, actor, retries, max_retries)

    def _notify_exhausted(
        self,
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
            logger.exception(
                "Job %s: could not notify on_retry_exhausted actor %r", message.message_id, target
            )

    def _publish_dead_letter(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        """Publish the enriched message to ``<queue>.XQ`` and wait for RabbitMQ's confirm."""
        if not isinstance(broker, RabbitmqBroker):
            return False
        try:
            self._publisher.publish(
                broker,
                xq_name(message.queue_name),
                message._message.encode(),
                priority=message.options.get("broker_priority"),
                headers={"x-provider-jobs-dead-letter": message.options["dead_letter"]["reason"]},
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
