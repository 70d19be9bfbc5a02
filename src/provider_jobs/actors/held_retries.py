"""HeldRetries: short retries a consumer keeps unacked until they fall due."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.brokers.rabbitmq import _RabbitmqMessage

from .solo_runs import SOLO_ATTRIBUTE

__all__ = ["HeldRetries"]


class HeldRetries:
    """Messages whose retry is due soon, kept here (still unacked in RabbitMQ) until due.

    Worker threads add to it; the consumer's thread takes what fell due and
    waits no longer than the earliest due time. ``report`` is told the count
    whenever it changes.
    """

    def __init__(self, report: Callable[[int], None]) -> None:
        self._lock = threading.Lock()
        #: (due, sequence, message proxy), earliest first.
        self._heap: list[tuple[float, int, Any]] = []
        self._sequence = itertools.count()
        self._report = report

    def __len__(self) -> int:
        with self._lock:
            return len(self._heap)

    def hold(self, message: Any, delay_ms: int) -> None:
        due = time.monotonic() + delay_ms / 1000
        with self._lock:
            heapq.heappush(self._heap, (due, next(self._sequence), message))
            count = len(self._heap)
        self._report(count)

    def take_due(self) -> Any:
        """A fresh message proxy for the earliest hold that fell due, or ``None``."""
        with self._lock:
            if not self._heap or self._heap[0][0] > time.monotonic():
                return None
            held = heapq.heappop(self._heap)[2]
            count = len(self._heap)
        self._report(count)
        # A fresh proxy, as for a delivery: the failed attempt's exception and flags stay behind.
        fresh = _RabbitmqMessage(held.redelivered, held._tag, held._message)  # type: ignore[no-untyped-call]
        if held.__dict__.get(SOLO_ATTRIBUTE):
            fresh.__dict__[SOLO_ATTRIBUTE] = True  # still the process's suspect: it runs alone again
        return fresh

    def wait_s(self, idle_s: float) -> float:
        """How long the consumer's thread may wait: ``idle_s``, or less when a hold falls due sooner."""
        with self._lock:
            if not self._heap:
                return idle_s
            return min(idle_s, max(0.0, self._heap[0][0] - time.monotonic()))

    def clear(self) -> None:
        """Forget every hold (RabbitMQ has the messages back)."""
        with self._lock:
            self._heap.clear()
        self._report(0)
