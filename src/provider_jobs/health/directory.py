"""ProviderDirectory: which providers are registered, by which workers, and how healthy,
folded from the health stream's events (see :mod:`.stream`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..middleware.breaker import CLOSED, BreakerState
from ..settings import Settings
from .stream import HealthStream

__all__ = ["ProviderDirectory", "ProviderEntry", "read_directory"]

#: A worker not heard from for this many announcement periods is gone.
STALE_PERIODS = 3


@dataclass(slots=True)
class _Worker:
    last_seen: float
    interval_s: float
    providers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """One provider as the directory knows it.

    Args:
        key: ``namespace/resource_type``.
        workers: Worker id to when it last announced serving it (epoch seconds).
        breaker: Its breaker's latest state from any worker; ``None`` when none was seen.
    """

    key: str
    workers: Mapping[str, float] = field(default_factory=dict)
    breaker: BreakerState | None = None

    @property
    def registered(self) -> bool:
        """A live worker serves it."""
        return bool(self.workers)

    @property
    def state(self) -> str:
        """Its breaker's state, ``closed`` when none was seen."""
        return self.breaker.state if self.breaker is not None else CLOSED

    @property
    def healthy(self) -> bool:
        """Registered and its breaker closed."""
        return self.registered and self.state == CLOSED

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: key, registered, healthy, state, workers, failures, next probe, breaker."""
        breaker = self.breaker
        return {
            "provider": self.key,
            "registered": self.registered,
            "healthy": self.healthy,
            "state": self.state,
            "failures": breaker.failures if breaker else 0,
            "next_probe_at": breaker.next_probe_at if breaker and breaker.state != CLOSED else None,
            "retry_after_until": breaker.retry_after_until if breaker and breaker.retry_after_until else None,
            "workers": [{"worker": w, "last_seen": t} for w, t in sorted(self.workers.items())],
            "breaker": breaker.as_dict() if breaker else None,
        }


class ProviderDirectory:
    """Providers and breakers, folded from health events.

    Args:
        clock: Epoch seconds. Default :func:`time.time`.
    """

    def __init__(self, *, clock: Any = time.time) -> None:
        self.clock = clock
        self._workers: dict[str, _Worker] = {}
        self._breakers: dict[str, BreakerState] = {}

    def fold(self, event: Mapping[str, Any]) -> None:
        """Take one event into account; unknown or malformed events are ignored."""
        kind = event.get("type")
        worker = event.get("worker")
        if kind == "announce" and isinstance(worker, str):
            providers = event.get("providers")
            at, interval = event.get("at"), event.get("interval_s")
            if (
                isinstance(providers, list)
                and isinstance(at, int | float)
                and isinstance(interval, int | float)
            ):
                self._workers[worker] = _Worker(float(at), float(interval), tuple(map(str, providers)))
            self._fold_states(event.get("breakers") or ())
        elif kind == "stopping" and isinstance(worker, str):
            self._workers.pop(worker, None)
        elif kind == "breaker":
            self._fold_states([event.get("state")])

    def _fold_states(self, states: Iterable[Any]) -> None:
        for data in states:
            if not isinstance(data, Mapping):
                continue
            try:
                state = BreakerState.from_dict(data)
            except (TypeError, ValueError):
                continue
            known = self._breakers.get(state.key)
            if known is None or state.updated_at >= known.updated_at:
                self._breakers[state.key] = state

    def entries(self) -> list[ProviderEntry]:
        """Every provider a live worker serves or a breaker was seen for, sorted by key."""
        now = self.clock()
        served: dict[str, dict[str, float]] = {}
        for worker, seen in self._workers.items():
            if now - seen.last_seen > STALE_PERIODS * seen.interval_s:
                continue
            for key in seen.providers:
                served.setdefault(key, {})[worker] = seen.last_seen
        keys = sorted(set(served) | set(self._breakers))
        return [ProviderEntry(k, served.get(k, {}), self._breakers.get(k)) for k in keys]

    def entry(self, key: str) -> ProviderEntry:
        """``key``'s entry; an unregistered one when nothing is known of it."""
        return next((e for e in self.entries() if e.key == key), ProviderEntry(key))


def read_directory(settings: Settings, *, timeout_s: float = 5.0) -> tuple[ProviderDirectory, bool]:
    """Read the health stream up to now into a directory.

    Returns:
        The directory and whether the stream was read to its end within ``timeout_s``.

    Raises:
        pika.exceptions.AMQPError: RabbitMQ cannot be reached.
    """
    directory = ProviderDirectory()
    stream = HealthStream(settings.broker_url, settings.queue_name)
    since = time.time() - STALE_PERIODS * settings.providers_announce_s - 5.0
    complete = stream.read(since=since, on_event=directory.fold, timeout_s=timeout_s)
    return directory, complete
