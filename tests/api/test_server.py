"""``provider-jobs api`` as a real process: uvicorn, multiprocess metrics of worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from metrics_workload import Workload, run_cli_workload
from provider_jobs.settings import Settings

from support import wait_for

#: Runs the command function that ``provider-jobs api`` registers.
_API = "import typer; from provider_jobs.api import api_command; typer.run(api_command)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api_process(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The API in its own process, multiprocess mode on ``tmp_path/metrics``; yields its URL and that dir."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_LOG_FORMAT": "json",
    }
    env.pop("PROVIDER_JOBS_API_TOKEN", None)
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _API, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, log_path.read_text()
            return False

    try:
        wait_for(answers, timeout_s=30)
        yield url, metrics_dir
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _value(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


@pytest.mark.fault
def test_the_api_serves_the_counts_of_worker_processes_beside_it(
    settings: Settings, api_process: tuple[str, Path], amqp: Any
) -> None:
    url, metrics_dir = api_process
    workload = Workload(succeed=5, flaky=2, permanent=1, down=1)
    expected = workload.expected(settings.max_attempts)

    run_cli_workload(settings, metrics_dir, workload, expected, processes=2)
    text = httpx.get(f"{url}/metrics", timeout=10).text

    assert _value(text, "worker_jobs_processed_total") == expected["processed"]
    assert _value(text, "worker_job_retries_total") == expected["retries"]
    assert _value(text, "worker_jobs_failed_total") == expected["failed"]
    assert _value(text, "provider_jobs_broker_up") == 1


def test_the_api_binds_the_port_it_is_given_and_serves_its_openapi_schema(
    api_process: tuple[str, Path],
) -> None:
    url, _ = api_process

    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()

    assert {"/queue-stats", "/metrics", "/healthz", "/readyz"} <= set(schema["paths"])
