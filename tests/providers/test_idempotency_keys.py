"""Idempotency keys end to end: real workers on the private RabbitMQ node, a real HTTP provider.

A job's key is the same on every attempt (a retry is a new message with the same
job) and on every redelivery (a worker died holding it). The worker that dies
here is a plain AMQP consumer that takes the job as a worker does, calls its
provider and closes its connection without an ack, as a SIGKILLed worker's
connection closes: RabbitMQ then delivers the job again, flagged ``redelivered``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import ProviderActor, declare_provider_actors
from provider_jobs.errors import ProviderTimeout
from provider_jobs.jobs import ProviderJob, parse_job
from provider_jobs.providers import FunctionProvider, Provider, ProviderRegistry, load_providers
from provider_jobs.settings import Settings

from support import queue_depth, running_worker, wait_for

RG = {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup"}
#: The same provider as an entry of a providers file.
RG_ENTRY = {"namespace": "ITL.Core", "resource_type": "ResourceGroup"}


class ScriptedServer:
    """An HTTP provider on localhost: answers each call with the next scripted status (then 200)
    and records each call's headers."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                with server.lock:
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status = server.statuses.pop(0) if server.statuses else 200
                payload = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted_server() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(*statuses: int) -> ScriptedServer:
        servers.append(ScriptedServer(*statuses))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


System = tuple[dramatiq.Broker, dict[str, ProviderActor]]


@pytest.fixture
def system(settings: Settings, registry: ProviderRegistry) -> Iterator[System]:
    # A redelivery waits for an announcement that its job completed (the dying worker here makes
    # none) before it runs: 0.2 s, not the default ten, keeps these tests short.
    settings = settings.replace(redelivery_grace_s=0.2)
    broker = build_broker(settings)
    yield broker, declare_provider_actors(broker, registry, settings)
    broker.close()


@pytest.fixture
def registry() -> Iterator[ProviderRegistry]:
    registry = ProviderRegistry()
    yield registry
    registered = registry.keys()
    for key in registered:
        close = getattr(registry.get(*key.split("/", 1)), "close", None)
        if close is not None:
            close()


def run_and_die(url: str, queue_name: str, provider: Provider) -> bool:
    """Take a job from ``queue_name``, run it on ``provider`` and close the connection unacked.

    Returns:
        Whether RabbitMQ flagged the delivery ``redelivered``.
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()

        def delivery() -> tuple[Any, bytes] | None:
            method, _, body = channel.basic_get(queue_name)
            return None if method is None else (method, body)

        method, body = wait_for(delivery)
        provider.execute(parse_job(json.loads(body)["kwargs"]["job"]))
        return bool(method.redelivered)
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("entry", "header"),
    [
        ({}, "idempotency-key"),
        ({"idempotency_header": "X-Request-Key"}, "x-request-key"),
        ({"idempotency_header": None}, None),
    ],
    ids=["default", "named", "off"],
)
def test_an_http_provider_sends_one_key_on_every_attempt_and_redelivery_of_a_job(
    system: System,
    registry: ProviderRegistry,
    scripted_server: Callable[..., ScriptedServer],
    settings: Settings,
    amqp: Any,
    tmp_path: Path,
    entry: dict[str, Any],
    header: str | None,
) -> None:
    broker, actors = system
    # Two workers die after their call succeeded; the third's first attempt meets a 503, its retry a 200.
    server = scripted_server(200, 200, 503, 200)
    providers_file = tmp_path / "providers.json"
    providers_file.write_text(json.dumps({"providers": [{**RG_ENTRY, "url": server.url, **entry}]}))
    load_providers(registry, path=str(providers_file))
    provider = registry.get("ITL.Core", "ResourceGroup")
    message = actors["create_resource"].send({**RG, "request": {"name": "rg"}})
    job_id = message.options["job_id"]

    redelivered = [run_and_die(settings.broker_url, settings.queue_name, provider) for _ in range(2)]
    with running_worker(broker):
        wait_for(lambda: len(server.headers) == 4, timeout_s=30)
        broker.join(settings.queue_name, min_successes=3, idle_time=20)

    assert redelivered == [False, True]
    assert len(server.headers) == 4 and queue_depth(amqp, f"{settings.queue_name}.XQ") == 0
    assert [h["x-job-id"] for h in server.headers] == [job_id] * 4
    if header is None:
        assert not any("idempotency-key" in h for h in server.headers)
    else:
        assert [h.get(header) for h in server.headers] == [job_id] * 4


class KeyRecorder:
    """An in-process provider that records the key of each call; the calls numbered in ``failing``
    (from 1) time out."""

    def __init__(self, *, failing: frozenset[int] = frozenset()) -> None:
        self.failing = failing
        self.keys: list[str] = []
        self.lock = threading.Lock()

    def create(self, job: ProviderJob) -> dict[str, Any]:
        with self.lock:
            self.keys.append(job.idempotency_key)
            call = len(self.keys)
        if call in self.failing:
            raise ProviderTimeout("Timeout: the provider did not answer")
        return {"ok": True}


def test_an_in_process_provider_reads_one_key_on_every_attempt_and_redelivery_of_a_job(
    system: System, registry: ProviderRegistry, settings: Settings
) -> None:
    broker, actors = system
    # The dying worker's call, then the worker's: a timeout, then a success.
    recorder = KeyRecorder(failing=frozenset({2}))
    provider = FunctionProvider({"create": recorder.create})
    registry.register("ITL.Core", "ResourceGroup", provider)
    actors["create_resource"].send({**RG, "job_id": "job-17", "request": {"name": "rg"}})

    assert run_and_die(settings.broker_url, settings.queue_name, provider) is False
    with running_worker(broker):
        wait_for(lambda: len(recorder.keys) == 3, timeout_s=30)
        broker.join(settings.queue_name, min_successes=3, idle_time=20)
    assert recorder.keys == ["job-17"] * 3


@pytest.mark.parametrize(
    ("job_fields", "key"),
    [
        ({"job_id": "old-1"}, "old-1"),
        ({"job_id": "edited-1", "idempotency_key": "edited-1.5d41402abc4b2a76"}, "edited-1.5d41402abc4b2a76"),
    ],
    ids=["written-before-keys", "carrying-its-own-key"],
)
def test_a_message_runs_under_the_key_it_carries_or_else_its_job_id(
    system: System, registry: ProviderRegistry, settings: Settings, job_fields: dict[str, Any], key: str
) -> None:
    broker, _ = system
    recorder = KeyRecorder()
    registry.register("ITL.Core", "ResourceGroup", FunctionProvider({"create": recorder.create}))
    # Written by hand, field by field, as a producer that predates (or an edited replay that uses)
    # the field would.
    job = {
        **RG,
        "operation": "create",
        "request": {"name": "rg"},
        "priority": 5,
        "submitted_at": "2026-01-01T00:00:00Z",
        "correlation_id": None,
        **job_fields,
    }
    broker.enqueue(
        dramatiq.Message(
            queue_name=settings.queue_name,
            actor_name="create_resource",
            args=(),
            kwargs={"job": job},
            options={"job_id": job["job_id"]},
        )
    )
    with running_worker(broker):
        wait_for(lambda: recorder.keys)
        broker.join(settings.queue_name, min_successes=3, idle_time=20)
    assert recorder.keys == [key]
