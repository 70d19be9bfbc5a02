from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from provider_jobs import errors
from provider_jobs.middleware import classifier as c
from provider_jobs.middleware.classifier import Classification, ErrorClassifier, message_rule, type_rule

#: The seed's phrases and the category each must land in.
SEED_PHRASES = {
    "No provider found for ITL.Core/ResourceGroup": c.PROVIDER_NOT_FOUND,
    "provider not found": c.PROVIDER_NOT_FOUND,
    "provider not available": c.PROVIDER_NOT_AVAILABLE,
    "connection refused": c.CONNECTION_ERROR,
    "Connection timeout": c.TIMEOUT,
    "request timed out": c.TIMEOUT,
    "service unavailable": c.SERVICE_UNAVAILABLE,
    "server busy": c.BUSY,
    "Validation error: missing required field 'name'": c.VALIDATION,
    "authorization failed": c.AUTHORIZATION,
    "forbidden": c.FORBIDDEN,
    "unknown operation": c.UNKNOWN_OPERATION,
    "unsupported": c.UNSUPPORTED,
    "invalid input": c.INVALID_INPUT,
}

_ALL_PHRASES = [
    p
    for p in [
        "validation",
        "authori",
        "unauthori",
        "forbidden",
        "permission denied",
        "access denied",
        "unknown operation",
        "unsupported",
        "not supported",
        "invalid input",
        "no provider found",
        "provider not found",
        "provider not available",
        "provider unavailable",
        "service unavailable",
        "timeout",
        "timed out",
        "connection",
        "busy",
        "too many requests",
        "rate limit",
        "authentication failed",
    ]
]


def _free_of_phrases(text: str) -> bool:
    lowered = text.lower()
    return not any(p in lowered for p in _ALL_PHRASES)


noise = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30).filter(
    _free_of_phrases
)


def _random_case(text: str, flips: list[bool]) -> str:
    return "".join(
        ch.upper() if flip else ch.lower()
        for ch, flip in zip(text, flips + [False] * len(text), strict=False)
    )


@given(
    phrase=st.sampled_from(sorted(SEED_PHRASES)),
    prefix=noise,
    suffix=noise,
    flips=st.lists(st.booleans(), max_size=60),
)
def test_every_seed_phrase_classifies_right_in_any_case_and_position(
    phrase: str, prefix: str, suffix: str, flips: list[bool]
) -> None:
    text = f"{prefix} {_random_case(phrase, flips)} {suffix}"
    result = ErrorClassifier()(RuntimeError(text))
    assert result.category == SEED_PHRASES[phrase]
    assert result.retryable is SEED_PHRASES[phrase].retryable
    assert result.matched_by == "message"


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (errors.ProviderNotFound("x"), c.PROVIDER_NOT_FOUND),
        (errors.ProviderNotAvailable("x"), c.PROVIDER_NOT_AVAILABLE),
        (errors.ProviderConnectionError("x"), c.CONNECTION_ERROR),
        (errors.ProviderTimeout("x"), c.TIMEOUT),
        (errors.ServiceUnavailable("x"), c.SERVICE_UNAVAILABLE),
        (errors.ProviderBusy("x"), c.BUSY),
        (errors.ValidationFailed("x"), c.VALIDATION),
        (errors.AuthorizationFailed("x"), c.AUTHORIZATION),
        (errors.Forbidden("x"), c.FORBIDDEN),
        (errors.UnknownOperation("x"), c.UNKNOWN_OPERATION),
        (errors.UnsupportedOperation("x"), c.UNSUPPORTED),
        (errors.InvalidInput("x"), c.INVALID_INPUT),
        (errors.InvalidJob("x"), c.VALIDATION),
    ],
)
def test_our_exception_classes_classify_by_their_category(
    error: Exception, category: c.ErrorCategory
) -> None:
    result = ErrorClassifier()(error)
    assert (result.category, result.matched_by) == (category, "attribute")


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (400, c.VALIDATION),
        (401, c.AUTHORIZATION),
        (403, c.FORBIDDEN),
        (405, c.UNSUPPORTED),
        (408, c.TIMEOUT),
        (422, c.VALIDATION),
        (429, c.BUSY),
        (501, c.UNSUPPORTED),
        (502, c.SERVICE_UNAVAILABLE),
        (503, c.SERVICE_UNAVAILABLE),
        (504, c.TIMEOUT),
    ],
)
def test_an_httpx_status_error_classifies_by_its_status(status: int, category: c.ErrorCategory) -> None:
    request = httpx.Request("POST", "http://provider.invalid/operations/create")
    error = httpx.HTTPStatusError("boom", request=request, response=httpx.Response(status, request=request))
    result = ErrorClassifier()(error)
    assert (result.category, result.matched_by) == (category, "status")


def test_builtin_timeout_and_connection_errors_classify_by_type() -> None:
    assert ErrorClassifier()(TimeoutError()).category == c.TIMEOUT
    assert ErrorClassifier()(ConnectionRefusedError()).category == c.CONNECTION_ERROR


def test_a_permanent_phrase_wins_over_a_transient_one_in_the_same_text() -> None:
    result = ErrorClassifier()(ValueError("Validation error: connection string is empty"))
    assert result.category == c.VALIDATION


def test_unmatched_errors_are_retryable_by_default_and_configurably_not() -> None:
    assert ErrorClassifier()(KeyError("zzz")).retryable is True
    strict = ErrorClassifier(unknown_retryable=False)(KeyError("zzz"))
    assert (strict.category.name, strict.retryable) == ("unknown", False)


def test_user_rules_come_first_in_order() -> None:
    quota = c.ErrorCategory("quota_exceeded", retryable=False)
    classify = ErrorClassifier(
        rules=[message_rule(quota, "quota exceeded"), type_rule(c.BUSY, KeyError)],
    )
    assert classify(errors.ProviderBusy("Quota exceeded for subscription")).category == quota
    assert classify(KeyError("Validation")).category == c.BUSY
    assert classify(RuntimeError("nothing")).matched_by == "default"


def test_a_rule_may_return_a_full_classification() -> None:
    decided = Classification(c.TIMEOUT, retryable=False, suggested_delay_s=1.0, matched_by="rule")
    assert ErrorClassifier(rules=[lambda exc: decided])(RuntimeError()) is decided


def test_retry_after_is_carried_as_the_suggested_delay() -> None:
    result = ErrorClassifier()(errors.ProviderBusy("slow down", status_code=429, retry_after_s=7))
    assert (result.category, result.suggested_delay_s) == (c.BUSY, 7.0)


def test_a_category_attribute_naming_a_custom_category_is_understood() -> None:
    deploying = c.ErrorCategory("deploying", retryable=True)

    class Deploying(Exception):
        category = "deploying"

    assert ErrorClassifier(categories=[deploying])(Deploying("Validation")).category == deploying


def test_a_missing_providers_name_never_decides_the_category() -> None:
    result = ErrorClassifier()(RuntimeError("No provider found for ITL.Security/AuthorizationPolicy"))
    assert result.category == c.PROVIDER_NOT_FOUND
