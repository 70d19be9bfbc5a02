"""BulkPublisher: many confirmed publishes in flight, each one accounted for.

Publishing with one confirm in flight (pika's ``BlockingChannel`` with
``confirm_delivery``) waits a network round trip and an fsync per message.
This publisher keeps up to ``window`` messages in flight on one channel in
confirm mode and settles them as RabbitMQ's ``basic.ack`` / ``basic.nack``
arrive (usually ``multiple=True``, one frame for many messages).

It drives a pika ``SelectConnection`` in the *calling* thread for the duration
of :meth:`BulkPublisher.publish_many`: publishing and settling happen in one
loop with no hand-off between threads, and nothing runs between calls. Every
message is published persistently (``delivery_mode=2``) and ``mandatory``, so
an unroutable message comes back as ``basic.return`` (before its ack) and is
reported, not counted as sent.

Each message ends in exactly one state of :data:`OUTCOMES`; only ``confirmed``
means RabbitMQ took responsibility for it. ``unconfirmed`` (the connection was
lost, or no confirm came within ``confirm_timeout_s``) may or may not have
reached the queue; ``not_sent`` never left this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import pika.exceptions
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from .connection import _ConfirmConnection
from .messages import (
    CONFIRMED,
    NACKED,
    NOT_SENT,
    OUTCOMES,
    RETURNED,
    UNCONFIRMED,
    BulkResult,
    OutgoingMessage,
    PublishFailure,
)

__all__ = [
    "CONFIRMED",
    "NACKED",
    "NOT_SENT",
    "OUTCOMES",
    "RETURNED",
    "UNCONFIRMED",
    "BulkPublisher",
    "BulkResult",
    "OutgoingMessage",
    "PublishFailure",
]

logger = logging.getLogger("provider_jobs.rabbitmq.bulk")

#: Messages published before the loop gets to write them and read confirms.
_BURST = 100


class _Run:
    """The state of one ``publish_many`` call."""

    def __init__(self, items: Iterator[OutgoingMessage], rate_per_s: float | None) -> None:
        self.items = items
        self.interval_s = 1 / rate_per_s if rate_per_s else 0.0
        self.more = True
        self.taken = 0
        #: Delivery tag -> (index, message_id), for messages published and not yet settled.
        self.pending: dict[int, tuple[int, str]] = {}
        self.low_tag = 0
        #: Delivery tag -> reply text, for messages RabbitMQ returned and has not acked yet.
        self.returned: dict[int, str] = {}
        self.confirmed: list[int] = []
        self.failures: list[PublishFailure] = []
        self.error: BaseException | None = None
        self.last_progress = time.monotonic()
        self.pacing_timer: Any = None
        self.finished = False

    @property
    def settled(self) -> bool:
        return not self.more and not self.pending


class BulkPublisher(_ConfirmConnection):
    """Publishes batches of messages with publisher confirms, many in flight.

    One connection with one channel, opened on first use and kept between
    calls. Calls are serialised: one thread publishes at a time.

    Args:
        url: RabbitMQ URL (``amqp://user:pw@host:port/vhost``).
        window: Messages published and not yet confirmed, at most. Default 2000.
        confirm_timeout_s: Give up on the messages in flight when no confirm
            arrived for this long; they are reported ``unconfirmed``. Default 30.
        connect_timeout_s: Socket and handshake timeout when connecting. Default 5.

    Raises:
        ValueError: ``window`` or a timeout is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        window: int = 2000,
        confirm_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if window < 1:
            raise ValueError(f"window={window!r} is not allowed: expected 1 or more messages")
        if confirm_timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError(
                f"confirm_timeout_s={confirm_timeout_s!r}, connect_timeout_s={connect_timeout_s!r}: "
                "expected seconds > 0"
            )
        super().__init__(url, connect_timeout_s=connect_timeout_s)
        self.window = window
        self.confirm_timeout_s = confirm_timeout_s
        self._run: _Run | None = None
        self._next_send_at = 0.0

    def __enter__(self) -> BulkPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- publishing ---------------------------------------------------------------

    def publish_many(
        self, items: Iterable[OutgoingMessage], *, rate_per_s: float | None = None
    ) -> BulkResult:
        """Publish ``items`` in order, up to ``window`` in flight, and wait until each is settled.

        ``items`` is read lazily, one message when the window (and the rate)
        lets the next one go, so a generator may stamp each message at its
        send time. Index ``i`` in the result is the ``i``-th message taken.

        Args:
            items: The messages.
            rate_per_s: Messages per second at most, each spaced from the
                previous publish (also across calls); ``None`` for as fast as
                the window allows.

        Returns:
            Which messages were confirmed and what became of the others.

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached; nothing was taken from ``items``.
            ValueError: ``rate_per_s`` is not positive.
            Exception: Whatever ``items`` raised, once the messages in flight are settled.
        """
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s={rate_per_s!r} is not allowed: expected messages per second > 0")
        with self._lock:
            started = time.monotonic()
            self._ensure_open()
            run = self._run = _Run(iter(items), rate_per_s)
            run.low_tag = self._next_tag
            assert self._connection is not None
            ioloop = self._connection.ioloop
            watchdog = ioloop.call_later(self.confirm_timeout_s, self._check_progress)
            try:
                self._fill()
                if not run.finished:
                    self._loop(self._connection)
            finally:
                if run.pending:
                    # The loop was left by an exception: never report those messages as sent.
                    self._lost("publisher stopped")
                self._run = None
                ioloop.remove_timeout(watchdog)
                if run.pacing_timer is not None:
                    ioloop.remove_timeout(run.pacing_timer)
                if self._stale:
                    self._discard()
            if run.error is not None:
                raise run.error
            run.confirmed.sort()
            run.failures.sort(key=lambda f: f.index)
            return BulkResult(
                confirmed=run.confirmed, failures=run.failures, elapsed_s=time.monotonic() - started
            )

    def _fill(self) -> None:
        """Publish until the window is full, the input is exhausted, or the rate says wait."""
        run = self._run
        channel = self._channel
        if run is None or run.finished:
            return
        run.pacing_timer = None
        window = self.window
        pending = run.pending
        connection = self._connection
        assert connection is not None
        connection.hold()
        try:
            self._publish_while_open(run, channel, window, pending)
        finally:
            connection.flush()
        self._maybe_finish()

    def _publish_while_open(
        self, run: _Run, channel: Channel | None, window: int, pending: dict[int, tuple[int, str]]
    ) -> None:
        burst = _BURST
        connection = self._connection
        assert connection is not None
        while run.more and len(pending) < window and channel is not None:
            if not burst:
                # Back to the loop, which writes this burst to the socket (RabbitMQ starts on
                # it while the next is built) and reads confirms, then comes back here.
                run.pacing_timer = connection.ioloop.call_later(0, self._fill)
                return
            burst -= 1
            if run.interval_s:
                now = time.monotonic()
                due = self._next_send_at
                if due > now:
                    run.pacing_timer = connection.ioloop.call_later(due - now, self._fill)
                    return
            try:
                item = next(run.items)
            except StopIteration:
                run.more = False
                break
            except Exception as exc:
                run.more = False
                run.error = exc
                break
            if run.interval_s:
                # Spaced from when this one was due, absorbing a late wake-up; after a longer
                # stall (a slow caller, a new call) from now, never catching up in a burst.
                now = time.monotonic()
                due = self._next_send_at
                self._next_send_at = (due if now - due < run.interval_s else now) + run.interval_s
            index = run.taken
            run.taken += 1
            tag = self._next_tag
            message_id = item.message_id if item.message_id is not None else str(tag)
            try:
                connection.publish(
                    channel, item.routing_key, item.body, priority=item.priority, message_id=message_id
                )
            except ValueError as exc:
                # Nothing of it was buffered: an item the caller got wrong, raised as items' errors are.
                run.more = False
                run.error = exc
                break
            except (pika.exceptions.AMQPError, OSError) as exc:
                # Refused before anything was buffered: the channel or connection is gone.
                run.failures.append(PublishFailure(index, NOT_SENT, f"{type(exc).__name__}: {exc}"))
                self._lost(f"publish refused ({type(exc).__name__}: {exc})")
                break
            self._next_tag = tag + 1
            pending[tag] = (index, message_id)

    def _maybe_finish(self) -> None:
        run = self._run
        if run is not None and not run.finished and run.settled:
            run.finished = True
            if self._connection is not None:
                self._stop_loop(self._connection)

    def _on_confirm(self, frame: Any) -> None:
        run = self._run
        if run is None:
            return
        method = frame.method
        nacked = isinstance(method, Basic.Nack)
        tag = method.delivery_tag
        if method.multiple:
            tags: Iterable[int] = range(run.low_tag, tag + 1)
            run.low_tag = max(run.low_tag, tag + 1)
        else:
            tags = (tag,)
        pending, returned = run.pending, run.returned
        for t in tags:
            entry = pending.pop(t, None)
            if entry is None:
                continue
            if nacked:
                run.failures.append(PublishFailure(entry[0], NACKED, "RabbitMQ nacked it (internal error)"))
            elif returned:
                reply = returned.pop(t, None)
                if reply is None:
                    run.confirmed.append(entry[0])
                else:
                    run.failures.append(PublishFailure(entry[0], RETURNED, f"unroutable: {reply}"))
            else:
                run.confirmed.append(entry[0])
        run.last_progress = time.monotonic()
        if run.more:
            self._fill()
        else:
            self._maybe_finish()

    def _on_return(self, channel: Channel, method: Any, properties: BasicProperties, body: bytes) -> None:
        run = self._run
        if run is None:
            return
        # The return comes before the ack of the same message: find the oldest pending one with its id.
        for tag, (_, message_id) in run.pending.items():
            if message_id == properties.message_id and tag not in run.returned:
                run.returned[tag] = (
                    f"{method.reply_code} {method.reply_text} (routing key {method.routing_key!r})"
                )
                return
        logger.warning("Returned message %s matches no message in flight", properties.message_id)

    def _check_progress(self) -> None:
        run = self._run
        if run is None or self._connection is None:
            return
        idle_s = time.monotonic() - run.last_progress
        if not run.pending or idle_s < self.confirm_timeout_s:
            self._connection.ioloop.call_later(
                max(0.01, self.confirm_timeout_s - idle_s), self._check_progress
            )
            return
        # Late confirms on this channel would settle nothing we track: start afresh after this call.
        self._stale = True
        self._lost(f"no confirm within {self.confirm_timeout_s} s")

    def _lost(self, why: str) -> None:
        """Settle every message in flight as ``unconfirmed`` and stop taking new ones."""
        run = self._run
        if run is None:
            return
        for index, _ in run.pending.values():
            run.failures.append(PublishFailure(index, UNCONFIRMED, f"{why}; it may or may not be queued"))
        run.pending.clear()
        run.returned.clear()
        run.more = False
        self._channel = None
        if not run.finished:
            run.finished = True
            if self._connection is not None:
                self._stop_loop(self._connection)
