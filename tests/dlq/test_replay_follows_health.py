"""Replays follow the providers' health, on the private node: a provider whose breaker is open
(as a worker shares it on the health stream) gets nothing until it closes, the others go on."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from breaker_support import (
    DOWN,
    UP,
    close_breaker,
    published_providers,
    store_dead_letters,
)
from breaker_support import (
    outage as provider_outage,
)
from provider_jobs.dlq import DeadLetterArchive, DlqPolicy, PolicyRule, Replayer, process_dlq
from provider_jobs.dlq.cli.app import dlq_app
from provider_jobs.dlq.operations import Operations
from provider_jobs.dlq.recovery import RecoveryReplay
from provider_jobs.health import follow_breakers
from provider_jobs.settings import Settings

from support import queue_depth, wait_for


@pytest.fixture
def archive_url(tmp_path: Path) -> str:
    """SQLite only: what is tested here is the replay's sending, not the archive."""
    return f"sqlite:///{tmp_path}/archive.sqlite3"


@pytest.fixture
def env(settings: Settings, archive_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {
        "PROVIDER_JOBS_ARCHIVE_URL": archive_url,
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_OPERATOR": "carol",
        "PROVIDER_JOBS_LOG_LEVEL": "WARNING",
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture
def outage(settings: Settings, amqp: Any) -> Iterator[Any]:
    with provider_outage(settings, amqp) as breakers:
        yield breakers


def test_a_paced_replay_sends_the_up_provider_at_its_rate_and_the_down_one_after_it_recovers(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    down_ids, _ = store_dead_letters(archive, settings.queue_name, DOWN, 3)
    up_ids, _ = store_dead_letters(archive, settings.queue_name, UP, 4)
    pauses: list[tuple[str, str | None]] = []
    reports: list[Any] = []
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="carol")

    def replay() -> None:
        with follow_breakers(settings) as health:
            reports.append(
                replayer.replay(
                    down_ids + up_ids,
                    rate_per_s=20,
                    health=health,
                    on_pause=lambda key, pause: pauses.append((key, pause.describe() if pause else None)),
                )
            )

    thread = threading.Thread(target=replay)
    thread.start()
    wait_for(lambda: queue_depth(amqp, settings.queue_name) == len(up_ids))
    # The up provider's records are out, paced; the down one's wait, unclaimed, for its breaker.
    assert thread.is_alive() and [key for key, _ in pauses] == [DOWN]
    assert pauses[0][1] is not None and pauses[0][1].startswith(f"{DOWN} down since ")
    assert {archive.get(i).status for i in down_ids} == {"dead"}
    assert published_providers(amqp, settings.queue_name) == [UP] * len(up_ids)
    close_breaker(outage, DOWN)
    thread.join(15)
    assert not thread.is_alive()
    [report] = reports
    assert published_providers(amqp, settings.queue_name) == [DOWN] * len(down_ids)
    assert report.published == len(down_ids) + len(up_ids)
    assert [o.record_id for o in report.outcomes] == down_ids + up_ids
    assert [p.provider for p in report.pauses] == [DOWN] and pauses[-1] == (DOWN, None)
    assert {archive.get(i).status for i in down_ids + up_ids} == {"replayed"}


def test_a_paused_provider_is_given_up_after_max_pause_s_and_its_records_stay_dead(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    down_ids, _ = store_dead_letters(archive, settings.queue_name, DOWN, 2)
    with follow_breakers(settings) as health:
        report = Replayer(archive=archive, broker_url=settings.broker_url, who="carol").replay(
            down_ids, health=health, max_pause_s=0
        )
    assert [o.status for o in report.outcomes] == ["skipped", "skipped"]
    assert (report.outcomes[0].detail or "").startswith(f"paused: {DOWN} down since ")
    assert queue_depth(amqp, settings.queue_name) == 0
    assert {archive.get(i).status for i in down_ids} == {"dead"}


def test_the_cli_group_replay_shows_the_pause_and_finishes_by_itself_once_the_breaker_closes(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any, env: dict[str, str]
) -> None:
    down_ids, group = store_dead_letters(archive, settings.queue_name, DOWN, 3)
    with subprocess.Popen(
        [sys.executable, "-m", "provider_jobs", "dlq", "replay", "--group", group],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as replay:
        assert replay.stderr is not None
        try:
            paused = replay.stderr.readline()
            assert paused.startswith(f"paused: {DOWN} down since "), paused
            assert "--ignore-breaker sends them anyway" in paused
            assert queue_depth(amqp, settings.queue_name) == 0 and replay.poll() is None
            close_breaker(outage, DOWN)
            out, err = replay.communicate(timeout=30)
        finally:
            replay.kill()
    assert replay.returncode == 0, err
    assert err.startswith(f"resumed: {DOWN}")
    assert f"paused: {DOWN} down since " in out and "then sent" in out
    assert published_providers(amqp, settings.queue_name) == [DOWN] * len(down_ids)


def test_ignore_breaker_sends_at_once(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any, env: dict[str, str]
) -> None:
    down_ids, group = store_dead_letters(archive, settings.queue_name, DOWN, 3)
    result = CliRunner().invoke(dlq_app, ["replay", "--group", group, "--ignore-breaker", "--json"])
    assert result.exit_code == 0, result.output
    assert '"paused": []' in result.stdout
    assert published_providers(amqp, settings.queue_name) == [DOWN] * len(down_ids)


def test_a_recovery_replay_waits_while_the_breaker_is_open_again(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    down_ids, _ = store_dead_letters(archive, settings.queue_name, DOWN, 3)
    recovery = RecoveryReplay(settings, archive, categories=("service_unavailable",))
    recovery.start()
    try:
        wait_for(lambda: recovery.breakers.pause_of(DOWN) is not None)
        recovering = threading.Thread(target=recovery.recover, args=(DOWN,))
        recovering.start()
        wait_for(lambda: recovery.breakers.pause_of(DOWN) is not None and recovering.is_alive())
        recovering.join(0.5)
        assert recovering.is_alive() and queue_depth(amqp, settings.queue_name) == 0
        close_breaker(outage, DOWN)
        recovering.join(15)
        assert not recovering.is_alive()
    finally:
        recovery.stop()
    assert published_providers(amqp, settings.queue_name) == [DOWN] * len(down_ids)
    assert {archive.get(i).status for i in down_ids} == {"replayed"}


def test_a_paused_operation_stops_while_its_records_wait_for_the_breaker(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    down_ids, _ = store_dead_letters(archive, settings.queue_name, DOWN, 3)
    up_ids, _ = store_dead_letters(archive, settings.queue_name, UP, 2)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(down_ids + up_ids, who="carol", selection={"ids": 5})
    stopped: list[Any] = []

    def run() -> None:
        with follow_breakers(settings) as health:
            stopped.append(ops.run(op_id, health=health))

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: queue_depth(amqp, settings.queue_name) == len(up_ids))
    assert thread.is_alive()
    ops.pause(op_id)
    thread.join(5)
    assert not thread.is_alive(), "the pause stopped the wait for the breaker"
    [paused] = stopped
    assert (paused.state, paused.counts) == ("paused", {"sent": 2, "pending": 3})
    assert {archive.get(i).status for i in down_ids} == {"dead"}
    close_breaker(outage, DOWN)
    with follow_breakers(settings) as health:
        ops.take_over(op_id)
        done = ops.run(op_id, health=health)
    assert (done.state, done.counts) == ("done", {"sent": 5})
    assert published_providers(amqp, settings.queue_name) == [UP] * 2 + [DOWN] * 3


def test_triage_replays_wait_for_the_breaker(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, outage: Any
) -> None:
    down_ids, _ = store_dead_letters(archive, settings.queue_name, DOWN, 2)
    up_ids, _ = store_dead_letters(archive, settings.queue_name, UP, 2)
    policy = DlqPolicy(rules=(PolicyRule(name="all", action="replay"),))
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="triage")
    pauses: list[tuple[str, bool]] = []
    reports: list[Any] = []

    def triage() -> None:
        with follow_breakers(settings) as health:
            reports.append(
                process_dlq(
                    archive,
                    policy=policy,
                    replayer=replayer,
                    health=health,
                    on_pause=lambda key, pause: pauses.append((key, pause is not None)),
                )
            )

    thread = threading.Thread(target=triage)
    thread.start()
    wait_for(lambda: queue_depth(amqp, settings.queue_name) == len(up_ids))
    thread.join(0.5)
    assert thread.is_alive() and pauses == [(DOWN, True)]
    assert {archive.get(i).status for i in down_ids} == {"dead"}
    close_breaker(outage, DOWN)
    thread.join(15)
    assert not thread.is_alive()
    [report] = reports
    assert report.replay is not None and report.replay.published == 4
    assert [p.provider for p in report.replay.pauses] == [DOWN]
    assert published_providers(amqp, settings.queue_name) == [UP] * 2 + [DOWN] * 2


def test_dlq_process_ignore_breaker_sends_at_once(
    settings: Settings,
    amqp: Any,
    archive: DeadLetterArchive,
    outage: Any,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    down_ids, _ = store_dead_letters(archive, settings.queue_name, DOWN, 2)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rules]]\nname = "all"\naction = "replay"\n')
    result = CliRunner().invoke(dlq_app, ["process", "--policy", str(policy), "--ignore-breaker", "--json"])
    assert result.exit_code == 0, result.output
    assert '"paused": []' in result.stdout
    assert published_providers(amqp, settings.queue_name) == [DOWN] * len(down_ids)
