"""`provider-jobs archiver` serves its own metrics, so a deployment can scrape the archive's health."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from provider_jobs.settings import Settings

from support import wait_for


def test_the_archiver_serves_its_metrics_on_the_metrics_port(
    settings: Settings, amqp: Any, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    amqp.queue_declare(f"{settings.queue_name}.XQ", durable=True, arguments={"x-message-ttl": 604_800_000})
    amqp.basic_publish("", f"{settings.queue_name}.XQ", b"not json at all")
    env = {
        **os.environ,
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_ARCHIVE_URL": f"sqlite:///{tmp_path}/archive.sqlite3",
        "PROVIDER_JOBS_METRICS_PORT": str(port),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    archiver = subprocess.Popen(
        [sys.executable, "-c", "from provider_jobs.cli import main; main()", "archiver"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def scrape() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.TransportError:
            return ""

    try:
        text = wait_for(
            lambda: (t := scrape()) and "provider_jobs_dlq_archived_total{queue=" in t and t, timeout_s=30
        )
    finally:
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(timeout=30)
    assert f'provider_jobs_dlq_archived_total{{queue="{settings.queue_name}.XQ"}} 1.0' in text
    assert "provider_jobs_dlq_archive_up 1.0" in text
