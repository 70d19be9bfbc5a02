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
  ``max_retry_after_ms``;
  (see :mod:`.delays`);
- on RabbitMQ a retry waits in a TTL queue that RabbitMQ itself moves back to
  the work queue when due (see :mod:`.publisher`), with its priority raised so
  that a due retry does not wait behind the whole backlog;
- each attempt is recorded in the message, and a dead letter carries the final
  attempt's error, published to ``<queue>.XQ`` with confirms before the
  original is acked (see :mod:`.dead_letters`);
- a retry whose publish fails is dead-lettered, never acked and lost;
- with ``breakers``, a job for a provider whose breaker is open (or whose
  ``Retry-After`` runs) is not run: it waits, without spending an attempt, and
  is dead-lettered as ``provider_down`` after the breaker's ``max_wait_s`` (see
  :mod:`.breaker`). With ``park_waiting`` it waits for an open breaker in the
  provider's parking queue, untouched until a probe round or the breaker's
  closing takes it out (see :mod:`.parking`); else, and for a ``Retry-After``,
  in a delay queue until the next probe.

Like ``Retries`` it must be the last middleware in the broker's list, so that
its ``after_process_message`` runs first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware, SkipMessage

from .. import identity
from . import dead_letters, delays
from .breaker import ProviderBreakers, ProviderDown, job_of
from .classifier import PROVIDER_DOWN, RETRY_REQUESTED, Classification, ErrorClassifier
from .dead_letters import MAX_ATTEMPT_HISTORY  # noqa: F401 - importable here, as before the split
from .delays import (
    DEFAULT_CONSUMER_TIMEOUT_MS,
    DEFAULT_MAX_BACKOFF_MS,
    DEFAULT_MAX_RETRY_AFTER_MS,
    DEFAULT_MIN_BACKOFF_MS,
    RetryConfigurationError,
)
from .parking import PARKED_OPTION, Parking
from .publisher import ConfirmPublisher, bucket_ms
from .retry_log import BREAKER_WAIT_ATTRIBUTE, DropWorkerFailureLogs, RetryLog, logger

__all__ = ["ClassifiedRetries", "RetryConfigurationError"]

#: Dramatiq's own default, kept so that swapping ``Retries`` changes nothing.
DEFAULT_MAX_RETRIES = 20

