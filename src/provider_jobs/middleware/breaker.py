"""ProviderBreakers: a circuit breaker per provider, fed by the error classifier.

A breaker is keyed by a function of the message (by default its ``provider``
option, ``namespace/resource_type``). It moves between three states:

- ``closed``: jobs run. A failure of a *health* category (the provider is
  unhealthy: not available, connection, timeout, service unavailable, busy)
  is counted; ``threshold`` of them in a row within ``window_s`` open it. Any
  other outcome (a success, a validation error: the provider answered) resets
  the count.
- ``open``: jobs are not sent to the provider. They wait in the retry delay
  queues until the next probe, without spending attempts (see
  :class:`.ClassifiedRetries`).
- ``half_open``: every ``probe_interval_s`` one waiting job is let through as a
  probe. Its success closes the breaker; a health failure opens it again until
  the next probe, and does not spend that job's attempts.

A provider's ``Retry-After`` applies to every job for it: until then the
breaker admits none, whatever its state.

The state is in-process. Another process's transitions are folded in with
:meth:`ProviderBreakers.apply`, and each of this process's transitions is
handed to ``on_change``: whatever shares them (our workers use a RabbitMQ
stream) is injected, so that this module depends on nothing but Dramatiq.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import dramatiq
from prometheus_client import CollectorRegistry, Counter, Gauge

from .breaker_state import (
    CLOSED,
    DEFAULT_BREAKER_CATEGORIES,
    HALF_OPEN,
    MAX_HISTORY,
    OPEN,
    STATE_VALUES,
    BreakerState,
    Gate,
    ProviderDown,
    provider_of,
)

__all__ = [
    "CLOSED",
    "DEFAULT_BREAKER_CATEGORIES",
    "HALF_OPEN",
    "OPEN",
    "BreakerState",
    "Gate",
    "ProviderBreakers",
    "ProviderDown",
    "provider_of",
]

logger = logging.getLogger("provider_jobs.breaker")

#: The answer to a job whose provider takes jobs.
_ADMIT = Gate(True)


@dataclass(slots=True)
class _Breaker:
    state: BreakerState
    #: Times of the health failures counted, in a row.
    failure_times: list[float] = field(default_factory=list)


class ProviderBreakers:
    """A circuit breaker per provider, thread-safe.

    Args:
        threshold: Health failures in a row, within ``window_s``, that open a breaker. Default 5.
        window_s: The window they are counted in, in seconds. Default 60.
        probe_interval_s: Seconds between probes of an open breaker. Default 5.
        max_wait_s: Longest a job waits for an open breaker before it is dead-lettered as
            ``provider_down``, in seconds. Default 1800.
        categories: Category names that count as health failures.
            Default :data:`DEFAULT_BREAKER_CATEGORIES`.
        key: The breaker key of a message; ``None`` keeps it out of every breaker.
            Default :func:`provider_of`.
        worker_id: Recorded as ``updated_by``. Default ``""``.
        on_change: Called with the new state and the event (``opened``, ``probe``, ``reopened``,
            ``closed``, ``retry_after``) after each transition made here, outside the lock.
        probe_spread: Each process probes a breaker shared with others this fraction of
            ``probe_interval_s`` late at most, at a random offset of its own, so that the first to
            probe tells the others before their turn comes. Default 0.3; 0 probes on time.
        registry: Where ``provider_jobs_breaker_state`` and
            ``provider_jobs_breaker_transitions_total`` are registered; ``None`` (the default): none.
        clock: Epoch seconds. Default :func:`time.time`.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        window_s: float = 60.0,
        probe_interval_s: float = 5.0,
        max_wait_s: float = 1800.0,
        categories: Iterable[str] = DEFAULT_BREAKER_CATEGORIES,
        key: Callable[[dramatiq.MessageProxy], str | None] = provider_of,
        worker_id: str = "",
        on_change: Callable[[BreakerState, str], None] | None = None,
        probe_spread: float = 0.3,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold={threshold!r} is not allowed; use 1 or more")
        self.threshold = threshold
        self.window_s = window_s
        self.probe_interval_s = probe_interval_s
        self.max_wait_s = max_wait_s
        self.categories = frozenset(categories)
        self.key = key
        self.worker_id = worker_id
        self.on_change = on_change
        self.clock = clock
        self._probe_offset_s = random.uniform(0.0, probe_spread * probe_interval_s)
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()
        self._gauge: Gauge | None = None
        self._transitions: Counter | None = None
        if registry is not None:
            self._gauge = Gauge(
                "provider_jobs_breaker_state",
                "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
                ["provider"],
                registry=registry,
                multiprocess_mode="livemax",
            )
            self._transitions = Counter(
                "provider_jobs_breaker_transitions",
                "Circuit breaker transitions per provider, by event.",
                ["provider", "event"],
                registry=registry,
            )

    # -- reading ----------------------------------------------------------------

    def state(self, key: str) -> BreakerState:
        """``key``'s breaker; a closed one when none was made."""
        with self._lock:
            breaker = self._breakers.get(key)
            return breaker.state if breaker is not None else BreakerState(key)

    def states(self) -> list[BreakerState]:
        """Every breaker this process knows, sorted by key."""
        with self._lock:
            return [self._breakers[k].state for k in sorted(self._breakers)]

    def gate(self, key: str) -> Gate:
        """Whether a job for ``key`` may go now; a job let through an open breaker is its probe."""
        now = self.clock()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                return _ADMIT
            current = breaker.state
            if now < current.retry_after_until:
                return Gate(False, wait_s=current.retry_after_until - now, reason="retry_after")
            if current.state == CLOSED:
                return _ADMIT
            due = (current.next_probe_at or now) + self._probe_offset_s
            if now < due:
                return Gate(False, wait_s=due - now, reason="open")
            state = self._change(
                breaker,
                now,
                "probe",
                state=HALF_OPEN,
                next_probe_at=now + self.probe_interval_s,
                probes=current.probes + 1,
            )
        self._changed(state, "probe")
        return Gate(True, probe=True)

    # -- outcomes -----------------------------------------------------------------

    def record_success(self, key: str) -> None:
        """A job for ``key`` got an answer from its provider: the count resets, an open breaker closes."""
        now = self.clock()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                return
            breaker.failure_times.clear()
            if breaker.state.state == CLOSED:
                if breaker.state.failures:
                    breaker.state = replace(breaker.state, failures=0)
                return
            state = self._change(
                breaker, now, "closed", state=CLOSED, failures=0, opened_at=None, next_probe_at=None, probes=0
            )
        self._changed(state, "closed")

    def record_failure(self, key: str, category: str, *, retry_after_s: float | None = None) -> bool:
        """A job for ``key`` failed with ``category``; returns whether its breaker is now open.

        A failure of another category than the breaker's is an answer from the provider, as a
        success is. A ``retry_after_s`` holds every job for ``key`` until then.
        """
        if category not in self.categories:
            self.record_success(key)
            if retry_after_s:
                self.hold(key, retry_after_s)
            return False
        now = self.clock()
        events: list[tuple[BreakerState, str]] = []
        with self._lock:
            breaker = self._breakers.setdefault(key, _Breaker(BreakerState(key)))
            times = [t for t in breaker.failure_times if now - t <= self.window_s]
            times.append(now)
            breaker.failure_times = times
            current = breaker.state
            if current.state == CLOSED and len(times) >= self.threshold:
                events.append(
                    (
                        self._change(
                            breaker,
                            now,
                            "opened",
                            state=OPEN,
                            failures=len(times),
                            opened_at=now,
                            next_probe_at=now + self.probe_interval_s,
                            probes=0,
                            last_category=category,
                        ),
                        "opened",
                    )
                )
            elif current.state == HALF_OPEN:
                events.append(
                    (
                        self._change(
                            breaker,
                            now,
                            "reopened",
                            state=OPEN,
                            failures=len(times),
                            next_probe_at=max(current.next_probe_at or now, now),
                            last_category=category,
                        ),
                        "reopened",
                    )
                )
            else:
                breaker.state = replace(current, failures=len(times), last_category=category)
            is_open = breaker.state.state != CLOSED
        for state, event in events:
            self._changed(state, event)
        if retry_after_s:
            self.hold(key, retry_after_s)
        return is_open

    def hold(self, key: str, retry_after_s: float) -> None:
        """Hold every job for ``key`` for ``retry_after_s`` seconds (the provider's ``Retry-After``)."""
        now = self.clock()
        until = now + retry_after_s
        with self._lock:
            breaker = self._breakers.setdefault(key, _Breaker(BreakerState(key)))
            if until <= breaker.state.retry_after_until:
                return
            state = self._change(breaker, now, "retry_after", retry_after_until=until)
        self._changed(state, "retry_after")

    def wait_s(self, key: str) -> float:
        """Seconds until ``key``'s breaker may let a job through (its next probe, its
        ``Retry-After``); 0 when it may now."""
        now = self.clock()
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                return 0.0
            current = breaker.state
            due = current.retry_after_until
            if current.state != CLOSED:
                due = max(due, (current.next_probe_at or now) + self._probe_offset_s)
            return max(0.0, due - now)

    def is_health_failure(self, category: str) -> bool:
        """Whether ``category`` counts against a breaker."""
        return category in self.categories

    # -- sharing ------------------------------------------------------------------

    def apply(self, remote: BreakerState) -> bool:
        """Fold in another process's state of a breaker; returns whether it changed ours.

        The newer change wins; ``next_probe_at`` and ``retry_after_until`` only move later,
        so that processes sharing a breaker send at most one probe per interval between them.
        """
        with self._lock:
            breaker = self._breakers.setdefault(remote.key, _Breaker(BreakerState(remote.key)))
            local = breaker.state
            merged = local
            if remote.updated_at >= local.updated_at:
                merged = replace(remote)
                if remote.state == CLOSED:
                    breaker.failure_times.clear()
                elif local.state != CLOSED and local.next_probe_at is not None:
                    merged = replace(
                        merged, next_probe_at=max(local.next_probe_at, remote.next_probe_at or 0)
                    )
            merged = replace(merged, retry_after_until=max(local.retry_after_until, remote.retry_after_until))
            if merged == local:
                return False
            breaker.state = merged
        self._set_gauge(merged)
        if merged.state != local.state:
            logger.info(
                "Breaker for %s is %s (from %s)",
                merged.key,
                merged.state.replace("_", "-"),
                merged.updated_by,
            )
        return True

    # -- internals ----------------------------------------------------------------

    def _change(self, breaker: _Breaker, now: float, event: str, **changes: Any) -> BreakerState:
        """Apply a transition made here; the caller holds the lock and calls :meth:`_changed` after."""
        previous = breaker.state
        entry: dict[str, Any] = {"at": round(now, 3), "event": event, "worker": self.worker_id}
        if event in ("opened", "reopened"):
            entry["failures"] = changes.get("failures", previous.failures)
            entry["category"] = changes.get("last_category", previous.last_category)
        elif event == "retry_after":
            entry["until"] = round(changes["retry_after_until"], 3)
        breaker.state = replace(
            previous,
            updated_at=now,
            updated_by=self.worker_id,
            history=(*previous.history, entry)[-MAX_HISTORY:],
            **changes,
        )
        return breaker.state

    def _changed(self, state: BreakerState, event: str) -> None:
        self._set_gauge(state)
        if self._transitions is not None:
            self._transitions.labels(state.key, event).inc()
        self._log(state, event)
        if self.on_change is not None:
            try:
                self.on_change(state, event)
            except Exception:
                logger.exception("Breaker for %s: sharing the %s event failed", state.key, event)

    def _set_gauge(self, state: BreakerState) -> None:
        if self._gauge is not None:
            self._gauge.labels(state.key).set(STATE_VALUES[state.state])

    def _log(self, state: BreakerState, event: str) -> None:
        extra = {"provider": state.key, "breaker_event": event}
        if event == "opened":
            logger.warning(
                "Breaker for %s opened after %d %s failures in a row; its jobs wait, next probe in %s s",
                state.key,
                state.failures,
                state.last_category,
                f"{self.probe_interval_s:g}",
                extra=extra,
            )
        elif event == "probe":
            logger.info("Breaker for %s: probe %d goes to the provider", state.key, state.probes, extra=extra)
        elif event == "reopened":
            logger.warning(
                "Breaker for %s: probe %d failed (%s); next probe in %s s",
                state.key,
                state.probes,
                state.last_category,
                f"{max(0.0, (state.next_probe_at or 0) - state.updated_at):.3g}",
                extra=extra,
            )
        elif event == "closed":
            opened = next((h["at"] for h in reversed(state.history) if h["event"] == "opened"), None)
            logger.info(
                "Breaker for %s closed%s; its jobs go again",
                state.key,
                f" after {state.updated_at - opened:.1f} s open" if opened is not None else "",
                extra=extra,
            )
        elif event == "retry_after":
            logger.info(
                "Provider %s asked to wait %.3g s (Retry-After); every job for it waits",
                state.key,
                state.retry_after_until - state.updated_at,
                extra=extra,
            )
