"""GET /providers and the providers of GET /queue-stats, from the health stream of the private node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from provider_jobs.health import HealthSync
from provider_jobs.middleware.breaker import ProviderBreakers
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.settings import Settings

from support import wait_for

KEY = "ITL.Core/ResourceGroup"


@pytest.fixture
def announcing(settings: Settings, amqp: Any) -> Iterator[tuple[HealthSync, ProviderBreakers]]:
    """A worker's health side, without the worker: it announces one provider every 0.2 s."""
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({}))
    breakers = ProviderBreakers(min_calls=2, min_jobs=2, probe_interval_s=30)
    sync = HealthSync(
        settings.replace(providers_announce_s=0.2, worker_id="api-test-worker"),
        breakers,
        registry=registry,
    )
    sync.start()
    assert sync.wait_caught_up(10)
    yield sync, breakers
    sync.stop()
    amqp.queue_delete(f"{settings.queue_name}.health")


def test_providers_lists_each_provider_with_its_workers_and_breaker(client: TestClient, announcing) -> None:
    _, breakers = announcing
    body = wait_for(lambda: (r := client.get("/providers").json())["providers"] and r)
    [entry] = body["providers"]
    assert (entry["provider"], entry["registered"], entry["healthy"], entry["state"]) == (
        KEY,
        True,
        True,
        "closed",
    )
    assert [w["worker"] for w in entry["workers"]] == ["api-test-worker"]
    breakers.record_failure(KEY, "timeout")
    breakers.record_failure(KEY, "timeout")
    opened = wait_for(lambda: (r := client.get("/providers").json()["providers"][0])["state"] == "open" and r)
    assert (opened["healthy"], opened["failures"]) == (False, 2)
    assert opened["next_probe_at"] == pytest.approx(breakers.state(KEY).next_probe_at)
    assert opened["breaker"]["history"][-1]["event"] == "opened"


def test_queue_stats_shows_the_breakers(client: TestClient, announcing) -> None:
    _, breakers = announcing
    breakers.record_failure(KEY, "connection_error")
    breakers.record_failure(KEY, "connection_error")
    entry = wait_for(
        lambda: (p := client.get("/queue-stats").json()["providers"]) and p[0]["state"] == "open" and p[0]
    )
    assert (entry["provider"], entry["failures"]) == (KEY, 2)


def test_providers_is_empty_when_no_worker_announced(
    client: TestClient, amqp: Any, settings: Settings
) -> None:
    assert client.get("/providers").json() == {"providers": [], "complete": True}
    amqp.queue_delete(f"{settings.queue_name}.health")
