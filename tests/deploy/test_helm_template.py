"""The Helm chart rendered by a real helm: ``helm lint``, ``helm template``, Kubernetes' schemas.

helm comes from ``scripts/ensure-helm.sh``. Every rendered manifest is validated,
strictly (unknown fields refused), against the Kubernetes 1.31 schemas that the
``kubernetes-validate`` package ships, offline.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import CHART, RULES

from external_tools import require_tool

#: The Kubernetes version of the schemas; helm and kubectl come from a Kubernetes 1.31 bundle.
KUBERNETES_VERSION = "1.31"

#: Value sets the chart must render: its defaults, SPEC.md's "Enable Retries" block,
#: SPEC.md's "Aggressive Retries" numbers, and workers turned off.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "documented": {"workers": {"enabled": True, "replicaCount": 3, "maxRetries": 3, "retryDelaySeconds": 5}},
    "aggressive-retries": {"workers": {"replicaCount": 3, "maxRetries": 10, "retryDelaySeconds": 30}},
    "rabbitmq-cluster": {
        "broker": {
            "urls": [f"amqp://pj:pw@rabbitmq-{n}.rabbitmq:5672/%2F" for n in range(3)],
            "queueType": "quorum",
        }
    },
    "workers-disabled": {
        "workers": {"enabled": False, "replicaCount": 3, "maxRetries": 10, "retryDelaySeconds": 30}
    },
}

#: Kinds that are custom resources: no Kubernetes schema knows them.
_CUSTOM_KINDS = {"PrometheusRule"}


class Helm:
    """A helm binary run with its cache, config and data kept in a temporary directory."""

    def __init__(self, path: str, home: Path) -> None:
        self.path = path
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.path, *args], capture_output=True, text=True, env=self.env, timeout=60, check=False
        )

    def template(self, values_file: Path) -> list[dict[str, Any]]:
        result = self.run("template", "pj", str(CHART), "--values", str(values_file))
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    path = require_tool("helm", "scripts/ensure-helm.sh installs it")
    return Helm(path, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    values = VALUE_SETS[request.param]
    path = tmp_path / f"{request.param}.yaml"
    path.write_text(yaml.safe_dump(values))
    return values, path


def _values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _default_values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, [(m["kind"], m["metadata"]["name"]) for m in manifests]
    return found[0]


def _container_env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_helm_lint_passes_strictly(helm: Helm, value_set: tuple[dict[str, Any], Path]) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--values", str(value_set[1]))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_manifest_is_valid_kubernetes(
    helm: Helm, value_set: tuple[dict[str, Any], Path]
) -> None:
    manifests = helm.template(value_set[1])

    errors = []
    for manifest in manifests:
        if manifest["kind"] in _CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{manifest['kind']} {manifest['metadata']['name']}: {exc.message}")

    assert not errors, errors
    assert {m["kind"] for m in manifests} == {
        "Deployment",
        "PersistentVolumeClaim",
        "PrometheusRule",
        "Secret",
        "Service",
    }


def test_the_worker_deployment_carries_the_worker_values(
    helm: Helm, value_set: tuple[dict[str, Any], Path]
) -> None:
    workers = {**_default_values()["workers"], **value_set[0].get("workers", {})}
    manifests = helm.template(value_set[1])
    if not workers["enabled"]:
        assert not [m for m in manifests if m["metadata"]["name"] == "pj-provider-jobs-worker"]
        assert {m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"} == {
            "pj-provider-jobs-api",
            "pj-provider-jobs-archiver",
        }
        return

    worker = _one(manifests, "Deployment", "pj-provider-jobs-worker")
    env = _container_env(worker)

    assert worker["spec"]["replicas"] == workers["replicaCount"]
    assert env["PROVIDER_JOBS_MAX_ATTEMPTS"] == str(workers["maxRetries"])
    assert env["PROVIDER_JOBS_RETRY_DELAY_S"] == str(workers["retryDelaySeconds"])


def test_the_default_worker_replica_count_is_the_documented_three(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.template(_values_file(tmp_path, {}))

    assert _one(manifests, "Deployment", "pj-provider-jobs-worker")["spec"]["replicas"] == 3


def test_the_rendered_prometheus_rule_holds_the_checked_rules_file(helm: Helm, tmp_path: Path) -> None:
    rule = _one(helm.template(_values_file(tmp_path, {})), "PrometheusRule", "pj-provider-jobs")

    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


@pytest.mark.parametrize(
    ("field", "bad"),
    [("replica", 3), ("replicas", "three")],
    ids=["unknown-field", "wrong-type"],
)
def test_the_schema_check_refuses_a_broken_deployment(
    helm: Helm, tmp_path: Path, field: str, bad: object
) -> None:
    manifests = helm.template(_values_file(tmp_path, {}))
    worker = copy.deepcopy(_one(manifests, "Deployment", "pj-provider-jobs-worker"))
    worker["spec"][field] = bad

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


def test_helm_refuses_values_the_chart_schema_refuses(helm: Helm, tmp_path: Path) -> None:
    result = helm.run(
        "template", "pj", str(CHART), "--values", str(_values_file(tmp_path, {"workers": {"maxRetries": 0}}))
    )

    assert result.returncode != 0
    assert "workers.maxRetries" in result.stderr


def test_a_rabbitmq_cluster_is_every_node_url_in_the_secret_and_quorum_queues_everywhere(
    helm: Helm, tmp_path: Path
) -> None:
    values = VALUE_SETS["rabbitmq-cluster"]
    manifests = helm.template(_values_file(tmp_path, values))
    [secret] = [m for m in manifests if m["kind"] == "Secret"]
    assert secret["stringData"]["brokerUrl"] == ",".join(values["broker"]["urls"])
    for name in ("pj-provider-jobs-worker", "pj-provider-jobs-archiver", "pj-provider-jobs-api"):
        assert _container_env(_one(manifests, "Deployment", name))["PROVIDER_JOBS_QUEUE_TYPE"] == "quorum"
