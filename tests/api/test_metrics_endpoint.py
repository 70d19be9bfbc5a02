"""GET /metrics: queue depths read from RabbitMQ, in a format promtool accepts."""

from __future__ import annotations

import subprocess
from typing import Any

from dramatiq.common import xq_name
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from external_tools import require_tool
from provider_jobs.api import create_app
from provider_jobs.settings import Settings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_expose_the_depth_of_each_queue(client: TestClient, settings: Settings, amqp: Any) -> None:
    xq = xq_name(settings.queue_name)
    amqp.queue_declare(xq, durable=True)
    for _ in range(4):
        amqp.basic_publish("", xq, b"{}")

    response = client.get("/metrics")

    samples = _samples(response.text)
    assert response.status_code == 200
    assert samples[("provider_jobs_broker_up", ())] == 1
    assert samples[("provider_jobs_queue_messages_ready", (("queue", xq), ("role", "dead_letter")))] == 4
    assert samples[("provider_jobs_queue_consumers", (("queue", xq), ("role", "dead_letter")))] == 0


def test_metrics_report_the_broker_down_instead_of_failing_the_scrape(settings: Settings) -> None:
    unreachable = settings.replace(broker_url="amqp://guest:guest@127.0.0.1:1/%2F")

    with TestClient(create_app(unreachable)) as client:
        response = client.get("/metrics")

    assert response.status_code == 200
    assert _samples(response.text)[("provider_jobs_broker_up", ())] == 0


def test_metrics_are_served_as_openmetrics_when_asked(client: TestClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_promtool_accepts_the_api_exposition(client: TestClient, amqp: Any) -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    body = client.get("/metrics").content

    check = subprocess.run(
        [promtool, "check", "metrics"], check=False, input=body, capture_output=True, timeout=30
    )

    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
