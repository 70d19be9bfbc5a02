"""The broker bounced every few seconds under load: every job succeeds or is archived, none lost.

After a connection drop Dramatiq settles the old channel's messages on the new
consumer, whose delivery tags start from 1 again; a tag number alone would ack
a different, live message (and its dead letter would be dropped later).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import dramatiq
import pytest
from pytest_rabbitmq.factories.executor import RabbitMqExecutor

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.settings import Settings

from fault_workload import Tally, delete_queues, fault_registry, send, settled

#: (queue type, held retries up to ms, seconds down, seconds up between (or a random range), outages)
SCENARIOS: dict[str, tuple[str, int, float, float | tuple[float, float], int]] = {
    "bounced-classic-held-retries": ("classic", 1000, 1.0, 2.5, 6),
    "bounced-classic-no-held-retries": ("classic", 0, 1.0, 2.5, 6),
    "bounced-quorum": ("quorum", 1000, 1.0, 2.5, 6),
    "stopped-5s-classic": ("classic", 1000, 5.0, 3.0, 1),
    # The flapping connection as it was reported: 1 s down every 3-6 s, ten times.
    "flapping-classic": ("classic", 1000, 1.0, (2.0, 5.0), 10),
}
#: Jobs that may run twice after completing, per scenario: those whose ack was lost with the
#: connection and whose announcement was lost with it too (none seen here; 194 of 3,000 before).
MAX_RUN_TWICE = 10


def _bounce(
    rabbitmq_proc: RabbitMqExecutor,
    stop: threading.Event,
    count: list[int],
    down_s: float,
    up_s: float | tuple[float, float],
    n: int,
) -> None:
    for _ in range(n):
        if stop.wait(up_s if isinstance(up_s, float) else random.uniform(*up_s)):
            return
        rabbitmq_proc.rabbitctl_output("stop_app")
        time.sleep(down_s)
        rabbitmq_proc.rabbitctl_output("start_app")
        count[0] += 1


@pytest.mark.fault
@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_job_is_lost_when_the_broker_bounces_under_load(
    settings: Settings,
    rabbitmq_proc: RabbitMqExecutor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scenario: str,
) -> None:
    queue_type, hold_ms, down_s, up_s, outages = SCENARIOS[scenario]
    monkeypatch.setenv("FAULT_OUTCOMES_DIR", str(tmp_path))
    settings = settings.replace(
        queue_type=queue_type,
        hold_retries_up_to_ms=hold_ms,
        retry_delay_s=0.05,
    )
    sent = send(settings, {"ok": 800, "slow": 1600, "flaky": 300, "permanent": 200, "exhaust": 200})
    stop, bounced = threading.Event(), [0]
    bouncer = threading.Thread(target=_bounce, args=(rabbitmq_proc, stop, bounced, down_s, up_s, outages))
    workers = []
    tally = Tally()
    try:
        for _ in range(2):  # two worker processes' worth: each its own broker and connections
            broker = build_broker(settings)
            declare_provider_actors(broker, fault_registry(), settings)
            worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=20)
            worker.start()
            workers.append((worker, broker))
        bouncer.start()
        deadline = time.monotonic() + 180
        while not (
            not bouncer.is_alive()
            and settled(tally, sent, tmp_path, settings.broker_url, settings.queue_name)
        ):
            assert time.monotonic() < deadline, f"{tally.summary(sent)} after {bounced[0]} bounces"
            time.sleep(0.5)
    finally:
        stop.set()
        bouncer.join()
        for worker, broker in workers:
            worker.stop()
            broker.close()
        delete_queues(settings)
    print(f"{tally.summary(sent)} after {bounced[0]} bounces ({os.environ.get('PYTEST_CURRENT_TEST')})")
    assert bounced[0] == outages
    assert not tally.lost(sent)
    assert not tally.wrong_outcome(sent), tally.summary(sent)
    assert not tally.both(), tally.summary(sent)
    assert tally.run_twice() <= MAX_RUN_TWICE, tally.summary(sent)
    # With every default on: a bounce returns what workers held, but nothing is blamed for it.
    assert not tally.blamed(sent), tally.summary(sent)