#: Message options of a job waiting for its provider's breaker: when the wait began (epoch ms),
#: and how many times it was put back to wait.
WAITING_SINCE_OPTION = "breaker_waiting_since_ms"
WAITS_OPTION = "breaker_waits"

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
        breakers: Circuit breakers per provider: a job whose breaker is open waits for
            its next probe in a delay queue, without spending an attempt. Default ``None``:
            no breaker.
        park_waiting: On RabbitMQ with ``native_delays``, a job whose breaker is open
            waits in the provider's parking queue instead (see :mod:`.parking`); some
            process must then take parked jobs out (``ParkingKeeper``, which
            ``build_broker`` adds). Default ``False``.

    Raises:
        RetryConfigurationError: A delay is not whole ms >= 0 (here or when an
            actor is declared), or, when an actor is declared on a broker that
            would hold it unacked, at or above ``consumer_timeout_ms``.
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
        self.breakers = breakers
        self._publisher = ConfirmPublisher()
        #: Where jobs wait for an open breaker; ``None``: in the delay queues.
        self.parking = Parking(self._publisher) if park_waiting else None
        delays.check_delays(
            "ClassifiedRetries",
            None,
            retry_delay_ms=retry_delay_ms,
            min_backoff=self.min_backoff,
            max_backoff=self.max_backoff,
            max_retry_after_ms=max_retry_after_ms,
            hold_retries_up_to_ms=hold_retries_up_to_ms,
        )
        delays.check_delays(
            "ClassifiedRetries",
            consumer_timeout_ms,
            held_by="a retry due within it waits in the worker's consumer",
            hold_retries_up_to_ms=hold_retries_up_to_ms,
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

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        owner = f"actor {actor.actor_name!r}"
        options = actor.options
        delays.check_delays(
            owner,
            None,
            retry_delay_ms=options.get("retry_delay_ms"),
            min_backoff=options.get("min_backoff"),
            max_backoff=options.get("max_backoff"),
        )
        if not self._held_on_delay_queue(broker):
            return
        # On this path a retry's delay keeps a delivery unacked: refuse what would outlast
        # consumer_timeout. The backoff factor is not a delay: max_backoff caps what it grows to.
        held_by = f"with native_delays=False a retry waits in {actor.queue_name}.DQ"
        grows = options.get("retry_backoff", self.retry_backoff)
        delays.check_delays(
            "ClassifiedRetries",
            self.consumer_timeout_ms,
            held_by=held_by,
            max_backoff=self.max_backoff,
            max_retry_after_ms=self.max_retry_after_ms,
        )
        delays.check_delays(
            owner,
            self.consumer_timeout_ms,
            held_by=held_by,
            max_backoff=options.get("max_backoff"),
            retry_delay_ms=None if grows else options.get("retry_delay_ms", self.retry_delay_ms),
        )

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

    # -- the breaker ----------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if self.breakers is None or message.failed:
            return
        key = self.breakers.key(message)
        if key is None:
            return
        if message.options.pop(PARKED_OPTION, None) and self._waited_too_long(message):
            # It expired in its parking queue, which sent it here: it is not run again.
            self._wait_for_breaker(broker, message, key, 0.0, "open")
            setattr(message, BREAKER_WAIT_ATTRIBUTE, True)
            raise SkipMessage(f"job waited for provider {key} longer than its breaker's max_wait_s")
        gate = self.breakers.gate(key, job=job_of(message))
        if gate.admit:
            if not gate.probe:
                # The wait is over; a later one is measured from its own start. A probe that
                # fails waits on: its maximum wait counts from when it began to wait.
                message.options.pop(WAITING_SINCE_OPTION, None)
            return
        self._wait_for_breaker(broker, message, key, gate.wait_s, gate.reason)
        # Not run: the worker acks it (its copy waits in a delay queue) or nacks a failed one.
        setattr(message, BREAKER_WAIT_ATTRIBUTE, True)
        raise SkipMessage(f"provider {key} is not taking jobs ({gate.reason})")

    def _waited_too_long(self, message: dramatiq.MessageProxy) -> bool:
        """Whether ``message`` has waited for its breaker its ``max_wait_s``."""
        assert self.breakers is not None
        since = message.options.get(WAITING_SINCE_OPTION)
        if not isinstance(since, int):
            return False
        return time.time() * 1000 - since >= self.breakers.max_wait_s * 1000

    def _wait_for_breaker(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, key: str, wait_s: float, reason: str
    ) -> None:
        """Put ``message`` back in a delay queue until its breaker's next probe, its attempts
        untouched; dead-letter it as ``provider_down`` once it has waited ``max_wait_s``."""
        assert self.breakers is not None
        options = message.options
        now_ms = int(time.time() * 1000)
        since = options.setdefault(WAITING_SINCE_OPTION, now_ms)
        waited_s = (now_ms - since) / 1000 if isinstance(since, int) else 0.0
        left_s = self.breakers.max_wait_s - waited_s
        if left_s <= 0:
            actor = broker.get_actor(message.actor_name)
            retries: int = options.get("retries", 0)
            max_retries = options.get("max_retries", actor.options.get("max_retries", self.max_retries))
            state = self.breakers.state(key)
            exception = ProviderDown(key, state, waited_s=waited_s)
            options["breaker"] = state.as_dict()
            classification = Classification(PROVIDER_DOWN, False, None, "breaker")
            context = self._log.context(message, retries + 1, max_retries)
            context["category"] = PROVIDER_DOWN.name
            self._log.dead_letter("provider_down", context, str(exception), exception, classification)
            self._dead_letter(
                broker,
                message,
                actor=actor,
                classification=classification,
                exception=exception,
                reason="provider_down",
                retries=retries,
                max_retries=max_retries,
            )
            return
        options[WAITS_OPTION] = int(options.get(WAITS_OPTION, 0) or 0) + 1
        if reason == "open" and self._park(broker, message, key, left_s):
            return
        delay_ms = max(1, int(min(wait_s, left_s) * 1000) + 1)
        # A fifth of a probe interval at most late: a few delay queues per interval, not one per 100 ms.
        step_ms = max(1, int(self.breakers.probe_interval_s * 200))
        delay_ms = -(-delay_ms // step_ms) * step_ms
        if self._native(broker):
            delay_ms = bucket_ms(delay_ms)
        try:
            delays.enqueue_retry(
                self._publisher,
                broker,
                message,
                delay_ms,
                native=self._native(broker),
                boost=0,
                max_held_ms=self._max_held_ms,
            )
        except Exception as exc:
            logger.warning(
                "Job %s: could not put it back to wait for provider %s (%s: %s); nacking it",
                job_of(message),
                key,
                type(exc).__name__,
                exc,
            )
            message.fail()
            return
        logger.debug(
            "Job %s waits %s s for provider %s (%s)",
            job_of(message),
            f"{delay_ms / 1000:g}",
            key,
            reason,
        )

    def _park(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, key: str, left_s: float) -> bool:
        """Park ``message`` for ``key``'s open breaker, to expire when its wait is over; whether
        it was parked (else it waits in a delay queue)."""
        if self.parking is None or not self._native(broker):
            return False
        message.options[PARKED_OPTION] = True
        try:
            self.parking.park(broker, message, key, int(left_s * 1000) + 1)
        except Exception as exc:
            message.options.pop(PARKED_OPTION, None)
            logger.warning(
                "Job %s: could not park it for provider %s (%s: %s); it waits in a delay queue",
                job_of(message),
                key,
                type(exc).__name__,
                exc,
            )
            return False
        logger.debug("Job %s parked until provider %s takes jobs again", job_of(message), key)
        return True

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
            if not message.failed:
                if self.breakers is not None and (key := self.breakers.key(message)) is not None:
                    self.breakers.record_success(key, job=job_of(message))
                if self.log_success:
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
        if not requested and self._breaker_absorbs(
            broker, message, exception, classification, context, reason=reason
        ):
            return
        if reason != "throws":
            # As Retries: an expected exception fails the message before a retry is counted.
            options["retries"] = retries + 1
            options["requeue_timestamp"] = int(time.time() * 1000)

        delay_ms = (
            self._delay_ms(message, actor, exception, classification, retries) if reason == "retry" else None
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

    def _breaker_absorbs(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        exception: BaseException,
        classification: Classification,
        context: dict[str, Any],
        *,
        reason: str,
    ) -> bool:
        """Feed a failure to its provider's breaker. When the breaker is open and the failure is
        of its kind, the attempt was the provider's failure, not the job's: the job waits for the
        next probe, its attempt not counted, and this returns ``True``."""
        if self.breakers is None or (key := self.breakers.key(message)) is None:
            return False
        category = classification.category.name
        history: list[Any] = message.options.get("attempt_history") or [{}]
        first_ms = history[0].get("at_ms") if isinstance(history[0], dict) else None
        is_open = self.breakers.record_failure(
            key,
            category,
            job=job_of(message),
            attempt=message.options.get("retries", 0) + 1,
            last_attempt=reason != "retry",
            first_failed_at=first_ms / 1000 if isinstance(first_ms, int) else None,
            retry_after_s=classification.suggested_delay_s,
        )
        if not (reason in ("retry", "exhausted") and is_open and self.breakers.is_health_failure(category)):
            return False
        wait_s = self.breakers.wait_s(key)
        attempt = message.options.get("retries", 0) + 1
        dead_letters.record_attempt(
            message, exception, classification, attempt, int(wait_s * 1000), worker_id=self.worker_id
        )
        self._log.breaker_wait(context, f"{exception}" or type(exception).__name__, key)
        self._wait_for_breaker(broker, message, key, wait_s, "open")
        return True

    def _native(self, broker: dramatiq.Broker) -> bool:
        return self.native_delays and isinstance(broker, RabbitmqBroker)

    def _held_on_delay_queue(self, broker: dramatiq.Broker) -> bool:
        """Whether ``broker``'s retries wait in ``<queue>.DQ``, held unacked by a RabbitMQ consumer."""
        return isinstance(broker, RabbitmqBroker) and not self.native_delays

    def _delay_ms(
        self,
        message: dramatiq.MessageProxy,
        actor: dramatiq.Actor[Any, Any],
        exception: BaseException,
        classification: Classification,
        retries: int,
    ) -> int:
        return delays.retry_delay_ms(self, message, actor, exception, classification, retries=retries)

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
        dead_letters.stamp_dead_letter(
            message,
            classification=classification,
            exception=exception,
            reason=reason,
            retries=retries,
            max_retries=max_retries,
            worker_id=self.worker_id,
        )
        if not self._publish_dead_letter(broker, message):
            # RabbitMQ moves a nacked delivery to <queue>.XQ itself; only the
            # final attempt's details are missing from that copy.
            message.fail()
        if reason in ("exhausted", "retry_when"):
            dead_letters.notify_exhausted(broker, message, actor, retries, max_retries)

    def _publish_dead_letter(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> bool:
        if dead_letters.defer_dead_letter(broker, message):
            return True
        return dead_letters.publish_dead_letter(self._publisher, broker, message)
