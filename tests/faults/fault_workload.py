"""The crash-fault workload: jobs that succeed, fail once, fail for good, exhaust, run slowly or kill
their worker process, and an exact count of what became of each.

A job succeeds by appending its id to a file of ``FAULT_OUTCOMES_DIR`` (one
file per process, so that workers killed mid-write lose nothing of others'),
and is archived when its dead letter reaches ``<queue>.XQ``. ``python
fault_workload.py`` runs one worker process on it (``PROVIDER_JOBS_*``
settings), for the tests that kill worker processes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import pika
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import CurrentMessage

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.errors import ValidationFailed
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import FunctionProvider, ProviderRegistry
from provider_jobs.settings import Settings

NAMESPACE = "Test.Faults"
RESOURCE_TYPE = "Workload"
#: Behaviours that end in the archive; the others succeed.
ARCHIVED = frozenset({"permanent", "exhaust", "crash"})


def _record(job: ProviderJob) -> None:
    directory = os.environ.get("FAULT_OUTCOMES_DIR")
    if directory:
        with open(Path(directory) / f"succeeded-{os.getpid()}", "a") as out:
            out.write(job.job_id + "\n")


def _handle(job: ProviderJob) -> Any:
    behaviour = job.request["behaviour"]
    if behaviour == "crash":
        directory = os.environ.get("FAULT_OUTCOMES_DIR")
        if directory:
            with open(Path(directory) / f"crashed-{os.getpid()}", "a") as out:
                out.write(job.job_id + "\n")
        os._exit(17)  # what an OOM kill or a segfault looks like from RabbitMQ's side
    if behaviour == "permanent":
        raise ValidationFailed("Validation error: the workload says no")
    # Transient failures no breaker counts (a timeout would open the provider's breaker, and the
    # jobs would wait for its probes instead of exhausting their attempts).
    if behaviour == "exhaust":
        raise RuntimeError("the workload's transient failure, every time")
    if behaviour == "flaky":
        message = CurrentMessage.get_current_message()
        if message is not None and message.options.get("retries", 0) < 1:
            raise RuntimeError("the workload's transient failure, once")
    if behaviour == "slow":
        time.sleep(0.1)
    _record(job)
    return {"ok": True}


def fault_registry() -> ProviderRegistry:
    """A registry whose one provider behaves as each job's ``request["behaviour"]`` says."""
    registry = ProviderRegistry()
    registry.register(NAMESPACE, RESOURCE_TYPE, FunctionProvider({"create": _handle}))
    return registry


@dataclass(frozen=True)
class Sent:
    """The jobs a test sent: job id -> behaviour."""

    behaviours: dict[str, str] = field(default_factory=dict)


def interleaved(mix: dict[str, int]) -> Iterator[str]:
    """The behaviours of ``mix`` (behaviour -> count), one of each in turn until every count is spent."""
    remaining = dict(mix)
    while any(remaining.values()):
        for behaviour, count in remaining.items():
            if count:
                remaining[behaviour] = count - 1
                yield behaviour


def send_job(actors: dict[str, Any], behaviour: str, job_id: str) -> None:
    """Publish one job of the workload, with confirms."""
    actors["create_resource"].send(
        provider_namespace=NAMESPACE,
        resource_type=RESOURCE_TYPE,
        operation="create",
        request={"behaviour": behaviour},
        job_id=job_id,
    )


def send(settings: Settings, mix: dict[str, int]) -> Sent:
    """Publish ``mix`` (behaviour -> count) with confirms, interleaved; the ids and behaviours sent."""
    broker = build_broker(settings)
    actors = declare_provider_actors(broker, None, settings)
    sent = Sent()
    try:
        for n, behaviour in enumerate(interleaved(mix)):
            job_id = f"{behaviour}-{n}"
            send_job(actors, behaviour, job_id)
            sent.behaviours[job_id] = behaviour
    finally:
        broker.close()
    return sent


