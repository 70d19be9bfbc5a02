"""ParkingKeeper: takes parked jobs out of their parking queues, for probes and on recovery.

Jobs for a provider whose breaker is open wait in its parking queue (see
:mod:`provider_jobs.middleware.parking`). One worker process at a time keeps
them: the one whose keeper holds the lease, an exclusive queue
``<queue>.parking.keeper`` that RabbitMQ deletes when that process's
connection closes (it stops, it is killed), so that another takes over. The
keeper, once per tick:

- for a provider whose breaker is open and due for a probe round, moves up to
  ``probe_jobs`` parked jobs to the work queue, so that the round has jobs to
  let through (the others stay parked; a probe that fails parks again);
- for a provider whose breaker is closed, moves its parked jobs back to the
  work queue, oldest first, at ``breaker_release_rate`` per second, each with
  its own priority, and stops as soon as the breaker opens again.

Jobs are moved in batches, each one AMQP transaction on the keeper's channel:
the batch's publishes to the work queue and its ack in the parking queue are
committed together. A keeper killed before the commit moved nothing (what it
had taken goes back to the parking queue); after it, the whole batch moved.
Nothing is lost, and a kill doubles nothing. (Only a RabbitMQ node failing in
the middle of a commit could leave part of one applied: RabbitMQ's
transactions span queues without that guarantee. Then the jobs'
``idempotency_key`` lets their provider take a second call as the first.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from ..middleware.breaker import CLOSED, ProviderBreakers
from ..middleware.parking import Parking, parking_queue_name, released_body
from ..rabbitmq.connectivity import broker_parameters
from ..settings import Settings

__all__ = ["ParkingKeeper", "keeper_lease_name"]

logger = logging.getLogger("provider_jobs.parking")

#: Longest pause between two rounds of the keeper, in seconds.
_MAX_TICK_S = 1.0
#: Pause between two batches of a release, in seconds.
_RELEASE_STEP_S = 0.05
#: Longest the keeper's pauses go without looking whether its worker is stopping, in seconds.
_STOP_CHECK_S = 0.05


def keeper_lease_name(queue_name: str) -> str:
    """The exclusive queue whose holder keeps the parking queues in front of ``queue_name``."""
    return f"{q_name(queue_name)}.parking.keeper"


class ParkingKeeper(Middleware):
    """Moves parked jobs back to their work queue while a worker runs; one process at a time.

    Args:
        settings: Broker URL, queue name, ``breaker_release_rate`` (above 0).
        breakers: The worker's breakers (their state shared through the health stream).
        parking: The parking queues this process declared, shared with ``BreakerWait``.
    """

    def __init__(self, settings: Settings, breakers: ProviderBreakers, parking: Parking) -> None:
        self.settings = settings
        self.breakers = breakers
        self.parking = parking
        self.rate_per_s = settings.breaker_release_rate
        self.tick_s = min(_MAX_TICK_S, breakers.probe_interval_s / 4)
        #: Parked jobs moved to their work queue by this process: probes and releases.
        self.moved = 0
        self._broker: dramatiq.Broker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._channel: Any = None
        self._lease: Any = None
        self._last_probe: dict[str, float] = {}
        self._checked: set[str] = set()

    # -- worker lifecycle ----------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._broker = broker
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="parking-keeper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    @property
    def is_keeper(self) -> bool:
        """Whether this process holds the lease."""
        return self._lease is not None

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._connect()
                if self._take_lease():
                    self._round()
                self._pause(self.tick_s)
            except pika.exceptions.AMQPError as exc:
                logger.debug(
                    "Parking keeper: connection lost (%s: %s); reconnecting", type(exc).__name__, exc
                )
                self._disconnect()
                self._stop.wait(self.tick_s)
            except Exception:
                logger.exception("Parking keeper: a round failed; trying again")
                self._disconnect()
                self._stop.wait(self.tick_s)
        self._disconnect()

    def _pause(self, seconds: float) -> None:
        """Serve the connection (heartbeats) for ``seconds``, or until the worker stops: a
        stopping worker waits for this thread."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._connection.sleep(min(left, _STOP_CHECK_S))

    def _connect(self) -> None:
        if self._connection is not None and self._connection.is_open:
            return
        self._connection = pika.BlockingConnection(broker_parameters(self.settings.broker_url))
        self._channel = self._connection.channel()
        self._channel.tx_select()

    def _disconnect(self) -> None:
        connection, self._connection, self._channel, self._lease = self._connection, None, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def _take_lease(self) -> bool:
        if self._lease is not None and self._lease.is_open:
            return True
        lease = self._connection.channel()
        try:
            lease.queue_declare(keeper_lease_name(self.settings.queue_name), exclusive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            # 405 RESOURCE_LOCKED: another process keeps the parking queues.
            if exc.reply_code != 405:
                raise
            self._lease = None
            return False
        self._lease = lease
        logger.debug("Parking keeper: this process keeps the parking queues of %s", self.settings.queue_name)
        return True

    def _round(self) -> None:
        """One round: find the parking queues other processes made, probe, release."""
        broker = self._broker
        assert broker is not None
        work_queues = sorted(q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))
        known = self.parking.queues()
        for state in self.breakers.states():
            for queue in work_queues:
                name = parking_queue_name(queue, state.key)
                # Any process may park while its breaker is open; a closed one's queue is looked
                # for once (jobs parked before this process began).
                if name in known or (state.state == CLOSED and name in self._checked):
                    continue
                self._checked.add(name)
                if self._waiting(name) is not None:
                    self.parking.adopt(name, queue, state.key)
        for name, (work, key) in sorted(self.parking.queues().items()):
            if self._stop.is_set():
                return
            self._keep(name, work, key)

    def _waiting(self, name: str) -> int | None:
        """Jobs ready in queue ``name``; ``None`` when there is no such queue."""
        channel = self._connection.channel()
        try:
            waiting = int(channel.queue_declare(name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            return None
        channel.close()
        return waiting

    def _keep(self, name: str, work: str, key: str) -> None:
        now = time.time()
        state = self.breakers.state(key)
        if now < state.retry_after_until:
            return
        if state.state == CLOSED:
            self._release(name, work, key)
            return
        if (
            self.breakers.wait_s(key) > 0
            or now - self._last_probe.get(key, 0.0) < self.breakers.probe_interval_s
        ):
            return
        self._last_probe[key] = now
        moved = self._move(name, work, self.breakers.probe_jobs, release=False)
        if moved:
            logger.debug("Parking keeper: %d parked job(s) of %s sent for its probe round", moved, key)

    def _release(self, name: str, work: str, key: str) -> None:
        """Move ``key``'s parked jobs to ``work`` at ``rate_per_s`` while its breaker stays closed."""
        waiting = self._waiting(name)
        if waiting is None:
            self.parking.forget(name)
        if not waiting:
            return
        per_step = max(1, round(self.rate_per_s * _RELEASE_STEP_S))
        logger.info(
            "Breaker for %s is closed: releasing %d parked job(s) to %s at %s/s",
            key,
            waiting,
            work,
            f"{self.rate_per_s:g}",
        )
        released = 0
        started = time.monotonic()
        while not self._stop.is_set():
            state = self.breakers.state(key)
            if state.state != CLOSED or time.time() < state.retry_after_until:
                logger.info("Breaker for %s is not closed: %d released, the rest stay parked", key, released)
                return
            moved = self._move(name, work, per_step, release=True)
            released += moved
            if moved < per_step:
                break
            pause = started + released / self.rate_per_s - time.monotonic()
            if pause > 0:
                self._pause(pause)
        logger.info("Released %d parked job(s) of %s in %.1f s", released, key, time.monotonic() - started)

    def _move(self, name: str, work: str, limit: int, *, release: bool) -> int:
        """Move up to ``limit`` messages from ``name`` to ``work``, oldest first, in one
        transaction: each published with its priority, all acked, then committed; returns how
        many. A released job loses its parked mark; a probe keeps it (still parked, it is
        dead-lettered once it waited too long)."""
        channel = self._channel
        channel.basic_qos(prefetch_count=limit)
        moved, last_tag = 0, None
        for method, properties, body in channel.consume(name, inactivity_timeout=_RELEASE_STEP_S):
            if method is None:
                break
            channel.basic_publish(
                exchange="",
                routing_key=work,
                body=released_body(body) if release else body,
                properties=pika.BasicProperties(
                    delivery_mode=2, priority=properties.priority, headers=properties.headers
                ),
            )
            moved, last_tag = moved + 1, method.delivery_tag
            if moved >= limit:
                break
        channel.cancel()
        if last_tag is not None:
            channel.basic_ack(last_tag, multiple=True)
            channel.tx_commit()
        self.moved += moved
        return moved
