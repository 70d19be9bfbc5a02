"""Middleware reusable by any Dramatiq application: error classification,
classified retries, circuit breakers per provider and the wait for them, log context and Prometheus
metrics, and the shape of the dead letters they write. Depends on Dramatiq and
nothing else of ours."""

from __future__ import annotations

from .breaker import BreakerState, ProviderBreakers, ProviderDown
from .breaker_wait import BreakerWait
from .classifier import (
    CATEGORIES,
    Classification,
    ClassificationRule,
    ErrorCategory,
    ErrorClassifier,
    message_rule,
    type_rule,
)
from .dead_letter_details import DeadLetterDetails
from .log_context import LogContext
from .metrics import Metrics, metrics_registry, multiprocess_dir, render_metrics
from .retries import ClassifiedRetries, Classifier, RetryConfigurationError

__all__ = [
    "CATEGORIES",
    "BreakerState",
    "BreakerWait",
    "Classification",
    "ClassificationRule",
    "ClassifiedRetries",
    "Classifier",
    "DeadLetterDetails",
    "ErrorCategory",
    "ErrorClassifier",
    "LogContext",
    "Metrics",
    "ProviderBreakers",
    "ProviderDown",
    "RetryConfigurationError",
    "message_rule",
    "metrics_registry",
    "multiprocess_dir",
    "render_metrics",
    "type_rule",
]
