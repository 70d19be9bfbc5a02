"""Helpers of the DLQ tests: real dead letters from a real worker, XQ publishing, a TCP proxy."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import xq_name

from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
from provider_jobs.providers import ProviderRegistry
from provider_jobs.settings import Settings

from support import queue_depth, wait_for


def job(
    namespace: str = "ITL.Core",
    resource_type: str = "ResourceGroup",
    operation: str = "create",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "provider_namespace": namespace,
        "resource_type": resource_type,
        "operation": operation,
        "request": {"name": "rg-1"},
        **fields,
    }


@contextlib.contextmanager
def running_worker(settings: Settings, registry: ProviderRegistry) -> Iterator[dict[str, Any]]:
    """A real Dramatiq worker with our broker and actors; yields the actors."""
    broker = build_broker(settings)
    actors = declare_provider_actors(broker, registry, settings)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=20)
    worker.start()
    try:
        yield actors
    finally:
        worker.stop()
        broker.close()


def dead_letters_from_worker(
    settings: Settings, registry: ProviderRegistry, jobs: list[dict[str, Any]], channel: Any
) -> None:
    """Send ``jobs`` through a real worker and wait until each is in ``<queue>.XQ``."""
    with running_worker(settings, registry) as actors:
        for fields in jobs:
            actors[f"{fields['operation']}_resource"].send(fields)
        wait_for(lambda: queue_depth(channel, xq_name(settings.queue_name)) >= len(jobs), timeout_s=20)


def declare_xq(channel: Any, queue_name: str) -> str:
    name = xq_name(queue_name)
    channel.queue_declare(name, durable=True, arguments={"x-message-ttl": DEAD_MESSAGE_TTL})
    return name


def dramatiq_body(
    queue_name: str,
    *,
    message_id: str | None = None,
    options: dict[str, Any] | None = None,
    **job_fields: Any,
) -> bytes:
    """A Dramatiq message body as our actors send it."""
    fields = job(**job_fields)
    fields.setdefault("job_id", uuid.uuid4().hex)
    fields.setdefault("priority", 5)
    return json.dumps(
        {
            "queue_name": queue_name,
            "actor_name": f"{fields['operation']}_resource",
            "args": [],
            "kwargs": {"job": fields},
            "options": options or {},
            "message_id": message_id or str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode()


def publish(channel: Any, routing_key: str, body: bytes, headers: dict[str, Any] | None = None) -> None:
    channel.basic_publish("", routing_key, body, pika.BasicProperties(delivery_mode=2, headers=headers))


@contextlib.contextmanager
def archiver_thread(archiver: DeadLetterArchiver) -> Iterator[DeadLetterArchiver]:
    thread = threading.Thread(target=archiver.run, name="archiver", daemon=True)
    thread.start()
    try:
        yield archiver
    finally:
        archiver.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "archiver did not stop"


def archived(archive: DeadLetterArchive, count: int) -> bool:
    return archive.count() >= count


class TcpProxy:
    """Forwards a local port to ``target``; :meth:`stop` cuts every connection (a database outage)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone does not.
                with contextlib.suppress(OSError):
                    self._server.shutdown(socket.SHUT_RDWR)
                self._server.close()
                self._server = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
