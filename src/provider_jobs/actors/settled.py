"""SettledLedger: deliveries whose outcome is known but whose ack may have been lost.

When a worker's connection to RabbitMQ closes, the acks it had not yet
written (or written, but not yet read by RabbitMQ) are lost with it, and so
are the acks of the jobs that were still running and finish afterwards:
RabbitMQ redelivers all of them, usually to another worker, and a completed
job would run again. The worker that lost them knows which they are. It adds
them to its ledger and announces them on the fanout exchange
``<queue>.settled``, where every worker's ledger listens on a queue of its
own; a worker that receives a redelivery of one of them acks it without
running it (see :class:`.WorkerConsumer`).

A worker may be reconnecting when an announcement is sent (a broker that
bounces drops every connection at once), and an exclusive queue misses what
was published before it was declared. So each announcement is sent again
every second until the redeliveries' grace has passed: whoever is connected
by then has it. (A stream would keep it for latecomers, but a stream is
unreadable for seconds after RabbitMQ restarts, longer than the grace when
the broker flaps.)

Entries are keyed by delivery (:func:`delivery_key`: the message body's hash,
so a later attempt of the same job, whose body differs, is not taken for it).
Only outcomes that need nothing more than the ack are announced: a success,
a retry or breaker wait already confirmed in a delay queue, a dead letter
already confirmed in ``<queue>.XQ``. Nothing is published while no
connection is lost. A ledger keeps at most :data:`MAX_ENTRIES` keys, for at
most an hour.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

import dramatiq
import orjson
import pika
import pika.exceptions
from dramatiq.middleware import Middleware

from ..rabbitmq.connectivity import broker_parameters

__all__ = ["MAX_ENTRIES", "SettledLedger", "delivery_key", "settled_exchange_name"]

logger = logging.getLogger("provider_jobs.settled")

#: Keys a ledger keeps at most; the oldest leave first.
MAX_ENTRIES = 200_000
#: How long a key is kept, in seconds.
_KEEP_S = 3600
#: How often an announcement is sent again while its grace lasts, in seconds.
_REPEAT_S = 1.0
#: Longest wait between attempts to reconnect, in seconds.
_MAX_BACKOFF_S = 1.0


def settled_exchange_name(queue_name: str) -> str:
    """The fanout exchange beside ``queue_name`` where lost acks are announced."""
    return f"{queue_name}.settled"


def delivery_key(body: bytes) -> str:
    """The key of a delivery: its body's hash. A redelivery has the same body byte for byte; a
    retry, a breaker wait or a replay of the job does not (its options changed)."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


class SettledLedger(Middleware):
    """The deliveries of one queue whose outcome is known though their ack may be lost.

    It listens from the worker's boot to its shutdown, on a thread of its own.

    Args:
        broker_url: RabbitMQ URL (or several separated by commas).
        queue_name: The work queue.
        grace_s: How long a redelivery waits for an announcement before it runs, in seconds;
            announcements are sent again for as long. Default 10.
    """

    def __init__(self, broker_url: str, queue_name: str, *, grace_s: float = 10.0) -> None:
        self.broker_url = broker_url
        self.exchange = settled_exchange_name(queue_name)
        self.grace_s = grace_s
        self._keys: OrderedDict[str, float] = OrderedDict()
        #: (until, body) of the announcements still sent again, oldest first.
        self._outbox: deque[tuple[float, bytes]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: pika.BlockingConnection | None = None
        #: Set while the listener is connected (tests wait on it).
        self.connected = threading.Event()

    # -- the worker's life ---------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stop()

    def start(self) -> None:
        """Listen for announcements, and send this worker's, on a thread of its own."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="settled-ledger", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop listening (what is still to be sent again is dropped: its grace is the limit)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            with self._lock:
                connection = self._connection
            if connection is not None:
                # Ends the listener's wait for data at once instead of after its time limit.
                with contextlib.suppress(Exception):
                    connection.add_callback_threadsafe(_nothing)
            thread.join(timeout_s)

    # -- the ledger ----------------------------------------------------------------

    def announce(self, keys: Iterable[str]) -> None:
        """Record ``keys`` here and tell the other workers, again every second during the grace."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        self._add(keys)
        body = orjson.dumps({"type": "settled", "keys": keys, "at": time.time()})
        with self._lock:
            self._outbox.append((time.monotonic() + self.grace_s, body))
        logger.info("%d job(s) completed but their ack was lost with the connection: announced", len(keys))

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def _add(self, keys: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._keys[key] = now
                self._keys.move_to_end(key)
            while self._keys and (
                len(self._keys) > MAX_ENTRIES or now - next(iter(self._keys.values())) > _KEEP_S
            ):
                self._keys.popitem(last=False)

    # -- the listener's thread -------------------------------------------------------

    def _run(self) -> None:
        backoff_s = 0.1
        while not self._stop.is_set():
            try:
                self._listen()
                return
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.debug("Ledger %s: %s; reconnecting", self.exchange, exc or type(exc).__name__)
            except Exception:
                # The listener must not die: completed jobs would run again after the next fault.
                logger.exception("Ledger %s: unexpected error; reconnecting", self.exchange)
            self.connected.clear()
            self._stop.wait(backoff_s)
            backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)

    def _listen(self) -> None:
        connection = pika.BlockingConnection(broker_parameters(self.broker_url))
        with self._lock:
            self._connection = connection
        try:
            channel = connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="fanout", durable=True)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, self.exchange)
            channel.basic_consume(queue, self._on_message, auto_ack=True)
            self.connected.set()
            sent_at = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now - sent_at >= _REPEAT_S:
                    self._send(channel, now)
                    sent_at = now
                connection.process_data_events(time_limit=0.1)
        finally:
            self.connected.clear()
            with self._lock:
                self._connection = None
            if connection.is_open:
                with contextlib.suppress(Exception):
                    connection.close()

    def _send(self, channel: Any, now: float) -> None:
        """Send every announcement whose grace lasts (again); drop the others."""
        with self._lock:
            while self._outbox and self._outbox[0][0] < now:
                self._outbox.popleft()
            bodies = [body for _, body in self._outbox]
        for body in bodies:
            channel.basic_publish(self.exchange, "", body)

    def _on_message(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        keys = event.get("keys") if isinstance(event, dict) else None
        if isinstance(keys, list):
            self._add(k for k in keys if isinstance(k, str))


def _nothing() -> None:
    """A callback that only wakes a connection's wait for data."""
