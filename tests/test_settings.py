from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from provider_jobs import ConfigurationError, Settings

ROOT = Path(__file__).resolve().parents[1]


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
            "RETRY_DELAY_S=1800.0 is not allowed: "
            "expected seconds >= 0 and below PROVIDER_JOBS_CONSUMER_TIMEOUT_S (1800)",
        ),
        ({"PROVIDER_JOBS_OPERATION_DELAYS_S": "create"}, "'create' is not operation=seconds"),
        ({"PROVIDER_JOBS_OPERATION_DELAYS_S": "create=4000"}, "OPERATION_DELAYS_S"),
        ({"PROVIDER_JOBS_BROKER_URL": "redis://x"}, "expected an amqp:// or amqps:// URL"),
        ({"PROVIDER_JOBS_RETRY_BACKOFF": "maybe"}, "expected true or false"),
        ({"PROVIDER_JOBS_LOG_FORMAT": "xml"}, "expected auto, console or json"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        Settings.from_env(env)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROVIDER_JOBS_API_PORT": "abc"}, "PROVIDER_JOBS_API_PORT='abc' is not allowed"),
        ({"PROVIDER_JOBS_API_PORT": "99999"}, "API_PORT=99999 is not allowed: expected 1 to 65535"),
        (
            {"PROVIDER_JOBS_ARCHIVE_RETENTION_DAYS": "nan"},
            "DAYS='nan' is not allowed: expected a finite number",
        ),
        ({"PROVIDER_JOBS_ARCHIVE_RETENTION_DAYS": "inf"}, "expected a finite number"),
        ({"PROVIDER_JOBS_ARCHIVE_RETENTION_DAYS": "1e300"}, "expected days > 0 and at most 36500"),
        ({"PROVIDER_JOBS_CONSUMER_TIMEOUT_S": "inf"}, "expected a finite number"),
        ({"PROVIDER_JOBS_MAX_ATTEMPTS": "9" * 5000}, "at most 18 digits"),
        ({"PROVIDER_JOBS_ARCHIVE_MAX_RECORDS": "99999999999"}, "expected 1 to 1000000000 records"),
        ({"PROVIDER_JOBS_WORKER_THREADS": "100000"}, "expected 1 to 1024 threads"),
        ({"PROVIDER_JOBS_MAX_DELIVERIES": "0"}, "MAX_DELIVERIES=0 is not allowed: expected 1 to 1000"),
        ({"PROVIDER_JOBS_MAX_DELIVERIES": "many"}, "PROVIDER_JOBS_MAX_DELIVERIES='many' is not allowed"),
        ({"PROVIDER_JOBS_API_MAX_BODY_BYTES": "10"}, "expected 1024 to 1073741824 bytes"),
        ({"PROVIDER_JOBS_REDACT_KEYS": "password,bad key"}, "REDACT_KEYS"),
        ({"PROVIDER_JOBS_API_TOKEN": "has space"}, "API_TOKEN is not allowed"),
    ],
)
def test_numbers_at_their_limits_and_odd_text_fail_with_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        Settings.from_env(env)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_bad_url_setting_never_shows_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"PROVIDER_JOBS_BROKER_URL": "redis://user:pw-secret@host/0"})
    assert "pw-secret" not in str(caught.value) and "redis://user:***@host/0" in str(caught.value)


def test_the_api_and_redaction_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "PROVIDER_JOBS_API_READ_TOKEN": "reader",
            "PROVIDER_JOBS_API_MAX_BODY_BYTES": "2048",
            "PROVIDER_JOBS_REDACT_KEYS": "ssn, password",
        }
    )
    assert (settings.api_read_token, settings.api_max_body_bytes) == ("reader", 2048)
    assert settings.redact_keys == ("ssn", "password")
    assert settings.redactor().view({"SSN": "1"}) == {"SSN": "***"}
    assert "reader" not in repr(settings)


def test_the_breaker_settings_are_read_and_one_job_can_never_be_enough_to_open_one() -> None:
    settings = Settings.from_env(
        {
            "PROVIDER_JOBS_BREAKER_FAILURE_RATE": "0.7",
            "PROVIDER_JOBS_BREAKER_MIN_CALLS": "40",
            "PROVIDER_JOBS_BREAKER_MIN_JOBS": "5",
            "PROVIDER_JOBS_BREAKER_PROBE_JOBS": "2",
        }
    )
    assert (settings.breaker_failure_rate, settings.breaker_min_calls) == (0.7, 40)
    assert (settings.breaker_min_jobs, settings.breaker_probe_jobs) == (5, 2)
    with pytest.raises(
        ConfigurationError, match=r"^PROVIDER_JOBS_BREAKER_MIN_JOBS=1 is not allowed: expected 2"
    ):
        Settings.from_env({"PROVIDER_JOBS_BREAKER_MIN_JOBS": "1"})
    with pytest.raises(ConfigurationError, match=r"^PROVIDER_JOBS_BREAKER_FAILURE_RATE=0.0 is not allowed"):
        Settings.from_env({"PROVIDER_JOBS_BREAKER_FAILURE_RATE": "0"})


