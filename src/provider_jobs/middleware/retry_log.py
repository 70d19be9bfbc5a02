"""The log lines of retries and dead letters, with structured fields.

Logged through stdlib ``logging`` (logger ``provider_jobs.retries``) with
``extra`` fields, so that any application's logging shows them and our
structlog configuration renders the fields: ``job_id``, ``message_id``,
``actor``, ``worker_id``, ``attempt``, ``max_attempts``, ``provider``,
``operation``, and ``category`` / ``delay_s`` / ``reason`` where they apply.

Classified failures get the product's lines (retryable at WARNING, permanent
and exhausted at ERROR). The two outcomes ``Retries`` has its own words for
keep its lines and levels, so that swapping the middleware changes no log: a
:class:`dramatiq.Retry` is retried at INFO and gives up at WARNING, and an
exception the actor ``throws`` is aborted at INFO.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

from .classifier import Classification

__all__ = ["BREAKER_WAIT_ATTRIBUTE", "DropWorkerFailureLogs", "RetryLog", "seconds"]

logger = logging.getLogger("provider_jobs.retries")

#: The line Dramatiq's worker logs, with a traceback, for every failed attempt.
_WORKER_FAILURE_LOG = "Failed to process message %s with unhandled exception."
#: The WARNING Dramatiq's worker logs for every skipped message.
_WORKER_SKIP_LOG = "Message %s was skipped."
#: Set on a message's proxy that waits for its provider's breaker: its skip is not a warning.
BREAKER_WAIT_ATTRIBUTE = "provider_jobs_breaker_wait"


class DropWorkerFailureLogs(logging.Filter):
    """Drops the worker's own ERROR-with-traceback line (we log each failure once) and its
    warning for a job that waits for its provider's breaker (the breaker logs its own lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _WORKER_SKIP_LOG and isinstance(record.args, tuple) and record.args:
            return not getattr(record.args[0], BREAKER_WAIT_ATTRIBUTE, False)
        return record.msg != _WORKER_FAILURE_LOG


def seconds(delay_ms: int) -> str:
    """``5000`` as ``5.0``, ``5300`` as ``5.3``, ``20`` as ``0.02``, ``1234567`` as ``1235``: as
    logged, never rounded to 0 and never in exponent notation."""
    if delay_ms % 100 == 0:
        return f"{delay_ms / 1000:.1f}"
    # Three significant digits would write 999.999 s as 1e+03: from 100 s on, whole seconds.
    return f"{delay_ms / 1000:.3g}" if delay_ms < 100_000 else f"{delay_ms / 1000:.0f}"


class RetryLog:
    """Writes the retry middleware's lines for one worker.

    Args:
        worker_id: Put in every line's fields.
    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def context(
        self, message: dramatiq.MessageProxy, attempt: int, max_retries: int | None
    ) -> dict[str, Any]:
        """The structured fields of a line about ``message``'s attempt ``attempt``."""
        options = message.options
        return {
            "job_id": options.get("job_id") or message.message_id,
            "message_id": message.message_id,
            "actor": message.actor_name,
            "worker_id": self.worker_id,
            "attempt": attempt,
            "max_attempts": max_retries + 1 if isinstance(max_retries, int) else "-",
            "provider": options.get("provider"),
            "operation": options.get("operation"),
        }

    def success(self, message: dramatiq.MessageProxy, attempt: int, max_retries: int | None) -> None:
        """INFO ``Job abc123 completed successfully on attempt 3``."""
        if logger.isEnabledFor(logging.INFO):
            context = self.context(message, attempt, max_retries)
            logger.info(
                "Job %s completed successfully on attempt %d", context["job_id"], attempt, extra=context
            )

    def retry(self, context: dict[str, Any], error: str, delay_ms: int) -> None:
        """WARNING ``Job abc123 failed with retryable error: ... Retrying in 5.0s... (attempt 1/3)``."""
        context["delay_s"] = delay_ms / 1000
        logger.warning(
            "Job %s failed with retryable error: %s. Retrying in %ss... (attempt %d/%s)",
            context["job_id"],
            error,
            seconds(delay_ms),
            context["attempt"],
            context["max_attempts"],
            extra=context,
        )

    def breaker_wait(self, context: dict[str, Any], error: str, key: str) -> None:
        """WARNING ``Job abc123 failed with retryable error: ... Provider X's breaker is open: ...``."""
        logger.warning(
            "Job %s failed with retryable error: %s. Provider %s's breaker is open: the job waits for "
            "its next probe, and this attempt is not counted (attempt %d/%s)",
            context["job_id"],
            error,
            key,
            context["attempt"],
            context["max_attempts"],
            extra=context,
        )

    def retry_requested(self, context: dict[str, Any], delay_ms: int) -> None:
        """INFO ``Retrying message 'id' in 50 milliseconds.``: Retries' line for a :class:`dramatiq.Retry`,
        which asks for another attempt and is not a failure."""
        context["delay_s"] = delay_ms / 1000
        logger.info("Retrying message %r in %d milliseconds.", context["message_id"], delay_ms, extra=context)

    def retries_exceeded(self, reason: str, context: dict[str, Any]) -> None:
        """WARNING ``Retries exceeded for message 'id'.``: Retries' line for a :class:`dramatiq.Retry` past
        the limit; ``Retry`` exists so that asking for attempts logs no error."""
        context["reason"] = reason
        logger.warning("Retries exceeded for message %r.", context["message_id"], extra=context)

    def aborted(self, context: dict[str, Any]) -> None:
        """INFO ``Aborting message 'id'.``: Retries' line for an exception the actor ``throws``, one it
        expects; the worker has logged it at INFO too."""
        context["reason"] = "throws"
        logger.info("Aborting message %r.", context["message_id"], extra=context)

    def retry_unpublished(self, context: dict[str, Any], exc: BaseException) -> None:
        """ERROR: the retry could not be published, so the job is dead-lettered instead."""
        logger.error(
            "Job %s could not be re-enqueued for retry (%s: %s); dead-lettering it, not losing it",
            context["job_id"],
            type(exc).__name__,
            exc,
            extra=context,
        )

    def dead_letter(
        self,
        reason: str,
        context: dict[str, Any],
        error: str,
        exception: BaseException,
        classification: Classification,
    ) -> None:
        """ERROR: the non-retryable and exhausted lines, or why else the job is not retried."""
        context["reason"] = reason
        # A traceback helps only where nobody anticipated the failure.
        exc_info = exception if classification.matched_by == "default" else None
        if reason == "exhausted":
            logger.error(
                "Job %s exhausted all retries and will be moved to DLQ",
                context["job_id"],
                extra=context,
                exc_info=exc_info,
            )
        elif reason == "non_retryable":
            logger.error(
                "Job %s failed (attempt %d/%s): %s. This is non-retryable, moving to DLQ",
                context["job_id"],
                context["attempt"],
                context["max_attempts"],
                error,
                extra=context,
                exc_info=exc_info,
            )
        else:
            logger.error(
                "Job %s failed (attempt %d/%s): %s. Not retried (%s), moving to DLQ",
                context["job_id"],
                context["attempt"],
                context["max_attempts"],
                error,
                reason,
                extra=context,
                exc_info=exc_info,
            )
