"""OpenSends: the ``send`` spans whose publish is in flight, each ended by its outcome."""

from __future__ import annotations

import threading
import time

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

__all__ = ["MAX_OPEN_SENDS", "OUTCOME_UNKNOWN", "SEND_OUTCOME_WAIT_S", "OpenSends", "end_send"]

#: How long a ``send`` span waits for its publish's outcome, in seconds, before it ends as
#: :data:`OUTCOME_UNKNOWN` (a broker that neither confirmed nor raised, such as one that does
#: not report failed publishes).
SEND_OUTCOME_WAIT_S = 300.0

#: The most ``send`` spans open at once; past it, the oldest ends as :data:`OUTCOME_UNKNOWN`.
MAX_OPEN_SENDS = 10_000

#: Why a ``send`` span ended without hearing its publish's outcome.
OUTCOME_UNKNOWN = "publish outcome unknown: it was not reported"


def end_send(span: trace.Span, error: BaseException | str | None = None) -> None:
    """End a ``send`` span once its publish is settled: as an error when it failed.

    Args:
        span: The open ``send`` span.
        error: Why the publish failed (the exception, or what RabbitMQ answered). Default
            ``None``: RabbitMQ confirmed it.
    """
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    elif error is not None:
        span.set_attribute("error.type", "publish_failed")
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


class OpenSends:
    """The open ``send`` spans by message id, from ``before_enqueue`` until the publish's outcome.

    Bounded, so that a publish whose outcome never comes costs neither memory nor a span that
    is never exported: each :meth:`open` ends the spans older than ``outcome_wait_s``, and the
    oldest when more than ``max_open`` are open, as :data:`OUTCOME_UNKNOWN`. Safe to use from
    several threads.

    Args:
        outcome_wait_s: How long a span waits for its outcome, in seconds. Default
            :data:`SEND_OUTCOME_WAIT_S`.
        max_open: The most spans open at once. Default :data:`MAX_OPEN_SENDS`.
    """

    def __init__(
        self, *, outcome_wait_s: float = SEND_OUTCOME_WAIT_S, max_open: int = MAX_OPEN_SENDS
    ) -> None:
        self.outcome_wait_s = outcome_wait_s
        self.max_open = max_open
        self._lock = threading.Lock()
        # In the order they opened, so the oldest is first.
        self._spans: dict[str, tuple[trace.Span, float]] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def get(self, message_id: str) -> trace.Span | None:
        """The open span of ``message_id``, or ``None``."""
        entry = self._spans.get(message_id)
        return None if entry is None else entry[0]

    def open(self, message_id: str, span: trace.Span) -> None:
        """Keep ``span`` open until :meth:`settle` of ``message_id``, or until it is stale."""
        now = time.monotonic()
        stale: list[trace.Span] = []
        with self._lock:
            self._spans[message_id] = (span, now)
            while self._spans:
                oldest = next(iter(self._spans))
                _, opened = self._spans[oldest]
                if len(self._spans) <= self.max_open and now - opened < self.outcome_wait_s:
                    break
                stale.append(self._spans.pop(oldest)[0])
        for old in stale:
            end_send(old, OUTCOME_UNKNOWN)

    def settle(self, message_id: str, error: BaseException | str | None = None) -> None:
        """End ``message_id``'s open span by its publish's outcome; nothing when none is open.

        Args:
            message_id: The message published.
            error: Why the publish failed. Default ``None``: RabbitMQ confirmed it.
        """
        with self._lock:
            entry = self._spans.pop(message_id, None)
        if entry is not None:
            end_send(entry[0], error)
