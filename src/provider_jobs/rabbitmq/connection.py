"""The pika ``SelectConnection`` under :class:`~provider_jobs.rabbitmq.bulk.BulkPublisher`.

One connection with one channel in confirm mode, driven in the calling
thread: the loop runs only while a call needs it (opening, closing, polling,
publishing), and nothing runs between calls. :class:`_ConfirmConnection`
opens, polls and closes it; the publisher settles what it sent through the
hooks it overrides (``_on_confirm``, ``_on_return``, ``_lost``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel
from pika.spec import BasicProperties

from ..errors import BrokerUnavailable
from .frames import publish_frames

__all__: list[str] = []

#: Whether this pika has ``_adapter_emit_data``, the hook between a connection and its transport
#: that the frame writer writes through (checked with pika 1.3.2 and 1.4.4).
_WRITES_FRAMES = hasattr(SelectConnection, "_adapter_emit_data")

# The publisher's logger: these records come from its connection.
logger = logging.getLogger("provider_jobs.rabbitmq.bulk")


class _CoalescingConnection(SelectConnection):  # type: ignore[misc]
    """A ``SelectConnection`` that can hold outgoing frames and write them as one buffer.

    pika writes the three frames of a publish (method, header, body) with one
    ``send()`` each; a batch of publishes written at once costs one system
    call and arrives at RabbitMQ in full TCP segments. ``_adapter_emit_data``
    is pika's documented hook between a connection and its transport.
    """

    _held: list[bytes] | None = None

    def hold(self) -> None:
        """Collect outgoing frames until :meth:`flush`."""
        self._held = []

    def flush(self) -> None:
        """Write the collected frames, in order, and stop collecting."""
        held, self._held = self._held, None
        # Closing or closed: the messages held are settled as unconfirmed by the close callback.
        if held and self.is_open:
            super()._adapter_emit_data(b"".join(held))

    def publish(
        self, channel: Channel, routing_key: str, body: bytes, *, priority: int | None, message_id: str
    ) -> None:
        """What ``channel.basic_publish`` does for a persistent, mandatory message to the default
        exchange, at a fraction of its cost (:func:`~provider_jobs.rabbitmq.frames.publish_frames`).

        Raises:
            pika.exceptions.ChannelWrongStateError: The channel is closed or closing.
            ValueError: The routing key or message id is too long, or the priority is not 0-255.
        """
        if not channel.is_open:
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")
        body_max = getattr(self, "_body_max_length", None)
        if not _WRITES_FRAMES or not isinstance(body_max, int):
            # A pika without the private attributes the frame writer needs: its own publish.
            channel.basic_publish(
                "",
                routing_key,
                body,
                BasicProperties(delivery_mode=2, priority=priority, message_id=message_id),
                mandatory=True,
            )
            return
        frames = publish_frames(
            channel.channel_number,
            routing_key,
            body,
            priority=priority,
            message_id=message_id,
            body_max=body_max,
        )
        # pika's counters, kept as its own publish keeps them.
        self.bytes_sent = getattr(self, "bytes_sent", 0) + sum(map(len, frames))
        self.frames_sent = getattr(self, "frames_sent", 0) + len(frames)
        if self._held is None:
            for data in frames:
                super()._adapter_emit_data(data)
        else:
            self._held.extend(frames)

    def _adapter_emit_data(self, data: bytes) -> None:
        if self._held is None:
            super()._adapter_emit_data(data)
        else:
            self._held.append(data)


class _ConfirmConnection:
    """A connection and a channel in confirm mode, opened on demand, its loop run in this thread.

    Args:
        url: RabbitMQ URL (``amqp://user:pw@host:port/vhost``), or several separated
            by commas: each connect tries them in turn, from the last that worked.
        connect_timeout_s: Socket and handshake timeout when connecting, and
            the longest wait for a close to be answered.
    """

    def __init__(self, url: str, *, connect_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._connection: _CoalescingConnection | None = None
        self._channel: Channel | None = None
        self._next_tag = 1
        self._open_error: str | None = None
        self._looping = False
        self._stale = False
        #: Index in the URL list of the node to try first: the last one that worked.
        self._preferred = 0

    # -- hooks of the publisher ---------------------------------------------------

    def _on_confirm(self, frame: Any) -> None:
        """Settle what a ``basic.ack`` / ``basic.nack`` covers."""
        raise NotImplementedError

    def _on_return(self, channel: Channel, method: Any, properties: BasicProperties, body: bytes) -> None:
        """Note a message RabbitMQ returned as unroutable."""
        raise NotImplementedError

    def _lost(self, why: str) -> None:
        """Settle every message in flight as lost: the channel or connection is gone."""
        raise NotImplementedError

    # -- connection ---------------------------------------------------------------

    def _parameters(self, url: str) -> pika.URLParameters:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = self.connect_timeout_s
        params.stack_timeout = self.connect_timeout_s
        # The loop only runs inside publish_many: heartbeats would go unanswered between
        # calls and the broker would drop an idle publisher. Confirm timeouts cover a dead peer.
        params.heartbeat = 0
        return params

    def connect(self) -> None:
        """Open the connection and a channel in confirm mode, unless open already.

        Raises:
            BrokerUnavailable: RabbitMQ cannot be reached or refused the connection.
        """
        with self._lock:
            self._ensure_open()

    def _ensure_open(self) -> None:
        if self._channel is not None and self._channel.is_open:
            self._poll()
            if self._channel is not None and self._channel.is_open:
                return
        urls = [url.strip() for url in self.url.split(",") if url.strip()]
        order = [*range(self._preferred, len(urls)), *range(self._preferred)]
        for position, index in enumerate(order):
            try:
                self._open(self._parameters(urls[index]))
            except BrokerUnavailable:
                if position == len(order) - 1:
                    raise
                continue
            self._preferred = index
            return

    def _open(self, params: pika.URLParameters) -> None:
        self._discard()
        self._open_error = None
        try:
            connection = _CoalescingConnection(
                params,
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_open_error,
                on_close_callback=self._on_connection_closed,
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(
                f"Cannot reach RabbitMQ at {params.host}:{params.port} ({type(exc).__name__}: {exc})"
            ) from exc
        self._connection = connection
        self._loop(connection)
        if self._channel is None or not self._channel.is_open:
            reason = self._open_error or "connection closed during the handshake"
            self._discard()
            raise BrokerUnavailable(f"Cannot reach RabbitMQ at {params.host}:{params.port} ({reason})")

    def _on_connection_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, connection: Any, error: BaseException | str) -> None:
        self._open_error = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        self._stop_loop(connection)

    def _on_channel_open(self, channel: Channel) -> None:
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_ready(channel))

    def _on_ready(self, channel: Channel) -> None:
        self._channel = channel
        self._next_tag = 1
        assert self._connection is not None
        self._stop_loop(self._connection)

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        # Closed by us (close(), or a connection we close): nothing for an operator to see.
        closed_by_us = isinstance(reason, pika.exceptions.ChannelClosedByClient)
        logger.log(
            logging.DEBUG if closed_by_us else logging.WARNING, "Bulk publisher channel closed: %s", reason
        )
        self._lost(f"channel closed ({reason})")
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _on_connection_closed(self, connection: Any, reason: BaseException) -> None:
        self._channel = None
        self._open_error = self._open_error or f"{type(reason).__name__}: {reason}"
        self._lost(f"connection lost ({type(reason).__name__}: {reason})")
        self._stop_loop(connection)

    def _poll(self) -> None:
        """Handle whatever arrived since the last call (a close by the broker, most of all)."""
        assert self._connection is not None
        connection = self._connection
        connection.ioloop.call_later(0, lambda: self._stop_loop(connection))
        self._loop(connection)

    def _loop(self, connection: SelectConnection) -> None:
        """Run the connection's loop in this thread until :meth:`_stop_loop`."""
        self._looping = True
        try:
            connection.ioloop.start()
        finally:
            self._looping = False

    def _stop_loop(self, connection: SelectConnection) -> None:
        # pika remembers a stop requested while its loop is idle and would end the next run at once.
        if self._looping:
            connection.ioloop.stop()

    def _discard(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._stale = False
        if connection is None:
            return
        if not connection.is_closed:
            # A broker that does not answer the close must not hang us: bounded wait.
            timer = connection.ioloop.call_later(self.connect_timeout_s, lambda: self._stop_loop(connection))
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                if not connection.is_closing:
                    connection.close()
                self._loop(connection)
            connection.ioloop.remove_timeout(timer)
        if not connection.is_closed:
            # No Close-Ok in time: drop the socket (pika's adapter hook for an abrupt close).
            with contextlib.suppress(Exception):
                connection._adapter_disconnect()
        # The loop is ours (pika made one for this connection): close its wake-up sockets too.
        connection.ioloop.close()

    def close(self) -> None:
        """Close the connection; the next call opens a new one."""
        with self._lock:
            self._discard()
