"""A job that kills its worker process ends in the archive as crash_loop; no other job is lost or stuck."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from provider_jobs.settings import Settings

from fault_workload import Tally, send, settled

HERE = Path(__file__).parent


@pytest.mark.fault
@pytest.mark.timeout(180)
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_job_that_kills_its_worker_is_dead_lettered_as_crash_loop_after_max_deliveries(
    settings: Settings, amqp, tmp_path: Path, queue_type: str
) -> None:
    # The default limit where the worker counts; a quorum queue's x-delivery-limit is set from it.
    limit = 5 if queue_type == "classic" else 3
    settings = replace(settings, queue_type=queue_type, max_deliveries=limit)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_QUEUE_TYPE": queue_type,
        "PROVIDER_JOBS_RETRY_DELAY_S": "0.02",
        "PROVIDER_JOBS_MAX_DELIVERIES": str(limit),
        "PROVIDER_JOBS_WORKER_ID": "crash-test-worker",
        "PROVIDER_JOBS_WORKER_THREADS": "2",
        "PROVIDER_JOBS_LOG_FORMAT": "json",
        "FAULT_OUTCOMES_DIR": str(tmp_path),
    }
    sent = send(settings, {"ok": 40, "flaky": 10, "permanent": 5, "crash": 1})
    tally, deaths, process = Tally(), 0, None
    deadline = time.monotonic() + 120
    log = (tmp_path / "worker.log").open("ab")
    try:
        while not settled(tally, sent, tmp_path, settings.broker_url, settings.queue_name):
            assert time.monotonic() < deadline, (
                f"{tally.summary(sent)}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
            )
            if process is not None and process.poll() is not None:
                assert process.returncode == 17, (tmp_path / "worker.log").read_text()[-3000:]
                deaths += 1
                process = None
            if process is None:  # a supervisor (Kubernetes, the Dramatiq CLI's parent) starts it again
                process = subprocess.Popen(
                    [sys.executable, str(HERE / "fault_workload.py")], env=env, stdout=log, stderr=log
                )
            time.sleep(0.05)
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()
    [crash] = [job_id for job_id, behaviour in sent.behaviours.items() if behaviour == "crash"]
    assert tally.archived[crash] == "crash_loop"
    if queue_type == "classic":  # the worker counted
        assert tally.dead_letters[crash]["deliveries"] == limit
        assert f"{limit} times" in tally.dead_letters[crash]["error"]
        assert tally.dead_letters[crash]["worker_id"] == "crash-test-worker"
    else:  # RabbitMQ counted (x-delivery-limit)
        assert tally.dead_letters[crash]["reason"] == "delivery_limit"
    # `limit` deliveries ran it, the next dead-lettered it unrun; fewer if a copy and its original
    # both came back after a crash (at-least-once: the original's ack may not have left in time).
    assert 1 <= deaths <= limit
    assert not tally.lost(sent), tally.summary(sent)
    # A count goes up for every job the dead process held, so a job that shared every crash (this
    # queue is nearly empty: the same few jobs are prefetched with the culprit each time) can be
    # dead-lettered with it: archived as crash_loop, replayable, never lost (README). Any other job
    # ends as its behaviour says.
    assert {tally.archived[j] for j in tally.wrong_outcome(sent)} <= {"crash_loop"}, tally.summary(sent)
