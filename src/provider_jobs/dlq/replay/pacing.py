"""Pacer: spaces a paced replay's sends to its rate."""

from __future__ import annotations

import time

__all__ = ["Pacer"]


class Pacer:
    """Spaces sends ``1 / rate_per_s`` apart, from when each was due (absorbing a late
    wake-up); after a longer stall, from now, never catching up in a burst."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1 / rate_per_s
        self.next_at = 0.0
        self._previous = 0.0

    def wait(self) -> None:
        """Sleep until the next send is due, and book the one after it."""
        due = self.next_at
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        self._previous = due
        self.next_at = (due if now - due < self.interval_s else now) + self.interval_s

    def refund(self) -> None:
        """Give back the slot of the last :meth:`wait` (nothing was sent in it)."""
        self.next_at = self._previous
