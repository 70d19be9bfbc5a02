"""SettledLedger: deliveries whose outcome is known but whose ack may have been lost.

When a worker's connection to RabbitMQ closes, the acks it had not yet
written (or written, but not yet read by RabbitMQ) are lost with it, and so
are the acks of the jobs that were still running and finish afterwards:
RabbitMQ redelivers all of them, usually to another worker, and a completed
job would run again. The worker that lost them knows which they are. It adds
them to its ledger and announces them on the stream ``<queue>.settled``,
which every worker follows; a worker that receives a redelivery of one of
them acks it without running it (see :class:`.WorkerConsumer`).

Entries are keyed by delivery (:func:`delivery_key`: the message body's hash,
so a later attempt of the same job, whose body differs, is not taken for it).
Only outcomes that need nothing more than the ack are announced: a success,
a retry or breaker wait already confirmed in a delay queue, a dead letter
already confirmed in ``<queue>.XQ``. The ledger costs nothing while no
connection is lost: the stream is written only then. It keeps at most
:data:`MAX_ENTRIES` keys, for at most the stream's retention.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from ..health.stream import HealthFollower, HealthStream

__all__ = ["MAX_ENTRIES", "SettledLedger", "delivery_key", "settled_stream_name"]

logger = logging.getLogger("provider_jobs.settled")

#: Keys a ledger keeps at most; the oldest leave first.
MAX_ENTRIES = 200_000
#: How long a key is kept, in seconds (the stream's retention too).
_KEEP_S = 3600


def settled_stream_name(queue_name: str) -> str:
    """The stream beside ``queue_name`` where lost acks are announced."""
    return f"{queue_name}.settled"


def delivery_key(body: bytes) -> str:
    """The key of a delivery: its body's hash. A redelivery has the same body byte for byte; a
    retry, a breaker wait or a replay of the job does not (its options changed)."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


class SettledLedger(Middleware):
    """The deliveries of one queue whose outcome is known though their ack may be lost.

    It follows ``<queue>.settled`` from the worker's boot to its shutdown.

    Args:
        broker_url: RabbitMQ URL (or several separated by commas).
        queue_name: The work queue.
        grace_s: How long a redelivery waits for an announcement before it runs, in seconds.
            Default 3.
    """

    def __init__(self, broker_url: str, queue_name: str, *, grace_s: float = 3.0) -> None:
        self.grace_s = grace_s
        self._stream = HealthStream(
            broker_url, queue_name, max_age_s=_KEEP_S, name=settled_stream_name(queue_name)
        )
        self._keys: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._follower: HealthFollower | None = None

    # -- the worker's life ---------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stop()

    def start(self) -> None:
        """Follow the stream (on a thread of its own; reconnecting after a connection loss)."""
        with self._lock:
            if self._follower is not None:
                return
            self._follower = HealthFollower(
                self._stream, self._on_event, lookback_s=60.0, name="settled-follower"
            )
        self._follower.start()

    def stop(self) -> None:
        """Write what is still to be announced, then stop following."""
        with self._lock:
            follower, self._follower = self._follower, None
        if follower is not None:
            follower.stop()

    # -- the ledger ----------------------------------------------------------------

    def announce(self, keys: Iterable[str]) -> None:
        """Record ``keys`` here and tell the other workers (once the stream can be written)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        self._add(keys)
        follower = self._follower
        if follower is not None:
            follower.send({"type": "settled", "keys": keys, "at": time.time()})
        logger.info("%d job(s) completed but their ack was lost with the connection: announced", len(keys))

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def _on_event(self, event: dict[str, Any]) -> None:
        keys = event.get("keys")
        if event.get("type") == "settled" and isinstance(keys, list):
            self._add(k for k in keys if isinstance(k, str))

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
