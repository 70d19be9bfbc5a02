"""WorkerConsumer: Dramatiq's RabbitMQ consumer: batched acks, held retries, dead letters before acks."""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.errors import ConnectionClosed

from ..middleware.dead_letters import DeadLetter, take_dead_letter
from ..middleware.delays import take_hold

__all__ = ["WorkerConsumer", "held_retries"]

_Delivery = tuple[Any, Any, Any]
_NOTHING: _Delivery = (None, None, None)
#: How long closing waits for the confirms of dead letters still in flight.
_CLOSE_WAIT_S = 5.0


class WorkerConsumer(_RabbitmqConsumer):
    """The consumer of a provider-jobs worker's queue.

    **Acks in batches.** pika is not thread-safe, so Dramatiq's consumer has
    every ack run on the connection's thread: one wake-up of that thread and
    one socket flush per message, about a third of a no-op worker's CPU. Here
    an ack joins a list, and only the first ack of a batch wakes the
    connection's thread, which writes every ack in the list and flushes once.
    A connection lost before the flush leaves those messages unacked, so
    RabbitMQ redelivers them, as with Dramatiq's consumer.

    **Holds short retries.** A message that ``ClassifiedRetries`` marked with
    a hold (a retry due within ``hold_retries_up_to_ms``) is not acked: it is
    kept here, still unacked in RabbitMQ, and handed to the worker again when
    due, with its retry count and attempt history as the failed attempt left
    them. The consumer's loop wakes at the due time rather than on its next
    idle timeout. If the worker stops or its connection drops meanwhile,
    RabbitMQ redelivers the message as it was published, and the attempt that
    failed runs again (at-least-once, as for a worker killed mid-job). Held
    messages count against the prefetch, which is doubled for them; a worker
    holding that many takes new jobs only as holds end, at most the hold limit
    later.

    **Publishes dead letters.** A message ``ClassifiedRetries`` dead-lettered
    comes with its enriched dead letter: the connection's thread publishes it
    to ``<queue>.XQ`` on a channel in confirm mode, many in flight, and acks
    the original when RabbitMQ confirms the dead letter, or nacks it (RabbitMQ
    then dead-letters the original itself) when RabbitMQ refuses it. A worker
    thread does not wait for the confirm. Closing waits up to 5 s for the
    confirms in flight; a connection lost before them leaves the originals
    unacked, and RabbitMQ redelivers them.
    """

    def __init__(self, broker: Any, queue_name: str, prefetch: int, timeout: int) -> None:
        # Held retries stay unacked: room for as many again, so that holds do not starve the worker.
        prefetch = min(prefetch * 2, 65535)
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        #: (delivery tag, dead letter to publish first or None), in the order acked.
        self._pending: list[tuple[int, DeadLetter | None]] = []
        #: Publish sequence number of a dead letter -> (original's delivery tag, message id).
        self._awaiting: dict[int, tuple[int, str]] = {}
        self._returned: set[str] = set()
        self._letters_published = 0
        #: (due, sequence, message proxy): held retries, earliest first.
        self._held: list[tuple[float, int, Any]] = []
        self._sequence = itertools.count()
        self._cancelled = False
        self.iterator = self._deliveries(queue_name, timeout / 1000)
        self._letters = self._open_letters_channel()

    def _open_letters_channel(self) -> Any:
        """A channel in confirm mode for dead letters, its confirms handled by this consumer."""
        try:
            channel = self.connection.channel()
            selected: list[bool] = []
            channel._impl.confirm_delivery(self._on_letter_confirm, lambda _frame: selected.append(True))
            deadline = time.monotonic() + 30
            while not selected and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.1)
            if not selected:
                raise pika.exceptions.AMQPChannelError("RabbitMQ did not answer Confirm.Select")
            channel._impl.add_on_return_callback(self._on_letter_return)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        return channel

    # -- acks ---------------------------------------------------------------------

    def ack(self, message: Any) -> None:
        hold_ms = take_hold(message)
        if hold_ms is not None:
            self._hold(message, hold_ms)
            return
        letter = take_dead_letter(message)
        try:
            self.known_tags.remove(message._tag)
        except KeyError:
            self.logger.warning("Failed to ack message: not in known tags.")
            return
        with self._lock:
            self._pending.append((message._tag, letter))
            if len(self._pending) > 1:
                return  # the first ack of this batch has already woken the connection's thread
        self._wake(self._settle)

    def _settle(self) -> None:
        """Write every pending ack and dead letter, then flush once (runs on the connection's thread)."""
        with self._lock:
            items, self._pending = self._pending, []
        channel = self.channel._impl  # the asynchronous channel: writes a frame without flushing
        for tag, letter in items:
            if letter is None:
                channel.basic_ack(delivery_tag=tag)
                continue
            self._letters_published += 1
            self._awaiting[self._letters_published] = (tag, letter.message_id)
            self._letters._impl.basic_publish(
                "",
                letter.routing_key,
                letter.body,
                pika.BasicProperties(
                    delivery_mode=2,
                    priority=letter.priority,
                    headers=letter.headers,
                    message_id=letter.message_id,
                ),
                mandatory=True,
            )
        self.channel._flush_output()

    def _on_letter_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # A return comes before the confirm of the same message.
        self._returned.add(properties.message_id)

    def _on_letter_confirm(self, frame: Any) -> None:
        """Ack (or nack) the originals of the dead letters RabbitMQ confirmed (or refused)."""
        method = frame.method
        refused = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            seqs = []
            for seq in self._awaiting:
                if seq > method.delivery_tag:
                    break
                seqs.append(seq)
        else:
            seqs = [method.delivery_tag]
        channel = self.channel._impl
        for seq in seqs:
            entry = self._awaiting.pop(seq, None)
            if entry is None:
                continue
            tag, message_id = entry
            if refused or message_id in self._returned:
                self._returned.discard(message_id)
                self.logger.warning(
                    "RabbitMQ refused dead letter %s; nacking it so that RabbitMQ dead-letters it", message_id
                )
                channel.basic_nack(delivery_tag=tag, requeue=False)
            else:
                channel.basic_ack(delivery_tag=tag)

    def close(self) -> None:
        deadline = time.monotonic() + _CLOSE_WAIT_S
        try:
            while (self._awaiting or self._pending) and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.05)
            if self.connection.is_open:
                self.connection.process_data_events(time_limit=0)  # writes the last acks
        except Exception:
            self.logger.debug("Connection lost while waiting for dead-letter confirms.", exc_info=True)
        super().close()  # type: ignore[no-untyped-call]

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
        with self._lock:
            self._pending.clear()
            self._held.clear()
        self._awaiting.clear()

    # -- held retries -------------------------------------------------------------

    def _hold(self, message: Any, delay_ms: int) -> None:
        due = time.monotonic() + delay_ms / 1000
        with self._lock:
            heapq.heappush(self._held, (due, next(self._sequence), message))
        self._wake(_recompute_wait)  # the loop may be waiting longer than this hold

    @property
    def held_count(self) -> int:
        """Retries held here, waiting to fall due."""
        with self._lock:
            return len(self._held)

    def _take_due(self) -> Any:
        with self._lock:
            if not self._held or self._held[0][0] > time.monotonic():
                return None
            held = heapq.heappop(self._held)[2]
        # A fresh proxy, as for a delivery: the failed attempt's exception and flags stay behind.
        return _RabbitmqMessage(held.redelivered, held._tag, held._message)  # type: ignore[no-untyped-call]

    def _wait_s(self, idle_s: float) -> float:
        with self._lock:
            if not self._held:
                return idle_s
            return min(idle_s, max(0.0, self._held[0][0] - time.monotonic()))

    def __next__(self) -> Any:
        due = self._take_due()
        if due is not None:
            return due
        return super().__next__()  # type: ignore[no-untyped-call]

    def _deliveries(self, queue_name: str, idle_s: float) -> Iterator[_Delivery]:
        """Deliveries as pika's ``consume()`` yields them, with ``(None, None, None)`` on every
        wake-up without one: an idle timeout, or the time a held retry falls due."""
        arrived: collections.deque[_Delivery] = collections.deque()

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            arrived.append((method, properties, body))

        def on_cancel(_method: Any) -> None:
            self._cancelled = True

        self.channel.add_on_cancel_callback(on_cancel)
        self.channel.basic_consume(queue_name, on_message)
        while True:
            if arrived:
                yield arrived.popleft()
                continue
            if self._cancelled:
                # RabbitMQ cancelled the consumer (its queue was deleted): Dramatiq reconnects.
                raise pika.exceptions.ConsumerCancelled(f"RabbitMQ cancelled the consumer of {queue_name}")
            wait_s = self._wait_s(idle_s)
            if wait_s > 0:
                self.connection.process_data_events(time_limit=wait_s)
            if not arrived:
                yield _NOTHING


def held_retries(worker: Any) -> int:
    """Retries the consumers of a running Dramatiq ``worker`` are holding (they are unacked, so a
    queue's message count leaves them out: a worker with held retries is not idle)."""
    threads = list(getattr(worker, "consumers", {}).values())
    return sum(getattr(getattr(thread, "consumer", None), "held_count", 0) for thread in threads)


def _recompute_wait() -> None:
    """Runs on the connection's thread only to end its wait, so that the next one counts a new hold."""
