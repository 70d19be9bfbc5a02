"""Test helpers: condition waits with deadlines, queue depths, the work queue declared as workers do."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.common import xq_name

from provider_jobs.rabbitmq.queue_types import queue_arguments
from provider_jobs.settings import Settings


def declare_work_queue(channel: Any, queue_name: str, queue_type: str = "classic") -> None:
    """Declare the work queue as the workers of ``queue_type`` (``--queue-type``) do."""
    quorum = queue_arguments(queue_type, delivery_limit=Settings().max_deliveries - 1)
    type_arguments = quorum if queue_type == "quorum" else {"x-max-priority": 10}
    channel.queue_declare(
        queue_name,
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{queue_name}.XQ",
            **type_arguments,
        },
    )


def wait_for(predicate: Callable[[], Any], *, timeout_s: float = 10.0, interval_s: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        time.sleep(interval_s)


def queue_depth(channel: pika.adapters.blocking_connection.BlockingChannel, name: str) -> int:
    """Messages ready in queue ``name`` (declared passively)."""
    return int(channel.queue_declare(name, passive=True).method.message_count)


@contextmanager
def running_worker(
    broker: dramatiq.Broker, *, threads: int = 2, timeout_ms: int = 20
) -> Iterator[dramatiq.Worker]:
    """A Dramatiq worker on ``broker`` for the duration of the block; the broker is closed after."""
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=timeout_ms)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        broker.close()


def take_dead_letters(
    channel: pika.adapters.blocking_connection.BlockingChannel,
    queue_name: str,
    count: int,
    *,
    timeout_s: float = 10.0,
) -> list[tuple[pika.BasicProperties, dict[str, Any]]]:
    """Wait until ``<queue>.XQ`` holds ``count`` messages, then take them all (decoded JSON)."""
    xq = xq_name(queue_name)
    wait_for(lambda: queue_depth(channel, xq) >= count, timeout_s=timeout_s)
    taken = []
    while True:
        method, properties, body = channel.basic_get(xq, auto_ack=True)
        if method is None:
            return taken
        taken.append((properties, json.loads(body)))


def depth_or_zero(url: str, name: str) -> int:
    """Messages ready in queue ``name``, or 0 if it does not exist yet (own short connection)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return queue_depth(connection.channel(), name)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0
        raise
    finally:
        if connection.is_open:
            connection.close()
