"""Quorum mode on a real three-node RabbitMQ cluster: nodes stop under load, and every job is counted.

Two Dramatiq CLI workers (each preferring another node), the archiver and a
producer run on the cluster with quorum queues while the node that leads the
work queue is stopped and started again, then the node a worker is connected
to. At the end sent = succeeded + archived: none lost, none both succeeded and
archived; jobs run twice (a delivery whose ack a stopped node never saw) are
counted and reported.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dramatiq.common import xq_name

from provider_jobs import JobQueue, ProviderJob, ProviderRegistry
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.dlq.archive.store import DeadLetterArchive
from provider_jobs.dlq.archiver.consumer import DeadLetterArchiver
from provider_jobs.dlq.replay.replayer import Replayer
from provider_jobs.rabbitmq import read_queue_stats
from provider_jobs.settings import Settings
from rabbitmq_cluster import Cluster, Node
from test_compat import CustomProviderWorker

from fault_workload import Sent, Tally, interleaved, send_job

HERE = Path(__file__).parent

#: The jobs each phase sends: behaviour -> count (see fault_workload; no "crash": test_crash_loop has it).
MIX = {"ok": 200, "slow": 60, "flaky": 50, "permanent": 20, "exhaust": 20}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _rotated(urls: list[str], first: int) -> str:
    return ",".join(urls[first:] + urls[:first])


@dataclass
class Producer:
    """Sends jobs with confirms through its own failover broker; a send that failed is sent again
    (with the same job id), so a job RabbitMQ had taken before the failure may run twice."""

    settings: Settings
    prefix: str = ""
    sent: Sent = field(default_factory=Sent)
    resends: int = 0
    counter: int = 0

    def send(self, mix: dict[str, int]) -> None:
        broker = build_broker(self.settings)
        actors = declare_provider_actors(broker, None, self.settings)
        try:
            for behaviour in interleaved(mix):
                job_id = f"{self.prefix}{behaviour}-{self.counter}"
                deadline = time.monotonic() + 60
                while True:
                    try:
                        send_job(actors, behaviour, job_id)
                        break
                    except Exception:
                        assert time.monotonic() < deadline, f"could not send {job_id} for 60 s"
                        self.resends += 1
                        time.sleep(0.2)
                self.sent.behaviours[job_id] = behaviour
                self.counter += 1
        finally:
            broker.close()


def _tally(directory: Path, archive: DeadLetterArchive, queue: str) -> Tally:
    tally = Tally()
    tally.read_outcomes(directory)
    archived: Counter[str] = Counter()
    for record in archive.find(limit=100_000):
        if record.job_id is not None and record.source_queue == xq_name(queue):
            archived[record.job_id] += 1
            tally.archived[record.job_id] = record.category
    tally.archived_twice = sum(n - 1 for n in archived.values())
    return tally


def _successes(directory: Path) -> int:
    return sum(path.read_text().count("\n") for path in directory.glob("succeeded-*"))


def _wait(predicate, what: str, timeout_s: float, why=lambda: "") -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails naming ``what`` (and ``why()``)
    after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s; {why()}"
        time.sleep(0.05)
    return time.monotonic() - started


def _stop_under_load(node: Node, producer: Producer, probes: Producer, outcomes: Path, what: str) -> str:
    """Stop ``node`` while ``producer`` sends a mix, send one probe job, start the node again once the
    probe succeeded; a line saying how long the probe took from the stop."""
    # Twice the mix, so that the producer is still sending when the node stops.
    sending = threading.Thread(target=producer.send, args=({k: 2 * n for k, n in MIX.items()},))
    sent_before = len(producer.sent.behaviours)
    sending.start()
    _wait(lambda: len(producer.sent.behaviours) > sent_before + 100, "the producer sending", 30)
    started = time.monotonic()
    node.stop_app()
    stop_s = time.monotonic() - started
    probes.send({"ok": 1})
    [probe] = [job_id for job_id in probes.sent.behaviours if job_id.endswith(f"-{probes.counter - 1}")]
    flowing = _wait(lambda: _succeeded(outcomes, probe), f"a job sent after {what} stopped", 60)
    node.start_app()
    sending.join()
    return (
        f"{what} {node.name} stopped ({stop_s:.1f} s to stop): a job sent then ran "
        f"{flowing + stop_s:.1f} s after the stop began"
    )


def _succeeded(directory: Path, job_id: str) -> bool:
    line = f"{job_id}\n"
    return any(line in path.read_text() for path in directory.glob("succeeded-*"))


@pytest.mark.fault
@pytest.mark.timeout(170)
def test_no_job_is_lost_when_cluster_nodes_stop_under_load(cluster: Cluster, tmp_path: Path) -> None:
    queue = "cluster.jobs"
    outcomes = tmp_path / "outcomes"
    outcomes.mkdir()
    base = Settings(
        broker_url=cluster.broker_url,
        queue_name=queue,
        queue_type="quorum",
        retry_delay_s=0.05,
        hold_retries_up_to_ms=0,
        max_deliveries=10,
        worker_id="cluster-test",
        archive_url=f"sqlite:///{tmp_path / 'archive.sqlite3'}",
    )
    dramatiq_cli = shutil.which("dramatiq", path=os.path.dirname(sys.executable))
    workers: list[subprocess.Popen[bytes]] = []
    logs = []
    for first in (1, 2):  # worker 1 prefers node 2, worker 2 prefers node 3
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
            "PROVIDER_JOBS_BROKER_URL": _rotated(cluster.urls, first),
            "PROVIDER_JOBS_QUEUE_NAME": queue,
            "PROVIDER_JOBS_QUEUE_TYPE": "quorum",
            "PROVIDER_JOBS_RETRY_DELAY_S": "0.05",
            "PROVIDER_JOBS_HOLD_RETRIES_UP_TO_MS": "0",
            "PROVIDER_JOBS_MAX_DELIVERIES": "10",
            "PROVIDER_JOBS_LOG_FORMAT": "json",
            "PROVIDER_JOBS_LOG_LEVEL": "WARNING",
            "FAULT_OUTCOMES_DIR": str(outcomes),
            # The workload's providers fail on purpose; no circuit breaker holds their jobs back.
            "PROVIDER_JOBS_BREAKER_MIN_CALLS": "0",
            # Dramatiq restarts a consumer whose connection failed after this many ms (default 3000).
            "dramatiq_restart_delay": "500",
        }
        log = (tmp_path / f"worker{first}.log").open("wb")
        logs.append(log)
        workers.append(
            subprocess.Popen(
                [dramatiq_cli, "fault_cli_app", "-p", "1", "-t", "4"], env=env, stdout=log, stderr=log
            )
        )
    archive = DeadLetterArchive(base.archive_url)
    archiver = DeadLetterArchiver.from_settings(
        base.replace(broker_url=_rotated(cluster.urls, 2)), archive=archive, max_backoff_s=1.0
    )
    archiving = threading.Thread(target=archiver.run)
    producer = Producer(base)
    probes = Producer(base, prefix="probe-")
    stopped = time.monotonic()
    report: list[str] = []
    try:
        archiving.start()
        producer.send(MIX)
        _wait(lambda: _successes(outcomes) > 50, "first jobs run", 60)

        # 1. The node leading the work queue stops under load, and comes back.
        leader = cluster.node(cluster.leader_of(queue))
        report.append(_stop_under_load(leader, producer, probes, outcomes, "leader"))
        # 2. The node worker 1 is connected to (node 2, the first of its URLs) stops, and comes back.
        report.append(_stop_under_load(cluster.nodes[1], producer, probes, outcomes, "worker 1's node"))

        sent = Sent({**producer.sent.behaviours, **probes.sent.behaviours})
        tally = Tally()

        def settled() -> bool:
            nonlocal tally
            tally = _tally(outcomes, archive, queue)
            return not tally.lost(sent)

        _wait(
            settled,
            "every job succeeded or archived",
            60,
            lambda: f"{tally.summary(sent)}; {cluster.queues()}",
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for log in logs:
            log.close()
        archiver.stop()
        archiving.join(timeout=30)
    tally = _tally(outcomes, archive, queue)
    duration = time.monotonic() - stopped
    assert producer.sent.behaviours.keys().isdisjoint(probes.sent.behaviours)
    print(
        f"{tally.summary(sent)}; producer resends {producer.resends}; "
        + "; ".join(report)
        + f"; {duration:.1f} s from the first job to the last outcome"
    )
    assert len(sent.behaviours) == 5 * sum(MIX.values()) + 2
    assert not tally.lost(sent)
    assert not tally.both(), tally.summary(sent)
    assert not tally.wrong_outcome(sent), tally.summary(sent)
    assert set(sent.behaviours) == set(tally.succeeded) | set(tally.archived)
    # No job was dead-lettered for its deliveries: node stops return deliveries, under the limit.
    assert "crash_loop" not in tally.archived.values(), Counter(tally.archived.values())


class _FlakyThenFixed:
    """Deploys in progress twice, then done; a quota exceeded until ``fixed``."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fixed = False
        self.lock = threading.Lock()

    def execute(self, job: ProviderJob) -> dict[str, bool]:
        with self.lock:
            self.calls[job.request["name"]] += 1
            count = self.calls[job.request["name"]]
        if job.request["name"] == "flaky" and count <= 2:
            raise RuntimeError("deploy in progress")
        if job.request["name"] == "quota" and not self.fixed:
            raise RuntimeError("quota exceeded")
        return {"done": True}


