"""WorkerConsumer: Dramatiq's RabbitMQ consumer, settling each job once and blaming crashes right."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.common import xq_name
from dramatiq.errors import ConnectionClosed

from ..envelope import misdelivery
from ..middleware.dead_letters import CRASH_LOOP, DeadLetter, take_dead_letter
from ..middleware.delays import take_hold
from ..rabbitmq.queue_types import declare_queue
from .channel_acks import ChannelAcks
from .confirmed_publishes import Answered, ConfirmedPublishes
from .delivery_counts import crash_loop_body, recount, suspects_queue_name
from .held_retries import HeldRetries
from .lost_acks import LostAcks
from .settled import SettledLedger, delivery_key
from .solo_runs import SOLO_ATTRIBUTE, SoloRuns

__all__ = ["WorkerConsumer", "held_retries"]

_Delivery = tuple[Any, Any, Any]
_NOTHING: _Delivery = (None, None, None)
#: How long closing waits for the confirms of dead letters still in flight.
_CLOSE_WAIT_S = 5.0
#: How long closing waits for RabbitMQ's answers at a time (a wait ends only at its time limit:
#: pika does not end it for an answer that goes to a callback).
_CLOSE_POLL_S = 0.002
#: Longest wait of the delivery loop while redeliveries are parked, in seconds.
_PARKED_SLICE_S = 0.05
#: The attribute on a message proxy holding how it is to be settled: (hold in ms, dead letter).
_SETTLEMENT = "_provider_jobs_settlement"
#: The attribute on a message proxy naming the consumer (so the channel) that delivered it.
_DELIVERED_BY = "_provider_jobs_delivered_by"


class WorkerConsumer(_RabbitmqConsumer):
    """The consumer of a provider-jobs worker's queue: Dramatiq's, settling each delivery once, on
    the channel it came on, and blaming a crash only on the job that caused it.

    - **Acks in batches.** A worker thread's ack joins a list; only the first
      of a batch wakes the connection's thread, which writes the whole list
      (:class:`.ChannelAcks`: one ``multiple`` ack below every delivery still
      open) and flushes once. A connection lost before the flush leaves them
      unacked, and RabbitMQ redelivers them.
    - **Holds short retries** (:class:`.HeldRetries`): a retry due within
      ``hold_retries_up_to_ms`` stays unacked here and runs again when due.
      Held messages count against the prefetch, which is doubled for them.
    - **Dead letters and copies with confirms** (:class:`.ConfirmedPublishes`):
      the original is acked when RabbitMQ confirms what replaces it, nacked
      (RabbitMQ then dead-letters it) when RabbitMQ refuses it. Closing waits
      up to 5 s for the confirms in flight.
    - **Settles only its own deliveries.** After a connection drop Dramatiq
      settles the old channel's messages on the *new* consumer, whose tags
      start from 1 again. Each message carries the consumer that delivered it;
      a settlement of another consumer's message is dropped and logged, and a
      success among them is announced on the :class:`.SettledLedger`
      (:class:`.LostAcks`), so that its redelivery is acked, not run again.
    - **Blames crashes on the job that crashed** (:mod:`.delivery_counts`). A
      redelivery is not run: a copy carrying its counts is published and the
      original acked on the confirm. A job redelivered from a delivery that
      ran beside others becomes a *suspect*, with nothing counted; suspects
      come one at a time on a second channel (prefetch 1) from
      :func:`.suspects_queue_name` and run alone in their process
      (:class:`.SoloRuns`). Only a suspect's delivery that ends without an
      outcome counts a crash; at ``max_crashes`` the job is dead-lettered as
      :data:`.CRASH_LOOP`. ``max_deliveries`` is the coarse ceiling.
    - **Returns unstarted jobs uncounted.** On a graceful stop, prefetched jobs
      that did not start are moved back (a copy, the original acked on its
      confirm) rather than left to the channel's close, which would mark them
      redelivered and make suspects of them.
    """

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        # Held retries stay unacked: room for as many again, so that holds do not starve the worker.
        prefetch = min(prefetch * 2, 65535)
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        #: (delivery tag, dead letter to publish first or None), in the order settled by workers.
        self._pending: list[tuple[int, DeadLetter | None]] = []
        self._cancelled = False
        self._max_deliveries: int | None = getattr(broker, "max_deliveries", None)
        self._max_crashes: int | None = getattr(broker, "max_crashes", None)
        #: Delivery tag -> AMQP properties of the deliveries not settled yet (to return them as they
        #: came). A suspect's tag is its delivery tag on the suspects channel, negated.
        self._properties: dict[int, Any] = {}
        #: Delivery tags of suspects, to be marked when Dramatiq makes their message proxy.
        self._solo_tags: set[int] = set()
        self._suspects_queue = suspects_queue_name(queue_name)
        #: Where lost acks are announced and looked up, when the broker keeps a ledger.
        self._ledger: SettledLedger | None = next(
            (m for m in broker.middleware if isinstance(m, SettledLedger)), None
        )
        #: What to announce on the ledger when the connection is lost.
        self._lost_acks = LostAcks(self._ledger) if self._ledger is not None else None
        #: Set once the connection is known lost: later acks are announced, not written.
        self._lost = False
        self._closed = False
        #: Deliveries read from the socket, not yet handed to Dramatiq.
        self._arrived: collections.deque[_Delivery] = collections.deque()
        #: (due, delivery, key): redeliveries waiting for an announcement that they completed.
        self._parked: collections.deque[tuple[float, _Delivery, str]] = collections.deque()
        #: (channel, consumer tag) of each basic.consume, to cancel on a graceful close.
        self._consuming: list[tuple[Any, str]] = []
        #: The process's gate for suspects: while one runs, redeliveries wait to be recounted.
        self._solo: SoloRuns | None = next((m for m in broker.middleware if isinstance(m, SoloRuns)), None)
        if self._solo is not None:
            self._solo.watch(self._quiet)
        #: The worker's id for crash_loop dead letters, from the broker that built this consumer.
        self._worker_id: str | None = getattr(broker, "worker_id", None)
        # The count of held retries goes to the broker's Metrics middleware, if any.
        report_held = next(
            (m.set_retries_held for m in broker.middleware if hasattr(m, "set_retries_held")), None
        )
        self._held = HeldRetries(lambda count: report_held(self, count) if report_held is not None else None)
        #: Where a crash_loop dead letter is reported (the broker's Tracing middleware), if any.
        self._report_crash_loop = next(
            (m.record_crash_loop for m in broker.middleware if hasattr(m, "record_crash_loop")), None
        )
        self.iterator = self._deliveries(queue_name, timeout / 1000)
        self._acks = ChannelAcks(self.channel._impl)
        self._publishes = ConfirmedPublishes(self.connection, self._on_answered)
        #: The channel suspects come on (prefetch 1); ``None`` when crashes are not counted here.
        self._suspects: Any = None
        self._suspect_acks: ChannelAcks | None = None
        if self._max_crashes is not None and not queue_name.endswith(".DQ"):
            self._suspects = self._open_suspects_channel()
            self._suspect_acks = ChannelAcks(self._suspects._impl)

    def _open_suspects_channel(self) -> Any:
        """The channel suspects come on, one at a time; their queue declared as the work queue is."""
        try:
            channel = self.connection.channel()
            arguments = self.broker._build_queue_arguments(self.queue_name)
            declare_queue(self.connection, channel, self._suspects_queue, arguments)
            channel.basic_qos(prefetch_count=1)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        return channel

    def _quiet(self) -> bool:
        """Whether no ack, dead letter or copy of this consumer's is in flight (nothing is, once its
        connection is gone or closed: what was in flight will not be settled by it)."""
        if self._lost or self._closed:
            return True
        with self._lock:
            return not self._pending and not self._publishes.in_flight

    def _acks_for(self, tag: int) -> tuple[ChannelAcks, int]:
        """The acks of the channel a delivery ``tag`` of ours settles on, and its tag there."""
        if tag < 0:
            assert self._suspect_acks is not None
            return self._suspect_acks, -tag
        return self._acks, tag

    # -- settling -----------------------------------------------------------------

    def ack(self, message: Any) -> None:
        # Taken once and kept: Dramatiq calls ack again after a connection error, and that call
        # must settle the message the same way (a held retry or a dead letter is not a success).
        if _SETTLEMENT not in message.__dict__:
            message.__dict__[_SETTLEMENT] = (take_hold(message), take_dead_letter(message))
        hold_ms, letter = message.__dict__[_SETTLEMENT]
        settlement = "dead letter" if letter is not None else "held retry" if hold_ms is not None else "ack"
        if not self._delivered_here(message, settlement):
            return
        if hold_ms is not None:
            self._held.hold(message, hold_ms)
            self._wake(_recompute_wait)  # the loop may be waiting longer than this hold
            return
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            self.logger.warning("Failed to ack message: not in known tags.")
            return
        self._properties.pop(message._tag, None)
        with self._lock:
            lost = self._lost
            if not lost:
                self._pending.append((message._tag, letter))
                if len(self._pending) > 1:
                    return  # the first ack of this batch has already woken the connection's thread
        if lost:
            # The connection is gone: RabbitMQ redelivers it, and its outcome is known.
            if letter is None and self._lost_acks is not None:
                self._lost_acks.announce([message._tag])
            return
        self._wake(self._settle)

    def nack(self, message: Any) -> None:
        if self._delivered_here(message, "nack"):
            self._properties.pop(message._tag, None)
            super().nack(message)  # type: ignore[no-untyped-call]

    def _nack(self, tag: int) -> None:
        acks, own_tag = self._acks_for(tag)
        self.connection.add_callback_threadsafe(lambda: acks.nack(own_tag))

    def _settle(self) -> None:
        """Write every pending ack and dead letter, then flush once (runs on the connection's thread)."""
        with self._lock:
            items, self._pending = self._pending, []
        for tag, letter in items:
            if letter is not None:
                self._publishes.publish(
                    tag,
                    letter.routing_key,
                    letter.body,
                    pika.BasicProperties(
                        delivery_mode=2,
                        priority=letter.priority,
                        headers=letter.headers,
                        message_id=letter.message_id,
                    ),
                )
        self._write_acks([tag for tag, letter in items if letter is None])
        self.channel._flush_output()

    def _write_acks(self, tags: Iterable[int]) -> None:
        """Ack the deliveries ``tags`` of ours (on the connection's thread)."""
        own: list[int] = []
        suspects: list[int] = []
        for tag in tags:
            (own if tag > 0 else suspects).append(tag)
        if own:
            self._acks.ack(own)
        if suspects:
            assert self._suspect_acks is not None
            self._suspect_acks.ack(-tag for tag in suspects)
        if self._lost_acks is not None:
            self._lost_acks.written(own)
            self._lost_acks.written(suspects)

    def _on_answered(self, answered: Answered) -> None:
        """Ack (or nack) the originals whose dead letter or copy RabbitMQ confirmed (or refused)."""
        confirmed = []
        for tag, message_id, refused in answered:
            if refused:
                self.logger.warning(
                    "RabbitMQ refused dead letter %s; nacking it so that RabbitMQ dead-letters it", message_id
                )
                acks, own_tag = self._acks_for(tag)
                acks.nack(own_tag)
            else:
                confirmed.append(tag)
        self._write_acks(confirmed)
        # At once, not at the loop's next wake-up: an original whose copy is confirmed but whose
        # ack waits is redelivered beside its copy if the process dies meanwhile.
        self.channel._flush_output()

    def _announce_lost(self) -> None:
        """The connection is lost: announce the outcomes whose ack may have gone with it: the acks
        not written yet (each time, as jobs that were running finish), and the acks written just
        before (once)."""
        with self._lock:
            self._lost = True
            pending = [tag for tag, letter in self._pending if letter is None]
        if self._lost_acks is not None:
            self._lost_acks.lost(pending)

    def requeue(self, messages: Any) -> None:
        """Return prefetched messages that did not start (a graceful stop) without a mark against
        them: each is moved back to the queue with its headers, the original acked on the confirm.
        Dramatiq calls it once this consumer's thread has stopped, so the connection is free."""
        for message in messages:
            if message.__dict__.get(_DELIVERED_BY) is not self or message._tag not in self.known_tags:
                continue
            self.known_tags.discard(message._tag)
            properties = self._properties.pop(message._tag, None)
            if properties is None:
                continue  # RabbitMQ returns it when the channel closes
            try:
                self._move(
                    message._tag,
                    properties,
                    self._suspects_queue if message._tag < 0 else self.queue_name,
                    message._message.encode(),
                    dict(properties.headers or {}),
                )
            except Exception:
                self.logger.warning("Could not return message %s; RabbitMQ redelivers it", message.message_id)

    def _delivered_here(self, message: Any, settlement: str) -> bool:
        """Whether this consumer delivered ``message``; if not, the settlement is dropped and logged."""
        delivered_by = message.__dict__.get(_DELIVERED_BY)
        if delivered_by is self:
            return True
        lost_acks = delivered_by._lost_acks if isinstance(delivered_by, WorkerConsumer) else None
        if settlement == "ack" and lost_acks is not None:
            # Its outcome is known (success, or a retry already confirmed): its redelivery is acked
            # wherever it lands, not run again.
            lost_acks.announce([message._tag])
            self.logger.info(
                "The ack of message %s came after its channel closed: announced as completed",
                message.message_id,
            )
            return False
        log = self.logger.warning if settlement == "dead letter" else self.logger.info
        log(
            "Dropped the %s of message %s: it came on a channel that is gone, so RabbitMQ redelivers it "
            "and it runs again",
            settlement,
            message.message_id,
        )
        return False

    def close(self) -> None:
        deadline = time.monotonic() + _CLOSE_WAIT_S
        try:
            graceful = self.connection.is_open and not self._lost
            if graceful:
                self._stop_deliveries()
            while True:
                if graceful:
                    self._move_unread()
                if not (self._publishes.in_flight or self._pending) or time.monotonic() >= deadline:
                    break
                self.connection.process_data_events(time_limit=_CLOSE_POLL_S)
            if self.connection.is_open:
                self.connection.process_data_events(time_limit=0)  # writes the last acks
        except Exception:
            self.logger.debug("Connection lost while waiting for dead-letter confirms.", exc_info=True)
        super().close()  # type: ignore[no-untyped-call]
        self._closed = True
        self._held.clear()  # RabbitMQ has them back

    def _stop_deliveries(self) -> None:
        """On a graceful close: cancel this consumer's basic.consume."""
        # pika rejects, with requeue, what comes for a consumer it is cancelling (BlockingChannel
        # the deliveries it holds, the channel those still on the wire): RabbitMQ then marks them
        # redelivered, and a quorum queue counts a delivery. So the Basic.Cancel is sent with the
        # consumer left active until its Cancel-Ok: what comes before it reaches on_message and
        # is moved back uncounted.
        cancelled: list[Any] = []
        for channel, tag in self._consuming:
            channel._impl.basic_cancel(consumer_tag=tag, callback=cancelled.append)
            channel._impl._cancelled.discard(tag)
        deadline = time.monotonic() + _CLOSE_WAIT_S
        while len(cancelled) < len(self._consuming) and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=_CLOSE_POLL_S)
        self.connection.process_data_events(time_limit=0)
        for channel, tag in self._consuming:
            channel._consumer_infos.pop(tag, None)  # cancelled already: its close has nothing to do
        self._consuming.clear()

    def _move_unread(self) -> None:
        """On a graceful close: move back the deliveries read but never handed to Dramatiq (some
        come even after the cancel), and the redeliveries still waiting, as :meth:`requeue` does."""
        unread = [*self._arrived, *(delivery for _, delivery, _ in self._parked)]
        self._arrived.clear()
        self._parked.clear()
        for method, properties, body in unread:
            if method.redelivered:
                continue  # already without an outcome once: RabbitMQ returns it as it came
            queue = self._suspects_queue if isinstance(method, _SuspectDelivery) else self.queue_name
            self._move(method.delivery_tag, properties, queue, body, dict(properties.headers or {}))

    def _wake(self, callback: Any) -> None:
        """Run ``callback`` on the connection's thread, which this wakes."""
        try:
            self.connection.add_callback_threadsafe(callback)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            self._drop_pending()
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        except Exception:
            self._drop_pending()
            self.logger.warning("Failed to ack message.", exc_info=True)

    def _drop_pending(self) -> None:
        # The connection is gone: RabbitMQ redelivers these messages.
        self._announce_lost()
        with self._lock:
            self._pending.clear()
        self._held.clear()
        self._publishes.forget()

    # -- deliveries ---------------------------------------------------------------

    @property
    def held_count(self) -> int:
        """Retries held here, waiting to fall due."""
        return len(self._held)

    def __next__(self) -> Any:
        message = self._held.take_due()
        if message is None:
            try:
                message = super().__next__()  # type: ignore[no-untyped-call]
            except ConnectionClosed:
                self._announce_lost()
                raise
            if message is not None and (problem := misdelivery(message.queue_name, self.queue_name)):
                # Dramatiq would settle it with another queue's consumer, or kill the worker thread.
                self.logger.error("Message %s refused, moved to the XQ: %s", message.message_id, problem)
                self.known_tags.discard(message._tag)
                self._properties.pop(message._tag, None)
                acks, own_tag = self._acks_for(message._tag)
                acks.nack(own_tag)
                return None
        if message is not None:
            message.__dict__[_DELIVERED_BY] = self
            if self._solo_tags and message._tag in self._solo_tags:
                self._solo_tags.discard(message._tag)
                message.__dict__[SOLO_ATTRIBUTE] = True
        return message

    def _recount(self, method: Any, properties: Any, body: bytes, *, suspect: bool) -> None:
        """Requeue a redelivered message as a copy that carries its counts, or dead-letter it as
        :data:`.CRASH_LOOP` once ``max_crashes`` crashes (or ``max_deliveries`` deliveries) ended
        without an outcome (see the class docstring)."""
        counts = recount(
            properties.headers,
            suspect=suspect,
            suspects_kept=self._suspects is not None,
            max_crashes=self._max_crashes,
            max_deliveries=self._max_deliveries,
        )
        message_id = _message_id(properties, body)
        if not counts.crash_loop:
            self.logger.warning(
                "Message %s was redelivered without an outcome (%d crash(es) counted of at most %s, "
                "%d of at most %s deliveries); requeued to run alone",
                message_id,
                counts.crashes,
                self._max_crashes,
                counts.deliveries,
                self._max_deliveries,
            )
            routing_key, out = self._suspects_queue if self._suspects is not None else self.queue_name, body
        else:
            routing_key = xq_name(self.queue_name)
            out = crash_loop_body(body, counts.deliveries, counts.crashes, self._worker_id)
            if self._report_crash_loop is not None:
                self._crash_loop_reported(out, counts.deliveries)
            self.logger.error(
                "Message %s dead-lettered as %s: its worker process died %d time(s) running it alone "
                "(%d deliveries without an outcome); it is not run again",
                message_id,
                CRASH_LOOP,
                counts.crashes,
                counts.deliveries,
            )
        self._move(method.delivery_tag, properties, routing_key, out, counts.headers)

    def _crash_loop_reported(self, body: bytes, deliveries: int) -> None:
        """Tell the broker's tracing of a job dead-lettered as :data:`.CRASH_LOOP`; a failure to do
        so is logged, never in the way of the dead letter."""
        assert self._report_crash_loop is not None
        try:
            options = json.loads(body).get("options")
            self._report_crash_loop(self.queue_name, options, deliveries)
        except Exception:
            self.logger.debug("Could not trace crash_loop dead letter.", exc_info=True)

    def _ack_completed(self, method: Any, properties: Any, body: bytes) -> None:
        """Ack a redelivery whose outcome another delivery already had (the ledger says so)."""
        self._write_acks([method.delivery_tag])
        self.channel._flush_output()
        self.logger.info(
            "Message %s had completed already (its ack was lost with its connection): acked, not run again",
            _message_id(properties, body),
        )

    def _move(
        self, tag: int, properties: Any, routing_key: str, body: bytes, headers: dict[str, Any]
    ) -> None:
        """Publish a copy of a delivery with ``headers``, then ack the delivery once it is confirmed."""
        self._publishes.publish(
            tag,
            routing_key,
            body,
            pika.BasicProperties(
                delivery_mode=2,
                priority=properties.priority if isinstance(properties.priority, int) else None,
                headers=headers,
                message_id=properties.message_id if isinstance(properties.message_id, str) else None,
                content_type=properties.content_type,
                content_encoding=properties.content_encoding,
            ),
        )
        self.channel._flush_output()

    def _accept(
        self, delivery: _Delivery, parked: collections.deque[tuple[float, _Delivery, str]] | None
    ) -> _Delivery | None:
        """What to hand Dramatiq for a delivery: itself, or :data:`_NOTHING` once it was settled here
        (a redelivery of a completed job acked, a recount); ``None`` once it was parked in ``parked``
        to wait for the announcement that it completed (``None`` when it waited already)."""
        method, properties, body = delivery
        ledger = self._ledger
        key = delivery_key(body) if ledger is not None else None
        if method.redelivered and ledger is not None and key is not None:
            if key in ledger:
                self._ack_completed(method, properties, body)
                return _NOTHING
            if parked is not None and ledger.grace_s > 0:
                # The worker that lost its ack may not have announced it yet.
                parked.append((time.monotonic() + ledger.grace_s, delivery, key))
                return None
        if method.redelivered and (self._max_deliveries is not None or self._suspects is not None):
            self._recount(method, properties, body, suspect=isinstance(method, _SuspectDelivery))
            return _NOTHING
        if isinstance(method, _SuspectDelivery):
            self._solo_tags.add(method.delivery_tag)
        self._properties[method.delivery_tag] = properties
        if key is not None and self._lost_acks is not None:
            self._lost_acks.delivered(method.delivery_tag, key)
        return delivery

    def _deliveries(self, queue_name: str, idle_s: float) -> Iterator[_Delivery]:
        """Deliveries as pika's ``consume()`` yields them, with ``(None, None, None)`` on every
        wake-up without one: an idle timeout, or the time a held retry falls due."""
        arrived = self._arrived

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            self._acks.opened(method.delivery_tag)
            arrived.append((method, properties, body))

        def on_suspect(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            assert self._suspect_acks is not None
            self._suspect_acks.opened(method.delivery_tag)
            arrived.append((_SuspectDelivery(-method.delivery_tag, method.redelivered), properties, body))

        def on_cancel(_method: Any) -> None:
            self._cancelled = True

        self.channel.add_on_cancel_callback(on_cancel)
        self._consuming.append((self.channel, self.channel.basic_consume(queue_name, on_message)))
        if self._suspects is not None:
            self._suspects.add_on_cancel_callback(on_cancel)
            self._consuming.append(
                (self._suspects, self._suspects.basic_consume(self._suspects_queue, on_suspect))
            )
        parked = self._parked
        while True:
            solo_busy = self._solo is not None and self._solo.busy
            if parked and (
                (parked[0][0] <= time.monotonic() and not solo_busy) or parked[0][2] in (self._ledger or ())
            ):
                _, delivery, _ = parked.popleft()
                yield self._accept(delivery, None) or _NOTHING
                continue
            if arrived:
                accepted = self._accept(arrived.popleft(), parked)
                if accepted is not None:
                    yield accepted
                continue
            if self._cancelled:
                # RabbitMQ cancelled the consumer (its queue was deleted): Dramatiq reconnects.
                raise pika.exceptions.ConsumerCancelled(f"RabbitMQ cancelled the consumer of {queue_name}")
            wait_s = self._held.wait_s(idle_s)
            if parked:
                # A due redelivery held back by a suspect waits in slices, reading the connection
                # meanwhile: the suspect waits for this consumer's confirms to come in.
                head_s = _PARKED_SLICE_S if solo_busy else max(0.0, parked[0][0] - time.monotonic())
                wait_s = min(wait_s, head_s, _PARKED_SLICE_S)
            # Read even when nothing may be waited for: confirms, acks' flushes and heartbeats.
            self.connection.process_data_events(time_limit=wait_s)
            if not arrived:
                yield _NOTHING


def held_retries(worker: Any) -> int:
    """Retries the consumers of a running Dramatiq ``worker`` are holding (they are unacked, so a
    queue's message count leaves them out: a worker with held retries is not idle)."""
    threads = list(getattr(worker, "consumers", {}).values())
    return sum(getattr(getattr(thread, "consumer", None), "held_count", 0) for thread in threads)


def _message_id(properties: Any, body: bytes) -> str:
    """A delivery's message id for a log line: its AMQP ``message_id``, or the Dramatiq one."""
    if isinstance(properties.message_id, str):
        return properties.message_id
    try:
        message_id = json.loads(body).get("message_id")
    except Exception:
        return "(unreadable)"
    return message_id if isinstance(message_id, str) else "(none)"


@dataclass(frozen=True, slots=True)
class _SuspectDelivery:
    """The method frame of a delivery from the suspects channel, its tag negated (see
    :meth:`WorkerConsumer._acks_for`)."""

    delivery_tag: int
    redelivered: bool


def _recompute_wait() -> None:
    """Runs on the connection's thread only to end its wait, so that the next one counts a new hold."""
