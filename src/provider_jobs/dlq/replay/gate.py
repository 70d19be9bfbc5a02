"""HealthGate: a replay's records in batches, holding back those of providers that are paused.

A provider is paused while its circuit breaker is open or its ``Retry-After``
is pending, as the health stream tells (:class:`~provider_jobs.health.BreakerWatch`).
Its records are set aside, unclaimed, while the others go on; once it is no
longer paused they go again, merged back in their place among the records left.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ...health.watch import Pause
from .report import ReplayPlan

__all__ = ["HealthGate", "PauseHandler", "ProviderHealth", "provider_of"]

#: Longest wait between two looks at the paused providers (a ``Retry-After`` runs out
#: without any event; a worker that serves a provider may stop announcing it).
_RECHECK_S = 1.0

#: Called with a provider and its :class:`Pause` when its records start being held back,
#: and with the provider and ``None`` when they go again.
PauseHandler = Callable[[str, Pause | None], None]


class ProviderHealth(Protocol):
    """What a replay asks of the providers' health: a :class:`~provider_jobs.health.BreakerWatch`."""

    def pause_of(self, provider: str) -> Pause | None: ...
    def wait(self, timeout_s: float) -> None: ...


def provider_of(plan: ReplayPlan[Any]) -> str | None:
    """``namespace/resource_type`` of the job the plan sends; ``None`` when it sends none."""
    message = plan.message
    job = message["kwargs"].get("job") if message is not None else None
    if not isinstance(job, dict):
        return None
    namespace, resource_type = job.get("provider_namespace"), job.get("resource_type")
    if isinstance(namespace, str) and isinstance(resource_type, str):
        return f"{namespace}/{resource_type}"
    return None


class HealthGate:
    """Hands a replay its plans in batches, holding back the plans of paused providers.

    Args:
        plans: Every plan, in the order they should go.
        size: Plans per batch at most.
        health: The providers' health; ``None`` holds nothing back.
        max_pause_s: Longest a provider's plans are held back before they are given up
            (:attr:`given_up`); ``None`` waits as long as it takes.
        on_pause: Told when a provider is paused and when it resumes.
    """

    def __init__(
        self,
        plans: Sequence[ReplayPlan[Any]],
        *,
        size: int,
        health: ProviderHealth | None = None,
        max_pause_s: float | None = None,
        on_pause: PauseHandler | None = None,
    ) -> None:
        self.size = size
        self.health = health
        self.max_pause_s = max_pause_s
        self.on_pause = on_pause
        #: Every pause seen, in order (a provider paused twice is in it twice).
        self.pauses: list[Pause] = []
        #: The plans given up after ``max_pause_s``, each with its pause.
        self.given_up: list[tuple[ReplayPlan[Any], Pause]] = []
        self._pending: deque[tuple[int, ReplayPlan[Any]]] = deque(enumerate(plans))
        self._held: dict[str, list[tuple[int, ReplayPlan[Any]]]] = {}
        self._paused: dict[str, tuple[Pause, float]] = {}

    @property
    def holding(self) -> bool:
        """Whether plans are held back."""
        return bool(self._held)

    def next_batch(self) -> list[ReplayPlan[Any]]:
        """The next plans to send, at most ``size``; empty when none may go now."""
        pauses: dict[str, Pause | None] = {}

        def pause(provider: str | None) -> Pause | None:
            if provider is None or self.health is None:
                return None
            if provider not in pauses:
                pauses[provider] = self.health.pause_of(provider)
            return pauses[provider]

        for resumed in [p for p in self._held if pause(p) is None]:
            self._resume(resumed)
        batch: list[ReplayPlan[Any]] = []
        while self._pending and len(batch) < self.size:
            position, plan = self._pending.popleft()
            key = provider_of(plan)
            paused = pause(key)
            if key is None or paused is None:
                batch.append(plan)
            else:
                self._hold(key, paused, position, plan)
        return batch

    def wait(self) -> None:
        """Wait for the health to change (a second at most); plans held past ``max_pause_s``
        are given up."""
        now = time.monotonic()
        if self.max_pause_s is not None:
            for provider, (paused, since) in list(self._paused.items()):
                if now - since >= self.max_pause_s:
                    self.given_up += [(plan, paused) for _, plan in self._held.pop(provider)]
                    del self._paused[provider]
            if not self._held:
                return
            deadline = min(since for _, since in self._paused.values()) + self.max_pause_s
            timeout_s = min(_RECHECK_S, max(0.0, deadline - now))
        else:
            timeout_s = _RECHECK_S
        assert self.health is not None
        self.health.wait(timeout_s)

    def _hold(self, provider: str, paused: Pause, position: int, plan: ReplayPlan[Any]) -> None:
        if provider not in self._held:
            self._held[provider] = []
            self._paused[provider] = (paused, time.monotonic())
            self.pauses.append(paused)
            if self.on_pause is not None:
                self.on_pause(provider, paused)
        self._held[provider].append((position, plan))

    def _resume(self, provider: str) -> None:
        """Put the provider's held plans back in their place among those left."""
        held = self._held.pop(provider)
        del self._paused[provider]
        self._pending = deque(heapq.merge(self._pending, held, key=lambda item: item[0]))
        if self.on_pause is not None:
            self.on_pause(provider, None)
