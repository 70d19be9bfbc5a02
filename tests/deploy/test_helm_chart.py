"""The Helm chart's sources: values against the schema, value keys, worker wiring.

``test_helm_template.py`` renders the chart with a real helm.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import CHART, RULES, settings_variables

_VALUE_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def _templates() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((CHART / "templates").iterdir())}


def _leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(tree, dict) and tree:
        return {path for key, value in tree.items() for path in _leaf_paths(value, (*prefix, key))}
    return {prefix}


def test_the_default_values_match_the_schema() -> None:
    jsonschema.validate(_values(), _schema(), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("workers", "maxRetries"), 0),
        (("workers", "maxRetries"), "3"),
        (("workers", "retryDelaySeconds"), -1),
        (("workers", "retryDelaySeconds"), 1800),
        (("workers", "replicaCount"), 1.5),
        (("workers", "enabled"), "yes"),
        (("broker", "url"), "http://rabbitmq"),
        (("workers", "maxRetriess"), 3),
    ],
)
def test_the_schema_refuses_a_bad_value(path: tuple[str, str], bad: Any) -> None:
    values = copy.deepcopy(_values())
    values[path[0]][path[1]] = bad

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, _schema(), cls=jsonschema.Draft7Validator)


def test_the_documented_worker_keys_are_in_the_values() -> None:
    workers = _values()["workers"]

    assert {"enabled", "replicaCount", "maxRetries", "retryDelaySeconds"} <= set(workers)


def test_every_value_a_template_uses_exists_in_values_yaml() -> None:
    values = _values()
    missing = []
    for name, text in _templates().items():
        for ref in _VALUE_REF.findall(text):
            node: Any = values
            for key in ref.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{name}: .Values{ref}")
                    break
                node = node[key]

    assert not missing, missing


def test_every_value_in_values_yaml_is_used_by_a_template() -> None:
    used = {
        tuple(ref.strip(".").split(".")) for text in _templates().values() for ref in _VALUE_REF.findall(text)
    }

    unused = [
        ".".join(path) for path in _leaf_paths(_values()) if not any(path[: len(ref)] == ref for ref in used)
    ]

    assert not unused, unused


def _env_value(template: str, variable: str) -> str:
    match = re.search(rf"- name: {variable}\n\s+value: (.+)\n", template)
    assert match, f"{variable} is not set"
    return match.group(1).strip()


def test_worker_retry_values_are_wired_into_the_worker_settings() -> None:
    worker = _templates()["worker-deployment.yaml"]

    assert _env_value(worker, "PROVIDER_JOBS_MAX_ATTEMPTS") == "{{ .Values.workers.maxRetries | quote }}"
    assert (
        _env_value(worker, "PROVIDER_JOBS_RETRY_DELAY_S") == "{{ .Values.workers.retryDelaySeconds | quote }}"
    )
    assert "replicas: {{ .Values.workers.replicaCount }}" in worker
    assert worker.startswith("{{- if .Values.workers.enabled }}")


def test_templates_set_only_settings_that_exist() -> None:
    used = {v for text in _templates().values() for v in re.findall(r"\b(PROVIDER_JOBS_[A-Z0-9_]+)\b", text)}

    assert used <= settings_variables(), used - settings_variables()


def test_worker_archiver_and_api_are_deployed() -> None:
    templates = _templates()

    commands = {
        "worker": '"dramatiq", "provider_jobs.worker"',
        "archiver": '"provider-jobs", "archiver"',
        "api": '"provider-jobs", "api"',
    }
    for role, command in commands.items():
        text = templates[f"{role}-deployment.yaml"]
        assert "kind: Deployment" in text
        assert f"command: [{command}" in text


def test_the_prometheus_rule_ships_the_checked_rules_file() -> None:
    template = _templates()["prometheusrule.yaml"]

    assert "kind: PrometheusRule" in template
    assert '.Files.Get "files/provider-jobs.rules.yml"' in template
    assert (CHART / "files" / "provider-jobs.rules.yml").read_text() == RULES.read_text()
