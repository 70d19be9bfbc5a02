"""LogContext: binds the message being processed to every log line emitted meanwhile."""

from __future__ import annotations

import threading
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

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        options = message.options
        context: dict[str, Any] = {
            "message_id": message.message_id,
            "actor": message.actor_name,
            "attempt": options.get("retries", 0) + 1,
        }
        context.update({k: options[k] for k in _CONTEXT_OPTIONS if k in options})
        self._local.tokens = structlog.contextvars.bind_contextvars(**context)

    def _unbind(self) -> None:
        # Resetting by token is much cheaper than clear_contextvars(), which copies the context.
        tokens = getattr(self._local, "tokens", None)
        if tokens is not None:
            self._local.tokens = None
            structlog.contextvars.reset_contextvars(**tokens)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._unbind()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._unbind()
