"""HealthStream: provider health shared between processes through a RabbitMQ stream.

Every worker publishes its breakers' transitions and, every
``providers_announce_s``, an announcement of the providers it serves and of
the breakers it knows, to the stream ``<queue>.health``. A stream is an
append-only log that any number of readers read without taking messages
from each other, from a point in time: a process that starts reads the last
few announcement periods and knows the current state at once, then follows
what comes next. RabbitMQ drops what is older than ``max_age`` itself.

Events are JSON objects with a ``type``:

- ``breaker``: ``state`` (a :class:`~provider_jobs.middleware.breaker.BreakerState`
  as a dict) and ``event`` (``opened``, ``probe``, ``reopened``, ``closed``, ``retry_after``);
- ``announce``: ``providers`` (keys served), ``breakers`` (states known),
  ``interval_s`` (when the next one is due);
- ``stopping``: the worker stops serving its providers;
- ``marker``: written by a reader to know when it has read up to now.

Each carries ``sender`` (unique per process and component), ``worker``
(the worker id) and ``at`` (epoch seconds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pika
import pika.exceptions

from ..rabbitmq.connectivity import broker_parameters

__all__ = ["HealthFollower", "HealthStream", "stream_name"]

logger = logging.getLogger("provider_jobs.health")

#: The stream's retention: events older than this are dropped by RabbitMQ.
DEFAULT_MAX_AGE_S = 3600
#: The stream's size cap, in bytes.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Events a reader may hold unacked (a stream consumer must set a prefetch).
_PREFETCH = 500

#: A callback for each event read: the decoded JSON object.
EventHandler = Callable[[dict[str, Any]], None]


def stream_name(queue_name: str) -> str:
    """The health stream beside ``queue_name``."""
    return f"{queue_name}.health"


class HealthStream:
    """The health stream of one queue: declaring it, writing to it, reading it from a time.

    Args:
        broker_url: RabbitMQ URL (or several separated by commas).
        queue_name: The work queue; the stream is ``<queue>.health``.
        max_age_s: Retention in seconds. Default 3600.
        max_bytes: Size cap. Default 64 MiB.
    """

    def __init__(
        self,
        broker_url: str,
        queue_name: str,
        *,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.broker_url = broker_url
        self.name = stream_name(queue_name)
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes

    def connect(self) -> pika.BlockingConnection:
        """A new connection to RabbitMQ."""
        return pika.BlockingConnection(broker_parameters(self.broker_url))

    def declare(self, channel: Any) -> None:
        """Declare the stream (durable, with its retention); idempotent."""
        channel.queue_declare(
            self.name,
            durable=True,
            arguments={
                "x-queue-type": "stream",
                "x-max-age": f"{self.max_age_s}s",
                "x-max-length-bytes": self.max_bytes,
            },
        )

    def publish(self, channel: Any, event: Mapping[str, Any]) -> None:
        """Append ``event`` to the stream."""
        channel.basic_publish(
            exchange="",
            routing_key=self.name,
            body=orjson.dumps(event),
            properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
        )

    def consume(self, channel: Any, since: float, on_event: EventHandler) -> str:
        """Read the stream from epoch second ``since`` on, calling ``on_event`` for each event.

        Returns the consumer tag. Undecodable events are skipped.
        """
        channel.basic_qos(prefetch_count=_PREFETCH)

        def deliver(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            try:
                event = orjson.loads(body)
            except orjson.JSONDecodeError:
                event = None
            ch.basic_ack(method.delivery_tag)
            if isinstance(event, dict):
                on_event(event)

        offset = dt.datetime.fromtimestamp(max(0.0, since), tz=dt.UTC)
        tag: str = channel.basic_consume(self.name, deliver, arguments={"x-stream-offset": offset})
        return tag

    def read(self, *, since: float, on_event: EventHandler, timeout_s: float = 5.0) -> bool:
        """Read the stream from ``since`` up to now: a marker is written and read back.

        Returns whether the marker was read within ``timeout_s`` (all events up to now were).
        """
        marker = uuid.uuid4().hex
        seen = threading.Event()

        def handle(event: dict[str, Any]) -> None:
            if event.get("type") == "marker":
                if event.get("id") == marker:
                    seen.set()
                return
            if not seen.is_set():
                on_event(event)

        connection = self.connect()
        try:
            channel = connection.channel()
            self.declare(channel)
            self.consume(channel, since, handle)
            self.publish(channel, {"type": "marker", "id": marker, "at": time.time()})
            deadline = time.monotonic() + timeout_s
            while not seen.is_set() and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.05)
        finally:
            if connection.is_open:
                connection.close()
        return seen.is_set()


class HealthFollower:
    """A thread that follows the health stream and writes events handed to it.

    It reconnects after a connection loss (backing off up to 10 s) and reads
    again from a little before the loss, so an event is seen at least once.

    Args:
        stream: The stream.
        on_event: Called on the follower's thread for each event from another sender.
        lookback_s: On start, read events this many seconds old. Default 60.
        tick: Called on the follower's thread about every 50 ms, for periodic work.
        sender: This component's id in events. Default a new random one.
        name: The thread's name.
    """

    def __init__(
        self,
        stream: HealthStream,
        on_event: EventHandler,
        *,
        lookback_s: float = 60.0,
        tick: Callable[[], None] | None = None,
        sender: str | None = None,
        name: str = "health-follower",
    ) -> None:
        self.stream = stream
        self.on_event = on_event
        self.lookback_s = lookback_s
        self.tick = tick
        self.sender = sender or uuid.uuid4().hex
        self._outbox: deque[dict[str, Any]] = deque()
        self._connection: Any = None
        self._channel: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Set once the follower has read up to the time it started.
        self.caught_up = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop following."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` to be written (from any thread), stamped with this sender; the
        follower's thread is woken to write it at once."""
        self._outbox.append({**event, "sender": self.sender})
        connection = self._connection
        if connection is not None:
            # Closed meanwhile: the next connection writes it.
            with contextlib.suppress(Exception):
                connection.add_callback_threadsafe(self._flush)

    def _flush(self) -> None:
        channel = self._channel
        while self._outbox and channel is not None:
            self.stream.publish(channel, self._outbox[0])
            self._outbox.popleft()

    def _handle(self, event: dict[str, Any]) -> None:
        if event.get("type") == "marker":
            if event.get("id") == self.sender:
                self.caught_up.set()
            return
        if event.get("sender") == self.sender:
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("Could not apply health event %r", event.get("type"))

    def _run(self) -> None:
        since = time.time() - self.lookback_s
        backoff_s = 0.5
        while not self._stop.is_set():
            started = time.time()
            try:
                self._follow(since)
                return
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.warning(
                    "Health stream %s: %s; reconnecting", self.stream.name, exc or type(exc).__name__
                )
            except Exception:
                # Whatever went wrong, the follower must not die: breakers would stop being shared.
                logger.exception("Health stream %s: unexpected error; reconnecting", self.stream.name)
            # Read again what may have been missed; announcements repeat the rest.
            since = max(started, time.time() - self.lookback_s) - 5.0
            backoff_s = 0.5 if time.time() - started > 60 else min(backoff_s * 2, 10.0)
            self._stop.wait(backoff_s)

    def _follow(self, since: float) -> None:
        connection = self.stream.connect()
        try:
            channel = connection.channel()
            cancelled = threading.Event()
            # RabbitMQ cancels the consumer when the stream is deleted: read it again, declared anew.
            channel.add_on_cancel_callback(lambda method: cancelled.set())
            self.stream.declare(channel)
            self.stream.consume(channel, since, self._handle)
            self.stream.publish(channel, {"type": "marker", "id": self.sender, "at": time.time()})
            self._connection, self._channel = connection, channel
            while True:
                stopping = self._stop.is_set()
                self._flush()
                if stopping:
                    return
                if cancelled.is_set():
                    raise pika.exceptions.ConsumerCancelled(
                        f"the consumer of {self.stream.name} was cancelled"
                    )
                connection.process_data_events(time_limit=0.05)
                if self.tick is not None:
                    self.tick()
        finally:
            self._connection = self._channel = None
            if connection.is_open:
                connection.close()
