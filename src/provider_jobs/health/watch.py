"""BreakerWatch: which providers nothing should be sent to now, kept current from the health stream.

A replay asks it before sending a provider's records and waits on it while
only such records are left (see :mod:`provider_jobs.dlq.replay.gate`). It is
fed by the same :class:`~.stream.HealthFollower` and folded into the same
:class:`~.directory.ProviderDirectory` as the recovery replay's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..middleware.breaker import CLOSED
from ..settings import Settings
from .directory import STALE_PERIODS, ProviderDirectory
from .stream import HealthFollower, HealthStream

__all__ = ["DOWN", "RETRY_AFTER", "BreakerWatch", "Pause", "follow_breakers"]

logger = logging.getLogger("provider_jobs.health")

#: Why a provider is paused: its breaker is open (or half-open, letting only probes through).
DOWN = "down"
#: Why a provider is paused: it answered with a ``Retry-After`` that is not over yet.
RETRY_AFTER = "retry_after"
#: Seconds :func:`follow_breakers` waits to have read the stream up to now.
CATCH_UP_S = 5.0


def _clock_time(at: float, *, seconds: bool = False) -> str:
    return dt.datetime.fromtimestamp(at).strftime("%H:%M:%S" if seconds else "%H:%M")


@dataclass(frozen=True, slots=True)
class Pause:
    """A provider nothing should be sent to now, since when and why.

    Args:
        provider: ``namespace/resource_type``.
        since: When its breaker opened (epoch seconds), or when it asked to wait.
        reason: :data:`DOWN` or :data:`RETRY_AFTER`.
        until: For :data:`RETRY_AFTER`, when the wait is over (epoch seconds); else ``None``.
    """

    provider: str
    since: float
    reason: str = DOWN
    until: float | None = None

    def describe(self) -> str:
        """One line for people: ``ITL.Core/ResourceGroup down since 12:03``."""
        if self.reason == RETRY_AFTER and self.until is not None:
            until = _clock_time(self.until, seconds=True)
            return f"{self.provider} asked to wait (Retry-After) until {until}"
        return f"{self.provider} down since {_clock_time(self.since)}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: provider, since, reason, until, and the line :meth:`describe` gives."""
        return {
            "provider": self.provider,
            "since": self.since,
            "reason": self.reason,
            "until": self.until,
            "description": self.describe(),
        }


class BreakerWatch:
    """Breakers folded from health events, safe to read from other threads, with a wait for changes.

    Only a breaker that a live worker serves counts: with no worker left to close it, a
    state read from the stream would hold a provider back for good.

    Args:
        directory: Where events are folded. Default a new one.
        clock: Epoch seconds. Default :func:`time.time`.
    """

    def __init__(
        self, directory: ProviderDirectory | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory if directory is not None else ProviderDirectory(clock=clock)
        self.clock = clock
        self._changed = threading.Condition()

    def fold(self, event: Mapping[str, Any]) -> None:
        """Take one health event into account and wake whoever waits."""
        with self._changed:
            self.directory.fold(event)
            self._changed.notify_all()

    def pause_of(self, provider: str) -> Pause | None:
        """Why nothing should be sent to ``provider`` now, or ``None`` when it may be."""
        with self._changed:
            entry = self.directory.entry(provider)
        breaker = entry.breaker
        if breaker is None or not entry.registered:
            return None
        if breaker.state != CLOSED:
            return Pause(provider, breaker.opened_at or breaker.updated_at)
        if breaker.retry_after_until > self.clock():
            return Pause(provider, breaker.updated_at, RETRY_AFTER, breaker.retry_after_until)
        return None

    def wait(self, timeout_s: float) -> None:
        """Return after the next health event, or after ``timeout_s`` seconds."""
        with self._changed:
            self._changed.wait(timeout_s)


@contextlib.contextmanager
def follow_breakers(
    settings: Settings, *, ignore: bool = False, catch_up_s: float = CATCH_UP_S
) -> Iterator[BreakerWatch | None]:
    """A :class:`BreakerWatch` following the health stream while the block runs; ``None``
    when ``ignore`` (a replay told to send whatever the breakers say).

    It waits up to ``catch_up_s`` to have read the stream up to now; when it could not
    (RabbitMQ unreachable), a warning says so and it knows no breaker until it can.
    """
    if ignore:
        yield None
        return
    watch = BreakerWatch()
    follower = HealthFollower(
        HealthStream(settings.broker_url, settings.queue_name),
        watch.fold,
        lookback_s=STALE_PERIODS * settings.providers_announce_s + 5.0,
        name="replay-breakers",
    )
    follower.start()
    try:
        if not follower.caught_up.wait(catch_up_s):
            logger.warning(
                "The health stream %s was not read within %g s: breakers are not known yet, "
                "records are sent whatever their provider's state until they are",
                follower.stream.name,
                catch_up_s,
            )
        yield watch
    finally:
        follower.stop()
