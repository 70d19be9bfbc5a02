"""LogContext: binds the message being processed to every log line emitted meanwhile."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware

__all__ = ["LogContext"]

#: Message options copied into the log context when present.
_CONTEXT_OPTIONS = ("job_id", "provider", "operation")


class LogContext(Middleware):
    """Binds ``message_id``, ``actor``, ``attempt`` and the job's ids to structlog's
    context variables while a message is processed, so any log line a provider
    writes names its job."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        context: dict[str, Any] = {
            "message_id": message.message_id,
            "actor": message.actor_name,
            "attempt": message.options.get("retries", 0) + 1,
        }
        context.update({k: message.options[k] for k in _CONTEXT_OPTIONS if k in message.options})
        structlog.contextvars.bind_contextvars(**context)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
