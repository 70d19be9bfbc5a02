"""A job that kills its worker process ends in the archive as crash_loop after exactly MAX_CRASHES
runs; no job that only stood next to it is blamed, lost or run twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from provider_jobs.settings import Settings

from fault_workload import Tally, send, settled, worker_env

HERE = Path(__file__).parent
#: Worker processes, each restarted by its supervisor when it dies (as Kubernetes would).
PROCESSES = 3


@pytest.mark.fault
@pytest.mark.timeout(240)
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_job_that_kills_its_worker_runs_max_crashes_times_and_only_it_is_blamed(
    settings: Settings, amqp, tmp_path: Path, queue_type: str
) -> None:
    defaults = Settings()
    settings = settings.replace(
        queue_type=queue_type,
        max_deliveries=defaults.max_deliveries,
        max_crashes=defaults.max_crashes,
    )
    env = worker_env(settings, tmp_path, PROVIDER_JOBS_WORKER_ID="crash-test-worker")
    sent = send(settings, {"ok": 400, "flaky": 100, "permanent": 50, "slow": 50, "crash": 1})
    tally, deaths = Tally(), 0
    processes: list[subprocess.Popen[bytes] | None] = [None] * PROCESSES
    deadline = time.monotonic() + 200
    log = (tmp_path / "worker.log").open("ab")
    try:
        while not settled(tally, sent, tmp_path, settings.broker_url, settings.queue_name):
            assert time.monotonic() < deadline, (
                f"{tally.summary(sent)}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
            )
            for n, process in enumerate(processes):
                if process is not None and process.poll() is not None:
                    assert process.returncode == 17, (tmp_path / "worker.log").read_text()[-3000:]
                    deaths += 1
                if process is None or process.returncode is not None:
                    processes[n] = subprocess.Popen(
                        [sys.executable, str(HERE / "fault_workload.py")], env=env, stdout=log, stderr=log
                    )
            time.sleep(0.05)
    finally:
        for process in processes:
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
            elif process is not None and process.returncode == 17:
                deaths += 1
        log.close()
    print({j: (tally.archived.get(j), tally.dead_letters.get(j)) for j in tally.wrong_outcome(sent)})
    [crash] = [job_id for job_id, behaviour in sent.behaviours.items() if behaviour == "crash"]
    assert tally.archived[crash] == "crash_loop"
    letter = tally.dead_letters[crash]
    assert letter["crashes"] == settings.max_crashes
    assert f"{settings.max_crashes} times" in letter["error"]
    assert letter["worker_id"] == "crash-test-worker"
    # Exactly MAX_CRASHES runs, however the restarts fell: one beside others, then alone.
    assert tally.crash_runs(tmp_path)[crash] == settings.max_crashes == deaths
    blamed = {job_id for job_id, category in tally.archived.items() if category == "crash_loop"}
    assert blamed == {crash}, (blamed, [tally.dead_letters[j] for j in blamed - {crash}])
    assert not tally.lost(sent), tally.summary(sent)
    assert not tally.both(), tally.summary(sent)
    assert not tally.wrong_outcome(sent), tally.summary(sent)
    # A job whose outcome was settling (its ack or dead letter not yet flushed) when its process
    # died runs again: a few per kill, never with another outcome.
    print(f"kills {deaths}: {tally.summary(sent)}")
    assert tally.archived_twice + tally.run_twice() <= deaths * 4, tally.summary(sent)