@dataclass
class Tally:
    """What became of the jobs sent: succeeded (with how often), archived (with category)."""

    succeeded: Counter[str] = field(default_factory=Counter)
    archived: dict[str, str] = field(default_factory=dict)
    dead_letters: dict[str, dict[str, Any]] = field(default_factory=dict)
    archived_twice: int = 0
    _read: set[bytes] = field(default_factory=set)

    def read_outcomes(self, directory: Path) -> None:
        self.succeeded = Counter(
            line for path in directory.glob("succeeded-*") for line in path.read_text().split("\n") if line
        )

    def take_dead_letters(self, url: str, queue_name: str) -> None:
        """Take every message now in ``<queue>.XQ`` into :attr:`archived`, read as the archiver
        reads it (a raw dead letter of RabbitMQ's, such as a quorum queue's delivery limit, too)."""
        try:
            self._take_dead_letters(url, queue_name)
        except (pika.exceptions.AMQPError, OSError):
            return  # a fault the test injects closed this reader's connection too: read again next time

    def _take_dead_letters(self, url: str, queue_name: str) -> None:
        from provider_jobs.dlq import dead_letter_from_delivery

        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            while True:
                method, properties, body = channel.basic_get(xq_name(queue_name), auto_ack=False)
                if method is None:
                    return
                record = dead_letter_from_delivery(body, properties.headers, source_queue=xq_name(queue_name))
                if body in self._read:  # read before, its ack lost with the reader's connection
                    channel.basic_ack(method.delivery_tag)
                    continue
                self._read.add(body)
                message = json.loads(body)
                job_id = message["options"]["job_id"]
                if job_id in self.archived:
                    self.archived_twice += 1
                self.archived[job_id] = record.category
                self.dead_letters[job_id] = message["options"].get("dead_letter") or {
                    "error": record.error,
                    "reason": record.reason,
                }
                # Acked once counted: a reader whose connection closes now leaves it to the next read.
                channel.basic_ack(method.delivery_tag)
        finally:
            if connection.is_open:
                connection.close()

    def read_archive(self, archive_url: str) -> None:
        """Take every record of the archive at ``archive_url`` into :attr:`archived`."""
        from provider_jobs.dlq import DeadLetterArchive

        archive = DeadLetterArchive(archive_url)
        try:
            for record in archive.find(limit=1_000_000):
                if record.job_id is not None:
                    self.archived[record.job_id] = record.category
        finally:
            archive.close()

    def crash_runs(self, directory: Path) -> Counter[str]:
        """How often each job that kills its process ran (it notes each run before it kills)."""
        return Counter(
            line for path in directory.glob("crashed-*") for line in path.read_text().split("\n") if line
        )

    def lost(self, sent: Sent) -> set[str]:
        return set(sent.behaviours) - set(self.succeeded) - set(self.archived)

    def both(self) -> set[str]:
        return set(self.succeeded) & set(self.archived)

    def run_twice(self) -> int:
        return sum(count - 1 for count in self.succeeded.values())

    def wrong_outcome(self, sent: Sent) -> set[str]:
        """Jobs that ended other than their behaviour says (a success archived, or the reverse)."""
        return {
            job_id
            for job_id, behaviour in sent.behaviours.items()
            if (behaviour in ARCHIVED) != (job_id in self.archived)
        }

    def blamed(self, sent: Sent) -> set[str]:
        """Jobs archived as crash_loop that do not kill their worker."""
        return {j for j, c in self.archived.items() if c == "crash_loop" and sent.behaviours[j] != "crash"}

    def summary(self, sent: Sent) -> str:
        return (
            f"sent {len(sent.behaviours)}, succeeded {len(self.succeeded)}, archived {len(self.archived)}, "
            f"lost {len(self.lost(sent))}, run twice {self.run_twice()}, "
            f"archived twice {self.archived_twice}, both {len(self.both())}, "
            f"wrongly blamed {len(self.blamed(sent))}; "
            f"lost: {sorted(self.lost(sent))[:10]}, wrong outcome: {sorted(self.wrong_outcome(sent))[:10]}"
        )


def settled(tally: Tally, sent: Sent, directory: Path, url: str, queue_name: str) -> bool:
    """Collect outcomes so far; whether every job sent has one."""
    tally.read_outcomes(directory)
    tally.take_dead_letters(url, queue_name)
    return not tally.lost(sent)


def worker_env(settings: Settings, outcomes: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process on ``settings`` (``python fault_workload.py``)."""
    here = Path(__file__).parent
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)]),
        "PROVIDER_JOBS_BROKER_URL": settings.broker_url,
        "PROVIDER_JOBS_QUEUE_NAME": settings.queue_name,
        "PROVIDER_JOBS_QUEUE_TYPE": settings.queue_type,
        "PROVIDER_JOBS_RETRY_DELAY_S": str(settings.retry_delay_s),
        "PROVIDER_JOBS_HOLD_RETRIES_UP_TO_MS": str(settings.hold_retries_up_to_ms),
        "PROVIDER_JOBS_WORKER_THREADS": str(settings.worker_threads),
        "PROVIDER_JOBS_MAX_DELIVERIES": str(settings.max_deliveries),
        "PROVIDER_JOBS_MAX_CRASHES": str(settings.max_crashes),
        "PROVIDER_JOBS_BREAKER_MIN_CALLS": str(settings.breaker_min_calls),
        "PROVIDER_JOBS_LOG_FORMAT": "json",
        "FAULT_OUTCOMES_DIR": str(outcomes),
        **extra,
    }


def delete_queues(settings: Settings) -> None:
    """Delete the test's queues (its own connection: a bounced broker closed the others)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        for name in (settings.queue_name, dq_name(settings.queue_name), xq_name(settings.queue_name)):
            channel.queue_delete(name)
        for bucket_ms in (50, 1000, 5000):
            channel.queue_delete(f"{settings.queue_name}.retry.{bucket_ms}")
    finally:
        connection.close()


def behaviours_of(ids: Iterable[str], sent: Sent) -> Counter[str]:
    return Counter(sent.behaviours[i] for i in ids)


def main(providers: ProviderRegistry | None = None) -> None:
    """One worker process on the workload (or on ``providers``), until SIGTERM (or until a job kills it)."""
    settings = Settings.from_env()
    broker = build_broker(settings)
    dramatiq.set_broker(broker)
    declare_provider_actors(broker, providers or fault_registry(), settings)
    worker = dramatiq.Worker(broker, worker_threads=settings.worker_threads, worker_timeout=20)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print("worker started", flush=True)
    stop.wait()
    worker.stop()
    broker.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
