"""Error classification: which failures are worth retrying.

An :class:`ErrorClassifier` turns an exception into a :class:`Classification`:
a named :class:`ErrorCategory`, whether to retry, and an optional suggested
delay (a provider's ``Retry-After``). It looks, in this order, and the first
answer wins:

1. user rules, in the order given (plain callables, see :data:`ClassificationRule`);
2. the exception's ``category`` attribute (every :class:`~provider_jobs.errors.ProviderError`
   has one);
3. an HTTP status on the exception (``status_code``, or ``response.status_code``
   as httpx's ``HTTPStatusError`` has);
4. the exception type: :class:`TimeoutError` is ``timeout``, :class:`ConnectionError`
   is ``connection_error``;
5. the message text, case-insensitively: first the provider-not-found and
   not-available phrases (specific sentences, and a missing provider's name may
   contain any word), then permanent phrases before transient ones (a validation
   error that mentions a connection string stays permanent);
6. otherwise ``unknown``, retryable unless ``unknown_retryable=False``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "AUTHORIZATION",
    "BUSY",
    "CATEGORIES",
    "CONNECTION_ERROR",
    "FORBIDDEN",
    "INVALID_INPUT",
    "PROVIDER_DOWN",
    "PROVIDER_NOT_AVAILABLE",
    "PROVIDER_NOT_FOUND",
    "RETRY_REQUESTED",
    "SERVICE_UNAVAILABLE",
    "TIMEOUT",
    "UNKNOWN",
    "UNKNOWN_OPERATION",
    "UNSUPPORTED",
    "VALIDATION",
    "Classification",
    "ClassificationRule",
    "ErrorCategory",
    "ErrorClassifier",
    "message_rule",
    "type_rule",
]


@dataclass(frozen=True, slots=True)
class ErrorCategory:
    """A named kind of failure and whether it is worth retrying.

    Args:
        name: Stable identifier, used in logs, metrics and the archive.
        retryable: Whether a failure of this kind may succeed on a later attempt.
    """

    name: str
    retryable: bool


PROVIDER_NOT_FOUND = ErrorCategory("provider_not_found", retryable=True)
PROVIDER_NOT_AVAILABLE = ErrorCategory("provider_not_available", retryable=True)
CONNECTION_ERROR = ErrorCategory("connection_error", retryable=True)
TIMEOUT = ErrorCategory("timeout", retryable=True)
SERVICE_UNAVAILABLE = ErrorCategory("service_unavailable", retryable=True)
BUSY = ErrorCategory("busy", retryable=True)
VALIDATION = ErrorCategory("validation", retryable=False)
AUTHORIZATION = ErrorCategory("authorization", retryable=False)
FORBIDDEN = ErrorCategory("forbidden", retryable=False)
UNKNOWN_OPERATION = ErrorCategory("unknown_operation", retryable=False)
UNSUPPORTED = ErrorCategory("unsupported", retryable=False)
INVALID_INPUT = ErrorCategory("invalid_input", retryable=False)
#: An actor raised :class:`dramatiq.Retry` to ask for another attempt.
RETRY_REQUESTED = ErrorCategory("retry_requested", retryable=True)
#: A job waited for its provider's open circuit breaker longer than the breaker's maximum wait.
PROVIDER_DOWN = ErrorCategory("provider_down", retryable=True)
#: Nothing matched; retryable by default (see ``ErrorClassifier(unknown_retryable=...)``).
UNKNOWN = ErrorCategory("unknown", retryable=True)

#: Every built-in category by name.
CATEGORIES: Mapping[str, ErrorCategory] = {
    c.name: c
    for c in (
        PROVIDER_NOT_FOUND,
        PROVIDER_NOT_AVAILABLE,
        CONNECTION_ERROR,
        TIMEOUT,
        SERVICE_UNAVAILABLE,
        BUSY,
        VALIDATION,
        AUTHORIZATION,
        FORBIDDEN,
        UNKNOWN_OPERATION,
        UNSUPPORTED,
        INVALID_INPUT,
        RETRY_REQUESTED,
        PROVIDER_DOWN,
        UNKNOWN,
    )
}


@dataclass(frozen=True, slots=True)
class Classification:
    """What the classifier decided about one failure.

    Args:
        category: The category the failure belongs to.
        retryable: Whether to retry; usually ``category.retryable``, but a
            rule or a ``_is_retryable_error`` override may decide otherwise.
        suggested_delay_s: Seconds to wait before the next attempt when the
            failure itself says so (``Retry-After``); ``None`` otherwise.
        matched_by: Which step decided: ``rule``, ``attribute``, ``status``,
            ``type``, ``message`` or ``default``.
    """

    category: ErrorCategory
    retryable: bool
    suggested_delay_s: float | None = None
    matched_by: str = "default"


#: A user rule: returns a category (or a full classification) for exceptions
#: it recognises and ``None`` for the rest.
ClassificationRule = Callable[[BaseException], "ErrorCategory | Classification | None"]

#: HTTP status codes and the categories they mean.
_STATUS_CATEGORIES: Mapping[int, ErrorCategory] = {
    400: VALIDATION,
    401: AUTHORIZATION,
    403: FORBIDDEN,
    405: UNSUPPORTED,
    408: TIMEOUT,
    422: VALIDATION,
    429: BUSY,
    501: UNSUPPORTED,
    502: SERVICE_UNAVAILABLE,
    503: SERVICE_UNAVAILABLE,
    504: TIMEOUT,
}

#: Phrases searched for in the message text: the provider sentences, then permanent ones, then transient ones.
_MESSAGE_PATTERNS: Sequence[tuple[re.Pattern[str], ErrorCategory]] = [
    (re.compile(p, re.IGNORECASE), c)
    for p, c in (
        (r"no provider found|provider not found", PROVIDER_NOT_FOUND),
        (r"provider not available|provider unavailable", PROVIDER_NOT_AVAILABLE),
        (r"validation", VALIDATION),
        (r"unauthori[sz]ed|authori[sz]ation|authentication failed", AUTHORIZATION),
        (r"forbidden|permission denied|access denied", FORBIDDEN),
        (r"unknown operation", UNKNOWN_OPERATION),
        (r"unsupported|not supported", UNSUPPORTED),
        (r"invalid input", INVALID_INPUT),
        (r"service unavailable", SERVICE_UNAVAILABLE),
        (r"timeout|timed out", TIMEOUT),
        (r"connection", CONNECTION_ERROR),
        (r"busy|too many requests|rate limit", BUSY),
    )
]


def type_rule(category: ErrorCategory, *types: type[BaseException]) -> ClassificationRule:
    """Build a rule that files instances of ``types`` under ``category``."""

    def rule(exception: BaseException) -> ErrorCategory | None:
        return category if isinstance(exception, types) else None

    return rule


def message_rule(category: ErrorCategory, *phrases: str) -> ClassificationRule:
    """Build a rule that files exceptions whose text contains any of ``phrases``
    (case-insensitive) under ``category``."""
    lowered = tuple(p.lower() for p in phrases)

    def rule(exception: BaseException) -> ErrorCategory | None:
        text = str(exception).lower()
        return category if any(p in text for p in lowered) else None

    return rule


def _status_of(exception: BaseException) -> int | None:
    status = getattr(exception, "status_code", None)
    if status is None:
        status = getattr(getattr(exception, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _retry_after_of(exception: BaseException) -> float | None:
    value = getattr(exception, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) and value >= 0 else None


class ErrorClassifier:
    """Classify exceptions into retryable and permanent categories.

    Args:
        rules: User rules tried first, in order. Defaults to none.
        categories: Extra categories by name, so that an exception whose
            ``category`` attribute names one is understood. Defaults to the
            built-in :data:`CATEGORIES` only.
        unknown_retryable: Whether failures nothing recognises are retried.
            Defaults to ``True``.
    """

    def __init__(
        self,
        *,
        rules: Iterable[ClassificationRule] = (),
        categories: Iterable[ErrorCategory] = (),
        unknown_retryable: bool = True,
    ) -> None:
        self.rules = list(rules)
        self.categories = {**CATEGORIES, **{c.name: c for c in categories}}
        self.unknown = ErrorCategory(UNKNOWN.name, retryable=unknown_retryable)

    def __call__(self, exception: BaseException) -> Classification:
        delay_s = _retry_after_of(exception)
        for rule in self.rules:
            answer = rule(exception)
            if isinstance(answer, Classification):
                return answer
            if answer is not None:
                return Classification(answer, answer.retryable, delay_s, "rule")

        named = getattr(exception, "category", None)
        if isinstance(named, str) and named in self.categories:
            category = self.categories[named]
            return Classification(category, category.retryable, delay_s, "attribute")

        status = _status_of(exception)
        if status is not None and status in _STATUS_CATEGORIES:
            category = _STATUS_CATEGORIES[status]
            return Classification(category, category.retryable, delay_s, "status")

        if isinstance(exception, TimeoutError):
            return Classification(TIMEOUT, True, delay_s, "type")
        if isinstance(exception, ConnectionError):
            return Classification(CONNECTION_ERROR, True, delay_s, "type")

        text = str(exception)
        for pattern, category in _MESSAGE_PATTERNS:
            if pattern.search(text):
                return Classification(category, category.retryable, delay_s, "message")

        return Classification(self.unknown, self.unknown.retryable, delay_s, "default")
