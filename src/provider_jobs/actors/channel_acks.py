"""ChannelAcks: a channel's acks and nacks, several acks in one frame where RabbitMQ allows it."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

__all__ = ["ChannelAcks"]


class ChannelAcks:
    """Writes the settlements of one channel's deliveries, knowing which are still open.

    AMQP's ``basic.ack`` with ``multiple`` settles every delivery of the
    channel up to a tag in one frame. That is safe only up to the lowest tag
    still open: one delivered but not settled (running, waiting to run, held,
    or waiting for a confirm), which a multiple ack would settle as a success.
    So every delivery is :meth:`opened` when it arrives and leaves the open set
    when its settlement is written; a batch of acks below the lowest open tag
    goes as one frame, the rest one frame each.

    Used on the connection's thread only (pika is not thread-safe), like the
    channel itself. ``channel`` is pika's asynchronous channel.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._open: set[int] = set()

    def opened(self, tag: int) -> None:
        """A delivery arrived with ``tag``."""
        self._open.add(tag)

    def ack(self, tags: Iterable[int]) -> None:
        """Ack the deliveries ``tags``."""
        batch = sorted(tags)
        open_tags = self._open
        open_tags.difference_update(batch)
        lowest_open = min(open_tags, default=None)
        together = len(batch) if lowest_open is None else bisect.bisect_left(batch, lowest_open)
        if together > 1:
            self._channel.basic_ack(delivery_tag=batch[together - 1], multiple=True)
        else:
            together = 0
        for tag in batch[together:]:
            self._channel.basic_ack(delivery_tag=tag)

    def nack(self, tag: int) -> None:
        """Nack the delivery ``tag`` without requeue: RabbitMQ dead-letters it."""
        self._open.discard(tag)
        self._channel.basic_nack(delivery_tag=tag, requeue=False)

    @property
    def open_count(self) -> int:
        """Deliveries of this channel not settled yet."""
        return len(self._open)
