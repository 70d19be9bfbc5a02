"""A corpus of hand-made bad messages, published with pika to the work queue and to its XQ.

One real worker (our broker, consumer and actors) and one real archiver run for
the whole module. Each class of message is published straight to the work
queue and straight to ``<queue>.XQ``, and each copy must reach its documented
outcome: the job succeeded, or it is archived with its category and a true
reason. The last test counts every message sent: each one succeeded or was
archived, the worker has all its threads and the archiver is alive.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.common import xq_name

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.dlq import DeadLetter, DeadLetterArchive, DeadLetterArchiver
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

WORKER_THREADS = 3
#: Marks what the test sent: the AMQP ``message_id`` of every message, and where it can, its body's.
_RUN = uuid.uuid4().hex[:8]


class Succeeded:
    """The outcome of a job its provider ran."""

    def __repr__(self) -> str:
        return "succeeded"


@dataclasses.dataclass(frozen=True)
class Archived:
    """The outcome of a message archived with ``category``, its error starting with ``error``."""

    category: str
    error: str
    reason: str | None = None


SUCCEEDED = Succeeded()


def undecodable(reason: str) -> Archived:
    return Archived("undecodable", f"body is not a Dramatiq message: {reason}")


#: What a valid message published straight to the XQ is archived as.
DIRECT = Archived(
    "rejected", "published straight to the dead-letter queue, without a recorded failure", "direct"
)


@dataclasses.dataclass(frozen=True)
class Case:
    """A class of bad message: how to make it, and what becomes of it on the work queue and the XQ.

    ``make(queue, marker)`` returns the body and the AMQP properties; ``marker`` is
    unique per message sent and goes into the body wherever the body can hold it.
    """

    name: str
    make: Callable[[str, str], tuple[bytes, dict[str, Any]]]
    work: Succeeded | Archived
    xq: Archived
    copies: int = 1


def message(queue: str, marker: str, **fields: Any) -> dict[str, Any]:
    """A valid message for ``create_resource`` whose job's request carries ``marker``."""
    return {
        "queue_name": queue,
        "actor_name": "create_resource",
        "args": [],
        "kwargs": {
            "job": {
                "provider_namespace": "ITL.Core",
                "resource_type": "ResourceGroup",
                "operation": "create",
                "request": {"case": marker},
            }
        },
        "options": {},
        "message_id": marker,
        "message_timestamp": int(time.time() * 1000),
        **fields,
    }


