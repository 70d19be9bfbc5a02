"""Replay on recovery: a provider available again gets its health dead letters back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq.common import xq_name

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
from provider_jobs.dlq.archive.store import DEAD, REPLAYED
from provider_jobs.dlq.recovery import RECOVERY_WHO, RecoveryReplay, recovery_plan
from provider_jobs.dlq.triage import DlqPolicy
from provider_jobs.errors import ProviderNotAvailable
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, running_worker, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}
KEY = "ITL.Core/ResourceGroup"


class Switch:
    """An in-process provider: down (provider not available) until ``down`` is cleared."""

    def __init__(self, *, down: bool) -> None:
        self.down = down
        self.calls: list[str] = []
        self.done: list[str] = []
        self.lock = threading.Lock()

    def execute(self, job: ProviderJob) -> Any:
        with self.lock:
            self.calls.append(job.job_id)
            if self.down:
                raise ProviderNotAvailable("Provider not available")
            self.done.append(job.job_id)
        return {}


@pytest.fixture
def health(settings: Settings, tmp_path: Path, amqp: Any) -> Iterator[Settings]:
    yield settings.replace(
        archive_url=f"sqlite:///{tmp_path}/archive.sqlite3",
        providers_announce_s=0.2,
        breaker_min_calls=3,
        breaker_probe_interval_s=0.2,
        max_attempts=1,
        recovery_replay_rate=200.0,
    )
    amqp.queue_delete(f"{settings.queue_name}.health")


@pytest.fixture
def archive(health: Settings) -> Iterator[DeadLetterArchive]:
    archive = DeadLetterArchive(health.archive_url)
    yield archive
    archive.close()


def archive_dead_letters(health: Settings, archive: DeadLetterArchive, amqp: Any, count: int) -> None:
    wait_for(lambda: queue_depth(amqp, xq_name(health.queue_name)) >= count, timeout_s=10)
    DeadLetterArchiver.from_settings(health, archive=archive).run(until_idle=True)
    assert len(archive.find(limit=1000)) == count


@pytest.fixture
def recovery(health: Settings, archive: DeadLetterArchive) -> Iterator[Any]:
    started: list[RecoveryReplay] = []

    def start(categories: tuple[str, ...] = ("provider_not_found",)) -> RecoveryReplay:
        started.append(RecoveryReplay(health, archive, categories=categories))
        started[-1].start()
        return started[-1]

    yield start
    for each in started:
        each.stop()


def test_a_provider_registered_again_gets_its_not_found_dead_letters_replayed_once(
    health, archive, amqp, recovery
) -> None:
    registry = ProviderRegistry()
    broker = build_broker(health)
    actors = declare_provider_actors(broker, registry, health)
    jobs = [actors["create_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(4)]
    with running_worker(broker):
        archive_dead_letters(health, archive, amqp, 4)
        assert {r.category for r in archive.find(limit=10)} == {"provider_not_found"}
        replay = recovery()
        provider = Switch(down=False)
        registry.register("ITL.Core", "ResourceGroup", provider)
        wait_for(lambda: sorted(provider.done) == sorted(jobs), timeout_s=15)
        wait_for(lambda: KEY in replay.reports)
    records = archive.find(limit=10)
    assert {r.status for r in records} == {REPLAYED}
    entries = archive.audit(who=RECOVERY_WHO, action="replay")
    assert sorted(e.record_id for e in entries) == sorted(r.id for r in records)
    assert len(provider.calls) == 4


def test_a_breaker_that_closes_replays_the_categories_the_policy_names(
    health, archive, amqp, recovery
) -> None:
    registry = ProviderRegistry()
    provider = Switch(down=True)
    registry.register("ITL.Core", "ResourceGroup", provider)
    broker = build_broker(health)
    actors = declare_provider_actors(broker, registry, health)
    jobs = [actors["get_resource"].send({**RG, "request": {"n": i}}).options["job_id"] for i in range(3)]
    policy = DlqPolicy.from_dict(
        {"rules": [{"action": "keep"}], "recovery_categories": ["provider_not_available"]}
    )
    with running_worker(broker, threads=1):
        # Two jobs spend their one attempt before the third failure opens the breaker.
        archive_dead_letters(health, archive, amqp, 2)
        replay = recovery(policy.recovery_categories)
        breakers = next(m for m in broker.middleware if hasattr(m, "breakers") and m.breakers).breakers
        wait_for(lambda: breakers.state(KEY).state != "closed")
        provider.down = False
        wait_for(lambda: sorted(provider.done) == sorted(jobs), timeout_s=15)
    assert {r.status for r in archive.find(limit=10)} == {REPLAYED}
    assert replay.reports[KEY].published == 2


def test_a_recovery_replays_only_what_died_before_it_began(health, archive, amqp) -> None:
    registry = ProviderRegistry()
    broker = build_broker(health)
    actors = declare_provider_actors(broker, registry, health)
    actors["create_resource"].send(RG)
    with running_worker(broker):
        archive_dead_letters(health, archive, amqp, 1)
    [record] = archive.find(limit=1)
    assert record.status == DEAD
    assert recovery_plan(archive, KEY, ["provider_not_found"]).record_ids == (record.id,)
    assert (
        recovery_plan(archive, KEY, ["provider_not_found"], before_ms=record.dead_lettered_ms).record_ids
        == ()
    )
    assert recovery_plan(archive, KEY, ["timeout"]).record_ids == ()
    assert recovery_plan(archive, "ITL.Core/Other", ["provider_not_found"]).record_ids == ()


def test_dlq_process_dry_run_shows_what_a_recovery_would_replay(
    health, archive, amqp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from provider_jobs.cli import app
    from provider_jobs.health import HealthSync
    from provider_jobs.middleware.breaker import ProviderBreakers

    registry = ProviderRegistry()
    broker = build_broker(health)
    actors = declare_provider_actors(broker, registry, health)
    actors["create_resource"].send(RG)
    with running_worker(broker):
        archive_dead_letters(health, archive, amqp, 1)
    [record] = archive.find(limit=1)
    registry.register("ITL.Core", "ResourceGroup", Switch(down=False))
    sync = HealthSync(health, ProviderBreakers(), registry=registry)
    sync.start()
    try:
        assert sync.wait_caught_up(10)
        for name, value in {
            "ARCHIVE_URL": health.archive_url,
            "BROKER_URL": health.broker_url,
            "QUEUE_NAME": health.queue_name,
            "LOG_LEVEL": "WARNING",
        }.items():
            monkeypatch.setenv(f"PROVIDER_JOBS_{name}", value)

        def recovery_shown() -> Any:
            result = CliRunner().invoke(app, ["dlq", "process", "--dry-run", "--json"])
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)["recovery"]

        assert wait_for(recovery_shown) == [{"provider": KEY, "record_ids": [record.id]}]
    finally:
        sync.stop()
    assert archive.find(limit=1)[0].status == DEAD


def test_a_replay_waits_for_a_breaker_afresh() -> None:
    from types import SimpleNamespace

    from provider_jobs.dlq.replay.message import prepare_message

    record = SimpleNamespace(id=7, status=DEAD, queue_name="q", message_id="m-7")
    waited = {"breaker_waiting_since_ms": 1, "breaker_waits": 360, "breaker": {"key": KEY}, "provider": KEY}
    message = {
        "queue_name": "q",
        "actor_name": "create_resource",
        "args": [],
        "kwargs": {},
        "options": waited,
    }
    options = prepare_message(record, message, None, None)["options"]
    assert options == {"provider": KEY, "retries": 0, "replay_of": 7, "replay_of_message_id": "m-7"}
