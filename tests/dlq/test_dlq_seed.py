from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dlq_support import archiver_thread, job, running_worker
from dramatiq.common import xq_name

from provider_jobs.compat import JobQueue
from provider_jobs.demo import ResourceGroupProvider
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, wait_for


def test_the_seeds_get_dlq_messages_and_submit_job_loop_ends_with_success(
    settings: Settings, amqp: Any, tmp_path: Path
) -> None:
    settings = settings.replace(archive_url=f"sqlite:///{tmp_path}/archive.sqlite3")
    registry = ProviderRegistry()  # nothing registered yet: the job dead-letters
    provider = ResourceGroupProvider()
    queue = JobQueue(settings=settings)
    archive = DeadLetterArchive(settings.archive_url)
    with running_worker(settings, registry):
        queue.submit(**job(request={"name": "rg-seed"}))
        wait_for(lambda: queue_depth(amqp, xq_name(settings.queue_name)) == 1, timeout_s=20)
        with archiver_thread(DeadLetterArchiver.from_settings(settings, archive=archive, flush_ms=20)):
            wait_for(lambda: archive.count() == 1)
        registry.register("ITL.Core", "ResourceGroup", provider)

        async def seed_loop() -> list[dict[str, Any]]:
            messages = await queue.get_dlq_messages(limit=10)
            for msg in messages:
                await queue.submit_job(
                    provider_namespace=msg["provider_namespace"],
                    resource_type=msg["resource_type"],
                    operation=msg["operation"],
                    request=msg["request"],
                    priority=msg["priority"],
                )
            return messages

        messages = asyncio.run(seed_loop())
        wait_for(lambda: "rg-seed" in provider.groups, timeout_s=10)
    assert [(m["category"], m["error"], m["attempts"]) for m in messages] == [
        ("provider_not_found", "No provider found for ITL.Core/ResourceGroup", settings.max_attempts)
    ]
    assert {"job_id", "provider_namespace", "resource_type", "operation", "request", "priority"} <= messages[
        0
    ].keys()
    queue.close()
    archive.close()
