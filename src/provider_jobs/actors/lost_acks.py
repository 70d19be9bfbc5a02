"""LostAcks: the outcomes a consumer announces on its SettledLedger when its connection is lost."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable

from .settled import SettledLedger

__all__ = ["LostAcks"]

#: How far back acks written before a connection loss may have been lost with it, in seconds.
RECENT_ACKS_S = 1.0


class LostAcks:
    """The deliveries of one consumer whose outcome is known but whose ack may be lost.

    Each delivery's :func:`.delivery_key` is kept from its arrival until its
    ack is written; the keys of the acks written in the last second are kept a
    little longer. When the connection is lost, :meth:`lost` announces on the
    ledger the acks not written yet and, once, those written just before (they
    may still have been in the socket's buffers); every ack of this
    consumer's that comes later is announced on its own (:meth:`announce`).
    """

    def __init__(self, ledger: SettledLedger) -> None:
        self.ledger = ledger
        #: Delivery tag -> delivery key, from arrival until the ack is written.
        self._keys: dict[int, str] = {}
        #: (when, key) of the acks written last.
        self._recent: collections.deque[tuple[float, str]] = collections.deque(maxlen=4096)
        self._announced = False

    def delivered(self, tag: int, key: str) -> None:
        """Delivery ``tag`` (with ``key``) is handed to the worker."""
        self._keys[tag] = key

    def written(self, tags: Iterable[int]) -> None:
        """The acks of ``tags`` were just written."""
        now = time.monotonic()
        for tag in tags:
            key = self._keys.pop(tag, None)
            if key is not None:
                self._recent.append((now, key))

    def announce(self, tags: Iterable[int]) -> None:
        """The outcomes of ``tags`` are known, and their acks cannot be written any more."""
        self.ledger.announce([key for tag in tags if (key := self._keys.pop(tag, None)) is not None])

    def lost(self, unwritten: Iterable[int]) -> None:
        """The connection is lost with the acks of ``unwritten`` not written yet."""
        keys = [key for tag in unwritten if (key := self._keys.pop(tag, None)) is not None]
        if not self._announced:
            self._announced = True
            now = time.monotonic()
            keys += [key for at, key in list(self._recent) if now - at <= RECENT_ACKS_S]
        self.ledger.announce(keys)
