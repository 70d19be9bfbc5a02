"""`dramatiq provider_jobs.worker`: the standard Dramatiq CLI runs our workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from provider_jobs.compat import JobQueue
from provider_jobs.settings import Settings

from support import take_dead_letters


def test_the_dramatiq_cli_runs_jobs_with_providers_from_a_file(
    settings: Settings, amqp, tmp_path: Path
) -> None:
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[providers]]\nnamespace = "ITL.Core"\nresource_type = "ResourceGroup"\nkind = "python"\n'
        'target = "provider_jobs.demo:ResourceGroupProvider"\n'
    )
    env = {
        **os.environ,
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_PROVIDERS_FILE": str(providers),
        "PROVIDER_JOBS_LOG_FORMAT": "json",
    }
    dramatiq_cli = shutil.which("dramatiq", path=os.path.dirname(sys.executable))
    worker = subprocess.Popen(
        [dramatiq_cli, "provider_jobs.worker", "-p", "1", "-t", "2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    queue = JobQueue(settings=settings)
    try:
        queue.submit(
            provider_namespace="ITL.Core", resource_type="ResourceGroup", operation="create", request={}
        )
        [(_, body)] = take_dead_letters(amqp, settings.queue_name, 1, timeout_s=30)
    finally:
        queue.close()
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    # The provider from the file ran (a missing provider would be provider_not_found).
    assert body["options"]["dead_letter"]["category"] == "validation"
    assert '"event": "Loaded 1 provider(s): ITL.Core/ResourceGroup"' in stderr
    assert "This is non-retryable, moving to DLQ" in stderr


def test_the_dramatiq_cli_refuses_to_boot_with_a_bad_setting() -> None:
    env = {**os.environ, "PROVIDER_JOBS_MAX_ATTEMPTS": "lots", "PROVIDER_JOBS_LOG_FORMAT": "json"}
    dramatiq_cli = shutil.which("dramatiq", path=os.path.dirname(sys.executable))
    result = subprocess.run(
        [dramatiq_cli, "provider_jobs.worker", "-p", "1", "-t", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "PROVIDER_JOBS_MAX_ATTEMPTS='lots' is not allowed" in result.stderr
