"""HealthSync: a worker's side of the health stream.

It shares the worker's breaker transitions with every other process, folds
theirs into its own breakers, and announces the providers the worker serves:
when the worker boots, when its registry changes, every
``providers_announce_s``, and when it stops.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from .. import identity
from ..middleware.breaker import BreakerState, ProviderBreakers
from ..providers import ProviderRegistry
from ..settings import Settings
from .directory import STALE_PERIODS
from .stream import HealthFollower, HealthStream

__all__ = ["HealthSync"]

logger = logging.getLogger("provider_jobs.health")


class HealthSync(Middleware):
    """Shares breakers and announces providers through the health stream while a worker runs.

    Args:
        settings: Broker URL, queue name, ``providers_announce_s``.
        breakers: The worker's breakers; their ``on_change`` is set to share each transition.
        registry: The worker's providers; :func:`~provider_jobs.actors.declare_provider_actors`
            sets it when ``None``.
        worker_id: Who announces and shares. Default: :func:`~provider_jobs.identity.worker_id`
            of ``settings.worker_id``.
    """

    def __init__(
        self,
        settings: Settings,
        breakers: ProviderBreakers,
        *,
        registry: ProviderRegistry | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.breakers = breakers
        self.registry = registry
        self.worker_id = worker_id or identity.worker_id(settings.worker_id)
        self.announce_s = settings.providers_announce_s
        self._follower: HealthFollower | None = None
        self._next_announce = 0.0
        self._announced: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        breakers.on_change = self._share

    # -- worker lifecycle ----------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stop()

    def start(self) -> None:
        """Start following the stream and announcing, in a thread."""
        with self._lock:
            if self._follower is not None:
                return
            stream = HealthStream(self.settings.broker_url, self.settings.queue_name)
            self._follower = HealthFollower(
                stream,
                self._apply,
                lookback_s=STALE_PERIODS * self.announce_s + 5.0,
                tick=self._tick,
                name="health-sync",
            )
            self._next_announce = 0.0
            self._follower.start()

    def stop(self) -> None:
        """Say the worker stops serving its providers, and stop following."""
        with self._lock:
            follower, self._follower = self._follower, None
        if follower is not None:
            follower.send({"type": "stopping", "worker": self.worker_id, "at": time.time()})
            follower.stop()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until the stream was read up to when this worker started; whether it was."""
        follower = self._follower
        return follower is not None and follower.caught_up.wait(timeout_s)

    # -- events --------------------------------------------------------------------

    def _share(self, state: BreakerState, event: str) -> None:
        follower = self._follower
        if follower is not None:
            follower.send(
                {
                    "type": "breaker",
                    "event": event,
                    "worker": self.worker_id,
                    "at": time.time(),
                    "state": state.as_dict(),
                }
            )

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "breaker":
            states = [event.get("state")]
        elif kind == "announce":
            states = list(event.get("breakers") or ())
        else:
            return
        for data in states:
            if isinstance(data, dict):
                try:
                    self.breakers.apply(BreakerState.from_dict(data))
                except (TypeError, ValueError):
                    logger.debug("Ignoring a malformed breaker state from %s", event.get("worker"))

    def _tick(self) -> None:
        providers = tuple(self.registry.keys()) if self.registry is not None else ()
        now = time.time()
        if now < self._next_announce and providers == self._announced:
            return
        follower = self._follower
        if follower is None:
            return
        if providers != self._announced:
            logger.info("Announcing provider(s): %s", ", ".join(providers) or "none")
        self._announced = providers
        self._next_announce = now + self.announce_s
        follower.send(
            {
                "type": "announce",
                "worker": self.worker_id,
                "at": now,
                "interval_s": self.announce_s,
                "providers": list(providers),
                "breakers": [s.as_dict() for s in self.breakers.states()],
            }
        )
