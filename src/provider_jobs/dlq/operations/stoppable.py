"""A replay's wait for a provider's breaker that ends once its operation is no longer running:
a pause or cancel asked by any process stops a replay also while its records are held back."""

from __future__ import annotations

import time
from collections.abc import Callable

from ...health.watch import Pause
from ..replay.gate import ProviderHealth

__all__ = ["StoppableHealth", "Stopped"]

#: How often a replay waiting for a breaker reads whether its operation was paused or cancelled.
_STOP_CHECK_S = 1.0


class Stopped(Exception):
    """The operation was paused or cancelled while its replay waited for a breaker."""


class StoppableHealth:
    """A replay's health that, while it waits for a breaker, stops the replay once the
    operation is no longer running (read at most every :data:`_STOP_CHECK_S`).

    Args:
        health: The providers' health the replay follows.
        still_running: Reads whether the operation is still ``running``.
    """

    def __init__(self, health: ProviderHealth, still_running: Callable[[], bool]) -> None:
        self._health = health
        self._still_running = still_running
        self._checked = time.monotonic()

    def pause_of(self, provider: str) -> Pause | None:
        return self._health.pause_of(provider)

    def wait(self, timeout_s: float) -> None:
        """Wait as the providers' health does.

        Raises:
            Stopped: The operation was paused or cancelled meanwhile.
        """
        self._health.wait(timeout_s)
        now = time.monotonic()
        if now - self._checked >= _STOP_CHECK_S:
            self._checked = now
            if not self._still_running():
                raise Stopped