def body(**fields: Any) -> Callable[[str, str], tuple[bytes, dict[str, Any]]]:
    """A case's maker: the valid message with ``fields`` replaced."""

    def make(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
        return json.dumps(message(queue, marker, **fields)).encode(), {}

    return make


def request(**values: Any) -> Callable[[str, str], tuple[bytes, dict[str, Any]]]:
    """A case's maker: the valid message, its job's request holding ``values`` beside the marker."""

    def make(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
        data = message(queue, marker)
        data["kwargs"]["job"]["request"].update(values)
        return json.dumps(data).encode(), {}

    return make


def options(**values: Any) -> Callable[[str, str], tuple[bytes, dict[str, Any]]]:
    return body(options=values)


def raw(make_bytes: Callable[[str], bytes]) -> Callable[[str, str], tuple[bytes, dict[str, Any]]]:
    return lambda _queue, marker: (make_bytes(marker), {})


def properties(**values: Any) -> Callable[[str, str], tuple[bytes, dict[str, Any]]]:
    """A case's maker: the valid message with odd AMQP properties."""
    return lambda queue, marker: (json.dumps(message(queue, marker)).encode(), values)


def extra_field(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
    return json.dumps({**message(queue, marker), "priority_hint": "urgent"}).encode(), {}


def deep(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
    data = json.dumps(message(queue, marker, args=["DEEP"])).encode()
    return data.replace(b'"DEEP"', b"[" * 100_000 + b"]" * 100_000), {}


def nan(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
    data = message(queue, marker)
    data["kwargs"]["job"]["request"]["ratio"] = float("nan")
    return json.dumps(data).encode(), {}  # the stdlib writes NaN, which is not JSON but reads back


def lone_surrogate_job_id(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
    data = message(queue, marker)
    data["kwargs"]["job"]["job_id"] = "job-\ud800"
    return json.dumps(data).encode(), {}


def sql_namespace(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
    data = message(queue, marker)
    data["kwargs"]["job"]["provider_namespace"] = "x'); DROP TABLE dead_letters; --"
    return json.dumps(data).encode(), {}


def duplicate_id_of(marker: str) -> str:
    """The message id both copies of the duplicate class share on one queue (work or XQ)."""
    _name, where, _copy, run = marker.split(".")
    return f"dup-{where}-{run}"


def duplicate_id(queue: str, marker: str) -> tuple[bytes, dict[str, Any]]:
    data = message(queue, marker, message_id=duplicate_id_of(marker))
    data["kwargs"]["job"]["request"] = {}  # fails validation: both copies are dead-lettered
    data["kwargs"]["job"]["operation"] = "not an operation!"
    return json.dumps(data).encode(), {}


def wrong_type(field: str, found: str) -> str:
    return f"{field} should be a valid {'integer' if 'timestamp' in field else 'string'} (found {found})"


VALIDATION = Archived("validation", "Validation error: invalid job")

CASES = [
    # -- the envelope's types
    Case("options-a-list", body(options=[]), *[undecodable("options must be an object, not an array")] * 2),
    Case("args-a-dict", body(args={}), *[undecodable("args must be an array, not an object")] * 2),
    Case("kwargs-a-list", body(kwargs=[]), *[undecodable("kwargs must be an object, not an array")] * 2),
    Case(
        "actor-name-a-number", body(actor_name=42), *[undecodable(wrong_type("actor_name", "an integer"))] * 2
    ),
    Case(
        "message-id-an-int",
        body(message_id=12345),
        *[undecodable(wrong_type("message_id", "an integer"))] * 2,
    ),
    Case(
        "message-id-too-long-for-amqp",
        body(message_id="m" * 300),
        *[undecodable("message_id must be UTF-8 text of at most 255 bytes")] * 2,
    ),
    Case(
        "timestamp-a-string",
        body(message_timestamp="1700000000000"),
        *[undecodable(wrong_type("message_timestamp", "a string"))] * 2,
    ),
    Case(
        "timestamp-a-float",
        body(message_timestamp=1.7e12),
        *[undecodable(wrong_type("message_timestamp", "a number"))] * 2,
    ),
    Case(
        "timestamp-huge",
        body(message_timestamp=10**30),
        *[undecodable("message_timestamp should be less than or equal to 253402300799999")] * 2,
    ),
    Case(
        "queue-name-a-number", body(queue_name=7), *[undecodable(wrong_type("queue_name", "an integer"))] * 2
    ),
    Case(
        "queue-name-another-queue",
        body(queue_name="another.queue"),
        Archived(
            "undecodable",
            "body is not a Dramatiq message for its queue: queue_name 'another.queue' is not the queue "
            "it was delivered from",
        ),
        DIRECT,
    ),
    Case(
        "queue-name-not-a-queue-name",
        body(queue_name="no such queue!"),
        *[undecodable("queue_name should match pattern")] * 2,
    ),
    Case(
        "throws-option",
        options(throws="ValueError"),
        *[undecodable("options.throws must be null or absent, not a string")] * 2,
    ),
    Case(
        "retries-a-string",
        options(retries="3"),
        *[undecodable("options.retries should be a valid integer (found a string)")] * 2,
    ),
    # -- AMQP properties and headers
    Case(
        "broker-priority-1000",
        options(broker_priority=1000),
        *[undecodable("options.broker_priority should be less than or equal to 255")] * 2,
    ),
    Case(
        "broker-priority-high",
        options(broker_priority="high"),
        *[undecodable("options.broker_priority should be a valid integer (found a string)")] * 2,
    ),
    Case(
        "broker-priority-negative",
        options(broker_priority=-1),
        *[undecodable("options.broker_priority should be greater than or equal to 0")] * 2,
    ),
    Case(
        "odd-headers",
        properties(
            headers={
                "x-provider-jobs-dead-letter": {"nested": [1, 2]},
                "x-provider-jobs-deliveries": "many",
                "bytes": b"\xff\xfe",
                "x-death": "not a list",
            }
        ),
        SUCCEEDED,
        DIRECT,
    ),
    Case(
        "garbage-x-death",
        properties(headers={"x-death": [{"queue": 5, "reason": ["x"], "time": 2**62}, "?"]}),
        SUCCEEDED,
        Archived("rejected", "dead-lettered by RabbitMQ (['x']) without a recorded failure"),
    ),
    Case(
        "weird-content-type",
        properties(content_type="application/x-evil; charset=ebcdic", content_encoding="gzip"),
        SUCCEEDED,
        DIRECT,
    ),
    Case("amqp-priority-255", properties(priority=255), SUCCEEDED, DIRECT),
    # -- bodies
    Case(
        "not-json",
        raw(lambda m: f"this is not json {m}".encode()),
        *[Archived("undecodable", "body is not JSON")] * 2,
    ),
    Case(
        "invalid-utf8",
        raw(lambda m: b"\xff\xfe" + m.encode()),
        *[Archived("undecodable", "body is not UTF-8 text")] * 2,
    ),
    Case("empty", raw(lambda _m: b""), *[Archived("undecodable", "body is not JSON: Expecting value")] * 2),
    Case(
        "nul-bytes",
        raw(lambda m: b'{"queue_name":\x00"' + m.encode() + b'"}'),
        *[Archived("undecodable", "body is not JSON")] * 2,
    ),
    Case("nul-in-strings", request(name="rg\x00evil"), SUCCEEDED, DIRECT),
    Case("nested-100k-deep", deep, *[Archived("undecodable", "body is JSON nested too deeply to read")] * 2),
    Case("huge-ints", request(n=10**40, m=-(2**70)), SUCCEEDED, DIRECT),
    Case("nan", nan, SUCCEEDED, DIRECT),
    Case("extra-top-level-field", extra_field, *[undecodable("unexpected field 'priority_hint'")] * 2),
    Case(
        "unknown-actor",
        body(actor_name="no_such_actor"),
        Archived(
            "rejected",
            "rejected in {queue} without a recorded failure: the worker knows no actor 'no_such_actor'",
        ),
        DIRECT,
    ),
    Case("unicode", request(name="Zürich 東京 🚀 \u202eevil\u202c", note="ﷺ" * 50), SUCCEEDED, DIRECT),
    Case("lone-surrogate-job-id", lone_surrogate_job_id, VALIDATION, DIRECT),
    Case("sql-looking-text", request(name="x'); DROP TABLE dead_letters; --"), SUCCEEDED, DIRECT),
    Case("sql-looking-invalid-job", sql_namespace, VALIDATION, DIRECT),
    Case("duplicate-message-id", duplicate_id, VALIDATION, DIRECT, copies=2),
]


@dataclasses.dataclass
class System:
    """The worker, the archiver and what was sent to them."""

    settings: Settings
    channel: Any
    worker: dramatiq.Worker
    archiver: DeadLetterArchiver
    archiver_thread: threading.Thread
    archive: DeadLetterArchive
    succeeded: dict[str, int]
    sent: list[str]
    threads_at_start: int

    def publish(self, routing_key: str, case: Case, where: str) -> list[str]:
        markers = []
        for copy in range(case.copies):
            marker = f"{case.name}.{where}.{copy}.{_RUN}"
            data, props = case.make(self.settings.queue_name, marker)
            self.channel.basic_publish(
                "", routing_key, data, pika.BasicProperties(delivery_mode=2, message_id=marker, **props)
            )
            self.sent.append(marker)
            markers.append(marker)
        return markers

    def archived(self, marker: str, message_id: str | None = None) -> DeadLetter | None:
        for record in self.archive.find(limit=1000):
            if record.message_id in {marker, message_id} or marker.encode() in record.body:
                return record
        return None


def _alive_threads(worker: dramatiq.Worker) -> int:
    threads = [*worker.workers, *worker.consumers.values()]
    return sum(thread.is_alive() for thread in threads)


def _declared(channel: Any, name: str) -> bool:
    probe = channel.connection.channel()
    try:
        probe.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    probe.close()
    return True


class Recorder:
    def __init__(self, succeeded: dict[str, int]) -> None:
        self.succeeded = succeeded
        self.lock = threading.Lock()

    def execute(self, job: ProviderJob) -> Any:
        with self.lock:
            marker = str(job.request.get("case"))
            self.succeeded[marker] = self.succeeded.get(marker, 0) + 1
        return {"ok": True}


@pytest.fixture(scope="module")
def system(rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    queue = f"test.bad.{uuid.uuid4().hex[:8]}"
    settings = Settings(
        broker_url=rabbitmq_url,
        queue_name=queue,
        retry_delay_s=0.02,
        worker_threads=WORKER_THREADS,
        worker_timeout_ms=20,
        worker_id="bad-messages",
    )
    succeeded: dict[str, int] = {}
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", Recorder(succeeded))
    broker = build_broker(settings)
    declare_provider_actors(broker, registry, settings)
    worker = dramatiq.Worker(broker, worker_threads=WORKER_THREADS, worker_timeout=20)
    archive_path: Path = tmp_path_factory.mktemp("bad-messages") / "archive.sqlite3"
    archive = DeadLetterArchive(f"sqlite:///{archive_path}", busy_timeout_ms=2000)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    worker.start()
    archiver = archiver_thread = None
    try:
        wait_for(lambda: _declared(channel, queue) and _declared(channel, xq_name(queue)))
        archiver = DeadLetterArchiver(
            archive=archive,
            broker_url=rabbitmq_url,
            queues=[queue],
            batch_size=50,
            flush_ms=20,
            max_backoff_s=0.2,
        )
        archiver_thread = threading.Thread(target=archiver.run, name="archiver", daemon=True)
        archiver_thread.start()
        yield System(
            settings,
            channel,
            worker,
            archiver,
            archiver_thread,
            archive,
            succeeded,
            [],
            _alive_threads(worker),
        )
    finally:
        if archiver is not None and archiver_thread is not None:
            archiver.stop()
            archiver_thread.join(timeout=15)
        worker.stop()
        broker.close()
        for name in (queue, xq_name(queue), f"{queue}.DQ"):
            channel.queue_delete(name)
        connection.close()
        archive.close()


def _outcome(system: System, marker: str, expected: Succeeded | Archived) -> Any:
    """The marker's outcome once it has the one expected (``None`` until then)."""
    if isinstance(expected, Succeeded):
        return SUCCEEDED if marker in system.succeeded else None
    message_id = duplicate_id_of(marker) if marker.startswith("duplicate-message-id") else None
    return system.archived(marker, message_id)


def _check(system: System, markers: list[str], expected: Succeeded | Archived) -> None:
    for marker in markers:
        outcome = wait_for(lambda marker=marker: _outcome(system, marker, expected), timeout_s=10)
        if isinstance(expected, Archived):
            assert outcome.category == expected.category, (marker, outcome.category, outcome.error)
            error = expected.error.format(queue=system.settings.queue_name)
            assert outcome.error.startswith(error), (marker, outcome.error)
            if expected.reason is not None:
                assert outcome.reason == expected.reason


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_message_on_the_work_queue_has_its_documented_outcome(system: System, case: Case) -> None:
    _check(system, system.publish(system.settings.queue_name, case, "work"), case.work)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_message_on_the_dead_letter_queue_is_archived_with_a_true_reason(
    system: System, case: Case
) -> None:
    _check(system, system.publish(xq_name(system.settings.queue_name), case, "xq"), case.xq)


def test_after_the_corpus_every_message_is_accounted_for_and_nothing_died(system: System) -> None:
    queue = system.settings.queue_name

    def settled() -> bool:
        stats = system.archiver.stats
        done = len(system.succeeded) + stats.archived + stats.duplicates
        return done >= len(system.sent) and queue_depth(system.channel, xq_name(queue)) == 0

    wait_for(settled, timeout_s=15)
    stats = system.archiver.stats
    # Counted, not sampled: each message sent ran once and succeeded, or was archived once.
    assert len(system.succeeded) + stats.archived + stats.duplicates == len(system.sent)
    assert all(runs == 1 for runs in system.succeeded.values()), system.succeeded
    assert system.archive.count() == stats.archived
    assert queue_depth(system.channel, queue) == 0
    assert (
        _alive_threads(system.worker)
        == system.threads_at_start
        == WORKER_THREADS + len(system.worker.consumers)
    )
    assert system.archiver_thread.is_alive()
