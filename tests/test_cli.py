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
        "provider-jobs: PROVIDER_JOBS_MAX_ATTEMPTS='lots' is not allowed: expected an integer"
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_demo_logs_the_archive_url_without_its_password(settings: Settings, amqp, tmp_path: Path) -> None:
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        result = run_cli(
            "demo",
            "--exit-when-done",
            env={
                "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
                "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
                "PROVIDER_JOBS_RETRY_DELAY_S": "0.05",
                "PROVIDER_JOBS_LOG_FORMAT": "json",
                # Trust authentication ignores the password; the log must not show it.
                "PROVIDER_JOBS_ARCHIVE_URL": "postgresql+psycopg://postgres:demo-pw-123@127.0.0.1:5432/test"
                f"?options=-csearch_path%3D{schema}",
                "PROVIDER_JOBS_API_PORT": str(_free_port()),
            },
        )
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert result.returncode == 0, result.stderr
    assert "Demo jobs done. Dead letters are archived in postgresql+psycopg://postgres:***@" in result.stderr
    assert "demo-pw-123" not in result.stderr


def test_the_api_with_a_bad_setting_is_one_line_and_exit_2() -> None:
    for env in ({"PROVIDER_JOBS_API_PORT": "abc"}, {"PROVIDER_JOBS_API_PORT": "99999"}):
        result = run_cli("api", env=env)

        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("provider-jobs api: PROVIDER_JOBS_API_PORT=")


def test_the_api_on_a_port_in_use_is_one_line_and_exit_5() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("api", "--port", str(port), env={"PROVIDER_JOBS_LOG_FORMAT": "json"})

    assert result.returncode == 5, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"provider-jobs api: cannot listen on 127.0.0.1:{port}: ")


def test_an_archive_id_beyond_the_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli(
        "dlq", "show", "99999999999999999999", env={"PROVIDER_JOBS_ARCHIVE_URL": f"sqlite:///{tmp_path}/a.db"}
    )

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("provider-jobs: Invalid value for 'record_id'")


def test_the_worker_stops_on_sigterm_as_on_ctrl_c_and_exits_0(settings: Settings, amqp) -> None:
    import signal

    from external_tools import consumer_count

    from support import wait_for

    env = {
        **os.environ,
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_LOG_FORMAT": "json",
    }
    worker = subprocess.Popen([*CLI, "worker"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: consumer_count(settings.broker_url, settings.queue_name) == 1, timeout_s=30)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr[-2000:]
    assert "Interrupted; stopping" in stderr


def test_the_demo_makes_a_token_of_its_own_and_audits_its_actions_as_demo(
    settings: Settings, amqp, tmp_path: Path
) -> None:
    import signal
    from urllib.parse import urlsplit

    import httpx

    from support import wait_for

    api_port = _free_port()
    env = {
        **os.environ,
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_RETRY_DELAY_S": "0.05",
        "PROVIDER_JOBS_LOG_FORMAT": "json",
        "PROVIDER_JOBS_ARCHIVE_URL": f"sqlite:///{tmp_path}/archive.sqlite3",
        "PROVIDER_JOBS_API_PORT": str(api_port),
    }
    env.pop("PROVIDER_JOBS_API_TOKEN", None)
    env.pop("PROVIDER_JOBS_OPERATOR", None)
    demo = subprocess.Popen(
        [*CLI, "demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert demo.stdout is not None
        line = demo.stdout.readline().strip()
        assert line.startswith(f"Console: http://127.0.0.1:{api_port}/ui/login?name=demo#token=")
        url = urlsplit(line.removeprefix("Console: "))
        token = url.fragment.removeprefix("token=")
        base = f"http://127.0.0.1:{api_port}"
        auth = {"Authorization": f"Bearer {token}"}

        def archived() -> list[dict]:
            try:
                response = httpx.get(f"{base}/dlq/records", headers=auth, timeout=5)
            except httpx.TransportError:
                return []
            return response.json()["records"] if response.status_code == 200 else []

        wait_for(lambda: len(archived()) == 2, timeout_s=60)
        record_id = archived()[0]["id"]
        body = {"ids": [record_id], "reason": "tried the demo"}
        # The API's default is unchanged: a mutation without the token is refused.
        assert httpx.post(f"{base}/dlq/discard", json=body, timeout=5).status_code == 401
        answer = httpx.post(f"{base}/dlq/discard", json=body, headers=auth, timeout=5)
        assert answer.status_code == 200 and answer.json() == {"discarded": [record_id]}
        audit = httpx.get(f"{base}/dlq/records/{record_id}", headers=auth, timeout=5).json()["audit"]
        assert [(e["who"], e["action"]) for e in audit] == [("demo", "discard")]
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=30)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
            if demo.stdout is not None:
                demo.stdout.close()