def test_the_replaced_breaker_threshold_is_refused_with_its_replacements_named() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"PROVIDER_JOBS_BREAKER_THRESHOLD": "5"})
    assert str(refused.value).startswith("PROVIDER_JOBS_BREAKER_THRESHOLD='5' is no longer read: ")
    assert "PROVIDER_JOBS_BREAKER_MIN_CALLS (0 turns breakers off)" in str(refused.value)


def test_a_trace_url_without_a_place_for_the_trace_id_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"^PROVIDER_JOBS_TRACE_URL='https://tempo.example/' is not"):
        Settings.from_env({"PROVIDER_JOBS_TRACE_URL": "https://tempo.example/"})
    url = "https://tempo.example/trace/{trace_id}"
    assert Settings.from_env({"PROVIDER_JOBS_TRACE_URL": url}).trace_url == url


def test_the_redelivery_limits_are_read_and_a_single_crash_is_never_enough() -> None:
    settings = Settings.from_env(
        {
            "PROVIDER_JOBS_MAX_CRASHES": "4",
            "PROVIDER_JOBS_MAX_DELIVERIES": "30",
            "PROVIDER_JOBS_REDELIVERY_GRACE_S": "0",
        }
    )
    assert (settings.max_crashes, settings.max_deliveries, settings.redelivery_grace_s) == (4, 30, 0.0)
    defaults = Settings.from_env({})
    assert (defaults.max_crashes, defaults.max_deliveries, defaults.redelivery_grace_s) == (3, 20, 10.0)
    with pytest.raises(ConfigurationError, match=r"^PROVIDER_JOBS_MAX_CRASHES=1 is not allowed: expected 2"):
        Settings.from_env({"PROVIDER_JOBS_MAX_CRASHES": "1"})
    with pytest.raises(ConfigurationError, match=r"^PROVIDER_JOBS_REDELIVERY_GRACE_S=61.0 is not allowed"):
        Settings.from_env({"PROVIDER_JOBS_REDELIVERY_GRACE_S": "61"})


def test_the_constructor_reads_no_environment_and_from_env_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_JOBS_MAX_ATTEMPTS", "7")
    assert Settings().max_attempts == 3
    assert Settings.from_env().max_attempts == 7
    assert Settings.from_env(max_attempts=4).max_attempts == 4


def test_values_given_in_code_are_checked_as_variables_are() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^PROVIDER_JOBS_WORKER_THREADS=0 is not allowed: expected 1 to"
    ):
        Settings(worker_threads=0)
    with pytest.raises(
        ConfigurationError, match=r"^PROVIDER_JOBS_QUEUE_TYPE='stream' is not allowed: expected"
    ):
        Settings().replace(queue_type="stream")
    with pytest.raises(ConfigurationError, match=r"^'max_retries' is not a setting"):
        Settings(max_retries=2)
    changed = Settings().replace(queue_type="quorum", operation_delays_s={"create": 2.0})
    assert (changed.queue_type, dict(changed.operation_delays_s)) == ("quorum", {"create": 2.0})


def test_a_delay_at_or_above_the_consumer_timeout_names_both_variables() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(
            {"PROVIDER_JOBS_CONSUMER_TIMEOUT_S": "400", "PROVIDER_JOBS_MAX_RETRY_AFTER_S": "400"}
        )
    assert str(caught.value) == (
        "PROVIDER_JOBS_MAX_RETRY_AFTER_S=400.0 is not allowed: "
        "expected seconds >= 0 and below PROVIDER_JOBS_CONSUMER_TIMEOUT_S (400)"
    )


def test_lists_and_delays_are_read_comma_separated_not_as_json() -> None:
    settings = Settings.from_env(
        {
            "PROVIDER_JOBS_ARCHIVER_QUEUES": "a.jobs, b.jobs,",
            "PROVIDER_JOBS_BREAKER_CATEGORIES": "timeout",
            "PROVIDER_JOBS_OPERATION_DELAYS_S": "create=1.5",
        }
    )
    assert (settings.archiver_queues, settings.breaker_categories) == (("a.jobs", "b.jobs"), ("timeout",))
    assert dict(settings.operation_delays_s) == {"create": 1.5}
    with pytest.raises(ConfigurationError, match=r"'b=inf' is not operation=seconds"):
        Settings.from_env({"PROVIDER_JOBS_OPERATION_DELAYS_S": "a=1,b=inf"})


def test_every_setting_has_a_description() -> None:
    assert [name for name, info in Settings.model_fields.items() if not info.description] == []


def test_the_readme_settings_table_is_the_one_generated_from_the_model(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "settings_table.py"
    current = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, check=False)
    assert current.returncode == 0, current.stderr
    stale = tmp_path / "README.md"
    stale.write_text(
        (ROOT / "README.md")
        .read_text(encoding="utf-8")
        .replace("| `MAX_ATTEMPTS` | 3 |", "| `MAX_ATTEMPTS` | 4 |"),
        encoding="utf-8",
    )
    checked = subprocess.run(
        [sys.executable, script, "--check", "--readme", stale], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 1 and "make settings-table" in checked.stderr
