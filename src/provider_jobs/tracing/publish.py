"""publish_failed: tell a broker's tracing that a message's publish failed, without OpenTelemetry."""

from __future__ import annotations

from typing import Any

__all__ = ["publish_failed"]


def publish_failed(broker: Any, message: Any, error: BaseException | str) -> None:
    """End ``message``'s open ``send`` span as an error, when ``broker`` traces its messages.

    Dramatiq has no hook for a failed publish (``after_enqueue`` runs only for a
    published message); whoever publishes calls this instead. It reaches the
    ``Tracing`` middleware by its ``send_failed`` method, so that it costs nothing and
    needs no OpenTelemetry when tracing is off.

    Args:
        broker: The Dramatiq broker whose middleware saw the message's ``before_enqueue``.
        message: The Dramatiq message that was not published.
        error: The exception raised, or what RabbitMQ answered.
    """
    for middleware in broker.middleware:
        send_failed = getattr(middleware, "send_failed", None)
        if callable(send_failed):
            send_failed(message, error)