@pytest.mark.fault
@pytest.mark.timeout(90)
def test_the_provider_worker_flow_dead_letters_and_replay_work_on_the_cluster(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = Settings(
        broker_url=_rotated(cluster.urls, 1),
        queue_name="cluster.compat",
        queue_type="quorum",
        retry_delay_s=0.02,
        breaker_min_calls=0,
        archive_url=f"sqlite:///{tmp_path / 'archive.sqlite3'}",
    )
    registry = ProviderRegistry()
    provider = _FlakyThenFixed()
    registry.register("ITL.Core", "ResourceGroup", provider)
    queue = JobQueue(settings=settings)
    archive = DeadLetterArchive(settings.archive_url)
    try:
        for name in ("flaky", "quota"):
            queue.submit(
                provider_namespace="ITL.Core",
                resource_type="ResourceGroup",
                operation="create",
                request={"name": name},
            )
        with CustomProviderWorker(
            worker_id="cluster", provider_registry=registry, job_queue=queue, max_retries=3, retry_delay=0.02
        ) as worker:
            _wait(
                lambda: provider.calls == Counter({"flaky": 3, "quota": 1}), "the flaky job's 3 attempts", 30
            )
            DeadLetterArchiver.from_settings(settings, archive=archive).run(until_idle=True)
            [record] = archive.find()
            assert (record.request, record.retryable) == ({"name": "quota"}, False)
            provider.fixed = True
            report = Replayer(archive=archive, broker_url=settings.broker_url, who="test").replay([record.id])
            assert report.published == 1, report
            _wait(lambda: provider.calls["quota"] == 2, "the replayed job", 30)
            worker.join()
        stats = {stat.name: stat for stat in read_queue_stats(settings)}
        assert {"cluster.compat", "cluster.compat.XQ"} <= set(stats)
        assert stats["cluster.compat"].messages_ready == 0
    finally:
        queue.close()
