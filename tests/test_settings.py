from __future__ import annotations

import pytest

from provider_jobs import ConfigurationError, Settings


def test_defaults_follow_the_seed() -> None:
    settings = Settings.from_env({})
    assert (settings.queue_name, settings.max_attempts, settings.retry_delay_s) == ("provider.jobs", 3, 5.0)
    assert settings.max_retries == 2


def test_every_field_is_read_from_its_prefixed_variable() -> None:
    settings = Settings.from_env(
        {
            "PROVIDER_JOBS_BROKER_URL": "amqp://u:p@rabbit:5672/%2F",
            "PROVIDER_JOBS_MAX_ATTEMPTS": "5",
            "PROVIDER_JOBS_RETRY_DELAY_S": "2.5",
            "PROVIDER_JOBS_RETRY_BACKOFF": "yes",
            "PROVIDER_JOBS_OPERATION_DELAYS_S": "create=10, get=2,delete=5",
            "PROVIDER_JOBS_UNKNOWN_ERRORS_RETRYABLE": "false",
        }
    )
    assert settings.broker_url == "amqp://u:p@rabbit:5672/%2F"
    assert (settings.max_attempts, settings.retry_delay_s, settings.retry_backoff) == (5, 2.5, True)
    assert dict(settings.operation_delays_s) == {"create": 10.0, "get": 2.0, "delete": 5.0}
    assert settings.delay_s_for("create") == 10.0 and settings.delay_s_for("update") == 2.5
    assert settings.unknown_errors_retryable is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROVIDER_JOBS_MAX_ATTEMPTS": "three"}, "PROVIDER_JOBS_MAX_ATTEMPTS='three' is not allowed"),
        (
            {"PROVIDER_JOBS_MAX_ATTEMPTS": "0"},
            "PROVIDER_JOBS_MAX_ATTEMPTS=0 is not allowed: expected 1 or more",
        ),
        (
            {"PROVIDER_JOBS_RETRY_DELAY_S": "1800"},
            "RETRY_DELAY_S=1800.0 is not allowed: expected seconds >= 0 and below consumer_timeout_s",
        ),
        ({"PROVIDER_JOBS_OPERATION_DELAYS_S": "create"}, "'create' is not operation=seconds"),
        ({"PROVIDER_JOBS_OPERATION_DELAYS_S": "create=4000"}, "OPERATION_DELAYS_S"),
        ({"PROVIDER_JOBS_BROKER_URL": "redis://x"}, "expected an amqp:// or amqps:// URL"),
        ({"PROVIDER_JOBS_RETRY_BACKOFF": "maybe"}, "expected true or false"),
        ({"PROVIDER_JOBS_LOG_FORMAT": "xml"}, "expected auto, console or json"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace("?", r"\?")) as caught:
        Settings.from_env(env)
    assert "\n" not in str(caught.value)
