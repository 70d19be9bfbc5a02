"""Dramatiq's default middleware with ``Retries`` swapped for ``ClassifiedRetries``, as a user swaps it."""

from __future__ import annotations

from dramatiq.middleware import AgeLimit, Callbacks, Middleware, Pipelines, ShutdownNotifications, TimeLimit

from provider_jobs.middleware import ClassifiedRetries, ErrorClassifier


def swapped_middleware() -> list[Middleware]:
    """``dramatiq.middleware.default_middleware``, instantiated in its order, ``Retries`` replaced."""
    return [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        ClassifiedRetries(classifier=ErrorClassifier()),
    ]
