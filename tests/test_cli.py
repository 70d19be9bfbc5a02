"""The command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from provider_jobs.dlq import DeadLetterArchive, RecordFilter
from provider_jobs.settings import Settings

CLI = [sys.executable, "-c", "from provider_jobs.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_an_unreachable_broker_is_one_line_naming_the_url_and_how_to_start_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli("worker", env={"PROVIDER_JOBS_BROKER_URL": f"amqp://guest:secret@127.0.0.1:{port}/%2F"})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"provider-jobs: Cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:{port}/%2F")
    assert "rabbitmq-server -detached" in line
    assert "secret" not in line


def test_a_bad_setting_is_one_line() -> None:
    result = run_cli("worker", env={"PROVIDER_JOBS_MAX_ATTEMPTS": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "provider-jobs: PROVIDER_JOBS_MAX_ATTEMPTS='lots' is not allowed: "
        "invalid literal for int() with base 10: 'lots'"
    )


def test_the_demo_shows_every_seed_log_line_and_archives_its_dead_letters(
    settings: Settings, amqp, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        api_port = sock.getsockname()[1]
    archive_url = f"sqlite:///{tmp_path}/archive.sqlite3"
    result = run_cli(
        "demo",
        "--exit-when-done",
        env={
            "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
            "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
            "PROVIDER_JOBS_RETRY_DELAY_S": "1.0",
            "PROVIDER_JOBS_LOG_FORMAT": "json",
            "PROVIDER_JOBS_ARCHIVE_URL": archive_url,
            "PROVIDER_JOBS_API_PORT": str(api_port),
        },
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    messages = [e["event"] for e in events]
    assert any(m.endswith("completed successfully on attempt 1") for m in messages)
    assert any(m.endswith("completed successfully on attempt 3") for m in messages)
    assert any(
        "failed with retryable error: Connection timeout. Retrying in 1.0s... (attempt 1/3)" in m
        for m in messages
    )
    assert any(
        m.endswith("Validation error: missing required field 'name'. This is non-retryable, moving to DLQ")
        for m in messages
    )
    assert any(m.endswith("exhausted all retries and will be moved to DLQ") for m in messages)
    retry = next(e for e in events if "Retrying in" in e["event"])
    assert {
        "job_id",
        "worker_id",
        "attempt",
        "max_attempts",
        "category",
        "delay_s",
        "provider",
        "operation",
    } <= set(retry)
    assert not any(e["level"] == "error" and e["logger"].startswith("dramatiq.worker") for e in events)
    # The summary comes last, after every outcome, retries included (they wait in <queue>.retry.1000).
    assert messages.index(next(m for m in messages if m.startswith("Demo jobs done."))) > max(
        i for i, m in enumerate(messages) if "exhausted all retries" in m or "on attempt 3" in m
    )
    archive = DeadLetterArchive(archive_url)
    try:
        archived = archive.find(RecordFilter(), limit=10)
    finally:
        archive.close()
    assert sorted(r.category for r in archived) == ["service_unavailable", "validation"]
