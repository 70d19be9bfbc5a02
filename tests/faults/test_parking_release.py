"""A worker process SIGKILLed while it releases parked jobs loses none of them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pika
import pytest
from dramatiq.common import xq_name
from parking_worker import NAMESPACE, RESOURCE_TYPE, registry

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.middleware.parking import parking_queue_name
from provider_jobs.settings import Settings

from fault_workload import delete_queues, worker_env
from support import depth_or_zero, wait_for

HERE = Path(__file__).parent
KEY = f"{NAMESPACE}/{RESOURCE_TYPE}"


def succeeded(directory: Path) -> Counter[str]:
    """Job id -> times it succeeded, over every worker process's file."""
    runs: Counter[str] = Counter()
    for path in directory.glob("succeeded-*"):
        runs.update(line for line in path.read_text().splitlines() if line)
    return runs


@pytest.mark.fault
@pytest.mark.timeout(120)
def test_a_worker_killed_while_releasing_parked_jobs_loses_none(settings: Settings, tmp_path: Path) -> None:
    fault = settings.replace(breaker_min_calls=3, breaker_probe_interval_s=0.2, max_attempts=2)
    parked = parking_queue_name(fault.queue_name, KEY)
    env = worker_env(
        fault,
        tmp_path,
        PROVIDER_JOBS_BREAKER_PROBE_INTERVAL_S="0.2",
        PROVIDER_JOBS_BREAKER_RELEASE_RATE="200",
        PROVIDER_JOBS_MAX_ATTEMPTS="2",
    )
    (tmp_path / "down").touch()
    broker = build_broker(fault)
    create = declare_provider_actors(broker, registry(), fault)["create_resource"]
    total = 1000
    jobs = [
        create.send(provider_namespace=NAMESPACE, resource_type=RESOURCE_TYPE, request={"n": n}).options[
            "job_id"
        ]
        for n in range(total)
    ]
    broker.close()
    log = (tmp_path / "workers.log").open("ab")
    command = [sys.executable, str(HERE / "parking_worker.py")]
    first = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    second = None
    try:
        wait_for(lambda: depth_or_zero(fault.broker_url, parked) >= total - 20, timeout_s=30)
        (tmp_path / "down").unlink()
        # Killed once it has released some, well before it could have released all (200/s).
        wait_for(lambda: sum(succeeded(tmp_path).values()) >= 100, timeout_s=30, interval_s=0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        left = depth_or_zero(fault.broker_url, parked)
        assert left > 0
        second = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        wait_for(lambda: set(succeeded(tmp_path)) >= set(jobs), timeout_s=60, interval_s=0.2)
        time.sleep(0.5)
        runs = succeeded(tmp_path)
        assert depth_or_zero(fault.broker_url, parked) == 0
        assert depth_or_zero(fault.broker_url, xq_name(fault.queue_name)) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
        log.close()
        delete_queues(fault)
        connection = pika.BlockingConnection(pika.URLParameters(fault.broker_url))
        for name in (parked, f"{fault.queue_name}.health"):
            connection.channel().queue_delete(name)
        connection.close()
    twice = sorted(job for job, count in runs.items() if count > 1)
    print(f"{left} parked jobs left at the kill; {len(twice)} job(s) ran twice")
    assert set(runs) == set(jobs)
    # Releases are transactions: only jobs the killed process ran without its ack reaching RabbitMQ.
    assert len(twice) <= fault.worker_threads + 50
