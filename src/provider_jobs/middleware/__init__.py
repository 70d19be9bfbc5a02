"""Middleware reusable by any Dramatiq application: error classification,
classified retries and log context. Depends on Dramatiq and nothing else of ours."""

from __future__ import annotations

from .classifier import (
    CATEGORIES,
    Classification,
    ClassificationRule,
    ErrorCategory,
    ErrorClassifier,
    message_rule,
    type_rule,
)
from .log_context import LogContext
from .retries import ClassifiedRetries, Classifier, RetryConfigurationError

__all__ = [
    "CATEGORIES",
    "Classification",
    "ClassificationRule",
    "ClassifiedRetries",
    "Classifier",
    "ErrorCategory",
    "ErrorClassifier",
    "LogContext",
    "RetryConfigurationError",
    "message_rule",
    "type_rule",
]
