"""The alert rules: promtool checks and unit-tests them; they use only metrics we expose."""

from __future__ import annotations

import subprocess

import yaml
from deploy_support import RULE_TESTS, RULES, metric_names_in

from external_tools import require_tool


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "apt-get install prometheus")
    return subprocess.run([promtool, *args], capture_output=True, text=True, check=False, timeout=60)


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_alert_and_the_stalled_archiver_alert_are_defined() -> None:
    alerts = {
        rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    }

    assert {"DLQHasMessages", "DLQArchiverStalled"} <= alerts


def test_the_dlq_alert_is_unit_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    dlq = [
        case for test in tests for case in test["alert_rule_test"] if case["alertname"] == "DLQHasMessages"
    ]

    assert any(case["exp_alerts"] for case in dlq)
    assert any(not case["exp_alerts"] for case in dlq)


def test_the_rules_name_our_metrics() -> None:
    assert metric_names_in(RULES.read_text()) >= {
        "provider_jobs_queue_messages_ready",
        "provider_jobs_dlq_awaiting_action",
    }


def test_the_provider_down_alert_is_unit_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [
        case for test in tests for case in test["alert_rule_test"] if case["alertname"] == "ProviderDown"
    ]

    assert any(case["exp_alerts"] for case in cases)
    assert any(not case["exp_alerts"] for case in cases)
    assert "provider_jobs_breaker_state" in metric_names_in(RULES.read_text())
