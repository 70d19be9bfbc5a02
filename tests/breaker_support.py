"""Helpers of the replay-follows-health tests: a worker's health side that serves providers and
opens and closes their breakers for real, and dead letters of several providers in an archive."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from provider_jobs.dlq import DeadLetterArchive, RecordFilter, dead_letter_from_delivery
from provider_jobs.health import HealthSync
from provider_jobs.middleware.breaker import ProviderBreakers
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.settings import Settings

from support import declare_work_queue

#: The provider that goes down in these tests, and one that stays up.
DOWN, UP = "ITL.Core/ResourceGroup", "ITL.Core/VirtualMachine"


@contextlib.contextmanager
def serving(settings: Settings, *providers: str) -> Iterator[ProviderBreakers]:
    """A worker's health side, without the worker: it announces ``providers`` and shares its
    breakers on the health stream, as a running worker does. Yields the breakers."""
    registry = ProviderRegistry()
    for key in providers:
        namespace, _, resource_type = key.partition("/")
        registry.register(namespace, resource_type, FunctionProvider({}))
    breakers = ProviderBreakers(min_calls=2, min_jobs=2, probe_interval_s=30)
    sync = HealthSync(settings.replace(worker_id="breaker-test-worker"), breakers, registry=registry)
    sync.start()
    assert sync.wait_caught_up(10)
    try:
        yield breakers
    finally:
        sync.stop()


@contextlib.contextmanager
def outage(settings: Settings, channel: Any) -> Iterator[ProviderBreakers]:
    """The work queue declared as workers do, both providers served, the :data:`DOWN` one's
    breaker open. Yields the breakers."""
    declare_work_queue(channel, settings.queue_name, settings.queue_type)
    with serving(settings, DOWN, UP) as breakers:
        open_breaker(breakers, DOWN)
        yield breakers


def open_breaker(breakers: ProviderBreakers, key: str) -> None:
    """Fail two jobs of ``key`` on their last attempt: its breaker opens, shared at once."""
    for job in ("first", "second"):
        breakers.record_failure(key, "service_unavailable", job=job, last_attempt=True)
    assert breakers.state(key).state == "open"


def close_breaker(breakers: ProviderBreakers, key: str) -> None:
    """A job of ``key`` got an answer: its breaker closes, shared at once."""
    breakers.record_success(key, job="probe")
    assert breakers.state(key).state == "closed"


def store_dead_letters(
    archive: DeadLetterArchive, queue_name: str, provider: str, count: int
) -> tuple[list[int], str]:
    """``count`` dead letters of ``provider`` (503s), oldest first; returns their ids and group."""
    namespace, _, resource_type = provider.partition("/")
    records = []
    for n in range(count):
        job_id = uuid.uuid4().hex
        body = {
            "queue_name": queue_name,
            "actor_name": "create_resource",
            "args": [],
            "kwargs": {
                "job": {
                    "provider_namespace": namespace,
                    "resource_type": resource_type,
                    "operation": "create",
                    "request": {"name": f"r-{n}"},
                    "job_id": job_id,
                    "priority": 5,
                }
            },
            "options": {
                "job_id": job_id,
                "dead_letter": {
                    "reason": "exhausted",
                    "category": "service_unavailable",
                    "error": f"503 Service Unavailable from {provider}",
                    "attempts": 3,
                    "dead_lettered_at_ms": int(time.time() * 1000) + n,
                },
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
        records.append(
            dead_letter_from_delivery(json.dumps(body).encode(), {}, source_queue=f"{queue_name}.XQ")
        )
    archive.store(records)
    found = archive.find(
        RecordFilter(provider_namespace=namespace, resource_type=resource_type),
        limit=count,
        oldest_first=True,
    )
    assert len(found) == count and len({r.fingerprint for r in found}) == 1
    return [r.id for r in found if r.id is not None], found[0].fingerprint


def published_providers(channel: Any, queue_name: str) -> list[str]:
    """Take every message in ``queue_name``; the provider of each, in order."""
    providers: list[str] = []
    while True:
        method, _, body = channel.basic_get(queue_name, auto_ack=True)
        if method is None:
            return providers
        job = json.loads(body)["kwargs"]["job"]
        providers.append(f"{job['provider_namespace']}/{job['resource_type']}")
