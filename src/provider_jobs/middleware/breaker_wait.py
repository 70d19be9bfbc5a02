"""BreakerWait: a job for a provider whose circuit breaker is open waits instead of running.

Before a job runs, its provider's breaker (see :mod:`.breaker`) decides whether it
may: a job for a provider whose breaker is open (or whose ``Retry-After`` runs) is
not run. It waits, without spending an attempt, and is dead-lettered as
``provider_down`` after the breaker's ``max_wait_s``. With ``park_waiting`` it waits
for an open breaker in the provider's parking queue, untouched until a probe round
or the breaker's closing takes it out (see :mod:`.parking`); else, and for a
``Retry-After``, in a delay queue until the next probe.

A success is fed to the breaker by :meth:`BreakerWait.after_process_message`; a
failure by :class:`.ClassifiedRetries`, which classifies it and asks
:meth:`BreakerWait.absorbs` whether the breaker takes it over: an attempt that
failed because its provider is down is not the job's, and the job waits for the
next probe instead of being retried or dead-lettered.

In a broker's middleware list it comes right after ``ClassifiedRetries``, which
is given it (``ClassifiedRetries(breaker_wait=...)``): its gate is then the last
hook before the job runs, and it records a success before the retry decision.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware, SkipMessage

from .. import identity
from . import dead_letters, delays
from .breaker import ProviderBreakers, ProviderDown, job_of
from .classifier import PROVIDER_DOWN, Classification
from .delays import DEFAULT_CONSUMER_TIMEOUT_MS, DEFAULT_MAX_RETRIES
from .parking import PARKED_OPTION, Parking
from .publisher import ConfirmPublisher, bucket_ms
from .retry_log import BREAKER_WAIT_ATTRIBUTE, RetryLog, logger

__all__ = ["WAITING_SINCE_OPTION", "WAITS_OPTION", "BreakerWait"]

#: Message options of a job waiting for its provider's breaker: when the wait began (epoch ms),
#: and how many times it was put back to wait.
WAITING_SINCE_OPTION = "breaker_waiting_since_ms"
WAITS_OPTION = "breaker_waits"


class BreakerWait(Middleware):
    """Hold jobs back while their provider's breaker is open; dead-letter them after ``max_wait_s``.

    Args:
        breakers: The circuit breakers per provider.
        park_waiting: On RabbitMQ with ``native_delays``, a job whose breaker is open
            waits in the provider's parking queue instead of a delay queue (see
            :mod:`.parking`); some process must then take parked jobs out
            (``ParkingKeeper``, which ``build_broker`` adds). Default ``False``.
        native_delays: On RabbitMQ, wait in TTL queues that RabbitMQ routes back when
            due; ``False`` uses Dramatiq's ``<queue>.DQ``. Defaults to ``True``; give
            ``ClassifiedRetries``'s.
        consumer_timeout_ms: RabbitMQ's ``consumer_timeout``: a wait in ``<queue>.DQ``
            stays below it. Defaults to 1 800 000 (30 min).
        max_retries: Recorded in a ``provider_down`` dead letter when neither the
            message nor its actor sets one. Defaults to 20; give ``ClassifiedRetries``'s.
        worker_id: Recorded in attempts, dead letters and log lines. Defaults to ``host-pid``.
        publisher: The confirmed publisher it puts jobs back with. Default: its own.
    """

    def __init__(
        self,
        breakers: ProviderBreakers,
        *,
        park_waiting: bool = False,
        native_delays: bool = True,
        consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        worker_id: str | None = None,
        publisher: ConfirmPublisher | None = None,
    ) -> None:
        self.breakers = breakers
        self.native_delays = native_delays
        self.max_retries = max_retries
        self.worker_id = identity.worker_id(worker_id)
        self._log = RetryLog(self.worker_id)
        #: The longest a RabbitMQ consumer may hold a delayed message, with a margin.
        self._max_held_ms = int(consumer_timeout_ms * 0.9)
        self.publisher = publisher or ConfirmPublisher()
        #: Where jobs wait for an open breaker; ``None``: in the delay queues.
        self.parking = Parking(self.publisher) if park_waiting else None

    # -- before a job runs ---------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.failed:
            return
        key = self.breakers.key(message)
        if key is None:
            return
        if message.options.pop(PARKED_OPTION, None) and self._waited_too_long(message):
            # It expired in its parking queue, which sent it here: it is not run again.
            self._wait(broker, message, key, 0.0, "open")
            setattr(message, BREAKER_WAIT_ATTRIBUTE, True)
            raise SkipMessage(f"job waited for provider {key} longer than its breaker's max_wait_s")
        gate = self.breakers.gate(key, job=job_of(message))
        if gate.admit:
            if not gate.probe:
                # The wait is over; a later one is measured from its own start. A probe that
                # fails waits on: its maximum wait counts from when it began to wait.
                message.options.pop(WAITING_SINCE_OPTION, None)
            return
        self._wait(broker, message, key, gate.wait_s, gate.reason)
        # Not run: the worker acks it (its copy waits in a delay queue) or nacks a failed one.
        setattr(message, BREAKER_WAIT_ATTRIBUTE, True)
        raise SkipMessage(f"provider {key} is not taking jobs ({gate.reason})")

    # -- its outcome ---------------------------------------------------------------

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        # A message failed before it ran (AgeLimit, a before-hook) did not succeed.
        if exception is None and not message.failed and (key := self.breakers.key(message)) is not None:
            self.breakers.record_success(key, job=job_of(message))

    def absorbs(
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
        next probe, its attempt not counted, and this returns ``True``.

        Args:
            broker: The message's broker.
            message: The failed message.
            exception: What the attempt raised.
            classification: The exception's classification.
            context: The retry decision's log context (see :class:`.RetryLog`).
            reason: The retry decision: ``"retry"``, ``"exhausted"`` or why it is dead-lettered.
        """
        if (key := self.breakers.key(message)) is None:
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
        self._wait(broker, message, key, wait_s, "open")
        return True

    # -- waiting -------------------------------------------------------------------

    def _waited_too_long(self, message: dramatiq.MessageProxy) -> bool:
        """Whether ``message`` has waited for its breaker its ``max_wait_s``."""
        since = message.options.get(WAITING_SINCE_OPTION)
        if not isinstance(since, int):
            return False
        return time.time() * 1000 - since >= self.breakers.max_wait_s * 1000

    def _wait(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, key: str, wait_s: float, reason: str
    ) -> None:
        """Put ``message`` back in a delay queue until its breaker's next probe, its attempts
        untouched; dead-letter it as ``provider_down`` once it has waited ``max_wait_s``."""
        options = message.options
        now_ms = int(time.time() * 1000)
        since = options.setdefault(WAITING_SINCE_OPTION, now_ms)
        waited_s = (now_ms - since) / 1000 if isinstance(since, int) else 0.0
        left_s = self.breakers.max_wait_s - waited_s
        if left_s <= 0:
            self._provider_down(broker, message, key, waited_s)
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
                self.publisher,
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

    def _provider_down(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, key: str, waited_s: float
    ) -> None:
        """Dead-letter ``message`` as ``provider_down``, with its breaker's state."""
        options = message.options
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
        dead_letters.send_dead_letter(
            self.publisher,
            broker,
            message,
            classification=classification,
            exception=exception,
            reason="provider_down",
            retries=retries,
            max_retries=max_retries,
            worker_id=self.worker_id,
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

    def _native(self, broker: dramatiq.Broker) -> bool:
        return self.native_delays and isinstance(broker, RabbitmqBroker)
